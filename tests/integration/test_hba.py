"""auth_type = hba: rules from auth_hba_file pick the method per connection
(first match wins), no match or a reject rule refuses with 28000 and
PostgreSQL's wording, peer works on the Unix socket, hostssl never matches
without TLS, broken lines are logged with file:line and skipped, and a reload
with a broken file keeps the old rules."""
import os
import pwd
import subprocess
import tempfile

import psycopg
import psycopg2
import pytest


def hba_weir(weir_factory, pg, rules, **kw):
    """weir with auth_type = hba and rules written to its auth_hba_file."""
    d = tempfile.mkdtemp(prefix="weir-hba-")
    path = os.path.join(d, "hba.conf")
    with open(path, "w") as f:
        f.write(rules)
    settings = {"auth_type": "hba", "auth_hba_file": path}
    settings.update(kw.pop("settings", {}))
    w = weir_factory(settings=settings, **kw)
    w.hba_path = path
    return w


def refused(w, user, password, dbname=None):
    with pytest.raises(psycopg2.OperationalError) as ei:
        psycopg2.connect(w.dsn(user=user, password=password, dbname=dbname), connect_timeout=5)
    return str(ei.value)


def test_methods_chosen_by_rule(weir_factory, pg):
    w = hba_weir(weir_factory, pg,
                 "# TYPE DATABASE USER ADDRESS METHOD\n"
                 "host all %s 127.0.0.1/32 md5\n"
                 "host all %s 127.0.0.0 255.0.0.0 scram-sha-256\n"
                 "host %s %s 127.0.0.1/32 trust\n"
                 "host all all ::1/128 trust\n"
                 % (pg.md5_user, pg.scram_user, pg.db, pg.user))
    # md5 rule: the right password works, a wrong one is 28P01
    with w.connect(user=pg.md5_user, password=pg.md5_password) as c:
        assert c.execute("SELECT current_user").fetchone() == (pg.md5_user,)
    assert "password authentication failed" in refused(w, pg.md5_user, "wrong")
    with w.connect(user=pg.scram_user, password=pg.scram_password) as c:
        assert c.execute("SELECT current_user").fetchone() == (pg.scram_user,)
    # trust: any password (none is even asked for)
    with w.connect(user=pg.user, password="ignored") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_no_matching_rule_is_28000(weir_factory, pg):
    w = hba_weir(weir_factory, pg, "host otherdb all 127.0.0.1/32 trust\nhost all all 10.0.0.0/8 trust\n")
    with pytest.raises(psycopg.OperationalError) as ei:
        w.connect(user=pg.user)
    msg = str(ei.value)
    assert ('no pg_hba.conf entry for host "127.0.0.1", user "%s", database "%s", no encryption'
            % (pg.user, pg.db)) in msg, msg
    # the SQLSTATE on the wire, read by asyncpg
    import asyncio
    import asyncpg

    async def main():
        with pytest.raises(asyncpg.PostgresError) as e2:
            await asyncpg.connect(host="127.0.0.1", port=w.port, user=pg.user, database=pg.db, timeout=10)
        assert e2.value.sqlstate == "28000"
    asyncio.run(main())


def test_reject_rule_and_first_match(weir_factory, pg):
    w = hba_weir(weir_factory, pg,
                 "host all %s 127.0.0.1/32 reject\n"
                 "host all all 127.0.0.1/32 trust\n" % pg.md5_user)
    msg = refused(w, pg.md5_user, pg.md5_password)
    assert "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"%s\"" % pg.md5_user in msg, msg
    with w.connect(user=pg.scram_user, password="anything") as c:
        assert c.execute("SELECT current_user").fetchone() == (pg.scram_user,)


def test_hostssl_never_matches_without_tls(weir_factory, pg):
    w = hba_weir(weir_factory, pg,
                 "hostssl all all 0.0.0.0/0 trust\n"
                 "hostnossl all all 0.0.0.0/0 password\n")
    # hostnossl asks for a cleartext password: a wrong one fails, the right one works
    assert "password authentication failed" in refused(w, pg.md5_user, "wrong")
    with w.connect(user=pg.md5_user, password=pg.md5_password) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_cert_without_tls_is_refused(weir_factory, pg):
    w = hba_weir(weir_factory, pg, "host all all 127.0.0.1/32 cert\n")
    assert "certificate authentication failed" in refused(w, pg.user, "x")
    assert "TLS connection required" in w.log_text()


def psql_unix(w, pg, user, dbname):
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    env.pop("PGPASSWORD", None)
    return subprocess.run([pg.tool("psql"), "-X", "-A", "-t", "-w", "-h", w.dir, "-p", str(w.port), "-U", user,
                           "-d", dbname, "-c", "SELECT current_user"],
                          env=env, capture_output=True, text=True, timeout=20)


def test_peer_on_unix_socket(weir_factory, pg):
    me = pwd.getpwuid(os.getuid()).pw_name
    # The OS user logs in as itself; the backend user is forced by the entry.
    databases = {"peerdb": pg.entry(user=pg.user), pg.db: pg.entry()}
    w = hba_weir(weir_factory, pg, "local all all peer\nhost all all 127.0.0.1/32 trust\n",
                 databases=databases, userlist={pg.user: "x", me: "unused"})
    r = psql_unix(w, pg, me, "peerdb")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pg.user
    # Any other name on the socket is refused.
    r = psql_unix(w, pg, "someone_else", "peerdb")
    assert r.returncode != 0
    assert "unix socket login rejected" in r.stderr, r.stderr
    # peer over TCP never matches a local rule; TCP has its own rules here
    with w.connect(user=pg.user, dbname=pg.db) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_broken_lines_logged_and_skipped(weir_factory, pg):
    w = hba_weir(weir_factory, pg,
                 "host all all 127.0.0.1/32 ident\n"
                 "host all +admins 127.0.0.1/32 trust\n"
                 "host all all 127.0.0.1/32 trust\n")
    with w.connect(user=pg.user) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    log = w.stderr_text() + w.log_text()  # at start the log file is not open yet
    assert '%s:1: unsupported authentication method "ident"; line skipped' % w.hba_path in log, log
    assert "%s:2: group membership (+admins) is not supported; line skipped" % w.hba_path in log, log


def test_reload_swaps_rules_and_keeps_them_when_file_unreadable(weir_factory, pg):
    w = hba_weir(weir_factory, pg, "host all all 127.0.0.1/32 trust\n")
    with w.connect(user=pg.user, password="whatever") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    with open(w.hba_path, "w") as f:
        f.write("host all all 127.0.0.1/32 reject\n")
    w.reload()
    assert "rejects connection" in refused(w, pg.user, "whatever")
    # A reload that cannot read the file fails as a whole: the reject rule stays.
    os.rename(w.hba_path, w.hba_path + ".gone")
    w.reload()
    assert "config reload failed" in w.log_text()
    assert "rejects connection" in refused(w, pg.user, "whatever")
    os.rename(w.hba_path + ".gone", w.hba_path)
    with open(w.hba_path, "w") as f:
        f.write("host all all 127.0.0.1/32 trust\n")
    w.reload()
    with w.connect(user=pg.user, password="whatever") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
