"""A host of a multi-host entry that hangs never holds weir's event loop.

A fake PostgreSQL server (a thread speaking just enough of the protocol for
libpq's login and weir's health check) plays a host that
- accepts TCP connections and then never says anything, or
- answers the health check with its row and CommandComplete, then stalls
  before ReadyForQuery (libpq's PQgetResult waits for that, blocking, in
  any connection mode).
While the check waits on it, weir's admin console and /metrics must answer
(within 2.5 s: they take milliseconds, but a busy machine can add a dropped
SYN's one-second retry; a held loop takes the whole 6 s stall), and the check
ends by its own timeout (server_connect_timeout) with the host marked down.
"""
import socket
import struct
import threading
import time

import pytest

from conftest import free_port, wait_for
from console import Console, http_get
from test_ha import OSUSER, host_states, make_weir, started  # noqa: F401

STALL_S = 6.0


class FakeHost:
    """Listens on a free port; mode "silent" or "stall" (see the module doc)."""

    def __init__(self, mode):
        self.mode = mode
        self.port = free_port()
        self.queries = 0
        self.stop = threading.Event()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.conns = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.lsock.close()
        for c in self.conns:
            c.close()

    def serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            self.conns.append(c)
            if self.mode != "silent":
                threading.Thread(target=self.session, args=(c,), daemon=True).start()

    @staticmethod
    def msg(t, body=b""):
        return t + struct.pack("!I", len(body) + 4) + body

    def read_exact(self, c, n):
        buf = b""
        while len(buf) < n:
            try:
                part = c.recv(n - len(buf))
            except OSError:
                return None
            if not part:
                return None
            buf += part
        return buf

    def session(self, c):
        c.settimeout(None)
        while True:  # SSLRequest / GSSENCRequest, then the startup packet
            head = self.read_exact(c, 8)
            if head is None:
                return
            length, code = struct.unpack("!II", head)
            if code in (80877103, 80877104):
                c.sendall(b"N")
                continue
            if self.read_exact(c, length - 8) is None:
                return
            break
        out = self.msg(b"R", struct.pack("!I", 0))
        for k, v in (("server_version", "15.0"), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
                     ("standard_conforming_strings", "on"), ("in_hot_standby", "off"),
                     ("default_transaction_read_only", "off"), ("integer_datetimes", "on")):
            out += self.msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += self.msg(b"K", struct.pack("!II", 4242, 1)) + self.msg(b"Z", b"I")
        c.sendall(out)
        while not self.stop.is_set():
            head = self.read_exact(c, 5)
            if head is None:
                return
            t, length = head[:1], struct.unpack("!I", head[1:])[0]
            if self.read_exact(c, length - 4) is None or t == b"X":
                return
            if t != b"Q":
                continue
            self.queries += 1
            cols = b"".join(name + b"\0" + struct.pack("!IhIhih", 0, 0, 16, 1, -1, 0)
                            for name in (b"pg_is_in_recovery", b"lag"))
            row = struct.pack("!h", 2) + struct.pack("!I", 1) + b"f" + struct.pack("!I", 1) + b"0"
            c.sendall(self.msg(b"T", struct.pack("!h", 2) + cols) + self.msg(b"D", row) +
                      self.msg(b"C", b"SELECT 1\0"))
            time.sleep(STALL_S)  # the row is there; ReadyForQuery is not
            try:
                c.sendall(self.msg(b"Z", b"I"))
            except OSError:
                return


def responsive(console, w, limit):
    """Time SHOW VERSION and a /metrics scrape; both must be quick."""
    t0 = time.monotonic()
    console.show("VERSION")
    http_get(w.metrics + "/metrics")
    took = time.monotonic() - t0
    assert took < limit, "weir took %.2fs to answer: its loop was held" % took
    return took


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["silent", "stall"])
def test_hanging_host_never_holds_the_loop(started, mode):  # noqa: F811
    fake = FakeHost(mode)
    try:
        e = "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=%s target_session_attrs=read-write" % (
            fake.port, free_port(), OSUSER)
        w = make_weir({"app": e}, settings={"server_connect_timeout": "3", "health_check_period": "0.5"})
        started(w)
        console = Console(w)
        if mode == "stall":
            # the first check gets its row, then waits for ReadyForQuery
            wait_for(lambda: fake.queries >= 1, 10, what="the fake host to get the check query")
        else:
            wait_for(lambda: len(fake.conns) >= 1, 10, what="the check to connect to the fake host")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # all through the stall, well before any timeout
            responsive(console, w, 2.5)
            time.sleep(0.1)
        # the check gives up at its timeout: the host is down, with the reason
        wait_for(lambda: host_states(console, "app").get(fake.port, ("", ""))[1] == "down", 10,
                 what="the hanging host to be marked down")
        responsive(console, w, 2.5)
        assert "timed out" in w.log_text(), w.log_text()[-2000:]
    finally:
        fake.close()
