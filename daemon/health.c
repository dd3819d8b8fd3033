/*
 * Health checks and host choice for multi-host [databases] entries (see
 * health.h). Each watched host has one check connection, driven by libpq's
 * non-blocking calls on the daemon's event loop:
 *
 *          timer, no connection, a host name     address
 *   WAIT ---------------------------> RESOLVING ------> CONNECTING
 *    |  \ timer, no connection, an address or a socket    |  connected
 *    |   `------------------------------------------------+--------> QUERYING
 *    |  \ timer, connection kept                                      |
 *    |   `------------------------------------------------------------'
 *    ^         answer (role, lag), failure or timeout                 |
 *    `----------------------------------------------------------------'
 *
 * Only check_set_state() moves it. A connection kept between checks is
 * watched for reading, so a server that goes away is noticed at once, not
 * at the next check. The result of each check decides the host's state
 * (UP, LAGGING, DOWN); a change of whether a host is usable acts on the
 * entry's pools (health_changed).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/crypto.h>

#include "config.h"
#include "health.h"
#include "pooler.h"

#define LAG_CHECKS_TO_EXCLUDE 2 /* a momentary replay gap is not lag */
/* New connections wait this long at most for every host's first check. */
#define FIRST_CHECKS_GRACE_US 1000000

static const char check_query[] =
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() AND "
    "pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn() THEN "
    "COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END";

static const char *const check_state_names[] = {"wait", "resolving", "connecting", "querying"};
static const unsigned char check_transitions[4][4] = {
    [CHECK_WAIT] = {[CHECK_RESOLVING] = 1, [CHECK_CONNECTING] = 1, [CHECK_QUERYING] = 1},
    [CHECK_RESOLVING] = {[CHECK_WAIT] = 1, [CHECK_CONNECTING] = 1},
    [CHECK_CONNECTING] = {[CHECK_WAIT] = 1, [CHECK_QUERYING] = 1},
    [CHECK_QUERYING] = {[CHECK_WAIT] = 1},
};

/* One evdns lookup. Separate from the host so that a host freed meanwhile
 * only unhooks itself (hh = NULL); the callback always frees the job. */
struct resolve_job {
    struct ha_host *hh;
    struct evdns_getaddrinfo_request *req;
};

static void check_set_state(struct ha_host *hh, enum check_state to)
{
    struct daemon *d = hh->db->h->d;

    if (!check_transitions[hh->cs][to])
        log_at(&d->log, LG_ERROR, "health %s %s:%s: invalid check transition %s -> %s", hh->db->name,
               hh->host, hh->port, check_state_names[hh->cs], check_state_names[to]);
    hh->cs = to;
}

const char *health_role_name(enum host_role r)
{
    return r == ROLE_PRIMARY ? "primary" : r == ROLE_STANDBY ? "standby" : "unknown";
}

const char *health_state_name(enum host_state s)
{
    static const char *const names[] = {"unchecked", "up", "lagging", "down"};
    return names[s];
}

/* ---- configuration ---- */

/* The n-th element of a comma-separated list, or its only element. */
static char *list_item(const char *list, int n)
{
    const char *p = list;
    char *out;
    size_t len;

    for (int i = 0; i < n && strchr(p, ','); i++)
        p = strchr(p, ',') + 1;
    len = strcspn(p, ",");
    out = malloc(len + 1);
    if (out) {
        memcpy(out, p, len);
        out[len] = '\0';
    }
    return out;
}

static const char *db_extra(const struct db_config *db, const char *key)
{
    for (size_t i = 0; i < db->n_extra; i++)
        if (strcmp(db->extra[i].key, key) == 0)
            return db->extra[i].value;
    return NULL;
}

static enum ha_want want_of(const char *tsa)
{
    if (strcasecmp(tsa, "read-write") == 0 || strcasecmp(tsa, "primary") == 0)
        return WANT_PRIMARY;
    if (strcasecmp(tsa, "standby") == 0 || strcasecmp(tsa, "read-only") == 0)
        return WANT_STANDBY;
    if (strcasecmp(tsa, "prefer-standby") == 0)
        return WANT_PREFER_STANDBY;
    return WANT_ANY;
}

/* Watched: several hosts, or one whose role matters; hostaddr lists are
 * left to libpq (a host here is what the chooser overrides). */
static int db_watched(const struct weir_config *cfg, const struct db_config *db)
{
    const char *tsa = db_extra(db, "target_session_attrs");

    if (cfg->health_check_period_us <= 0 || db->host == NULL || db->host[0] == '\0' || db_extra(db, "hostaddr"))
        return 0;
    return strchr(db->host, ',') != NULL || (tsa && want_of(tsa) != WANT_ANY);
}

static char *db_key(const struct db_config *db)
{
    const char *tsa = db_extra(db, "target_session_attrs");
    size_t len = strlen(db->host) + (db->port ? strlen(db->port) : 0) + (tsa ? strlen(tsa) : 0) + 4;
    char *k = malloc(len);

    if (k)
        snprintf(k, len, "%s|%s|%s", db->host, db->port ? db->port : "", tsa ? tsa : "");
    return k;
}

