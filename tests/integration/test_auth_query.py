"""auth_query / auth_user / auth_dbname: users that exist only in PostgreSQL
log in through weir, their secret looked up by auth_query (run as auth_user
through libweir's Engine on worker threads) and then used for the server
login too: the md5 hash answered by weir's own connect, a SCRAM secret by
SCRAM pass-through. Wrong passwords, unknown users, a missing auth_user and
a NULL password are refused; a slow auth_query does not stall other clients."""
import asyncio
import threading
import time

import asyncpg
import psycopg
import pytest

from pgroles import make_role

MD5_ROLE, MD5_PW = "weir_aq_md5", "aq-md5-pw"
SCRAM_ROLE, SCRAM_PW = "weir_aq_scram", "aq-scram-pw"
NOPW_ROLE = "weir_aq_nopw"


@pytest.fixture(scope="module")
def roles(pg):
    make_role(pg, MD5_ROLE, MD5_PW, "md5")
    make_role(pg, SCRAM_ROLE, SCRAM_PW, "scram-sha-256")
    make_role(pg, NOPW_ROLE, None)
    return pg


def aq_weir(weir_factory, pg, auth_type="md5", **settings):
    s = {"auth_type": auth_type, "auth_user": pg.user}
    s.update(settings)
    return weir_factory(settings=s)


def sqlstate_of_login(w, pg, user, password, dbname=None):
    async def main():
        try:
            c = await asyncpg.connect(host="127.0.0.1", port=w.port, user=user, password=password,
                                      database=dbname or pg.db, timeout=15)
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
        await c.close()
        return None, ""
    return asyncio.run(main())


def backend_users(pg):
    with pg.connect() as c:
        return {r[0] for r in c.execute(
            "SELECT usename FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND application_name = 'weir'").fetchall()}


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_user_only_in_postgresql_logs_in(weir_factory, roles, auth_type):
    pg = roles
    w = aq_weir(weir_factory, pg, auth_type)
    for role, pw in [(MD5_ROLE, MD5_PW), (SCRAM_ROLE, SCRAM_PW)]:
        if auth_type == "scram-sha-256" and role == MD5_ROLE:
            continue  # an md5 secret cannot serve a SCRAM login
        with w.connect(user=role, password=pw) as c:
            # the backend session is really that role: weir logged in with the secret
            assert c.execute("SELECT current_user, session_user").fetchone() == (role, role)
            assert role in backend_users(pg)
            assert c.execute("SELECT 40 + 2").fetchone() == (42,)


def test_scram_user_with_md5_auth_type_uses_scram(weir_factory, roles):
    """auth_type = md5 with a SCRAM secret from auth_query: SCRAM, as PgBouncer."""
    pg = roles
    w = aq_weir(weir_factory, pg, "md5")
    with w.connect(user=SCRAM_ROLE, password=SCRAM_PW) as c:
        assert c.execute("SELECT current_user").fetchone() == (SCRAM_ROLE,)


def test_wrong_password_is_pgbouncers_error(weir_factory, roles):
    pg = roles
    w = aq_weir(weir_factory, pg, "md5")
    for role, words in ((MD5_ROLE, "password authentication failed"), (SCRAM_ROLE, "SASL authentication failed")):
        state, msg = sqlstate_of_login(w, pg, role, "wrong")
        assert state == "08P01", msg  # PgBouncer 1.18's SQLSTATE and words
        assert words in msg, msg


def test_unknown_user_is_refused(weir_factory, roles):
    pg = roles
    w = aq_weir(weir_factory, pg, "scram-sha-256")
    state, msg = sqlstate_of_login(w, pg, "weir_aq_nobody", "whatever")
    # The same answer as a wrong password: nothing tells which users exist.
    assert state == "08P01" and "SASL authentication failed" in msg, msg


