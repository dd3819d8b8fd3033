/*
 * Unit tests of the Pool with the fake Dialect: every sizing knob, the waiter
 * queue (timeouts, cap, FIFO hand-off across both fronts), lifetimes, idle
 * expiry, pre-ping, reset on return, LIFO/FIFO, invalidation, back-off,
 * pause/resume/drain, and 16 threads hammering checkout/check-in. The pool's
 * base runs on a background thread, as it does inside the Engine.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "fake_dialect.h"

struct fixture {
    struct fake_ctl ctl;
    char conninfo[64];
    struct event_base *base;
    pthread_t thread;
    weir_pool_config cfg;
    weir_pool *pool;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    evthread_use_pthreads();
    f->base = event_base_new();
    fake_pool_config(&f->cfg, &f->ctl, f->conninfo, sizeof(f->conninfo), f->base, "test");
    pthread_create(&f->thread, NULL, fake_loop_main, f->base);
    *state = f;
    return 0;
}

/* Free the pool on the loop's thread, as the API requires. */
static void free_pool_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    weir_pool_free(f->pool);
    f->pool = NULL;
    event_base_loopbreak(f->base);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    event_base_once(f->base, -1, EV_TIMEOUT, free_pool_cb, f, NULL);
    pthread_join(f->thread, NULL);
    event_base_free(f->base);
    assert_int_equal(atomic_load(&f->ctl.open), 0); /* nothing leaked */
    free(f);
    return 0;
}

static void start(struct fixture *f)
{
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
}

static weir_pool_stats stats(struct fixture *f)
{
    weir_pool_stats st;
    weir_pool_get_stats(f->pool, &st);
    return st;
}


static int conn_id(weir_pooled *p)
{
    return ((struct fake_conn *)weir_pooled_dconn(p))->id;
}

static void test_checkout_reuses_connection(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    int id = conn_id(a);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    assert_int_equal(conn_id(b), id);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN);
    assert_int_equal(atomic_load(&f->ctl.connects), 1);
    weir_pool_stats st = stats(f);
    assert_int_equal(st.checkouts, 2);
    assert_int_equal(st.checkins, 2);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.total, 1);
}

static void test_min_size_filled_in_background(void **state)
{
    struct fixture *f = *state;

    f->cfg.min_size = 3;
    start(f);
    WAIT_FOR(stats(f).idle == 3, 2000);
    assert_int_equal(atomic_load(&f->ctl.connects), 3);
}

static void test_max_size_and_overflow(void **state)
{
    struct fixture *f = *state;
    weir_pooled *c[3], *extra;

    f->cfg.max_size = 2;
    f->cfg.max_overflow = 1;
    start(f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(weir_pool_checkout(f->pool, -2, &c[i]), 0);
    assert_int_equal(weir_pool_checkout(f->pool, 50, &extra), WEIR_ETIMEDOUT);
    assert_null(extra);
    assert_int_equal(stats(f).total, 3);
    /* With nobody waiting, the overflow connection is closed on return. */
    weir_pool_checkin(f->pool, c[0], WEIR_CHECKIN_CLEAN);
    assert_int_equal(stats(f).total, 2);
    weir_pool_checkin(f->pool, c[1], WEIR_CHECKIN_CLEAN);
    weir_pool_checkin(f->pool, c[2], WEIR_CHECKIN_CLEAN);
    weir_pool_stats st = stats(f);
    assert_int_equal(st.total, 2);
    assert_int_equal(st.idle, 2);
}

static void test_overflow_after_delay(void **state)
{
    struct fixture *f = *state;
    weir_pooled *held, *reserve;

    f->cfg.max_size = 1;
    f->cfg.max_overflow = 1;
    f->cfg.overflow_delay_ms = 80;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &held), 0);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &reserve), 0);
    int64_t took = fake_now_ms() - t0;
    assert_true(took >= 75 && took < 1000);
    assert_int_equal(stats(f).total, 2);
    weir_pool_checkin(f->pool, reserve, WEIR_CHECKIN_CLEAN); /* overflow: closed */
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
    assert_int_equal(stats(f).total, 1);
}

/* keep_overflow (PgBouncer's reserve pool): the reserve connection, once
 * open, stays idle and the next checkout gets it without the delay. */
