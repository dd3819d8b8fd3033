/*
 * The Pool core: sizing, the FIFO of waiters, hand-off, lifetimes, health
 * checks and stats for connections made by any Dialect. Two fronts share it:
 * blocking checkout (threads wait on a condition variable) and async checkout
 * (the caller's event_base gets an event activated). Background work runs on
 * the pool's own base, "the pool thread" below, whichever thread runs it.
 *
 * One connection ("item") moves through these states, only via
 * item_set_state(), which checks the transition:
 *
 *                  connect ok                 checkout / hand-off
 *   CONNECTING ----------------> IDLE -------------------------------> OUT
 *       |                        ^  |  \ idle too long at checkout      |
 *       | failed, timed out      |  |   `--> PINGING --ok--> IDLE/OUT    |
 *       v                        |  |          | failed                  |
 *    CLOSED <--------------------+--+----------+                         |
 *       ^           reset failed     \_____ RESETTING <--- check-in -----'
 *       |                                      | ok: IDLE, or OUT to the
 *       '--- broken, stale, expired, drained   |     oldest waiter
 *
 * A check-in that needs no reset goes OUT -> OUT (to the oldest waiter) or
 * OUT -> IDLE directly. Locking: every field of the pool and of items not in
 * a transitional state (CONNECTING, PINGING, RESETTING) is guarded by
 * pool->lock. Items in transitional states are driven by the pool thread
 * alone, which calls the dialect without holding the lock; an OUT item's
 * connection is its holder's, so check-in asks is_broken before locking. Events on the
 * pool's base are touched only by the pool thread, with one exception: a
 * checkout in another thread deletes the idle watch (outside the lock, since
 * event_del waits for a running callback, which itself takes the lock).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define WEIR_HAVE_SINGLE_THREADED 1
#endif
#endif

#include <event2/event.h>

#include "internal.h"
#include "list.h"
#include "pool_internal.h"

static const char *const item_state_names[] = {
    [ITEM_CONNECTING] = "connecting", [ITEM_IDLE] = "idle", [ITEM_OUT] = "out",
    [ITEM_PINGING] = "pinging", [ITEM_RESETTING] = "resetting", [ITEM_CLOSED] = "closed",
};

/* Allowed transitions: bit `to` of item_next[from]. A bit mask, not a
 * matrix, so that the check on every checkout and check-in is one load and
 * one test (item_set_state is inlined with a constant `to`). */
#define TO(s) (1u << (s))
static const unsigned char item_next[ITEM_NSTATES] = {
    [ITEM_CONNECTING] = TO(ITEM_IDLE) | TO(ITEM_OUT) | TO(ITEM_CLOSED),
    [ITEM_IDLE] = TO(ITEM_OUT) | TO(ITEM_PINGING) | TO(ITEM_CLOSED),
    [ITEM_OUT] = TO(ITEM_IDLE) | TO(ITEM_OUT) | TO(ITEM_RESETTING) | TO(ITEM_CLOSED),
    [ITEM_PINGING] = TO(ITEM_IDLE) | TO(ITEM_OUT) | TO(ITEM_CLOSED),
    [ITEM_RESETTING] = TO(ITEM_IDLE) | TO(ITEM_OUT) | TO(ITEM_CLOSED),
    [ITEM_CLOSED] = 0,
};
#undef TO

static void pool_work(weir_pool *pool);
static void pool_kick(weir_pool *pool);
static void item_drive(weir_pooled *item);

/* ---- small helpers ---- */

static uint64_t pool_random(weir_pool *pool)
{
    /* xorshift64*: per-pool state, so pools share nothing. */
    uint64_t x = pool->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    pool->rng = x;
    return x * 2685821657736338717ULL;
}

/* Bucket i counts us < 16 << i, i.e. (for us >= 8) the highest set bit of
 * us / 8; the | 1 puts 0..15 us in bucket 0. A count of leading zeros, not
 * a loop: it runs on every check-in. The last bucket takes the rest. */
static inline void hist_add(uint64_t *hist, uint64_t us)
{
    int i = 63 - __builtin_clzll((us >> 3) | 1);

    hist[i < WEIR_HIST_BUCKETS - 1 ? i : WEIR_HIST_BUCKETS - 1]++;
}

/* now - since, or 0 when the caller's clock reading (see
 * weir_pool_checkin_at) is a little older than since. */
static inline uint64_t elapsed_us(int64_t now, int64_t since)
{
    return now > since ? (uint64_t)(now - since) : 0;
}

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv;
    if (ms < 0)
        ms = 0;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

#define plog(pool, level, ...) weir__log((pool)->cfg.log_fn, (pool)->cfg.log_arg, level, __VA_ARGS__)

/* ---- item state ---- */

/* Out of line: never taken unless this file has a bug. */
static __attribute__((cold, noinline)) void item_bad_transition(weir_pool *pool, enum item_state from,
                                                                 enum item_state to)
{
    plog(pool, WEIR_LOG_ERROR, "pool %s: invalid connection transition %s -> %s", pool->name,
         item_state_names[from], item_state_names[to]);
}

/* The one door for an item's state: checks the transition and keeps the
 * per-state counts (and the open total) in step. Under lock. */
static inline void item_set_state(weir_pooled *item, enum item_state to)
{
    weir_pool *pool = item->pool;
    enum item_state from = item->state;

    if (__builtin_expect(!(item_next[from] & (1u << to)), 0))
        item_bad_transition(pool, from, to); /* keep the counts consistent and say so */
    if (from == ITEM_IDLE)
        weir_list_remove(&item->idle_link);
    pool->count[from]--;
    pool->count[to]++;
    if (to == ITEM_CLOSED)
        pool->open--;
    item->state = to;
    /* Read by other pools of a group without our lock; only a hint, so a
     * plain (relaxed) store, and only when the idle count moved. */
    if (from == ITEM_IDLE || to == ITEM_IDLE)
        atomic_store_explicit(&pool->idle_hint, pool->count[ITEM_IDLE], memory_order_relaxed);
}

/* Open or opening connections: every state but CLOSED. */
static int pool_total(const weir_pool *pool)
{
    return pool->open;
}

/* Retired for its own sake: invalidated, an old generation, or its
 * lifetime over. For a caller that knows the pool is neither closed nor
 * draining (checkout checks that first). */
static inline int item_stale(const weir_pool *pool, const weir_pooled *item, int64_t now)
{
    return item->invalid || item->generation != pool->generation || (item->expires_us != 0 && now >= item->expires_us);
}

