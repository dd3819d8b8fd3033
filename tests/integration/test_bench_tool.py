"""`make bench`'s table maker (tests/tools/bench.py): its parsers, and one short end-to-end run.

The full benchmark takes minutes and is not part of `make check`; this runs the row groups that
are quick at a tiny size (1 s per run, one round, 100 idle clients, 20 clients over a pool of 2)
and checks that every cell the run can fill holds a number, so a broken pooler start, config,
login path or parser shows up here rather than in a `make bench` nobody runs.
"""
import csv
import importlib.util
import os
import shutil
import subprocess

import pytest

from conftest import DAEMON, ROOT

BENCH_PY = os.path.join(ROOT, "tests", "tools", "bench.py")
BENCH_DB = "weir_it_benchtool"


def load_bench():
    spec = importlib.util.spec_from_file_location("weir_bench_tool", BENCH_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return load_bench()


@pytest.fixture(scope="module")
def bench_db(pg):
    db = pg.database(BENCH_DB)
    r = subprocess.run([pg.tool("pgbench"), "-i", "-q", "-s", "1", "-h", pg.host, "-p", str(pg.port),
                        "-U", pg.user, db], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with pg.connect(db) as c:
        c.execute('GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO "%s"' % pg.scram_user)
    return db


def test_txn_log_stats(bench, tmp_path):
    """Percentiles over all threads' log files; a client that logged nothing counts as 0 txns."""
    prefix = str(tmp_path / "log")
    with open(prefix + ".123", "w") as f:
        for i in range(99):
            f.write("0 %d %d 0 1700000000 0\n" % (i, 1000 * (i + 1)))   # 1..99 ms
    with open(prefix + ".123.1", "w") as f:
        f.write("2 0 500000 0 1700000000 0\n")                          # 500 ms
    s = bench.Bench.txn_log_stats(prefix, 3)
    assert s["p50"] == 51.0
    assert s["p99"] == 500.0
    assert s["max"] == 500.0
    assert (s["min_txn"], s["max_txn"]) == (0, 99)     # client 1 never completed one
    assert not os.path.exists(prefix + ".123")


def test_idle_client_login_parser(bench):
    ok = b"R\0\0\0\x08\0\0\0\0" + b"S\0\0\0\x0aab\0cd\0" + b"Z\0\0\0\x05I"
    assert bench.IdleClients.logged_in(ok)
    assert not bench.IdleClients.logged_in(ok[:-3])
    with pytest.raises(RuntimeError, match="password"):
        bench.IdleClients.logged_in(b"R\0\0\0\x08\0\0\0\x03")
    with pytest.raises(RuntimeError, match="refused"):
        bench.IdleClients.logged_in(b"E\0\0\0\x0aSFATAL\0\0")


def test_row_median_and_ratio(bench):
    r = bench.Row("k", "label", "txn/s", "{:.0f}", "higher")
    for v in (10, 30, 20):
        r.add("weir", v)
    for v in (10, 10, None):
        r.add("pgbouncer", v)
    assert r.value("weir") == 20
    assert r.value("pgbouncer") is None          # a failed round fails the cell
    assert r.cell("pgbouncer") == "FAILED"
    assert r.cell("direct") == "-"
    assert r.ratio() is None
    r.rounds["pgbouncer"] = [10]
    assert r.ratio() == 2.0


@pytest.mark.timeout(240)
def test_bench_quick_run(pg, bench_db, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, BENCH_DB=bench_db, BENCH_WEIR=DAEMON, BENCH_OUT=str(out), BENCH_SECONDS="1",
               BENCH_ROUNDS="1", BENCH_ONLY="latency,logins,rss,overload", BENCH_IDLE_CLIENTS="100",
               BENCH_OVERLOAD_CLIENTS="20", BENCH_OVERLOAD_POOL="2", PATH=os.environ["PATH"] + ":" + pg.bindir)
    r = subprocess.run(["/usr/bin/python3", BENCH_PY], env=env, capture_output=True, text=True, timeout=220)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "weir/pgb" in r.stdout, r.stdout
    with open(out / "bench-results.csv") as f:
        rows = {row["metric"]: row for row in csv.DictReader(f)}
    for key in ("lat_1", "lat_added_1", "scram_logins", "scram_cpu", "rss_idle", "over_tps", "over_p50",
                "over_p99", "over_max", "over_min_txn", "over_max_txn"):
        assert key in rows, (key, r.stdout + r.stderr)
        cols = ["weir"] + (["pgbouncer"] if shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer")
                           else [])
        if key in ("lat_1", "scram_logins"):
            cols.append("direct")
        for col in cols:
            assert rows[key][col] != "", (key, col, r.stdout + r.stderr)
            float(rows[key][col])
    assert float(rows["scram_logins"]["weir"]) > 0
    assert float(rows["over_p99"]["weir"]) >= float(rows["over_p50"]["weir"]) > 0
    assert (out / "bench-rounds.csv").exists()
    assert (out / "bench-results.md").read_text().count("\n| ") >= 11
    if shutil.which("gnuplot"):
        assert (out / "bench-results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
