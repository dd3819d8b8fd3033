#!/usr/bin/env bash
# `make bench`: side-by-side numbers on this machine, meaningful only as ratios
# from one run.
#   1. libweir: SELECT 1 through the Engine's pool vs a new connection per
#      query, and checkout/check-in rates with 1, 2 and 8 threads.
#   2. pgbench through PostgreSQL directly, PgBouncer (when installed) and weir,
#      same pool settings, transaction mode, rounds alternating A B C A B C.
#      Per scenario: TPS, mean latency, and the pooler's CPU time per
#      transaction (utime+stime from /proc/PID/stat over the run / transactions).
# BENCH_SECONDS (default 5) per run, BENCH_ROUNDS (default 2).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=$ROOT/tests/tools
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-2}
POOL=${BENCH_POOL_SIZE:-20}
TMP=$(mktemp -d /tmp/weir-bench.XXXXXX)
chmod 755 "$TMP"
WEIR_PID= PGB_PID=

cleanup() {
    [ -n "$WEIR_PID" ] && kill "$WEIR_PID" 2>/dev/null
    [ -n "$PGB_PID" ] && kill "$PGB_PID" 2>/dev/null
    "$TOOLS/pgcluster.sh" destroy "$TMP/pg" >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

"$TOOLS/pgcluster.sh" start "$TMP/pg" >/dev/null || { echo "bench: could not start PostgreSQL"; exit 1; }
# shellcheck disable=SC1091
. "$TMP/pg/env.sh"
export PATH=$PATH:$WEIR_TEST_PGBIN
PG=$WEIR_TEST_PGPORT

echo "== libweir =="
"$ROOT/.build/bench/bench_engine" "$WEIR_TEST_DSN" "$SECS" || exit 1

pgbench -i -q -s 10 -h 127.0.0.1 -p "$PG" -U weir_test weir_test >/dev/null 2>&1 || { echo "bench: pgbench -i failed"; exit 1; }

printf '"weir_test" ""\n' > "$TMP/userlist.txt"
chmod 644 "$TMP/userlist.txt"
write_ini() { # file port
    cat > "$1" <<EOF
[databases]
weir_test = host=127.0.0.1 port=$PG dbname=weir_test
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 2000
log_connections = 0
log_disconnections = 0
EOF
    chmod 644 "$1"
}

WPORT=$(free_port)
write_ini "$TMP/weir.ini" "$WPORT"
"$ROOT/daemon/weir" -q "$TMP/weir.ini" &
WEIR_PID=$!

BPORT=
if command -v pgbouncer >/dev/null 2>&1; then
    BPORT=$(free_port)
    write_ini "$TMP/pgbouncer.ini" "$BPORT"
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- pgbouncer -q "$TMP/pgbouncer.ini" &
    else
        pgbouncer -q "$TMP/pgbouncer.ini" &
    fi
    sleep 0.5
    PGB_PID=$(pgrep -n -f "pgbouncer -q $TMP/pgbouncer.ini")
else
    echo "bench: pgbouncer is not installed; skipping the PgBouncer column (apt-get install pgbouncer)"
fi
sleep 0.5

cpu_ticks() { # pid -> utime+stime in clock ticks
    [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# run TARGET PORT PID ARGS... -> prints "tps lat_ms cpu_us_per_txn"
run() {
    local port=$2 pid=$3; shift 3
    local before after out tps lat txns
    before=$(cpu_ticks "$pid")
    out=$(pgbench -n -h 127.0.0.1 -p "$port" -U weir_test -T "$SECS" "$@" weir_test 2>&1)
    after=$(cpu_ticks "$pid")
    tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
    lat=$(echo "$out" | awk '/latency average/ {print $4; exit}')
    txns=$(echo "$out" | awk '/number of transactions actually processed/ {print $6; exit}' | cut -d/ -f1)
    if [ -z "$tps" ] || echo "$out" | grep -q "aborted"; then
        echo "failed - -"
        return
    fi
    awk -v b="$before" -v a="$after" -v t="$txns" -v tps="$tps" -v lat="$lat" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { cpu = (t > 0 && a > b) ? (a - b) * 1e6 / hz / t : 0; printf "%.0f %s %.1f\n", tps, lat, cpu }'
}

declare -A RES
scenarios=("select-only simple, 10 clients|-S -M simple -c 10 -j 2"
           "select-only simple, 100 clients|-S -M simple -c 100 -j 2"
           "select-only extended, 10 clients|-S -M extended -c 10 -j 2"
           "select-only extended, 100 clients|-S -M extended -c 100 -j 2"
           "prepared (-M prepared), 10 clients|-S -M prepared -c 10 -j 2"
           "connect per transaction (-C), 10 clients|-S -C -c 10 -j 2")
targets=("direct|$PG|" "weir|$WPORT|$WEIR_PID")
[ -n "$BPORT" ] && targets+=("pgbouncer|$BPORT|$PGB_PID")

for sc in "${scenarios[@]}"; do
    name=${sc%%|*}; args=${sc#*|}
    for ((r = 1; r <= ROUNDS; r++)); do
        for t in "${targets[@]}"; do
            IFS='|' read -r tname tport tpid <<<"$t"
            # shellcheck disable=SC2086
            RES["$name|$tname|$r"]=$(run "$tname" "$tport" "$tpid" $args)
        done
    done
done

echo
echo "== pgbench, transaction mode, pool $POOL, ${SECS}s x $ROUNDS rounds (median of rounds) =="
printf '%-40s %-10s %10s %10s %14s\n' scenario target tps "lat ms" "cpu us/txn"
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
for sc in "${scenarios[@]}"; do
    name=${sc%%|*}
    for t in "${targets[@]}"; do
        tname=${t%%|*}
        vals=(); fails=0
        for ((r = 1; r <= ROUNDS; r++)); do
            v=${RES["$name|$tname|$r"]}
            [ "${v%% *}" = failed ] && fails=1
            vals+=("$v")
        done
        if [ $fails = 1 ]; then
            printf '%-40s %-10s %10s\n' "$name" "$tname" "FAILED"
            continue
        fi
        tps=$(printf '%s\n' "${vals[@]}" | awk '{print $1}' | median)
        lat=$(printf '%s\n' "${vals[@]}" | awk '{print $2}' | median)
        cpu=$(printf '%s\n' "${vals[@]}" | awk '{print $3}' | median)
        [ "$tname" = direct ] && cpu="-"
        printf '%-40s %-10s %10s %10s %14s\n' "$name" "$tname" "$tps" "$lat" "$cpu"
        eval "S_${tname}_tps=\$tps S_${tname}_cpu=\$cpu"
    done
    if [ -n "$BPORT" ] && [ "${S_pgbouncer_tps:-}" ] && [ "${S_weir_tps:-}" ]; then
        awk -v wt="$S_weir_tps" -v bt="$S_pgbouncer_tps" -v wc="$S_weir_cpu" -v bc="$S_pgbouncer_cpu" \
            'BEGIN { printf "%-40s %-10s %10.2f %10s %14.2f\n", "", "weir/pgb", wt/bt, "", (bc > 0 ? wc/bc : 0) }'
    fi
    unset S_weir_tps S_pgbouncer_tps S_weir_cpu S_pgbouncer_cpu
done
