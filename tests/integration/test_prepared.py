"""Prepared statements in transaction mode (issue 6), against a real
PostgreSQL and real clients, with small pools and more clients than servers:

- pgbench -M prepared (select-only; tpcb-like with max_prepared_statements
  below its 7 statements, balances checked afterwards);
- asyncpg (prepares everything): 30 connections over 3 servers, more distinct
  queries than max_prepared_statements, in and out of transactions, cursors,
  executemany, a small statement cache (Close), errors;
- psycopg 3 with prepare_threshold=0: 20 threads, autocommit and
  transactions; errors (a failing statement, a failing Parse); DEALLOCATE /
  DISCARD ALL; psycopg's own statement maintenance (DEALLOCATE ALL after a
  rollback, DEALLOCATE of the oldest name past prepared_max);
- psycopg2 and SQL-level PREPARE / EXECUTE (the documented limitation in
  transaction mode; works in session mode);
- names per client, eviction past max_prepared_statements;
- protocol corners on the raw wire, each run against PostgreSQL directly and
  through weir (pool of one server that already holds the statement another
  client prepared): the client must see exactly what PostgreSQL shows.

The libpq side (PQprepare, PQdescribePrepared, pipeline mode) is in
test_prepared.c.
"""
import asyncio
import hashlib
import os
import random
import re
import struct
import subprocess
import threading
import time

import asyncpg
import psycopg
import psycopg2
import psycopg2.errors
import pytest
from psycopg import pq

import pgwire
from console import Console, http_get, parse_prometheus, sample
from conftest import TEST_PASSWORD, free_port, wait_for

BENCH_DB = "weir_prep_bench"


# ---------------------------------------------------------------------------
# raw protocol messages

def _cstr(s):
    return (s if isinstance(s, bytes) else s.encode()) + b"\0"


def Parse(name, query, types=()):
    return pgwire.message(b"P", _cstr(name) + _cstr(query) + struct.pack("!h", len(types)) +
                          b"".join(struct.pack("!I", t) for t in types))


def Bind(stmt, params=(), portal=""):
    body = _cstr(portal) + _cstr(stmt) + struct.pack("!hh", 0, len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            v = str(p).encode()
            body += struct.pack("!i", len(v)) + v
    return pgwire.message(b"B", body + struct.pack("!h", 0))


def Describe(kind, name=""):
    return pgwire.message(b"D", kind.encode() + _cstr(name))


def Close(kind, name=""):
    return pgwire.message(b"C", kind.encode() + _cstr(name))


def Execute(portal="", maxrows=0):
    return pgwire.message(b"E", _cstr(portal) + struct.pack("!i", maxrows))


def Query(sql):
    return pgwire.message(b"Q", _cstr(sql))


Sync = pgwire.message(b"S")
Flush = pgwire.message(b"H")


def token(t, b):
    """One server message as a short comparable string (None: ignored)."""
    if t == b"D":
        (n,) = struct.unpack("!h", b[:2])
        pos, vals = 2, []
        for _ in range(n):
            (ln,) = struct.unpack("!i", b[pos:pos + 4])
            pos += 4
            vals.append("NULL" if ln < 0 else b[pos:pos + ln].decode())
            pos += max(ln, 0)
        return "D:" + ",".join(vals)
    if t == b"C":
        return "C:" + b[:-1].decode()
    if t == b"E":
        return "E:" + pgwire.parse_error_fields(b).get("C", "?")
    if t == b"Z":
        return "Z:" + b.decode()
    if t in (b"N", b"S", b"K", b"A"):  # notices, parameters, key data, notifications
        return None
    if t == b"T":  # RowDescription: the column types
        (n,) = struct.unpack("!h", b[:2])
        pos, oids = 2, []
        for _ in range(n):
            pos = b.index(b"\0", pos) + 1
            oids.append(str(struct.unpack("!I", b[pos + 6:pos + 10])[0]))
            pos += 18
        return "T:" + ",".join(oids)
    if t == b"t":  # ParameterDescription
        (n,) = struct.unpack("!h", b[:2])
        return "t:" + ",".join(str(o) for o in struct.unpack("!%dI" % n, b[2:2 + 4 * n]))
    return t.decode()


class Step:
    """Messages to send, then read until `ready` ReadyForQuery messages (or
    until the token `until` arrived, for Flush without Sync)."""

    def __init__(self, *msgs, ready=1, until=None, split=None):
        self.data = b"".join(msgs)
        self.ready = 0 if until else ready
        self.until = until
        self.split = split  # send the first `split` bytes, pause, then the rest


def run_steps(w, steps, timeout=3.0):
    """-> list of per-step token lists; a step without an answer in time
    ends the list with 'NO ANSWER'."""
    out = []
    for st in steps:
        if st.split:
            w.send(st.data[:st.split])
            time.sleep(0.1)  # weir reads and scans the first part alone
            w.send(st.data[st.split:])
        else:
            w.send(st.data)
        got, ready = [], st.ready
        try:
            while True:
                t, b = w.read_message(timeout)
                tok = token(t, b)
                if tok:
                    got.append(tok)
                if t == b"Z":
                    ready -= 1
                    if ready == 0 and not st.until:
                        break
                if st.until and tok == st.until:
                    break
        except (TimeoutError, OSError, EOFError) as e:
            got.append("NO ANSWER (%s)" % type(e).__name__)
            out.append(got)
            return out
        out.append(got)
    return out


def wire(port, pg):
    w = pgwire.Wire("127.0.0.1", port, timeout=10)
    w.login_trust(pg.user, pg.db)
    return w


# ---------------------------------------------------------------------------
# helpers for the drivers

def psycopg_connect(port, pg, **kw):
    kw.setdefault("autocommit", True)
    kw.setdefault("connect_timeout", 10)
    return psycopg.connect(host="127.0.0.1", port=port, dbname=pg.db, user=pg.user, password=TEST_PASSWORD, **kw)


def target_port(target, pg, weir_factory, **weir_kw):
    """The port to connect to: PostgreSQL itself (the reference) or a new weir."""
    if target == "postgres":
        return pg.port
    return weir_factory(**weir_kw).port


def check_ok(res):
    """A libpq result from psycopg's low-level pgconn: raise if it failed."""
    if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise AssertionError("%s %s: %s" % (pq.ExecStatus(res.status).name,
                                            res.error_field(pq.DiagnosticField.SQLSTATE),
                                            (res.error_message or b"").decode(errors="replace").strip()))
    return res


def exec_prepared(conn, name, *params):
    res = check_ok(conn.pgconn.exec_prepared(name.encode(), [str(p).encode() for p in params]))
    return res.get_value(0, 0).decode()


def prepare(conn, name, query):
    return check_ok(conn.pgconn.prepare(name.encode(), query.encode()))


def sqlstate_of_result(res):
    v = res.error_field(pq.DiagnosticField.SQLSTATE)
    return v.decode() if v else None


def run_threads(n, fn):
    """Run fn(i) in n threads; re-raise the first failure with its thread."""
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: B902 - reported below
            errors.append((i, e))

    ts = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    assert not [t for t in ts if t.is_alive()], "threads still running (hung?)"
    if errors:
        i, e = errors[0]
        raise AssertionError("%d of %d threads failed; thread %d: %r" % (len(errors), n, i, e)) from e


# ---------------------------------------------------------------------------
# pgbench -M prepared

@pytest.fixture(scope="module")
def bench_db(pg):
    return pg.database(BENCH_DB)


def pgbench(pg, *args, port=None, timeout=90):
    cmd = [pg.tool("pgbench"), "-h", "127.0.0.1", "-p", str(port or pg.port), "-U", pg.user] + list(args)
    env = dict(os.environ, PGPASSWORD=TEST_PASSWORD)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def pgbench_init(pg, db):
    p = pgbench(pg, "-i", "-q", "-s", "1", db)
    assert p.returncode == 0, p.stderr


def check_pgbench_run(p, clients, per_client):
    out = p.stdout + p.stderr
    assert p.returncode == 0, "pgbench exit %d:\n%s" % (p.returncode, out[-3000:])
    assert re.search(r"number of failed transactions: 0\b", out), out[-3000:]
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
    assert m and int(m.group(1)) == clients * per_client == int(m.group(2)), out[-3000:]


@pytest.mark.timeout(90)
def test_pgbench_prepared_select_only(pg, bench_db, weir_factory):
    pgbench_init(pg, bench_db)
    w = weir_factory(databases={bench_db: pg.entry(bench_db)}, settings={"default_pool_size": 3})
    p = pgbench(pg, "-M", "prepared", "-c", "20", "-j", "20", "-t", "300", "-b", "select-only", bench_db,
                port=w.port)
    check_pgbench_run(p, 20, 300)


@pytest.mark.timeout(90)
def test_pgbench_prepared_tpcb_like_with_eviction(pg, bench_db, weir_factory):
    """tpcb-like prepares 7 statements per client (BEGIN and END included);
    with max_prepared_statements=3 every transaction re-prepares and evicts.
    Afterwards the four balance sums must agree (no lost or doubled update)."""
    pgbench_init(pg, bench_db)
    w = weir_factory(databases={bench_db: pg.entry(bench_db)},
                     settings={"default_pool_size": 3, "max_prepared_statements": 3})
    p = pgbench(pg, "-M", "prepared", "-c", "20", "-j", "20", "-t", "100", "-b", "tpcb-like", bench_db,
                port=w.port)
    check_pgbench_run(p, 20, 100)
    servers = Console(w).show("SERVERS")
    assert servers and all(r["prepared_statements"] <= 3 for r in servers), servers
    with pg.connect(dbname=bench_db) as c:
        a, b, t, h, n = c.execute(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches),"
            " (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(delta) FROM pgbench_history),"
            " (SELECT count(*) FROM pgbench_history)").fetchone()
    assert n == 2000
    assert a == b == t == h


