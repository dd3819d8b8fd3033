/*
 * The daemon's Dialect (see backend.h): each connect looks at the password
 * of its conninfo and goes either to libpq's "postgresql" dialect (plain
 * passwords, none, .pgpass: everything libpq does best) or to weir's own
 * connect (md5 secrets, SCRAM keys). A struct backend wraps whichever it
 * is, forwards every operation of the table to it, and answers the daemon's
 * questions (socket, pid, parameters, cancel) the same way for both. Cancel
 * for weir's own connections is a CancelRequest on a fresh socket, since
 * PQcancel needs a PGconn.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <weir/proto.h>

#include "backend.h"

struct backend {
    void *pg;             /* the libpq dialect's connection, or NULL */
    struct raw_conn *raw; /* or weir's own */
};

static const weir_dialect *libpq_dialect(void)
{
    return weir_dialect_find("postgresql");
}

/* Does this password need weir's own connect? */
static int needs_raw(const char *pw)
{
    if (pw == NULL || pw[0] == '\0')
        return 0;
    return strncmp(pw, "weir-scram-keys$", 16) == 0 || secret_kind_of(pw) == SECRET_MD5 ||
           secret_kind_of(pw) == SECRET_SCRAM;
}

static int be_connect_start(const char *conninfo, void **dconn, char *errbuf, size_t errlen)
{
    struct backend *b = calloc(1, sizeof(*b));
    char *perr = NULL;
    PQconninfoOption *opts;
    const char *pw = NULL;
    int rc;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (b == NULL)
        return WEIR_ENOMEM;
    opts = PQconninfoParse(conninfo ? conninfo : "", &perr);
    if (opts == NULL) {
        snprintf(errbuf, errlen, "%s", perr ? perr : "out of memory");
        PQfreemem(perr);
        free(b);
        return perr ? WEIR_EINVAL : WEIR_ENOMEM;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0)
            pw = o->val;
    if (needs_raw(pw))
        rc = raw_connect_start(opts, &b->raw, errbuf, errlen);
    else
        rc = libpq_dialect()->connect_start(conninfo, &b->pg, errbuf, errlen);
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "password") == 0)
            OPENSSL_cleanse(o->val, strlen(o->val));
    PQconninfoFree(opts);
    if (rc != 0) {
        free(b);
        return rc;
    }
    *dconn = b;
    return 0;
}

#define DISPATCH(b, raw_call, pg_call) ((b)->raw ? (raw_call) : (pg_call))

static weir_poll be_connect_poll(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, raw_connect_poll(b->raw), libpq_dialect()->connect_poll(b->pg));
}

static int be_socket(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, raw_socket(b->raw), libpq_dialect()->socket(b->pg));
}

static int be_ping_start(void *dconn)
{
    static const char *const ping[] = {"SELECT 1"};
    struct backend *b = dconn;
    return DISPATCH(b, raw_command_start(b->raw, ping, 1), libpq_dialect()->ping_start(b->pg));
}

static int be_reset_start(void *dconn)
{
    static const char *const rollback_discard[] = {"ROLLBACK", "DISCARD ALL"};
    struct backend *b = dconn;

    if (b->pg)
        return libpq_dialect()->reset_start(b->pg);
    return raw_txn(b->raw) == 'I' ? raw_command_start(b->raw, rollback_discard + 1, 1)
                                  : raw_command_start(b->raw, rollback_discard, 2);
}

static weir_poll be_command_poll(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, raw_command_poll(b->raw), libpq_dialect()->command_poll(b->pg));
}

static weir_poll be_idle_readable(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, raw_idle_readable(b->raw), libpq_dialect()->idle_readable(b->pg));
}

static int be_is_broken(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, raw_is_broken(b->raw), libpq_dialect()->is_broken(b->pg));
}

static weir_error_class be_classify(const char *sqlstate)
{
    return libpq_dialect()->classify(sqlstate);
}

static const char *be_error_message(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, raw_error(b->raw), libpq_dialect()->error_message(b->pg));
}

static int be_connect_refused(void *dconn, const char *error)
{
    struct backend *b = dconn;

    if (b == NULL) /* connect_start failed: libpq's words or weir's own, judged alike */
        return libpq_dialect()->connect_refused(NULL, error);
    return DISPATCH(b, raw_refused(b->raw), libpq_dialect()->connect_refused(b->pg, error));
}

/* "15.4" -> 150004, "9.6.2" -> 90602, as PQserverVersion. */
static int version_number(const char *v)
{
    int a = 0, b = 0, c = 0, n = v ? sscanf(v, "%d.%d.%d", &a, &b, &c) : 0;

    if (n < 1)
        return 0;
    return a >= 10 ? a * 10000 + b : a * 10000 + b * 100 + c;
}

static int be_server_version(void *dconn)
{
    struct backend *b = dconn;
    return DISPATCH(b, version_number(raw_param(b->raw, "server_version")),
                    libpq_dialect()->server_version(b->pg));
}

static void *be_driver_handle(void *dconn)
{
    return dconn;
}

static char *be_quote_identifier(const char *s)
{
    return libpq_dialect()->quote_identifier(s);
}

static char *be_quote_literal(const char *s)
{
    return libpq_dialect()->quote_literal(s);
}

