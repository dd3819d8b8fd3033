/*
 * Unit tests of the pool's calls for callers that bring their own clock
 * reading (weir_pool_try_checkout_at, weir_pool_checkin_at) and of the
 * WEIR_CHECKIN_HEALTHY flag that skips the dialect's is_broken check: the
 * hold time and its histogram bucket come from the times given, pre-ping
 * and lifetimes are judged against them, and a healthy check-in still
 * retires a connection whose lifetime, generation or pool is over. The
 * pool's base runs on the test's own thread, a step at a time, so the
 * background thread cannot act between the calls a test makes. Once a
 * second thread exists, both calls take the pool's lock (a process with one
 * thread skips it).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>
#include <event2/event.h>

#include "fake_dialect.h"
#include "pool_internal.h"

struct fixture {
    struct fake_ctl ctl;
    char conninfo[64];
    struct event_base *base;
    weir_pool_config cfg;
    weir_pool *pool;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->base = event_base_new();
    fake_pool_config(&f->cfg, &f->ctl, f->conninfo, sizeof(f->conninfo), f->base, "at");
    f->cfg.watch_idle = 0; /* as the daemon */
    f->cfg.reset_on_return = 0;
    f->cfg.min_size = 1;
    f->cfg.max_size = 1;
    f->cfg.max_overflow = 0;
    *state = f;
    alarm(10); /* a test that hangs is killed: it fails */
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    alarm(0);
    weir_pool_free(f->pool);
    event_base_free(f->base);
    assert_int_equal(atomic_load(&f->ctl.open), 0);
    free(f);
    return 0;
}

static weir_pool_stats stats(struct fixture *f)
{
    return fake_pool_stats(f->pool);
}

/* Run the pool's base here until cond holds (or ms pass). */
#define RUN_UNTIL(f, cond, ms) RUN_BASE_UNTIL((f)->base, cond, ms)

/* A pool with its one connection idle. */
static void one_idle(struct fixture *f)
{
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    RUN_UNTIL(f, stats(f).idle == 1, 2000);
}

static weir_pooled *take_at(struct fixture *f, int64_t now, int expect_rc)
{
    weir_pooled *p = NULL;

    assert_int_equal(weir_pool_try_checkout_at(f->pool, 0, 0, now, &p), expect_rc);
    return p;
}

/* The bucket of the histograms' documented rule: i counts < 16 << i. */
static int reference_bucket(uint64_t us)
{
    int i = 0;

    while (i < WEIR_HIST_BUCKETS - 1 && us >= (16ULL << i))
        i++;
    return i;
}

/* The hold time is the difference of the two readings given, and lands in
 * the bucket the header documents, at every bucket's edges. */
static void test_hold_time_from_given_clock(void **state)
{
    struct fixture *f = *state;
    static const uint64_t holds[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100000, 131071, 131072,
                                     (16ULL << 21) - 1, 16ULL << 21, 16ULL << 22, 1ULL << 40};
    int64_t t = weir_now_us();
    uint64_t total = 0;
    weir_pool_stats st;

    one_idle(f);
    for (size_t k = 0; k < sizeof(holds) / sizeof(holds[0]); k++) {
        weir_pooled *p = take_at(f, t, 0);
        uint64_t before[WEIR_HIST_BUCKETS];
        int b = reference_bucket(holds[k]);

        memcpy(before, stats(f).hold_hist, sizeof(before));
        weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN, t + (int64_t)holds[k]);
        total += holds[k];
        st = stats(f);
        assert_int_equal(st.hold_us_total, total);
        for (int i = 0; i < WEIR_HIST_BUCKETS; i++)
            assert_int_equal(st.hold_hist[i], before[i] + (i == b));
    }
    st = stats(f);
    assert_int_equal(st.checkouts, sizeof(holds) / sizeof(holds[0]));
    assert_int_equal(st.checkins, sizeof(holds) / sizeof(holds[0]));
    assert_int_equal(st.wait_hist[0], sizeof(holds) / sizeof(holds[0])); /* none waited */
    assert_int_equal(st.idle, 1);
}

/* A reading older than the checkout's (another loop's clock, read a little
 * earlier) counts as no time at all, not as 2^64 - 1 microseconds. */
static void test_clock_behind_counts_zero(void **state)
{
    struct fixture *f = *state;
    int64_t t = weir_now_us();
    weir_pool_stats st;
    weir_pooled *p;

    one_idle(f);
    p = take_at(f, t, 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN, t - 500);
    st = stats(f);
    assert_int_equal(st.hold_us_total, 0);
    assert_int_equal(st.hold_hist[0], 1);
    assert_int_equal(st.idle, 1);
}

