"""High availability: when weir's health checks of multi-host entries run.

- from the config: an entry whose login the config names (a forced user, or
  auth_user) is checked as soon as weir starts, so SHOW DATABASES, /metrics
  and /healthz know which host is the primary before any client connects,
  and /healthz reports a read-write entry without a primary even though a
  standby of it still answers.

Each scenario builds its own PostgreSQL 15 primary and standby (test_ha's
Cluster) on free ports and tears it down afterwards.
"""
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
