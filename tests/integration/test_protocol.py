"""Everything a client sends goes through: simple and extended query,
pipelines, multi-statement queries, COPY both ways (large, and failing),
notices, errors in transactions, empty queries, large results with bounded
memory in weir."""
import asyncio
import io
import threading
import time

import asyncpg
import psycopg
import psycopg2
import pytest

import pgwire
from conftest import sqlstate_of, wait_for

MB = 1024 * 1024


@pytest.fixture(params=["session", "transaction"])
def mweir(request, weir_factory):
    return weir_factory(pool_mode=request.param, settings={"default_pool_size": 2})


def test_extended_protocol_binary_params(mweir):
    c = mweir.connect()
    cur = c.cursor(binary=True)
    row = cur.execute("SELECT %b::int + 1, %b::text || 'y', %b::bytea, %b::float8 * 2, %b::int[]",
                      [41, "x", b"\x00\x01\xff", 1.25, [1, 2, 3]]).fetchone()
    assert row == (42, "xy", b"\x00\x01\xff", 2.5, [1, 2, 3])
    # text-format params and results, many times over, unnamed statements
    for i in range(20):
        assert c.execute("SELECT %s::int * 2, %s", [i, "v%d" % i]).fetchone() == (i * 2, "v%d" % i)
    # executemany runs one statement with many parameter sets
    c.execute("CREATE TEMP TABLE em (i int, t text)") if mweir.settings["pool_mode"] == "session" else None
    if mweir.settings["pool_mode"] == "session":
        c.cursor().executemany("INSERT INTO em VALUES (%s, %s)", [(i, str(i)) for i in range(100)])
        assert c.execute("SELECT count(*), sum(i) FROM em").fetchone() == (100, 4950)


def test_extended_protocol_error_then_usable(mweir):
    c = mweir.connect()
    with pytest.raises(psycopg.errors.DivisionByZero):
        c.execute("SELECT %s::int / 0", [1])
    assert c.execute("SELECT %s::int", [7]).fetchone() == (7,)


@pytest.mark.timeout(20)
def test_asyncpg_fetch_with_params(mweir, pg):
    async def main():
        c = await asyncpg.connect(host="127.0.0.1", port=mweir.port, user=pg.user, password="x",
                                  database=pg.db, statement_cache_size=0)
        try:
            rows = await c.fetch("SELECT g, g::text || $1 FROM generate_series(1, $2::int) g", "!", 100)
            assert len(rows) == 100 and rows[-1][0] == 100 and rows[-1][1] == "100!"
            assert await c.fetchval("SELECT $1::numeric + 1", 1) == 2
            async with c.transaction():
                await c.execute("CREATE TEMP TABLE ta (i int) ON COMMIT DROP")
                await c.executemany("INSERT INTO ta VALUES ($1)", [(i,) for i in range(50)])
                assert await c.fetchval("SELECT sum(i) FROM ta") == 1225
            with pytest.raises(asyncpg.DivisionByZeroError):
                await c.fetchval("SELECT 1 / $1::int", 0)
            assert await c.fetchval("SELECT 'ok'") == "ok"
        finally:
            await asyncio.wait_for(c.close(), 5)
    asyncio.run(main())


def test_pipeline_mode(mweir):
    c = mweir.connect()
    with c.pipeline():
        curs = [c.execute("SELECT %s::int, repeat('x', %s)", [i, i]) for i in range(200)]
    for i, cur in enumerate(curs):
        assert cur.fetchone() == (i, "x" * i)
    # an error in the middle aborts the rest of that pipeline only
    with pytest.raises(psycopg.errors.DivisionByZero):
        with c.pipeline():
            c.execute("SELECT 1")
            c.execute("SELECT 1 / 0")
            c.execute("SELECT 2")
    assert c.execute("SELECT 3").fetchone() == (3,)


