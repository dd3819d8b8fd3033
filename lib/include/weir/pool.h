/*
 * Pool: a bounded set of connections made by one Dialect to one target, shared
 * by threads and event loops. One core, two fronts: weir_pool_checkout() blocks
 * the calling thread until a deadline, weir_pool_checkout_async() calls back on
 * the caller's libevent base. Both queue in the same FIFO of waiters; a
 * connection checked in goes straight to the oldest waiter.
 *
 * Background work (connecting, refilling to min_size, pings, resets, idle
 * and lifetime expiry, async waiter deadlines) runs on the event_base given in
 * the config, which the owner must run (the Engine runs one on its own
 * thread; the daemon passes its main loop). Every public call is thread-safe.
 * libevent's threading must be enabled (evthread_use_pthreads()) before any
 * base used with a pool is created, whenever more than one thread is involved.
 */
#ifndef WEIR_POOL_H
#define WEIR_POOL_H

#include <stdint.h>
#include <weir/common.h>
#include <weir/dialect.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

typedef struct weir_pool weir_pool;
typedef struct weir_pooled weir_pooled;       /* one checked-out connection */
typedef struct weir_pool_waiter weir_pool_waiter;
typedef struct weir_pool_group weir_pool_group; /* a limit shared by pools */

#define WEIR_POOL_MAX_GROUPS 2

/*
 * Where each new connection goes, decided by the pool's owner (e.g. one host
 * of several, picked from the owner's own health checks; the daemon balances
 * read replicas this way). Optional: a zeroed struct means "always connect
 * with the pool's conninfo".
 *
 * choose runs on the pool thread, without the pool's lock, before each
 * connect attempt. conninfo is the pool's current one (borrowed). It either
 * leaves *out NULL (connect with conninfo as is) or sets it to a malloc'd
 * conninfo that the pool frees, and sets *tag to a value of the owner's
 * choosing that stays with the connection (weir_pooled_target()) and selects
 * it for weir_pool_invalidate_target(). It returns 0, or a negative WEIR_E*
 * code with a sentence in errbuf (NUL-terminated): then nothing is attempted
 * and it counts as a failed connect (back-off, last error, waiters failed
 * when fail_waiters_on_connect_error is set).
 *
 * release runs once for every successful choose: when that connection is
 * closed, or when its connect failed (connected = 0). It runs on whichever
 * thread closes the connection, may hold no pool lock, and must not call
 * into this pool. arg is borrowed and must outlive the pool.
 */
typedef struct weir_pool_target {
    int (*choose)(void *arg, const char *conninfo, char **out, uintptr_t *tag, char *errbuf, size_t errlen);
    void (*release)(void *arg, uintptr_t tag, int connected);
    void *arg;
} weir_pool_target;

/* What a failed connect does to the callers waiting for a connection. */
enum {
    WEIR_WAITERS_KEEP = 0,         /* they keep waiting (their own timeout) while the pool retries */
    WEIR_WAITERS_FAIL = 1,         /* they get WEIR_ECONNECT at once */
    WEIR_WAITERS_FAIL_REFUSED = 2, /* at once only when the server refused for a lasting reason
                                      (dialect connect_refused), as a wrong password; they keep
                                      waiting through an unreachable or restarting server */
};