static void test_keep_overflow(void **state)
{
    struct fixture *f = *state;
    weir_pooled *held, *reserve;

    f->cfg.max_size = 1;
    f->cfg.max_overflow = 1;
    f->cfg.overflow_delay_ms = 80;
    f->cfg.keep_overflow = 1;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &held), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &reserve), 0);
    weir_pool_checkin(f->pool, reserve, WEIR_CHECKIN_CLEAN); /* kept */
    assert_int_equal(stats(f).total, 2);
    assert_int_equal(stats(f).idle, 1);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &reserve), 0);
    assert_true(fake_now_ms() - t0 < 60); /* no overflow delay: it was idle */
    weir_pool_checkin(f->pool, reserve, WEIR_CHECKIN_CLEAN);
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
    assert_int_equal(stats(f).total, 2);
    assert_int_equal(stats(f).idle, 2);
}

static int freed_data;

static void count_free(void *data)
{
    freed_data += *(int *)data;
}

static void test_attached_data_lives_with_connection(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;
    static int one = 1;

    start(f);
    freed_data = 0;
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_null(weir_pooled_get_data(a));
    weir_pooled_set_data(a, &one, count_free);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_ptr_equal(weir_pooled_get_data(a), &one);
    assert_int_equal(freed_data, 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_BROKEN);
    assert_int_equal(freed_data, 1);
}

static void test_checkout_timeout(void **state)
{
    struct fixture *f = *state;
    weir_pooled *held, *none;

    f->cfg.max_size = 1;
    f->cfg.max_overflow = 0;
    f->cfg.timeout_ms = 100;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &held), 0);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &none), WEIR_ETIMEDOUT);
    int64_t took = fake_now_ms() - t0;
    assert_true(took >= 95 && took < 1000);
    assert_int_equal(stats(f).timeouts, 1);
    assert_int_equal(stats(f).waiters, 0);
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
}

struct blocked {
    struct fixture *f;
    int timeout_ms;
    int rc;
    weir_pooled *conn;
    int64_t served_ms;
};

static void *blocked_checkout(void *arg)
{
    struct blocked *b = arg;
    b->rc = weir_pool_checkout(b->f->pool, b->timeout_ms, &b->conn);
    b->served_ms = fake_now_ms();
    return NULL;
}

static void test_waiter_cap(void **state)
{
    struct fixture *f = *state;
    weir_pooled *held, *none;
    struct blocked b = {f, 2000, -99, NULL, 0};
    pthread_t t;

    f->cfg.max_size = 1;
    f->cfg.max_overflow = 0;
    f->cfg.max_waiters = 1;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &held), 0);
    pthread_create(&t, NULL, blocked_checkout, &b);
    WAIT_FOR(stats(f).waiters == 1, 1000);
    assert_int_equal(weir_pool_checkout(f->pool, 1000, &none), WEIR_ETOOMANY);
    assert_int_equal(stats(f).rejected_waiters, 1);
    /* Check-in hands the connection straight to the waiting thread. */
    uint64_t handoffs = stats(f).handoffs;
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
    pthread_join(t, NULL);
    assert_int_equal(b.rc, 0);
    assert_ptr_equal(b.conn, held);
    assert_int_equal(stats(f).handoffs, handoffs + 1);
    weir_pool_checkin(f->pool, b.conn, WEIR_CHECKIN_CLEAN);
}

struct order {
    atomic_int n;
    int seq[8];
    weir_pooled *conn[8];
    int status[8];
};

struct order_arg {
    struct order *o;
    int who;
};

static void order_cb(int status, weir_pooled *conn, void *arg)
{
    struct order_arg *a = arg;
    int i = atomic_fetch_add(&a->o->n, 1);
    a->o->seq[i] = a->who;
    a->o->conn[a->who] = conn;
    a->o->status[a->who] = status;
}

