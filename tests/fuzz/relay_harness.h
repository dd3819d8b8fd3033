/*
 * The daemon's message relay without a network, for the stream fuzzers
 * (fuzz_client_stream.c, fuzz_server_stream.c). It compiles daemon/server.c
 * into the fuzzer itself (so its static functions, e.g. server_on_read, are
 * reachable) and links prepared_relay.c, prepared.c, params.c, stream.c,
 * log.c, tls.c and the backend modules unchanged; what lies outside the
 * relay -- the pool, host health, the client's state machine -- is replaced
 * by small stand-ins below that keep to the same contracts. One fake client is linked to one fake server at a time:
 * client bytes go through server_forward_from_client(), server bytes
 * through server_on_read(), exactly as the event loop would call them.
 * When the server goes back to the pool the client gets it again (or a new
 * one if it went back broken) on its next message, as the pooler does, with
 * server_check_query run first in one of the modes (server_check_delay 0).
 * After each step the harness checks the relay's bookkeeping; at the end it
 * frees everything and checks that no prepared statement is left referenced.
 */
#ifndef WEIR_FUZZ_RELAY_HARNESS_H
#define WEIR_FUZZ_RELAY_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../daemon/server.c"

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            __builtin_trap(); \
    } while (0)

/* ---- the world around the relay ---- */

struct harness {
    struct event_base *base;
    struct weir_config cfg;
    struct daemon d;
    struct worker w, *workers[1];
    struct dp_counters ctr;
    struct dpool dp;
    struct client c;
    struct server *s;     /* the one server; NULL after it was closed */
    int cfd[2], sfd[2];   /* socketpairs: [0] weir's end, [1] the peer's */
    int s_broken;         /* checked in broken or invalidated: must be replaced */
    int s_in_pool;        /* checked in clean: waiting for the next link */
};

static struct harness H;

/* The pool: checkin and invalidation only record what the relay decided. */
void weir_pool_checkin(weir_pool *pool, weir_pooled *conn, int flags)
{
    (void)pool;
    (void)conn;
    CHECK(H.s != NULL && !H.s_in_pool);
    if (flags == WEIR_CHECKIN_BROKEN)
        H.s_broken = 1;
    else
        H.s_in_pool = 1;
}

void weir_pool_checkin_at(weir_pool *pool, weir_pooled *conn, int flags, int64_t now_us)
{
    (void)now_us;
    /* HEALTHY only ever comes with CLEAN: the relay saw ReadyForQuery 'I'. */
    CHECK(!(flags & WEIR_CHECKIN_HEALTHY) || (flags & WEIR_CHECKIN_CLEAN));
    weir_pool_checkin(pool, conn, flags & ~WEIR_CHECKIN_HEALTHY);
}

void weir_pool_invalidate(weir_pool *pool, weir_pooled *conn)
{
    (void)pool;
    (void)conn;
    H.s_broken = 1;
}

void *weir_pooled_driver_handle(const weir_pooled *conn)
{
    (void)conn;
    return NULL;
}

void weir_pooled_set_affinity(weir_pooled *conn, uintptr_t tag)
{
    (void)conn;
    (void)tag;
}

uintptr_t weir_pooled_target(const weir_pooled *conn)
{
    (void)conn;
    return 0;
}

int64_t weir_pooled_age_us(const weir_pooled *conn)
{
    (void)conn;
    return 0;
}

/* One pool generation: no server is ever close_needed (server_fast_close). */
void weir_pool_get_stats(weir_pool *pool, weir_pool_stats *out)
{
    (void)pool;
    memset(out, 0, sizeof(*out));
}

uint64_t weir_pooled_generation(const weir_pooled *conn)
{
    (void)conn;
    return 0;
}

/* One worker: its posts run on the harness's base. */
int worker_post(struct worker *w, event_callback_fn fn, void *arg)
{
    return event_base_once(w->base, -1, EV_TIMEOUT, fn, arg, NULL);
}

/* Host health (health.c) is told about lost servers and failover errors;
 * nothing to track here. */
void health_server_lost(struct dpool *dp, uintptr_t tag)
{
    (void)dp;
    (void)tag;
}

void health_server_error(struct dpool *dp, uintptr_t tag, const char *sqlstate)
{
    (void)dp;
    (void)tag;
    (void)sqlstate;
}

void *weir_pooled_get_data(const weir_pooled *conn)
{
    (void)conn;
    return NULL;
}

void weir_pooled_set_data(weir_pooled *conn, void *data, void (*free_fn)(void *data))
{
    (void)conn;
    (void)data;
    (void)free_fn;
}

/* The client side: what client.c does that concerns the server link. */
void client_log(struct client *c, int level, const char *fmt, ...)
{
    (void)c;
    (void)level;
    (void)fmt;
}

void client_rearm_timer(struct client *c, int64_t us)
{
    (void)c;
    (void)us;
}

/* The fake client reads everything weir writes to it at once. */
int client_flush(struct client *c)
{
    if (c->state == CL_CLOSING)
        return -1;
    evbuffer_drain(c->io.out, evbuffer_get_length(c->io.out));
    return 0;
}

