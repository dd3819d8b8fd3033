/*
 * Per-database statistics (see stats.h): sums of the pools' counters plus
 * what freed pools left behind, the averages of the last stats_period, the
 * periodic "stats:" log line in PgBouncer's wording, and the per-pool view
 * of clients and servers that SHOW POOLS and /metrics share. Nothing here
 * changes a connection; it only reads the daemon's lists.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "client.h"
#include "config.h"
#include "pooler.h"
#include "server.h"
#include "stats.h"

#define USEC 1000000ULL

/* What one database has counted, beyond its live pools. */
struct db_record {
    struct db_record *next;
    char *name;
    struct db_totals retired;      /* from pools already freed */
    struct db_histograms retired_hist;
    struct db_totals last;         /* totals at the end of the last period */
    struct db_averages avg;        /* over the last period */
};

struct stats_ctx {
    struct daemon *d;
    struct event *timer;
    struct db_record *dbs;
    struct db_totals all_last;
    struct db_averages all_avg;
    int64_t last_us;               /* when the last period ended */
    uint64_t admin_count;
};

/* ---- records ---- */

static struct db_record *record_find(const struct stats_ctx *st, const char *name)
{
    for (struct db_record *r = st ? st->dbs : NULL; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

static struct db_record *record_get(struct stats_ctx *st, const char *name)
{
    struct db_record *r = record_find(st, name);

    if (r != NULL || st == NULL)
        return r;
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->name = strdup(name)) == NULL) {
        free(r);
        return NULL;
    }
    r->next = st->dbs;
    st->dbs = r;
    return r;
}

/* With the world stopped: every worker's counters of the pool. */
static void totals_add_pool(struct db_totals *t, const struct dpool *dp)
{
    for (int i = 0; i < (dp->d->nworkers > 0 ? dp->d->nworkers : 1); i++) {
        const struct dp_counters *c = &dp->ctr[i];
        t->xact_count += c->xact_count;
        t->query_count += c->query_count;
        t->bytes_in += c->bytes_in;
        t->bytes_out += c->bytes_out;
        t->xact_us += c->xact_us;
        t->query_us += c->query_us;
        t->wait_us += c->wait_us;
    }
}

static void totals_add(struct db_totals *t, const struct db_totals *a)
{
    t->xact_count += a->xact_count;
    t->query_count += a->query_count;
    t->bytes_in += a->bytes_in;
    t->bytes_out += a->bytes_out;
    t->xact_us += a->xact_us;
    t->query_us += a->query_us;
    t->wait_us += a->wait_us;
}

static void hist_add_pool(struct db_histograms *h, struct dpool *dp)
{
    weir_pool_stats ps;

    weir_pool_get_stats(dp->pool, &ps);
    for (int i = 0; i < WEIR_HIST_BUCKETS; i++) {
        h->wait[i] += ps.wait_hist[i];
        h->hold[i] += ps.hold_hist[i];
    }
    h->wait_us_total += ps.wait_us_total;
    h->hold_us_total += ps.hold_us_total;
}

void stats_pool_gone(struct daemon *d, struct dpool *dp)
{
    struct db_record *r = record_get(d->stats_ctx, dp->dbname);

    if (r == NULL)
        return;
    totals_add_pool(&r->retired, dp);
    hist_add_pool(&r->retired_hist, dp);
}

void stats_db_forget(struct daemon *d, const char *name)
{
    struct db_record **pp;

    for (pp = d->stats_ctx ? &d->stats_ctx->dbs : NULL; pp && *pp; pp = &(*pp)->next) {
        struct db_record *r = *pp;
        if (strcmp(r->name, name) == 0) {
            *pp = r->next;
            free(r->name);
            free(r);
            return;
        }
    }
}

void stats_count_admin(struct daemon *d)
{
    if (d->stats_ctx)
        d->stats_ctx->admin_count++;
}

uint64_t stats_admin_count(const struct daemon *d)
{
    return d->stats_ctx ? d->stats_ctx->admin_count : 0;
}