/* Should this connection be closed rather than used again? */
static inline int item_retired(const weir_pool *pool, const weir_pooled *item, int64_t now)
{
    return pool->closed || pool->draining || item_stale(pool, item, now);
}

/* Why a retired item goes: its lifetime ended, the pool is paused (and was
 * invalidated), or `other` (invalidated, draining...). */
static const char *retire_reason(const weir_pool *pool, const weir_pooled *item, int64_t now, const char *other)
{
    int expired = item->expires_us != 0 && now >= item->expires_us;

    if (expired && !item->invalid && item->generation == pool->generation && !pool->closed && !pool->draining)
        return "lifetime over";
    return pool->paused && !pool->closed && !pool->draining ? "retired while paused" : other;
}

/*
 * Detach an item under the lock and park it on pool->graveyard; the pool
 * thread (or the caller, for OUT items) frees it later outside the lock.
 */
static void item_retire(weir_pooled *item, const char *reason)
{
    weir_pool *pool = item->pool;

    item_set_state(item, ITEM_CLOSED);
    weir_list_remove(&item->all_link);
    snprintf(item->close_reason, sizeof(item->close_reason), "%s", reason);
    pool->st.closed++;
    plog(pool, WEIR_LOG_DEBUG, "pool %s: closing connection (%s)", pool->name, reason);
}

/* Free a detached item: its events, its driver connection, itself. */
static void item_destroy(weir_pooled *item)
{
    weir_pool *pool = item->pool;

    for (int i = 0; i < WEIR_POOL_MAX_GROUPS && item->reserved; i++)
        if (pool->cfg.groups[i])
            group_release(pool->cfg.groups[i]);
    if (item->watch_ev)
        event_free(item->watch_ev);
    if (item->op_ev)
        event_free(item->op_ev);
    if (item->data_free)
        item->data_free(item->data);
    item->pool->d->close(item->dconn);
    if (item->targeted && pool->cfg.target.release)
        pool->cfg.target.release(pool->cfg.target.arg, item->target, item->connected);
    free(item);
}

/* ---- waiters ---- */

static void waiter_remove(weir_pool *pool, weir_pool_waiter *w)
{
    weir_list_remove(&w->link);
    pool->nwaiters--;
}

/* Complete a waiter (under lock): hand it conn, or fail it with status. */
static void waiter_finish_at(weir_pool *pool, weir_pool_waiter *w, int status, weir_pooled *conn, int64_t now)
{
    uint64_t waited = elapsed_us(now, w->enqueued_us);

    waiter_remove(pool, w);
    w->done = 1;
    w->status = status;
    w->conn = conn;
    if (conn != NULL) {
        conn->out_since_us = now;
        pool->st.checkouts++;
        pool->st.wait_us_total += waited;
        if (waited > pool->st.wait_us_max)
            pool->st.wait_us_max = waited;
        hist_add(pool->st.wait_hist, waited);
    }
    if (w->cond != NULL)
        pthread_cond_signal(w->cond);
    else
        event_active(w->ev, EV_TIMEOUT, 1);
}

static void waiter_finish(weir_pool *pool, weir_pool_waiter *w, int status, weir_pooled *conn)
{
    waiter_finish_at(pool, w, status, conn, weir__now_us());
}

static void fail_all_waiters(weir_pool *pool, int status)
{
    while (!weir_list_empty(&pool->waiters)) {
        weir_pool_waiter *w = weir_container_of(pool->waiters.next, weir_pool_waiter, link);
        waiter_finish(pool, w, status, NULL);
    }
}

void pool_waiter_enqueue(weir_pool *pool, weir_pool_waiter *w)
{
    w->pool = pool;
    w->enqueued_us = weir__now_us();
    weir_list_push_back(&pool->waiters, &w->link);
    pool->nwaiters++;
    pool_ref(pool);
}

void pool_waiter_expire(weir_pool *pool, weir_pool_waiter *w)
{
    waiter_remove(pool, w);
    w->done = 1;
    w->status = WEIR_ETIMEDOUT;
    pool->st.timeouts++;
}

void pool_waiter_withdraw(weir_pool *pool, weir_pool_waiter *w)
{
    if (!w->done) {
        waiter_remove(pool, w);
        w->done = 1;
        w->status = WEIR_ECLOSED;
    }
}

/* ---- making a connection available ---- */

/* Inlined into item_place (its one caller), that is into every check-in. */
static inline __attribute__((always_inline)) void item_go_idle(weir_pool *pool, weir_pooled *item, int64_t now)
{
    item_set_state(item, ITEM_IDLE);
    weir_list_push_front(&pool->idle, &item->idle_link);
    item->idle_since_us = now;
    if (pool->cfg.watch_idle && item->watch_ev != NULL)
        event_add(item->watch_ev, NULL);
    for (int i = 0; i < WEIR_POOL_MAX_GROUPS; i++)
        if (pool->cfg.groups[i] && group_limited(pool->cfg.groups[i]))
            group_idle_available(pool->cfg.groups[i], pool);
}

/*
 * A usable connection that is not retired (the caller checked): give it to
 * the oldest waiter, keep it idle, or close it as overflow. Under lock.
 * Returns 1 if the item was retired and must be destroyed by the caller.
 * Inlined: it is most of every check-in.
 */
static inline __attribute__((always_inline)) int item_place(weir_pool *pool, weir_pooled *item, int64_t now)
{
    if (__builtin_expect(!weir_list_empty(&pool->waiters), 0) && !pool->paused) {
        weir_pool_waiter *w = weir_container_of(pool->waiters.next, weir_pool_waiter, link);
        item_set_state(item, ITEM_OUT);
        pool->st.handoffs++;
        waiter_finish_at(pool, w, 0, item, now);
        return 0;
    }
    if (pool_total(pool) > pool->cfg.max_size + (pool->cfg.keep_overflow ? pool->cfg.max_overflow : 0)) {
        item_retire(item, "overflow returned");
        return 1;
    }
    item_go_idle(pool, item, now);
    return 0;
}

/* Retire an item found retired: a lifetime's end counts as recycled. */
static __attribute__((noinline)) void item_retire_due(weir_pool *pool, weir_pooled *item, int64_t now,
                                                      const char *reason)
{
    if (item->expires_us != 0 && now >= item->expires_us)
        pool->st.recycled++;
    item_retire(item, retire_reason(pool, item, now, reason));
}

