/*
 * Client connections (see client.h for the state machine): the startup
 * packet (and SSLRequest, which starts TLS on the client's stream when
 * client TLS is on, GSSENCRequest, CancelRequest), authentication
 * (trust, plain, md5, SCRAM-SHA-256, peer, cert; per auth_type or the first
 * matching auth_hba_file rule) against auth_file, or against what auth_query
 * returns for users missing from it (the client waits in AUTH meanwhile),
 * keeping the SCRAM keys a client proves for the pool's server logins; the
 * login welcome (the server's parameters, weir's own cancel key), then asking
 * the pooler for a server whenever a query arrives and none is linked. Every
 * way out goes through client_disconnect(), which logs the reason.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <pwd.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin.h"
#include "auth.h"
#include "authquery.h"
#include "client.h"
#include "config.h"
#include "hba.h"
#include "pooler.h"
#include "prepared.h"
#include "server.h"
#include "tls.h"

#define STARTUP_MAX 10000
#define SERVER_OUT_HIGH (256 * 1024)

static const char *const state_names[] = {"startup", "auth", "welcome", "idle", "waiting", "active", "closing"};

/* Allowed transitions, [from][to]. */
static const unsigned char client_transitions[7][7] = {
    [CL_STARTUP] = {[CL_AUTH] = 1, [CL_WELCOME] = 1, [CL_IDLE] = 1, [CL_CLOSING] = 1},
    [CL_AUTH] = {[CL_WELCOME] = 1, [CL_IDLE] = 1, [CL_CLOSING] = 1},
    [CL_WELCOME] = {[CL_IDLE] = 1, [CL_CLOSING] = 1},
    [CL_IDLE] = {[CL_WAITING] = 1, [CL_ACTIVE] = 1, [CL_CLOSING] = 1},
    [CL_WAITING] = {[CL_ACTIVE] = 1, [CL_CLOSING] = 1},
    [CL_ACTIVE] = {[CL_IDLE] = 1, [CL_CLOSING] = 1},
    [CL_CLOSING] = {0},
};

static void client_set_state(struct client *c, enum client_state to)
{
    if (!client_transitions[c->state][to])
        client_log(c, LG_ERROR, "invalid client transition %s -> %s", state_names[c->state], state_names[to]);
    c->state = to;
}

/* The host part of PgBouncer's prefix: "[v6addr]", "unix(peer pid)" or the address. */
static void client_log_host(struct client *c, char *buf, size_t len)
{
    struct ucred cred;
    socklen_t clen = sizeof(cred);

    if (c->is_unix && getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.pid > 0)
        snprintf(buf, len, "unix(%d)", (int)cred.pid);
    else if (strchr(c->addr, ':') != NULL)
        snprintf(buf, len, "[%s]", c->addr);
    else
        snprintf(buf, len, "%s", c->addr);
}

void client_log(struct client *c, int level, const char *fmt, ...)
{
    char prefix[256], msg[1024];
    va_list ap;
    char host[80];

    if (level < c->d->log.min_level)
        return;
    client_log_host(c, host, sizeof(host));
    snprintf(prefix, sizeof(prefix), "C-0x%llx: %s/%s@%s:%d ", (unsigned long long)c->id,
             c->dbname && !c->no_db ? c->dbname : "(nodb)", c->user ? c->user : "(nouser)", host, c->port);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line(&c->d->log, level, prefix, "%s", msg);
}

const char *client_tls_peer_cn(const struct client *c)
{
    return c->tls_cn;
}

int client_flush(struct client *c)
{
    if (stream_flush(&c->io) != 0) {
        client_disconnect(c, NULL, "client unexpected eof");
        return -1;
    }
    return 0;
}

void client_send_error(struct client *c, const char *severity, const char *sqlstate, const char *msg)
{
    if (stream_wake(&c->io) == 0)
        (void)weir_proto_build_error(c->io.out, severity, sqlstate, msg, NULL, NULL);
}


/* ---- the one exit ---- */

static void client_free_later(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    (void)fd;
    (void)what;
    free(c);
}

static void client_wipe_auth(struct client *c)
{
    scram_server_free(c->scram);
    c->scram = NULL;
    if (c->authq_secret) {
        OPENSSL_cleanse(c->authq_secret, strlen(c->authq_secret));
        free(c->authq_secret);
        c->authq_secret = NULL;
    }
    if (c->secret) {
        OPENSSL_cleanse(c->secret, strlen(c->secret));
        free(c->secret);
        c->secret = NULL;
    }
}

/* The stream, then its TLS session (close_notify first when healthy), then the socket. */
static void client_close_io(struct client *c)
{
    SSL *ssl = c->io.ssl;
    int clean = !c->io.failed && !c->io.tls_handshake;

    stream_release(&c->io);
    tls_conn_close(ssl, clean);
    close(c->fd);
}

void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    struct daemon *d = c->d;
    char reason[512];
    va_list ap;

    if (c->state == CL_CLOSING)
        return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    /* An empty reason closes silently: PgBouncer logs nothing for a
     * connection gone during login with nothing unread (a monitoring probe). */
    if (d->cfg->log_disconnections && reason[0])
        client_log(c, LG_LOG, "closing because: %s (age=%llds)", reason,
                   (long long)((weir__now_us() - c->connect_us) / 1000000));
    if (sqlstate != NULL) {
        client_send_error(c, "FATAL", sqlstate, reason);
        (void)stream_flush(&c->io);
        if (d->cfg->log_pooler_errors)
            client_log(c, LG_WARNING, "pooler error: %s", reason);
    }
    client_set_state(c, CL_CLOSING);
    if (c->server) {
        struct server *s = c->server;
        int clean = s->pending == 0 && !c->unsynced && c->fwd_remaining == 0 && s->txn == 'I';
        server_release(s, clean);
    }
    if (c->waiter) {
        weir_pool_cancel(c->dp->pool, c->waiter);
        c->waiter = NULL;
    }
    authq_abandon(c->authq_job);
    c->authq_job = NULL;
    if (c->dp)
        COUNT_ADD(c->dp->nclients, -1);
    if (c->timer)
        event_free(c->timer);
    c->timer = NULL;
    client_close_io(c);
    client_wipe_auth(c);
    free(c->tls_cn);
    c->tls_cn = NULL;
    client_stmts_free(c->stmts, d->pstmts);
    c->stmts = NULL;
    free(c->dealloc_target);
    c->dealloc_target = NULL;
    param_set_clear(&c->params);
    free(c->user);
    free(c->dbname);
    c->user = c->dbname = NULL;
    daemon_unregister_client(d, c);
    worker_post(c->w, client_free_later, c);
    daemon_client_gone(d);
}

