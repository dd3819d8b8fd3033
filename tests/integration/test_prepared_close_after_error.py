"""A Close of a named statement arrives after the server already reported
an error for an earlier message of the same batch (before the Sync).

PostgreSQL skips everything up to the Sync, so the client sees only the
error and ReadyForQuery. weir answers a statement Close itself
(CloseComplete); when the error came back before the Close reached weir,
the error's skip-to-Sync has already emptied weir's queue and the
CloseComplete is sent at once: the client sees a CloseComplete PostgreSQL
would never send, and the statement is gone from weir's names while
PostgreSQL semantics say the Close never happened. Found while reviewing
the issue 7 hot-path pass (random differential test); it predates it.
"""
import pytest

from test_prepared import Bind, Close, Describe, Execute, Parse, Query, Step, Sync, run_steps, wire


def steps(first, rest):
    return [Step(first, rest, split=len(first))]  # the first part alone, a pause, then the rest


CASES = {
    # Describe of an unknown name fails on the server; then Close and Sync
    "describe-unknown-then-close": (Describe("S", "nosuch"), Close("S", "nosuch") + Sync),
    # a failing Execute, then the Close of a statement the client has
    "failed-execute-then-close-own": (Parse("mine", "SELECT 1/$1::int") + Bind("mine", [0]) + Execute(),
                                      Close("S", "mine") + Sync),
    # the same with DEALLOCATE as a simple query, which PostgreSQL also skips
    # until the Sync: weir answers it (CommandComplete and a ReadyForQuery)
    "failed-execute-then-deallocate-query": (Parse("mine", "SELECT 1/$1::int") + Bind("mine", [0]) + Execute(),
                                             Query("DEALLOCATE mine") + Sync),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_close_after_error_before_sync_same_as_postgres(pg, weir_factory, case):
    first, rest = CASES[case]
    w = weir_factory(settings={"default_pool_size": 1, "max_prepared_statements": 10})
    seen = {}
    for target, port in (("postgres", pg.port), ("weir", w.port)):
        c = wire(port, pg)
        try:
            seen[target] = run_steps(c, steps(first, rest))
            # was the Close skipped? PostgreSQL still knows "mine"
            seen[target + " after"] = run_steps(c, [Step(Describe("S", "mine"), Sync), Step(Query("SELECT 7"))])
        finally:
            c.close()
    assert seen["weir"] == seen["postgres"]
    assert seen["weir after"] == seen["postgres after"]
