"""SIGHUP reload (new database, pool size, removed database, auth_file),
SIGINT graceful shutdown, SIGTERM immediate exit."""
import signal
import threading
import time

import psycopg
import pytest

from conftest import wait_for


def _can_query(w, **kw):
    try:
        with w.connect(connect_timeout=3, **kw) as c:
            return c.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def test_reload_adds_database_and_keeps_clients(weir_factory, pg):
    w = weir_factory(settings={"default_pool_size": 2})
    a = w.connect()
    t = w.connect(autocommit=False)  # inside a transaction across the reload
    t.execute("CREATE TEMP TABLE r (i int) ON COMMIT DROP")
    t.execute("INSERT INTO r VALUES (1)")
    with pytest.raises(psycopg.OperationalError, match="no such database: newdb"):
        w.connect(dbname="newdb")
    w.reload(databases={"newdb": pg.entry()}, settings={"default_pool_size": 3})
    wait_for(lambda: _can_query(w, dbname="newdb"), 5, what="the new database to be served")
    with w.connect(dbname="newdb") as n:
        assert n.execute("SELECT current_database()").fetchone() == (pg.db,)
    # connected clients were not dropped
    assert a.execute("SELECT 2").fetchone() == (2,)
    t.execute("INSERT INTO r VALUES (2)")
    assert t.execute("SELECT count(*) FROM r").fetchone() == (2,)
    t.commit()
    assert not w.proc.poll()


