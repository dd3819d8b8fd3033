/*
 * weir's own way to connect to PostgreSQL, for the logins libpq cannot do:
 * with an md5 secret instead of a password (answering the salt with the
 * stored hash, as PgBouncer does), and with SCRAM-SHA-256 keys (ClientKey
 * recovered from a client's proof and ServerKey from the stored secret)
 * instead of a password, verifying the server's signature. A non-blocking
 * socket connect, the StartupMessage, the authentication exchange, then the
 * ParameterStatus, BackendKeyData and ReadyForQuery messages: after that the
 * connection is handed over exactly like one libpq made.
 *
 *   CONNECTING --socket writable, no error--> LOGIN --ReadyForQuery--> READY
 *        |            (next address on error)   |                       |  ^
 *        v                                      v                       v  |
 *      FAILED <------------- error, EOF, bad message ---------------- BUSY (ping/reset)
 *
 * Not covered, and refused with a clear error instead: TLS (sslmode
 * require/verify-*; with allow/prefer/disable the connection is plain),
 * GSSAPI, a cleartext password request, more than the first host of a list.
 * Host names are resolved with getaddrinfo() like libpq does (blocking for
 * names that are not numeric addresses).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <weir/proto.h>

#include "backend.h"

#define LOGIN_MSG_MAX (64 * 1024)
#define MAX_PARAMS 32

enum raw_state { RS_CONNECTING, RS_LOGIN, RS_READY, RS_BUSY, RS_FAILED };

struct raw_conn {
    enum raw_state state;
    int fd;
    struct addrinfo *addrs, *cur; /* TCP addresses still to try */
    struct sockaddr_un un;        /* or the Unix socket */
    int is_unix;
    struct evbuffer *in, *out;
    char *user;
    char *password;               /* the conninfo's password form, wiped at close */
    struct scram_client *scram;
    char *pnames[MAX_PARAMS], *pvalues[MAX_PARAMS];
    int nparams;
    uint32_t pid, key;
    char txn;
    int owed;       /* ReadyForQuery still expected for a command sequence */
    int cmd_failed; /* one of them answered with an error */
    int refused;    /* the login failed for a reason a retry will not mend */
    char host[256], port[16];
    char err[1024];
};

__attribute__((format(printf, 2, 3))) static weir_poll fail(struct raw_conn *r, const char *fmt, ...)
{
    va_list ap;
    char msg[400];

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->is_unix)
        snprintf(r->err, sizeof(r->err), "connection to server on socket \"%s\" failed: %s", r->un.sun_path, msg);
    else
        snprintf(r->err, sizeof(r->err), "connection to server at \"%s\", port %s failed: %s", r->host, r->port,
                 msg);
    r->state = RS_FAILED;
    return WEIR_POLL_FAILED;
}

static const char *opt(const PQconninfoOption *opts, const char *key)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, key) == 0)
            return o->val && o->val[0] ? o->val : NULL;
    return NULL;
}

/* The first element of a libpq comma list. */
static void first_of(const char *list, char *out, size_t outlen)
{
    size_t n = strcspn(list, ",");

    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, list, n);
    out[n] = '\0';
}

/* Try connecting to the current address; -1 when none is left. */
static int start_socket(struct raw_conn *r)
{
    const struct sockaddr *sa;
    socklen_t len;
    int family;

    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    if (r->is_unix) {
        sa = (const struct sockaddr *)&r->un;
        len = sizeof(r->un);
        family = AF_UNIX;
    } else {
        if (r->cur == NULL)
            return -1;
        sa = r->cur->ai_addr;
        len = r->cur->ai_addrlen;
        family = r->cur->ai_family;
    }
    r->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return -1;
    if (connect(r->fd, sa, len) != 0 && errno != EINPROGRESS)
        return -1;
    return 0;
}

static int resolve(struct raw_conn *r, const PQconninfoOption *opts, char *err, size_t errlen)
{
    const char *host = opt(opts, "hostaddr") ? opt(opts, "hostaddr") : opt(opts, "host");
    const char *port = opt(opts, "port");
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    int rc;

    first_of(host ? host : (getenv("PGHOST") ? getenv("PGHOST") : "/var/run/postgresql"), r->host, sizeof(r->host));
    first_of(port ? port : (getenv("PGPORT") ? getenv("PGPORT") : "5432"), r->port, sizeof(r->port));
    if (r->port[0] == '\0')
        strcpy(r->port, "5432");
    if (r->host[0] == '/' || r->host[0] == '@') {
        r->is_unix = 1;
        r->un.sun_family = AF_UNIX;
        if ((size_t)snprintf(r->un.sun_path, sizeof(r->un.sun_path), "%s/.s.PGSQL.%s", r->host, r->port) >=
            sizeof(r->un.sun_path)) {
            snprintf(err, errlen, "Unix socket path too long: %s", r->host);
            return -1;
        }
        return 0;
    }
    rc = getaddrinfo(r->host, r->port, &hints, &r->addrs);
    if (rc != 0) {
        snprintf(err, errlen, "could not translate host name \"%s\" to address: %s", r->host, gai_strerror(rc));
        return -1;
    }
    r->cur = r->addrs;
    return 0;
}

