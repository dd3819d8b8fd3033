/*
 * Unit tests of the Pool's target chooser (weir_pool_target) with the fake
 * Dialect: every connect asks the chooser, the tag stays with the connection,
 * release runs once per choice (connected or not), a chooser error is a
 * connect failure with its text, weir_pool_invalidate_target() closes only
 * that target's connections, and weir_pool_retry_now() skips the back-off.
 * This is what the daemon's read-replica balancing and failover rest on.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "fake_dialect.h"

/* What the test chooser does and saw. Lives as long as the fixture. */
struct chooser {
    atomic_int chosen;       /* successful choices */
    atomic_int refuse;       /* refuse this many upcoming choices */
    atomic_int released[3];  /* per tag 1..2, index 0 unused */
    atomic_int released_unconnected;
    int ntags;               /* tags cycle 1..ntags */
};

struct fixture {
    struct fake_ctl ctl;
    struct chooser ch;
    char conninfo[64];
    struct event_base *base;
    pthread_t thread;
    weir_pool_config cfg;
    weir_pool *pool;
};

static int choose(void *arg, const char *conninfo, char **out, uintptr_t *tag, char *errbuf, size_t errlen)
{
    struct chooser *ch = arg;

    if (atomic_load(&ch->refuse) > 0) {
        atomic_fetch_sub(&ch->refuse, 1);
        snprintf(errbuf, errlen, "no eligible host");
        return WEIR_ECONNECT;
    }
    *out = strdup(conninfo); /* the same target, in a string the pool frees */
    *tag = (uintptr_t)(atomic_fetch_add(&ch->chosen, 1) % ch->ntags + 1);
    return *out ? 0 : WEIR_ENOMEM;
}

static void release(void *arg, uintptr_t tag, int connected)
{
    struct chooser *ch = arg;

    if (tag >= 1 && tag <= 2)
        atomic_fetch_add(&ch->released[tag], 1);
    if (!connected)
        atomic_fetch_add(&ch->released_unconnected, 1);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    evthread_use_pthreads();
    f->base = event_base_new();
    fake_pool_config(&f->cfg, &f->ctl, f->conninfo, sizeof(f->conninfo), f->base, "target");
    f->ch.ntags = 2;
    f->cfg.watch_idle = 0;
    f->cfg.target.choose = choose;
    f->cfg.target.release = release;
    f->cfg.target.arg = &f->ch;
    pthread_create(&f->thread, NULL, fake_loop_main, f->base);
    *state = f;
    return 0;
}

static void free_pool_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    (void)fd;
    (void)what;
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
    assert_int_equal(atomic_load(&f->ctl.open), 0);
    /* every choice was released exactly once */
    assert_int_equal(atomic_load(&f->ch.released[1]) + atomic_load(&f->ch.released[2]),
                     atomic_load(&f->ch.chosen));
    free(f);
    return 0;
}

static weir_pool_stats stats(struct fixture *f)
{
    return fake_pool_stats(f->pool);
}


static void test_each_connect_is_chosen_and_tagged(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a, *b;

    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &b), 0);
    assert_int_equal(atomic_load(&f->ch.chosen), 2);
    assert_true(weir_pooled_target(a) != weir_pooled_target(b));
    assert_true(weir_pooled_target(a) >= 1 && weir_pooled_target(a) <= 2);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
    weir_pool_checkin(f->pool, b, WEIR_CHECKIN_BROKEN);
    /* the broken one was released as connected; the idle one is still held */
    uintptr_t tb = weir_pooled_target(a) == 1 ? 2 : 1;
    assert_int_equal(atomic_load(&f->ch.released[tb]), 1);
    assert_int_equal(atomic_load(&f->ch.released_unconnected), 0);
    assert_int_equal(stats(f).total, 1);
}

static void test_invalidate_target_closes_only_its_connections(void **state)
{
    struct fixture *f = *state;
    weir_pooled *c[4];

    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(weir_pool_checkout(f->pool, -2, &c[i]), 0);
    weir_pool_checkin(f->pool, c[0], WEIR_CHECKIN_CLEAN); /* idle */
    uintptr_t gone = weir_pooled_target(c[0]);
    assert_int_equal(weir_pool_invalidate_target(f->pool, gone), 2);
    assert_int_equal(weir_pool_invalidate_target(f->pool, gone), 0); /* already marked */
    WAIT_FOR(stats(f).total == 3, 1000);                             /* the idle one closed now */
    for (int i = 1; i < 4; i++)
        weir_pool_checkin(f->pool, c[i], WEIR_CHECKIN_CLEAN);
    /* the other of that target closed on return; the other target's stay */
    weir_pool_stats st = stats(f);
    assert_int_equal(st.total, 2);
    assert_int_equal(st.idle, 2);
    assert_int_equal(atomic_load(&f->ch.released[gone]), 2);
    assert_int_equal(atomic_load(&f->ch.released[gone == 1 ? 2 : 1]), 0);
}

static void test_chooser_error_is_a_connect_failure(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;
    char err[128];

    atomic_store(&f->ch.refuse, 1);
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), WEIR_ECONNECT);
    weir_pool_last_error(f->pool, err, sizeof(err));
    assert_string_equal(err, "no eligible host");
    assert_int_equal(atomic_load(&f->ctl.connects), 0); /* nothing was attempted */
    assert_int_equal(stats(f).connect_failures, 1);
    usleep(20000); /* the back-off */
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
}

static void test_failed_connect_releases_unconnected(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    atomic_store(&f->ctl.fail_connects, 1);
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), WEIR_ECONNECT);
    WAIT_FOR(atomic_load(&f->ch.released_unconnected) == 1, 1000);
}

static void test_retry_now_skips_backoff(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    f->cfg.retry_min_ms = 5000;
    f->cfg.retry_max_ms = 5000;
    f->cfg.fail_waiters_on_connect_error = 0;
    f->cfg.min_size = 1; /* a connect is wanted without a waiter */
    atomic_store(&f->ch.refuse, 1);
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    WAIT_FOR(stats(f).connect_failures == 1, 1000);
    int64_t t0 = fake_now_ms();
    weir_pool_retry_now(f->pool);
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_true(fake_now_ms() - t0 < 1000); /* not the 5 s back-off */
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
}

static void test_invalidate_all_forgets_backoff(void **state)
{
    struct fixture *f = *state;
    weir_pooled *a;

    f->cfg.retry_min_ms = 5000;
    f->cfg.retry_max_ms = 5000;
    f->cfg.fail_waiters_on_connect_error = 0;
    f->cfg.min_size = 1; /* a connect is wanted without a waiter */
    atomic_store(&f->ch.refuse, 1);
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    WAIT_FOR(stats(f).connect_failures == 1, 1000);
    int64_t t0 = fake_now_ms();
    (void)weir_pool_invalidate_all(f->pool); /* e.g. a failover was seen */
    assert_int_equal(weir_pool_checkout(f->pool, -2, &a), 0);
    assert_true(fake_now_ms() - t0 < 1000);
    weir_pool_checkin(f->pool, a, WEIR_CHECKIN_CLEAN);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_each_connect_is_chosen_and_tagged),
        T(test_invalidate_target_closes_only_its_connections),
        T(test_chooser_error_is_a_connect_failure),
        T(test_failed_connect_releases_unconnected),
        T(test_retry_now_skips_backoff),
        T(test_invalidate_all_forgets_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
