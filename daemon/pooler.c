/*
 * The pooler (see pooler.h): builds the backend connection string of a
 * [databases] entry for one user, turns PgBouncer's pool settings into a
 * libweir pool configuration, and keeps the (database, user) pools of the
 * daemon, including what happens to them on reload.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>

#include "admin.h"
#include "auth.h"
#include "backend.h"
#include "health.h"
#include "pooler.h"
#include "server.h"
#include "stats.h"
#include "tls.h"

static const char *const welcome_params[] = {
    "server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone", "IntervalStyle",
    "integer_datetimes", "is_superuser", "session_authorization", "standard_conforming_strings",
    "application_name", "default_transaction_read_only", "in_hot_standby",
};

/* Append key='value' with libpq's quoting. */
static void add_kv(struct evbuffer *b, const char *key, const char *value)
{
    if (value == NULL)
        return;
    evbuffer_add_printf(b, "%s%s='", evbuffer_get_length(b) ? " " : "", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\')
            evbuffer_add(b, "\\", 1);
        evbuffer_add(b, p, 1);
    }
    evbuffer_add(b, "'", 1);
}

/*
 * The password for the server login as user: the entry's; else the user's
 * secret from auth_file, or from auth_query (dp->auth_secret); a SCRAM
 * secret becomes the keys a client proved for it, when one did. A plain
 * password goes to libpq, a secret to weir's own connect (backend.h);
 * none lets libpq look in .pgpass.
 */
static const char *backend_password(struct daemon *d, const struct db_config *db, const struct dpool *dp,
                                    const char *user)
{
    const char *secret;

    if (db->password)
        return db->password;
    secret = d->users ? userlist_secret(d->users, user) : NULL;
    if (secret == NULL && dp)
        secret = dp->auth_secret;
    if (secret == NULL || secret_kind_of(secret) == SECRET_NONE)
        return NULL;
    if (secret_kind_of(secret) == SECRET_SCRAM && dp && dp->keys_secret && strcmp(dp->keys_secret, secret) == 0)
        return dp->keys_password;
    return secret;
}

/* auth_user's own password, for libpq (the Engine): the entry's when it is
 * the entry's user, else a plain-text one from auth_file. */
static const char *auth_user_password(struct daemon *d, const struct db_config *db, const char *user)
{
    const char *secret;

    if (db->password && db->user && strcmp(db->user, user) == 0)
        return db->password;
    secret = d->users ? userlist_secret(d->users, user) : NULL;
    return secret && secret_kind_of(secret) == SECRET_PLAIN ? secret : NULL;
}

static int entry_sets(const struct db_config *db, const char *key)
{
    for (size_t i = 0; i < db->n_extra; i++)
        if (strcmp(db->extra[i].key, key) == 0)
            return 1;
    return 0;
}

/*
 * server_tls_* as libpq's keys, where the entry does not give its own. The
 * mode always goes in, so libpq's default (prefer) or PGSSLMODE never decides
 * behind the operator's back. libpq has no key for TLS 1.2 cipher lists: the
 * backend connection uses OpenSSL's defaults whatever server_tls_ciphers says.
 */
static void add_server_tls(struct evbuffer *b, const struct weir_config *cfg, const struct db_config *db)
{
    static const char *const modes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
    unsigned mask = 0;
    int tls = cfg->server_tls_sslmode != TLS_MODE_DISABLE;
    int have_mask = tls && tls_parse_protocols(cfg->server_tls_protocols, &mask) == 0;
    const struct {
        const char *key, *value;
    } kv[] = {
        {"sslmode", modes[cfg->server_tls_sslmode]},
        {"sslrootcert", tls ? cfg->server_tls_ca_file : ""},
        {"sslcert", tls ? cfg->server_tls_cert_file : ""},
        {"sslkey", tls ? cfg->server_tls_key_file : ""},
        {"ssl_min_protocol_version", have_mask ? tls_libpq_min_protocol(mask) : ""},
        /* none above TLS 1.3: newer versions stay allowed */
        {"ssl_max_protocol_version", have_mask && !(mask & TLS_PROTO_V13) ? tls_libpq_max_protocol(mask) : ""},
    };

    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (kv[i].value && kv[i].value[0] && !entry_sets(db, kv[i].key))
            add_kv(b, kv[i].key, kv[i].value);
}