static void host_close_check(struct ha_host *hh)
{
    if (hh->resolving) {
        struct resolve_job *job = hh->resolving;
        hh->resolving = NULL;
        job->hh = NULL;
        evdns_getaddrinfo_cancel(job->req); /* its callback frees the job */
    }
    if (hh->io_ev) {
        event_free(hh->io_ev);
        hh->io_ev = NULL;
    }
    if (hh->pg) {
        PQfinish(hh->pg);
        hh->pg = NULL;
    }
}

static void ha_db_free(struct ha_db *hd)
{
    for (int i = 0; i < hd->nhosts; i++) {
        struct ha_host *hh = &hd->hosts[i];
        host_close_check(hh);
        if (hh->timer_ev)
            event_free(hh->timer_ev);
        free(hh->host);
        free(hh->port);
    }
    free(hd->hosts);
    free(hd->name);
    free(hd->key);
    free(hd->tsa);
    free(hd->check_conninfo);
    free(hd);
}

static void check_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct ha_db *ha_db_new(struct health *h, const struct db_config *db)
{
    const char *tsa = db_extra(db, "target_session_attrs");
    struct ha_db *hd = calloc(1, sizeof(*hd));
    int n = 1;

    if (hd == NULL)
        return NULL;
    for (const char *p = db->host; *p; p++)
        n += *p == ',';
    hd->h = h;
    hd->name = strdup(db->name);
    hd->key = db_key(db);
    hd->tsa = strdup(tsa ? tsa : "any");
    hd->want = want_of(tsa ? tsa : "any");
    hd->balance = db->load_balance_hosts != CONFIG_UNSET ? db->load_balance_hosts : (int)h->d->cfg->load_balance_hosts;
    hd->hosts = calloc((size_t)n, sizeof(*hd->hosts));
    if (hd->name == NULL || hd->key == NULL || hd->tsa == NULL || hd->hosts == NULL) {
        ha_db_free(hd);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        struct ha_host *hh = &hd->hosts[hd->nhosts];
        hh->db = hd;
        hh->id = ++h->next_id;
        hh->host = list_item(db->host, i);
        hh->port = list_item(db->port && db->port[0] ? db->port : "5432", i);
        hh->timer_ev = evtimer_new(h->d->base, check_timer_cb, hh);
        hd->nhosts++;
        if (hh->host == NULL || hh->port == NULL || hh->timer_ev == NULL) {
            ha_db_free(hd);
            return NULL;
        }
        if (hh->port[0] == '\0') {
            free(hh->port);
            if ((hh->port = strdup("5432")) == NULL) {
                ha_db_free(hd);
                return NULL;
            }
        }
    }
    return hd;
}

struct ha_db *health_find_db(struct daemon *d, const char *name)
{
    if (d->health == NULL)
        return NULL;
    for (struct ha_db *hd = d->health->dbs; hd; hd = hd->next)
        if (strcmp(hd->name, name) == 0)
            return hd;
    return NULL;
}

struct ha_host *health_find_host(struct daemon *d, const char *dbname, uintptr_t tag)
{
    struct ha_db *hd = tag ? health_find_db(d, dbname) : NULL;

    for (int i = 0; hd && i < hd->nhosts; i++)
        if (hd->hosts[i].id == tag)
            return &hd->hosts[i];
    return NULL;
}

static void check_soon(struct ha_host *hh);

/* The checks' login from the config, when it names one (pooler.h): the
 * checks start as the config is loaded, so SHOW and /healthz know the
 * roles before any client comes. A login changed by a reload is used from
 * the next check connection on. Otherwise the entry's first pool gives it. */
static void use_config_login(struct daemon *d, struct ha_db *hd, const struct db_config *db)
{
    char *conninfo = pooler_check_conninfo(d, db);
    int first = hd->check_conninfo == NULL;

    if (conninfo == NULL)
        return;
    if (!first && strcmp(conninfo, hd->check_conninfo) == 0) {
        free(conninfo);
        return;
    }
    free(hd->check_conninfo);
    hd->check_conninfo = conninfo;
    if (first) {
        hd->started_us = weir__now_us();
        for (int i = 0; i < hd->nhosts; i++)
            check_soon(&hd->hosts[i]);
    }
}

