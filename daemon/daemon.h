/*
 * The daemon's context: everything the event loop, listeners, clients and
 * pools share hangs off one struct daemon passed explicitly, never a global,
 * so that more event-loop threads can be added without a rewrite. Also the
 * small shared vocabulary: pool modes, tracked session parameters.
 */
#ifndef WEIR_DAEMON_H
#define WEIR_DAEMON_H

#include <pthread.h>
#include <stdint.h>

#include <event2/event.h>
#include <weir/weir.h>

#include "internal.h" /* libweir's clock and helpers: the daemon links the library statically */
#include "log.h"
#include "stream.h"
#include "worker.h"

struct weir_config;
struct userlist;
struct scram_cache;
struct pstmt_registry;
struct client;
struct dpool;
struct listener;
struct limit_group;
struct server;
struct admin;
struct stats_ctx;
struct metrics;
struct tls_ctx;
struct authq;
struct health;

/* Session parameters re-applied when a client gets a server whose values
 * differ; the first six are reported by the server (ParameterStatus). */
enum tracked_param {
    TP_CLIENT_ENCODING,
    TP_DATESTYLE,
    TP_TIMEZONE,
    TP_INTERVALSTYLE,
    TP_STANDARD_CONFORMING_STRINGS,
    TP_APPLICATION_NAME,
    TP_EXTRA_FLOAT_DIGITS, /* not reported: applied from the startup packet */
    TP_COUNT
};

/* Values are shared, reference-counted strings: equal values found by a
 * comparison are merged (param_same), so after the first transactions
 * clients and servers with the same settings hold the same pointers and the
 * check per transaction is a pointer comparison. */
struct param_set {
    const char *v[TP_COUNT]; /* NULL = not set / unknown */
};

/* Name as the server spells it; index by name (case-insensitive), -1 if untracked. */
const char *tracked_param_name(int i);
int tracked_param_index(const char *name);
int tracked_param_reported(int i);
void param_set_put(struct param_set *p, int i, const char *value);
/* dst takes src's value of parameter i (shared, not copied). */
void param_set_share(struct param_set *dst, int i, const struct param_set *src);
/* Does have hold want's value of i (want's value not NULL)? When the strings
 * are equal but separate, both end up sharing one, so the next check is cheap. */
int param_same_slow(struct param_set *have, int i, struct param_set *want);
static inline int param_same(struct param_set *have, int i, struct param_set *want)
{
    return have->v[i] == want->v[i] || param_same_slow(have, i, want);
}
void param_set_clear(struct param_set *p);

struct daemon_stats {
    uint64_t clients_total, clients_refused, logins_failed;
    uint64_t prepared_prepares, prepared_evictions; /* statements prepared on servers / closed for room */
    uint64_t reloads, reload_failures;
};

struct daemon {
    struct event_base *base;     /* worker 0's loop: listeners, signals, pools, health, stats */
    struct worker **workers;     /* workers = N event-loop threads (worker.h) */
    int nworkers;
    int next_worker;             /* round robin of accepted clients (main thread only) */
    struct world world;          /* stop-the-world handshake */
    int world_off;               /* the other workers have stopped: teardown runs alone */
    /* Guards what workers share outside a stopped world: the cancel-key
     * table, the server list, the pool list and each pool's learnt
     * parameters and login secrets, the health hosts. Never held across a
     * callback. */
    pthread_mutex_t lock;
    pthread_t main_thread;       /* worker 0's */
    struct weir_config *cfg;
    const char *config_path;
    struct userlist *users;      /* auth_file, or NULL */
    struct scram_cache *scram;
    struct pstmt_registry *pstmts; /* prepared statements shared by clients */
    struct daemon_log log;

    struct listener *listeners;
    int nclients;                /* every connected client, all workers (atomic) */
    struct client **by_id;       /* cancel key lookup: open-addressed on id */
    size_t by_id_cap;
    uint64_t next_id;

    struct dpool *pools;         /* (database, user) pools (list) */
    struct server *servers;      /* every backend connection taken over from libpq (list) */
    struct limit_group *limit_groups; /* max_db_connections / max_user_connections */
    struct event *sigint_ev, *sigterm_ev, *sighup_ev, *sigusr1_ev, *sigusr2_ev;
    struct event *shutdown_timer;
    struct admin *admin;         /* admin.c: PAUSE/DISABLE state, console commands in progress */
    struct stats_ctx *stats_ctx; /* stats.c: per-database totals and averages, log_stats */
    struct metrics *metrics;     /* metrics.c: the HTTP endpoint, or NULL */
    struct tls_ctx *tls;         /* tls.c: client-facing TLS, NULL when client_tls_sslmode is disable */
    struct health *health;       /* health.c: role and lag checks of multi-host entries */
    int64_t start_us;            /* monotonic clock at start, for uptime */
    int64_t start_wall;          /* time(NULL) at start */
    int shutting_down;           /* SIGINT: no new clients, exit when idle */
    int shutdown_check_posted;   /* a look whether to exit is queued (atomic) */
    int stopping;                /* tearing down: servers are closed, not reset */
    int paused;
    uint8_t mock_secret[32];     /* SCRAM for unknown users looks like a wrong password */
    struct daemon_stats stats;   /* updated with COUNT_ADD */
};

/* Counters several workers bump: relaxed atomics (readers stop the world or
 * take a snapshot; only the sum matters). */
#define COUNT_ADD(field, n) ((void)__atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED))
#define COUNT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* The main thread's worker (listeners, signals, pools, stats, metrics). */
static inline struct worker *daemon_main_worker(struct daemon *d)
{
    return d->workers[0];
}

/* Client registry for CancelRequest lookup. */
int daemon_register_client(struct daemon *d, struct client *c);
void daemon_unregister_client(struct daemon *d, struct client *c);
/* A client by id: the pointer is only good on the client's own worker, or
 * with the world stopped. */
struct client *daemon_find_client(struct daemon *d, uint64_t id);
/* Every client of every worker, with the world stopped (or one worker). */
struct client *daemon_first_client(const struct daemon *d);
struct client *daemon_next_client(const struct daemon *d, const struct client *c);
/* A CancelRequest for (id, key) arrived on worker self: the client's own
 * worker asks PostgreSQL to cancel what its server runs, if the key fits. */
void daemon_cancel_client(struct worker *self, uint64_t id, uint32_t key);

/* Reload the config file (SIGHUP / RELOAD), with the world stopped; self is
 * the calling thread's worker. Returns 0 or -1 (old config kept). */
int daemon_reload(struct worker *self);
/* systemd's notify protocol (READY=1, RELOADING=1...), when NOTIFY_SOCKET is set. */
void daemon_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* config_report_fn that writes to the daemon log. */
void daemon_report_to_log(void *arg, weir_log_level sev, const char *file, int line, const char *message);
/* Load cfg's auth_file into *out (NULL when none is configured). 0 or -1, logged. */
int daemon_load_userlist(struct daemon *d, const struct weir_config *cfg, struct userlist **out);
/* SIGINT: stop accepting, exit once no transaction is in progress. */
void daemon_begin_shutdown(struct daemon *d);
/* Called when a client goes away: during shutdown, exit once none remain. */
void daemon_client_gone(struct daemon *d);

#endif
