"""psql and pgbench against weir."""
import os
import re
import subprocess

import pytest

BENCH_DB = "weir_it_bench"


@pytest.fixture(scope="module")
def bench_db(pg):
    """A pgbench database (scale 1), initialized directly on PostgreSQL."""
    db = pg.database(BENCH_DB)
    r = subprocess.run([pg.tool("pgbench"), "-i", "-q", "-s", "1", "-h", pg.host, "-p", str(pg.port),
                        "-U", pg.user, db], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return db


def pgbench(w, pg, db, *args):
    cmd = [pg.tool("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(w.port), "-U", pg.user] + list(args) + [db]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PGPASSWORD="x", PGCONNECT_TIMEOUT="10"))


def check_pgbench(r, expected):
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
    assert m, out
    assert int(m.group(1)) == int(m.group(2)) == expected, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    assert m is None or int(m.group(1)) == 0, out
    assert "error" not in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("proto", ["simple", "extended"])
@pytest.mark.timeout(120)
def test_pgbench(weir_factory, pg, bench_db, proto):
    w = weir_factory(settings={"default_pool_size": 4}, databases={bench_db: pg.entry(bench_db)})
    with pg.connect(bench_db) as c:
        before = c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]
    r = pgbench(w, pg, bench_db, "-M", proto, "-c", "16", "-j", "2", "-t", "100")
    check_pgbench(r, 1600)
    with pg.connect(bench_db) as c:
        # every transaction's INSERT landed, and the balances agree
        assert c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0] == before + 1600
        a, b, t = c.execute("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                            "(SELECT sum(bbalance) FROM pgbench_branches), "
                            "(SELECT sum(tbalance) FROM pgbench_tellers)").fetchone()
        assert a == b == t


@pytest.mark.timeout(120)
def test_pgbench_connect_per_transaction(weir_factory, pg, bench_db):
    w = weir_factory(settings={"default_pool_size": 4}, databases={bench_db: pg.entry(bench_db)})
    r = pgbench(w, pg, bench_db, "-C", "-S", "-c", "8", "-j", "2", "-t", "100")
    check_pgbench(r, 800)


@pytest.mark.timeout(120)
def test_pgbench_session_mode_prepared(weir_factory, pg, bench_db):
    w = weir_factory(pool_mode="session", settings={"default_pool_size": 8},
                     databases={bench_db: pg.entry(bench_db)})
    r = pgbench(w, pg, bench_db, "-M", "prepared", "-S", "-c", "8", "-j", "2", "-t", "200")
    check_pgbench(r, 1600)


def psql(w, pg, *args, input=None):
    cmd = [pg.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(w.port),
           "-U", pg.user, "-d", pg.db] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=input,
                          env=dict(os.environ, PGPASSWORD="x", PGCONNECT_TIMEOUT="10"))


def test_psql_command(weir, pg):
    r = psql(weir, pg, "-c", "SELECT 6 * 7")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"
    r = psql(weir, pg, "-c", "SELECT 1/0")
    assert r.returncode == 1
    assert "division by zero" in r.stderr


def test_psql_script(weir, pg, tmp_path):
    table = "psql_script_%d" % weir.port
    data = tmp_path / "rows.csv"
    data.write_text("".join("%d,name %d\n" % (i, i) for i in range(1000)))
    script = tmp_path / "script.sql"
    script.write_text("""
\\set ON_ERROR_STOP 1
CREATE TABLE {t} (id int PRIMARY KEY, name text);
BEGIN;
INSERT INTO {t} SELECT g, 'x' || g FROM generate_series(1000, 1099) g;
SAVEPOINT s1;
INSERT INTO {t} VALUES (1000, 'dup');
""".format(t=table))
    # the duplicate fails; the script stops (ON_ERROR_STOP) and psql exits 3
    r = psql(weir, pg, "-f", str(script))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "duplicate key" in r.stderr
    script.write_text("""
\\set ON_ERROR_STOP 1
BEGIN;
INSERT INTO {t} SELECT g, 'x' || g FROM generate_series(1000, 1099) g;
SAVEPOINT s1;
\\set ON_ERROR_STOP 0
INSERT INTO {t} VALUES (1000, 'dup');
\\set ON_ERROR_STOP 1
ROLLBACK TO SAVEPOINT s1;
COMMIT;
\\copy {t} from '{csv}' with (format csv)
SELECT count(*), sum(id) FROM {t};
DO $$ BEGIN RAISE NOTICE 'script notice'; END $$;
\\copy (SELECT id FROM {t} WHERE id < 3 ORDER BY id) to stdout
DROP TABLE {t};
""".format(t=table, csv=data))
    r = psql(weir, pg, "-f", str(script))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.split()
    assert "1100|%d" % (sum(range(1000)) + sum(range(1000, 1100))) in out, r.stdout
    assert out[-3:] == ["0", "1", "2"], r.stdout
    assert "script notice" in r.stderr


def test_psql_stdin_many_statements(weir, pg):
    sql = "".join("SELECT %d;\n" % i for i in range(500))
    r = psql(weir, pg, input=sql)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(i) for i in range(500)]
