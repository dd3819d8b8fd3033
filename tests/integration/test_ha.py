"""High availability: weir in front of a real streaming-replication cluster.

Each scenario builds its own PostgreSQL 15 primary and standbys
(pg_basebackup -R) in temporary directories on free ports, running as the
`postgres` user when the tests run as root, and tears them down afterwards.

- failover: a write load through a read-write multi-host entry; the primary is
  stopped and the standby promoted; weir moves to the new primary by itself,
  idle clients carry on, a client caught in a transaction gets an error with a
  SQLSTATE, every acknowledged insert is on the new primary, and the old
  primary, back as a standby, gets no server connection from weir.
- read replicas: a standby entry over two standbys balances server
  connections between them; a standby whose replay is paused (lag) or that
  stops is left out, and is used again once it has caught up.
- so_reuseport: two weir processes serve one port; HAProxy (conf/haproxy.cfg)
  in front of two weir instances.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

from conftest import ROOT, Weir, free_port, wait_for
from console import Console, http_get, parse_prometheus

PGBIN = os.environ.get("WEIR_TEST_PGBIN") or "/usr/lib/postgresql/15/bin"
AS_ROOT = os.geteuid() == 0
OSUSER = "postgres" if AS_ROOT else pwd.getpwuid(os.geteuid()).pw_name


def as_pg(args, **kw):
    """Run a PostgreSQL program as the cluster's OS user."""
    if AS_ROOT:
        args = ["runuser", "-u", "postgres", "--"] + args
    kw.setdefault("cwd", "/")
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    kw.setdefault("timeout", 60)
    r = subprocess.run(args, **kw)
    if r.returncode != 0:
        raise AssertionError("%s failed:\n%s" % (" ".join(args), r.stdout.decode(errors="replace")[-2000:]))
    return r


class Node:
    """One PostgreSQL server of the test cluster."""

    def __init__(self, base, name):
        self.name = name
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "log")
        self.port = free_port()
        os.makedirs(self.sock)
        if AS_ROOT:
            for p in (self.dir, self.sock):
                shutil.chown(p, "postgres", "postgres")

    def start(self):
        as_pg([PGBIN + "/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o",
               "-p %d -k %s -c listen_addresses=127.0.0.1" % (self.port, self.sock), "start"])

    def stop(self, mode="fast"):
        as_pg([PGBIN + "/pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"])

    def running(self):
        return subprocess.run((["runuser", "-u", "postgres", "--"] if AS_ROOT else []) +
                              [PGBIN + "/pg_ctl", "-D", self.data, "status"], cwd="/",
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def promote(self):
        as_pg([PGBIN + "/pg_ctl", "-D", self.data, "-w", "-t", "60", "promote"])

    def connect(self, **kw):
        return psycopg.connect(host="127.0.0.1", port=self.port, user=OSUSER, dbname="postgres",
                               autocommit=True, connect_timeout=10, **kw)

    def sql(self, q, *args):
        with self.connect() as c:
            cur = c.execute(q, args or None)
            return cur.fetchall() if cur.description else None

    def in_recovery(self):
        return self.sql("SELECT pg_is_in_recovery()")[0][0]

    def follow(self, primary):
        """Turn this (stopped) node into a standby of primary."""
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write("primary_conninfo = 'host=127.0.0.1 port=%d user=%s application_name=%s'\n"
                    % (primary.port, OSUSER, self.name))
        open(os.path.join(self.data, "standby.signal"), "w").close()
        if AS_ROOT:
            for p in ("postgresql.auto.conf", "standby.signal"):
                shutil.chown(os.path.join(self.data, p), "postgres", "postgres")


class Cluster:
    """A primary and n streaming standbys, made with initdb and pg_basebackup -R."""

    def __init__(self, standbys):
        self.base = tempfile.mkdtemp(prefix="ha-")
        os.chmod(self.base, 0o755)
        self.primary = Node(self.base, "node0")
        self.nodes = [self.primary]
        p = self.primary
        as_pg([PGBIN + "/initdb", "-D", p.data, "-U", OSUSER, "-A", "trust", "--no-sync", "-E", "UTF8",
               "--locale=C.UTF-8"])
        with open(os.path.join(p.data, "postgresql.conf"), "a") as f:
            f.write("fsync = off\nfull_page_writes = on\nwal_log_hints = on\nshared_buffers = 16MB\n"
                    "max_connections = 60\nmax_wal_senders = 10\nwal_keep_size = 64MB\n"
                    "log_min_messages = warning\n")
        with open(os.path.join(p.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n"
                    "local replication all trust\nhost replication all 127.0.0.1/32 trust\n")
        p.start()
        for i in range(standbys):
            s = Node(self.base, "node%d" % (i + 1))
            as_pg([PGBIN + "/pg_basebackup", "-D", s.data, "-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1",
                   "-p", str(p.port), "-U", OSUSER, "--no-sync"])
            with open(os.path.join(s.data, "postgresql.auto.conf"), "a") as f:
                f.write("primary_conninfo = 'host=127.0.0.1 port=%d user=%s application_name=%s'\n"
                        % (p.port, OSUSER, s.name))
            s.start()
            self.nodes.append(s)
        for s in self.nodes[1:]:
            wait_for(lambda: s.in_recovery() and self.streaming(s), 30, what="%s to stream" % s.name)

    def streaming(self, standby):
        return self.primary.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
                                "AND state = 'streaming'", standby.name)[0][0] == 1

    def destroy(self):
        for n in self.nodes:
            if n.running():
                try:
                    n.stop("immediate")
                except AssertionError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)


