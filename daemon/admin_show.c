/*
 * The admin console's SHOW commands. Column names, order and types are
 * PgBouncer 1.18's (captured from a running PgBouncer 1.18.0), so
 * pgbouncer_exporter and other monitoring parse weir unchanged. Where
 * PgBouncer shows a C pointer (ptr, link) weir shows its connection ids in
 * the same 0x form, the ones its log lines use (C-0x.., S-0x..). Rows
 * PgBouncer has for its own console (database "pgbouncer") are kept.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>

#include "admin_internal.h"
#include "auth.h"
#include "backend.h"
#include "config.h"
#include "health.h"
#include "pooler.h"
#include "prepared.h"
#include "server.h"
#include "stats.h"
#include "tls.h"

/* ---- helpers ---- */

static void show_done(struct client *c)
{
    (void)admin_complete(c, "SHOW");
}

/* A monotonic instant as PgBouncer prints times: "2026-11-25 17:39:03 UTC". */
static void format_time(int64_t mono_us, char *buf, size_t len)
{
    time_t t = (time_t)(time(NULL) - (weir__now_us() - mono_us) / 1000000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void format_id(uint64_t id, char *buf, size_t len)
{
    snprintf(buf, len, "0x%llx", (unsigned long long)id);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Database names for SHOW DATABASES/STATS: weir's, plus the console's. */
static int db_names(struct daemon *d, const char ***out)
{
    const char **v = NULL, **w;
    int n = stats_db_names(d, &v);

    if (n < 0 || (w = realloc(v, (size_t)(n + 1) * sizeof(*w))) == NULL) {
        free(v);
        return -1;
    }
    w[n++] = "pgbouncer";
    qsort(w, (size_t)n, sizeof(*w), cmp_str);
    *out = w;
    return n;
}

/* ---- SHOW HELP, VERSION, STATE ---- */

static void show_help(struct client *c)
{
    (void)weir_proto_build_notice(c->io.out, "NOTICE", "00000", "Console usage",
                                  "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION"
                                  "\n\tSHOW SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE"
                                  "\n\tSHOW DNS_HOSTS|DNS_ZONES"
                                  "\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS"
                                  "\n\tSET key = arg"
                                  "\n\tRELOAD"
                                  "\n\tPAUSE [<db>]"
                                  "\n\tRESUME [<db>]"
                                  "\n\tDISABLE <db>"
                                  "\n\tENABLE <db>"
                                  "\n\tRECONNECT [<db>]"
                                  "\n\tKILL <db>"
                                  "\n\tKILL_CLIENT <id>"
                                  "\n\tSHUTDOWN"
                                  "\n\tWAIT_CLOSE [<db>]",
                                  NULL);
    show_done(c);
}

static void show_version(struct client *c)
{
    static const char *const names[] = {"version"};
    const char *vals[] = {"PgBouncer 1.18.0 compatible (weir " WEIR_VERSION_STRING ")"};

    admin_columns(c, "s", names);
    (void)weir_proto_build_data_row(c->io.out, 1, vals);
    show_done(c);
}

static void show_state(struct client *c)
{
    static const char *const names[] = {"key", "value"};
    struct admin_row r = {0};

    admin_columns(c, "ss", names);
    row_str(&r, "active");
    row_str(&r, c->d->paused ? "no" : "yes");
    row_send(c, &r);
    row_str(&r, "paused");
    row_str(&r, c->d->paused ? "yes" : "no");
    row_send(c, &r);
    row_str(&r, "suspended");
    row_str(&r, "no");
    row_send(c, &r);
    show_done(c);
}

/* ---- SHOW POOLS ---- */

static int cmp_pool(const void *a, const void *b)
{
    const struct dpool *x = *(const struct dpool *const *)a, *y = *(const struct dpool *const *)b;
    int r = strcmp(x->dbname, y->dbname);

    return r ? r : strcmp(x->user, y->user);
}

/* The pools, sorted by database and user; free() the array. -1 on ENOMEM. */
static int sorted_pools(struct daemon *d, struct dpool ***out)
{
    int n = 0, i = 0;
    struct dpool **v;

    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        n++;
    v = malloc((size_t)(n ? n : 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        v[i++] = dp;
    qsort(v, (size_t)n, sizeof(*v), cmp_pool);
    *out = v;
    return n;
}

static int console_clients(const struct daemon *d)
{
    int n = 0;

    for (const struct client *c = daemon_first_client(d); c; c = daemon_next_client(d, c))
        n += c->admin && (c->state == CL_IDLE || c->state == CL_ACTIVE);
    return n;
}

static void pool_row(struct client *c, const char *db, const char *user, const struct pool_view *v,
                     const char *mode)
{
    struct admin_row r = {0};

    row_str(&r, db);
    row_str(&r, user);
    row_int(&r, v->cl_active);
    row_int(&r, v->cl_waiting);
    row_int(&r, 0); /* cl_active_cancel_req: cancels go straight to PostgreSQL */
    row_int(&r, 0); /* cl_waiting_cancel_req */
    row_int(&r, v->sv_active);
    row_int(&r, 0); /* sv_active_cancel */
    row_int(&r, 0); /* sv_being_canceled */
    row_int(&r, v->sv_idle);
    row_int(&r, v->sv_used);
    row_int(&r, v->sv_tested);
    row_int(&r, v->sv_login);
    row_int(&r, v->maxwait_us / 1000000);
    row_int(&r, v->maxwait_us % 1000000);
    row_str(&r, mode);
    row_send(c, &r);
}

static void show_pools(struct client *c)
{
    static const char *const names[] = {
        "database",  "user",    "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
        "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
        "maxwait",   "maxwait_us", "pool_mode"};
    struct pool_view console = {0};
    struct dpool **pools = NULL;
    int n = sorted_pools(c->d, &pools);

    admin_columns(c, "ssiiiiiiiiiiiiis", names);
    console.cl_active = console_clients(c->d);
    /* One list sorted by database then user, as PgBouncer's: the console's
     * pool takes its place among the others. */
    for (int i = 0, console_done = 0; i <= n; i++) {
        struct pool_view v;
        if (!console_done && (i == n || strcmp(pools[i]->dbname, "pgbouncer") > 0 ||
                              (strcmp(pools[i]->dbname, "pgbouncer") == 0 && strcmp(pools[i]->user, "pgbouncer") > 0))) {
            pool_row(c, "pgbouncer", "pgbouncer", &console, "statement");
            console_done = 1;
        }
        if (i == n)
            break;
        stats_pool_view(c->d, pools[i], &v);
        pool_row(c, pools[i]->dbname, pools[i]->user, &v, config_pool_mode_name(pools[i]->mode));
    }
    free(pools);
    show_done(c);
}

/* ---- SHOW CLIENTS, SERVERS, SOCKETS ---- */

static const char *const socket_names[] = {
    "type",    "user",       "database",   "state",     "addr",     "port",       "local_addr",
    "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",
    "link",    "remote_pid", "tls",        "application_name",
    "recv_pos", "pkt_pos",   "pkt_remain", "send_pos",  "send_remain", "pkt_avail", "send_avail"};
#define SOCKET_TYPES "sssssisissiiississ"
#define SOCKET_EXTRA_TYPES "iiiiiii"
/* SHOW CLIENTS / SERVERS: the socket columns, then PgBouncer 1.21's
 * prepared_statements; SERVERS then adds the role, replay lag and health
 * state of the server's host (health.c; NULL for hosts not watched). */
static const char *const conn_names[] = {
    "type",    "user",       "database",   "state",     "addr",     "port",       "local_addr",
    "local_port", "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr",
    "link",    "remote_pid", "tls",        "application_name", "prepared_statements",
    "role", "lag_ms", "host_state"};

/* The state a client has in SHOW CLIENTS (NULL: not listed there). */
static const char *client_state_name(const struct client *c, int sockets)
{
    switch (c->state) {
    case CL_IDLE:
    case CL_ACTIVE:
        return sockets ? "cl_active" : "active";
    case CL_WAITING:
    case CL_WELCOME:
        return sockets ? "cl_waiting" : "waiting";
    case CL_STARTUP:
    case CL_AUTH:
        return sockets ? "cl_login" : NULL;
    default:
        return NULL;
    }
}

static void socket_extra(struct admin_row *r, const struct stream *io, uint32_t remaining)
{
    size_t in = io->in ? evbuffer_get_length(io->in) : 0, out = io->out ? evbuffer_get_length(io->out) : 0;

    row_u64(r, in);        /* recv_pos */
    row_int(r, 0);         /* pkt_pos */
    row_u64(r, remaining); /* pkt_remain: rest of a message being streamed */
    row_u64(r, out);       /* send_pos */
    row_int(r, 0);         /* send_remain */
    row_u64(r, in);        /* pkt_avail */
    row_u64(r, out);       /* send_avail */
}

static void client_row(struct client *viewer, const struct client *c, const char *state, int sockets)
{
    struct admin_row r = {0};
    char conn_t[40], req_t[40], ptr[24], link[24] = "", laddr[64], tls[128] = "";
    int64_t now = weir__now_us(), wait = c->state == CL_WAITING ? now - c->wait_start_us : 0;
    int lport;

    if (c->tls && c->io.ssl)
        tls_describe(c->io.ssl, tls, sizeof(tls));
    format_time(c->connect_us, conn_t, sizeof(conn_t));
    format_time(c->wait_start_us > c->connect_us ? c->wait_start_us : c->connect_us, req_t, sizeof(req_t));
    format_id(c->id, ptr, sizeof(ptr));
    if (c->server)
        format_id(c->server->id, link, sizeof(link));
    stream_local_end(c->fd, laddr, sizeof(laddr), &lport);
    if (c->is_unix)
        lport = c->d->cfg->listen_port;
    row_str(&r, "C");
    row_str(&r, c->user ? c->user : "");
    row_str(&r, c->dbname ? c->dbname : "");
    row_str(&r, state);
    row_str(&r, c->addr);
    row_int(&r, c->port);
    row_str(&r, laddr);
    row_int(&r, lport);
    row_str(&r, conn_t);
    row_str(&r, req_t);
    row_int(&r, wait / 1000000);
    row_int(&r, wait % 1000000);
    row_int(&r, 0); /* close_needed */
    row_str(&r, ptr);
    row_str(&r, link);
    row_int(&r, 0); /* remote_pid: a peer's pid is not asked for */
    row_str(&r, tls);
    row_str(&r, c->params.v[TP_APPLICATION_NAME] ? c->params.v[TP_APPLICATION_NAME] : "");
    if (sockets)
        socket_extra(&r, &c->io, c->fwd_remaining);
    else
        row_u64(&r, client_stmts_count(c->stmts));
    row_send(viewer, &r);
}

static const char *server_state_name(const struct server *s, int sockets)
{
    switch (s->state) {
    case SV_LINKED:
    case SV_SETUP:
        return sockets ? "sv_active" : "active";
    case SV_RESETTING:
    case SV_CHECKING:
        return sockets ? "sv_tested" : "tested";
    default:
        return sockets ? "sv_idle" : "idle";
    }
}

static void server_tls(const struct server *s, char *buf, size_t len)
{
    const char *proto, *cipher;

    buf[0] = '\0';
    if (!PQsslInUse(s->pg))
        return;
    proto = PQsslAttribute(s->pg, "protocol");
    cipher = PQsslAttribute(s->pg, "cipher");
    snprintf(buf, len, "%s/%s", proto ? proto : "", cipher ? cipher : "");
}

static void server_row(struct client *viewer, const struct server *s, int sockets)
{
    struct admin_row r = {0};
    char conn_t[40], req_t[40], ptr[24], link[24] = "", laddr[64], tls[128];
    const char *host = backend_host(s->be);
    int64_t born = weir__now_us() - weir_pooled_age_us(s->pooled);
    int lport;

    format_time(born, conn_t, sizeof(conn_t));
    format_time(s->link_start_us > born ? s->link_start_us : born, req_t, sizeof(req_t));
    format_id(s->id, ptr, sizeof(ptr));
    if (s->client)
        format_id(s->client->id, link, sizeof(link));
    stream_local_end(backend_socket(s->be), laddr, sizeof(laddr), &lport);
    server_tls(s, tls, sizeof(tls));
    row_str(&r, "S");
    row_str(&r, s->dp->user);
    row_str(&r, s->dp->dbname);
    row_str(&r, server_state_name(s, sockets));
    row_str(&r, host && host[0] != '/' ? host : "unix");
    row_int(&r, backend_port(s->be));
    row_str(&r, laddr);
    row_int(&r, lport);
    row_str(&r, conn_t);
    row_str(&r, req_t);
    row_int(&r, 0);
    row_int(&r, 0);
    row_int(&r, server_close_needed(s));
    row_str(&r, ptr);
    row_str(&r, link);
    row_int(&r, s->backend_pid);
    row_str(&r, tls);
    row_str(&r, s->params.v[TP_APPLICATION_NAME] ? s->params.v[TP_APPLICATION_NAME] : "");
    if (sockets) {
        socket_extra(&r, &s->io, s->fwd_remaining);
    } else {
        const struct ha_host *hh = health_find_host(s->d, s->dp->dbname, weir_pooled_target(s->pooled));
        row_u64(&r, server_stmts_count(s->stmts));
        row_str(&r, hh ? health_role_name(hh->role) : NULL);
        if (hh)
            row_int(&r, llround(hh->lag_s * 1000));
        else
            row_str(&r, NULL);
        row_str(&r, hh ? health_state_name(hh->state) : NULL);
    }
    row_send(viewer, &r);
}

static void show_clients(struct client *c)
{
    admin_columns(c, SOCKET_TYPES "i", conn_names);
    for (const struct client *x = daemon_first_client(c->d); x; x = daemon_next_client(c->d, x)) {
        const char *state = client_state_name(x, 0);
        if (state)
            client_row(c, x, state, 0);
    }
    show_done(c);
}

static void show_servers(struct client *c)
{
    admin_columns(c, SOCKET_TYPES "isis", conn_names);
    for (const struct server *s = c->d->servers; s; s = s->next)
        server_row(c, s, 0);
    show_done(c);
}

static int stream_busy(const struct stream *io)
{
    return (io->in && evbuffer_get_length(io->in) > 0) || (io->out && evbuffer_get_length(io->out) > 0);
}

/* SOCKETS: every client and server; ACTIVE_SOCKETS: those with bytes buffered. */
static void show_sockets(struct client *c, int active_only)
{
    admin_columns(c, SOCKET_TYPES SOCKET_EXTRA_TYPES, socket_names);
    for (const struct client *x = daemon_first_client(c->d); x; x = daemon_next_client(c->d, x)) {
        const char *state = client_state_name(x, 1);
        if (state && (!active_only || stream_busy(&x->io)))
            client_row(c, x, state, 1);
    }
    for (const struct server *s = c->d->servers; s; s = s->next)
        if (!active_only || stream_busy(&s->io))
            server_row(c, s, 1);
    show_done(c);
}

/* ---- SHOW DATABASES, USERS, LISTS, MEM, CONFIG, DNS ---- */

static int db_connections(const struct daemon *d, const char *name)
{
    int n = 0;

    for (const struct dpool *dp = d->pools; dp; dp = dp->next) {
        weir_pool_stats st;
        if (strcmp(dp->dbname, name) != 0)
            continue;
        weir_pool_get_stats(dp->pool, &st);
        n += st.total;
    }
    return n;
}

static int pick(int v, int dflt)
{
    return v != CONFIG_UNSET ? v : dflt;
}

static void console_db_row(struct client *c)
{
    struct admin_row r = {0};

    row_str(&r, "pgbouncer");
    row_str(&r, NULL);
    row_int(&r, c->d->cfg->listen_port);
    row_str(&r, "pgbouncer");
    row_str(&r, "pgbouncer");
    row_int(&r, 2);
    row_int(&r, 0);
    row_int(&r, 0);
    row_str(&r, "statement");
    row_int(&r, 0);
    row_int(&r, 0);
    row_int(&r, 0);
    row_int(&r, 0);
    row_str(&r, NULL); /* target_session_attrs, load_balance_hosts, hosts */
    row_str(&r, NULL);
    row_str(&r, NULL);
    row_send(c, &r);
}

/* weir's columns after PgBouncer's: what the entry asks for, how it
 * balances, and each host's role and state (NULL when not watched). The
 * row points at hosts, which the caller keeps until the row is sent. */
static void database_ha_cols(struct daemon *d, struct admin_row *r, const char *name, char *hosts, size_t len)
{
    static const char *const balance[] = {"round-robin", "disable", "least-connections"};
    const struct ha_db *hd = health_find_db(d, name);
    size_t at = 0;

    if (hd == NULL) {
        row_str(r, NULL);
        row_str(r, NULL);
        row_str(r, NULL);
        return;
    }
    hosts[0] = '\0';
    for (int i = 0; i < hd->nhosts && at < len; i++) {
        const struct ha_host *hh = &hd->hosts[i];
        at += (size_t)snprintf(hosts + at, len - at, "%s%s:%s %s %s", i ? ", " : "", hh->host, hh->port,
                               health_role_name(hh->role), health_state_name(hh->state));
        if (at < len && hh->role == ROLE_STANDBY)
            at += (size_t)snprintf(hosts + at, len - at, " lag %lldms", llround(hh->lag_s * 1000));
    }
    row_str(r, hd->tsa);
    row_str(r, balance[hd->balance]);
    row_str(r, hosts);
}

static void database_row(struct client *c, const char *name, const struct db_config *db)
{
    const struct weir_config *cfg = c->d->cfg;
    struct admin_row r = {0};
    char hosts[1024];

    row_str(&r, name);
    row_str(&r, db->host);
    row_int(&r, db->port ? atoi(db->port) : 5432);
    row_str(&r, db->dbname ? db->dbname : name);
    row_str(&r, db->user);
    row_int(&r, pick(db->pool_size, cfg->default_pool_size));
    row_int(&r, pick(db->min_pool_size, cfg->min_pool_size));
    row_int(&r, pick(db->reserve_pool, cfg->reserve_pool_size));
    row_str(&r, db->pool_mode != CONFIG_UNSET ? config_pool_mode_name(db->pool_mode) : NULL);
    row_int(&r, pick(db->max_db_connections, cfg->max_db_connections));
    row_int(&r, db_connections(c->d, name));
    row_int(&r, admin_db_paused(c->d, name));
    row_int(&r, admin_db_disabled(c->d, name));
    database_ha_cols(c->d, &r, name, hosts, sizeof(hosts));
    row_send(c, &r);
}

static void show_databases(struct client *c)
{
    static const char *const names[] = {"name", "host", "port", "database", "force_user", "pool_size",
                                        "min_pool_size", "reserve_pool", "pool_mode", "max_connections",
                                        "current_connections", "paused", "disabled",
                                        "target_session_attrs", "load_balance_hosts", "hosts"};
    const char **dbs = NULL;
    int n = db_names(c->d, &dbs);

    admin_columns(c, "ssissiiisiiiisss", names);
    for (int i = 0; i < n; i++) {
        const struct db_config *db = config_find_db(c->d->cfg, dbs[i]);
        if (strcmp(dbs[i], "pgbouncer") == 0)
            console_db_row(c);
        else if (db != NULL) /* not a database gone from the config */
            database_row(c, dbs[i], db);
    }
    free(dbs);
    show_done(c);
}

/* Users weir knows: [users], pool users, the console's; sorted, unique. */
static int user_names(struct daemon *d, const char ***out)
{
    size_t nfile = d->users ? userlist_count(d->users) : 0;
    size_t cap = d->cfg->n_users + nfile + 1, n = 0, k = 0;
    const char **v;

    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        cap++;
    if ((v = malloc(cap * sizeof(*v))) == NULL)
        return -1;
    for (size_t i = 0; i < d->cfg->n_users; i++)
        v[n++] = d->cfg->users[i].name;
    for (size_t i = 0; i < nfile; i++) /* auth_file users, as PgBouncer lists them */
        v[n++] = userlist_user_at(d->users, i);
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        v[n++] = dp->user;
    v[n++] = "pgbouncer";
    qsort(v, n, sizeof(*v), cmp_str);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
    *out = v;
    return (int)k;
}

static void show_users(struct client *c)
{
    static const char *const names[] = {"name", "pool_mode"};
    const char **users = NULL;
    int n = user_names(c->d, &users);

    admin_columns(c, "ss", names);
    for (int i = 0; i < n; i++) {
        const struct user_config *u = config_find_user(c->d->cfg, users[i]);
        struct admin_row r = {0};
        row_str(&r, users[i]);
        row_str(&r, u && u->pool_mode != CONFIG_UNSET ? config_pool_mode_name(u->pool_mode) : NULL);
        row_send(c, &r);
    }
    free(users);
    show_done(c);
}

static void list_row(struct client *c, const char *name, long long v)
{
    struct admin_row r = {0};

    row_str(&r, name);
    row_int(&r, v);
    row_send(c, &r);
}

static void show_lists(struct client *c)
{
    static const char *const names[] = {"list", "items"};
    const char **v = NULL;
    int dbs = db_names(c->d, &v), users, pools = 1, used = 0, login = 0, servers = 0;

    free(v);
    users = user_names(c->d, &v);
    free(v);
    for (const struct dpool *dp = c->d->pools; dp; dp = dp->next)
        pools++;
    for (const struct client *x = daemon_first_client(c->d); x; x = daemon_next_client(c->d, x)) {
        used += x->state != CL_CLOSING;
        login += x->state == CL_STARTUP || x->state == CL_AUTH;
    }
    for (const struct server *s = c->d->servers; s; s = s->next)
        servers++;
    admin_columns(c, "si", names);
    list_row(c, "databases", dbs);
    list_row(c, "users", users);
    list_row(c, "pools", pools);
    list_row(c, "free_clients", 0); /* weir frees, it does not cache */
    list_row(c, "used_clients", used);
    list_row(c, "login_clients", login);
    list_row(c, "free_servers", 0);
    list_row(c, "used_servers", servers);
    list_row(c, "dns_names", 0);
    list_row(c, "dns_zones", 0);
    list_row(c, "dns_queries", 0);
    list_row(c, "dns_pending", 0);
    show_done(c);
}

static void mem_row(struct client *c, const char *name, size_t size, long long used)
{
    struct admin_row r = {0};

    row_str(&r, name);
    row_int(&r, (long long)size);
    row_int(&r, used);
    row_int(&r, 0);
    row_int(&r, (long long)size * used);
    row_send(c, &r);
}

/* weir has no slab caches: one row per kind of object, all of them in use. */
static void show_mem(struct client *c)
{
    static const char *const names[] = {"name", "size", "used", "free", "memtotal"};
    long long pools = 0, servers = 0, buffered = 0;

    for (const struct dpool *dp = c->d->pools; dp; dp = dp->next)
        pools++;
    for (const struct server *s = c->d->servers; s; s = s->next) {
        servers++;
        buffered += (long long)(evbuffer_get_length(s->io.in) + evbuffer_get_length(s->io.out));
    }
    for (const struct client *x = daemon_first_client(c->d); x; x = daemon_next_client(c->d, x))
        if (x->io.in && x->io.out)
            buffered += (long long)(evbuffer_get_length(x->io.in) + evbuffer_get_length(x->io.out));
    admin_columns(c, "siiii", names);
    mem_row(c, "pool_cache", sizeof(struct dpool), pools);
    mem_row(c, "server_cache", sizeof(struct server), servers);
    mem_row(c, "client_cache", sizeof(struct client), COUNT_GET(c->d->nclients));
    mem_row(c, "iobuf_cache", 1, buffered);
    show_done(c);
}

/* Settings whose built-in default is NULL in PgBouncer 1.18: its SHOW CONFIG
 * answers NULL (not '') for the default, and for the value while unset. */
static int null_by_default(const char *name)
{
    static const char *const keys[] = {"auth_file", "auth_user", "conffile", "service_name", "user", "verbose"};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(name, keys[i]) == 0)
            return 1;
    return 0;
}

static void show_config(struct client *c)
{
    static const char *const names[] = {"key", "value", "default", "changeable"};
    char value[1024];

    admin_columns(c, "ssss", names);
    for (int i = 0; i < config_setting_count(); i++) {
        const struct config_setting *s = config_setting_at(i);
        struct admin_row r = {0};
        int null_default = null_by_default(s->name);
        config_format_value(c->d->cfg, s, value, sizeof(value));
        if (s->type == CONFIG_MODE) /* an int to PgBouncer: shown in decimal (0777 is 511) */
            snprintf(value, sizeof(value), "%ld", strtol(value, NULL, 8));
        row_str(&r, s->name);
        row_str(&r, null_default && value[0] == '\0' ? NULL : value);
        row_str(&r, null_default ? NULL : s->default_value);
        row_str(&r, s->reloadable ? "yes" : "no");
        row_send(c, &r);
    }
    show_done(c);
}

/* weir resolves through libpq and keeps no DNS cache: empty, as PgBouncer without one. */
static void show_dns_hosts(struct client *c)
{
    static const char *const names[] = {"hostname", "ttl", "addrs"};

    admin_columns(c, "sqs", names);
    show_done(c);
}

static void show_dns_zones(struct client *c)
{
    static const char *const names[] = {"zonename", "serial", "count"};

    admin_columns(c, "sqi", names);
    show_done(c);
}

/* ---- SHOW STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS ---- */

static void db_stats(struct client *c, const char *name, struct db_totals *t, struct db_averages *a)
{
    if (strcmp(name, "pgbouncer") == 0) {
        memset(t, 0, sizeof(*t));
        memset(a, 0, sizeof(*a));
        t->xact_count = t->query_count = stats_admin_count(c->d);
        return;
    }
    stats_db_totals(c->d, name, t);
    stats_db_averages(c->d, name, a);
}

static void totals_cols(struct admin_row *r, const struct db_totals *t)
{
    row_u64(r, t->xact_count);
    row_u64(r, t->query_count);
    row_u64(r, t->bytes_in);
    row_u64(r, t->bytes_out);
    row_u64(r, t->xact_us);
    row_u64(r, t->query_us);
    row_u64(r, t->wait_us);
}

static void averages_cols(struct admin_row *r, const struct db_averages *a)
{
    row_u64(r, a->xact_count);
    row_u64(r, a->query_count);
    row_u64(r, a->bytes_in);
    row_u64(r, a->bytes_out);
    row_u64(r, a->xact_us);
    row_u64(r, a->query_us);
    row_u64(r, a->wait_us);
}

enum stats_kind { STATS_BOTH, STATS_TOTALS_ONLY, STATS_AVERAGES_ONLY };

static void show_stats(struct client *c, enum stats_kind kind)
{
    static const char *const both[] = {
        "database",       "total_xact_count", "total_query_count", "total_received", "total_sent",
        "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count", "avg_query_count",
        "avg_recv",       "avg_sent",         "avg_xact_time",     "avg_query_time", "avg_wait_time"};
    static const char *const one[] = {"database",  "xact_count", "query_count", "bytes_received",
                                      "bytes_sent", "xact_time", "query_time",  "wait_time"};
    const char **dbs = NULL;
    int n = db_names(c->d, &dbs);

    if (kind == STATS_BOTH)
        admin_columns(c, "snnnnnnnnnnnnnn", both);
    else
        admin_columns(c, "snnnnnnn", one);
    for (int i = 0; i < n; i++) {
        struct admin_row r = {0};
        struct db_totals t;
        struct db_averages a;
        db_stats(c, dbs[i], &t, &a);
        row_str(&r, dbs[i]);
        if (kind != STATS_AVERAGES_ONLY)
            totals_cols(&r, &t);
        if (kind != STATS_TOTALS_ONLY)
            averages_cols(&r, &a);
        row_send(c, &r);
    }
    free(dbs);
    show_done(c);
}

static void total_row(struct client *c, const char *name, uint64_t v)
{
    struct admin_row r = {0};

    row_str(&r, name);
    row_u64(&r, v);
    row_send(c, &r);
}

static void show_totals(struct client *c)
{
    static const char *const names[] = {"name", "value"};
    struct db_totals t;
    struct db_averages a;

    stats_db_totals(c->d, NULL, &t);
    /* PgBouncer's totals count its console's commands too (SHOW STATS' pgbouncer row) */
    t.xact_count += stats_admin_count(c->d);
    t.query_count += stats_admin_count(c->d);
    stats_all_averages(c->d, &a);
    admin_columns(c, "sn", names);
    total_row(c, "total_xact_count", t.xact_count);
    total_row(c, "total_query_count", t.query_count);
    total_row(c, "total_client_bytes", t.bytes_in);
    total_row(c, "total_server_bytes", t.bytes_out);
    total_row(c, "total_xact_time", t.xact_us);
    total_row(c, "total_query_time", t.query_us);
    total_row(c, "total_wait_time", t.wait_us);
    total_row(c, "avg_xact_count", a.xact_count);
    total_row(c, "avg_query_count", a.query_count);
    total_row(c, "avg_client_bytes", a.bytes_in);
    total_row(c, "avg_server_bytes", a.bytes_out);
    total_row(c, "avg_xact_time", a.xact_us);
    total_row(c, "avg_query_time", a.query_us);
    total_row(c, "avg_wait_time", a.wait_us);
    show_done(c);
}

/* ---- dispatch ---- */

int admin_show(struct client *c, const char *what)
{
    static const char *const simple[] = {"HELP", "VERSION", "STATE", "POOLS", "CLIENTS", "SERVERS",
                                         "DATABASES", "USERS", "LISTS", "MEM", "CONFIG", "DNS_HOSTS",
                                         "DNS_ZONES", "TOTALS"};
    static void (*const fns[])(struct client *) = {show_help,     show_version, show_state,     show_pools,
                                                    show_clients,  show_servers, show_databases, show_users,
                                                    show_lists,    show_mem,     show_config,    show_dns_hosts,
                                                    show_dns_zones, show_totals};

    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
        if (strcasecmp(what, simple[i]) == 0) {
            fns[i](c);
            return 0;
        }
    if (strcasecmp(what, "STATS") == 0)
        show_stats(c, STATS_BOTH);
    else if (strcasecmp(what, "STATS_TOTALS") == 0)
        show_stats(c, STATS_TOTALS_ONLY);
    else if (strcasecmp(what, "STATS_AVERAGES") == 0)
        show_stats(c, STATS_AVERAGES_ONLY);
    else if (strcasecmp(what, "SOCKETS") == 0)
        show_sockets(c, 0);
    else if (strcasecmp(what, "ACTIVE_SOCKETS") == 0)
        show_sockets(c, 1);
    else
        return -1;
    return 0;
}
