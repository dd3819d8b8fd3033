"""Isolation between clients that share servers: nothing of one client's
session reaches the next one (prepared statements at SQL and protocol
level, temp tables, SET values, advisory locks, LISTEN, an open
transaction), per PgBouncer's semantics:

- session mode: server_reset_query (DISCARD ALL) runs when a client leaves;
- transaction mode: no reset between transactions unless
  server_reset_query_always = 1, but the tracked parameters (TimeZone,
  DateStyle, application_name...) follow each client, and protocol-level
  prepared statements are weir's own per client;
- a server used in transaction mode is never handed to a session-mode
  client with another client's leftovers (pool_mode changed by a reload);
- a client that disconnects inside a transaction leaves no trace: the next
  client gets an idle server with locks released and the work rolled back.

Pools of size 1, so the second client provably gets the first one's backend
(checked through pg_backend_pid())."""
import struct
import time

import psycopg
import pytest

import pgwire

PID = "SELECT pg_backend_pid()"


def dirty_session(c, tag):
    """Leave every kind of session state behind on c's backend."""
    c.execute("SET work_mem = '7777kB'")
    c.execute("SET TimeZone = 'Asia/Tokyo'")
    c.execute("PREPARE sql_stmt_%s AS SELECT 1" % tag)
    c.execute("CREATE TEMP TABLE tmp_%s (i int)" % tag)
    c.execute("SELECT pg_advisory_lock(4242)")
    c.execute("LISTEN chan_%s" % tag)


def leftovers(c, tag):
    """What of dirty_session(tag) c can see; {} when the session is clean."""
    found = {}
    if c.execute("SHOW work_mem").fetchone()[0] == "7777kB":
        found["work_mem"] = True
    if c.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = %s",
                 ["sql_stmt_%s" % tag]).fetchone()[0]:
        found["prepared"] = True
    if c.execute("SELECT to_regclass(%s)", ["pg_temp.tmp_%s" % tag]).fetchone()[0] is not None:
        found["temp_table"] = True
    if c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                 ).fetchone()[0]:
        found["advisory_lock"] = True
    if c.execute("SELECT count(*) FROM pg_listening_channels()").fetchone()[0]:
        found["listen"] = True
    return found


def test_session_mode_resets_between_clients(weir_factory):
    w = weir_factory(pool_mode="session", settings={"default_pool_size": 1})
    a = w.connect()
    pid = a.execute(PID).fetchone()[0]
    tz = a.execute("SHOW TimeZone").fetchone()[0]
    dirty_session(a, "s")
    a.close()
    with w.connect() as b:
        assert b.execute(PID).fetchone()[0] == pid  # the same backend...
        assert leftovers(b, "s") == {}              # ...reset by DISCARD ALL
        assert b.execute("SHOW TimeZone").fetchone()[0] == tz


def test_reset_query_always_in_transaction_mode(weir_factory):
    w = weir_factory(pool_mode="transaction",
                     settings={"default_pool_size": 1, "server_reset_query_always": 1})
    a = w.connect()
    pid = a.execute(PID).fetchone()[0]
    dirty_session(a, "t")
    # Each statement above was its own transaction, and each was followed by
    # DISCARD ALL: nothing is left even for a itself.
    assert leftovers(a, "t") == {}
    with w.connect() as b:
        assert b.execute(PID).fetchone()[0] == pid
        assert leftovers(b, "t") == {}


def test_transaction_mode_parameters_follow_each_client(weir_factory):
    """Without a reset, the parameters PgBouncer tracks are still each
    client's own (weir re-applies them when a server changes hands)."""
    w = weir_factory(pool_mode="transaction", settings={"default_pool_size": 1})
    a, b = w.connect(), w.connect()
    tz_b = b.execute("SHOW TimeZone").fetchone()[0]
    assert a.execute(PID).fetchone() == b.execute(PID).fetchone()
    a.execute("SET TimeZone = 'Asia/Tokyo'")
    a.execute("SET application_name = 'client-a'")
    assert b.execute("SHOW TimeZone").fetchone()[0] == tz_b
    assert b.execute("SHOW application_name").fetchone()[0] != "client-a"
    assert a.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
    assert a.execute("SHOW application_name").fetchone()[0] == "client-a"


