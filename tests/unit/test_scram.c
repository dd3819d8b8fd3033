/*
 * Unit tests of the SCRAM-SHA-256 and md5 primitives: RFC 7677's published
 * exchange (server and client side), secrets produced by PostgreSQL 15 for
 * known passwords, logins with the right and the wrong password, key
 * pass-through (ClientKey recovered by the server, replayed by the client),
 * malformed, truncated and oversized messages, the key cache (hits,
 * derivations, a changed secret, LRU eviction, threads), mock keys for
 * unknown users, secret classification and md5 vectors.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth.h"

/* RFC 7677 section 3. */
#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096"
#define RFC_CLIENT_FINAL_NP "c=biws,r=" RFC_CNONCE RFC_SNONCE
#define RFC_PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_CLIENT_FINAL RFC_CLIENT_FINAL_NP ",p=" RFC_PROOF
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/*
 * Written by PostgreSQL 15.18 (password_encryption = scram-sha-256) for
 * CREATE ROLE x PASSWORD 'secret' and CREATE ROLE y PASSWORD 'pencil',
 * read back from pg_authid.rolpassword; and md5 for role z, password 'secret'.
 */
#define PG15_SECRET_X                                                                      \
    "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw==$N2RGkVHC9hb9OqhByS+Oe0itfFRGaVDDBtKNnCJF" \
    "NXY=:TOsA0efqmbUINiFAyHgqLhiS5h7XzWTaikpSE2HomnU="
#define PG15_SECRET_Y                                                                      \
    "SCRAM-SHA-256$4096:uJ2bfSSEUx6ApZwwsnqSCQ==$hnVzN3l1JRFvZ0p9lpJjrsNrcsLespjyo5EnmvL5" \
    "O1s=:lWHgooDYlxo8pcXy6KFz4eOfSkaN2zRWlbtESt+6wv0="
#define PG15_MD5_Z "md5d246fccfddef6d33431ccc1f896cc184"

static int sfirst(struct scram_server *s, const char *msg, char **reply, char *err, size_t errlen)
{
    return scram_server_first(s, msg, strlen(msg), reply, err, errlen);
}

static int sfinal(struct scram_server *s, const char *msg, char **reply, char *err, size_t errlen)
{
    return scram_server_final(s, msg, strlen(msg), reply, err, errlen);
}

static void rfc_keys(struct scram_keys *k)
{
    uint8_t salt[18]; /* EVP_DecodeBlock writes the padding as zero bytes */
    int n = EVP_DecodeBlock(salt, (const unsigned char *)RFC_SALT, (int)strlen(RFC_SALT));

    assert_int_equal(n, 18); /* 16 bytes and two '=' decoded as zeros */
    assert_int_equal(scram_keys_from_password("pencil", salt, 16, 4096, k), AUTH_OK);
}

static void pg15_keys(const char *secret, struct scram_keys *k)
{
    assert_int_equal(scram_keys_from_secret(secret, k), AUTH_OK);
}

/* A server that has sent server-first for client nonce "cn" with server nonce "sn". */
static struct scram_server *server_at_final(const struct scram_keys *k, const char *first)
{
    struct scram_server *s = scram_server_new(k);
    char *reply = NULL, err[256];

    assert_non_null(s);
    assert_int_equal(scram_server_set_nonce(s, "sn"), AUTH_OK);
    assert_int_equal(sfirst(s, first, &reply, err, sizeof(err)), AUTH_OK);
    free(reply);
    return s;
}

/*
 * An independent ClientProof for a hand-built exchange: PBKDF2, HMACs and
 * XOR straight from RFC 5802, so tests can send messages our client never
 * writes ('y' flag, extensions). out gets base64 of the proof.
 */
static void manual_proof(const char *password, const struct scram_keys *k, const char *am,
                         char out[64])
{
    uint8_t salted[32], ckey[32], stored[32], sig[32], proof[32];
    unsigned int len;
    int i;

    assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), k->salt,
                                       (int)k->salt_len, k->iterations, EVP_sha256(), 32, salted),
                     1);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ckey, &len);
    SHA256(ckey, 32, stored);
    HMAC(EVP_sha256(), stored, 32, (const unsigned char *)am, strlen(am), sig, &len);
    for (i = 0; i < 32; i++)
        proof[i] = ckey[i] ^ sig[i];
    EVP_EncodeBlock((unsigned char *)out, proof, 32);
}

/* Runs a whole exchange between our client and our server. */
static int login(struct scram_client *c, const struct scram_keys *k, struct scram_server **out)
{
    struct scram_server *s = scram_server_new(k);
    char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL, err[256] = "";
    int rc;

    assert_non_null(s);
    assert_int_equal(scram_client_first(c, &m1), AUTH_OK);
    assert_int_equal(sfirst(s, m1, &m2, err, sizeof(err)), AUTH_OK);
    assert_int_equal(scram_client_final(c, m2, strlen(m2), &m3, err, sizeof(err)), AUTH_OK);
    rc = sfinal(s, m3, &m4, err, sizeof(err));
    if (rc == AUTH_OK)
        assert_int_equal(scram_client_verify(c, m4, strlen(m4), err, sizeof(err)), AUTH_OK);
    else
        assert_null(m4);
    free(m1);
    free(m2);
    free(m3);
    free(m4);
    if (out)
        *out = s;
    else
        scram_server_free(s);
    return rc;
}

/* ---- RFC 7677 ----------------------------------------------------------- */

static void test_rfc7677_server(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    char *reply = NULL, err[256] = "";
    uint8_t ckey[32], stored[32];

    (void)state;
    rfc_keys(&k);
    s = scram_server_new(&k);
    assert_int_equal(scram_server_set_nonce(s, RFC_SNONCE), AUTH_OK);
    assert_int_equal(sfirst(s, RFC_CLIENT_FIRST, &reply, err, sizeof(err)), AUTH_OK);
    assert_string_equal(reply, RFC_SERVER_FIRST);
    free(reply);
    assert_int_equal(scram_server_client_key(s, ckey), AUTH_ESTATE);
    assert_int_equal(sfinal(s, RFC_CLIENT_FINAL, &reply, err, sizeof(err)), AUTH_OK);
    assert_string_equal(reply, RFC_SERVER_FINAL);
    free(reply);
    /* The recovered ClientKey hashes to StoredKey. */
    assert_int_equal(scram_server_client_key(s, ckey), AUTH_OK);
    SHA256(ckey, 32, stored);
    assert_memory_equal(stored, k.stored_key, 32);
    /* One exchange per object. */
    assert_int_equal(sfinal(s, RFC_CLIENT_FINAL, &reply, err, sizeof(err)), AUTH_ESTATE);
    assert_null(reply);
    scram_server_free(s);
}

