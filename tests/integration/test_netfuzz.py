"""Network fuzzing: tens of thousands of random and mutated packets at a
running weir over many connections, before and after authentication --
mutations of valid StartupMessage, SSLRequest, GSSENCRequest,
CancelRequest, password/SASL, Query, Parse/Bind/Describe/Execute/Sync,
Close, COPY and FunctionCall messages: bit flips, truncations, lengths of
0, 3, 4, huge or random, splices and plain garbage. Afterwards weir must be
alive, have closed every one of those connections (its fds back near where
they were), report no sanitizer error or invalid state transition (the test
runs the ASan+UBSan build, .build/asan-weir, when it is there), and serve
normal clients in every pool mode. The random seed is printed (and can be
set with WEIR_NETFUZZ_SEED) so a failure can be replayed; WEIR_NETFUZZ_SECONDS
(default 8) sets how long each pool mode is fuzzed."""
import os
import random
import socket
import struct
import subprocess
import threading
import time

import pytest

import pgwire
from conftest import ROOT, wait_for

ASAN_DAEMON = os.path.join(ROOT, ".build", "asan-weir")
DURATION = float(os.environ.get("WEIR_NETFUZZ_SECONDS", 8))  # per pool mode
THREADS = 6


def _typed(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def _untyped(body):
    return struct.pack("!I", len(body) + 4) + body


def _bind(stmt, params=(b"42",)):
    body = b"\0" + stmt + b"\0" + struct.pack("!HH", 1, 0) + struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return _typed(b"B", body + struct.pack("!H", 0))


PRE_AUTH = [
    pgwire.startup_packet("weir_test", "weir_test"),
    pgwire.startup_packet("weir_test", "weir_test", application_name="fuzz", DateStyle="ISO"),
    pgwire.startup_packet("nobody", "nodb"),
    pgwire.startup_packet("weir_test", "pgbouncer"),
    _untyped(struct.pack("!I", 80877103)),                           # SSLRequest
    _untyped(struct.pack("!I", 80877104)),                           # GSSENCRequest
    _untyped(struct.pack("!III", 80877102, 1, 0xDEADBEEF)),          # CancelRequest
    _untyped(struct.pack("!I", 0x00020000) + b"user\0x\0\0"),        # protocol 2
    _typed(b"p", b"md5" + b"0" * 32 + b"\0"),
    _typed(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", 26) + b"n,,n=,r=fyko+d2lbbFgONRv9q"),
]

POST_AUTH = [
    pgwire.query_message("SELECT 1"),
    pgwire.query_message("BEGIN; SELECT 1; COMMIT"),
    pgwire.query_message("DEALLOCATE ALL"),
    pgwire.query_message("DISCARD ALL"),
    pgwire.query_message("SET application_name = 'fuzz'"),
    pgwire.query_message(""),
    _typed(b"P", b"s1\0SELECT $1::int\0\0\x01\0\0\0\x17"),
    _typed(b"P", b"\0SELECT 1\0\0\0"),
    _typed(b"P", b"\0DEALLOCATE ALL\0\0\0"),
    _bind(b"s1"),
    _bind(b"", ()),
    _typed(b"D", b"Ss1\0"),
    _typed(b"D", b"P\0"),
    _typed(b"E", b"\0\0\0\0\0"),
    _typed(b"C", b"Ss1\0"),
    _typed(b"C", b"P\0"),
    _typed(b"H"),
    _typed(b"S"),
    _typed(b"F", struct.pack("!IH", 1598, 0) + struct.pack("!H", 0) + struct.pack("!H", 0)),
    pgwire.query_message("COPY (SELECT 1) TO STDOUT"),
    _typed(b"d", b"1\n"),
    _typed(b"c"),
    _typed(b"f", b"nope\0"),
]


def mutate(rng, pkt, pool):
    """One mutation of pkt (bytes)."""
    b = bytearray(pkt)
    kind = rng.randrange(10)
    if kind == 0 and b:                                 # flip bits
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 1 and b:                               # random bytes
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 2:                                     # truncate
        b = b[:rng.randrange(len(b) + 1)]
    elif kind == 3:                                     # extend
        b += os.urandom(rng.randint(1, 64))
    elif kind == 4 and len(b) >= 5:                     # bad length
        off = 0 if pkt in PRE_AUTH else 1
        val = rng.choice([0, 1, 3, 4, 5, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20, rng.randrange(1 << 32)])
        b[off:off + 4] = struct.pack("!I", val)
    elif kind == 5:                                     # splice two packets
        other = rng.choice(pool)
        b = b[:rng.randrange(len(b) + 1)] + other[rng.randrange(len(other) + 1):]
    elif kind == 6:                                     # garbage
        b = bytearray(os.urandom(rng.randint(1, 200)))
    elif kind == 7:                                     # a type byte from elsewhere
        if b:
            b[0] = rng.choice(b"QPBEDCSHXFdcfp\0\xff")
    # 8, 9: unchanged (valid messages keep the session going deeper)
    return bytes(b)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.packets = 0
        self.connections = 0
        self.logged_in = 0

    def add(self, packets, logged_in):
        with self.lock:
            self.packets += packets
            self.connections += 1
            self.logged_in += logged_in


def login(sock, timeout=2.0):
    """Trust login; True once ReadyForQuery arrived."""
    sock.sendall(pgwire.startup_packet("weir_test", "weir_test"))
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            return False
        buf += data
        if b"Z\0\0\0\x05" in buf:
            return True
        if buf[:1] == b"E":
            return False
    return False


def one_connection(port, rng, stats):
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    logged_in = 0
    try:
        if rng.random() < 0.6:
            if not login(sock):
                return
            logged_in = 1
            pool = POST_AUTH
        else:
            pool = PRE_AUTH + POST_AUTH[:3]
        burst = b""
        for _ in range(rng.randint(1, 40)):
            burst += mutate(rng, rng.choice(pool), pool)
            sent += 1
        sock.sendall(burst)
        # Read a little of what comes back, sometimes; sometimes vanish at once.
        if rng.random() < 0.5:
            sock.settimeout(0.02)
            try:
                sock.recv(65536)
            except (socket.timeout, OSError):
                pass
    except OSError:
        pass  # weir closed on us: expected for most of these
    finally:
        if rng.random() < 0.3:  # an abortive close (RST) now and then
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        stats.add(sent, logged_in)


def _lsan_works(daemon):
    """LeakSanitizer needs ptrace-like access, missing in some containers,
    where it reports a fatal error of its own at exit: probe with weir -V."""
    r = subprocess.run([daemon, "-V"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    return "LeakSanitizer" not in r.stdout + r.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_network_fuzz(weir_factory, monkeypatch, mode):
    daemon = ASAN_DAEMON if os.access(ASAN_DAEMON, os.X_OK) else None
    if daemon:
        monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=%d" % _lsan_works(daemon))
        monkeypatch.setenv("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    w = weir_factory(pool_mode=mode, daemon=daemon,
                     settings={"default_pool_size": 4, "max_client_conn": 1000, "client_login_timeout": 5,
                               "query_timeout": 5, "max_packet_size": 1 << 20,
                               "log_connections": 0, "log_disconnections": 0})
    fds_before = len(os.listdir("/proc/%d/fd" % w.pid))
    seed = int(os.environ.get("WEIR_NETFUZZ_SEED") or random.randrange(1 << 30))
    print("netfuzz seed %d, daemon %s" % (seed, daemon or "plain"))
    stats = Stats()
    stop = time.monotonic() + DURATION

    def worker(i):
        rng = random.Random(seed * 100 + i)
        while time.monotonic() < stop:
            one_connection(w.port, rng, stats)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("netfuzz: %d packets over %d connections (%d logged in first)" % (
        stats.packets, stats.connections, stats.logged_in))
    assert w.alive(), "weir died under fuzzing (seed %d)" % seed
    assert stats.packets >= 10000, "too few packets sent: %d" % stats.packets
    # Every fuzzing connection is gone: weir holds no more fds than before
    # (plus servers it may have opened meanwhile).
    wait_for(lambda: len(os.listdir("/proc/%d/fd" % w.pid)) <= fds_before + 8, 10, interval=0.2,
             what="weir to close the fuzzing connections")
    # Normal clients are served, with the extended protocol too, and the pool
    # still works after a reload into statement mode.
    with w.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        assert c.execute("SELECT %s::int", [7], prepare=True).fetchone() == (7,)
        with c.transaction():
            assert c.execute("SELECT 'in txn'").fetchone() == ("in txn",)
    conns = [w.connect() for _ in range(4)]  # the whole pool, in session mode
    for i, c in enumerate(conns):
        assert c.execute("SELECT %s::int", [i]).fetchone() == (i,)
    for c in conns:
        c.close()
    w.reload({"pool_mode": "statement"})
    with w.connect() as c:
        assert c.execute("SELECT 'statement'").fetchone() == ("statement",)
