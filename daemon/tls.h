/*
 * TLS for the daemon, with OpenSSL. The client-facing side: one SSL_CTX built
 * from the client_tls_* settings and kept in a struct tls_ctx (hung off the
 * daemon, rebuilt on reload so replaced certificates take effect; a bad new
 * file keeps the old context), a new SSL per accepted TLS connection, and the
 * handshake step the stream drives from its socket events. Also the
 * vocabulary both sides share: PgBouncer's spellings of protocol lists and
 * cipher shortcuts, which the backend side turns into libpq's conninfo keys.
 * The bytes themselves move in stream.c (SSL_read/SSL_write).
 */
#ifndef WEIR_DAEMON_TLS_H
#define WEIR_DAEMON_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct daemon;
struct weir_config;

/* TLS versions, as bits of a protocol set. */
enum {
    TLS_PROTO_V10 = 1 << 0,
    TLS_PROTO_V11 = 1 << 1,
    TLS_PROTO_V12 = 1 << 2,
    TLS_PROTO_V13 = 1 << 3,
};

/*
 * client_tls_protocols / server_tls_protocols as PgBouncer spells them: words
 * separated by ',' or ':' (spaces allowed): tlsv1.0 (or tlsv1), tlsv1.1,
 * tlsv1.2, tlsv1.3, all and legacy (every version), secure and default
 * (tlsv1.2,tlsv1.3); "!word" removes (starting from all when first).
 * Empty means secure. 0 with *mask set, or -1 for an unknown word or an empty set.
 */
int tls_parse_protocols(const char *spec, unsigned *mask);

/* libpq's name (ssl_min_protocol_version/ssl_max_protocol_version) of the
 * lowest or highest version in mask; NULL for an empty mask. */
const char *tls_libpq_min_protocol(unsigned mask);
const char *tls_libpq_max_protocol(unsigned mask);

/* The OpenSSL cipher string for a *_tls_ciphers value: PgBouncer's shortcuts
 * (default, secure, compat, legacy, insecure, all, normal, fast) are
 * expanded, anything else is taken as an OpenSSL cipher list. */
const char *tls_cipher_list(const char *spec);

/* The client-facing context: an SSL_CTX and the settings it was made from. */
struct tls_ctx;

/*
 * Build the context for cfg's client_tls_* settings. *out is NULL when
 * client_tls_sslmode is disable. 0, or -1 with a sentence in err (which file
 * failed and OpenSSL's reason); nothing is changed then.
 */
int tls_ctx_new(const struct weir_config *cfg, struct tls_ctx **out, char *err, size_t errlen);
/* Drops the daemon's reference; connections made from it keep working. NULL is fine. */
void tls_ctx_free(struct tls_ctx *t);

/* At start: d->tls from d->cfg. 0, or -1 logged (weir should not start). */
int tls_start(struct daemon *d);
/* On reload or SET of a *_tls_* key (after d->cfg changed): a fresh context
 * from the settings and files; on failure (-1) the old context stays and the
 * error is logged. */
int tls_reload(struct daemon *d);

/* A server-side SSL for an accepted client socket, or NULL (ENOMEM). */
SSL *tls_accept_new(struct tls_ctx *t, int fd);
/*
 * One step of a handshake: 1 done, 0 in progress (*want_write: waits for the
 * socket to take bytes, else for bytes to arrive), -1 failed (*err: the
 * OpenSSL error code, 0 when the peer just went away).
 */
int tls_handshake_step(SSL *ssl, int *want_write, unsigned long *err);
/* The reason for a failure seen by tls_handshake_step or the stream. */
void tls_error_text(unsigned long err, char *buf, size_t len);
/* Sends close_notify when the session is healthy (clean), then frees. NULL is fine. */
void tls_conn_close(SSL *ssl, int clean);

/* "TLSv1.3/TLS_AES_256_GCM_SHA384" for logs and SHOW CLIENTS. */
void tls_describe(SSL *ssl, char *buf, size_t len);
/* The common name of the peer's certificate when it was presented and
 * verified, malloc'd; NULL otherwise (also for a name with a NUL in it). */
char *tls_peer_cn(SSL *ssl);

#endif