/* Keep entries whose hosts are unchanged (their state and checks go on). */
void health_apply_config(struct daemon *d)
{
    struct health *h = d->health;
    struct ha_db *old, *fresh = NULL, **tail = &fresh;

    if (h == NULL)
        return;
    old = h->dbs;
    for (size_t i = 0; i < d->cfg->n_dbs; i++) {
        const struct db_config *db = &d->cfg->dbs[i];
        struct ha_db **pp, *hd = NULL;
        char *key;

        if (!db_watched(d->cfg, db) || (key = db_key(db)) == NULL)
            continue;
        for (pp = &old; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->name, db->name) == 0 && strcmp((*pp)->key, key) == 0) {
                hd = *pp;
                *pp = hd->next;
                break;
            }
        free(key);
        if (hd == NULL && (hd = ha_db_new(h, db)) == NULL) {
            log_at(&d->log, LG_ERROR, "health: out of memory; database %s not watched", db->name);
            continue;
        }
        hd->balance = db->load_balance_hosts != CONFIG_UNSET ? db->load_balance_hosts : (int)d->cfg->load_balance_hosts;
        use_config_login(d, hd, db);
        hd->next = NULL;
        *tail = hd;
        tail = &hd->next;
    }
    while (old) { /* removed or changed: their pools are retargeted by the pooler */
        struct ha_db *gone = old;
        old = gone->next;
        ha_db_free(gone);
    }
    h->dbs = fresh;
}

int health_start(struct daemon *d)
{
    d->health = calloc(1, sizeof(*d->health));
    if (d->health == NULL)
        return -1;
    d->health->d = d;
    health_apply_config(d);
    return 0;
}

void health_stop(struct daemon *d)
{
    struct health *h = d->health;

    if (h == NULL)
        return;
    while (h->dbs) {
        struct ha_db *hd = h->dbs;
        h->dbs = hd->next;
        ha_db_free(hd);
    }
    if (h->dns)
        evdns_base_free(h->dns, 1);
    free(h);
    d->health = NULL;
}

/* ---- what a state change does to the pools ---- */

int health_host_eligible(const struct ha_host *hh)
{
    enum ha_want want = hh->db->want;

    if (hh->state != HOST_UP)
        return 0;
    if (want == WANT_PRIMARY)
        return hh->role == ROLE_PRIMARY;
    if (want == WANT_STANDBY)
        return hh->role == ROLE_STANDBY;
    return hh->role != ROLE_UNKNOWN; /* prefer-standby and any: either, ordered by the chooser */
}

/* The host's eligibility changed from was to now: act on the entry's pools. */
static void health_changed(struct ha_host *hh, int was, enum host_role old_role, int first)
{
    struct ha_db *hd = hh->db;
    struct daemon *d = hd->h->d;
    int now = health_host_eligible(hh);

    log_at(&d->log, LG_LOG, "health %s %s:%s: %s, %s%s (was %s)", hd->name, hh->host, hh->port,
           health_role_name(hh->role), health_state_name(hh->state),
           now ? "; taking connections" : "; no new connections", health_role_name(old_role));
    world_stop(daemon_main_worker(d)); /* workers add pools to the list */
    for (struct dpool *dp = d->pools; dp; dp = dp->next) {
        if (dp->removed || strcmp(dp->dbname, hd->name) != 0)
            continue;
        if (was && !now) {
            /* Its connections go; so do those made before the checks knew
             * better (tag 0), which libpq may have put on this host. */
            if (hd->want == WANT_PRIMARY && old_role == ROLE_PRIMARY)
                weir_pool_invalidate_all(dp->pool); /* failover: the whole generation */
            weir_pool_invalidate_target(dp->pool, hh->id);
            weir_pool_invalidate_target(dp->pool, 0);
        } else if ((now && !was) || first) {
            weir_pool_retry_now(dp->pool); /* first: connects waited for this check */
        }
    }
    world_start(daemon_main_worker(d));
}

/* ---- the check connection ---- */

static int64_t period_us(const struct ha_host *hh)
{
    return hh->db->h->d->cfg->health_check_period_us;
}

static void schedule(struct ha_host *hh, int64_t after_us)
{
    struct timeval tv = {(time_t)(after_us / 1000000), (suseconds_t)(after_us % 1000000)};

    evtimer_del(hh->timer_ev);
    evtimer_add(hh->timer_ev, &tv);
    hh->due_us = weir__now_us() + after_us;
}

/* Doubling from health_check_period up to server_login_retry. */
static int64_t backoff_us(const struct ha_host *hh)
{
    int64_t p = period_us(hh), cap = hh->db->h->d->cfg->server_login_retry_us, b = p;

    if (cap < p)
        cap = p;
    for (int i = 1; i < hh->failures && b < cap; i++)
        b *= 2;
    return b < cap ? b : cap;
}

static void check_failed(struct ha_host *hh, const char *why)
{
    int was = health_host_eligible(hh);
    enum host_role role = hh->role;
    enum host_state before = hh->state;

    /* why may point into the connection's own buffer: copy it first */
    while (*why == ' ' || *why == '\n')
        why++;
    snprintf(hh->last_error, sizeof(hh->last_error), "%s", why[0] ? why : "server closed the connection");
    for (char *p = hh->last_error; *p; p++)
        if (*p == '\n')
            *p = ' ';
    host_close_check(hh);
    if (hh->cs != CHECK_WAIT)
        check_set_state(hh, CHECK_WAIT);
    hh->failures++;
    hh->check_failures++;
    hh->lag_over = 0;
    hh->state = HOST_DOWN;
    if (before != HOST_DOWN) {
        log_at(&hh->db->h->d->log, LG_WARNING, "health %s %s:%s: check failed: %s", hh->db->name, hh->host,
               hh->port, hh->last_error);
        health_changed(hh, was, role, before == HOST_UNCHECKED);
    }
    schedule(hh, backoff_us(hh));
}