static void test_rfc7677_client(void **state)
{
    struct scram_client *c = scram_client_new_password("user", "pencil");
    char *msg = NULL, err[256] = "";

    (void)state;
    assert_int_equal(scram_client_set_nonce(c, RFC_CNONCE), AUTH_OK);
    assert_int_equal(scram_client_first(c, &msg), AUTH_OK);
    assert_string_equal(msg, RFC_CLIENT_FIRST);
    free(msg);
    assert_int_equal(scram_client_final(c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &msg, err,
                                        sizeof(err)),
                     AUTH_OK);
    assert_string_equal(msg, RFC_CLIENT_FINAL);
    free(msg);
    assert_int_equal(scram_client_verify(c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err,
                                         sizeof(err)),
                     AUTH_OK);
    scram_client_free(c);
}

static void test_rfc7677_client_rejects_forged_server(void **state)
{
    static const char forged[] = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    struct scram_client *c = scram_client_new_password("user", "pencil");
    char *msg = NULL, err[256] = "";

    (void)state;
    assert_int_equal(scram_client_set_nonce(c, RFC_CNONCE), AUTH_OK);
    assert_int_equal(scram_client_first(c, &msg), AUTH_OK);
    free(msg);
    assert_int_equal(scram_client_final(c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &msg, err,
                                        sizeof(err)),
                     AUTH_OK);
    free(msg);
    assert_int_equal(scram_client_verify(c, forged, strlen(forged), err, sizeof(err)),
                     AUTH_ESERVER);
    assert_non_null(strstr(err, "server signature"));
    scram_client_free(c);
}

/* ---- PostgreSQL 15 secrets ---------------------------------------------- */

static void test_pg15_secret_matches_derivation(void **state)
{
    struct scram_keys parsed, derived;
    char formatted[256];

    (void)state;
    pg15_keys(PG15_SECRET_X, &parsed);
    assert_int_equal(parsed.iterations, 4096);
    assert_int_equal(parsed.salt_len, 16);
    assert_false(parsed.mock);
    assert_int_equal(
        scram_keys_from_password("secret", parsed.salt, parsed.salt_len, 4096, &derived), AUTH_OK);
    assert_memory_equal(derived.stored_key, parsed.stored_key, 32);
    assert_memory_equal(derived.server_key, parsed.server_key, 32);
    assert_int_equal(scram_keys_format(&derived, formatted, sizeof(formatted)), AUTH_OK);
    assert_string_equal(formatted, PG15_SECRET_X);
    assert_int_equal(scram_keys_format(&derived, formatted, 20), AUTH_ENOMEM);
}

static void test_pg15_login_right_password(void **state)
{
    const char *secrets[] = {PG15_SECRET_X, PG15_SECRET_Y}, *passwords[] = {"secret", "pencil"};
    struct scram_keys k;
    int i;

    (void)state;
    for (i = 0; i < 2; i++) {
        struct scram_client *c = scram_client_new_password(NULL, passwords[i]);
        pg15_keys(secrets[i], &k);
        assert_int_equal(login(c, &k, NULL), AUTH_OK);
        scram_client_free(c);
    }
}

static void test_pg15_login_wrong_password(void **state)
{
    const char *wrong[] = {"Secret", "secret ", "", "pencil"};
    struct scram_keys k;
    struct scram_server *s;
    uint8_t ckey[32];
    size_t i;

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    for (i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        struct scram_client *c = scram_client_new_password(NULL, wrong[i]);
        assert_int_equal(login(c, &k, &s), AUTH_EPASSWORD);
        assert_int_equal(scram_server_client_key(s, ckey), AUTH_ESTATE);
        scram_server_free(s);
        scram_client_free(c);
    }
}

static void test_pg15_wrong_password_message(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    struct scram_client *c = scram_client_new_password(NULL, "nope");
    char *m1, *m2, *m3, *m4 = NULL, err[256] = "";

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    s = scram_server_new(&k);
    assert_int_equal(scram_client_first(c, &m1), AUTH_OK);
    assert_int_equal(sfirst(s, m1, &m2, err, sizeof(err)), AUTH_OK);
    assert_int_equal(scram_client_final(c, m2, strlen(m2), &m3, err, sizeof(err)), AUTH_OK);
    assert_int_equal(sfinal(s, m3, &m4, err, sizeof(err)), AUTH_EPASSWORD);
    assert_null(m4);
    assert_string_equal(err, "password authentication failed");
    free(m1);
    free(m2);
    free(m3);
    scram_server_free(s);
    scram_client_free(c);
}

/* The server recovers ClientKey; a client holding it and ServerKey logs in again. */
static void test_client_key_pass_through(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    struct scram_client *c = scram_client_new_password(NULL, "secret"), *relay;
    uint8_t ckey[32];

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    assert_int_equal(login(c, &k, &s), AUTH_OK);
    assert_int_equal(scram_server_client_key(s, ckey), AUTH_OK);
    relay = scram_client_new_keys("ignored", ckey, k.server_key);
    assert_int_equal(login(relay, &k, NULL), AUTH_OK);
    scram_client_free(relay);
    /* A wrong ClientKey fails at the server; a wrong ServerKey fails at the client. */
    ckey[0] ^= 1;
    relay = scram_client_new_keys(NULL, ckey, k.server_key);
    assert_int_equal(login(relay, &k, NULL), AUTH_EPASSWORD);
    scram_client_free(relay);
    scram_server_free(s);
    scram_client_free(c);
}

