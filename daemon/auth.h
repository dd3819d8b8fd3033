/*
 * Authentication primitives for the daemon: the auth_file (userlist.txt)
 * loader, the kinds of stored secret, md5 password checks, the server side
 * of SCRAM-SHA-256 with a key cache, and a SCRAM client for logging into a
 * backend with keys instead of a password. None of it does I/O: the client
 * and server state machines move the bytes, these functions compute and
 * check. Errors meant for the client carry PostgreSQL's wording; the return
 * code tells the caller which SQLSTATE to send (see enum auth_status).
 */
#ifndef WEIR_DAEMON_AUTH_H
#define WEIR_DAEMON_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define AUTH_MUST_CHECK __attribute__((warn_unused_result))
#else
#define AUTH_MUST_CHECK
#endif

/*
 * Results. Every fallible call returns AUTH_OK or one of these. The comment
 * gives the SQLSTATE a client-facing caller should report.
 */
enum auth_status {
    AUTH_OK = 0,
    AUTH_EPASSWORD = -1,    /* wrong password: 28P01 invalid_password */
    AUTH_EMALFORMED = -2,   /* malformed client message: 08P01 protocol_violation */
    AUTH_EUNSUPPORTED = -3, /* channel binding, authzid, mandatory extension: 0A000 */
    AUTH_EWRONGKIND = -4,   /* the stored secret cannot serve this method */
    AUTH_ESTATE = -5,       /* call out of order, or after a failure */
    AUTH_ENOMEM = -6,       /* out of memory */
    AUTH_EFILE = -7,        /* auth_file missing or unreadable */
    AUTH_ECRYPTO = -8,      /* OpenSSL failed (RNG, digest unavailable) */
    AUTH_ESERVER = -9,      /* SCRAM client: the server's messages are malformed or
                               do not prove it knows the secret */
};

/* Static English description of code; never NULL. */
const char *auth_strerror(int code);

/* ---- auth_file ---------------------------------------------------------- */

/*
 * PgBouncer's auth_file format: `"user" "secret"` per line, `""` inside a
 * quoted string stands for one `"`, anything after the second field is
 * ignored, blank lines and lines starting with `;` are skipped. Unlike
 * PgBouncer, which stops at the first broken line, weir skips only that line
 * and reports it. Both fields end on the line they start on; a user longer
 * than 127 bytes or a secret longer than 2047 bytes is a malformed line, as
 * PgBouncer refuses them too. A user listed twice keeps its last secret.
 */
struct userlist;

/*
 * Loads path into a new list (*out, free with userlist_free). Returns the
 * number of malformed lines skipped (0 for a clean file) with *out set and
 * err holding "path:LINE: reason" for the first one; or a negative code
 * (AUTH_EFILE, AUTH_ENOMEM) with *out NULL and err saying why, naming path.
 * err may be NULL when errlen is 0.
 */
int userlist_load(const char *path, struct userlist **out, char *err, size_t errlen)
    AUTH_MUST_CHECK;

/* The secret stored for user, or NULL. Borrowed; valid until userlist_free. O(log n). */
const char *userlist_secret(const struct userlist *list, const char *user);

/* The i-th user name (sorted), for listing; NULL past the end. Borrowed. */
const char *userlist_user_at(const struct userlist *list, size_t i);

/* Number of distinct users. */
size_t userlist_count(const struct userlist *list);

/* Wipes the secrets and frees. NULL is fine. */
void userlist_free(struct userlist *list);

/* ---- secrets ------------------------------------------------------------ */

enum secret_kind {
    SECRET_NONE,  /* empty: no password can match, as in PostgreSQL */
    SECRET_PLAIN, /* the password itself */
    SECRET_MD5,   /* "md5" + 32 lower-case hex digits of md5(password || user) */
    SECRET_SCRAM, /* "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" */
};

/*
 * Classifies a secret the way PostgreSQL does: anything that does not parse
 * as an md5 or SCRAM secret is a plain-text password.
 */
enum secret_kind secret_kind_of(const char *secret);

/* ---- md5 ---------------------------------------------------------------- */

#define MD5_SECRET_LEN 35 /* "md5" + 32 hex, without the NUL */

/* out = "md5" + hex(md5(password || user)), NUL-terminated. AUTH_ECRYPTO if
 * MD5 is unavailable (a FIPS-only OpenSSL). */
int md5_secret(const char *user, const char *password, char out[MD5_SECRET_LEN + 1])
    AUTH_MUST_CHECK;

