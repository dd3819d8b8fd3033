/*
 * TLS with OpenSSL (see tls.h): PgBouncer's setting vocabulary, the
 * client-facing SSL_CTX built from client_tls_* (and rebuilt on reload), the
 * per-connection SSL and its handshake step. The SSL_CTX is reference
 * counted by OpenSSL: every SSL made from it holds it, so a reload that swaps
 * in a new context leaves established connections on the old one until they
 * close, and new connections see the new certificate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "config.h"
#include "daemon.h"
#include "tls.h"

struct tls_ctx {
    SSL_CTX *ssl;
};

/* ---- PgBouncer's vocabulary ---- */

static unsigned protocol_word(const char *w, size_t n)
{
    static const struct {
        const char *word;
        unsigned mask;
    } words[] = {
        {"all", TLS_PROTO_V10 | TLS_PROTO_V11 | TLS_PROTO_V12 | TLS_PROTO_V13},
        {"legacy", TLS_PROTO_V10 | TLS_PROTO_V11 | TLS_PROTO_V12 | TLS_PROTO_V13},
        {"secure", TLS_PROTO_V12 | TLS_PROTO_V13},
        {"default", TLS_PROTO_V12 | TLS_PROTO_V13},
        {"tlsv1", TLS_PROTO_V10},
        {"tlsv1.0", TLS_PROTO_V10},
        {"tlsv1.1", TLS_PROTO_V11},
        {"tlsv1.2", TLS_PROTO_V12},
        {"tlsv1.3", TLS_PROTO_V13},
    };

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i].word) == n && strncasecmp(words[i].word, w, n) == 0)
            return words[i].mask;
    return 0;
}

int tls_parse_protocols(const char *spec, unsigned *mask)
{
    unsigned set = 0;
    int any = 0;

    for (const char *p = spec; *p;) {
        int negate = 0;
        const char *end;
        unsigned bits;

        while (*p == ' ' || *p == '\t' || *p == ',' || *p == ':')
            p++;
        if (*p == '\0')
            break;
        if (*p == '!') {
            negate = 1;
            p++;
        }
        for (end = p; *end && *end != ',' && *end != ':' && *end != ' ' && *end != '\t'; end++)
            ;
        bits = protocol_word(p, (size_t)(end - p));
        if (bits == 0)
            return -1;
        if (negate && !any)
            set = protocol_word("all", 3); /* "!tlsv1.0" alone: everything else */
        set = negate ? set & ~bits : set | bits;
        any = 1;
        p = end;
    }
    if (!any)
        set = TLS_PROTO_V12 | TLS_PROTO_V13;
    if (set == 0)
        return -1;
    *mask = set;
    return 0;
}

