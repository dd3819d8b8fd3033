"""DISCARD ALL / DEALLOCATE ALL that prep_query_is_ours does not recognise
(a comment before the command) while prepared statements are pooled.

PostgreSQL drops every prepared statement of the server session, weir's
shared "weir_N" ones included; weir must notice it (as it does for the
bare command) or the next client on that server binds a statement the
server no longer has. Found in review of the issue 7 hot-path pass (the
plain-Query fast path in server_run relies on the same recognition); the
behaviour predates that pass.
"""
import psycopg
import pytest

from conftest import TEST_PASSWORD


def connect(port, pg):
    return psycopg.connect(host="127.0.0.1", port=port, dbname=pg.db, user=pg.user, password=TEST_PASSWORD,
                           autocommit=True, connect_timeout=10, prepare_threshold=0)


def exec_prepared(conn, name, *params):
    res = conn.pgconn.exec_prepared(name.encode(), [str(p).encode() for p in params])
    if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
        raise AssertionError((res.error_message or b"").decode(errors="replace").strip())
    return res.get_value(0, 0).decode()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("cmd", ["/* c */ DISCARD ALL", "-- c\nDEALLOCATE ALL", "/* c */ DEALLOCATE ALL",
                                 "SELECT 1; DEALLOCATE ALL"])
def test_discard_after_comment_other_client_unaffected(pg, weir_factory, cmd):
    w = weir_factory(settings={"default_pool_size": 1})
    conn, other = connect(w.port, pg), connect(w.port, pg)
    try:
        for c in (conn, other):
            res = c.pgconn.prepare(b"mine", b"SELECT $1::int * 2")
            assert res.status == psycopg.pq.ExecStatus.COMMAND_OK
            assert exec_prepared(c, "mine", 21) == "42"
        conn.execute(cmd, prepare=False)  # one server: it just dropped weir_N
        assert exec_prepared(other, "mine", 5) == "10"  # a separate session: its statement lives
    finally:
        conn.close()
        other.close()
