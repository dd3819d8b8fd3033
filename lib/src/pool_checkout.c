/*
 * The Pool's two checkout fronts over one core (pool.c): a blocking checkout
 * for threads, waiting on a condition variable with a monotonic deadline, and
 * an async checkout for libevent users, completed by activating an event on
 * the caller's own base. Both join the same FIFO of waiters, so a thread and
 * an event loop asking at the same time are served in arrival order. (The
 * non-blocking try-checkout lives in pool.c, beside the idle scan it inlines.)
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "pool_internal.h"

/* Stop watching an idle connection we just took. Outside the lock: event_del
 * waits for a running watch callback, which takes the lock itself. */
static void took_item(weir_pool *pool, weir_pooled *item, int kick)
{
    if (item != NULL && item->watch_ev != NULL)
        event_del(item->watch_ev);
    if (kick)
        pool_request_work(pool);
}

static int admission_error(weir_pool *pool)
{
    if (pool->closed || pool->draining)
        return WEIR_ECLOSED;
    if (pool->cfg.max_waiters >= 0 && pool->nwaiters >= pool->cfg.max_waiters) {
        pool->st.rejected_waiters++;
        return WEIR_ETOOMANY;
    }
    return 0;
}

static struct timespec deadline_after(int timeout_ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Under lock: sleep until the waiter is served or the deadline passes. */
static void wait_for_turn(weir_pool *pool, weir_pool_waiter *w, int timeout_ms)
{
    struct timespec deadline = deadline_after(timeout_ms < 0 ? 0 : timeout_ms);

    while (!w->done) {
        int rc = timeout_ms < 0 ? pthread_cond_wait(w->cond, &pool->lock)
                                : pthread_cond_timedwait(w->cond, &pool->lock, &deadline);
        if (rc == ETIMEDOUT && !w->done)
            pool_waiter_expire(pool, w);
    }
}

static int cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc;

    if (pthread_condattr_init(&attr) != 0)
        return -1;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

int weir_pool_checkout(weir_pool *pool, int timeout_ms, weir_pooled **out)
{
    weir_pool_waiter w = {0};
    pthread_cond_t cond;
    weir_pooled *item = NULL;
    int kick = 0, rc, destroy;

    *out = NULL;
    if (cond_init_monotonic(&cond) != 0)
        return WEIR_ESYS;
    pthread_mutex_lock(&pool->lock);
    if (timeout_ms == -2)
        timeout_ms = pool->cfg.timeout_ms;
    if (!pool->closed && !pool->draining && weir_list_empty(&pool->waiters))
        item = pool_take_idle(pool, &kick);
    if (item != NULL || (rc = admission_error(pool)) != 0) {
        pthread_mutex_unlock(&pool->lock);
        pthread_cond_destroy(&cond);
        took_item(pool, item, kick);
        *out = item;
        return item ? 0 : rc;
    }
    w.cond = &cond;
    pool_waiter_enqueue(pool, &w);
    pool_request_work(pool);
    wait_for_turn(pool, &w, timeout_ms);
    destroy = pool_unref(pool);
    pthread_mutex_unlock(&pool->lock);
    pthread_cond_destroy(&cond);
    if (destroy)
        pool_destroy(pool);
    *out = w.conn;
    return w.status;
}

static void async_waiter_cb(evutil_socket_t fd, short what, void *arg);

/* Under lock: keep a finished async waiter for the next one, unless the
 * pool is going away or has enough. Returns 1 when kept. */
static int waiter_keep(weir_pool *pool, weir_pool_waiter *w, int destroy)
{
    if (destroy || pool->closed || pool->nspare >= POOL_SPARE_WAITERS)
        return 0;
    w->spare_next = pool->spare;
    pool->spare = w;
    pool->nspare++;
    return 1;
}

/* Under lock: a spare waiter set up for base, or NULL. */
static weir_pool_waiter *waiter_reuse(weir_pool *pool, struct event_base *base)
{
    weir_pool_waiter *w = pool->spare;

    if (w == NULL)
        return NULL;
    pool->spare = w->spare_next;
    pool->nspare--;
    event_assign(w->ev, base, -1, 0, async_waiter_cb, w);
    return w;
}

/* Runs on the caller's base: delivery, failure, or the waiter's deadline. */
static void async_waiter_cb(evutil_socket_t fd, short what, void *arg)
{
    weir_pool_waiter *w = arg;
    weir_pool *pool = w->pool;
    weir_pool_cb cb = w->cb;
    void *cb_arg = w->arg;
    weir_pooled *conn;
    int status, destroy;

    (void)fd;
    (void)what;
    int kept;

    pthread_mutex_lock(&pool->lock);
    if (!w->done)
        pool_waiter_expire(pool, w);
    status = w->status;
    conn = w->conn;
    destroy = pool_unref(pool);
    /* A timeout and a hand-off can both have activated the event; served
     * and off the list now, nothing activates it again (that happens under
     * this lock), so drop any second activation before keeping it. */
    event_del(w->ev);
    kept = waiter_keep(pool, w, destroy);
    pthread_mutex_unlock(&pool->lock);
    if (!kept)
        free(w);
    if (destroy)
        pool_destroy(pool);
    cb(status, conn, cb_arg);
}

static weir_pool_waiter *waiter_alloc(struct event_base *base)
{
    weir_pool_waiter *w = calloc(1, sizeof(*w));

    if (w != NULL) {
        w->ev = &w->ev_storage;
        event_assign(w->ev, base, -1, 0, async_waiter_cb, w);
    }
    return w;
}

int weir_pool_checkout_async(weir_pool *pool, struct event_base *base, int timeout_ms, weir_pool_cb cb,
                             void *arg, weir_pool_waiter **waiter)
{
    weir_pool_waiter *w;
    weir_pooled *item = NULL;
    int kick = 0, rc;

    if (waiter)
        *waiter = NULL;
    if (base == NULL || cb == NULL)
        return WEIR_EINVAL;
    pthread_mutex_lock(&pool->lock);
    if ((w = waiter_reuse(pool, base)) == NULL) {
        pthread_mutex_unlock(&pool->lock); /* allocate outside the lock */
        if ((w = waiter_alloc(base)) == NULL)
            return WEIR_ENOMEM;
        pthread_mutex_lock(&pool->lock);
    }
    /* Fresh or reused: everything but the (assigned) event starts over. */
    w->pool = pool;
    w->cb = cb;
    w->arg = arg;
    w->done = w->status = 0;
    w->conn = NULL;
    w->cond = NULL;
    w->spare_next = NULL;
    if (timeout_ms == -2)
        timeout_ms = pool->cfg.timeout_ms;
    if (!pool->closed && !pool->draining && weir_list_empty(&pool->waiters))
        item = pool_take_idle(pool, &kick);
    if (item == NULL && (rc = admission_error(pool)) != 0) {
        pthread_mutex_unlock(&pool->lock);
        free(w); /* never added */
        if (kick)
            pool_request_work(pool);
        return rc;
    }
    if (timeout_ms >= 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        event_add(w->ev, &tv);
    }
    pool_waiter_enqueue(pool, w);
    if (item != NULL) {
        /* Served at once; the callback still runs from the loop, not from here. */
        weir_list_remove(&w->link);
        pool->nwaiters--;
        w->done = 1;
        w->conn = item;
        event_active(w->ev, EV_TIMEOUT, 1);
    } else {
        kick = 1;
    }
    pthread_mutex_unlock(&pool->lock);
    took_item(pool, item, kick);
    if (waiter)
        *waiter = w;
    return 0;
}

void weir_pool_cancel(weir_pool *pool, weir_pool_waiter *w)
{
    weir_pooled *conn;
    int destroy;

    if (w == NULL)
        return;
    pthread_mutex_lock(&pool->lock);
    pool_waiter_withdraw(pool, w);
    conn = w->conn;
    pthread_mutex_unlock(&pool->lock);
    event_del(w->ev);
    free(w);
    if (conn != NULL)
        weir_pool_checkin(pool, conn, WEIR_CHECKIN_CLEAN);
    pthread_mutex_lock(&pool->lock);
    destroy = pool_unref(pool);
    pthread_mutex_unlock(&pool->lock);
    if (destroy)
        pool_destroy(pool);
}
