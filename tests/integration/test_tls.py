"""TLS on both sides of weir.

Client side: weir answers SSLRequest with 'S' and does the handshake with the
client_tls_* certificate; client_tls_sslmode decides who must use TLS and who
must show a certificate; auth_type cert logs in by the certificate's CN; a
reload picks up replaced certificate files. Server side: server_tls_* reach
libpq, and weir forwards over libpq's TLS session to a PostgreSQL that accepts
TLS connections only (hostssl). The certificate authority, server and client
certificates are made here with the openssl command line tool.
"""
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

from conftest import ROOT, wait_for
from pgwire import Wire, parse_error_fields, query_message, startup_packet

PGCLUSTER = os.path.join(ROOT, "tests", "tools", "pgcluster.sh")
SSL_REQUEST = struct.pack("!II", 8, 80877103)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")


# ---- certificates ----

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


class CA:
    """A test certificate authority in its own directory; leaf() issues certificates."""

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.crt = os.path.join(self.dir, "ca.crt")
        openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=%s" % name,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=self.dir)
        os.chmod(self.crt, 0o644)

    def leaf(self, name, cn, san="DNS:localhost,IP:127.0.0.1", key_mode=0o600):
        """-> (certificate path, key path) for CN cn, signed by this CA."""
        with open(os.path.join(self.dir, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san if san else "basicConstraints=CA:FALSE\n")
        openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=%s" % cn, cwd=self.dir)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext", cwd=self.dir)
        crt, key = os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key")
        os.chmod(crt, 0o644)
        os.chmod(key, key_mode)
        return crt, key


class Certs:
    def __init__(self, root, pg_user):
        self.root = root
        self.ca = CA(root, "weir-test-ca")
        self.other_ca = CA(root, "weir-other-ca")  # trusted by nobody
        self.server = self.ca.leaf("server", "localhost")
        self.server2 = self.ca.leaf("server2", "weir-second-cert")
        self.client = self.ca.leaf("client", pg_user, san=None)
        self.client_other = self.ca.leaf("client-other", "somebody-else", san=None)
        self.client_untrusted = self.other_ca.leaf("client-untrusted", pg_user, san=None)
        # PostgreSQL's own: copied by the postgres user, so readable by it.
        self.pg_server = self.ca.leaf("pgserver", "localhost", key_mode=0o644)


@pytest.fixture(scope="module")
def certs(pg):
    root = tempfile.mkdtemp(prefix="weir-tls-")
    os.chmod(root, 0o755)
    yield Certs(root, pg.user)
    shutil.rmtree(root, ignore_errors=True)


def client_tls_settings(certs, mode="require", **more):
    s = {
        "client_tls_sslmode": mode,
        "client_tls_cert_file": certs.server[0],
        "client_tls_key_file": certs.server[1],
        "client_tls_ca_file": certs.ca.crt,
    }
    s.update(more)
    return s


def connect(w, **kw):
    """psycopg to weir with libpq's TLS keywords."""
    kw.setdefault("connect_timeout", 10)
    kw.setdefault("prepare_threshold", None)
    conn = psycopg.connect(host=kw.pop("host", "127.0.0.1"), port=w.port, dbname=w.pg.db,
                           user=kw.pop("user", w.pg.user), autocommit=True, **kw)
    w.conns.append(conn)
    return conn


def tls_wire(port, ca=None, cert=None, hostname="localhost"):
    """A raw protocol client (pgwire.Wire) whose socket speaks TLS."""
    w = Wire("127.0.0.1", port)
    w.send(SSL_REQUEST)
    answer = w.sock.recv(1)
    assert answer == b"S", answer
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    w.sock = ctx.wrap_socket(w.sock, server_hostname=hostname)
    return w


def peer_cn(port, ca):
    w = tls_wire(port, ca=ca, hostname="localhost")
    try:
        w.sock.getpeercert()  # verified by ca
        der = w.sock.getpeercert(binary_form=True)
    finally:
        w.close()
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "multiline"],
                         input=der, capture_output=True, check=True).stdout.decode()
    return [l.split("=", 1)[1].strip() for l in out.splitlines() if "commonName" in l][0]


