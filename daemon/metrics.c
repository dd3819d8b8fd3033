/*
 * The metrics endpoint (see metrics.h). /metrics is written from the same
 * numbers the admin console shows: per-pool gauges (SHOW POOLS), per-database
 * counters (SHOW STATS, in seconds and bytes), process figures, and the
 * pools' log2 histograms of client wait and server hold time as Prometheus
 * histograms (bucket i of libweir's holds durations below 16us * 2^i).
 *
 * /healthz answers asynchronously: it opens a connection to every host of
 * every [databases] entry, sends an SSLRequest and waits for PostgreSQL's
 * one-byte answer ('S' or 'N'). That proves a PostgreSQL is there without
 * logging in, and PostgreSQL does not log a client that leaves after the
 * SSL answer, so health checks do not fill the server log. A database is
 * reachable when any of its hosts answers within HEALTH_TIMEOUT_MS.
 */
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "admin.h"
#include "client.h"
#include "config.h"
#include "health.h"
#include "metrics.h"
#include "pooler.h"
#include "prepared.h"
#include "stats.h"

#define HEALTH_TIMEOUT_MS 3000
#define DEFAULT_SOCKET_DIR "/var/run/postgresql"

struct health_check;

/* One connection attempt to one host of one database. */
struct probe {
    struct health_check *hc;
    struct bufferevent *bev;
    int db;        /* index into hc->dbs */
    int done;
    char target[300];
};

/* One /healthz request in flight. */
struct health_check {
    struct health_check *next;
    struct metrics *m;
    struct evhttp_request *req;
    struct event *deadline;
    int ndbs, nprobes, outstanding;
    char **dbs;
    int *db_ok;
    struct probe *probes;
};

struct metrics {
    struct daemon *d;
    struct evhttp *http;
    struct evdns_base *dns; /* made on first need; NULL: libevent resolves blocking */
    int dns_tried;
    struct health_check *checks;
};

/* ---- exposition helpers ---- */

static void header(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped, as the text format wants. */
static void label_value(struct evbuffer *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            evbuffer_add_printf(b, "\\%c", *v);
        else if (*v == '\n')
            evbuffer_add(b, "\\n", 2);
        else
            evbuffer_add(b, v, 1);
    }
}

static void labels_db(struct evbuffer *b, const char *db)
{
    evbuffer_add(b, "{database=\"", 11);
    label_value(b, db);
    evbuffer_add(b, "\"", 1);
}

static void labels_pool(struct evbuffer *b, const struct dpool *dp)
{
    labels_db(b, dp->dbname);
    evbuffer_add(b, ",user=\"", 7);
    label_value(b, dp->user);
    evbuffer_add(b, "\"", 1);
}

static void seconds(struct evbuffer *b, uint64_t us)
{
    evbuffer_add_printf(b, "%llu.%06llu", (unsigned long long)(us / 1000000), (unsigned long long)(us % 1000000));
}