static void test_fifo_handoff_order(void **state)
{
    struct fixture *f = *state;
    struct order o = {0};
    struct order_arg args[4];
    struct blocked b = {f, 3000, -99, NULL, 0};
    weir_pooled *held;
    pthread_t t;

    f->cfg.max_size = 1;
    f->cfg.max_overflow = 0;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &held), 0);
    /* Queue: async 0, async 1, a blocking thread (2), async 3. */
    for (int i = 0; i < 4; i++) {
        args[i] = (struct order_arg){&o, i};
        if (i == 2) {
            pthread_create(&t, NULL, blocked_checkout, &b);
            WAIT_FOR(stats(f).waiters == 3, 1000);
            continue;
        }
        assert_int_equal(weir_pool_checkout_async(f->pool, f->base, -1, order_cb, &args[i], NULL), 0);
        WAIT_FOR(stats(f).waiters == i + 1, 1000);
    }
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
    WAIT_FOR(atomic_load(&o.n) == 1, 1000);
    weir_pool_checkin(f->pool, o.conn[0], WEIR_CHECKIN_CLEAN);
    WAIT_FOR(atomic_load(&o.n) == 2, 1000);
    int64_t before = fake_now_ms();
    weir_pool_checkin(f->pool, o.conn[1], WEIR_CHECKIN_CLEAN);
    pthread_join(t, NULL);
    assert_int_equal(b.rc, 0);
    assert_true(b.served_ms >= before);
    assert_int_equal(atomic_load(&o.n), 2); /* 3 must not jump the thread */
    weir_pool_checkin(f->pool, b.conn, WEIR_CHECKIN_CLEAN);
    WAIT_FOR(atomic_load(&o.n) == 3, 1000);
    assert_int_equal(o.seq[0], 0);
    assert_int_equal(o.seq[1], 1);
    assert_int_equal(o.seq[2], 3);
    weir_pool_checkin(f->pool, o.conn[3], WEIR_CHECKIN_CLEAN);
    assert_int_equal(atomic_load(&f->ctl.connects), 1);
}

static void test_async_timeout_and_cancel(void **state)
{
    struct fixture *f = *state;
    struct order o = {0};
    struct order_arg a0 = {&o, 0}, a1 = {&o, 1};
    weir_pool_waiter *w;
    weir_pooled *held;

    f->cfg.max_size = 1;
    f->cfg.max_overflow = 0;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &held), 0);
    assert_int_equal(weir_pool_checkout_async(f->pool, f->base, 50, order_cb, &a0, NULL), 0);
    WAIT_FOR(atomic_load(&o.n) == 1, 1000);
    assert_int_equal(o.status[0], WEIR_ETIMEDOUT);
    assert_null(o.conn[0]);
    assert_int_equal(stats(f).timeouts, 1);
    /* Cancelled before it is served: its callback never runs. The loop thread
     * owns the base, but cancel is safe here because nothing was delivered. */
    assert_int_equal(weir_pool_checkout_async(f->pool, f->base, -1, order_cb, &a1, &w), 0);
    WAIT_FOR(stats(f).waiters == 1, 1000);
    weir_pool_cancel(f->pool, w);
    assert_int_equal(stats(f).waiters, 0);
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
    usleep(20000);
    assert_int_equal(atomic_load(&o.n), 1);
    assert_int_equal(stats(f).idle, 1);
}

static void test_recycle_with_jitter(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b;

    f->cfg.recycle_ms = 60;
    f->cfg.recycle_jitter_ms = 20;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    int first = conn_id(a);
    usleep(70000);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN); /* past its lifetime: closed */
    assert_int_equal(stats(f).recycled, 1);
    assert_int_equal(stats(f).total, 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    assert_int_not_equal(conn_id(b), first);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN);
    /* An idle connection is recycled in the background too. */
    WAIT_FOR(stats(f).total == 0, 1000);
    assert_int_equal(stats(f).recycled, 2);
}

/* What free_fn saw as the close reason (written on whichever thread closes). */
static char closed_reason[48];
static int closed_noted;

static void note_close_reason(void *data)
{
    snprintf(closed_reason, sizeof(closed_reason), "%s", weir_pooled_close_reason((const weir_pooled *)data));
    __atomic_store_n(&closed_noted, 1, __ATOMIC_RELEASE);
}

static int close_noted(void)
{
    return __atomic_load_n(&closed_noted, __ATOMIC_ACQUIRE);
}