# ---- client side ----

def test_psql_verify_full_through_weir(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "prefer"))
    dsn = "host=127.0.0.1 port=%d dbname=%s user=%s sslmode=verify-full sslrootcert=%s" % (
        w.port, pg.db, pg.user, certs.ca.crt)
    out = subprocess.run([pg.tool("psql"), "-X", "-At", "-c", "SELECT 40 + 2", dsn], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    assert "login attempt: db=%s user=%s tls=TLSv1." % (pg.db, pg.user) in w.log_text()

    # The certificate is the configured one: a client trusting another CA refuses it.
    bad = dsn.replace(certs.ca.crt, certs.other_ca.crt)
    out = subprocess.run([pg.tool("psql"), "-X", "-At", "-c", "SELECT 1", bad], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert "certificate verify failed" in out.stderr

    # SHOW CLIENTS names the TLS version and cipher of a TLS client.
    c = connect(w, sslmode="verify-full", sslrootcert=certs.ca.crt)
    assert c.pgconn.ssl_in_use
    admin = psycopg.connect(host="127.0.0.1", port=w.port, dbname="pgbouncer", user=pg.user, autocommit=True,
                            sslmode="disable")
    w.conns.append(admin)
    cur = admin.execute("SHOW CLIENTS")
    cols = [d.name for d in cur.description]
    tls_values = [r[cols.index("tls")] for r in cur.fetchall()]
    assert any(v.startswith("TLSv1.3/") for v in tls_values), tls_values
    assert "" in tls_values  # the admin connection itself is plain


def test_disable_answers_no_to_sslrequest(weir, pg):
    c = connect(weir, sslmode="prefer")
    assert not c.pgconn.ssl_in_use
    assert c.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as e:
        connect(weir, sslmode="require")
    assert "server does not support SSL" in str(e.value)


def test_require_refuses_plain_clients(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "require"))
    with pytest.raises(psycopg.OperationalError) as e:
        connect(w, sslmode="disable")
    assert "SSL required" in str(e.value)
    # PgBouncer's words and SQLSTATE, seen on the wire.
    raw = Wire("127.0.0.1", w.port)
    try:
        raw.send(startup_packet(pg.user, pg.db))
        t, body = raw.read_message()
        assert t == b"E"
        f = parse_error_fields(body)
        assert (f["S"], f["C"], f["M"]) == ("FATAL", "08P01", "SSL required")
    finally:
        raw.close()
    c = connect(w, sslmode="require")
    assert c.pgconn.ssl_in_use
    assert c.execute("SELECT 2").fetchone() == (2,)
    # As PgBouncer: the Unix socket is not asked for TLS.
    u = psycopg.connect(host=w.dir, port=w.port, dbname=pg.db, user=pg.user, autocommit=True)
    w.conns.append(u)
    assert u.execute("SELECT 3").fetchone() == (3,)


def test_unencrypted_bytes_after_sslrequest_are_refused(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "prefer"))
    raw = Wire("127.0.0.1", w.port)
    try:
        raw.send(SSL_REQUEST + startup_packet(pg.user, pg.db))
        t, body = raw.read_message()
        assert t == b"E"
        assert parse_error_fields(body)["M"] == "received unencrypted data after SSL request"
    finally:
        raw.close()


def test_broken_handshakes_hurt_only_their_connection(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "prefer"))
    # Garbage where a ClientHello belongs. Not random bytes: a random start
    # now and then reads as a TLS record header (0x16 0x03 ...) announcing
    # more bytes than were sent, and OpenSSL then rightly waits for them
    # (until client_login_timeout): the test timed out once in that way.
    s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    try:
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        s.sendall(b"This is not a TLS ClientHello. " * 10)
        s.settimeout(10)
        while s.recv(4096):
            pass
    finally:
        s.close()
    wait_for(lambda: "TLS handshake failed" in w.log_text(), 5, what="the failed handshake logged")
    # A second SSLRequest inside TLS.
    raw = tls_wire(w.port)
    try:
        raw.send(SSL_REQUEST)
        assert raw.read_until_closed(timeout=10) == []
    finally:
        raw.close()
    assert "SSL req inside SSL" in w.log_text()
    # Gone halfway through the handshake.
    s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    s.sendall(SSL_REQUEST)
    assert s.recv(1) == b"S"
    s.close()
    c = connect(w, sslmode="require")
    assert c.execute("SELECT 'fine'").fetchone() == ("fine",)