/* Retired since it was last checked? Then retire it and return 1. The
 * check inlined (every check-in makes it), the rare retiring not. */
static inline int item_retire_if_due(weir_pool *pool, weir_pooled *item, int64_t now, const char *reason)
{
    if (__builtin_expect(!item_retired(pool, item, now), 1))
        return 0;
    item_retire_due(pool, item, now, reason);
    return 1;
}

/*
 * A connection became usable (connected, reset or pinged): give it to the
 * oldest waiter, keep it idle, or close it. Under lock. Returns 1 if the
 * item was retired and must be destroyed by the caller.
 */
static int item_available(weir_pool *pool, weir_pooled *item, int64_t now)
{
    if (item_retire_if_due(pool, item, now, "retired"))
        return 1;
    return item_place(pool, item, now);
}

/* ---- background work on the pool thread ---- */

/* Does this failure end the waiters' wait (fail_waiters_on_connect_error)? */
static int failure_fails_waiters(const weir_pool *pool, int refused)
{
    switch (pool->cfg.fail_waiters_on_connect_error) {
    case WEIR_WAITERS_FAIL: return 1;
    case WEIR_WAITERS_FAIL_REFUSED: return refused;
    default: return 0;
    }
}

static void connect_failed(weir_pool *pool, const char *why, int refused)
{
    int64_t now = weir__now_us();

    pool->st.connect_failures++;
    snprintf(pool->last_error, sizeof(pool->last_error), "%s", why);
    plog(pool, WEIR_LOG_WARNING, "pool %s: connect failed: %s", pool->name, why);
    pool->next_connect_us = now + (int64_t)pool->backoff_ms * 1000;
    pool->backoff_ms = pool->backoff_ms * 2 > pool->cfg.retry_max_ms ? pool->cfg.retry_max_ms
                                                                      : pool->backoff_ms * 2;
    /* Waiters fail only when nothing else in flight could still serve them. */
    if (failure_fails_waiters(pool, refused) && pool->count[ITEM_CONNECTING] == 0 &&
        pool->count[ITEM_RESETTING] == 0 && pool->count[ITEM_PINGING] == 0)
        fail_all_waiters(pool, WEIR_ECONNECT);
}

static void connect_succeeded(weir_pool *pool, weir_pooled *item)
{
    int64_t now = weir__now_us();
    int64_t took = now - item->op_start_us;
    int fd = pool->d->socket(item->dconn);

    pool->st.connects++;
    pool->st.connect_us_total += (uint64_t)took;
    hist_add(pool->st.connect_hist, (uint64_t)took);
    pool->backoff_ms = pool->cfg.retry_min_ms;
    pool->next_connect_us = 0;
    item->created_us = now;
    item->connected = 1;
    if (pool->cfg.recycle_ms > 0) {
        int64_t jitter = pool->cfg.recycle_jitter_ms > 0
                             ? (int64_t)(pool_random(pool) % ((uint64_t)pool->cfg.recycle_jitter_ms * 1000 + 1))
                             : 0;
        item->expires_us = now + (int64_t)pool->cfg.recycle_ms * 1000 - jitter;
    }
    if (fd >= 0 && pool->cfg.watch_idle) /* without it, check-outs need not touch an event */
        item->watch_ev = event_new(pool->base, fd, EV_READ, pool_watch_cb, item);
}

/* An operation (connect, ping, reset) ended on the pool thread. */
/* Did the server (or the dialect) refuse this connect for a lasting reason?
 * dconn is NULL when connect_start itself failed. */
static int connect_refused(const weir_pool *pool, void *dconn, const char *why)
{
    return pool->d->connect_refused == NULL || pool->d->connect_refused(dconn, why);
}

/* An operation ended; refused (connects only) says the failure lasts. */
static void item_op_done(weir_pooled *item, int ok, const char *why, int refused)
{
    weir_pool *pool = item->pool;
    enum item_state was = item->state;
    int destroy = 0;

    pthread_mutex_lock(&pool->lock);
    if (!ok) {
        item_retire(item, why);
        destroy = 1;
    }
    if (was == ITEM_CONNECTING) {
        if (ok)
            connect_succeeded(pool, item);
        else
            connect_failed(pool, why, refused);
    } else if (!ok) {
        if (was == ITEM_PINGING)
            pool->st.ping_failures++;
        else
            pool->st.reset_failures++;
        plog(pool, WEIR_LOG_INFO, "pool %s: %s failed: %s", pool->name,
             was == ITEM_PINGING ? "ping" : "reset", why);
    }
    if (ok)
        destroy = item_available(pool, item, weir__now_us());
    pthread_mutex_unlock(&pool->lock);
    if (destroy)
        item_destroy(item);
    pool_kick(pool);
}

static void item_op_cb(evutil_socket_t fd, short what, void *arg)
{
    weir_pooled *item = arg;

    (void)fd;
    if (what & EV_TIMEOUT) {
        item_op_done(item, 0, item->state == ITEM_CONNECTING ? "connect timed out" : "timed out", 0);
        return;
    }
    item_drive(item);
}

/* Wait for the socket in the direction the dialect asked, with the op's deadline. */
static int item_arm(weir_pooled *item, weir_poll want)
{
    weir_pool *pool = item->pool;
    int fd = pool->d->socket(item->dconn);
    short what = want == WEIR_POLL_READ ? EV_READ : EV_WRITE;
    struct timeval tv;

    if (fd < 0)
        return -1;
    if (item->op_ev == NULL || event_get_fd(item->op_ev) != fd) {
        if (item->op_ev)
            event_free(item->op_ev);
        item->op_ev = event_new(pool->base, fd, what, item_op_cb, item);
    } else {
        event_del(item->op_ev);
        event_assign(item->op_ev, pool->base, fd, what, item_op_cb, item);
    }
    if (item->op_ev == NULL)
        return -1;
    if (pool->cfg.connect_timeout_ms > 0) {
        int64_t left_ms = (item->op_start_us + (int64_t)pool->cfg.connect_timeout_ms * 1000 - weir__now_us()) / 1000;
        tv = ms_to_tv(left_ms);
        return event_add(item->op_ev, &tv);
    }
    return event_add(item->op_ev, NULL);
}

