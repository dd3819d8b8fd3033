#!/usr/bin/python3
"""The pooler part of `make bench`: one table of weir vs PgBouncer vs PostgreSQL directly.

tests/tools/bench.sh starts a throwaway PostgreSQL cluster, exports its env.sh and runs this.
Both poolers get the same pgbouncer.ini (transaction mode, the same pool sizes and limits); each
scenario runs against every target in alternating rounds (the order rotates from round to round)
and the table shows the median of the rounds, with the ratio weir / PgBouncer and the spread (the
largest max/min of one target's rounds: how noisy that row was). Row groups (BENCH_ONLY=group,...
selects some; default all):

  tps       TPS and the pooler's CPU µs per transaction (utime+stime from /proc/PID/stat over the
            run / transactions): select-only simple and extended at 10 and 100 clients, and
            -M prepared at 10
  latency   mean latency at 1 client, and what the pooler adds over direct (per-round difference)
  instr     user-space instructions per transaction under valgrind --tool=callgrind (weir,
            PgBouncer), select-only simple and extended at 10 clients: one pooler run of pgbench
            -t 1000 and one of -t 3000, (I(3000) - I(1000)) / (2000 * clients), so connection
            set-up and shutdown cancel out. Deterministic enough for one round (BENCH_CG_ROUNDS).
  logins    SCRAM logins per second (pgbench -C -S, 10 clients; auth_type scram-sha-256 with a
            plain-text password in the auth_file, the server side logs in with the same password)
            and the pooler's CPU µs per login; and weir with scram_iterations = 1024 (the count it
            offers for plain-text passwords is its own choice; PgBouncer's is 4096), against the
            same PgBouncer rounds
  rss       resident memory per idle client: a fresh pooler, one warm-up client, then
            BENCH_IDLE_CLIENTS (10,000) clients that complete startup and trust login and stay
            silent; (VmRSS after - VmRSS before) / N, from /proc/PID/status
  overload  BENCH_OVERLOAD_CLIENTS (1,000) pgbench clients over a pool of BENCH_OVERLOAD_POOL (10):
            TPS, p50/p99/max per-transaction latency from pgbench's per-transaction log (it includes
            the wait for a server), and fairness: the fewest and most transactions one client got
  workers   weir alone with workers = 1, 2 and 4 (select-only simple, 100 clients): TPS, CPU µs per
            transaction of the whole process, and the busiest thread's share of that CPU (per-thread
            utime+stime from /proc/PID/task/*/stat): how the work spreads over the event loops. On a
            2-core machine shared with pgbench and PostgreSQL, more loops cannot raise TPS.

Other knobs: BENCH_SECONDS (5) per run, BENCH_ROUNDS (3), BENCH_POOL_SIZE (20), BENCH_WEIR_WORKERS (1: weir's
workers for every row but the workers group, so both poolers run one event loop), BENCH_OUT (directory
for bench-results.csv, bench-rounds.csv, bench-results.md and bench-results.png; default
tests/tmp/bench), BENCH_PGBOUNCER (path; default the one on PATH or /usr/sbin/pgbouncer), BENCH_WEIR
(default daemon/weir), BENCH_DB (a database with pgbench's tables; default $WEIR_TEST_DB).
PgBouncer refuses to run as root: as root it runs as the `postgres` user (setpriv, which execs, so
the pid we hold is PgBouncer's own). Numbers from a shared machine are noisy; compare ratios.
"""
import csv
import datetime
import glob
import os
import platform
import pwd
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUPS = ("tps", "latency", "instr", "logins", "rss", "overload", "workers")
TARGETS = ("direct", "weir", "pgbouncer")
CG_CLIENTS = 10


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def cpu_ticks(pid):
    """utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def thread_ticks(pid):
    """{tid: utime + stime} of every thread of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return out


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile(n):
    """Raise this process's fd limit to n (root can raise the hard limit too); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return soft
    tries = [(min(n, hard) if hard != resource.RLIM_INFINITY else n, hard)]
    if hard != resource.RLIM_INFINITY and hard < n:
        tries.insert(0, (n, n))     # needs CAP_SYS_RESOURCE
    for limits in tries:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


class Pooler:
    """One weir or PgBouncer process on a free port, configured by a pgbouncer.ini written here."""

    def __init__(self, bench, kind, tag, auth_type="trust", max_client_conn=None, wrap=(), workers=None,
                 extra=None):
        self.bench, self.kind, self.tag = bench, kind, tag
        self.extra = dict(extra or {})  # more settings, for weir only
        # weir's workers: one event loop, as PgBouncer, for the side-by-side rows (BENCH_WEIR_WORKERS);
        # the workers group sets its own.
        self.workers = workers if workers is not None else bench.cmp_workers
        self.auth_type = auth_type
        self.max_client_conn = max_client_conn or bench.over_n + 200
        self.wrap = list(wrap)
        self.port = None
        self.proc = None
        self.log = os.path.join(bench.tmp, f"{tag}.log")

    @property
    def pid(self):
        return self.proc.pid

    def write_ini(self):
        b = self.bench
        server = f"host=127.0.0.1 port={b.pg_port} dbname={b.db}"
        path = os.path.join(b.tmp, f"{self.tag}.ini")
        with open(path, "w") as f:
            f.write(f"""[databases]
{b.db} = {server}
bench_over = {server} pool_size={b.over_pool}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = {self.auth_type}
auth_file = {b.userlist}
pool_mode = transaction
default_pool_size = {b.pool}
max_client_conn = {self.max_client_conn}
log_connections = 0
log_disconnections = 0
log_pooler_errors = 0
""")
            if self.workers is not None and self.kind == "weir":
                f.write(f"workers = {self.workers}\n")
            if self.kind == "weir":
                f.writelines(f"{k} = {v}\n" for k, v in self.extra.items())
        os.chmod(path, 0o644)
        return path

    def command(self, ini):
        if self.kind == "weir":
            return self.wrap + [self.bench.weir_bin, ini]
        priv = []
        if os.geteuid() == 0:
            # PgBouncer will not run as root; setpriv execs, so Popen's pid is PgBouncer's (or valgrind's).
            priv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]
        return priv + self.wrap + [self.bench.pgb_bin, ini]

    def start(self, timeout=30):
        nofile = self.max_client_conn + 1000
        for _ in range(5):
            self.port = free_port()
            ini = self.write_ini()
            logf = open(self.log, "w")
            self.proc = subprocess.Popen(self.command(ini), stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=self.bench.tmp,
                                         preexec_fn=lambda: raise_nofile(nofile))
            logf.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if port_open(self.port):
                    return self
                time.sleep(0.1)
            self.stop()
            if "in use" not in self.log_tail():
                break
        raise RuntimeError(f"{self.kind} did not start ({self.tag}):\n{self.log_tail()}")

    def log_tail(self, n=15):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, graceful=False, timeout=10):
        """SIGINT (graceful: lets callgrind write its profile) or SIGTERM; SIGKILL when it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT if graceful else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class IdleClients:
    """N protocol-v3 clients that log in (trust) and then stay connected and silent."""

    def __init__(self, port, user, db):
        body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{db}\0\0".encode()
        self.startup = struct.pack("!I", len(body) + 4) + body
        self.port = port
        self.socks = []

    def open(self, n, timeout=180, in_flight=200):
        """Connect n more clients, at most in_flight logging in at a time (a full listen backlog
        would cost SYN retransmits of a second each); raises when one is refused."""
        sel = selectors.DefaultSelector()
        pending = {}
        started = 0
        deadline = time.monotonic() + timeout
        try:
            while started < n or pending:
                while started < n and len(pending) < in_flight:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", self.port))
                    pending[s] = b""
                    sel.register(s, selectors.EVENT_WRITE)
                    started += 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"idle clients: {len(self.socks)} of {n} logged in before the timeout")
                for key, events in sel.select(1.0):
                    s = key.fileobj
                    if events & selectors.EVENT_WRITE:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise RuntimeError(f"idle clients: connect failed: {os.strerror(err)}")
                        s.send(self.startup)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(65536)
                    if not data:
                        raise RuntimeError("idle clients: the pooler closed a connection during login")
                    buf = pending[s] + data
                    if self.logged_in(buf):
                        sel.unregister(s)
                        del pending[s]
                        self.socks.append(s)
                    else:
                        pending[s] = buf
        finally:
            for s in pending:
                s.close()
            sel.close()

    @staticmethod
    def logged_in(buf):
        """True once buf holds ReadyForQuery; raises on ErrorResponse or a password request."""
        pos = 0
        while len(buf) - pos >= 5:
            typ = buf[pos:pos + 1]
            ln = struct.unpack("!I", buf[pos + 1:pos + 5])[0]
            if len(buf) - pos < 1 + ln:
                break
            if typ == b"E":
                raise RuntimeError(f"idle clients: login refused: {buf[pos + 5:pos + 1 + ln]!r}")
            if typ == b"R" and struct.unpack("!I", buf[pos + 5:pos + 9])[0] != 0:
                raise RuntimeError("idle clients: the pooler asked for a password (expected trust)")
            if typ == b"Z":
                return True
            pos += 1 + ln
        return False

    def close(self):
        # Reset instead of FIN: no TIME_WAIT left behind for 10,000 local ports.
        linger = struct.pack("ii", 1, 0)
        for s in self.socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
            s.close()
        self.socks = []