/* ---- timers ---- */

static void client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    (void)fd;
    (void)what;
    c->timer_armed = 0;
    switch (c->state) {
    case CL_STARTUP:
    case CL_AUTH:
        client_disconnect(c, "08P01", "client_login_timeout");
        break;
    case CL_WELCOME: /* waiting for the pool's first server: PgBouncer's words */
        client_disconnect(c, "08P01", "client_login_timeout (server down)");
        break;
    case CL_IDLE:
        client_disconnect(c, "08P01", "client_idle_timeout");
        break;
    case CL_WAITING:
        if (c->server != NULL) /* its server's check did not answer in time */
            client_disconnect(c, "08P01", "query_wait_timeout");
        break;
    case CL_ACTIVE:
        if (c->server == NULL)
            break;
        if (c->server->pending > 0) {
            /* Cancel first: closing alone would leave the query running. */
            server_cancel(c->server);
            c->server->close_why = "query timeout"; /* the server's closing line says so, as PgBouncer's */
            client_disconnect(c, "08P01", "query timeout");
        } else if (c->server->txn != 'I') {
            const char *why = c->server->txn_timeout_why ? c->server->txn_timeout_why : "idle transaction timeout";
            c->server->close_why = why;
            client_disconnect(c, "08P01", "%s", why);
        } else {
            client_disconnect(c, "08P01", "client_idle_timeout");
        }
        break;
    default:
        break;
    }
}

void client_rearm_timer(struct client *c, int64_t us)
{
    struct timeval tv;

    if (c->timer_armed)
        event_del(c->timer);
    c->timer_armed = 0;
    if (us <= 0 || c->state == CL_CLOSING)
        return;
    if (c->timer == NULL && (c->timer = evtimer_new(c->w->base, client_timer_cb, c)) == NULL)
        return; /* out of memory: this client goes without its timeout */
    tv.tv_sec = us / 1000000;
    tv.tv_usec = us % 1000000;
    c->timer_armed = event_add(c->timer, &tv) == 0;
}

/* An idle client keeps only its struct: buffers and timer come back on use. */
static void client_trim(struct client *c)
{
    stream_trim(&c->io);
    if (c->timer && !c->timer_armed) {
        event_free(c->timer);
        c->timer = NULL;
    }
}

void client_trim_idle(struct worker *w)
{
    for (struct client *c = w->clients; c; c = c->next)
        if (c->state == CL_IDLE && !c->admin && c->server == NULL && ++c->quiet_ticks >= 2)
            client_trim(c);
}

void client_fast_close_sweep(struct worker *w)
{
    struct client *c, *next;

    if (!w->d->cfg->server_fast_close)
        return;
    for (c = w->clients; c; c = next) {
        struct server *s = c->server;
        next = c->next; /* c may be closed below */
        if (s != NULL && !s->fast_close && s->dp->mode == POOL_MODE_SESSION && server_close_needed(s))
            (void)server_fast_close(s);
    }
}

/* ---- login ---- */

static void client_finish_login(struct client *c);
static void client_on_read(struct stream *io, void *arg);
static void client_on_flat(struct stream *io, void *arg, const unsigned char *p, size_t n);
static void client_on_drain(struct stream *io, void *arg);

static int ignored_startup_param(const struct client *c, const char *name)
{
    const char *list = c->d->cfg->ignore_startup_parameters;
    size_t n = strlen(name);

    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ')
            end++;
        if ((size_t)(end - p) == n && strncasecmp(p, name, n) == 0)
            return 1;
        p = end;
    }
    return 0;
}

/* Take the startup parameters in; -1 after disconnecting the client. */
static int client_take_params(struct client *c, const weir_startup *st)
{
    for (int i = 0; i < st->nparams; i++) {
        const char *name = st->names[i], *value = st->values[i];
        int tp;

        if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0)
            continue;
        tp = tracked_param_index(name);
        if (tp >= 0) {
            if (tp == TP_APPLICATION_NAME && c->d->cfg->application_name_add_host && !c->is_unix) {
                char buf[512];
                snprintf(buf, sizeof(buf), "%s - %s:%d", value, c->addr, c->port);
                param_set_put(&c->params, tp, buf);
            } else {
                param_set_put(&c->params, tp, value);
            }
            continue;
        }
        if (ignored_startup_param(c, name))
            continue;
        client_log(c, LG_WARNING, "unsupported startup parameter: %s=%s", name, value);
        client_disconnect(c, "08P01", "unsupported startup parameter: %s", name);
        return -1;
    }
    return 0;
}

static void send_auth_request(struct client *c, uint32_t code, const void *data, size_t len)
{
    (void)weir_proto_build_auth(c->io.out, code, data, len);
    (void)client_flush(c);
}

static const char *user_secret(struct client *c)
{
    return c->d->users ? userlist_secret(c->d->users, c->user) : NULL;
}

/* PgBouncer 1.18's words (and its 08P01): the same for a wrong password, an
 * unknown user and an empty secret, so nothing tells which users exist. */
static void auth_failed(struct client *c)
{
    int sasl = c->auth == CA_SCRAM || c->auth == CA_SCRAM_FINAL;

    COUNT_ADD(c->d->stats.logins_failed, 1);
    client_disconnect(c, "08P01", sasl ? "SASL authentication failed" : "password authentication failed");
}