# ---------------------------------------------------------------------------
# asyncpg

@pytest.fixture
def prep_table(pg):
    with pg.connect() as c:
        c.execute("DROP TABLE IF EXISTS weir_prep_t")
        c.execute("CREATE TABLE weir_prep_t (client int, n int)")
    yield "weir_prep_t"
    with pg.connect() as c:
        c.execute("DROP TABLE IF EXISTS weir_prep_t")


def asyncpg_connect(port, pg, **kw):
    return asyncpg.connect(host="127.0.0.1", port=port, user=pg.user, password=TEST_PASSWORD, database=pg.db,
                           timeout=10, **kw)


def run_async(coro, timeout=60):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


@pytest.mark.timeout(75)
@pytest.mark.parametrize("cache", [100, 4], ids=["default-cache", "small-cache-closes"])
def test_asyncpg_many_clients(pg, weir_factory, prep_table, cache):
    """30 connections over 3 servers, max_prepared_statements=10: 40 distinct
    shared queries plus per-client ones, repeated at random, results checked.
    With statement_cache_size=4 asyncpg closes statements all the time."""
    w = weir_factory(settings={"default_pool_size": 3, "max_prepared_statements": 10})

    async def client(i):
        conn = await asyncpg_connect(w.port, pg, statement_cache_size=cache)
        rnd = random.Random(i)
        try:
            for n in range(150):
                x = rnd.randrange(1000)
                r = rnd.random()
                if r < 0.5:
                    k = rnd.randrange(40)  # shared by all clients
                    assert await conn.fetchval("SELECT $1::int * %d + %d" % (k + 1, k), x) == x * (k + 1) + k
                elif r < 0.7:
                    k = rnd.randrange(5)  # this client's own
                    assert await conn.fetchval("SELECT $1::int - %d - %d" % (i, k), x) == x - i - k
                elif r < 0.85:
                    rows = await conn.fetch("SELECT g, g * $1::int AS m FROM generate_series(1, $2::int) g", x, 7)
                    assert [(rw["g"], rw["m"]) for rw in rows] == [(g, g * x) for g in range(1, 8)]
                else:
                    async with conn.transaction():
                        await conn.execute("INSERT INTO weir_prep_t VALUES ($1, $2)", i, x)
                        got = await conn.fetchval("SELECT count(*) FROM weir_prep_t WHERE client = $1", i)
                        s = await conn.fetchval("SELECT $1::text || ':' || $2::text", str(i), str(got))
                        assert s == "%d:%d" % (i, got)
            return await conn.fetchval("SELECT count(*) FROM weir_prep_t WHERE client = $1", i)
        finally:
            await conn.close()

    async def main():
        return await asyncio.gather(*(client(i) for i in range(30)))

    counts = run_async(main(), 65)
    servers = [r for r in Console(w).show("SERVERS") if r["database"] == pg.db]
    assert servers and all(r["prepared_statements"] <= 10 for r in servers), servers
    with pg.connect() as c:
        for i, n in enumerate(counts):
            assert c.execute("SELECT count(*) FROM weir_prep_t WHERE client = %s", [i]).fetchone()[0] == n


