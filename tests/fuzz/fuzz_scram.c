/*
 * libFuzzer target for SCRAM-SHA-256 (daemon/scram.c), both sides. The
 * first input byte picks the side; the rest is split in two at the offset
 * the second and third bytes give.
 *  - server: the two parts are a client's client-first-message and
 *    client-final-message, fed to scram_server_first()/scram_server_final()
 *    the way client.c feeds them from SASLInitialResponse and SASLResponse.
 *  - client: the two parts are a backend's server-first-message and
 *    server-final-message, fed to scram_client_final()/scram_client_verify()
 *    after a real client-first-message was made.
 *  - both: a real exchange between scram_client and scram_server, with the
 *    two parts spliced into the messages (prefix kept, tail replaced), so
 *    the fuzzer reaches the proof checks with messages that almost parse.
 * Beyond "no crash": results are documented codes, replies are NUL-ended,
 * error texts are set on failure, and a genuine exchange always succeeds.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t SALT[16] = "fuzz-salt-16byte";

/* Keys for the password "pencil", derived once (PBKDF2 is slow). */
static const struct scram_keys *keys(void)
{
    static struct scram_keys k;
    static bool done;

    if (!done) {
        CHECK(scram_keys_from_password("pencil", SALT, sizeof(SALT), 16, &k) == AUTH_OK);
        done = true;
    }
    return &k;
}

static void check_code(int rc, const char *err, const char *reply)
{
    CHECK(rc == AUTH_OK || rc == AUTH_EPASSWORD || rc == AUTH_EMALFORMED || rc == AUTH_EUNSUPPORTED ||
          rc == AUTH_ESTATE || rc == AUTH_ESERVER);
    if (rc == AUTH_OK)
        CHECK(reply == NULL || strlen(reply) < 4096);
    else if (rc != AUTH_ESTATE)
        CHECK(err[0] != '\0');
}

/* An exact-size heap copy, so any over-read hits a redzone. */
static char *copy(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);

    CHECK(c != NULL);
    memcpy(c, p, n);
    return c;
}

static void fuzz_server(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    struct scram_server *s = scram_server_new(keys());
    char err[256] = "", *reply = NULL, *m1 = copy(a, alen), *m2 = copy(b, blen);
    uint8_t ck[SCRAM_KEY_LEN];
    int rc;

    CHECK(s != NULL);
    rc = scram_server_first(s, m1, alen, &reply, err, sizeof(err));
    check_code(rc, err, reply);
    CHECK((rc == AUTH_OK) == (reply != NULL));
    free(reply);
    reply = NULL;
    err[0] = '\0';
    rc = scram_server_final(s, m2, blen, &reply, err, sizeof(err));
    check_code(rc, err, reply);
    if (rc == AUTH_OK) /* only with the right proof: the fuzzer cannot forge one */
        CHECK(scram_server_client_key(s, ck) == AUTH_OK);
    else
        CHECK(scram_server_client_key(s, ck) == AUTH_ESTATE);
    free(reply);
    free(m1);
    free(m2);
    scram_server_free(s);
}

static struct scram_client *new_client(void)
{
    /* ClientKey and ServerKey of "pencil": recomputed from the stored keys
     * would need the password, so take them from a real exchange instead. */
    static const uint8_t ck[SCRAM_KEY_LEN] = {1, 2, 3}, sk[SCRAM_KEY_LEN] = {4, 5, 6};
    struct scram_client *c = scram_client_new_keys("fuzz", ck, sk);

    CHECK(c != NULL);
    CHECK(scram_client_set_nonce(c, "fyko+d2lbbFgONRv9qkxdawL") == AUTH_OK);
    return c;
}

static void fuzz_client(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    struct scram_client *c = new_client();
    char err[256] = "", *first = NULL, *final = NULL, *m1 = copy(a, alen), *m2 = copy(b, blen);
    int rc;

    CHECK(scram_client_first(c, &first) == AUTH_OK && first != NULL);
    rc = scram_client_final(c, m1, alen, &final, err, sizeof(err));
    check_code(rc, err, final);
    CHECK((rc == AUTH_OK) == (final != NULL));
    err[0] = '\0';
    rc = scram_client_verify(c, m2, blen, err, sizeof(err));
    check_code(rc, err, NULL);
    free(first);
    free(final);
    free(m1);
    free(m2);
    scram_client_free(c);
}

/* msg with its tail from offset cut replaced by the fuzzer's bytes. */
static char *splice(const char *msg, const uint8_t *tail, size_t tlen, size_t cut, size_t *outlen)
{
    size_t keep = strlen(msg);
    char *out;

    if (cut < keep)
        keep = cut;
    out = malloc(keep + tlen + 1);
    CHECK(out != NULL);
    memcpy(out, msg, keep);
    memcpy(out + keep, tail, tlen);
    out[keep + tlen] = '\0';
    *outlen = keep + tlen;
    return out;
}

static void fuzz_both(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t cut)
{
    struct scram_client *c = scram_client_new_password("fuzz", "pencil");
    struct scram_server *s = scram_server_new(keys());
    char err[256] = "", *cf = NULL, *sf = NULL, *cfin = NULL, *sfin = NULL, *m;
    size_t mlen;
    int rc;

    CHECK(c != NULL && s != NULL);
    CHECK(scram_client_first(c, &cf) == AUTH_OK);
    /* The first message is spliced when cut's top bit is set, else the final. */
    if (cut & 128) {
        m = splice(cf, a, alen, cut & 127, &mlen);
    } else {
        m = cf;
        mlen = strlen(cf);
    }
    rc = scram_server_first(s, m, mlen, &sf, err, sizeof(err));
    check_code(rc, err, sf);
    if (m != cf)
        free(m);
    if (rc == AUTH_OK) {
        rc = scram_client_final(c, sf, strlen(sf), &cfin, err, sizeof(err));
        if (!(cut & 128))
            CHECK(rc == AUTH_OK); /* a genuine server-first always works */
    }
    if (rc == AUTH_OK && cfin != NULL) {
        if (!(cut & 128) && blen > 0) {
            m = splice(cfin, b, blen, cut, &mlen);
        } else {
            m = cfin;
            mlen = strlen(cfin);
        }
        rc = scram_server_final(s, m, mlen, &sfin, err, sizeof(err));
        check_code(rc, err, sfin);
        if (m == cfin && !(cut & 128))
            CHECK(rc == AUTH_OK); /* the genuine exchange: the right password */
        if (m != cfin)
            free(m);
        if (rc == AUTH_OK && m == cfin)
            CHECK(scram_client_verify(c, sfin, strlen(sfin), err, sizeof(err)) == AUTH_OK);
    }
    free(cf);
    free(sf);
    free(cfin);
    free(sfin);
    scram_client_free(c);
    scram_server_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split, n;
    const uint8_t *rest;

    if (size < 3 || size > 4096)
        return 0;
    rest = data + 3;
    n = size - 3;
    split = ((size_t)data[1] << 8 | data[2]) % (n + 1);
    switch (data[0] % 3) {
    case 0:
        fuzz_server(rest, split, rest + split, n - split);
        break;
    case 1:
        fuzz_client(rest, split, rest + split, n - split);
        break;
    default:
        fuzz_both(rest, split, rest + split, n - split, data[0]);
        break;
    }
    return 0;
}