static const char *const libpq_names[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
static const int openssl_versions[] = {TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};

const char *tls_libpq_min_protocol(unsigned mask)
{
    for (int i = 0; i < 4; i++)
        if (mask & (1u << i))
            return libpq_names[i];
    return NULL;
}

const char *tls_libpq_max_protocol(unsigned mask)
{
    for (int i = 3; i >= 0; i--)
        if (mask & (1u << i))
            return libpq_names[i];
    return NULL;
}

const char *tls_cipher_list(const char *spec)
{
    /* The cipher strings PgBouncer 1.18's TLS layer (libusual) gives its shortcuts. */
    static const struct {
        const char *word, *list;
    } shortcuts[] = {
        {"default", "HIGH+EECDH:HIGH+EDH:!SSLv3:!SHA384:!SHA256:!DSS:!aNULL"},
        {"secure", "HIGH+EECDH:HIGH+EDH:!SSLv3:!SHA384:!SHA256:!DSS:!aNULL"},
        {"compat", "HIGH:+3DES:!aNULL"},
        {"legacy", "HIGH:+3DES:!aNULL"},
        {"insecure", "ALL:!aNULL:!eNULL"},
        {"all", "ALL:!aNULL:!eNULL"},
        {"normal", "HIGH+EECDH:HIGH+EDH:HIGH+RSA:+SHA384:+SHA256:+SSLv3:+EDH:+RSA:-3DES:3DES+RSA:!CAMELLIA:!DSS:!aNULL"},
        {"fast", "HIGH+EECDH:HIGH+EDH:HIGH+RSA:+AES256:+SHA256:+SHA384:+SSLv3:+EDH:+RSA:-3DES:3DES+RSA:!CAMELLIA:!DSS:!aNULL"},
    };

    if (spec == NULL || spec[0] == '\0')
        return shortcuts[0].list;
    for (size_t i = 0; i < sizeof(shortcuts) / sizeof(shortcuts[0]); i++)
        if (strcasecmp(spec, shortcuts[i].word) == 0)
            return shortcuts[i].list;
    return spec;
}

/* ---- the client-facing context ---- */

/* err = "what: OpenSSL's reason" (the last error queued), queue cleared. */
static int fail(char *err, size_t errlen, const char *what)
{
    char reason[256];

    tls_error_text(ERR_peek_last_error(), reason, sizeof(reason));
    snprintf(err, errlen, "%s: %s", what, reason);
    ERR_clear_error();
    return -1;
}

static int set_protocols(SSL_CTX *ctx, const char *spec, char *err, size_t errlen)
{
    static const long no_op[] = {SSL_OP_NO_TLSv1, SSL_OP_NO_TLSv1_1, SSL_OP_NO_TLSv1_2, SSL_OP_NO_TLSv1_3};
    unsigned mask;
    int lo = -1, hi = -1;

    if (tls_parse_protocols(spec, &mask) != 0) {
        snprintf(err, errlen, "invalid client_tls_protocols: %s", spec);
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (!(mask & (1u << i)))
            continue;
        if (lo < 0)
            lo = i;
        hi = i;
    }
    /* A range, with the versions inside it that the list leaves out switched off. */
    if (!SSL_CTX_set_min_proto_version(ctx, openssl_versions[lo]) ||
        !SSL_CTX_set_max_proto_version(ctx, hi == 3 ? 0 : openssl_versions[hi]))
        return fail(err, errlen, "client_tls_protocols");
    for (int i = lo; i <= hi; i++)
        if (!(mask & (1u << i)))
            SSL_CTX_set_options(ctx, (uint64_t)no_op[i]);
    return 0;
}

/* client_tls_dheparams: auto (OpenSSL picks a group matching the key), none, legacy (1024 bits). */
static int set_dheparams(SSL_CTX *ctx, const char *spec, char *err, size_t errlen)
{
    OSSL_PARAM params[2];
    EVP_PKEY_CTX *pctx;
    EVP_PKEY *pkey = NULL;

    if (strcasecmp(spec, "none") == 0)
        return 0;
    if (spec[0] == '\0' || strcasecmp(spec, "auto") == 0)
        return SSL_CTX_set_dh_auto(ctx, 1) == 1 ? 0 : fail(err, errlen, "client_tls_dheparams");
    if (strcasecmp(spec, "legacy") != 0) {
        snprintf(err, errlen, "invalid client_tls_dheparams: %s (auto, none or legacy)", spec);
        return -1;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"dh_1024_160", 0);
    params[1] = OSSL_PARAM_construct_end();
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_KEY_PARAMETERS, params) != 1) {
        EVP_PKEY_CTX_free(pctx);
        return fail(err, errlen, "client_tls_dheparams legacy");
    }
    EVP_PKEY_CTX_free(pctx);
    if (SSL_CTX_set0_tmp_dh_pkey(ctx, pkey) != 1) {
        EVP_PKEY_free(pkey);
        return fail(err, errlen, "client_tls_dheparams legacy (1024-bit DH is below OpenSSL's security level)");
    }
    return 0;
}

/* client_tls_ecdhcurve: auto (OpenSSL's list), none (no elliptic curves), or one curve name. */
static int set_ecdhcurve(SSL_CTX *ctx, const char *spec, char *err, size_t errlen)
{
    const char *groups = spec;

    if (spec[0] == '\0' || strcasecmp(spec, "auto") == 0)
        return 0;
    if (strcasecmp(spec, "none") == 0)
        groups = "ffdhe2048:ffdhe3072:ffdhe4096:ffdhe6144:ffdhe8192";
    if (SSL_CTX_set1_groups_list(ctx, groups) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "invalid client_tls_ecdhcurve: %s", spec);
        return -1;
    }
    return 0;
}

static int load_files(SSL_CTX *ctx, const struct weir_config *cfg, char *err, size_t errlen)
{
    char what[1100];

    snprintf(what, sizeof(what), "client_tls_cert_file \"%s\"", cfg->client_tls_cert_file);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->client_tls_cert_file) != 1)
        return fail(err, errlen, what);
    snprintf(what, sizeof(what), "client_tls_key_file \"%s\"", cfg->client_tls_key_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->client_tls_key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        return fail(err, errlen, what);
    if (cfg->client_tls_ca_file[0]) {
        STACK_OF(X509_NAME) *names;
        snprintf(what, sizeof(what), "client_tls_ca_file \"%s\"", cfg->client_tls_ca_file);
        if (SSL_CTX_load_verify_locations(ctx, cfg->client_tls_ca_file, NULL) != 1)
            return fail(err, errlen, what);
        /* Tells clients which issuer's certificate to present. */
        names = SSL_load_client_CA_file(cfg->client_tls_ca_file);
        if (names == NULL)
            return fail(err, errlen, what);
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    return 0;
}

/*
 * Client certificates: verify-ca and verify-full require one, checked against
 * client_tls_ca_file (or the system's CAs when that is empty). In the other
 * modes one is asked for only when a CA file is set, and checked when the
 * client sends it (an hba `cert` line or auth_type cert can then use it).
 */
static int set_verify(SSL_CTX *ctx, const struct weir_config *cfg, char *err, size_t errlen)
{
    int mode = SSL_VERIFY_NONE;

    if (cfg->client_tls_sslmode >= TLS_MODE_VERIFY_CA) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        if (cfg->client_tls_ca_file[0] == '\0' && SSL_CTX_set_default_verify_paths(ctx) != 1)
            return fail(err, errlen, "the system's CA certificates");
    } else if (cfg->client_tls_ca_file[0]) {
        mode = SSL_VERIFY_PEER;
    }
    SSL_CTX_set_verify(ctx, mode, NULL);
    return 0;
}