static void simple(struct evbuffer *b, const char *name, const char *type, const char *help, uint64_t v)
{
    header(b, name, type, help);
    evbuffer_add_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* ---- process ---- */

static uint64_t resident_bytes(void)
{
    unsigned long long size = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void write_process(struct evbuffer *b, struct daemon *d)
{
    uint64_t servers = 0;

    for (struct dpool *dp = d->pools; dp; dp = dp->next) {
        weir_pool_stats st;
        weir_pool_get_stats(dp->pool, &st);
        servers += (uint64_t)st.total;
    }
    header(b, "weir_info", "gauge", "weir's version; always 1.");
    evbuffer_add_printf(b, "weir_info{version=\"%s\",compatible=\"pgbouncer 1.18\"} 1\n", WEIR_VERSION_STRING);
    header(b, "weir_uptime_seconds", "gauge", "Seconds since weir started.");
    evbuffer_add(b, "weir_uptime_seconds ", 20);
    seconds(b, (uint64_t)(weir__now_us() - d->start_us));
    evbuffer_add(b, "\n", 1);
    simple(b, "weir_start_time_seconds", "gauge", "Unix time weir started at.", (uint64_t)d->start_wall);
    simple(b, "weir_resident_memory_bytes", "gauge", "Resident memory of the weir process.", resident_bytes());
    simple(b, "weir_client_connections", "gauge", "Client connections open now, console included.",
           (uint64_t)COUNT_GET(d->nclients));
    simple(b, "weir_max_client_connections", "gauge", "max_client_conn.", (uint64_t)d->cfg->max_client_conn);
    simple(b, "weir_server_connections", "gauge", "Server connections open or opening now.", servers);
    simple(b, "weir_client_connections_total", "counter", "Client connections accepted.", COUNT_GET(d->stats.clients_total));
    simple(b, "weir_client_connections_refused_total", "counter", "Clients refused at max_client_conn.",
           COUNT_GET(d->stats.clients_refused));
    simple(b, "weir_client_login_failures_total", "counter", "Client logins that failed authentication.",
           COUNT_GET(d->stats.logins_failed));
    simple(b, "weir_reloads_total", "counter", "Configuration reloads that succeeded.", COUNT_GET(d->stats.reloads));
    simple(b, "weir_reload_failures_total", "counter", "Configuration reloads rejected (old config kept).",
           COUNT_GET(d->stats.reload_failures));
    simple(b, "weir_paused", "gauge", "1 while PAUSE (or SIGUSR1) is in force for every database.",
           (uint64_t)d->paused);
    simple(b, "weir_prepared_statements_prepared_total", "counter",
           "Statements weir prepared on a server for a client (first use or re-prepare on another server).",
           COUNT_GET(d->stats.prepared_prepares));
    simple(b, "weir_prepared_statements_evicted_total", "counter",
           "Statements closed on a server to stay within max_prepared_statements.", COUNT_GET(d->stats.prepared_evictions));
    simple(b, "weir_prepared_statements", "gauge", "Distinct prepared statements known to weir.",
           (uint64_t)pstmt_registry_count(d->pstmts));
    simple(b, "weir_workers", "gauge", "Event-loop threads (workers).", (uint64_t)d->nworkers);
    header(b, "weir_worker_client_connections", "gauge", "Client connections open now, per worker.");
    for (int i = 0; i < d->nworkers; i++)
        evbuffer_add_printf(b, "weir_worker_client_connections{worker=\"%d\"} %d\n", i, d->workers[i]->nclients);
}

/* ---- pools ----
 * A pool draining after a reload shares its database and user with its
 * successor; only live pools are shown, so every series stays unique. */

struct pool_gauge {
    const char *name, *help;
    size_t offset; /* of an int in struct pool_view */
};

#define PV(field) offsetof(struct pool_view, field)
static const struct pool_gauge pool_gauges[] = {
    {"weir_pool_client_active", "Clients linked to a server or idle (SHOW POOLS cl_active).", PV(cl_active)},
    {"weir_pool_client_waiting", "Clients waiting for a server (cl_waiting).", PV(cl_waiting)},
    {"weir_pool_server_active", "Servers linked to a client (sv_active).", PV(sv_active)},
    {"weir_pool_server_idle", "Servers idle and ready (sv_idle).", PV(sv_idle)},
    {"weir_pool_server_used", "Servers needing a check before reuse (sv_used).", PV(sv_used)},
    {"weir_pool_server_tested", "Servers running the reset or check query (sv_tested).", PV(sv_tested)},
    {"weir_pool_server_login", "Servers being connected (sv_login).", PV(sv_login)},
};

static void write_pools(struct evbuffer *b, struct daemon *d)
{
    size_t n = sizeof(pool_gauges) / sizeof(pool_gauges[0]);
    struct pool_view *views;
    int npools = 0, i;

    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        npools++;
    views = calloc((size_t)(npools ? npools : 1), sizeof(*views));
    if (views == NULL)
        return;
    i = 0;
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (!dp->removed)
            stats_pool_view(d, dp, &views[i++]);
    for (size_t g = 0; g < n; g++) {
        header(b, pool_gauges[g].name, "gauge", pool_gauges[g].help);
        i = 0;
        for (struct dpool *dp = d->pools; dp; dp = dp->next) {
            if (dp->removed)
                continue;
            evbuffer_add_printf(b, "%s", pool_gauges[g].name);
            labels_pool(b, dp);
            evbuffer_add_printf(b, "} %d\n", *(const int *)((const char *)&views[i++] + pool_gauges[g].offset));
        }
    }
    header(b, "weir_pool_max_wait_seconds", "gauge", "How long the oldest waiting client has waited (maxwait).");
    i = 0;
    for (struct dpool *dp = d->pools; dp; dp = dp->next) {
        if (dp->removed)
            continue;
        evbuffer_add(b, "weir_pool_max_wait_seconds", 26);
        labels_pool(b, dp);
        evbuffer_add(b, "} ", 2);
        seconds(b, (uint64_t)views[i++].maxwait_us);
        evbuffer_add(b, "\n", 1);
    }
    free(views);
}

/* Pool counters libweir keeps (connects and their failures). */
static void write_pool_counters(struct evbuffer *b, struct daemon *d)
{
    static const char *const names[] = {"weir_pool_server_connects_total",
                                        "weir_pool_server_connect_failures_total"};
    static const char *const helps[] = {"Server connections made.", "Server connection attempts that failed."};

    for (int k = 0; k < 2; k++) {
        header(b, names[k], "counter", helps[k]);
        for (struct dpool *dp = d->pools; dp; dp = dp->next) {
            weir_pool_stats st;
            if (dp->removed)
                continue;
            weir_pool_get_stats(dp->pool, &st);
            evbuffer_add_printf(b, "%s", names[k]);
            labels_pool(b, dp);
            evbuffer_add_printf(b, "} %llu\n", (unsigned long long)(k == 0 ? st.connects : st.connect_failures));
        }
    }
}

/* ---- databases ---- */

struct db_counter {
    const char *name, *help;
    size_t offset; /* of a uint64_t in struct db_totals */
    int is_time;   /* microseconds, shown in seconds */
};

#define DT(field) offsetof(struct db_totals, field)
static const struct db_counter db_counters[] = {
    {"weir_database_transactions_total", "Transactions pooled (SHOW STATS total_xact_count).", DT(xact_count), 0},
    {"weir_database_queries_total", "Queries pooled (total_query_count).", DT(query_count), 0},
    {"weir_database_received_bytes_total", "Bytes received from clients (total_received).", DT(bytes_in), 0},
    {"weir_database_sent_bytes_total", "Bytes sent to clients (total_sent).", DT(bytes_out), 0},
    {"weir_database_transaction_time_seconds_total", "Time spent in transactions (total_xact_time).",
     DT(xact_us), 1},
    {"weir_database_query_time_seconds_total", "Time spent in queries (total_query_time).", DT(query_us), 1},
    {"weir_database_wait_time_seconds_total", "Time clients waited for a server (total_wait_time).", DT(wait_us),
     1},
};

static void write_db_counters(struct evbuffer *b, struct daemon *d, const char **names, int n)
{
    struct db_totals *t = calloc((size_t)(n ? n : 1), sizeof(*t));

    if (t == NULL)
        return;
    for (int i = 0; i < n; i++)
        stats_db_totals(d, names[i], &t[i]);
    for (size_t k = 0; k < sizeof(db_counters) / sizeof(db_counters[0]); k++) {
        const struct db_counter *dc = &db_counters[k];
        header(b, dc->name, "counter", dc->help);
        for (int i = 0; i < n; i++) {
            uint64_t v = *(const uint64_t *)((const char *)&t[i] + dc->offset);
            evbuffer_add_printf(b, "%s", dc->name);
            labels_db(b, names[i]);
            evbuffer_add(b, "} ", 2);
            if (dc->is_time)
                seconds(b, v);
            else
                evbuffer_add_printf(b, "%llu", (unsigned long long)v);
            evbuffer_add(b, "\n", 1);
        }
    }
    free(t);
}

static void write_db_flags(struct evbuffer *b, struct daemon *d, const char **names, int n)
{
    header(b, "weir_database_paused", "gauge", "1 while PAUSE or KILL holds the database.");
    for (int i = 0; i < n; i++) {
        evbuffer_add(b, "weir_database_paused", 20);
        labels_db(b, names[i]);
        evbuffer_add_printf(b, "} %d\n", admin_db_paused(d, names[i]));
    }
    header(b, "weir_database_disabled", "gauge", "1 while DISABLE refuses new clients of the database.");
    for (int i = 0; i < n; i++) {
        evbuffer_add(b, "weir_database_disabled", 22);
        labels_db(b, names[i]);
        evbuffer_add_printf(b, "} %d\n", admin_db_disabled(d, names[i]));
    }
}

/* One histogram series: cumulative buckets, then _sum and _count. */
static void histogram(struct evbuffer *b, const char *name, const char *db, const uint64_t *hist, uint64_t sum_us)
{
    uint64_t cum = 0;

    for (int i = 0; i < WEIR_HIST_BUCKETS; i++) {
        cum += hist[i];
        evbuffer_add_printf(b, "%s_bucket", name);
        labels_db(b, db);
        evbuffer_add(b, ",le=\"", 5);
        if (i == WEIR_HIST_BUCKETS - 1)
            evbuffer_add(b, "+Inf", 4);
        else
            seconds(b, (uint64_t)16 << i);
        evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)cum);
    }
    evbuffer_add_printf(b, "%s_sum", name);
    labels_db(b, db);
    evbuffer_add(b, "} ", 2);
    seconds(b, sum_us);
    evbuffer_add_printf(b, "\n%s_count", name);
    labels_db(b, db);
    evbuffer_add_printf(b, "} %llu\n", (unsigned long long)cum);
}

