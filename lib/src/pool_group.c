/*
 * Pool groups: a connection limit shared by several pools, as PgBouncer's
 * max_db_connections (all pools of one database) and max_user_connections
 * (all pools of one user). A pool reserves a slot in each of its groups
 * before it starts a connection and gives it back when the connection
 * closes; a pool with waiters that finds a group full asks the other members
 * to close an idle connection, so one pool's idle servers cannot starve
 * another's clients. Lock order: a pool's lock, then its groups' locks.
 */
#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>

#include "pool_internal.h"

int weir_pool_group_new(int max_connections, weir_pool_group **out)
{
    weir_pool_group *g;

    *out = NULL;
    if (max_connections < 0)
        return WEIR_EINVAL;
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return WEIR_ENOMEM;
    if (pthread_mutex_init(&g->lock, NULL) != 0) {
        free(g);
        return WEIR_ESYS;
    }
    g->max = max_connections;
    weir_list_init(&g->members);
    *out = g;
    return 0;
}

void weir_pool_group_free(weir_pool_group *g)
{
    if (g == NULL)
        return;
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void weir_pool_group_set_max(weir_pool_group *g, int max_connections)
{
    pthread_mutex_lock(&g->lock);
    __atomic_store_n(&g->max, max_connections < 0 ? 0 : max_connections, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g->lock);
    group_kick_members(g, NULL);
}

int weir_pool_group_count(weir_pool_group *g)
{
    int n;
    pthread_mutex_lock(&g->lock);
    n = g->count;
    pthread_mutex_unlock(&g->lock);
    return n;
}

void group_join(weir_pool_group *g, struct pool_membership *m)
{
    pthread_mutex_lock(&g->lock);
    weir_list_push_back(&g->members, &m->link);
    pthread_mutex_unlock(&g->lock);
}

void group_leave(weir_pool_group *g, struct pool_membership *m)
{
    pthread_mutex_lock(&g->lock);
    weir_list_remove(&m->link);
    pthread_mutex_unlock(&g->lock);
}

int group_room(weir_pool_group *g)
{
    int room;
    if (__atomic_load_n(&g->max, __ATOMIC_RELAXED) == 0)
        return 0x7fffffff; /* unlimited: every check-in asks, keep it cheap */
    pthread_mutex_lock(&g->lock);
    room = g->max == 0 ? 0x7fffffff : g->max - g->count;
    pthread_mutex_unlock(&g->lock);
    return room < 0 ? 0 : room;
}

int group_reserve(weir_pool_group *g)
{
    int ok;
    pthread_mutex_lock(&g->lock);
    ok = g->max == 0 || g->count < g->max;
    if (ok)
        g->count++;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

void group_release(weir_pool_group *g)
{
    pthread_mutex_lock(&g->lock);
    g->count--;
    pthread_mutex_unlock(&g->lock);
    group_kick_members(g, NULL);
}

/* Wake the other members (they may have waiters a freed slot can serve). */
void group_kick_members(weir_pool_group *g, weir_pool *except)
{
    pthread_mutex_lock(&g->lock);
    for (struct weir_link *l = g->members.next; l != &g->members; l = l->next) {
        struct pool_membership *m = weir_container_of(l, struct pool_membership, link);
        if (m->pool != except && m->pool->kick_ev)
            event_active(m->pool->kick_ev, EV_TIMEOUT, 1);
    }
    pthread_mutex_unlock(&g->lock);
}

/* Ask one other member that has an idle connection to give it up. Members
 * without idle connections are left alone: waking them would only make them
 * ask back, and two pools with waiters would wake each other forever. */
void group_request_evict(weir_pool_group *g, weir_pool *requester)
{
    pthread_mutex_lock(&g->lock);
    for (struct weir_link *l = g->members.next; l != &g->members; l = l->next) {
        struct pool_membership *m = weir_container_of(l, struct pool_membership, link);
        if (m->pool != requester && atomic_load(&m->pool->idle_hint) > 0 &&
            !atomic_exchange(&m->pool->evict_wanted, 1)) {
            if (m->pool->kick_ev)
                event_active(m->pool->kick_ev, EV_TIMEOUT, 1);
            break;
        }
    }
    pthread_mutex_unlock(&g->lock);
}

/* A member now has an idle connection: if the group is full, members with
 * waiters may want it evicted. */
void group_idle_available(weir_pool_group *g, weir_pool *owner)
{
    if (group_room(g) == 0)
        group_kick_members(g, owner);
}