def test_verify_full_checks_client_certificates(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "verify-full"))
    base = dict(sslmode="verify-full", sslrootcert=certs.ca.crt)
    good = connect(w, sslcert=certs.client[0], sslkey=certs.client[1], **base)
    assert good.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as e:
        connect(w, **base)  # no certificate
    assert "certificate" in str(e.value).lower()
    with pytest.raises(psycopg.OperationalError) as e:
        connect(w, sslcert=certs.client_untrusted[0], sslkey=certs.client_untrusted[1], **base)
    assert "unknown ca" in str(e.value).lower() or "certificate" in str(e.value).lower()
    wait_for(lambda: w.log_text().count("TLS handshake failed") >= 2, 5, what="handshake failures logged")
    with pytest.raises(psycopg.OperationalError) as e:
        connect(w, sslmode="disable")
    assert "SSL required" in str(e.value)


def test_auth_cert_matches_cn_to_user(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "verify-full", auth_type="cert"))
    base = dict(sslmode="verify-full", sslrootcert=certs.ca.crt)
    ok = connect(w, sslcert=certs.client[0], sslkey=certs.client[1], **base)
    assert ok.execute("SELECT current_user").fetchone() == (pg.user,)
    # A valid certificate for somebody else.
    with pytest.raises(psycopg.OperationalError) as e:
        connect(w, sslcert=certs.client_other[0], sslkey=certs.client_other[1], **base)
    assert "certificate authentication failed" in str(e.value)
    # The right CN, but logging in as another user.
    with pytest.raises(psycopg.OperationalError) as e:
        connect(w, user=pg.scram_user, sslcert=certs.client[0], sslkey=certs.client[1], **base)
    assert "certificate authentication failed" in str(e.value)
    assert "TLS certificate name mismatch" in w.log_text()


