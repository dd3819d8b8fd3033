/*
 * Unit tests of the daemon's TLS: PgBouncer's protocol and cipher spellings,
 * the client-facing context built from a config, the certificate name used by
 * auth_type cert, and the TLS stream over a socketpair driven by a real event
 * loop, including the case where OpenSSL holds decrypted bytes while the
 * socket is empty (they must arrive without another socket event).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "stream.h"
#include "tls.h"

/* ---- vocabulary ---- */

static void test_protocols(void **state)
{
    unsigned m = 0;

    (void)state;
    assert_int_equal(tls_parse_protocols("secure", &m), 0);
    assert_int_equal(m, TLS_PROTO_V12 | TLS_PROTO_V13);
    assert_int_equal(tls_parse_protocols("", &m), 0);
    assert_int_equal(m, TLS_PROTO_V12 | TLS_PROTO_V13);
    assert_int_equal(tls_parse_protocols("all", &m), 0);
    assert_int_equal(m, 15);
    assert_int_equal(tls_parse_protocols("legacy", &m), 0);
    assert_int_equal(m, 15);
    assert_int_equal(tls_parse_protocols("TLSv1.2, tlsv1.0", &m), 0);
    assert_int_equal(m, TLS_PROTO_V12 | TLS_PROTO_V10);
    assert_int_equal(tls_parse_protocols("tlsv1.1:tlsv1.3", &m), 0);
    assert_int_equal(m, TLS_PROTO_V11 | TLS_PROTO_V13);
    assert_int_equal(tls_parse_protocols("!tlsv1.0", &m), 0);
    assert_int_equal(m, TLS_PROTO_V11 | TLS_PROTO_V12 | TLS_PROTO_V13);
    assert_int_equal(tls_parse_protocols("all,!tlsv1.3", &m), 0);
    assert_int_equal(m, TLS_PROTO_V10 | TLS_PROTO_V11 | TLS_PROTO_V12);
    m = 99;
    assert_int_equal(tls_parse_protocols("tlsv1.4", &m), -1);
    assert_int_equal(tls_parse_protocols("sslv3", &m), -1);
    assert_int_equal(tls_parse_protocols("tlsv1.2,!tlsv1.2", &m), -1); /* nothing left */
    assert_int_equal(m, 99);

    assert_string_equal(tls_libpq_min_protocol(TLS_PROTO_V12 | TLS_PROTO_V13), "TLSv1.2");
    assert_string_equal(tls_libpq_max_protocol(TLS_PROTO_V12 | TLS_PROTO_V13), "TLSv1.3");
    assert_string_equal(tls_libpq_min_protocol(TLS_PROTO_V10 | TLS_PROTO_V11), "TLSv1");
    assert_string_equal(tls_libpq_max_protocol(TLS_PROTO_V10 | TLS_PROTO_V11), "TLSv1.1");
    assert_null(tls_libpq_min_protocol(0));
}