class Row:
    """One line of the table: per target, the value of each round."""

    def __init__(self, key, label, unit, fmt, better=None, short=None):
        self.key, self.label, self.unit, self.fmt, self.better = key, label, unit, fmt, better
        self.short = short or key
        self.rounds = {t: [] for t in TARGETS}
        self.note = {}      # target -> text shown instead of a number (skipped, failed)

    def add(self, target, value):
        self.rounds[target].append(value)

    def value(self, target):
        vals = self.rounds[target]
        if vals and any(v is None for v in vals):
            return None
        return median(vals)

    def ratio(self):
        w, p = self.value("weir"), self.value("pgbouncer")
        if w is None or p is None or p == 0:
            return None
        return w / p

    def spread(self):
        """The largest max/min over the rounds of one target: how noisy this row was."""
        worst = None
        for vals in self.rounds.values():
            vals = [v for v in vals if v is not None and v > 0]
            if len(vals) >= 2:
                s = max(vals) / min(vals)
                worst = s if worst is None else max(worst, s)
        return worst

    def spread_cell(self):
        s = self.spread()
        return "-" if s is None else f"{s:.2f}"

    def cell(self, target):
        v = self.value(target)
        if v is not None:
            return self.fmt.format(v)
        if target in self.note:
            return self.note[target]
        return "FAILED" if self.rounds[target] else "-"


