/*
 * Unit tests of the worker threads' "stop the world" handshake (worker.c)
 * without clients: four real event loops on four threads, each bumping its
 * own counter from a timer. A stopped world must hold every other loop still
 * (no counter moves), nest, let two workers that both want it take turns
 * without deadlock (the daemon stops it from the main thread only; the
 * handshake does not depend on that), and posts must run on the loop they
 * were sent to.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "daemon.h"
#include "fake_dialect.h" /* WAIT_FOR */
#include "worker.h"

#define NW 4

struct fixture {
    struct daemon d;
    pthread_t main_loop; /* worker 0's loop, on a thread of its own here */
    struct event *beat[NW];
    long beats[NW];      /* written by each loop, read with the world stopped */
    long shared;         /* changed only with the world stopped */
    int stoppers_done;
};

static void beat_cb(evutil_socket_t fd, short what, void *arg)
{
    long *n = arg;
    (void)fd;
    (void)what;
    __atomic_add_fetch(n, 1, __ATOMIC_RELAXED);
}

static void *main_loop(void *arg)
{
    struct fixture *f = arg;
    event_base_loop(f->d.base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct timeval ms = {0, 1000};

    assert_non_null(f);
    assert_int_equal(evthread_use_pthreads(), 0);
    pthread_mutex_init(&f->d.lock, NULL);
    f->d.log.min_level = LG_FATAL + 1;
    f->d.base = event_base_new();
    assert_int_equal(workers_new(&f->d, NW, f->d.base), 0);
    for (int i = 0; i < NW; i++) {
        f->beat[i] = event_new(f->d.workers[i]->base, -1, EV_PERSIST, beat_cb, &f->beats[i]);
        event_add(f->beat[i], &ms);
    }
    assert_int_equal(workers_run(&f->d), 0);
    assert_int_equal(pthread_create(&f->main_loop, NULL, main_loop, f), 0);
    *state = f;
    return 0;
}

static void break_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(worker_post(f->d.workers[0], break_cb, f->d.base), 0);
    pthread_join(f->main_loop, NULL);
    workers_join(&f->d);
    for (int i = 0; i < NW; i++)
        event_free(f->beat[i]);
    workers_free(&f->d);
    event_base_free(f->d.base);
    pthread_mutex_destroy(&f->d.lock);
    free(f);
    return 0;
}

static long beats(struct fixture *f, int i)
{
    return __atomic_load_n(&f->beats[i], __ATOMIC_RELAXED);
}

struct stop_job {
    struct fixture *f;
    int worker;
    int rounds;
};

static void hold_still_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stop_job *job = arg;
    struct fixture *f = job->f;
    struct worker *self = f->d.workers[job->worker];
    long before[NW];

    (void)fd;
    (void)what;
    world_stop(self);
    world_stop(self); /* nested */
    for (int i = 0; i < NW; i++)
        before[i] = beats(f, i);
    usleep(30000);
    for (int i = 0; i < NW; i++)
        if (i != job->worker)
            assert_int_equal(beats(f, i), before[i]); /* parked: no timer ran */
    world_start(self);
    world_start(self);
    __atomic_add_fetch(&f->stoppers_done, 1, __ATOMIC_RELEASE);
}

static void test_stopped_world_holds_every_other_loop(void **state)
{
    struct fixture *f = *state;
    struct stop_job job = {f, 2, 0};
    long before;

    WAIT_FOR(beats(f, 0) > 5 && beats(f, 3) > 5, 2000);
    assert_int_equal(worker_post(f->d.workers[2], hold_still_cb, &job), 0);
    WAIT_FOR(__atomic_load_n(&f->stoppers_done, __ATOMIC_ACQUIRE) == 1, 5000);
    before = beats(f, 1);
    WAIT_FOR(beats(f, 1) > before + 5, 2000); /* and it runs again */
}

static void contend_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stop_job *job = arg;
    struct fixture *f = job->f;
    struct worker *self = f->d.workers[job->worker];

    (void)fd;
    (void)what;
    for (int r = 0; r < job->rounds; r++) {
        world_stop(self);
        long v = f->shared; /* a race here would lose increments */
        usleep(50);
        f->shared = v + 1;
        world_start(self);
    }
    __atomic_add_fetch(&f->stoppers_done, 1, __ATOMIC_RELEASE);
}

static void test_stoppers_take_turns(void **state)
{
    struct fixture *f = *state;
    struct stop_job jobs[NW];

    for (int i = 0; i < NW; i++) {
        jobs[i] = (struct stop_job){f, i, 50};
        assert_int_equal(worker_post(f->d.workers[i], contend_cb, &jobs[i]), 0);
    }
    WAIT_FOR(__atomic_load_n(&f->stoppers_done, __ATOMIC_ACQUIRE) == NW, 20000);
    assert_int_equal(f->shared, NW * 50); /* ordered after every job by stoppers_done */
}

struct where {
    pthread_t seen;
    int done;
};

static void where_cb(evutil_socket_t fd, short what, void *arg)
{
    struct where *w = arg;
    (void)fd;
    (void)what;
    w->seen = pthread_self();
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
}

static void test_post_runs_on_its_worker(void **state)
{
    struct fixture *f = *state;
    struct where w = {0};

    assert_int_equal(worker_post(f->d.workers[3], where_cb, &w), 0);
    WAIT_FOR(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 2000);
    assert_true(pthread_equal(w.seen, f->d.workers[3]->thread));
    assert_int_not_equal(worker_random(f->d.workers[1]), worker_random(f->d.workers[1]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stopped_world_holds_every_other_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stoppers_take_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_runs_on_its_worker, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
