"""PgBouncer settings that change what weir does, each shown with real
clients: disable_pqexec (psql's simple queries refused, psycopg's extended
ones served, the console still usable), server_fast_close (session clients
closed at their next boundary after RECONNECT), unix_socket_group,
tcp_defer_accept (a silent connection stays in the kernel), tcp_socket_buffer
(the kernel's buffer sizes), autodb_idle_timeout (unused "*" pools go);
auth_type = pam refused at start; settings weir has no use for are named in
the log instead of looking applied."""
import grp
import os
import socket
import subprocess
import time

import psycopg
import pytest

from conftest import DAEMON, Weir, wait_for


def psql(w, sql, dbname=None):
    return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(w.port), "-U", w.pg.user, "-d",
                           dbname or w.pg.db, "-c", sql], capture_output=True, text=True, timeout=20,
                          env=dict(os.environ, PGCONNECT_TIMEOUT="10"))


# ---- disable_pqexec ----

def test_disable_pqexec(weir_factory, pg):
    w = weir_factory(settings={"disable_pqexec": 1})
    r = psql(w, "SELECT 1")
    assert r.returncode != 0 and "PQexec disallowed" in r.stderr, r
    assert "client used 'Q' packet type" in w.log_text()
    with w.connect() as c:  # psycopg sends queries with the extended protocol
        assert c.execute("SELECT %s::int + 1", [1]).fetchone() == (2,)
    r = psql(w, "SHOW POOLS", dbname="pgbouncer")  # the console speaks only the simple protocol
    assert r.returncode == 0, r.stderr
    w2 = weir_factory()
    assert psql(w2, "SELECT 1").stdout.strip() == "1"  # off by default


# ---- server_fast_close ----

def reconnect(w):
    r = psql(w, "RECONNECT", dbname="pgbouncer")
    assert r.returncode == 0, r.stderr


def told(e):
    """The FATAL weir sent before closing, or, when libpq took it for a
    notice while the connection was idle, the close it announced."""
    return "database configuration changed" in str(e) or "closed the connection" in str(e)


def test_server_fast_close(weir_factory, pg):
    w = weir_factory(pool_mode="session", settings={"server_fast_close": 1})
    idle = w.connect()
    busy = w.connect()
    pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]
    busy.execute("BEGIN")
    busy.execute("SELECT 1")
    reconnect(w)
    time.sleep(1.6)  # one sweep of the worker's second tick at least
    with pytest.raises(psycopg.OperationalError) as e:
        idle.execute("SELECT 1")
    assert told(e.value), e.value
    # The transaction in progress finishes; the session ends at its boundary.
    assert busy.execute("SELECT 2").fetchone() == (2,)
    busy.execute("COMMIT")
    time.sleep(0.2)
    with pytest.raises(psycopg.OperationalError) as e:
        busy.execute("SELECT 1")
    assert told(e.value), e.value
    # Both FATALs were sent (the wire-level differential test reads them).
    assert w.log_text().count("pooler error: database configuration changed") == 2
    with pg.connect() as c:  # the old server connections are gone from PostgreSQL
        wait_for(lambda: c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 0,
                 5, what="the old server to be closed")
    with w.connect() as c:  # new sessions get new servers
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_without_server_fast_close_sessions_keep_their_server(weir_factory, pg):
    w = weir_factory(pool_mode="session")
    c = w.connect()
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    reconnect(w)
    time.sleep(1.6)
    assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid


# ---- sockets ----

def test_unix_socket_group(weir_factory, pg):
    # root may give it any group: one it is not in shows the change
    group = grp.getgrnam("nogroup") if os.geteuid() == 0 else grp.getgrgid(os.getgroups()[-1])
    w = weir_factory(settings={"unix_socket_group": group.gr_name})
    path = os.path.join(w.dir, ".s.PGSQL.%d" % w.port)
    assert os.stat(path).st_gid == group.gr_gid
    w2 = weir_factory(settings={"unix_socket_group": "no_such_group_here"})
    assert 'unix_socket_group: no group "no_such_group_here"' in w2.log_text()
    with w2.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def kernel_states(port):
    """States of the connections to port on the listening side: ss's names."""
    out = subprocess.run(["ss", "-Htan", "sport = :%d" % port], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and "LISTEN" not in line]


@pytest.mark.parametrize("defer", [1, 0])
def test_tcp_defer_accept(weir_factory, pg, defer):
    """With it, a connection that sends nothing is not handed to weir (the
    server side stays SYN-RECV); without it, it is established at once."""
    w = weir_factory(settings={"tcp_defer_accept": defer})
    s = socket.create_connection(("127.0.0.1", w.port))
    try:
        time.sleep(0.3)
        states = kernel_states(w.port)
        assert states == (["SYN-RECV"] if defer else ["ESTAB"]), states
        s.sendall(b"\0\0\0\x08\x04\xd2\x16\x2f")  # SSLRequest: now weir has it and answers
        assert s.recv(1) == b"N"
    finally:
        s.close()


def test_tcp_socket_buffer(weir_factory, pg):
    w = weir_factory(settings={"tcp_socket_buffer": 65536})
    with w.connect() as c:
        c.execute("SELECT 1")
        out = subprocess.run(["ss", "-Htmn", "sport = :%d" % w.port], capture_output=True, text=True,
                             timeout=10).stdout
    # The kernel doubles what is asked (socket(7)) and shows it as rb/tb.
    assert "rb131072" in out and "tb131072" in out, out


# ---- autodb_idle_timeout ----

def pools(w):
    r = psql(w, "SHOW POOLS", dbname="pgbouncer")
    assert r.returncode == 0, r.stderr
    return [line.split("|")[0] for line in r.stdout.splitlines()]


def test_autodb_idle_timeout(weir_factory, pg):
    w = weir_factory(databases={"*": "host=%s port=%d" % (pg.host, pg.port)},
                     settings={"autodb_idle_timeout": 1})
    with w.connect(dbname=pg.db) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        time.sleep(2.2)  # in use past the timeout and two sweeps: stays
        assert pg.db in pools(w)
    wait_for(lambda: pg.db not in pools(w), 8, interval=0.3, what="the unused automatic pool to go")
    assert "dropping database '%s' as it does not exist anymore or inactive auto-database" % pg.db in w.log_text()
    with w.connect(dbname=pg.db) as c:  # and comes back on demand
        assert c.execute("SELECT 1").fetchone() == (1,)


# ---- refused or without effect ----

def test_auth_type_pam_refused_at_start(pg):
    w = Weir(pg, settings={"auth_type": "pam"})
    w.write()
    r = subprocess.run([DAEMON, "--check-config", w.ini], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "auth_type pam is not supported by weir" in r.stdout + r.stderr, r


def test_settings_without_effect_are_named(weir_factory, pg):
    w = weir_factory(settings={"sbuf_loopcnt": 10, "dns_max_ttl": 30, "suspend_timeout": 20})
    log = w.stderr_text() + w.log_text()  # said while loading, before the log file opens
    for name in ("sbuf_loopcnt has no effect", "dns_max_ttl, dns_nxdomain_ttl and dns_zone_check_period have no "
                 "effect", "suspend_timeout has no effect"):
        assert name in log, log
    w2 = weir_factory()
    assert "has no effect" not in w2.stderr_text() + w2.log_text()
