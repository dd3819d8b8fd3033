"""The admin console's SHOW commands: PgBouncer 1.18's exact columns (names,
order and types, captured from PgBouncer 1.18.0), statistics that move with
real traffic, clients and servers listed with their links, who may use the
console, and its errors."""
import re
import time

import psycopg
import pytest

from conftest import wait_for
from console import Background, Console, find, pool_row, stats_row

TEXT, INT4, INT8, NUMERIC = 25, 23, 20, 1700

SOCKET_COLUMNS = [
    ("type", TEXT), ("user", TEXT), ("database", TEXT), ("state", TEXT), ("addr", TEXT), ("port", INT4),
    ("local_addr", TEXT), ("local_port", INT4), ("connect_time", TEXT), ("request_time", TEXT),
    ("wait", INT4), ("wait_us", INT4), ("close_needed", INT4), ("ptr", TEXT), ("link", TEXT),
    ("remote_pid", INT4), ("tls", TEXT), ("application_name", TEXT)]
SOCKET_EXTRA = [("recv_pos", INT4), ("pkt_pos", INT4), ("pkt_remain", INT4), ("send_pos", INT4),
                ("send_remain", INT4), ("pkt_avail", INT4), ("send_avail", INT4)]
STATS_ONE = [("database", TEXT), ("xact_count", NUMERIC), ("query_count", NUMERIC),
             ("bytes_received", NUMERIC), ("bytes_sent", NUMERIC), ("xact_time", NUMERIC),
             ("query_time", NUMERIC), ("wait_time", NUMERIC)]

# What PgBouncer 1.18.0 answers, column by column.
PGBOUNCER_1_18_COLUMNS = {
    "POOLS": [("database", TEXT), ("user", TEXT), ("cl_active", INT4), ("cl_waiting", INT4),
              ("cl_active_cancel_req", INT4), ("cl_waiting_cancel_req", INT4), ("sv_active", INT4),
              ("sv_active_cancel", INT4), ("sv_being_canceled", INT4), ("sv_idle", INT4), ("sv_used", INT4),
              ("sv_tested", INT4), ("sv_login", INT4), ("maxwait", INT4), ("maxwait_us", INT4),
              ("pool_mode", TEXT)],
    "STATS": [("database", TEXT), ("total_xact_count", NUMERIC), ("total_query_count", NUMERIC),
              ("total_received", NUMERIC), ("total_sent", NUMERIC), ("total_xact_time", NUMERIC),
              ("total_query_time", NUMERIC), ("total_wait_time", NUMERIC), ("avg_xact_count", NUMERIC),
              ("avg_query_count", NUMERIC), ("avg_recv", NUMERIC), ("avg_sent", NUMERIC),
              ("avg_xact_time", NUMERIC), ("avg_query_time", NUMERIC), ("avg_wait_time", NUMERIC)],
    "STATS_TOTALS": STATS_ONE,
    "STATS_AVERAGES": STATS_ONE,
    "TOTALS": [("name", TEXT), ("value", NUMERIC)],
    # plus PgBouncer 1.21's trailing prepared_statements column (weir tracks them in transaction mode)
    "CLIENTS": SOCKET_COLUMNS + [("prepared_statements", INT4)],
    # plus weir's host role, replay lag and health state (multi-host entries; test_ha.py)
    "SERVERS": SOCKET_COLUMNS + [("prepared_statements", INT4), ("role", TEXT), ("lag_ms", INT4),
                                 ("host_state", TEXT)],
    "SOCKETS": SOCKET_COLUMNS + SOCKET_EXTRA,
    "ACTIVE_SOCKETS": SOCKET_COLUMNS + SOCKET_EXTRA,
    "DATABASES": [("name", TEXT), ("host", TEXT), ("port", INT4), ("database", TEXT), ("force_user", TEXT),
                  ("pool_size", INT4), ("min_pool_size", INT4), ("reserve_pool", INT4), ("pool_mode", TEXT),
                  ("max_connections", INT4), ("current_connections", INT4), ("paused", INT4),
                  ("disabled", INT4),
                  # weir's own, appended: what a multi-host entry asks for and its hosts' health
                  ("target_session_attrs", TEXT), ("load_balance_hosts", TEXT), ("hosts", TEXT)],
    "USERS": [("name", TEXT), ("pool_mode", TEXT)],
    "CONFIG": [("key", TEXT), ("value", TEXT), ("default", TEXT), ("changeable", TEXT)],
    "LISTS": [("list", TEXT), ("items", INT4)],
    "MEM": [("name", TEXT), ("size", INT4), ("used", INT4), ("free", INT4), ("memtotal", INT4)],
    "VERSION": [("version", TEXT)],
    "DNS_HOSTS": [("hostname", TEXT), ("ttl", INT8), ("addrs", TEXT)],
    "DNS_ZONES": [("zonename", TEXT), ("serial", INT8), ("count", INT4)],
    # PgBouncer 1.19's SHOW STATE (1.18 has none); weir answers it the same way.
    "STATE": [("key", TEXT), ("value", TEXT)],
}