/* Begin a SCRAM exchange with keys for the secret (or mock keys). */
static void start_scram(struct client *c, const char *secret)
{
    static const char *const mechs[] = {"SCRAM-SHA-256", NULL};
    struct scram_keys keys;
    int rc;

    enum secret_kind kind = secret ? secret_kind_of(secret) : SECRET_NONE;

    /* An unknown user, or one with an empty password, sees the same exchange
     * as a wrong password: nothing tells which users exist. */
    if (kind == SECRET_NONE)
        rc = scram_keys_mock(c->user, c->d->mock_secret, c->d->cfg->scram_iterations, &keys);
    else
        rc = scram_cache_get(c->d->scram, c->user, secret, c->d->cfg->scram_iterations, &keys);
    if (rc == AUTH_EWRONGKIND) {
        /* As PgBouncer: logged, and the client's exchange fails like a wrong password's. */
        client_log(c, LG_ERROR, "SCRAM authentication failed: user has MD5 secret");
        rc = scram_keys_mock(c->user, c->d->mock_secret, c->d->cfg->scram_iterations, &keys);
        kind = SECRET_NONE;
    }
    if (rc != AUTH_OK || (c->scram = scram_server_new(&keys)) == NULL) {
        OPENSSL_cleanse(&keys, sizeof(keys));
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    OPENSSL_cleanse(&keys, sizeof(keys));
    if (kind == SECRET_SCRAM && (c->secret = strdup(secret)) == NULL) {
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    c->auth = CA_SCRAM;
    (void)weir_proto_build_auth_sasl(c->io.out, mechs);
    (void)client_flush(c);
}

/* The method auth_type (or, for hba, the first matching rule) asks for.
 * Returns -1 after refusing the client (no rule, or an unusable address). */
static int auth_method(struct client *c, enum hba_method *m)
{
    const struct weir_config *cfg = c->d->cfg;
    struct hba_peer peer;
    int line;

    switch (cfg->auth_type) {
    case AUTH_TYPE_TRUST: *m = HBA_TRUST; return 0;
    case AUTH_TYPE_PLAIN: *m = HBA_PASSWORD; return 0;
    case AUTH_TYPE_MD5: *m = HBA_MD5; return 0;
    case AUTH_TYPE_SCRAM_SHA_256: *m = HBA_SCRAM; return 0;
    case AUTH_TYPE_CERT: *m = HBA_CERT; return 0;
    case AUTH_TYPE_HBA: break;
    default:
        client_disconnect(c, "28000", "auth_type %d is not supported by this weir build", (int)cfg->auth_type);
        return -1;
    }
    if (hba_peer_from_text(&peer, c->is_unix, c->addr, c->tls) != 0) {
        client_disconnect(c, "28000", "login rejected: unknown client address");
        return -1;
    }
    *m = hba_match(cfg->hba, &peer, c->dbname, c->user, &line);
    if (*m != HBA_REJECT)
        return 0;
    COUNT_ADD(c->d->stats.logins_failed, 1);
    /* PostgreSQL's wording, so users recognise it. */
    client_disconnect(c, "28000", "%s for host \"%s\", user \"%s\", database \"%s\", %s",
                      line ? "pg_hba.conf rejects connection" : "no pg_hba.conf entry",
                      c->is_unix ? "[local]" : c->addr, c->user, c->dbname, c->tls ? "SSL encryption" : "no encryption");
    return -1;
}

/* peer: the Unix socket's other end runs as the OS user of the requested name. */
static int peer_matches(struct client *c)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    struct passwd pw, *found = NULL;
    char buf[4096];

    if (!c->is_unix || getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &found) != 0 || found == NULL) {
        client_log(c, LG_WARNING, "peer: no user name for uid %u", (unsigned)cred.uid);
        return 0;
    }
    return strcmp(found->pw_name, c->user) == 0;
}

/* cert (PgBouncer's rules): a TLS connection whose verified client
 * certificate's common name is the user; with auth_type = cert and an
 * auth_file, a user it lists (or auth_query finds). */
static int cert_matches(struct client *c, const char *secret)
{
    const char *cn = c->tls ? client_tls_peer_cn(c) : NULL, *why = NULL;

    if (!c->tls)
        why = "TLS connection required";
    else if (cn == NULL)
        why = "TLS client certificate required";
    else if (c->d->cfg->auth_type == AUTH_TYPE_CERT && c->d->users && secret == NULL)
        why = "no such user";
    else if (strcmp(cn, c->user) != 0)
        why = "TLS certificate name mismatch";
    if (why != NULL)
        client_log(c, LG_WARNING, "%s%s%s%s", why, cn ? " (certificate CN \"" : "", cn ? cn : "", cn ? "\")" : "");
    return why == NULL;
}

/* Authenticate by method m with the user's secret (NULL: unknown user). */
static void client_auth_with(struct client *c, enum hba_method m, const char *secret)
{
    switch (m) {
    case HBA_TRUST:
        if (c->d->users && secret == NULL) {
            COUNT_ADD(c->d->stats.logins_failed, 1);
            client_disconnect(c, "08P01", "\"trust\" authentication failed");
            return;
        }
        client_finish_login(c);
        return;
    case HBA_PEER:
    case HBA_CERT:
        if (m == HBA_PEER ? !peer_matches(c) : !cert_matches(c, secret)) {
            COUNT_ADD(c->d->stats.logins_failed, 1);
            client_disconnect(c, m == HBA_PEER ? "28000" : "08P01",
                              m == HBA_PEER ? "unix socket login rejected" : "certificate authentication failed");
            return;
        }
        client_finish_login(c);
        return;
    case HBA_PASSWORD:
        c->secret = secret ? strdup(secret) : NULL;
        c->auth = CA_CLEARTEXT;
        send_auth_request(c, WEIR_AUTH_CLEARTEXT, NULL, 0);
        return;
    case HBA_MD5:
        if (secret == NULL || secret_kind_of(secret) != SECRET_SCRAM) {
            for (int i = 0; i < 4; i++)
                c->md5_salt[i] = (uint8_t)worker_random(c->w);
            c->secret = secret ? strdup(secret) : NULL;
            c->auth = CA_MD5;
            send_auth_request(c, WEIR_AUTH_MD5, c->md5_salt, 4);
            return;
        }
        start_scram(c, secret); /* md5 cannot check a SCRAM secret: as PgBouncer, use SCRAM */
        return;
    case HBA_SCRAM:
        start_scram(c, secret);
        return;
    case HBA_REJECT:
        break;
    }
    client_disconnect(c, "28000", "login rejected");
}

