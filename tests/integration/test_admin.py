"""The admin console's SHOW VERSION and SHOW POOLS (the rest of the console is
another issue)."""
import os
import subprocess

import psycopg
import pytest


def admin_psql(w, pg, sql, user=None):
    return subprocess.run([pg.tool("psql"), "-X", "-A", "-F", "|", "-h", "127.0.0.1", "-p", str(w.port),
                           "-U", user or pg.user, "-d", "pgbouncer", "-c", sql],
                          capture_output=True, text=True, timeout=20,
                          env=dict(os.environ, PGPASSWORD="weir-test-pw", PGCONNECT_TIMEOUT="5"))


def test_show_version(weir, pg):
    r = admin_psql(weir, pg, "SHOW VERSION")
    assert r.returncode == 0, r.stderr
    assert "1.18" in r.stdout


def test_show_pools(weir, pg):
    a, b = weir.connect(), weir.connect()
    a.execute("SELECT 1")
    b.execute("SELECT 1")
    r = admin_psql(weir, pg, "SHOW POOLS")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = lines[0].split("|")
    rows = [dict(zip(header, l.split("|"))) for l in lines[1:] if "|" in l]
    row = next(x for x in rows if x["database"] == pg.db and x["user"] == pg.user)
    assert row["pool_mode"] == "transaction"
    assert int(row["cl_active"]) == 2
    assert int(row["cl_waiting"]) == 0
    assert int(row["sv_active"]) == 0
    assert int(row["sv_idle"]) + int(row["sv_used"]) >= 1


def test_admin_console_refuses_other_users(weir, pg):
    r = admin_psql(weir, pg, "SHOW VERSION", user=pg.md5_user)
    assert r.returncode != 0
    assert "not allowed" in r.stderr
