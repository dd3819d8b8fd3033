/*
 * libFuzzer target for weir's own backend connect (daemon/backend_raw.c):
 * whatever a server sends during login (authentication requests of every
 * kind, SCRAM messages, errors, parameters, keys, ReadyForQuery, garbage).
 * The first input byte picks the credential (md5 secret, SCRAM keys, SCRAM
 * secret without keys); the rest is the server's byte stream, written to a
 * real Unix socket the connect reads from. Checks that the connect ends in
 * OK or FAILED (never stuck wanting to write, never crashing), that a failure
 * has a message, and that an OK connection has seen ReadyForQuery.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "backend.h"

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One listening socket for the whole run (a fuzzer process is single-threaded). */
static int listen_fd = -1;
static char sock_dir[64];

static void listen_once(void)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};

    if (listen_fd >= 0)
        return;
    snprintf(sock_dir, sizeof(sock_dir), "/tmp/weir-fuzz-login-%d", (int)getpid());
    CHECK(mkdir(sock_dir, 0700) == 0 || access(sock_dir, W_OK) == 0);
    snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.5432", sock_dir);
    unlink(un.sun_path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(listen_fd >= 0);
    CHECK(bind(listen_fd, (struct sockaddr *)&un, sizeof(un)) == 0);
    CHECK(listen(listen_fd, 16) == 0);
}

static const char *const passwords[] = {
    "md50123456789abcdef0123456789abcdef",
    "weir-scram-keys$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
    "SCRAM-SHA-256$4096:c2FsdA==$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char conninfo[512], err[256];
    PQconninfoOption *opts;
    struct raw_conn *r = NULL;
    weir_poll p = WEIR_POLL_READ;
    int srv;

    if (size < 1 || size > 65536)
        return 0;
    listen_once();
    snprintf(conninfo, sizeof(conninfo), "host=%s port=5432 user=fuzz dbname=db password='%s'", sock_dir,
             passwords[data[0] % 3]);
    opts = PQconninfoParse(conninfo, NULL);
    CHECK(opts != NULL);
    CHECK(raw_connect_start(opts, &r, err, sizeof(err)) == 0);
    PQconninfoFree(opts);
    srv = accept(listen_fd, NULL, NULL);
    CHECK(srv >= 0);
    /* The server's whole stream, then EOF: the connect must finish. The
     * socket buffer holds 64 KiB, so writing first cannot block. */
    if (size > 1)
        CHECK(write(srv, data + 1, size - 1) == (ssize_t)(size - 1));
    shutdown(srv, SHUT_WR);
    for (int i = 0; i < 1000 && (p == WEIR_POLL_READ || p == WEIR_POLL_WRITE); i++)
        p = raw_connect_poll(r);
    CHECK(p == WEIR_POLL_OK || p == WEIR_POLL_FAILED);
    if (p == WEIR_POLL_FAILED)
        CHECK(raw_error(r)[0] != '\0');
    else
        CHECK(!raw_is_broken(r));
    raw_close(r);
    close(srv);
    return 0;
}