int tls_ctx_new(const struct weir_config *cfg, struct tls_ctx **out, char *err, size_t errlen)
{
    struct tls_ctx *t;
    SSL_CTX *ctx;

    *out = NULL;
    if (cfg->client_tls_sslmode == TLS_MODE_DISABLE)
        return 0;
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return fail(err, errlen, "SSL_CTX_new");
    /* No renegotiation (a TLS 1.2 client could otherwise make a write wait for
     * a read), no compression, no sessions to resume: PostgreSQL's choices. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"weir", 4);
    if (set_protocols(ctx, cfg->client_tls_protocols, err, errlen) != 0)
        goto failed;
    if (SSL_CTX_set_cipher_list(ctx, tls_cipher_list(cfg->client_tls_ciphers)) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "invalid client_tls_ciphers: %s", cfg->client_tls_ciphers);
        goto failed;
    }
    if (set_dheparams(ctx, cfg->client_tls_dheparams, err, errlen) != 0 ||
        set_ecdhcurve(ctx, cfg->client_tls_ecdhcurve, err, errlen) != 0 || load_files(ctx, cfg, err, errlen) != 0 ||
        set_verify(ctx, cfg, err, errlen) != 0)
        goto failed;
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        goto failed;
    }
    t->ssl = ctx;
    *out = t;
    return 0;
failed:
    SSL_CTX_free(ctx);
    return -1;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ssl);
    free(t);
}

int tls_start(struct daemon *d)
{
    char err[1400];

    if (tls_ctx_new(d->cfg, &d->tls, err, sizeof(err)) != 0) {
        log_at(&d->log, LG_FATAL, "TLS setup failed: %s", err);
        return -1;
    }
    return 0;
}

int tls_reload(struct daemon *d)
{
    struct tls_ctx *fresh = NULL;
    char err[1400];

    if (tls_ctx_new(d->cfg, &fresh, err, sizeof(err)) != 0) {
        log_at(&d->log, LG_ERROR, "TLS setup failed: %s; keeping the previous client TLS settings", err);
        return -1;
    }
    tls_ctx_free(d->tls);
    d->tls = fresh;
    if (fresh)
        log_at(&d->log, LG_LOG, "client TLS settings and certificates (re)loaded");
    return 0;
}

/* ---- connections ---- */

SSL *tls_accept_new(struct tls_ctx *t, int fd)
{
    SSL *ssl = SSL_new(t->ssl);

    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    /* Idle clients hold no record buffers; a busy one reads whole chunks. */
    SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    SSL_set_read_ahead(ssl, 1);
    return ssl;
}

int tls_handshake_step(SSL *ssl, int *want_write, unsigned long *err)
{
    int rc;

    ERR_clear_error();
    rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return 1;
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        *want_write = 0;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want_write = 1;
        return 0;
    default:
        *err = ERR_get_error();
        ERR_clear_error();
        return -1;
    }
}

void tls_error_text(unsigned long err, char *buf, size_t len)
{
    const char *reason;

    if (err == 0) {
        snprintf(buf, len, "connection closed by peer");
        return;
    }
    reason = ERR_reason_error_string(err);
    if (reason)
        snprintf(buf, len, "%s", reason);
    else
        ERR_error_string_n(err, buf, len);
}

void tls_conn_close(SSL *ssl, int clean)
{
    if (ssl == NULL)
        return;
    if (clean && SSL_is_init_finished(ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl); /* one try: close_notify if the socket takes it */
    }
    ERR_clear_error();
    SSL_free(ssl);
}

/* PgBouncer 1.18 writes its client connections this way (no key exchange part). */
void tls_describe(SSL *ssl, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

char *tls_peer_cn(SSL *ssl)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    X509_NAME *subject;
    X509_NAME_ENTRY *entry;
    unsigned char *utf8 = NULL;
    char *cn = NULL;
    int idx, n;

    /* Only a certificate OpenSSL asked for and verified counts. */
    if (cert == NULL || !(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    subject = X509_get_subject_name(cert);
    idx = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
    if (idx < 0 || (entry = X509_NAME_get_entry(subject, idx)) == NULL)
        return NULL;
    n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
    if (n >= 0 && memchr(utf8, '\0', (size_t)n) == NULL)
        cn = strndup((const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
    return cn;
}
