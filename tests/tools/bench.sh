#!/usr/bin/env bash
# `make bench`: side-by-side numbers on this machine, meaningful only as ratios
# from one run.
#   1. libweir (group "engine"): SELECT 1 through the Engine's pool vs a new
#      connection per query, and checkout/check-in rates with 1, 2 and 8 threads.
#   2. tests/tools/bench.py: one table of PostgreSQL directly, weir and
#      PgBouncer (when installed), same settings, alternating rounds, medians:
#      TPS and pooler CPU per transaction, latency at 1 client, callgrind
#      instructions per transaction, SCRAM logins per second, RSS per idle
#      client, and 1,000 clients over a pool of 10. Also written as CSV,
#      Markdown and a PNG chart to BENCH_OUT (default tests/tmp/bench).
# BENCH_SECONDS (default 5) per run, BENCH_ROUNDS (default 3),
# BENCH_ONLY=engine,tps,latency,instr,logins,rss,overload,workers (default all),
# BENCH_PGDIR=DIR reuses (and keeps) a tests/tools/pgcluster.sh cluster in DIR.
# See bench.py's opening comment for the other knobs and how each row is measured.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=$ROOT/tests/tools
SECS=${BENCH_SECONDS:-5}
ONLY=${BENCH_ONLY:-}
TMP=$(mktemp -d /tmp/weir-bench.XXXXXX)
chmod 755 "$TMP"
PGDIR=${BENCH_PGDIR:-$TMP/pg}

cleanup() {
    [ -z "${BENCH_PGDIR:-}" ] && "$TOOLS/pgcluster.sh" destroy "$TMP/pg" >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT

selected() { # group -> true when BENCH_ONLY is empty or names it
    [ -z "$ONLY" ] || [[ ",${ONLY// /}," == *",$1,"* ]]
}

"$TOOLS/pgcluster.sh" start "$PGDIR" >/dev/null || { echo "bench: could not start PostgreSQL"; exit 1; }
# shellcheck disable=SC1091
. "$PGDIR/env.sh"
export PATH=$PATH:$WEIR_TEST_PGBIN
PG=$WEIR_TEST_PGPORT

if selected engine; then
    echo "== libweir =="
    "$ROOT/.build/bench/bench_engine" "$WEIR_TEST_DSN" "$SECS" || exit 1
fi

others=${ONLY//engine/}
[ -n "$ONLY" ] && [ -z "${others//[, ]/}" ] && exit 0

psql_test() { psql -X -q -At -h 127.0.0.1 -p "$PG" -U "$WEIR_TEST_USER" -d "$WEIR_TEST_DB" "$@"; }
if [ -z "${BENCH_PGDIR:-}" ] || [ "$(psql_test -c "SELECT to_regclass('pgbench_accounts') IS NOT NULL")" != t ]; then
    pgbench -i -q -s 10 -h 127.0.0.1 -p "$PG" -U "$WEIR_TEST_USER" "$WEIR_TEST_DB" >/dev/null 2>&1 \
        || { echo "bench: pgbench -i failed"; exit 1; }
fi
# The SCRAM login row runs pgbench -S as the cluster's SCRAM user.
psql_test -c "GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO $WEIR_TEST_SCRAM_USER" \
    || { echo "bench: GRANT failed"; exit 1; }

/usr/bin/python3 "$TOOLS/bench.py"
