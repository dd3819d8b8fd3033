#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for weir's tests, benchmarks and `make run`.
#
#   pgcluster.sh start   DIR [PORT]  initdb (first time) and start; writes DIR/env.sh
#   pgcluster.sh stop    DIR         stop (fast, then immediate, then SIGKILL)
#   pgcluster.sh restart DIR         restart on the same port (tests use this)
#   pgcluster.sh status  DIR         exit 0 when running
#   pgcluster.sh env     DIR         print the shell exports (source-able)
#   pgcluster.sh destroy DIR         stop and delete everything, DIR included
#
# The cluster listens on 127.0.0.1:PORT (a free port is picked when none is
# given) and on a Unix socket in its own directory. fsync is off: the data is
# disposable. Roles, all reachable only from this machine:
#   superuser (postgres, or the invoking user when not root): local trust
#   weir_test   superuser for tests, trust over local and 127.0.0.1; owns database weir_test
#   weir_scram  password stored as SCRAM-SHA-256, scram-sha-256 auth
#   weir_md5    password stored as MD5, md5 auth
#
# PostgreSQL refuses to run as root: as root, every server program runs as the
# `postgres` user. Its files live in DIR/pg when that user can reach DIR,
# otherwise in a /tmp/weir-pg.* directory that DIR/pgbase points to.
# Set WEIR_TEST_PG_SSL=1 at first start for a self-signed TLS certificate and ssl=on;
# or WEIR_TEST_PG_SSL_CERT=FILE and WEIR_TEST_PG_SSL_KEY=FILE for that certificate
# (readable by postgres). WEIR_TEST_PG_HOSTSSL=1 at first start: TCP connections
# must use TLS (hostssl lines in pg_hba.conf, no host lines).
set -euo pipefail

PROG=pgcluster
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

SCRAM_USER=weir_scram
SCRAM_PASSWORD=weir-scram-secret
MD5_USER=weir_md5
MD5_PASSWORD=weir-md5-secret
TEST_USER=weir_test
TEST_DB=weir_test

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }

usage() {
    sed -n '2,9p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_pgbin() {
    local d
    if [ -n "${WEIR_PGBIN:-}" ]; then echo "$WEIR_PGBIN"; return; fi
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then echo /usr/lib/postgresql/15/bin; return; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
    done
    d=$(pg_config --bindir 2>/dev/null || true)
    [ -n "$d" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
    die "no PostgreSQL server binaries found (install postgresql, or set WEIR_PGBIN)"
}
PGBIN=$(find_pgbin)

if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (apt-get install postgresql)"
    PGOSUSER=postgres
else
    PGOSUSER=$(id -un)
fi
SUPERUSER=$PGOSUSER

# Run a command as the user that owns the cluster, from a directory it can
# read (initdb and pg_ctl fail when they cannot resolve the current directory).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local p i
    if [ -x /usr/bin/python3 ]; then
        /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' && return
    fi
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "could not find a free TCP port"
}

# Resolve DIR and the locations derived from it into globals.
locate() {
    [ -n "${1:-}" ] || usage
    if [ "${2:-}" = create ]; then mkdir -p "$1"; fi
    [ -d "$1" ] || die "no such directory: $1"
    DIR=$(cd "$1" && pwd)
    if [ -f "$DIR/pgbase" ]; then
        PGBASE=$(cat "$DIR/pgbase")
    else
        PGBASE=$DIR/pg
    fi
    PGDATA_DIR=$PGBASE/data
    PGLOG=$PGBASE/postgresql.log
    if [ -f "$DIR/sockdir" ]; then SOCKDIR=$(cat "$DIR/sockdir"); else SOCKDIR=$PGBASE/sock; fi
}