/* Advance the item's current operation as far as it goes without blocking. */
static void item_drive(weir_pooled *item)
{
    const weir_dialect *d = item->pool->d;
    weir_poll r = item->state == ITEM_CONNECTING ? d->connect_poll(item->dconn) : d->command_poll(item->dconn);

    if (r == WEIR_POLL_OK) {
        if (item->op_ev)
            event_del(item->op_ev);
        item_op_done(item, 1, NULL, 0);
    } else if (r == WEIR_POLL_FAILED || item_arm(item, r) != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", d->error_message(item->dconn));
        item_op_done(item, 0, why[0] ? why : "failed",
                     item->state == ITEM_CONNECTING && connect_refused(item->pool, item->dconn, why));
    }
}

/* The owner's chooser may swap in another conninfo (one host of several). */
static int choose_target(weir_pool *pool, weir_pooled *item, char **conninfo, char *err, size_t errlen)
{
    char *chosen = NULL;
    uintptr_t tag = 0;
    int rc;

    if (pool->cfg.target.choose == NULL)
        return 0;
    rc = pool->cfg.target.choose(pool->cfg.target.arg, *conninfo, &chosen, &tag, err, errlen);
    if (rc != 0) {
        free(chosen);
        if (err[0] == '\0')
            snprintf(err, errlen, "%s", weir_strerror(rc));
        return rc;
    }
    pthread_mutex_lock(&pool->lock);
    item->targeted = 1;
    item->target = tag;
    pthread_mutex_unlock(&pool->lock);
    if (chosen) {
        free(*conninfo);
        *conninfo = chosen;
    }
    return 0;
}

static void item_start_connect(weir_pool *pool, weir_pooled *item)
{
    char err[256] = "", *conninfo;
    int rc;

    item->op_start_us = weir__now_us();
    /* A copy: weir_pool_set_conninfo() may replace the string meanwhile. */
    pthread_mutex_lock(&pool->lock);
    conninfo = strdup(pool->conninfo);
    pthread_mutex_unlock(&pool->lock);
    rc = conninfo ? choose_target(pool, item, &conninfo, err, sizeof(err)) : WEIR_ENOMEM;
    if (rc == 0)
        rc = pool->d->connect_start(conninfo, &item->dconn, err, sizeof(err));
    free(conninfo);
    if (rc != 0) {
        item->dconn = NULL;
        item_op_done(item, 0, err[0] ? err : "could not start connection", connect_refused(pool, NULL, err));
        return;
    }
    item_drive(item);
}

static void item_start_command(weir_pool *pool, weir_pooled *item)
{
    int rc;

    if (item->watch_ev)
        event_del(item->watch_ev);
    item->op_start_us = weir__now_us();
    rc = item->state == ITEM_PINGING ? pool->d->ping_start(item->dconn) : pool->d->reset_start(item->dconn);
    if (rc != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", pool->d->error_message(item->dconn));
        item_op_done(item, 0, why[0] ? why : "could not start command", 0);
        return;
    }
    item_drive(item);
}

/* The server spoke on an idle connection: a notice, or (usually) goodbye. */
void pool_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    weir_pooled *item = arg;
    weir_pool *pool = item->pool;
    int destroy = 0;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&pool->lock);
    if (item->state == ITEM_IDLE) {
        if (pool->d->idle_readable(item->dconn) == WEIR_POLL_OK) {
            event_add(item->watch_ev, NULL);
        } else {
            plog(pool, WEIR_LOG_INFO, "pool %s: idle connection closed by server: %s", pool->name,
                 pool->d->error_message(item->dconn));
            item_retire(item, "closed by server");
            destroy = 1;
        }
    }
    pthread_mutex_unlock(&pool->lock);
    if (destroy) {
        item_destroy(item);
        pool_kick(pool);
    }
}

static weir_pooled *item_new(weir_pool *pool, enum item_state state)
{
    weir_pooled *item = calloc(1, sizeof(*item));

    if (item == NULL)
        return NULL;
    item->pool = pool;
    item->state = state;
    item->generation = pool->generation;
    pool->count[state]++;
    pool->open++;
    weir_list_init(&item->idle_link);
    weir_list_push_back(&pool->all, &item->all_link);
    return item;
}

/* Overflow is open at once, or (like PgBouncer's reserve pool) only once the
 * oldest waiter has waited overflow_delay_ms; then a kick is due at that time. */
static int overflow_allowed(weir_pool *pool, int64_t now)
{
    weir_pool_waiter *oldest;
    int64_t due;

    if (pool->cfg.overflow_delay_ms <= 0)
        return pool->cfg.max_overflow;
    if (weir_list_empty(&pool->waiters))
        return 0;
    oldest = weir_container_of(pool->waiters.next, weir_pool_waiter, link);
    due = oldest->enqueued_us + (int64_t)pool->cfg.overflow_delay_ms * 1000;
    if (now >= due)
        return pool->cfg.max_overflow;
    if (pool->overflow_due_us == 0 || due < pool->overflow_due_us)
        pool->overflow_due_us = due;
    return 0;
}

/* Cap want by the groups' free slots; a full group with our waiters asks
 * the other members for an idle slot. */
static int groups_limit(weir_pool *pool, int want)
{
    for (int i = 0; i < WEIR_POOL_MAX_GROUPS && want > 0; i++) {
        weir_pool_group *g = pool->cfg.groups[i];
        int room;
        if (g == NULL)
            continue;
        room = group_room(g);
        if (room == 0 && pool->nwaiters > 0)
            group_request_evict(g, pool);
        if (want > room)
            want = room;
    }
    return want;
}

/* Take a slot in every group, or none. */
static int groups_reserve(weir_pool *pool)
{
    int i;

    for (i = 0; i < WEIR_POOL_MAX_GROUPS; i++)
        if (pool->cfg.groups[i] && !group_reserve(pool->cfg.groups[i]))
            break;
    if (i == WEIR_POOL_MAX_GROUPS)
        return 1;
    while (i-- > 0)
        if (pool->cfg.groups[i])
            group_release(pool->cfg.groups[i]);
    return 0;
}

/* How many new connections should start now? Under lock. */
static int connects_wanted(weir_pool *pool, int64_t now)
{
    int total = pool_total(pool);
    int coming = pool->count[ITEM_CONNECTING] + pool->count[ITEM_PINGING] + pool->count[ITEM_RESETTING];
    int want = pool->cfg.min_size - total;
    int room = pool->cfg.max_size + overflow_allowed(pool, now) - total;

    if (pool->closed || pool->draining || now < pool->next_connect_us)
        return 0;
    if (!pool->paused && pool->nwaiters - coming > want)
        want = pool->nwaiters - coming;
    /* After a failure, probe with one connection before opening many. */
    if (pool->backoff_ms > pool->cfg.retry_min_ms && want > 1)
        want = pool->count[ITEM_CONNECTING] ? 0 : 1;
    if (want > room)
        want = room;
    return groups_limit(pool, want);
}

