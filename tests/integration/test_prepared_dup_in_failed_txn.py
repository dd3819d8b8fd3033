"""Parse of a statement name the client already has, inside a failed
transaction: PostgreSQL refuses it for the transaction (25P02) before it
looks at the name; weir answers 42P05 (duplicate) because on_parse checks
the name first. Found in review (random differential test); predates the
issue 7 pass."""
from test_prepared import Parse, Query, Step, Sync, run_steps, wire


def test_duplicate_parse_in_failed_transaction_same_as_postgres(pg, weir_factory):
    w = weir_factory(settings={"default_pool_size": 1, "max_prepared_statements": 10})
    seen = {}
    for target, port in (("postgres", pg.port), ("weir", w.port)):
        c = wire(port, pg)
        try:
            seen[target] = run_steps(c, [Step(Parse("s", "SELECT 1"), Sync), Step(Query("BEGIN")),
                                         Step(Query("SELECT 1/0")), Step(Parse("s", "SELECT 2"), Sync),
                                         Step(Query("ROLLBACK"))])
        finally:
            c.close()
    assert seen["weir"] == seen["postgres"]