static void test_client_detects_wrong_server_key(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    struct scram_client *c;
    uint8_t ckey[32], bad_server_key[32];
    char *m1, *m2, *m3, *m4, err[256];

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    c = scram_client_new_password(NULL, "secret");
    assert_int_equal(login(c, &k, &s), AUTH_OK);
    assert_int_equal(scram_server_client_key(s, ckey), AUTH_OK);
    scram_server_free(s);
    scram_client_free(c);

    memcpy(bad_server_key, k.server_key, 32);
    bad_server_key[31] ^= 0x80;
    c = scram_client_new_keys(NULL, ckey, bad_server_key);
    s = scram_server_new(&k);
    assert_int_equal(scram_client_first(c, &m1), AUTH_OK);
    assert_int_equal(sfirst(s, m1, &m2, err, sizeof(err)), AUTH_OK);
    assert_int_equal(scram_client_final(c, m2, strlen(m2), &m3, err, sizeof(err)), AUTH_OK);
    assert_int_equal(sfinal(s, m3, &m4, err, sizeof(err)), AUTH_OK);
    assert_int_equal(scram_client_verify(c, m4, strlen(m4), err, sizeof(err)), AUTH_ESERVER);
    free(m1);
    free(m2);
    free(m3);
    free(m4);
    scram_server_free(s);
    scram_client_free(c);
}

/* ---- hand-built exchanges ----------------------------------------------- */

/* 'y' (client could bind, thinks we cannot) is accepted; c= must then be "eSws". */
static void test_gs2_y_flag(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    char *reply = NULL, err[256] = "", proof[64], am[512], final[512];

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    s = server_at_final(&k, "y,,n=,r=cn");
    snprintf(am, sizeof(am), "n=,r=cn,r=cnsn,s=ux0SfIOezCy9220YPYxMBw==,i=4096,c=eSws,r=cnsn");
    manual_proof("secret", &k, am, proof);
    snprintf(final, sizeof(final), "c=eSws,r=cnsn,p=%s", proof);
    assert_int_equal(sfinal(s, final, &reply, err, sizeof(err)), AUTH_OK);
    assert_non_null(reply);
    free(reply);
    scram_server_free(s);

    /* c=biws after a 'y' header is a channel-binding mismatch. */
    s = server_at_final(&k, "y,,n=,r=cn");
    snprintf(final, sizeof(final), "c=biws,r=cnsn,p=%s", proof);
    assert_int_equal(sfinal(s, final, &reply, err, sizeof(err)), AUTH_EMALFORMED);
    assert_non_null(strstr(err, "channel-binding"));
    scram_server_free(s);
}

/* Extensions after the nonce are ignored but covered by the proof. */
static void test_extensions_ignored(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    char *reply = NULL, err[256] = "", proof[64], am[512], final[512];

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    s = server_at_final(&k, "n,,n=someone,r=cn,x=client-ext");
    snprintf(am, sizeof(am), "n=someone,r=cn,x=client-ext,r=cnsn,s=ux0SfIOezCy9220YPYxMBw==,"
                             "i=4096,c=biws,r=cnsn,y=final-ext");
    manual_proof("secret", &k, am, proof);
    snprintf(final, sizeof(final), "c=biws,r=cnsn,y=final-ext,p=%s", proof);
    assert_int_equal(sfinal(s, final, &reply, err, sizeof(err)), AUTH_OK);
    free(reply);
    scram_server_free(s);

    /* The same proof without the extension it signed is wrong. */
    s = server_at_final(&k, "n,,n=someone,r=cn,x=client-ext");
    snprintf(final, sizeof(final), "c=biws,r=cnsn,p=%s", proof);
    assert_int_equal(sfinal(s, final, &reply, err, sizeof(err)), AUTH_EPASSWORD);
    scram_server_free(s);
}

/* ---- malformed client messages ------------------------------------------ */

struct bad_case {
    const char *msg;
    int rc;
    const char *err_part;
};

static void test_malformed_client_first(void **state)
{
    static const struct bad_case cases[] = {
        {"p=tls-server-end-point,,n=,r=abc", AUTH_EUNSUPPORTED, "channel binding is not supported"},
        {"p", AUTH_EUNSUPPORTED, "channel binding"},
        {"x,,n=,r=abc", AUTH_EMALFORMED, "channel-binding flag"},
        {"n", AUTH_EMALFORMED, "comma expected"},
        {"n;,n=,r=abc", AUTH_EMALFORMED, "comma expected"},
        {"n,", AUTH_EMALFORMED, "unexpected attribute"},
        {"n,,", AUTH_EMALFORMED, "end of input"},
        {"n,a=bob,n=,r=abc", AUTH_EUNSUPPORTED, "authorization identity"},
        {"n,x,n=,r=abc", AUTH_EMALFORMED, "unexpected attribute"},
        {"n,,m=ext,n=,r=abc", AUTH_EUNSUPPORTED, "extension"},
        {"n,,r=abc", AUTH_EMALFORMED, "expected attribute \"n\""},
        {"n,,n=", AUTH_EMALFORMED, "end of input"},
        {"n,,n=,", AUTH_EMALFORMED, "end of input"},
        {"n,,n=,r", AUTH_EMALFORMED, "\"=\""},
        {"n,,n=,r=", AUTH_EMALFORMED, "nonce"},
        {"n,,n=,x=abc", AUTH_EMALFORMED, "expected attribute \"r\""},
        {"n,,n=,r=ab c", AUTH_EMALFORMED, "non-printable"},
        {"n,,n=,r=ab\x7f", AUTH_EMALFORMED, "non-printable"},
        {"n,,n=,r=abc,", AUTH_EMALFORMED, "end of input"},
        {"n,,n=,r=abc,=x", AUTH_EMALFORMED, "attribute expected"},
        {"n,,n=,r=abc,1=x", AUTH_EMALFORMED, "attribute expected"},
        {"n,,n=,r=abc,xx", AUTH_EMALFORMED, "\"=\""},
    };
    struct scram_keys k;
    size_t i;

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_server *s = scram_server_new(&k);
        char *reply = (char *)1, err[256] = "";
        print_message("client-first %s\n", cases[i].msg);
        assert_int_equal(sfirst(s, cases[i].msg, &reply, err, sizeof(err)), cases[i].rc);
        assert_null(reply);
        assert_non_null(strstr(err, cases[i].err_part));
        /* A failed exchange stays failed. */
        assert_int_equal(sfinal(s, "c=biws,r=abc,p=AAAA", &reply, err, sizeof(err)), AUTH_ESTATE);
        scram_server_free(s);
    }
}

