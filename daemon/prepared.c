/*
 * Bookkeeping for prepared statements shared over pooled servers (see
 * prepared.h): three small hash tables. The registry interns (query, types)
 * so that one statement is prepared once per server however many clients
 * use it; clients map their own names onto it; servers remember what they
 * hold in LRU order so the set stays within max_prepared_statements.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "list.h" /* libweir's intrusive list */
#include "prepared.h"

/* FNV-1a: statement texts are short and hashed once per Parse. */
static uint32_t hash_bytes(uint32_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* ---- registry ---- */

/* Shared by every worker: interning and the last unref take its lock. */
struct pstmt_registry {
    pthread_mutex_t lock;
    struct pstmt **buckets;
    size_t nbuckets, count;
    uint64_t next_id;
};

struct pstmt_registry *pstmt_registry_new(void)
{
    struct pstmt_registry *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->nbuckets = 1024;
    r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
    if (r->buckets == NULL || pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r->buckets);
        free(r);
        return NULL;
    }
    return r;
}

static void pstmt_free(struct pstmt *p)
{
    free(p->query);
    free(p->types);
    free(p);
}

void pstmt_registry_free(struct pstmt_registry *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nbuckets; i++) {
        while (r->buckets[i]) {
            struct pstmt *p = r->buckets[i];
            r->buckets[i] = p->hnext;
            pstmt_free(p);
        }
    }
    free(r->buckets);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static int pstmt_matches(const struct pstmt *p, uint32_t h, const char *query, const uint8_t *types,
                         uint16_t ntypes)
{
    return p->hash == h && p->ntypes == ntypes && strcmp(p->query, query) == 0 &&
           (ntypes == 0 || memcmp(p->types, types, (size_t)ntypes * 4) == 0);
}

static struct pstmt *intern_locked(struct pstmt_registry *r, const char *query, const uint8_t *types,
                                   uint16_t ntypes);

struct pstmt *pstmt_intern(struct pstmt_registry *r, const char *query, const uint8_t *types, uint16_t ntypes)
{
    struct pstmt *p;

    pthread_mutex_lock(&r->lock);
    p = intern_locked(r, query, types, ntypes);
    pthread_mutex_unlock(&r->lock);
    return p;
}

static struct pstmt *intern_locked(struct pstmt_registry *r, const char *query, const uint8_t *types,
                                   uint16_t ntypes)
{
    uint32_t h = hash_bytes(hash_bytes(2166136261u, query, strlen(query)), types, (size_t)ntypes * 4);
    struct pstmt **bucket = &r->buckets[h & (r->nbuckets - 1)];
    struct pstmt *p;

    for (p = *bucket; p; p = p->hnext) {
        if (pstmt_matches(p, h, query, types, ntypes)) {
            pstmt_ref(p);
            return p;
        }
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->query = strdup(query)) == NULL ||
        (ntypes && (p->types = malloc((size_t)ntypes * 4)) == NULL)) {
        if (p)
            free(p->query);
        free(p);
        return NULL;
    }
    if (ntypes)
        memcpy(p->types, types, (size_t)ntypes * 4);
    p->ntypes = ntypes;
    p->hash = h;
    p->id = ++r->next_id;
    snprintf(p->server_name, sizeof(p->server_name), "weir_%llu", (unsigned long long)p->id);
    p->refs = 1;
    p->hnext = *bucket;
    *bucket = p;
    r->count++;
    return p;
}

