/*
 * Workers: the event-loop threads of the daemon (`workers = N`). Worker 0
 * is the main thread; it also runs the listeners, signals, the pools'
 * background work, health checks, stats and metrics. Every client belongs to
 * one worker for its whole life, and a server to the worker of the client it
 * serves (it moves when a client of another worker gets it from the shared
 * pool). What several workers share is either locked (registries, pools,
 * prepared statements), atomic (counters), or read-only between moments
 * when the world is stopped: admin commands, reload and stats runs stop the
 * other workers at a safe point between their callbacks (world_stop), so
 * they read and change any client or server as the single-threaded daemon
 * did.
 */
#ifndef WEIR_DAEMON_WORKER_H
#define WEIR_DAEMON_WORKER_H

#include <pthread.h>
#include <stdint.h>

#include <event2/event.h>

#include "stream.h"

struct daemon;
struct client;
struct authq;

struct worker {
    struct daemon *d;
    int id;
    struct event_base *base;   /* worker 0: the daemon's main base */
    pthread_t thread;          /* the one running base (worker 0: the main thread) */
    int running;               /* a thread was started for it */
    struct client *clients;    /* this worker's clients (list) */
    int nclients;
    struct event *tick;        /* trims idle clients once a second */
    struct authq *authq;       /* auth_query lookups answering on this loop, made on first use */
    uint32_t rng;
    uint64_t parked_gen;       /* the last world stop it parked for */
    struct stream_loop loop;   /* scratch buffer and cached clock of this loop */
};

/* Who stops the world, and how many workers are parked meanwhile. */
struct world {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int owner;                 /* worker id, -1 while the world runs */
    pthread_t owner_thread;
    int depth;                 /* nested stops by the owner */
    int parked;
    uint64_t gen;
};

/* Make the workers (bases, not threads yet). Worker 0 takes main_base
 * (borrowed). 0 or -1. */
int workers_new(struct daemon *d, int n, struct event_base *main_base);
/* Start the threads of workers 1..n-1. 0 or -1 (logged). */
int workers_run(struct daemon *d);
/* Break the other loops and join their threads; their bases stay so that
 * teardown can close clients and run the base once more. */
void workers_join(struct daemon *d);
void workers_free(struct daemon *d);

/* Where a new client goes: the next worker, round robin. */
struct worker *worker_pick(struct daemon *d);
/* Run fn(arg) on w's thread soon (never inside this call). 0 or -1. */
int worker_post(struct worker *w, event_callback_fn fn, void *arg);
/* The loop's clock for statistics: read once per event callback. */
static inline int64_t worker_now(struct worker *w)
{
    return stream_loop_now(&w->loop);
}
uint32_t worker_random(struct worker *w);

/* Stop every other worker at a safe point and return once they are all
 * parked; nested calls by the same thread are counted. A no-op with one
 * worker. Only the main thread (self = worker 0) stops the world, from a
 * callback that is not a client's or server's: workers post what needs it
 * there (admin commands). */
void world_stop(struct worker *self);
void world_start(struct worker *self);

/* Is this thread the one that stopped the world (or is there one worker)? */
int world_stopped_here(struct daemon *d);

#endif