static void test_client_first_accepted_forms(void **state)
{
    static const char *const ok[] = {
        "n,,n=,r=abc",               /* libpq */
        "y,,n=,r=abc",               /* client that could bind */
        "n,,n=*,r=abc",              /* JDBC */
        "n,,n=user=2Cname,r=a!b~c",  /* escaped user, odd nonce characters */
        "n,,n=,r=abc,x=ext,y=",      /* extensions */
    };
    struct scram_keys k;
    size_t i;

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct scram_server *s = scram_server_new(&k);
        char *reply = NULL, err[256] = "";
        assert_int_equal(sfirst(s, ok[i], &reply, err, sizeof(err)), AUTH_OK);
        assert_int_equal(strncmp(reply, "r=abc", 5) == 0 || strncmp(reply, "r=a!b~c", 7) == 0, 1);
        assert_non_null(strstr(reply, ",s=ux0SfIOezCy9220YPYxMBw==,i=4096"));
        free(reply);
        scram_server_free(s);
    }
}

static void test_server_nonce_is_random(void **state)
{
    struct scram_keys k;
    char *r1 = NULL, *r2 = NULL, err[256];
    struct scram_server *s1, *s2;

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    s1 = scram_server_new(&k);
    s2 = scram_server_new(&k);
    assert_int_equal(sfirst(s1, "n,,n=,r=abc", &r1, err, sizeof(err)), AUTH_OK);
    assert_int_equal(sfirst(s2, "n,,n=,r=abc", &r2, err, sizeof(err)), AUTH_OK);
    /* "r=abc" + 24 base64 characters (18 random bytes). */
    assert_int_equal(strchr(r1, ',') - r1, 5 + 24);
    assert_string_not_equal(r1, r2);
    free(r1);
    free(r2);
    scram_server_free(s1);
    scram_server_free(s2);
}

static void test_malformed_client_final(void **state)
{
    static const struct bad_case cases[] = {
        {"r=cnsn,p=" RFC_PROOF, AUTH_EMALFORMED, "expected attribute \"c\""},
        {"c=eSws,r=cnsn,p=" RFC_PROOF, AUTH_EMALFORMED, "channel-binding"},
        {"c=b!ws,r=cnsn,p=" RFC_PROOF, AUTH_EMALFORMED, "channel-binding"},
        {"c=biws=,r=cnsn,p=" RFC_PROOF, AUTH_EMALFORMED, "channel-binding"},
        {"c=,r=cnsn,p=" RFC_PROOF, AUTH_EMALFORMED, "channel-binding"},
        {"c=biws,r=cn,p=" RFC_PROOF, AUTH_EMALFORMED, "nonce does not match"},
        {"c=biws,r=cnsnX,p=" RFC_PROOF, AUTH_EMALFORMED, "nonce does not match"},
        {"c=biws,r=xxxx,p=" RFC_PROOF, AUTH_EMALFORMED, "nonce does not match"},
        {"c=biws,p=" RFC_PROOF, AUTH_EMALFORMED, "expected attribute \"r\""},
        {"c=biws,r=cnsn", AUTH_EMALFORMED, "end of input"},
        {"c=biws,r=cnsn,", AUTH_EMALFORMED, "end of input"},
        {"c=biws,r=cnsn,x=1", AUTH_EMALFORMED, "end of input"},
        {"c=biws,r=cnsn,p=", AUTH_EMALFORMED, "malformed proof"},
        {"c=biws,r=cnsn,p=!!!!", AUTH_EMALFORMED, "malformed proof"},
        {"c=biws,r=cnsn,p=AAAA", AUTH_EMALFORMED, "malformed proof"},
        {"c=biws,r=cnsn,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", AUTH_EMALFORMED,
         "malformed proof"},
        {"c=biws,r=cnsn,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ==", AUTH_EMALFORMED,
         "malformed proof"},
        {"c=biws,r=cnsn,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=AAAA", AUTH_EMALFORMED,
         "malformed proof"},
        {"c=biws,r=cnsn,p=dHzbZapWIk4jUhN+Ute9yt g9zjfMHgsqmmiz7AndVQ=", AUTH_EMALFORMED,
         "malformed proof"},
        {"c=biws,r=cnsn,p=" RFC_PROOF ",", AUTH_EMALFORMED, "garbage"},
        {"c=biws,r=cnsn,p=" RFC_PROOF ",x=1", AUTH_EMALFORMED, "garbage"},
        /* Well-formed, wrong proof: a password failure, not a protocol one. */
        {"c=biws,r=cnsn,p=" RFC_PROOF, AUTH_EPASSWORD, "password authentication failed"},
    };
    struct scram_keys k;
    size_t i;

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_server *s = server_at_final(&k, "n,,n=,r=cn");
        char *reply = (char *)1, err[256] = "";
        print_message("client-final %s\n", cases[i].msg);
        assert_int_equal(sfinal(s, cases[i].msg, &reply, err, sizeof(err)), cases[i].rc);
        assert_null(reply);
        assert_non_null(strstr(err, cases[i].err_part));
        scram_server_free(s);
    }
}

static void test_nul_and_oversized_messages(void **state)
{
    static const char with_nul[] = "n,,n=,r=ab\0cd";
    struct scram_keys k;
    struct scram_server *s;
    char *huge, *reply = NULL, err[256];

    (void)state;
    pg15_keys(PG15_SECRET_X, &k);
    s = scram_server_new(&k);
    assert_int_equal(
        scram_server_first(s, with_nul, sizeof(with_nul) - 1, &reply, err, sizeof(err)),
        AUTH_EMALFORMED);
    assert_non_null(strstr(err, "NUL"));
    scram_server_free(s);

    s = scram_server_new(&k);
    assert_int_equal(scram_server_first(s, "", 0, &reply, err, sizeof(err)), AUTH_EMALFORMED);
    scram_server_free(s);

    huge = malloc(1 << 20);
    memcpy(huge, "n,,n=,r=", 8);
    memset(huge + 8, 'a', (1 << 20) - 8);
    s = scram_server_new(&k);
    assert_int_equal(scram_server_first(s, huge, 1 << 20, &reply, err, sizeof(err)),
                     AUTH_EMALFORMED);
    assert_non_null(strstr(err, "longer than"));
    scram_server_free(s);
    /* Just within the limit is fine. */
    s = scram_server_new(&k);
    assert_int_equal(scram_server_first(s, huge, SCRAM_MAX_MESSAGE, &reply, err, sizeof(err)),
                     AUTH_OK);
    free(reply);
    /* And an oversized final is refused too. */
    memcpy(huge, "c=biws,r=", 9);
    assert_int_equal(scram_server_final(s, huge, SCRAM_MAX_MESSAGE + 1, &reply, err, sizeof(err)),
                     AUTH_EMALFORMED);
    scram_server_free(s);
    free(huge);
}