/* As client_disconnect(): the server goes back, clean only at a boundary. */
void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    (void)sqlstate;
    (void)fmt;
    if (c->state == CL_CLOSING)
        return;
    c->state = CL_CLOSING;
    if (c->server) {
        struct server *s = c->server;
        int clean = s->pending == 0 && !c->unsynced && c->fwd_remaining == 0 && s->txn == 'I';
        server_release(s, clean);
    }
}

void client_server_released(struct client *c)
{
    c->server = NULL;
    c->state = CL_IDLE;
}

/* As client_server_checked(): link the server that passed its check; after
 * a failed one the client asks again (maybe_link, on the next step). */
void client_server_checked(struct client *c, struct server *s)
{
    if (s == NULL) {
        c->state = CL_IDLE;
        return;
    }
    c->state = CL_ACTIVE;
    if (server_link(s, c) != 0 && c->state != CL_CLOSING)
        client_disconnect(c, "08P01", "server conn crashed?");
}

/* ---- setup and teardown ---- */

static void drain_fd(int fd)
{
    char buf[65536];

    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static void new_server(void)
{
    struct server *s = calloc(1, sizeof(*s));

    CHECK(s != NULL);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, H.sfd) == 0);
    s->d = &H.d;
    s->w = &H.w;
    s->dp = &H.dp;
    s->id = ++H.d.next_id;
    s->txn = 'I';
    s->fresh = 1;
    CHECK(stream_init(&s->io, H.base, H.sfd[0], server_on_read, server_on_drain, s) == 0);
    stream_set_flat(&s->io, server_on_flat, &H.w.loop);
    /* What the backend reported at login; the client may want other values. */
    param_set_put(&s->params, TP_DATESTYLE, "ISO, MDY");
    param_set_put(&s->params, TP_APPLICATION_NAME, "");
    H.s = s;
    H.s_broken = H.s_in_pool = 0;
}

/* What server_detach() does when the pool closes a backend. */
static void free_server(void)
{
    struct server *s = H.s;

    if (s == NULL)
        return;
    stream_release(&s->io);
    prep_server_free(s);
    param_set_clear(&s->params);
    free(s);
    close(H.sfd[0]);
    close(H.sfd[1]);
    H.s = NULL;
}

/*
 * flags: bits 0-1 pool mode (transaction, statement, session, transaction
 * with server_check_query before each reuse), bit 2
 * max_prepared_statements 0, bit 3 a tiny server set (evictions), bit 4
 * server_reset_query_always, bit 5 max_packet_size 300, bit 6 the client
 * wants other parameters (SETs), bit 7 a connect_query.
 */
static void harness_setup(uint8_t flags)
{
    static const enum pool_mode modes[4] = {POOL_MODE_TRANSACTION, POOL_MODE_STATEMENT, POOL_MODE_SESSION,
                                            POOL_MODE_TRANSACTION};

    if (H.base == NULL) {
        H.base = event_base_new();
        CHECK(H.base != NULL);
    }
    memset(&H.cfg, 0, sizeof(H.cfg));
    H.cfg.server_reset_query = (char *)"DISCARD ALL";
    H.cfg.server_reset_query_always = (flags & 16) != 0;
    H.cfg.max_prepared_statements = (flags & 4) ? 0 : (flags & 8) ? 2 : 100;
    H.cfg.max_packet_size = (flags & 32) ? 300 : 0;
    H.cfg.disable_pqexec = (flags & 48) == 48; /* simple queries refused, in a quarter of those */
    H.cfg.server_check_query = (char *)((flags & 3) == 3 ? "SELECT 1" : "");
    H.cfg.server_check_delay_us = 0;

    memset(&H.d, 0, sizeof(H.d));
    H.d.base = H.base;
    memset(&H.w, 0, sizeof(H.w));
    H.w.d = &H.d;
    H.w.base = H.base;
    H.workers[0] = &H.w;
    H.d.workers = H.workers;
    H.d.nworkers = 1;
    H.d.cfg = &H.cfg;
    H.d.log.min_level = LG_FATAL + 1; /* quiet */
    H.w.loop.now_valid = 0;
    H.d.pstmts = pstmt_registry_new();
    CHECK(H.d.pstmts != NULL);

    memset(&H.dp, 0, sizeof(H.dp));
    memset(&H.ctr, 0, sizeof(H.ctr));
    H.dp.ctr = &H.ctr;
    H.dp.d = &H.d;
    H.dp.dbname = (char *)"db";
    H.dp.user = (char *)"user";
    H.dp.mode = modes[flags & 3];
    H.dp.connect_query = (char *)((flags & 128) ? "SELECT 1" : "");

    memset(&H.c, 0, sizeof(H.c));
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, H.cfd) == 0);
    H.c.d = &H.d;
    H.c.w = &H.w;
    H.c.dp = &H.dp;
    H.c.fd = H.cfd[0];
    H.c.state = CL_IDLE;
    CHECK(stream_init(&H.c.io, H.base, H.cfd[0], NULL, NULL, &H.c) == 0);
    if (flags & 64) {
        param_set_put(&H.c.params, TP_DATESTYLE, "German");
        param_set_put(&H.c.params, TP_APPLICATION_NAME, "it's \"fuzz\"");
    }
    H.s = NULL;
}

