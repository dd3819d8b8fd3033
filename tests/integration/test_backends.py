"""Failing backends: PostgreSQL down when weir starts, refusing connections
(too many), restarting under weir, slow to accept (server_connect_timeout),
and a wrong backend password. Each must give clients a clear error within
the configured timeouts, and weir must recover by itself once the backend
does. The backend's address is a small TCP relay in this process (down,
forwarding to the test cluster, or accepting and never answering), so the
shared PostgreSQL is never stopped."""
import select
import socket
import threading
import time

import psycopg
import pytest

from conftest import free_port, wait_for


class Relay:
    """A TCP port in front of PostgreSQL: 'down' (nothing listens),
    'up' (forwards), or 'silent' (accepts, never answers)."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.mode = "down"
        self.lsock = None
        self.conns = []
        self.thread = None
        self.stop_ev = threading.Event()

    def start(self, mode="up"):
        assert self.lsock is None
        self.mode = mode
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(64)
        self.stop_ev.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        """Down: listener closed, every connection cut."""
        if self.lsock is None:
            return
        self.stop_ev.set()
        self.thread.join(5)
        self.lsock.close()
        self.lsock = None
        for a, b in self.conns:
            for s in (a, b):
                if s is not None:
                    s.close()
        self.conns = []

    def _run(self):
        pairs = {}
        while not self.stop_ev.is_set():
            socks = [self.lsock] + list(pairs)
            r, _, _ = select.select(socks, [], [], 0.05)
            for s in r:
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    if self.mode == "silent":
                        self.conns.append((c, None))
                        continue
                    b = socket.create_connection(self.target)
                    pairs[c], pairs[b] = b, c
                    self.conns.append((c, b))
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                peer = pairs.get(s)
                if not data or peer is None:
                    pairs.pop(s, None)
                    if peer is not None:
                        pairs.pop(peer, None)
                        peer.close()
                    s.close()
                    continue
                try:
                    peer.sendall(data)
                except OSError:
                    pass


@pytest.fixture
def relay(pg):
    r = Relay((pg.host, pg.port))
    yield r
    r.stop()


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


def test_backend_down_at_start_then_up(weir_factory, pg, relay):
    w = weir_factory(databases=relayed(pg, relay), settings=FAST)  # weir starts without PostgreSQL
    e, took = refused(w, 5)
    print("backend down: %.2fs: %s" % (took, e))
    assert "connection refused" in str(e).lower() or "could not connect" in str(e).lower(), e
    relay.start("up")
    wait_for(lambda: works(w), 10, interval=0.3, what="weir to reach PostgreSQL once it is up")


def test_backend_restarting(weir_factory, pg, relay):
    relay.start("up")
    w = weir_factory(databases=relayed(pg, relay), settings=FAST)
    a = w.connect()
    assert a.execute("SELECT 1").fetchone() == (1,)
    relay.stop()  # PostgreSQL goes away: every server connection is cut
    e, took = refused(w, 5)
    print("backend restarting: %.2fs: %s" % (took, e))
    # A logged-in client whose next query finds no server is told and
    # closed, as PgBouncer fails waiting clients fast when connects fail.
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as ei:
        a.execute("SELECT 1")
    assert time.monotonic() - t0 < 5
    assert "server login failed" in str(ei.value) or "server conn crashed" in str(ei.value), ei.value
    relay.start("up")
    wait_for(lambda: works(w), 10, interval=0.3, what="weir to reconnect after the restart")


def test_backend_slow_to_accept(weir_factory, pg, relay):
    """A backend that accepts and never answers: server_connect_timeout ends
    the attempt and the client hears about it, instead of hanging."""
    relay.start("silent")
    w = weir_factory(databases=relayed(pg, relay), settings=FAST)
    e, took = refused(w, FAST["server_connect_timeout"] + 4)
    print("backend silent: %.2fs: %s" % (took, e))
    assert took >= FAST["server_connect_timeout"] - 0.5
    assert "timeout" in str(e).lower() or "timed out" in str(e).lower(), e
    relay.stop()
    relay.start("up")
    wait_for(lambda: works(w), 10, interval=0.3, what="weir to connect once the backend answers")


def test_backend_refusing_too_many_connections(weir_factory, pg):
    db = pg.database("weir_limit_test")
    with pg.connect() as s:
        s.execute('ALTER DATABASE "%s" CONNECTION LIMIT 1' % db)
    # The superuser's connection takes the only slot; weir logs in as an
    # ordinary role, which the limit applies to.
    hog = pg.connect(dbname=db)
    try:
        w = weir_factory(databases={db: pg.entry(db, user=pg.scram_user, password=pg.scram_password)},
                         settings=FAST)
        e, took = refused(w, 5, dbname=db)
        print("backend refusing: %.2fs: %s" % (took, e))
        assert "too many connections" in str(e), e
        hog.close()
        wait_for(lambda: works(w, dbname=db), 10, interval=0.3, what="weir to get a slot once one is free")
    finally:
        hog.close()
        with pg.connect() as s:
            s.execute('ALTER DATABASE "%s" CONNECTION LIMIT -1' % db)


def test_wrong_backend_password(weir_factory, pg):
    w = weir_factory(databases={pg.db: pg.entry(user=pg.scram_user, password="not-the-password")},
                     settings=FAST)
    e, took = refused(w, 5)
    print("wrong backend password: %.2fs: %s" % (took, e))
    assert "password authentication failed" in str(e), e
    # The backend changes: the password weir has becomes the right one.
    with pg.connect() as s:
        s.execute("ALTER ROLE %s PASSWORD 'not-the-password'" % pg.scram_user)
    try:
        wait_for(lambda: works(w), 10, interval=0.3, what="weir to log in once the password matches")
    finally:
        with pg.connect() as s:
            s.execute("ALTER ROLE %s PASSWORD '%s'" % (pg.scram_user, pg.scram_password))
