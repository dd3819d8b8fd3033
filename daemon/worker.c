/*
 * The worker threads and the "stop the world" handshake (see worker.h).
 * Stopping the world is how the rare operations that look at every client
 * (admin commands, reload, SHOW, stats) stay as simple as in one thread: the
 * caller asks every other worker to run a park callback, which blocks at a
 * point where no client or server callback of that worker is half done, and
 * it proceeds once all of them are parked. The data path never takes a lock
 * for it; only these operations pay.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "client.h"
#include "daemon.h"
#include "worker.h"

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    stream_loop_tick(&w->loop);
    client_trim_idle(w);
    client_fast_close_sweep(w);
}

static int worker_init(struct worker *w, struct daemon *d, int id, struct event_base *base)
{
    struct timeval second = {1, 0};

    w->d = d;
    w->id = id;
    w->base = base;
    if (w->base == NULL || RAND_bytes((unsigned char *)&w->rng, sizeof(w->rng)) != 1)
        return -1;
    w->rng |= 1;
    w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    if (w->tick == NULL || event_add(w->tick, &second) != 0)
        return -1;
    return 0;
}

int workers_new(struct daemon *d, int n, struct event_base *main_base)
{
    struct world *wo = &d->world;

    if (n < 1)
        n = 1;
    wo->owner = -1;
    if (pthread_mutex_init(&wo->mu, NULL) != 0 || pthread_cond_init(&wo->cv, NULL) != 0)
        return -1;
    d->workers = calloc((size_t)n, sizeof(*d->workers));
    if (d->workers == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        struct worker *w = calloc(1, sizeof(*w));
        if (w == NULL)
            return -1;
        d->workers[i] = w;
        d->nworkers = i + 1;
        if (worker_init(w, d, i, i == 0 ? main_base : event_base_new()) != 0)
            return -1;
        if (i == 0)
            w->thread = pthread_self(); /* the caller's: the main thread */
    }
    return 0;
}

/* A loop that has stopped runs no more callbacks: it counts as parked for
 * good, so that a worker stopping the world during shutdown does not wait
 * for it. */
static void retire(struct daemon *d)
{
    pthread_mutex_lock(&d->world.mu);
    d->world.parked++;
    pthread_cond_broadcast(&d->world.cv);
    pthread_mutex_unlock(&d->world.mu);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];

    snprintf(name, sizeof(name), "weir-worker-%d", w->id); /* per-thread CPU in top -H, /proc */
    pthread_setname_np(pthread_self(), name);
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    retire(w->d);
    return NULL;
}

int workers_run(struct daemon *d)
{
    for (int i = 1; i < d->nworkers; i++) {
        struct worker *w = d->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            log_at(&d->log, LG_FATAL, "cannot start worker thread %d", i);
            return -1;
        }
        w->running = 1;
    }
    return 0;
}

/* Posted rather than called from outside: a loopbreak that arrives before
 * the thread has entered its loop would be forgotten when it does. */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(w->base);
}

void workers_join(struct daemon *d)
{
    if (d->nworkers > 1)
        retire(d); /* the main loop has stopped */
    for (int i = 1; i < d->nworkers; i++) {
        struct worker *w = d->workers[i];
        if (!w->running)
            continue;
        if (worker_post(w, stop_cb, w) != 0)
            event_base_loopbreak(w->base); /* out of memory: the loop is surely running by now */
        pthread_join(w->thread, NULL);
        w->running = 0;
    }
    d->world_off = 1; /* one thread from here on: nobody to park */
}

void workers_free(struct daemon *d)
{
    for (int i = 0; i < d->nworkers; i++) {
        struct worker *w = d->workers[i];
        if (w == NULL)
            continue;
        if (w->tick)
            event_free(w->tick);
        if (i > 0 && w->base) {
            event_base_loop(w->base, EVLOOP_NONBLOCK); /* frees parked for the next iteration */
            event_base_free(w->base);
        }
        free(w);
    }
    free(d->workers);
    d->workers = NULL;
    d->nworkers = 0;
    pthread_cond_destroy(&d->world.cv);
    pthread_mutex_destroy(&d->world.mu);
}

