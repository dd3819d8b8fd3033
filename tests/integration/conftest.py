"""Fixtures for weir's integration tests.

The PostgreSQL cluster comes from tests/tools/pgcluster.sh (tests/tools/check.sh
starts it and exports WEIR_TEST_*; WEIR_DAEMON is the weir binary). Each test
gets its own weir process with a generated PgBouncer-style ini on a free port,
stopped at teardown; a weir that died, crashed, or reported a sanitizer error
or an invalid state transition fails the test.

Quick loop:
    tests/tools/pgcluster.sh start /tmp/it-pg; . /tmp/it-pg/env.sh
    WEIR_DAEMON=$PWD/daemon/weir /usr/bin/python3 -m pytest -x -q tests/integration -k NAME
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest

ROOT = os.environ.get("WEIR_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DAEMON = os.environ.get("WEIR_DAEMON") or os.path.join(ROOT, "daemon", "weir")

# Passwords weir checks clients against (auth_file) and, being plain text,
# also uses to log into PostgreSQL. weir_test is trusted by PostgreSQL.
TEST_PASSWORD = "weir-test-pw"

# Lines in weir's log or stderr that always mean a bug.
BAD_OUTPUT = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:", "invalid client transition",
              "invalid server transition")


def _die_with_parent():
    """In the child before exec: get SIGKILL when the test process dies, so a
    killed pytest (timeout) leaves no weir behind."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stacks(pid):
    """Backtraces of a stuck weir (gdb), so a hang seen once can be found."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(gdb not installed)"
    try:
        r = subprocess.run([gdb, "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=60)
        return r.stdout[-6000:] or r.stderr[-2000:]
    except Exception as e:  # a diagnostic must not hide the real failure
        return "(gdb failed: %s)" % e


def read_text(path):
    """A log file's text so far ("" before the process made it)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value; -> that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class PG:
    """The test cluster, as pgcluster.sh describes it."""

    def __init__(self, env):
        self.host = env["WEIR_TEST_PGHOST"]
        self.port = int(env["WEIR_TEST_PGPORT"])
        self.user = env["WEIR_TEST_USER"]
        self.db = env["WEIR_TEST_DB"]
        self.scram_user = env["WEIR_TEST_SCRAM_USER"]
        self.scram_password = env["WEIR_TEST_SCRAM_PASSWORD"]
        self.md5_user = env["WEIR_TEST_MD5_USER"]
        self.md5_password = env["WEIR_TEST_MD5_PASSWORD"]
        self.restart_cmd = env.get("WEIR_TEST_PG_RESTART")
        self.bindir = env.get("WEIR_TEST_PGBIN", "")
        self._made = set()

    def connect(self, dbname=None, **kw):
        """A direct superuser connection (autocommit)."""
        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=dbname or self.db,
                               autocommit=True, connect_timeout=10, **kw)

    def entry(self, dbname=None, **extra):
        """A [databases] value pointing at this cluster."""
        s = "host=%s port=%d dbname=%s" % (self.host, self.port, dbname or self.db)
        for k, v in extra.items():
            s += " %s=%s" % (k, v)
        return s

    def database(self, name, owner=None):
        """Create database name once (kept across runs on a reused cluster)."""
        if name in self._made:
            return name
        with self.connect() as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                c.execute('CREATE DATABASE "%s" OWNER "%s"' % (name, owner or self.user))
        self._made.add(name)
        return name

    def backends(self, datname, usename=None):
        """Client backends connected to datname (optionally as usename)."""
        with self.connect() as c:
            sql = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                   "AND datname = %s AND pid <> pg_backend_pid()")
            args = [datname]
            if usename:
                sql += " AND usename = %s"
                args.append(usename)
            return c.execute(sql, args).fetchone()[0]

    def tool(self, name):
        p = os.path.join(self.bindir, name)
        return p if os.path.exists(p) else (shutil.which(name) or name)


