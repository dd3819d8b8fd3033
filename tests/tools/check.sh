#!/usr/bin/env bash
# `make check` after the Makefile's tests-build: run every test suite against a
# private PostgreSQL and print one summary line.
#
#   1. a throwaway cluster in a fresh temp dir (tests/tools/pgcluster.sh), its env.sh exported
#   2. each unit test binary (.build/unit/test_*), then the same under ASan+UBSan (.build/asan/)
#   3. each C integration test (.build/itest/*) with the cluster's environment
#   4. pytest on tests/integration when it has test_*.py (Debian's /usr/bin/python3),
#      then again (core suites, or all with WEIR_CHECK_TSAN=full) against the daemon
#      built under ThreadSanitizer with workers = 4
#   5. the install check (tests/tools/install_check.sh)
#   6. every libFuzzer target built and run briefly (tests/fuzz/run.sh with
#      FUZZ_SECONDS=WEIR_FUZZ_SMOKE_SECONDS, default 3): the daemon targets compile
#      daemon sources against stand-ins, which a change elsewhere can break
#
# Every suite's output is shown. The last line reads
#   weir check: N suites passed, M failed[: names of the failed suites]
# and the exit status is non-zero when any suite failed. The cluster is
# stopped and removed on exit, also on Ctrl-C.
# WEIR_SUITE_TIMEOUT (seconds, default 120) bounds each C suite, WEIR_PYTEST_TIMEOUT
# (default 300) the pytest run, so a hang cannot stall the check for long.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TOOLS=$ROOT/tests/tools
B=$ROOT/.build
SUITE_TIMEOUT=${WEIR_SUITE_TIMEOUT:-120}
START=$(date +%s)

TMP=$(mktemp -d /tmp/weir-check.XXXXXX)
chmod 755 "$TMP"   # the cluster runs as postgres when we are root: let it reach its files
PGDIR=$TMP/pg

