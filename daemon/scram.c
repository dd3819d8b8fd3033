/*
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) the way PostgreSQL speaks it: parsing
 * and formatting stored secrets, the server side of an exchange, a cache of
 * keys derived from plain-text secrets, and a small client for logging into
 * a backend. Everything is computed with OpenSSL; every parse works on
 * (pointer, length) spans and never reads past them, since the messages come
 * from unauthenticated peers.
 *
 * Passwords go into PBKDF2 as given. PostgreSQL (and libpq) first apply
 * SASLprep (RFC 4013), which is the identity for ASCII passwords and falls
 * back to the raw bytes for invalid UTF-8; it differs for passwords with
 * non-ASCII spaces, soft hyphens, zero-width characters or text that is not
 * in NFKC form. Such a password works when the client computes with the same
 * raw bytes but not with libpq; implementing NFKC needs Unicode tables that
 * weir does not carry yet.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth.h"
#include "internal.h" /* libweir's shared helpers */

#define SECRET_PREFIX "SCRAM-SHA-256$"
#define NONCE_RAW_LEN 18 /* as PostgreSQL: 24 base64 characters */
#define NONCE_MAX 255    /* for nonces set by tests */
#define B64_LEN(n) (4 * (((n) + 2) / 3))

/* ---- small helpers ------------------------------------------------------ */


/* Frees a string that may hold secret material, wiping it first. */
static void free_str(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* A character for an error message: itself if printable, else its code. */
static const char *show_char(const char *p, const char *end, char buf[8])
{
    if (p >= end)
        return "end of input";
    if (*p > ' ' && *p < 0x7f)
        snprintf(buf, 8, "\"%c\"", *p);
    else
        snprintf(buf, 8, "0x%02x", (unsigned char)*p);
    return buf;
}

/* SCRAM's "printable": %x21-2B / %x2D-7E, i.e. visible ASCII without ','. */
static bool is_printable(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return false;
    return true;
}

static bool valid_fixed_nonce(const char *nonce)
{
    size_t len = nonce ? strlen(nonce) : 0;

    return len > 0 && len <= NONCE_MAX && is_printable(nonce, len);
}

/* ---- base64 and digests ------------------------------------------------- */

/* dst must have room for B64_LEN(n) + 1 bytes. */
static void b64_encode(const uint8_t *src, size_t n, char *dst)
{
    EVP_EncodeBlock((unsigned char *)dst, src, (int)n);
}

static bool is_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

/*
 * Strict base64: whole quanta, alphabet only, '=' only as final padding.
 * EVP_DecodeBlock itself would skip whitespace and count padding as zero
 * bytes. Returns the decoded length, or -1 if invalid or longer than cap.
 */
static int b64_decode(const char *src, size_t len, uint8_t *dst, size_t cap)
{
    uint8_t tmp[3 * (B64_LEN(SCRAM_SALT_MAX) / 4)];
    size_t pad = 0, i, n;

    if (len % 4 != 0 || len / 4 * 3 > sizeof(tmp))
        return -1;
    while (pad < 2 && pad < len && src[len - 1 - pad] == '=')
        pad++;
    for (i = 0; i < len - pad; i++)
        if (!is_b64_char(src[i]))
            return -1;
    n = len / 4 * 3 - pad;
    if (n > cap)
        return -1;
    if (len > 0 && EVP_DecodeBlock(tmp, (const unsigned char *)src, (int)len) != (int)(len / 4 * 3))
        return -1;
    memcpy(dst, tmp, n);
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return (int)n;
}

static int hmac256(const uint8_t *key, size_t klen, const void *msg, size_t mlen,
                   uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int olen = 0;

    if (HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &olen) == NULL ||
        olen != SCRAM_KEY_LEN)
        return AUTH_ECRYPTO;
    return AUTH_OK;
}

static int sha256(const uint8_t *msg, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    return SHA256(msg, len, out) != NULL ? AUTH_OK : AUTH_ECRYPTO;
}

/* ClientKey, StoredKey and ServerKey from SaltedPassword (RFC 5802 section 3). */
static int keys_from_salted(const uint8_t salted[SCRAM_KEY_LEN], uint8_t client_key[SCRAM_KEY_LEN],
                            uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    int rc = hmac256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key);

    if (rc == AUTH_OK)
        rc = sha256(client_key, SCRAM_KEY_LEN, stored_key);
    if (rc == AUTH_OK)
        rc = hmac256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
    return rc;
}

static int salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, uint8_t out[SCRAM_KEY_LEN])
{
    size_t plen = strlen(password);

    if (plen > INT_MAX)
        return AUTH_ECRYPTO;
    if (PKCS5_PBKDF2_HMAC(password, (int)plen, salt, (int)salt_len, iterations, EVP_sha256(),
                          SCRAM_KEY_LEN, out) != 1)
        return AUTH_ECRYPTO;
    return AUTH_OK;
}

/* ---- keys and secrets --------------------------------------------------- */

int scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                             int iterations, struct scram_keys *out)
{
    uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    int rc;

    memset(out, 0, sizeof(*out));
    if (password == NULL || salt == NULL || salt_len == 0 || salt_len > SCRAM_SALT_MAX ||
        iterations < 1)
        return AUTH_EWRONGKIND;
    rc = salted_password(password, salt, salt_len, iterations, salted);
    if (rc == AUTH_OK)
        rc = keys_from_salted(salted, client_key, out->stored_key, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (rc != AUTH_OK) {
        OPENSSL_cleanse(out, sizeof(*out));
        return rc;
    }
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->iterations = iterations;
    return AUTH_OK;
}

/* A decimal in 1..INT_MAX, digits only. */
static bool parse_count(const char *s, size_t len, int *out)
{
    long long v = 0;
    size_t i;

    if (len == 0 || len > 10)
        return false;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > INT_MAX)
        return false;
    *out = (int)v;
    return true;
}

/* The text from *p up to delim (or the end when delim is '\0'); moves *p past delim. */
static bool next_field(const char **p, char delim, const char **field, size_t *len)
{
    const char *end = delim ? strchr(*p, delim) : *p + strlen(*p);

    if (end == NULL)
        return false;
    *field = *p;
    *len = (size_t)(end - *p);
    *p = delim ? end + 1 : end;
    return true;
}