static char *build_conninfo(struct daemon *d, const struct db_config *db, const struct dpool *dp, const char *dbname,
                            const char *user)
{
    struct evbuffer *b = evbuffer_new();
    char *out = NULL;
    size_t len;

    if (b == NULL)
        return NULL;
    add_kv(b, "host", db->host);
    add_kv(b, "port", db->port);
    add_kv(b, "dbname", db->dbname ? db->dbname : dbname);
    add_kv(b, "user", user);
    add_kv(b, "password", dp == NULL ? auth_user_password(d, db, user) : backend_password(d, db, dp, user));
    add_kv(b, "client_encoding", db->client_encoding);
    add_kv(b, "application_name", db->application_name);
    add_kv(b, "fallback_application_name", "weir");
    if (db->datestyle || db->timezone) {
        char opts[512];
        snprintf(opts, sizeof(opts), "%s%s%s%s", db->datestyle ? "-c DateStyle=" : "",
                 db->datestyle ? db->datestyle : "", db->timezone ? " -c TimeZone=" : "",
                 db->timezone ? db->timezone : "");
        add_kv(b, "options", opts);
    }
    add_server_tls(b, d->cfg, db);
    for (size_t i = 0; i < db->n_extra; i++)
        add_kv(b, db->extra[i].key, db->extra[i].value);
    len = evbuffer_get_length(b);
    out = malloc(len + 1);
    if (out) {
        evbuffer_remove(b, out, len);
        out[len] = '\0';
    }
    evbuffer_free(b);
    return out;
}

static int ms(int64_t us)
{
    return us <= 0 ? 0 : us / 1000 > 0x7fffffff ? 0x7fffffff : (int)(us / 1000);
}

int pooler_server_error(const char *err, char *severity, size_t slen, char *msg, size_t mlen)
{
    static const char *const levels[] = {"FATAL", "ERROR", "PANIC"};
    const char *end;

    for (const char *p = strstr(err, "failed: "); p != NULL; p = strstr(p, "failed: ")) {
        p += 8;
        for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
            size_t n = strlen(levels[i]);
            if (strncmp(p, levels[i], n) != 0 || strncmp(p + n, ":  ", 3) != 0)
                continue;
            snprintf(severity, slen, "%s", levels[i]);
            p += n + 3;
            end = strchr(p, '\n');
            snprintf(msg, mlen, "%.*s", (int)(end ? end - p : (ptrdiff_t)strlen(p)), p);
            return 1;
        }
    }
    return 0;
}

static void daemon_pool_log(void *arg, weir_log_level level, const char *msg)
{
    struct daemon *d = arg;
    int lv = level == WEIR_LOG_DEBUG ? LG_DEBUG : level == WEIR_LOG_INFO ? LG_LOG
                                              : level == WEIR_LOG_WARNING ? LG_WARNING
                                                                          : LG_ERROR;
    const char *failed = strstr(msg, ": connect failed: ");
    char sev[16], text[512];

    log_at(&d->log, lv, "%s", msg);
    /* The server refused the login: PgBouncer's line too, which alerting knows. */
    if (failed && pooler_server_error(failed, sev, sizeof(sev), text, sizeof(text)))
        log_at(&d->log, LG_WARNING, "server login failed: %s %s", sev, text);
}

static void fill_pool_config(struct daemon *d, const struct db_config *db, weir_pool_config *pc)
{
    const struct weir_config *cfg = d->cfg;

    pc->max_size = db->pool_size != CONFIG_UNSET ? db->pool_size : cfg->default_pool_size;
    if (pc->max_size < 1)
        pc->max_size = 1;
    pc->min_size = db->min_pool_size != CONFIG_UNSET ? db->min_pool_size : cfg->min_pool_size;
    pc->max_overflow = db->reserve_pool != CONFIG_UNSET ? db->reserve_pool : cfg->reserve_pool_size;
    if (pc->min_size > pc->max_size + pc->max_overflow)
        pc->min_size = pc->max_size + pc->max_overflow;
    pc->overflow_delay_ms = ms(cfg->reserve_pool_timeout_us);
    pc->keep_overflow = 1; /* as PgBouncer: a reserve server, once open, serves on until server_idle_timeout */
    pc->max_waiters = -1;
    pc->timeout_ms = -1;
    pc->connect_timeout_ms = ms(cfg->server_connect_timeout_us);
    pc->recycle_ms = ms(cfg->server_lifetime_us);
    pc->recycle_jitter_ms = 0;
    pc->idle_timeout_ms = ms(cfg->server_idle_timeout_us);
    /* The daemon speaks to its servers itself after login: it resets them and
     * watches idle ones over its own protocol code, not through libpq. */
    pc->pre_ping_ms = -1;
    pc->reset_on_return = 0;
    pc->watch_idle = 0;
    pc->lifo = !cfg->server_round_robin;
    pc->retry_min_ms = 250;
    pc->retry_max_ms = ms(cfg->server_login_retry_us) > 250 ? ms(cfg->server_login_retry_us) : 250;
    /* PgBouncer keeps clients waiting (query_wait_timeout) while a server
     * is down, so a restart costs them a delay, not an error; a server that
     * refuses the login for good fails them at once, with its words. */
    pc->fail_waiters_on_connect_error = WEIR_WAITERS_FAIL_REFUSED;
}

