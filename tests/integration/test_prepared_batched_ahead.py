"""Prepared statements in transaction mode, for a client that writes several
Sync-terminated batches before it reads any answer (psycopg 3 pipelines,
npgsql multiplexing, pgjdbc batches) while an earlier batch fails.

A seeded generator writes wire-level programs: named and unnamed statements,
names reused across batches, Parses that fail (syntax errors), Executes that
fail (1/0, a Bind without the parameter the statement needs), Describe,
Close, DEALLOCATE and BEGIN/COMMIT/ROLLBACK as simple queries. Every program
goes out whole before the first answer is read, once to PostgreSQL directly
and once through weir (one server, max_prepared_statements = 2 so
statements are evicted, a second client preparing the same texts between
programs so statements are shared on the server), and the two must answer
message for message alike.
"""
import os
import random

import pytest

from test_prepared import Bind, Close, Describe, Execute, Parse, Query, Step, Sync, run_steps, wire

SEEDS = int(os.environ.get("WEIR_BATCHED_SEEDS", "80"))
NAMES = ["a", "b", "c", ""]
GOOD = ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4"]
TEXTS = GOOD + ["SELECT 1/0", "SELEC 1", "SELECT $1::int + 10"]
QUERIES = ["BEGIN", "BEGIN", "COMMIT", "ROLLBACK", "SELECT 1/0", "SELECT 5", "DEALLOCATE a", "DEALLOCATE b",
           "DEALLOCATE ALL"]


def gen_batch(rnd):
    """One Sync-terminated batch, or one simple query; -> list of messages."""
    if rnd.random() < 0.2:
        return [Query(rnd.choice(QUERIES))]
    msgs = []
    for _ in range(rnd.randint(1, 4)):
        op, name = rnd.random(), rnd.choice(NAMES)
        if op < 0.35:
            msgs.append(Parse(name, rnd.choice(TEXTS)))
        elif op < 0.7:
            msgs += [Bind(name), Execute()]
        elif op < 0.8:
            msgs.append(Describe("S", name))
        else:
            msgs.append(Close("S", name))
    return msgs + [Sync]


def gen_plan(seed):
    """-> [(who, Step)]: the programs of the batching client ("c", all its
    batches in one write, a ROLLBACK last so its server goes back to the
    pool) with steps of the other client ("o") between them."""
    rnd = random.Random(seed)
    plan = []
    for _ in range(rnd.randint(2, 4)):
        batches = [gen_batch(rnd) for _ in range(rnd.randint(2, 5))] + [[Query("ROLLBACK")]]
        plan.append(("c", Step(*[m for b in batches for m in b], ready=len(batches))))
        text = rnd.choice(GOOD)
        plan.append(("o", Step(Parse("o", text), Bind("o"), Execute(), Close("S", "o"), Sync)))
    return plan


def run_plan(port, pg, plan):
    conns = {"c": wire(port, pg), "o": wire(port, pg)}
    out = []
    try:
        for who, step in plan:
            got = run_steps(conns[who], [step], timeout=2.0)
            out.append((who, got[0]))
            if got[0] and got[0][-1].startswith("NO ANSWER"):
                break
    finally:
        for w in conns.values():
            w.close()
    return out


@pytest.mark.timeout(120)
def test_batched_ahead_programs_same_as_postgres(pg, weir_factory):
    w = weir_factory(settings={"default_pool_size": 1, "max_prepared_statements": 2})
    differing = []
    for seed in range(SEEDS):
        plan = gen_plan(seed)
        direct = run_plan(pg.port, pg, plan)
        through = run_plan(w.port, pg, plan)
        if through != direct:
            first = next(i for i, (a, b) in enumerate(zip(direct + [None] * 9, through + [None] * 9)) if a != b)
            differing.append("seed %d, step %d:\n  postgres %s\n  weir     %s" %
                             (seed, first, direct[first] if first < len(direct) else None,
                              through[first] if first < len(through) else None))
    assert not differing, "%d of %d seeds differ\n%s" % (len(differing), SEEDS, "\n".join(differing[:8]))