int scram_keys_from_secret(const char *secret, struct scram_keys *out)
{
    const char *p, *f[4];
    size_t len[4];
    int salt_len;

    memset(out, 0, sizeof(*out));
    if (secret == NULL || strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
        return AUTH_EWRONGKIND;
    p = secret + strlen(SECRET_PREFIX);
    if (!next_field(&p, ':', &f[0], &len[0]) || !next_field(&p, '$', &f[1], &len[1]) ||
        !next_field(&p, ':', &f[2], &len[2]) || !next_field(&p, '\0', &f[3], &len[3]))
        return AUTH_EWRONGKIND;
    salt_len = b64_decode(f[1], len[1], out->salt, sizeof(out->salt));
    if (!parse_count(f[0], len[0], &out->iterations) || salt_len < 1 ||
        b64_decode(f[2], len[2], out->stored_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN ||
        b64_decode(f[3], len[3], out->server_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN) {
        OPENSSL_cleanse(out, sizeof(*out));
        return AUTH_EWRONGKIND;
    }
    out->salt_len = (size_t)salt_len;
    return AUTH_OK;
}

int scram_keys_format(const struct scram_keys *keys, char *out, size_t outlen)
{
    char salt[B64_LEN(SCRAM_SALT_MAX) + 1], stored[B64_LEN(SCRAM_KEY_LEN) + 1];
    char server[B64_LEN(SCRAM_KEY_LEN) + 1];
    int n;

    if (keys->salt_len == 0 || keys->salt_len > SCRAM_SALT_MAX)
        return AUTH_EWRONGKIND;
    b64_encode(keys->salt, keys->salt_len, salt);
    b64_encode(keys->stored_key, SCRAM_KEY_LEN, stored);
    b64_encode(keys->server_key, SCRAM_KEY_LEN, server);
    n = snprintf(out, outlen, SECRET_PREFIX "%d:%s$%s:%s", keys->iterations, salt, stored, server);
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen > 0)
            OPENSSL_cleanse(out, outlen);
        return AUTH_ENOMEM;
    }
    return AUTH_OK;
}

int scram_keys_mock(const char *user, const uint8_t mock_secret[32], int iterations, struct scram_keys *out)
{
    uint8_t base[SCRAM_KEY_LEN], salt[SCRAM_KEY_LEN] = {0};
    int rc;

    memset(out, 0, sizeof(*out));
    /* Derived, not random: the same unknown user sees the same salt every time. */
    rc = hmac256(mock_secret, 32, user, strlen(user), base);
    if (rc == AUTH_OK)
        rc = hmac256(base, sizeof(base), "salt", 4, salt);
    if (rc == AUTH_OK)
        rc = hmac256(base, sizeof(base), "stored", 6, out->stored_key);
    if (rc == AUTH_OK)
        rc = hmac256(base, sizeof(base), "server", 6, out->server_key);
    memcpy(out->salt, salt, SCRAM_DEFAULT_SALT_LEN);
    out->salt_len = SCRAM_DEFAULT_SALT_LEN;
    out->iterations = iterations > 0 ? iterations : SCRAM_DEFAULT_ITERATIONS;
    out->mock = true;
    OPENSSL_cleanse(base, sizeof(base));
    if (rc != AUTH_OK)
        OPENSSL_cleanse(out, sizeof(*out));
    return rc;
}

/* ---- message parsing ---------------------------------------------------- */

/* The unread rest of a message. */
struct cursor {
    const char *p, *end;
};

/* An attribute "<letter>=<value>"; the value runs to the next ',' or the end. */
struct attr {
    char name;
    const char *val;
    size_t len;
};

static bool at_end(const struct cursor *c)
{
    return c->p >= c->end;
}

/* Reads one attribute; the ',' after it is left for take_comma(). */
static bool read_attr(struct cursor *c, struct attr *a, char *err, size_t errlen)
{
    char buf[8];
    const char *comma;

    if (at_end(c)) {
        weir__set_err(err, errlen, "malformed SCRAM message: attribute expected, but found end of input");
        return false;
    }
    a->name = *c->p;
    if (!((a->name >= 'a' && a->name <= 'z') || (a->name >= 'A' && a->name <= 'Z'))) {
        weir__set_err(err, errlen, "malformed SCRAM message: attribute expected, but found %s",
                show_char(c->p, c->end, buf));
        return false;
    }
    if (c->end - c->p < 2 || c->p[1] != '=') {
        weir__set_err(err, errlen,
                "malformed SCRAM message: expected character \"=\" for attribute \"%c\"", a->name);
        return false;
    }
    a->val = c->p + 2;
    comma = memchr(a->val, ',', (size_t)(c->end - a->val));
    a->len = (size_t)((comma ? comma : c->end) - a->val);
    c->p = a->val + a->len;
    return true;
}

/* Reads the attribute that must come next. */
static bool expect_attr(struct cursor *c, char name, struct attr *a, char *err, size_t errlen)
{
    if (!read_attr(c, a, err, errlen))
        return false;
    if (a->name != name) {
        weir__set_err(err, errlen, "malformed SCRAM message: expected attribute \"%c\" but found \"%c\"",
                name, a->name);
        return false;
    }
    return true;
}

/* Consumes the ',' that separates attributes; read_attr leaves c at one or at the end. */
static bool take_comma(struct cursor *c, char *err, size_t errlen)
{
    if (at_end(c)) {
        weir__set_err(err, errlen, "malformed SCRAM message: attribute expected, but found end of input");
        return false;
    }
    c->p++;
    return true;
}

/* Skips optional extensions up to the end of the message. */
static bool skip_extensions(struct cursor *c, char *err, size_t errlen)
{
    struct attr a;

    while (!at_end(c))
        if (!take_comma(c, err, errlen) || !read_attr(c, &a, err, errlen))
            return false;
    return true;
}

/* Bounds every incoming message before anything looks inside. */
static bool message_ok(const char *msg, size_t len, char *err, size_t errlen)
{
    if (msg == NULL || len == 0) {
        weir__set_err(err, errlen, "malformed SCRAM message: empty message");
        return false;
    }
    if (len > SCRAM_MAX_MESSAGE) {
        weir__set_err(err, errlen, "malformed SCRAM message: message longer than %d bytes",
                SCRAM_MAX_MESSAGE);
        return false;
    }
    if (memchr(msg, '\0', len) != NULL) {
        weir__set_err(err, errlen, "malformed SCRAM message: NUL byte in message");
        return false;
    }
    return true;
}

/* ---- server ------------------------------------------------------------- */

enum server_step { SS_INIT, SS_FIRST_DONE, SS_OK, SS_FAILED };

struct scram_server {
    enum server_step step;
    struct scram_keys keys;
    char fixed_nonce[NONCE_MAX + 1]; /* tests only; empty means random */
    char cbind[B64_LEN(3) + 1];      /* expected "c=" value: base64 of the gs2 header */
    char *nonce;                     /* client nonce + server nonce */
    char *client_first_bare;
    char *server_first;
    uint8_t client_key[SCRAM_KEY_LEN];
};

struct scram_server *scram_server_new(const struct scram_keys *keys)
{
    struct scram_server *s = calloc(1, sizeof(*s));

    if (s != NULL)
        s->keys = *keys;
    return s;
}

int scram_server_set_nonce(struct scram_server *s, const char *nonce)
{
    if (s->step != SS_INIT)
        return AUTH_ESTATE;
    if (!valid_fixed_nonce(nonce))
        return AUTH_EMALFORMED;
    strcpy(s->fixed_nonce, nonce);
    return AUTH_OK;
}

void scram_server_free(struct scram_server *s)
{
    if (s == NULL)
        return;
    free_str(s->nonce);
    free_str(s->client_first_bare);
    free_str(s->server_first);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/* Every error ends the exchange: a client gets one attempt per exchange. */
static int server_fail(struct scram_server *s, int code)
{
    s->step = SS_FAILED;
    return code;
}

/*
 * The GS2 header: "n,," or "y,,". 'p' (channel binding) is refused: weir
 * offers only SCRAM-SHA-256, so a client sending it is confused or under
 * attack. 'y' (client could bind, thinks we cannot) is right: we cannot.
 */
static int parse_gs2_header(struct scram_server *s, struct cursor *c, char *err, size_t errlen)
{
    const char *start = c->p;
    char buf[8];

    if (*c->p == 'p') {
        weir__set_err(err, errlen, "SCRAM channel binding is not supported: the client selected "
                "SCRAM-SHA-256 without channel binding, but the SCRAM message includes "
                "channel binding data");
        return AUTH_EUNSUPPORTED;
    }
    if (*c->p != 'n' && *c->p != 'y') {
        weir__set_err(err, errlen, "malformed SCRAM message: unexpected channel-binding flag %s",
                show_char(c->p, c->end, buf));
        return AUTH_EMALFORMED;
    }
    if (++c->p >= c->end || *c->p != ',') {
        weir__set_err(err, errlen, "malformed SCRAM message: comma expected, but found %s",
                show_char(c->p, c->end, buf));
        return AUTH_EMALFORMED;
    }
    if (++c->p < c->end && *c->p == 'a') {
        weir__set_err(err, errlen, "client uses authorization identity, but it is not supported");
        return AUTH_EUNSUPPORTED;
    }
    if (c->p >= c->end || *c->p != ',') {
        weir__set_err(err, errlen, "malformed SCRAM message: unexpected attribute %s in "
                "client-first-message", show_char(c->p, c->end, buf));
        return AUTH_EMALFORMED;
    }
    c->p++;
    b64_encode((const uint8_t *)start, 3, s->cbind);
    return AUTH_OK;
}

/* client-first-message-bare: "n=<ignored>,r=<nonce>[,extensions]". */
static int parse_client_first_bare(struct cursor *c, struct attr *nonce, char *err, size_t errlen)
{
    struct attr user;

    if (!at_end(c) && *c->p == 'm') {
        weir__set_err(err, errlen, "client requires an unsupported SCRAM extension");
        return AUTH_EUNSUPPORTED;
    }
    if (!expect_attr(c, 'n', &user, err, errlen) || !take_comma(c, err, errlen) ||
        !expect_attr(c, 'r', nonce, err, errlen))
        return AUTH_EMALFORMED;
    if (nonce->len == 0 || !is_printable(nonce->val, nonce->len)) {
        weir__set_err(err, errlen, "non-printable characters in SCRAM nonce");
        return AUTH_EMALFORMED;
    }
    return skip_extensions(c, err, errlen) ? AUTH_OK : AUTH_EMALFORMED;
}

/* Picks the server nonce and writes server-first-message. */
static int make_server_first(struct scram_server *s, const struct attr *cnonce)
{
    uint8_t raw[NONCE_RAW_LEN];
    char snonce[B64_LEN(NONCE_RAW_LEN) + 1], salt[B64_LEN(SCRAM_SALT_MAX) + 1];
    const char *sn = s->fixed_nonce;

    if (sn[0] == '\0') {
        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return AUTH_ECRYPTO;
        b64_encode(raw, sizeof(raw), snonce);
        sn = snonce;
    }
    b64_encode(s->keys.salt, s->keys.salt_len, salt);
    if (asprintf(&s->nonce, "%.*s%s", (int)cnonce->len, cnonce->val, sn) < 0) {
        s->nonce = NULL;
        return AUTH_ENOMEM;
    }
    if (asprintf(&s->server_first, "r=%s,s=%s,i=%d", s->nonce, salt, s->keys.iterations) < 0) {
        s->server_first = NULL;
        return AUTH_ENOMEM;
    }
    return AUTH_OK;
}

int scram_server_first(struct scram_server *s, const char *msg, size_t len, char **reply,
                       char *err, size_t errlen)
{
    struct cursor c = {msg, msg + len};
    struct attr cnonce;
    const char *bare;
    int rc;

    *reply = NULL;
    if (s->step != SS_INIT) {
        weir__set_err(err, errlen, "SCRAM exchange is not expecting client-first-message");
        return server_fail(s, AUTH_ESTATE);
    }
    if (!message_ok(msg, len, err, errlen))
        return server_fail(s, AUTH_EMALFORMED);
    rc = parse_gs2_header(s, &c, err, errlen);
    bare = c.p;
    if (rc == AUTH_OK)
        rc = parse_client_first_bare(&c, &cnonce, err, errlen);
    if (rc == AUTH_OK) {
        s->client_first_bare = strndup(bare, (size_t)(c.end - bare));
        rc = s->client_first_bare ? make_server_first(s, &cnonce) : AUTH_ENOMEM;
    }
    if (rc == AUTH_OK && (*reply = strdup(s->server_first)) == NULL)
        rc = AUTH_ENOMEM;
    if (rc != AUTH_OK) {
        if (rc == AUTH_ENOMEM || rc == AUTH_ECRYPTO)
            weir__set_err(err, errlen, "%s", auth_strerror(rc));
        return server_fail(s, rc);
    }
    s->step = SS_FIRST_DONE;
    return AUTH_OK;
}

/* What client-final-message carries once parsed. */
struct client_final_fields {
    size_t without_proof_len; /* "c=...,r=...[,ext]": the part the proof signs */
    uint8_t proof[SCRAM_KEY_LEN];
};

/* "c=" must repeat our GS2 header; "r=" must be the whole nonce we issued. */
static bool parse_cbind_and_nonce(const struct scram_server *s, struct cursor *c, char *err,
                                  size_t errlen)
{
    struct attr a;

    if (!expect_attr(c, 'c', &a, err, errlen))
        return false;
    if (a.len != strlen(s->cbind) || memcmp(a.val, s->cbind, a.len) != 0) {
        weir__set_err(err, errlen, "unexpected SCRAM channel-binding attribute in client-final-message");
        return false;
    }
    if (!take_comma(c, err, errlen) || !expect_attr(c, 'r', &a, err, errlen))
        return false;
    if (a.len != strlen(s->nonce) || memcmp(a.val, s->nonce, a.len) != 0) {
        weir__set_err(err, errlen, "invalid SCRAM response: nonce does not match");
        return false;
    }
    return true;
}

static bool parse_client_final(const struct scram_server *s, const char *msg, size_t len,
                               struct client_final_fields *f, char *err, size_t errlen)
{
    struct cursor c = {msg, msg + len};
    struct attr a = {0};

    if (!parse_cbind_and_nonce(s, &c, err, errlen))
        return false;
    /* Extensions may come before the proof; the proof is always last. */
    while (a.name != 'p') {
        f->without_proof_len = (size_t)(c.p - msg);
        if (!take_comma(&c, err, errlen) || !read_attr(&c, &a, err, errlen))
            return false;
    }
    if (b64_decode(a.val, a.len, f->proof, sizeof(f->proof)) != SCRAM_KEY_LEN) {
        weir__set_err(err, errlen, "malformed SCRAM message: malformed proof in client-final-message");
        return false;
    }
    if (!at_end(&c)) {
        weir__set_err(err, errlen, "malformed SCRAM message: garbage found at the end of "
                "client-final-message");
        return false;
    }
    return true;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
static char *auth_message(const char *bare, const char *server_first, const char *final,
                          size_t final_len)
{
    char *am;

    if (asprintf(&am, "%s,%s,%.*s", bare, server_first, (int)final_len, final) < 0)
        return NULL;
    return am;
}

/* Recovers ClientKey from the proof and checks it against StoredKey. */
static int check_proof(struct scram_server *s, const char *am, const uint8_t proof[SCRAM_KEY_LEN])
{
    uint8_t sig[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
    int rc, i;

    rc = hmac256(s->keys.stored_key, SCRAM_KEY_LEN, am, strlen(am), sig);
    for (i = 0; rc == AUTH_OK && i < SCRAM_KEY_LEN; i++)
        s->client_key[i] = proof[i] ^ sig[i];
    if (rc == AUTH_OK)
        rc = sha256(s->client_key, SCRAM_KEY_LEN, stored);
    if (rc == AUTH_OK && (CRYPTO_memcmp(stored, s->keys.stored_key, SCRAM_KEY_LEN) != 0 ||
                          s->keys.mock))
        rc = AUTH_EPASSWORD;
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(stored, sizeof(stored));
    return rc;
}

/* server-final-message: "v=" base64(HMAC(ServerKey, AuthMessage)). */
static int make_server_final(const struct scram_server *s, const char *am, char **reply)
{
    uint8_t sig[SCRAM_KEY_LEN];
    char b64[B64_LEN(SCRAM_KEY_LEN) + 1];
    int rc = hmac256(s->keys.server_key, SCRAM_KEY_LEN, am, strlen(am), sig);

    if (rc != AUTH_OK)
        return rc;
    b64_encode(sig, sizeof(sig), b64);
    if (asprintf(reply, "v=%s", b64) < 0) {
        *reply = NULL;
        return AUTH_ENOMEM;
    }
    return AUTH_OK;
}

int scram_server_final(struct scram_server *s, const char *msg, size_t len, char **reply,
                       char *err, size_t errlen)
{
    struct client_final_fields f;
    char *am = NULL;
    int rc;

    *reply = NULL;
    if (s->step != SS_FIRST_DONE) {
        weir__set_err(err, errlen, "SCRAM exchange is not expecting client-final-message");
        return server_fail(s, AUTH_ESTATE);
    }
    if (!message_ok(msg, len, err, errlen) || !parse_client_final(s, msg, len, &f, err, errlen))
        return server_fail(s, AUTH_EMALFORMED);
    am = auth_message(s->client_first_bare, s->server_first, msg, f.without_proof_len);
    rc = am ? check_proof(s, am, f.proof) : AUTH_ENOMEM;
    if (rc == AUTH_OK)
        rc = make_server_final(s, am, reply);
    free_str(am);
    if (rc != AUTH_OK) {
        OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
        weir__set_err(err, errlen, "%s", auth_strerror(rc));
        return server_fail(s, rc);
    }
    s->step = SS_OK;
    return AUTH_OK;
}

int scram_server_client_key(const struct scram_server *s, uint8_t out[SCRAM_KEY_LEN])
{
    if (s->step != SS_OK)
        return AUTH_ESTATE;
    memcpy(out, s->client_key, SCRAM_KEY_LEN);
    return AUTH_OK;
}

/* ---- key cache ---------------------------------------------------------- */

struct cache_entry {
    uint8_t id[SCRAM_KEY_LEN];  /* keyed hash of (user, secret) */
    struct scram_keys keys;
    struct cache_entry *hnext;  /* bucket chain */
    struct cache_entry *prev, *next; /* recency list, newest first */
};

struct scram_cache {
    pthread_mutex_t lock;
    uint8_t id_key[SCRAM_KEY_LEN]; /* random: ids are not a fast hash of the password */
    struct cache_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t max;
    struct cache_entry *newest, *oldest;
    struct scram_cache_stats stats;
};

struct scram_cache *scram_cache_new(size_t max_entries)
{
    struct scram_cache *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->max = max_entries ? max_entries : SCRAM_CACHE_DEFAULT_MAX;
    c->nbuckets = 16;
    while (c->nbuckets < c->max && c->nbuckets < ((size_t)1 << 20))
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL || RAND_bytes(c->id_key, sizeof(c->id_key)) != 1 ||
        pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->buckets);
        free(c);
        return NULL;
    }
    return c;
}

/* id = SHA-256(id_key || len(user) || user || secret); the length keeps pairs apart. */
static int cache_id(const struct scram_cache *c, const char *user, const char *secret, int iterations,
                    uint8_t id[SCRAM_KEY_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint64_t ulen = strlen(user);
    int32_t iter = iterations;
    int ok;

    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, c->id_key, sizeof(c->id_key)) == 1 &&
         EVP_DigestUpdate(ctx, &iter, sizeof(iter)) == 1 &&
         EVP_DigestUpdate(ctx, &ulen, sizeof(ulen)) == 1 &&
         EVP_DigestUpdate(ctx, user, ulen) == 1 &&
         EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 &&
         EVP_DigestFinal_ex(ctx, id, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? AUTH_OK : AUTH_ECRYPTO;
}

static struct cache_entry **bucket_of(const struct scram_cache *c, const uint8_t id[SCRAM_KEY_LEN])
{
    uint64_t h;

    memcpy(&h, id, sizeof(h));
    return &c->buckets[h & (c->nbuckets - 1)];
}

static void lru_unlink(struct scram_cache *c, struct cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->newest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->oldest = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_newest(struct scram_cache *c, struct cache_entry *e)
{
    e->prev = NULL;
    e->next = c->newest;
    if (c->newest)
        c->newest->prev = e;
    c->newest = e;
    if (c->oldest == NULL)
        c->oldest = e;
}

/* Finds id and marks it most recently used. Caller holds the lock. */
static struct cache_entry *cache_find(struct scram_cache *c, const uint8_t id[SCRAM_KEY_LEN])
{
    struct cache_entry *e;

    for (e = *bucket_of(c, id); e != NULL; e = e->hnext)
        if (memcmp(e->id, id, SCRAM_KEY_LEN) == 0) {
            lru_unlink(c, e);
            lru_push_newest(c, e);
            return e;
        }
    return NULL;
}

static void cache_remove(struct scram_cache *c, struct cache_entry *e)
{
    struct cache_entry **pp = bucket_of(c, e->id);

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    OPENSSL_cleanse(e, sizeof(*e));
    free(e);
    c->stats.entries--;
}

/* Adds keys under id, evicting the least recently used past max. Caller holds the lock. */
static void cache_insert(struct scram_cache *c, const uint8_t id[SCRAM_KEY_LEN],
                         const struct scram_keys *keys)
{
    struct cache_entry *e = calloc(1, sizeof(*e)), **b;

    if (e == NULL)
        return; /* the keys are still good, just not remembered */
    memcpy(e->id, id, SCRAM_KEY_LEN);
    e->keys = *keys;
    b = bucket_of(c, id);
    e->hnext = *b;
    *b = e;
    lru_push_newest(c, e);
    c->stats.entries++;
    while (c->stats.entries > c->max) {
        cache_remove(c, c->oldest);
        c->stats.evictions++;
    }
}

static bool cache_lookup(struct scram_cache *c, const uint8_t id[SCRAM_KEY_LEN],
                         struct scram_keys *out)
{
    struct cache_entry *e;

    pthread_mutex_lock(&c->lock);
    e = cache_find(c, id);
    if (e != NULL) {
        *out = e->keys;
        c->stats.hits++;
    }
    pthread_mutex_unlock(&c->lock);
    return e != NULL;
}

/* Derives outside the lock (milliseconds); a racing thread's entry wins so all agree. */
static int cache_derive(struct scram_cache *c, const uint8_t id[SCRAM_KEY_LEN], const char *secret,
                        int iterations, struct scram_keys *out)
{
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
    struct scram_keys keys;
    struct cache_entry *e;
    int rc;

    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return AUTH_ECRYPTO;
    rc = scram_keys_from_password(secret, salt, sizeof(salt), iterations, &keys);
    if (rc != AUTH_OK)
        return rc;
    pthread_mutex_lock(&c->lock);
    c->stats.derivations++;
    e = cache_find(c, id);
    if (e != NULL)
        *out = e->keys;
    else {
        cache_insert(c, id, &keys);
        *out = keys;
    }
    pthread_mutex_unlock(&c->lock);
    OPENSSL_cleanse(&keys, sizeof(keys));
    return AUTH_OK;
}

int scram_cache_get(struct scram_cache *c, const char *user, const char *secret, int iterations,
                    struct scram_keys *out)
{
    uint8_t id[SCRAM_KEY_LEN];
    int rc;

    memset(out, 0, sizeof(*out));
    if (user == NULL || secret == NULL || secret[0] == '\0')
        return AUTH_EWRONGKIND;
    if (scram_keys_from_secret(secret, out) == AUTH_OK)
        return AUTH_OK;
    if (secret_kind_of(secret) != SECRET_PLAIN)
        return AUTH_EWRONGKIND;
    if (iterations < 1)
        iterations = SCRAM_DEFAULT_ITERATIONS;
    rc = cache_id(c, user, secret, iterations, id);
    if (rc == AUTH_OK && !cache_lookup(c, id, out))
        rc = cache_derive(c, id, secret, iterations, out);
    OPENSSL_cleanse(id, sizeof(id));
    return rc;
}

void scram_cache_get_stats(struct scram_cache *c, struct scram_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->lock);
}

void scram_cache_clear(struct scram_cache *c)
{
    pthread_mutex_lock(&c->lock);
    while (c->oldest != NULL)
        cache_remove(c, c->oldest);
    pthread_mutex_unlock(&c->lock);
}

void scram_cache_free(struct scram_cache *c)
{
    if (c == NULL)
        return;
    scram_cache_clear(c);
    pthread_mutex_destroy(&c->lock);
    free(c->buckets);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

/* ---- client ------------------------------------------------------------- */

enum client_step { CS_INIT, CS_FIRST_SENT, CS_FINAL_SENT, CS_OK, CS_FAILED };

struct scram_client {
    enum client_step step;
    char *saslname;  /* user with ',' and '=' escaped; "" when none */
    char *password;  /* NULL when the keys are given */
    uint8_t client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
    char fixed_nonce[NONCE_MAX + 1];
    char *client_first_bare;
    const char *nonce; /* ours, inside client_first_bare */
    uint8_t server_sig[SCRAM_KEY_LEN]; /* what server-final must carry */
};

/* RFC 5802 saslname: ',' becomes "=2C" and '=' becomes "=3D". */
static char *escape_saslname(const char *user)
{
    size_t n = 0, i;
    char *out, *o;

    for (i = 0; user && user[i]; i++)
        n += (user[i] == ',' || user[i] == '=') ? 3 : 1;
    o = out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    for (i = 0; user && user[i]; i++) {
        if (user[i] == ',' || user[i] == '=') {
            memcpy(o, user[i] == ',' ? "=2C" : "=3D", 3);
            o += 3;
        } else
            *o++ = user[i];
    }
    *o = '\0';
    return out;
}

static struct scram_client *client_new(const char *user)
{
    struct scram_client *c = calloc(1, sizeof(*c));

    if (c != NULL && (c->saslname = escape_saslname(user)) == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

struct scram_client *scram_client_new_password(const char *user, const char *password)
{
    struct scram_client *c = client_new(user);

    if (c != NULL && (c->password = strdup(password ? password : "")) == NULL) {
        scram_client_free(c);
        return NULL;
    }
    return c;
}

struct scram_client *scram_client_new_keys(const char *user,
                                           const uint8_t client_key[SCRAM_KEY_LEN],
                                           const uint8_t server_key[SCRAM_KEY_LEN])
{
    struct scram_client *c = client_new(user);

    if (c != NULL) {
        memcpy(c->client_key, client_key, SCRAM_KEY_LEN);
        memcpy(c->server_key, server_key, SCRAM_KEY_LEN);
    }
    return c;
}

int scram_client_set_nonce(struct scram_client *c, const char *nonce)
{
    if (c->step != CS_INIT)
        return AUTH_ESTATE;
    if (!valid_fixed_nonce(nonce))
        return AUTH_EMALFORMED;
    strcpy(c->fixed_nonce, nonce);
    return AUTH_OK;
}

void scram_client_free(struct scram_client *c)
{
    if (c == NULL)
        return;
    free_str(c->saslname);
    free_str(c->password);
    free_str(c->client_first_bare);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

static int client_fail(struct scram_client *c, int code)
{
    c->step = CS_FAILED;
    return code;
}

int scram_client_first(struct scram_client *c, char **msg)
{
    uint8_t raw[NONCE_RAW_LEN];
    char nonce[B64_LEN(NONCE_RAW_LEN) + 1];
    const char *n = c->fixed_nonce;

    *msg = NULL;
    if (c->step != CS_INIT)
        return client_fail(c, AUTH_ESTATE);
    if (n[0] == '\0') {
        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return client_fail(c, AUTH_ECRYPTO);
        b64_encode(raw, sizeof(raw), nonce);
        n = nonce;
    }
    if (asprintf(&c->client_first_bare, "n=%s,r=%s", c->saslname, n) < 0) {
        c->client_first_bare = NULL;
        return client_fail(c, AUTH_ENOMEM);
    }
    c->nonce = strstr(c->client_first_bare, ",r=") + 3;
    if (asprintf(msg, "n,,%s", c->client_first_bare) < 0) {
        *msg = NULL;
        return client_fail(c, AUTH_ENOMEM);
    }
    c->step = CS_FIRST_SENT;
    return AUTH_OK;
}

/* What server-first-message carries. */
struct server_first_fields {
    struct attr nonce;
    uint8_t salt[SCRAM_SALT_MAX];
    int salt_len;
    int iterations;
};

static bool parse_server_first(const struct scram_client *c, const char *msg, size_t len,
                               struct server_first_fields *f, char *err, size_t errlen)
{
    struct cursor cur = {msg, msg + len};
    struct attr s, i;
    size_t our = strlen(c->nonce);

    if (*msg == 'm') {
        weir__set_err(err, errlen, "server requires an unsupported SCRAM extension");
        return false;
    }
    if (!expect_attr(&cur, 'r', &f->nonce, err, errlen) || !take_comma(&cur, err, errlen) ||
        !expect_attr(&cur, 's', &s, err, errlen) || !take_comma(&cur, err, errlen) ||
        !expect_attr(&cur, 'i', &i, err, errlen) || !skip_extensions(&cur, err, errlen))
        return false;
    if (f->nonce.len <= our || memcmp(f->nonce.val, c->nonce, our) != 0 ||
        !is_printable(f->nonce.val, f->nonce.len)) {
        weir__set_err(err, errlen, "invalid SCRAM response (nonce mismatch)");
        return false;
    }
    f->salt_len = b64_decode(s.val, s.len, f->salt, sizeof(f->salt));
    if (f->salt_len < 1) {
        weir__set_err(err, errlen, "malformed SCRAM message (invalid salt)");
        return false;
    }
    if (!parse_count(i.val, i.len, &f->iterations)) {
        weir__set_err(err, errlen, "malformed SCRAM message (invalid iteration count)");
        return false;
    }
    return true;
}

/* Computes ClientProof and the ServerSignature we will expect, for AuthMessage am. */
static int client_proof(struct scram_client *c, const char *am, uint8_t proof[SCRAM_KEY_LEN])
{
    uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN];
    int rc, i;

    rc = sha256(c->client_key, SCRAM_KEY_LEN, stored);
    if (rc == AUTH_OK)
        rc = hmac256(stored, SCRAM_KEY_LEN, am, strlen(am), sig);
    for (i = 0; rc == AUTH_OK && i < SCRAM_KEY_LEN; i++)
        proof[i] = c->client_key[i] ^ sig[i];
    if (rc == AUTH_OK)
        rc = hmac256(c->server_key, SCRAM_KEY_LEN, am, strlen(am), c->server_sig);
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(sig, sizeof(sig));
    return rc;
}

/* With a password, the keys come from the server's salt and iteration count. */
static int client_keys(struct scram_client *c, const struct server_first_fields *f)
{
    uint8_t salted[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
    int rc;

    if (c->password == NULL)
        return AUTH_OK;
    rc = salted_password(c->password, f->salt, (size_t)f->salt_len, f->iterations, salted);
    if (rc == AUTH_OK)
        rc = keys_from_salted(salted, c->client_key, stored, c->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(stored, sizeof(stored));
    return rc;
}

/* Builds "c=biws,r=<nonce>,p=<proof>" once the keys are known. */
static int make_client_final(struct scram_client *c, const char *server_first, size_t len,
                             const struct server_first_fields *f, char **msg)
{
    uint8_t proof[SCRAM_KEY_LEN];
    char b64[B64_LEN(SCRAM_KEY_LEN) + 1], *without_proof = NULL, *am = NULL;
    int rc = AUTH_ENOMEM;

    if (asprintf(&without_proof, "c=biws,r=%.*s", (int)f->nonce.len, f->nonce.val) < 0)
        return AUTH_ENOMEM;
    if (asprintf(&am, "%s,%.*s,%s", c->client_first_bare, (int)len, server_first,
                 without_proof) < 0)
        am = NULL;
    if (am != NULL)
        rc = client_proof(c, am, proof);
    if (rc == AUTH_OK) {
        b64_encode(proof, sizeof(proof), b64);
        if (asprintf(msg, "%s,p=%s", without_proof, b64) < 0) {
            *msg = NULL;
            rc = AUTH_ENOMEM;
        }
    }
    free(without_proof);
    free_str(am);
    return rc;
}

int scram_client_final(struct scram_client *c, const char *server_first, size_t len, char **msg,
                       char *err, size_t errlen)
{
    struct server_first_fields f;
    int rc;

    *msg = NULL;
    if (c->step != CS_FIRST_SENT) {
        weir__set_err(err, errlen, "SCRAM exchange is not expecting server-first-message");
        return client_fail(c, AUTH_ESTATE);
    }
    if (!message_ok(server_first, len, err, errlen) ||
        !parse_server_first(c, server_first, len, &f, err, errlen))
        return client_fail(c, AUTH_ESERVER);
    rc = client_keys(c, &f);
    if (rc == AUTH_OK)
        rc = make_client_final(c, server_first, len, &f, msg);
    OPENSSL_cleanse(&f, sizeof(f));
    if (rc != AUTH_OK) {
        weir__set_err(err, errlen, "%s", auth_strerror(rc));
        return client_fail(c, rc);
    }
    c->step = CS_FINAL_SENT;
    return AUTH_OK;
}

int scram_client_verify(struct scram_client *c, const char *server_final, size_t len, char *err,
                        size_t errlen)
{
    struct cursor cur = {server_final, server_final + len};
    uint8_t sig[SCRAM_KEY_LEN];
    struct attr a;

    if (c->step != CS_FINAL_SENT) {
        weir__set_err(err, errlen, "SCRAM exchange is not expecting server-final-message");
        return client_fail(c, AUTH_ESTATE);
    }
    if (!message_ok(server_final, len, err, errlen) || !read_attr(&cur, &a, err, errlen) ||
        !skip_extensions(&cur, err, errlen))
        return client_fail(c, AUTH_ESERVER);
    if (a.name == 'e') {
        weir__set_err(err, errlen, "server rejected SCRAM authentication: %.*s",
                is_printable(a.val, a.len) ? (int)(a.len > 64 ? 64 : a.len) : 0, a.val);
        return client_fail(c, AUTH_EPASSWORD);
    }
    if (a.name != 'v' || b64_decode(a.val, a.len, sig, sizeof(sig)) != SCRAM_KEY_LEN) {
        weir__set_err(err, errlen, "malformed SCRAM message (invalid server signature)");
        return client_fail(c, AUTH_ESERVER);
    }
    if (CRYPTO_memcmp(sig, c->server_sig, SCRAM_KEY_LEN) != 0) {
        weir__set_err(err, errlen, "incorrect server signature");
        return client_fail(c, AUTH_ESERVER);
    }
    c->step = CS_OK;
    return AUTH_OK;
}