static void check_answered(struct ha_host *hh, int in_recovery, double lag_s)
{
    const struct weir_config *cfg = hh->db->h->d->cfg;
    int was = health_host_eligible(hh);
    enum host_role old_role = hh->role;
    enum host_state old_state = hh->state;

    check_set_state(hh, CHECK_WAIT);
    hh->checks++;
    hh->failures = 0;
    hh->last_ok_us = weir__now_us();
    hh->last_error[0] = '\0';
    hh->role = in_recovery ? ROLE_STANDBY : ROLE_PRIMARY;
    hh->lag_s = in_recovery ? lag_s : 0;
    if (in_recovery && cfg->max_standby_lag_us > 0 && lag_s * 1e6 > (double)cfg->max_standby_lag_us)
        hh->lag_over++;
    else
        hh->lag_over = 0;
    hh->state = hh->lag_over >= LAG_CHECKS_TO_EXCLUDE || (hh->lag_over > 0 && old_state == HOST_LAGGING)
                    ? HOST_LAGGING
                    : HOST_UP;
    if (old_role != hh->role || old_state != hh->state)
        health_changed(hh, was, old_role, old_state == HOST_UNCHECKED);
    schedule(hh, period_us(hh));
}

static void check_io_cb(evutil_socket_t fd, short what, void *arg);

/* Wait on the connection's socket (it may change while connecting). */
static int check_arm(struct ha_host *hh, short what, int64_t timeout_us)
{
    struct daemon *d = hh->db->h->d;
    int fd = PQsocket(hh->pg);
    struct timeval tv = {(time_t)(timeout_us / 1000000), (suseconds_t)(timeout_us % 1000000)};

    if (fd < 0)
        return -1;
    if (hh->io_ev)
        event_free(hh->io_ev);
    hh->io_ev = event_new(d->base, fd, what, check_io_cb, hh);
    if (hh->io_ev == NULL)
        return -1;
    return event_add(hh->io_ev, timeout_us > 0 ? &tv : NULL);
}

static int64_t op_left_us(const struct ha_host *hh)
{
    int64_t limit = hh->db->h->d->cfg->server_connect_timeout_us;
    int64_t left;

    if (limit <= 0)
        limit = 15000000;
    left = hh->op_start_us + limit - weir__now_us();
    return left > 1000 ? left : 1000;
}

static void check_send(struct ha_host *hh)
{
    int rc;

    if (hh->cs != CHECK_QUERYING)
        check_set_state(hh, CHECK_QUERYING);
    hh->ans_recovery = -1;
    hh->ans_lag = 0;
    hh->ans_why[0] = '\0';
    if (!PQsendQuery(hh->pg, check_query)) {
        check_failed(hh, PQerrorMessage(hh->pg));
        return;
    }
    rc = PQflush(hh->pg);
    if (rc < 0 || check_arm(hh, rc == 1 ? EV_WRITE : EV_READ, op_left_us(hh)) != 0)
        check_failed(hh, "could not send the check query");
}

static void check_connect_step(struct ha_host *hh)
{
    switch (PQconnectPoll(hh->pg)) {
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(hh->pg, 1) != 0) {
            check_failed(hh, PQerrorMessage(hh->pg));
            return;
        }
        check_send(hh);
        return;
    case PGRES_POLLING_READING:
        if (check_arm(hh, EV_READ, op_left_us(hh)) != 0)
            check_failed(hh, "cannot wait for the server");
        return;
    case PGRES_POLLING_WRITING:
        if (check_arm(hh, EV_WRITE, op_left_us(hh)) != 0)
            check_failed(hh, "cannot wait for the server");
        return;
    default:
        check_failed(hh, PQerrorMessage(hh->pg));
        return;
    }
}

/* The answer is complete (every result read): judge it. */
static void check_judge(struct ha_host *hh)
{
    double lag = hh->ans_lag;

    if (hh->ans_recovery < 0 || !isfinite(lag)) {
        check_failed(hh, hh->ans_why[0] ? hh->ans_why : "no answer");
        return;
    }
    /* Keep the connection, watching it: a server going away is noticed now. */
    check_answered(hh, hh->ans_recovery, lag < 0 ? 0 : lag);
    if (hh->pg && check_arm(hh, EV_READ, 0) != 0)
        host_close_check(hh);
}

/*
 * Read what arrived, taking only the results libpq has whole: PQgetResult
 * waits (blocking, whatever the connection's mode) for the rest of an answer,
 * so it is called only while PQisBusy says it will not. A server that stalls
 * between its row and its ReadyForQuery costs this check its timeout, never
 * the loop. Once the last result is read, judge the answer.
 */