@pytest.mark.timeout(60)
def test_asyncpg_transactions_cursors_errors(pg, weir_factory, prep_table):
    """Inside `async with conn.transaction()`: prepared statements, a cursor
    fetched in pieces (Execute with a row limit), executemany, an explicit
    conn.prepare() used across transactions; a division by zero rolls the
    transaction back and the connection goes on working."""
    w = weir_factory(settings={"default_pool_size": 3, "max_prepared_statements": 5})

    async def client(i):
        conn = await asyncpg_connect(w.port, pg)
        try:
            stmt = await conn.prepare("SELECT $1::int * 1000 + $2::int")
            inserted = 0
            for n in range(15):
                async with conn.transaction():
                    assert await stmt.fetchval(i, n) == i * 1000 + n
                    await conn.executemany("INSERT INTO weir_prep_t VALUES ($1, $2)", [(i, k) for k in range(5)])
                    inserted += 5
                    got = [r[0] async for r in conn.cursor(
                        "SELECT g FROM generate_series(1, $1::int) g", 60 + n, prefetch=7)]
                    assert got == list(range(1, 61 + n))
                    assert await conn.fetchval("SELECT count(*) FROM weir_prep_t WHERE client = $1", i) == inserted
                with pytest.raises(asyncpg.DivisionByZeroError):
                    async with conn.transaction():
                        await conn.execute("INSERT INTO weir_prep_t VALUES ($1, -1)", i)
                        await conn.fetchval("SELECT 1 / $1::int", 0)
                # rolled back, and the connection works
                assert await conn.fetchval("SELECT count(*) FROM weir_prep_t WHERE client = $1", i) == inserted
                assert await stmt.fetchval(i, -n) == i * 1000 - n
        finally:
            await conn.close()

    async def main():
        await asyncio.gather(*(client(i) for i in range(12)))

    run_async(main(), 55)


@pytest.mark.timeout(40)
def test_asyncpg_executemany_error_in_middle(pg, weir_factory):
    """executemany sends many Bind/Execute before one Sync; a row in the middle
    violates a constraint: asyncpg raises, nothing is inserted, and the
    connection (and the statements of the others) go on working."""
    with pg.connect() as c:
        c.execute("DROP TABLE IF EXISTS weir_prep_chk")
        c.execute("CREATE TABLE weir_prep_chk (client int, n int CHECK (n <> 13))")
    w = weir_factory(settings={"default_pool_size": 2, "max_prepared_statements": 3})

    async def client(i):
        conn = await asyncpg_connect(w.port, pg)
        try:
            for rnd in range(5):
                with pytest.raises(asyncpg.CheckViolationError):
                    async with conn.transaction():
                        await conn.executemany("INSERT INTO weir_prep_chk VALUES ($1, $2)",
                                               [(i, n) for n in range(10, 20)])
                await conn.executemany("INSERT INTO weir_prep_chk VALUES ($1, $2)", [(i, n) for n in range(3)])
                assert await conn.fetchval("SELECT count(*) FROM weir_prep_chk WHERE client = $1", i) == 3 * (rnd + 1)
                assert await conn.fetchval("SELECT $1::int * %d" % (rnd + 2), i) == i * (rnd + 2)
        finally:
            await conn.close()

    async def main():
        await asyncio.gather(*(client(i) for i in range(8)))

    try:
        run_async(main(), 35)
    finally:
        with pg.connect() as c:
            c.execute("DROP TABLE IF EXISTS weir_prep_chk")


# ---------------------------------------------------------------------------
# psycopg 3, prepare_threshold=0

PSYCOPG_QUERIES = [("SELECT %%s::int + %d" % k, lambda x, k=k: x + k) for k in range(6)] + \
    [("SELECT %%s::int * %d" % k, lambda x, k=k: x * k) for k in range(2, 8)] + \
    [("SELECT length(%s::text) * 2", lambda x: len(str(x)) * 2)]


@pytest.mark.timeout(75)
def test_psycopg_threads(pg, weir_factory, prep_table):
    """20 threads, 3 servers, max_prepared_statements=8 (13 queries in use):
    autocommit and explicit transactions (committed), executemany (pipeline),
    results checked."""
    w = weir_factory(settings={"default_pool_size": 3, "max_prepared_statements": 8})

    def worker(i):
        conn = psycopg_connect(w.port, pg, prepare_threshold=0, autocommit=(i % 2 == 0))
        rnd = random.Random(i)
        try:
            rows = 0
            for n in range(100):
                if conn.autocommit:
                    q, f = rnd.choice(PSYCOPG_QUERIES)
                    x = rnd.randrange(10000)
                    assert conn.execute(q, [x]).fetchone()[0] == f(x)
                else:
                    with conn.transaction():
                        for _ in range(3):
                            q, f = rnd.choice(PSYCOPG_QUERIES)
                            x = rnd.randrange(10000)
                            assert conn.execute(q, [x]).fetchone()[0] == f(x)
                        conn.execute("INSERT INTO weir_prep_t VALUES (%s, %s)", [i, n])
                        rows += 1
                        assert conn.execute("SELECT count(*) FROM weir_prep_t WHERE client = %s",
                                            [i]).fetchone()[0] == rows
                if n % 10 == 0:
                    cur = conn.cursor()
                    cur.executemany("SELECT %s::int + %s::int", [(a, n) for a in range(5)], returning=True)
                    got = []
                    while True:
                        got.append(cur.fetchone()[0])
                        if not cur.nextset():
                            break
                    assert got == [a + n for a in range(5)]
                    if not conn.autocommit:
                        conn.commit()
        finally:
            conn.close()

    run_threads(20, worker)