def test_auth_cert_needs_verify_full(weir_factory, certs, pg, tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[databases]\n[pgbouncer]\nauth_type = cert\nunix_socket_dir =\n"
                   "client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n"
                   % certs.server)
    out = subprocess.run([os.environ.get("WEIR_DAEMON") or os.path.join(ROOT, "daemon", "weir"), "--check-config",
                          str(ini)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "auth_type cert requires client_tls_sslmode = verify-full" in out.stderr


def test_check_config_loads_the_certificates(certs, tmp_path):
    daemon = os.environ.get("WEIR_DAEMON") or os.path.join(ROOT, "daemon", "weir")
    ini = tmp_path / "w.ini"
    ini.write_text("[databases]\n[pgbouncer]\nunix_socket_dir =\nauth_type = trust\n"
                   "client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n"
                   % (certs.server[0], certs.server2[1]))  # a key that does not match the certificate
    out = subprocess.run([daemon, "--check-config", str(ini)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "client_tls_key_file" in out.stderr
    ini.write_text(ini.read_text().replace(certs.server2[1], certs.server[1]))
    out = subprocess.run([daemon, "--check-config", str(ini)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_big_results_and_copy_over_client_tls(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "require"))
    c = connect(w, sslmode="require")
    # About 50 MB in 1 kB rows.
    row = c.execute("SELECT count(*), sum(length(s)), md5(string_agg(s, '' ORDER BY g)) FROM "
                    "(SELECT g, repeat(md5(g::text), 32) AS s FROM generate_series(1, 50000) g) t").fetchone()
    cur = c.execute("SELECT repeat(md5(g::text), 32) FROM generate_series(1, 50000) g ORDER BY g")
    h = hashlib.md5()
    n = total = 0
    for (s,) in cur:
        h.update(s.encode())
        n += 1
        total += len(s)
    assert (n, total, h.hexdigest()) == row
    # Many small rows: hundreds of messages per TLS record.
    cur = c.execute("SELECT g FROM generate_series(1, 300000) g")
    assert sum(r[0] for r in cur) == 300000 * 300001 // 2
    # COPY both ways.
    with c.transaction():
        c.execute("CREATE TEMP TABLE tls_copy (id int, t text) ON COMMIT DROP")
        payload = "".join("%d\t%s\n" % (i, "v" * (i % 300)) for i in range(100000)).encode()
        with c.cursor().copy("COPY tls_copy FROM STDIN") as cp:
            for i in range(0, len(payload), 65536):
                cp.write(payload[i:i + 65536])
        got = bytearray()
        with c.cursor().copy("COPY (SELECT * FROM tls_copy ORDER BY id) TO STDOUT") as cp:
            for chunk in cp:
                got += chunk
    assert hashlib.md5(got).hexdigest() == hashlib.md5(payload).hexdigest()


def test_pipeline_over_client_tls(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "require"))
    c = connect(w, sslmode="require")
    with c.pipeline():
        curs = [c.execute("SELECT %s::int * 2, repeat('p', %s)", [i, i % 2000]) for i in range(2000)]
    for i, cur in enumerate(curs):
        assert cur.fetchone() == (i * 2, "p" * (i % 2000))


def test_prepared_statements_over_client_tls_in_transaction_mode(weir_factory, certs, pg):
    w = weir_factory(settings=dict(client_tls_settings(certs, "require"), default_pool_size=1))
    a = connect(w, sslmode="require", prepare_threshold=0)
    b = connect(w, sslmode="require", prepare_threshold=0)
    for i in range(50):
        for c in (a, b):
            assert c.execute("SELECT %s::int + 0, 'same text'", [i]).fetchone() == (i, "same text")


def test_asyncpg_and_psycopg2_over_client_tls(weir_factory, certs, pg):
    import asyncio

    import asyncpg
    import psycopg2
    w = weir_factory(settings=client_tls_settings(certs, "verify-ca"))

    async def go():
        ctx = ssl.create_default_context(cafile=certs.ca.crt)
        ctx.load_cert_chain(*certs.client)
        c = await asyncpg.connect(host="localhost", port=w.port, user=pg.user, database=pg.db, ssl=ctx,
                                  statement_cache_size=0)
        try:
            return await c.fetchval("SELECT sum(g) FROM generate_series(1, $1::int) g", 1000)
        finally:
            await c.close()
    assert asyncio.run(go()) == 500500
    c2 = psycopg2.connect(host="localhost", port=w.port, user=pg.user, dbname=pg.db, sslmode="verify-full",
                          sslrootcert=certs.ca.crt, sslcert=certs.client[0], sslkey=certs.client[1])
    try:
        cur = c2.cursor()
        cur.execute("SELECT 7")
        assert cur.fetchone() == (7,)
    finally:
        c2.close()


def test_pipelined_burst_with_slow_reader(weir_factory, certs, pg):
    """Thousands of queries in one TLS write, their answers read slowly: weir
    stops and restarts reading both sides; bytes OpenSSL already decrypted
    must not wait for a socket event that never comes."""
    w = weir_factory(settings=client_tls_settings(certs, "require"))
    raw = tls_wire(w.port)
    try:
        raw.login_trust(pg.user, pg.db)
        n = 3000
        burst = b"".join(query_message("SELECT %d, repeat('b', 400)" % i) for i in range(n))
        raw.send(burst)
        ready = rows = 0
        deadline = time.monotonic() + 60
        while ready < n:
            assert time.monotonic() < deadline, "only %d of %d answers" % (ready, n)
            t, body = raw.read_message(timeout=20)
            if t == b"D":
                rows += 1
            elif t == b"Z":
                ready += 1
                if ready % 500 == 0:
                    time.sleep(0.2)  # let weir's output to us fill up
            elif t == b"E":
                raise AssertionError(parse_error_fields(body))
        assert rows == n
    finally:
        raw.close()


def test_sighup_reloads_replaced_certificate(weir_factory, certs, pg):
    cert_path = os.path.join(certs.root, "live.crt")
    key_path = os.path.join(certs.root, "live.key")
    shutil.copy(certs.server[0], cert_path)
    shutil.copy(certs.server[1], key_path)
    w = weir_factory(settings=client_tls_settings(certs, "require", client_tls_cert_file=cert_path,
                                                  client_tls_key_file=key_path))
    assert peer_cn(w.port, certs.ca.crt) == "localhost"
    old = connect(w, sslmode="require")
    shutil.copy(certs.server2[0], cert_path)
    shutil.copy(certs.server2[1], key_path)
    w.reload()
    assert "TLS settings and certificates (re)loaded" in w.log_text()
    assert peer_cn(w.port, certs.ca.crt) == "weir-second-cert"
    assert old.execute("SELECT 'still here'").fetchone() == ("still here",)
    # A broken file keeps the context that works.
    with open(cert_path, "w") as f:
        f.write("not a certificate\n")
    w.reload()
    assert "keeping the previous client TLS settings" in w.log_text()
    assert peer_cn(w.port, certs.ca.crt) == "weir-second-cert"
    assert connect(w, sslmode="require").execute("SELECT 1").fetchone() == (1,)


def test_admin_set_turns_client_tls_on(weir, certs, pg):
    admin = psycopg.connect(host="127.0.0.1", port=weir.port, dbname="pgbouncer", user=pg.user, autocommit=True)
    weir.conns.append(admin)
    admin.execute("SET client_tls_cert_file = '%s'" % certs.server[0])
    admin.execute("SET client_tls_key_file = '%s'" % certs.server[1])
    admin.execute("SET client_tls_sslmode = 'prefer'")
    c = connect(weir, sslmode="verify-full", sslrootcert=certs.ca.crt)
    assert c.pgconn.ssl_in_use
    with pytest.raises(psycopg.Error) as e:
        admin.execute("SET client_tls_cert_file = '%s'" % certs.ca.crt)  # does not match the key
    assert "could not be applied" in str(e.value)
    c = connect(weir, sslmode="verify-full", sslrootcert=certs.ca.crt)  # the previous context serves
    assert c.pgconn.ssl_in_use


def test_tls_handshake_bounded_by_client_login_timeout(weir_factory, certs, pg):
    w = weir_factory(settings=client_tls_settings(certs, "require", client_login_timeout=1))
    s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    try:
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        # No ClientHello follows: weir must hang up on its own.
        t0 = time.monotonic()
        s.settimeout(10)
        while s.recv(4096):
            pass
        assert time.monotonic() - t0 < 8
    finally:
        s.close()
    wait_for(lambda: "client_login_timeout" in w.log_text(), 5, what="the timeout logged")


# ---- server side: a PostgreSQL that accepts only TLS ----

class SslPg:
    def __init__(self, directory, env):
        self.dir = directory
        self.port = int(env["WEIR_TEST_PGPORT"])
        self.sockdir = env["WEIR_TEST_PGSOCKDIR"]
        self.db = env["WEIR_TEST_DB"]
        self.user = env["WEIR_TEST_USER"]

    def entry(self, **extra):
        s = "host=127.0.0.1 port=%d dbname=%s" % (self.port, self.db)
        for k, v in extra.items():
            s += " %s=%s" % (k, v)
        return s


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            if line.startswith("export "):
                k, v = line[len("export "):].rstrip("\n").split("=", 1)
                env[k] = v.strip("'")
    return env


@pytest.fixture(scope="module")
def ssl_pg(certs, pg):
    d = tempfile.mkdtemp(prefix="weir-tlspg-")
    os.chmod(d, 0o755)
    env = dict(os.environ, WEIR_TEST_PG_SSL_CERT=certs.pg_server[0], WEIR_TEST_PG_SSL_KEY=certs.pg_server[1],
               WEIR_TEST_PG_HOSTSSL="1")
    env.pop("WEIR_TEST_PG_SSL", None)
    out = subprocess.run([PGCLUSTER, "start", d], env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        subprocess.run([PGCLUSTER, "destroy", d], capture_output=True, timeout=60)
        pytest.fail("could not start the TLS-only PostgreSQL:\n" + out.stderr[-3000:])
    try:
        spg = SslPg(d, read_env(os.path.join(d, "env.sh")))
        # It really refuses plain TCP, and takes TLS.
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(host="127.0.0.1", port=spg.port, dbname=spg.db, user=spg.user, sslmode="disable",
                            connect_timeout=10)
        assert "no encryption" in str(e.value)
        with psycopg.connect(host="127.0.0.1", port=spg.port, dbname=spg.db, user=spg.user, sslmode="require",
                             connect_timeout=10) as c:
            assert c.pgconn.ssl_in_use
        yield spg
    finally:
        subprocess.run([PGCLUSTER, "destroy", d], capture_output=True, timeout=60)


def backend_ssl(conn):
    return conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


@pytest.mark.timeout(180)
def test_server_verify_full_to_hostssl_postgres(weir_factory, certs, ssl_pg, pg):
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()}, pool_mode="transaction",
                     settings={"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca.crt,
                               "default_pool_size": 2})
    c = w.connect()
    assert backend_ssl(c) is True
    assert c.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL")
    # About 50 MB through the backend's TLS session.
    cur = c.execute("SELECT repeat(md5(g::text), 32) FROM generate_series(1, 50000) g ORDER BY g")
    h = hashlib.md5()
    n = 0
    for (s,) in cur:
        h.update(s.encode())
        n += 1
    want = c.execute("SELECT md5(string_agg(repeat(md5(g::text), 32), '' ORDER BY g)) "
                     "FROM generate_series(1, 50000) g").fetchone()[0]
    assert (n, h.hexdigest()) == (50000, want)
    # Transaction pooling over TLS: ten clients share two backends.
    clients = [w.connect() for _ in range(10)]
    for round_ in range(5):
        for i, cl in enumerate(clients):
            with cl.transaction():
                cl.execute("SELECT set_config('weir.t', %s, true)", [str(i)])
                assert cl.execute("SELECT current_setting('weir.t'), ssl FROM pg_stat_ssl "
                                  "WHERE pid = pg_backend_pid()").fetchone() == (str(i), True)
    admin = psycopg.connect(host="127.0.0.1", port=w.port, dbname="pgbouncer", user=pg.user, autocommit=True)
    w.conns.append(admin)
    cur = admin.execute("SHOW SERVERS")
    cols = [d.name for d in cur.description]
    rows = cur.fetchall()
    assert 1 <= len(rows) <= 2
    assert all(r[cols.index("tls")].startswith("TLSv1.3/") for r in rows), rows


def test_server_side_slow_reader_over_tls(weir_factory, certs, ssl_pg, pg):
    """A big result of small rows over the backend's TLS, read slowly by a
    plain client: weir pauses and resumes reading the server, with decrypted
    bytes waiting inside OpenSSL."""
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()},
                     settings={"server_tls_sslmode": "require"})
    raw = Wire("127.0.0.1", w.port)
    try:
        raw.login_trust(ssl_pg.user, ssl_pg.db)
        pauses = []

        def slow(total):
            if len(pauses) < 40 and total > (len(pauses) + 1) * 512 * 1024:
                pauses.append(total)
                time.sleep(0.05)
        total, rows, tag, err = raw.stream_query("SELECT g FROM generate_series(1, 400000) g", on_progress=slow,
                                                 chunk=32768)
        assert err is None, err
        assert (rows, tag) == (400000, "SELECT 400000")
        # And the connection is still in step afterwards.
        msgs = raw.simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert [b for t, b in msgs if t == b"D"][0].endswith(b"t")
    finally:
        raw.close()


def test_server_pipeline_and_copy_over_tls(weir_factory, certs, ssl_pg, pg):
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()},
                     settings={"server_tls_sslmode": "verify-ca", "server_tls_ca_file": certs.ca.crt})
    c = w.connect()
    with c.pipeline():
        curs = [c.execute("SELECT %s::int + 1", [i]) for i in range(1000)]
    assert [cur.fetchone()[0] for cur in curs] == list(range(1, 1001))
    got = bytearray()
    with c.cursor().copy("COPY (SELECT g, md5(g::text) FROM generate_series(1, 100000) g) TO STDOUT") as cp:
        for chunk in cp:
            got += chunk
    assert got.count(b"\n") == 100000


