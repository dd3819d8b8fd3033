"""weir against the real PgBouncer, live: both started on the same
pgbouncer.ini against the test PostgreSQL, each scenario run against both
with the same raw wire client (pgbdiff.py), comparing what a client sees:
severity, SQLSTATE and message of the ErrorResponse, and whether the
connection stays open; admin console answers; the shapes of the log lines
that pgBadger and alerting parse.

A scenario is either `same` (both must answer alike) or an intended
difference, where weir deliberately does otherwise and the reason is
written next to it; both sides of an intended difference are pinned, so a
change on either shows up here. Skipped when Debian's PgBouncer
(/usr/sbin/pgbouncer, tests/tools/deps.sh installs it) is absent.
"""
import concurrent.futures
import os
import re
import signal
import socket
import tempfile
import threading
import time

import pytest

from pgbdiff import Pair, admin, cancel, log_shape, login, pgbouncer_missing, query, result
from pgwire import query_message, startup_packet
from conftest import wait_for

pytestmark = pytest.mark.skipif(pgbouncer_missing() is not None, reason=str(pgbouncer_missing()))

# Rows of the report printed at the end of the module: (scenario, verdict, note).
TABLE = []


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    width = max([len(r[0]) for r in TABLE] + [10])
    print("\n---- weir vs PgBouncer 1.18 ----")
    for name, verdict, note in TABLE:
        print("%-*s  %-9s %s" % (width, name, verdict, note))


@pytest.fixture
def pairs(pg):
    made = []

    def make(**kw):
        p = Pair(pg, **kw)
        made.append(p)
        return p.start()

    yield make
    problems = []
    for p in made:
        problems += p.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def same(name, res):
    """Both answered alike (Outcome.key(), or any comparable value)."""
    k = {a: (v.key() if hasattr(v, "key") else v) for a, v in res.items()}
    assert k["weir"] == k["pgbouncer"], "%s differs:\n  pgbouncer %r\n  weir      %r" % (name, k["pgbouncer"],
                                                                                     k["weir"])
    TABLE.append((name, "same", ""))


def intended(name, res, pgbouncer, weir, why):
    """A deliberate difference: both sides pinned, the reason recorded."""
    k = {a: (v.key() if hasattr(v, "key") else v) for a, v in res.items()}
    assert k["pgbouncer"] == pgbouncer, "%s: PgBouncer now answers %r" % (name, k["pgbouncer"])
    assert k["weir"] == weir, "%s: weir now answers %r" % (name, k["weir"])
    TABLE.append((name, "intended", why))


def both(p, fn):
    """fn(pooler) on both at once (timeouts run in parallel); -> {kind: result}."""
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        futs = {k: ex.submit(fn, x) for k, x in p.items()}
        return {k: f.result() for k, f in futs.items()}


def one_query(x, pg, sql, before=None, pause=0.0):
    """Log in, optionally send before and stay quiet pause seconds, then sql: -> its Outcome."""
    a = login(x.port, pg.user, pg.db, keep=True)
    if before:
        query(a.wire, before)
    time.sleep(pause)
    r = query(a.wire, sql)
    a.wire.close()
    return r


def after_a_pause(x, pg, first):
    """first, quiet 2.2 s (past timeouts of 1 s), then SELECT 1."""
    return one_query(x, pg, "SELECT 1", before=first, pause=2.2)


def fatal(msg):
    """The key of a login or query refused with FATAL 08P01 msg, connection closed."""
    return (False, "FATAL", "08P01", msg, True)


def fatal_after_login(msg):
    return (True, "FATAL", "08P01", msg, True)


OK = (True, None, None, None, False)


# ---- authentication ----

@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256", "plain", "trust"])
def test_auth(pairs, pg, auth_type):
    p = pairs(settings={"auth_type": auth_type})
    cases = [
        ("right password, md5 user", pg.md5_user, pg.db, pg.md5_password),
        ("right password, scram user", pg.scram_user, pg.db, pg.scram_password),
        ("wrong password, md5 user", pg.md5_user, pg.db, "wrong"),
        ("wrong password, scram user", pg.scram_user, pg.db, "wrong"),
        ("empty password", pg.md5_user, pg.db, ""),
        ("unknown user", "nosuchuser", pg.db, "whatever"),
        ("unknown database, right password", pg.user, "nosuchdb", "weir-test-pw"),
        ("unknown database, wrong password", pg.user, "nosuchdb", "wrong"),
    ]
    for what, user, db, pw in cases:
        same("auth_type=%s: %s" % (auth_type, what), p.each(lambda x: login(x.port, user, db, pw)))


def test_auth_stored_secrets(pairs, pg):
    """auth_file holding an md5 hash and a SCRAM secret, not plain text."""
    import hashlib
    with pg.connect() as c:
        scram = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [pg.scram_user]).fetchone()[0]
    md5 = "md5" + hashlib.md5((pg.md5_password + pg.md5_user).encode()).hexdigest()
    for auth in ("md5", "scram-sha-256"):
        p = pairs(settings={"auth_type": auth}, userlist={pg.user: "weir-test-pw", pg.scram_user: scram,
                                                          pg.md5_user: md5})
        for user, pw in ((pg.scram_user, pg.scram_password), (pg.scram_user, "bad"), (pg.md5_user, "bad")):
            same("auth_type=%s, stored secret: %s %s" % (auth, user, "right" if pw != "bad" else "wrong"),
                 p.each(lambda x: login(x.port, user, pg.db, pw)))


def test_auth_any(pairs, pg):
    """auth_type = any: the database's forced user, whoever the client says it is."""
    p = pairs(settings={"auth_type": "any"}, databases={pg.db: pg.entry(), "forced": pg.entry(user=pg.user)})

    def who(x):
        a = login(x.port, "whoever", "forced", keep=True)
        r = query(a.wire, "SELECT current_user").rows
        a.wire.close()
        return r
    same("auth_type=any: a database with a forced user", p.each(who))
    same("auth_type=any: no forced user", p.each(lambda x: login(x.port, "whoever", pg.db)))
    same("auth_type=any: unknown database", p.each(lambda x: login(x.port, "whoever", "nosuchdb")))