class Bench:
    def __init__(self):
        self.secs = env_int("BENCH_SECONDS", 5)
        self.nrounds = env_int("BENCH_ROUNDS", 3)
        self.cg_rounds = env_int("BENCH_CG_ROUNDS", 1)
        self.pool = env_int("BENCH_POOL_SIZE", 20)
        self.cmp_workers = env_int("BENCH_WEIR_WORKERS", 1)
        self.idle_n = env_int("BENCH_IDLE_CLIENTS", 10000)
        self.over_n = env_int("BENCH_OVERLOAD_CLIENTS", 1000)
        self.over_pool = env_int("BENCH_OVERLOAD_POOL", 10)
        only = os.environ.get("BENCH_ONLY", "").replace(" ", "")
        self.groups = [g for g in only.split(",") if g] if only else list(GROUPS)
        self.groups = [g for g in self.groups if g != "engine"]  # bench.sh runs that one
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown:
            sys.exit(f"bench: unknown BENCH_ONLY group(s) {unknown}; choose from {', '.join(GROUPS)}, engine")
        self.out = os.environ.get("BENCH_OUT") or os.path.join(ROOT, "tests", "tmp", "bench")
        self.weir_bin = os.environ.get("BENCH_WEIR") or os.path.join(ROOT, "daemon", "weir")
        self.pgb_bin = os.environ.get("BENCH_PGBOUNCER") or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.access(self.pgb_bin, os.X_OK):
            self.pgb_bin = None
        self.pgb_version = self.pooler_version(self.pgb_bin)
        pgbin = os.environ.get("WEIR_TEST_PGBIN", "")
        self.pgbench_bin = os.path.join(pgbin, "pgbench") if pgbin else shutil.which("pgbench")
        self.pg_port = int(os.environ["WEIR_TEST_PGPORT"])
        self.db = os.environ.get("BENCH_DB") or os.environ.get("WEIR_TEST_DB", "weir_test")
        self.user = os.environ.get("WEIR_TEST_USER", "weir_test")
        self.scram_user = os.environ["WEIR_TEST_SCRAM_USER"]
        self.scram_password = os.environ["WEIR_TEST_SCRAM_PASSWORD"]
        self.tmp = tempfile.mkdtemp(prefix="weir-bench-py.")
        os.chmod(self.tmp, 0o755)
        self.userlist = os.path.join(self.tmp, "userlist.txt")
        with open(self.userlist, "w") as f:
            f.write(f'"{self.user}" ""\n"{self.scram_user}" "{self.scram_password}"\n')
        os.chmod(self.userlist, 0o644)
        self.rows = []
        self.poolers = []
        self.failures_shown = set()
        self.load_before = os.getloadavg()

    # --- running things -------------------------------------------------------------------------

    @staticmethod
    def pooler_version(path):
        """PgBouncer's version as a tuple, (0,) when unknown."""
        if not path:
            return (0,)
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return (0,)
        m = re.search(r"PgBouncer (\d+)\.(\d+)", out)
        return (int(m.group(1)), int(m.group(2))) if m else (0,)

    def targets(self):
        return [t for t in TARGETS if t != "pgbouncer" or self.pgb_bin]

    def rotated(self, targets, r):
        """The targets in round r's order: rotated each round so no target always runs first."""
        k = r % len(targets)
        return targets[k:] + targets[:k]

    def pgbench(self, port, args, user=None, db=None, password=None, what=""):
        """Run pgbench; returns {tps, lat_ms, txns} or None (and shows the output once per `what`)."""
        cmd = [self.pgbench_bin, "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user or self.user] \
            + [str(a) for a in args] + [db or self.db]
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        if password:
            env["PGPASSWORD"] = password
        timeout = max(self.secs * 10, 300)
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            out = p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            out, p = f"timed out after {timeout}s: {e}", None
        tps = re.search(r"^tps = ([0-9.]+)", out, re.M)
        lat = re.search(r"^latency average = ([0-9.]+) ms", out, re.M)
        txns = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
        failed = re.search(r"^number of failed transactions: (\d+)", out, re.M)
        if p is None or p.returncode != 0 or not tps or not txns or (failed and int(failed.group(1))):
            if what not in self.failures_shown:
                self.failures_shown.add(what)
                say(f"bench: pgbench failed ({what}): {' '.join(cmd)}\n" + out[-1500:])
            return None
        return {"tps": float(tps.group(1)), "lat_ms": float(lat.group(1)) if lat else None,
                "txns": int(txns.group(1))}

    def timed(self, target, port, pid, args, **kw):
        """pgbench plus the pooler's CPU µs per transaction over the run."""
        before = cpu_ticks(pid) if pid else None
        r = self.pgbench(port, args, what=f"{target} {' '.join(map(str, args))}", **kw)
        after = cpu_ticks(pid) if pid else None
        if r is not None:
            r["cpu_us"] = None
            if before is not None and after is not None and r["txns"] > 0:
                r["cpu_us"] = (after - before) * 1e6 / os.sysconf("SC_CLK_TCK") / r["txns"]
        return r

    def row(self, *a, **kw):
        row = Row(*a, **kw)
        self.rows.append(row)
        return row

    def start_poolers(self, tag, **kw):
        """{target: (port, pid)} with direct PostgreSQL and one fresh pooler of each kind."""
        ends = {"direct": (self.pg_port, None)}
        for kind in ("weir", "pgbouncer"):
            if kind in self.targets():
                p = Pooler(self, kind, f"{tag}-{kind}", **kw).start()
                self.poolers.append(p)
                ends[kind] = (p.port, p.pid)
        return ends

    def stop_poolers(self):
        for p in self.poolers:
            p.stop()
        self.poolers = []

    # --- the row groups -------------------------------------------------------------------------

    def group_tps(self, ends):
        scenarios = [("simple_10", "select-only simple, 10 clients", ["-S", "-M", "simple", "-c", 10]),
                     ("simple_100", "select-only simple, 100 clients", ["-S", "-M", "simple", "-c", 100]),
                     ("extended_10", "select-only extended, 10 clients", ["-S", "-M", "extended", "-c", 10]),
                     ("extended_100", "select-only extended, 100 clients", ["-S", "-M", "extended", "-c", 100]),
                     ("prepared_10", "select-only -M prepared, 10 clients", ["-S", "-M", "prepared", "-c", 10])]
        for key, label, args in scenarios:
            short = key.replace("_", " ")
            tps = self.row(f"tps_{key}", f"TPS, {label}", "txn/s", "{:.0f}", "higher", f"TPS {short}")
            cpu = self.row(f"cpu_{key}", f"pooler CPU per txn, {label}", "µs", "{:.1f}", "lower", f"CPU {short}")
            cpu.note["direct"] = "-"
            skip = set()
            if key.startswith("prepared") and self.pgb_version < (1, 21):
                # Protocol-level prepared statements in transaction mode came with PgBouncer 1.21.
                skip.add("pgbouncer")
                tps.note["pgbouncer"] = cpu.note["pgbouncer"] = "n/a (1.21+)"
            say(f"bench: {label} ...")
            for r in range(self.nrounds):
                for t in self.rotated([t for t in self.targets() if t not in skip], r):
                    port, pid = ends[t]
                    res = self.timed(t, port, pid, args + ["-j", 2, "-T", self.secs])
                    tps.add(t, res and res["tps"])
                    if t != "direct":
                        cpu.add(t, res and res["cpu_us"])

    def group_latency(self, ends):
        lat = self.row("lat_1", "latency, 1 client (select-only simple, mean)", "µs", "{:.1f}", "lower",
                       "latency 1 client")
        added = self.row("lat_added_1", "added latency vs direct, 1 client", "µs", "{:.1f}", "lower",
                         "added latency")
        added.note["direct"] = "-"
        say("bench: latency at 1 client ...")
        for r in range(self.nrounds):
            this = {}
            for t in self.rotated(self.targets(), r):
                port, _ = ends[t]
                res = self.pgbench(port, ["-S", "-M", "simple", "-c", 1, "-T", self.secs], what=f"{t} latency")
                this[t] = res["lat_ms"] * 1000 if res and res["lat_ms"] is not None else None
                lat.add(t, this[t])
            for t in ("weir", "pgbouncer"):
                if t in this:
                    ok = this[t] is not None and this["direct"] is not None
                    added.add(t, this[t] - this["direct"] if ok else None)

    def group_logins(self):
        logins = self.row("scram_logins", "SCRAM logins/s (pgbench -C -S, 10 clients)", "logins/s", "{:.0f}",
                          "higher", "SCRAM logins/s")
        cpu = self.row("scram_cpu", "pooler CPU per SCRAM login", "µs", "{:.0f}", "lower", "CPU/SCRAM login")
        # weir chooses the iteration count for plain-text passwords (scram_iterations): the client's
        # PBKDF2, not the pooler's, caps logins/s once weir caches its keys.
        fast = self.row("scram_logins_1024", "SCRAM logins/s, weir with scram_iterations = 1024", "logins/s",
                        "{:.0f}", "higher", "SCRAM logins/s i=1024")
        cpu.note["direct"] = fast.note["direct"] = "-"
        say("bench: SCRAM logins ...")
        ends = self.start_poolers("scram", auth_type="scram-sha-256")
        quick = Pooler(self, "weir", "scram-1024", auth_type="scram-sha-256",
                       extra={"scram_iterations": 1024}).start()
        self.poolers.append(quick)
        args = ["-C", "-S", "-c", 10, "-j", 2, "-T", self.secs]
        try:
            for r in range(self.nrounds):
                for t in self.rotated(self.targets() + ["weir-1024"], r):
                    if t == "weir-1024":
                        res = self.timed("weir", quick.port, quick.pid, args, user=self.scram_user,
                                         password=self.scram_password)
                        fast.add("weir", res and res["tps"])
                        continue
                    port, pid = ends[t]
                    res = self.timed(t, port, pid, args, user=self.scram_user, password=self.scram_password)
                    logins.add(t, res and res["tps"])
                    if t != "direct":
                        cpu.add(t, res and res["cpu_us"])
            for v in logins.rounds["pgbouncer"]:
                fast.add("pgbouncer", v)  # the ratio: against PgBouncer's (fixed 4096) logins/s
        finally:
            self.stop_poolers()

    def group_instr(self):
        rows = {}
        for mode in ("simple", "extended"):
            rows[mode] = self.row(f"instr_{mode}_10", f"user-space instructions per txn, {mode}, 10 clients",
                                  "instr", "{:.0f}", "lower", f"instr {mode}")
            rows[mode].note["direct"] = "-"
        if not shutil.which("valgrind"):
            for row in rows.values():
                row.note["weir"] = row.note["pgbouncer"] = "skipped: valgrind missing"
            say("bench: valgrind missing; skipping the callgrind rows (apt-get install valgrind)")
            return
        say("bench: callgrind runs ...")
        cgdir = os.path.join(self.tmp, "callgrind")
        os.makedirs(cgdir, exist_ok=True)
        os.chmod(cgdir, 0o777)   # PgBouncer runs as postgres and writes its profile here
        for r in range(self.cg_rounds):
            for mode, row in rows.items():
                for t in self.rotated([t for t in self.targets() if t != "direct"], r):
                    counts = [self.callgrind_run(t, mode, n, cgdir, r) for n in (1000, 3000)]
                    if None in counts:
                        row.add(t, None)
                    else:
                        row.add(t, (counts[1] - counts[0]) / (2000 * CG_CLIENTS))

    def callgrind_run(self, kind, mode, txns, cgdir, r):
        out = os.path.join(cgdir, f"{kind}.{mode}.{txns}.{r}.out")
        p = Pooler(self, kind, f"cg-{kind}-{mode}-{txns}",
                   wrap=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        p.start(timeout=120)
        try:
            res = self.pgbench(p.port, ["-S", "-M", mode, "-c", CG_CLIENTS, "-j", 2, "-t", txns],
                               what=f"callgrind {kind} {mode}")
        finally:
            p.stop(graceful=True, timeout=120)
        if res is None:
            return None
        try:
            with open(out) as f:
                for line in f:
                    m = re.match(r"(?:totals|summary):\s+(\d+)", line)
                    if m:
                        return int(m.group(1))
        except OSError:
            pass
        say(f"bench: no callgrind totals in {out}:\n{p.log_tail()}")
        return None

    def group_rss(self):
        n = self.idle_n
        have = raise_nofile(n + 1000)
        if have < n + 100:
            n = max(100, have - 200)
            say(f"bench: fd limit {have}: measuring with {n} idle clients instead of {self.idle_n}")
        row = self.row("rss_idle", f"RSS per idle client ({n} idle clients)", "bytes", "{:.0f}", "lower",
                       "RSS/idle client")
        row.note["direct"] = "-"
        say(f"bench: RSS with {n} idle clients ...")
        for r in range(self.nrounds):
            for t in self.rotated([t for t in self.targets() if t != "direct"], r):
                row.add(t, self.rss_run(t, n))

    def rss_run(self, kind, n):
        p = Pooler(self, kind, f"rss-{kind}", max_client_conn=n + 200).start()
        warm = IdleClients(p.port, self.user, self.db)
        idle = IdleClients(p.port, self.user, self.db)
        try:
            # A first client makes the pooler connect its server and settle its one-time allocations.
            warm.open(1)
            time.sleep(0.5)
            before = vm_rss(p.pid)
            idle.open(n)
            time.sleep(1.0)
            after = vm_rss(p.pid)
            return (after - before) / n
        except (RuntimeError, OSError) as e:
            say(f"bench: RSS run for {kind} failed: {e}\n{p.log_tail()}")
            return None
        finally:
            idle.close()
            warm.close()
            p.stop()

    def group_workers(self):
        counts = (1, 2, 4)
        rows = {}
        for n in counts:
            rows[n] = (self.row(f"workers_{n}_tps", f"TPS, weir workers = {n}, select-only simple, 100 clients",
                                "txn/s", "{:.0f}", "higher", f"TPS workers={n}"),
                       self.row(f"workers_{n}_cpu", f"weir CPU per txn, workers = {n}", "µs", "{:.1f}", "lower",
                                f"CPU workers={n}"),
                       self.row(f"workers_{n}_busiest", f"busiest thread's share of weir's CPU, workers = {n}",
                                "%", "{:.0f}", None, f"busiest thread workers={n}"))
            for row in rows[n]:
                row.note["direct"] = row.note["pgbouncer"] = "-"
        say("bench: weir with 1, 2 and 4 workers ...")
        poolers = {n: Pooler(self, "weir", f"workers-{n}", workers=n).start() for n in counts}
        self.poolers += poolers.values()
        try:
            for r in range(self.nrounds):
                for n in self.rotated(list(counts), r):
                    p = poolers[n]
                    before = thread_ticks(p.pid)
                    res = self.timed("weir", p.port, p.pid, ["-S", "-M", "simple", "-c", 100, "-j", 2,
                                                             "-T", self.secs])
                    after = thread_ticks(p.pid)
                    used = [after[t] - before.get(t, 0) for t in after]
                    rows[n][0].add("weir", res and res["tps"])
                    rows[n][1].add("weir", res and res["cpu_us"])
                    rows[n][2].add("weir", 100.0 * max(used) / sum(used) if res and sum(used) > 0 else None)
        finally:
            self.stop_poolers()

    def group_overload(self, ends):
        n = self.over_n
        label = f"{n} clients over a pool of {self.over_pool}"
        rows = {
            "tps": self.row("over_tps", f"TPS, {label}", "txn/s", "{:.0f}", "higher", "TPS overload"),
            "p50": self.row("over_p50", f"latency p50, {label}", "ms", "{:.2f}", "lower", "p50 overload"),
            "p99": self.row("over_p99", f"latency p99, {label}", "ms", "{:.2f}", "lower", "p99 overload"),
            "max": self.row("over_max", f"latency max, {label}", "ms", "{:.1f}", "lower", "max overload"),
            "min_txn": self.row("over_min_txn", f"fewest txns of one client, {label}", "txns", "{:.0f}",
                                "higher", "fewest txns/client"),
            "max_txn": self.row("over_max_txn", f"most txns of one client, {label}", "txns", "{:.0f}", None,
                                "most txns/client"),
        }
        for row in rows.values():
            row.note["direct"] = "-"
        raise_nofile(n + 500)
        say(f"bench: {label} ...")
        for r in range(self.nrounds):
            for t in self.rotated([t for t in self.targets() if t != "direct"], r):
                port, _ = ends[t]
                prefix = os.path.join(self.tmp, f"over-{t}-{r}")
                res = self.pgbench(port, ["-S", "-M", "simple", "-c", n, "-j", 2, "-T", self.secs,
                                          "--log", f"--log-prefix={prefix}"], db="bench_over", what=f"{t} overload")
                stats = self.txn_log_stats(prefix, n) if res else None
                for k, row in rows.items():
                    if k == "tps":
                        row.add(t, res and res["tps"])
                    else:
                        row.add(t, stats and stats[k])

    @staticmethod
    def txn_log_stats(prefix, clients):
        """p50/p99/max latency (ms) and per-client counts from pgbench --log files (client_id, txn
        number, latency µs, ...); clients missing from the log completed nothing and count as 0."""
        lats, per_client = [], [0] * clients
        for path in glob.glob(prefix + ".*"):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3:
                        continue
                    cid = int(parts[0])
                    if 0 <= cid < clients:
                        per_client[cid] += 1
                    lats.append(int(parts[2]))
            os.unlink(path)
        if not lats:
            return None
        lats.sort()

        def pct(q):
            return lats[min(len(lats) - 1, int(q * len(lats)))] / 1000.0
        return {"p50": pct(0.50), "p99": pct(0.99), "max": lats[-1] / 1000.0,
                "min_txn": min(per_client), "max_txn": max(per_client)}

    def run(self):
        main_groups = [g for g in ("tps", "latency", "overload") if g in self.groups]
        if main_groups:
            ends = self.start_poolers("main")
            try:
                for g in main_groups:
                    self.timed_group(g, getattr(self, f"group_{g}"), ends)
            finally:
                self.stop_poolers()
        for g in ("logins", "instr", "rss", "workers"):
            if g in self.groups:
                self.timed_group(g, getattr(self, f"group_{g}"))

    def timed_group(self, name, fn, *args):
        t0 = time.monotonic()
        fn(*args)
        say(f"bench: {name} done in {time.monotonic() - t0:.0f} s")

    # --- output ---------------------------------------------------------------------------------

    def machine(self):
        model = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}"

    def versions(self):
        def first_line(cmd):
            try:
                return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "?"
        commit = first_line(["git", "-C", ROOT, "describe", "--always", "--dirty"])
        pgb = first_line([self.pgb_bin, "--version"]) if self.pgb_bin else "not installed"
        pg = first_line([self.pgbench_bin, "--version"]).replace("pgbench (PostgreSQL) ", "")
        return f"weir {commit}, {pgb}, PostgreSQL/pgbench {pg}"

    def header(self):
        return (f"Transaction mode, pool {self.pool}, {self.secs} s per run, {self.nrounds} rounds alternating "
                f"(median), loopback; weir with workers = {self.cmp_workers} (one event loop, like PgBouncer) "
                f"except in the workers rows; ratio = weir / PgBouncer")

    def table_lines(self):
        w = max(len(f"{r.label} ({r.unit})") for r in self.rows)
        lines = [f"{'':<{w}}  {'direct':>12} {'weir':>12} {'pgbouncer':>12} {'weir/pgb':>9} {'spread':>7}"]
        for r in self.rows:
            ratio = r.ratio()
            name = f"{r.label} ({r.unit})"
            lines.append(f"{name:<{w}}  {r.cell('direct'):>12} {r.cell('weir'):>12} {r.cell('pgbouncer'):>12} "
                         f"{'-' if ratio is None else f'{ratio:.2f}':>9} {r.spread_cell():>7}")
        return lines

    def markdown(self, when, load):
        lines = [f"Measured {when} on {self.machine()}; {self.versions()}.", "",
                 f"{self.header()}; spread = the largest max/min of one target's rounds; "
                 f"load average before/after {load}.", "",
                 "| metric | unit | PostgreSQL direct | weir | PgBouncer | weir / PgBouncer | spread |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            ratio = r.ratio()
            lines.append(f"| {r.label} | {r.unit} | {r.cell('direct')} | {r.cell('weir')} | {r.cell('pgbouncer')} "
                         f"| {'-' if ratio is None else f'{ratio:.2f}'} | {r.spread_cell()} |")
        return lines

    def write_csv(self):
        with open(os.path.join(self.out, "bench-results.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "label", "unit", "better", "direct", "weir", "pgbouncer", "weir_per_pgbouncer",
                        "spread"])
            for r in self.rows:
                vals = [r.value(t) for t in TARGETS]
                ratio = r.ratio()
                w.writerow([r.key, r.label, r.unit, r.better or ""] +
                           ["" if v is None else f"{v:.6g}" for v in vals] +
                           ["" if ratio is None else f"{ratio:.4f}", "" if r.spread() is None else f"{r.spread():.4f}"])
        with open(os.path.join(self.out, "bench-rounds.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "target", "round", "value"])
            for r in self.rows:
                for t in TARGETS:
                    for i, v in enumerate(r.rounds[t]):
                        w.writerow([r.key, t, i + 1, "" if v is None else f"{v:.6g}"])

    def write_chart(self, when):
        if not shutil.which("gnuplot"):
            say("bench: gnuplot missing; no chart (apt-get install gnuplot-nox)")
            return None
        by_key = {r.key: r for r in self.rows}

        def dat(name, keys, targets):
            path = os.path.join(self.out, name)
            n = 0
            with open(path, "w") as f:
                for k in keys:
                    r = by_key.get(k)
                    if r is None:
                        continue
                    vals = []
                    for t in targets:
                        v = r.value(t)
                        if v is not None and k.startswith("over_p"):
                            v = v * 1000   # ms -> µs, like the 1-client latency
                        vals.append("-" if v is None or v <= 0 else f"{v:.6g}")
                    f.write(f'"{r.short}" ' + " ".join(vals) + "\n")
                    n += 1
            return path, n

        tps_keys = [r.key for r in self.rows if r.key.startswith("tps_") or r.key == "over_tps"]
        cpu_keys = [r.key for r in self.rows if r.key.startswith("cpu_") or r.key == "scram_cpu"]
        lat_keys = [k for k in ("lat_1", "over_p50", "over_p99") if k in by_key]
        tps, n_tps = dat("chart-tps.dat", tps_keys, TARGETS)
        cpu, n_cpu = dat("chart-cpu.dat", cpu_keys, ("weir", "pgbouncer"))
        lat, n_lat = dat("chart-latency.dat", lat_keys, TARGETS)
        ratio_path = os.path.join(self.out, "chart-ratio.dat")
        n_ratio = 0
        with open(ratio_path, "w") as f:
            for r in self.rows:
                ratio = r.ratio()
                if ratio is not None and ratio > 0 and r.better:
                    arrow = "↑" if r.better == "higher" else "↓"
                    weir_better = ratio > 1 if r.better == "higher" else ratio < 1
                    colour = 0x2ca02c if weir_better else 0xd62728
                    f.write(f'"{r.short} {arrow}" {ratio:.6g} {colour}\n')
                    n_ratio += 1
        png = os.path.join(self.out, "bench-results.png")
        plots = []
        style = ("set style data histogram; set style histogram clustered gap 1; "
                 "set style fill solid 0.85 border -1; set boxwidth 0.9; set xtics rotate by -35 left nomirror; "
                 "set grid ytics; set key top left; set logscale y;")
        colours = {"direct": ("PostgreSQL direct", "#999999"), "weir": ("weir", "#1f77b4"),
                   "pgbouncer": ("PgBouncer", "#ff7f0e")}

        def bars(path, title, targets):
            series = [f"'{path if i == 0 else ''}' using {i + 2}{':xtic(1)' if i == 0 else ''} "
                      f"title '{colours[t][0]}' lc rgb '{colours[t][1]}'" for i, t in enumerate(targets)]
            return f'{style} set title "{title}";\nplot ' + ", ".join(series)
        if n_tps:
            plots.append(bars(tps, "Transactions per second (higher is better)", TARGETS))
        if n_cpu:
            plots.append(bars(cpu, "Pooler CPU µs per transaction / login (lower is better)", ("weir", "pgbouncer")))
        if n_lat:
            plots.append(bars(lat, "Latency µs: 1 client mean; overload p50/p99 (lower is better)", TARGETS))
        if n_ratio:
            plots.append(f"""{style} set boxwidth 0.6; set xrange [-0.6:{n_ratio - 0.4}];
set title "weir ÷ PgBouncer (↑ higher is better, ↓ lower is better; green: weir better)";
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb '#444444';
plot '{ratio_path}' using 0:2:3:xtic(1) with boxes notitle lc rgb variable""")
        if not plots:
            return None
        cols = 2 if len(plots) > 1 else 1
        rows = (len(plots) + cols - 1) // cols
        script = [f"set terminal pngcairo noenhanced size {800 * cols},{560 * rows} font 'DejaVu Sans,10'",
                  "set encoding utf8", f"set output '{png}'", "set datafile missing '-'",
                  f'set multiplot layout {rows},{cols} title "weir vs PgBouncer vs PostgreSQL — {when}, '
                  f'{self.machine()}" font ",12"']
        for p in plots:
            script += ["reset; set datafile missing '-'; set bmargin 8; set rmargin 8", p]
        script.append("unset multiplot")
        gp = os.path.join(self.out, "bench-chart.gp")
        with open(gp, "w") as f:
            f.write("\n".join(script) + "\n")
        res = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if res.returncode != 0:
            say(f"bench: gnuplot failed:\n{res.stderr[-1500:]}")
            return None
        return png

    def report(self):
        os.makedirs(self.out, exist_ok=True)
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        load = " / ".join(", ".join(f"{x:.1f}" for x in la) for la in (self.load_before, os.getloadavg()))
        print()
        print(f"== weir vs PgBouncer vs PostgreSQL. {self.header()} ==")
        for line in self.table_lines():
            print(line)
        print(f"-- {when}; {self.machine()}; {self.versions()}; load average before/after {load}")
        self.write_csv()
        with open(os.path.join(self.out, "bench-results.md"), "w") as f:
            f.write("\n".join(self.markdown(when, load)) + "\n")
        png = self.write_chart(when)
        print(f"-- written: {self.out}/bench-results.csv, bench-rounds.csv, bench-results.md"
              + (", bench-results.png" if png else ""))

    def cleanup(self):
        self.stop_poolers()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    b = Bench()
    if b.pgb_bin is None:
        say("bench: pgbouncer is not installed; the PgBouncer column stays empty (apt-get install pgbouncer)")
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            sys.exit("bench: running as root needs a `postgres` user to run PgBouncer as")
    try:
        b.run()
    except KeyboardInterrupt:
        say("bench: interrupted; reporting what was measured")
    finally:
        b.cleanup()
    b.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