/* The daemon logs PgBouncer's "server idle timeout" / "server lifetime over" from these. */
static void test_close_reason_reaches_free_fn(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    f->cfg.idle_timeout_ms = 40;
    f->cfg.recycle_ms = 400;
    start(f);
    closed_noted = 0;
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_string_equal(weir_pooled_close_reason(a), "");
    weir_pooled_set_data(a, a, note_close_reason);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    WAIT_FOR(close_noted(), 1000);
    assert_string_equal(closed_reason, "idle timeout");

    closed_noted = 0;
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pooled_set_data(a, a, note_close_reason);
    usleep(450000);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN); /* past its lifetime */
    WAIT_FOR(close_noted(), 1000);
    assert_string_equal(closed_reason, "lifetime over");

    closed_noted = 0;
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pooled_set_data(a, a, note_close_reason);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_BROKEN);
    WAIT_FOR(close_noted(), 1000);
    assert_string_equal(closed_reason, "broken");
}

static void test_close_reason_when_paused(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    start(f);
    closed_noted = 0;
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pooled_set_data(a, a, note_close_reason);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_pause(f->pool); /* the daemon's PAUSE: PgBouncer's "pause mode" */
    (void)weir_pool_invalidate_all(f->pool);
    WAIT_FOR(close_noted(), 1000);
    assert_string_equal(closed_reason, "retired while paused");
    weir_pool_resume(f->pool);
}

static void test_idle_timeout_keeps_min_size(void **state)
{
    struct fixture *f = *state;
    weir_pooled *c[3];

    f->cfg.min_size = 1;
    f->cfg.idle_timeout_ms = 40;
    start(f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(weir_pool_checkout(f->pool, -2, &c[i]), 0);
    for (int i = 0; i < 3; i++)
        weir_pool_checkin(f->pool, c[i], WEIR_CHECKIN_CLEAN);
    assert_int_equal(stats(f).idle, 3);
    WAIT_FOR(stats(f).total == 1, 1000);
    usleep(100000);
    assert_int_equal(stats(f).total, 1);
    assert_int_equal(stats(f).idle_expired, 2);
}

static void test_pre_ping_replaces_dead(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b;

    f->cfg.pre_ping_ms = 20;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    int first = conn_id(a);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    /* Freshly returned: no ping. */
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(atomic_load(&f->ctl.pings), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    usleep(30000);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(atomic_load(&f->ctl.pings), 1);
    assert_int_equal(conn_id(a), first);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    usleep(30000);
    atomic_store(&f->ctl.fail_pings, 1);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    assert_int_not_equal(conn_id(b), first);
    assert_int_equal(stats(f).ping_failures, 1);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN);
}

static void test_reset_on_return(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    int first = conn_id(a);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_DEFAULT);
    WAIT_FOR(stats(f).idle == 1, 1000);
    assert_int_equal(atomic_load(&f->ctl.resets), 1);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN); /* vouched clean: no reset */
    assert_int_equal(atomic_load(&f->ctl.resets), 1);
    /* A failed reset closes the connection; the next user gets a new one. */
    atomic_store(&f->ctl.fail_resets, 1);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_DEFAULT);
    WAIT_FOR(stats(f).total == 0, 1000);
    assert_int_equal(stats(f).reset_failures, 1);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_not_equal(conn_id(a), first);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_DEFAULT);
    WAIT_FOR(stats(f).idle == 1, 1000);
}

static void test_no_reset_when_disabled(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    f->cfg.reset_on_return = 0;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_DEFAULT);
    assert_int_equal(stats(f).idle, 1);
    assert_int_equal(atomic_load(&f->ctl.resets), 0);
}

static void lifo_fifo(struct fixture *f, int lifo)
{
    weir_pooled *a, *b, *c;

    f->cfg.lifo = lifo;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &c), 0);
    assert_ptr_equal(c, lifo ? b : a);
    weir_pool_checkin(f->pool, c, WEIR_CHECKIN_CLEAN);
}

static void test_lifo(void **state)
{
    lifo_fifo(*state, 1);
}

static void test_fifo(void **state)
{
    lifo_fifo(*state, 0);
}

/* The affine pick prefers a recent idle connection with the caller's tag,
 * and falls back to the usual (LIFO) one. */
static void test_try_checkout_affine(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b, *c;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    weir_pooled_set_affinity(a, 1);
    weir_pooled_set_affinity(b, 2);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN); /* b is next in LIFO order */
    assert_int_equal(weir_pool_try_checkout_affine(f->pool, 1, &c), 0);
    assert_ptr_equal(c, a);
    weir_pool_checkin(f->pool, c, WEIR_CHECKIN_CLEAN);
    assert_int_equal(weir_pool_try_checkout_affine(f->pool, 2, &c), 0);
    assert_ptr_equal(c, b);
    weir_pool_checkin(f->pool, c, WEIR_CHECKIN_CLEAN);
    assert_int_equal(weir_pool_try_checkout_affine(f->pool, 3, &c), 0); /* nobody's: the LIFO pick */
    assert_ptr_equal(c, b);
    weir_pool_checkin(f->pool, c, WEIR_CHECKIN_CLEAN);
}

