"""The admin console's control commands as PgBouncer documents them: PAUSE
makes queries wait and RESUME lets them go, KILL drops a database's clients,
DISABLE refuses logins, RELOAD and SET change settings, RECONNECT and
WAIT_CLOSE renew servers, KILL_CLIENT and SHUTDOWN; SIGUSR1/SIGUSR2 too."""
import signal
import time

import psycopg
import pytest

from conftest import wait_for
from console import Background, Console, find, pool_row


def query_in_background(conn, sql="SELECT 1"):
    return Background(lambda: conn.execute(sql).fetchone())


def test_pause_makes_queries_wait_and_resume_releases_them(weir, pg):
    console = Console(weir)
    c = weir.connect()
    c.execute("SELECT 1")
    assert console.execute("PAUSE").statusmessage == "PAUSE"
    assert find(console.show("STATE"), key="paused")[0]["value"] == "yes"
    job = query_in_background(c)
    wait_for(lambda: pool_row(console, pg.db, pg.user)["cl_waiting"] == 1, 5, what="the query to wait")
    assert not job.done
    assert pool_row(console, pg.db, pg.user)["sv_idle"] == 0  # PAUSE closed the idle server
    with pytest.raises(psycopg.Error, match="already suspended/paused"):
        console.execute("PAUSE")
    assert console.execute("RESUME").statusmessage == "RESUME"
    assert job.wait(10) and job.error is None and job.result == (1,)
    assert find(console.show("STATE"), key="active")[0]["value"] == "yes"


def test_pause_answers_once_transactions_are_done(weir, pg):
    console = Console(weir)
    t = weir.connect(autocommit=False)
    t.execute("SELECT 1")  # holds a server in an open transaction
    pause = Background(lambda: console.execute("PAUSE %s" % pg.db).statusmessage)
    time.sleep(0.5)
    assert not pause.done, "PAUSE must wait for the transaction"
    t.commit()
    assert pause.wait(10) and pause.result == "PAUSE"
    other = Console(weir)
    dbs = {r["name"]: r for r in other.show("DATABASES")}
    assert dbs[pg.db]["paused"] == 1
    job = query_in_background(t)
    time.sleep(0.3)
    assert not job.done
    other.execute("RESUME %s" % pg.db)
    assert job.wait(10) and job.error is None
    t.commit()


def test_pause_holds_pools_made_after_it(weir_factory, pg):
    w = weir_factory(databases={pg.db: pg.entry(), "later": pg.entry()})
    console = Console(w)
    console.execute("PAUSE")
    # Its pool is created now, paused: the login waits for a first server.
    job = Background(lambda: w.connect(dbname="later").execute("SELECT 1").fetchone())
    time.sleep(0.5)
    assert not job.done
    console.execute("RESUME")
    assert job.wait(10) and job.error is None and job.result == (1,)


def test_kill_drops_the_databases_clients(weir_factory, pg):
    w = weir_factory(databases={pg.db: pg.entry(), "other": pg.entry()})
    console = Console(w)
    a, b = w.connect(), w.connect()
    a.execute("SELECT 1")
    b.execute("SELECT 1")
    keep = w.connect(dbname="other")
    assert console.execute("KILL %s" % pg.db).statusmessage == "KILL"
    for conn in (a, b):
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert keep.execute("SELECT 1").fetchone() == (1,)
    assert "database removed" in w.log_text()
    # a killed database waits for RESUME
    c = w.connect()
    job = query_in_background(c)
    time.sleep(0.3)
    assert not job.done
    assert {r["name"]: r for r in console.show("DATABASES")}[pg.db]["paused"] == 1
    console.execute("RESUME %s" % pg.db)
    assert job.wait(10) and job.error is None


def test_disable_refuses_new_logins_and_enable_admits_them(weir, pg):
    console = Console(weir)
    existing = weir.connect()
    assert console.execute("DISABLE %s" % pg.db).statusmessage == "DISABLE"
    with pytest.raises(psycopg.OperationalError, match='database "%s" is disabled' % pg.db):
        weir.connect()
    assert existing.execute("SELECT 1").fetchone() == (1,)
    assert {r["name"]: r for r in console.show("DATABASES")}[pg.db]["disabled"] == 1
    assert console.execute("ENABLE %s" % pg.db).statusmessage == "ENABLE"
    assert weir.connect().execute("SELECT 1").fetchone() == (1,)