def test_pipeline_transaction(mweir):
    c = mweir.connect(autocommit=False)
    with c.pipeline():
        c.execute("CREATE TEMP TABLE pt (i int) ON COMMIT DROP")
        for i in range(50):
            c.execute("INSERT INTO pt VALUES (%s)", [i])
        cur = c.execute("SELECT count(*), sum(i) FROM pt")
    assert cur.fetchone() == (50, 1225)
    c.commit()


def test_multi_statement_simple_query(mweir):
    w = pgwire.Wire("127.0.0.1", mweir.port)
    try:
        w.login_trust("weir_test", "weir_test")
        msgs = w.simple_query("SELECT 1; SELECT 2, 3; BEGIN; SELECT 4; COMMIT")
        tags = [b.rstrip(b"\0").decode() for t, b in msgs if t == b"C"]
        assert tags == ["SELECT 1", "SELECT 1", "BEGIN", "SELECT 1", "COMMIT"]
        assert msgs[-1] == (b"Z", b"I")
        # an error stops the rest of the string
        msgs = w.simple_query("SELECT 1; SELECT 1/0; SELECT 2")
        types = [t for t, _ in msgs]
        assert types.count(b"C") == 1 and b"E" in types and msgs[-1] == (b"Z", b"I")
        err = pgwire.parse_error_fields(next(b for t, b in msgs if t == b"E"))
        assert err["C"] == "22012"
        assert w.simple_query("SELECT 5")[-1] == (b"Z", b"I")
    finally:
        w.close()
    # psycopg2 sends simple queries with client-side parameters
    c2 = psycopg2.connect(mweir.dsn())
    try:
        cur = c2.cursor()
        cur.execute("SELECT %s; SELECT %s || 'b'", (1, "a"))
        assert cur.fetchone() == ("ab",)
        c2.commit()
    finally:
        c2.close()


def test_empty_query(mweir):
    w = pgwire.Wire("127.0.0.1", mweir.port)
    try:
        w.login_trust("weir_test", "weir_test")
        msgs = w.simple_query("")
        assert [t for t, _ in msgs] == [b"I", b"Z"]
        msgs = w.simple_query(";")
        assert [t for t, _ in msgs] == [b"I", b"Z"]
        assert [t for t, _ in w.simple_query("SELECT 1")] == [b"T", b"D", b"C", b"Z"]
    finally:
        w.close()
    c = mweir.connect()
    c.execute("")
    assert c.pgconn.transaction_status == 0
    assert c.execute("SELECT 1").fetchone() == (1,)


def test_notice_delivered(mweir):
    c = mweir.connect()
    notices = []
    c.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    c.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
    assert ("NOTICE", "hello 42") in notices
    assert ("WARNING", "careful") in notices
    # a notice in the middle of a result
    c.execute("CREATE OR REPLACE FUNCTION pg_temp.noisy(i int) RETURNS int LANGUAGE plpgsql AS "
              "$$ BEGIN RAISE NOTICE 'row %', i; RETURN i; END $$") if mweir.settings["pool_mode"] == "session" else None
    if mweir.settings["pool_mode"] == "session":
        notices.clear()
        rows = c.execute("SELECT pg_temp.noisy(g) FROM generate_series(1, 5) g").fetchall()
        assert rows == [(i,) for i in range(1, 6)]
        assert [m for _, m in notices] == ["row %d" % i for i in range(1, 6)]


def test_error_inside_transaction_then_rollback(mweir):
    c = mweir.connect(autocommit=False)
    c.execute("CREATE TEMP TABLE et (i int)")
    c.execute("INSERT INTO et VALUES (1)")
    with pytest.raises(psycopg.errors.UndefinedTable):
        c.execute("SELECT * FROM no_such_table")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        c.execute("SELECT 1")
    c.rollback()
    assert c.execute("SELECT 1").fetchone() == (1,)
    c.rollback()
    # the same with explicit statements in autocommit mode
    a = mweir.connect()
    a.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        a.execute("SELECT 1/0")
    assert a.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        a.execute("SELECT 1")
    a.execute("ROLLBACK")
    assert a.execute("SELECT now() = statement_timestamp()").fetchone() == (True,)