static void write_histograms(struct evbuffer *b, struct daemon *d, const char **names, int n)
{
    struct db_histograms *h = calloc((size_t)(n ? n : 1), sizeof(*h));

    if (h == NULL)
        return;
    for (int i = 0; i < n; i++)
        stats_db_histograms(d, names[i], &h[i]);
    header(b, "weir_client_wait_seconds", "histogram", "Time a client waited for a server, per server assignment.");
    for (int i = 0; i < n; i++)
        histogram(b, "weir_client_wait_seconds", names[i], h[i].wait, h[i].wait_us_total);
    header(b, "weir_transaction_seconds", "histogram",
           "Time a client held a server: one transaction in transaction mode, one statement in statement mode, "
           "the session in session mode.");
    for (int i = 0; i < n; i++)
        histogram(b, "weir_transaction_seconds", names[i], h[i].hold, h[i].hold_us_total);
    free(h);
}

/* ---- hosts of multi-host entries (health.c) ---- */

enum host_metric { HM_UP, HM_PRIMARY, HM_ELIGIBLE, HM_LAG, HM_CONNS, HM_CHECKS, HM_FAILURES, HM_COUNT };

static void write_hosts(struct evbuffer *b, struct daemon *d)
{
    static const struct {
        const char *name, *type, *help;
    } fam[HM_COUNT] = {
        {"weir_backend_host_up", "gauge", "1 when the host answered its last health check"},
        {"weir_backend_host_primary", "gauge", "1 when the host is a primary (not in recovery)"},
        {"weir_backend_host_eligible", "gauge", "1 when the host gets new server connections of the database"},
        {"weir_backend_host_replay_lag_seconds", "gauge", "Replay lag of a standby at its last check"},
        {"weir_backend_host_server_connections", "gauge", "Open server connections weir made to the host"},
        {"weir_backend_host_checks_total", "counter", "Health checks the host answered"},
        {"weir_backend_host_check_failures_total", "counter", "Health checks the host failed"},
    };

    if (d->health == NULL || d->health->dbs == NULL)
        return;
    for (int f = 0; f < HM_COUNT; f++) {
        header(b, fam[f].name, fam[f].type, fam[f].help);
        for (const struct ha_db *hd = d->health->dbs; hd; hd = hd->next)
            for (int i = 0; i < hd->nhosts; i++) {
                const struct ha_host *hh = &hd->hosts[i];
                evbuffer_add_printf(b, "%s", fam[f].name);
                labels_db(b, hd->name);
                evbuffer_add(b, ",host=\"", 7);
                label_value(b, hh->host);
                evbuffer_add(b, "\",port=\"", 8);
                label_value(b, hh->port);
                evbuffer_add(b, "\"} ", 3);
                switch (f) {
                case HM_UP:
                    evbuffer_add_printf(b, "%d\n", hh->state == HOST_UP || hh->state == HOST_LAGGING);
                    break;
                case HM_PRIMARY:
                    evbuffer_add_printf(b, "%d\n", hh->role == ROLE_PRIMARY);
                    break;
                case HM_ELIGIBLE:
                    evbuffer_add_printf(b, "%d\n", health_host_eligible(hh));
                    break;
                case HM_LAG:
                    evbuffer_add_printf(b, "%.3f\n", hh->lag_s);
                    break;
                case HM_CONNS:
                    evbuffer_add_printf(b, "%d\n", hh->nconns);
                    break;
                case HM_CHECKS:
                    evbuffer_add_printf(b, "%llu\n", (unsigned long long)hh->checks);
                    break;
                default:
                    evbuffer_add_printf(b, "%llu\n", (unsigned long long)hh->check_failures);
                    break;
                }
            }
    }
}