/* ---- reading ---- */

void stats_db_totals(struct daemon *d, const char *name, struct db_totals *out)
{
    memset(out, 0, sizeof(*out));
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (name == NULL || strcmp(dp->dbname, name) == 0)
            totals_add_pool(out, dp);
    for (struct db_record *r = d->stats_ctx ? d->stats_ctx->dbs : NULL; r; r = r->next)
        if (name == NULL || strcmp(r->name, name) == 0)
            totals_add(out, &r->retired);
}

void stats_db_averages(struct daemon *d, const char *name, struct db_averages *out)
{
    const struct db_record *r = record_find(d->stats_ctx, name);

    if (r)
        *out = r->avg;
    else
        memset(out, 0, sizeof(*out));
}

void stats_all_averages(struct daemon *d, struct db_averages *out)
{
    if (d->stats_ctx)
        *out = d->stats_ctx->all_avg;
    else
        memset(out, 0, sizeof(*out));
}

void stats_db_histograms(struct daemon *d, const char *name, struct db_histograms *out)
{
    const struct db_record *r = record_find(d->stats_ctx, name);

    memset(out, 0, sizeof(*out));
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (strcmp(dp->dbname, name) == 0)
            hist_add_pool(out, dp);
    if (r == NULL)
        return;
    for (int i = 0; i < WEIR_HIST_BUCKETS; i++) {
        out->wait[i] += r->retired_hist.wait[i];
        out->hold[i] += r->retired_hist.hold[i];
    }
    out->wait_us_total += r->retired_hist.wait_us_total;
    out->hold_us_total += r->retired_hist.hold_us_total;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int stats_db_names(struct daemon *d, const char ***names)
{
    size_t cap = d->cfg->n_dbs, n = 0, out = 0;
    const char **v;

    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        cap++;
    for (struct db_record *r = d->stats_ctx ? d->stats_ctx->dbs : NULL; r; r = r->next)
        cap++;
    v = malloc((cap ? cap : 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    for (size_t i = 0; i < d->cfg->n_dbs; i++)
        if (strcmp(d->cfg->dbs[i].name, "*") != 0)
            v[n++] = d->cfg->dbs[i].name;
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        v[n++] = dp->dbname;
    for (struct db_record *r = d->stats_ctx ? d->stats_ctx->dbs : NULL; r; r = r->next)
        v[n++] = r->name;
    qsort(v, n, sizeof(*v), cmp_names);
    for (size_t i = 0; i < n; i++)
        if (out == 0 || strcmp(v[out - 1], v[i]) != 0)
            v[out++] = v[i];
    *names = v;
    return (int)out;
}

/* ---- pools ---- */

void stats_pool_view(struct daemon *d, struct dpool *dp, struct pool_view *out)
{
    int64_t now = weir__now_us();
    weir_pool_stats ps;

    memset(out, 0, sizeof(*out));
    for (const struct client *c = daemon_first_client(d); c; c = daemon_next_client(d, c)) {
        if (c->dp != dp || c->admin)
            continue;
        switch (c->state) {
        case CL_IDLE:
        case CL_ACTIVE:
            out->cl_active++;
            break;
        case CL_WAITING:
            out->cl_waiting++;
            if (now - c->wait_start_us > out->maxwait_us)
                out->maxwait_us = now - c->wait_start_us;
            break;
        case CL_WELCOME: /* waiting for a first server's parameters */
            out->cl_waiting++;
            break;
        case CL_STARTUP:
        case CL_AUTH:
            out->cl_login++;
            break;
        default:
            break;
        }
    }
    for (const struct server *s = d->servers; s; s = s->next) {
        if (s->dp != dp)
            continue;
        if (s->state == SV_LINKED || s->state == SV_SETUP)
            out->sv_active++;
        else if (s->state == SV_RESETTING || s->state == SV_CHECKING)
            out->sv_tested++;
    }
    weir_pool_get_stats(dp->pool, &ps);
    out->sv_idle = ps.idle;
    out->sv_tested += ps.busy;
    out->sv_login = ps.connecting;
}

/* ---- the period ---- */

static uint64_t per_second(uint64_t delta, int64_t dur_us)
{
    return dur_us > 0 ? (uint64_t)((double)delta * USEC / (double)dur_us) : 0;
}

static void average(const struct db_totals *cur, const struct db_totals *old, int64_t dur_us,
                    struct db_averages *avg)
{
    uint64_t xacts = cur->xact_count - old->xact_count, queries = cur->query_count - old->query_count;

    avg->xact_count = per_second(xacts, dur_us);
    avg->query_count = per_second(queries, dur_us);
    avg->bytes_in = per_second(cur->bytes_in - old->bytes_in, dur_us);
    avg->bytes_out = per_second(cur->bytes_out - old->bytes_out, dur_us);
    avg->xact_us = xacts ? (cur->xact_us - old->xact_us) / xacts : 0;
    avg->query_us = queries ? (cur->query_us - old->query_us) / queries : 0;
    avg->wait_us = per_second(cur->wait_us - old->wait_us, dur_us);
}

static void stats_arm(struct stats_ctx *st)
{
    struct timeval tv = {st->d->cfg->stats_period > 0 ? st->d->cfg->stats_period : 60, 0};

    event_add(st->timer, &tv);
}

static void stats_period_stopped(struct stats_ctx *st);

static void stats_period_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stats_ctx *st = arg;
    struct worker *m = daemon_main_worker(st->d);

    (void)fd;
    (void)what;
    world_stop(m); /* the counters of pools every worker uses */
    stats_period_stopped(st);
    world_start(m);
}

static void stats_period_stopped(struct stats_ctx *st)
{
    struct daemon *d = st->d;
    int64_t now = weir__now_us(), dur = now - st->last_us;
    const char **names = NULL;
    int n = stats_db_names(d, &names);
    struct db_totals all;

    for (int i = 0; i < n; i++) {
        struct db_record *r = record_get(st, names[i]);
        struct db_totals cur;
        if (r == NULL)
            continue;
        stats_db_totals(d, r->name, &cur);
        average(&cur, &r->last, dur, &r->avg);
        r->last = cur;
    }
    free(names);
    stats_db_totals(d, NULL, &all);
    average(&all, &st->all_last, dur, &st->all_avg);
    st->all_last = all;
    st->last_us = now;
    if (d->cfg->log_stats)
        log_at(&d->log, LG_LOG,
               "stats: %llu xacts/s, %llu queries/s, in %llu B/s, out %llu B/s, xact %llu us, query %llu us, "
               "wait %llu us",
               (unsigned long long)st->all_avg.xact_count, (unsigned long long)st->all_avg.query_count,
               (unsigned long long)st->all_avg.bytes_in, (unsigned long long)st->all_avg.bytes_out,
               (unsigned long long)st->all_avg.xact_us, (unsigned long long)st->all_avg.query_us,
               (unsigned long long)st->all_avg.wait_us);
    stats_arm(st);
}

int stats_start(struct daemon *d)
{
    struct stats_ctx *st = calloc(1, sizeof(*st));

    if (st == NULL || (st->timer = evtimer_new(d->base, stats_period_cb, st)) == NULL) {
        free(st);
        log_at(&d->log, LG_ERROR, "out of memory starting the stats timer");
        return -1;
    }
    st->d = d;
    st->last_us = weir__now_us();
    d->stats_ctx = st;
    stats_arm(st);
    return 0;
}

void stats_stop(struct daemon *d)
{
    struct stats_ctx *st = d->stats_ctx;

    if (st == NULL)
        return;
    event_free(st->timer);
    while (st->dbs) {
        struct db_record *r = st->dbs;
        st->dbs = r->next;
        free(r->name);
        free(r);
    }
    free(st);
    d->stats_ctx = NULL;
}