def test_error_in_transaction_holds_server(weir_factory):
    """Transaction mode: a failed transaction still holds its server until ROLLBACK."""
    w = weir_factory(settings={"default_pool_size": 1})
    a, b = w.connect(), w.connect()
    a.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        a.execute("SELECT 1/0")
    done = threading.Event()
    t = threading.Thread(target=lambda: (b.execute("SELECT 1"), done.set()))
    t.start()
    assert not done.wait(0.3), "b got the server while a's failed transaction was open"
    a.execute("ROLLBACK")
    assert done.wait(10)
    t.join()


def test_copy_in_and_out_large(weir, pg):
    """50 MB through COPY FROM STDIN and back through COPY TO STDOUT."""
    c = weir.connect(autocommit=False)
    c.execute("CREATE TEMP TABLE big (i int, t text) ON COMMIT DROP")
    line_payload = "y" * 1000
    n = 52 * 1024
    with c.cursor().copy("COPY big FROM STDIN") as cp:
        chunk = "".join("%d\t%s\n" % (i, line_payload) for i in range(1024)).encode()
        for k in range(n // 1024):
            cp.write(chunk)
    assert c.execute("SELECT count(*), count(DISTINCT i), min(length(t)) FROM big").fetchone() == (n, 1024, 1000)
    total = 0
    lines = 0
    with c.cursor().copy("COPY big TO STDOUT") as cp:
        for data in cp:
            total += len(data)
            lines += bytes(data).count(b"\n")
    assert lines == n
    assert total > 50 * MB
    c.commit()
    assert c.execute("SELECT 1").fetchone() == (1,)


def test_copy_out_large_query(weir):
    c = weir.connect()
    total = 0
    with c.cursor().copy("COPY (SELECT g, repeat('z', 1000) FROM generate_series(1, 53000) g) TO STDOUT") as cp:
        for data in cp:
            total += len(data)
    assert total > 50 * MB
    assert c.execute("SELECT 1").fetchone() == (1,)


def test_copy_in_fails_midway_on_server(mweir):
    c = mweir.connect()
    c.execute("CREATE TABLE IF NOT EXISTS copy_fail_%s (i int)" % mweir.port)
    try:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with c.cursor().copy("COPY copy_fail_%s FROM STDIN" % mweir.port) as cp:
                for i in range(200000):
                    cp.write("%d\n" % i if i != 100000 else "not-a-number\n")
        assert c.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert c.execute("SELECT count(*) FROM copy_fail_%s" % mweir.port).fetchone() == (0,)
        assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        c.execute("DROP TABLE copy_fail_%s" % mweir.port)


def test_copy_in_aborted_by_client(mweir):
    """An exception inside psycopg's copy block sends CopyFail."""
    c = mweir.connect()
    c.execute("CREATE TABLE IF NOT EXISTS copy_abort_%s (i int)" % mweir.port)
    try:
        with pytest.raises(psycopg.errors.QueryCanceled) as ei:
            with c.cursor().copy("COPY copy_abort_%s FROM STDIN" % mweir.port) as cp:
                for i in range(50000):
                    cp.write("%d\n" % i)
                1 / 0
        assert "ZeroDivisionError" in str(ei.value)  # the CopyFail message came back from PostgreSQL
        assert c.execute("SELECT count(*) FROM copy_abort_%s" % mweir.port).fetchone() == (0,)
        with c.cursor().copy("COPY copy_abort_%s FROM STDIN" % mweir.port) as cp:
            cp.write("1\n2\n")
        assert c.execute("SELECT count(*) FROM copy_abort_%s" % mweir.port).fetchone() == (2,)
    finally:
        c.execute("DROP TABLE copy_abort_%s" % mweir.port)


def test_copy_out_fails_midway(mweir):
    c = mweir.connect()
    with pytest.raises(psycopg.errors.DivisionByZero):
        with c.cursor().copy("COPY (SELECT 1 / (100000 - g) FROM generate_series(1, 200000) g) TO STDOUT") as cp:
            for _ in cp:
                pass
    assert c.execute("SELECT 1").fetchone() == (1,)


def test_large_result_bounded_memory(weir):
    """200 MB of DataRows to a client that first does not read at all and then
    reads as fast as it can: weir's RSS stays bounded (back-pressure)."""
    base = weir.rss_kb()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], weir.rss_kb())
            except (OSError, ValueError):
                return
            time.sleep(0.02)
    t = threading.Thread(target=sample)
    t.start()
    w = pgwire.Wire("127.0.0.1", weir.port, timeout=120)
    try:
        w.login_trust("weir_test", "weir_test")
        total, rows, tag, err = w.stream_query(
            "SELECT g, repeat('x', 1000) FROM generate_series(1, 210000) g", pause=1.0)
    finally:
        stop.set()
        t.join()
        w.close()
    assert err is None, err
    assert rows == 210000 and tag == "SELECT 210000"
    assert total > 200 * MB
    print("weir RSS: %d kB before, %d kB peak" % (base, peak[0]))
    limit = max(64 * 1024, base + 48 * 1024)
    assert peak[0] < limit, "weir's RSS grew from %d kB to %d kB while relaying 200 MB" % (base, peak[0])


