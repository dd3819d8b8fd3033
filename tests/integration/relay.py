"""A TCP port in front of the test PostgreSQL that tests switch between
down (nothing listens), up (forwarding) and silent (accepting, never
answering): a server that is away, restarting or hanging, without stopping
the shared cluster. Used through the `relay` fixture of conftest.py."""
import select
import socket
import threading

from conftest import free_port


class Relay:
    """A TCP port in front of PostgreSQL: 'down' (nothing listens),
    'up' (forwards), or 'silent' (accepts, never answers)."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.mode = "down"
        self.lsock = None
        self.conns = []
        self.thread = None
        self.stop_ev = threading.Event()

    def start(self, mode="up"):
        assert self.lsock is None
        self.mode = mode
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(64)
        self.stop_ev.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        """Down: listener closed, every connection cut."""
        if self.lsock is None:
            return
        self.stop_ev.set()
        self.thread.join(5)
        self.lsock.close()
        self.lsock = None
        for a, b in self.conns:
            for s in (a, b):
                if s is not None:
                    s.close()
        self.conns = []

    def _run(self):
        pairs = {}
        while not self.stop_ev.is_set():
            socks = [self.lsock] + list(pairs)
            r, _, _ = select.select(socks, [], [], 0.05)
            for s in r:
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    if self.mode == "silent":
                        self.conns.append((c, None))
                        continue
                    b = socket.create_connection(self.target)
                    pairs[c], pairs[b] = b, c
                    self.conns.append((c, b))
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                peer = pairs.get(s)
                if not data or peer is None:
                    pairs.pop(s, None)
                    if peer is not None:
                        pairs.pop(peer, None)
                        peer.close()
                    s.close()
                    continue
                try:
                    peer.sendall(data)
                except OSError:
                    pass