@pytest.mark.parametrize("target", ["postgres", "weir"])
def test_psycopg_error_in_autocommit_then_usable(pg, weir_factory, target):
    port = target_port(target, pg, weir_factory, settings={"default_pool_size": 2})
    conn = psycopg_connect(port, pg, prepare_threshold=0)
    try:
        assert conn.execute("SELECT %s::int + 100", [1]).fetchone()[0] == 101
        for _ in range(3):
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1 / %s::int", [0])
            assert conn.execute("SELECT %s::int + 100", [2]).fetchone()[0] == 102
            assert conn.execute("SELECT 10 / %s::int", [5]).fetchone()[0] == 2
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["transaction-block", "explicit-rollback"])
@pytest.mark.parametrize("target", ["postgres", "weir"])
def test_psycopg_error_in_transaction_then_usable(pg, weir_factory, target, how):
    """A division by zero inside a transaction, then rollback. psycopg then
    sends DEALLOCATE ALL (extended protocol, unnamed statement) to drop its
    statements. The connection must go on working, and so must another client
    whose statements share the same servers."""
    port = target_port(target, pg, weir_factory, settings={"default_pool_size": 2})
    conn = psycopg_connect(port, pg, prepare_threshold=0, autocommit=False)
    other = psycopg_connect(port, pg, prepare_threshold=0)
    try:
        assert other.execute("SELECT %s::int + 100", [1]).fetchone()[0] == 101
        with conn.transaction():
            assert conn.execute("SELECT %s::int + 100", [1]).fetchone()[0] == 101
        conn.commit()
        with pytest.raises(psycopg.errors.DivisionByZero):
            if how == "transaction-block":
                with conn.transaction():
                    assert conn.execute("SELECT %s::int + 100", [3]).fetchone()[0] == 103
                    conn.execute("SELECT 1 / %s::int", [0])
            else:
                try:
                    assert conn.execute("SELECT %s::int + 100", [3]).fetchone()[0] == 103
                    conn.execute("SELECT 1 / %s::int", [0])
                finally:
                    conn.rollback()
        for n in range(4):
            with conn.transaction():
                assert conn.execute("SELECT %s::int + 100", [n]).fetchone()[0] == 100 + n
            conn.commit()
            assert other.execute("SELECT %s::int + 100", [n]).fetchone()[0] == 100 + n
    finally:
        conn.close()
        other.close()


@pytest.mark.parametrize("target", ["postgres", "weir"])
def test_psycopg_failed_parse(pg, weir_factory, target):
    """A prepared query with a syntax error: psycopg raises, the next query
    works, and the failed statement name does not exist; the name can be
    prepared again."""
    port = target_port(target, pg, weir_factory, settings={"default_pool_size": 2})
    conn = psycopg_connect(port, pg, prepare_threshold=0)
    try:
        assert conn.execute("SELECT %s::int", [5]).fetchone()[0] == 5  # _pg3_0
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEC %s::int", [1])  # _pg3_1: its Parse fails
        assert conn.execute("SELECT %s::int * 3", [5]).fetchone()[0] == 15
        res = conn.pgconn.describe_prepared(b"_pg3_1")
        assert res.status == pq.ExecStatus.FATAL_ERROR and sqlstate_of_result(res) == "26000"
        res = conn.pgconn.exec_prepared(b"_pg3_1", [b"1"])
        assert res.status == pq.ExecStatus.FATAL_ERROR and sqlstate_of_result(res) == "26000"
        prepare(conn, "_pg3_1", "SELECT $1::int + 1")
        assert exec_prepared(conn, "_pg3_1", 41) == "42"
        assert conn.execute("SELECT %s::int", [6]).fetchone()[0] == 6
    finally:
        conn.close()


@pytest.mark.timeout(6)
@pytest.mark.parametrize("target", ["postgres", "weir"])
@pytest.mark.parametrize("how", ["simple-query", "psycopg-prepared"])
@pytest.mark.parametrize("cmd", ["DEALLOCATE mine", "DEALLOCATE ALL", "DISCARD ALL"])
def test_psycopg_deallocate_discard(pg, weir_factory, target, how, cmd):
    """DEALLOCATE name / DEALLOCATE ALL / DISCARD ALL between prepared
    statements, sent as a simple query (prepare=False) or as psycopg sends any
    query with prepare_threshold=0 (Parse of a named statement). Afterwards
    the name can be prepared again for another query, new statements work,
    and another client's statements on the same servers are untouched.
    (psycopg 3.1 does not notice DEALLOCATE ALL / DISCARD ALL itself, so the
    test only uses statements prepared after the command on this connection.)"""
    port = target_port(target, pg, weir_factory, settings={"default_pool_size": 2})
    conn = psycopg_connect(port, pg, prepare_threshold=0)
    other = psycopg_connect(port, pg, prepare_threshold=0)
    try:
        for c in (conn, other):
            assert c.execute("SELECT %s::int + 100", [1]).fetchone()[0] == 101
            prepare(c, "mine", "SELECT $1::int * 2")
            assert exec_prepared(c, "mine", 21) == "42"
        conn.execute(cmd, prepare=(how == "psycopg-prepared"))
        if cmd == "DEALLOCATE mine":
            res = conn.pgconn.exec_prepared(b"mine", [b"1"])
            assert sqlstate_of_result(res) == "26000"
        prepare(conn, "mine", "SELECT $1::int * 3")  # the name is free again
        for n in range(4):
            assert exec_prepared(conn, "mine", n) == str(3 * n)
            assert conn.execute("SELECT %s::int + 200", [n]).fetchone()[0] == 200 + n
            assert exec_prepared(other, "mine", n) == str(2 * n)
            assert other.execute("SELECT %s::int + 100", [n]).fetchone()[0] == 100 + n
    finally:
        conn.close()
        other.close()


@pytest.mark.parametrize("target", ["postgres", "weir"])
def test_psycopg_statement_cache_rotation(pg, weir_factory, target):
    """Past prepared_max psycopg deallocates its oldest statement with
    `DEALLOCATE _pg3_N` (extended protocol, unnamed statement)."""
    port = target_port(target, pg, weir_factory, settings={"default_pool_size": 2})
    conn = psycopg_connect(port, pg, prepare_threshold=0)
    conn.prepared_max = 3
    try:
        for rnd in range(2):
            for k in range(8):
                assert conn.execute("SELECT %%s::int + %d" % k, [rnd]).fetchone()[0] == rnd + k
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# psycopg2 and SQL-level PREPARE / EXECUTE

def psycopg2_connect(port, pg, autocommit=False):
    c = psycopg2.connect(host="127.0.0.1", port=port, dbname=pg.db, user=pg.user, password=TEST_PASSWORD,
                         connect_timeout=10)
    c.autocommit = autocommit
    return c