def _parse(name, sql):
    return pgwire.message(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")


def _bind_execute_sync(stmt):
    bind = pgwire.message(b"B", b"\0" + stmt.encode() + b"\0" + struct.pack("!HHH", 0, 0, 0))
    return bind + pgwire.message(b"E", b"\0" + struct.pack("!I", 0)) + pgwire.message(b"S")


def _until_ready(w):
    msgs = []
    while True:
        t, b = w.read_message()
        msgs.append((t, b))
        if t == b"Z":
            return msgs


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_protocol_prepared_statements_are_private(weir_factory, mode):
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 1})
    a = pgwire.Wire("127.0.0.1", w.port)
    a.login_trust(w.pg.user, w.pg.db)
    a.send(_parse("mine", "SELECT 'secret of a'") + pgwire.message(b"S"))
    assert _until_ready(a)[0][0] == b"1"  # ParseComplete
    a.send(_bind_execute_sync("mine"))
    assert (b"D", struct.pack("!HI", 1, 11) + b"secret of a") in _until_ready(a)
    if mode == "session":
        a.close()  # the server goes to b only once a has left
    b = pgwire.Wire("127.0.0.1", w.port)
    b.login_trust(w.pg.user, w.pg.db)
    b.send(_bind_execute_sync("mine"))
    msgs = _until_ready(b)
    errors = [pgwire.parse_error_fields(body) for t, body in msgs if t == b"E"]
    assert errors and errors[0]["C"] == "26000", msgs  # prepared statement does not exist
    assert not [m for m in msgs if m[0] == b"D"]
    b.close()
    a.close()
    # psycopg's automatic names (_pg3_0...) clash between clients unless weir keeps them apart
    for who in ("c", "d"):
        with w.connect(prepare_threshold=0) as c:
            assert c.execute("SELECT %s || %s::text", [who, "x"]).fetchone() == (who + "x",)
            assert c.execute("SELECT %s || %s::text", [who, "y"]).fetchone() == (who + "y",)


def test_pool_mode_change_never_hands_out_a_dirty_server(weir_factory):
    """A server used in transaction mode (no reset between clients) must not
    reach a session-mode client with its leftovers after pool_mode changes."""
    w = weir_factory(pool_mode="transaction", settings={"default_pool_size": 1})
    a = w.connect()
    dirty_session(a, "m")
    assert leftovers(a, "m")  # transaction mode keeps them, as PgBouncer does
    a.close()
    w.reload({"pool_mode": "session"})
    with w.connect() as b:
        assert leftovers(b, "m") == {}
        assert b.execute("SHOW TimeZone").fetchone()[0] != "Asia/Tokyo"


def _fresh_and_idle(c):
    """No transaction in progress on c's new server, and now() is this statement's."""
    row = c.execute("SELECT pg_current_xact_id_if_assigned(), now() = statement_timestamp(), "
                    "current_setting('transaction_isolation')").fetchone()
    assert row[0] is None and row[1] is True, row
    assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("how", ["open", "failed", "unsynced"])
def test_client_gone_mid_transaction_leaves_clean_server(weir_factory, pg, mode, how):
    w = weir_factory(pool_mode=mode, settings={"default_pool_size": 1})
    table = "iso_gone_%s_%s_%d" % (mode, how, w.port)
    with pg.connect() as s:
        s.execute("CREATE TABLE %s (i int)" % table)
    try:
        x = pgwire.Wire("127.0.0.1", w.port)
        x.login_trust(w.pg.user, w.pg.db)
        msgs = x.simple_query("BEGIN ISOLATION LEVEL SERIALIZABLE; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; "
                              "INSERT INTO %s VALUES (1); CREATE TEMP TABLE gone_tmp (i int); "
                              "SELECT pg_advisory_xact_lock(99); SET LOCAL work_mem = '6666kB'; "
                              "SELECT pg_backend_pid()" % (table, table))
        assert msgs[-1] == (b"Z", b"T"), msgs
        pid = int([b for t, b in msgs if t == b"D"][-1][6:])
        if how == "failed":
            assert x.simple_query("SELECT 1/0")[-1] == (b"Z", b"E")
        elif how == "unsynced":  # extended protocol, no Sync yet
            x.send(_parse("", "INSERT INTO %s VALUES (2)" % table)
                   + _bind_execute_sync("")[:-5])
            time.sleep(0.2)
        x.close()
        with w.connect() as b:
            _fresh_and_idle(b)
            assert b.execute("SELECT to_regclass('pg_temp.gone_tmp')").fetchone()[0] is None
            assert b.execute("SHOW work_mem").fetchone()[0] != "6666kB"
            assert b.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"
            with b.transaction():  # a's lock is gone
                b.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT" % table)
            assert b.execute("SELECT count(*) FROM %s" % table).fetchone() == (0,)  # rolled back
            assert b.execute("SELECT pg_try_advisory_xact_lock(99)").fetchone() == (True,)
            newpid = b.execute(PID).fetchone()[0]
        # Either the same backend rolled back, or a new one: never the old one mid-transaction.
        with pg.connect() as s:
            st = s.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            assert st is None or st[0] == "idle", st
        assert newpid == pid or st is None
    finally:
        with pg.connect() as s:
            s.execute("DROP TABLE IF EXISTS %s" % table)
