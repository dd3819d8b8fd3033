"""The metrics endpoint: /metrics parses as Prometheus text format with the
naming conventions (weir_ prefix, _total counters, _seconds, histograms whose
buckets add up), its counters move with traffic, and /healthz is 200 while
the backends answer and 503 when one does not (including the real cluster
stopped and started again with tests/tools/pgcluster.sh)."""
import os
import subprocess

import pytest

from conftest import free_port, wait_for
from console import Background, http_get, parse_prometheus, sample


@pytest.fixture
def mweir(weir_factory):
    w = weir_factory(settings={"metrics_port": free_port()})
    w.metrics = "http://127.0.0.1:%d" % w.settings["metrics_port"]
    return w


def scrape(w):
    status, headers, body = http_get(w.metrics + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(body)


def test_metrics_parse_and_follow_the_conventions(mweir, pg):
    c = mweir.connect()
    c.execute("SELECT 1")
    fams = scrape(mweir)
    for name, f in fams.items():
        assert name.startswith("weir_"), name
        if f.type == "counter":
            assert name.endswith("_total"), name
        if "time" in name:
            assert "_seconds" in name, name  # durations in seconds, the base unit
    for name in ("weir_uptime_seconds", "weir_resident_memory_bytes", "weir_client_connections",
                 "weir_reloads_total", "weir_pool_client_active", "weir_pool_client_waiting",
                 "weir_pool_server_active", "weir_pool_server_idle", "weir_pool_server_used",
                 "weir_pool_server_login", "weir_pool_max_wait_seconds", "weir_database_queries_total",
                 "weir_database_transactions_total", "weir_database_received_bytes_total",
                 "weir_database_sent_bytes_total", "weir_database_query_time_seconds_total",
                 "weir_database_wait_time_seconds_total", "weir_client_wait_seconds",
                 "weir_transaction_seconds"):
        assert name in fams, name
    assert fams["weir_client_wait_seconds"].type == "histogram"
    assert sample(fams, "weir_resident_memory_bytes") > 1e6
    assert sample(fams, "weir_client_connections") >= 1
    assert sample(fams, "weir_pool_client_active", database=pg.db, user=pg.user) == 1


@pytest.mark.parametrize("hist", ["weir_client_wait_seconds", "weir_transaction_seconds"])
def test_histogram_buckets_are_cumulative(mweir, pg, hist):
    c = mweir.connect()
    for _ in range(5):
        c.execute("SELECT pg_sleep(0.002)")
    f = scrape(mweir)[hist]
    buckets = [(s[1]["le"], s[2]) for s in f.samples if s[0] == hist + "_bucket" and s[1]["database"] == pg.db]
    assert buckets[-1][0] == "+Inf"
    bounds = [float(le) for le, _ in buckets[:-1]]
    assert bounds == sorted(bounds) and bounds[0] == 0.000016
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    count = [s[2] for s in f.samples if s[0] == hist + "_count" and s[1]["database"] == pg.db][0]
    assert counts[-1] == count >= 5
    total = [s[2] for s in f.samples if s[0] == hist + "_sum" and s[1]["database"] == pg.db][0]
    if hist == "weir_transaction_seconds":
        assert total >= 0.01  # five transactions of at least 2 ms


def test_counters_increase_after_queries(mweir, pg):
    c = mweir.connect()
    c.execute("SELECT 1")
    before = scrape(mweir)
    for _ in range(3):
        c.execute("SELECT 1")
    after = scrape(mweir)
    for name in ("weir_database_queries_total", "weir_database_transactions_total"):
        assert sample(after, name, database=pg.db) - sample(before, name, database=pg.db) == 3, name
    for name in ("weir_database_received_bytes_total", "weir_database_sent_bytes_total",
                 "weir_database_query_time_seconds_total"):
        assert sample(after, name, database=pg.db) > sample(before, name, database=pg.db), name
    assert sample(after, "weir_client_connections_total") >= 1


def test_pool_gauges_show_a_server_in_use(mweir, pg):
    t = mweir.connect(autocommit=False)
    t.execute("SELECT 1")
    fams = scrape(mweir)
    assert sample(fams, "weir_pool_server_active", database=pg.db, user=pg.user) == 1
    t.commit()
    fams = scrape(mweir)
    assert sample(fams, "weir_pool_server_active", database=pg.db, user=pg.user) == 0
    assert sample(fams, "weir_pool_server_idle", database=pg.db, user=pg.user) == 1


def test_series_stay_unique_while_a_changed_pool_drains(mweir, pg):
    t = mweir.connect(autocommit=False)
    t.execute("SELECT 1")  # keeps the old pool alive, draining, after the reload
    mweir.reload(databases={pg.db: pg.entry(application_name="after-reload")})
    assert mweir.connect().execute("SELECT 1").fetchone() == (1,)  # a new pool, same database and user
    fams = scrape(mweir)
    assert sample(fams, "weir_pool_client_active", database=pg.db, user=pg.user) is not None
    t.commit()


def test_reloads_are_counted(mweir):
    before = sample(scrape(mweir), "weir_reloads_total")
    mweir.reload(settings={"default_pool_size": 6})
    wait_for(lambda: sample(scrape(mweir), "weir_reloads_total") == before + 1, 5, what="the reload counter")


def test_unknown_path_is_404(mweir):
    assert http_get(mweir.metrics + "/nope")[0] == 404


def test_healthz_is_503_while_a_database_does_not_answer(weir_factory, pg):
    dead = free_port()  # nothing listens there
    w = weir_factory(settings={"metrics_port": free_port()},
                     databases={pg.db: pg.entry(), "dead": "host=127.0.0.1 port=%d dbname=x" % dead})
    url = "http://127.0.0.1:%d/healthz" % w.settings["metrics_port"]
    status, _, body = http_get(url)
    assert status == 503
    assert "database dead: unreachable" in body and "database %s: reachable" % pg.db in body
    w.reload(remove_databases=["dead"])
    status, _, body = http_get(url)
    assert status == 200 and body.startswith("ok")


def test_healthz_follows_the_backend_being_stopped_and_started(mweir, pg):
    pgdir = os.environ.get("WEIR_TEST_PGDIR")
    if not pgdir:
        pytest.skip("WEIR_TEST_PGDIR not set (tests/tools/pgcluster.sh env)")
    tool = os.path.join(os.environ.get("WEIR_ROOT") or os.path.join(os.path.dirname(__file__), "..", ".."),
                        "tests", "tools", "pgcluster.sh")
    url = mweir.metrics + "/healthz"
    assert http_get(url)[0] == 200
    subprocess.run([tool, "stop", pgdir], check=True, capture_output=True, timeout=120)
    try:
        status, _, body = http_get(url)
        assert status == 503 and "unreachable" in body
    finally:
        subprocess.run([tool, "start", pgdir, str(pg.port)], check=True, capture_output=True, timeout=120)
    wait_for(lambda: http_get(url)[0] == 200, 10, what="/healthz to recover")
    assert mweir.connect().execute("SELECT 1").fetchone() == (1,)


def test_healthz_answers_while_a_query_runs(mweir):
    c = mweir.connect()
    job = Background(lambda: c.execute("SELECT pg_sleep(0.5)").fetchone())
    status, _, _ = http_get(mweir.metrics + "/healthz")
    assert status == 200
    assert job.wait(10) and job.error is None