# Where the server's files go, decided once at initdb time.
choose_base() {
    local reachable=1
    if [ "$(id -u)" -eq 0 ]; then
        chmod go+x "$DIR"
        runuser -u postgres -- test -x "$DIR/." 2>/dev/null || reachable=0
    fi
    if [ "$reachable" = 1 ]; then
        PGBASE=$DIR/pg
        rm -f "$DIR/pgbase"
        mkdir -p "$PGBASE"
    else
        PGBASE=$(mktemp -d /tmp/weir-pg.XXXXXX)
        echo "$PGBASE" > "$DIR/pgbase"
        say "postgres cannot reach $DIR; cluster files are in $PGBASE"
    fi
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PGBASE"; fi
    chmod 755 "$PGBASE"
    PGDATA_DIR=$PGBASE/data
    PGLOG=$PGBASE/postgresql.log
    # Unix socket paths are limited to 107 bytes: ".s.PGSQL.65535" must fit.
    SOCKDIR=$PGBASE/sock
    if [ ${#SOCKDIR} -gt 90 ]; then
        SOCKDIR=$(mktemp -d /tmp/weir-sock.XXXXXX)
        echo "$SOCKDIR" > "$DIR/sockdir"
    else
        rm -f "$DIR/sockdir"
        mkdir -p "$SOCKDIR"
    fi
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$SOCKDIR"; fi
    chmod 755 "$SOCKDIR"
}

is_initialized() { [ -f "$PGDATA_DIR/PG_VERSION" ]; }

is_running() {
    is_initialized || return 1
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

recorded_port() {
    { sed -n "s/^port = \([0-9]*\)$/\1/p" "$PGDATA_DIR/weir-test.conf" 2>/dev/null || true; } | tail -n 1
}

# The settings weir's tests depend on; rewritten at each start so the port can change.
write_conf() {
    local port=$1 tmp
    tmp=$(mktemp)
    cat > "$tmp" <<EOF
# Written by tests/tools/pgcluster.sh on each start.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCKDIR'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_wal_size = 1GB
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if [ -f "$PGBASE/ssl-on" ]; then
        printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >> "$tmp"
    fi
    chmod 644 "$tmp"
    as_pg tee "$PGDATA_DIR/weir-test.conf" < "$tmp" > /dev/null
    rm -f "$tmp"
}

write_hba() {
    local host=host
    [ "${WEIR_TEST_PG_HOSTSSL:-0}" = 1 ] && host=hostssl
    as_pg tee "$PGDATA_DIR/pg_hba.conf" > /dev/null <<EOF
# Written by tests/tools/pgcluster.sh. Nothing listens beyond 127.0.0.1.
# TYPE  DATABASE  USER          ADDRESS         METHOD
local   all       $SUPERUSER                    trust
local   all       $TEST_USER                    trust
$host    all       $TEST_USER    127.0.0.1/32    trust
local   all       $SCRAM_USER                   scram-sha-256
$host    all       $SCRAM_USER   127.0.0.1/32    scram-sha-256
local   all       $MD5_USER                     md5
$host    all       $MD5_USER     127.0.0.1/32    md5
EOF
}

do_initdb() {
    say "initdb in $PGDATA_DIR"
    as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U "$SUPERUSER" -A trust -E UTF8 --locale=C.UTF-8 \
        --no-sync > "$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    echo "include_if_exists = 'weir-test.conf'" | as_pg tee -a "$PGDATA_DIR/postgresql.conf" > /dev/null
    write_hba
    if [ -n "${WEIR_TEST_PG_SSL_CERT:-}" ]; then
        as_pg install -m 644 "$WEIR_TEST_PG_SSL_CERT" "$PGDATA_DIR/server.crt" \
            && as_pg install -m 600 "$WEIR_TEST_PG_SSL_KEY" "$PGDATA_DIR/server.key" \
            || die "could not copy the TLS certificate and key (readable by $PGOSUSER?)"
        as_pg touch "$PGBASE/ssl-on"
    elif [ "${WEIR_TEST_PG_SSL:-0}" = 1 ]; then
        command -v openssl >/dev/null || die "WEIR_TEST_PG_SSL=1 needs openssl"
        as_pg openssl req -new -x509 -days 3650 -nodes -subj /CN=127.0.0.1 \
            -keyout "$PGDATA_DIR/server.key" -out "$PGDATA_DIR/server.crt" > /dev/null 2>&1 \
            || die "could not make a TLS certificate"
        as_pg chmod 600 "$PGDATA_DIR/server.key"
        as_pg touch "$PGBASE/ssl-on"
    fi
}

# pg_ctl start; returns non-zero (and keeps the log) on failure.
pg_start() {
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 60 start > /dev/null 2>&1
}

psql_super() {
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U "$SUPERUSER" "$@"
}

setup_roles() {
    psql_super -d postgres > /dev/null <<EOF
CREATE ROLE $TEST_USER LOGIN SUPERUSER;
CREATE DATABASE $TEST_DB OWNER $TEST_USER;
SET password_encryption = 'scram-sha-256';
CREATE ROLE $SCRAM_USER LOGIN PASSWORD '$SCRAM_PASSWORD';
SET password_encryption = 'md5';
CREATE ROLE $MD5_USER LOGIN PASSWORD '$MD5_PASSWORD';
RESET password_encryption;
EOF
    psql_super -d "$TEST_DB" > /dev/null <<EOF
GRANT ALL ON SCHEMA public TO $SCRAM_USER, $MD5_USER;
EOF
    local enc
    enc=$(psql_super -d postgres -At -c "SELECT string_agg(rolname || '=' || left(rolpassword, 5), ',' ORDER BY rolname) FROM pg_authid WHERE rolname IN ('$SCRAM_USER', '$MD5_USER')")
    [[ "$enc" == "$MD5_USER=md5"*",$SCRAM_USER=SCRAM" ]] || die "unexpected password storage: $enc"
    touch "$DIR/.roles-done"
}

# One `export NAME='value'` line, single-quoted so the file reads plainly.
export_line() {
    local v=$2
    printf "export %s='%s'\n" "$1" "${v//\'/\'\\\'\'}"
}

write_env() {
    local restart
    restart=$(printf '%q restart %q' "$SELF" "$DIR")
    {
        echo "# Written by tests/tools/pgcluster.sh; source it: . $DIR/env.sh"
        export_line PGHOST 127.0.0.1
        export_line PGPORT "$PORT"
        export_line PGUSER "$TEST_USER"
        export_line PGDATABASE "$TEST_DB"
        export_line WEIR_TEST_DSN "host=127.0.0.1 port=$PORT user=$TEST_USER dbname=$TEST_DB"
        export_line WEIR_TEST_PG_RESTART "$restart"
        export_line WEIR_TEST_PGDIR "$DIR"
        export_line WEIR_TEST_PGHOST 127.0.0.1
        export_line WEIR_TEST_PGPORT "$PORT"
        export_line WEIR_TEST_PGSOCKDIR "$SOCKDIR"
        export_line WEIR_TEST_PGDATA "$PGDATA_DIR"
        export_line WEIR_TEST_PGLOG "$PGLOG"
        export_line WEIR_TEST_PGBIN "$PGBIN"
        export_line WEIR_TEST_PG_SSL "$([ -f "$PGBASE/ssl-on" ] && echo 1 || echo 0)"
        export_line WEIR_TEST_SUPERUSER "$SUPERUSER"
        export_line WEIR_TEST_USER "$TEST_USER"
        export_line WEIR_TEST_DB "$TEST_DB"
        export_line WEIR_TEST_SCRAM_USER "$SCRAM_USER"
        export_line WEIR_TEST_SCRAM_PASSWORD "$SCRAM_PASSWORD"
        export_line WEIR_TEST_MD5_USER "$MD5_USER"
        export_line WEIR_TEST_MD5_PASSWORD "$MD5_PASSWORD"
    } > "$DIR/env.sh.tmp"
    mv "$DIR/env.sh.tmp" "$DIR/env.sh"
}

cmd_start() {
    locate "${1:-}" create
    local want_port=${2:-} tries=0 fresh=0
    if ! is_initialized; then
        choose_base
        do_initdb
        fresh=1
    fi
    if is_running; then
        PORT=$(recorded_port)
        [ -z "$want_port" ] || [ "$want_port" = "$PORT" ] \
            || die "already running on port $PORT; stop it first to change the port"
        say "already running on 127.0.0.1:$PORT"
    else
        PORT=${want_port:-$(recorded_port)}
        [ -n "$PORT" ] || PORT=$(free_port)
        while :; do
            write_conf "$PORT"
            if pg_start; then break; fi
            tries=$((tries + 1))
            # An auto-chosen port can be taken between choosing and binding: try another.
            if [ -z "$want_port" ] && [ $tries -lt 5 ] \
                && as_pg tail -n 20 "$PGLOG" 2>/dev/null | grep -q -i 'could not bind\|address already in use\|lock file.*already exists'; then
                say "port $PORT is taken, trying another"
                PORT=$(free_port)
                continue
            fi
            as_pg tail -n 30 "$PGLOG" >&2 || true
            die "PostgreSQL did not start (log: $PGLOG)"
        done
    fi
    if [ "$fresh" = 1 ] || [ ! -f "$DIR/.roles-done" ]; then
        setup_roles
    fi
    write_env
    say "PostgreSQL running on 127.0.0.1:$PORT (socket $SOCKDIR); environment in $DIR/env.sh"
}

cmd_stop() {
    locate "${1:-}"
    is_initialized || { say "no cluster in $DIR"; return 0; }
    is_running || return 0
    if as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 20 stop > /dev/null 2>&1; then
        return 0
    fi
    say "fast shutdown failed; trying immediate"
    if as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 10 stop > /dev/null 2>&1; then
        return 0
    fi
    local pid
    pid=$(as_pg head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "killing postmaster $pid"
        kill -KILL "$pid" 2>/dev/null || true
        # Its children exit when they notice the postmaster is gone; give them a moment.
        for _ in $(seq 1 50); do
            pgrep -P "$pid" > /dev/null 2>&1 || break
            sleep 0.1
        done
    fi
    as_pg rm -f "$PGDATA_DIR/postmaster.pid"
}

cmd_restart() {
    locate "${1:-}"
    is_initialized || die "no cluster in $DIR"
    PORT=$(recorded_port)
    if is_running; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -m fast -w -t 60 restart > /dev/null 2>&1 \
            || { as_pg tail -n 30 "$PGLOG" >&2 || true; die "restart failed (log: $PGLOG)"; }
    else
        pg_start || { as_pg tail -n 30 "$PGLOG" >&2 || true; die "start failed (log: $PGLOG)"; }
    fi
}

cmd_status() {
    locate "${1:-}"
    if is_running; then
        echo "running on 127.0.0.1:$(recorded_port)"
    else
        echo "not running"
        return 3
    fi
}

cmd_env() {
    locate "${1:-}"
    [ -f "$DIR/env.sh" ] || die "no $DIR/env.sh: run '$0 start $DIR' first"
    cat "$DIR/env.sh"
}

cmd_destroy() {
    [ -n "${1:-}" ] || usage
    [ -d "$1" ] || return 0
    cmd_stop "$1"
    if [ "$SOCKDIR" != "$PGBASE/sock" ]; then rm -rf "$SOCKDIR"; fi
    if [ "$PGBASE" != "$DIR/pg" ]; then rm -rf "$PGBASE"; fi
    rm -rf "$DIR"
}

case "${1:-}" in
    start) cmd_start "${2:-}" "${3:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    restart) cmd_restart "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    env) cmd_env "${2:-}" ;;
    destroy) cmd_destroy "${2:-}" ;;
    *) usage ;;
esac