/*
 * Checks the client's PasswordMessage for AuthenticationMD5Password(salt):
 * client_response must be "md5" + hex(md5(hex part of md5_secret || salt)).
 * secret is a plain-text or md5 secret. Returns AUTH_OK, AUTH_EPASSWORD (also
 * for an empty secret), AUTH_EWRONGKIND for a SCRAM secret (md5 cannot be
 * verified against it; offer SCRAM instead), or AUTH_ECRYPTO.
 */
int md5_verify(const char *secret, const char *user, const uint8_t salt[4],
               const char *client_response) AUTH_MUST_CHECK;

/*
 * The client side: the PasswordMessage answering AuthenticationMD5Password
 * (salt) from an md5 secret, without knowing the password. AUTH_EWRONGKIND
 * if secret is not an md5 secret.
 */
int md5_response(const char *secret, const uint8_t salt[4], char out[MD5_SECRET_LEN + 1])
    AUTH_MUST_CHECK;

/* ---- SCRAM-SHA-256 keys ------------------------------------------------- */

#define SCRAM_KEY_LEN 32
#define SCRAM_SALT_MAX 64
#define SCRAM_DEFAULT_ITERATIONS 4096 /* PostgreSQL's default */
#define SCRAM_DEFAULT_SALT_LEN 16     /* PostgreSQL's default */

/* What a server needs to verify a SCRAM login. Wipe with OPENSSL_cleanse. */
struct scram_keys {
    int iterations;
    uint8_t salt[SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
    bool mock; /* keys for a user that does not exist: every proof fails */
};

/* Parses a SCRAM secret. AUTH_EWRONGKIND if it is not one. */
int scram_keys_from_secret(const char *secret, struct scram_keys *out) AUTH_MUST_CHECK;

/*
 * Derives keys from a password with PBKDF2-HMAC-SHA-256 (milliseconds at
 * 4096 iterations). The password is used as given: PostgreSQL applies
 * SASLprep first, which leaves printable ASCII and already-normalized text
 * unchanged but can differ for exotic Unicode (see the note in scram.c).
 */
int scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                             int iterations, struct scram_keys *out) AUTH_MUST_CHECK;

/*
 * Keys for a user that does not exist, so that an unknown user sees the same
 * exchange as a known one with a wrong password (no user enumeration). The
 * salt is derived from user and mock_secret, so it stays the same across
 * attempts; mock_secret is 32 random bytes the daemon picks once at start.
 */
int scram_keys_mock(const char *user, const uint8_t mock_secret[32], int iterations, struct scram_keys *out)
    AUTH_MUST_CHECK;

/*
 * Formats keys as a secret "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"
 * into out. AUTH_ENOMEM if outlen is too small (200 bytes always suffice).
 */
int scram_keys_format(const struct scram_keys *keys, char *out, size_t outlen) AUTH_MUST_CHECK;

/* ---- SCRAM-SHA-256 server ----------------------------------------------- */

/* Longest client message accepted; real clients send well under 200 bytes. */
#define SCRAM_MAX_MESSAGE 1024

/*
 * One server-side exchange:
 *   SASLInitialResponse data -> scram_server_first() -> AuthenticationSASLContinue reply
 *   SASLResponse data        -> scram_server_final() -> AuthenticationSASLFinal reply
 * Only "SCRAM-SHA-256" is offered: a client asking for channel binding ("p=")
 * is refused with AUTH_EUNSUPPORTED. The user name inside client-first is
 * ignored (PostgreSQL uses the startup packet's), so is any extension after
 * the nonce. After any error the exchange is dead (AUTH_ESTATE afterwards).
 */
struct scram_server;

/* Copies keys. NULL when out of memory. */
struct scram_server *scram_server_new(const struct scram_keys *keys);

/*
 * Reads client-first-message (msg, len: need not be NUL-terminated) and
 * makes server-first-message (*reply, malloc'd, NUL-terminated).
 * AUTH_EMALFORMED, AUTH_EUNSUPPORTED, AUTH_ENOMEM, AUTH_ECRYPTO, AUTH_ESTATE;
 * err gets a message for the client.
 */
int scram_server_first(struct scram_server *s, const char *msg, size_t len, char **reply,
                       char *err, size_t errlen) AUTH_MUST_CHECK;

/*
 * Reads client-final-message, checks the proof and makes server-final-message
 * ("v=...", *reply malloc'd). AUTH_EPASSWORD when the proof is wrong, else
 * as scram_server_first.
 */
int scram_server_final(struct scram_server *s, const char *msg, size_t len, char **reply,
                       char *err, size_t errlen) AUTH_MUST_CHECK;

