/*
 * Unit tests of a checkout that meets retired idle connections: what a
 * failover leaves behind when a backend dies and weir invalidates its idle
 * servers one by one (or a whole generation) before the pool's own thread
 * has closed them. The checkout must pass over them and take a live one, or
 * give up at once when none is left, in LIFO and FIFO order, with or without
 * an affinity (weir_pool_try_checkout_affine). Each test runs
 * the pool's base on the test's own thread, a step at a time, so the pool
 * thread cannot tidy up between the invalidation and the checkout; an alarm
 * ends a checkout that never returns (the daemon froze that way once).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "fake_dialect.h"

#define WATCHDOG_S 10 /* a checkout that spins is killed by SIGALRM: the test fails */

struct fixture {
    struct fake_ctl ctl;
    char conninfo[64];
    struct event_base *base;
    weir_pool_config cfg;
    weir_pool *pool;
    weir_pooled *conn[3];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->base = event_base_new();
    fake_pool_config(&f->cfg, &f->ctl, f->conninfo, sizeof(f->conninfo), f->base, "retired");
    f->cfg.timeout_ms = 30000; /* the library default, as before */
    f->cfg.watch_idle = 0; /* as the daemon: it watches its idle servers itself */
    f->cfg.min_size = 3;
    *state = f;
    alarm(WATCHDOG_S);
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

/* Three idle connections, checked in so that conn[0] is the one a LIFO
 * pool hands out first and conn[2] the one a FIFO pool does. */
static void three_idle(struct fixture *f, int lifo)
{
    f->cfg.lifo = lifo;
    assert_int_equal(weir_pool_new(&f->cfg, &f->pool), 0);
    RUN_UNTIL(f, stats(f).idle == 3, 2000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(weir_pool_try_checkout(f->pool, &f->conn[i]), 0);
        weir_pooled_set_affinity(f->conn[i], (uintptr_t)(i + 1)); /* conn[i] has affinity i + 1 */
    }
    for (int i = 2; i >= 0; i--) /* each check-in goes to the front */
        weir_pool_checkin(f->pool, f->conn[i], WEIR_CHECKIN_CLEAN);
    assert_int_equal(stats(f).idle, 3);
}

static weir_pooled *take(struct fixture *f, int expect_rc)
{
    weir_pooled *p = NULL;

    assert_int_equal(weir_pool_try_checkout(f->pool, &p), expect_rc);
    return p;
}

/* The first candidate was retired: the next one is taken. */
static void test_lifo_first_retired(void **state)
{
    struct fixture *f = *state;

    three_idle(f, 1);
    weir_pool_invalidate(f->pool, f->conn[0]);
    assert_ptr_equal(take(f, 0), f->conn[1]);
    weir_pool_checkin(f->pool, f->conn[1], WEIR_CHECKIN_CLEAN);
    RUN_UNTIL(f, stats(f).closed == 1, 2000); /* the pool thread closed the retired one */
}

static void test_fifo_first_retired(void **state)
{
    struct fixture *f = *state;

    three_idle(f, 0);
    weir_pool_invalidate(f->pool, f->conn[2]);
    assert_ptr_equal(take(f, 0), f->conn[1]);
    weir_pool_checkin(f->pool, f->conn[1], WEIR_CHECKIN_CLEAN);
    RUN_UNTIL(f, stats(f).closed == 1, 2000);
}

/* Two retired, one live at the far end. */
static void test_only_last_alive(void **state)
{
    struct fixture *f = *state;

    three_idle(f, 1);
    weir_pool_invalidate(f->pool, f->conn[0]);
    weir_pool_invalidate(f->pool, f->conn[1]);
    assert_ptr_equal(take(f, 0), f->conn[2]);
    weir_pool_checkin(f->pool, f->conn[2], WEIR_CHECKIN_CLEAN);
}

/* Every idle connection retired, one by one or by generation: nothing to
 * take, the checkout says so at once and the pool thread replaces them. */
static void all_retired(struct fixture *f, int lifo, int by_generation)
{
    weir_pooled *p;

    three_idle(f, lifo);
    if (by_generation) {
        (void)weir_pool_invalidate_all(f->pool);
    } else {
        for (int i = 0; i < 3; i++)
            weir_pool_invalidate(f->pool, f->conn[i]);
    }
    assert_null(take(f, WEIR_EAGAIN));
    RUN_UNTIL(f, stats(f).closed == 3 && stats(f).idle == 3, 2000); /* min_size refilled */
    p = take(f, 0);
    assert_non_null(p);
    for (int i = 0; i < 3; i++)
        assert_ptr_not_equal(p, f->conn[i]);
    weir_pool_checkin(f->pool, p, WEIR_CHECKIN_CLEAN);
}

static void test_lifo_all_invalidated(void **state)
{
    all_retired(*state, 1, 0);
}

static void test_fifo_all_invalidated(void **state)
{
    all_retired(*state, 0, 0);
}

static void test_lifo_generation_invalidated(void **state)
{
    all_retired(*state, 1, 1);
}

static weir_pooled *take_affine(struct fixture *f, uintptr_t affinity, int expect_rc)
{
    weir_pooled *p = NULL;

    assert_int_equal(weir_pool_try_checkout_affine(f->pool, affinity, &p), expect_rc);
    return p;
}

/* The one with the affinity asked for is retired: the first live one. */
static void test_affine_retired(void **state)
{
    struct fixture *f = *state;

    three_idle(f, 1);
    weir_pool_invalidate(f->pool, f->conn[1]);
    assert_ptr_equal(take_affine(f, 2, 0), f->conn[0]);
    weir_pool_checkin(f->pool, f->conn[0], WEIR_CHECKIN_CLEAN);
    /* the first in line retired too: the live one with the affinity */
    weir_pool_invalidate(f->pool, f->conn[0]);
    assert_ptr_equal(take_affine(f, 3, 0), f->conn[2]);
    weir_pool_checkin(f->pool, f->conn[2], WEIR_CHECKIN_CLEAN);
}

static void test_affine_all_retired(void **state)
{
    struct fixture *f = *state;

    three_idle(f, 1);
    (void)weir_pool_invalidate_all(f->pool);
    assert_null(take_affine(f, 1, WEIR_EAGAIN));
    assert_null(take_affine(f, 9, WEIR_EAGAIN));
    RUN_UNTIL(f, stats(f).closed == 3 && stats(f).idle == 3, 2000);
}

/* A paused pool hands out nothing, retired or not. */
static void test_paused_takes_nothing(void **state)
{
    struct fixture *f = *state;

    three_idle(f, 1);
    weir_pool_invalidate(f->pool, f->conn[0]);
    weir_pool_pause(f->pool);
    assert_null(take(f, WEIR_EAGAIN));
    weir_pool_resume(f->pool);
    assert_ptr_equal(take(f, 0), f->conn[1]);
    weir_pool_checkin(f->pool, f->conn[1], WEIR_CHECKIN_CLEAN);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_lifo_first_retired),
        T(test_fifo_first_retired),
        T(test_only_last_alive),
        T(test_lifo_all_invalidated),
        T(test_fifo_all_invalidated),
        T(test_lifo_generation_invalidated),
        T(test_affine_retired),
        T(test_affine_all_retired),
        T(test_paused_takes_nothing),
    };
    signal(SIGALRM, SIG_DFL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