/* auth_query answered: go on with the secret it found, as if from auth_file. */
static void authq_done(void *arg, enum authq_status status, const char *secret, const char *err)
{
    struct client *c = arg;
    enum hba_method m;

    c->authq_job = NULL;
    if (status == AUTHQ_FAILED) {
        client_log(c, LG_WARNING, "auth_query failed: %s", err);
        client_disconnect(c, "08P01", "auth_query failed: %s", err);
        return;
    }
    if (status == AUTHQ_FOUND && (c->authq_secret = strdup(secret)) == NULL) {
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    /* An unknown user gets the same exchange as a wrong password (unlike
     * PgBouncer's "no such user"): nothing tells which users exist. */
    if (status == AUTHQ_FOUND)
        pooler_set_auth_secret(c->dp, c->user, secret); /* the server login uses it too */
    if (auth_method(c, &m) == 0)
        client_auth_with(c, m, c->authq_secret);
}

/* A user missing from auth_file is looked up with auth_query when the
 * database (or the global setting) names an auth_user. 1 when started. */
static int start_auth_query(struct client *c)
{
    struct daemon *d = c->d;
    const struct db_config *db;
    const char *auth_user;
    char err[256], *conninfo;

    if (c->admin || c->dp == NULL || d->cfg->auth_query[0] == '\0')
        return 0;
    db = config_find_db(d->cfg, c->dbname);
    auth_user = db && db->auth_user && db->auth_user[0] ? db->auth_user : d->cfg->auth_user;
    if (auth_user[0] == '\0')
        return 0;
    conninfo = pooler_auth_conninfo(d, c->dp, auth_user, err, sizeof(err));
    if (conninfo == NULL) {
        client_disconnect(c, "08P01", "auth_query failed: %s", err);
        return 1;
    }
    if (c->w->authq == NULL)
        c->w->authq = authq_new(d, c->w->base);
    c->authq_job = c->w->authq ? authq_start(c->w->authq, conninfo, d->cfg->auth_query, c->user, authq_done, c) : NULL;
    OPENSSL_cleanse(conninfo, strlen(conninfo));
    free(conninfo);
    if (c->authq_job == NULL)
        client_disconnect(c, "08P01", "out of memory");
    return 1;
}

/* auth_type = any ignores the user the client names: as PgBouncer, it needs
 * the database's forced user and logs in as that one. -1 after refusing. */
static int take_forced_user(struct client *c)
{
    const struct db_config *db = c->no_db ? NULL : config_find_db(c->d->cfg, c->dbname);
    char *forced;

    if (db == NULL || db->user == NULL || db->user[0] == '\0') {
        client_log(c, LG_ERROR, "auth_type=any requires forced user");
        client_disconnect(c, "08P01", "bouncer config error");
        return -1;
    }
    if ((forced = strdup(db->user)) == NULL) {
        client_disconnect(c, "08P01", "out of memory");
        return -1;
    }
    free(c->user);
    c->user = forced;
    return 0;
}

/* Decide how to authenticate; may finish the login at once, or wait for auth_query. */
void client_start_auth(struct client *c)
{
    const char *secret = user_secret(c);
    enum hba_method m;

    client_set_state(c, CL_AUTH);
    if (c->d->cfg->auth_type == AUTH_TYPE_ANY && !c->admin && take_forced_user(c) != 0)
        return;
    if (c->d->cfg->log_connections) {
        char tls[128] = "no";
        if (c->tls)
            tls_describe(c->io.ssl, tls, sizeof(tls));
        client_log(c, LG_LOG, "login attempt: db=%s user=%s tls=%s", c->dbname, c->user, tls);
    }
    if (c->d->cfg->auth_type == AUTH_TYPE_ANY) {
        client_finish_login(c);
        return;
    }
    if (auth_method(c, &m) != 0)
        return;
    if (secret == NULL && start_auth_query(c))
        return;
    if (secret == NULL && c->d->users && !c->admin)
        client_log(c, LG_LOG, "no such user: %s", c->user);
    client_auth_with(c, m, secret);
}

static void handle_password(struct client *c, const unsigned char *body, size_t len)
{
    const char *pw;
    int rc;

    if (weir_proto_parse_string(body, len, &pw) != 0) {
        client_disconnect(c, "08P01", "invalid password packet");
        return;
    }
    if (pw[0] == '\0') { /* as PostgreSQL and PgBouncer: never an empty password */
        COUNT_ADD(c->d->stats.logins_failed, 1);
        client_disconnect(c, "08P01", "empty password returned by client");
        return;
    }
    if (c->secret == NULL || c->secret[0] == '\0') {
        auth_failed(c);
        return;
    }
    if (c->auth == CA_MD5) {
        rc = md5_verify(c->secret, c->user, c->md5_salt, pw);
    } else {
        enum secret_kind k = secret_kind_of(c->secret);
        char hashed[MD5_SECRET_LEN + 1];
        if (k == SECRET_MD5)
            rc = md5_secret(c->user, pw, hashed) == AUTH_OK && CRYPTO_memcmp(hashed, c->secret, MD5_SECRET_LEN) == 0
                     ? AUTH_OK
                     : AUTH_EPASSWORD;
        else if (k == SECRET_PLAIN)
            rc = strlen(pw) == strlen(c->secret) && CRYPTO_memcmp(pw, c->secret, strlen(pw)) == 0 ? AUTH_OK
                                                                                                 : AUTH_EPASSWORD;
        else
            rc = AUTH_EPASSWORD;
    }
    if (rc != AUTH_OK) {
        auth_failed(c);
        return;
    }
    client_wipe_auth(c);
    client_finish_login(c);
}

/* SCRAM pass-through: the client proved a stored SCRAM secret; the keys
 * recovered from its proof let the pool log in to a server holding it. */
static void keep_scram_keys(struct client *c)
{
    uint8_t client_key[SCRAM_KEY_LEN];
    struct scram_keys keys;

    if (c->dp == NULL || c->secret == NULL || secret_kind_of(c->secret) != SECRET_SCRAM)
        return;
    if (scram_server_client_key(c->scram, client_key) == AUTH_OK &&
        scram_keys_from_secret(c->secret, &keys) == AUTH_OK)
        pooler_set_scram_keys(c->dp, c->user, c->secret, client_key, keys.server_key);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(&keys, sizeof(keys));
}

static void handle_sasl(struct client *c, const unsigned char *body, size_t len)
{
    char err[256] = "", *reply = NULL;
    int rc;

    if (c->scram == NULL) {
        client_disconnect(c, "08P01", "unexpected SASL message");
        return;
    }
    if (c->auth == CA_SCRAM) { /* first: SASLInitialResponse */
        const char *mech;
        const uint8_t *data;
        int32_t dlen;
        if (weir_proto_parse_sasl_initial(body, len, &mech, &data, &dlen) != 0 || dlen < 0) {
            client_disconnect(c, "08P01", "malformed SASL message");
            return;
        }
        if (strcmp(mech, "SCRAM-SHA-256") != 0) {
            client_disconnect(c, "28000", "client selected an invalid SASL authentication mechanism");
            return;
        }
        rc = scram_server_first(c->scram, (const char *)data, (size_t)dlen, &reply, err, sizeof(err));
        if (rc == AUTH_OK) {
            c->auth = CA_SCRAM_FINAL;
            send_auth_request(c, WEIR_AUTH_SASL_CONTINUE, reply, strlen(reply));
        }
    } else {
        rc = scram_server_final(c->scram, (const char *)body, len, &reply, err, sizeof(err));
        if (rc == AUTH_OK) {
            keep_scram_keys(c);
            (void)weir_proto_build_auth(c->io.out, WEIR_AUTH_SASL_FINAL, reply, strlen(reply));
            free(reply);
            client_wipe_auth(c);
            client_finish_login(c);
            return;
        }
    }
    free(reply);
    if (rc == AUTH_EPASSWORD)
        auth_failed(c);
    else if (rc != AUTH_OK)
        client_disconnect(c, rc == AUTH_EUNSUPPORTED ? "0A000" : "08P01", "%s",
                          err[0] ? err : "SASL authentication failed");
}

/* Send AuthenticationOk, the parameters, our cancel key, ReadyForQuery. */
static void client_send_welcome(struct client *c)
{
    struct dpool *dp = c->dp;
    struct evbuffer *out = c->io.out;

    (void)weir_proto_build_auth(out, WEIR_AUTH_OK, NULL, 0);
    for (size_t i = 0; i < dp->nwelcome; i++) {
        const char *name = dp->welcome_names[i], *value = dp->welcome_values[i];
        int tp = tracked_param_index(name);
        if (tp >= 0 && c->params.v[tp])
            value = c->params.v[tp];
        (void)weir_proto_build_parameter_status(out, name, value);
    }
    (void)weir_proto_build_backend_key(out, (uint32_t)c->id, c->cancel_key);
    (void)weir_proto_build_ready(out, 'I');
}

static void client_enter_idle(struct client *c)
{
    client_set_state(c, CL_IDLE);
    client_arm_timer(c, c->d->cfg->client_idle_timeout_us);
    stream_set_reading(&c->io, 1);
}

/* The session's starting values: the server's, unless the client sent its own. */
static void client_default_params(struct client *c)
{
    for (int i = 0; i < TP_COUNT; i++) {
        if (c->dp->welcome_params.v[i] == NULL)
            continue;
        if (c->params.v[i] == NULL)
            param_set_share(&c->params, i, &c->dp->welcome_params);
        else
            (void)param_same(&c->params, i, &c->dp->welcome_params); /* one copy of equal values */
    }
}

static void welcome_cb(int status, weir_pooled *pooled, void *arg);

/* An idle server now, preferably one this client's worker used last: it
 * then stays on this loop instead of moving (see server_from_pooled). */
static int client_try_checkout(struct client *c, weir_pooled **out)
{
    return weir_pool_try_checkout_at(c->dp->pool, c->d->nworkers > 1, (uintptr_t)c->w, worker_now(c->w), out);
}

static void client_finish_login(struct client *c)
{
    int known;

    if (c->admin) {
        admin_welcome(c);
        return;
    }
    if (c->no_db) {
        if (c->d->cfg->log_connections)
            client_log(c, LG_LOG, "login failed: db=%s user=%s", c->dbname, c->user);
        client_disconnect(c, "08P01", "no such database: %s", c->dbname);
        return;
    }
    pthread_mutex_lock(&c->d->lock); /* the pool's welcome is learnt by whichever worker is first */
    known = c->dp->welcome_known;
    pthread_mutex_unlock(&c->d->lock);
    if (!known) {
        weir_pooled *pooled = NULL;
        client_set_state(c, CL_WELCOME);
        if (client_try_checkout(c, &pooled) == 0) {
            welcome_cb(0, pooled, c);
            return;
        }
        if (weir_pool_checkout_async(c->dp->pool, c->w->base, pooler_wait_ms(c->dp), welcome_cb, c, &c->waiter) != 0)
            client_disconnect(c, "08P01", "cannot queue for a server");
        return;
    }
    pthread_mutex_lock(&c->d->lock);
    client_default_params(c);
    client_send_welcome(c);
    pthread_mutex_unlock(&c->d->lock);
    if (client_flush(c) != 0)
        return;
    client_enter_idle(c);
    if (evbuffer_get_length(c->io.in) > 0)
        client_resume(c);
    else
        client_trim(c); /* logged in and quiet: the next login reuses this memory */
}

static void connect_failed(struct client *c, int status)
{
    char err[256], sev[16], msg[256];

    weir_pool_last_error(c->dp->pool, err, sizeof(err));
    /* The server refused the login: its own words, as PgBouncer passes them on. */
    if (status == WEIR_ECONNECT && pooler_server_error(err, sev, sizeof(sev), msg, sizeof(msg))) {
        client_disconnect(c, "08P01", "%s", msg);
        return;
    }
    if (status == WEIR_ETIMEDOUT)
        client_disconnect(c, "08P01", "%s", pooler_wait_reason(c->dp));
    else if (status == WEIR_ECLOSED)
        client_disconnect(c, "08P01", "database is being removed or paused for shutdown");
    else
        client_disconnect(c, "08P01", "server login failed: %s", err[0] ? err : weir_strerror(status));
}

/* A server to learn the parameters from; it goes straight back. */
static void welcome_cb(int status, weir_pooled *pooled, void *arg)
{
    struct client *c = arg;
    struct server *s;

    c->waiter = NULL;
    if (status != 0) {
        connect_failed(c, status);
        return;
    }
    s = server_from_pooled(c->w, c->dp, pooled);
    if (s == NULL) {
        weir_pool_checkin(c->dp->pool, pooled, WEIR_CHECKIN_BROKEN);
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    pooler_learn_welcome(c->dp, s);
    weir_pool_checkin(c->dp->pool, pooled, WEIR_CHECKIN_CLEAN);
    client_finish_login(c);
}

/* A StartupMessage: find the pool, then authenticate. */
static void client_startup(struct client *c, const weir_startup *st)
{
    const char *user = weir_startup_param(st, "user");
    const char *db = weir_startup_param(st, "database");
    const char *sqlstate = "08P01";
    char err[256];

    if (user == NULL || user[0] == '\0') {
        client_disconnect(c, "08P01", "no username supplied");
        return;
    }
    if (weir_startup_param(st, "replication")) {
        client_disconnect(c, "08P01", "unsupported startup parameter: replication"); /* PgBouncer 1.18's */
        return;
    }
    c->user = strdup(user);
    c->dbname = strdup(db && db[0] ? db : user);
    if (c->tls)
        c->tls_cn = tls_peer_cn(c->io.ssl); /* the handshake is done: data arrived over it */
    if (c->user == NULL || c->dbname == NULL) {
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    /* The admin console stays reachable at the limit, as in PgBouncer. */
    if (COUNT_GET(c->d->nclients) > c->d->cfg->max_client_conn && !admin_is_console_db(c->dbname)) {
        COUNT_ADD(c->d->stats.clients_refused, 1);
        client_disconnect(c, "08P01", "no more connections allowed (max_client_conn)");
        return;
    }
    if (c->d->shutting_down) {
        client_disconnect(c, "57P03", "pgbouncer is shutting down");
        return;
    }
    if (client_take_params(c, st) != 0)
        return;
    if (admin_is_console_db(c->dbname)) {
        c->admin = 1;
        admin_login(c);
        return;
    }
    if (admin_db_disabled(c->d, c->dbname)) {
        client_disconnect(c, "08P01", "database \"%s\" is disabled", c->dbname);
        return;
    }
    c->no_db = config_find_db(c->d->cfg, c->dbname) == NULL;
    if (c->no_db) { /* authenticated (a mock exchange for unknown users), then refused */
        client_start_auth(c);
        return;
    }
    c->dp = pooler_get(c->w, c->dbname, c->user, &sqlstate, err, sizeof(err));
    if (c->dp == NULL) {
        client_disconnect(c, sqlstate, "%s", err);
        return;
    }
    client_start_auth(c);
}

static void client_cancel_request(struct client *c, const weir_startup *st)
{
    daemon_cancel_client(c->w, (uint32_t)st->cancel_pid, (uint32_t)st->cancel_key);
    /* PostgreSQL answers a cancel by closing, whatever happened. */
    c->dbname = strdup("(cancel)");
    client_disconnect(c, NULL, "cancel request");
}

/* SSLRequest with client TLS on: answer 'S' in the clear, then the handshake
 * runs on the client's stream; the startup packet arrives through TLS. */
static void client_accept_tls(struct client *c)
{
    SSL *ssl;

    /* Bytes sent before the handshake were not encrypted: maybe injected. */
    if (evbuffer_get_length(c->io.in) > 0) {
        client_disconnect(c, "08P01", "received unencrypted data after SSL request");
        return;
    }
    evbuffer_add(c->io.out, "S", 1);
    if (client_flush(c) != 0)
        return;
    if (evbuffer_get_length(c->io.out) > 0) {
        client_disconnect(c, NULL, "failed to ack SSL");
        return;
    }
    ssl = tls_accept_new(c->d->tls, c->fd);
    if (ssl == NULL) {
        client_disconnect(c, NULL, "failed to accept SSL: out of memory");
        return;
    }
    c->tls = 1;
    stream_start_tls(&c->io, ssl, 1);
}

/* STARTUP state: parse the first packet(s). */
static void client_read_startup(struct client *c)
{
    weir_frame f;
    weir_startup st;
    int rc;

    while ((rc = weir_proto_peek_startup(c->io.in, STARTUP_MAX, &f)) == 1) {
        unsigned char pkt[STARTUP_MAX];
        /* A copy, so the parameters outlive the buffer, which must be
         * empty of the packet before login may look for a first query. */
        evbuffer_remove(c->io.in, pkt, f.total);
        if (weir_proto_parse_startup(pkt + f.body_off, f.body_len, &st) != 0) {
            /* a protocol 2.0 startup (major version 2): PgBouncer's words */
            int v2 = f.body_len >= 4 && pkt[f.body_off] == 0 && pkt[f.body_off + 1] == 2;
            client_disconnect(c, "08P01", v2 ? "old V2 protocol not supported" : "bad startup packet");
            return;
        }
        if (st.kind == WEIR_STARTUP_SSL && c->tls) {
            client_disconnect(c, NULL, "SSL req inside SSL");
            return;
        }
        if (st.kind == WEIR_STARTUP_SSL && c->d->tls && !c->is_unix) {
            client_accept_tls(c);
            return;
        }
        if (st.kind == WEIR_STARTUP_SSL || st.kind == WEIR_STARTUP_GSSENC) {
            evbuffer_add(c->io.out, "N", 1); /* no encryption on this listener */
            if (client_flush(c) != 0)
                return;
            continue;
        }
        if (st.kind == WEIR_STARTUP_CANCEL) {
            client_cancel_request(c, &st);
            return;
        }
        /* As PgBouncer: TLS is required of TCP clients only. */
        if (c->d->cfg->client_tls_sslmode >= TLS_MODE_REQUIRE && !c->tls && !c->is_unix) {
            client_disconnect(c, "08P01", "SSL required");
            return;
        }
        client_startup(c, &st);
        return;
    }
    if (rc < 0)
        client_disconnect(c, "08P01", rc == WEIR_ETOOBIG ? "startup packet too large" : "bad startup packet");
}

/* AUTH state: password or SASL messages. */
static void client_read_auth(struct client *c)
{
    weir_frame f;
    int rc = weir_proto_peek(c->io.in, SCRAM_MAX_MESSAGE + 64, &f);

    if (rc == 0)
        return;
    if (rc < 0 || f.type != 'p') {
        client_disconnect(c, "08P01", "expected a password packet");
        return;
    }
    unsigned char msg[SCRAM_MAX_MESSAGE + 64];
    evbuffer_remove(c->io.in, msg, f.total); /* consumed before login goes on */
    if (c->auth == CA_MD5 || c->auth == CA_CLEARTEXT)
        handle_password(c, msg + f.body_off, f.body_len);
    else
        handle_sasl(c, msg + f.body_off, f.body_len);
}

void client_admin_ready(struct client *c)
{
    client_enter_idle(c);
    if (evbuffer_get_length(c->io.in) > 0)
        client_resume(c);
    else
        client_trim(c); /* logged in and quiet: the next login reuses this memory */
}

/* ---- after login ---- */

static void server_cb(int status, weir_pooled *pooled, void *arg);

static void client_request_server(struct client *c);

/* Linked at last: forward what the client sent. */
static void client_link(struct client *c, struct server *s)
{
    DP_COUNT(c->dp, c->w, wait_us, (uint64_t)(worker_now(c->w) - c->wait_start_us));
    client_set_state(c, CL_ACTIVE);
    client_arm_timer(c, 0);
    stream_set_reading(&c->io, 1);
    if (server_link(s, c) != 0 && c->state != CL_CLOSING)
        client_disconnect(c, "08P01", "server conn crashed?");
}

static void client_got_server(struct client *c, weir_pooled *pooled)
{
    struct server *s = server_from_pooled(c->w, c->dp, pooled);

    if (s == NULL) {
        weir_pool_checkin(c->dp->pool, pooled, WEIR_CHECKIN_BROKEN);
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    if (!server_check_due(s)) {
        client_link(c, s);
        return;
    }
    /* Idle too long (server_check_delay): the client waits for the check,
     * no longer than it would wait in line (query_wait_timeout). */
    if (c->state == CL_IDLE)
        client_set_state(c, CL_WAITING);
    client_arm_timer(c, c->d->cfg->query_wait_timeout_us);
    if (server_start_check(s, c) != 0)
        client_request_server(c);
}

void client_server_checked(struct client *c, struct server *s)
{
    stream_loop_tick(&c->w->loop);
    client_arm_timer(c, 0);
    if (s != NULL)
        client_link(c, s);
    else if (c->d->shutting_down)
        client_disconnect(c, "57P01", "pgbouncer is shutting down");
    else
        client_request_server(c); /* that one was dead: the next */
}

static void server_cb(int status, weir_pooled *pooled, void *arg)
{
    struct client *c = arg;

    stream_loop_tick(&c->w->loop); /* called from the pool's own event */
    c->waiter = NULL;
    if (status != 0) {
        connect_failed(c, status);
        return;
    }
    client_got_server(c, pooled);
}

/* The client's pool was replaced by a reload (new settings): move to the new one. */
static int client_follow_pool(struct client *c)
{
    const char *sqlstate = "08P01";
    char err[256];
    struct dpool *dp;

    if (!c->dp->removed)
        return 0;
    dp = pooler_get(c->w, c->dbname, c->user, &sqlstate, err, sizeof(err));
    if (dp == NULL) {
        client_disconnect(c, sqlstate, "%s", err);
        return -1;
    }
    COUNT_ADD(c->dp->nclients, -1);
    c->dp = dp; /* counted in by pooler_get */
    return 0;
}

/* A query arrived while no server is linked: get one. */
static void client_request_server(struct client *c)
{
    weir_pooled *pooled;

    if (client_follow_pool(c) != 0)
        return;
    /* WAITING here: back from a failed server check, already in line. */
    if (c->state != CL_WAITING) {
        if (c->d->shutting_down) {
            client_disconnect(c, "57P01", "pgbouncer is shutting down");
            return;
        }
        stream_loop_tick(&c->w->loop); /* also reached from signals and admin commands */
        c->wait_start_us = worker_now(c->w);
    }
    if (client_try_checkout(c, &pooled) == 0) {
        client_got_server(c, pooled); /* the common case: no event changes */
        return;
    }
    /* The read event stays registered while waiting: no epoll_ctl pair per
     * wait, and a client that leaves is noticed at once. What it sends is
     * kept, up to a bound (client_on_read). */
    if (c->state != CL_WAITING)
        client_set_state(c, CL_WAITING);
    client_arm_timer(c, 0);
    if (weir_pool_checkout_async(c->dp->pool, c->w->base, pooler_wait_ms(c->dp), server_cb, c, &c->waiter) != 0)
        client_disconnect(c, "08P01", "cannot queue for a server");
}

/* IDLE with input: a Terminate ends the session; anything else needs a server. */
void client_resume(struct client *c)
{
    unsigned char type;
    /* Fresh bytes in c->rx mean the buffer was empty when they came. */
    size_t buffered = c->rx_len > 0 || stream_in_empty(&c->io) ? 0 : evbuffer_get_length(c->io.in);
    size_t avail = buffered + c->rx_len;

    if (c->state != CL_IDLE || avail == 0)
        return;
    if (stream_wake(&c->io) != 0) { /* the buffers of a trimmed idle client */
        client_disconnect(c, "08P01", "out of memory");
        return;
    }
    if (buffered > 0)
        evbuffer_copyout(c->io.in, &type, 1);
    else
        type = c->rx[0];
    if (type == 'X') {
        client_disconnect(c, NULL, "client close request");
        return;
    }
    if (avail < 5)
        return;
    if (c->admin) {
        admin_handle(c);
        return;
    }
    if (type == 'Q' && c->d->cfg->disable_pqexec) { /* before waiting in line for a server, as PgBouncer */
        client_log(c, LG_ERROR, "client used 'Q' packet type");
        client_disconnect(c, "08P01", "PQexec disallowed");
        return;
    }
    client_request_server(c);
}

void client_server_released(struct client *c)
{
    c->server = NULL;
    client_enter_idle(c);
    if (c->d->shutting_down) {
        daemon_client_gone(c->d); /* maybe that was the last transaction */
        return;
    }
    client_resume(c);
}

static void client_on_read(struct stream *io, void *arg)
{
    struct client *c = arg;

    if (io->failed && io->ssl) {
        char why[256];
        tls_error_text(io->tls_err, why, sizeof(why));
        client_disconnect(c, NULL, "%s: %s", io->tls_handshake ? "TLS handshake failed" : "TLS error", why);
        return;
    }
    if (io->eof || io->failed) {
        /* Gone during login with nothing unread (a probe, or a client that
         * would not give a password): PgBouncer logs nothing. */
        if ((c->state == CL_STARTUP || c->state == CL_AUTH) && evbuffer_get_length(io->in) == 0 && c->rx_len == 0)
            client_disconnect(c, NULL, "%s", "");
        else
            client_disconnect(c, NULL, io->eof ? "client unexpected eof" : "client read failed");
        return;
    }
    switch (c->state) {
    case CL_STARTUP:
        client_read_startup(c);
        break;
    case CL_AUTH:
        client_read_auth(c);
        break;
    case CL_IDLE:
        client_resume(c);
        break;
    case CL_ACTIVE:
        if (server_forward_from_client(c->server) == 0 && c->server &&
            evbuffer_get_length(c->server->io.out) > SERVER_OUT_HIGH)
            stream_set_reading(&c->io, 0); /* resumes when the server drains */
        break;
    default:
        /* WELCOME, WAITING: input stays buffered until a server is linked */
        if (evbuffer_get_length(c->io.in) > (size_t)c->d->cfg->pkt_buf * 64)
            stream_set_reading(&c->io, 0);
        break;
    }
}

/* Fresh bytes in the loop's scratch buffer. A linked or idle session
 * forwards them from there (server_forward_from_client takes c->rx); every
 * other state, and whatever is left, goes through the client's buffer. */
static void client_on_flat(struct stream *io, void *arg, const unsigned char *p, size_t n)
{
    struct client *c = arg;

    c->quiet_ticks = 0;
    if ((c->state == CL_ACTIVE || c->state == CL_IDLE) && !c->admin) {
        c->rx = p;
        c->rx_len = n;
        client_on_read(io, c);
        p = c->rx;
        n = c->rx_len;
        c->rx = NULL;
        c->rx_len = 0;
        if (n == 0 || c->state == CL_CLOSING)
            return;
        stream_stash(io, p, n);
        if (c->state == CL_WAITING)
            client_on_read(io, c); /* bound what waits, as for any input */
        return;
    }
    stream_stash(io, p, n);
    client_on_read(io, c);
}

static void client_on_drain(struct stream *io, void *arg)
{
    struct client *c = arg;
    (void)io;
    if (c->server)
        server_client_drained(c->server);
}

/* ---- accept ---- */

static void describe_peer(struct client *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, c->addr, sizeof(c->addr));
        c->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->addr, sizeof(c->addr));
        c->port = ntohs(in6->sin6_port);
    } else {
        snprintf(c->addr, sizeof(c->addr), "unix");
        c->port = c->d->cfg->listen_port;
    }
}

static void tune_socket(struct client *c)
{
    const struct weir_config *cfg = c->d->cfg;
    int on = 1;

    evutil_make_socket_nonblocking(c->fd);
    if (c->is_unix)
        return;
    stream_socket_buffers(c->fd, cfg->tcp_socket_buffer);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (cfg->tcp_keepalive) {
        setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        if (cfg->tcp_keepidle > 0)
            setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->tcp_keepidle, sizeof(int));
        if (cfg->tcp_keepintvl > 0)
            setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->tcp_keepintvl, sizeof(int));
        if (cfg->tcp_keepcnt > 0)
            setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->tcp_keepcnt, sizeof(int));
    }
    if (cfg->tcp_user_timeout > 0)
        setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &cfg->tcp_user_timeout, sizeof(int));
}