/* The shared limit for one database or one user (kind 'd' or 'u'). */
struct limit_group {
    struct limit_group *next;
    char kind;
    char *name;
    weir_pool_group *group;
};

static int db_limit(struct daemon *d, const char *dbname)
{
    const struct db_config *db = config_find_db(d->cfg, dbname);
    return db && db->max_db_connections != CONFIG_UNSET ? db->max_db_connections : d->cfg->max_db_connections;
}

static int user_limit(struct daemon *d, const char *user)
{
    const struct user_config *u = config_find_user(d->cfg, user);
    return u && u->max_user_connections != CONFIG_UNSET ? u->max_user_connections
                                                        : d->cfg->max_user_connections;
}

static weir_pool_group *limit_group_get(struct daemon *d, char kind, const char *name)
{
    struct limit_group *lg;
    int max = kind == 'd' ? db_limit(d, name) : user_limit(d, name);

    for (lg = d->limit_groups; lg; lg = lg->next)
        if (lg->kind == kind && strcmp(lg->name, name) == 0)
            return lg->group;
    lg = calloc(1, sizeof(*lg));
    if (lg == NULL || (lg->name = strdup(name)) == NULL || weir_pool_group_new(max, &lg->group) != 0) {
        if (lg)
            free(lg->name);
        free(lg);
        return NULL;
    }
    lg->kind = kind;
    lg->next = d->limit_groups;
    d->limit_groups = lg;
    return lg->group;
}

static void limit_groups_apply(struct daemon *d)
{
    for (struct limit_group *lg = d->limit_groups; lg; lg = lg->next)
        weir_pool_group_set_max(lg->group, lg->kind == 'd' ? db_limit(d, lg->name) : user_limit(d, lg->name));
}

static void limit_groups_free(struct daemon *d)
{
    while (d->limit_groups) {
        struct limit_group *lg = d->limit_groups;
        d->limit_groups = lg->next;
        weir_pool_group_free(lg->group);
        free(lg->name);
        free(lg);
    }
}