static void test_cipher_shortcuts(void **state)
{
    (void)state;
    assert_string_equal(tls_cipher_list("secure"), tls_cipher_list("default"));
    assert_string_equal(tls_cipher_list("ALL"), "ALL:!aNULL:!eNULL");
    assert_string_equal(tls_cipher_list("insecure"), tls_cipher_list("all"));
    assert_string_equal(tls_cipher_list("compat"), tls_cipher_list("legacy"));
    assert_true(strstr(tls_cipher_list("fast"), "HIGH+EECDH") == tls_cipher_list("fast"));
    assert_string_equal(tls_cipher_list("ECDHE-RSA-AES128-GCM-SHA256"), "ECDHE-RSA-AES128-GCM-SHA256");
    /* every shortcut is a cipher list OpenSSL accepts */
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    const char *words[] = {"default", "secure", "compat", "legacy", "insecure", "all", "normal", "fast"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        assert_int_equal(SSL_CTX_set_cipher_list(ctx, tls_cipher_list(words[i])), 1);
    SSL_CTX_free(ctx);
}

/* ---- certificates made here ---- */

struct fixture {
    char dir[64];
    char ini[128], crt[128], key[128], ca[128];
    X509 *client_crt;
    EVP_PKEY *client_key;
    struct weir_config *cfg;
    struct tls_ctx *tls;
    struct event_base *base;
    int fds[2];
    struct stream s;
    SSL *srv, *cli;
    SSL_CTX *cctx;
    size_t got;
    int stop_reading, reads;
};

static X509 *self_signed(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    X509_NAME *n;

    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    if (x)
        assert_int_equal(PEM_write_X509(fp, x), 1);
    if (k)
        assert_int_equal(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(fp), 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    EVP_PKEY *key;
    X509 *crt;
    FILE *fp;

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/weir-tls-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->ini, sizeof(f->ini), "%s/weir.ini", f->dir);
    snprintf(f->crt, sizeof(f->crt), "%s/server.crt", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/server.key", f->dir);
    snprintf(f->ca, sizeof(f->ca), "%s/client-ca.crt", f->dir);
    key = EVP_EC_gen("P-256");
    crt = self_signed(key, "localhost");
    write_pem(f->crt, crt, NULL);
    write_pem(f->key, NULL, key);
    X509_free(crt);
    EVP_PKEY_free(key);
    /* The client's certificate is its own CA: trusted as client_tls_ca_file. */
    f->client_key = EVP_EC_gen("P-256");
    f->client_crt = self_signed(f->client_key, "alice");
    write_pem(f->ca, f->client_crt, NULL);
    fp = fopen(f->ini, "w");
    fprintf(fp, "[databases]\n[weir]\nunix_socket_dir =\nauth_type = trust\nclient_tls_sslmode = require\n"
                "client_tls_cert_file = %s\nclient_tls_key_file = %s\nclient_tls_ca_file = %s\n",
            f->crt, f->key, f->ca);
    fclose(fp);
    if (config_load(f->ini, &f->cfg, NULL, NULL) != 0)
        return -1;
    f->fds[0] = f->fds[1] = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    stream_release(&f->s);
    if (f->srv)
        SSL_free(f->srv);
    if (f->cli)
        SSL_free(f->cli);
    SSL_CTX_free(f->cctx);
    for (int i = 0; i < 2; i++)
        if (f->fds[i] >= 0)
            close(f->fds[i]);
    if (f->base)
        event_base_free(f->base);
    tls_ctx_free(f->tls);
    config_free(f->cfg);
    X509_free(f->client_crt);
    EVP_PKEY_free(f->client_key);
    unlink(f->ini);
    unlink(f->crt);
    unlink(f->key);
    unlink(f->ca);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void on_read(struct stream *s, void *arg)
{
    struct fixture *f = arg;

    assert_false(s->failed);
    f->reads++;
    f->got = evbuffer_get_length(s->in);
    if (f->stop_reading)
        stream_set_reading(s, 0); /* back-pressure, as a client does when its server is full */
}

static void spin(struct fixture *f, int rounds)
{
    for (int i = 0; i < rounds; i++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
}

/* A weir-side TLS stream on one end of a socketpair, an OpenSSL client on the other. */
static void connect_pair(struct fixture *f, int client_cert)
{
    char err[512];

    assert_int_equal(tls_ctx_new(f->cfg, &f->tls, err, sizeof(err)), 0);
    assert_non_null(f->tls);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->fds), 0);
    evutil_make_socket_nonblocking(f->fds[0]);
    evutil_make_socket_nonblocking(f->fds[1]);
    f->base = event_base_new();
    assert_int_equal(stream_init(&f->s, f->base, f->fds[0], on_read, NULL, f), 0);
    stream_set_reading(&f->s, 1);
    f->srv = tls_accept_new(f->tls, f->fds[0]);
    assert_non_null(f->srv);
    stream_start_tls(&f->s, f->srv, 1);

    f->cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(f->cctx, SSL_VERIFY_NONE, NULL);
    if (client_cert) {
        assert_int_equal(SSL_CTX_use_certificate(f->cctx, f->client_crt), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(f->cctx, f->client_key), 1);
    }
    f->cli = SSL_new(f->cctx);
    SSL_set_fd(f->cli, f->fds[1]);
    SSL_set_connect_state(f->cli);
    for (int i = 0; i < 200 && (!SSL_is_init_finished(f->cli) || f->s.tls_handshake); i++) {
        (void)SSL_do_handshake(f->cli);
        ERR_clear_error();
        spin(f, 1);
    }
    assert_true(SSL_is_init_finished(f->cli));
    assert_false(f->s.tls_handshake);
    assert_int_equal(f->reads, 0); /* no data yet: nothing reported */
}

static void client_write(struct fixture *f, size_t n)
{
    static char buf[16384];

    memset(buf, 'x', sizeof(buf));
    assert_int_equal(SSL_write(f->cli, buf, (int)n), (int)n);
}

/* 660 records of 100 bytes: OpenSSL reads ahead ~16 kB of them from the
 * socket at a time, so when one read callback's budget (64 kB) is used up
 * the last few records sit decrypted-to-be inside OpenSSL while the socket
 * is empty. They must arrive all the same. */
#define SMALL_RECORDS 660

/* The records are made into memory first and reach the socket in one
 * write, so the socket's buffer is not eaten by hundreds of tiny writes. */
static void write_small_records(struct fixture *f)
{
    BIO *mem = BIO_new(BIO_s_mem()), *sock = SSL_get_wbio(f->cli);
    char *data;
    long len;

    BIO_up_ref(sock);
    SSL_set0_wbio(f->cli, mem);
    for (int i = 0; i < SMALL_RECORDS; i++)
        client_write(f, 100);
    len = BIO_get_mem_data(mem, &data);
    assert_true(len > SMALL_RECORDS * 100);
    assert_int_equal(write(f->fds[1], data, (size_t)len), len);
    SSL_set0_wbio(f->cli, sock);
}

static void test_pending_bytes_after_budget(void **state)
{
    struct fixture *f = *state;

    connect_pair(f, 0);
    write_small_records(f);
    spin(f, 10);
    assert_int_equal(f->got, SMALL_RECORDS * 100);
    assert_true(f->reads >= 2);
}

/* The reader stops after the first callback (back-pressure) and resumes
 * later with the socket empty: what OpenSSL holds must be delivered. */
static void test_pending_bytes_after_resume(void **state)
{
    struct fixture *f = *state;

    connect_pair(f, 0);
    f->stop_reading = 1;
    write_small_records(f);
    spin(f, 10);
    assert_int_equal(f->got, 656 * 100); /* the first record at or past 64 kB */
    f->stop_reading = 0;
    stream_set_reading(&f->s, 1);
    spin(f, 10);
    assert_int_equal(f->got, SMALL_RECORDS * 100);
}

/* Output larger than the socket takes: flushed as the client reads. */
static void test_big_write_and_peer_close(void **state)
{
    struct fixture *f = *state;
    static char buf[65536];
    size_t want = 4u << 20, seen = 0;

    connect_pair(f, 0);
    for (size_t i = 0; i < want / 4096; i++)
        evbuffer_add(f->s.out, buf, 4096);
    assert_int_equal(stream_flush(&f->s), 0);
    assert_true(evbuffer_get_length(f->s.out) > 0); /* the socket could not take it all */
    for (int i = 0; i < 100000 && seen < want; i++) {
        int n = SSL_read(f->cli, buf, sizeof(buf));
        if (n > 0)
            seen += (size_t)n;
        ERR_clear_error();
        spin(f, 1);
    }
    assert_int_equal(seen, want);
    assert_int_equal(evbuffer_get_length(f->s.out), 0);
    /* close_notify from the client: an end of stream, like a plain eof */
    (void)SSL_shutdown(f->cli);
    spin(f, 5);
    assert_true(f->s.eof);
}

static void test_peer_cn(void **state)
{
    struct fixture *f = *state;
    char *cn;
    char desc[128];

    connect_pair(f, 1);
    client_write(f, 5); /* the server side finishes reading the client's certificate */
    spin(f, 5);
    cn = tls_peer_cn(f->srv);
    assert_non_null(cn);
    assert_string_equal(cn, "alice");
    free(cn);
    tls_describe(f->srv, desc, sizeof(desc));
    assert_true(strncmp(desc, "TLSv1.3/", 8) == 0);
}

static void test_no_client_certificate_no_cn(void **state)
{
    struct fixture *f = *state;

    connect_pair(f, 0);
    client_write(f, 5);
    spin(f, 5);
    assert_null(tls_peer_cn(f->srv));
}

static void test_bad_files_are_reported(void **state)
{
    struct fixture *f = *state;
    struct tls_ctx *t = (struct tls_ctx *)1;
    char err[512];
    FILE *fp = fopen(f->crt, "w");

    fputs("not a certificate\n", fp);
    fclose(fp);
    assert_int_equal(tls_ctx_new(f->cfg, &t, err, sizeof(err)), -1);
    assert_null(t);
    assert_non_null(strstr(err, "client_tls_cert_file"));
}

/* ---- the config rules PgBouncer applies to TLS settings ---- */

struct reports {
    int errors, warnings;
    char text[4096];
};

static void collect(void *arg, weir_log_level sev, const char *file, int line, const char *message)
{
    struct reports *r = arg;
    size_t used = strlen(r->text);

    (void)file;
    (void)line;
    if (sev == WEIR_LOG_ERROR)
        r->errors++;
    else
        r->warnings++;
    snprintf(r->text + used, sizeof(r->text) - used, "%s\n", message);
}

static int load_ini(struct fixture *f, const char *settings, struct reports *r)
{
    struct weir_config *cfg = NULL;
    FILE *fp = fopen(f->ini, "w");
    int rc;

    fprintf(fp, "[databases]\n[weir]\nunix_socket_dir =\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n%s",
            f->crt, f->key, settings);
    fclose(fp);
    memset(r, 0, sizeof(*r));
    rc = config_load(f->ini, &cfg, collect, r);
    config_free(cfg);
    return rc;
}

static void test_config_rules(void **state)
{
    struct fixture *f = *state;
    struct reports r;

    assert_int_not_equal(load_ini(f, "auth_type = trust\nclient_tls_sslmode = verify-full\n"
                                     "client_tls_protocols = tlsv1.2,tlsv9\nclient_tls_dheparams = huge\n", &r), 0);
    assert_int_equal(r.errors, 3);
    assert_non_null(strstr(r.text, "client_tls_ca_file must be set when client_tls_sslmode is verify-full"));
    assert_non_null(strstr(r.text, "invalid client_tls_protocols \"tlsv1.2,tlsv9\""));
    assert_non_null(strstr(r.text, "invalid client_tls_dheparams \"huge\""));

    assert_int_not_equal(load_ini(f, "auth_type = cert\nclient_tls_sslmode = require\n", &r), 0);
    assert_non_null(strstr(r.text, "auth_type cert requires client_tls_sslmode = verify-full"));

    /* verify-ca without a CA file uses the system's store: allowed, as in PgBouncer */
    assert_int_equal(load_ini(f, "auth_type = trust\nclient_tls_sslmode = verify-ca\n", &r), 0);

    assert_int_equal(load_ini(f, "auth_type = any\nserver_tls_sslmode = require\nserver_tls_protocols = all\n"
                                 "server_tls_ciphers = HIGH:!aNULL\n", &r), 0);
    assert_int_equal(r.warnings, 1);
    assert_non_null(strstr(r.text, "server_tls_ciphers \"HIGH:!aNULL\" is not applied"));
    assert_int_not_equal(load_ini(f, "auth_type = trust\nserver_tls_sslmode = require\n"
                                     "server_tls_protocols = sslv3\n", &r), 0);
    assert_non_null(strstr(r.text, "invalid server_tls_protocols"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocols),
        cmocka_unit_test(test_cipher_shortcuts),
        cmocka_unit_test_setup_teardown(test_pending_bytes_after_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_bytes_after_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_write_and_peer_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_cn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_client_certificate_no_cn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files_are_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_rules, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
