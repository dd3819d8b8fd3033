"""Side by side: the real PgBouncer and weir started on the same pgbouncer.ini,
and a raw wire client that logs in with trust, cleartext, md5 or SCRAM and
reports exactly what each answered (ErrorResponse fields, whether the
connection stayed open). Used by test_pgbouncer_differential.py.

PgBouncer refuses to run as root: as root it runs as the `postgres` user
(setpriv execs, so the pid held is PgBouncer's own), as tests/tools/bench.py
does; its files live in a directory that user can write.
"""
import base64
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from conftest import BAD_OUTPUT, DAEMON, free_port, ini_text, read_text, wait_for, _die_with_parent
from pgwire import Wire, message, parse_error_fields, query_message, startup_packet

PGBOUNCER = "/usr/sbin/pgbouncer"


def pgbouncer_missing():
    """-> why PgBouncer cannot run here, or None."""
    if not os.access(PGBOUNCER, os.X_OK):
        return "PgBouncer not installed (%s; apt-get install pgbouncer)" % PGBOUNCER
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root needs setpriv to start PgBouncer as postgres"
    return None


class Pooler:
    """One pooler process ("weir" or "pgbouncer") on its own port, log and socket dir."""

    def __init__(self, kind, top, databases, users, settings, userlist):
        self.kind = kind
        self.dir = os.path.join(top, kind)
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o777)
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.log = os.path.join(self.dir, "pooler.log")
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.databases, self.users, self.userlist = databases, users, userlist
        self.settings = dict(settings)
        self.settings["auth_file"] = os.path.join(top, "userlist.txt")
        self.proc = None
        self.port = None

    def write(self):
        self.settings.update(listen_port=self.port, logfile=self.log, unix_socket_dir=self.dir,
                             pidfile=os.path.join(self.dir, "pooler.pid"))
        with open(self.ini, "w") as f:
            f.write(ini_text(self.databases, self.users, self.settings))
        os.chmod(self.ini, 0o644)

    def command(self):
        if self.kind == "weir":
            return [DAEMON, self.ini]
        priv = []
        if os.geteuid() == 0:
            priv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]
        return priv + [PGBOUNCER, self.ini]

    def start(self):
        for _ in range(3):
            self.port = free_port()
            self.write()
            err = open(self.stderr_path, "ab")
            self.proc = subprocess.Popen(self.command(), stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, preexec_fn=_die_with_parent)
            err.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return self
                except OSError:
                    time.sleep(0.02)
            self.stop()
            if "in use" not in self.log_text() + self.stderr_text():
                break
        raise AssertionError("%s did not start:\n%s%s" % (self.kind, self.stderr_text()[-2000:],
                                                        self.log_text()[-2000:]))

    def log_text(self):
        return read_text(self.log)

    def stderr_text(self):
        return read_text(self.stderr_path)

    def reload(self):
        self.write()
        self.proc.send_signal(signal.SIGHUP)

    def problems(self):
        """What says weir has a bug: it died, or logged a sanitizer report or a bad transition."""
        out = []
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode != 0:
            out.append("%s exited with %s" % (self.kind, self.proc.returncode))
        text = self.stderr_text() + self.log_text()
        out += ["%s logged %r" % (self.kind, bad) for bad in BAD_OUTPUT if bad in text]
        return out

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pair:
    """PgBouncer and weir on the same ini content."""

    def __init__(self, pg, settings=None, databases=None, users=None, userlist=None):
        self.pg = pg
        self.top = tempfile.mkdtemp(prefix="weir-pgbdiff-")
        os.chmod(self.top, 0o755)
        base = {
            "listen_addr": "127.0.0.1",
            "auth_type": "md5",
            "pool_mode": "session",
            "default_pool_size": 5,
            "max_client_conn": 100,
            "admin_users": pg.user,
            "stats_users": "statsuser",
        }
        base.update(settings or {})
        self.userlist = userlist if userlist is not None else {
            pg.user: "weir-test-pw", pg.scram_user: pg.scram_password, pg.md5_user: pg.md5_password}
        with open(os.path.join(self.top, "userlist.txt"), "w") as f:
            for u, p in self.userlist.items():
                f.write('"%s" "%s"\n' % (u, p))
        os.chmod(os.path.join(self.top, "userlist.txt"), 0o644)
        dbs = databases if databases is not None else {pg.db: pg.entry()}
        self.poolers = {k: Pooler(k, self.top, dbs, dict(users or {}), base, self.userlist)
                        for k in ("pgbouncer", "weir")}

    def start(self):
        for p in self.poolers.values():
            p.start()
        return self

    def __getitem__(self, kind):
        return self.poolers[kind]

    def items(self):
        return self.poolers.items()

    def each(self, fn):
        """-> {kind: fn(pooler)}, PgBouncer first."""
        return {k: fn(p) for k, p in self.poolers.items()}

    def stop(self, keep=False):
        """Stop both; -> weir's problems (files kept when there are some)."""
        problems = self.poolers["weir"].problems()
        for p in self.poolers.values():
            p.stop()
        if not keep and not problems:
            shutil.rmtree(self.top, ignore_errors=True)
        return problems


# ---- the raw client ----