PGBOUNCER_1_18_TOTALS = ["total_xact_count", "total_query_count", "total_client_bytes", "total_server_bytes",
                         "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count",
                         "avg_query_count", "avg_client_bytes", "avg_server_bytes", "avg_xact_time",
                         "avg_query_time", "avg_wait_time"]
PGBOUNCER_1_18_LISTS = ["databases", "users", "pools", "free_clients", "used_clients", "login_clients",
                        "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries", "dns_pending"]


@pytest.fixture
def console(weir):
    return Console(weir)


@pytest.mark.parametrize("what", sorted(PGBOUNCER_1_18_COLUMNS))
def test_show_columns_are_pgbouncers(weir, console, what):
    weir.connect().execute("SELECT 1")  # a pool, a server and a client to list
    assert console.columns(what) == PGBOUNCER_1_18_COLUMNS[what]


def test_show_is_case_insensitive_and_takes_a_semicolon(console):
    assert console.execute("  show Pools ;  ").fetchall()
    assert console.execute("SHOW version;").fetchone()[0].startswith("PgBouncer 1.18")


def test_totals_and_lists_rows_are_pgbouncers(console):
    assert [r["name"] for r in console.show("TOTALS")] == PGBOUNCER_1_18_TOTALS
    assert [r["list"] for r in console.show("LISTS")] == PGBOUNCER_1_18_LISTS


def test_stats_count_queries_transactions_bytes_and_times(weir, console, pg):
    before = stats_row(console, pg.db)
    c = weir.connect()
    for _ in range(5):
        c.execute("SELECT pg_sleep(0.01)")
    with c.transaction():  # one transaction of two queries
        c.execute("SELECT 1")
        c.execute("SELECT 2")
    after = stats_row(console, pg.db)
    assert after["total_query_count"] - before["total_query_count"] >= 7
    assert after["total_xact_count"] - before["total_xact_count"] >= 6
    assert after["total_received"] > before["total_received"]
    assert after["total_sent"] > before["total_sent"]
    # five queries of at least 10 ms each: the times are in microseconds
    assert after["total_query_time"] - before["total_query_time"] >= 50000
    assert after["total_xact_time"] - before["total_xact_time"] >= 50000
    totals = {r["name"]: r["value"] for r in console.show("TOTALS")}
    assert totals["total_query_count"] >= after["total_query_count"]
    assert totals["total_client_bytes"] >= after["total_received"]
    row = stats_row(console, pg.db, "STATS_TOTALS")
    assert row["query_count"] >= after["total_query_count"]