def entry(nodes, tsa, **extra):
    kv = {"host": ",".join("127.0.0.1" for _ in nodes), "port": ",".join(str(n.port) for n in nodes),
          "dbname": "postgres", "user": OSUSER, "target_session_attrs": tsa}
    kv.update(extra)
    return " ".join("%s=%s" % kv_ for kv_ in kv.items())


class FakePG:
    """What conftest's Weir needs to know about "the" PostgreSQL."""
    user = OSUSER
    db = "app"
    scram_user = md5_user = "nobody"
    scram_password = md5_password = "x"

    def entry(self):
        return ""


def make_weir(databases, settings=None):
    s = {"health_check_period": "0.2", "server_login_retry": "1", "query_wait_timeout": "30",
         "default_pool_size": 8, "metrics_port": free_port(), "server_lifetime": "3600"}
    s.update(settings or {})
    w = Weir(FakePG(), settings=s, databases=databases, userlist={OSUSER: "x"})
    w.metrics = "http://127.0.0.1:%d" % s["metrics_port"]
    return w


@pytest.fixture
def started():
    """Start Weir objects and check them at the end like weir_factory does."""
    made = []

    def start(w):
        made.append(w)
        return w.start()
    yield start
    problems = []
    for w in made:
        if "invalid check transition" in w.log_text():
            problems.append("weir logged an invalid check transition")
        problems += w.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def host_metric(w, name, db, port):
    """The value of a per-host /metrics series."""
    fams = parse_prometheus(http_get(w.metrics + "/metrics")[2])
    for sname, labels, value in fams[name].samples:
        if labels.get("database") == db and labels.get("port") == str(port):
            return value
    raise AssertionError("no %s for %s port %s" % (name, db, port))


def server_ports(console, db):
    return sorted(r["port"] for r in console.show("SERVERS") if r["database"] == db)


def db_row(console, name):
    return [r for r in console.show("DATABASES") if r["name"] == name][0]


def host_states(console, name):
    """SHOW DATABASES' hosts column -> {port: (role, state)}."""
    out = {}
    for part in (db_row(console, name)["hosts"] or "").split(", "):
        m = re.match(r"[^ ]+:(\d+) (\w+) (\w+)", part)
        if m:
            out[int(m.group(1))] = (m.group(2), m.group(3))
    return out


# ---------------------------------------------------------------------------
# failover