def test_auth_hba(pairs, pg):
    d = tempfile.mkdtemp(prefix="weir-pgbdiff-hba-")
    os.chmod(d, 0o755)
    hba = os.path.join(d, "hba.conf")
    with open(hba, "w") as f:
        f.write("host all %s 127.0.0.1/32 md5\n" % pg.md5_user)
        f.write("host all %s 127.0.0.1/32 scram-sha-256\n" % pg.scram_user)
        f.write("host all %s 127.0.0.1/32 trust\n" % pg.user)
    os.chmod(hba, 0o644)
    p = pairs(settings={"auth_type": "hba", "auth_hba_file": hba})
    for what, user, pw in (("md5 rule, right", pg.md5_user, pg.md5_password), ("md5 rule, wrong", pg.md5_user, "x"),
                           ("scram rule, right", pg.scram_user, pg.scram_password),
                           ("scram rule, wrong", pg.scram_user, "x"), ("trust rule", pg.user, "")):
        same("auth_type=hba: " + what, p.each(lambda x: login(x.port, user, pg.db, pw)))
    res = p.each(lambda x: login(x.port, "nobody", pg.db, "x"))
    intended("auth_type=hba: no matching rule", res, fatal("login rejected"),
             (False, "FATAL", "28000", 'no pg_hba.conf entry for host "127.0.0.1", user "nobody", database "%s", '
              "no encryption" % pg.db, True),
             "PostgreSQL's words and SQLSTATE (README): they name the rule that is missing")


# ---- limits and timeouts ----

def test_max_client_conn(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "max_client_conn": 2})

    def at_limit(x):
        held = [login(x.port, pg.user, pg.db, keep=True) for _ in range(2)]
        refused = login(x.port, pg.user, pg.db)
        console = admin(x.port, pg.user, "SHOW VERSION")[2]
        for h in held:
            h.wire.close()
        return refused.key(), console.key()
    res = p.each(at_limit)
    same("max_client_conn reached (and the console still reachable)", res)
    assert res["weir"][0] == fatal("no more connections allowed (max_client_conn)")


def timed(fn):
    def run(x):
        t0 = time.monotonic()
        r = fn(x)
        r.took = time.monotonic() - t0
        return r
    return run


def test_query_wait_timeout(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "default_pool_size": 1, "query_wait_timeout": 1})

    def wait(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")  # session mode: a keeps the only server
        b = login(x.port, pg.user, pg.db, keep=True)
        r = timed(lambda x: query(b.wire, "SELECT 1"))(x)
        a.wire.close()
        b.wire.close()
        return r
    res = both(p, wait)
    same("pool exhausted, query_wait_timeout", res)
    assert res["weir"].key() == fatal_after_login("query_wait_timeout")
    for k, r in res.items():
        assert 0.8 < r.took < 4, (k, r.took)


def pools(x, pg, db=None):
    """SHOW POOLS as {(database, user): {column: value}} (values as text)."""
    cols, rows, o = admin(x.port, pg.user, "SHOW POOLS")
    assert o.error is None, o.error
    return {(r[0], r[1]): dict(zip(cols, r)) for r in rows if db is None or r[0] == db}


@pytest.mark.parametrize("limit", ["max_db_connections", "max_user_connections"])
def test_connection_limits_make_clients_wait(pairs, pg, limit):
    """Two pools under one limit of 1 (two users of one database, or one user of
    two databases): the second pool's client waits while the first holds the
    server, gets it once it is free, else query_wait_timeout."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", limit: 1, "query_wait_timeout": 2},
              databases={pg.db: pg.entry(), "other": pg.entry()})
    second = (pg.scram_user, pg.db) if limit == "max_db_connections" else (pg.user, "other")

    def run(x):
        b = login(x.port, second[0], second[1], keep=True)  # its pool learns the server's parameters first
        query(b.wire, "SELECT 1")
        a = login(x.port, pg.user, pg.db, keep=True)  # takes the one server over (evicted from b's pool)
        query(a.wire, "BEGIN")  # and holds it
        b.wire.send(query_message("SELECT 1"))
        time.sleep(0.5)
        waiting = sorted((k[0], k[1], v["cl_waiting"]) for k, v in pools(x, pg).items() if k[0] != "pgbouncer")
        query(a.wire, "COMMIT")  # the server is free: b's pool may take it over
        served = result(b.wire).key()
        query(a.wire, "BEGIN")
        t0 = time.monotonic()
        timed_out = query(b.wire, "SELECT 2")
        took = time.monotonic() - t0
        a.wire.close()
        b.wire.close()
        return waiting, served, timed_out.key(), took > 1.5
    res = both(p, run)
    same("%s = 1: the other pool's client waits, is served when the server frees, else times out" % limit, res)
    assert res["weir"][1:] == (OK, fatal_after_login("query_wait_timeout"), True), res
    assert ("1" in [w[2] for w in res["weir"][0]]), res


def test_reserve_pool(pairs, pg):
    """A full pool: after reserve_pool_timeout a waiting client gets a reserve server."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "default_pool_size": 1,
                        "reserve_pool_size": 1, "reserve_pool_timeout": 1})

    def run(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "BEGIN")
        b = login(x.port, pg.user, pg.db, keep=True)
        t0 = time.monotonic()
        r = query(b.wire, "SELECT 1")
        took = time.monotonic() - t0
        row = pools(x, pg, pg.db)[(pg.db, pg.user)]
        a.wire.close()
        b.wire.close()
        return r.key(), 0.8 < took < 3, int(row["sv_active"]) + int(row["sv_idle"]) + int(row["sv_used"])
    res = both(p, run)
    same("reserve_pool_size = 1: served from the reserve after reserve_pool_timeout", res)
    assert res["weir"] == (OK, True, 2), res