/*
 * After a successful final: ClientKey, recovered from the proof. With the
 * ServerKey from the same secret it lets weir log into a backend that holds
 * the same secret, without knowing the password. AUTH_ESTATE before.
 */
int scram_server_client_key(const struct scram_server *s, uint8_t out[SCRAM_KEY_LEN])
    AUTH_MUST_CHECK;

/*
 * Replaces the random server nonce, before scram_server_first. Only for
 * tests against published vectors: a predictable nonce allows replays.
 * nonce must be printable ASCII without ','.
 */
int scram_server_set_nonce(struct scram_server *s, const char *nonce) AUTH_MUST_CHECK;

/* Wipes keys and frees. NULL is fine. */
void scram_server_free(struct scram_server *s);

/* ---- key cache ---------------------------------------------------------- */

/*
 * Plain-text secrets would cost a PBKDF2 derivation per SCRAM login; the
 * cache keeps the keys derived from them (random 16-byte salt per entry,
 * 4096 iterations) keyed by (user, secret), so a changed password derives
 * anew. Least recently used entries go past max_entries. Thread-safe; owned
 * by the caller.
 */
struct scram_cache;

struct scram_cache_stats {
    uint64_t hits;        /* plain-text secret found in the cache */
    uint64_t derivations; /* PBKDF2 runs (misses) */
    uint64_t evictions;
    size_t entries;
};

#define SCRAM_CACHE_DEFAULT_MAX 10000

/* max_entries 0 means SCRAM_CACHE_DEFAULT_MAX. NULL when out of memory. */
struct scram_cache *scram_cache_new(size_t max_entries);

/*
 * Keys for user's secret: a SCRAM secret is parsed (cheaper than a cache
 * lookup, so not cached), a plain-text one derived once and cached.
 * AUTH_EWRONGKIND for an md5 or empty secret (no SCRAM keys can come from
 * it; run a mock exchange or fall back to md5), AUTH_ENOMEM, AUTH_ECRYPTO.
 */
int scram_cache_get(struct scram_cache *cache, const char *user, const char *secret, int iterations,
                    struct scram_keys *out) AUTH_MUST_CHECK;

void scram_cache_get_stats(struct scram_cache *cache, struct scram_cache_stats *out);

/* Drops every entry (e.g. after a reload removed users). */
void scram_cache_clear(struct scram_cache *cache);

/* Wipes and frees. NULL is fine. */
void scram_cache_free(struct scram_cache *cache);

/* ---- SCRAM-SHA-256 client ----------------------------------------------- */

/*
 * The client side, for logging into a backend:
 *   scram_client_first()  -> SASLInitialResponse data ("n,,n=,r=<nonce>")
 *   AuthenticationSASLContinue data -> scram_client_final() -> SASLResponse data
 *   AuthenticationSASLFinal data    -> scram_client_verify()
 * With a password, PBKDF2 runs inside scram_client_final with the server's
 * salt and iteration count. With keys (ClientKey from scram_server_client_key
 * and ServerKey from the secret) nothing is derived; the backend must hold
 * the same secret (same salt and iterations) for the proof to match.
 */
struct scram_client;

/* user may be NULL (sends "n=", as libpq does). NULL when out of memory. */
struct scram_client *scram_client_new_password(const char *user, const char *password);
struct scram_client *scram_client_new_keys(const char *user,
                                           const uint8_t client_key[SCRAM_KEY_LEN],
                                           const uint8_t server_key[SCRAM_KEY_LEN]);

/* Same contract as scram_server_set_nonce. */
int scram_client_set_nonce(struct scram_client *c, const char *nonce) AUTH_MUST_CHECK;

/* *msg (malloc'd) = client-first-message. AUTH_ECRYPTO, AUTH_ENOMEM, AUTH_ESTATE. */
int scram_client_first(struct scram_client *c, char **msg) AUTH_MUST_CHECK;

/*
 * Reads server-first-message (its nonce must extend ours) and makes
 * client-final-message (*msg, malloc'd). AUTH_ESERVER with err for a bad
 * server message.
 */
int scram_client_final(struct scram_client *c, const char *server_first, size_t len, char **msg,
                       char *err, size_t errlen) AUTH_MUST_CHECK;

/*
 * Checks server-final-message: AUTH_OK when the server proved it holds the
 * secret; AUTH_EPASSWORD when it reported an error ("e="); AUTH_ESERVER when
 * its signature is wrong or the message malformed.
 */
int scram_client_verify(struct scram_client *c, const char *server_final, size_t len,
                        char *err, size_t errlen) AUTH_MUST_CHECK;

/* Wipes and frees. NULL is fine. */
void scram_client_free(struct scram_client *c);

#endif