static void write_metrics(struct evbuffer *b, struct daemon *d)
{
    const char **names = NULL;
    int n;

    write_process(b, d);
    write_pools(b, d);
    write_pool_counters(b, d);
    n = stats_db_names(d, &names);
    if (n < 0)
        return;
    write_db_counters(b, d, names, n);
    write_db_flags(b, d, names, n);
    write_histograms(b, d, names, n);
    write_hosts(b, d);
    free(names);
}

static void serve_metrics(struct metrics *m, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    write_metrics(b, m->d);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", b);
    evbuffer_free(b);
}

/* ---- /healthz ---- */

static void health_free(struct health_check *hc)
{
    struct health_check **pp = &hc->m->checks;

    while (*pp && *pp != hc)
        pp = &(*pp)->next;
    if (*pp)
        *pp = hc->next;
    for (int i = 0; i < hc->nprobes; i++)
        if (hc->probes[i].bev)
            bufferevent_free(hc->probes[i].bev);
    if (hc->deadline)
        event_free(hc->deadline);
    for (int i = 0; i < hc->ndbs; i++)
        free(hc->dbs[i]);
    free(hc->dbs);
    free(hc->db_ok);
    free(hc->probes);
    free(hc);
}

static void health_reply(struct evhttp_request *req, int ok, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
    evhttp_send_reply(req, ok ? HTTP_OK : 503, ok ? "OK" : "Service Unavailable", body);
}