/* Idle connections to close now (retired, idle too long beyond min_size). */
static void collect_idle_to_close(weir_pool *pool, int64_t now, struct weir_link *grave)
{
    struct weir_link *l, *next;

    /* A group member needs a slot: give up our oldest idle connection. */
    if (atomic_exchange(&pool->evict_wanted, 0) && pool->nwaiters == 0 && !weir_list_empty(&pool->idle)) {
        weir_pooled *oldest = weir_container_of(pool->idle.prev, weir_pooled, idle_link);
        item_retire(oldest, "evicted for another pool of its group");
        weir_list_push_back(grave, &oldest->idle_link);
    }

    for (l = pool->idle.next; l != &pool->idle; l = next) {
        weir_pooled *item = weir_container_of(l, weir_pooled, idle_link);
        int idle_expired = pool->cfg.idle_timeout_ms > 0 && pool_total(pool) > pool->cfg.min_size &&
                           now - item->idle_since_us >= (int64_t)pool->cfg.idle_timeout_ms * 1000;

        next = l->next;
        if (item_retired(pool, item, now) || idle_expired) {
            if (idle_expired)
                pool->st.idle_expired++;
            else if (item->expires_us != 0 && now >= item->expires_us)
                pool->st.recycled++;
            item_retire(item, idle_expired ? "idle timeout" : retire_reason(pool, item, now, "retired"));
            weir_list_push_back(grave, &item->idle_link);
        }
    }
}

/* Serve waiters from idle connections (after resume, or when a ping is due). */
static void serve_waiters_from_idle(weir_pool *pool, int64_t now, struct weir_link *ops)
{
    while (!pool->paused && !weir_list_empty(&pool->waiters) && !weir_list_empty(&pool->idle)) {
        weir_pooled *item = pool_pick_idle(pool);
        weir_pool_waiter *w = weir_container_of(pool->waiters.next, weir_pool_waiter, link);

        if (item->watch_ev)
            event_del(item->watch_ev); /* we are the pool thread: cannot block */
        if (pool_needs_ping(pool, item, now)) {
            item_set_state(item, ITEM_PINGING);
            weir_list_push_back(ops, &item->idle_link);
            continue;
        }
        item_set_state(item, ITEM_OUT);
        waiter_finish(pool, w, 0, item);
    }
}

/*
 * The pool thread's main step: close what must close, start pings and resets
 * queued by other threads, open connections the waiters and min_size need.
 * Dialect calls happen outside the lock.
 */
static void pool_work(weir_pool *pool)
{
    struct weir_link grave, ops, *l;
    int64_t now = weir__now_us();
    int nconnect, i;

    weir_list_init(&grave);
    weir_list_init(&ops);
    pthread_mutex_lock(&pool->lock);
    collect_idle_to_close(pool, now, &grave);
    serve_waiters_from_idle(pool, now, &ops);
    while (!weir_list_empty(&pool->ops)) {
        l = pool->ops.next;
        weir_list_remove(l);
        weir_list_push_back(&ops, l);
    }
    nconnect = connects_wanted(pool, now);
    for (i = 0; i < nconnect; i++) {
        weir_pooled *item;
        if (!groups_reserve(pool))
            break;
        item = item_new(pool, ITEM_CONNECTING);
        if (item == NULL) {
            for (int g = 0; g < WEIR_POOL_MAX_GROUPS; g++)
                if (pool->cfg.groups[g])
                    group_release(pool->cfg.groups[g]);
            break;
        }
        item->reserved = 1;
        weir_list_push_back(&ops, &item->idle_link);
    }
    if (pool->next_connect_us > now && connects_wanted(pool, pool->next_connect_us) > 0) {
        struct timeval tv = ms_to_tv((pool->next_connect_us - now) / 1000 + 1);
        event_add(pool->kick_ev, &tv);
    } else if (pool->overflow_due_us > now) {
        struct timeval tv = ms_to_tv((pool->overflow_due_us - now) / 1000 + 1);
        event_add(pool->kick_ev, &tv);
    }
    pool->overflow_due_us = 0;
    pthread_mutex_unlock(&pool->lock);

    while (!weir_list_empty(&grave)) {
        l = grave.next;
        weir_list_remove(l);
        item_destroy(weir_container_of(l, weir_pooled, idle_link));
    }
    while (!weir_list_empty(&ops)) {
        weir_pooled *item;
        l = ops.next;
        weir_list_remove(l);
        item = weir_container_of(l, weir_pooled, idle_link);
        if (item->state == ITEM_CONNECTING)
            item_start_connect(pool, item);
        else
            item_start_command(pool, item);
    }
}

static void pool_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pool_work(arg);
}

static void pool_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pool_work(arg);
}

/* Ask the pool thread to run pool_work soon. Safe from any thread. */
static void pool_kick(weir_pool *pool)
{
    event_active(pool->kick_ev, EV_TIMEOUT, 1);
}

/* ---- shared with the fronts ---- */

int pool_needs_ping(const weir_pool *pool, const weir_pooled *item, int64_t now)
{
    return pool->cfg.pre_ping_ms >= 0 && now - item->idle_since_us >= (int64_t)pool->cfg.pre_ping_ms * 1000;
}

weir_pooled *pool_pick_idle(weir_pool *pool)
{
    struct weir_link *l = pool->cfg.lifo ? pool->idle.next : pool->idle.prev;
    return weir_container_of(l, weir_pooled, idle_link);
}

/* Among the few live idle connections next in line, the first with this
 * affinity: the caller avoids moving a connection (e.g. between event
 * loops) at the price of a slightly different order. */
#define AFFINITY_SCAN 8

/*
 * Under lock, the pool neither closed nor draining (the caller checked):
 * try to take an idle connection for the caller right away, preferring one
 * whose affinity is affinity when use_affinity is set. Returns the item
 * (now OUT), or NULL. Items due a ping are queued for the pool thread
 * (*kick set). The caller must event_del the item's idle watch after
 * unlocking.
 *
 * Retired items (invalidated, an old generation, expired) are passed over
 * where they lie, for the pool thread to close (it owns their events). The
 * scan never changes the list it walks: it once moved each retired item to
 * the other end and looked again, which never ended when every idle item
 * was retired, and which GCC 12 -O2 compiled into a loop that re-read one
 * stale head forever as soon as the first item was retired (the daemon's
 * loop froze at the first idle server lost in a failover).
 */
