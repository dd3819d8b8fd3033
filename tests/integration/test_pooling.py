"""Pool modes (session, transaction, statement), pool size limits under 200
concurrent clients, waiting clients, and client parameters re-applied when a
client is given a server whose settings differ."""
import asyncio
import threading
import time

import asyncpg
import psycopg
import pytest

from conftest import sqlstate_of, wait_for


def test_session_mode_keeps_one_backend(weir_factory):
    w = weir_factory(pool_mode="session", settings={"default_pool_size": 1})
    a = w.connect()
    pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    a.execute("SET work_mem = '1234kB'")
    for _ in range(3):
        assert a.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert a.execute("SHOW work_mem").fetchone()[0] == "1234kB"

    # pool of 1: a second client waits for the first to leave
    result = {}

    def second():
        with w.connect() as b:
            result["pid"] = b.execute("SELECT pg_backend_pid()").fetchone()[0]
            result["work_mem"] = b.execute("SHOW work_mem").fetchone()[0]
    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), "the second client should wait while the only server is held for a session"
    a.close()
    t.join(10)
    assert not t.is_alive()
    assert result["pid"] == pid
    # the session state was reset (server_reset_query = DISCARD ALL) before reuse
    assert result["work_mem"] != "1234kB"


def test_transaction_mode_shares_backend(weir_factory):
    w = weir_factory(settings={"default_pool_size": 1})
    a, b = w.connect(), w.connect()
    pa = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    pb = b.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pa == pb, "in transaction mode two clients take turns on the one server"

    # an open transaction holds the server: b waits until a commits
    a.execute("CREATE TEMP TABLE IF NOT EXISTS _x (i int)") if False else None
    a.execute("BEGIN")
    a.execute("SELECT 1")
    done = threading.Event()

    def run_b():
        b.execute("SELECT 2")
        done.set()
    t = threading.Thread(target=run_b)
    t.start()
    assert not done.wait(0.3), "b must wait while a is inside a transaction"
    a.execute("COMMIT")
    assert done.wait(10)
    t.join()


def test_statement_mode(weir_factory):
    w = weir_factory(pool_mode="statement", settings={"default_pool_size": 1})
    ok = w.connect()
    assert ok.execute("SELECT 1").fetchone() == (1,)
    bad = w.connect()
    with pytest.raises(psycopg.Error) as ei:
        bad.execute("BEGIN")
        bad.execute("SELECT 1")
    assert "transaction blocks not allowed in statement pooling mode" in str(ei.value)
    # the other client keeps working, on a server that is not inside that transaction
    for _ in range(3):
        assert ok.execute("SELECT now() = statement_timestamp(), pg_current_xact_id_if_assigned()"
                          ).fetchone() == (True, None)
    # psycopg's non-autocommit mode (implicit BEGIN) is refused the same way
    c = w.connect(autocommit=False)
    with pytest.raises(psycopg.Error) as ei:
        c.execute("SELECT 1")
    assert "transaction blocks not allowed in statement pooling mode" in str(ei.value)


