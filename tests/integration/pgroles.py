"""Roles made by tests in the test cluster: created (or reset) with a password
stored as md5 or SCRAM, and let in from 127.0.0.1 by a pg_hba.conf line of
their own (appended once, then the server reloads its configuration)."""
import os

import pytest

HBA_MARK = "# weir tests: "


def _allow(pg, role, method):
    path = os.path.join(os.environ.get("WEIR_TEST_PGDATA", ""), "pg_hba.conf")
    line = "host all %s 127.0.0.1/32 %s %s%s\n" % (role, method, HBA_MARK, role)
    try:
        with open(path) as f:
            if line in f.read():
                return
        with open(path, "a") as f:
            f.write(line)
    except OSError as e:
        pytest.skip("cannot add a pg_hba.conf line for %s: %s" % (role, e))
    with pg.connect() as c:
        c.execute("SELECT pg_reload_conf()")


def make_role(pg, role, password, encryption="scram-sha-256", superuser=False):
    """(Re)create role with password stored per encryption ('md5' or
    'scram-sha-256'; password None: no password). Returns the stored secret."""
    with pg.connect() as c:
        c.execute("SET password_encryption = '%s'" % encryption)
        exists = c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        verb = "ALTER" if exists else "CREATE"
        pw = "PASSWORD NULL" if password is None else "PASSWORD '%s'" % password.replace("'", "''")
        c.execute('%s ROLE "%s" LOGIN %s %s' % (verb, role, "SUPERUSER" if superuser else "NOSUPERUSER", pw))
        secret = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()[0]
    # md5 in pg_hba.conf accepts md5 and SCRAM secrets alike; it never lets a
    # role without a password in.
    _allow(pg, role, "md5")
    return secret
