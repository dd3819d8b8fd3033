/*
 * A fake Dialect for unit-testing the Pool without a database: connections
 * are socketpairs, and a control block (passed through the conninfo string as
 * "fake:<address>") makes connects, pings and resets fail or hang on demand.
 */
#ifndef WEIR_TEST_FAKE_DIALECT_H
#define WEIR_TEST_FAKE_DIALECT_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <weir/weir.h>

struct fake_ctl {
    atomic_int connects;      /* connect_start calls */
    atomic_int open;          /* connections currently open */
    atomic_int next_id;
    atomic_int fail_connects; /* this many upcoming connects fail */
    atomic_int refuse_connects; /* this many of those failures are lasting refusals */
    atomic_int hang_connects; /* connects never complete while set */
    atomic_int fail_pings, fail_resets;
    atomic_int pings, resets;
};

struct fake_conn {
    struct fake_ctl *ctl;
    int id;
    int fds[2];  /* [0] is "our" socket, [1] the "server" end */
    int op_polls;
    int op_fail;
    int broken;
    int refused; /* its connect failed as a lasting refusal */
};

extern const weir_dialect fake_dialect;

/* Write "fake:<ctl address>" into buf for the pool's conninfo. */
void fake_conninfo(struct fake_ctl *ctl, char *buf, size_t len);
/* A pool config for the fake dialect on base, connecting through ctl (its
 * conninfo written into conninfo), 2 s checkout timeout, quick retries. */
/* pthread start routine: runs the event_base given as its argument until
 * event_base_loopbreak(). */
void *fake_loop_main(void *base);
void fake_pool_config(weir_pool_config *cfg, struct fake_ctl *ctl, char *conninfo, size_t len,
                      struct event_base *base, const char *name);
/* The server side goes away: the idle watch must notice. */
void fake_kill(struct fake_conn *c);

/* Monotonic milliseconds, for polling the pool's background thread. */
static inline int64_t fake_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Poll a condition for up to ms milliseconds (cmocka's assert_true at the end). */
#define WAIT_FOR(cond, ms)                                                                                   \
    do {                                                                                                     \
        int64_t until_ = fake_now_ms() + (ms);                                                               \
        while (!(cond) && fake_now_ms() < until_)                                                            \
            usleep(1000);                                                                                    \
        assert_true(cond);                                                                                   \
    } while (0)

/* The same, running base (a pool's, driven by the test's own thread)
 * between looks instead of sleeping only. */
#define RUN_BASE_UNTIL(base, cond, ms)                                                                       \
    do {                                                                                                     \
        int64_t until_ = fake_now_ms() + (ms);                                                               \
        while (!(cond) && fake_now_ms() < until_) {                                                          \
            event_base_loop((base), EVLOOP_NONBLOCK);                                                        \
            usleep(500);                                                                                     \
        }                                                                                                    \
        assert_true(cond);                                                                                   \
    } while (0)

/* A pool's statistics as a value, for asserts on one field. */
static inline weir_pool_stats fake_pool_stats(weir_pool *pool)
{
    weir_pool_stats st;
    weir_pool_get_stats(pool, &st);
    return st;
}

#endif
