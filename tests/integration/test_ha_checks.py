"""High availability: when weir's health checks of multi-host entries run.

- from the config: an entry whose login the config names (a forced user, or
  auth_user) is checked as soon as weir starts, so SHOW DATABASES, /metrics
  and /healthz know which host is the primary before any client connects,
  and /healthz reports a read-write entry without a primary even though a
  standby of it still answers.
- on a failover sign: an error a server sends a client that says its host
  may have failed over (25006 read_only_sql_transaction on a read-write
  entry; 57P01/57P02/57P03; class 08) has the host checked at once, not at
  the next health_check_period; other errors, and 25006 on a standby entry,
  do not; a client repeating the error cannot make a check storm.

Each scenario builds its own PostgreSQL 15 primary and standby (test_ha's
Cluster) on free ports and tears it down afterwards.
"""
import time

import psycopg
import pytest

from conftest import wait_for
from console import Console, http_get
from test_ha import OSUSER, Cluster, db_row, entry, host_metric, host_states, make_weir, started  # noqa: F401


def healthz(w):
    return http_get(w.metrics + "/healthz")


def names_on(node):
    return [r[0] for r in node.sql("SELECT application_name FROM pg_stat_activity WHERE backend_type = "
                                   "'client backend' AND pid <> pg_backend_pid()")]


@pytest.mark.timeout(90)
def test_checks_start_with_the_config(started):  # noqa: F811
    cl = Cluster(standbys=1)
    try:
        p, s = cl.nodes
        # the standby first: libpq's order alone would not find the primary
        w = make_weir({"app": entry([s, p], "read-write"), "ro": entry([p, s], "standby")})
        started(w)
        console = Console(w)
        # no client has asked for app or ro, yet both are checked
        wait_for(lambda: host_states(console, "app") == {p.port: ("primary", "up"), s.port: ("standby", "up")},
                 10, what="the checks of app, with no client")
        wait_for(lambda: host_states(console, "ro") == {p.port: ("primary", "up"), s.port: ("standby", "up")},
                 10, what="the checks of ro, with no client")
        assert host_metric(w, "weir_backend_host_primary", "app", p.port) == 1
        assert host_metric(w, "weir_backend_host_primary", "app", s.port) == 0
        status, _, body = healthz(w)
        assert status == 200 and "database app: reachable" in body, body
        assert not [r for r in console.show("POOLS") if r["database"] in ("app", "ro")]
        for node in (p, s):  # weir's sessions there are its checks, one per entry
            assert names_on(node) == ["weir health check"] * 2, names_on(node)
        assert db_row(console, "app")["current_connections"] == 0

        # the primary goes before any client came: the checks see it, where a
        # TCP probe would have found the standby answering
        p.stop("immediate")
        status, _, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(healthz(w)), 10,
                                   what="healthz 503")
        assert "database app: no primary reachable" in body, body
        assert "database ro: reachable" in body, body
        assert host_states(console, "app")[p.port][1] == "down"
    finally:
        cl.destroy()


def checks(w, db, node):
    return host_metric(w, "weir_backend_host_checks_total", db, node.port)


@pytest.mark.timeout(90)
def test_failover_sign_error_checks_the_host_now(started):  # noqa: F811
    cl = Cluster(standbys=1)
    try:
        p, s = cl.nodes
        p.sql("CREATE TABLE t (id int)")
        # one check at the start, the next one 60 s later: any other is the error's
        w = make_weir({"app": entry([p, s], "read-write"), "ro": entry([p, s], "standby")},
                      settings={"health_check_period": "60"})
        started(w)
        console = Console(w)
        wait_for(lambda: host_states(console, "app") == {p.port: ("primary", "up"), s.port: ("standby", "up")}
                 and host_states(console, "ro") == {p.port: ("primary", "up"), s.port: ("standby", "up")},
                 10, what="the first checks")
        c = w.connect("app", user=OSUSER, password="x", autocommit=False)
        ro = w.connect("ro", user=OSUSER, password="x", autocommit=False)
        assert ro.execute("SELECT inet_server_port()").fetchone()[0] == s.port
        ro.rollback()
        base = {(db, n.port): checks(w, db, n) for db in ("app", "ro") for n in (p, s)}

        # an error that says nothing about the host: no check
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT 1/0")
        assert err.value.sqlstate == "22012"
        c.rollback()
        # 25006 on the standby entry: expected there, no check either
        with pytest.raises(psycopg.Error) as err:
            ro.execute("INSERT INTO t VALUES (1)")
        assert err.value.sqlstate == "25006"
        ro.rollback()
        time.sleep(0.5)
        assert {k: checks(w, k[0], n) for k in base for n in (p, s) if n.port == k[1]} == base

        # 25006 on the read-write entry: its host is checked now
        c.execute("SET TRANSACTION READ ONLY")
        with pytest.raises(psycopg.Error) as err:
            c.execute("INSERT INTO t VALUES (2)")
        assert err.value.sqlstate == "25006"
        c.rollback()
        wait_for(lambda: checks(w, "app", p) > base[("app", p.port)], 5, what="a check of app's primary")
        time.sleep(0.3)
        assert checks(w, "app", p) == base[("app", p.port)] + 1
        # only that host, only that entry
        assert checks(w, "app", s) == base[("app", s.port)]
        assert checks(w, "ro", p) == base[("ro", p.port)] and checks(w, "ro", s) == base[("ro", s.port)]
        assert host_states(console, "app")[p.port] == ("primary", "up")  # it was a false alarm

        # a client repeating it: at most one check per 100 ms
        before, t0 = checks(w, "app", p), time.monotonic()
        for i in range(40):
            c.execute("SET TRANSACTION READ ONLY")
            with pytest.raises(psycopg.Error):
                c.execute("INSERT INTO t VALUES (3)")
            c.rollback()
        time.sleep(0.3)
        made, took = checks(w, "app", p) - before, time.monotonic() - t0
        assert 1 <= made <= took / 0.1 + 1, (made, took)

        # 57P01: the server ends the client's session (the host is going
        # down); the host is checked at once
        before = checks(w, "app", p)
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        p.sql("SELECT pg_terminate_backend(%s)", pid)
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT 1")
        assert err.value.sqlstate in ("57P01", "08P01", None), err.value
        wait_for(lambda: checks(w, "app", p) > before, 5, what="a check after 57P01")
    finally:
        cl.destroy()