def test_200_clients_over_pool_of_5(weir_factory, pg):
    db = pg.database("weir_it_pool")
    wait_for(lambda: pg.backends(db) == 0, 10, what="no leftover backends in %s" % db)
    w = weir_factory(settings={"default_pool_size": 5, "max_client_conn": 400},
                     databases={db: pg.entry(db)})
    seen = []
    stop = threading.Event()

    def monitor():
        with pg.connect() as c:
            while not stop.is_set():
                seen.append(c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'client backend'", [db]).fetchone()[0])
                time.sleep(0.01)
    mt = threading.Thread(target=monitor)
    mt.start()

    async def client(i):
        c = await asyncpg.connect(host="127.0.0.1", port=w.port, user=pg.user, password="x",
                                  database=db, statement_cache_size=0, timeout=30)
        try:
            for j in range(3):
                v = await c.fetchval("SELECT $1::int * 1000 + $2::int FROM pg_sleep(0.002)", i, j)
                assert v == i * 1000 + j
            async with c.transaction():
                a = await c.fetchval("SELECT txid_current()")
                b = await c.fetchval("SELECT txid_current()")
                assert a == b  # both statements inside one transaction on one server
            return i
        finally:
            await c.close()

    async def main():
        return await asyncio.gather(*(client(i) for i in range(200)), return_exceptions=True)

    t0 = time.monotonic()
    try:
        results = asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        stop.set()
        mt.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, "%d of 200 clients failed, first: %r" % (len(errors), errors[0])
    assert sorted(results) == list(range(200))
    assert max(seen) <= 5, "server connections exceeded the pool size: max %d" % max(seen)
    assert max(seen) >= 2, "the pool was hardly used (max %d)" % max(seen)
    assert time.monotonic() - t0 < 90


def test_waiting_clients_served_in_arrival_order(weir_factory):
    w = weir_factory(settings={"default_pool_size": 1})
    holder = w.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    order = []
    lock = threading.Lock()
    conns = [w.connect() for _ in range(5)]

    def waiter(i):
        # the server's clock says when each was served, whatever the threads do
        ts = conns[i].execute("SELECT clock_timestamp() FROM (SELECT %s::int) s", [i]).fetchone()[0]
        with lock:
            order.append((ts, i))
    threads = []
    for i in range(5):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.1)  # let this one reach weir's queue before the next
    assert order == []
    holder.execute("COMMIT")
    for t in threads:
        t.join(10)
    assert [i for _, i in sorted(order)] == [0, 1, 2, 3, 4]


def test_parameters_follow_the_client(weir_factory):
    """Pool of 1, transaction mode: each client sees its own settings."""
    w = weir_factory(settings={"default_pool_size": 1})
    a = w.connect(application_name="client-a")
    b = w.connect(application_name="client-b", client_encoding="LATIN1")
    a.execute("SET TimeZone = 'Asia/Tokyo'")
    a.execute("SET DateStyle = 'German, DMY'")
    b.execute("SET TimeZone = 'America/New_York'")
    b.execute("SET IntervalStyle = 'sql_standard'")
    for _ in range(3):
        ra = a.execute("SELECT current_setting('TimeZone'), current_setting('DateStyle'), "
                       "current_setting('application_name'), current_setting('client_encoding'), "
                       "current_setting('IntervalStyle'), date '2024-01-31'::text").fetchone()
        rb = b.execute("SELECT current_setting('TimeZone'), current_setting('DateStyle'), "
                       "current_setting('application_name'), current_setting('client_encoding'), "
                       "current_setting('IntervalStyle'), 'é'").fetchone()
        assert ra == ("Asia/Tokyo", "German, DMY", "client-a", "UTF8", "postgres", "31.01.2024")
        assert rb == ("America/New_York", "ISO, MDY", "client-b", "LATIN1", "sql_standard", "é")
    # the same server was used by both
    pa = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    pb = b.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pa == pb


def test_startup_parameters_follow_the_client_asyncpg(weir_factory, pg):
    w = weir_factory(settings={"default_pool_size": 1})

    async def main():
        kw = dict(host="127.0.0.1", port=w.port, user=pg.user, password="x", database=pg.db,
                  statement_cache_size=0)
        a = await asyncpg.connect(server_settings={"TimeZone": "Europe/Helsinki", "application_name": "apg-a"}, **kw)
        b = await asyncpg.connect(server_settings={"TimeZone": "UTC", "application_name": "apg-b"}, **kw)
        try:
            for _ in range(3):
                assert tuple(await a.fetchrow("SELECT current_setting('TimeZone'), current_setting('application_name')")) \
                    == ("Europe/Helsinki", "apg-a")
                assert tuple(await b.fetchrow("SELECT current_setting('TimeZone'), current_setting('application_name')")) \
                    == ("UTC", "apg-b")
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())
