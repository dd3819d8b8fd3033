"""Cancel requests, backends killed under a client, a PostgreSQL restart,
and bad input from clients."""
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import sqlstate_of, wait_for


def run_in_thread(fn):
    out = {}

    def wrap():
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: B902 - reported to the test
            out["error"] = e
        out["elapsed"] = time.monotonic() - t0
    t = threading.Thread(target=wrap)
    t.start()
    return t, out


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_reaches_the_right_query(weir_factory, mode):
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 2})
    a, b = w.connect(), w.connect()
    a.execute("SELECT 1")
    b.execute("SELECT 1")
    ta, ra = run_in_thread(lambda: a.execute("SELECT pg_sleep(20)"))
    tb, rb = run_in_thread(lambda: b.execute("SELECT 'b-done' FROM pg_sleep(1.5)").fetchone())
    time.sleep(0.5)  # both are running on the server now
    a.cancel()
    ta.join(10)
    assert not ta.is_alive(), "the cancelled query did not stop"
    assert isinstance(ra.get("error"), psycopg.errors.QueryCanceled), ra
    assert ra["elapsed"] < 5
    tb.join(10)
    assert rb.get("result") == ("b-done",), rb  # the other client's query was not touched
    assert rb["elapsed"] >= 1.4
    # both connections stay usable
    assert a.execute("SELECT 1").fetchone() == (1,)
    assert b.execute("SELECT 2").fetchone() == (2,)


def test_cancel_when_idle_does_nothing_harmful(weir_factory):
    """A cancel for a client that holds no server must not hit another client."""
    w = weir_factory(settings={"default_pool_size": 1})
    a, b = w.connect(), w.connect()
    a.execute("SELECT 1")
    tb, rb = run_in_thread(lambda: b.execute("SELECT 'b' FROM pg_sleep(1)").fetchone())
    time.sleep(0.3)
    a.cancel()  # a is idle; b holds the only server
    tb.join(10)
    assert rb.get("result") == ("b",), rb
    assert a.execute("SELECT 1").fetchone() == (1,)


def test_psql_cancel(weir, pg):
    p = subprocess.Popen([pg.tool("psql"), "-X", "-h", "127.0.0.1", "-p", str(weir.port), "-U", pg.user,
                          "-d", pg.db, "-c", "SELECT pg_sleep(30)"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PGPASSWORD="x"))
    # wait until the query runs on the server
    def running():
        with pg.connect() as c:
            return c.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                             "AND state = 'active'").fetchone()[0] == 1
    wait_for(running, 10, what="psql's query to start")
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert time.monotonic() - t0 < 5
    assert "canceling statement due to user request" in err, err
    with weir.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_backend_terminated_mid_query(weir_factory, pg, mode):
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 1})
    a = w.connect()
    a.execute("BEGIN")
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    ta, ra = run_in_thread(lambda: a.execute("SELECT pg_sleep(20)"))
    time.sleep(0.3)
    with pg.connect() as s:
        assert s.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    ta.join(10)
    assert not ta.is_alive()
    assert isinstance(ra.get("error"), psycopg.OperationalError), ra
    assert ra["elapsed"] < 5
    # the next client gets a fresh server from the pool
    with w.connect() as b:
        pid2 = b.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid2 != pid
        assert b.execute("SELECT 1").fetchone() == (1,)


def test_idle_pooled_backend_terminated(weir_factory, pg):
    """A server killed while idle in the pool is not handed to the next client."""
    db = pg.database("weir_it_idle")
    w = weir_factory(settings={"default_pool_size": 1}, databases={db: pg.entry(db)})
    c = w.connect(dbname=db)
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    with pg.connect() as s:
        s.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_for(lambda: pg.backends(db) == 0, 5, what="the backend to exit")
    time.sleep(0.1)
    for _ in range(3):
        assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.timeout(90)
def test_postgresql_restart(weir_factory, pg):
    if not pg.restart_cmd:
        pytest.skip("WEIR_TEST_PG_RESTART not set")
    w = weir_factory(settings={"default_pool_size": 2})
    a = w.connect()
    b = w.connect(autocommit=False)
    a.execute("SELECT 1")
    b.execute("SELECT 1")
    b.commit()
    r = subprocess.run(pg.restart_cmd, shell=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: _pg_up(pg), 30, what="PostgreSQL to accept connections again")
    # clients that were idle (no server held, transaction mode) go on working
    assert a.execute("SELECT 2").fetchone() == (2,)
    assert b.execute("SELECT 3").fetchone() == (3,)
    b.commit()
    # and new ones too
    with w.connect() as c:
        assert c.execute("SELECT 4").fetchone() == (4,)


def _pg_up(pg):
    try:
        pg.connect().close()
        return True
    except psycopg.OperationalError:
        return False


# ---- bad input ----

def _expect_protocol_error_and_close(wire, timeout=5):
    msgs = wire.read_until_closed(timeout)
    errors = [pgwire.parse_error_fields(b) for t, b in msgs if t == b"E"]
    return msgs, errors


@pytest.fixture
def bystander(weir):
    """A client that must keep working while others misbehave."""
    c = weir.connect()
    assert c.execute("SELECT 1").fetchone() == (1,)
    yield c
    assert c.execute("SELECT 'still here'").fetchone() == ("still here",)


def test_garbage_instead_of_startup(weir, bystander):
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    msgs, errors = _expect_protocol_error_and_close(w)
    assert errors and errors[0]["C"] == "08P01", msgs
    w.close()
    # binary noise with a plausible length
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.send(struct.pack("!I", 40) + os.urandom(36))
    msgs, errors = _expect_protocol_error_and_close(w)
    assert errors and errors[0]["C"] == "08P01", msgs
    w.close()


