"""weir under a service manager: systemd socket activation (sockets passed
with LISTEN_FDS/LISTEN_PID, as weir.socket does), the sd_notify messages
(READY, RELOADING with MONOTONIC_USEC, STOPPING, STATUS), and logging to
syslog."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest

from conftest import DAEMON, Weir, free_port, wait_for
from console import Console


def start_with_fds(w, socks, env=None):
    """Start weir as systemd would: socks become fds 3, 4..., LISTEN_PID is weir's."""
    w.write()
    # bash, not sh: dash cannot redirect descriptors above 9
    redirs = " ".join("%d<&%d" % (3 + i, s.fileno()) for i, s in enumerate(socks))
    script = 'export LISTEN_FDS=%d LISTEN_PID=$$; exec "$0" "$@" %s' % (len(socks), redirs)
    err = open(w.stderr_path, "ab")
    w.proc = subprocess.Popen(["bash", "-c", script, DAEMON, w.ini], stdout=err, stderr=err,
                              stdin=subprocess.DEVNULL, pass_fds=[s.fileno() for s in socks],
                              env=dict(os.environ, **(env or {})))
    err.close()
    return w


@pytest.fixture
def own_weir(pg):
    """Weirs a test starts itself; stopped and checked at teardown."""
    made = []
    yield made
    problems = []
    for w in made:
        problems += w.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_socket_activation_uses_the_passed_sockets(pg, own_weir):
    w = Weir(pg)
    own_weir.append(w)
    configured = free_port()
    w.settings["listen_port"] = configured  # must not be opened: systemd's sockets replace it
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    w.port = tcp.getsockname()[1]
    path = os.path.join(w.dir, "activated.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(16)
    start_with_fds(w, [tcp, unix])
    tcp.close()
    unix.close()
    wait_for(lambda: "socket activation" in w.log_text() or not w.alive(), 10, what="weir to start")
    assert w.alive(), w.stderr_text()
    assert w.connect().execute("SELECT 1").fetchone() == (1,)
    with socket.socket(socket.AF_UNIX) as s:  # the Unix socket is served too
        s.connect(path)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", configured), timeout=1).close()
    assert Console(w).show("VERSION")
    w.proc.send_signal(signal.SIGTERM)
    w.wait_exit(10)
    w.expected_exit = True
    assert os.path.exists(path), "weir must not remove a socket file systemd owns"


def test_listen_fds_for_another_process_are_ignored(pg, own_weir):
    w = Weir(pg)
    own_weir.append(w)
    w.write()
    err = open(w.stderr_path, "ab")
    w.proc = subprocess.Popen([DAEMON, w.ini], stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, LISTEN_FDS="1", LISTEN_PID="1"))
    err.close()
    w.wait_listening()
    assert w.connect().execute("SELECT 1").fetchone() == (1,)


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="weir-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def seen(self, text):
        return any(text in m for m in self.drain())

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def test_sd_notify_ready_reloading_stopping(pg, own_weir):
    notify = NotifySocket()
    try:
        w = Weir(pg)
        own_weir.append(w)
        w.write()
        err = open(w.stderr_path, "ab")
        w.proc = subprocess.Popen([DAEMON, w.ini], stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, NOTIFY_SOCKET=notify.path))
        err.close()
        w.wait_listening()
        wait_for(lambda: notify.seen("READY=1"), 5, what="READY=1")
        assert any("MAINPID=%d" % w.pid in m and "STATUS=" in m for m in notify.messages)
        notify.messages.clear()
        w.signal(signal.SIGHUP)
        wait_for(lambda: notify.seen("RELOADING=1"), 5, what="RELOADING=1")
        reloading = [m for m in notify.messages if "RELOADING=1" in m][0]
        usec = int(reloading.split("MONOTONIC_USEC=")[1].split("\n")[0])
        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 60 * 1000000
        wait_for(lambda: notify.seen("READY=1"), 5, what="READY=1 after the reload")
        w.signal(signal.SIGINT)
        wait_for(lambda: notify.seen("STOPPING=1"), 5, what="STOPPING=1")
        w.wait_exit(10)
        w.expected_exit = True
    finally:
        notify.close()


def test_syslog_gets_the_log_lines(pg, own_weir):
    if os.path.exists("/dev/log"):
        pytest.skip("a syslog daemon owns /dev/log here")
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        log.bind("/dev/log")
    except OSError as e:
        pytest.skip("cannot stand in for syslog at /dev/log: %s" % e)
    log.settimeout(0.2)
    try:
        w = Weir(pg, settings={"syslog": 1, "syslog_ident": "weir-test", "syslog_facility": "local3"})
        own_weir.append(w)
        w.start()
        w.connect().execute("SELECT 1")
        lines = []

        def got_login():
            try:
                lines.append(log.recv(4096).decode(errors="replace"))
            except socket.timeout:
                pass
            return any("login attempt" in l for l in lines)

        wait_for(got_login, 5, interval=0, what="a login line on syslog")
        line = [l for l in lines if "login attempt" in l][0]
        # <priority>, facility local3 (19) * 8 + info (6) = 158; ident[pid]; level word; tag
        assert line.startswith("<158>"), line
        assert "weir-test[%d]:" % w.pid in line and "LOG C-0x" in line, line
    finally:
        log.close()
        os.unlink("/dev/log")


def test_systemd_units_verify_clean(tmp_path):
    """weir.service (as `make install` writes it) and weir.socket pass systemd-analyze verify."""
    import shutil
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze")
    with open(os.path.join(root, "systemd", "weir.service")) as f:
        # The unit runs BINDIR/weir: the plain build's, whichever daemon (sanitized) the suite runs.
        service = f.read().replace("@BINDIR@", os.path.abspath(os.path.join(root, "daemon"))) \
            .replace("@SYSCONFDIR@", "/etc")
    (tmp_path / "weir.service").write_text(service)
    shutil.copy(os.path.join(root, "systemd", "weir.socket"), tmp_path / "weir.socket")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "weir.service"), str(tmp_path / "weir.socket")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    for key in ("Type=notify", "KillSignal=SIGINT", "ExecReload=", "ExecStartPre=", "NoNewPrivileges=yes",
                "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "RuntimeDirectory=",
                "ReadWritePaths=", "LimitNOFILE=", "User="):
        assert key in service, key