def _concurrent_backends(w, pg, db, n_clients, seconds=0.6):
    """Run n_clients concurrent sleeps through weir; -> the most server connections seen."""
    seen = [0]
    stop = threading.Event()

    def monitor():
        with pg.connect() as c:
            while not stop.is_set():
                seen[0] = max(seen[0], c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                    "AND query LIKE 'SELECT pg_sleep%%'", [db]).fetchone()[0])
                time.sleep(0.02)
    conns = [w.connect(dbname=db) for _ in range(n_clients)]
    m = threading.Thread(target=monitor)
    m.start()
    threads = [threading.Thread(target=c.execute, args=("SELECT pg_sleep(%s)" % seconds,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    stop.set()
    m.join()
    for c in conns:
        c.close()
    return seen[0]


def test_reload_changes_pool_size(weir_factory, pg):
    db = pg.database("weir_it_resize")
    w = weir_factory(settings={"default_pool_size": 2}, databases={db: pg.entry(db)})
    keep = w.connect(dbname=db)
    assert _concurrent_backends(w, pg, db, 6) == 2
    w.reload(settings={"default_pool_size": 4})
    assert _concurrent_backends(w, pg, db, 6) == 4
    assert keep.execute("SELECT 1").fetchone() == (1,)


def test_reload_removed_database_drains(weir_factory, pg):
    db = pg.database("weir_it_drain")
    w = weir_factory(pool_mode="session", databases={pg.db: pg.entry(), "gone": pg.entry(db)})
    a = w.connect(dbname="gone", autocommit=False)
    a.execute("CREATE TEMP TABLE d (i int)")
    a.execute("INSERT INTO d VALUES (1)")
    w.reload(remove_databases=["gone"])
    # new clients are refused; the connected one finishes its work
    with pytest.raises(psycopg.OperationalError, match="no such database: gone"):
        w.connect(dbname="gone")
    a.execute("INSERT INTO d VALUES (2)")
    assert a.execute("SELECT count(*) FROM d").fetchone() == (2,)
    a.commit()
    assert a.execute("SELECT 1").fetchone() == (1,)
    a.commit()
    a.close()
    # once its last client left, the removed database's servers are closed
    wait_for(lambda: pg.backends(db) == 0, 10, what="the drained pool's servers to close")
    with w.connect() as other:
        assert other.execute("SELECT 1").fetchone() == (1,)


def test_reload_auth_file_adds_user(weir_factory, pg):
    w = weir_factory(settings={"auth_type": "scram-sha-256"},
                     userlist={pg.user: "weir-test-pw", pg.scram_user: pg.scram_password})
    held = w.connect(user=pg.scram_user)
    assert held.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):  # PgBouncer's words
        w.connect(user=pg.md5_user, password=pg.md5_password)
    w.reload(userlist={pg.md5_user: pg.md5_password})
    with w.connect(user=pg.md5_user, password=pg.md5_password) as c:
        assert c.execute("SELECT current_user").fetchone() == (pg.md5_user,)
    assert held.execute("SELECT current_user").fetchone() == (pg.scram_user,)


def test_reload_auth_file_password_change_keeps_clients(weir_factory, pg):
    """A new password in auth_file: the old one is refused from then on, and
    a client that logged in before the reload is not dropped."""
    w = weir_factory(settings={"auth_type": "scram-sha-256"})
    held = w.connect(user=pg.md5_user)
    assert held.execute("SELECT 1").fetchone() == (1,)
    w.reload(userlist={pg.md5_user: "changed-password"})
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):  # PgBouncer's words
        w.connect(user=pg.md5_user, password=pg.md5_password)
    assert held.execute("SELECT current_user").fetchone() == (pg.md5_user,)


def test_reload_changed_database_entry_keeps_clients(weir_factory, pg):
    """A [databases] entry pointed elsewhere: new clients get the new target,
    connected (idle, transaction mode) clients are not dropped."""
    db = pg.database("weir_it_moved")
    w = weir_factory(databases={"app": pg.entry()})
    held = w.connect(dbname="app")
    assert held.execute("SELECT current_database()").fetchone() == (pg.db,)
    w.reload(databases={"app": pg.entry(db)})
    with w.connect(dbname="app") as c:
        assert c.execute("SELECT current_database()").fetchone() == (db,)
    assert held.execute("SELECT current_database()").fetchone()[0] in (pg.db, db)


def test_bad_reload_keeps_old_config(weir_factory, pg):
    w = weir_factory()
    a = w.connect()
    w.reload(settings={"default_pool_size": "many"})
    assert w.alive()
    assert a.execute("SELECT 1").fetchone() == (1,)
    assert _can_query(w)


@pytest.mark.timeout(30)
def test_sigint_waits_for_open_transaction(weir_factory, pg):
    w = weir_factory()
    table = "sigint_%d" % w.port
    with pg.connect() as s:
        s.execute("CREATE TABLE %s (i int)" % table)
    try:
        a = w.connect(autocommit=False)
        a.execute("INSERT INTO %s VALUES (1)" % table)
        w.signal(signal.SIGINT)
        wait_for(lambda: "SIGINT" in w.log_text(), 5, what="weir to log SIGINT")
        # new clients are not served any more
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(w.dsn(), connect_timeout=2).close()
        time.sleep(0.3)
        assert w.alive(), "weir exited while a transaction was still open"
        a.execute("INSERT INTO %s VALUES (2)" % table)
        a.commit()
        w.expected_exit = True
        assert w.wait_exit(10) == 0
        with pg.connect() as s:
            assert s.execute("SELECT count(*) FROM %s" % table).fetchone() == (2,)
    finally:
        with pg.connect() as s:
            s.execute("DROP TABLE IF EXISTS %s" % table)


def test_sigint_with_idle_clients_exits(weir_factory):
    w = weir_factory()
    a = w.connect()
    a.execute("SELECT 1")
    w.signal(signal.SIGINT)
    w.expected_exit = True
    assert w.wait_exit(10) == 0


@pytest.mark.timeout(30)
def test_sigterm_exits_at_once(weir_factory, pg):
    w = weir_factory()
    table = "sigterm_%d" % w.port
    with pg.connect() as s:
        s.execute("CREATE TABLE %s (i int)" % table)
    try:
        a = w.connect(autocommit=False)
        a.execute("INSERT INTO %s VALUES (1)" % table)
        b = w.connect()
        err = {}

        def long_query():
            try:
                b.execute("SELECT pg_sleep(20)")
            except psycopg.Error as e:
                err["e"] = e
        t = threading.Thread(target=long_query)
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        w.signal(signal.SIGTERM)
        w.expected_exit = True
        w.wait_exit(5)
        assert time.monotonic() - t0 < 3
        t.join(5)
        assert isinstance(err.get("e"), psycopg.OperationalError)
        with pytest.raises(psycopg.OperationalError):
            a.execute("SELECT 1")
        # the open transaction was rolled back by PostgreSQL
        wait_for(lambda: pg.connect().execute("SELECT count(*) FROM %s" % table).fetchone() == (0,), 5,
                 what="the open transaction to be gone")
    finally:
        with pg.connect() as s:
            s.execute("DROP TABLE IF EXISTS %s" % table)