def test_reload_picks_up_a_config_change(weir, pg):
    console = Console(weir)
    weir.settings["default_pool_size"] = 9
    weir.write()
    assert console.execute("RELOAD").statusmessage == "RELOAD"
    config = {r["key"]: r["value"] for r in console.show("CONFIG")}
    assert config["default_pool_size"] == "9"
    assert {r["name"]: r for r in console.show("DATABASES")}[pg.db]["pool_size"] == 9


def test_reload_of_a_broken_config_is_an_error_and_keeps_the_old_one(weir, pg):
    console = Console(weir)
    with open(weir.ini, "a") as f:
        f.write("pool_mode = sometimes\n")
    with pytest.raises(psycopg.Error, match="RELOAD failed"):
        console.execute("RELOAD")
    config = {r["key"]: r["value"] for r in console.show("CONFIG")}
    assert config["pool_mode"] == "transaction"
    assert weir.connect().execute("SELECT 1").fetchone() == (1,)


def test_set_changes_a_reloadable_setting(weir, pg):
    console = Console(weir)
    assert console.execute("SET default_pool_size = 7").statusmessage == "SET default_pool_size=7"
    assert console.execute("set query_wait_timeout to '30'").statusmessage == "SET query_wait_timeout=30"
    config = {r["key"]: r["value"] for r in console.show("CONFIG")}
    assert config["default_pool_size"] == "7" and config["query_wait_timeout"] == "30"
    assert {r["name"]: r for r in console.show("DATABASES")}[pg.db]["pool_size"] == 7
    assert weir.connect().execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("sql,message", [
    ("SET listen_port = 7000", "restart"),
    ("SET unix_socket_dir = '/tmp'", "restart"),
    ("SET no_such_setting = 1", 'unknown setting "no_such_setting"'),
    ("SET default_pool_size = many", "invalid value"),
    ("SET default_pool_size", "invalid command"),
])
def test_set_refuses_what_it_cannot_change(weir, sql, message):
    console = Console(weir)
    with pytest.raises(psycopg.Error, match=message):
        console.execute(sql)
    config = {r["key"]: r["value"] for r in console.show("CONFIG")}
    assert config["listen_port"] == str(weir.port) and config["default_pool_size"] == "5"


def test_kill_client_closes_one_client(weir, pg):
    console = Console(weir)
    victim = weir.connect(application_name="victim")
    other = weir.connect(application_name="other")
    victim.execute("SELECT 1")
    ptr = find(console.show("CLIENTS"), application_name="victim")[0]["ptr"]
    assert console.execute("KILL_CLIENT %s" % ptr).statusmessage == "KILL_CLIENT"
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    assert other.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.Error, match="client not found"):
        console.execute("KILL_CLIENT %s" % ptr)


def test_reconnect_then_wait_close_renews_servers(weir, pg):
    console = Console(weir)
    t = weir.connect(autocommit=False)
    old_pid = t.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert console.execute("RECONNECT %s" % pg.db).statusmessage == "RECONNECT"
    assert find(console.show("SERVERS"), remote_pid=old_pid)[0]["close_needed"] == 1
    wait = Background(lambda: Console(weir).execute("WAIT_CLOSE %s" % pg.db).statusmessage)
    time.sleep(0.4)
    assert not wait.done, "WAIT_CLOSE must wait for the server in use"
    t.commit()
    assert wait.wait(10) and wait.result == "WAIT_CLOSE", wait.error
    assert not find(console.show("SERVERS"), remote_pid=old_pid)
    new_pid = t.execute("SELECT pg_backend_pid()").fetchone()[0]
    t.commit()
    assert new_pid != old_pid


def test_shutdown_stops_weir(weir):
    console = Console(weir)
    weir.expected_exit = True
    try:
        console.execute("SHUTDOWN")
    except psycopg.OperationalError:
        pass  # PgBouncer 1.18 exits without answering
    assert weir.wait_exit(10) == 0


def test_sigusr1_pauses_and_sigusr2_resumes(weir, pg):
    console = Console(weir)
    c = weir.connect()
    weir.signal(signal.SIGUSR1)
    wait_for(lambda: find(console.show("STATE"), key="paused")[0]["value"] == "yes", 5, what="SIGUSR1")
    job = query_in_background(c)
    time.sleep(0.3)
    assert not job.done
    weir.signal(signal.SIGUSR2)
    assert job.wait(10) and job.error is None
    assert find(console.show("STATE"), key="paused")[0]["value"] == "no"