/* Pre-ping is judged against the caller's reading too. */
static void test_pre_ping_uses_given_clock(void **state)
{
    struct fixture *f = *state;
    int64_t t;
    weir_pooled *p;

    f->cfg.pre_ping_ms = 1000;
    one_idle(f);
    t = weir_now_us();
    p = take_at(f, t, 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN, t); /* idle since t */
    p = take_at(f, t + 500 * 1000, 0);                         /* idle 0.5 s: no ping */
    assert_non_null(p);
    assert_int_equal(atomic_load(&f->ctl.pings), 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN, t);
    assert_null(take_at(f, t + 2000 * 1000, WEIR_EAGAIN)); /* idle 2 s: pinged first */
    assert_int_equal(stats(f).busy, 1);
    RUN_UNTIL(f, stats(f).idle == 1, 2000);
    assert_int_equal(atomic_load(&f->ctl.pings), 1);
}

/* A healthy check-in does not ask the dialect: the fake says broken, the
 * connection stays. The same without the flag closes it. */
static void test_healthy_skips_is_broken(void **state)
{
    struct fixture *f = *state;
    weir_pooled *p;

    one_idle(f);
    p = take_at(f, weir_now_us(), 0);
    ((struct fake_conn *)weir_pooled_dconn(p))->broken = 1;
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY, weir_now_us());
    assert_int_equal(stats(f).idle, 1);
    assert_int_equal(stats(f).closed, 0);

    p = take_at(f, weir_now_us(), 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN, weir_now_us());
    assert_int_equal(stats(f).closed, 1);
    RUN_UNTIL(f, stats(f).idle == 1, 2000); /* replaced */
}

/* BROKEN wins over HEALTHY. */
static void test_broken_wins_over_healthy(void **state)
{
    struct fixture *f = *state;
    weir_pooled *p;

    one_idle(f);
    p = take_at(f, weir_now_us(), 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_BROKEN | WEIR_CHECKIN_HEALTHY, weir_now_us());
    assert_int_equal(stats(f).closed, 1);
    RUN_UNTIL(f, stats(f).idle == 1, 2000);
}

/* A healthy check-in after the lifetime (judged by the reading given)
 * closes it and counts it recycled. */
static void test_healthy_retires_on_lifetime(void **state)
{
    struct fixture *f = *state;
    int64_t t;
    weir_pooled *p;

    f->cfg.recycle_ms = 60000;
    one_idle(f);
    t = weir_now_us();
    p = take_at(f, t, 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY, t + 1000);
    assert_int_equal(stats(f).idle, 1); /* young: kept */
    p = take_at(f, t, 0);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY, t + 61 * 1000000LL);
    assert_int_equal(stats(f).closed, 1);
    assert_int_equal(stats(f).recycled, 1);
    assert_int_equal(stats(f).checkins, 2);
    RUN_UNTIL(f, stats(f).idle == 1, 2000);
}

/* A checkout whose reading is past the lifetime passes the connection over. */
static void test_checkout_at_past_lifetime(void **state)
{
    struct fixture *f = *state;

    f->cfg.recycle_ms = 60000;
    one_idle(f);
    assert_null(take_at(f, weir_now_us() + 61 * 1000000LL, WEIR_EAGAIN));
    weir_pool_checkin(f->pool, take_at(f, weir_now_us(), 0), WEIR_CHECKIN_CLEAN); /* now: young */
}

/* Invalidated while out, or a generation ago, or the pool draining: a
 * healthy check-in closes it all the same. */
static void healthy_after(struct fixture *f, int how)
{
    weir_pooled *p;

    one_idle(f);
    p = take_at(f, weir_now_us(), 0);
    if (how == 0)
        weir_pool_invalidate(f->pool, p);
    else if (how == 1)
        (void)weir_pool_invalidate_all(f->pool);
    else
        weir_pool_drain(f->pool);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY, weir_now_us());
    assert_int_equal(stats(f).closed, 1);
    assert_int_equal(stats(f).idle, 0);
    assert_int_equal(stats(f).in_use, 0);
}

static void test_healthy_retires_invalidated(void **state)
{
    healthy_after(*state, 0);
}

static void test_healthy_retires_old_generation(void **state)
{
    healthy_after(*state, 1);
}