/* All probes answered or the deadline passed: reply and clean up. */
static void health_finish(struct health_check *hc)
{
    struct evbuffer *body = evbuffer_new();
    int ok = 1, watched[hc->ndbs + 1];

    /* Multi-host entries answer from the health checks: reachable means a
     * usable host of the kind the entry wants (a primary for read-write). */
    for (int i = 0; i < hc->ndbs; i++)
        if ((watched[i] = health_db_ok(hc->m->d, hc->dbs[i])) >= 0)
            hc->db_ok[i] = watched[i];
    for (int i = 0; i < hc->ndbs; i++)
        ok &= hc->db_ok[i];
    if (body) {
        evbuffer_add_printf(body, "%s\n", ok ? "ok" : "unhealthy");
        for (int i = 0; i < hc->ndbs; i++)
            evbuffer_add_printf(body, "database %s: %s\n", hc->dbs[i],
                                watched[i] == 0   ? health_db_problem(hc->m->d, hc->dbs[i])
                                : hc->db_ok[i] ? "reachable"
                                               : "unreachable");
        for (int i = 0; i < hc->nprobes; i++)
            if (!hc->db_ok[hc->probes[i].db])
                evbuffer_add_printf(body, "  no answer from %s\n", hc->probes[i].target);
    }
    health_reply(hc->req, ok, body);
    if (body)
        evbuffer_free(body);
    health_free(hc);
}

static void probe_done(struct probe *p, int ok)
{
    struct health_check *hc = p->hc;

    if (p->done)
        return;
    p->done = 1;
    if (ok)
        hc->db_ok[p->db] = 1;
    if (--hc->outstanding == 0)
        health_finish(hc);
}