typedef struct weir_pool_config {
    const weir_dialect *dialect;   /* borrowed; must outlive the pool */
    const char *conninfo;          /* copied */
    struct event_base *base;       /* borrowed; runs background work */
    const char *name;              /* copied; used in log lines. May be NULL */

    int min_size;                  /* kept open in the background (0) */
    int max_size;                  /* kept after use (5) */
    int max_overflow;              /* extra, closed on return when nobody waits (10) */
    int keep_overflow;             /* 1: overflow connections, once open, stay idle
                                      like the rest until idle_timeout or recycle
                                      (PgBouncer's reserve pool); 0: closed on
                                      return, as SQLAlchemy's QueuePool (0) */
    int overflow_delay_ms;         /* open overflow connections only for a waiter
                                      that waited this long (PgBouncer's
                                      reserve_pool_timeout); 0 = at once (0) */
    int max_waiters;               /* queue cap, -1 = unlimited (-1) */
    int timeout_ms;                /* default checkout wait, -1 = forever (30000) */
    int connect_timeout_ms;        /* per connect attempt, 0 = none (15000) */
    int recycle_ms;                /* max lifetime, 0 = unlimited (0) */
    int recycle_jitter_ms;         /* lifetime minus up to this, random (0) */
    int idle_timeout_ms;           /* close idle beyond min_size, 0 = never (600000) */
    int pre_ping_ms;               /* ping on checkout if idle longer, -1 = never (-1) */
    int reset_on_return;           /* run dialect reset at check-in (1) */
    int lifo;                      /* hand out the most recent idle connection (1) */
    int watch_idle;                /* notice idle connections the server closes (1) */
    int retry_min_ms, retry_max_ms;/* connect back-off after failure (100, 15000) */
    int fail_waiters_on_connect_error; /* a WEIR_WAITERS_* value (WEIR_WAITERS_FAIL) */

    /* Limits shared with other pools (e.g. per database, per user); NULL
     * entries are ignored. Borrowed: a group must outlive its pools. */
    weir_pool_group *groups[WEIR_POOL_MAX_GROUPS];

    weir_log_fn log_fn;            /* may be NULL */
    void *log_arg;

    weir_pool_target target;       /* per-connection target; zeroed = none */
} weir_pool_config;

/*
 * A group caps the connections (open or opening) of all pools that name it,
 * like PgBouncer's max_db_connections. 0 means no limit. When a member with
 * waiters finds the group full, other members close an idle connection to
 * make room. Free a group only after every pool in it.
 */
WEIR_API WEIR_MUST_CHECK int weir_pool_group_new(int max_connections, weir_pool_group **out);
WEIR_API void weir_pool_group_free(weir_pool_group *group);
WEIR_API void weir_pool_group_set_max(weir_pool_group *group, int max_connections);
WEIR_API int weir_pool_group_count(weir_pool_group *group);

/* Fill cfg with the defaults shown in parentheses above. */
WEIR_API void weir_pool_config_init(weir_pool_config *cfg);

/* Create a pool. cfg is copied. The pool starts filling to min_size at once. */
WEIR_API WEIR_MUST_CHECK int weir_pool_new(const weir_pool_config *cfg, weir_pool **out);

/*
 * Free the pool: closes idle connections, fails waiters with WEIR_ECLOSED.
 * Connections still checked out are closed when checked in. Must be called
 * while the pool's base is not running a pool callback (e.g. from the base's
 * own thread, or after its loop stopped). Accepts NULL.
 */
WEIR_API void weir_pool_free(weir_pool *pool);

/*
 * Blocking checkout: wait up to timeout_ms (-1 forever, -2 the pool default)
 * for a connection. On success *out is yours until weir_pool_checkin().
 * Errors: WEIR_ETIMEDOUT, WEIR_ETOOMANY (waiter cap), WEIR_ECLOSED,
 * WEIR_ECONNECT (a connect failed and fail_waiters_on_connect_error says so).
 * Must not be called from the thread running the pool's base (it would wait
 * for itself).
 */
WEIR_API WEIR_MUST_CHECK int weir_pool_checkout(weir_pool *pool, int timeout_ms, weir_pooled **out);

/* Non-blocking: an idle, ready connection now, or WEIR_EAGAIN. Never queues. */
WEIR_API WEIR_MUST_CHECK int weir_pool_try_checkout(weir_pool *pool, weir_pooled **out);
/* The same, preferring among the next few idle connections (8) one whose
 * affinity tag (weir_pooled_set_affinity) is affinity: e.g. the event loop
 * that used it last, so that it does not have to move to another one. */