def test_startup_packet_too_large(weir, bystander):
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.send(pgwire.startup_packet("weir_test", "weir_test", application_name="x" * 20000))
    msgs, errors = _expect_protocol_error_and_close(w)
    assert errors and errors[0]["C"] == "08P01", msgs


def test_truncated_startup_packet(weir, bystander):
    pkt = pgwire.startup_packet("weir_test", "weir_test")
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.send(pkt[:len(pkt) // 2])
    w.sock.shutdown(socket.SHUT_WR)
    assert w.read_until_closed(5) == []  # nothing to answer; closed
    w.close()


def test_truncated_message_after_login(weir, bystander):
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.login_trust("weir_test", "weir_test")
    full = pgwire.query_message("SELECT 1")
    w.send(full[:7])
    w.sock.shutdown(socket.SHUT_WR)
    w.read_until_closed(5)
    w.close()


def test_invalid_message_length_after_login(weir, bystander):
    w = pgwire.Wire("127.0.0.1", weir.port)
    w.login_trust("weir_test", "weir_test")
    w.send(b"Q" + struct.pack("!I", 2) + b"SELECT 1\0")
    msgs, errors = _expect_protocol_error_and_close(w)
    assert errors and errors[-1]["C"] == "08P01", msgs
    w.close()


def test_oversized_packet(weir_factory):
    wr = weir_factory(settings={"max_packet_size": 4096})
    other = wr.connect()
    w = pgwire.Wire("127.0.0.1", wr.port)
    w.login_trust("weir_test", "weir_test")
    assert w.simple_query("SELECT 1")[-1] == (b"Z", b"I")  # small ones pass
    w.send(pgwire.query_message("SELECT '%s'" % ("x" * 100000)))
    msgs, errors = _expect_protocol_error_and_close(w)
    assert errors and errors[-1]["C"] == "08P01", msgs
    assert errors[-1]["M"].startswith("bad packet header: '51"), errors  # PgBouncer's words
    assert "over max_packet_size 4096" in wr.log_text()  # and the size, in the log
    w.close()
    assert other.execute("SELECT 1").fetchone() == (1,)
    # psycopg sees the error too
    c = wr.connect()
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT %s", ["y" * 100000])
    assert other.execute("SELECT 2").fetchone() == (2,)


def test_many_bad_clients_at_once(weir, bystander):
    socks = []
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", weir.port), timeout=5)
        s.sendall(os.urandom(1 + i % 20))
        socks.append(s)
    for s in socks:
        s.close()
    assert bystander.execute("SELECT 1").fetchone() == (1,)


# ---- clients that vanish ----

def _fresh_server_check(w):
    """A new client gets a clean, working server: not inside someone's
    transaction, no stray result waiting."""
    with w.connect() as c:
        assert c.execute("SELECT 'fresh', now() = statement_timestamp(), pg_current_xact_id_if_assigned()"
                         ).fetchone() == ("fresh", True, None)
        assert c.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_gone_mid_query(weir_factory, mode):
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 1})
    x = pgwire.Wire("127.0.0.1", w.port)
    x.login_trust("weir_test", "weir_test")
    x.send(pgwire.query_message("SELECT 'stale' FROM pg_sleep(1)"))
    time.sleep(0.2)
    x.close()
    t0 = time.monotonic()
    _fresh_server_check(w)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_gone_inside_transaction(weir_factory, pg, mode):
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 1})
    table = "gone_tx_%d" % w.port
    with pg.connect() as s:
        s.execute("CREATE TABLE %s (i int)" % table)
    try:
        x = pgwire.Wire("127.0.0.1", w.port)
        x.login_trust("weir_test", "weir_test")
        assert x.simple_query("BEGIN; INSERT INTO %s VALUES (1)" % table)[-1] == (b"Z", b"T")
        x.close()
        _fresh_server_check(w)
        with pg.connect() as s:
            assert s.execute("SELECT count(*) FROM %s" % table).fetchone() == (0,)
    finally:
        with pg.connect() as s:
            s.execute("DROP TABLE IF EXISTS %s" % table)


def test_client_gone_mid_large_result(weir_factory):
    w = weir_factory(settings={"default_pool_size": 1})
    x = pgwire.Wire("127.0.0.1", w.port)
    x.login_trust("weir_test", "weir_test")
    x.send(pgwire.query_message("SELECT g, repeat('x', 1000) FROM generate_series(1, 200000) g"))
    x.read_message()
    time.sleep(0.3)  # weir is now holding back the server (client not reading)
    x.close()
    t0 = time.monotonic()
    _fresh_server_check(w)
    assert time.monotonic() - t0 < 5


def test_client_gone_mid_copy_in(weir_factory, pg):
    w = weir_factory(settings={"default_pool_size": 1})
    table = "gone_copy_%d" % w.port
    with pg.connect() as s:
        s.execute("CREATE TABLE %s (i int)" % table)
    try:
        x = pgwire.Wire("127.0.0.1", w.port)
        x.login_trust("weir_test", "weir_test")
        x.send(pgwire.query_message("COPY %s FROM STDIN" % table))
        assert x.read_message()[0] == b"G"  # CopyInResponse
        x.send(pgwire.message(b"d", b"".join(b"%d\n" % i for i in range(1000))))
        x.close()
        _fresh_server_check(w)
        with pg.connect() as s:
            assert s.execute("SELECT count(*) FROM %s" % table).fetchone() == (0,)
    finally:
        with pg.connect() as s:
            s.execute("DROP TABLE IF EXISTS %s" % table)
