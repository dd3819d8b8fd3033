/*
 * Backend connections on the daemon's side (see server.h): taking over the
 * socket libpq connected, re-applying a client's session parameters, moving
 * messages between client and server without copying their bodies, noticing
 * ReadyForQuery (the end of a transaction, when a pooled server can go
 * back), tracking ParameterStatus, resetting a server before it returns,
 * and cancelling through libpq on a worker thread.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "backend.h"
#include "client.h"
#include "config.h"
#include "health.h"
#include "pooler.h"
#include "prepared.h"
#include "prepared_relay.h"
#include "server.h"

/* Stop reading a server while its client has this much unsent output. */
#define CLIENT_OUT_HIGH (256 * 1024)
/* How much of a buffer one scan looks at before moving bytes. */
#define RELAY_WINDOW (64 * 1024)

static const char *const state_names[] = {"idle", "linked", "setup", "resetting", "checking"};

static const unsigned char server_transitions[5][5] = {
    [SV_IDLE] = {[SV_LINKED] = 1, [SV_CHECKING] = 1},
    [SV_LINKED] = {[SV_IDLE] = 1, [SV_SETUP] = 1, [SV_RESETTING] = 1},
    [SV_SETUP] = {[SV_SETUP] = 1, [SV_LINKED] = 1, [SV_IDLE] = 1, [SV_RESETTING] = 1},
    [SV_RESETTING] = {[SV_IDLE] = 1},
    [SV_CHECKING] = {[SV_LINKED] = 1, [SV_IDLE] = 1},
};