/* Every prefix of valid messages (and every single-byte corruption) errs or passes cleanly. */
static void test_truncated_and_corrupted(void **state)
{
    struct scram_keys k;
    size_t len, i;
    char buf[256];

    (void)state;
    rfc_keys(&k);
    for (len = 0; len <= strlen(RFC_CLIENT_FIRST); len++) {
        struct scram_server *s = scram_server_new(&k);
        char *reply = NULL, err[256];
        /* Exactly sized heap copies let ASan catch any over-read. */
        char *m = malloc(len ? len : 1);
        memcpy(m, RFC_CLIENT_FIRST, len);
        int rc = scram_server_first(s, m, len, &reply, err, sizeof(err));
        assert_true(rc == AUTH_OK || rc == AUTH_EMALFORMED);
        assert_true((rc == AUTH_OK) == (reply != NULL));
        free(reply);
        free(m);
        scram_server_free(s);
    }
    for (len = 0; len <= strlen(RFC_CLIENT_FINAL); len++) {
        struct scram_server *s = server_at_final(&k, "n,,n=user,r=" RFC_CNONCE);
        char *reply = NULL, err[256];
        char *m = malloc(len ? len : 1);
        memcpy(m, RFC_CLIENT_FINAL, len);
        int rc = scram_server_final(s, m, len, &reply, err, sizeof(err));
        assert_int_not_equal(rc, AUTH_OK); /* the nonce here is "sn", not the RFC's */
        assert_null(reply);
        free(m);
        scram_server_free(s);
    }
    for (i = 0; i < strlen(RFC_CLIENT_FINAL); i++) {
        struct scram_server *s = scram_server_new(&k);
        char *reply = NULL, err[256];
        assert_int_equal(scram_server_set_nonce(s, RFC_SNONCE), AUTH_OK);
        assert_int_equal(sfirst(s, RFC_CLIENT_FIRST, &reply, err, sizeof(err)), AUTH_OK);
        free(reply);
        reply = NULL;
        strcpy(buf, RFC_CLIENT_FINAL);
        buf[i] ^= 0x01;
        assert_int_not_equal(sfinal(s, buf, &reply, err, sizeof(err)), AUTH_OK);
        assert_null(reply);
        scram_server_free(s);
    }
}

static void test_out_of_order_and_nonce_hook(void **state)
{
    struct scram_keys k;
    struct scram_server *s;
    struct scram_client *c;
    char *reply = NULL, err[256];

    (void)state;
    rfc_keys(&k);
    s = scram_server_new(&k);
    assert_int_equal(sfinal(s, RFC_CLIENT_FINAL, &reply, err, sizeof(err)), AUTH_ESTATE);
    scram_server_free(s);

    s = scram_server_new(&k);
    assert_int_equal(scram_server_set_nonce(s, ""), AUTH_EMALFORMED);
    assert_int_equal(scram_server_set_nonce(s, "a,b"), AUTH_EMALFORMED);
    assert_int_equal(scram_server_set_nonce(s, "a b"), AUTH_EMALFORMED);
    assert_int_equal(sfirst(s, RFC_CLIENT_FIRST, &reply, err, sizeof(err)), AUTH_OK);
    free(reply);
    assert_int_equal(scram_server_set_nonce(s, "late"), AUTH_ESTATE);
    assert_int_equal(sfirst(s, RFC_CLIENT_FIRST, &reply, err, sizeof(err)), AUTH_ESTATE);
    scram_server_free(s);
    scram_server_free(NULL);

    c = scram_client_new_password(NULL, "x");
    assert_int_equal(scram_client_final(c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &reply, err,
                                        sizeof(err)),
                     AUTH_ESTATE);
    scram_client_free(c);
    c = scram_client_new_password(NULL, "x");
    assert_int_equal(scram_client_verify(c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err,
                                         sizeof(err)),
                     AUTH_ESTATE);
    scram_client_free(c);
    scram_client_free(NULL);
}

/* ---- client against bad servers ----------------------------------------- */

static void test_client_rejects_bad_server_first(void **state)
{
    static const uint8_t any_key[32] = {42};
    static const struct bad_case cases[] = {
        {"r=" RFC_CNONCE ",s=" RFC_SALT ",i=4096", AUTH_ESERVER, "nonce mismatch"},
        {"r=XOprNGfwEbeRWgbNEkqOabc,s=" RFC_SALT ",i=4096", AUTH_ESERVER, "nonce mismatch"},
        {"r=rOprNG,s=" RFC_SALT ",i=4096", AUTH_ESERVER, "nonce mismatch"},
        {"r=" RFC_CNONCE "abc,i=4096", AUTH_ESERVER, "expected attribute \"s\""},
        {"r=" RFC_CNONCE "abc,s=,i=4096", AUTH_ESERVER, "salt"},
        {"r=" RFC_CNONCE "abc,s=W22Z!J0SNY7soEsUEjb6gQ==,i=4096", AUTH_ESERVER, "salt"},
        {"r=" RFC_CNONCE "abc,s=" RFC_SALT ",i=0", AUTH_ESERVER, "iteration"},
        {"r=" RFC_CNONCE "abc,s=" RFC_SALT ",i=-1", AUTH_ESERVER, "iteration"},
        {"r=" RFC_CNONCE "abc,s=" RFC_SALT ",i=4096x", AUTH_ESERVER, "iteration"},
        {"r=" RFC_CNONCE "abc,s=" RFC_SALT ",i=99999999999", AUTH_ESERVER, "iteration"},
        {"r=" RFC_CNONCE "abc,s=" RFC_SALT, AUTH_ESERVER, "end of input"},
        {"r=" RFC_CNONCE "abc,s=" RFC_SALT ",i=4096,", AUTH_ESERVER, "end of input"},
        {"m=x,r=" RFC_CNONCE "abc,s=" RFC_SALT ",i=4096", AUTH_ESERVER, "extension"},
        {"e=other-error", AUTH_ESERVER, "expected attribute \"r\""},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_client *c = scram_client_new_keys(NULL, any_key, any_key);
        char *msg = NULL, err[256] = "";
        print_message("server-first %s\n", cases[i].msg);
        assert_int_equal(scram_client_set_nonce(c, RFC_CNONCE), AUTH_OK);
        assert_int_equal(scram_client_first(c, &msg), AUTH_OK);
        free(msg);
        msg = (char *)1;
        assert_int_equal(scram_client_final(c, cases[i].msg, strlen(cases[i].msg), &msg, err,
                                            sizeof(err)),
                         cases[i].rc);
        assert_null(msg);
        assert_non_null(strstr(err, cases[i].err_part));
        scram_client_free(c);
    }
}