/* The StartupMessage: user, database and the session options of the conninfo. */
static int queue_startup(struct raw_conn *r, const PQconninfoOption *opts)
{
    const char *names[6], *values[6];
    int n = 0;
    const char *app = opt(opts, "application_name") ? opt(opts, "application_name")
                                                    : opt(opts, "fallback_application_name");

    names[n] = "user", values[n++] = r->user;
    names[n] = "database", values[n++] = opt(opts, "dbname") ? opt(opts, "dbname") : r->user;
    if (app)
        names[n] = "application_name", values[n++] = app;
    if (opt(opts, "client_encoding"))
        names[n] = "client_encoding", values[n++] = opt(opts, "client_encoding");
    if (opt(opts, "options"))
        names[n] = "options", values[n++] = opt(opts, "options");
    return weir_proto_build_startup(r->out, names, values, n);
}

int raw_connect_start(const PQconninfoOption *opts, struct raw_conn **out, char *err, size_t errlen)
{
    struct raw_conn *r = calloc(1, sizeof(*r));
    const char *sslmode = opt(opts, "sslmode");
    const char *user = opt(opts, "user"), *password = opt(opts, "password");

    *out = NULL;
    if (r == NULL)
        return WEIR_ENOMEM;
    r->fd = -1;
    r->txn = 'I';
    if (sslmode && strcmp(sslmode, "disable") != 0 && strcmp(sslmode, "allow") != 0 &&
        strcmp(sslmode, "prefer") != 0) {
        snprintf(err, errlen, "sslmode=%s: weir's own connect (for md5 secrets and SCRAM pass-through) has no TLS",
                 sslmode);
        free(r);
        return WEIR_EINVAL;
    }
    if (user == NULL) {
        snprintf(err, errlen, "no user name for the server login");
        free(r);
        return WEIR_EINVAL;
    }
    r->user = strdup(user);
    r->password = strdup(password ? password : "");
    r->in = evbuffer_new();
    r->out = evbuffer_new();
    if (r->user == NULL || r->password == NULL || r->in == NULL || r->out == NULL || queue_startup(r, opts) != 0) {
        snprintf(err, errlen, "out of memory");
        raw_close(r);
        return WEIR_ENOMEM;
    }
    if (resolve(r, opts, err, errlen) != 0) {
        raw_close(r);
        return WEIR_ECONNECT;
    }
    while (start_socket(r) != 0) {
        if (r->is_unix || r->cur == NULL || (r->cur = r->cur->ai_next) == NULL) {
            fail(r, "%s", strerror(errno));
            snprintf(err, errlen, "%s", r->err);
            raw_close(r);
            return WEIR_ECONNECT;
        }
    }
    r->state = RS_CONNECTING;
    *out = r;
    return 0;
}

/* ---- the login exchange ---- */