static void server_set_state(struct server *s, enum server_state to)
{
    if (!server_transitions[s->state][to])
        log_at(&s->d->log, LG_ERROR, "S-0x%llx: invalid server transition %s -> %s", (unsigned long long)s->id,
               state_names[s->state], state_names[to]);
    s->state = to;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* PgBouncer's prefix, "S-0x..: db/user@host:port ", so log parsers read both alike. */
static void server_log(struct server *s, int level, const char *fmt, const char *arg)
{
    const char *host = s->be ? backend_host(s->be) : NULL;

    log_at(&s->d->log, level, "S-0x%llx: %s/%s@%s:%d %s%s", (unsigned long long)s->id, s->dp->dbname,
           s->dp->user, host == NULL || host[0] == '/' ? "unix" : host, s->be ? backend_port(s->be) : 0, fmt,
           arg ? arg : "");
}

/* "closing because: why (age=Ns)", as PgBouncer with log_disconnections. */
static void server_log_closing(struct server *s, const char *why)
{
    char msg[300];

    if (!s->d->cfg->log_disconnections)
        return;
    snprintf(msg, sizeof(msg), "%s (age=%llds)", why,
             (long long)(s->pooled ? weir_pooled_age_us(s->pooled) / 1000000 : 0));
    server_log(s, LG_LOG, "closing because: ", msg);
}

/* ---- life cycle ---- */

static void server_free_later(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    (void)fd;
    (void)what;
    param_set_clear(&s->params);
    free(s);
}

/* The daemon's list of servers, for SHOW SERVERS and WAIT_CLOSE. Shared:
 * the pool may close a server on its own thread. */
static void server_register(struct server *s)
{
    pthread_mutex_lock(&s->d->lock);
    s->prev = NULL;
    s->next = s->d->servers;
    if (s->next)
        s->next->prev = s;
    s->d->servers = s;
    pthread_mutex_unlock(&s->d->lock);
}

static void server_unregister(struct server *s)
{
    pthread_mutex_lock(&s->d->lock);
    if (s->prev)
        s->prev->next = s->next;
    else if (s->d->servers == s)
        s->d->servers = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    pthread_mutex_unlock(&s->d->lock);
}

/* PgBouncer's words for a server the pool itself closes; NULL when weir
 * logged the reason when it decided (broken, closed by the server) or at shutdown. */
static const char *pool_close_why(const char *reason)
{
    static const char *const map[][2] = {
        {"idle timeout", "server idle timeout"},     {"lifetime over", "server lifetime over"},
        {"retired", "obsolete connection"},          {"retired at check-in", "close_needed"},
        {"retired while paused", "pause mode"},
        {"overflow returned", "too many servers in the pool"},
        {"evicted for another pool of its group", "evicted"},
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(reason, map[i][0]) == 0)
            return map[i][1];
    return NULL;
}

static void server_log_closing(struct server *s, const char *why);

/* The pool closes the backend connection: our events go now, memory after
 * this loop iteration (a callback up the stack may still hold s). That is
 * the worker it lives on; the pool may call this from its own thread, when
 * s sits in the pool and no callback of that worker holds it. */
static void server_detach(void *data)
{
    struct server *s = data;
    const char *why;

    /* From the pool's thread, s sits idle with its read event on its
     * worker's loop, which may be running that callback (the server said
     * goodbye): deleting it first waits for that, before we look at s. */
    if (s->d->nworkers > 1 && !pthread_equal(pthread_self(), s->w->thread))
        event_del(&s->io.rd);
    why = s->pooled ? pool_close_why(weir_pooled_close_reason(s->pooled)) : NULL;
    if (why != NULL)
        server_log_closing(s, why);
    server_unregister(s);
    stream_release(&s->io);
    prep_server_free(s);
    s->pooled = NULL;
    s->pg = NULL;
    s->be = NULL;
    worker_post(s->w, server_free_later, s);
}

static void server_on_read(struct stream *io, void *arg);
static void server_on_flat(struct stream *io, void *arg, const unsigned char *p, size_t n);
static void server_on_drain(struct stream *io, void *arg);

/* A server checked out by a client of another worker moves to that
 * worker's loop. Its events were left on the old loop only while it sat
 * idle (see server_checkin); deleting them waits for a callback that may be
 * running there right now. That callback never waits for us: it takes no
 * lock we hold, and workers never stop the world (worker.h). */
static void server_move(struct server *s, struct worker *w)
{
    stream_move(&s->io, w->base, &w->loop);
    s->w = w;
    weir_pooled_set_affinity(s->pooled, (uintptr_t)w);
}

struct server *server_from_pooled(struct worker *w, struct dpool *dp, weir_pooled *pooled)
{
    struct daemon *d = w->d;
    struct server *s = weir_pooled_get_data(pooled);

    if (s != NULL) {
        if (s->w != w)
            server_move(s, w);
        s->dp = dp;
        return s;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->d = d;
    s->w = w;
    s->dp = dp;
    s->pooled = pooled;
    weir_pooled_set_affinity(pooled, (uintptr_t)w);
    s->be = weir_pooled_driver_handle(pooled);
    s->pg = backend_pgconn(s->be); /* NULL when weir connected by itself */
    s->id = __atomic_add_fetch(&d->next_id, 1, __ATOMIC_RELAXED);
    s->txn = 'I';
    s->fresh = 1;
    s->backend_pid = backend_pid(s->be);
    stream_socket_buffers(backend_socket(s->be), s->d->cfg->tcp_socket_buffer);
    if (stream_init(&s->io, w->base, backend_socket(s->be), server_on_read, server_on_drain, s) != 0) {
        free(s);
        return NULL;
    }
    stream_set_flat(&s->io, server_on_flat, &w->loop);
    /* libpq made the TLS session and keeps owning it (PQfinish frees it);
     * weir reads and writes through it and never calls libpq I/O again. */
    if (s->pg != NULL && PQsslInUse(s->pg))
        stream_start_tls(&s->io, PQsslStruct(s->pg, "OpenSSL"), 0);
    for (int i = 0; i < TP_COUNT; i++)
        if (tracked_param_reported(i))
            param_set_put(&s->params, i, backend_param(s->be, tracked_param_name(i)));
    weir_pooled_set_data(pooled, s, server_detach);
    server_register(s);
    /* Registered for reading for the server's whole life: no epoll_ctl per
     * transaction, and an idle server that goes away is noticed at once. */
    stream_set_reading(&s->io, 1);
    if (d->cfg->log_connections) {
        char laddr[80], from[100];
        int lport = 0;
        stream_local_end(backend_socket(s->be), laddr, sizeof(laddr), &lport);
        snprintf(from, sizeof(from), "(from %s:%d)", laddr, lport);
        server_log(s, LG_LOG, "new connection to server ", from);
    }
    return s;
}

/* ---- going back to the pool ---- */

static void server_checkin(struct server *s, int clean)
{
    weir_pooled *pooled = s->pooled;
    struct dpool *dp = s->dp;

    if (!prep_idle(s))
        clean = 0; /* answers still owed: not at a boundary */
    prep_server_reset(s);

    stream_set_reading(&s->io, 1);
    s->client = NULL;
    if (s->state != SV_IDLE)
        server_set_state(s, SV_IDLE);
    if (clean && (!stream_in_empty(&s->io) || evbuffer_get_length(s->io.out) > 0 || s->pending))
        clean = 0; /* bytes in flight: not at a boundary after all */
    if (!clean) /* PgBouncer's words for a client gone mid-transaction */
        server_log_closing(s, s->close_why ? s->close_why : "client disconnect while server was not ready");
    s->close_why = NULL;
    s->idle_since_us = worker_now(s->w);
    /* Clean means we read its ReadyForQuery 'I' ourselves: the dialect
     * (whose libpq never sees the relayed traffic) has nothing to add. */
    weir_pool_checkin_at(dp->pool, pooled, clean ? WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY : WEIR_CHECKIN_BROKEN,
                         s->idle_since_us);
}

/* Shutting down: servers still busy with weir's own work (a reset) are
 * closed now, so no answer arrives for a pool that is about to be freed. */
void server_close_unlinked(struct daemon *d)
{
    struct server *s = d->servers, *next;

    for (; s; s = next) {
        next = s->next;
        if (s->client == NULL && s->state != SV_IDLE) {
            s->pending = 1; /* never clean */
            server_checkin(s, 0);
        }
    }
}

/* Run server_reset_query before the next user; checked in when it answers. */
static void server_start_reset(struct server *s)
{
    const char *q = s->d->cfg->server_reset_query;

    server_set_state(s, SV_RESETTING);
    s->client = NULL;
    s->reset_failed = 0;
    if (s->stmts && (strcasestr(q, "discard") || strcasestr(q, "deallocate")))
        server_stmts_clear(s->stmts, s->d->pstmts);
    if (weir_proto_build_query(s->io.out, q) != 0 || stream_flush(&s->io) != 0) {
        server_checkin(s, 0);
        return;
    }
    s->pending++;
    s->swallow++;
}

int server_check_due(const struct server *s)
{
    const struct weir_config *cfg = s->d->cfg;

    return s->idle_since_us != 0 && cfg->server_check_query && cfg->server_check_query[0] &&
           cfg->server_check_delay_us >= 0 && worker_now(s->w) - s->idle_since_us >= cfg->server_check_delay_us;
}

int server_start_check(struct server *s, struct client *c)
{
    server_set_state(s, SV_CHECKING);
    s->client = c;
    c->server = s;
    s->reset_failed = 0;
    s->fwd_remaining = 0;
    stream_set_reading(&s->io, 1);
    if (weir_proto_build_query(s->io.out, s->d->cfg->server_check_query) != 0 || stream_flush(&s->io) != 0) {
        server_release(s, 0);
        return -1;
    }
    s->pending++;
    s->swallow++;
    return 0;
}

/* The check answered (ok) or failed: the waiting client learns which. */
static void server_check_done(struct server *s, int ok)
{
    struct client *c = s->client;

    if (c == NULL) { /* its client left meanwhile: the pool decides */
        server_release(s, ok);
        return;
    }
    if (!ok) {
        server_log_closing(s, "server check failed");
        server_release(s, 0);
    } else {
        s->client = NULL; /* server_link moves it on from CHECKING */
        c->server = NULL;
    }
    client_server_checked(c, ok ? s : NULL);
}

void server_release(struct server *s, int clean)
{
    struct dpool *dp = s->dp;
    const struct weir_config *cfg = s->d->cfg;
    int reset;

    if (s->client && s->client->server == s)
        s->client->server = NULL;
    s->client = NULL;
    if (s->cancels_inflight > 0) {
        /* A cancel may still hit this backend: keep it until that is over. */
        s->deferred_release = clean ? 1 : 2;
        stream_set_reading(&s->io, 0);
        return;
    }
    clean = clean && s->pending == 0 && s->txn == 'I';
    reset = clean && !s->d->stopping && cfg->server_reset_query && cfg->server_reset_query[0] &&
            (dp->mode == POOL_MODE_SESSION || cfg->server_reset_query_always);
    if (reset)
        server_start_reset(s);
    else
        server_checkin(s, clean);
}

int server_close_needed(const struct server *s)
{
    weir_pool_stats st;

    if (s->dp->removed)
        return 1;
    weir_pool_get_stats(s->dp->pool, &st);
    return weir_pooled_generation(s->pooled) != st.generation;
}

int server_fast_close(struct server *s)
{
    struct client *c = s->client;

    s->fast_close = 1;
    if (c == NULL || s->state != SV_LINKED || s->pending > 0 || s->txn != 'I' || c->unsynced ||
        c->fwd_remaining > 0 || !prep_idle(s))
        return 0; /* mid-transaction or mid-answer: at its ReadyForQuery */
    if (evbuffer_get_length(c->io.out) > 0)
        return 0; /* the client has yet to read the answer: once it has (server_client_drained) */
    s->close_why = "database configuration changed";
    server_release(s, 0);
    client_disconnect(c, "08P01", "database configuration changed");
    return 1;
}

/* ---- parameters ---- */

/* SETs for every parameter where the client's value differs from the server's. */
static int build_param_sets(struct server *s, struct client *c, struct evbuffer *sql)
{
    int n = 0;

    for (int i = 0; i < TP_COUNT; i++) {
        const char *want = c->params.v[i];
        char *lit;
        if (want == NULL || param_same(&s->params, i, &c->params))
            continue;
        lit = weir_dialect_quote_literal(weir_dialect_find("postgresql"), want);
        if (lit == NULL)
            return -1;
        evbuffer_add_printf(sql, "SET %s = %s;", tracked_param_name(i), lit);
        free(lit);
        if (!tracked_param_reported(i)) /* no ParameterStatus will tell us */
            param_set_share(&s->params, i, &c->params);
        n++;
    }
    return n;
}

static int params_differ(struct server *s, struct client *c)
{
    if (memcmp(c->params.v, s->params.v, sizeof(c->params.v)) == 0)
        return 0; /* the usual case: equal values share one copy (params.c) */
    for (int i = 0; i < TP_COUNT; i++)
        if (c->params.v[i] != NULL && !param_same(&s->params, i, &c->params))
            return 1;
    return 0;
}

static int send_param_sets(struct server *s, struct client *c)
{
    struct evbuffer *sql;
    int n, rc = 0;

    if (!params_differ(s, c))
        return 0; /* the usual case: same application, same settings */
    if ((sql = evbuffer_new()) == NULL)
        return -1;
    n = build_param_sets(s, c, sql);
    if (n > 0) {
        evbuffer_add(sql, "", 1);
        rc = weir_proto_build_query(s->io.out, (const char *)evbuffer_pullup(sql, -1));
        if (rc == 0) {
            s->pending++;
            s->swallow++;
            server_set_state(s, SV_SETUP);
        }
    }
    evbuffer_free(sql);
    return n < 0 || rc != 0 ? -1 : 0;
}

/* connect_query of the database entry, once per new server, before its first client. */
static int send_connect_query(struct server *s)
{
    s->fresh = 0;
    if (s->dp->connect_query == NULL || s->dp->connect_query[0] == '\0')
        return 0;
    if (weir_proto_build_query(s->io.out, s->dp->connect_query) != 0)
        return -1;
    s->pending++;
    s->swallow++;
    server_set_state(s, SV_SETUP);
    return 0;
}

int server_link(struct server *s, struct client *c)
{
    /* Transaction and statement mode follow every answer (to know when a
     * server is free); prepared statements are rewritten unless turned off. */
    s->track = s->dp->mode != POOL_MODE_SESSION;
    s->rewrite = s->track && s->d->cfg->max_prepared_statements > 0;
    server_set_state(s, SV_LINKED);
    s->client = c;
    c->server = s;
    s->fast_close = 0;
    s->link_start_us = worker_now(s->w);
    s->fwd_remaining = 0;
    stream_set_reading(&s->io, 1);
    if ((s->fresh && send_connect_query(s) != 0) || send_param_sets(s, c) != 0)
        return -1;
    return server_forward_from_client(s);
}

/* ---- client -> server ---- */

static int server_at_ready(struct server *s);

/* Move n bytes from in to out (or discard them when out is NULL). */
static void move_bytes(struct evbuffer *in, struct evbuffer *out, size_t n)
{
    if (n == 0)
        return;
    if (out)
        evbuffer_remove_buffer(in, out, n);
    else
        evbuffer_drain(in, n);
}

/* Move n bytes from the head of in to the peer stream to. When they lie in
 * the window already made contiguous at p and nothing waits before them,
 * they are sent from there (no chain moved, no peek) and then dropped from
 * in; otherwise the chains move over, still without a copy. */
static void move_out(struct evbuffer *in, const unsigned char *p, size_t window, struct stream *to, size_t n)
{
    if (p != NULL && n <= window && to->ssl == NULL && to->out != NULL && evbuffer_get_length(to->out) == 0) {
        stream_write_flat(to, p, n);
        evbuffer_drain(in, n);
    } else if (stream_wake(to) == 0) {
        move_bytes(in, to->out, n);
    } else {
        to->failed = 1; /* out of memory: the next flush reports it */
        move_bytes(in, NULL, n);
    }
}

/* A client query on a server idle outside a transaction starts one (SHOW
 * STATS' xact_time); replies weir still owes itself (swallow) don't count. */
static void note_xact_start(struct server *s, struct client *c)
{
    if (s->txn == 'I' && s->pending == s->swallow && !c->unsynced)
        s->xact_start_us = worker_now(s->w);
}

/* A simple query or function call starts: SHOW STATS' query count and times. */
static void note_query_start(struct server *s, struct client *c)
{
    note_xact_start(s, c);
    s->query_start_us = worker_now(s->w);
    DP_COUNT(s->dp, s->w, query_count, 1);
}

/* What the pooler must know about a client message type. */
static void note_client_message(struct server *s, struct client *c, char type)
{
    switch (type) {
    case 'Q':
    case 'F':
        note_query_start(s, c);
        s->pending++;
        break;
    case 'S':
        s->pending++;
        c->unsynced = 0;
        break;
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
        if (!c->unsynced) {
            note_xact_start(s, c);
            s->query_start_us = worker_now(s->w);
        }
        c->unsynced = 1;
        if (type == 'E')
            DP_COUNT(s->dp, s->w, query_count, 1);
        break;
    default:
        break;
    }
}

/* What a scan of client bytes ran into: a Terminate at the head (stop), a
 * protocol violation (bad), or a message prepared_relay.c must handle. */
struct client_step {
    int stop;
    const char *bad;
    char special;
    size_t special_total;
    char bad_header[48]; /* bad's text for a header refused (PgBouncer's words) */
};

/*
 * Scan complete client messages at p (window bytes visible of avail);
 * returns the number of bytes to forward and says in st why it stopped.
 */
static size_t scan_client(struct server *s, struct client *c, const unsigned char *p, size_t window, size_t avail,
                          struct client_step *st)
{
    size_t off = 0;
    uint32_t max = (uint32_t)s->d->cfg->max_packet_size;

    while (off + 5 <= window) {
        char type = (char)p[off];
        uint32_t len = be32(p + off + 1);
        size_t total = 1 + (size_t)len;

        if (__builtin_expect(len < 4 || (max > 0 && len > max), 0)) {
            if (len >= 4) /* the number, which PgBouncer's text leaves to the hex */
                client_log(c, LG_WARNING, "message of %u bytes over max_packet_size %u", len + 1, max);
            stream_bad_header_text(st->bad_header, sizeof(st->bad_header), p + off, window - off);
            st->bad = st->bad_header;
            return off;
        }
        if (type == 'X') {
            st->stop = 1;
            return off;
        }
        if (type == 'Q' && s->d->cfg->disable_pqexec) { /* multi-statement strings: an injection vector */
            client_log(c, LG_ERROR, "client used 'Q' packet type");
            st->bad = "PQexec disallowed";
            return off;
        }
        if (s->track) {
            if (s->rewrite && prep_needs_weir(s, c, type, p + off, total, window - off)) {
                st->special = type; /* rewritten or answered by prepared_relay.c */
                st->special_total = total;
                return off;
            }
            if (prep_expect_forwarded(s, type) != 0) {
                st->bad = "out of memory";
                return off;
            }
        }
        note_client_message(s, c, type);
        if (off + total > avail) {
            c->fwd_remaining = (uint32_t)(off + total - avail);
            return avail;
        }
        off += total;
    }
    return off;
}

/* One step over client bytes at p: the rest of a message being streamed,
 * or a scan. Returns the bytes to forward. */
static size_t client_step(struct server *s, struct client *c, const unsigned char *p, size_t window, size_t avail,
                          struct client_step *st)
{
    size_t n;

    if (c->fwd_remaining == 0)
        return scan_client(s, c, p, window, avail, st);
    n = avail < c->fwd_remaining ? avail : c->fwd_remaining;
    c->fwd_remaining -= (uint32_t)n;
    return n;
}

/* Bytes that arrived in the loop's scratch buffer (c->rx): forward what can
 * go as it lies, keep the rest (from a message weir must look at) in the
 * client's buffer for the loop below. Returns how much was kept; *direct
 * says whether all of it went straight out (no flush needed). */
static size_t forward_client_flat(struct server *s, struct client *c, int *direct)
{
    const unsigned char *p = c->rx;
    size_t len = c->rx_len;

    c->rx = NULL;
    c->rx_len = 0;
    while (len > 0) {
        struct client_step st = {0};
        size_t n = client_step(s, c, p, len, len, &st);

        DP_COUNT(s->dp, s->w, bytes_in, n);
        if (!stream_write_flat(&s->io, p, n))
            *direct = 0;
        p += n;
        len -= n;
        if (st.special || st.bad || st.stop || n == 0)
            break; /* the loop below meets it again at the head */
    }
    stream_stash(&c->io, p, len);
    return len;
}

int server_forward_from_client(struct server *s)
{
    struct client *c = s->client;

    /* All of a fresh read forwarded: the buffer is known empty. */
    int direct = c->rx_len > 0; /* and sent at once: the server's out is empty */
    int buffered = c->rx_len == 0 || forward_client_flat(s, c, &direct) > 0;
    int answered = 0; /* prepared_relay.c may have written to the client */

    while (buffered) {
        size_t avail = evbuffer_get_length(c->io.in), n, window;
        struct client_step st = {0};
        const unsigned char *p;

        if (avail == 0)
            break;
        direct = 0;
        window = avail < RELAY_WINDOW ? avail : RELAY_WINDOW;
        p = c->fwd_remaining > 0 ? NULL : evbuffer_pullup(c->io.in, (ssize_t)window);
        n = client_step(s, c, p, window, avail, &st);
        DP_COUNT(s->dp, s->w, bytes_in, n);
        move_out(c->io.in, p, window, &s->io, n);
        if (st.special == 'Q' && st.bad == NULL && evbuffer_get_length(c->io.in) >= st.special_total) {
            /* Its times start when it is first seen whole; it is counted
             * below once handled (a query held for earlier answers comes
             * here again when they are in). */
            note_xact_start(s, c);
            s->query_start_us = worker_now(s->w);
        }
        if (st.special && st.bad == NULL) {
            int rc = prep_client_message(s, c, st.special, st.special_total);
            answered = 1;
            if (rc < 0)
                st.bad = "invalid extended-protocol message";
            else if (rc == 0)
                break; /* the rest of it has not arrived yet */
            else {
                DP_COUNT(s->dp, s->w, bytes_in, st.special_total);
                if (st.special == 'Q') {
                    DP_COUNT(s->dp, s->w, query_count, 1);
                } else {
                    if (!c->unsynced) {
                        note_xact_start(s, c);
                        s->query_start_us = worker_now(s->w);
                    }
                    c->unsynced = 1;
                }
                continue;
            }
        }
        if (st.bad != NULL) {
            stream_flush(&s->io);
            client_disconnect(c, "08P01", "%s", st.bad);
            return -1;
        }
        if (st.stop) {
            /* Terminate: the client is done; the server goes back (or is
             * closed if the client left a transaction open). */
            stream_flush(&s->io);
            client_disconnect(c, NULL, "client close request");
            return -1;
        }
        if (n == 0)
            break;
    }
    if (!direct && stream_flush(&s->io) != 0) {
        client_disconnect(c, "08P01", "server conn crashed?");
        return -1;
    }
    if (answered && evbuffer_get_length(c->io.out) > 0) { /* answers weir wrote itself (ParseComplete...) */
        if (client_flush(c) != 0)
            return -1;
        /* Drained here, the client's output took its write event along
         * without on_drain: a server stopped for it (server_relayed) reads again. */
        if (evbuffer_get_length(c->io.out) == 0 && !s->io.reading)
            stream_set_reading(&s->io, 1);
    }
    if (s->pending > 0) /* a query runs: only query_timeout applies (0 = none) */
        client_arm_timer(c, s->d->cfg->query_timeout_us);
    else if (s->track && s->state == SV_LINKED && prep_idle(s) && evbuffer_get_length(c->io.in) == 0)
        (void)server_at_ready(s); /* answered by weir alone (DEALLOCATE, Close) */
    return 0;
}

/* How long a transaction may stay idle from now. As in PgBouncer,
 * query_timeout (counted from the start of the client's last query) ends it
 * too, when that comes before idle_transaction_timeout. */
int64_t server_idle_in_txn_limit_us(struct server *s)
{
    const struct weir_config *cfg = s->d->cfg;
    int64_t us = cfg->idle_transaction_timeout_us, left;

    s->txn_timeout_why = "idle transaction timeout";
    if (cfg->query_timeout_us <= 0)
        return us;
    left = cfg->query_timeout_us - (worker_now(s->w) - s->query_start_us);
    if (left < 1)
        left = 1;
    if (us > 0 && left > us)
        return us;
    s->txn_timeout_why = "query timeout";
    return left;
}

/* Between queries on a linked server: which timeout watches the client now. */
static void arm_between_queries(struct server *s, struct client *c)
{
    if (s->txn != 'I')
        client_arm_timer(c, server_idle_in_txn_limit_us(s));
    else /* session mode: PgBouncer's client_idle_timeout spares a client holding a server */
        client_arm_timer(c, 0);
}

/* ---- server -> client ---- */

static void server_lost(struct server *s, const char *why)
{
    struct client *c = s->client;

    server_log_closing(s, why);
    health_server_lost(s->dp, weir_pooled_target(s->pooled)); /* failover? look at its host now */
    if (c != NULL && s->state == SV_CHECKING) {
        server_check_done(s, 0); /* the check found it dead: the client tries another */
        return;
    }
    if (c != NULL) {
        client_disconnect(c, "08P01", "server conn crashed?");
        return; /* the client released us as broken */
    }
    if (s->state != SV_IDLE) {
        s->pending = 1; /* never clean */
        server_checkin(s, 0);
    }
}

/* Every client query has its answer: add to SHOW STATS' times and counts. */
static void server_count_times(struct server *s)
{
    int64_t now = worker_now(s->w);

    DP_COUNT(s->dp, s->w, query_us, (uint64_t)(now - s->query_start_us));
    if (s->txn == 'I') {
        DP_COUNT(s->dp, s->w, xact_count, 1);
        DP_COUNT(s->dp, s->w, xact_us, (uint64_t)(now - s->xact_start_us));
    }
}

/* A ReadyForQuery just went by: maybe the transaction is over. Returns 1 if
 * the server left the client (or was closed), so the caller must stop. */
static int server_at_ready(struct server *s)
{
    struct client *c = s->client;

    if (s->state == SV_SETUP && s->swallow == 0)
        server_set_state(s, SV_LINKED);
    if (s->state == SV_RESETTING) {
        if (s->pending == 0)
            server_checkin(s, s->txn == 'I' && !s->reset_failed);
        return s->pending == 0;
    }
    if (s->state == SV_CHECKING) {
        if (s->pending == 0)
            server_check_done(s, s->txn == 'I' && !s->reset_failed);
        return 1; /* the client gets it (linked) or another one */
    }
    if (c == NULL || s->pending > 0 || c->unsynced || c->fwd_remaining > 0 || !prep_idle(s))
        return 0;
    server_count_times(s);
    if (s->dp->mode == POOL_MODE_SESSION || s->txn != 'I')
        arm_between_queries(s, c);
    if (s->dp->mode == POOL_MODE_SESSION)
        return __builtin_expect(s->fast_close, 0) && server_fast_close(s);
    if (s->dp->mode == POOL_MODE_STATEMENT && s->txn != 'I') {
        client_disconnect(c, "08P01", "transaction blocks not allowed in statement pooling mode");
        return 1;
    }
    if (s->txn != 'I')
        return 0;
    server_release(s, 1);
    client_server_released(c);
    return 1;
}

/* Act on a whole message at the head of in that the pooler must read. */
static int server_special(struct server *s, char type, size_t total)
{
    const unsigned char *body = evbuffer_pullup(s->io.in, (ssize_t)total) + 5;
    size_t blen = total - 5;
    int drop = s->swallow > 0 || s->client == NULL;
    const char *name, *value;
    char status;
    weir_error_fields ef;

    if (s->track && prep_server_message(s, type, body, blen))
        drop = 1;
    if (type == 'E' && s->swallow > 0 && (s->state == SV_RESETTING || s->state == SV_CHECKING))
        s->reset_failed = 1;

    if (type == 'Z') {
        if (weir_proto_parse_ready(body, blen, &status) != 0)
            return -1;
        if (status != 'I' && !drop && s->dp->mode == POOL_MODE_STATEMENT && s->pending <= 1 && s->swallow == 0) {
            /* Refuse before the client sees a transaction start, as PgBouncer does. */
            s->txn = status;
            evbuffer_drain(s->io.in, total);
            client_disconnect(s->client, "08P01", "transaction blocks not allowed in statement pooling mode");
            return 2;
        }
        s->txn = status;
        if (s->pending > 0)
            s->pending--;
        if (s->swallow > 0)
            s->swallow--;
    } else if (type == 'S') {
        if (weir_proto_parse_parameter_status(body, blen, &name, &value) != 0)
            return -1;
        int i = tracked_param_index(name);
        if (i >= 0) {
            param_set_put(&s->params, i, value);
            if (!drop && s->client)
                param_set_share(&s->client->params, i, &s->params);
        }
    } else if (type == 'E' && weir_proto_parse_error(body, blen, &ef) == 0) {
        if (drop)
            server_log(s, LG_WARNING, "error from weir's own query: ", ef.message);
        health_server_error(s->dp, weir_pooled_target(s->pooled), ef.sqlstate); /* failover? */
    }
    if (!drop)
        DP_COUNT(s->dp, s->w, bytes_out, total);
    move_bytes(s->io.in, drop ? NULL : s->client->io.out, total);
    if (s->track)
        prep_after_message(s);
    return type == 'Z' ? 1 : 0;
}

/* The common ReadyForQuery, taken in stride with the messages before it so
 * the whole answer moves and is sent in one piece. Returns 0 when it needs
 * the careful path (weir's own query, statement mode in a transaction,
 * prepared-statement answers still owed, a malformed status). */
static int ready_inline(struct server *s, unsigned char status)
{
    if (s->swallow > 0 || s->client == NULL || (status != 'I' && status != 'T' && status != 'E'))
        return 0;
    if (status != 'I' && s->dp->mode == POOL_MODE_STATEMENT)
        return 0;
    if (s->track && !prep_take_plain_ready(s))
        return 0;
    s->txn = (char)status;
    if (s->pending > 0)
        s->pending--;
    return 1;
}

/* Where a run over server bytes stopped, and why. */
struct server_step {
    char special;       /* a whole message to act on after the run */
    size_t special_len;
    int bad;            /* malformed length */
    int ready;          /* the run ended with a ReadyForQuery taken in stride */
    int direct;         /* the run went straight to the client: its out is empty */
};

/* Forward or drop the run of ordinary messages at p (window bytes visible
 * of avail); stop before a special one. Returns bytes handled. */
static size_t server_run(struct server *s, const unsigned char *p, size_t window, size_t avail, struct server_step *st)
{
    size_t off = 0;
    /* Answers to one plain Query need no matching until its ReadyForQuery,
     * which ends the run: decided once, not per message. */
    int follow = s->track && !(s->client && prep_plain_query(s));

    while (off + 5 <= window) {
        char type = (char)p[off];
        uint32_t len = be32(p + off + 1);
        size_t total = 1 + (size_t)len;

        if (len < 4) {
            st->bad = 1;
            break;
        }
        if (type == 'D' && off + total <= avail) {
            off += total; /* a DataRow is never the end of anything */
            continue;
        }
        if (type == 'Z' && len == 5 && off + total <= window && ready_inline(s, p[off + 5])) {
            off += total;
            st->ready = 1;
            break;
        }
        if (follow && s->client && off + total <= window && prep_inline_answer(s, type, p + off + 5, total - 5)) {
            off += total; /* answered and forwarded in stride */
            continue;
        }
        if (type == 'C' && s->track && total > 5 && off + 5 >= window)
            break; /* the read ended after its header: the tag's first byte (below) is not in view yet */
        /* Every error is read: its SQLSTATE may say the host failed over.
         * A command tag starting with D may be DISCARD ALL or DEALLOCATE
         * ALL, however the query was written (a comment before it): the
         * server then dropped weir's statements too (prep_server_message). */
        if (type == 'Z' || type == 'S' || type == 'E' || (follow && prep_is_special(s, type)) ||
            (type == 'C' && s->track && total > 5 && off + 5 < window && p[off + 5] == 'D')) {
            if (off + total <= avail) { /* whole: act on it after the run */
                st->special = type;
                st->special_len = total;
            }
            break;
        }
        if (off + total > avail) {
            s->fwd_remaining = (uint32_t)(off + total - avail);
            off = avail;
            break;
        }
        off += total;
    }
    return off;
}

/* The rest of a message being streamed, or a run. Returns bytes to move. */
static size_t server_step(struct server *s, const unsigned char *p, size_t window, size_t avail, struct server_step *st)
{
    size_t n;

    if (s->fwd_remaining == 0)
        return server_run(s, p, window, avail, st);
    n = avail < s->fwd_remaining ? avail : s->fwd_remaining;
    s->fwd_remaining -= (uint32_t)n;
    return n;
}

/* After a step's bytes moved: act on why it stopped. 1 to go on relaying,
 * 0 to stop (more bytes needed, or the server left its client). */
static int server_after_step(struct server *s, const struct server_step *st, size_t n)
{
    if (st->bad) {
        server_lost(s, "invalid packet from server");
        return 0;
    }
    if (st->ready)
        return (st->direct || client_flush(s->client) == 0) && !server_at_ready(s);
    if (st->special) {
        int rc = server_special(s, st->special, st->special_len);
        if (rc < 0) {
            server_lost(s, "invalid packet from server");
            return 0;
        }
        if (rc == 2)
            return 0; /* the client was refused and is gone */
        if (rc == 1) {
            struct client *c = s->client;
            if (c && client_flush(c) != 0)
                return 0;
            if (server_at_ready(s))
                return 0;
        }
        if (s->resume && prep_take_resume(s)) {
            /* A client message waited for the answers so far (prepared_relay.c
             * hold): decide it now, and forward what followed it. */
            struct client *c = s->client;
            if (c == NULL || server_forward_from_client(s) != 0 || s->client != c)
                return 0;
        }
        return 1;
    }
    return n > 0;
}

static void relay_to_client(struct server *s)
{
    for (;;) {
        struct evbuffer *in = s->io.in;
        size_t avail = evbuffer_get_length(in), n, window;
        int drop = s->swallow > 0 || s->client == NULL;
        struct server_step st = {0};
        const unsigned char *p;

        if (avail == 0)
            return;
        window = avail < RELAY_WINDOW ? avail : RELAY_WINDOW;
        p = s->fwd_remaining > 0 ? NULL : evbuffer_pullup(in, (ssize_t)window);
        n = server_step(s, p, window, avail, &st);
        if (drop) {
            move_bytes(in, NULL, n);
        } else {
            DP_COUNT(s->dp, s->w, bytes_out, n);
            move_out(in, p, window, &s->client->io, n);
        }
        if (!server_after_step(s, &st, n))
            return;
    }
}

/* Server bytes still in the loop's scratch buffer: send what goes through
 * as it lies; from the first message weir must act on, keep the rest in
 * the server's buffer and go on as above. */
static void relay_flat(struct server *s, const unsigned char *p, size_t len)
{
    while (len > 0) {
        struct server_step st = {0};
        int drop = s->swallow > 0 || s->client == NULL;
        size_t n = server_step(s, p, len, len, &st);

        if (!drop) {
            DP_COUNT(s->dp, s->w, bytes_out, n);
            st.direct = stream_write_flat(&s->client->io, p, n);
        }
        p += n;
        len -= n;
        if (st.special || st.ready || st.bad || n == 0) {
            stream_stash(&s->io, p, len);
            if (server_after_step(s, &st, n))
                relay_to_client(s);
            return;
        }
    }
}

/* Bytes from a server sitting in the pool: a notice, or its goodbye. */
static void server_idle_input(struct server *s)
{
    evbuffer_drain(s->io.in, evbuffer_get_length(s->io.in));
    if (s->io.eof || s->io.failed) {
        server_log_closing(s, "server closed the connection while idle");
        health_server_lost(s->dp, weir_pooled_target(s->pooled));
        stream_set_reading(&s->io, 0);
        weir_pool_invalidate(s->dp->pool, s->pooled);
    }
}

/* After relaying: push the client's output, and stop reading this server
 * while the client is behind (back-pressure). */
static void server_relayed(struct server *s)
{
    struct client *c = s->client;

    if (c == NULL || s->state == SV_IDLE)
        return;
    if (client_flush(c) != 0)
        return;
    if (evbuffer_get_length(c->io.out) > CLIENT_OUT_HIGH)
        stream_set_reading(&s->io, 0); /* resumes when the client drains */
}

static void server_on_read(struct stream *io, void *arg)
{
    struct server *s = arg;

    if (s->state == SV_IDLE && s->client == NULL) {
        server_idle_input(s);
        return;
    }
    if (io->eof || io->failed) {
        server_lost(s, io->eof ? "server closed the connection" : "server read failed");
        return;
    }
    relay_to_client(s);
    server_relayed(s);
}

static void server_on_flat(struct stream *io, void *arg, const unsigned char *p, size_t n)
{
    struct server *s = arg;

    (void)io;
    if (s->state == SV_IDLE && s->client == NULL)
        return; /* a notice to a pooled server: nobody to tell */
    relay_flat(s, p, n);
    server_relayed(s);
}

void server_client_drained(struct server *s)
{
    if (__builtin_expect(s->fast_close, 0) && server_fast_close(s))
        return;
    if (s->state != SV_IDLE && !s->io.reading) {
        stream_set_reading(&s->io, 1);
        if (evbuffer_get_length(s->io.in) > 0)
            server_on_read(&s->io, s);
    }
}

/* The server took what we had for it: the client may send more. */
static void server_on_drain(struct stream *io, void *arg)
{
    struct server *s = arg;
    (void)io;
    if (s->client && !s->client->io.reading && s->client->state == CL_ACTIVE)
        stream_set_reading(&s->client->io, 1);
}

/* ---- cancel ---- */

/* The worker thread signals completion through a pipe of the job's own, so
 * the loop needs no locking (libevent runs without thread support here). */
struct cancel_job {
    struct daemon *d;
    struct server *s;
    struct backend_cancel *cancel;
    struct event *done;
    int pipe[2];
};

static void cancel_done(evutil_socket_t fd, short what, void *arg)
{
    struct cancel_job *job = arg;
    struct server *s = job->s;
    struct daemon *d = job->d;
    char byte;

    (void)what;
    /* Take the byte: reading what the thread wrote is also what orders its
     * last use of job before the free below (for ThreadSanitizer too). The
     * byte is always there: the event fires only when the pipe is readable. */
    if (read(fd, &byte, 1) != 1) {
        /* nothing else to do: the job is done either way */
    }
    event_free(job->done);
    close(job->pipe[0]);
    close(job->pipe[1]);
    free(job);
    if (d->stopping)
        return; /* the last loop run at exit: the servers are gone */
    if (--s->cancels_inflight == 0 && s->deferred_release) {
        int clean = s->deferred_release == 1;
        s->deferred_release = 0;
        server_release(s, clean);
    }
}

static void *cancel_main(void *arg)
{
    struct cancel_job *job = arg;
    char err[256];

    (void)backend_cancel_run(job->cancel, err, sizeof(err));
    backend_cancel_free(job->cancel);
    if (write(job->pipe[1], "x", 1) != 1) { /* back to the loop's thread */
        /* a pipe with room for one byte cannot refuse it */
    }
    return NULL;
}

void server_cancel(struct server *s)
{
    struct cancel_job *job = calloc(1, sizeof(*job));
    pthread_t t;
    pthread_attr_t attr;

    if (job == NULL)
        return;
    job->d = s->d;
    job->s = s;
    if (pipe2(job->pipe, O_CLOEXEC) != 0) {
        free(job);
        return;
    }
    job->cancel = backend_cancel_new(s->be);
    job->done = event_new(s->w->base, job->pipe[0], EV_READ, cancel_done, job);
    if (job->cancel == NULL || job->done == NULL || event_add(job->done, NULL) != 0) {
        backend_cancel_free(job->cancel);
        if (job->done)
            event_free(job->done);
        close(job->pipe[0]);
        close(job->pipe[1]);
        free(job);
        return;
    }
    s->cancels_inflight++;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, cancel_main, job) != 0) {
        backend_cancel_free(job->cancel);
        if (write(job->pipe[1], "x", 1) != 1) { /* no thread: finish on the next loop iteration */
            /* an empty pipe takes one byte */
        }
    }
    pthread_attr_destroy(&attr);
}