WEIR_API WEIR_MUST_CHECK int weir_pool_try_checkout_affine(weir_pool *pool, uintptr_t affinity, weir_pooled **out);
/*
 * The two above, for a caller that already has the time: now_us is its
 * reading of weir_now_us() (e.g. one read per event-loop callback, as the
 * daemon does), so a busy caller does not pay for a second clock read per
 * checkout. The pool uses it for the connection's hold time, pre-ping and
 * lifetime; a reading a little in the past is fine (times are clamped at 0).
 * use_affinity 0 ignores affinity. Same results as weir_pool_try_checkout().
 */
WEIR_API WEIR_MUST_CHECK int weir_pool_try_checkout_at(weir_pool *pool, int use_affinity, uintptr_t affinity,
                                                       int64_t now_us, weir_pooled **out);

/*
 * Async checkout: cb runs later on base (the caller's; may be the pool's
 * base) with status 0 and a connection, or a negative code and NULL. It never
 * runs inside this call. *waiter (optional) lets the caller cancel; it is
 * valid until cb runs or weir_pool_cancel() returns.
 */
typedef void (*weir_pool_cb)(int status, weir_pooled *conn, void *arg);
WEIR_API WEIR_MUST_CHECK int weir_pool_checkout_async(weir_pool *pool, struct event_base *base,
                                                      int timeout_ms, weir_pool_cb cb, void *arg,
                                                      weir_pool_waiter **waiter);

/* Withdraw an async request; cb will not run. Call from the thread running
 * the base given to weir_pool_checkout_async(). A connection already
 * assigned goes back to the pool. */
WEIR_API void weir_pool_cancel(weir_pool *pool, weir_pool_waiter *waiter);

/* How a connection comes back. */
enum weir_checkin_flags {
    WEIR_CHECKIN_DEFAULT = 0,  /* reset if the pool resets on return */
    WEIR_CHECKIN_CLEAN = 1,    /* caller vouches it needs no reset */
    WEIR_CHECKIN_BROKEN = 2,   /* close it; the pool will replace it */
    WEIR_CHECKIN_HEALTHY = 4,  /* caller has just found it sound (asked the
                                  dialect's is_broken, or read a ReadyForQuery
                                  itself): the pool does not ask is_broken
                                  again. Lifetime, generation, invalidation
                                  and drain still retire it, and the reset
                                  still runs unless CLEAN. Ignored with BROKEN. */
};

/* Return a connection. conn is no longer the caller's afterwards. */
WEIR_API void weir_pool_checkin(weir_pool *pool, weir_pooled *conn, int flags);
/* The same with the caller's reading of weir_now_us() (see
 * weir_pool_try_checkout_at): it ends the hold time and is checked against
 * the connection's lifetime. */
WEIR_API void weir_pool_checkin_at(weir_pool *pool, weir_pooled *conn, int flags, int64_t now_us);

/* The dialect connection inside (PGconn wrapper for postgresql: use
 * weir_pooled_driver_handle() for the PGconn itself). Borrowed. */
WEIR_API void *weir_pooled_dconn(const weir_pooled *conn);
WEIR_API void *weir_pooled_driver_handle(const weir_pooled *conn);
/* Monotonic microseconds since the connection was established. */
WEIR_API int64_t weir_pooled_age_us(const weir_pooled *conn);
/* Attach caller data to a connection for its whole life (across checkouts);
 * free_fn (may be NULL) runs when the pool closes the connection, on
 * whichever thread closes it. Replaces (without freeing) earlier data. */
WEIR_API void weir_pooled_set_data(weir_pooled *conn, void *data, void (*free_fn)(void *data));
WEIR_API void *weir_pooled_get_data(const weir_pooled *conn);
/* Why the pool closes conn, for free_fn to log: "idle timeout", "lifetime
 * over", "retired" (invalidated), "retired while paused", "overflow
 * returned", "broken", "pool closed", a failed connect's error (cut to
 * 127 bytes)...; "" while it is open. Borrowed, valid while conn is. */