cleanup() {
    "$TOOLS/pgcluster.sh" destroy "$PGDIR" > /dev/null 2>&1 \
        || "$TOOLS/pgcluster.sh" stop "$PGDIR" > /dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; echo "weir check: interrupted"; exit 130' INT TERM

passed=()
failed=()
timings=()

banner() { printf '\n===== %s =====\n' "$*"; }

# run_suite NAME CMD...: run one suite with the time limit, record the outcome.
run_suite() {
    local name=$1 t0 rc
    shift
    banner "$name"
    t0=$(date +%s%N)
    timeout -k 10 "$SUITE_TIMEOUT" "$@"
    rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    local dt=$((ms / 1000)).$((ms % 1000 / 100))
    if [ $rc -eq 0 ]; then
        passed+=("$name")
        timings+=("$(printf '  %-6s %6ss  %s' ok "$dt" "$name")")
    else
        [ $rc -eq 124 ] && echo "weir check: $name timed out after ${SUITE_TIMEOUT}s"
        failed+=("$name")
        timings+=("$(printf '  %-6s %6ss  %s (exit %d)' FAILED "$dt" "$name" "$rc")")
    fi
    return $rc
}

# A suite that could not even start (missing binary, no cluster).
fail_suite() {
    banner "$1"
    echo "weir check: $1: $2"
    failed+=("$1")
    timings+=("$(printf '  %-6s %6s   %s (%s)' FAILED - "$1" "$2")")
}

pg_log_tail() {
    if [ -n "${WEIR_TEST_PGLOG:-}" ] && [ -r "$WEIR_TEST_PGLOG" ]; then
        echo "--- last lines of the PostgreSQL log ($WEIR_TEST_PGLOG) ---"
        tail -n 15 "$WEIR_TEST_PGLOG"
    fi
}

# LeakSanitizer needs ptrace-like access to the process; it is missing in some
# containers. Probe once with a program that leaks on purpose.
lsan_works() {
    local cc=${CC:-cc}
    printf '#include <stdlib.h>\nvoid *volatile g;\nint main(void) { g = malloc(7); g = 0; return 0; }\n' > "$TMP/lsan.c"
    $cc -fsanitize=address -g -o "$TMP/lsan" "$TMP/lsan.c" > /dev/null 2>&1 || return 1
    ASAN_OPTIONS=detect_leaks=1 "$TMP/lsan" > "$TMP/lsan.out" 2>&1
    grep -q 'LeakSanitizer: detected memory leaks' "$TMP/lsan.out"
}

# --- 1. PostgreSQL ----------------------------------------------------------
have_pg=0
banner "PostgreSQL"
if "$TOOLS/pgcluster.sh" start "$PGDIR"; then
    # shellcheck disable=SC1091
    set -a; . "$PGDIR/env.sh"; set +a
    have_pg=1
    PATH=$PATH:$WEIR_TEST_PGBIN   # initdb, pg_ctl, pgbench for tests that want them
else
    echo "weir check: could not start PostgreSQL; suites that need it will fail"
fi
export WEIR_ROOT=$ROOT WEIR_DAEMON=$ROOT/daemon/weir WEIR_BUILD=$B PATH

# --- 2. unit tests, plain and sanitized ---------------------------------------
shopt -s nullglob
unit_srcs=(tests/unit/test_*.c)
for src in "${unit_srcs[@]}"; do
    t=$(basename "$src" .c)
    if [ -x "$B/unit/$t" ]; then
        run_suite "unit/$t" "$B/unit/$t"
    else
        fail_suite "unit/$t" "not built ($B/unit/$t)"
    fi
done

if [ ${#unit_srcs[@]} -gt 0 ]; then
    if lsan_works; then leaks=1; else leaks=0; echo "weir check: LeakSanitizer does not work here; ASan runs without leak detection"; fi
    export ASAN_OPTIONS=detect_leaks=$leaks:abort_on_error=0:print_summary=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    for src in "${unit_srcs[@]}"; do
        t=$(basename "$src" .c)
        if [ -x "$B/asan/$t" ]; then
            run_suite "asan/$t" "$B/asan/$t"
        else
            fail_suite "asan/$t" "not built ($B/asan/$t)"
        fi
    done
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# --- 3. C integration tests ------------------------------------------------------
for src in tests/integration/*.c; do
    t=$(basename "$src" .c)
    if [ ! -x "$B/itest/$t" ]; then
        fail_suite "itest/$t" "not built ($B/itest/$t)"
    elif [ $have_pg = 0 ]; then
        fail_suite "itest/$t" "no PostgreSQL"
    else
        run_suite "itest/$t" "$B/itest/$t" || pg_log_tail
    fi
done

# --- 4. pytest -----------------------------------------------------------------
py_tests=(tests/integration/test_*.py)
if [ ${#py_tests[@]} -gt 0 ]; then
    if [ $have_pg = 0 ]; then
        fail_suite pytest "no PostgreSQL"
    else
        # Debian's interpreter with Debian's psycopg/asyncpg, not a user's site-packages.
        # pytest exits 5 when it collected no tests: nothing ran, nothing failed.
        export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
        SUITE_TIMEOUT=${WEIR_PYTEST_TIMEOUT:-300} run_suite pytest bash -c '/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration
            rc=$?; if [ $rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $rc' \
            || pg_log_tail
    fi
fi

# --- 4b. pytest with workers = 4, the daemon under ThreadSanitizer ---------------
# The core suites by default (a few minutes would double make check);
# WEIR_CHECK_TSAN=full (make check-tsan) runs every test, =0 none.
TSAN_MODE=${WEIR_CHECK_TSAN:-core}
TSAN_CORE="test_workers.py test_protocol.py test_prepared.py test_faults.py test_limits.py test_admin_console.py
    test_admin_control.py test_scram_passthrough.py test_auth_query.py test_server_check.py test_metrics.py
    test_ha.py test_tls.py test_signals.py test_pgbouncer_settings.py"
if [ ${#py_tests[@]} -gt 0 ] && [ "$TSAN_MODE" != 0 ] && [ $have_pg = 1 ]; then
    if [ ! -x "$B/tsan-weir" ]; then
        fail_suite pytest-tsan "not built ($B/tsan-weir)"
    else
        if [ "$TSAN_MODE" = full ]; then
            tsan_files=tests/integration
        else
            tsan_files=$(for f in $TSAN_CORE; do [ -f tests/integration/$f ] && echo tests/integration/$f; done)
        fi
        # Tests that measure memory or time the daemon precisely skip themselves (WEIR_TEST_TSAN).
        WEIR_DAEMON=$B/tsan-weir WEIR_TEST_WORKERS=4 WEIR_TEST_TSAN=1 \
            TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1" \
            SUITE_TIMEOUT=${WEIR_PYTEST_TIMEOUT:-600} run_suite pytest-tsan-workers4 \
            /usr/bin/python3 -m pytest -q -p no:cacheprovider $tsan_files || pg_log_tail
    fi
fi

# --- 5. install ------------------------------------------------------------------
run_suite install "$TOOLS/install_check.sh"

# --- 6. fuzz smoke ----------------------------------------------------------------
FUZZ_SECONDS=${WEIR_FUZZ_SMOKE_SECONDS:-3} SUITE_TIMEOUT=${WEIR_FUZZ_SMOKE_TIMEOUT:-300} \
    run_suite fuzz-smoke "$ROOT/tests/fuzz/run.sh"

# --- summary ---------------------------------------------------------------------
banner "summary ($(( $(date +%s) - START ))s)"
printf '%s\n' "${timings[@]}"
line="weir check: ${#passed[@]} suites passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    line+=": $(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')"
fi
echo "$line"
[ ${#failed[@]} -eq 0 ]