def test_min_pool_size(pairs, pg):
    """min_pool_size servers are opened while the pool has clients."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "min_pool_size": 3})

    def run(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")
        time.sleep(1.5)  # PgBouncer fills the pool from its janitor, one server a round
        row = pools(x, pg, pg.db)[(pg.db, pg.user)]
        filled = int(row["sv_active"]) + int(row["sv_idle"]) + int(row["sv_used"])
        a.wire.close()
        return filled
    res = both(p, run)
    same("min_pool_size = 3: the pool is filled while it has a client", res)
    assert res["weir"] == 3, res


def test_query_timeout_ends_a_wait(pairs, pg):
    """query_timeout shorter than query_wait_timeout: PgBouncer applies it to waiting clients too."""
    p = pairs(settings={"auth_type": "trust", "default_pool_size": 1, "query_wait_timeout": 10, "query_timeout": 1})

    def wait(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")
        b = login(x.port, pg.user, pg.db, keep=True)
        r = query(b.wire, "SELECT 1")
        a.wire.close()
        b.wire.close()
        return r
    res = both(p, wait)
    same("pool exhausted, query_timeout < query_wait_timeout", res)
    assert res["weir"].key() == fatal_after_login("query_timeout")


def test_query_and_idle_transaction_timeouts(pairs, pg):
    q = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "query_timeout": 1})
    i = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "idle_transaction_timeout": 1})

    def running(x):
        return one_query(x, pg, "SELECT pg_sleep(4)")

    def idle_in_txn(x):
        return after_a_pause(x, pg, "BEGIN")
    res = both(q, running)
    same("query_timeout on a running query", res)
    assert res["weir"].key() == fatal_after_login("query timeout")
    res = both(i, idle_in_txn)
    same("idle_transaction_timeout", res)
    assert res["weir"].key() == fatal_after_login("idle transaction timeout")
    # PgBouncer counts query_timeout from the client's last query, idle or not:
    # it ends a transaction left idle too
    res = both(q, idle_in_txn)
    same("query_timeout on a transaction left idle", res)
    assert res["weir"].key() == fatal_after_login("query timeout")


def test_client_idle_timeout(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "client_idle_timeout": 1})

    res = both(p, lambda x: after_a_pause(x, pg, "SELECT 1"))
    same("client_idle_timeout", res)
    assert res["weir"].key() == fatal_after_login("client_idle_timeout")


def test_client_idle_timeout_session_mode(pairs, pg):
    """Session mode: PgBouncer's client_idle_timeout closes a client without a
    server, and spares one that holds its server."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "session", "client_idle_timeout": 1})

    def idle(x):
        holder = login(x.port, pg.user, pg.db, keep=True)
        query(holder.wire, "SELECT 1")
        bare = login(x.port, pg.user, pg.db, keep=True)
        time.sleep(2.2)
        r = query(holder.wire, "SELECT 1").key(), query(bare.wire, "SELECT 1").key()
        holder.wire.close()
        bare.wire.close()
        return r
    res = both(p, idle)
    same("client_idle_timeout in session mode (with and without a server)", res)
    assert res["weir"] == (OK, fatal_after_login("client_idle_timeout"))


def test_client_login_timeout(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "client_login_timeout": 1})

    def silent(x):
        from pgwire import Wire
        from pgbdiff import Outcome, parse_error_fields
        w = Wire("127.0.0.1", x.port, timeout=5)
        o = Outcome()
        try:
            t, b = w.read_message(timeout=4)
            o.error = parse_error_fields(b) if t == b"E" else {"type": t}
            w.read_message(timeout=1)
            o.closed = False
        except (EOFError, ConnectionResetError):
            o.closed = True
        except (TimeoutError, OSError):
            o.closed = False
        w.close()
        return o
    res = both(p, silent)
    same("client_login_timeout (no startup packet)", res)


# ---- servers down ----

def test_server_down(pairs, pg):
    """A server that cannot be reached: both hold the login (a restart costs a delay, not an error)."""
    from conftest import free_port
    dead = "host=127.0.0.1 port=%d dbname=x" % free_port()
    p = pairs(settings={"auth_type": "trust", "query_wait_timeout": 1},
              databases={pg.db: pg.entry(), "down": dead})
    res = both(p, timed(lambda x: login(x.port, pg.user, "down")))
    for v in res.values():
        assert v.took > 0.8, v
    same("server down (closed port): the login waits out query_wait_timeout", res)
    assert res["weir"].key() == fatal("query_wait_timeout")


def test_server_back_within_query_wait_timeout(pairs, pg, relay):
    """A restart: the server is away for a second; both hold the login, retry, and let it in."""
    p = pairs(settings={"auth_type": "trust", "query_wait_timeout": 10, "server_login_retry": 1},
              databases={pg.db: pg.entry(), "away": "host=127.0.0.1 port=%d dbname=%s" % (relay.port, pg.db)})
    up = []
    threading.Timer(1.0, lambda: (relay.start(), up.append(time.monotonic()))).start()

    def late_login(x):
        r = login(x.port, pg.user, "away")
        r.ended = time.monotonic()
        return r
    res = both(p, late_login)
    for v in res.values():
        assert up and v.ended >= up[0], v  # served only once the server was back
    same("server away for a second: the login waits and gets in", res)
    assert res["weir"].key() == OK


def test_server_silent(pairs, pg, relay):
    """A server that accepts and never answers: server_connect_timeout ends each attempt,
    the client waits out query_wait_timeout."""
    relay.start("silent")
    p = pairs(settings={"auth_type": "trust", "query_wait_timeout": 3, "server_connect_timeout": 1},
              databases={pg.db: pg.entry(), "silent": "host=127.0.0.1 port=%d dbname=%s" % (relay.port, pg.db)})
    res = both(p, timed(lambda x: login(x.port, pg.user, "silent")))
    for v in res.values():
        assert 2.5 < v.took < 6, v
    same("server silent: the login waits out query_wait_timeout", res)
    assert res["weir"].key() == fatal("query_wait_timeout")


def test_server_refuses_the_login(pairs, pg):
    """PostgreSQL refuses the pooler's login: the client gets the server's words."""
    p = pairs(settings={"auth_type": "trust", "query_wait_timeout": 1},
              databases={pg.db: pg.entry(), "gone": pg.entry(dbname="no_such_db_on_server"),
                         "badrole": pg.entry(user="no_such_role")})
    same("server refuses the login: database missing there",
         p.each(lambda x: login(x.port, pg.user, "gone")))
    same("server refuses the login: no pg_hba.conf line for the role",
         p.each(lambda x: login(x.port, pg.user, "badrole")))
    for x in p.poolers.values():
        assert 'WARNING server login failed: FATAL database "no_such_db_on_server" does not exist' in x.log_text()
    res = both(p, timed(lambda x: login(x.port, pg.user, "gone")))
    assert res["weir"].took < 1 and res["pgbouncer"].took > 0.8
    intended("server refuses the login: the next client", res, fatal("query_wait_timeout"),
             fatal('database "no_such_db_on_server" does not exist'),
             "weir tries again (with back-off) and fails the client at once with the reason; PgBouncer waits "
             "server_login_retry before trying again, so the client waits out query_wait_timeout")