static void wipe_free(char **s)
{
    if (*s) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

static struct dpool *dpool_find(struct daemon *d, const char *dbname, const char *user)
{
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (!dp->removed && strcmp(dp->dbname, dbname) == 0 && strcmp(dp->user, user) == 0)
            return dp;
    return NULL;
}

static void dpool_free(struct dpool *dp)
{
    weir_pool_free(dp->pool);
    param_set_clear(&dp->welcome_params);
    for (size_t i = 0; i < dp->nwelcome; i++) {
        free(dp->welcome_names[i]);
        free(dp->welcome_values[i]);
    }
    free(dp->dbname);
    free(dp->user);
    free(dp->conninfo);
    free(dp->connect_query);
    wipe_free(&dp->auth_secret);
    wipe_free(&dp->keys_secret);
    wipe_free(&dp->keys_password);
    free(dp->ctr);
    free(dp);
}

static enum pool_mode effective_mode(struct daemon *d, const struct db_config *db, const char *client_user)
{
    const struct user_config *u = config_find_user(d->cfg, client_user);

    if (u && u->pool_mode != CONFIG_UNSET)
        return (enum pool_mode)u->pool_mode;
    if (db->pool_mode != CONFIG_UNSET)
        return (enum pool_mode)db->pool_mode;
    return d->cfg->pool_mode;
}

static struct dpool *dpool_new(struct daemon *d, const struct db_config *db, const char *dbname, const char *user,
                               const char *client_user)
{
    struct dpool *dp = calloc(1, sizeof(*dp));
    weir_pool_config pc;
    char name[256];

    if (dp == NULL)
        return NULL;
    dp->d = d;
    dp->ctr = aligned_alloc(64, (size_t)(d->nworkers > 0 ? d->nworkers : 1) * sizeof(*dp->ctr));
    if (dp->ctr == NULL) {
        free(dp);
        return NULL;
    }
    memset(dp->ctr, 0, (size_t)(d->nworkers > 0 ? d->nworkers : 1) * sizeof(*dp->ctr));
    dp->dbname = strdup(dbname);
    dp->user = strdup(user);
    dp->conninfo = build_conninfo(d, db, dp, dbname, user);
    dp->connect_query = db->connect_query ? strdup(db->connect_query) : NULL;
    dp->mode = effective_mode(d, db, client_user);
    dp->autodb = strcmp(db->name, "*") == 0;
    snprintf(name, sizeof(name), "%s/%s", dbname, user);
    weir_pool_config_init(&pc);
    fill_pool_config(d, db, &pc);
    pc.dialect = backend_dialect(); /* libpq, or weir's own connect for secrets */
    pc.conninfo = dp->conninfo;
    pc.base = d->base;
    pc.name = name;
    pc.log_fn = daemon_pool_log;
    pc.log_arg = d;
    pc.groups[0] = limit_group_get(d, 'd', dbname);
    pc.groups[1] = limit_group_get(d, 'u', user);
    dp->ha = health_pool_config(d, dp, &pc); /* multi-host entries: a host per connection */
    if (dp->dbname == NULL || dp->user == NULL || dp->conninfo == NULL || weir_pool_new(&pc, &dp->pool) != 0) {
        dpool_free(dp);
        return NULL;
    }
    if (admin_db_paused(d, dbname)) /* PAUSE, KILL or SIGUSR1 holds new pools too */
        weir_pool_pause(dp->pool);
    dp->next = d->pools;
    d->pools = dp;
    return dp;
}

static struct dpool *pooler_get_locked(struct daemon *d, const char *dbname, const char *user,
                                      const char **sqlstate, char *err, size_t errlen);

/* Workers log clients in at the same time: the pool list, its limit groups
 * and new pools are made under the lock (health checks of a new multi-host
 * entry start on the main thread, see health_pool_config). */
struct dpool *pooler_get(struct worker *self, const char *dbname, const char *user, const char **sqlstate,
                         char *err, size_t errlen)
{
    struct daemon *d = self->d;
    struct dpool *dp;

    pthread_mutex_lock(&d->lock);
    dp = pooler_get_locked(d, dbname, user, sqlstate, err, errlen);
    if (dp) {
        COUNT_ADD(dp->nclients, 1);
        dp->unused_since_us = 0; /* autodb: in use again, however briefly */
    }
    pthread_mutex_unlock(&d->lock);
    return dp;
}

static struct dpool *pooler_get_locked(struct daemon *d, const char *dbname, const char *user,
                                      const char **sqlstate, char *err, size_t errlen)
{
    const struct db_config *db = config_find_db(d->cfg, dbname);
    const char *backend_user;
    struct dpool *dp;

    if (db == NULL) {
        *sqlstate = "3D000";
        snprintf(err, errlen, "no such database: %s", dbname);
        return NULL;
    }
    backend_user = db->user ? db->user : user;
    dp = dpool_find(d, dbname, backend_user);
    if (dp == NULL)
        dp = dpool_new(d, db, dbname, backend_user, user);
    if (dp == NULL) {
        *sqlstate = "08P01";
        snprintf(err, errlen, "pooler error: cannot create pool for %s/%s", dbname, backend_user);
    }
    return dp;
}

static void learn_welcome_locked(struct dpool *dp, const struct server *s);

void pooler_learn_welcome(struct dpool *dp, const struct server *s)
{
    pthread_mutex_lock(&dp->d->lock);
    if (!dp->welcome_known)
        learn_welcome_locked(dp, s);
    pthread_mutex_unlock(&dp->d->lock);
}

static void learn_welcome_locked(struct dpool *dp, const struct server *s)
{
    for (size_t i = 0; i < sizeof(welcome_params) / sizeof(welcome_params[0]); i++) {
        const char *v = backend_param(s->be, welcome_params[i]);
        if (v == NULL)
            continue;
        dp->welcome_names[dp->nwelcome] = strdup(welcome_params[i]);
        dp->welcome_values[dp->nwelcome] = strdup(v);
        if (dp->welcome_names[dp->nwelcome] == NULL || dp->welcome_values[dp->nwelcome] == NULL) {
            free(dp->welcome_names[dp->nwelcome]);
            free(dp->welcome_values[dp->nwelcome]);
            continue;
        }
        dp->nwelcome++;
    }
    for (int i = 0; i < TP_COUNT; i++)
        param_set_share(&dp->welcome_params, i, &s->params);
    dp->welcome_known = 1;
}

/* The password changed: new server logins use the new conninfo; the
 * connections already made stay. */
static void refresh_conninfo(struct dpool *dp)
{
    const struct db_config *db = config_find_db(dp->d->cfg, dp->dbname);
    char *conninfo;

    if (db == NULL || dp->removed)
        return;
    conninfo = build_conninfo(dp->d, db, dp, dp->dbname, dp->user);
    if (conninfo == NULL || strcmp(conninfo, dp->conninfo) == 0 || weir_pool_set_conninfo(dp->pool, conninfo) != 0) {
        wipe_free(&conninfo);
        return;
    }
    wipe_free(&dp->conninfo);
    dp->conninfo = conninfo;
}

void pooler_set_auth_secret(struct dpool *dp, const char *user, const char *secret)
{
    if (strcmp(user, dp->user) != 0)
        return; /* a forced user logs in with its own password */
    pthread_mutex_lock(&dp->d->lock);
    if (dp->auth_secret == NULL || strcmp(dp->auth_secret, secret) != 0) {
        wipe_free(&dp->auth_secret);
        dp->auth_secret = secret[0] ? strdup(secret) : NULL;
        refresh_conninfo(dp);
    }
    pthread_mutex_unlock(&dp->d->lock);
}

static void set_scram_keys_locked(struct dpool *dp, const char *secret, const char *pw);

void pooler_set_scram_keys(struct dpool *dp, const char *user, const char *secret,
                           const uint8_t client_key[SCRAM_KEY_LEN], const uint8_t server_key[SCRAM_KEY_LEN])
{
    char pw[160];

    if (strcmp(user, dp->user) != 0 || backend_keys_password(client_key, server_key, pw, sizeof(pw)) != 0)
        return;
    pthread_mutex_lock(&dp->d->lock);
    set_scram_keys_locked(dp, secret, pw);
    pthread_mutex_unlock(&dp->d->lock);
    OPENSSL_cleanse(pw, sizeof(pw));
}

static void set_scram_keys_locked(struct dpool *dp, const char *secret, const char *pw)
{
    if (dp->keys_password && strcmp(dp->keys_password, pw) == 0 && strcmp(dp->keys_secret, secret) == 0)
        return; /* the usual case: the same keys again */
    wipe_free(&dp->keys_secret);
    wipe_free(&dp->keys_password);
    dp->keys_secret = strdup(secret);
    dp->keys_password = strdup(pw);
    if (dp->keys_secret == NULL || dp->keys_password == NULL) {
        wipe_free(&dp->keys_secret);
        wipe_free(&dp->keys_password);
    }
    refresh_conninfo(dp);
}

char *pooler_auth_conninfo(struct daemon *d, const struct dpool *dp, const char *auth_user, char *err, size_t errlen)
{
    const struct db_config *db = config_find_db(d->cfg, dp->dbname);
    const char *dbname = dp->dbname, *authdb;

    if (db == NULL) {
        snprintf(err, errlen, "no such database: %s", dp->dbname);
        return NULL;
    }
    authdb = db->auth_dbname ? db->auth_dbname : d->cfg->auth_dbname;
    if (authdb[0]) {
        db = config_find_db(d->cfg, authdb);
        dbname = authdb;
        if (db == NULL) {
            snprintf(err, errlen, "auth_dbname \"%s\" is not a database in the configuration", authdb);
            return NULL;
        }
    }
    return build_conninfo(d, db, NULL, dbname, auth_user);
}

char *pooler_check_conninfo(struct daemon *d, const struct db_config *db)
{
    const char *user = db->user, *secret;

    if (user == NULL || user[0] == '\0')
        user = db->auth_user && db->auth_user[0] ? db->auth_user : d->cfg->auth_user;
    if (user == NULL || user[0] == '\0' || (db->dbname == NULL && strcmp(db->name, "*") == 0))
        return NULL; /* no login, or no database to log in to before a client names one */
    /* An md5 or SCRAM secret is no password libpq can log in with: the
     * first pool's login may do better. */
    secret = d->users ? userlist_secret(d->users, user) : NULL;
    if (auth_user_password(d, db, user) == NULL && secret && secret_kind_of(secret) != SECRET_NONE &&
        secret_kind_of(secret) != SECRET_PLAIN)
        return NULL;
    return build_conninfo(d, db, NULL, db->name, user);
}

/* PgBouncer applies query_timeout to a waiting client too (counted from
 * its query): whichever of the two is set and shorter ends the wait. */
static int64_t wait_limit_us(const struct weir_config *cfg, int *is_query_timeout)
{
    int64_t w = cfg->query_wait_timeout_us, q = cfg->query_timeout_us;

    *is_query_timeout = q > 0 && (w <= 0 || q <= w);
    return *is_query_timeout ? q : w;
}

int pooler_wait_ms(const struct dpool *dp)
{
    int is_q;
    int64_t us = wait_limit_us(dp->d->cfg, &is_q);
    return us > 0 ? ms(us) : -1;
}

const char *pooler_wait_reason(const struct dpool *dp)
{
    int is_q;
    (void)wait_limit_us(dp->d->cfg, &is_q);
    return is_q ? "query_timeout" : "query_wait_timeout";
}

/* Everything but the password: what decides which server a connection reaches. */
static int same_target(const char *a, const char *b)
{
    const char *pa = strstr(a, " password='"), *pb = strstr(b, " password='");
    const char *ea, *eb;

    if (pa == NULL || pb == NULL)
        return pa == pb && strcmp(a, b) == 0;
    /* password values are quoted with backslash escapes by add_kv */
    for (ea = pa + 11; *ea && *ea != '\''; ea += (*ea == '\\' && ea[1]) ? 2 : 1)
        ;
    for (eb = pb + 11; *eb && *eb != '\''; eb += (*eb == '\\' && eb[1]) ? 2 : 1)
        ;
    return pa - a == pb - b && strncmp(a, b, (size_t)(pa - a)) == 0 && strcmp(ea, eb) == 0;
}

/* The entry changed: new connections use the new settings. Connections to a
 * different server are closed when they come back, as PgBouncer does; a
 * changed password alone keeps the logged-in connections. */
static void pooler_retarget(struct daemon *d, struct dpool *dp, char *conninfo)
{
    int moved = !same_target(conninfo, dp->conninfo);

    if (weir_pool_set_conninfo(dp->pool, conninfo) != 0) {
        free(conninfo);
        return;
    }
    if (moved)
        weir_pool_invalidate_all(dp->pool);
    log_at(&d->log, LG_LOG, "pool %s/%s: connection settings changed%s", dp->dbname, dp->user,
           moved ? "; reconnecting servers as they are released" : " (password only)");
    free(dp->conninfo);
    dp->conninfo = conninfo;
}

void pooler_apply_config(struct daemon *d)
{
    health_apply_config(d);
    limit_groups_apply(d);
    for (struct dpool *dp = d->pools; dp; dp = dp->next) {
        const struct db_config *db = config_find_db(d->cfg, dp->dbname);
        char *conninfo;
        weir_pool_config pc;
        enum pool_mode mode;

        if (dp->removed)
            continue;
        conninfo = db ? build_conninfo(d, db, dp, dp->dbname, db->user ? db->user : dp->user) : NULL;
        if (db == NULL || conninfo == NULL || (db->user && strcmp(db->user, dp->user) != 0) ||
            (health_find_db(d, dp->dbname) != NULL) != dp->ha) {
            /* Gone (or now choosing hosts differently: its pool has or lacks
             * health.c's chooser): let it drain; its clients move to a new
             * pool at their next query. */
            log_at(&d->log, LG_LOG, "pool %s/%s: database removed from config, draining", dp->dbname, dp->user);
            dp->removed = 1;
            weir_pool_drain(dp->pool);
            free(conninfo);
            continue;
        }
        if (strcmp(conninfo, dp->conninfo) != 0)
            pooler_retarget(d, dp, conninfo); /* takes conninfo */
        else
            free(conninfo);
        mode = effective_mode(d, db, dp->user);
        if (mode == POOL_MODE_SESSION && dp->mode != POOL_MODE_SESSION) {
            /* Servers released in transaction or statement mode were never
             * reset: a session client must not inherit another's SETs,
             * temp tables or locks. Replace them as they come back. */
            weir_pool_invalidate_all(dp->pool);
            log_at(&d->log, LG_LOG, "pool %s/%s: now in session mode; reconnecting servers as they are released",
                   dp->dbname, dp->user);
        }
        dp->mode = mode;
        weir_pool_config_init(&pc);
        fill_pool_config(d, db, &pc);
        (void)health_pool_config(d, dp, &pc);
        if (weir_pool_reconfigure(dp->pool, &pc) != 0)
            log_at(&d->log, LG_WARNING, "pool %s/%s: new sizes rejected", dp->dbname, dp->user);
    }
}

/* One look at the automatic pools: with mark, the due ones drain. Returns how many are due. */
static int autodb_pass(struct daemon *d, int64_t now_us, int64_t limit, int mark)
{
    int due = 0;

    pthread_mutex_lock(&d->lock); /* pooler_get counts a client in under it */
    for (struct dpool *dp = d->pools; dp; dp = dp->next) {
        weir_pool_stats st;

        if (!dp->autodb || dp->removed)
            continue;
        weir_pool_get_stats(dp->pool, &st);
        if (COUNT_GET(dp->nclients) > 0 || st.total > 0 || st.waiters > 0) { /* servers too, as PgBouncer */
            dp->unused_since_us = 0;
        } else if (dp->unused_since_us == 0) {
            dp->unused_since_us = now_us;
        } else if (now_us - dp->unused_since_us >= limit) {
            due++;
            if (!mark)
                continue;
            /* PgBouncer's words (alerting may know them) */
            log_at(&d->log, LG_WARNING,
                   "dropping database '%s' as it does not exist anymore or inactive auto-database", dp->dbname);
            dp->removed = 1;
            weir_pool_drain(dp->pool);
        }
    }
    pthread_mutex_unlock(&d->lock);
    return due;
}

void pooler_expire_autodb(struct daemon *d, int64_t now_us)
{
    int64_t limit = d->cfg->autodb_idle_timeout_us;

    if (limit <= 0 || autodb_pass(d, now_us, limit, 0) == 0)
        return;
    /* Workers read dp->removed without the lock: they are parked while it changes. */
    world_stop(daemon_main_worker(d));
    (void)autodb_pass(d, now_us, limit, 1);
    world_start(daemon_main_worker(d));
}

/* Is there a pool of database name in the list from dp on? */
static int pool_named_in(const struct dpool *dp, const char *name)
{
    for (; dp; dp = dp->next)
        if (strcmp(dp->dbname, name) == 0)
            return 1;
    return 0;
}

static int pool_named(struct daemon *d, const char *name)
{
    int found;

    pthread_mutex_lock(&d->lock);
    found = pool_named_in(d->pools, name);
    pthread_mutex_unlock(&d->lock);
    return found;
}

void pooler_collect(struct daemon *d)
{
    struct dpool **pp, *gone = NULL;

    /* Unlinked under the lock, freed after it: freeing a pool closes its
     * connections, whose servers take the lock to leave the server list. */
    pthread_mutex_lock(&d->lock);
    pp = &d->pools;
    while (*pp) {
        struct dpool *dp = *pp;
        weir_pool_stats st;

        if (dp->removed && COUNT_GET(dp->nclients) == 0) {
            weir_pool_get_stats(dp->pool, &st);
            if (st.total == 0) {
                *pp = dp->next;
                dp->next = gone;
                gone = dp;
                continue;
            }
        }
        pp = &dp->next;
    }
    pthread_mutex_unlock(&d->lock);
    while (gone) {
        struct dpool *dp = gone;
        gone = dp->next;
        if (dp->autodb && !pool_named(d, dp->dbname) && !pool_named_in(gone, dp->dbname))
            stats_db_forget(d, dp->dbname); /* the last pool of a dropped automatic database */
        else
            stats_pool_gone(d, dp);
        dpool_free(dp);
    }
}

void pooler_free_all(struct daemon *d)
{
    while (d->pools) {
        struct dpool *dp = d->pools;
        d->pools = dp->next;
        dpool_free(dp);
    }
    limit_groups_free(d);
}