static void check_read_answer(struct ha_host *hh)
{
    PGresult *res;

    if (!PQconsumeInput(hh->pg)) {
        check_failed(hh, PQerrorMessage(hh->pg));
        return;
    }
    while (!PQisBusy(hh->pg)) {
        if ((res = PQgetResult(hh->pg)) == NULL) {
            check_judge(hh);
            return;
        }
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 2) {
            hh->ans_recovery = PQgetvalue(res, 0, 0)[0] == 't';
            hh->ans_lag = strtod(PQgetvalue(res, 0, 1), NULL);
        } else if (hh->ans_why[0] == '\0') {
            snprintf(hh->ans_why, sizeof(hh->ans_why), "%s",
                     PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : "unexpected answer");
        }
        PQclear(res);
    }
    if (check_arm(hh, EV_READ, op_left_us(hh)) != 0)
        check_failed(hh, "cannot wait for the server");
}

/* Input on a kept connection between checks: a notice, or goodbye. */
static void check_idle_input(struct ha_host *hh)
{
    PGnotify *n;

    if (!PQconsumeInput(hh->pg) || PQstatus(hh->pg) != CONNECTION_OK) {
        check_failed(hh, PQerrorMessage(hh->pg)[0] ? PQerrorMessage(hh->pg) : "server closed the connection");
        return;
    }
    while ((n = PQnotifies(hh->pg)) != NULL)
        PQfreemem(n);
    if (check_arm(hh, EV_READ, 0) != 0)
        host_close_check(hh);
}

static void check_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ha_host *hh = arg;

    (void)fd;
    if (what & EV_TIMEOUT) {
        check_failed(hh, hh->cs == CHECK_CONNECTING ? "check connect timed out" : "check query timed out");
        return;
    }
    switch (hh->cs) {
    case CHECK_CONNECTING:
        check_connect_step(hh);
        break;
    case CHECK_QUERYING:
        if (what & EV_WRITE) {
            int rc = PQflush(hh->pg);
            if (rc < 0 || check_arm(hh, rc == 1 ? EV_WRITE : EV_READ, op_left_us(hh)) != 0)
                check_failed(hh, "could not send the check query");
        } else {
            check_read_answer(hh);
        }
        break;
    case CHECK_WAIT:
        check_idle_input(hh);
        break;
    case CHECK_RESOLVING: /* no socket yet: nothing to do */
        break;
    }
}

/* Append ' key='value'' with libpq's quoting. */
static void put_kv(char *out, size_t *at, const char *key, const char *value)
{
    *at += (size_t)sprintf(out + *at, " %s='", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\')
            out[(*at)++] = '\\';
        out[(*at)++] = *p;
    }
    out[(*at)++] = '\'';
    out[*at] = '\0';
}

/* base with this host and port; libpq lets a later keyword override an
 * earlier one, so the entry's host list is replaced by this one host. */
static char *host_conninfo(const struct ha_host *hh, const char *base, const char *extra)
{
    size_t len = strlen(base) + 2 * (strlen(hh->host) + strlen(hh->port)) + strlen(hh->addr) + strlen(extra) + 48,
           at;
    char *s = malloc(len);

    if (s == NULL)
        return NULL;
    at = (size_t)sprintf(s, "%s", base);
    put_kv(s, &at, "host", hh->host);
    put_kv(s, &at, "port", hh->port);
    if (hh->addr[0]) /* looked up already: libpq must not block on DNS */
        put_kv(s, &at, "hostaddr", hh->addr);
    snprintf(s + at, len - at, "%s", extra);
    return s;
}

static void check_connect(struct ha_host *hh)
{
    char *conninfo = host_conninfo(hh, hh->db->check_conninfo,
                                   " target_session_attrs='any' gssencmode='disable' "
                                   "application_name='weir health check'");

    if (conninfo == NULL) {
        check_failed(hh, "out of memory");
        return;
    }
    hh->pg = PQconnectStart(conninfo);
    free(conninfo);
    check_set_state(hh, CHECK_CONNECTING);
    if (hh->pg == NULL || PQstatus(hh->pg) == CONNECTION_BAD) {
        check_failed(hh, hh->pg ? PQerrorMessage(hh->pg) : "out of memory");
        return;
    }
    if (check_arm(hh, EV_WRITE, op_left_us(hh)) != 0)
        check_failed(hh, "cannot wait for the server");
}

/* A name, not a socket directory nor an address: look it up first. */
static int needs_lookup(const struct ha_host *hh)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return hh->host[0] != '/' && hh->host[0] != '@' && inet_pton(AF_INET, hh->host, buf) != 1 &&
           inet_pton(AF_INET6, hh->host, buf) != 1;
}