# ---- cancel requests ----

def running(pg, sql):
    """Wait until PostgreSQL runs sql (on some server connection)."""
    with pg.connect() as c:
        wait_for(lambda: c.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'",
                                   [sql]).fetchone()[0] > 0, 5, interval=0.02, what="the query to run")

@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel(pairs, pg, mode):
    """A CancelRequest with the key the pooler gave: the running query is cancelled (57014), the
    client stays; with a wrong key nothing happens. Either way the pooler closes the cancel socket."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": mode})

    def run(x, right_key):
        a = login(x.port, pg.user, pg.db, keep=True)
        assert a.logged_in and a.cancel_key is not None, a
        sql = "SELECT pg_sleep(%s) /* %s */" % ("5" if right_key else "1", x.kind)
        a.wire.send(query_message(sql))
        running(pg, sql)
        pid, secret = a.cancel_key
        closed = cancel(x.port, (pid, secret if right_key else secret ^ 1))
        r = result(a.wire)
        after = query(a.wire, "SELECT 1")
        a.wire.close()
        return (closed, r.key(), after.key(), after.rows)

    res = both(p, lambda x: run(x, True))
    same("cancel (%s mode), right key" % mode, res)
    assert res["weir"][1][2] == "57014" and res["weir"][2] == OK, res
    res = both(p, lambda x: run(x, False))
    same("cancel (%s mode), wrong key" % mode, res)
    assert res["weir"][1] == OK, res


# ---- settings ----

def test_disable_pqexec(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "disable_pqexec": 1})

    res = both(p, lambda x: one_query(x, pg, "SELECT 1"))
    same("disable_pqexec: a simple query", res)
    assert res["weir"].key() == fatal_after_login("PQexec disallowed")


def test_server_fast_close(pairs, pg):
    """After RECONNECT in session mode: an idle session is closed, one in a transaction at its end."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "session", "server_fast_close": 1})

    def run(x):
        idle = login(x.port, pg.user, pg.db, keep=True)
        busy = login(x.port, pg.user, pg.db, keep=True)
        query(idle.wire, "SELECT 1")
        query(busy.wire, "BEGIN")
        admin(x.port, pg.user, "RECONNECT")
        time.sleep(2)
        out = [query(idle.wire, "SELECT 1").key(), query(busy.wire, "SELECT 2").key(),
               query(busy.wire, "COMMIT").key()]
        time.sleep(1.5)
        out.append(query(busy.wire, "SELECT 3").key())
        idle.wire.close()
        busy.wire.close()
        return out
    res = both(p, run)
    same("server_fast_close: idle session closed, a transaction finishes first", res)
    assert res["weir"] == [fatal_after_login("database configuration changed"), OK, OK,
                           fatal_after_login("database configuration changed")], res


# ---- pool modes ----

def test_pool_modes(pairs, pg):
    p = pairs(settings={"auth_type": "trust"},
              databases={pg.db: pg.entry(), "stmt": pg.entry() + " pool_mode=statement",
                         "txn": pg.entry() + " pool_mode=transaction"})

    def statement(x):
        a = login(x.port, pg.user, "stmt", keep=True)
        r = [query(a.wire, "SELECT 1").key()]
        r.append(query(a.wire, "BEGIN").key())
        a.wire.close()
        return r

    def transaction(x):
        a = login(x.port, pg.user, "txn", keep=True)
        r = []
        for sql in ("BEGIN", "SELECT 1", "COMMIT", "SELECT 1/0", "SELECT 2"):
            o = query(a.wire, sql)
            r.append((o.key(), o.rows))
        a.wire.close()
        return r
    res = p.each(statement)
    same("pool_mode=statement: a transaction block", res)
    assert res["weir"][1] == fatal_after_login("transaction blocks not allowed in statement pooling mode")
    same("pool_mode=transaction: begin/commit, an error, the next query", p.each(transaction))


# ---- startup parameters ----

def test_startup_parameters(pairs, pg):
    p = pairs(settings={"auth_type": "trust"})
    same("unsupported startup parameter", p.each(lambda x: login(x.port, pg.user, pg.db, params={"search_path": "x"})))
    assert login(p["weir"].port, pg.user, pg.db, params={"search_path": "x"}).key() == \
        fatal("unsupported startup parameter: search_path")

    def appname(x):
        a = login(x.port, pg.user, pg.db, params={"application_name": "diff-app"}, keep=True)
        r = query(a.wire, "SELECT current_setting('application_name')").rows
        clients = admin(x.port, pg.user, "SHOW CLIENTS")
        col = clients[0].index("application_name")
        seen = sorted(row[col] for row in clients[1])
        a.wire.close()
        return r, seen
    same("application_name reaches the server and SHOW CLIENTS", p.each(appname))

    def unnamed(x):
        return one_query(x, pg, "SELECT current_setting('application_name')").rows
    intended("no application_name from the client", p.each(unnamed), [[""]], [["weir"]],
             "server connections carry fallback_application_name=weir, so pg_stat_activity shows which "
             "sessions come through weir; a client's own application_name replaces it")
    res = p.each(lambda x: login(x.port, pg.user, pg.db, params={"extra_float_digits": "2"}))
    intended("extra_float_digits without ignore_startup_parameters", res,
             fatal("unsupported startup parameter: extra_float_digits"), OK,
             "weir tracks extra_float_digits like client_encoding (README): JDBC and others send it, and "
             "PgBouncer users had to list it in ignore_startup_parameters")

    same("replication connection", p.each(lambda x: login(x.port, pg.user, pg.db, params={"replication": "true"})))

    def raw_startup(body):
        def run(x):
            from pgwire import Wire
            from pgbdiff import Outcome, parse_error_fields
            import struct
            w = Wire("127.0.0.1", x.port, timeout=5)
            w.send(struct.pack("!I", len(body) + 4) + body)
            o = Outcome()
            t, b = w.read_message()
            o.error = parse_error_fields(b) if t == b"E" else {"type": t}
            o.closed = w.read_until_closed(2) == []
            w.close()
            return o
        return run
    same("protocol 2.0 startup packet", p.each(raw_startup(b"\0\2\0\0" + b"user\0x\0\0")))
    same("startup packet without a user", p.each(raw_startup(b"\0\3\0\0" + b"database\0x\0\0")))

    q = pairs(settings={"auth_type": "trust", "ignore_startup_parameters": "search_path, extra_float_digits"})
    same("ignore_startup_parameters set", q.each(lambda x: login(x.port, pg.user, pg.db,
                                                                  params={"search_path": "x",
                                                                          "extra_float_digits": "2"})))


