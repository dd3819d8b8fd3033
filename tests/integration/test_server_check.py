"""server_check_query / server_check_delay with PgBouncer's meaning: a server
that sat in the pool longer than server_check_delay runs server_check_query
before a client gets it; one that fails the check is closed and the client
gets another server, without seeing an error."""
import time

from conftest import wait_for

DB = "weir_it_check"


def _checks(pg, db):
    with pg.connect(db) as c:
        return c.execute("SELECT count(*) FROM weir_checks").fetchone()[0]


def _setup(pg, db):
    pg.database(db)
    with pg.connect(db) as c:
        c.execute("DROP TABLE IF EXISTS weir_checks")
        c.execute("CREATE TABLE weir_checks (at timestamptz DEFAULT now())")
        c.execute("GRANT ALL ON weir_checks TO PUBLIC")


def _weir(weir_factory, pg, pool_size=1, **settings):
    """weir in transaction mode over a fresh weir_checks table, with these check settings."""
    _setup(pg, DB)
    settings.update({"default_pool_size": pool_size, "pool_mode": "transaction"})
    return weir_factory(settings=settings, databases={DB: pg.entry(DB)})


def test_check_runs_after_delay(weir_factory, pg):
    db = DB
    w = _weir(weir_factory, pg, 1, server_check_delay=0.5, server_check_query="insert into weir_checks default values")
    c = w.connect(dbname=db)
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    # Back-to-back transactions: within the delay, no check.
    for _ in range(5):
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert _checks(pg, db) == 0
    # Idle longer than the delay: the next transaction is preceded by one check.
    time.sleep(0.8)
    assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert _checks(pg, db) == 1
    assert c.execute("SELECT 41 + 1").fetchone() == (42,)
    assert _checks(pg, db) == 1


def test_check_delay_zero_checks_every_reuse(weir_factory, pg):
    db = DB
    w = _weir(weir_factory, pg, 1, server_check_delay=0, server_check_query="insert into weir_checks default values")
    c = w.connect(dbname=db)
    for i in range(5):
        assert c.execute("SELECT %s::int" % i).fetchone() == (i,)
    # The first use of a new server is not checked; each reuse is.
    assert _checks(pg, db) == 4


def test_failed_check_gives_client_another_server(weir_factory, pg):
    db = DB
    w = _weir(weir_factory, pg, 2, server_check_delay=0, server_check_query="select 1/0")
    c = w.connect(dbname=db)
    pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(4)]
    # Every reuse fails its check: the server is closed and a fresh one serves
    # the query, so the client never sees the check's error.
    assert len(set(pids)) == 4, pids
    wait_for(lambda: pg.backends(db) <= 1, 10, what="failed servers closed")
    assert "server check failed" in w.log_text()


def test_no_check_when_query_empty(weir_factory, pg):
    db = DB
    w = _weir(weir_factory, pg, 1, server_check_delay=0, server_check_query="")
    c = w.connect(dbname=db)
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    for _ in range(3):
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert _checks(pg, db) == 0


def test_check_that_hangs_is_bounded_by_query_wait_timeout(weir_factory, pg):
    """A check that does not answer (a black-holed server) keeps the client
    waiting no longer than query_wait_timeout, as waiting in line would."""
    import psycopg
    import pytest
    db = DB
    w = _weir(weir_factory, pg, 1, server_check_delay=0, server_check_query="select pg_sleep(30)", query_wait_timeout=1)
    c = w.connect(dbname=db)
    assert c.execute("SELECT 1").fetchone() == (1,)  # a new server: not checked
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
        c.execute("SELECT 2")  # reuse: the check hangs
    assert 0.8 < time.monotonic() - t0 < 5
    other = w.connect(dbname=db)  # the hung server was closed: a fresh one serves
    assert other.execute("SELECT 3").fetchone() == (3,)