void pstmt_unref(struct pstmt_registry *r, struct pstmt *p)
{
    struct pstmt **pp;

    if (p == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    for (pp = &r->buckets[p->hash & (r->nbuckets - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == p) {
            *pp = p->hnext;
            break;
        }
    }
    r->count--;
    pthread_mutex_unlock(&r->lock);
    pstmt_free(p);
}

size_t pstmt_registry_count(struct pstmt_registry *r)
{
    size_t n;

    pthread_mutex_lock(&r->lock);
    n = r->count;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* ---- a client's names ---- */

struct cname {
    struct cname *next;
    struct pstmt *p;
    uint32_t hash;
    char name[];
};

struct client_stmts {
    struct cname **buckets;
    size_t nbuckets, count;
};

struct client_stmts *client_stmts_new(void)
{
    struct client_stmts *cs = calloc(1, sizeof(*cs));

    if (cs == NULL)
        return NULL;
    cs->nbuckets = 16;
    cs->buckets = calloc(cs->nbuckets, sizeof(*cs->buckets));
    if (cs->buckets == NULL) {
        free(cs);
        return NULL;
    }
    return cs;
}

void client_stmts_clear(struct client_stmts *cs, struct pstmt_registry *r)
{
    if (cs == NULL)
        return; /* a client that never named a statement (DEALLOCATE ALL first) */
    for (size_t i = 0; i < cs->nbuckets; i++) {
        while (cs->buckets[i]) {
            struct cname *n = cs->buckets[i];
            cs->buckets[i] = n->next;
            pstmt_unref(r, n->p);
            free(n);
        }
    }
    cs->count = 0;
}

void client_stmts_free(struct client_stmts *cs, struct pstmt_registry *r)
{
    if (cs == NULL)
        return;
    client_stmts_clear(cs, r);
    free(cs->buckets);
    free(cs);
}

static struct cname **cname_slot(const struct client_stmts *cs, const char *name, uint32_t *hash)
{
    uint32_t h = hash_bytes(2166136261u, name, strlen(name));
    struct cname **pp = &cs->buckets[h & (cs->nbuckets - 1)];

    while (*pp && ((*pp)->hash != h || strcmp((*pp)->name, name) != 0))
        pp = &(*pp)->next;
    if (hash)
        *hash = h;
    return pp;
}

struct pstmt *client_stmts_get(const struct client_stmts *cs, const char *name)
{
    struct cname **pp = cname_slot(cs, name, NULL);
    return *pp ? (*pp)->p : NULL;
}

static void cs_grow(struct client_stmts *cs)
{
    size_t n = cs->nbuckets * 4;
    struct cname **nb = calloc(n, sizeof(*nb));

    if (nb == NULL)
        return; /* keep working with longer chains */
    for (size_t i = 0; i < cs->nbuckets; i++) {
        while (cs->buckets[i]) {
            struct cname *c = cs->buckets[i];
            cs->buckets[i] = c->next;
            c->next = nb[c->hash & (n - 1)];
            nb[c->hash & (n - 1)] = c;
        }
    }
    free(cs->buckets);
    cs->buckets = nb;
    cs->nbuckets = n;
}

int client_stmts_put(struct client_stmts *cs, struct pstmt_registry *r, const char *name, struct pstmt *p)
{
    uint32_t h;
    struct cname **pp = cname_slot(cs, name, &h), *n;

    if (*pp) { /* callers check first; keep the newer binding */
        pstmt_unref(r, (*pp)->p);
        (*pp)->p = p;
        return 0;
    }
    n = malloc(sizeof(*n) + strlen(name) + 1);
    if (n == NULL)
        return -1;
    n->p = p;
    n->hash = h;
    strcpy(n->name, name);
    n->next = cs->buckets[h & (cs->nbuckets - 1)];
    cs->buckets[h & (cs->nbuckets - 1)] = n;
    if (++cs->count > cs->nbuckets * 2)
        cs_grow(cs);
    return 0;
}

int client_stmts_del(struct client_stmts *cs, struct pstmt_registry *r, const char *name)
{
    struct cname **pp, *n;

    if (cs == NULL)
        return 0;
    pp = cname_slot(cs, name, NULL);
    n = *pp;
    if (n == NULL)
        return 0;
    *pp = n->next;
    pstmt_unref(r, n->p);
    free(n);
    cs->count--;
    return 1;
}

size_t client_stmts_count(const struct client_stmts *cs)
{
    return cs ? cs->count : 0;
}

/* ---- a server's set ---- */

struct snode {
    struct snode *hnext;
    struct weir_link lru;
    struct pstmt *p;
};

struct server_stmts {
    struct snode **buckets;
    size_t nbuckets, count;
    int capacity;
    struct weir_link lru; /* most recent first */
};

struct server_stmts *server_stmts_new(int capacity)
{
    struct server_stmts *ss = calloc(1, sizeof(*ss));

    if (ss == NULL)
        return NULL;
    ss->nbuckets = 64;
    while ((int)ss->nbuckets < capacity && ss->nbuckets < 65536)
        ss->nbuckets <<= 1;
    ss->buckets = calloc(ss->nbuckets, sizeof(*ss->buckets));
    if (ss->buckets == NULL) {
        free(ss);
        return NULL;
    }
    ss->capacity = capacity;
    weir_list_init(&ss->lru);
    return ss;
}

static struct snode **snode_slot(const struct server_stmts *ss, const struct pstmt *p)
{
    struct snode **pp = &ss->buckets[p->id & (ss->nbuckets - 1)];
    while (*pp && (*pp)->p != p)
        pp = &(*pp)->hnext;
    return pp;
}

int server_stmts_has(struct server_stmts *ss, const struct pstmt *p)
{
    struct snode *n = *snode_slot(ss, p);

    if (n == NULL)
        return 0;
    weir_list_remove(&n->lru);
    weir_list_push_front(&ss->lru, &n->lru);
    return 1;
}

static struct pstmt *snode_unlink(struct server_stmts *ss, struct snode *n)
{
    struct snode **pp = snode_slot(ss, n->p);
    struct pstmt *p = n->p;

    *pp = n->hnext;
    weir_list_remove(&n->lru);
    free(n);
    ss->count--;
    return p;
}

int server_stmts_add(struct server_stmts *ss, struct pstmt *p, struct pstmt **evicted)
{
    struct snode *n;

    if (evicted)
        *evicted = NULL;
    if (server_stmts_has(ss, p))
        return 0;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return -1;
    n->p = p;
    pstmt_ref(p);
    n->hnext = ss->buckets[p->id & (ss->nbuckets - 1)];
    ss->buckets[p->id & (ss->nbuckets - 1)] = n;
    weir_list_push_front(&ss->lru, &n->lru);
    ss->count++;
    if (evicted && ss->capacity > 0 && (int)ss->count > ss->capacity)
        *evicted = snode_unlink(ss, weir_container_of(ss->lru.prev, struct snode, lru));
    return 0;
}

void server_stmts_del(struct server_stmts *ss, struct pstmt_registry *r, const struct pstmt *p)
{
    struct snode *n = *snode_slot(ss, p);

    if (n != NULL)
        pstmt_unref(r, snode_unlink(ss, n));
}

void server_stmts_clear(struct server_stmts *ss, struct pstmt_registry *r)
{
    while (!weir_list_empty(&ss->lru))
        pstmt_unref(r, snode_unlink(ss, weir_container_of(ss->lru.next, struct snode, lru)));
}

void server_stmts_free(struct server_stmts *ss, struct pstmt_registry *r)
{
    if (ss == NULL)
        return;
    server_stmts_clear(ss, r);
    free(ss->buckets);
    free(ss);
}

size_t server_stmts_count(const struct server_stmts *ss)
{
    return ss ? ss->count : 0;
}
