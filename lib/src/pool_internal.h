/*
 * The Pool's private structures, shared by the core (pool.c) and the two
 * checkout fronts (pool_checkout.c). Not installed.
 */
#ifndef WEIR_POOL_INTERNAL_H
#define WEIR_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <event2/event_struct.h>
#include <event2/util.h>
#include <weir/pool.h>

#include "internal.h"
#include "list.h"

enum item_state {
    ITEM_CONNECTING,
    ITEM_IDLE,
    ITEM_OUT,
    ITEM_PINGING,
    ITEM_RESETTING,
    ITEM_CLOSED,
    ITEM_NSTATES
};

struct weir_pooled {
    weir_pool *pool;
    void *dconn;
    enum item_state state;
    uint64_t generation;
    int64_t created_us, expires_us, idle_since_us, out_since_us, op_start_us;
    struct event *watch_ev;  /* idle: server closed it? (pool base) */
    struct event *op_ev;     /* connect/ping/reset progress (pool base) */
    int invalid;             /* weir_pool_invalidate(): close, never reuse */
    int reserved;            /* holds a slot in each of the pool's groups */
    int targeted;            /* the chooser picked a target: release it */
    int connected;           /* the connect succeeded */
    uintptr_t target;        /* the chooser's tag */
    uintptr_t affinity;      /* the caller's: who used it last (weir_pooled_set_affinity) */
    void *data;              /* caller's attachment */
    char close_reason[128];  /* why it was retired (weir_pooled_close_reason), cut to fit */
    void (*data_free)(void *data);
    struct weir_link all_link;
    struct weir_link idle_link; /* idle list, ops list, or a local list */
};

struct weir_pool_waiter {
    weir_pool *pool;
    struct weir_link link;
    int64_t enqueued_us;
    int done, status;
    weir_pooled *conn;
    pthread_cond_t *cond;    /* blocking front */
    struct event *ev;        /* async front: on the caller's base (ev_storage) */
    struct event ev_storage; /* embedded: a spare waiter is freed without its base */
    weir_pool_cb cb;
    void *arg;
    weir_pool_waiter *spare_next; /* in the pool's spare list */
};

/* Async waiters kept for reuse (with their event), so a busy pool's
 * check-outs that must wait allocate nothing. */
#define POOL_SPARE_WAITERS 64

/* A pool's place in one of its groups' member lists. */
struct pool_membership {
    struct weir_link link;
    weir_pool *pool;
};

/* Here rather than in pool_group.c so that a check-in can see without a
 * call whether a group has a limit at all (group_limited). */
struct weir_pool_group {
    pthread_mutex_t lock;
    int max;                 /* 0 = unlimited; written under lock, read atomically */
    int count;               /* connections open or opening in member pools */
    struct weir_link members;
};

/* Does the group limit anything? Without the group's lock: a limit set
 * meanwhile is seen by the next check, as with the lock. */
static inline int group_limited(weir_pool_group *g)
{
    return __atomic_load_n(&g->max, __ATOMIC_RELAXED) != 0;
}

struct weir_pool {
    pthread_mutex_t lock;
    weir_pool_config cfg;    /* conninfo and name point at the copies below */
    char *conninfo, *name;
    const weir_dialect *d;
    struct event_base *base;
    struct event *kick_ev, *tick_ev;
    int refs;                /* owner + blocked/async waiters + items out after close */
    int closed, paused, draining;
    uint64_t generation;
    struct weir_link all, idle, waiters, ops;
    weir_pool_waiter *spare; /* finished async waiters, under lock */
    int nspare;
    int nwaiters;
    int count[ITEM_NSTATES];
    int open;                /* every state but CLOSED: the pool's total */
    int64_t next_connect_us;
    int64_t overflow_due_us;  /* when the oldest waiter may use overflow */
    int backoff_ms;
    uint64_t rng;
    char last_error[256];
    weir_pool_stats st;      /* counters; sizes are filled in on snapshot */
    struct pool_membership membership[WEIR_POOL_MAX_GROUPS];
    atomic_int evict_wanted; /* a group member needs one of our idle slots */
    atomic_int idle_hint;    /* count[ITEM_IDLE], readable without the lock */
};

/* Under lock, the pool neither closed nor draining: an idle connection, now
 * OUT, or NULL (*kick set when the pool thread has work: pings, retired). */
WEIR_INTERNAL weir_pooled *pool_take_idle(weir_pool *pool, int *kick);
WEIR_INTERNAL weir_pooled *pool_pick_idle(weir_pool *pool);
WEIR_INTERNAL int pool_needs_ping(const weir_pool *pool, const weir_pooled *item, int64_t now);
WEIR_INTERNAL void pool_request_work(weir_pool *pool);
WEIR_INTERNAL void pool_ref(weir_pool *pool);
WEIR_INTERNAL int pool_unref(weir_pool *pool);
WEIR_INTERNAL void pool_destroy(weir_pool *pool);
/* Waiters: enqueue takes a pool reference that the waiter's owner drops. */
WEIR_INTERNAL void pool_waiter_enqueue(weir_pool *pool, weir_pool_waiter *w);
WEIR_INTERNAL void pool_waiter_expire(weir_pool *pool, weir_pool_waiter *w);
WEIR_INTERNAL void pool_waiter_withdraw(weir_pool *pool, weir_pool_waiter *w);
/* Groups (pool_group.c). */
WEIR_INTERNAL void group_join(weir_pool_group *g, struct pool_membership *m);
WEIR_INTERNAL void group_leave(weir_pool_group *g, struct pool_membership *m);
WEIR_INTERNAL int group_room(weir_pool_group *g);
WEIR_INTERNAL int group_reserve(weir_pool_group *g);
WEIR_INTERNAL void group_release(weir_pool_group *g);
WEIR_INTERNAL void group_kick_members(weir_pool_group *g, weir_pool *except);
WEIR_INTERNAL void group_request_evict(weir_pool_group *g, weir_pool *requester);
WEIR_INTERNAL void group_idle_available(weir_pool_group *g, weir_pool *owner);
WEIR_INTERNAL void pool_watch_cb(evutil_socket_t fd, short what, void *arg);

#endif