def test_stats_wait_time_counts_a_client_that_waited(weir_factory, pg):
    w = weir_factory(settings={"default_pool_size": 1})
    console = Console(w)
    holder = w.connect(autocommit=False)
    holder.execute("SELECT 1")  # holds the only server
    waiter = w.connect()
    job = Background(lambda: waiter.execute("SELECT 1").fetchone())
    time.sleep(0.3)
    holder.commit()
    assert job.wait(10) and job.error is None
    assert stats_row(console, pg.db)["total_wait_time"] >= 200000


def test_stats_averages_and_log_stats_every_period(weir_factory, pg):
    w = weir_factory(settings={"stats_period": 1, "log_stats": 1})
    console = Console(w)
    c = w.connect()

    def averages_moved():
        c.execute("SELECT 1")
        row = stats_row(console, pg.db, "STATS_AVERAGES")
        return row and row["query_count"] > 0 and row["bytes_received"] > 0 and row["query_time"] > 0

    wait_for(averages_moved, 10, interval=0.05, what="averages over the last stats_period")
    stats = stats_row(console, pg.db)
    assert stats["avg_query_count"] > 0 and stats["avg_recv"] > 0
    line = re.compile(r"LOG stats: \d+ xacts/s, \d+ queries/s, in \d+ B/s, out \d+ B/s, "
                      r"xact \d+ us, query \d+ us, wait \d+ us")
    wait_for(lambda: line.search(w.log_text()), 5, what="a stats: line in the log")
    assert re.search(r"LOG stats: \d+ xacts/s, [1-9]\d* queries/s", w.log_text())


def test_show_clients_lists_a_connected_client(weir, console, pg):
    c = weir.connect(application_name="probe-app")
    c.execute("SELECT 1")
    rows = find(console.show("CLIENTS"), database=pg.db, user=pg.user, application_name="probe-app")
    assert len(rows) == 1
    row = rows[0]
    assert row["type"] == "C" and row["state"] == "active"
    assert row["addr"] == "127.0.0.1" and row["local_port"] == weir.port
    assert re.match(r"^0x[0-9a-f]+$", row["ptr"])
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", row["connect_time"])
    assert row["link"] == ""  # transaction mode: no server between transactions
    # the console's own connection is listed too
    assert find(console.show("CLIENTS"), database="pgbouncer", user=pg.user)


def test_show_servers_links_client_and_server(weir, console, pg):
    c = weir.connect(autocommit=False)
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]  # a transaction is open
    client = find(console.show("CLIENTS"), database=pg.db)[0]
    servers = find(console.show("SERVERS"), database=pg.db, remote_pid=pid)
    assert len(servers) == 1
    s = servers[0]
    assert s["type"] == "S" and s["state"] == "active" and s["user"] == pg.user
    assert s["link"] == client["ptr"] and client["link"] == s["ptr"]
    assert s["port"] == pg.port and s["close_needed"] == 0
    pool = pool_row(console, pg.db, pg.user)
    assert pool["sv_active"] == 1 and pool["cl_active"] == 1
    c.commit()
    assert find(console.show("SERVERS"), remote_pid=pid)[0]["state"] == "idle"
    assert pool_row(console, pg.db, pg.user)["sv_idle"] >= 1


def test_show_databases_and_config(weir_factory, pg):
    w = weir_factory(settings={"default_pool_size": 4},
                     databases={pg.db: pg.entry(), "other": pg.entry() + " pool_size=2 pool_mode=session"})
    console = Console(w)
    dbs = {r["name"]: r for r in console.show("DATABASES")}
    assert dbs[pg.db]["pool_size"] == 4 and dbs[pg.db]["port"] == pg.port and dbs[pg.db]["pool_mode"] is None
    assert dbs["other"]["pool_size"] == 2 and dbs["other"]["pool_mode"] == "session"
    assert dbs["other"]["database"] == pg.db
    assert "pgbouncer" in dbs
    config = {r["key"]: r for r in console.show("CONFIG")}
    assert config["default_pool_size"]["value"] == "4" and config["default_pool_size"]["default"] == "20"
    assert config["default_pool_size"]["changeable"] == "yes"
    assert config["listen_port"]["value"] == str(w.port) and config["listen_port"]["changeable"] == "no"