def one(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def test_psycopg2_sql_prepare_within_transaction(pg, weir_factory):
    """PREPARE / EXECUTE / DEALLOCATE inside one transaction works in
    transaction mode: the transaction keeps its server."""
    w = weir_factory(settings={"default_pool_size": 2})
    conns = [psycopg2_connect(w.port, pg) for _ in range(4)]
    try:
        for n in range(10):
            for i, c in enumerate(conns):
                cur = c.cursor()
                cur.execute("PREPARE sqlp (int) AS SELECT $1 * 3 + %d" % i)
                for x in range(3):
                    assert one(cur, "EXECUTE sqlp(%s)", [x + n]) == (x + n) * 3 + i
                cur.execute("DEALLOCATE sqlp")
                c.commit()
    finally:
        for c in conns:
            c.close()


def test_psycopg2_sql_prepare_across_transactions_is_per_server(pg, weir_factory):
    """The documented limitation: a statement made with SQL PREPARE lives on
    the server that ran it. When the next transaction lands on another
    server, EXECUTE gets PostgreSQL's own clear error (26000), not another
    statement's results. Made deterministic: two helpers hold both servers
    in transactions, and the one holding the PREPARE's server keeps it."""
    w = weir_factory(settings={"default_pool_size": 2})
    a = psycopg2_connect(w.port, pg, autocommit=True)
    helpers = [psycopg2_connect(w.port, pg) for _ in range(2)]
    try:
        cur = a.cursor()
        pid_a = one(cur, "PREPARE acrossp (int) AS SELECT $1 + 1000; SELECT pg_backend_pid()")
        pids = [one(h.cursor(), "SELECT pg_backend_pid()") for h in helpers]  # both in a transaction
        assert pid_a in pids and len(set(pids)) == 2
        for h, pid in zip(helpers, pids):
            if pid != pid_a:
                h.commit()  # frees the server that does not have the statement
        with pytest.raises(psycopg2.errors.InvalidSqlStatementName) as ei:
            cur.execute("EXECUTE acrossp(1)")
        assert ei.value.pgcode == "26000"
        assert 'prepared statement "acrossp" does not exist' in str(ei.value)
        assert one(cur, "SELECT 1") == 1  # still usable
    finally:
        for c in helpers + [a]:
            c.close()


def test_psycopg2_sql_prepare_session_mode(pg, weir_factory):
    """In session mode the statement lives as long as the client's session:
    PREPARE once, EXECUTE in many later transactions, with other clients busy."""
    w = weir_factory(pool_mode="session", settings={"default_pool_size": 3})
    conns = [psycopg2_connect(w.port, pg) for _ in range(3)]
    try:
        for i, c in enumerate(conns):
            c.cursor().execute("PREPARE sessp (int) AS SELECT $1 * 7 + %d" % i)
            c.commit()
        for n in range(20):
            for i, c in enumerate(conns):
                assert one(c.cursor(), "EXECUTE sessp(%s)", [n]) == n * 7 + i
                c.commit() if n % 2 else c.rollback()
        conns[0].cursor().execute("DEALLOCATE sessp")
        conns[0].commit()
        with pytest.raises(psycopg2.errors.InvalidSqlStatementName):
            conns[0].cursor().execute("EXECUTE sessp(1)")
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------------------
# names are per client; eviction

@pytest.mark.parametrize("pool", [1, 2])
def test_same_name_different_queries_per_client(pg, weir_factory, pool):
    w = weir_factory(settings={"default_pool_size": pool})
    conns = [psycopg_connect(w.port, pg) for _ in range(3)]
    try:
        for i, c in enumerate(conns):
            prepare(c, "s", "SELECT 'client%d:' || $1::text" % i)
            prepare(c, "t", "SELECT $1::int + %d" % (i * 100))
        for n in range(30):
            for i, c in enumerate(conns):
                if n % 4 == 3:
                    check_ok(c.pgconn.exec_(b"BEGIN"))
                assert exec_prepared(c, "s", n) == "client%d:%d" % (i, n)
                assert exec_prepared(c, "t", n) == str(n + i * 100)
                if n % 4 == 3:
                    check_ok(c.pgconn.exec_(b"COMMIT"))
    finally:
        for c in conns:
            c.close()


@pytest.mark.timeout(6)
def test_same_name_same_query_one_client_deallocates(pg, weir_factory):
    """Two clients, same name, same query (one statement on the servers): one
    client's DEALLOCATE leaves the other's statement working."""
    w = weir_factory(settings={"default_pool_size": 1})
    conns = [psycopg_connect(w.port, pg) for _ in range(2)]
    try:
        for c in conns:
            prepare(c, "same", "SELECT $1::int * 11")
        conns[0].execute("DEALLOCATE same")
        assert exec_prepared(conns[1], "same", 2) == "22"
        assert sqlstate_of_result(conns[0].pgconn.exec_prepared(b"same", [b"2"])) == "26000"
        prepare(conns[0], "same", "SELECT $1::int * 12")
        assert exec_prepared(conns[0], "same", 2) == "24"
        assert exec_prepared(conns[1], "same", 2) == "22"
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("pool", [1, 2])
def test_eviction_cycle(pg, weir_factory, pool):
    """max_prepared_statements=2; 3 clients each cycling through 5 statements,
    autocommit and inside transactions."""
    w = weir_factory(settings={"default_pool_size": pool, "max_prepared_statements": 2, "metrics_port": free_port()})
    conns = [psycopg_connect(w.port, pg) for _ in range(3)]
    try:
        for i, c in enumerate(conns):
            for k in range(5):
                prepare(c, "e%d" % k, "SELECT $1::int * %d + %d" % (k + 1, i))
        for n in range(25):
            for i, c in enumerate(conns):
                if n % 3 == 2:
                    check_ok(c.pgconn.exec_(b"BEGIN"))
                for k in range(5):
                    assert exec_prepared(c, "e%d" % k, n) == str(n * (k + 1) + i)
                if n % 3 == 2:
                    check_ok(c.pgconn.exec_(b"COMMIT"))
        # SHOW SERVERS / SHOW CLIENTS count them: within the limit per server, 5 names per client
        con = Console(w)
        servers = [r for r in con.show("SERVERS") if r["database"] == pg.db]
        assert servers and all(0 < r["prepared_statements"] <= 2 for r in servers), servers
        clients = [r for r in con.show("CLIENTS") if r["database"] == pg.db]
        assert sorted(r["prepared_statements"] for r in clients) == [5, 5, 5], clients
        # /metrics: what was prepared minus what was evicted is what the servers hold
        status, _, body = http_get("http://127.0.0.1:%d/metrics" % w.settings["metrics_port"])
        assert status == 200
        fams = parse_prometheus(body)
        prepared = sample(fams, "weir_prepared_statements_prepared_total")
        evicted = sample(fams, "weir_prepared_statements_evicted_total")
        assert evicted > 0 and prepared - evicted == sum(r["prepared_statements"] for r in servers), \
            (prepared, evicted, servers)
    finally:
        for c in conns:
            c.close()


def test_eviction_cycle_threads(pg, weir_factory):
    """The same with psycopg's prepare_threshold=0, 10 threads, 2 servers."""
    w = weir_factory(settings={"default_pool_size": 2, "max_prepared_statements": 2})
    queries = ["SELECT %%s::int * %d" % (k + 1) for k in range(5)]

    def worker(i):
        conn = psycopg_connect(w.port, pg, prepare_threshold=0)
        try:
            for n in range(30):
                for k, q in enumerate(queries):
                    assert conn.execute(q, [n + i]).fetchone()[0] == (n + i) * (k + 1)
        finally:
            conn.close()

    run_threads(10, worker)


def test_large_parameters(pg, weir_factory):
    """Bind messages far larger than weir's read size go through whole."""
    w = weir_factory(settings={"default_pool_size": 1, "max_prepared_statements": 2})
    conn = psycopg_connect(w.port, pg, prepare_threshold=0)
    try:
        for n, size in enumerate((1, 100_000, 3_000_000, 70_000)):
            text = ("x%d" % n) * size
            assert conn.execute("SELECT length(%s::text), md5(%s::text)", [text, text]).fetchone() == \
                (len(text), hashlib.md5(text.encode()).hexdigest())
            assert conn.execute("SELECT %s::int + 1", [n]).fetchone()[0] == n + 1
    finally:
        conn.close()


def test_server_gone_statements_prepared_again(pg, weir_factory):
    """Idle servers terminated by PostgreSQL: the clients' statements are
    prepared again on the new servers."""
    w = weir_factory(settings={"default_pool_size": 2})
    conns = [psycopg_connect(w.port, pg, prepare_threshold=0) for _ in range(3)]
    try:
        for i, c in enumerate(conns):
            prepare(c, "g", "SELECT $1::int + %d" % i)
            assert exec_prepared(c, "g", 1) == str(1 + i)
            assert c.execute("SELECT %s::int * 2", [i]).fetchone()[0] == 2 * i
        con = Console(w)

        def servers():
            return [r["remote_pid"] for r in con.show("SERVERS") if r["database"] == pg.db]

        pids = servers()
        assert pids
        with pg.connect() as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        # Every idle server's goodbye must reach weir before the clients go
        # on: under load (ThreadSanitizer, 4 workers) a fixed sleep was
        # sometimes too short, and a query then met a server already dead.
        wait_for(lambda: not set(pids) & set(servers()), what="weir to notice the terminated servers")
        for n in range(6):
            for i, c in enumerate(conns):
                try:
                    got = exec_prepared(c, "g", n)
                except AssertionError as e:
                    # the first use of a killed server may fail, once
                    assert n == 0 and ("08" in str(e) or "57P01" in str(e) or "server" in str(e)), e
                    continue
                assert got == str(n + i)
                assert c.execute("SELECT %s::int * 2", [n]).fetchone()[0] == 2 * n
    finally:
        for c in conns:
            c.close()


@pytest.fixture
def ddl_table(pg):
    with pg.connect() as c:
        c.execute("DROP TABLE IF EXISTS weir_prep_ddl")
    yield "weir_prep_ddl"
    with pg.connect() as c:
        c.execute("DROP TABLE IF EXISTS weir_prep_ddl")


@pytest.mark.parametrize("target", ["postgres", "weir"])
def test_schema_change_then_new_client_prepares(pg, weir_factory, ddl_table, target):
    """A client that prepares `SELECT *` after the table got a new column gets
    a statement planned for the new table (in PostgreSQL its statement is new).
    The client that prepared before the change gets PostgreSQL's 0A000 from
    PostgreSQL, and through weir the re-prepared statement's new shape."""
    port = target_port(target, pg, weir_factory, settings={"default_pool_size": 1})
    with pg.connect() as adm:
        adm.execute("CREATE TABLE weir_prep_ddl (a int)")
        adm.execute("INSERT INTO weir_prep_ddl VALUES (1)")
    old = psycopg_connect(port, pg, prepare_threshold=0)
    try:
        assert old.execute("SELECT * FROM weir_prep_ddl WHERE a = %s", [1]).fetchall() == [(1,)]
        with pg.connect() as adm:
            adm.execute("ALTER TABLE weir_prep_ddl ADD COLUMN b int DEFAULT 2")
        for _ in range(3):
            new = psycopg_connect(port, pg, prepare_threshold=0)
            try:
                assert new.execute("SELECT * FROM weir_prep_ddl WHERE a = %s", [1]).fetchall() == [(1, 2)]
            finally:
                new.close()
        if target == "postgres":
            with pytest.raises(psycopg.errors.FeatureNotSupported):  # cached plan must not change result type
                old.execute("SELECT * FROM weir_prep_ddl WHERE a = %s", [1])
        else:
            # weir shares one server-side statement per text, and a new
            # client's Parse prepared it afresh: the old client gets the new
            # shape instead of PostgreSQL's 0A000 (documented in the README).
            assert old.execute("SELECT * FROM weir_prep_ddl WHERE a = %s", [1]).fetchall() == [(1, 2)]
    finally:
        old.close()


def test_statement_mode(pg, weir_factory):
    """Statement mode: every statement may get another server."""
    w = weir_factory(pool_mode="statement", settings={"default_pool_size": 2, "max_prepared_statements": 3})

    def worker(i):
        conn = psycopg_connect(w.port, pg, prepare_threshold=0)
        try:
            for n in range(40):
                q, f = PSYCOPG_QUERIES[(n + i) % len(PSYCOPG_QUERIES)]
                assert conn.execute(q, [n]).fetchone()[0] == f(n)
        finally:
            conn.close()

    run_threads(6, worker)


# ---------------------------------------------------------------------------
# protocol corners: PostgreSQL is the reference

def S(*m, **kw):
    return Step(*m, **kw)


# (id, steps). Before each run another client prepares "SELECT 1" and
# "SELECT 2" on the (single) server, so through weir those statements are
# already there and weir answers the Parse itself.
CORNERS = [
    ("parse-error-then-bind-close-reparse",
     [S(Parse("s", "SELEC 1"), Sync), S(Bind("s"), Execute(), Sync), S(Describe("S", "s"), Sync),
      S(Close("S", "s"), Sync), S(Parse("s", "SELECT 1"), Bind("s"), Execute(), Sync)]),
    ("parse-error-in-transaction",
     [S(Query("BEGIN")), S(Parse("s", "SELECT nosuchcolumn"), Sync), S(Query("ROLLBACK")),
      S(Parse("s", "SELECT 2"), Bind("s"), Execute(), Sync)]),
    ("duplicate-name",
     [S(Parse("s", "SELECT 1"), Sync), S(Parse("s", "SELECT 2"), Bind("s"), Execute(), Sync),
      S(Bind("s"), Execute(), Sync)]),
    ("close-then-reuse-name",
     [S(Parse("s", "SELECT 1"), Bind("s"), Execute(), Close("S", "s"), Parse("s", "SELECT 2"), Bind("s"),
        Execute(), Sync), S(Close("S", "nosuch"), Sync)]),
    ("describe-statement-and-portal",
     [S(Parse("s", "SELECT $1::int + 1 AS x, 'y' AS y"), Describe("S", "s"), Sync),
      S(Bind("s", [41]), Describe("P"), Execute(), Sync), S(Describe("S", "nosuch"), Sync),
      S(Bind("nosuch"), Execute(), Sync)]),
    ("pipeline-many-syncs",
     [S(Parse("a", "SELECT 1"), Parse("b", "SELECT $1::int * 2"), Bind("a"), Execute(), Sync,
        Bind("b", [21]), Execute(), Parse("bad", "x"), Bind("a"), Execute(), Sync,
        Bind("b", [5]), Execute(), Bind("a"), Execute(), Sync, ready=3),
      S(Bind("bad"), Execute(), Sync)]),
    ("portal-row-limit-in-transaction",
     [S(Query("BEGIN")), S(Parse("g", "SELECT generate_series(1, 5)"), Bind("g", portal="p"),
                           Execute("p", 2), Execute("p", 2), Execute("p", 2), Sync),
      S(Query("COMMIT"))]),
    ("copy-out-and-empty-query",
     [S(Parse("c", "COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT"), Bind("c"), Execute(), Sync),
      S(Parse("e", ""), Bind("e"), Execute(), Sync)]),
    ("parse-new-statement-then-flush",
     [S(Parse("n", "SELECT 3"), Flush, until="1"), S(Bind("n"), Execute(), Flush, until="C:SELECT 1"),
      S(Sync)]),
    ("parse-known-statement-then-flush",
     [S(Parse("k", "SELECT 1"), Flush, until="1"), S(Sync), S(Bind("k"), Execute(), Sync)]),
    ("close-then-flush",
     [S(Parse("s", "SELECT 1"), Sync), S(Close("S", "s"), Flush, until="3"), S(Sync)]),
    ("parse-skipped-after-error",
     [S(Parse("bad", "SELEC"), Parse("s2", "SELECT 1"), Sync), S(Bind("s2"), Execute(), Sync),
      S(Parse("s2", "SELECT 1"), Sync)]),
    ("close-skipped-after-error",
     [S(Parse("a", "SELECT 2"), Sync), S(Parse("bad", "SELEC"), Close("S", "a"), Sync),
      S(Bind("a"), Execute(), Sync)]),
    ("parse-in-aborted-transaction",
     [S(Query("BEGIN")), S(Query("SELECT 1/0")), S(Parse("s", "SELECT 1"), Sync), S(Query("ROLLBACK")),
      S(Parse("s", "SELECT 1"), Sync), S(Bind("s"), Execute(), Sync)]),
    ("deallocate",
     [S(Parse("s1", "SELECT 1"), Parse("s2", "SELECT 2"), Sync), S(Query("DEALLOCATE s1")),
      S(Bind("s1"), Execute(), Sync), S(Bind("s2"), Execute(), Sync), S(Query("DEALLOCATE PREPARE s2")),
      S(Query("DEALLOCATE s2")), S(Parse("s1", "SELECT 2"), Bind("s1"), Execute(), Sync)]),
    ("deallocate-all-and-discard-all",
     [S(Parse("s1", "SELECT 1"), Parse("s2", "SELECT 2"), Sync), S(Query("DEALLOCATE ALL")),
      S(Bind("s1"), Execute(), Sync), S(Parse("s1", "SELECT 1"), Sync), S(Query("DISCARD ALL")),
      S(Bind("s1"), Execute(), Sync), S(Parse("s1", "SELECT 2"), Bind("s1"), Execute(), Sync)]),
    ("deallocate-in-transaction-block",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("BEGIN")), S(Query("DEALLOCATE s1")), S(Query("COMMIT")),
      S(Bind("s1"), Execute(), Sync)]),
    ("deallocate-all-in-transaction-block",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("BEGIN")), S(Query("DEALLOCATE ALL")), S(Query("COMMIT")),
      S(Bind("s1"), Execute(), Sync)]),
    ("deallocate-in-aborted-transaction",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("BEGIN")), S(Query("SELECT 1/0")),
      S(Query("DEALLOCATE s1")), S(Query("ROLLBACK")), S(Bind("s1"), Execute(), Sync)]),
    ("deallocate-case-folded-name",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("DEALLOCATE S1")), S(Parse("s1", "SELECT 2"), Sync)]),
    ("deallocate-quoted-name",
     [S(Parse("Mixed", "SELECT 1"), Sync), S(Query('DEALLOCATE "Mixed"')), S(Parse("Mixed", "SELECT 2"), Sync)]),
    ("deallocate-in-multi-statement-query",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("SELECT 5; DEALLOCATE s1")), S(Parse("s1", "SELECT 2"), Sync)]),
    ("discard-all-in-transaction-block-fails",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("BEGIN")), S(Query("DISCARD ALL")), S(Query("ROLLBACK")),
      S(Bind("s1"), Execute(), Sync)]),
    ("deallocate-all-extended-protocol",
     [S(Parse("s1", "SELECT 1"), Sync), S(Parse("", "DEALLOCATE ALL"), Bind(""), Execute(), Sync),
      S(Bind("s1"), Execute(), Sync), S(Parse("s1", "SELECT 1"), Bind("s1"), Execute(), Sync)]),
    ("deallocate-name-extended-protocol",
     [S(Parse("s1", "SELECT 1"), Sync), S(Parse("", "DEALLOCATE s1"), Bind(""), Execute(), Sync),
      S(Parse("s1", "SELECT 2"), Bind("s1"), Execute(), Sync)]),
    ("discard-all-extended-protocol",
     [S(Parse("s1", "SELECT 1"), Sync), S(Parse("", "DISCARD ALL"), Bind(""), Execute(), Sync),
      S(Parse("s1", "SELECT 1"), Bind("s1"), Execute(), Sync)]),
    ("deallocate-split-across-reads",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("DEALLOCATE s1"), split=8), S(Parse("s1", "SELECT 2"), Sync)]),
    ("deallocate-all-split-across-reads",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("DEALLOCATE ALL"), split=8), S(Parse("s1", "SELECT 1"), Sync)]),
    ("function-call",
     [S(Parse("s", "SELECT 1"), Sync), S(pgwire.message(b"F", struct.pack("!IhhI", 1251, 0, 1, 2) + b"-5" +
                                                       struct.pack("!h", 0))),
      S(Bind("s"), Execute(), Sync)]),
    ("copy-in-extended-protocol",
     [S(Query("BEGIN")), S(Query("CREATE TEMP TABLE ct (a int) ON COMMIT DROP")),
      S(Parse("c", "COPY ct FROM STDIN"), Bind("c"), Execute(), pgwire.message(b"d", b"1\n"),
        pgwire.message(b"d", b"2\n"), pgwire.message(b"c"), Sync),
      S(Parse("n", "SELECT count(*) FROM ct"), Bind("n"), Execute(), Sync), S(Query("COMMIT"))]),
    ("simple-query-inside-extended-batch",
     [S(Parse("s", "SELECT 1"), Bind("s"), Execute(), Query("SELECT 5"), Sync, ready=2)]),
    ("deallocate-all-in-multi-statement-query",
     [S(Parse("s1", "SELECT 1"), Sync), S(Query("DEALLOCATE ALL; SELECT 5")), S(Bind("s1"), Execute(), Sync),
      S(Parse("s1", "SELECT 1"), Bind("s1"), Execute(), Sync)]),
    ("same-text-different-parameter-types",
     [S(Parse("i", "SELECT $1 AS v", [23]), Parse("x", "SELECT $1 AS v", [25]), Parse("u", "SELECT $1 AS v"),
        Describe("S", "i"), Describe("S", "x"), Describe("S", "u"), Sync),
      S(Bind("i", [7]), Describe("P"), Execute(), Bind("x", [7]), Describe("P"), Execute(), Sync)]),
    ("portal-across-syncs-in-transaction",
     [S(Query("BEGIN")), S(Parse("g", "SELECT generate_series(1, 5)"), Bind("g", portal="p"), Execute("p", 2), Sync),
      S(Execute("p", 2), Sync), S(Execute("p", 2), Sync), S(Query("COMMIT"))]),
]