# ---- the admin console ----

def test_admin_console_answers(pairs, pg):
    p = pairs(settings={"auth_type": "md5"})
    same("console: user not in admin_users/stats_users",
         p.each(lambda x: login(x.port, pg.md5_user, "pgbouncer", pg.md5_password)))
    same("console: stats user runs PAUSE", p.each(lambda x: admin(x.port, "statsuser", "PAUSE")[2]))

    def cmd(sql):
        def run(x):
            cols, rows, o = admin(x.port, pg.user, sql)
            return cols, rows, o.key(), getattr(o, "tag", None), [(n.get("S"), n.get("M"), n.get("D"))
                                                                  for n in o.notices]
        return run
    for sql in ("frobnicate", "SHOW frobs", "SELECT 1", "PAUSE", "PAUSE", "RESUME", "RESUME",
                "PAUSE nosuchdb", "KILL nosuchdb", "RECONNECT nosuchdb", "DISABLE", "ENABLE nosuchdb", "RELOAD",
                "SHOW LISTS;", "SET default_pool_size = 7", "SHOW USERS"):
        res = p.each(cmd(sql))
        if sql == "SHOW LISTS;":
            # free_* count PgBouncer's slab caches of unused objects; weir keeps none
            res = {k: [r for r in v[1] if not r[0].startswith("free_")] for k, v in res.items()}
        same("console: " + sql, res)
    res = p.each(cmd("SHOW HELP"))
    help_lines = {k: v[4][0][2].split("\n\t") for k, v in res.items()}
    assert res["weir"][:4] == res["pgbouncer"][:4]
    intended("console: SHOW HELP", help_lines, help_lines["pgbouncer"], help_lines["weir"],
             "lists what weir answers: no SHOW FDS or SUSPEND (no online restart), plus SHOW STATE and KILL_CLIENT")
    assert set(help_lines["pgbouncer"]) - set(help_lines["weir"]) == {
        "SHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM", "SUSPEND"}
    res = p.each(cmd("SHOW VERSION"))
    intended("console: SHOW VERSION", {k: v[1] for k, v in res.items()}, [["PgBouncer 1.18.0"]],
             [["PgBouncer 1.18.0 compatible (weir 0.1.0)"]],
             "says what answers, and still parses as 'PgBouncer 1.18.0' (pgbouncer_exporter's regex)")
    res = p.each(cmd("SUSPEND"))
    intended("console: SUSPEND", {k: v[2] for k, v in res.items()}, OK,
             (True, "ERROR", "08P01", "SUSPEND is not supported: weir has no online restart (-R); use PAUSE",
              False), "SUSPEND only serves PgBouncer's online restart (-R), which weir does not have: "
                      "an error says so rather than a pooler frozen for nothing")
    res = p.each(cmd("SET nosuch = 1"))
    intended("console: SET of an unknown key", {k: v[2] for k, v in res.items()},
             (True, "ERROR", "08P01", "SET failed", False),
             (True, "ERROR", "08P01", 'SET failed: unknown setting "nosuch"', False),
             "the same words, then why")


