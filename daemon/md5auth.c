/*
 * Stored secrets other than SCRAM's inner workings: telling the kinds apart
 * the way PostgreSQL does, PostgreSQL's md5 password scheme (the secret
 * "md5" + md5(password || user), and the salted challenge response a client
 * sends for AuthenticationMD5Password), and the descriptions of the status
 * codes every auth module returns.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"

const char *auth_strerror(int code)
{
    switch (code) {
    case AUTH_OK: return "success";
    case AUTH_EPASSWORD: return "password authentication failed";
    case AUTH_EMALFORMED: return "malformed authentication message";
    case AUTH_EUNSUPPORTED: return "unsupported authentication feature";
    case AUTH_EWRONGKIND: return "stored secret cannot be used for this method";
    case AUTH_ESTATE: return "authentication step out of order";
    case AUTH_ENOMEM: return "out of memory";
    case AUTH_EFILE: return "could not read auth_file";
    case AUTH_ECRYPTO: return "cryptographic library failure";
    case AUTH_ESERVER: return "server failed SCRAM authentication";
    default: return "unknown authentication error";
    }
}

/* PostgreSQL recognises md5 secrets by lower-case hex only. */
static bool is_md5_secret(const char *s)
{
    size_t i;

    if (strncmp(s, "md5", 3) != 0 || strlen(s) != MD5_SECRET_LEN)
        return false;
    for (i = 3; i < MD5_SECRET_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

enum secret_kind secret_kind_of(const char *secret)
{
    struct scram_keys keys;
    bool scram;

    if (secret == NULL || secret[0] == '\0')
        return SECRET_NONE;
    if (is_md5_secret(secret))
        return SECRET_MD5;
    scram = scram_keys_from_secret(secret, &keys) == AUTH_OK;
    OPENSSL_cleanse(&keys, sizeof(keys));
    return scram ? SECRET_SCRAM : SECRET_PLAIN;
}

/* out = "md5" + hex(md5(a || b)), NUL-terminated. */
static int md5_hex(const void *a, size_t alen, const void *b, size_t blen,
                   char out[MD5_SECRET_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok, i;

    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, a, alen) == 1 && EVP_DigestUpdate(ctx, b, blen) == 1 &&
         EVP_DigestFinal_ex(ctx, digest, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        out[0] = '\0';
        return AUTH_ECRYPTO;
    }
    memcpy(out, "md5", 3);
    for (i = 0; i < 16; i++) {
        out[3 + 2 * i] = hex[digest[i] >> 4];
        out[4 + 2 * i] = hex[digest[i] & 15];
    }
    out[MD5_SECRET_LEN] = '\0';
    OPENSSL_cleanse(digest, sizeof(digest));
    return AUTH_OK;
}

int md5_secret(const char *user, const char *password, char out[MD5_SECRET_LEN + 1])
{
    return md5_hex(password, strlen(password), user, strlen(user), out);
}

int md5_verify(const char *secret, const char *user, const uint8_t salt[4],
               const char *client_response)
{
    char stored[MD5_SECRET_LEN + 1], expected[MD5_SECRET_LEN + 1];
    int rc;

    switch (secret_kind_of(secret)) {
    case SECRET_NONE: return AUTH_EPASSWORD;
    case SECRET_SCRAM: return AUTH_EWRONGKIND;
    case SECRET_MD5:
        memcpy(stored, secret, sizeof(stored));
        rc = AUTH_OK;
        break;
    default:
        rc = md5_secret(user, secret, stored);
        break;
    }
    /* The client hashes the hex digits only, without the "md5" prefix. */
    if (rc == AUTH_OK)
        rc = md5_hex(stored + 3, MD5_SECRET_LEN - 3, salt, 4, expected);
    if (rc == AUTH_OK && (client_response == NULL || strlen(client_response) != MD5_SECRET_LEN ||
                          CRYPTO_memcmp(expected, client_response, MD5_SECRET_LEN) != 0))
        rc = AUTH_EPASSWORD;
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(expected, sizeof(expected));
    return rc;
}

int md5_response(const char *secret, const uint8_t salt[4], char out[MD5_SECRET_LEN + 1])
{
    if (secret_kind_of(secret) != SECRET_MD5)
        return AUTH_EWRONGKIND;
    return md5_hex(secret + 3, MD5_SECRET_LEN - 3, salt, 4, out);
}