static void test_invalidate_one_and_generation(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b, *c;

    f->cfg.min_size = 2;
    start(f);
    WAIT_FOR(stats(f).idle == 2, 1000);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_BROKEN);
    assert_int_equal(stats(f).closed, 1);
    WAIT_FOR(stats(f).idle == 2, 1000); /* refilled to min_size */
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    uint64_t old = weir_pooled_generation(b);
    uint64_t gen = weir_pool_invalidate_all(f->pool);
    assert_true(gen > old);
    /* Idle ones close now and are replaced by new-generation connections. */
    WAIT_FOR(stats(f).closed >= 2, 1000);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN); /* stale: closed on return */
    WAIT_FOR(stats(f).closed == 3, 1000);
    WAIT_FOR(stats(f).idle == 2, 1000);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &c), 0);
    assert_int_equal(weir_pooled_generation(c), gen);
    weir_pool_checkin(f->pool, c, WEIR_CHECKIN_CLEAN);
}

static void test_invalidate_idle_and_out(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b;

    f->cfg.watch_idle = 0;
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_invalidate(f->pool, a); /* idle: the pool thread closes it */
    WAIT_FOR(stats(f).total == 1, 1000);
    weir_pool_invalidate(f->pool, b); /* out: closed when it comes back */
    assert_int_equal(stats(f).total, 1);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_CLEAN);
    assert_int_equal(stats(f).total, 0);
    assert_int_equal(stats(f).invalidated, 2);
}

static void test_group_limit_and_eviction(void **state)
{
    struct fixture *f = *state;
    weir_pool_group *g;
    weir_pool *other;
    weir_pooled *a1, *a2, *b;

    assert_int_equal(weir_pool_group_new(2, &g), 0);
    f->cfg.groups[0] = g;
    start(f);
    assert_int_equal(weir_pool_new(&f->cfg, &other), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a1), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a2), 0);
    assert_int_equal(weir_pool_group_count(g), 2);
    /* Both slots are in use: the other pool cannot connect. */
    assert_int_equal(weir_pool_checkout(other, 100, &b), WEIR_ETIMEDOUT);
    /* Returned to idle, one is evicted for the other pool's waiter. */
    weir_pool_checkin(f->pool, a1, WEIR_CHECKIN_CLEAN);
    weir_pool_checkin(f->pool, a2, WEIR_CHECKIN_CLEAN);
    assert_int_equal(weir_pool_checkout(other, 2000, &b), 0);
    assert_int_equal(weir_pool_group_count(g), 2);
    weir_pool_stats st;
    weir_pool_get_stats(f->pool, &st);
    assert_int_equal(st.total, 1);
    weir_pool_checkin(other, b, WEIR_CHECKIN_CLEAN);
    event_base_once(f->base, -1, EV_TIMEOUT, free_pool_cb, f, NULL);
    pthread_join(f->thread, NULL);
    f->pool = other; /* teardown frees the second pool on a fresh loop */
    pthread_create(&f->thread, NULL, fake_loop_main, f->base);
    event_base_once(f->base, -1, EV_TIMEOUT, free_pool_cb, f, NULL);
    pthread_join(f->thread, NULL);
    weir_pool_group_free(g);
    pthread_create(&f->thread, NULL, fake_loop_main, f->base);
}

static void test_connect_backoff_then_success(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    f->cfg.fail_waiters_on_connect_error = 0;
    atomic_store(&f->ctl.fail_connects, 3);
    start(f);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    /* Retries wait 10, 20, then 40 ms. */
    assert_true(fake_now_ms() - t0 >= 65);
    weir_pool_stats st = stats(f);
    assert_int_equal(st.connect_failures, 3);
    assert_int_equal(st.connects, 1);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
}