WEIR_API const char *weir_pooled_close_reason(const weir_pooled *conn);
/* Tag the connection with who holds it (kept across check-in) for
 * weir_pool_try_checkout_affine(). Call while it is checked out. */
WEIR_API void weir_pooled_set_affinity(weir_pooled *conn, uintptr_t tag);
/* Generation the connection belongs to (see weir_pool_invalidate_all). */
WEIR_API uint64_t weir_pooled_generation(const weir_pooled *conn);
/* The tag the target chooser gave this connection; 0 without a chooser. */
WEIR_API uintptr_t weir_pooled_target(const weir_pooled *conn);

/* Mark one connection for closing: an idle one is closed by the pool thread
 * soon, a checked-out one when it comes back. For owners who watch the
 * connection themselves (watch_idle = 0) and see the server go away. */
WEIR_API void weir_pool_invalidate(weir_pool *pool, weir_pooled *conn);

/* Connect with a new conninfo (copied) from now on; open connections stay.
 * Pair with weir_pool_invalidate_all() when the target itself changed. */
WEIR_API WEIR_MUST_CHECK int weir_pool_set_conninfo(weir_pool *pool, const char *conninfo);

/* Every connection made before now is closed: idle ones at once, checked-out
 * ones when returned (e.g. after a failover), and the connect back-off is
 * forgotten so a waiter gets a new connection at once. Returns the new
 * generation. */
WEIR_API uint64_t weir_pool_invalidate_all(weir_pool *pool);

/* Close the connections whose chooser tag is tag (see weir_pool_target), as
 * weir_pool_invalidate() does for one: e.g. every connection to a host that
 * stopped being eligible. Connections being made for it are closed once
 * made. Returns how many were marked. */
WEIR_API int weir_pool_invalidate_target(weir_pool *pool, uintptr_t tag);

/* Forget the connect back-off and try again now, if anyone needs a
 * connection (e.g. the owner's health check saw a server come back). */
WEIR_API void weir_pool_retry_now(weir_pool *pool);

/* Pause: waiters queue, nothing is handed out. Resume undoes pause and drain.
 * Drain: new checkouts fail with WEIR_ECLOSED, waiters too, idle connections
 * close now and checked-out ones on return; done when stats.total == 0. */
WEIR_API void weir_pool_pause(weir_pool *pool);
WEIR_API void weir_pool_resume(weir_pool *pool);
WEIR_API void weir_pool_drain(weir_pool *pool);

/* Change sizes and timeouts of a live pool (fields other than the sizes,
 * timeouts and flags are ignored). */
WEIR_API WEIR_MUST_CHECK int weir_pool_reconfigure(weir_pool *pool, const weir_pool_config *cfg);

#define WEIR_HIST_BUCKETS 24  /* bucket i counts durations < 2^i * 16 us; the last is +inf */

typedef struct weir_pool_stats {
    int total;          /* every open or opening connection */
    int idle, in_use, connecting, busy;  /* busy: pinging or resetting */
    int waiters;
    int paused, draining;
    uint64_t generation;
    uint64_t checkouts, checkins, timeouts, rejected_waiters;
    uint64_t connects, connect_failures, closed, recycled, idle_expired,
             invalidated, ping_failures, reset_failures, handoffs;
    uint64_t wait_us_total, wait_us_max, hold_us_total, connect_us_total;
    uint64_t wait_hist[WEIR_HIST_BUCKETS];
    uint64_t hold_hist[WEIR_HIST_BUCKETS];
    uint64_t connect_hist[WEIR_HIST_BUCKETS];
} weir_pool_stats;

/* A consistent snapshot, taken under the pool's lock. */
WEIR_API void weir_pool_get_stats(weir_pool *pool, weir_pool_stats *out);

/* Last connect error text, copied into buf (NUL-terminated; empty if none). */
WEIR_API void weir_pool_last_error(weir_pool *pool, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