def test_admin_kill_disable_enable(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction"})

    def kill(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")
        k = admin(x.port, pg.user, "KILL " + pg.db)[2].key()
        r = query(a.wire, "SELECT 1").key()
        a.wire.close()
        return k, r, admin(x.port, pg.user, "RESUME " + pg.db)[2].key()
    same("console: KILL db, then its client's next query", p.each(kill))
    q = pairs(settings={"auth_type": "trust", "pool_mode": "transaction"})

    def disable(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")
        r = [admin(x.port, pg.user, "DISABLE " + pg.db)[2].key(), login(x.port, pg.user, pg.db).key(),
             query(a.wire, "SELECT 1").key(), admin(x.port, pg.user, "ENABLE " + pg.db)[2].key(),
             login(x.port, pg.user, pg.db).key()]
        a.wire.close()
        return r
    res = q.each(disable)
    same("console: DISABLE db (new logins refused, connected clients served), ENABLE", res)
    assert res["weir"][1] == fatal('database "%s" is disabled' % pg.db)
    # After KILL and RESUME, PgBouncer 1.18 kept new logins waiting in this test; weir serves them.
    assert login(p["weir"].port, pg.user, pg.db).logged_in


def test_admin_reconnect_pause_resume(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction"})

    def run(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "BEGIN")
        r = [admin(x.port, pg.user, "RECONNECT " + pg.db)[2].key(), query(a.wire, "COMMIT").key(),
             query(a.wire, "SELECT 1").key(), admin(x.port, pg.user, "PAUSE " + pg.db)[2].key()]
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(query, a.wire, "SELECT 1", 5)
        time.sleep(0.5)
        r += [waiting.done(), admin(x.port, pg.user, "RESUME " + pg.db)[2].key(), waiting.result().key()]
        a.wire.close()
        return r
    res = both(p, run)
    same("console: RECONNECT during a transaction, PAUSE with a query waiting, RESUME", res)
    wanted = ["closing because: close_needed (age=", "closing because: pause mode (age=",
              "RECONNECT '%s' command issued" % pg.db, "PAUSE '%s' command issued" % pg.db,
              "RESUME '%s' command issued" % pg.db]
    same("log: RECONNECT, PAUSE and RESUME lines, and the servers they close",
         {k: [w for w in wanted if w in x.log_text()] for k, x in p.items()})
    assert all(w in p["weir"].log_text() for w in wanted)


def test_admin_show_config(pairs, pg):
    p = pairs(settings={"auth_type": "trust"})
    res = p.each(lambda x: admin(x.port, pg.user, "SHOW CONFIG"))
    assert res["weir"][0] == res["pgbouncer"][0] == ["key", "value", "default", "changeable"]
    b = {r[0]: r[1:] for r in res["pgbouncer"][1]}
    w = {r[0]: r[1:] for r in res["weir"][1]}
    assert not set(b) - set(w), "keys PgBouncer shows and weir does not: %s" % sorted(set(b) - set(w))
    own = {"conffile", "listen_port", "logfile", "pidfile", "unix_socket_dir"}  # this test's paths and ports
    # Debian patches 1.18's auth_query default to the later upstream one (pg_authid, rolvaliduntil); weir keeps
    # upstream 1.18's.
    debian = {"auth_query"}
    diff = {k: (b[k], w[k]) for k in set(b) & set(w) - own - debian if b[k] != w[k]}
    assert not diff, diff
    for k in own:
        assert (b[k][1], b[k][2]) == (w[k][1], w[k][2]), k  # defaults and changeable still agree
    same("SHOW CONFIG: keys, values, defaults, changeable (%d keys)" % len(b), {"weir": 0, "pgbouncer": 0})
    intended("SHOW CONFIG: extra keys", {"pgbouncer": [], "weir": sorted(set(w) - set(b))}, [],
             sorted(set(w) - set(b)), "weir's own settings (workers, metrics_*, health checks...) after PgBouncer's")
    TABLE.append(("SHOW CONFIG: auth_query default", "intended",
                  "Debian's 1.18 ships a later upstream default; weir keeps upstream 1.18's pg_shadow query"))


def test_admin_show_after_identical_activity(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "default_pool_size": 2},
              databases={pg.db: pg.entry(), "txn": pg.entry() + " pool_mode=transaction"})

    def activity(x):
        a = login(x.port, pg.user, pg.db, keep=True, params={"application_name": "held"})
        query(a.wire, "SELECT 1")  # session: keeps its server
        b = login(x.port, pg.user, "txn", keep=True, params={"application_name": "txn-client"})
        query(b.wire, "SELECT 1")  # transaction: its server goes back idle
        return a, b
    held = p.each(activity)
    # sv_idle of the transaction pool: the released server may still be resetting an instant
    time.sleep(0.3)

    def show(what, keep):
        def run(x):
            cols, rows, o = admin(x.port, pg.user, "SHOW " + what)
            assert o.error is None, o.error
            return cols, [[r[cols.index(c)] for c in keep] for r in rows]
        return run
    comparable = {
        "DATABASES": ["name", "host", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool",
                      "pool_mode", "max_connections", "current_connections", "paused", "disabled"],
        "POOLS": ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login",
                  "maxwait", "pool_mode"],
        "CLIENTS": ["type", "user", "database", "state", "addr", "local_addr", "wait", "close_needed",
                    "remote_pid", "tls", "application_name"],
        "SERVERS": ["type", "user", "database", "state", "addr", "port", "local_addr", "close_needed", "tls",
                    "application_name"],
    }
    for what, keep in comparable.items():
        res = p.each(show(what, keep))
        cols = {k: v[0] for k, v in res.items()}
        # PgBouncer's columns, in its order, first; weir's own may follow (README)
        assert cols["weir"][:len(cols["pgbouncer"])] == cols["pgbouncer"], what
        same("SHOW %s values (%s)" % (what, ", ".join(keep)), {k: sorted(v[1], key=str) for k, v in res.items()})
    for h in held.values():
        for o in h:
            o.wire.close()


def test_show_stats_counts(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction"})

    def activity(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        for sql in ["SELECT 1"] * 5 + ["BEGIN", "SELECT 1", "COMMIT", "SELECT generate_series(1, 100)"]:
            query(a.wire, sql)
        a.wire.close()
        cols, rows, _ = admin(x.port, pg.user, "SHOW STATS_TOTALS")
        return cols, [r[:5] for r in rows if r[0] == pg.db]
    same("SHOW STATS_TOTALS counts (xacts, queries, bytes) after the same queries", p.each(activity))


def test_signals_and_server_closings_logged(pairs, pg):
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "server_idle_timeout": 1,
                        "server_lifetime": 2}, databases={pg.db: pg.entry(), "life": pg.entry() + " pool_size=1"})

    def activity(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")
        a.wire.send(b"X\0\0\0\4")  # Terminate
        b = login(x.port, pg.user, "life", keep=True)
        for _ in range(5):
            query(b.wire, "SELECT 1")
            time.sleep(0.5)
        b.wire.close()
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR2):
            x.proc.send_signal(sig)
            time.sleep(0.2)
        admin(x.port, pg.user, "RELOAD")
        wait_for(lambda: "server idle timeout" in x.log_text(), 5, what="the idle server closed")
        return None
    both(p, activity)
    wanted = ["closing because: client close request (age=", "closing because: server lifetime over (age=",
              "closing because: server idle timeout (age=", "LOG got SIGHUP, re-reading config",
              "LOG got SIGUSR1, pausing all activity", "LOG got SIGUSR1, but already paused/suspended",
              "LOG got SIGUSR2, continuing from PAUSE", "LOG got SIGUSR2, but not paused/suspended",
              "LOG RELOAD command issued"]
    seen = {k: [w for w in wanted if w in x.log_text()] for k, x in p.items()}
    same("log: signals, RELOAD, client close request, server idle timeout, server lifetime over", seen)
    assert seen["weir"] == wanted


# ---- log lines ----

# (kind, what the raw line contains, the shape it must have once log_shape()
# replaced time, pid, pointers, addresses and numbers)
LOG_KINDS = [
    ("login attempt", " C-0x", "login attempt",
     r"TS \[PID\] LOG X-PTR: \S+/\S+@ADDR login attempt: db=\S+ user=\S+ tls=no"),
    ("closing because (client)", " C-0x", "closing because",
     r"TS \[PID\] LOG X-PTR: \S+/\S+@ADDR closing because: .+ \(age=Ns\)"),
    ("pooler error", " C-0x", "pooler error", r"TS \[PID\] WARNING X-PTR: \S+/\S+@ADDR pooler error: .+"),
    ("login failed", " C-0x", "login failed", r"TS \[PID\] LOG X-PTR: \S+/\S+@ADDR login failed: db=\S+ user=\S+"),
    ("new connection to server", " S-0x", "new connection to server",
     r"TS \[PID\] LOG X-PTR: \S+/\S+@ADDR new connection to server \(from IP:N\)"),
    ("closing because (server)", " S-0x", "closing because",
     r"TS \[PID\] LOG X-PTR: \S+/\S+@ADDR closing because: .+ \(age=Ns\)"),
    ("stats", "", "LOG stats:",
     r"TS \[PID\] LOG stats: N xacts/s, N queries/s, in N B/s, out N B/s, xact N us, query N us, wait N us"),
    ("listening", "", "LOG listening on", r"TS \[PID\] LOG listening on (IP:N|unix:\S+)"),
    ("fd limit", "", "kernel file descriptor limit",
     r"TS \[PID\] LOG kernel file descriptor limit: N \(hard: N\); max_client_conn: N, max expected fd use: N"),
    ("process up", "", "LOG process up: ", r"TS \[PID\] LOG process up: .+"),
]


def test_log_line_shapes(pairs, pg):
    p = pairs(settings={"auth_type": "md5", "pool_mode": "transaction", "stats_period": 1, "log_stats": 1,
                        "query_timeout": 1})

    def activity(x):
        login(x.port, pg.md5_user, pg.db, pg.md5_password)      # in and out
        login(x.port, pg.md5_user, pg.db, "wrong")              # refused
        login(x.port, pg.user, "nosuchdb", "weir-test-pw")      # unknown database
        a = login(x.port, pg.user, pg.db, "weir-test-pw", keep=True)
        query(a.wire, "BEGIN")
        a.wire.close()                                          # gone mid-transaction
        b = login(x.port, pg.user, pg.db, "weir-test-pw", keep=True)
        query(b.wire, "SELECT pg_sleep(3)")                     # query timeout
        b.wire.close()
        u = socket.socket(socket.AF_UNIX)                       # over the Unix socket
        u.connect(os.path.join(x.dir, ".s.PGSQL.%d" % x.port))
        u.sendall(startup_packet(pg.user, "nosuchdb"))
        u.recv(100)
        u.close()
    both(p, activity)
    wait_for(lambda: all(x.log_text().count("stats:") >= 2 for x in p.poolers.values()), 5,
             what="two stats lines from each")
    for k, x in p.items():
        lines = x.log_text().splitlines()
        for kind, prefix, words, shape in LOG_KINDS:
            found = [log_shape(line) for line in lines if words in line and prefix in line]
            assert found, "%s: no %r line in:\n%s" % (k, kind, "\n".join(lines))
            bad = [line for line in found if not re.fullmatch(shape, line)]
            assert not bad, "%s: %r lines of another shape: %s" % (k, kind, bad)
    for k, x in p.items():
        text = x.log_text()
        # PgBouncer's order: "closing because" then "pooler error", the same reason
        for reason in ("password authentication failed", "no such database: nosuchdb", "query timeout"):
            i = text.find("closing because: %s (age=" % reason)
            j = text.find("pooler error: %s" % reason)
            assert 0 <= i < j, (k, reason)
        assert "login failed: db=nosuchdb user=%s" % pg.user in text, k
        # a Unix socket peer is "unix(its pid)" in the prefix; gone during the login, it is not logged
        assert re.search(r"C-0x[0-9a-f]+: \(nodb\)/%s@unix\(%d\):%d login attempt: " % (pg.user, os.getpid(), x.port),
                         text), (k, text)
        assert not re.search(r"@unix\(%d\):%d closing because" % (os.getpid(), x.port), text), k
        # the server cut by query_timeout says why, with the server's address
        assert re.search(r"S-0x[0-9a-f]+: %s/%s@127\.0\.0\.1:%d closing because: query timeout \(age=\d+s\)"
                         % (pg.db, pg.user, pg.port), text), (k, text)
    for kind, *_ in LOG_KINDS:
        TABLE.append(("log: " + kind, "same" if kind != "process up" else "intended",
                      "" if kind != "process up" else "names weir and what it runs on (libpq, workers)"))


def test_tls_login_log_line(pairs, pg):
    """A client over TLS: the login attempt line names protocol and cipher alike."""
    import psycopg
    import shutil
    from test_tls import CA
    root = tempfile.mkdtemp(prefix="weir-pgbdiff-tls-")  # not tmp_path: PgBouncer runs as postgres
    os.chmod(root, 0o755)
    try:
        ca = CA(root, "diff-ca")
        crt, key = ca.leaf("server", "localhost", key_mode=0o644)
        p = pairs(settings={"auth_type": "trust", "client_tls_sslmode": "require", "client_tls_cert_file": crt,
                            "client_tls_key_file": key})

        def tls_login(x):
            with psycopg.connect(host="127.0.0.1", port=x.port, dbname=pg.db, user=pg.user, sslmode="require",
                                 connect_timeout=10) as c:
                return c.pgconn.ssl_in_use and c.execute("SELECT 1").fetchone() == (1,)
        assert both(p, tls_login) == {"weir": True, "pgbouncer": True}
        tls = {k: re.findall(r"login attempt: db=\S+ user=\S+ (tls=\S+)", x.log_text()) for k, x in p.items()}
        assert tls["weir"] and tls["weir"][0].startswith("tls=TLSv1."), tls
        same("log: login attempt over TLS (tls=protocol/cipher)", tls)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_tls_required_plain_client(pairs, pg):
    """client_tls_sslmode = require and a client that does not ask for TLS."""
    from test_tls import CA
    root = tempfile.mkdtemp(prefix="weir-pgbdiff-tls-")
    os.chmod(root, 0o755)
    try:
        ca = CA(root, "diff-ca")
        crt, key = ca.leaf("server", "localhost", key_mode=0o644)
        p = pairs(settings={"auth_type": "trust", "client_tls_sslmode": "require", "client_tls_cert_file": crt,
                            "client_tls_key_file": key})
        res = p.each(lambda x: login(x.port, pg.user, pg.db))
        same("client_tls_sslmode = require: a plain client", res)
        assert res["weir"].key() == fatal("SSL required"), res
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)


def test_server_tls_required_but_not_offered(pairs, pg):
    """server_tls_sslmode = require against a PostgreSQL without TLS: the client's login fails."""
    p = pairs(settings={"auth_type": "trust", "server_tls_sslmode": "require", "query_wait_timeout": 2})
    res = both(p, lambda x: login(x.port, pg.user, pg.db))
    w = res["weir"].key()
    assert w[3].startswith("server login failed: ") and "server does not support SSL" in w[3], w
    intended("server_tls_sslmode = require, server without TLS", res, fatal("query_wait_timeout"),
             fatal(w[3]), "a lasting misconfiguration: weir fails the login at once with libpq's reason; "
             "PgBouncer retries and lets it wait out query_wait_timeout")


def test_session_reset_and_application_name_add_host(pairs, pg):
    """Session mode: the next client of a server finds it reset (server_reset_query);
    application_name_add_host appends the client's address."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "session", "default_pool_size": 1,
                        "application_name_add_host": 1})

    def run(x):
        a = login(x.port, pg.user, pg.db, keep=True, params={"application_name": "first"})
        query(a.wire, "SET search_path = pg_catalog")
        query(a.wire, "PREPARE p AS SELECT 1")
        a.wire.close()
        time.sleep(0.3)
        b = login(x.port, pg.user, pg.db, keep=True, params={"application_name": "second"})
        out = [query(b.wire, "SHOW search_path").rows, query(b.wire, "EXECUTE p").key()[1:4],
               [re.sub(r"\d+", "N", v[0]) for v in query(b.wire, "SELECT current_setting('application_name')").rows]]
        b.wire.close()
        return out
    res = both(p, run)
    same("session mode: server reset for the next client; application_name_add_host", res)
    assert res["weir"][0] == [['"$user", public']], res
    assert res["weir"][1] == ("ERROR", "26000", 'prepared statement "p" does not exist'), res
    assert res["weir"][2] == ["second - N.N.N.N:N"], res


def test_bad_packets(pairs, pg):
    """Packets over max_packet_size, and a length below four, from a logged-in client."""
    import struct
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "max_packet_size": 2000})

    def run(x):
        out = []
        for data in (query_message("SELECT '%s'" % ("x" * 3000)), b"Q\0\0\0\x02"):
            a = login(x.port, pg.user, pg.db, keep=True)
            a.wire.send(data)
            out.append(result(a.wire).key())
            a.wire.close()
        # and the pooler still serves everyone else
        b = login(x.port, pg.user, pg.db, keep=True)
        out.append(query(b.wire, "SELECT 1").rows)
        b.wire.close()
        return out
    res = both(p, run)
    same("max_packet_size exceeded; a length below four", res)
    assert res["weir"][0] == fatal_after_login("bad packet header: '5100000bc653454c'"), res


def test_gssenc_request(pairs, pg):
    """A GSSENCRequest (libpq with Kerberos credentials sends one first) is declined with 'N'."""
    import struct
    p = pairs(settings={"auth_type": "trust"})

    def run(x):
        s = socket.create_connection(("127.0.0.1", x.port), timeout=5)
        try:
            s.sendall(struct.pack("!II", 8, 80877104))
            answer = s.recv(1)
            if answer != b"N":
                return answer
            s.sendall(startup_packet(pg.user, pg.db))
            return answer + s.recv(1)  # then the login goes on: 'R'
        finally:
            s.close()
    res = both(p, run)
    same("GSSENCRequest declined, login goes on", res)
    assert res["weir"] == b"NR", res


def test_console_set_default_pool_size(pairs, pg):
    """SET default_pool_size on the console: the pool grows at once, SHOW DATABASES says so."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "transaction", "default_pool_size": 1,
                        "query_wait_timeout": 3})

    def run(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "BEGIN")  # the one server
        answer = admin(x.port, pg.user, "SET default_pool_size = 2")[2].key()
        b = login(x.port, pg.user, pg.db, keep=True)
        t0 = time.monotonic()
        served = query(b.wire, "SELECT 1").key()
        quick = time.monotonic() - t0 < 1.5
        query(a.wire, "COMMIT")
        a.wire.close()
        b.wire.close()
        cols, rows, _ = admin(x.port, pg.user, "SHOW DATABASES")
        return answer, served, quick, [r[cols.index("pool_size")] for r in rows if r[0] == pg.db]
    res = both(p, run)
    same("console SET default_pool_size = 2 with the pool full", res)
    assert res["weir"] == (OK, OK, True, ["2"]), res


