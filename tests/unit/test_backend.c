/*
 * Unit tests of weir's own backend connect (daemon/backend_raw.c) against a
 * scripted server on a Unix socket in this thread: SCRAM-SHA-256 with keys
 * recovered from a client's proof (the server's signature checked, a forged
 * one refused), md5 answered from the stored hash, the server's error
 * passed on in libpq's layout, what happens without keys, the parameters,
 * pid and cancel key kept for the daemon, and the password forms that pick
 * this path over libpq.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <weir/proto.h>

#include "auth.h"
#include "backend.h"

#define PORT "7777"

struct fixture {
    char dir[64];
    char path[128];
    int listen_fd;
    int srv; /* the accepted server end */
    struct raw_conn *r;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct sockaddr_un un = {.sun_family = AF_UNIX};

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/weir-backend-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/.s.PGSQL." PORT, f->dir);
    memcpy(un.sun_path, f->path, strlen(f->path) + 1); /* short: /tmp/weir-backend-XXXXXX/... */
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(f->listen_fd, 4) != 0)
        return -1;
    f->srv = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    raw_close(f->r);
    if (f->srv >= 0)
        close(f->srv);
    close(f->listen_fd);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static weir_poll pump(struct fixture *f);

/* Start weir's connect with conninfo (host/port filled in) and accept it. */
static int start(struct fixture *f, const char *extra, char *err, size_t errlen)
{
    char conninfo[512];
    PQconninfoOption *opts;
    int rc;

    snprintf(conninfo, sizeof(conninfo), "host=%s port=" PORT " user=alice dbname=shop application_name=weir %s",
             f->dir, extra);
    opts = PQconninfoParse(conninfo, NULL);
    assert_non_null(opts);
    rc = raw_connect_start(opts, &f->r, err, errlen);
    PQconninfoFree(opts);
    if (rc == 0) {
        f->srv = accept(f->listen_fd, NULL, NULL);
        assert_true(f->srv >= 0);
        assert_int_equal(pump(f), WEIR_POLL_READ); /* the StartupMessage is out */
    }
    return rc;
}

/* Poll until weir waits for the server (READ) or finishes. */
static weir_poll pump(struct fixture *f)
{
    weir_poll p;
    int n = 0;

    do {
        p = raw_connect_poll(f->r);
    } while (p == WEIR_POLL_WRITE && ++n < 100);
    return p;
}

static void read_exact(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
}

/* One typed message from weir: its type, body into buf (NUL added). */
static size_t read_msg(struct fixture *f, char *type, uint8_t *buf, size_t cap)
{
    uint8_t hdr[5];
    size_t len;

    read_exact(f->srv, hdr, 5);
    *type = (char)hdr[0];
    len = ((size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 | hdr[4]) - 4;
    assert_true(len < cap);
    read_exact(f->srv, buf, len);
    buf[len] = 0;
    return len;
}

static void read_startup(struct fixture *f)
{
    uint8_t hdr[4], body[512];
    weir_startup st;
    size_t len;

    read_exact(f->srv, hdr, 4);
    len = ((size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3]) - 4;
    assert_true(len < sizeof(body));
    read_exact(f->srv, body, len);
    assert_int_equal(weir_proto_parse_startup(body, len, &st), 0);
    assert_string_equal(weir_startup_param(&st, "user"), "alice");
    assert_string_equal(weir_startup_param(&st, "database"), "shop");
    assert_string_equal(weir_startup_param(&st, "application_name"), "weir");
}

static void send_buf(struct fixture *f, struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    uint8_t *p = evbuffer_pullup(b, (ssize_t)len);

    assert_int_equal(write(f->srv, p, len), (ssize_t)len);
    evbuffer_drain(b, len);
}

/* AuthenticationOk, two parameters, BackendKeyData, ReadyForQuery. */
static void send_welcome(struct fixture *f)
{
    struct evbuffer *b = evbuffer_new();

    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_OK, NULL, 0), 0);
    assert_int_equal(weir_proto_build_parameter_status(b, "server_version", "15.4"), 0);
    assert_int_equal(weir_proto_build_parameter_status(b, "TimeZone", "UTC"), 0);
    assert_int_equal(weir_proto_build_backend_key(b, 4242, 0xdeadbeef), 0);
    assert_int_equal(weir_proto_build_ready(b, 'I'), 0);
    send_buf(f, b);
    evbuffer_free(b);
}