@pytest.fixture(scope="session")
def pg():
    if "WEIR_TEST_PGPORT" not in os.environ:
        pytest.skip("no test cluster: run tests/tools/pgcluster.sh start DIR and source DIR/env.sh")
    if not os.access(DAEMON, os.X_OK):
        pytest.fail("weir daemon not built: %s" % DAEMON)
    return PG(os.environ)


def ini_text(databases, users, settings):
    lines = ["[databases]"]
    lines += ["%s = %s" % (k, v) for k, v in databases.items()]
    lines.append("[users]")
    lines += ["%s = %s" % (k, v) for k, v in users.items()]
    lines.append("[pgbouncer]")
    lines += ["%s = %s" % (k, v) for k, v in settings.items()]
    return "\n".join(lines) + "\n"


class Weir:
    """One weir process and its files."""

    def __init__(self, pg, pool_mode="transaction", settings=None, databases=None, users=None,
                 userlist=None, args=(), daemon=None):
        self.pg = pg
        self.daemon = daemon or DAEMON  # e.g. the ASan+UBSan build, .build/asan-weir
        self.dir = tempfile.mkdtemp(prefix="weir-it-")
        os.chmod(self.dir, 0o755)
        self.ini = os.path.join(self.dir, "weir.ini")
        self.log = os.path.join(self.dir, "weir.log")
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.auth_file = os.path.join(self.dir, "userlist.txt")
        self.port = free_port()
        self.args = list(args)
        self.databases = dict(databases) if databases is not None else {pg.db: pg.entry()}
        self.users = dict(users or {})
        self.userlist = dict(userlist) if userlist is not None else {
            pg.user: TEST_PASSWORD,
            pg.scram_user: pg.scram_password,
            pg.md5_user: pg.md5_password,
        }
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": self.dir,
            "auth_type": "trust",
            "auth_file": self.auth_file,
            "pool_mode": pool_mode,
            "default_pool_size": 5,
            "max_client_conn": 300,
            "logfile": self.log,
            "admin_users": pg.user,
        }
        if os.environ.get("WEIR_TEST_WORKERS"):  # e.g. 4 for the ThreadSanitizer run
            self.settings["workers"] = int(os.environ["WEIR_TEST_WORKERS"])
        self.settings.update(settings or {})
        self.proc = None
        self.expected_exit = False
        self.conns = []

    # ---- files ----
    def write(self):
        with open(self.auth_file, "w") as f:
            for u, p in self.userlist.items():
                f.write('"%s" "%s"\n' % (u, p))
        with open(self.ini, "w") as f:
            f.write(ini_text(self.databases, self.users, self.settings))

    def log_text(self):
        return read_text(self.log)

    def stderr_text(self):
        return read_text(self.stderr_path)

    # ---- process ----
    def start(self):
        for attempt in range(3):
            self.write()
            err = open(self.stderr_path, "ab")
            self.proc = subprocess.Popen([self.daemon] + self.args + [self.ini], stdout=err, stderr=err,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            err.close()
            try:
                self.wait_listening()
                return self
            except AssertionError:
                if self.proc.poll() is not None and "bind" in (self.log_text() + self.stderr_text()).lower() \
                        and attempt < 2:
                    self.port = free_port()  # taken between picking and binding
                    self.settings["listen_port"] = self.port
                    continue
                raise

    def wait_listening(self, timeout=10.0):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("weir exited with %s at start:\n%s" % (self.proc.returncode, self.stderr_text()[-3000:]))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_for(up, timeout, what="weir to listen on %d" % self.port)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("weir (pid %d) still running after %.1fs" % (self.pid, timeout))

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def reload(self, settings=None, databases=None, users=None, userlist=None, remove_databases=()):
        """Rewrite the ini (and auth_file), SIGHUP, wait until weir logged the reload."""
        if settings:
            self.settings.update(settings)
        if databases:
            self.databases.update(databases)
        for name in remove_databases:
            self.databases.pop(name, None)
        if users:
            self.users.update(users)
        if userlist:
            self.userlist.update(userlist)
        before = self.log_text().count("reloading config")
        self.write()
        self.signal(signal.SIGHUP)
        wait_for(lambda: self.log_text().count("reloading config") > before, 5, what="weir to log the reload")
        # The reload is done in the same loop iteration as the log line; one
        # round trip through weir proves the loop has moved on.
        time.sleep(0.05)

    # ---- clients ----
    def dsn(self, dbname=None, user=None, password=None):
        user = user or self.pg.user
        if password is None:
            password = self.userlist.get(user, "")
        return "host=127.0.0.1 port=%d dbname=%s user=%s password=%s" % (
            self.port, dbname or self.pg.db, user, password)

    def url(self, dbname=None, user=None, password=None):
        user = user or self.pg.user
        if password is None:
            password = self.userlist.get(user, "")
        return "postgresql://%s:%s@127.0.0.1:%d/%s" % (user, password, self.port, dbname or self.pg.db)

    def connect(self, dbname=None, user=None, password=None, autocommit=True, **kw):
        """A psycopg connection through weir (no server-side prepared
        statements unless prepare_threshold is given)."""
        kw.setdefault("prepare_threshold", None)
        kw.setdefault("connect_timeout", 10)
        user = user or self.pg.user
        if password is None:
            password = self.userlist.get(user, "")
        conn = psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname or self.pg.db, user=user,
                               password=password, autocommit=autocommit, **kw)
        self.conns.append(conn)
        return conn

    # ---- teardown ----
    def finish(self):
        """Stop weir; -> list of problems found."""
        problems = []
        for c in self.conns:
            try:
                c.close()
            except Exception:
                pass
        if self.proc is not None:
            if self.proc.poll() is not None:
                if not self.expected_exit:
                    problems.append("weir exited unexpectedly with status %s" % self.proc.returncode)
            else:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    problems.append("weir did not exit within 5s of SIGTERM; where it was:\n" + _stacks(self.pid))
                    self.proc.kill()
                    self.proc.wait()
                    self.expected_exit = True  # our SIGKILL, reported just above
            rc = self.proc.returncode
            if rc is not None and rc < 0 and not (self.expected_exit and rc == -signal.SIGKILL):
                problems.append("weir was killed by signal %d" % -rc)
        out = self.stderr_text() + self.log_text()
        for bad in BAD_OUTPUT:
            if bad in out:
                lines = [l for l in out.splitlines() if bad in l][:5]
                problems.append("weir reported %r:\n  %s" % (bad, "\n  ".join(lines)))
        if problems:
            print("---- weir log (%s), last lines ----" % self.log)
            print("\n".join(self.log_text().splitlines()[-60:]))
            print("---- weir stderr, last lines ----")
            print("\n".join(self.stderr_text().splitlines()[-60:]))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems


@pytest.fixture
def weir_factory(pg):
    made = []

    def make(**kw):
        w = Weir(pg, **kw)
        made.append(w)
        return w.start()

    yield make
    problems = []
    for w in made:
        problems += w.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def relay(pg):
    """A server address in front of pg that is down until relay.start() (relay.py)."""
    from relay import Relay
    r = Relay((pg.host, pg.port))
    yield r
    r.stop()


@pytest.fixture
def weir(weir_factory):
    """weir in transaction mode, pool of 5, trust auth, database weir_test."""
    return weir_factory()


def sqlstate_of(exc):
    return getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None) \
        or getattr(exc, "pgcode", None)


# ---- a per-test time limit (pytest-timeout is not installed) ----

DEFAULT_TIMEOUT = 60


class TestTimeout(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): fail the test when it runs longer")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("timeout")
    limit = int(m.args[0]) if m else DEFAULT_TIMEOUT

    def expired(signum, frame):
        raise TestTimeout("test still running after %ds (hung?)" % limit)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