static void test_client_server_final_errors(void **state)
{
    static const struct bad_case cases[] = {
        {"e=invalid-proof", AUTH_EPASSWORD, "invalid-proof"},
        {"v=", AUTH_ESERVER, "server signature"},
        {"v=AAAA", AUTH_ESERVER, "server signature"},
        {"x=1", AUTH_ESERVER, "server signature"},
        {"v", AUTH_ESERVER, "\"=\""},
        {RFC_SERVER_FINAL ",", AUTH_ESERVER, "end of input"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_client *c = scram_client_new_password("user", "pencil");
        char *msg = NULL, err[256] = "";
        assert_int_equal(scram_client_set_nonce(c, RFC_CNONCE), AUTH_OK);
        assert_int_equal(scram_client_first(c, &msg), AUTH_OK);
        free(msg);
        assert_int_equal(scram_client_final(c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &msg,
                                            err, sizeof(err)),
                         AUTH_OK);
        free(msg);
        assert_int_equal(
            scram_client_verify(c, cases[i].msg, strlen(cases[i].msg), err, sizeof(err)),
            cases[i].rc);
        assert_non_null(strstr(err, cases[i].err_part));
        /* Failed is final. */
        assert_int_equal(scram_client_verify(c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err,
                                             sizeof(err)),
                         AUTH_ESTATE);
        scram_client_free(c);
    }
}

static void test_client_escapes_user(void **state)
{
    struct scram_client *c = scram_client_new_password("a,b=c", "pw");
    char *msg = NULL;

    (void)state;
    assert_int_equal(scram_client_set_nonce(c, "N"), AUTH_OK);
    assert_int_equal(scram_client_first(c, &msg), AUTH_OK);
    assert_string_equal(msg, "n,,n=a=2Cb=3Dc,r=N");
    free(msg);
    scram_client_free(c);
}

/* ---- secrets ------------------------------------------------------------ */

static void test_secret_kinds(void **state)
{
    (void)state;
    assert_int_equal(secret_kind_of(""), SECRET_NONE);
    assert_int_equal(secret_kind_of(NULL), SECRET_NONE);
    assert_int_equal(secret_kind_of("secret"), SECRET_PLAIN);
    assert_int_equal(secret_kind_of(PG15_MD5_Z), SECRET_MD5);
    assert_int_equal(secret_kind_of("md5D246FCCFDDEF6D33431CCC1F896CC184"), SECRET_PLAIN);
    assert_int_equal(secret_kind_of("md5d246fccfddef6d33431ccc1f896cc18"), SECRET_PLAIN);
    assert_int_equal(secret_kind_of("md5d246fccfddef6d33431ccc1f896cc1845"), SECRET_PLAIN);
    assert_int_equal(secret_kind_of("md5d246fccfddef6d33431ccc1f896cc18g"), SECRET_PLAIN);
    assert_int_equal(secret_kind_of(PG15_SECRET_X), SECRET_SCRAM);
    assert_int_equal(secret_kind_of("SCRAM-SHA-256$4096:abc$x:y"), SECRET_PLAIN);
}

static void test_malformed_scram_secrets(void **state)
{
#define KEYS                                                                               \
    "$N2RGkVHC9hb9OqhByS+Oe0itfFRGaVDDBtKNnCJFNXY=:TOsA0efqmbUINiFAyHgqLhiS5h7XzWTaikpSE2HomnU="
    static const char *const bad[] = {
        "SCRAM-SHA-256$0:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$-1:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$+4096:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$4096x:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$99999999999:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$4096:" KEYS,
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw=" KEYS,
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw===" KEYS,
        "SCRAM-SHA-256$4096:ux0SfIOe zCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$4096 ux0SfIOezCy9220YPYxMBw==" KEYS,
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw==$N2RGkVHC9hb9OqhByS+Oe0itfFRGaVDDBtKNnCJFNXY=",
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw==$N2RGkVHC9hb9OqhByS+Oe0itfFRGaVDDBtKNnCJF:"
        "TOsA0efqmbUINiFAyHgqLhiS5h7XzWTaikpSE2HomnU=",
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw==" KEYS "AAAA",
        "SCRAM-SHA-256$4096:ux0SfIOezCy9220YPYxMBw==" KEYS ":",
        "SCRAM-SHA-1$4096:ux0SfIOezCy9220YPYxMBw==" KEYS,
        "scram-sha-256$4096:ux0SfIOezCy9220YPYxMBw==" KEYS,
        /* A 66-byte salt: over SCRAM_SALT_MAX. */
        "SCRAM-SHA-256$4096:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
        "QUFBQUFBQUFBQUFBQUFBQUFB" KEYS,
        "SCRAM-SHA-256$",
        "",
    };
    struct scram_keys k;
    size_t i;

    (void)state;
    assert_int_equal(scram_keys_from_secret("SCRAM-SHA-256$1:ux0SfIOezCy9220YPYxMBw==" KEYS, &k),
                     AUTH_OK);
    assert_int_equal(k.iterations, 1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("secret %s\n", bad[i]);
        memset(&k, 0x55, sizeof(k));
        assert_int_equal(scram_keys_from_secret(bad[i], &k), AUTH_EWRONGKIND);
        assert_int_equal(k.iterations, 0);
        assert_int_equal(k.salt_len, 0);
    }
#undef KEYS
}

static void test_keys_from_password_limits(void **state)
{
    uint8_t salt[SCRAM_SALT_MAX + 1] = {0};
    struct scram_keys k;

    (void)state;
    assert_int_equal(scram_keys_from_password("pw", salt, 0, 4096, &k), AUTH_EWRONGKIND);
    assert_int_equal(scram_keys_from_password("pw", salt, SCRAM_SALT_MAX + 1, 4096, &k),
                     AUTH_EWRONGKIND);
    assert_int_equal(scram_keys_from_password("pw", salt, 16, 0, &k), AUTH_EWRONGKIND);
    assert_int_equal(scram_keys_from_password("pw", salt, SCRAM_SALT_MAX, 1, &k), AUTH_OK);
}

/* The longest salt survives a format/parse round trip. */
static void test_longest_salt_round_trip(void **state)
{
    uint8_t salt[SCRAM_SALT_MAX];
    struct scram_keys k, back;
    char secret[256];

    (void)state;
    memset(salt, 0xa5, sizeof(salt));
    assert_int_equal(scram_keys_from_password("pw", salt, sizeof(salt), 2, &k), AUTH_OK);
    assert_int_equal(scram_keys_format(&k, secret, sizeof(secret)), AUTH_OK);
    assert_true(strlen(secret) < 200);
    assert_int_equal(scram_keys_from_secret(secret, &back), AUTH_OK);
    assert_memory_equal(&k, &back, sizeof(k));
}

/* ---- mock keys ---------------------------------------------------------- */

static void test_mock_keys(void **state)
{
    uint8_t secret[32] = {1, 2, 3};
    struct scram_keys a, b, other;
    struct scram_client *c;
    char formatted[256];

    (void)state;
    assert_int_equal(scram_keys_mock("ghost", secret, 4096, &a), AUTH_OK);
    assert_int_equal(scram_keys_mock("ghost", secret, 4096, &b), AUTH_OK);
    assert_int_equal(scram_keys_mock("phantom", secret, 4096, &other), AUTH_OK);
    assert_true(a.mock);
    assert_int_equal(a.salt_len, 16);
    assert_int_equal(a.iterations, 4096);
    assert_memory_equal(a.salt, b.salt, 16);
    assert_memory_not_equal(a.salt, other.salt, 16);
    assert_int_equal(scram_keys_format(&a, formatted, sizeof(formatted)), AUTH_OK);
    c = scram_client_new_password(NULL, "anything");
    assert_int_equal(login(c, &a, NULL), AUTH_EPASSWORD);
    scram_client_free(c);
}

/* ---- cache -------------------------------------------------------------- */

static void test_cache_hits_and_changes(void **state)
{
    struct scram_cache *cache = scram_cache_new(0);
    struct scram_cache_stats st;
    struct scram_keys k1, k2, k3, k4, parsed;
    struct scram_client *c;

    (void)state;
    assert_int_equal(scram_cache_get(cache, "alice", "pencil", 4096, &k1), AUTH_OK);
    assert_int_equal(scram_cache_get(cache, "alice", "pencil", 4096, &k2), AUTH_OK);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 1);
    assert_memory_equal(&k1, &k2, sizeof(k1));
    assert_int_equal(k1.salt_len, 16);
    assert_int_equal(k1.iterations, 4096);

    /* The cached keys verify the password. */
    c = scram_client_new_password(NULL, "pencil");
    assert_int_equal(login(c, &k2, NULL), AUTH_OK);
    scram_client_free(c);

    /* A changed password (after a reload) derives anew; so does another user. */
    assert_int_equal(scram_cache_get(cache, "alice", "pencil2", 4096, &k3), AUTH_OK);
    assert_int_equal(scram_cache_get(cache, "bob", "pencil", 4096, &k4), AUTH_OK);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 3);
    assert_memory_not_equal(k3.stored_key, k1.stored_key, 32);
    assert_memory_not_equal(k4.salt, k1.salt, 16);
    c = scram_client_new_password(NULL, "pencil");
    assert_int_equal(login(c, &k3, NULL), AUTH_EPASSWORD);
    scram_client_free(c);

    /* Another scram_iterations (a reload) derives keys with that count. */
    assert_int_equal(scram_cache_get(cache, "alice", "pencil", 1024, &k4), AUTH_OK);
    assert_int_equal(k4.iterations, 1024);
    assert_memory_not_equal(k4.salt, k1.salt, 16);
    c = scram_client_new_password(NULL, "pencil");
    assert_int_equal(login(c, &k4, NULL), AUTH_OK);
    scram_client_free(c);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 4);

    /* SCRAM secrets are parsed, never derived; md5 and empty ones have no SCRAM keys. */
    assert_int_equal(scram_cache_get(cache, "x", PG15_SECRET_X, 4096, &k1), AUTH_OK);
    pg15_keys(PG15_SECRET_X, &parsed);
    assert_memory_equal(&k1, &parsed, sizeof(k1));
    assert_int_equal(scram_cache_get(cache, "z", PG15_MD5_Z, 4096, &k1), AUTH_EWRONGKIND);
    assert_int_equal(scram_cache_get(cache, "z", "", 4096, &k1), AUTH_EWRONGKIND);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 4);

    scram_cache_clear(cache);
    assert_int_equal(scram_cache_get(cache, "alice", "pencil", 4096, &k2), AUTH_OK);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 5);
    assert_int_equal(st.entries, 1);
    scram_cache_free(cache);
    scram_cache_free(NULL);
}