/* The keys a client proves with password: a whole exchange in memory, as
 * the daemon does with a real client, then ClientKey from the proof. */
static void client_keys(const char *password, struct scram_keys *keys, uint8_t ck[SCRAM_KEY_LEN])
{
    static const uint8_t salt[16] = "weir-test-salt!";
    struct scram_server *s;
    struct scram_client *c = scram_client_new_password(NULL, password);
    char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;

    assert_int_equal(scram_keys_from_password(password, salt, sizeof(salt), 4096, keys), AUTH_OK);
    s = scram_server_new(keys);
    assert_non_null(s);
    assert_non_null(c);
    assert_int_equal(scram_client_first(c, &m1), AUTH_OK);
    assert_int_equal(scram_server_first(s, m1, strlen(m1), &m2, NULL, 0), AUTH_OK);
    assert_int_equal(scram_client_final(c, m2, strlen(m2), &m3, NULL, 0), AUTH_OK);
    assert_int_equal(scram_server_final(s, m3, strlen(m3), &m4, NULL, 0), AUTH_OK);
    assert_int_equal(scram_server_client_key(s, ck), AUTH_OK);
    free(m1), free(m2), free(m3), free(m4);
    scram_server_free(s);
    scram_client_free(c);
}

static void keys_conninfo(const struct scram_keys *keys, const uint8_t ck[SCRAM_KEY_LEN], char *out, size_t len)
{
    char pw[160];

    assert_int_equal(backend_keys_password(ck, keys->server_key, pw, sizeof(pw)), 0);
    snprintf(out, len, "password='%s'", pw);
}

/* Play the server side of SCRAM with keys; forge 1 = send a wrong signature,
 * 2 = skip the signature and say AuthenticationOk. */
static weir_poll scram_exchange(struct fixture *f, const struct scram_keys *server_keys, int forge)
{
    static const char *const mechs[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", NULL};
    struct scram_server *s = scram_server_new(server_keys);
    struct evbuffer *b = evbuffer_new();
    uint8_t body[2048];
    const char *mech;
    const uint8_t *data;
    int32_t dlen;
    char type, *reply = NULL;
    size_t len;
    weir_poll p;

    read_startup(f);
    assert_int_equal(weir_proto_build_auth_sasl(b, mechs), 0);
    send_buf(f, b);
    assert_int_equal(pump(f), WEIR_POLL_READ);
    len = read_msg(f, &type, body, sizeof(body));
    assert_int_equal(type, 'p');
    assert_int_equal(weir_proto_parse_sasl_initial(body, len, &mech, &data, &dlen), 0);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(scram_server_first(s, (const char *)data, (size_t)dlen, &reply, NULL, 0), AUTH_OK);
    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_SASL_CONTINUE, reply, strlen(reply)), 0);
    free(reply);
    send_buf(f, b);
    assert_int_equal(pump(f), WEIR_POLL_READ);
    len = read_msg(f, &type, body, sizeof(body));
    assert_int_equal(type, 'p');
    assert_int_equal(scram_server_final(s, (const char *)body, len, &reply, NULL, 0), AUTH_OK);
    if (forge == 1)
        memset(reply + 2, 'A', strlen(reply) - 3); /* "v=AAAA...=": a signature nobody made */
    if (forge != 2)
        assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_SASL_FINAL, reply, strlen(reply)), 0);
    free(reply);
    send_buf(f, b);
    if (forge != 1)
        send_welcome(f);
    p = pump(f);
    scram_server_free(s);
    evbuffer_free(b);
    return p;
}

