#!/usr/bin/env bash
# Install the Debian packages weir needs to build, test, benchmark and fuzz.
# A fast no-op when everything is present: dpkg-query finds what is missing,
# and only then is `apt-get update` run (once) and the missing ones installed.
# Uses sudo when not root. Debian 12 (bookworm) package names.
set -euo pipefail

PKGS=(
    build-essential pkg-config
    libevent-dev libinih-dev libpq-dev libssl-dev libcmocka-dev openssl
    postgresql postgresql-contrib
    python3-pytest python3-psycopg python3-psycopg2 python3-asyncpg
    clang libclang-rt-14-dev
    pgbouncer valgrind gnuplot-nox
    haproxy python3-yaml gdb
)

missing=()
for p in "${PKGS[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "weir deps: installing missing packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "weir deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