def test_log_switches(pairs, pg):
    """log_connections, log_disconnections and log_pooler_errors off: those lines go."""
    p = pairs(settings={"auth_type": "trust", "log_connections": 0, "log_disconnections": 0,
                        "log_pooler_errors": 0})

    def run(x):
        login(x.port, pg.user, pg.db)
        login(x.port, pg.user, "nosuchdb")
        time.sleep(0.3)
        text = x.log_text()
        return [w in text for w in ("login attempt", "closing because", "pooler error", "new connection to server")]
    res = both(p, run)
    same("log_connections/log_disconnections/log_pooler_errors = 0", res)
    assert res["weir"][:3] == [False, False, False], res


def test_client_without_application_name(pairs, pg):
    """SHOW CLIENTS for a client that named no application: PgBouncer shows '', weir
    the 'weir' its server connections carry as fallback_application_name (README)."""
    p = pairs(settings={"auth_type": "trust", "pool_mode": "session"})

    def run(x):
        a = login(x.port, pg.user, pg.db, keep=True)
        query(a.wire, "SELECT 1")
        cols, rows, _ = admin(x.port, pg.user, "SHOW CLIENTS")
        a.wire.close()
        return [r[cols.index("application_name")] for r in rows if r[cols.index("database")] == pg.db]
    intended("SHOW CLIENTS application_name of a client that set none", both(p, run), [""], ["weir"],
             "fallback_application_name=weir on server connections names the session for pg_stat_activity; "
             "the client's session (and so SHOW CLIENTS) reads it as PostgreSQL reports it")