/* Separating user and secret by length: ("ab", "c") and ("a", "bc") are different entries. */
static void test_cache_key_is_unambiguous(void **state)
{
    struct scram_cache *cache = scram_cache_new(0);
    struct scram_cache_stats st;
    struct scram_keys k;

    (void)state;
    assert_int_equal(scram_cache_get(cache, "ab", "c", 4096, &k), AUTH_OK);
    assert_int_equal(scram_cache_get(cache, "a", "bc", 4096, &k), AUTH_OK);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 2);
    scram_cache_free(cache);
}

static void test_cache_evicts_least_recently_used(void **state)
{
    struct scram_cache *cache = scram_cache_new(4);
    struct scram_cache_stats st;
    struct scram_keys k, first;
    char user[16];
    int i;

    (void)state;
    assert_int_equal(scram_cache_get(cache, "u0", "pw", 4096, &first), AUTH_OK);
    for (i = 1; i < 7; i++) {
        snprintf(user, sizeof(user), "u%d", i);
        assert_int_equal(scram_cache_get(cache, user, "pw", 4096, &k), AUTH_OK);
        /* Keep u0 the most recently used. */
        assert_int_equal(scram_cache_get(cache, "u0", "pw", 4096, &k), AUTH_OK);
        assert_memory_equal(&k, &first, sizeof(k));
    }
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.evictions, 3);
    assert_int_equal(st.derivations, 7);
    /* u1 went first; u6 is still there. */
    assert_int_equal(scram_cache_get(cache, "u6", "pw", 4096, &k), AUTH_OK);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 7);
    assert_int_equal(scram_cache_get(cache, "u1", "pw", 4096, &k), AUTH_OK);
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.derivations, 8);
    assert_int_equal(st.entries, 4);
    scram_cache_free(cache);
}