class Writers:
    """Clients inserting through weir, each recording the ids it saw committed."""

    def __init__(self, w, n, first_id=1):
        self.w = w
        self.stop = threading.Event()
        self.acked = []
        self.errors = []
        self.lock = threading.Lock()
        self.next_id = first_id - 1
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(n)]

    def new_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def run(self, i):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.w.dsn("app", user=OSUSER, password="x"), autocommit=True,
                                           connect_timeout=10)
                n = self.new_id()
                conn.execute("INSERT INTO t (id, client) VALUES (%s, %s)", (n, i))
                with self.lock:
                    self.acked.append(n)
            except psycopg.Error as e:
                with self.lock:
                    self.errors.append((time.monotonic(), e.sqlstate, str(e).strip()))
                if conn is not None and conn.closed:
                    conn = None
                time.sleep(0.05)
            time.sleep(0.005)
        if conn is not None:
            conn.close()

    def count(self):
        with self.lock:
            return len(self.acked)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.mark.timeout(120)
def test_failover_to_promoted_standby(started):
    cl = Cluster(standbys=1)
    try:
        old, new = cl.nodes
        old.sql("CREATE TABLE t (id int PRIMARY KEY, client int)")
        w = make_weir({"app": entry([old, new], "read-write"),
                       "ro": entry([old, new], "standby")})
        started(w)
        console = Console(w)
        idle = w.connect("app", user=OSUSER, password="x")
        assert idle.execute("SELECT inet_server_port()").fetchone()[0] == old.port
        wait_for(lambda: host_states(console, "app") == {old.port: ("primary", "up"), new.port: ("standby", "up")},
                 10, what="health checks to find the roles")

        with Writers(w, 4) as load:
            wait_for(lambda: load.count() >= 50, 20, what="writes through weir")
            # a client in the middle of a transaction when the primary goes
            mid = w.connect("app", user=OSUSER, password="x", autocommit=False)
            mid.execute("INSERT INTO t (id, client) VALUES (-1, -1)")
            before = load.count()

            old.stop("fast")  # every committed transaction reaches the standby first
            new.promote()
            t_promoted = time.monotonic()
            wait_for(lambda: load.count() >= before + 100, 30, what="writes to resume on the new primary")
            resumed = time.monotonic() - t_promoted

        # the transaction in flight failed with a clear error, and did not commit
        with pytest.raises(psycopg.Error) as err:
            mid.execute("INSERT INTO t (id, client) VALUES (-2, -1)")
            mid.commit()
        assert err.value.sqlstate in ("57P01", "08P01", "08006", None), err.value
        assert "terminating connection" in str(err.value) or "server conn crashed" in str(err.value) \
            or "closed" in str(err.value), str(err.value)

        # the idle client did not notice
        assert idle.execute("SELECT inet_server_port()").fetchone()[0] == new.port

        # every acknowledged insert is on the new primary; nothing unacknowledged appeared
        rows = {r[0] for r in new.sql("SELECT id FROM t")}
        missing = set(load.acked) - rows
        assert not missing, "acknowledged inserts lost: %s" % sorted(missing)[:20]
        assert -1 not in rows and -2 not in rows
        errors_after = [e for e in load.errors if e[0] > t_promoted + resumed + 1]
        assert not errors_after, errors_after[:5]
        print("failover: %d acknowledged inserts, %d client errors during the switch, writes resumed %.2fs "
              "after promotion" % (len(load.acked), len(load.errors), resumed))

        # weir now knows the new topology everywhere it shows it
        states = host_states(console, "app")
        assert states[new.port] == ("primary", "up") and states[old.port][1] == "down", states
        assert set(server_ports(console, "app")) == {new.port}
        for r in console.show("SERVERS"):
            if r["database"] == "app":
                assert (r["role"], r["host_state"]) == ("primary", "up"), r
        # /healthz: app has its primary; ro (checked from the start) has no
        # standby left until the old primary is back as one
        status, _, body = wait_for(lambda: (lambda r: r if "database ro: no usable standby" in r[2] else None)(
            http_get(w.metrics + "/healthz")), 10, what="healthz to see ro without a standby")
        assert status == 503 and "database app: reachable" in body, body
        assert host_metric(w, "weir_backend_host_up", "app", old.port) == 0
        assert host_metric(w, "weir_backend_host_up", "app", new.port) == 1
        assert host_metric(w, "weir_backend_host_primary", "app", new.port) == 1

        # the old primary comes back as a standby of the new one: never written to
        old.follow(new)
        old.start()
        wait_for(lambda: host_states(console, "app").get(old.port) == ("standby", "up"), 20,
                 what="weir to see the old primary back as a standby")
        wait_for(lambda: http_get(w.metrics + "/healthz")[0] == 200, 10, what="healthz 200 with a standby back")
        with Writers(w, 2, first_id=1000000) as load2:
            wait_for(lambda: load2.count() >= 50, 20, what="writes after the old primary is back")
        assert not load2.errors, load2.errors[:5]
        assert set(server_ports(console, "app")) == {new.port}
        rows = {r[0] for r in new.sql("SELECT id FROM t")}
        assert set(load2.acked) <= rows
        # weir's only session there is its health check, not a server connection
        names = [r[0] for r in old.sql("SELECT application_name FROM pg_stat_activity WHERE backend_type = "
                                        "'client backend' AND pid <> pg_backend_pid()")]
        assert names == ["weir health check"] * len(names) and 1 <= len(names) <= 2, names
        # and the read-only entry now reads from it
        ro = w.connect("ro", user=OSUSER, password="x")
        assert ro.execute("SELECT inet_server_port()").fetchone()[0] == old.port
    finally:
        cl.destroy()