def test_show_lists_and_mem_count_objects(weir, console):
    c = weir.connect()
    c.execute("SELECT 1")
    lists = {r["list"]: r["items"] for r in console.show("LISTS")}
    assert lists["used_clients"] >= 2 and lists["pools"] >= 2 and lists["used_servers"] >= 1
    mem = {r["name"]: r for r in console.show("MEM")}
    assert mem["client_cache"]["used"] >= 2
    assert mem["client_cache"]["memtotal"] == mem["client_cache"]["size"] * mem["client_cache"]["used"]


def test_show_help_is_a_notice(console):
    cur = console.execute("SHOW HELP")
    assert cur.statusmessage == "SHOW"
    assert console.notices and console.notices[-1][:2] == ("NOTICE", "Console usage")
    assert "SHOW HELP|CONFIG|DATABASES" in console.notices[-1][2]


def test_stats_user_may_show_but_not_control(weir_factory, pg):
    w = weir_factory(settings={"stats_users": pg.md5_user})
    console = Console(w, user=pg.md5_user)
    assert pool_row(console, "pgbouncer", "pgbouncer") is not None
    assert console.show("STATS")
    for cmd in ("PAUSE", "RESUME", "RELOAD", "KILL %s" % pg.db, "SET default_pool_size = 3", "SHUTDOWN"):
        with pytest.raises(psycopg.Error, match="admin access needed"):
            console.execute(cmd)
    assert w.alive()
    assert console.show("VERSION")  # still usable after the errors


def test_other_users_cannot_log_in_to_the_console(weir, pg):
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        Console(weir, user=pg.scram_user)
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        Console(weir, user=pg.md5_user, dbname="weir")


def test_console_answers_as_weir_and_on_the_unix_socket(weir, pg):
    assert Console(weir, dbname="weir").show("VERSION")
    assert Console(weir, host=weir.dir).show("VERSION")


@pytest.mark.parametrize("sql,message", [
    ("SHOW FOO", "invalid command 'SHOW FOO', use SHOW HELP;"),
    ("SELECT 1", "invalid command 'SELECT 1', use SHOW HELP;"),
    ("SHOW", "invalid command 'SHOW', use SHOW HELP;"),
    ("SHOW POOLS; SHOW LISTS", "use SHOW HELP"),
    ("RELOAD now", "invalid command 'RELOAD now'"),
    ("PAUSE a b", "invalid command"),
    ("PAUSE nosuchdb", "no such database: nosuchdb"),
    ("RESUME", "pooler is not paused/suspended"),
    ("DISABLE", "a database is required"),
    ("KILL", "a database is required"),
    ("KILL_CLIENT zzz", "invalid client pointer supplied"),
    ("KILL_CLIENT 0x7fffffff", "client not found"),
])
def test_bad_commands_get_an_error_and_the_console_goes_on(console, sql, message):
    with pytest.raises(psycopg.Error) as ei:
        console.execute(sql)
    assert message in str(ei.value)
    assert ei.value.sqlstate == "08P01"
    assert console.show("VERSION")


def test_extended_protocol_is_refused_politely(console):
    with pytest.raises(psycopg.Error, match="extended query protocol not supported by admin console"):
        console.conn.execute("SHOW POOLS", binary=True)  # binary results need the extended protocol
    assert console.show("VERSION")


def test_empty_query(console):
    cur = console.execute("")
    assert cur.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY


def test_show_users_lists_auth_file_users(weir, console, pg):
    """SHOW USERS knows the auth_file's users before any of them logged in, as PgBouncer does."""
    names = {row["name"] for row in console.show("USERS")}
    assert pg.scram_user in names and pg.md5_user in names
