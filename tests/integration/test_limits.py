"""Limits and timeouts with PgBouncer's meanings and error texts:
query_wait_timeout, reserve pool, max_db_connections, max_user_connections,
idle_transaction_timeout, client_idle_timeout, query_timeout."""
import threading
import time

import psycopg
import pytest

from conftest import wait_for


def _max_backends_during(pg, db, fn, usename=None):
    seen = [0]
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            seen[0] = max(seen[0], pg.backends(db, usename))
            time.sleep(0.02)
    m = threading.Thread(target=monitor)
    m.start()
    try:
        fn()
    finally:
        stop.set()
        m.join()
    return seen[0]


def _run_sleepers(w, db, n, seconds, deadline=8, **kw):
    """n clients each run one pg_sleep at the same time; all must finish in time."""
    conns = [w.connect(dbname=db, **kw) for _ in range(n)]
    errors = []
    done = []

    def run(c):
        try:
            c.execute("SELECT pg_sleep(%s)" % seconds)
            done.append(c)
        except psycopg.Error as e:
            errors.append(e)
    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    assert not errors, errors[0]
    assert len(done) == n, "only %d of %d queries finished within %ds" % (len(done), n, deadline)
    for c in conns:
        c.close()


def _parallel(*calls):
    """Run the calls in threads; re-raise the first failure."""
    failures = []

    def wrap(fn, args, kw):
        try:
            fn(*args, **kw)
        except BaseException as e:  # noqa: B902 - reported below
            failures.append(e)
    ts = [threading.Thread(target=wrap, args=c, daemon=True) for c in calls]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    if failures:
        raise failures[0]


def test_query_wait_timeout(weir_factory):
    w = weir_factory(settings={"default_pool_size": 1, "query_wait_timeout": 1})
    holder = w.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    waiter = w.connect()
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
        waiter.execute("SELECT 1")
    assert 0.8 < time.monotonic() - t0 < 5
    holder.execute("COMMIT")
    assert holder.execute("SELECT 1").fetchone() == (1,)


def test_reserve_pool(weir_factory, pg):
    db = pg.database("weir_it_reserve")
    wait_for(lambda: pg.backends(db) == 0, 10, what="no leftover backends")
    w = weir_factory(settings={"default_pool_size": 2, "reserve_pool_size": 1, "reserve_pool_timeout": 0.2},
                     databases={db: pg.entry(db)})
    peak = _max_backends_during(pg, db, lambda: _run_sleepers(w, db, 5, 1.0))
    assert peak == 3, "pool of 2 plus a reserve of 1 should give exactly 3 servers, saw %d" % peak


@pytest.mark.timeout(40)
def test_max_db_connections(weir_factory, pg):
    """Two users' pools share max_db_connections=2 for one database: every
    query completes, and never more than 2 servers are open."""
    db = pg.database("weir_it_maxdb")
    wait_for(lambda: pg.backends(db) == 0, 10, what="no leftover backends")
    w = weir_factory(settings={"default_pool_size": 5, "max_db_connections": 2},
                     databases={db: pg.entry(db)})
    peak = _max_backends_during(pg, db, lambda: _parallel(
        (_run_sleepers, (w, db, 3, 0.5), {}),
        (_run_sleepers, (w, db, 3, 0.5), {"user": pg.scram_user})))
    assert 1 <= peak <= 2, "max_db_connections=2 but %d servers were open to %s" % (peak, db)


@pytest.mark.timeout(40)
def test_max_user_connections(weir_factory, pg):
    """One user's pools for two databases share max_user_connections=2."""
    db1, db2 = pg.database("weir_it_maxu1"), pg.database("weir_it_maxu2")
    w = weir_factory(settings={"default_pool_size": 5, "max_user_connections": 2},
                     databases={db1: pg.entry(db1), db2: pg.entry(db2)})
    seen = [0]
    stop = threading.Event()

    def monitor():
        # One query over both databases: two separate counts taken apart in
        # time can see a server that moved from one pool to the other twice.
        with pg.connect() as c:
            while not stop.is_set():
                n = c.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                              "AND datname IN (%s, %s) AND pid <> pg_backend_pid()", (db1, db2)).fetchone()[0]
                seen[0] = max(seen[0], n)
                time.sleep(0.02)
    m = threading.Thread(target=monitor)
    m.start()
    try:
        _parallel((_run_sleepers, (w, db1, 3, 0.5), {}), (_run_sleepers, (w, db2, 3, 0.5), {}))
    finally:
        stop.set()
        m.join()
    assert 1 <= seen[0] <= 2, "max_user_connections=2 but the user had %d servers" % seen[0]


def test_idle_transaction_timeout(weir_factory, pg):
    db = pg.database("weir_it_idletx")
    w = weir_factory(settings={"idle_transaction_timeout": 1}, databases={db: pg.entry(db)})
    c = w.connect(dbname=db)
    c.execute("BEGIN")
    c.execute("SELECT 1")
    time.sleep(1.6)
    with pytest.raises(psycopg.OperationalError, match="idle transaction timeout"):
        c.execute("SELECT 1")
    # the server holding that transaction was closed, not returned to the pool
    wait_for(lambda: pg.backends(db) == 0, 5, what="the server in a transaction to be closed")
    with w.connect(dbname=db) as d:
        assert d.execute("SELECT now() = statement_timestamp()").fetchone() == (True,)


def test_client_idle_timeout(weir_factory):
    w = weir_factory(settings={"client_idle_timeout": 1})
    c = w.connect()
    c.execute("SELECT 1")
    time.sleep(1.6)
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT 1")
    assert "client_idle_timeout" in w.log_text()
    busy = w.connect()
    assert busy.execute("SELECT 1 FROM pg_sleep(1.3)").fetchone() == (1,)  # a running query is not idle


def test_query_timeout(weir_factory):
    w = weir_factory(settings={"query_timeout": 1})
    c = w.connect()
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="query timeout"):
        c.execute("SELECT pg_sleep(10)")
    assert time.monotonic() - t0 < 5
    with w.connect() as d:
        assert d.execute("SELECT 1").fetchone() == (1,)