static void test_connect_error_fails_waiters(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;
    char err[128];

    atomic_store(&f->ctl.fail_connects, 1);
    start(f);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), WEIR_ECONNECT);
    assert_true(fake_now_ms() - t0 < 1000);
    weir_pool_last_error(f->pool, err, sizeof(err));
    assert_string_equal(err, "fake failure");
    /* After the back-off the next checkout connects. */
    usleep(20000);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
}

/* WEIR_WAITERS_FAIL_REFUSED: an unreachable server keeps the waiter waiting
 * through the retries; a lasting refusal fails it at once. */
static void test_connect_failure_kind_decides_waiters(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    f->cfg.fail_waiters_on_connect_error = WEIR_WAITERS_FAIL_REFUSED;
    atomic_store(&f->ctl.fail_connects, 3);
    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(stats(f).connect_failures, 3);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_invalidate_all(f->pool); /* the next checkout must connect */
    atomic_store(&f->ctl.refuse_connects, 1);
    atomic_store(&f->ctl.fail_connects, 1);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), WEIR_ECONNECT);
    assert_true(fake_now_ms() - t0 < 1000);
    assert_int_equal(stats(f).connect_failures, 4);
}

static void test_connect_timeout(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;
    char err[128];

    f->cfg.connect_timeout_ms = 50;
    atomic_store(&f->ctl.hang_connects, 1);
    start(f);
    int64_t t0 = fake_now_ms();
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), WEIR_ECONNECT);
    int64_t took = fake_now_ms() - t0;
    assert_true(took >= 45 && took < 1000);
    weir_pool_last_error(f->pool, err, sizeof(err));
    assert_string_equal(err, "connect timed out");
    atomic_store(&f->ctl.hang_connects, 0);
}

static void test_pause_resume_drain(void **state)
{
    struct fixture *f = *state;
    struct order o = {0};
    struct order_arg a0 = {&o, 0}, a1 = {&o, 1};
    weir_pooled *a, *held;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_pause(f->pool);
    assert_int_equal(weir_pool_try_checkout(f->pool, &a), WEIR_EAGAIN);
    assert_int_equal(weir_pool_checkout_async(f->pool, f->base, -1, order_cb, &a0, NULL), 0);
    usleep(30000);
    assert_int_equal(atomic_load(&o.n), 0);
    assert_int_equal(stats(f).paused, 1);
    weir_pool_resume(f->pool);
    WAIT_FOR(atomic_load(&o.n) == 1, 1000);
    assert_int_equal(o.status[0], 0);
    held = o.conn[0];
    /* Drain: waiters and new checkouts fail, idle closes, held closes on return. */
    assert_int_equal(weir_pool_checkout_async(f->pool, f->base, -1, order_cb, &a1, NULL), 0);
    WAIT_FOR(stats(f).waiters == 1, 1000);
    weir_pool_drain(f->pool);
    WAIT_FOR(atomic_load(&o.n) == 2, 1000);
    assert_int_equal(o.status[1], WEIR_ECLOSED);
    assert_int_equal(weir_pool_checkout(f->pool, 100, &a), WEIR_ECLOSED);
    weir_pool_checkin(f->pool, held, WEIR_CHECKIN_CLEAN);
    WAIT_FOR(stats(f).total == 0, 1000);
    weir_pool_resume(f->pool);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
}

static void test_idle_watch_notices_server_close(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    struct fake_conn *fc = weir_pooled_dconn(a);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    fake_kill(fc);
    WAIT_FOR(stats(f).total == 0, 1000);
    assert_int_equal(stats(f).closed, 1);
}

struct hammer {
    struct fixture *f;
    atomic_int *out_now;
    atomic_int *max_seen;
    atomic_int *errors;
    int iterations;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;

    for (int i = 0; i < h->iterations; i++) {
        weir_pooled *c;
        if (weir_pool_checkout(h->f->pool, 5000, &c) != 0) {
            atomic_fetch_add(h->errors, 1);
            continue;
        }
        int n = atomic_fetch_add(h->out_now, 1) + 1;
        int m = atomic_load(h->max_seen);
        while (n > m && !atomic_compare_exchange_weak(h->max_seen, &m, n))
            ;
        if ((i & 7) == 0)
            sched_yield();
        atomic_fetch_sub(h->out_now, 1);
        weir_pool_checkin(h->f->pool, c, (i % 5) == 0 ? WEIR_CHECKIN_DEFAULT : WEIR_CHECKIN_CLEAN);
    }
    return NULL;
}