static void test_scram_with_keys(void **state)
{
    struct fixture *f = *state;
    struct scram_keys keys;
    uint8_t ck[SCRAM_KEY_LEN];
    char conninfo[300], err[256];

    client_keys("pencil", &keys, ck);
    keys_conninfo(&keys, ck, conninfo, sizeof(conninfo));
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    assert_int_equal(scram_exchange(f, &keys, 0), WEIR_POLL_OK);
    assert_int_equal(raw_pid(f->r), 4242);
    assert_int_equal(raw_cancel_key(f->r), 0xdeadbeef);
    assert_string_equal(raw_param(f->r, "server_version"), "15.4");
    assert_string_equal(raw_param(f->r, "TimeZone"), "UTC");
    assert_null(raw_param(f->r, "DateStyle"));
    assert_int_equal(raw_is_broken(f->r), 0);
    assert_int_equal(raw_port(f->r), 7777);
}

static void test_scram_forged_server_signature(void **state)
{
    struct fixture *f = *state;
    struct scram_keys keys;
    uint8_t ck[SCRAM_KEY_LEN];
    char conninfo[300], err[256];

    client_keys("pencil", &keys, ck);
    keys_conninfo(&keys, ck, conninfo, sizeof(conninfo));
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    assert_int_equal(scram_exchange(f, &keys, 1), WEIR_POLL_FAILED);
    assert_non_null(strstr(raw_error(f->r), "did not prove it holds the secret"));
    assert_true(raw_is_broken(f->r));
}

static void test_scram_server_skips_signature(void **state)
{
    struct fixture *f = *state;
    struct scram_keys keys;
    uint8_t ck[SCRAM_KEY_LEN];
    char conninfo[300], err[256];

    client_keys("pencil", &keys, ck);
    keys_conninfo(&keys, ck, conninfo, sizeof(conninfo));
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    assert_int_equal(scram_exchange(f, &keys, 2), WEIR_POLL_FAILED);
    assert_non_null(strstr(raw_error(f->r), "without proving it holds the secret"));
}

static void test_scram_secret_without_keys(void **state)
{
    struct fixture *f = *state;
    struct scram_keys keys;
    struct evbuffer *b = evbuffer_new();
    static const char *const mechs[] = {"SCRAM-SHA-256", NULL};
    char secret[200], conninfo[300], err[256];

    assert_int_equal(scram_keys_from_password("pencil", (const uint8_t *)"salt", 4, 4096, &keys), AUTH_OK);
    assert_int_equal(scram_keys_format(&keys, secret, sizeof(secret)), AUTH_OK);
    snprintf(conninfo, sizeof(conninfo), "password='%s'", secret);
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    read_startup(f);
    assert_int_equal(weir_proto_build_auth_sasl(b, mechs), 0);
    send_buf(f, b);
    assert_int_equal(pump(f), WEIR_POLL_FAILED);
    assert_non_null(strstr(raw_error(f->r), "cannot do SCRAM authentication: password is SCRAM secret but client "
                                            "authentication did not provide SCRAM keys"));
    evbuffer_free(b);
}

/* A server that trusts needs no password at all, whatever weir holds. */
static void test_trust_needs_nothing(void **state)
{
    struct fixture *f = *state;
    char err[256];

    assert_int_equal(start(f, "password=md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", err, sizeof(err)), 0);
    read_startup(f);
    send_welcome(f);
    assert_int_equal(pump(f), WEIR_POLL_OK);
}

static void test_md5_secret(void **state)
{
    struct fixture *f = *state;
    static const uint8_t salt[4] = {1, 2, 3, 4};
    struct evbuffer *b = evbuffer_new();
    char secret[MD5_SECRET_LEN + 1], conninfo[100], err[256], type;
    uint8_t body[256];
    const char *resp;
    size_t len;

    assert_int_equal(md5_secret("alice", "sesame", secret), AUTH_OK);
    snprintf(conninfo, sizeof(conninfo), "password=%s", secret);
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    read_startup(f);
    assert_int_equal(weir_proto_build_auth_md5(b, salt), 0);
    send_buf(f, b);
    assert_int_equal(pump(f), WEIR_POLL_READ);
    len = read_msg(f, &type, body, sizeof(body));
    assert_int_equal(type, 'p');
    assert_int_equal(weir_proto_parse_string(body, len, &resp), 0);
    /* What the server checks is what a client knowing the password sends. */
    assert_int_equal(md5_verify("sesame", "alice", salt, resp), AUTH_OK);
    send_welcome(f);
    assert_int_equal(pump(f), WEIR_POLL_OK);
    evbuffer_free(b);
}