static int base64_key(const char *text, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    uint8_t buf[64];
    char in[64];

    if (len == 0 || len >= sizeof(in) || len % 4 != 0)
        return -1;
    memcpy(in, text, len);
    if (EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len) != 3 * (int)len / 4)
        return -1;
    /* 32 bytes encode to 44 characters with one '=' of padding: 33 decoded. */
    if (len != 44 || in[43] != '=' || in[42] == '=')
        return -1;
    memcpy(out, buf, SCRAM_KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* The keys in a "weir-scram-keys$<ClientKey>:<ServerKey>" password. */
static int password_keys(const char *pw, uint8_t ck[SCRAM_KEY_LEN], uint8_t sk[SCRAM_KEY_LEN])
{
    static const char prefix[] = "weir-scram-keys$";
    const char *colon;

    if (strncmp(pw, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    pw += sizeof(prefix) - 1;
    colon = strchr(pw, ':');
    if (colon == NULL || base64_key(pw, (size_t)(colon - pw), ck) != 0 ||
        base64_key(colon + 1, strlen(colon + 1), sk) != 0)
        return -1;
    return 0;
}

static weir_poll on_sasl(struct raw_conn *r, const uint8_t *data, size_t len)
{
    uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN];
    int offered = 0;
    char *msg = NULL;

    for (size_t i = 0; i < len && data[i] != '\0';) {
        const char *mech = (const char *)data + i;
        size_t l = strnlen(mech, len - i);
        if (l == len - i)
            break;
        offered |= strcmp(mech, "SCRAM-SHA-256") == 0;
        i += l + 1;
    }
    if (r->scram != NULL)
        return fail(r, "unexpected second SASL authentication request"); /* found by fuzz_backend_login */
    if (!offered)
        return fail(r, "the server offers no SASL mechanism weir supports (SCRAM-SHA-256 without channel binding)");
    if (password_keys(r->password, ck, sk) != 0) {
        /* PgBouncer's words for the same situation. */
        return fail(r, "cannot do SCRAM authentication: password is SCRAM secret but client authentication did "
                       "not provide SCRAM keys");
    }
    r->scram = scram_client_new_keys(NULL, ck, sk);
    OPENSSL_cleanse(ck, sizeof(ck));
    OPENSSL_cleanse(sk, sizeof(sk));
    if (r->scram == NULL || scram_client_first(r->scram, &msg) != AUTH_OK ||
        weir_proto_build_sasl_initial(r->out, "SCRAM-SHA-256", msg, strlen(msg)) != 0) {
        free(msg);
        return fail(r, "out of memory");
    }
    free(msg);
    return WEIR_POLL_READ;
}

static weir_poll on_auth(struct raw_conn *r, const uint8_t *body, size_t len)
{
    uint32_t code;
    const uint8_t *data;
    size_t dlen;
    char reply[MD5_SECRET_LEN + 1], err[256] = "", *msg = NULL;

    if (weir_proto_parse_auth(body, len, &code, &data, &dlen) != 0)
        return fail(r, "malformed authentication request");
    switch (code) {
    case WEIR_AUTH_OK:
        if (r->scram != NULL) /* SCRAM started, the server's signature never came */
            return fail(r, "SCRAM: the server ended the exchange without proving it holds the secret");
        return WEIR_POLL_READ;
    case WEIR_AUTH_MD5:
        if (dlen != 4 || md5_response(r->password, data, reply) != AUTH_OK)
            return fail(r, "the server asks for an md5 password and weir holds no md5 secret for user \"%s\"",
                        r->user);
        if (weir_proto_build_password(r->out, reply) != 0)
            return fail(r, "out of memory");
        OPENSSL_cleanse(reply, sizeof(reply));
        return WEIR_POLL_READ;
    case WEIR_AUTH_SASL:
        return on_sasl(r, data, dlen);
    case WEIR_AUTH_SASL_CONTINUE:
        if (r->scram == NULL || scram_client_final(r->scram, (const char *)data, dlen, &msg, err, sizeof(err)) != 0)
            return fail(r, "SCRAM: %s", err[0] ? err : "unexpected SASL message");
        if (weir_proto_build_sasl_response(r->out, msg, strlen(msg)) != 0) {
            free(msg);
            return fail(r, "out of memory");
        }
        free(msg);
        return WEIR_POLL_READ;
    case WEIR_AUTH_SASL_FINAL:
        if (r->scram == NULL || scram_client_verify(r->scram, (const char *)data, dlen, err, sizeof(err)) != 0)
            return fail(r, "SCRAM: the server did not prove it holds the secret: %s", err[0] ? err : "?");
        scram_client_free(r->scram);
        r->scram = NULL;
        return WEIR_POLL_READ;
    case WEIR_AUTH_CLEARTEXT:
        return fail(r, "the server asks for a cleartext password and weir holds only a secret for user \"%s\"",
                    r->user);
    default:
        return fail(r, "authentication method %u is not supported by weir's own connect", (unsigned)code);
    }
}

static weir_poll on_error_message(struct raw_conn *r, const uint8_t *body, size_t len)
{
    weir_error_fields e;

    if (weir_proto_parse_error(body, len, &e) != 0)
        return fail(r, "malformed error message");
    r->refused = r->state == RS_LOGIN && weir_proto_login_refusal_lasts(e.sqlstate);
    /* libpq's layout, so the pool's error reads the same either way. */
    return fail(r, "%s:  %s", e.severity ? e.severity : "FATAL", e.message ? e.message : "");
}

static weir_poll on_param(struct raw_conn *r, const uint8_t *body, size_t len)
{
    const char *name, *value;
    int i;

    if (weir_proto_parse_parameter_status(body, len, &name, &value) != 0)
        return fail(r, "malformed ParameterStatus");
    for (i = 0; i < r->nparams && strcmp(r->pnames[i], name) != 0; i++)
        ;
    if (i == MAX_PARAMS)
        return WEIR_POLL_READ; /* more than PostgreSQL reports: ignore the rest */
    if (i == r->nparams) {
        if ((r->pnames[i] = strdup(name)) == NULL)
            return fail(r, "out of memory");
        r->nparams++;
    }
    free(r->pvalues[i]);
    if ((r->pvalues[i] = strdup(value)) == NULL)
        return fail(r, "out of memory");
    return WEIR_POLL_READ;
}

/* One complete message during login or a command: READ to go on, OK at ReadyForQuery. */
static weir_poll on_message(struct raw_conn *r, char type, const uint8_t *body, size_t len)
{
    switch (type) {
    case 'R': {
        if (r->state != RS_LOGIN)
            return fail(r, "unexpected authentication request");
        /* weir cannot answer this server's authentication: that lasts too. */
        weir_poll rc = on_auth(r, body, len);
        r->refused = rc == WEIR_POLL_FAILED;
        return rc;
    }
    case 'E':
        if (r->state == RS_BUSY) {
            weir_error_fields e;
            r->cmd_failed = 1;
            if (weir_proto_parse_error(body, len, &e) == 0 && e.severity && strcmp(e.severity, "FATAL") == 0)
                return on_error_message(r, body, len);
            if (weir_proto_parse_error(body, len, &e) == 0)
                snprintf(r->err, sizeof(r->err), "%s", e.message ? e.message : "error");
            return WEIR_POLL_READ;
        }
        return on_error_message(r, body, len);
    case 'S':
        return on_param(r, body, len);
    case 'K':
        if (weir_proto_parse_backend_key(body, len, &r->pid, &r->key) != 0)
            return fail(r, "malformed BackendKeyData");
        return WEIR_POLL_READ;
    case 'Z':
        if (weir_proto_parse_ready(body, len, &r->txn) != 0)
            return fail(r, "malformed ReadyForQuery");
        if (r->state == RS_BUSY && --r->owed > 0)
            return WEIR_POLL_READ;
        if (r->state == RS_BUSY && r->cmd_failed) {
            r->state = RS_READY;
            return WEIR_POLL_FAILED;
        }
        r->state = RS_READY;
        return WEIR_POLL_OK;
    default:
        /* Notices, NegotiateProtocolVersion, command answers: nothing to keep. */
        return WEIR_POLL_READ;
    }
}

/* Read what the socket has and act on every whole message. */
static weir_poll read_and_handle(struct raw_conn *r, int *got_eagain)
{
    weir_frame f;
    int n, rc;

    *got_eagain = 0;
    n = evbuffer_read(r->in, r->fd, 65536);
    if (n == 0)
        return fail(r, "server closed the connection unexpectedly");
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return fail(r, "could not receive data from server: %s", strerror(errno));
    if (n < 0)
        *got_eagain = 1;
    while ((rc = weir_proto_peek(r->in, LOGIN_MSG_MAX, &f)) == 1) {
        uint8_t *msg = evbuffer_pullup(r->in, (ssize_t)f.total);
        weir_poll p;

        if (msg == NULL)
            return fail(r, "out of memory");
        p = on_message(r, f.type, msg + f.body_off, f.body_len);
        evbuffer_drain(r->in, f.total);
        if (p != WEIR_POLL_READ)
            return p;
    }
    if (rc < 0)
        return fail(r, "invalid message from the server");
    return WEIR_POLL_READ;
}

static weir_poll flush_out(struct raw_conn *r)
{
    while (evbuffer_get_length(r->out) > 0) {
        int n = evbuffer_write(r->out, r->fd);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return WEIR_POLL_WRITE;
        if (n < 0 && errno != EINTR)
            return fail(r, "could not send data to server: %s", strerror(errno));
    }
    return WEIR_POLL_READ;
}

/* Drive the exchange until it needs the socket or finishes. */
static weir_poll drive(struct raw_conn *r)
{
    for (;;) {
        int eagain;
        weir_poll p = flush_out(r);

        if (p != WEIR_POLL_READ)
            return p;
        p = read_and_handle(r, &eagain);
        if (p != WEIR_POLL_READ)
            return p;
        if (evbuffer_get_length(r->out) > 0)
            continue;
        if (eagain)
            return WEIR_POLL_READ;
    }
}

weir_poll raw_connect_poll(struct raw_conn *r)
{
    if (r->state == RS_CONNECTING) {
        int soerr = 0;
        socklen_t l = sizeof(soerr);

        if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &l) != 0)
            soerr = errno;
        if (soerr == EINPROGRESS || soerr == EALREADY)
            return WEIR_POLL_WRITE;
        if (soerr != 0) {
            /* The next address of the name, as libpq does. */
            while (!r->is_unix && r->cur && (r->cur = r->cur->ai_next) != NULL)
                if (start_socket(r) == 0)
                    return WEIR_POLL_WRITE;
            return fail(r, "%s", strerror(soerr));
        }
        r->state = RS_LOGIN;
    }
    if (r->state != RS_LOGIN)
        return r->state == RS_READY ? WEIR_POLL_OK : WEIR_POLL_FAILED;
    return drive(r);
}