@pytest.mark.timeout(90)
def test_reload_to_multi_host_and_healthz(started):
    cl = Cluster(standbys=1)
    try:
        p, s = cl.nodes
        plain = "host=127.0.0.1 port=%d dbname=postgres user=%s" % (p.port, OSUSER)
        w = make_weir({"app": plain})
        started(w)
        console = Console(w)
        c = w.connect("app", user=OSUSER, password="x")
        assert c.execute("SELECT inet_server_port()").fetchone()[0] == p.port
        assert db_row(console, "app")["hosts"] is None  # one host, any role: not watched
        # a reload makes it a read-only entry over both: the idle client's next
        # transaction runs on the standby, from a new pool
        w.reload(databases={"app": entry([p, s], "standby")})
        assert c.execute("SELECT inet_server_port()").fetchone()[0] == s.port
        assert host_states(console, "app") == {p.port: ("primary", "up"), s.port: ("standby", "up")}
        w.reload(databases={"app": entry([p, s], "read-write")})
        assert c.execute("SELECT inet_server_port()").fetchone()[0] == p.port
        wait_for(lambda: http_get(w.metrics + "/healthz")[0] == 200, 10, what="healthz 200")
        p.stop("immediate")
        status, _, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(http_get(w.metrics + "/healthz")),
                                   10, what="healthz 503")
        assert "database app: no primary reachable" in body, body
    finally:
        cl.destroy()


# ---------------------------------------------------------------------------
# read replicas


def read_ports(w, n, db="ro"):
    """n clients, each holding a transaction: the server port of each."""
    conns = [w.connect(db, user=OSUSER, password="x", autocommit=False) for _ in range(n)]
    ports = [c.execute("SELECT inet_server_port()").fetchone()[0] for c in conns]
    for c in conns:
        c.rollback()
        c.close()
    return ports


