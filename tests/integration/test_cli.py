"""The command line: --check-config, unknown keys, -d with a pidfile, -V."""
import os
import signal
import socket
import subprocess

import pytest

from conftest import DAEMON, Weir, wait_for


def check_config(path):
    return subprocess.run([DAEMON, "--check-config", path], capture_output=True, text=True, timeout=20)


def test_check_config_good_file(pg):
    w = Weir(pg)
    w.write()
    r = check_config(w.ini)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_config_bad_value_names_file_and_line(pg):
    w = Weir(pg, settings={"default_pool_size": "lots"})
    w.write()
    lines = open(w.ini).read().splitlines()
    lineno = next(i + 1 for i, l in enumerate(lines) if l.startswith("default_pool_size"))
    r = check_config(w.ini)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "%s:%d" % (w.ini, lineno) in out, out
    assert "default_pool_size" in out


def test_check_config_bad_value_refuses_to_start(pg):
    w = Weir(pg, settings={"pool_mode": "sometimes"})
    w.write()
    r = subprocess.run([DAEMON, w.ini], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "pool_mode" in r.stdout + r.stderr + w.log_text()


def test_unknown_key_warns_but_starts(weir_factory):
    w = weir_factory(settings={"no_such_setting_xyz": "1"})
    with w.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_for(lambda: "no_such_setting_xyz" in w.log_text() + w.stderr_text(), 5,
             what="a warning naming the unknown key")


def test_version_flag():
    r = subprocess.run([DAEMON, "-V"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    assert "weir" in r.stdout


def test_daemonize_writes_pidfile(pg):
    w = Weir(pg)
    pidfile = os.path.join(w.dir, "weir.pid")
    w.settings["pidfile"] = pidfile
    w.write()
    r = subprocess.run([DAEMON, "-d", w.ini], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int(wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 10,
                       what="the pidfile"))
    try:
        assert os.path.exists("/proc/%d" % pid)
        assert os.getsid(pid) == pid, "the daemon should lead its own session"
        wait_for(lambda: _accepts(w.port), 10, what="the daemon to listen")
        import psycopg
        with psycopg.connect(w.dsn(), autocommit=True, connect_timeout=5) as c:
            assert c.execute("SELECT 42").fetchone() == (42,)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or _zombie(pid), 10, what="the daemon to exit")
    wait_for(lambda: not os.path.exists(pidfile), 5, what="the pidfile to be removed")
    assert "AddressSanitizer" not in w.log_text()


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
