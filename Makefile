# weir: PostgreSQL connection pooler (daemon/weir) and the library it is built
# on (lib/libweir.so). `make run` and `make check` install what they need first.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(PREFIX)/lib/systemd/system

VERSION := 0.1.0
SOMAJOR := 0
SONAME := libweir.so.$(SOMAJOR)
LIBFILE := lib/libweir.so.$(VERSION)

CC ?= cc
CFLAGS ?= -O2 -g
WARN := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
DEPS_PKGS := libevent libevent_pthreads libpq
DEPS_CFLAGS := $(shell pkg-config --cflags $(DEPS_PKGS) 2>/dev/null)
DEPS_LIBS := $(shell pkg-config --libs $(DEPS_PKGS) 2>/dev/null || echo -levent -levent_pthreads -lpq) -lpthread -lm
DAEMON_LIBS := $(shell pkg-config --libs inih openssl 2>/dev/null || echo -linih -lssl -lcrypto)
# The intrusive lists reach their containers through member pointers, as
# PostgreSQL and Linux do, and are built the way those projects build them:
# GCC 12 at -O2 hoisted a list load out of the pool's checkout loop under
# strict aliasing (an endless loop once an idle connection was retired).
SAFE := -fno-strict-aliasing
ALL_CFLAGS = $(WARN) $(SAFE) $(CFLAGS) -Ilib/include -Ilib/src $(DEPS_CFLAGS) -MMD -MP