def test_null_password_is_refused(weir_factory, roles):
    pg = roles
    w = aq_weir(weir_factory, pg, "md5")
    state, msg = sqlstate_of_login(w, pg, NOPW_ROLE, "")
    assert state == "08P01" and "authentication failed" in msg, msg
    state, msg = sqlstate_of_login(w, pg, NOPW_ROLE, "md5")
    assert state == "08P01" and "authentication failed" in msg, msg


def test_missing_auth_user_is_a_clear_error(weir_factory, roles):
    pg = roles
    w = aq_weir(weir_factory, pg, "md5", auth_user="weir_aq_no_such_auth_user")
    state, msg = sqlstate_of_login(w, pg, MD5_ROLE, MD5_PW)
    assert state == "08P01", msg
    # PostgreSQL's own reason (here its pg_hba.conf has no line for that role) is passed on
    assert "auth_query failed: connection to server at" in msg and "weir_aq_no_such_auth_user" in msg, msg
    assert "auth_query failed" in w.log_text()
    # users in auth_file are not affected
    with w.connect(user=pg.md5_user, password=pg.md5_password) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_no_auth_user_means_no_lookup(weir_factory, roles):
    pg = roles
    w = weir_factory(settings={"auth_type": "md5"})
    state, msg = sqlstate_of_login(w, pg, MD5_ROLE, MD5_PW)
    assert state == "08P01" and "password authentication failed" in msg, msg


def test_per_database_auth_user_and_auth_dbname(weir_factory, roles):
    pg = roles
    dbs = {"appdb": pg.entry(auth_user=pg.user, auth_dbname="authdb"),
           "authdb": pg.entry(),
           "baddb": pg.entry(auth_user=pg.user, auth_dbname="nowhere")}
    w = weir_factory(settings={"auth_type": "md5"}, databases=dbs)
    with w.connect(dbname="appdb", user=MD5_ROLE, password=MD5_PW) as c:
        assert c.execute("SELECT current_user").fetchone() == (MD5_ROLE,)
    state, msg = sqlstate_of_login(w, pg, MD5_ROLE, MD5_PW, dbname="baddb")
    assert state == "08P01" and 'auth_dbname "nowhere" is not a database' in msg, msg


def test_custom_auth_query_function(weir_factory, roles):
    pg = roles
    with pg.connect() as c:
        c.execute("CREATE OR REPLACE FUNCTION weir_aq_lookup(u text) RETURNS TABLE(usename name, passwd text) "
                  "LANGUAGE sql SECURITY DEFINER AS "
                  "$$ SELECT rolname, rolpassword FROM pg_authid WHERE rolname = u AND rolcanlogin $$")
    w = aq_weir(weir_factory, pg, "md5", auth_query="SELECT * FROM weir_aq_lookup($1)")
    with w.connect(user=MD5_ROLE, password=MD5_PW) as c:
        assert c.execute("SELECT current_user").fetchone() == (MD5_ROLE,)
    # a query of the wrong shape is an error naming it
    w2 = aq_weir(weir_factory, pg, "md5", auth_query="SELECT usename FROM pg_shadow WHERE usename = $1")
    state, msg = sqlstate_of_login(w2, pg, MD5_ROLE, MD5_PW)
    assert state == "08P01" and "expected 2 columns from auth_query, not 1" in msg, msg