def test_cancel_reaches_a_tls_backend_from_a_tls_client(weir_factory, certs, ssl_pg, pg):
    """libpq sends its CancelRequest in plain TCP, which client_tls_sslmode =
    require accepts (as PgBouncer); weir cancels through libpq (PQcancel) on
    the backend that only takes TLS logins."""
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()},
                     settings=dict(client_tls_settings(certs, "require"), server_tls_sslmode="require"))
    c = connect(w, sslmode="require")
    t = threading.Timer(0.5, c.cancel)
    t.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT pg_sleep(20)")
    finally:
        t.join()
    assert c.execute("SELECT 1").fetchone() == (1,)


def test_session_reset_over_backend_tls(weir_factory, certs, ssl_pg, pg):
    """server_reset_query (DISCARD ALL) and the SET of a client's parameters
    go over the backend's TLS session like any other query."""
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()}, pool_mode="session",
                     settings={"server_tls_sslmode": "require", "default_pool_size": 1})
    c = w.connect()
    c.execute("SET application_name = 'dirty'")
    c.execute("PREPARE p AS SELECT 1")
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    c.close()
    d = psycopg.connect(host="127.0.0.1", port=w.port, dbname=ssl_pg.db, user=ssl_pg.user, autocommit=True,
                        connect_timeout=10)
    w.conns.append(d)
    assert d.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # the same backend, reset
    assert d.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    assert d.execute("SHOW application_name").fetchone()[0] != "dirty"
    assert backend_ssl(d) is True


