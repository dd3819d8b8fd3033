#!/usr/bin/env bash
# Install check: `make install PREFIX=/usr DESTDIR=<stage>`, then verify what
# an embedder and a packager see: the files and links, weir.pc through
# pkg-config, a program built against the staged headers and library (and the
# README's embedding example), the exported symbols and the soname; then
# `make uninstall` and verify it removed everything it installed.
# Needs a built tree (make all). Exit status: number of failed checks (capped).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# Called from `make check`: do not inherit its command-line variables or jobserver.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES

VERSION=0.1.0
SOMAJOR=0
CC=${CC:-cc}
STAGE=$(mktemp -d /tmp/weir-install.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT

failures=0
ok() { echo "  ok: $*"; }
fail() { echo "  FAIL: $*"; failures=$((failures + 1)); }

echo "install check: make install PREFIX=/usr DESTDIR=$STAGE"
if ! make --no-print-directory install PREFIX=/usr DESTDIR="$STAGE" > "$STAGE.log" 2>&1; then
    cat "$STAGE.log"
    rm -f "$STAGE.log"
    echo "install check: FAIL: make install failed"
    exit 1
fi
rm -f "$STAGE.log"

P=$STAGE/usr
# What make install must have put down.
expected=(
    "$P/lib/libweir.so.$VERSION"
    "$P/lib/pkgconfig/weir.pc"
    "$P/bin/weir"
    "$STAGE/etc/weir/weir.ini.example"
    "$P/lib/systemd/system/weir.service"
)
for h in lib/include/weir/*.h; do
    expected+=("$P/include/weir/$(basename "$h")")
done
for f in "${expected[@]}"; do
    if [ -f "$f" ]; then ok "${f#"$STAGE"}"; else fail "missing ${f#"$STAGE"}"; fi
done
[ -x "$P/bin/weir" ] || fail "/usr/bin/weir is not executable"

# The development and runtime links.
check_link() {
    local link=$1 target=$2
    if [ -L "$P/lib/$link" ] && [ "$(readlink "$P/lib/$link")" = "$target" ]; then
        ok "/usr/lib/$link -> $target"
    else
        fail "/usr/lib/$link should be a symlink to $target (is: $(readlink "$P/lib/$link" 2>/dev/null || echo missing))"
    fi
}
check_link "libweir.so.$SOMAJOR" "libweir.so.$VERSION"
check_link libweir.so "libweir.so.$SOMAJOR"

# Substituted paths: no @VAR@ left, and they name the install prefix.
if grep -q '@[A-Z]*@' "$P/lib/pkgconfig/weir.pc" "$P/lib/systemd/system/weir.service" 2>/dev/null; then
    fail "unsubstituted @VARS@ in weir.pc or weir.service"
fi
grep -q '^prefix=/usr$' "$P/lib/pkgconfig/weir.pc" && ok "weir.pc prefix=/usr" \
    || fail "weir.pc does not say prefix=/usr: $(head -n 1 "$P/lib/pkgconfig/weir.pc" 2>/dev/null)"
grep -q '^ExecStart=/usr/bin/weir /etc/weir/weir.ini$' "$P/lib/systemd/system/weir.service" \
    && ok "weir.service runs /usr/bin/weir /etc/weir/weir.ini" \
    || fail "weir.service ExecStart is not '/usr/bin/weir /etc/weir/weir.ini'"

# The installed daemon starts and knows its version.
v=$("$P/bin/weir" --version 2>&1)
[ "$(printf "%s\n" "$v" | head -n1)" = "weir $VERSION" ] && ok "weir --version: $(printf "%s" "$v" | head -n1)" || fail "weir --version printed '$v'"

# pkg-config against the stage. Its dependencies (libevent, libpq) come from
# the system, so the system's .pc directories stay on the search path.
SYS_PC=$(pkg-config --variable pc_path pkg-config 2>/dev/null || echo /usr/lib/pkgconfig:/usr/share/pkgconfig)
pc() {
    PKG_CONFIG_SYSROOT_DIR=$STAGE PKG_CONFIG_LIBDIR=$P/lib/pkgconfig:$SYS_PC pkg-config "$@"
}
if PCFLAGS=$(pc --cflags --libs weir 2>&1); then
    ok "pkg-config --cflags --libs weir: $PCFLAGS"
    [ "$(pc --modversion weir)" = "$VERSION" ] || fail "pkg-config --modversion weir is not $VERSION"
else
    fail "pkg-config weir: $PCFLAGS"
    PCFLAGS="-I$P/include -L$P/lib -lweir"
fi

WORK=$STAGE/work
mkdir -p "$WORK"

# Every public header compiles on its own, as C11 and as C++.
before=$failures
for h in lib/include/weir/*.h; do
    name=weir/$(basename "$h")
    printf '#include <%s>\n' "$name" > "$WORK/hdr.c"
    if ! out=$($CC -std=c11 -Wall -Wextra -Werror -pedantic $PCFLAGS -fsyntax-only "$WORK/hdr.c" 2>&1); then
        fail "<$name> does not compile on its own (C11):"; echo "$out" | sed 's/^/    /'
    fi
    if command -v c++ >/dev/null 2>&1; then
        cp "$WORK/hdr.c" "$WORK/hdr.cc"
        if ! out=$(c++ -std=c++11 -Wall -Werror $PCFLAGS -fsyntax-only "$WORK/hdr.cc" 2>&1); then
            fail "<$name> does not compile as C++:"; echo "$out" | sed 's/^/    /'
        fi
    fi
done
[ "$failures" = "$before" ] && ok "public headers compile on their own (C11 and C++)"

# A tiny embedder: version, error strings, the built-in dialect.
cat > "$WORK/prog.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <weir/weir.h>

int main(void)
{
    const weir_dialect *d = weir_dialect_find("postgresql");

    printf("version=%s\n", weir_version());
    printf("enomem=%s\n", weir_strerror(WEIR_ENOMEM));
    printf("unknown=%s\n", weir_strerror(-9999));
    printf("dialect=%s\n", d != NULL && d->name != NULL ? d->name : "(none)");
    if (strcmp(weir_version(), WEIR_VERSION_STRING) != 0)
        return 2;
    return d != NULL ? 0 : 1;
}
EOF
if out=$($CC -std=c11 -Wall -Wextra -Werror -o "$WORK/prog" "$WORK/prog.c" $PCFLAGS 2>&1); then
    ok "tiny program compiles and links against the stage"
    if out=$(LD_LIBRARY_PATH=$P/lib "$WORK/prog" 2>&1); then
        echo "$out" | sed 's/^/    /'
        if echo "$out" | grep -qx "version=$VERSION" && echo "$out" | grep -qx 'dialect=postgresql' \
            && echo "$out" | grep -qx 'enomem=out of memory'; then
            ok "tiny program runs: version, strerror, dialect postgresql"
        else
            fail "tiny program printed unexpected values"
        fi
        # It must have used the staged library, not some other copy.
        lib=$(LD_LIBRARY_PATH=$P/lib ldd "$WORK/prog" | awk '/libweir/ {print $3}')
        case "$lib" in
            "$P"/lib/*) ok "resolved libweir from the stage ($lib)" ;;
            *) fail "libweir resolved to '$lib', not the stage" ;;
        esac
    else
        fail "tiny program failed (exit $?):"; echo "$out" | sed 's/^/    /'
    fi
else
    fail "tiny program does not build:"; echo "$out" | sed 's/^/    /'
fi

# The README's embedding example: the first ```c block under "## Embedding".
awk '/^## Embedding/ {sec = 1; next}
     /^## / {sec = 0}
     sec && !done && /^```c$/ {inb = 1; next}
     inb && /^```$/ {inb = 0; done = 1; next}
     inb {print}' README.md > "$WORK/readme_example.c"
if [ ! -s "$WORK/readme_example.c" ]; then
    fail "no \`\`\`c example under '## Embedding' in README.md"
elif out=$($CC -std=c11 -Wall -Wextra -Werror -o "$WORK/readme_example" "$WORK/readme_example.c" $PCFLAGS 2>&1); then
    ok "README embedding example compiles and links"
else
    fail "README embedding example does not build:"; echo "$out" | sed 's/^/    /'
fi

# The shared library's interface: only weir_* exported, soname libweir.so.MAJOR.
SO=lib/libweir.so.$VERSION
others=$(nm -D --defined-only "$SO" | awk 'NF >= 3 {print $3}' | grep -v '^weir_' || true)
if [ -z "$others" ]; then
    ok "$SO exports only weir_* ($(nm -D --defined-only "$SO" | grep -c ' weir_') symbols)"
else
    fail "$SO exports symbols outside weir_*: $(echo $others)"
fi
internal=$(nm -D --defined-only "$SO" | awk 'NF >= 3 {print $3}' | grep '^weir__' || true)
[ -z "$internal" ] || fail "$SO exports internal weir__* symbols: $(echo $internal)"
soname=$(readelf -d "$SO" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$soname" = "libweir.so.$SOMAJOR" ] && ok "SONAME $soname" || fail "SONAME is '$soname', want libweir.so.$SOMAJOR"
cmp -s "$SO" "$P/lib/libweir.so.$VERSION" || fail "installed libweir.so.$VERSION differs from $SO"

# Uninstall removes every file install put down.
rm -rf "$WORK"
if make --no-print-directory uninstall PREFIX=/usr DESTDIR="$STAGE" > "$STAGE.log" 2>&1; then
    left=$(find "$STAGE" ! -type d | sed "s|^$STAGE||")
    if [ -z "$left" ]; then
        ok "make uninstall removed every installed file"
    else
        fail "left behind by make uninstall: $(echo $left)"
    fi
    [ ! -d "$P/include/weir" ] || fail "make uninstall left /usr/include/weir"
    [ ! -d "$STAGE/etc/weir" ] || fail "make uninstall left /etc/weir"
else
    cat "$STAGE.log"
    fail "make uninstall failed"
fi
rm -f "$STAGE.log"

if [ "$failures" -eq 0 ]; then
    echo "install check: all passed"
    exit 0
fi
echo "install check: $failures failed"
exit $((failures > 100 ? 100 : failures))