/* The client's life starts on its worker's thread. */
static void client_start(struct worker *w, int fd, const struct sockaddr *sa, int is_unix)
{
    struct daemon *d = w->d;
    struct client *c = calloc(1, sizeof(*c));

    if (c == NULL || stream_init(&c->io, w->base, fd, client_on_read, client_on_drain, c) != 0) {
        free(c);
        close(fd);
        return;
    }
    c->d = d;
    c->w = w;
    stream_set_flat(&c->io, client_on_flat, &w->loop);
    c->fd = fd;
    c->is_unix = is_unix;
    c->id = __atomic_add_fetch(&d->next_id, 1, __ATOMIC_RELAXED);
    c->cancel_key = worker_random(w);
    c->connect_us = weir__now_us();
    c->state = CL_STARTUP;
    describe_peer(c, sa);
    tune_socket(c);
    COUNT_ADD(d->stats.clients_total, 1);
    if (daemon_register_client(d, c) != 0) {
        stream_release(&c->io);
        close(fd);
        free(c);
        return;
    }
    client_arm_timer(c, d->cfg->client_login_timeout_us);
    stream_set_reading(&c->io, 1);
}

/* An accepted socket on its way to another worker. */
struct accept_job {
    struct worker *w;
    int fd, is_unix;
    struct sockaddr_storage sa;
};

static void accept_job_run(evutil_socket_t fd, short what, void *arg)
{
    struct accept_job *job = arg;

    (void)fd;
    (void)what;
    if (job->w->d->stopping) { /* the last loop run at exit */
        close(job->fd);
        free(job);
        return;
    }
    stream_loop_tick(&job->w->loop);
    client_start(job->w, job->fd, (const struct sockaddr *)&job->sa, job->is_unix);
    free(job);
}

void client_accept(struct daemon *d, int fd, const struct sockaddr *sa, socklen_t salen, int is_unix)
{
    struct worker *w = worker_pick(d);
    struct accept_job *job;

    if (w == daemon_main_worker(d)) {
        client_start(w, fd, sa, is_unix);
        return;
    }
    job = calloc(1, sizeof(*job));
    if (job == NULL || (size_t)salen > sizeof(job->sa)) {
        free(job);
        close(fd);
        return;
    }
    job->w = w;
    job->fd = fd;
    job->is_unix = is_unix;
    memcpy(&job->sa, sa, (size_t)salen);
    if (worker_post(w, accept_job_run, job) != 0) {
        free(job);
        close(fd);
    }
}
