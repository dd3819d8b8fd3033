#!/usr/bin/env bash
# Builds every libFuzzer target tests/fuzz/fuzz_*.c with ASan and UBSan into
# .build/fuzz/, seeds each one's working corpus (.build/fuzz/corpus-NAME)
# from the committed seeds in tests/fuzz/corpus/NAME/ (and, for the Proto,
# startup, hba and backend-login targets, seeds made below), runs each for FUZZ_SECONDS
# (default 30) and prints one summary line. Builds and runs go one per core.
# FUZZ_TARGETS="a b" runs only those. Exits non-zero if a target fails to build or finds a crash or leak;
# the reproducer is left as .build/fuzz/crash-NAME-*, the log as NAME.log.
# The daemon targets (relay streams, SCRAM, config) compile the daemon's own
# sources in; see each target's opening comment for what it feeds them.

# Seeds are printf formats on purpose (octal escapes for bytes):
# shellcheck disable=SC2059
set -u
cd "$(dirname "$0")/../.." || exit 1

SECONDS_EACH=${FUZZ_SECONDS:-30}
OUT=$PWD/.build/fuzz  # absolute: fuzz_config chdirs into its temporary directory
CC=${FUZZ_CC:-clang}
PKGS=(libevent libevent_pthreads libpq)
CFLAGS="-std=c11 -D_GNU_SOURCE -fno-strict-aliasing -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror -Wshadow
        -Wstrict-prototypes -Wno-unused-parameter -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=all -Ilib/include -Ilib/src -Idaemon
        $(pkg-config --cflags "${PKGS[@]}" 2>/dev/null)"