B := .build
NPROC := $(shell nproc 2>/dev/null || echo 2)
LIB_SRCS := $(wildcard lib/src/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/pic/%.o)
DAEMON_SRCS := $(wildcard daemon/*.c)
# Everything of the daemon but main(), for unit tests of its modules.
DAEMON_MODS := $(filter-out daemon/main.c,$(DAEMON_SRCS))
DAEMON_MOD_OBJS := $(DAEMON_MODS:%.c=$(B)/pic/%.o)
HEADERS := $(wildcard lib/include/weir/*.h)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_HELPERS := $(filter-out $(UNIT_SRCS),$(wildcard tests/unit/*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/unit/%)
ASAN_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/asan/%)
ITEST_SRCS := $(wildcard tests/integration/*.c)
ITEST_BINS := $(ITEST_SRCS:tests/integration/%.c=$(B)/itest/%)
BENCH_SRCS := $(wildcard tests/bench/*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(B)/bench/%)
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all lib daemon check check-tsan unit asan itest install uninstall clean bench fuzz run deps tests-build
all: lib daemon

lib: $(LIBFILE) lib/$(SONAME) lib/libweir.so lib/weir.pc $(B)/libweir.a
daemon: daemon/weir

$(B)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

$(B)/libweir.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/libdaemon.a: $(DAEMON_MOD_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(LIBFILE): $(LIB_OBJS)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(LDFLAGS) -o $@ $^ $(DEPS_LIBS)

lib/$(SONAME): $(LIBFILE)
	ln -sf $(notdir $<) $@
lib/libweir.so: lib/$(SONAME)
	ln -sf $(notdir $<) $@

# weir.pc is also written at install time, so `make install PREFIX=...` after a
# plain `make` does not install a .pc that names the build's default prefix.
PC_SUBST = -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g'
lib/weir.pc: lib/weir.pc.in Makefile
	sed $(PC_SUBST) $< > $@

# The daemon holds the library's code itself: one binary to deploy. It is
# compiled from all sources in one go with link-time optimisation, because
# every transaction crosses stream.c, client.c, server.c and the pool, and
# inlining across them takes about a tenth off the instructions per
# transaction (make bench, callgrind row). DAEMON_OPT= builds it plainly.
# CFLAGS given on the command line or in the environment (a debug build, a
# distribution's flags) are left alone.
ifeq ($(origin CFLAGS),file)
DAEMON_OPT ?= -O3 -flto=auto -fno-plt
endif
# libevent is linked into the daemon statically where its archives are
# installed (Debian's libevent-dev has them): its dispatch is about a third of
# the daemon's instructions per transaction, and a static copy makes its
# internal calls direct instead of through the PLT (about 80 instructions per
# transaction fewer, callgrind). LIBEVENT_STATIC=0 links the shared library,
# as a distribution that rebuilds dependents on a libevent update would.
LIBEVENT_STATIC ?= $(if $(and $(wildcard $(shell $(CC) -print-file-name=libevent.a)),$(wildcard $(shell $(CC) -print-file-name=libevent_pthreads.a))),1,0)
ifeq ($(LIBEVENT_STATIC),1)
DAEMON_DEPS_LIBS = -Wl,-Bstatic -levent_pthreads -levent -Wl,-Bdynamic $(filter-out -levent -levent_pthreads,$(DEPS_LIBS))
else
DAEMON_DEPS_LIBS = $(DEPS_LIBS)
endif
daemon/weir: $(LIB_SRCS) $(DAEMON_SRCS) $(HEADERS) $(wildcard daemon/*.h lib/src/*.h)
	$(CC) $(filter-out -MMD -MP,$(ALL_CFLAGS)) $(DAEMON_OPT) -Idaemon $(LDFLAGS) -o $@ $(LIB_SRCS) $(DAEMON_SRCS) \
		$(DAEMON_DEPS_LIBS) $(DAEMON_LIBS)

# Unit tests link the library's objects so they can reach internal functions.
$(B)/unit/%: tests/unit/%.c $(UNIT_HELPERS) $(B)/libdaemon.a $(B)/libweir.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon -o $@ $< $(UNIT_HELPERS) $(B)/libdaemon.a $(B)/libweir.a $(DEPS_LIBS) $(DAEMON_LIBS) -lcmocka

# The same under AddressSanitizer + UndefinedBehaviorSanitizer: objects built once.
ASAN_OBJS := $(patsubst %.c,$(B)/asanobj/%.o,$(LIB_SRCS) $(DAEMON_MODS) $(UNIT_HELPERS))
$(B)/asanobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon $(SAN) -c $< -o $@

$(B)/libasan-all.a: $(ASAN_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/asan/%: tests/unit/%.c $(B)/libasan-all.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon $(SAN) -o $@ $< $(B)/libasan-all.a $(DEPS_LIBS) $(DAEMON_LIBS) -lcmocka

# The daemon itself under ASan+UBSan, for the network fuzz test (test_netfuzz.py).
$(B)/asan-weir: daemon/main.c $(B)/libasan-all.a $(HEADERS)
	$(CC) $(ALL_CFLAGS) -Idaemon $(SAN) -o $@ daemon/main.c $(B)/libasan-all.a $(DEPS_LIBS) $(DAEMON_LIBS)

# The daemon under ThreadSanitizer, for the integration suite with workers = 4
# (make check-tsan). Built from the sources in one go: no other object uses it.
TSAN := -fsanitize=thread -fno-omit-frame-pointer
$(B)/tsan-weir: $(LIB_SRCS) $(DAEMON_SRCS) $(HEADERS) $(wildcard daemon/*.h lib/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon $(TSAN) -o $@ $(LIB_SRCS) $(DAEMON_SRCS) $(DEPS_LIBS) $(DAEMON_LIBS)

$(B)/itest/%: tests/integration/%.c $(B)/libweir.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libweir.a $(DEPS_LIBS) -lcmocka

$(B)/bench/%: tests/bench/%.c $(B)/libweir.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libweir.a $(DEPS_LIBS)

tests-build: all $(UNIT_BINS) $(ASAN_BINS) $(ITEST_BINS) $(B)/asan-weir $(B)/tsan-weir

deps:
	@tests/tools/deps.sh

# Everything: installs missing packages, builds, starts a private PostgreSQL,
# runs unit tests (plain and under ASan+UBSan) and integration tests.
# Builds go one per core: half of a clean check's build time on 2 cores.
check: deps
	@$(MAKE) --no-print-directory -j$(NPROC) tests-build
	@tests/tools/check.sh

# make check, with the whole integration suite also run under ThreadSanitizer (workers = 4).
check-tsan: deps
	@$(MAKE) --no-print-directory -j$(NPROC) tests-build
	@WEIR_CHECK_TSAN=full tests/tools/check.sh

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@tests/tools/bench.sh

fuzz: deps
	@tests/fuzz/run.sh

run: deps
	@$(MAKE) --no-print-directory all
	@tests/tools/run.sh

install: all
	install -d $(DESTDIR)$(INCLUDEDIR)/weir $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/weir $(DESTDIR)$(UNITDIR)
	install -m 644 $(HEADERS) $(DESTDIR)$(INCLUDEDIR)/weir/
	install -m 755 $(LIBFILE) $(DESTDIR)$(LIBDIR)/
	ln -sf libweir.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libweir.so
	sed $(PC_SUBST) lib/weir.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/weir.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/weir.pc
	install -m 755 daemon/weir $(DESTDIR)$(BINDIR)/weir
	install -m 644 conf/weir.ini $(DESTDIR)$(SYSCONFDIR)/weir/weir.ini.example
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/weir.service \
	    > $(DESTDIR)$(UNITDIR)/weir.service
	install -m 644 systemd/weir.socket $(DESTDIR)$(UNITDIR)/weir.socket

uninstall:
	rm -f $(addprefix $(DESTDIR)$(INCLUDEDIR)/weir/,$(notdir $(HEADERS)))
	-rmdir $(DESTDIR)$(INCLUDEDIR)/weir
	rm -f $(DESTDIR)$(LIBDIR)/libweir.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libweir.so
	rm -f $(DESTDIR)$(LIBDIR)/pkgconfig/weir.pc $(DESTDIR)$(BINDIR)/weir
	rm -f $(DESTDIR)$(SYSCONFDIR)/weir/weir.ini.example $(DESTDIR)$(UNITDIR)/weir.service \
	    $(DESTDIR)$(UNITDIR)/weir.socket
	-rmdir $(DESTDIR)$(SYSCONFDIR)/weir

clean:
	rm -rf $(B) lib/libweir.so* lib/weir.pc daemon/weir tests/tmp

-include $(shell find $(B) -name '*.d' 2>/dev/null)