def test_server_prefer_falls_back_to_plain(weir_factory, certs, ssl_pg, pg):
    # The main test cluster has no TLS: prefer connects in plain.
    w = weir_factory(databases={pg.db: pg.entry(), "tlsonly": ssl_pg.entry()},
                     settings={"server_tls_sslmode": "prefer"})
    assert backend_ssl(w.connect()) is False
    assert backend_ssl(w.connect(dbname="tlsonly")) is True


def test_server_tls_disable_against_hostssl_only(weir_factory, ssl_pg, pg):
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()}, settings={"server_tls_sslmode": "disable"})
    with pytest.raises(psycopg.OperationalError) as e:
        w.connect()
    msg = str(e.value)  # the server's words, as PgBouncer passes them on
    assert "FATAL:  no pg_hba.conf entry" in msg and "no encryption" in msg
    assert "server login failed: FATAL no pg_hba.conf entry" in w.log_text()


def test_server_verify_full_with_wrong_ca_fails_clearly(weir_factory, certs, ssl_pg, pg):
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()},
                     settings={"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.other_ca.crt})
    with pytest.raises(psycopg.OperationalError) as e:
        w.connect()
    assert "certificate verify failed" in str(e.value)


def test_both_sides_tls(weir_factory, certs, ssl_pg, pg):
    w = weir_factory(databases={ssl_pg.db: ssl_pg.entry()},
                     settings=dict(client_tls_settings(certs, "verify-full"), server_tls_sslmode="verify-full",
                                   server_tls_ca_file=certs.ca.crt, server_tls_protocols="tlsv1.3"))
    c = psycopg.connect(host="localhost", port=w.port, dbname=ssl_pg.db, user=ssl_pg.user, sslmode="verify-full",
                        sslrootcert=certs.ca.crt, sslcert=certs.client[0], sslkey=certs.client[1],
                        autocommit=True, connect_timeout=10)
    w.conns.append(c)
    assert c.pgconn.ssl_in_use and backend_ssl(c) is True
    assert c.execute("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == ("TLSv1.3",)
    cur = c.execute("SELECT g, repeat('z', g % 100) FROM generate_series(1, 200000) g")
    assert sum(1 for _ in cur) == 200000