static void test_sixteen_threads_hammer(void **state)
{
    struct fixture *f = *state;
    atomic_int out_now = 0, max_seen = 0, errors = 0;
    struct hammer h = {f, &out_now, &max_seen, &errors, 1500};
    pthread_t t[16];

    f->cfg.max_size = 4;
    f->cfg.max_overflow = 0;
    start(f);
    for (int i = 0; i < 16; i++)
        pthread_create(&t[i], NULL, hammer_main, &h);
    for (int i = 0; i < 16; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&errors), 0);
    assert_true(atomic_load(&max_seen) <= 4);
    WAIT_FOR(stats(f).busy == 0, 1000);
    weir_pool_stats st = stats(f);
    assert_int_equal(st.checkouts, 16 * 1500);
    assert_int_equal(st.checkins, 16 * 1500);
    assert_int_equal(st.in_use, 0);
    assert_true(st.total <= 4);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(atomic_load(&f->ctl.open), st.total);
}

static void test_stats_histograms(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;
    uint64_t sum = 0;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    usleep(2000);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_stats st = stats(f);
    for (int i = 0; i < WEIR_HIST_BUCKETS; i++)
        sum += st.hold_hist[i];
    assert_int_equal(sum, 1);
    assert_true(st.hold_us_total >= 2000);
    assert_int_equal(st.connects, 1);
    assert_true(st.connect_hist[0] + st.connect_hist[1] + st.connect_hist[2] + st.connect_hist[3] +
                    st.connect_hist[4] + st.connect_hist[5] + st.connect_hist[6] + st.connect_hist[7] +
                    st.connect_hist[8] + st.connect_hist[9] + st.connect_hist[10] >=
                1);
}

static void test_bad_config_rejected(void **state)
{
    struct fixture *f = *state;
    weir_pool *p = NULL;

    f->cfg.max_size = 0;
    assert_int_equal(weir_pool_new(&f->cfg, &p), WEIR_EINVAL);
    assert_null(p);
    f->cfg.max_size = 2;
    f->cfg.min_size = 5;
    f->cfg.max_overflow = 0;
    assert_int_equal(weir_pool_new(&f->cfg, &p), WEIR_EINVAL);
    f->cfg.min_size = 0;
    f->cfg.conninfo = NULL;
    assert_int_equal(weir_pool_new(&f->cfg, &p), WEIR_EINVAL);
    weir_pool_free(NULL);
}

static void test_free_with_connection_out(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    start(f);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool *pool = f->pool;
    event_base_once(f->base, -1, EV_TIMEOUT, free_pool_cb, f, NULL);
    pthread_join(f->thread, NULL);
    /* The pool is closed but lives until its last connection comes back. */
    weir_pool_checkin(pool, a, WEIR_CHECKIN_CLEAN);
    assert_int_equal(atomic_load(&f->ctl.open), 0);
    pthread_create(&f->thread, NULL, fake_loop_main, f->base);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_checkout_reuses_connection),
        T(test_min_size_filled_in_background),
        T(test_max_size_and_overflow),
        T(test_checkout_timeout),
        T(test_overflow_after_delay),
        T(test_attached_data_lives_with_connection),
        T(test_waiter_cap),
        T(test_fifo_handoff_order),
        T(test_async_timeout_and_cancel),
        T(test_recycle_with_jitter),
        T(test_idle_timeout_keeps_min_size),
        T(test_close_reason_reaches_free_fn),
        T(test_close_reason_when_paused),
        T(test_pre_ping_replaces_dead),
        T(test_reset_on_return),
        T(test_no_reset_when_disabled),
        T(test_lifo),
        T(test_fifo),
        T(test_try_checkout_affine),
        T(test_invalidate_one_and_generation),
        T(test_invalidate_idle_and_out),
        T(test_group_limit_and_eviction),
        T(test_keep_overflow),
        T(test_connect_backoff_then_success),
        T(test_connect_error_fails_waiters),
        T(test_connect_failure_kind_decides_waiters),
        T(test_connect_timeout),
        T(test_pause_resume_drain),
        T(test_idle_watch_notices_server_close),
        T(test_sixteen_threads_hammer),
        T(test_stats_histograms),
        T(test_bad_config_rejected),
        T(test_free_with_connection_out),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