static void probe_read_cb(struct bufferevent *bev, void *arg)
{
    struct probe *p = arg;
    char answer = 0;

    bufferevent_read(bev, &answer, 1);
    probe_done(p, answer == 'S' || answer == 'N' || answer == 'E');
}

static void probe_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT))
        probe_done(arg, 0);
}

static void health_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    health_finish(arg);
}

static struct evdns_base *metrics_dns(struct metrics *m)
{
    if (!m->dns_tried) {
        m->dns_tried = 1;
        m->dns = evdns_base_new(m->d->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    }
    return m->dns;
}

/* Connect to host:port (a directory means PostgreSQL's Unix socket there). */
static int probe_connect(struct metrics *m, struct probe *p, const char *host, int port)
{
    static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *ai = NULL;
    char portstr[16];
    int rc;

    p->bev = bufferevent_socket_new(m->d->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (p->bev == NULL)
        return -1;
    bufferevent_setcb(p->bev, probe_read_cb, NULL, probe_event_cb, p);
    bufferevent_setwatermark(p->bev, EV_READ, 1, 0);
    bufferevent_enable(p->bev, EV_READ);
    bufferevent_write(p->bev, ssl_request, sizeof(ssl_request));
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (host[0] == '/') {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", host, port) >= (int)sizeof(sun.sun_path))
            return -1;
        return bufferevent_socket_connect(p->bev, (struct sockaddr *)&sun, sizeof(sun));
    }
    if (getaddrinfo(host, portstr, &hints, &ai) == 0) {
        rc = bufferevent_socket_connect(p->bev, ai->ai_addr, (int)ai->ai_addrlen);
        freeaddrinfo(ai);
        return rc;
    }
    return bufferevent_socket_connect_hostname(p->bev, metrics_dns(m), AF_UNSPEC, host, port);
}

/* The n-th element of a comma-separated list, or the only one. */
static void list_item(const char *list, int n, char *out, size_t len)
{
    const char *p = list;

    for (int i = 0; i < n && strchr(p, ','); i++)
        p = strchr(p, ',') + 1;
    snprintf(out, len, "%.*s", (int)strcspn(p, ","), p);
}

static int count_items(const char *list)
{
    int n = 1;

    for (const char *p = list; *p; p++)
        n += *p == ',';
    return n;
}

/* Hosts as libpq would use them: the entry's, else PGHOST, else the socket dir. */
static const char *db_hosts(const struct db_config *db)
{
    const char *env = getenv("PGHOST");

    return db->host && db->host[0] ? db->host : env && env[0] ? env : DEFAULT_SOCKET_DIR;
}

static const char *db_ports(const struct db_config *db)
{
    const char *env = getenv("PGPORT");

    return db->port && db->port[0] ? db->port : env && env[0] ? env : "5432";
}

static int add_probes(struct metrics *m, struct health_check *hc, int dbi, const struct db_config *db)
{
    const char *hosts = db_hosts(db), *ports = db_ports(db);
    int nh = count_items(hosts);

    for (int h = 0; h < nh; h++) {
        struct probe *p = &hc->probes[hc->nprobes++];
        char host[256], port[16];
        list_item(hosts, h, host, sizeof(host));
        list_item(ports, h, port, sizeof(port));
        p->hc = hc;
        p->db = dbi;
        snprintf(p->target, sizeof(p->target), "%s:%s", host, port);
        hc->outstanding++;
        /* A failure may already have been reported through the callback. */
        if (probe_connect(m, p, host, atoi(port)) != 0 && !p->done) {
            p->done = 1;
            hc->outstanding--;
        }
    }
    return 0;
}

static struct health_check *health_new(struct metrics *m, struct evhttp_request *req)
{
    const struct weir_config *cfg = m->d->cfg;
    struct health_check *hc = calloc(1, sizeof(*hc));
    int nprobes = 0;

    if (hc == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_dbs; i++)
        nprobes += count_items(db_hosts(&cfg->dbs[i]));
    hc->m = m;
    hc->req = req;
    hc->dbs = calloc(cfg->n_dbs + 1, sizeof(*hc->dbs));
    hc->db_ok = calloc(cfg->n_dbs + 1, sizeof(*hc->db_ok));
    hc->probes = calloc((size_t)nprobes + 1, sizeof(*hc->probes));
    hc->deadline = evtimer_new(m->d->base, health_deadline_cb, hc);
    hc->next = m->checks;
    m->checks = hc;
    if (hc->dbs == NULL || hc->db_ok == NULL || hc->probes == NULL || hc->deadline == NULL) {
        health_free(hc);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_dbs; i++)
        if ((hc->dbs[hc->ndbs++] = strdup(cfg->dbs[i].name)) == NULL) {
            health_free(hc);
            return NULL;
        }
    return hc;
}

static void serve_healthz(struct metrics *m, struct evhttp_request *req)
{
    struct daemon *d = m->d;
    struct timeval tv = {HEALTH_TIMEOUT_MS / 1000, (HEALTH_TIMEOUT_MS % 1000) * 1000};
    struct health_check *hc;
    struct evbuffer *body;

    if (d->listeners == NULL || d->shutting_down) {
        body = evbuffer_new();
        if (body)
            evbuffer_add_printf(body, "unhealthy\n%s\n", d->shutting_down ? "shutting down" : "not listening");
        health_reply(req, 0, body);
        if (body)
            evbuffer_free(body);
        return;
    }
    if ((hc = health_new(m, req)) == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    /* Held at 1 while probes start, since a failure may be reported at once. */
    hc->outstanding = 1;
    for (int i = 0; i < hc->ndbs; i++)
        add_probes(m, hc, i, &d->cfg->dbs[i]);
    if (--hc->outstanding == 0) {
        health_finish(hc); /* nothing to ask, or nothing could be asked */
        return;
    }
    event_add(hc->deadline, &tv);
}

/* ---- server ---- */

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct metrics *m = arg;
    struct worker *main_worker = daemon_main_worker(m->d);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

    stream_loop_tick(&main_worker->loop);
    world_stop(main_worker); /* pools and counters of every worker, as one process */
    if (path && strcmp(path, "/metrics") == 0)
        serve_metrics(m, req);
    else if (path && strcmp(path, "/healthz") == 0)
        serve_healthz(m, req);
    else
        evhttp_send_error(req, HTTP_NOTFOUND, "weir serves /metrics and /healthz");
    world_start(main_worker);
}

int metrics_start(struct daemon *d)
{
    const struct weir_config *cfg = d->cfg;
    const char *addr = cfg->metrics_addr[0] == '\0' ? "127.0.0.1"
                       : strcmp(cfg->metrics_addr, "*") == 0 ? "0.0.0.0"
                                                               : cfg->metrics_addr;
    struct metrics *m;

    if (cfg->metrics_port <= 0)
        return 0;
    m = calloc(1, sizeof(*m));
    if (m == NULL || (m->http = evhttp_new(d->base)) == NULL) {
        free(m);
        log_at(&d->log, LG_ERROR, "metrics: out of memory");
        return -1;
    }
    m->d = d;
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(m->http, request_cb, m);
    evhttp_set_timeout(m->http, 30);
    if (evhttp_bind_socket_with_handle(m->http, addr, (ev_uint16_t)cfg->metrics_port) == NULL) {
        log_at(&d->log, LG_ERROR, "metrics: cannot listen on %s:%d; running without metrics", addr,
               cfg->metrics_port);
        evhttp_free(m->http);
        free(m);
        return -1;
    }
    d->metrics = m;
    log_at(&d->log, LG_LOG, "metrics on http://%s:%d/metrics and /healthz", addr, cfg->metrics_port);
    return 0;
}

void metrics_stop(struct daemon *d)
{
    struct metrics *m = d->metrics;

    if (m == NULL)
        return;
    while (m->checks) /* their requests go with evhttp_free */
        health_free(m->checks);
    evhttp_free(m->http);
    if (m->dns)
        evdns_base_free(m->dns, 0);
    free(m);
    d->metrics = NULL;
}
