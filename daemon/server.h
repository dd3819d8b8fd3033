/*
 * A server is the daemon's side of one backend connection made by libweir's
 * pool: libpq connected it and keeps owning the socket, and from then on weir
 * reads and writes the socket itself. The struct lives as long as the
 * backend connection (attached to the pooled connection), across clients.
 */
#ifndef WEIR_DAEMON_SERVER_H
#define WEIR_DAEMON_SERVER_H

#include <stdint.h>
#include <libpq-fe.h>

#include "daemon.h"
#include "stream.h"

struct backend;
struct expect;
struct server_stmts;

/*
 *   (pool) --checkout--> LINKED <--------------------.
 *      ^  \               |  \ params differ          | SET answered
 *      |   \ idle longer  |   `--> SETUP -------------'
 *      |    \ than server_check_delay: CHECKING --answer ok--> LINKED
 *      |  clean           | client done (session) / reset_query_always
 *      +--------------- RESETTING
 *      |                  |
 *      +-- idle at RFQ ---' (transaction, statement mode: no reset)
 *   any state --error--> closed by the pool (checkin BROKEN); a failed
 *   check sends its client back for another server.
 */
enum server_state { SV_IDLE, SV_LINKED, SV_SETUP, SV_RESETTING, SV_CHECKING };

struct server {
    struct daemon *d;
    struct worker *w;        /* the loop of the client it serves (or served last) */
    struct dpool *dp;
    weir_pooled *pooled;
    PGconn *pg;              /* libpq's, or NULL when weir connected by itself */
    struct backend *be;      /* either way: socket, pid, parameters, cancel */
    uint64_t id;
    enum server_state state;
    struct stream io;
    struct client *client;   /* while linked */
    const char *close_why;   /* why it is closed when released unclean (a client timeout), or NULL */
    const char *txn_timeout_why; /* idle in a transaction: which timeout the client's timer stands for */
    struct param_set params; /* the backend's current values */
    PGcancel *cancel;
    int backend_pid;
    int pending;             /* ReadyForQuery messages still owed */
    int swallow;             /* of those, answers to weir's own queries */
    int cancels_inflight;    /* hold on to the server until they finish */
    int fresh;               /* never linked yet: connect_query still due */
    int track;               /* answers followed in order (transaction/statement mode) */
    int rewrite;             /* and prepared statements handled by weir */
    struct server_stmts *stmts;  /* statements prepared on this backend */
    struct expect *expect;   /* responses still owed, in order (prepared_relay.c) */
    unsigned expect_head, expect_count, expect_cap;
    /* The server reported an error before the client's Sync reached weir:
     * it now skips every message until that Sync, so weir must not answer
     * any in its place either (prepared_relay.c). */
    int skip_to_sync;
    /* A client that sent several batches before reading: a named-statement
     * message whose rewrite counts on what an earlier, unanswered batch did
     * waits in the client's buffer (held) until the answers so far are in
     * (resume). The newest entry that changed a record (unc_idx, unc_after
     * entries after it looked at, unc_open while its batch may still be
     * open) and the newest end of a batch that did (unc_end) say whether
     * any such batch is unanswered (prepared_relay.c). */
    unsigned char held, resume, unc_open, unc_end_valid;
    unsigned unc_idx, unc_after, unc_end;
    int reset_failed;        /* the reset or check query reported an error */
    int64_t idle_since_us;   /* back in the pool clean at; 0 = never used */
    int deferred_release;    /* 1 clean, 2 broken: release when cancels end */
    int fast_close;          /* server_fast_close: close it (and its client) at the next boundary */
    char txn;                /* last ReadyForQuery status: I, T or E */
    uint32_t fwd_remaining;  /* rest of a message being streamed to the client */
    int64_t link_start_us, query_start_us, xact_start_us;
    struct server *prev, *next; /* daemon's list (SHOW SERVERS) */
};

/* The server for a freshly checked-out connection (created on first use),
 * on worker w's loop (moved there if it last served another worker). */
struct server *server_from_pooled(struct worker *w, struct dpool *dp, weir_pooled *pooled);
/* Has this server sat in the pool longer than server_check_delay? */
int server_check_due(const struct server *s);
/* Run server_check_query for client c, who waits: client_server_checked()
 * tells it the outcome. 0, or -1 (the server is closed). */
int server_start_check(struct server *s, struct client *c);
/* Start serving client c: apply its parameters, then forward. 0 or -1. */
int server_link(struct server *s, struct client *c);
/* Client finished with it (transaction done, or disconnect). clean = the
 * client left it at an idle boundary. */
void server_release(struct server *s, int clean);
/* RECONNECT, RELOAD or KILL made this server's connection unusable (SHOW
 * SERVERS' close_needed; WAIT_CLOSE waits for none to be left;
 * server_fast_close). Takes the pool's lock. */
int server_close_needed(const struct server *s);
/* server_fast_close: a session's server whose pool moved on (RECONNECT, a
 * RELOAD that changed its entry) is closed with its client at the next
 * transaction boundary, now if it is at one. 1 if it was closed. */
int server_fast_close(struct server *s);
/* Forward the client's complete messages (and stream a partial one). */
int server_forward_from_client(struct server *s);
/* The client's output drained: resume reading from the server. */
void server_client_drained(struct server *s);
/* At shutdown, after the clients: close servers still running weir's own queries. */
void server_close_unlinked(struct daemon *d);
/* Ask PostgreSQL to cancel what this server runs now (worker thread). */
void server_cancel(struct server *s);

/* Inside an idle transaction: how long until a timeout ends it (0 = never);
 * sets txn_timeout_why to the one that will have fired. */
int64_t server_idle_in_txn_limit_us(struct server *s);

#endif
