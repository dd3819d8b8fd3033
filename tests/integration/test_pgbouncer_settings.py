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
import re
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
    # refused before waiting in line for a server, as PgBouncer
    w1 = weir_factory(settings={"disable_pqexec": 1, "default_pool_size": 1, "query_wait_timeout": 5})
    holder = w1.connect(autocommit=False)
    holder.execute("SELECT %s::int", [1])  # in a transaction: holds the only server
    t0 = time.monotonic()
    r = psql(w1, "SELECT 1")
    assert "PQexec disallowed" in r.stderr and time.monotonic() - t0 < 3, r
    holder.rollback()
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
    wait_for(lambda: "pooler error: database configuration changed" in w.log_text(), 10,
             what="the idle session to be closed by the next sweep")
    with pytest.raises(psycopg.OperationalError) as e:
        idle.execute("SELECT 1")
    assert told(e.value), e.value
    # The transaction in progress finishes; the session ends at its boundary.
    assert busy.execute("SELECT 2").fetchone() == (2,)
    busy.execute("COMMIT")
    wait_for(lambda: w.log_text().count("pooler error: database configuration changed") == 2, 5,
             what="the busy session to be closed at its COMMIT")
    with pytest.raises(psycopg.OperationalError) as e:
        busy.execute("SELECT 1")
    assert told(e.value), e.value
    with pg.connect() as c:  # the old server connections are gone from PostgreSQL
        wait_for(lambda: c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 0,
                 5, what="the old server to be closed")
    with w.connect() as c:  # new sessions get new servers
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_server_fast_close_lets_a_slow_reader_finish(weir_factory, pg):
    """A session reading a large answer slowly when its server is to close:
    it gets every row, CommandComplete and ReadyForQuery, then the FATAL."""
    import struct
    from pgwire import parse_error_fields, query_message, startup_packet
    w = weir_factory(pool_mode="session", settings={"server_fast_close": 1})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: a small window
    s.connect(("127.0.0.1", w.port))
    s.sendall(startup_packet(pg.user, pg.db))
    data = b""
    while b"Z\0\0\0\x05" not in data:
        data += s.recv(65536)
    s.sendall(query_message("SELECT repeat('x', 2000) FROM generate_series(1, 3000)"))
    time.sleep(0.5)  # weir's buffers fill; it stops reading the server
    reconnect(w)
    time.sleep(1.8)  # the sweep flags the server while the answer is unread
    s.settimeout(10)
    data = b""
    while True:  # slowly: the end of the answer still waits in weir at ReadyForQuery
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        time.sleep(0.0005)
    s.close()
    rows, tail, pos = 0, [], 0
    while pos + 5 <= len(data):
        t, n = data[pos:pos + 1], struct.unpack("!I", data[pos + 1:pos + 5])[0]
        if t == b"D":
            rows += 1
        else:
            tail.append((t, parse_error_fields(data[pos + 5:pos + 1 + n]).get("M") if t == b"E" else None))
        pos += 1 + n
    assert rows == 3000 and tail == [(b"T", None), (b"C", None), (b"Z", None),
                                     (b"E", "database configuration changed")], (rows, tail, len(data) - pos)


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
        time.sleep(0.1)  # the kernel holds it for a second (PgBouncer's setting)
        states = kernel_states(w.port)
        assert states == (["SYN-RECV"] if defer else ["ESTAB"]), states
        s.sendall(b"\0\0\0\x08\x04\xd2\x16\x2f")  # SSLRequest: now weir has it and answers
        assert s.recv(1) == b"N"
    finally:
        s.close()


def test_tcp_socket_buffer(weir_factory, pg):
    """Both ends weir holds, towards the client and towards PostgreSQL."""
    w = weir_factory(settings={"tcp_socket_buffer": 32768})
    with w.connect() as c:
        c.execute("SELECT 1")
        client_side = subprocess.run(["ss", "-Htmn", "sport = :%d" % w.port], capture_output=True, text=True,
                                     timeout=10).stdout
        server_side = subprocess.run(["ss", "-Htmnp", "dport = :%d" % pg.port], capture_output=True, text=True,
                                     timeout=10).stdout
    # ss writes a socket's memory on a continuation line: keep weir's sockets whole
    sockets = re.split(r"\n(?=\S)", server_side)
    server_side = "\n".join(x for x in sockets if "pid=%d," % w.pid in x)
    # The kernel doubles what is asked (socket(7)) and shows it as rb/tb;
    # neither 65536 is a default here (rb 131072, tb grows from 16384).
    for side in (client_side, server_side):
        assert "rb65536" in side and "tb65536" in side, (client_side, server_side)


# ---- autodb_idle_timeout ----

def pools(w):
    r = psql(w, "SHOW POOLS", dbname="pgbouncer")
    assert r.returncode == 0, r.stderr
    return [line.split("|")[0] for line in r.stdout.splitlines()]


def test_autodb_idle_timeout(weir_factory, pg):
    w = weir_factory(databases={"*": "host=%s port=%d" % (pg.host, pg.port)},
                     settings={"autodb_idle_timeout": 1, "server_idle_timeout": 1})
    with w.connect(dbname=pg.db) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        time.sleep(2.2)  # in use past the timeout and two sweeps: stays
        assert pg.db in pools(w)
    # Its server counts as use too (PgBouncer): it goes after server_idle_timeout, then the pool.
    wait_for(lambda: pg.db not in pools(w), 10, interval=0.3, what="the unused automatic pool to go")
    r = psql(w, "SHOW DATABASES", dbname="pgbouncer")
    assert pg.db not in [line.split("|")[0] for line in r.stdout.splitlines()], r.stdout
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
