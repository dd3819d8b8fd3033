/*
 * The session parameters weir carries from client to server: their names as
 * PostgreSQL spells them, whether the server reports them (ParameterStatus),
 * and a small value set per client and per server whose strings are shared
 * and reference-counted, so that checking a client's settings against a
 * server's on every transaction is mostly comparing pointers.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon.h"

static const struct {
    const char *name;
    int reported;
} tracked[TP_COUNT] = {
    [TP_CLIENT_ENCODING] = {"client_encoding", 1},
    [TP_DATESTYLE] = {"DateStyle", 1},
    [TP_TIMEZONE] = {"TimeZone", 1},
    [TP_INTERVALSTYLE] = {"IntervalStyle", 1},
    [TP_STANDARD_CONFORMING_STRINGS] = {"standard_conforming_strings", 1},
    [TP_APPLICATION_NAME] = {"application_name", 1},
    [TP_EXTRA_FLOAT_DIGITS] = {"extra_float_digits", 0},
};

const char *tracked_param_name(int i)
{
    return tracked[i].name;
}

int tracked_param_reported(int i)
{
    return tracked[i].reported;
}

int tracked_param_index(const char *name)
{
    for (int i = 0; i < TP_COUNT; i++)
        if (strcasecmp(name, tracked[i].name) == 0)
            return i;
    return -1;
}

/* A value's header sits before its characters; the count is atomic because
 * a server and the clients it shares values with may live on different loops. */
struct pval {
    unsigned refs;
    char s[];
};

static struct pval *pval_of(const char *v)
{
    return (struct pval *)(void *)(v - offsetof(struct pval, s));
}

static const char *pval_ref(const char *v)
{
    if (v != NULL)
        __atomic_add_fetch(&pval_of(v)->refs, 1, __ATOMIC_RELAXED);
    return v;
}

static void pval_unref(const char *v)
{
    if (v != NULL && __atomic_sub_fetch(&pval_of(v)->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(pval_of(v));
}

static const char *pval_new(const char *value)
{
    size_t n = strlen(value) + 1;
    struct pval *pv = malloc(sizeof(*pv) + n);

    if (pv == NULL)
        return NULL;
    pv->refs = 1;
    memcpy(pv->s, value, n);
    return pv->s;
}

void param_set_put(struct param_set *p, int i, const char *value)
{
    const char *copy = value ? pval_new(value) : NULL;

    if (value && copy == NULL)
        return; /* keep the old value rather than lose it */
    pval_unref(p->v[i]);
    p->v[i] = copy;
}

void param_set_share(struct param_set *dst, int i, const struct param_set *src)
{
    const char *v = pval_ref(src->v[i]);

    pval_unref(dst->v[i]);
    dst->v[i] = v;
}

int param_same_slow(struct param_set *have, int i, struct param_set *want)
{
    if (have->v[i] == NULL || strcmp(have->v[i], want->v[i]) != 0)
        return 0;
    /* Both keep the lower address: every copy of one value converges on a
     * single string, whichever clients and servers meet. */
    if ((uintptr_t)have->v[i] < (uintptr_t)want->v[i])
        param_set_share(want, i, have);
    else
        param_set_share(have, i, want);
    return 1;
}

void param_set_clear(struct param_set *p)
{
    for (int i = 0; i < TP_COUNT; i++) {
        pval_unref(p->v[i]);
        p->v[i] = NULL;
    }
}
