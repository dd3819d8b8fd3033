"""A minimal PostgreSQL v3 wire client for tests that need to see or send
exact bytes: garbage and malformed packets, and large results read without
keeping them (so the reader's own memory does not matter)."""
import socket
import struct
import time


def startup_packet(user, database, **params):
    body = struct.pack("!I", 196608)
    for k, v in [("user", user), ("database", database)] + list(params.items()):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(mtype, body=b""):
    return mtype + struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def parse_error_fields(body):
    """ErrorResponse / NoticeResponse body -> {code letter: value}."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode(errors="replace")
    return fields


class Wire:
    """One socket, message-framed reads with a deadline."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from weir in time")
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_message(self, timeout=None):
        """-> (type byte string, body bytes); EOFError when closed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < 5:
            self._fill(deadline)
        mtype = bytes(self.buf[:1])
        (length,) = struct.unpack("!I", self.buf[1:5])
        while len(self.buf) < 1 + length:
            self._fill(deadline)
        body = bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return mtype, body

    def read_until_closed(self, timeout=None):
        """Messages until the peer closes; -> list of (type, body)."""
        out = []
        try:
            while True:
                out.append(self.read_message(timeout))
        except (EOFError, ConnectionResetError):
            return out

    def login_trust(self, user, database, **params):
        """Startup with no password; returns the messages up to ReadyForQuery."""
        self.send(startup_packet(user, database, **params))
        msgs = []
        while True:
            t, b = self.read_message()
            msgs.append((t, b))
            if t == b"E":
                raise RuntimeError("login failed: %r" % parse_error_fields(b))
            if t == b"R" and struct.unpack("!I", b[:4])[0] != 0:
                raise RuntimeError("weir asked for a password")
            if t == b"Z":
                return msgs

    def simple_query(self, sql, timeout=None):
        """Send a Query; -> messages up to and including ReadyForQuery."""
        self.send(query_message(sql))
        msgs = []
        while True:
            t, b = self.read_message(timeout)
            msgs.append((t, b))
            if t == b"Z":
                return msgs

    def stream_query(self, sql, on_progress=None, chunk=1 << 20, pause=0.0, timeout=120.0):
        """Send a Query and consume its result without keeping it: raw bytes
        are scanned only for message boundaries. Returns (bytes read, number
        of DataRows, CommandComplete tag, error fields or None)."""
        self.send(query_message(sql))
        if pause:
            time.sleep(pause)
        deadline = time.monotonic() + timeout
        total = rows = 0
        tag = None
        err = None
        buf = bytearray()
        pos = 0
        self.sock.settimeout(timeout)
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("result not finished in time")
            data = self.sock.recv(chunk)
            if not data:
                raise EOFError("connection closed during the result")
            total += len(data)
            buf += data
            while len(buf) - pos >= 5:
                mtype = buf[pos]
                (length,) = struct.unpack_from("!I", buf, pos + 1)
                if len(buf) - pos < 1 + length:
                    break
                if mtype == 0x44:  # DataRow
                    rows += 1
                elif mtype == 0x43:  # CommandComplete
                    tag = bytes(buf[pos + 5:pos + length]).decode()
                elif mtype == 0x45:  # ErrorResponse
                    err = parse_error_fields(bytes(buf[pos + 5:pos + 1 + length]))
                elif mtype == 0x5A:  # ReadyForQuery
                    return total, rows, tag, err
                pos += 1 + length
            del buf[:pos]
            pos = 0
            if on_progress:
                on_progress(total)