@pytest.mark.timeout(120)
def test_read_replicas_balance_and_exclusion(started):
    cl = Cluster(standbys=2)
    try:
        p, s1, s2 = cl.nodes
        p.sql("CREATE TABLE lagtest (id serial, at timestamptz DEFAULT now())")
        w = make_weir({"ro": entry([s1, s2], "standby", load_balance_hosts="round-robin"),
                       # host names: looked up by weir (evdns), handed to libpq as hostaddr
                       "lc": entry([s1, s2], "standby", load_balance_hosts="least-connections",
                                   host="localhost,localhost"),
                       "pref": entry([p, s1, s2], "prefer-standby")},
                      settings={"max_standby_lag": "1", "default_pool_size": 8})
        started(w)
        console = Console(w)

        # balancing: 8 concurrent transactions, about 4 on each standby (a
        # connection opened for a client that got another one first may go
        # idle, so not exactly 4)
        ports = read_ports(w, 8)
        assert ports.count(s1.port) >= 3 and ports.count(s2.port) >= 3, ports
        ports = read_ports(w, 6, "lc")
        assert ports.count(s1.port) >= 2 and ports.count(s2.port) >= 2, ports
        assert set(read_ports(w, 4, "pref")) <= {s1.port, s2.port}

        # lag: pause replay on s2 while the primary keeps writing
        s2.sql("SELECT pg_wal_replay_pause()")
        stop = threading.Event()

        def write():
            while not stop.is_set():
                p.sql("INSERT INTO lagtest DEFAULT VALUES")
                time.sleep(0.05)
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            wait_for(lambda: host_states(console, "ro").get(s2.port) == ("standby", "lagging"), 15,
                     what="s2 to be excluded for lag")
            lag = host_metric(w, "weir_backend_host_replay_lag_seconds", "ro", s2.port)
            assert lag > 1, lag
            assert set(read_ports(w, 8)) == {s1.port}
            assert set(server_ports(console, "ro")) == {s1.port}  # its connections were closed

            # a standby that fails its checks is left out too; prefer-standby falls back to the primary
            s1.stop("fast")
            wait_for(lambda: host_states(console, "ro").get(s1.port, ("", ""))[1] == "down", 15,
                     what="s1 to be seen down")
            assert set(read_ports(w, 3, "pref")) == {p.port}
            with pytest.raises(psycopg.Error) as err:  # nothing usable: waits, then gives up
                c = w.connect("ro", user=OSUSER, password="x", options="")
                w.reload(settings={"query_wait_timeout": "1"})
                c.execute("SELECT 1")
            assert "query_wait_timeout" in str(err.value), str(err.value)
            w.reload(settings={"query_wait_timeout": "30"})

            # checked again with back-off: failures counted, fewer than one per period
            t0 = time.monotonic()
            f0 = failures(w, "ro", s1.port)
            time.sleep(2)
            f1 = failures(w, "ro", s1.port)
            assert 1 <= f1 - f0 < 2 / 0.2, (f0, f1, time.monotonic() - t0)
        finally:
            stop.set()
            writer.join(10)

        # s2 catches up and comes back; s1 restarts and comes back
        s2.sql("SELECT pg_wal_replay_resume()")
        s1.start()
        wait_for(lambda: host_states(console, "ro") == {s1.port: ("standby", "up"), s2.port: ("standby", "up")},
                 20, what="both standbys usable again")
        assert set(read_ports(w, 8)) == {s1.port, s2.port}
        status, _, body = http_get(w.metrics + "/healthz")
        assert status == 200, body
    finally:
        cl.destroy()


def failures(w, db, port):
    return host_metric(w, "weir_backend_host_check_failures_total", db, port)


# ---------------------------------------------------------------------------
# many weir instances


def logins(w):
    return w.log_text().count("login attempt")


def spread_connections(port, pg, n=30):
    for _ in range(n):
        with psycopg.connect(host="127.0.0.1", port=port, dbname=pg.db, user=pg.user, password="weir-test-pw",
                             connect_timeout=10, autocommit=True) as c:
            c.execute("SELECT 1")


@pytest.mark.timeout(60)
def test_so_reuseport_two_processes_share_a_port(pg, weir_factory):
    a = weir_factory(settings={"so_reuseport": 1})
    # the second binds the same port: without so_reuseport it could not
    b = Weir(pg, settings={"so_reuseport": 1, "listen_port": a.port})
    b.port = a.port
    try:
        b.start()  # a answers on the port already: wait for b's own listening socket
        wait_for(lambda: "listening on 127.0.0.1:%d" % a.port in b.log_text(), 10, what="b to listen")
        spread_connections(a.port, pg, 40)
        assert logins(a) > 0 and logins(b) > 0, (logins(a), logins(b))
        # one goes away: the other serves every new connection
        b.signal(signal.SIGINT)
        b.wait_exit(10)
        b.expected_exit = True
        before = logins(a)
        spread_connections(a.port, pg, 10)
        assert logins(a) == before + 10
    finally:
        problems = b.finish()
    assert not problems, problems