def test_large_result_psycopg2(weir):
    c = psycopg2.connect(weir.dsn())
    try:
        cur = c.cursor()
        cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
        rows = cur.fetchall()
        assert len(rows) == 100000 and rows[-1][0] == 100000
        c.commit()
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_terminate_message_closes_and_releases_server(weir_factory, mode):
    """Terminate after a query: weir closes the connection (asyncpg's close()
    waits for that) and the one server is free for the next client."""
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 1})
    for _ in range(5):
        x = pgwire.Wire("127.0.0.1", w.port)
        x.login_trust("weir_test", "weir_test")
        x.simple_query("SELECT 1")
        x.send(pgwire.message(b"X"))
        assert x.read_until_closed(5) == []
        x.close()
    c = w.connect()
    assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("cut", [3, 7, 12])
def test_message_split_across_packets(mweir, cut):
    """A message that arrives in pieces (slow network, big query) is put
    back together: cut inside the header, just after it, inside the body."""
    w = pgwire.Wire("127.0.0.1", mweir.port)
    try:
        w.login_trust("weir_test", "weir_test")
        for _ in range(2):
            q = pgwire.query_message("SELECT 42 AS answer")
            w.send(q[:cut])
            time.sleep(0.2)
            w.send(q[cut:])
            msgs = []
            while not msgs or msgs[-1][0] != b"Z":
                msgs.append(w.read_message(5))
            assert [t for t, _ in msgs] == [b"T", b"D", b"C", b"Z"]
            assert msgs[1][1].endswith(b"42")
    finally:
        w.close()
    assert mweir.alive()


def test_large_query_text(mweir):
    """A 4 MB query string (many TCP segments) through psycopg and asyncpg."""
    c = mweir.connect()
    big = "x" * (4 * MB)
    assert c.execute("SELECT length('%s')" % big).fetchone() == (4 * MB,)
    assert c.execute("SELECT length(%s)", [big]).fetchone() == (4 * MB,)
    assert c.execute("SELECT 1").fetchone() == (1,)


def test_terminate_inside_transaction(weir_factory):
    """Terminate while a transaction is open (the server is held): weir
    closes the client, and the one server does not come back inside it."""
    w = weir_factory(settings={"default_pool_size": 1})
    x = pgwire.Wire("127.0.0.1", w.port)
    x.login_trust("weir_test", "weir_test")
    assert x.simple_query("BEGIN")[-1] == (b"Z", b"T")
    x.send(pgwire.message(b"X"))
    assert x.read_until_closed(5) == []
    x.close()
    c = w.connect()
    assert c.execute("SELECT now() = statement_timestamp(), pg_current_xact_id_if_assigned()"
                     ).fetchone() == (True, None)