int raw_socket(const struct raw_conn *r)
{
    return r->fd;
}

/* ---- pings and resets: simple queries, each answered by ReadyForQuery ---- */

int raw_command_start(struct raw_conn *r, const char *const *cmds, int n)
{
    if (r->state != RS_READY)
        return WEIR_ESTATE;
    r->owed = 0;
    r->cmd_failed = 0;
    for (int i = 0; i < n; i++) {
        if (weir_proto_build_query(r->out, cmds[i]) != 0)
            return WEIR_ENOMEM;
        r->owed++;
    }
    r->state = RS_BUSY;
    return 0;
}

weir_poll raw_command_poll(struct raw_conn *r)
{
    if (r->state != RS_BUSY)
        return r->state == RS_READY ? WEIR_POLL_OK : WEIR_POLL_FAILED;
    return drive(r);
}

weir_poll raw_idle_readable(struct raw_conn *r)
{
    int eagain;
    weir_poll p;

    if (r->state != RS_READY)
        return WEIR_POLL_FAILED;
    r->state = RS_BUSY; /* an 'E' now is the server saying goodbye */
    r->owed = 1;
    p = read_and_handle(r, &eagain);
    if (r->state == RS_FAILED || p == WEIR_POLL_FAILED)
        return WEIR_POLL_FAILED;
    r->state = RS_READY;
    return r->cmd_failed ? WEIR_POLL_FAILED : WEIR_POLL_OK;
}