static inline __attribute__((always_inline)) weir_pooled *take_idle(weir_pool *pool, int *kick, int use_affinity,
                                                                   uintptr_t affinity, int64_t now)
{
    int lifo = pool->cfg.lifo, live = 0;
    weir_pooled *item = NULL, *first = NULL;

    if (pool->paused) {
        if (!weir_list_empty(&pool->idle))
            *kick = 1;
        return NULL;
    }
    for (struct weir_link *l = lifo ? pool->idle.next : pool->idle.prev; l != &pool->idle;
         l = lifo ? l->next : l->prev) {
        weir_pooled *it = weir_container_of(l, weir_pooled, idle_link);

        if (item_stale(pool, it, now)) { /* the caller saw the pool open */
            *kick = 1;
            continue;
        }
        if (first == NULL)
            first = it;
        if (!use_affinity || it->affinity == affinity) {
            item = it;
            break;
        }
        if (++live >= AFFINITY_SCAN)
            break;
    }
    if (item == NULL && (item = first) == NULL)
        return NULL;
    if (pool_needs_ping(pool, item, now)) {
        item_set_state(item, ITEM_PINGING);
        weir_list_push_back(&pool->ops, &item->idle_link);
        *kick = 1;
        return NULL;
    }
    item_set_state(item, ITEM_OUT);
    item->out_since_us = now;
    pool->st.checkouts++;
    pool->st.wait_hist[0]++; /* hist_add(wait_hist, 0): it did not wait */
    return item;
}

weir_pooled *pool_take_idle(weir_pool *pool, int *kick)
{
    return take_idle(pool, kick, 0, 0, weir__now_us());
}

/*
 * The lock of the two calls a busy caller makes per use (check-out and
 * check-in). While the process has a single thread nothing can contend for
 * it, and glibc says so (__libc_single_threaded, which never turns back on
 * once a second thread was made): the daemon with one worker then saves the
 * two lock/unlock pairs of every transaction, about 100 instructions. A
 * section taken without the lock never creates a thread, so it ends before
 * any other thread can exist; the caller keeps whether it locked so that a
 * thread made later cannot unbalance the pair.
 */
static inline int hot_lock(weir_pool *pool)
{
#ifdef WEIR_HAVE_SINGLE_THREADED
    if (__libc_single_threaded)
        return 0;
#endif
    pthread_mutex_lock(&pool->lock);
    return 1;
}

static inline void hot_unlock(weir_pool *pool, int locked)
{
    if (locked)
        pthread_mutex_unlock(&pool->lock);
}

/* ---- public: non-blocking checkout ---- */

/* Here rather than with the other fronts (pool_checkout.c): it is the hot
 * path of a busy caller, and here the idle scan is inlined into it. */
int weir_pool_try_checkout_at(weir_pool *pool, int use_affinity, uintptr_t affinity, int64_t now_us,
                              weir_pooled **out)
{
    weir_pooled *item = NULL;
    int kick = 0, rc = WEIR_EAGAIN;
    int locked = hot_lock(pool);

    if (pool->closed || pool->draining)
        rc = WEIR_ECLOSED;
    else if (weir_list_empty(&pool->waiters) && (item = take_idle(pool, &kick, use_affinity, affinity, now_us)) != NULL)
        rc = 0;
    hot_unlock(pool, locked);
    /* Stop watching it outside the lock: event_del waits for a running
     * watch callback, which takes the lock itself. */
    if (item != NULL && item->watch_ev != NULL)
        event_del(item->watch_ev);
    if (kick)
        pool_kick(pool);
    *out = item;
    return rc;
}

int weir_pool_try_checkout(weir_pool *pool, weir_pooled **out)
{
    return weir_pool_try_checkout_at(pool, 0, 0, weir__now_us(), out);
}

int weir_pool_try_checkout_affine(weir_pool *pool, uintptr_t affinity, weir_pooled **out)
{
    return weir_pool_try_checkout_at(pool, 1, affinity, weir__now_us(), out);
}

void pool_request_work(weir_pool *pool)
{
    pool_kick(pool);
}

void pool_ref(weir_pool *pool)
{
    pool->refs++;
}

/* Under lock. Returns 1 when the caller must destroy the pool after unlocking. */
int pool_unref(weir_pool *pool)
{
    return --pool->refs == 0;
}

void pool_destroy(weir_pool *pool)
{
    while (pool->spare) {
        weir_pool_waiter *w = pool->spare;
        pool->spare = w->spare_next;
        free(w); /* never pending: its event is embedded, its base may be gone */
    }
    pthread_mutex_destroy(&pool->lock);
    free(pool->conninfo);
    free(pool->name);
    free(pool);
}

/* ---- public: life cycle ---- */

void weir_pool_config_init(weir_pool_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->min_size = 0;
    cfg->max_size = 5;
    cfg->max_overflow = 10;
    cfg->max_waiters = -1;
    cfg->timeout_ms = 30000;
    cfg->connect_timeout_ms = 15000;
    cfg->idle_timeout_ms = 600000;
    cfg->pre_ping_ms = -1;
    cfg->reset_on_return = 1;
    cfg->lifo = 1;
    cfg->watch_idle = 1;
    cfg->retry_min_ms = 100;
    cfg->retry_max_ms = 15000;
    cfg->fail_waiters_on_connect_error = WEIR_WAITERS_FAIL;
}

static int config_valid(const weir_pool_config *cfg)
{
    return cfg->min_size >= 0 && cfg->max_size >= 1 && cfg->max_overflow >= 0 && cfg->overflow_delay_ms >= 0 &&
           (cfg->keep_overflow == 0 || cfg->keep_overflow == 1) &&
           cfg->min_size <= cfg->max_size + cfg->max_overflow && cfg->max_waiters >= -1 &&
           cfg->timeout_ms >= -1 && cfg->connect_timeout_ms >= 0 && cfg->recycle_ms >= 0 &&
           cfg->recycle_jitter_ms >= 0 && cfg->idle_timeout_ms >= 0 && cfg->pre_ping_ms >= -1 &&
           cfg->retry_min_ms >= 1 && cfg->retry_max_ms >= cfg->retry_min_ms &&
           cfg->fail_waiters_on_connect_error >= WEIR_WAITERS_KEEP &&
           cfg->fail_waiters_on_connect_error <= WEIR_WAITERS_FAIL_REFUSED;
}