static void test_server_error_in_libpq_layout(void **state)
{
    struct fixture *f = *state;
    struct evbuffer *b = evbuffer_new();
    char err[256], secret[MD5_SECRET_LEN + 1], conninfo[100];

    assert_int_equal(md5_secret("alice", "sesame", secret), AUTH_OK);
    snprintf(conninfo, sizeof(conninfo), "password=%s", secret);
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    read_startup(f);
    assert_int_equal(weir_proto_build_error(b, "FATAL", "28P01", "password authentication failed for user \"alice\"",
                                            NULL, NULL), 0);
    send_buf(f, b);
    assert_int_equal(pump(f), WEIR_POLL_FAILED);
    assert_non_null(strstr(raw_error(f->r), "connection to server on socket \""));
    assert_non_null(strstr(raw_error(f->r), "failed: FATAL:  password authentication failed for user \"alice\""));
    evbuffer_free(b);
}

static void test_md5_asked_with_only_keys(void **state)
{
    struct fixture *f = *state;
    static const uint8_t salt[4] = {9, 9, 9, 9};
    struct evbuffer *b = evbuffer_new();
    struct scram_keys keys;
    uint8_t ck[SCRAM_KEY_LEN];
    char conninfo[300], err[256];

    client_keys("pencil", &keys, ck);
    keys_conninfo(&keys, ck, conninfo, sizeof(conninfo));
    assert_int_equal(start(f, conninfo, err, sizeof(err)), 0);
    read_startup(f);
    assert_int_equal(weir_proto_build_auth_md5(b, salt), 0);
    send_buf(f, b);
    assert_int_equal(pump(f), WEIR_POLL_FAILED);
    assert_non_null(strstr(raw_error(f->r), "asks for an md5 password and weir holds no md5 secret"));
    evbuffer_free(b);
}

static void test_eof_during_login(void **state)
{
    struct fixture *f = *state;
    char err[256];

    assert_int_equal(start(f, "password=md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", err, sizeof(err)), 0);
    read_startup(f);
    close(f->srv);
    f->srv = -1;
    assert_int_equal(pump(f), WEIR_POLL_FAILED);
    assert_non_null(strstr(raw_error(f->r), "server closed the connection unexpectedly"));
}

static void test_refusals_before_connecting(void **state)
{
    struct fixture *f = *state;
    char err[256];

    assert_int_equal(start(f, "sslmode=require password=md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", err, sizeof(err)),
                     WEIR_EINVAL);
    assert_non_null(strstr(err, "sslmode=require"));
    assert_null(f->r);
}

/* Which passwords take weir's own path is decided by the daemon dialect. */
static void test_dialect_routes_by_password(void **state)
{
    struct fixture *f = *state;
    const weir_dialect *d = backend_dialect();
    char conninfo[300], err[256];
    void *dconn = NULL;

    snprintf(conninfo, sizeof(conninfo), "host=%s port=" PORT " user=alice password=md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
             f->dir);
    assert_int_equal(d->connect_start(conninfo, &dconn, err, sizeof(err)), 0);
    assert_true(backend_is_raw(d->driver_handle(dconn)));
    assert_null(backend_pgconn(d->driver_handle(dconn)));
    d->close(dconn);
    /* A plain password goes to libpq (which then fails to log in here: no matter). */
    snprintf(conninfo, sizeof(conninfo), "host=%s port=" PORT " user=alice password=plain connect_timeout=1",
             f->dir);
    assert_int_equal(d->connect_start(conninfo, &dconn, err, sizeof(err)), 0);
    assert_false(backend_is_raw(d->driver_handle(dconn)));
    assert_non_null(backend_pgconn(d->driver_handle(dconn)));
    d->close(dconn);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_scram_with_keys),      T(test_scram_forged_server_signature), T(test_scram_secret_without_keys),
        T(test_scram_server_skips_signature),
        T(test_trust_needs_nothing),  T(test_md5_secret),                    T(test_server_error_in_libpq_layout),
        T(test_md5_asked_with_only_keys), T(test_eof_during_login),          T(test_refusals_before_connecting),
        T(test_dialect_routes_by_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