int raw_is_broken(const struct raw_conn *r)
{
    return r->state == RS_FAILED || r->state == RS_BUSY || r->fd < 0;
}

char raw_txn(const struct raw_conn *r)
{
    return r->txn;
}

const char *raw_error(const struct raw_conn *r)
{
    return r->err;
}

int raw_refused(const struct raw_conn *r)
{
    return r->refused;
}

const char *raw_param(const struct raw_conn *r, const char *name)
{
    for (int i = 0; i < r->nparams; i++)
        if (strcmp(r->pnames[i], name) == 0)
            return r->pvalues[i];
    return NULL;
}

int raw_pid(const struct raw_conn *r)
{
    return (int)r->pid;
}

uint32_t raw_cancel_key(const struct raw_conn *r)
{
    return r->key;
}

const char *raw_host(const struct raw_conn *r)
{
    return r->host;
}

int raw_port(const struct raw_conn *r)
{
    return atoi(r->port);
}

int raw_peer(const struct raw_conn *r, void *sa, size_t salen, size_t *len)
{
    if (r->is_unix) {
        if (salen < sizeof(r->un))
            return -1;
        memcpy(sa, &r->un, sizeof(r->un));
        *len = sizeof(r->un);
        return 0;
    }
    if (r->cur == NULL || salen < r->cur->ai_addrlen)
        return -1;
    memcpy(sa, r->cur->ai_addr, r->cur->ai_addrlen);
    *len = r->cur->ai_addrlen;
    return 0;
}

void raw_close(struct raw_conn *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0) {
        if (r->state == RS_READY) {
            static const char terminate[5] = {'X', 0, 0, 0, 4};
            ssize_t ignored = send(r->fd, terminate, sizeof(terminate), MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)ignored;
        }
        close(r->fd);
    }
    if (r->addrs)
        freeaddrinfo(r->addrs);
    if (r->in)
        evbuffer_free(r->in);
    if (r->out)
        evbuffer_free(r->out);
    scram_client_free(r->scram);
    for (int i = 0; i < r->nparams; i++) {
        free(r->pnames[i]);
        free(r->pvalues[i]);
    }
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->user);
    free(r);
}