/* The maintenance period follows the shortest timer that needs it. */
static int tick_ms(const weir_pool_config *cfg)
{
    int t = 1000;
    if (cfg->idle_timeout_ms > 0 && cfg->idle_timeout_ms / 4 < t)
        t = cfg->idle_timeout_ms / 4;
    if (cfg->recycle_ms > 0 && cfg->recycle_ms / 4 < t)
        t = cfg->recycle_ms / 4;
    return t < 10 ? 10 : t;
}

static void pool_arm_tick(weir_pool *pool)
{
    struct timeval tv = ms_to_tv(tick_ms(&pool->cfg));
    event_del(pool->tick_ev);
    event_add(pool->tick_ev, &tv);
}

int weir_pool_new(const weir_pool_config *cfg, weir_pool **out)
{
    weir_pool *pool;

    *out = NULL;
    if (cfg == NULL || cfg->dialect == NULL || cfg->conninfo == NULL || cfg->base == NULL || !config_valid(cfg))
        return WEIR_EINVAL;
    pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return WEIR_ENOMEM;
    pool->cfg = *cfg;
    pool->d = cfg->dialect;
    pool->base = cfg->base;
    pool->conninfo = strdup(cfg->conninfo);
    pool->name = strdup(cfg->name ? cfg->name : "pool");
    pool->kick_ev = evtimer_new(pool->base, pool_kick_cb, pool);
    pool->tick_ev = event_new(pool->base, -1, EV_PERSIST, pool_tick_cb, pool);
    if (pool->conninfo == NULL || pool->name == NULL || pool->kick_ev == NULL || pool->tick_ev == NULL ||
        pthread_mutex_init(&pool->lock, NULL) != 0) {
        if (pool->kick_ev)
            event_free(pool->kick_ev);
        if (pool->tick_ev)
            event_free(pool->tick_ev);
        free(pool->conninfo);
        free(pool->name);
        free(pool);
        return WEIR_ENOMEM;
    }
    pool->cfg.conninfo = pool->conninfo;
    pool->cfg.name = pool->name;
    pool->refs = 1;
    pool->generation = 1;
    pool->backoff_ms = cfg->retry_min_ms;
    pool->rng = (uint64_t)weir__now_us() ^ (uint64_t)(uintptr_t)pool ^ 0x9e3779b97f4a7c15ULL;
    weir_list_init(&pool->all);
    weir_list_init(&pool->idle);
    weir_list_init(&pool->waiters);
    weir_list_init(&pool->ops);
    for (int i = 0; i < WEIR_POOL_MAX_GROUPS; i++) {
        pool->membership[i].pool = pool;
        if (cfg->groups[i])
            group_join(cfg->groups[i], &pool->membership[i]);
    }
    pool_arm_tick(pool);
    pool_kick(pool);
    *out = pool;
    return 0;
}

void weir_pool_free(weir_pool *pool)
{
    struct weir_link grave, *l, *next;
    int destroy;

    if (pool == NULL)
        return;
    weir_list_init(&grave);
    pthread_mutex_lock(&pool->lock);
    pool->closed = 1;
    fail_all_waiters(pool, WEIR_ECLOSED);
    for (l = pool->all.next; l != &pool->all; l = next) {
        weir_pooled *item = weir_container_of(l, weir_pooled, all_link);
        next = l->next;
        if (item->state == ITEM_OUT) {
            pool_ref(pool); /* dropped when it is checked in, and closed */
            continue;
        }
        if (item->state == ITEM_IDLE || item->state == ITEM_PINGING || item->state == ITEM_RESETTING)
            weir_list_remove(&item->idle_link);
        item_retire(item, "pool closed");
        weir_list_push_back(&grave, &item->idle_link);
    }
    for (int i = 0; i < WEIR_POOL_MAX_GROUPS; i++)
        if (pool->cfg.groups[i])
            group_leave(pool->cfg.groups[i], &pool->membership[i]);
    event_free(pool->kick_ev);
    event_free(pool->tick_ev);
    pool->kick_ev = pool->tick_ev = NULL;
    destroy = pool_unref(pool);
    pthread_mutex_unlock(&pool->lock);
    while (!weir_list_empty(&grave)) {
        l = grave.next;
        weir_list_remove(l);
        item_destroy(weir_container_of(l, weir_pooled, idle_link));
    }
    if (destroy)
        pool_destroy(pool);
}

/* ---- public: control ---- */

void weir_pool_invalidate(weir_pool *pool, weir_pooled *conn)
{
    pthread_mutex_lock(&pool->lock);
    conn->invalid = 1;
    pool->st.invalidated++;
    if (conn->state == ITEM_IDLE && !pool->closed)
        pool_kick(pool); /* the pool thread owns its events: it closes it */
    pthread_mutex_unlock(&pool->lock);
}