LIBS="$(pkg-config --libs "${PKGS[@]}" 2>/dev/null || echo -levent_pthreads -levent -lpq) -lpthread -lm -lssl -lcrypto"
DAEMON_LIBS="$(pkg-config --libs inih openssl 2>/dev/null || echo -linih -lssl -lcrypto)"
# The fuzzers need only Proto; the whole library is tried first so they also
# catch link-time surprises, and the minimal set keeps them usable while
# other modules are mid-change.
FULL_SRCS=(lib/src/*.c)
MIN_SRCS=(lib/src/proto_*.c lib/src/util.c)
# The daemon targets: the relay (server.c is #included by relay_harness.h
# so its static functions are reachable; the pool and client are stand-ins).
RELAY_SRCS=(lib/src/proto_*.c lib/src/util.c lib/src/dialect.c lib/src/dialect_pg.c daemon/prepared_relay.c
            daemon/prepared.c daemon/params.c daemon/stream.c daemon/log.c daemon/tls.c daemon/backend.c
            daemon/backend_raw.c daemon/scram.c daemon/md5auth.c)
SCRAM_SRCS=(daemon/scram.c daemon/md5auth.c lib/src/util.c)
CONFIG_SRCS=(daemon/config.c daemon/hba.c daemon/tls.c daemon/log.c lib/src/util.c)

mkdir -p "$OUT"
command -v "$CC" >/dev/null || { echo "fuzz: FAIL: $CC not found"; exit 1; }

# ---- seeds: printf formats, always \NNN octal so a NUL never eats a digit ----

be32() {
    printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
        $(($1 >> 8 & 255)) $(($1 & 255))
}

# typed TYPE BODY-FORMAT: one typed message on stdout.
typed() {
    local len
    len=$(printf "$2" | wc -c)
    printf '%s' "$1"
    printf "$(be32 $((len + 4)))"
    printf "$2"
}

# untyped BODY-FORMAT: one startup-style packet on stdout.
untyped() {
    local len
    len=$(printf "$1" | wc -c)
    printf "$(be32 $((len + 4)))"
    printf "$1"
}

V3='\000\003\000\000'
STARTUP_BODY="${V3}user\\000alice\\000database\\000shop\\000application_name\\000psql\\000\\000"
ERROR_BODY='SERROR\000VERROR\000C42P01\000Mrelation "t" does not exist\000Hcheck\000\000'
BIND_BODY='\000s1\000\000\001\000\000\000\002\000\000\000\00242\377\377\377\377\000\001\000\001'

seed_proto() {
    local d=$OUT/corpus-fuzz_proto
    # The selector byte is the mode index in fuzz_proto.c's parser table.
    { printf '\000'; printf "$STARTUP_BODY"; } >"$d/seed-startup"
    { printf '\001'; printf "$ERROR_BODY"; } >"$d/seed-error"
    printf '\002server_version\00016.2\000' >"$d/seed-parameter-status"
    printf '\003T' >"$d/seed-ready"
    printf '\004\000\000\020\222\336\255\276\357' >"$d/seed-backend-key"
    printf '\005\000\000\000\012SCRAM-SHA-256\000SCRAM-SHA-256-PLUS\000\000' >"$d/seed-auth-sasl"
    printf '\005\000\000\000\005\001\002\003\004' >"$d/seed-auth-md5"
    printf '\006SELECT 1\000' >"$d/seed-string"
    # shellcheck disable=SC2016 # $1 is SQL, not shell
    printf '\007s1\000SELECT $1::int\000\000\001\000\000\000\027' >"$d/seed-parse"
    { printf '\010'; printf "$BIND_BODY"; } >"$d/seed-bind"
    printf '\011Ss1\000' >"$d/seed-target"
    printf '\012p1\000\000\000\000\000' >"$d/seed-execute"
    printf '\013SCRAM-SHA-256\000\000\000\000\005n,,n=' >"$d/seed-sasl-initial"
    { printf '\014'; typed Q 'SELECT now()\000'; } >"$d/seed-peek"
    { printf '\015'; untyped "$STARTUP_BODY"; } >"$d/seed-peek-startup"
    { printf '\016'; typed P 's1\000SELECT 1\000\000\000'; typed B "$BIND_BODY"; typed E '\000\000\000\000\000';
      typed S ''; typed Z 'I'; typed E "$ERROR_BODY"; } >"$d/seed-stream"
    { printf '\017'; untyped "$STARTUP_BODY"; typed Q 'BEGIN\000'; typed X ''; } >"$d/seed-stream-startup"
}

seed_startup() {
    local d=$OUT/corpus-fuzz_startup
    untyped "$STARTUP_BODY" >"$d/seed-startup"
    { untyped "$STARTUP_BODY"; typed Q 'SELECT 1\000'; typed X ''; } >"$d/seed-startup-query"
    untyped "$(be32 80877103)" >"$d/seed-ssl"
    untyped "$(be32 80877104)" >"$d/seed-gssenc"
    untyped "$(be32 80877102)$(be32 4242)$(be32 3735928559)" >"$d/seed-cancel"
}

seed_hba() {
    local d=$OUT/corpus-fuzz_hba
    printf 'local all all peer\nhost all all 127.0.0.1/32 trust\n' >"$d/seed-basic"
    printf 'hostssl shop,"Sales DB" alice,bob 10.0.0.0 255.0.0.0 cert\nhostnossl sameuser all ::1/128 md5 # c\n' \
        >"$d/seed-lists"
    printf 'host all all 2001:db8::/32 scram-sha-256\r\nlocal all +grp password\nhost all all samenet reject\n' \
        >"$d/seed-refused"
    printf 'local all @users.txt trust\nlocal "a""b" all map=x\nhost all all 10.1.2.3/8 trust\n' >"$d/seed-odd"
}

# Login streams a server might send weir's own connect; the first byte picks
# the credential (0 md5 secret, 1 SCRAM keys, 2 SCRAM secret without keys).
welcome() { # AuthenticationOk, a parameter, BackendKeyData, ReadyForQuery
    typed R "$(be32 0)"; typed S 'server_version\00015.4\000'; typed K "$(be32 42)$(be32 7)"; typed Z I
}

seed_backend_login() {
    local d=$OUT/corpus-fuzz_backend_login
    { printf '\000'; typed R "$(be32 5)\001\002\003\004"; welcome; } >"$d/seed-md5"
    { printf '\001'; typed R "$(be32 10)SCRAM-SHA-256\000\000";
      typed R "$(be32 11)r=abc,s=c2FsdA==,i=4096"; typed R "$(be32 12)v=AAAA"; welcome; } >"$d/seed-scram"
    { printf '\002'; typed R "$(be32 10)SCRAM-SHA-256-PLUS\000SCRAM-SHA-256\000\000"; } >"$d/seed-nokeys"
    { printf '\000'; typed E 'SFATAL\000C28P01\000Mpassword authentication failed\000\000'; } >"$d/seed-error"
    { printf '\001'; welcome; } >"$d/seed-trust"
}

# ---- build ----

# Daemon modules a target tests, beyond the library.
daemon_srcs() {
    case $1 in
        fuzz_hba) echo daemon/hba.c ;;
        fuzz_backend_login) echo daemon/backend_raw.c daemon/scram.c daemon/md5auth.c ;;
    esac
}

build() {
    local name=$1 log=$OUT/$1.build.log
    # shellcheck disable=SC2086
    if $CC $CFLAGS -o "$OUT/$name" "tests/fuzz/$name.c" "${SRCS[@]}" $(daemon_srcs "$name") $LIBS \
        $DAEMON_LIBS >"$log" 2>&1; then
        return 0
    fi
    return 1
}

# ---- run ----

stat_of() {
    sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

# The sources a target is built from (MIN_SRCS is the fallback).
sources_for() {
    case $1 in
        fuzz_client_stream | fuzz_server_stream) SRCS=("${RELAY_SRCS[@]}") ;;
        fuzz_scram) SRCS=("${SCRAM_SRCS[@]}") ;;
        fuzz_config) SRCS=("${CONFIG_SRCS[@]}") ;;
        *) SRCS=("${FULL_SRCS[@]}") ;;
    esac
}

# One target, with the fallback; the outcome lands in $OUT/$name.built.
build_target() {
    local name=$1
    sources_for "$name"
    if build "$name"; then
        echo ok >"$OUT/$name.built"
        return
    fi
    SRCS=("${MIN_SRCS[@]}")
    if build "$name"; then
        echo ok >"$OUT/$name.built"
    else
        echo failed >"$OUT/$name.built"
    fi
}

targets=()
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $name "* ]]; then
        continue
    fi
    targets+=("$name")
done

# Builds go side by side, one per core: compiling is most of a short run.
jobs_max=$(nproc 2>/dev/null || echo 2)
for name in "${targets[@]}"; do
    rm -f "$OUT/$name.built"
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
        wait -n
    done
    build_target "$name" &
done
wait

# One target's run from its seeded corpus; the outcome lands in $OUT/$name.result.
run_target() {
    local name=$1 corpus=$OUT/corpus-$1 log=$OUT/$1.log
    mkdir -p "$corpus"
    case $name in
        fuzz_proto) seed_proto ;;
        fuzz_startup) seed_startup ;;
        fuzz_hba) seed_hba ;;
        fuzz_backend_login) seed_backend_login ;;
    esac
    if [ -d "tests/fuzz/corpus/$name" ]; then
        cp -n tests/fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null
    fi
    if "$OUT/$name" -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$OUT/crash-$name-" "$corpus" >"$log" 2>&1; then
        echo ok >"$OUT/$name.result"
    else
        echo CRASH >"$OUT/$name.result"
    fi
}

# Each fuzzer is one process: they too run one per core.
for name in "${targets[@]}"; do
    rm -f "$OUT/$name.result"
    [ "$(cat "$OUT/$name.built" 2>/dev/null)" = ok ] || continue
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
        wait -n
    done
    run_target "$name" &
done
wait

summary=()
failed=0
for name in "${targets[@]}"; do
    log=$OUT/$name.log
    if [ "$(cat "$OUT/$name.built" 2>/dev/null)" != ok ]; then
        echo "fuzz: $name does not build, see $OUT/$name.build.log" >&2
        summary+=("$name BUILD-FAILED")
        failed=1
        continue
    fi
    status=$(cat "$OUT/$name.result" 2>/dev/null || echo CRASH)
    if [ "$status" != ok ]; then
        status=CRASH
        failed=1
        echo "fuzz: $name found a crash, see $log and $OUT/crash-$name-*" >&2
    fi
    summary+=("$name $status, $(stat_of number_of_executed_units "$log") runs at" \
              "$(stat_of average_exec_per_sec "$log")/s;")
done

verdict=PASS
[ "$failed" -eq 0 ] || verdict=FAIL
line="fuzz: $verdict (${SECONDS_EACH}s each): ${summary[*]}"
echo "${line%;}"
exit "$failed"