static void check_invariants(void)
{
    struct server *s = H.s;

    if (H.c.state == CL_ACTIVE) {
        CHECK(H.c.server != NULL && H.c.server == s && s->client == &H.c);
        CHECK(!H.s_in_pool && !H.s_broken);
    }
    if (H.c.state == CL_IDLE)
        CHECK(H.c.server == NULL);
    if (s == NULL)
        return;
    CHECK(s->pending >= 0 && s->swallow >= 0);
    CHECK(s->expect_count <= s->expect_cap);
    if (H.s_in_pool) /* clean means: nothing owed, idle outside a transaction */
        CHECK(s->state == SV_IDLE && s->pending == 0 && s->expect_count == 0 && s->txn == 'I');
}

/* The client has input and no server: the pooler links one, as
 * client_request_server() would. */
static void maybe_link(void)
{
    if (H.c.state != CL_IDLE || evbuffer_get_length(H.c.io.in) == 0)
        return;
    if (H.s != NULL && (H.s_broken || (!H.s_in_pool && H.s->state != SV_IDLE)))
        return; /* still busy with weir's own reset: the client waits */
    if (H.s != NULL && H.s_broken)
        free_server();
    if (H.s == NULL)
        new_server();
    H.s_in_pool = 0;
    if (server_check_due(H.s)) { /* as client_got_server(): check, then link */
        H.c.state = CL_WAITING;
        if (server_start_check(H.s, &H.c) != 0)
            H.c.state = CL_IDLE; /* it went back broken: the next step asks again */
        return;
    }
    H.c.state = CL_ACTIVE;
    if (server_link(H.s, &H.c) != 0 && H.c.state != CL_CLOSING)
        client_disconnect(&H.c, "08P01", "server conn crashed?");
}

/* A server that was checked in broken is closed by the pool. */
static void collect(void)
{
    if (H.s != NULL && H.s_broken && H.c.server != H.s)
        free_server();
    if (H.s != NULL)
        drain_fd(H.sfd[1]); /* the backend reads what weir sent */
    drain_fd(H.cfd[1]);     /* the client reads what was sent straight to it */
}

static int in_empty(const struct stream *io)
{
    return io->in == NULL || evbuffer_get_length(io->in) == 0;
}

static void feed_client(const uint8_t *p, size_t n)
{
    if (H.c.state == CL_CLOSING)
        return;
    stream_loop_tick(&H.w.loop);
    if (H.c.state == CL_ACTIVE && in_empty(&H.c.io) && n > 0) {
        /* Straight from the scratch buffer, as client_on_flat() hands it over. */
        memcpy(H.w.loop.scratch, p, n);
        H.c.rx = H.w.loop.scratch;
        H.c.rx_len = n;
        (void)server_forward_from_client(H.c.server);
        CHECK(H.c.rx == NULL && H.c.rx_len == 0);
        collect();
        check_invariants();
        return;
    }
    CHECK(stream_wake(&H.c.io) == 0);
    CHECK(evbuffer_add(H.c.io.in, p, n) == 0);
    H.c.io.in_used = 1; /* as stream_stash/stream_fill do */
    if (H.c.state == CL_IDLE) {
        /* A Terminate while idle ends the session, as client_resume() does. */
        unsigned char t;
        if (evbuffer_copyout(H.c.io.in, &t, 1) == 1 && t == 'X') {
            client_disconnect(&H.c, NULL, "client close request");
            return;
        }
        if (evbuffer_get_length(H.c.io.in) >= 5)
            maybe_link();
    } else if (H.c.state == CL_ACTIVE) {
        (void)server_forward_from_client(H.c.server);
    }
    collect();
    check_invariants();
}

static void feed_server(const uint8_t *p, size_t n)
{
    if (H.s == NULL || n == 0)
        return;
    stream_loop_tick(&H.w.loop);
    if (in_empty(&H.s->io)) {
        memcpy(H.w.loop.scratch, p, n);
        server_on_flat(&H.s->io, H.s, H.w.loop.scratch, n);
    } else {
        CHECK(evbuffer_add(H.s->io.in, p, n) == 0);
        H.s->io.in_used = 1;
        server_on_read(&H.s->io, H.s);
    }
    collect();
    check_invariants();
    if (H.c.state == CL_IDLE && evbuffer_get_length(H.c.io.in) >= 5) {
        maybe_link(); /* the client's next message was waiting */
        collect();
        check_invariants();
    }
}

/* The end of the input: the client leaves, the pool closes the server. */
static void harness_teardown(void)
{
    client_disconnect(&H.c, NULL, "end");
    stream_release(&H.c.io);
    close(H.cfd[0]);
    close(H.cfd[1]);
    client_stmts_free(H.c.stmts, H.d.pstmts);
    free(H.c.dealloc_target);
    param_set_clear(&H.c.params);
    free_server();
    /* Every reference to a prepared statement was dropped with its owner. */
    CHECK(pstmt_registry_count(H.d.pstmts) == 0);
    pstmt_registry_free(H.d.pstmts);
}

#endif