int weir_pool_set_conninfo(weir_pool *pool, const char *conninfo)
{
    char *copy = conninfo ? strdup(conninfo) : NULL;

    if (copy == NULL)
        return conninfo ? WEIR_ENOMEM : WEIR_EINVAL;
    pthread_mutex_lock(&pool->lock);
    free(pool->conninfo);
    pool->conninfo = copy;
    pool->cfg.conninfo = copy;
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

uint64_t weir_pool_invalidate_all(weir_pool *pool)
{
    uint64_t gen;

    pthread_mutex_lock(&pool->lock);
    gen = ++pool->generation;
    pool->st.invalidated++;
    /* The target changed: what failed before says nothing about it. */
    pool->backoff_ms = pool->cfg.retry_min_ms;
    pool->next_connect_us = 0;
    if (!pool->closed)
        pool_kick(pool);
    pthread_mutex_unlock(&pool->lock);
    return gen;
}

int weir_pool_invalidate_target(weir_pool *pool, uintptr_t tag)
{
    int n = 0, idle = 0;

    pthread_mutex_lock(&pool->lock);
    for (struct weir_link *l = pool->all.next; l != &pool->all; l = l->next) {
        weir_pooled *item = weir_container_of(l, weir_pooled, all_link);
        if (!item->targeted || item->target != tag || item->invalid)
            continue;
        item->invalid = 1;
        pool->st.invalidated++;
        idle |= item->state == ITEM_IDLE;
        n++;
    }
    if (idle && !pool->closed)
        pool_kick(pool);
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void weir_pool_retry_now(weir_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->backoff_ms = pool->cfg.retry_min_ms;
    pool->next_connect_us = 0;
    if (!pool->closed)
        pool_kick(pool);
    pthread_mutex_unlock(&pool->lock);
}

void weir_pool_pause(weir_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->paused = 1;
    pthread_mutex_unlock(&pool->lock);
}

void weir_pool_resume(weir_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->paused = 0;
    pool->draining = 0;
    if (!pool->closed)
        pool_kick(pool);
    pthread_mutex_unlock(&pool->lock);
}

void weir_pool_drain(weir_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->draining = 1;
    fail_all_waiters(pool, WEIR_ECLOSED);
    if (!pool->closed)
        pool_kick(pool);
    pthread_mutex_unlock(&pool->lock);
}

int weir_pool_reconfigure(weir_pool *pool, const weir_pool_config *cfg)
{
    weir_pool_config next;

    pthread_mutex_lock(&pool->lock);
    next = pool->cfg;
    next.min_size = cfg->min_size;
    next.max_size = cfg->max_size;
    next.max_overflow = cfg->max_overflow;
    next.keep_overflow = cfg->keep_overflow;
    next.overflow_delay_ms = cfg->overflow_delay_ms;
    next.max_waiters = cfg->max_waiters;
    next.timeout_ms = cfg->timeout_ms;
    next.connect_timeout_ms = cfg->connect_timeout_ms;
    next.recycle_ms = cfg->recycle_ms;
    next.recycle_jitter_ms = cfg->recycle_jitter_ms;
    next.idle_timeout_ms = cfg->idle_timeout_ms;
    next.pre_ping_ms = cfg->pre_ping_ms;
    next.reset_on_return = cfg->reset_on_return;
    next.lifo = cfg->lifo;
    next.retry_min_ms = cfg->retry_min_ms;
    next.retry_max_ms = cfg->retry_max_ms;
    next.fail_waiters_on_connect_error = cfg->fail_waiters_on_connect_error;
    if (!config_valid(&next)) {
        pthread_mutex_unlock(&pool->lock);
        return WEIR_EINVAL;
    }
    pool->cfg = next;
    if (!pool->closed) {
        pool_arm_tick(pool);
        pool_kick(pool);
    }
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

void weir_pool_get_stats(weir_pool *pool, weir_pool_stats *out)
{
    pthread_mutex_lock(&pool->lock);
    *out = pool->st;
    out->idle = pool->count[ITEM_IDLE];
    out->in_use = pool->count[ITEM_OUT];
    out->connecting = pool->count[ITEM_CONNECTING];
    out->busy = pool->count[ITEM_PINGING] + pool->count[ITEM_RESETTING];
    out->total = pool_total(pool);
    out->waiters = pool->nwaiters;
    out->paused = pool->paused;
    out->draining = pool->draining;
    out->generation = pool->generation;
    pthread_mutex_unlock(&pool->lock);
}

void weir_pool_last_error(weir_pool *pool, char *buf, size_t len)
{
    if (len == 0)
        return;
    pthread_mutex_lock(&pool->lock);
    snprintf(buf, len, "%s", pool->last_error);
    pthread_mutex_unlock(&pool->lock);
}

/* ---- public: check-in ---- */

void weir_pool_checkin(weir_pool *pool, weir_pooled *item, int flags)
{
    weir_pool_checkin_at(pool, item, flags, weir__now_us());
}

void weir_pool_checkin_at(weir_pool *pool, weir_pooled *item, int flags, int64_t now)
{
    int destroy = 0, kick = 0, destroy_pool = 0, broken, locked;
    uint64_t held;

    if (item == NULL)
        return;
    /* The item is still the caller's: ask the dialect before locking, and
     * not at all when the caller has just seen it idle and sound. */
    broken = (flags & WEIR_CHECKIN_BROKEN) ||
             (!(flags & WEIR_CHECKIN_HEALTHY) && pool->d->is_broken(item->dconn));
    locked = hot_lock(pool);
    held = elapsed_us(now, item->out_since_us);
    pool->st.checkins++;
    pool->st.hold_us_total += held;
    hist_add(pool->st.hold_hist, held);
    if (broken) {
        if (!(flags & WEIR_CHECKIN_BROKEN) && item->expires_us != 0 && now >= item->expires_us)
            pool->st.recycled++; /* as when only its lifetime ended */
        item_retire(item, (flags & WEIR_CHECKIN_BROKEN) ? "broken" : "broken at check-in");
        destroy = 1;
        kick = !pool->closed;
    } else if (item_retire_if_due(pool, item, now, "retired at check-in")) {
        destroy = 1;
        kick = !pool->closed;
    } else if (pool->cfg.reset_on_return && !(flags & WEIR_CHECKIN_CLEAN)) {
        item_set_state(item, ITEM_RESETTING);
        weir_list_push_back(&pool->ops, &item->idle_link);
        kick = 1;
    } else {
        destroy = item_place(pool, item, now); /* retirement checked just above */
        kick = destroy && !pool->closed;
    }
    if (pool->closed)
        destroy_pool = pool_unref(pool); /* the item's reference to a closed pool */
    hot_unlock(pool, locked);
    if (destroy)
        item_destroy(item);
    if (kick)
        pool_kick(pool);
    if (destroy_pool)
        pool_destroy(pool);
}

/* ---- public: accessors ---- */

void *weir_pooled_dconn(const weir_pooled *conn)
{
    return conn->dconn;
}

void *weir_pooled_driver_handle(const weir_pooled *conn)
{
    return conn->pool->d->driver_handle(conn->dconn);
}

int64_t weir_pooled_age_us(const weir_pooled *conn)
{
    return weir__now_us() - conn->created_us;
}

void weir_pooled_set_affinity(weir_pooled *conn, uintptr_t tag)
{
    conn->affinity = tag; /* the holder's field until check-in, read under the lock after */
}

void weir_pooled_set_data(weir_pooled *conn, void *data, void (*free_fn)(void *data))
{
    conn->data = data;
    conn->data_free = free_fn;
}

void *weir_pooled_get_data(const weir_pooled *conn)
{
    return conn->data;
}

const char *weir_pooled_close_reason(const weir_pooled *conn)
{
    return conn->close_reason;
}

uint64_t weir_pooled_generation(const weir_pooled *conn)
{
    return conn->generation;
}

uintptr_t weir_pooled_target(const weir_pooled *conn)
{
    return conn->target;
}
