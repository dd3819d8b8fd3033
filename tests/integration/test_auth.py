"""Client authentication (md5, scram-sha-256, trust) with psycopg, asyncpg,
psycopg2 and psql; max_client_conn; unknown database."""
import asyncio
import os
import subprocess

import asyncpg
import psycopg
import psycopg2
import pytest

from conftest import sqlstate_of, wait_for

AUTH_TYPES = ["md5", "scram-sha-256"]
# PgBouncer 1.18's words: "password authentication failed" (cleartext, md5),
# "SASL authentication failed" (SCRAM).
AUTH_FAILED = "authentication failed"


def users(pg):
    return [(pg.scram_user, pg.scram_password), (pg.md5_user, pg.md5_password)]


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_correct_password_psycopg(weir_factory, pg, auth_type):
    w = weir_factory(settings={"auth_type": auth_type})
    for user, password in users(pg):
        with w.connect(user=user, password=password) as c:
            # weir logged into PostgreSQL as that user with the plain-text secret
            assert c.execute("SELECT current_user").fetchone() == (user,)


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_wrong_password_psycopg(weir_factory, pg, auth_type):
    w = weir_factory(settings={"auth_type": auth_type})
    for user, _ in users(pg) + [(pg.user, None)]:
        with pytest.raises(psycopg.OperationalError) as ei:
            w.connect(user=user, password="not-the-password")
        msg = str(ei.value)
        assert AUTH_FAILED in msg, msg
    # the server-side code is in the message; psycopg has no diag for a failed connect,
    # so check the wire with psycopg2 and asyncpg below


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_wrong_password_sqlstate_psycopg2(weir_factory, pg, auth_type):
    w = weir_factory(settings={"auth_type": auth_type})
    for user, _ in users(pg):
        with pytest.raises(psycopg2.OperationalError) as ei:
            psycopg2.connect(w.dsn(user=user, password="nope"), connect_timeout=5)
        assert AUTH_FAILED in str(ei.value)


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_asyncpg_auth(weir_factory, pg, auth_type):
    w = weir_factory(settings={"auth_type": auth_type})

    async def main():
        for user, password in users(pg):
            c = await asyncpg.connect(host="127.0.0.1", port=w.port, user=user, password=password,
                                      database=pg.db, statement_cache_size=0, timeout=10)
            try:
                assert await c.fetchval("SELECT current_user") == user
            finally:
                await c.close()
            # PgBouncer 1.18's FATAL 08P01 (every error of its own is 08P01),
            # "password authentication failed" or, after SCRAM, "SASL authentication failed"
            with pytest.raises(asyncpg.ProtocolViolationError) as ei:
                await asyncpg.connect(host="127.0.0.1", port=w.port, user=user, password="wrong",
                                      database=pg.db, statement_cache_size=0, timeout=10)
            assert ei.value.sqlstate == "08P01"
            assert "authentication failed" in str(ei.value)
    asyncio.run(main())


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_psql_auth(weir_factory, pg, auth_type):
    w = weir_factory(settings={"auth_type": auth_type})
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    env.pop("PGPASSWORD", None)
    for user, password in users(pg):
        args = [pg.tool("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(w.port), "-U", user, "-d", pg.db,
                "-v", "VERBOSITY=verbose", "-c", "SELECT current_user"]
        r = subprocess.run(args, env=dict(env, PGPASSWORD=password), capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == user
        r = subprocess.run(args, env=dict(env, PGPASSWORD="wrong"), capture_output=True, text=True, timeout=20)
        assert r.returncode == 2, r.stdout + r.stderr
        assert AUTH_FAILED in r.stderr, r.stderr


def test_scram_channel_binding_required_is_refused_cleanly(weir_factory, pg):
    """libpq with channel_binding=require over plain TCP must fail on the
    client side with a clear message, not hang or crash weir."""
    w = weir_factory(settings={"auth_type": "scram-sha-256"})
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(w.dsn(user=pg.scram_user) + " channel_binding=require", connect_timeout=5)
    assert "channel binding" in str(ei.value).lower()
    with w.connect(user=pg.scram_user) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_unknown_database(weir):
    async def main():
        with pytest.raises(asyncpg.PostgresError) as ei:
            await asyncpg.connect(host="127.0.0.1", port=weir.port, user="weir_test", password="x",
                                  database="nosuchdb", timeout=10)
        return ei.value
    e = asyncio.run(main())
    assert e.sqlstate == "08P01"  # PgBouncer 1.18's, after the password check
    assert "no such database: nosuchdb" in str(e)
    with pytest.raises(psycopg.OperationalError) as ei:
        weir.connect(dbname="nosuchdb")
    assert "no such database: nosuchdb" in str(ei.value)


def test_max_client_conn(weir_factory, pg):
    w = weir_factory(settings={"max_client_conn": 3})
    held = [w.connect() for _ in range(3)]

    async def main():
        with pytest.raises(asyncpg.PostgresError) as ei:
            await asyncpg.connect(host="127.0.0.1", port=w.port, user=pg.user, password="x",
                                  database=pg.db, timeout=10)
        return ei.value
    e = asyncio.run(main())
    assert e.sqlstate == "08P01"  # PgBouncer 1.18's
    assert "no more connections allowed (max_client_conn)" in str(e)
    for c in held:
        assert c.execute("SELECT 1").fetchone() == (1,)
    held[0].close()
    # a slot is free again
    from conftest import wait_for

    def can_connect():
        try:
            w.connect().close()
            return True
        except psycopg.OperationalError:
            return False
    wait_for(can_connect, 5, what="a free client slot after a client left")


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_hashed_secrets_in_auth_file(weir_factory, pg, auth_type):
    """auth_file holding PostgreSQL's stored secrets (md5 hash, SCRAM verifier)
    instead of plain text; the backend password then comes from the conninfo."""
    import hashlib
    with pg.connect(dbname="postgres") as c:
        scram_secret = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                 [pg.scram_user]).fetchone()[0]
    md5_secret = "md5" + hashlib.md5((pg.md5_password + pg.md5_user).encode()).hexdigest()
    assert scram_secret.startswith("SCRAM-SHA-256$")
    w = weir_factory(
        settings={"auth_type": auth_type},
        userlist={pg.scram_user: scram_secret, pg.md5_user: md5_secret},
        databases={"scramdb": pg.entry(user=pg.scram_user, password=pg.scram_password),
                   "md5db": pg.entry(user=pg.md5_user, password=pg.md5_password)})
    cases = [("scramdb", pg.scram_user, pg.scram_password)]
    if auth_type == "md5":
        cases.append(("md5db", pg.md5_user, pg.md5_password))
    for db, user, password in cases:
        with w.connect(dbname=db, user=user, password=password) as c:
            assert c.execute("SELECT current_user").fetchone() == (user,)
        with pytest.raises(psycopg.OperationalError) as ei:
            w.connect(dbname=db, user=user, password=password + "x")
        assert AUTH_FAILED in str(ei.value)


def test_scram_iterations_offered_for_plain_passwords(weir_factory, pg):
    """scram_iterations is the count weir offers for a plain-text auth_file
    password (and for unknown users, who look the same); logins work with it,
    and a reload changes it."""
    from pgwire import Wire, message, startup_packet

    def offered(w, user):
        wire = Wire("127.0.0.1", w.port)
        try:
            wire.send(startup_packet(user, pg.db))
            t, body = wire.read_message()
            assert t == b"R" and body[:4] == b"\0\0\0\x0a", (t, body)  # AuthenticationSASL
            first = b"n,,n=,r=abcdefghijklmnop"
            wire.send(message(b"p", b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first))
            t, body = wire.read_message()
            assert t == b"R" and body[:4] == b"\0\0\0\x0b", (t, body)  # AuthenticationSASLContinue
            return dict(kv.split("=", 1) for kv in body[4:].decode().split(","))["i"]
        finally:
            wire.close()

    w = weir_factory(settings={"auth_type": "scram-sha-256", "scram_iterations": 1024})
    assert offered(w, pg.scram_user) == "1024"
    assert offered(w, "nobody_here") == "1024"
    with w.connect(user=pg.scram_user) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    w.reload(settings={"scram_iterations": 2048})
    wait_for(lambda: offered(w, pg.scram_user) == "2048", what="the reloaded count")
    with w.connect(user=pg.scram_user) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
