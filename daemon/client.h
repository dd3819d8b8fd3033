/*
 * One client connection: startup and authentication, then a session whose
 * messages go to a server from the pool, under the database's pool mode.
 */
#ifndef WEIR_DAEMON_CLIENT_H
#define WEIR_DAEMON_CLIENT_H

#include <stdint.h>
#include <sys/socket.h>

#include "daemon.h"
#include "stream.h"

struct server;
struct scram_server;
struct client_stmts;
struct authq_job;

/*
 *  STARTUP --startup ok--> AUTH --password ok--> WELCOME --params--> IDLE
 *     |  (SSLRequest: 'S' + TLS   | (trust, cert:   (needs one server's   |
 *     |   handshake, or 'N')      |  skip)           parameters once)     |
 *     v                           v                                       v
 *  CLOSING <------------------- any error ----------------- WAITING --server--> ACTIVE
 *                                                            ^                     |
 *                                                            '-- next query -- IDLE <'
 *                                                                (transaction done)
 */
enum client_state { CL_STARTUP, CL_AUTH, CL_WELCOME, CL_IDLE, CL_WAITING, CL_ACTIVE, CL_CLOSING };

enum client_auth { CA_NONE, CA_CLEARTEXT, CA_MD5, CA_SCRAM, CA_SCRAM_FINAL };

struct client {
    struct daemon *d;
    struct worker *w;             /* the event loop it lives on, for life */
    struct client *prev, *next;   /* its worker's list */
    struct client *hnext;         /* cancel-key hash chain */
    uint64_t id;
    uint32_t cancel_key;
    enum client_state state;
    struct stream io;
    int fd;
    char addr[64];
    int port;
    int is_unix;

    char *user, *dbname;
    struct param_set params;      /* what this client's session should have */
    struct dpool *dp;
    struct server *server;        /* while ACTIVE */
    weir_pool_waiter *waiter;     /* while WAITING */

    enum client_auth auth;
    uint8_t md5_salt[4];
    struct scram_server *scram;
    char *secret;                 /* for auth; wiped when done */
    struct authq_job *authq_job;  /* auth_query lookup in progress */
    char *authq_secret;           /* what it found; wiped when done */
    int admin;                    /* connected to the admin console */
    int no_db;                    /* asked for a database the config lacks: told after auth, as PgBouncer */
    int tls;                      /* the connection uses TLS (its SSL is io.ssl) */
    char *tls_cn;                 /* CN of the verified client certificate, or NULL */

    struct client_stmts *stmts;   /* prepared statement names (transaction mode) */
    char *dealloc_target;         /* unnamed statement is "DEALLOCATE this" (weir answers it) */
    int dealloc_bound;            /* ... and the unnamed portal is bound to it */
    uint32_t fwd_remaining;       /* rest of a message being streamed to the server */
    const unsigned char *rx;      /* fresh input still in the loop's scratch, logically after io.in */
    size_t rx_len;
    int unsynced;                 /* extended-protocol messages since the last Sync */
    int64_t connect_us, request_us, wait_start_us;
    struct event *timer;          /* login timeout, idle timeouts; made when first armed */
    int timer_armed;
    int quiet_ticks;              /* daemon ticks without input (client_trim_idle) */
    int deferred_free;
};

/* Accepted a connection: take ownership of fd. */
void client_accept(struct daemon *d, int fd, const struct sockaddr *sa, socklen_t salen, int is_unix);
/* The one exit path: log why, optionally tell the client (FATAL sqlstate message), close. */
void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Send an ErrorResponse/notice without closing. */
void client_send_error(struct client *c, const char *severity, const char *sqlstate, const char *msg);
/* The server finished a transaction (transaction/statement mode): back to IDLE. */
void client_server_released(struct client *c);
/* The check of the server this waiting client was to get is over: s when
 * it passed (link it), NULL when it failed (ask for another). */
void client_server_checked(struct client *c, struct server *s);
/* Data is waiting in the client's buffer and a server may now take it. */
void client_resume(struct client *c);
/* Authentication per auth_type, for the admin console's login. */
void client_start_auth(struct client *c);
/* The admin console finished its welcome: the client is idle. */
void client_admin_ready(struct client *c);
void client_rearm_timer(struct client *c, int64_t us);
/* (Re)start the client's one timer; 0 stops it. Its meaning follows the
 * state. Inline: twice per transaction, and with no timeouts configured
 * (the default) there is nothing to do. */
static inline void client_arm_timer(struct client *c, int64_t us)
{
    if (us > 0 || c->timer_armed)
        client_rearm_timer(c, us);
}
/* Log with the client prefix (PgBouncer's "C-0x..: db/user@addr:port"). */
void client_log(struct client *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Once a second: clients idle for a while give back buffers and timer. */
void client_trim_idle(struct worker *w);
/* server_fast_close, once a second: sessions whose server's pool moved on
 * (RECONNECT, a RELOAD that changed the entry) end at their next boundary. */
void client_fast_close_sweep(struct worker *w);
/* Flush output; on failure the client is disconnected. 0 or -1. */
int client_flush(struct client *c);
/* The common name of the client's verified TLS certificate, or NULL (no TLS,
 * no certificate asked for or sent). Valid while the client is. */
const char *client_tls_peer_cn(const struct client *c);

#endif
