"""workers = N: several event-loop threads in one weir, sharing its pools.

Clients are spread over the workers; the pool size, the wait queue and
max_db_connections hold for the process as a whole; a server moves to the
worker of the client it serves; a cancel request reaches a query running on
another worker; the admin console, reload and /metrics see one process.
The whole integration suite also runs with workers = 4 under
ThreadSanitizer (make check, tests/tools/check.sh).
"""
import os
import threading
import time

import psycopg
import pytest

from conftest import free_port, sqlstate_of, wait_for
from console import Console, http_get, parse_prometheus, pool_row, sample


def metrics_of(w):
    status, _, body = http_get("http://127.0.0.1:%d/metrics" % w.settings["metrics_port"])
    assert status == 200
    return parse_prometheus(body)


def thread_names(pid):
    names = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            names.append(f.read().strip())
    return names


def test_clients_are_spread_over_the_workers(weir_factory):
    w = weir_factory(settings={"workers": 4, "metrics_port": free_port()})
    wait_for(lambda: "4 workers" in w.log_text(), what="the process-up line")
    assert sorted(n for n in thread_names(w.pid) if n.startswith("weir-worker")) == \
        ["weir-worker-1", "weir-worker-2", "weir-worker-3"]
    conns = [w.connect() for _ in range(12)]
    for c in conns:
        assert c.execute("SELECT 1").fetchone() == (1,)
    fam = metrics_of(w)
    assert sample(fam, "weir_workers") == 4
    per = [sample(fam, "weir_worker_client_connections", worker=i) for i in range(4)]
    assert sum(per) == 12 and min(per) >= 2, per  # round robin (the metrics scrape is not a client)


def test_pool_size_is_global_and_fair(weir_factory, pg):
    """20 clients on 4 workers, pool of 3: never more than 3 servers, and
    every client gets its turn."""
    pg.database("weir_workers")
    w = weir_factory(settings={"workers": 4, "default_pool_size": 3},
                     databases={"weir_workers": pg.entry("weir_workers")})
    peak = []
    done = []
    errors = []

    def client(i):
        try:
            with w.connect("weir_workers") as c:
                for _ in range(3):
                    c.execute("SELECT pg_sleep(0.05)")
            done.append(i)
        except Exception as e:  # reported below
            errors.append(e)

    def watch():
        while len(done) + len(errors) < 20:
            peak.append(pg.backends("weir_workers"))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    watcher.join(60)
    assert not errors, errors
    assert sorted(done) == list(range(20))
    assert max(peak) <= 3, max(peak)
    console = Console(w)
    row = pool_row(console, "weir_workers", pg.user)
    assert row["sv_active"] + row["sv_idle"] + row["sv_used"] <= 3


def test_server_moves_to_the_worker_of_its_client(weir_factory, pg):
    """A pool of one server, clients on two workers: they take turns on the
    same backend (same pid), which moves between the workers' loops."""
    pg.database("weir_workers_move")
    w = weir_factory(settings={"workers": 2, "default_pool_size": 1},
                     databases={"weir_workers_move": pg.entry("weir_workers_move")})
    a = w.connect("weir_workers_move")
    b = w.connect("weir_workers_move")  # round robin: the other worker
    pids = set()
    for i in range(50):
        c = a if i % 2 == 0 else b
        pids.add(c.execute("SELECT pg_backend_pid()").fetchone()[0])
        with c.transaction():
            c.execute("SELECT %s::int", [i])
    assert len(pids) == 1


def test_cancel_reaches_a_query_on_another_worker(weir_factory):
    w = weir_factory(settings={"workers": 2})
    c = w.connect()
    results = []

    def run():
        try:
            c.execute("SELECT pg_sleep(20)")
            results.append("finished")
        except Exception as e:
            results.append(sqlstate_of(e))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    c.cancel()  # a new connection: the next worker in turn
    t.join(15)
    assert results == ["57014"]
    assert time.monotonic() - started < 5


def test_admin_and_reload_under_load(weir_factory, pg):
    """SHOW, RELOAD, PAUSE/RESUME and /metrics while clients on every worker
    run transactions: nothing is lost, the counters add up."""
    w = weir_factory(settings={"workers": 4, "metrics_port": free_port(), "default_pool_size": 4})
    stop = threading.Event()
    counts = [0] * 8
    errors = []

    def client(i):
        try:
            with w.connect() as c:
                while not stop.is_set():
                    with c.transaction():
                        c.execute("SELECT %s::int", [i])
                    counts[i] += 1
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    console = Console(w)
    wait_for(lambda: min(counts) > 0, what="every client ran a transaction")
    for _ in range(5):
        assert len([r for r in console.show("CLIENTS") if r["database"] == pg.db]) == 8
        console.show("SERVERS")
        console.show("POOLS")
        console.show("STATS")
        metrics_of(w)
        console.execute("RELOAD")
        console.execute("PAUSE %s" % pg.db)
        console.execute("RESUME %s" % pg.db)
    before = sum(counts)
    wait_for(lambda: sum(counts) > before + 50, what="transactions after the admin commands")
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    total = sum(counts)
    stats = [r for r in console.show("STATS") if r["database"] == pg.db][0]
    assert stats["total_xact_count"] >= total


def test_one_worker_and_the_default(weir_factory):
    one = weir_factory(settings={"workers": 1})
    wait_for(lambda: "1 worker" in one.log_text(), what="the process-up line")
    assert not [n for n in thread_names(one.pid) if n.startswith("weir-worker")]
    assert one.connect().execute("SELECT 1").fetchone() == (1,)
    default = weir_factory(settings={"workers": 0})
    n = os.cpu_count()
    want = "%d worker%s" % (n, "" if n == 1 else "s")
    wait_for(lambda: want in default.log_text(), what="the process-up line")


@pytest.mark.timeout(90)
def test_shutdown_waits_for_transactions_on_every_worker(weir_factory):
    """SIGINT: weir exits once the transactions on all workers are done."""
    import signal
    w = weir_factory(settings={"workers": 3})
    conns = [w.connect(autocommit=False) for _ in range(3)]
    for c in conns:
        c.execute("SELECT 1")  # each is now in a transaction, on its own worker
    w.signal(signal.SIGINT)
    time.sleep(1.0)
    assert w.alive()
    for c in conns[:-1]:
        c.commit()
    time.sleep(1.0)
    assert w.alive()
    conns[-1].commit()
    w.wait_exit(10)
    w.expected_exit = True


@pytest.mark.timeout(90)
def test_console_kills_while_new_pools_are_made(weir_factory, pg):
    """KILL/RESUME from the console while clients on every worker log in as
    new users (each makes a pool): the console keeps answering. (A worker
    that waited for a stopped world inside a client's callback, while the
    console closed that client, used to hang the daemon.)"""
    from pgwire import Wire, query_message, startup_packet
    pg.database("weir_workers_kill")
    w = weir_factory(settings={"workers": 2},
                     databases={"weir_workers_kill": pg.entry("weir_workers_kill")})
    stop = threading.Event()

    def login_storm(k):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                wire = Wire("127.0.0.1", w.port, timeout=5)
                wire.send(startup_packet("u%d_%d" % (k, i), "weir_workers_kill"))
                try:
                    wire.read_message()
                except (EOFError, OSError, TimeoutError):
                    pass
                wire.close()
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=login_storm, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        console = Console(w)
        deadline = time.monotonic() + 3
        rounds = 0
        while time.monotonic() < deadline:
            console.execute("KILL weir_workers_kill")
            console.execute("RESUME weir_workers_kill")
            rounds += 1
        assert rounds > 10
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    with w.connect("weir_workers_kill") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
