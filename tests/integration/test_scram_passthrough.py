"""SCRAM pass-through and md5 secrets: auth_file holds only the secret
PostgreSQL stores (copied from pg_authid), the [databases] entry no password.
weir checks the client against the secret, recovers ClientKey from the
client's proof and logs in to PostgreSQL with it through its own connect
(libpq cannot log in with keys); an md5 secret is answered as is. The
connection is then a server like any other: queries, SHOW SERVERS, cancel."""
import os
import subprocess
import threading
import time

import psycopg
import pytest

from pgroles import make_role

ROLE, PW = "weir_pt_scram", "pt-scram-pw"
MD5_ROLE, MD5_PW = "weir_pt_md5", "pt-md5-pw"


@pytest.fixture(scope="module")
def secrets(pg):
    return {ROLE: make_role(pg, ROLE, PW, "scram-sha-256"), MD5_ROLE: make_role(pg, MD5_ROLE, MD5_PW, "md5")}


def pt_weir(weir_factory, pg, secrets, auth_type="scram-sha-256", **kw):
    userlist = {pg.user: "weir-test-pw"}
    userlist.update(secrets)
    return weir_factory(settings=dict({"auth_type": auth_type, "admin_users": pg.user}, **kw.pop("settings", {})),
                        userlist=userlist, **kw)


def backends_of(pg, role):
    with pg.connect() as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
                         [role]).fetchone()[0]


def test_login_queries_and_backend(weir_factory, pg, secrets):
    assert secrets[ROLE].startswith("SCRAM-SHA-256$")
    w = pt_weir(weir_factory, pg, secrets)
    assert backends_of(pg, ROLE) == 0
    with w.connect(user=ROLE, password=PW) as c:
        assert c.execute("SELECT current_user, session_user").fetchone() == (ROLE, ROLE)
        assert c.execute("SELECT sum(g) FROM generate_series(1, 1000) g").fetchone() == (500500,)
        c.execute("CREATE TEMP TABLE pt (x int)")  # a session really on that backend
        assert backends_of(pg, ROLE) == 1
    # a second login reuses the pooled server: same keys, no new backend needed
    with w.connect(user=ROLE, password=PW) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    assert backends_of(pg, ROLE) == 1
    # SHOW SERVERS sees it like any other server
    with w.connect(dbname="pgbouncer", user=pg.user) as admin:
        rows = admin.execute("SHOW SERVERS").fetchall()
    assert [r for r in rows if r[1] == ROLE and r[4] == "127.0.0.1" and r[5] == pg.port], rows
    assert "SASL authentication failed" in str(pytest.raises(psycopg.OperationalError,
                                                           w.connect, user=ROLE, password="wrong").value)


def test_psql_login(weir_factory, pg, secrets):
    w = pt_weir(weir_factory, pg, secrets, pool_mode="session")
    env = dict(os.environ, PGPASSWORD=PW, PGCONNECT_TIMEOUT="10")
    r = subprocess.run([pg.tool("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(w.port), "-U", ROLE,
                        "-d", pg.db, "-c", "SELECT current_user", "-c", "SELECT count(*) FROM pg_stat_activity "
                        "WHERE pid = pg_backend_pid() AND usename = current_user"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [ROLE, "1"]


def test_cancel_reaches_the_backend(weir_factory, pg, secrets):
    w = pt_weir(weir_factory, pg, secrets)
    c = w.connect(user=ROLE, password=PW)
    got = {}

    def run():
        t0 = time.monotonic()
        try:
            c.execute("SELECT pg_sleep(30)")
        except psycopg.errors.QueryCanceled as e:
            got["canceled"] = str(e)
        got["took"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    with pg.connect() as watcher:  # wait until the sleep runs on the backend
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE usename = %s AND query LIKE 'SELECT pg_sleep%%' "
                "AND state = 'active'", [ROLE]).fetchone():
            time.sleep(0.05)
    c.cancel()
    t.join(20)
    assert "canceled" in got, got
    assert "canceling statement due to user request" in got["canceled"]
    assert got["took"] < 10
    # the connection goes on working
    assert c.execute("SELECT 2").fetchone() == (2,)


def test_md5_secret_logs_in_to_the_server(weir_factory, pg, secrets):
    assert secrets[MD5_ROLE].startswith("md5")
    w = pt_weir(weir_factory, pg, secrets, auth_type="md5")
    with w.connect(user=MD5_ROLE, password=MD5_PW) as c:
        assert c.execute("SELECT current_user").fetchone() == (MD5_ROLE,)
    assert "password authentication failed" in str(pytest.raises(psycopg.OperationalError,
                                                               w.connect, user=MD5_ROLE, password="bad").value)


def test_no_keys_without_a_scram_login(weir_factory, pg, secrets):
    """With trust to weir, no client proof gives keys: PgBouncer's error."""
    w = pt_weir(weir_factory, pg, secrets, auth_type="trust")
    with pytest.raises(psycopg.OperationalError) as ei:
        w.connect(user=ROLE, password="")
    assert "cannot do SCRAM authentication: password is SCRAM secret but client authentication did not provide " \
           "SCRAM keys" in str(ei.value)


def test_other_salt_on_the_server_fails_cleanly(weir_factory, pg, secrets):
    """weir's secret and the server's differ (same password, new salt): the
    client passes weir's check, the keys do not match the server's secret."""
    w = pt_weir(weir_factory, pg, secrets)
    try:
        make_role(pg, ROLE, PW, "scram-sha-256")  # re-salted on the server
        with pytest.raises(psycopg.OperationalError) as ei:
            w.connect(user=ROLE, password=PW)
        # the server's own words reach the client, as PgBouncer passes them on; the log has its
        # "server login failed" line
        assert 'FATAL:  password authentication failed for user "%s"' % ROLE in str(ei.value)
        assert 'server login failed: FATAL password authentication failed for user "%s"' % ROLE in w.log_text()
    finally:
        # put back the secret the other tests of this module hold
        with pg.connect() as c:
            c.execute("ALTER ROLE %s PASSWORD '%s'" % (ROLE, secrets[ROLE]))