static void be_close(void *dconn)
{
    struct backend *b = dconn;

    if (b == NULL)
        return;
    if (b->raw)
        raw_close(b->raw);
    else
        libpq_dialect()->close(b->pg);
    free(b);
}

static const weir_dialect daemon_dialect = {
    .name = "postgresql",
    .connect_start = be_connect_start,
    .connect_poll = be_connect_poll,
    .socket = be_socket,
    .ping_start = be_ping_start,
    .reset_start = be_reset_start,
    .command_poll = be_command_poll,
    .idle_readable = be_idle_readable,
    .is_broken = be_is_broken,
    .classify = be_classify,
    .error_message = be_error_message,
    .connect_refused = be_connect_refused,
    .server_version = be_server_version,
    .driver_handle = be_driver_handle,
    .quote_identifier = be_quote_identifier,
    .quote_literal = be_quote_literal,
    .close = be_close,
};

const weir_dialect *backend_dialect(void)
{
    return &daemon_dialect;
}

/* ---- what the daemon asks of a connection ---- */

PGconn *backend_pgconn(const struct backend *b)
{
    return b->pg ? libpq_dialect()->driver_handle(b->pg) : NULL;
}

int backend_is_raw(const struct backend *b)
{
    return b->raw != NULL;
}

int backend_socket(const struct backend *b)
{
    return b->raw ? raw_socket(b->raw) : PQsocket(backend_pgconn(b));
}

int backend_pid(const struct backend *b)
{
    return b->raw ? raw_pid(b->raw) : PQbackendPID(backend_pgconn(b));
}

const char *backend_param(const struct backend *b, const char *name)
{
    return b->raw ? raw_param(b->raw, name) : PQparameterStatus(backend_pgconn(b), name);
}

const char *backend_host(const struct backend *b)
{
    const char *h = b->raw ? raw_host(b->raw) : PQhost(backend_pgconn(b));
    return h ? h : "";
}

int backend_port(const struct backend *b)
{
    const char *p;

    if (b->raw)
        return raw_port(b->raw);
    p = PQport(backend_pgconn(b));
    return p ? atoi(p) : 0;
}

int backend_keys_password(const uint8_t client_key[SCRAM_KEY_LEN], const uint8_t server_key[SCRAM_KEY_LEN],
                          char *out, size_t outlen)
{
    unsigned char ck[64], sk[64];

    if (outlen < 16 + 44 + 1 + 44 + 1)
        return -1;
    EVP_EncodeBlock(ck, client_key, SCRAM_KEY_LEN);
    EVP_EncodeBlock(sk, server_key, SCRAM_KEY_LEN);
    snprintf(out, outlen, "weir-scram-keys$%s:%s", ck, sk);
    OPENSSL_cleanse(ck, sizeof(ck));
    return 0;
}

/* ---- cancel ---- */

struct backend_cancel {
    PGcancel *pg;
    struct sockaddr_storage sa;
    size_t salen;
    uint32_t pid, key;
};

struct backend_cancel *backend_cancel_new(const struct backend *b)
{
    struct backend_cancel *bc = calloc(1, sizeof(*bc));

    if (bc == NULL)
        return NULL;
    if (b->pg) {
        bc->pg = PQgetCancel(backend_pgconn(b));
        if (bc->pg == NULL) {
            free(bc);
            return NULL;
        }
        return bc;
    }
    if (raw_peer(b->raw, &bc->sa, sizeof(bc->sa), &bc->salen) != 0) {
        free(bc);
        return NULL;
    }
    bc->pid = (uint32_t)raw_pid(b->raw);
    bc->key = raw_cancel_key(b->raw);
    return bc;
}

/* PostgreSQL's CancelRequest on a new connection; the server just closes it. */
static int raw_cancel(struct backend_cancel *bc, char *err, size_t errlen)
{
    struct timeval tv = {.tv_sec = 5};
    uint8_t pkt[16];
    struct evbuffer *b = evbuffer_new();
    int fd = -1, rc = -1;

    if (b == NULL || weir_proto_build_cancel(b, bc->pid, bc->key) != 0 || evbuffer_get_length(b) != 16) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    evbuffer_remove(b, pkt, sizeof(pkt));
    fd = socket(bc->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&bc->sa, (socklen_t)bc->salen) != 0 ||
        send(fd, pkt, sizeof(pkt), MSG_NOSIGNAL) != (ssize_t)sizeof(pkt)) {
        snprintf(err, errlen, "could not send cancel request: %s", strerror(errno));
        goto out;
    }
    /* Wait for the server to close: the cancel has been delivered by then. */
    (void)recv(fd, pkt, 1, 0);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (b)
        evbuffer_free(b);
    return rc;
}

int backend_cancel_run(struct backend_cancel *bc, char *err, size_t errlen)
{
    if (bc->pg)
        return PQcancel(bc->pg, err, (int)errlen) ? 0 : -1;
    return raw_cancel(bc, err, errlen);
}

void backend_cancel_free(struct backend_cancel *bc)
{
    if (bc == NULL)
        return;
    if (bc->pg)
        PQfreeCancel(bc->pg);
    OPENSSL_cleanse(bc, sizeof(*bc));
    free(bc);
}