static void test_healthy_retires_when_draining(void **state)
{
    struct fixture *f = *state;

    healthy_after(f, 2);
    assert_int_equal(stats(f).total, 0);
}

struct delivery {
    int done, status;
    weir_pooled *conn;
};

static void deliver_cb(int status, weir_pooled *conn, void *arg)
{
    struct delivery *d = arg;

    d->done = 1;
    d->status = status;
    d->conn = conn;
}

/* A check-in with a waiter queued hands the connection over; the wait is
 * measured up to the reading given, or counts 0 when that is older. */
static void handoff_at(struct fixture *f, int64_t ahead_us)
{
    struct delivery d = {0};
    weir_pool_stats before = stats(f), st;
    weir_pooled *p = take_at(f, weir_now_us(), 0);
    int64_t now;

    assert_int_equal(weir_pool_checkout_async(f->pool, f->base, 5000, deliver_cb, &d, NULL), 0);
    assert_int_equal(stats(f).waiters, 1);
    now = weir_now_us() + ahead_us;
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY, now);
    st = stats(f);
    assert_int_equal(st.handoffs, before.handoffs + 1);
    assert_int_equal(st.waiters, 0);
    if (ahead_us < 0) {
        assert_int_equal(st.wait_us_total, before.wait_us_total);
        assert_int_equal(st.wait_hist[0], before.wait_hist[0] + 2); /* the try and the clamped wait */
    } else {
        assert_true(st.wait_us_total - before.wait_us_total >= (uint64_t)ahead_us);
        assert_true(st.wait_us_total - before.wait_us_total < (uint64_t)ahead_us + 2000000);
    }
    RUN_UNTIL(f, d.done, 2000);
    assert_int_equal(d.status, 0);
    assert_ptr_equal(d.conn, p);
    weir_pool_checkin_at(f->pool, p, WEIR_CHECKIN_CLEAN, weir_now_us());
    assert_int_equal(stats(f).idle, 1);
}

static void test_checkin_at_hands_off(void **state)
{
    struct fixture *f = *state;

    one_idle(f);
    handoff_at(f, 100000);
    handoff_at(f, -1000000);
}

/* Another thread holds the pool's lock for a while. */
struct holder {
    weir_pool *pool;
    atomic_int holding;
};

static void *hold_lock(void *arg)
{
    struct holder *h = arg;

    pthread_mutex_lock(&h->pool->lock);
    atomic_store(&h->holding, 1);
    usleep(300 * 1000);
    pthread_mutex_unlock(&h->pool->lock);
    return NULL;
}

/* Wait while another thread holds the lock, then do the call. */
static int64_t waited_for_holder(struct fixture *f, int checkin, weir_pooled **p)
{
    struct holder h = {.pool = f->pool};
    pthread_t t;
    int64_t start, took;

    assert_int_equal(pthread_create(&t, NULL, hold_lock, &h), 0);
    while (!atomic_load(&h.holding))
        usleep(1000);
    start = weir_now_us();
    if (checkin)
        weir_pool_checkin_at(f->pool, *p, WEIR_CHECKIN_CLEAN | WEIR_CHECKIN_HEALTHY, weir_now_us());
    else
        *p = take_at(f, weir_now_us(), 0);
    took = weir_now_us() - start;
    pthread_join(t, NULL);
    return took;
}

/* With a second thread in the process the check-out and check-in wait for
 * the lock: the single-thread shortcut must not outlive the single thread. */
static void test_hot_calls_lock_once_threads_exist(void **state)
{
    struct fixture *f = *state;
    weir_pooled *p = NULL;

    one_idle(f);
    assert_true(waited_for_holder(f, 0, &p) >= 200 * 1000);
    assert_non_null(p);
    assert_true(waited_for_holder(f, 1, &p) >= 200 * 1000);
    assert_int_equal(stats(f).idle, 1);
    assert_int_equal(stats(f).checkins, 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_hold_time_from_given_clock),
        T(test_clock_behind_counts_zero),
        T(test_pre_ping_uses_given_clock),
        T(test_healthy_skips_is_broken),
        T(test_broken_wins_over_healthy),
        T(test_healthy_retires_on_lifetime),
        T(test_checkout_at_past_lifetime),
        T(test_healthy_retires_invalidated),
        T(test_healthy_retires_old_generation),
        T(test_healthy_retires_when_draining),
        T(test_checkin_at_hands_off),
        T(test_hot_calls_lock_once_threads_exist),
    };
    signal(SIGALRM, SIG_DFL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
