"""pgbouncer.ini compatibility as a user sees it: [weir] or [pgbouncer],
%include, the "*" fallback database, per-database and per-user pool settings,
the Unix socket, startup parameters, weir's own cancel key."""
import os
import threading

import psycopg
import pytest

from conftest import Weir


def test_weir_section_name_and_include(weir_factory, pg, tmp_path):
    w = Weir(pg)
    inc = os.path.join(w.dir, "dbs.ini")
    with open(inc, "w") as f:
        f.write("[databases]\nincluded = %s\n" % pg.entry())
    w.write()
    text = open(w.ini).read().replace("[pgbouncer]", "[weir]") + "%%include %s\n" % inc
    # start it by hand with the edited file
    w.write = lambda: open(w.ini, "w").write(text)
    w.start()
    try:
        with w.connect(dbname="included") as c:
            assert c.execute("SELECT current_database()").fetchone() == (pg.db,)
    finally:
        problems = w.finish()
    assert not problems, problems


def test_fallback_database(weir_factory, pg):
    other = pg.database("weir_it_fallback")
    w = weir_factory(databases={"*": "host=%s port=%d" % (pg.host, pg.port)})
    for db in (pg.db, other):
        with w.connect(dbname=db) as c:
            assert c.execute("SELECT current_database()").fetchone() == (db,)
    with pytest.raises(psycopg.OperationalError):
        w.connect(dbname="weir_it_does_not_exist_at_all")


def test_per_database_pool_mode_and_size(weir_factory, pg):
    w = weir_factory(pool_mode="transaction",
                     databases={"sess": pg.entry(pool_mode="session", pool_size=1), "tx": pg.entry()})
    a = w.connect(dbname="sess")
    a.execute("SET work_mem = '2345kB'")
    assert a.execute("SHOW work_mem").fetchone() == ("2345kB",)  # same server: session mode
    # pool_size=1 and a's session holds it: b waits until a leaves
    b = w.connect(dbname="sess")
    done = threading.Event()
    t = threading.Thread(target=lambda: (b.execute("SELECT 1"), done.set()), daemon=True)
    t.start()
    assert not done.wait(0.3), "a second server was opened despite pool_size=1"
    a.close()
    assert done.wait(10)
    # the other database keeps the global transaction mode and pool size
    x, y = w.connect(dbname="tx"), w.connect(dbname="tx")
    x.execute("BEGIN")
    x.execute("SELECT 1")
    assert y.execute("SELECT 2").fetchone() == (2,)
    x.execute("COMMIT")


def test_per_user_pool_mode(weir_factory, pg):
    w = weir_factory(pool_mode="transaction", settings={"auth_type": "md5"},
                     users={pg.scram_user: "pool_mode=session"})
    s = w.connect(user=pg.scram_user)
    s.execute("SET work_mem = '3456kB'")
    pid = s.execute("SELECT pg_backend_pid()").fetchone()[0]
    other = w.connect(user=pg.scram_user)
    assert other.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
    assert s.execute("SHOW work_mem").fetchone() == ("3456kB",)


def test_unix_socket(weir):
    c = psycopg.connect(host=weir.dir, port=weir.port, dbname=weir.pg.db, user=weir.pg.user,
                        password="x", autocommit=True, connect_timeout=5)
    try:
        assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        c.close()
    assert os.path.exists(os.path.join(weir.dir, ".s.PGSQL.%d" % weir.port))


def test_unsupported_startup_parameter(weir_factory, pg):
    w = weir_factory()
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        w.connect(options="-c geqo=off")
    w2 = weir_factory(settings={"ignore_startup_parameters": "extra_float_digits, options"})
    with w2.connect(options="-c geqo=off") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_client_gets_weirs_own_cancel_key(weir):
    c = weir.connect()
    server_pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert c.info.backend_pid != server_pid