# The same with max_prepared_statements=2: weir closes statements to make room.
CORNERS_EVICTING = [
    ("error-before-eviction-in-pipeline",
     [S(Parse("a", "SELECT 11"), Parse("bad", "SELEC"), Parse("b", "SELECT 12"), Bind("a"), Execute(), Sync),
      S(Bind("a"), Execute(), Sync), S(Parse("a", "SELECT 11"), Bind("a"), Execute(), Sync)]),
    ("many-statements-in-one-pipeline",
     [S(*[Parse("s%d" % k, "SELECT %d" % (k + 10)) for k in range(6)],
        *[m for k in (0, 5, 1, 4, 2, 3, 0) for m in (Bind("s%d" % k), Execute())], Sync)]),
    ("error-in-transaction-then-eviction",
     [S(Parse("a", "SELECT 11"), Parse("b", "SELECT 12"), Sync), S(Query("BEGIN")), S(Query("SELECT 1/0")),
      S(Parse("c", "SELECT 13"), Bind("a"), Execute(), Sync), S(Query("ROLLBACK")),
      S(Bind("a"), Execute(), Bind("b"), Execute(), Sync), S(Parse("c", "SELECT 13"), Bind("c"), Execute(), Sync)]),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("max_prepared", [0, 200])
def test_simple_query_skipped_in_failed_batch_releases_server(pg, weir_factory, max_prepared):
    """Parse (fails), Query, Sync: PostgreSQL skips the Query (it skips
    everything up to the Sync) and answers one ReadyForQuery. The client is
    then idle, so its server must go back to the pool for the next client."""
    w = weir_factory(settings={"default_pool_size": 1, "max_prepared_statements": max_prepared})
    c = wire(w.port, pg)
    other = wire(w.port, pg)
    try:
        assert run_steps(c, [S(Parse("bad", "SELEC"), Query("SELECT 5"), Sync)]) == [["E:42601", "Z:I"]]
        assert run_steps(other, [S(Query("SELECT 7"))]) == [["T:23", "D:7", "C:SELECT 1", "Z:I"]]
        assert run_steps(c, [S(Parse("s", "SELECT 1"), Bind("s"), Execute(), Sync)]) == \
            [["1", "2", "D:1", "C:SELECT 1", "Z:I"]]
        assert run_steps(other, [S(Query("SELECT 8"))]) == [["T:23", "D:8", "C:SELECT 1", "Z:I"]]
    finally:
        c.close()
        other.close()


# Known limitation, documented in the README: a DEALLOCATE of a protocol-level
# name inside a multi-statement simple query reaches the server, which knows
# the statement by weir's name. strict: the mark must go once it works.
KNOWN_LIMITS = {"deallocate-in-multi-statement-query":
                "DEALLOCATE of a protocol-level name inside a multi-statement query"}


def _corner(c, max_prepared):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_LIMITS[c[0]])] if c[0] in KNOWN_LIMITS else []
    return pytest.param(c[1], max_prepared, id=c[0], marks=marks)


@pytest.mark.parametrize("steps,max_prepared", [_corner(c, 10) for c in CORNERS] + [_corner(c, 2) for c in CORNERS_EVICTING])
def test_protocol_corner_same_as_postgres(pg, weir_factory, steps, max_prepared):
    w = weir_factory(settings={"default_pool_size": 1, "max_prepared_statements": max_prepared})
    seen = {}
    for target, port in (("postgres", pg.port), ("weir", w.port)):
        other = wire(port, pg)
        c = wire(port, pg)
        try:
            assert run_steps(other, [S(Parse("o1", "SELECT 1"), Parse("o2", "SELECT 2"), Sync)]) == [["1", "1", "Z:I"]]
            seen[target] = run_steps(c, steps)
            c.close()
            # the other client's statements are intact
            seen[target + " (other client after)"] = run_steps(
                other, [S(Bind("o1"), Execute(), Bind("o2"), Execute(), Sync)])
        finally:
            c.close()
            other.close()
    assert seen["weir"] == seen["postgres"], "\n".join("%-30s %s" % kv for kv in seen.items())
    assert seen["weir (other client after)"] == seen["postgres (other client after)"]
