"""Failing backends: PostgreSQL down when weir starts, refusing connections
(too many), restarting under weir, slow to accept (server_connect_timeout),
and a wrong backend password. As with PgBouncer, a backend that is away for
a while (down, restarting, full) costs waiting clients a delay, not an
error: they wait up to query_wait_timeout while weir retries, and are
served once it is back. A backend that refuses the login for good (wrong
password) fails them at once with its words. weir must recover by itself
once the backend does. The backend's address is a small TCP relay in this process (relay.py:
down, forwarding to the test cluster, or accepting and never answering), so
the shared PostgreSQL is never stopped."""
import threading
import time

import psycopg
import pytest

from conftest import free_port, wait_for


def relayed(pg, relay, **extra):
    return {pg.db: "host=127.0.0.1 port=%d dbname=%s" % (relay.port, pg.db)
            + "".join(" %s=%s" % kv for kv in extra.items())}


def refused(w, timeout, **kw):
    """Connect and run a query through w; -> (the error, seconds it took)."""
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as ei:
        with w.connect(**kw) as c:
            c.execute("SELECT 1")
    took = time.monotonic() - t0
    assert took < timeout, "the error took %.1fs (%s)" % (took, ei.value)
    return ei.value, took


def works(w, **kw):
    try:
        with w.connect(**kw) as c:
            return c.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


FAST = {"server_login_retry": 1, "server_connect_timeout": 2, "query_wait_timeout": 10}


def held(w, release, conn=None, **kw):
    """A query through w (on conn, or a new connection) that must still be
    waiting a second later; release() brings the backend back and the query
    must then succeed. -> seconds it took."""
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            if conn is not None:
                out["row"] = conn.execute("SELECT 1").fetchone()
            else:
                with w.connect(**kw) as c:
                    out["row"] = c.execute("SELECT 1").fetchone()
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e
        out["took"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(1.0)
    assert t.is_alive(), "the client was not held: %r" % out
    release()
    t.join(15)
    assert not t.is_alive(), "the held client was never served"
    assert out.get("row") == (1,), out
    return out["took"]


def test_backend_down_at_start_then_up(weir_factory, pg, relay):
    w = weir_factory(databases=relayed(pg, relay), settings=FAST)  # weir starts without PostgreSQL
    took = held(w, lambda: relay.start("up"))
    print("backend down at start, up a second later: served after %.2fs" % took)
    log = w.log_text()
    assert "connect failed" in log and "refused" in log.lower(), log[-2000:]


def test_backend_down_longer_than_query_wait_timeout(weir_factory, pg, relay):
    w = weir_factory(databases=relayed(pg, relay), settings=dict(FAST, query_wait_timeout=2))
    e, took = refused(w, 5)
    print("backend down: %.2fs: %s" % (took, e))
    assert took > 1.5 and "query_wait_timeout" in str(e), (took, e)
    relay.start("up")
    wait_for(lambda: works(w), 10, interval=0.3, what="weir to reach PostgreSQL once it is up")


def test_backend_unix_socket_missing_is_waited_for(weir_factory, pg, tmp_path):
    """A Unix-socket server that is down (no socket file: libpq fails at once,
    before any polling) is waited for like a TCP one, not a lasting refusal."""
    w = weir_factory(databases={pg.db: "host=%s port=5 dbname=%s" % (tmp_path, pg.db)},
                     settings=dict(FAST, query_wait_timeout=2))
    e, took = refused(w, 5)
    assert took > 1.5 and "query_wait_timeout" in str(e), (took, e)
    assert "No such file or directory" in w.log_text()


def no_servers(w):
    """Wait until weir has seen its server connections cut (SHOW SERVERS empty)."""
    from console import Console
    con = Console(w)
    wait_for(lambda: con.show("SERVERS") == [], 5, interval=0.05, what="weir to see its servers cut")
    con.conn.close()


def test_backend_restarting(weir_factory, pg, relay):
    relay.start("up")
    w = weir_factory(databases=relayed(pg, relay), settings=FAST)
    a = w.connect(autocommit=True)
    assert a.execute("SELECT 1").fetchone() == (1,)
    relay.stop()  # PostgreSQL goes away: every server connection is cut
    no_servers(w)
    # The logged-in client's next query waits while weir retries, as with
    # PgBouncer, and runs once PostgreSQL is back: the restart costs a delay.
    took = held(w, lambda: relay.start("up"), conn=a)
    print("backend restarting: the logged-in client was served after %.2fs" % took)
    relay.stop()
    no_servers(w)
    took = held(w, lambda: relay.start("up"))
    print("backend restarting: a new client was served after %.2fs" % took)


def test_backend_slow_to_accept(weir_factory, pg, relay):
    """A backend that accepts and never answers: server_connect_timeout ends
    each attempt (logged), the client waits out query_wait_timeout instead
    of hanging, and is told so."""
    relay.start("silent")
    w = weir_factory(databases=relayed(pg, relay), settings=dict(FAST, query_wait_timeout=4))
    e, took = refused(w, 8)
    print("backend silent: %.2fs: %s" % (took, e))
    assert took >= 3.5 and "query_wait_timeout" in str(e), (took, e)
    assert "connect timed out" in w.log_text()
    relay.stop()
    relay.start("up")
    wait_for(lambda: works(w), 10, interval=0.3, what="weir to connect once the backend answers")


def test_backend_refusing_too_many_connections(weir_factory, pg):
    """'too many connections' passes: the client waits for a slot, not errors."""
    db = pg.database("weir_limit_test")
    with pg.connect() as s:
        s.execute('ALTER DATABASE "%s" CONNECTION LIMIT 1' % db)
    # The superuser's connection takes the only slot; weir logs in as an
    # ordinary role, which the limit applies to.
    hog = pg.connect(dbname=db)
    try:
        w = weir_factory(databases={db: pg.entry(db, user=pg.scram_user, password=pg.scram_password)},
                         settings=FAST)
        took = held(w, hog.close, dbname=db)
        print("backend refusing (too many connections): served %.2fs later, once a slot was free" % took)
        assert "too many connections" in w.log_text()
    finally:
        hog.close()
        with pg.connect() as s:
            s.execute('ALTER DATABASE "%s" CONNECTION LIMIT -1' % db)


def test_wrong_backend_password(weir_factory, pg):
    w = weir_factory(databases={pg.db: pg.entry(user=pg.scram_user, password="not-the-password")},
                     settings=FAST)
    e, took = refused(w, 5)
    print("wrong backend password: %.2fs: %s" % (took, e))
    # A lasting refusal: at once, with the server's words, not after query_wait_timeout.
    assert "password authentication failed" in str(e) and took < 2, (took, e)
    # The backend changes: the password weir has becomes the right one.
    with pg.connect() as s:
        s.execute("ALTER ROLE %s PASSWORD 'not-the-password'" % pg.scram_user)
    try:
        wait_for(lambda: works(w), 10, interval=0.3, what="weir to log in once the password matches")
    finally:
        with pg.connect() as s:
            s.execute("ALTER ROLE %s PASSWORD '%s'" % (pg.scram_user, pg.scram_password))