static void resolved_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct resolve_job *job = arg;
    struct ha_host *hh = job->hh;
    char why[160];

    free(job);
    if (hh == NULL) { /* cancelled: the host was closed or freed */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    hh->resolving = NULL;
    if (result == 0 && res) {
        /* hostaddr takes one address: IPv4 when there is one (what servers
         * usually listen on), else the first */
        struct evutil_addrinfo *ai = res;
        const void *a;
        for (struct evutil_addrinfo *p = res; p; p = p->ai_next)
            if (p->ai_family == AF_INET) {
                ai = p;
                break;
            }
        a = ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                      : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        if (evutil_inet_ntop(ai->ai_family, a, hh->addr, sizeof(hh->addr)) == NULL)
            hh->addr[0] = '\0';
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (result != 0) {
        snprintf(why, sizeof(why), "could not resolve host \"%s\": %s", hh->host, evutil_gai_strerror(result));
        check_failed(hh, why);
        return;
    }
    check_connect(hh);
}

static struct evdns_base *health_dns(struct health *h)
{
    const char *conf = h->d->cfg->resolv_conf;

    if (!h->dns_tried) {
        h->dns_tried = 1;
        if (conf[0]) {
            h->dns = evdns_base_new(h->d->base, 0);
            if (h->dns && evdns_base_resolv_conf_parse(h->dns, DNS_OPTIONS_ALL, conf) != 0) {
                evdns_base_free(h->dns, 0);
                h->dns = NULL;
            }
        } else {
            h->dns = evdns_base_new(h->d->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        }
        if (h->dns == NULL)
            log_at(&h->d->log, LG_WARNING, "health: no DNS resolver; libpq resolves host names (blocking)");
    }
    return h->dns;
}

/* Look the host name up without blocking, then connect (to its address). */
static void check_resolve(struct ha_host *hh, struct evdns_base *dns)
{
    struct evutil_addrinfo hints;
    struct resolve_job *job = calloc(1, sizeof(*job));
    struct evdns_getaddrinfo_request *req;

    if (job == NULL) {
        check_connect(hh);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    job->hh = hh;
    hh->resolving = job;
    check_set_state(hh, CHECK_RESOLVING);
    req = evdns_getaddrinfo(dns, hh->host, hh->port, &hints, resolved_cb, job);
    if (hh->resolving == job) /* still pending (else the callback ran and freed it) */
        job->req = req;
}

static void check_start(struct ha_host *hh)
{
    struct evdns_base *dns;

    hh->op_start_us = weir__now_us();
    if (hh->pg && PQstatus(hh->pg) == CONNECTION_OK) {
        check_send(hh);
        return;
    }
    host_close_check(hh);
    if (needs_lookup(hh) && (dns = health_dns(hh->db->h)) != NULL)
        check_resolve(hh, dns);
    else
        check_connect(hh);
}

static void check_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ha_host *hh = arg;

    (void)fd;
    (void)what;
    hh->due_us = 0;
    if (hh->cs == CHECK_WAIT && hh->db->check_conninfo)
        check_start(hh);
}

/* Check now unless a check is under way. */
static void check_soon(struct ha_host *hh)
{
    if (hh->cs == CHECK_WAIT && hh->db->check_conninfo)
        schedule(hh, 0);
}

/* ---- the pools' side: choosing a host per server connection ---- */

/* Standbys first for prefer-standby; any role counts otherwise. */
static int candidate(const struct ha_host *hh, int standby_only)
{
    return health_host_eligible(hh) && (!standby_only || hh->role == ROLE_STANDBY);
}

/* The k-th candidate in list order. */
static struct ha_host *nth_candidate(struct ha_db *hd, int standby_only, int k)
{
    for (int i = 0; i < hd->nhosts; i++)
        if (candidate(&hd->hosts[i], standby_only) && k-- == 0)
            return &hd->hosts[i];
    return NULL;
}

/* disable: the first usable host, as libpq's order; round-robin: the next
 * one in turn; least-connections: the one with fewest, ties in turn. */
static struct ha_host *pick_host(struct ha_db *hd)
{
    int standby_only = 0, n = 0, start;
    struct ha_host *best = NULL;

    if (hd->want == WANT_PREFER_STANDBY)
        for (int i = 0; i < hd->nhosts && !standby_only; i++)
            standby_only = candidate(&hd->hosts[i], 1);
    for (int i = 0; i < hd->nhosts; i++)
        n += candidate(&hd->hosts[i], standby_only);
    if (n == 0)
        return NULL;
    if (hd->balance == LOAD_BALANCE_DISABLE)
        return nth_candidate(hd, standby_only, 0);
    start = (int)(hd->rr++ % (unsigned)n);
    if (hd->balance == LOAD_BALANCE_ROUND_ROBIN)
        return nth_candidate(hd, standby_only, start);
    for (int i = 0; i < n; i++) {
        struct ha_host *hh = nth_candidate(hd, standby_only, (start + i) % n);
        if (best == NULL || hh->nconns < best->nconns)
            best = hh;
    }
    return best;
}

/* Nothing checked yet, a first check under way: wait for it (the pool
 * retries when a host becomes usable). Every host failing: let libpq try. */
static int all_down_or_pending(const struct ha_db *hd, int *pending)
{
    int down = 0;

    *pending = 0;
    for (int i = 0; i < hd->nhosts; i++) {
        const struct ha_host *hh = &hd->hosts[i];
        if (hh->state == HOST_UNCHECKED)
            *pending = 1;
        down += hh->state == HOST_DOWN || hh->state == HOST_UNCHECKED;
    }
    return down == hd->nhosts;
}

static int health_choose(void *arg, const char *conninfo, char **out, uintptr_t *tag, char *errbuf, size_t errlen)
{
    struct dpool *dp = arg;
    struct ha_db *hd = health_find_db(dp->d, dp->dbname);
    struct ha_host *hh;
    int pending;

    if (hd == NULL)
        return 0; /* no longer watched: libpq decides */
    /* Until every host answered once (for a short while), wait: the hosts
     * not checked yet may be where these connections belong. */
    (void)all_down_or_pending(hd, &pending);
    if (pending && hd->check_conninfo && weir__now_us() - hd->started_us < FIRST_CHECKS_GRACE_US) {
        snprintf(errbuf, errlen, "waiting for the first health check of database %s", hd->name);
        return WEIR_EAGAIN;
    }
    if ((hh = pick_host(hd)) != NULL) {
        if ((*out = host_conninfo(hh, conninfo, "")) == NULL)
            return WEIR_ENOMEM;
        *tag = hh->id;
        hh->nconns++;
        return 0;
    }
    if (all_down_or_pending(hd, &pending)) {
        if (pending && hd->check_conninfo) {
            snprintf(errbuf, errlen, "waiting for the first health check of database %s", hd->name);
            return WEIR_EAGAIN;
        }
        return 0; /* the checks may be what fails (their login): let libpq try every host */
    }
    snprintf(errbuf, errlen, "no server for database %s is usable now (target_session_attrs=%s)", hd->name,
             hd->tsa);
    return WEIR_ECONNECT;
}

/* Does this SQLSTATE from a server of the entry say its host may have
 * failed over (see health.h)? */
static int failover_sign(const struct ha_db *hd, const char *sqlstate)
{
    if (strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0 || strcmp(sqlstate, "57P02") == 0 ||
        strcmp(sqlstate, "57P03") == 0)
        return 1;
    return hd->want == WANT_PRIMARY && strcmp(sqlstate, "25006") == 0;
}

/* Check now, or as soon as the last check is HA_ERROR_RECHECK_US old, unless
 * a check is under way or the timer fires sooner anyway. */
static void check_after_error(struct ha_host *hh)
{
    int64_t now = weir__now_us(), at = hh->op_start_us + HA_ERROR_RECHECK_US;

    if (hh->cs != CHECK_WAIT || hh->db->check_conninfo == NULL)
        return;
    if (at < now)
        at = now;
    if (hh->due_us == 0 || at < hh->due_us)
        schedule(hh, at - now);
}

/* Host bookkeeping lives on the main thread (its checks and timers run
 * there). A worker that closes or loses a server, or sees it report a
 * failover sign, sends its news there. */
enum news_kind { NEWS_LOST, NEWS_RELEASED, NEWS_ERROR };

struct host_news {
    struct daemon *d;
    char *dbname;
    uintptr_t tag;
    enum news_kind kind;
    int connected;        /* NEWS_RELEASED: the connect had succeeded */
    char sqlstate[6];     /* NEWS_ERROR */
};

static void host_news_apply(struct daemon *d, const struct host_news *n)
{
    struct ha_db *hd = health_find_db(d, n->dbname);

    if (hd && n->kind == NEWS_ERROR && !failover_sign(hd, n->sqlstate))
        return;
    for (int i = 0; hd && i < hd->nhosts; i++) {
        struct ha_host *hh = &hd->hosts[i];
        if (n->kind == NEWS_RELEASED) {
            if (hh->id != n->tag)
                continue;
            if (hh->nconns > 0)
                hh->nconns--;
            if (!n->connected) /* e.g. it refused, or is no longer what we want: look now */
                check_soon(hh);
        } else if (n->tag == 0 || hh->id == n->tag) {
            if (n->kind == NEWS_ERROR)
                check_after_error(hh);
            else
                check_soon(hh);
        }
    }
}

static void host_news_run(evutil_socket_t fd, short what, void *arg)
{
    struct host_news *n = arg;

    (void)fd;
    (void)what;
    if (!n->d->stopping)
        host_news_apply(n->d, n);
    free(n->dbname);
    free(n);
}

static void host_news(struct daemon *d, const char *dbname, uintptr_t tag, enum news_kind kind, int connected,
                      const char *sqlstate)
{
    struct host_news *n, local = {d, (char *)dbname, tag, kind, connected, ""};

    if (sqlstate)
        snprintf(local.sqlstate, sizeof(local.sqlstate), "%s", sqlstate);
    if (d->nworkers <= 1 || pthread_equal(pthread_self(), d->main_thread)) {
        host_news_apply(d, &local);
        return;
    }
    n = calloc(1, sizeof(*n));
    if (n == NULL || (n->dbname = strdup(dbname)) == NULL) {
        free(n);
        return; /* out of memory: the periodic check will see it */
    }
    local.dbname = n->dbname;
    *n = local;
    if (worker_post(daemon_main_worker(d), host_news_run, n) != 0) {
        free(n->dbname);
        free(n);
    }
}

static void health_release(void *arg, uintptr_t tag, int connected)
{
    struct dpool *dp = arg;

    host_news(dp->d, dp->dbname, tag, NEWS_RELEASED, connected, NULL);
}

/* The entry's first pool gives its checks a conninfo to log in with, when
 * the config named none (use_config_login). */
static void checks_start_here(struct daemon *d, const char *dbname, const char *conninfo)
{
    struct ha_db *hd = health_find_db(d, dbname);

    if (hd == NULL || hd->check_conninfo != NULL || (hd->check_conninfo = strdup(conninfo)) == NULL)
        return;
    hd->started_us = weir__now_us();
    for (int i = 0; i < hd->nhosts; i++)
        check_soon(&hd->hosts[i]);
}

struct checks_job {
    struct daemon *d;
    char *dbname, *conninfo;
};

static void checks_job_free(struct checks_job *j)
{
    free(j->dbname);
    if (j->conninfo) { /* it may hold a password */
        OPENSSL_cleanse(j->conninfo, strlen(j->conninfo));
        free(j->conninfo);
    }
    free(j);
}

static void checks_job_run(evutil_socket_t fd, short what, void *arg)
{
    struct checks_job *j = arg;

    (void)fd;
    (void)what;
    if (!j->d->stopping)
        checks_start_here(j->d, j->dbname, j->conninfo);
    checks_job_free(j);
}

/* Checks live on the main thread; a pool made by a worker asks there. The
 * job runs before the pool's first connect, which the main loop runs too. */
static void checks_start(struct daemon *d, const char *dbname, const char *conninfo)
{
    struct checks_job *j;

    if (d->nworkers <= 1 || pthread_equal(pthread_self(), d->main_thread)) {
        checks_start_here(d, dbname, conninfo);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL || (j->dbname = strdup(dbname)) == NULL || (j->conninfo = strdup(conninfo)) == NULL) {
        if (j)
            checks_job_free(j);
        return; /* out of memory: libpq picks hosts until a reload */
    }
    j->d = d;
    if (worker_post(daemon_main_worker(d), checks_job_run, j) != 0)
        checks_job_free(j);
}

int health_pool_config(struct daemon *d, struct dpool *dp, weir_pool_config *pc)
{
    struct ha_db *hd = health_find_db(d, dp->dbname);

    if (hd == NULL)
        return 0;
    pc->target.choose = health_choose;
    pc->target.release = health_release;
    pc->target.arg = dp;
    /* During a failover clients wait for the new primary (query_wait_timeout)
     * rather than failing at the first refused connect. */
    pc->fail_waiters_on_connect_error = 0;
    checks_start(d, dp->dbname, dp->conninfo);
    return 1;
}

void health_server_lost(struct dpool *dp, uintptr_t tag)
{
    if (health_find_db(dp->d, dp->dbname) != NULL)
        host_news(dp->d, dp->dbname, tag, NEWS_LOST, 0, NULL);
}

void health_server_error(struct dpool *dp, uintptr_t tag, const char *sqlstate)
{
    /* Only the candidates travel to the main thread, which decides (25006
     * counts for read-write entries only). */
    if (sqlstate == NULL || !dp->ha || strlen(sqlstate) != 5 ||
        (strncmp(sqlstate, "08", 2) != 0 && strncmp(sqlstate, "57P0", 4) != 0 && strcmp(sqlstate, "25006") != 0))
        return;
    host_news(dp->d, dp->dbname, tag, NEWS_ERROR, 0, sqlstate);
}

int health_db_ok(struct daemon *d, const char *name)
{
    struct ha_db *hd = health_find_db(d, name);
    int checked = 0;

    if (hd == NULL)
        return -1;
    for (int i = 0; i < hd->nhosts; i++) {
        checked |= hd->hosts[i].state != HOST_UNCHECKED;
        if (health_host_eligible(&hd->hosts[i]))
            return 1;
    }
    return checked ? 0 : -1;
}

const char *health_db_problem(struct daemon *d, const char *name)
{
    const struct ha_db *hd = health_find_db(d, name);

    if (hd == NULL)
        return "unreachable";
    switch (hd->want) {
    case WANT_PRIMARY:
        return "no primary reachable";
    case WANT_STANDBY:
        return "no usable standby (down, or lagging over max_standby_lag)";
    default:
        return "no host reachable";
    }
}