def _scram_client(w, user, password):
    """SCRAM-SHA-256 over an open Wire whose server just sent AuthenticationSASL."""
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    first = ("n,," + first_bare).encode()
    w.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
    t, b = w.read_message()
    if t != b"R":
        return t, b
    server_first = b[4:].decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salt = base64.b64decode(attrs["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    final_bare = "c=biws,r=" + attrs["r"]
    auth_msg = ",".join([first_bare, server_first, final_bare]).encode()
    sig = hmac.new(stored, auth_msg, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    w.send(message(b"p", (final_bare + ",p=" + base64.b64encode(proof).decode()).encode()))
    return None


class Outcome:
    """What a login (and optional query) got: error fields, open or closed."""

    def __init__(self):
        self.error = None      # ErrorResponse fields of the first error
        self.logged_in = False
        self.closed = None     # the pooler closed the connection after the error / query
        self.rows = []         # DataRow values of the query
        self.notices = []
        self.wire = None
        self.cancel_key = None  # BackendKeyData (pid, secret) of a login

    def key(self):
        """The parts a user sees and both must agree on."""
        e = self.error or {}
        return (self.logged_in, e.get("S"), e.get("C"), e.get("M"), self.closed)

    def __repr__(self):
        return "Outcome(logged_in=%s, error=%s, closed=%s)" % (self.logged_in, self.error, self.closed)


def _closed_soon(w, wait=0.5):
    """True when the peer closes within `wait` seconds (remaining messages dropped)."""
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            w.read_message(timeout=max(0.01, deadline - time.monotonic()))
        return False
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, socket.timeout):
        return False


def login(port, user, db, password=None, params=None, keep=False, timeout=10.0):
    """Log in with whatever the pooler asks for; -> Outcome (o.wire open when keep and logged in)."""
    o = Outcome()
    w = Wire("127.0.0.1", port, timeout=timeout)
    try:
        w.send(startup_packet(user, db, **(params or {})))
        while True:
            t, b = w.read_message()
            if t == b"E":
                o.error = parse_error_fields(b)
                o.closed = _closed_soon(w)
                return o
            if t == b"N":
                o.notices.append(parse_error_fields(b))
            if t == b"K":
                o.cancel_key = struct.unpack("!II", b[:8])
            if t == b"R":
                code = struct.unpack("!I", b[:4])[0]
                if code == 3:
                    w.send(message(b"p", (password or "").encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5(((password or "") + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + b[4:8]).hexdigest()
                    w.send(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    r = _scram_client(w, user, password or "")
                    if r is not None and r[0] == b"E":
                        o.error = parse_error_fields(r[1])
                        o.closed = _closed_soon(w)
                        return o
            if t == b"Z":
                o.logged_in = True
                o.closed = False
                if keep:
                    o.wire, w = w, None
                return o
    except (EOFError, ConnectionResetError, BrokenPipeError):
        o.closed = True
        return o
    finally:
        if w is not None:
            w.close()


def query(w, sql, timeout=10.0):
    """Simple query on a logged-in Wire; -> Outcome (closed: whether the pooler hung up after)."""
    try:
        w.send(query_message(sql))
    except (ConnectionResetError, BrokenPipeError):
        o = Outcome()
        o.logged_in, o.closed = True, True
        return o
    return result(w, timeout)


def cancel(port, key):
    """Send a CancelRequest for key (pid, secret); -> True when the pooler then closed the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(struct.pack("!IIII", 16, 80877102, key[0], key[1]))
        return s.recv(1) == b""
    except OSError:
        return True
    finally:
        s.close()


def result(w, timeout=10.0):
    """The answer to a query already sent, up to ReadyForQuery; -> Outcome."""
    o = Outcome()
    o.logged_in = True
    try:
        while True:
            t, b = w.read_message(timeout)
            if t == b"E" and o.error is None:
                o.error = parse_error_fields(b)
            elif t == b"D":
                o.rows.append(_datarow(b))
            elif t == b"N":
                o.notices.append(parse_error_fields(b))
            elif t == b"Z":
                o.closed = False
                return o
    except (EOFError, ConnectionResetError, BrokenPipeError):
        o.closed = True
        return o


def _datarow(b):
    (n,) = struct.unpack("!H", b[:2])
    pos, vals = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", b[pos:pos + 4])
        pos += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(b[pos:pos + ln].decode(errors="replace"))
            pos += ln
    return vals


def admin(port, user, sql, db="pgbouncer"):
    """One admin-console query as `user` (trust or the ini's auth); -> (columns, rows, Outcome)."""
    o = login(port, user, db, password="weir-test-pw", keep=True)
    if not o.logged_in:
        return None, None, o
    w = o.wire
    try:
        w.send(query_message(sql))
        cols, rows, q = [], [], Outcome()
        q.logged_in = True
        while True:
            t, b = w.read_message()
            if t == b"T":
                cols = _rowdesc(b)
            elif t == b"D":
                rows.append(_datarow(b))
            elif t == b"E" and q.error is None:
                q.error = parse_error_fields(b)
            elif t == b"N":
                q.notices.append(parse_error_fields(b))
            elif t == b"C":
                q.tag = b[:-1].decode()
            elif t == b"Z":
                q.closed = False
                return cols, rows, q
    except (EOFError, ConnectionResetError):
        q.closed = True
        return cols, rows, q
    finally:
        w.close()


def _rowdesc(b):
    (n,) = struct.unpack("!H", b[:2])
    pos, names = 2, []
    for _ in range(n):
        end = b.index(b"\0", pos)
        names.append(b[pos:end].decode())
        pos = end + 1 + 18
    return names


# ---- log lines ----

LOG_SHAPE_SUBS = [
    (r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+ \[\d+\] ", "TS [PID] "),
    (r"[CS]-0x[0-9a-f]+", "X-PTR"),
    (r"@(127\.0\.0\.1|unix\(\d+\)|unix|\[[0-9a-f:]+\]):\d+", "@ADDR"),
    (r"\b\d+\.\d+\.\d+\.\d+\b", "IP"),
    (r"\d+(\.\d+)?", "N"),
]


def log_shape(line):
    for pat, rep in LOG_SHAPE_SUBS:
        line = re.sub(pat, rep, line)
    return line