struct thread_arg {
    struct scram_cache *cache;
    struct scram_keys keys[4];
    int rc;
};

static void *cache_thread(void *p)
{
    struct thread_arg *a = p;
    char user[8];
    int i, j;

    for (i = 0; i < 50; i++)
        for (j = 0; j < 4; j++) {
            snprintf(user, sizeof(user), "t%d", j);
            if (scram_cache_get(a->cache, user, "pw", 4096, &a->keys[j]) != AUTH_OK)
                a->rc = -1;
        }
    return NULL;
}

/* Threads racing on the same users all end up with the same keys per user. */
static void test_cache_threads(void **state)
{
    enum { N = 8 };
    struct scram_cache *cache = scram_cache_new(0);
    struct thread_arg args[N];
    pthread_t th[N];
    struct scram_cache_stats st;
    int i, j;

    (void)state;
    for (i = 0; i < N; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].cache = cache;
        assert_int_equal(pthread_create(&th[i], NULL, cache_thread, &args[i]), 0);
    }
    for (i = 0; i < N; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (i = 0; i < N; i++) {
        assert_int_equal(args[i].rc, 0);
        for (j = 0; j < 4; j++)
            assert_memory_equal(&args[i].keys[j], &args[0].keys[j], sizeof(args[0].keys[j]));
    }
    scram_cache_get_stats(cache, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.hits + st.derivations, N * 50 * 4);
    assert_true(st.derivations >= 4 && st.derivations <= 4 * N);
    scram_cache_free(cache);
}

/* ---- md5 ---------------------------------------------------------------- */

static const uint8_t SALT_Z[4] = {1, 2, 3, 4};
#define RESP_Z "md54f0af446b26c2e2c040b9eafb8767ecc" /* z / secret / salt 01020304 */

static void test_md5_secret_vectors(void **state)
{
    char out[MD5_SECRET_LEN + 1];

    (void)state;
    assert_int_equal(md5_secret("z", "secret", out), AUTH_OK);
    assert_string_equal(out, PG15_MD5_Z); /* what PostgreSQL 15 stored */
    assert_int_equal(md5_secret("admin", "1234", out), AUTH_OK);
    assert_string_equal(out, "md545f2603610af569b6155c45067268c6b"); /* pgbouncer(5) */
}

static void test_md5_verify(void **state)
{
    static const uint8_t salt2[4] = {0xde, 0xad, 0xbe, 0xef};

    (void)state;
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, RESP_Z), AUTH_OK);
    assert_int_equal(md5_verify("secret", "z", SALT_Z, RESP_Z), AUTH_OK);
    assert_int_equal(md5_verify("md545f2603610af569b6155c45067268c6b", "admin", salt2,
                                "md578b732a6e6854239565dc8b2bd0002bf"),
                     AUTH_OK);
    /* Wrong password, wrong user, wrong salt, altered or malformed responses. */
    assert_int_equal(md5_verify("secreT", "z", SALT_Z, RESP_Z), AUTH_EPASSWORD);
    assert_int_equal(md5_verify("secret", "y", SALT_Z, RESP_Z), AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", salt2, RESP_Z), AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, "md54f0af446b26c2e2c040b9eafb8767ecd"),
                     AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, "MD54F0AF446B26C2E2C040B9EAFB8767ECC"),
                     AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, "md54f0af446b26c2e2c040b9eafb8767ec"),
                     AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, RESP_Z "c"), AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, ""), AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, NULL), AUTH_EPASSWORD);
    /* The client sending the stored hash itself is not the response. */
    assert_int_equal(md5_verify(PG15_MD5_Z, "z", SALT_Z, PG15_MD5_Z), AUTH_EPASSWORD);
    /* No password can match an empty secret; a SCRAM secret cannot check md5. */
    assert_int_equal(md5_verify("", "z", SALT_Z, RESP_Z), AUTH_EPASSWORD);
    assert_int_equal(md5_verify(PG15_SECRET_X, "x", SALT_Z, RESP_Z), AUTH_EWRONGKIND);
}

static void test_strerror(void **state)
{
    int codes[] = {AUTH_OK, AUTH_EPASSWORD, AUTH_EMALFORMED, AUTH_EUNSUPPORTED, AUTH_EWRONGKIND,
                   AUTH_ESTATE, AUTH_ENOMEM, AUTH_EFILE, AUTH_ECRYPTO, AUTH_ESERVER};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_string_not_equal(auth_strerror(codes[i]), auth_strerror(12345));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_server),
        cmocka_unit_test(test_rfc7677_client),
        cmocka_unit_test(test_rfc7677_client_rejects_forged_server),
        cmocka_unit_test(test_pg15_secret_matches_derivation),
        cmocka_unit_test(test_pg15_login_right_password),
        cmocka_unit_test(test_pg15_login_wrong_password),
        cmocka_unit_test(test_pg15_wrong_password_message),
        cmocka_unit_test(test_client_key_pass_through),
        cmocka_unit_test(test_client_detects_wrong_server_key),
        cmocka_unit_test(test_gs2_y_flag),
        cmocka_unit_test(test_extensions_ignored),
        cmocka_unit_test(test_malformed_client_first),
        cmocka_unit_test(test_client_first_accepted_forms),
        cmocka_unit_test(test_server_nonce_is_random),
        cmocka_unit_test(test_malformed_client_final),
        cmocka_unit_test(test_nul_and_oversized_messages),
        cmocka_unit_test(test_truncated_and_corrupted),
        cmocka_unit_test(test_out_of_order_and_nonce_hook),
        cmocka_unit_test(test_client_rejects_bad_server_first),
        cmocka_unit_test(test_client_server_final_errors),
        cmocka_unit_test(test_client_escapes_user),
        cmocka_unit_test(test_secret_kinds),
        cmocka_unit_test(test_malformed_scram_secrets),
        cmocka_unit_test(test_keys_from_password_limits),
        cmocka_unit_test(test_longest_salt_round_trip),
        cmocka_unit_test(test_mock_keys),
        cmocka_unit_test(test_cache_hits_and_changes),
        cmocka_unit_test(test_cache_key_is_unambiguous),
        cmocka_unit_test(test_cache_evicts_least_recently_used),
        cmocka_unit_test(test_cache_threads),
        cmocka_unit_test(test_md5_secret_vectors),
        cmocka_unit_test(test_md5_verify),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