def test_without_so_reuseport_the_second_bind_fails(pg, weir_factory):
    a = weir_factory()
    b = Weir(pg, settings={"listen_port": a.port, "unix_socket_dir": ""})
    b.port = a.port
    b.write()
    proc = subprocess.Popen([os.environ.get("WEIR_DAEMON") or os.path.join(ROOT, "daemon", "weir"), b.ini],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert "could not bind" in b.log_text() + out, b.log_text() + out
    assert proc.returncode != 0  # nothing to listen on
    shutil.rmtree(b.dir, ignore_errors=True)


def haproxy_config(front, backends):
    """conf/haproxy.cfg with only the bind and server addresses replaced."""
    with open(os.path.join(ROOT, "conf", "haproxy.cfg")) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^(\s*bind )\S+", r"\g<1>127.0.0.1:%d" % front, text)
    assert n == 1
    servers = iter(backends)
    text, n = re.subn(r"(?m)^(\s*server (\S+) )\S+", lambda m: m.group(1) + "127.0.0.1:%d" % next(servers), text)
    assert n == len(backends)
    return text


@pytest.mark.timeout(60)
def test_haproxy_in_front_of_two_weirs(pg, weir_factory, tmp_path):
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if haproxy is None:
        pytest.skip("haproxy not installed (tests/tools/deps.sh installs it)")
    a, b = weir_factory(), weir_factory()
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(front, [a.port, b.port]))
    subprocess.run([haproxy, "-c", "-f", str(cfg)], check=True, stdout=subprocess.PIPE)
    proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", front), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, what="haproxy to listen")
        # leastconn with clients held open: both instances get some
        held = [psycopg.connect(host="127.0.0.1", port=front, dbname=pg.db, user=pg.user, password="weir-test-pw",
                                connect_timeout=10, autocommit=True) for _ in range(10)]
        for c in held:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        assert logins(a) >= 3 and logins(b) >= 3, (logins(a), logins(b))
        for c in held:
            c.close()
        # one weir stops: its check fails and new clients all reach the other
        b.signal(signal.SIGTERM)
        b.wait_exit(10)
        b.expected_exit = True
        time.sleep(2.5)  # inter 1s, fall 2
        before = logins(a)
        spread_connections(front, pg, 10)
        assert logins(a) == before + 10
    finally:
        proc.terminate()
        proc.wait(10)


def test_kubernetes_manifests_parse_and_fit_together(tmp_path):
    yaml = pytest.importorskip("yaml")
    docs = {}
    kdir = os.path.join(ROOT, "conf", "kubernetes")
    for name in sorted(os.listdir(kdir)):
        if name.endswith(".yaml"):
            with open(os.path.join(kdir, name)) as f:
                for doc in yaml.safe_load_all(f):
                    docs[doc["kind"]] = doc
    assert {"ConfigMap", "Deployment", "Service", "Secret"} <= set(docs)
    dep, svc, cm, sec = docs["Deployment"], docs["Service"], docs["ConfigMap"], docs["Secret"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    pod = dep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert vols["userlist"]["secret"]["secretName"] == sec["metadata"]["name"]
    ini_path = pod["containers"][0]["args"][0]
    assert os.path.dirname(ini_path) == mounts["config"] and os.path.basename(ini_path) in cm["data"]
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    ini = cm["data"]["weir.ini"]
    assert "listen_port = %d" % ports["postgres"] in ini and "metrics_port = %d" % ports["metrics"] in ini
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    # the ini is a valid weir config (the auth_file path moved to where it exists here)
    auth = re.search(r"auth_file = (\S+)", ini).group(1)
    assert os.path.dirname(auth) == mounts["userlist"] and os.path.basename(auth) in sec["stringData"]
    (tmp_path / "userlist.txt").write_text(sec["stringData"]["userlist.txt"])
    (tmp_path / "weir.ini").write_text(ini.replace(auth, str(tmp_path / "userlist.txt")))
    daemon = os.environ.get("WEIR_DAEMON") or os.path.join(ROOT, "daemon", "weir")
    r = subprocess.run([daemon, "--check-config", str(tmp_path / "weir.ini")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout.decode()
    assert b"warning" not in r.stdout.lower(), r.stdout.decode()
