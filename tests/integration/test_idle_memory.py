"""Idle clients are cheap: each one costs weir at most 1 KiB of resident
memory (issue 7), because an idle client gives back its buffers, write event
and timer, and shares its parameter values with its pool. Trimmed clients
must work exactly as before when they speak again."""
import os
import resource
import socket
import struct
import subprocess
import time

import pytest

N = 10000


def _startup(user, db):
    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    return struct.pack("!I", len(body) + 4) + body


def _read_until_ready(s):
    buf = b""
    while b"Z\0\0\0\x05I" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("weir closed an idle client: %r" % buf[-200:])
        buf += chunk
    return buf


def _query(s, sql):
    body = sql.encode() + b"\0"
    s.sendall(b"Q" + struct.pack("!I", len(body) + 4) + body)
    return _read_until_ready(s)


@pytest.mark.timeout(120)
def test_ten_thousand_idle_clients_under_1kib_each(weir_factory, pg):
    if os.environ.get("WEIR_TEST_TSAN"):
        pytest.skip("ThreadSanitizer's shadow memory makes resident memory meaningless")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = N + 200
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pytest.skip("cannot raise the fd limit to %d (hard limit %d)" % (want, hard))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    w = weir_factory(settings={"max_client_conn": N + 100, "default_pool_size": 2})
    lim = subprocess.run(["prlimit", "--pid", str(w.pid), "--nofile=%d:%d" % (N + 500, N + 500)],
                         capture_output=True, text=True)
    if lim.returncode != 0:
        pytest.skip("cannot raise weir's fd limit to %d: %s" % (N + 500, lim.stderr.strip()))
    # A few transactions first, so the pool and its welcome are warm.
    warm = socket.create_connection(("127.0.0.1", w.port))
    warm.sendall(_startup(pg.user, pg.db))
    _read_until_ready(warm)
    _query(warm, "SELECT 1")
    time.sleep(2.5)  # the warm client is trimmed too
    base = w.rss_kb()
    socks = []
    try:
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", w.port))
            s.sendall(_startup(pg.user, pg.db))
            socks.append(s)
        for s in socks:
            _read_until_ready(s)
        time.sleep(2.5)  # two ticks: idle clients give back what they hold
        per_client = (w.rss_kb() - base) * 1024 / N
        print("weir RSS per idle client: %.0f bytes" % per_client)
        assert per_client <= 1024, "%.0f bytes of RSS per idle client (limit 1024)" % per_client
        # Trimmed clients work as before, including a query after the trim.
        for s in socks[:: N // 20]:
            out = _query(s, "SELECT 42")
            assert b"42" in out
        assert b"1" in _query(warm, "SELECT 1")
    finally:
        for s in socks:
            s.close()
        warm.close()
    assert w.alive()