struct worker *worker_pick(struct daemon *d)
{
    /* Round robin: only the main thread accepts, so a plain counter does. */
    struct worker *w = d->workers[d->next_worker];

    d->next_worker = (d->next_worker + 1) % d->nworkers;
    return w;
}

int worker_post(struct worker *w, event_callback_fn fn, void *arg)
{
    return event_base_once(w->base, -1, EV_TIMEOUT, fn, arg, NULL);
}

uint32_t worker_random(struct worker *w)
{
    uint32_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    w->rng = x;
    return x;
}

/* ---- stopping the world ---- */

/* With wo->mu held: count w as parked until nobody owns the world. */
static void park_locked(struct world *wo, struct worker *w)
{
    wo->parked++;
    pthread_cond_broadcast(&wo->cv);
    while (wo->owner != -1) {
        w->parked_gen = wo->gen;
        pthread_cond_wait(&wo->cv, &wo->mu);
    }
    wo->parked--;
}

static void park_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct world *wo = &w->d->world;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&wo->mu);
    /* A request that is still current; a late one finds the world running. */
    if (wo->owner != -1 && wo->owner != w->id && w->parked_gen != wo->gen)
        park_locked(wo, w);
    pthread_mutex_unlock(&wo->mu);
    stream_loop_tick(&w->loop); /* time passed while parked */
}

void world_stop(struct worker *self)
{
    struct daemon *d = self->d;
    struct world *wo = &d->world;

    if (d->nworkers <= 1 || d->world_off)
        return;
    if (!pthread_equal(pthread_self(), d->main_thread))
        log_at(&d->log, LG_ERROR, "internal: a worker stops the world (only the main thread should)");
    pthread_mutex_lock(&wo->mu);
    if (wo->owner != -1 && pthread_equal(wo->owner_thread, pthread_self())) {
        wo->depth++; /* e.g. an admin command run from the main thread's tick */
        pthread_mutex_unlock(&wo->mu);
        return;
    }
    while (wo->owner != -1) /* another worker stops the world: be parked for it */
        park_locked(wo, self);
    wo->owner = self->id;
    wo->owner_thread = pthread_self();
    wo->depth = 1;
    wo->gen++;
    pthread_mutex_unlock(&wo->mu);
    for (int i = 0; i < d->nworkers; i++)
        if (i != self->id && worker_post(d->workers[i], park_cb, d->workers[i]) != 0)
            log_at(&d->log, LG_ERROR, "cannot reach worker %d", i); /* out of memory: we would wait forever */
    pthread_mutex_lock(&wo->mu);
    while (wo->parked < d->nworkers - 1)
        pthread_cond_wait(&wo->cv, &wo->mu);
    pthread_mutex_unlock(&wo->mu);
}

void world_start(struct worker *self)
{
    struct daemon *d = self->d;
    struct world *wo = &d->world;

    if (d->nworkers <= 1 || d->world_off)
        return;
    pthread_mutex_lock(&wo->mu);
    (void)self;
    if (wo->owner != -1 && pthread_equal(wo->owner_thread, pthread_self()) && --wo->depth == 0) {
        wo->owner = -1;
        pthread_cond_broadcast(&wo->cv);
    }
    pthread_mutex_unlock(&wo->mu);
}

int world_stopped_here(struct daemon *d)
{
    struct world *wo = &d->world;
    int mine;

    if (d->nworkers <= 1 || d->world_off)
        return 1;
    pthread_mutex_lock(&wo->mu);
    mine = wo->owner != -1 && pthread_equal(wo->owner_thread, pthread_self());
    pthread_mutex_unlock(&wo->mu);
    return mine;
}