def test_slow_auth_query_does_not_block_other_clients(weir_factory, roles):
    pg = roles
    with pg.connect() as c:
        c.execute("CREATE OR REPLACE FUNCTION weir_aq_slow(u text) RETURNS TABLE(usename name, passwd text) "
                  "LANGUAGE sql SECURITY DEFINER AS "
                  "$$ SELECT pg_sleep(3); SELECT rolname, rolpassword FROM pg_authid WHERE rolname = u $$")
    w = aq_weir(weir_factory, pg, "md5", auth_query="SELECT * FROM weir_aq_slow($1)")
    other = w.connect(user=pg.md5_user, password=pg.md5_password)  # from auth_file, pooled server
    result = {}

    def slow_login():
        t0 = time.monotonic()
        try:
            with psycopg.connect(host="127.0.0.1", port=w.port, dbname=pg.db, user=MD5_ROLE, password=MD5_PW,
                                 connect_timeout=20, autocommit=True) as c:
                result["user"] = c.execute("SELECT current_user").fetchone()[0]
        except Exception as e:  # reported below
            result["error"] = e
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=slow_login)
    t.start()
    time.sleep(0.3)  # the lookup is running now
    worst = 0.0
    t0 = time.monotonic()
    n = 0
    while t.is_alive() and time.monotonic() - t0 < 2.0:
        q0 = time.monotonic()
        assert other.execute("SELECT 1").fetchone() == (1,)
        # new logins (from auth_file) go through meanwhile too
        with w.connect(user=pg.md5_user, password=pg.md5_password) as c2:
            c2.execute("SELECT 1")
        worst = max(worst, time.monotonic() - q0)
        n += 1
    assert t.is_alive(), "the slow lookup finished too early to show anything"
    t.join(30)
    assert "error" not in result, result.get("error")
    assert result["user"] == MD5_ROLE
    assert result["took"] >= 3.0
    assert n >= 3 and worst < 1.5, (n, worst)


def test_client_leaving_during_lookup(weir_factory, roles):
    """A client that hangs up while its auth_query runs: the lookup finishes
    unanswered, weir goes on serving, the next login works."""
    pg = roles
    with pg.connect() as c:
        c.execute("CREATE OR REPLACE FUNCTION weir_aq_slow1(u text) RETURNS TABLE(usename name, passwd text) "
                  "LANGUAGE sql SECURITY DEFINER AS "
                  "$$ SELECT pg_sleep(1); SELECT rolname, rolpassword FROM pg_authid WHERE rolname = u $$")
    w = aq_weir(weir_factory, pg, "md5", auth_query="SELECT * FROM weir_aq_slow1($1)")

    async def leave_early():
        try:
            await asyncpg.connect(host="127.0.0.1", port=w.port, user=MD5_ROLE, password=MD5_PW,
                                  database=pg.db, timeout=0.3)
        except (asyncio.TimeoutError, OSError):
            return True
        return False
    for _ in range(3):
        assert asyncio.run(leave_early())
    time.sleep(1.5)  # the abandoned lookups end now
    assert w.alive()
    with w.connect(user=MD5_ROLE, password=MD5_PW) as c:
        assert c.execute("SELECT current_user").fetchone() == (MD5_ROLE,)
    # the three are gone (not logged: they left during login, as PgBouncer does not log them)
    with w.connect(dbname="pgbouncer", user=pg.user) as admin:
        rows = admin.execute("SHOW SOCKETS").fetchall()  # lists clients still logging in (cl_login) too
        assert [r for r in rows if r[0] == "C" and r[2] != "pgbouncer"] == [], rows


def test_lookup_waits_while_the_server_is_away(weir_factory, roles, relay):
    """As a login waits for a server (query_wait_timeout), so does its
    auth_query: the server is away for a second, the login still succeeds."""
    pg = roles
    w = weir_factory(settings={"auth_type": "md5", "auth_user": pg.user, "server_login_retry": 1},
                     databases={pg.db: "host=127.0.0.1 port=%d dbname=%s" % (relay.port, pg.db)})
    threading.Timer(1.0, relay.start).start()
    t0 = time.monotonic()
    assert sqlstate_of_login(w, pg, MD5_ROLE, MD5_PW) == (None, "")
    assert time.monotonic() - t0 > 0.8
    # A lasting refusal still ends the lookup at once: the auth_user's password is wrong there.
    w2 = weir_factory(settings={"auth_type": "md5", "auth_user": pg.scram_user},
                      userlist={pg.scram_user: "not-the-password"})
    t0 = time.monotonic()
    state, text = sqlstate_of_login(w2, pg, MD5_ROLE, MD5_PW)
    assert state is not None and time.monotonic() - t0 < 5, (state, text)
