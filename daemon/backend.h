/*
 * Backend connections as the daemon sees them, whichever way they were made.
 * The daemon's pools use one Dialect table, backend_dialect(): it connects
 * through libpq (the "postgresql" dialect) whenever it can, and through
 * weir's own connect (backend_raw.c) when the password it holds is a secret
 * libpq cannot log in with: an md5 hash, or SCRAM keys recovered from a
 * client's proof (SCRAM pass-through). Either way the result is a struct
 * backend idle at ReadyForQuery, and the rest of the daemon reads its
 * socket, backend pid, parameters and cancel key through the functions
 * below, never caring which way it came.
 *
 * The password forms in a conninfo that select weir's own connect:
 *   md5<32 hex>                        an md5 secret, answered as PgBouncer does
 *   SCRAM-SHA-256$<iter>:<salt>$<s>:<s> a SCRAM secret without keys: logs in only
 *                                       where the server asks for no password
 *   weir-scram-keys$<ClientKey>:<ServerKey>  (base64) SCRAM with keys
 * Any other password (or none) goes to libpq unchanged.
 */
#ifndef WEIR_DAEMON_BACKEND_H
#define WEIR_DAEMON_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <weir/dialect.h>

#include "auth.h"

struct backend;
struct raw_conn;

/* The daemon's Dialect (static table). */
const weir_dialect *backend_dialect(void);

/* What weir_pooled_driver_handle() gives for a connection of that dialect. */
int backend_socket(const struct backend *b);
int backend_pid(const struct backend *b);
/* A ParameterStatus value the server reported at login, or NULL. */
const char *backend_param(const struct backend *b, const char *name);
/* libpq's connection, or NULL when weir connected by itself. */
PGconn *backend_pgconn(const struct backend *b);
/* Host (or socket directory) and port connected to; "" / 0 if unknown. */
const char *backend_host(const struct backend *b);
int backend_port(const struct backend *b);
/* 1 when weir's own connect made it (md5 secret or SCRAM keys). */
int backend_is_raw(const struct backend *b);

/*
 * Cancelling what a backend runs. backend_cancel_new copies what is needed
 * (libpq's PGcancel, or the address and pid/key pair), on the loop thread;
 * backend_cancel_run blocks (connect + CancelRequest), so it belongs on a
 * worker thread; free afterwards on either.
 */
struct backend_cancel;
struct backend_cancel *backend_cancel_new(const struct backend *b);
int backend_cancel_run(struct backend_cancel *bc, char *err, size_t errlen);
void backend_cancel_free(struct backend_cancel *bc);

/* The keys form of a password, into out (>= 100 bytes). 0 or -1. */
int backend_keys_password(const uint8_t client_key[SCRAM_KEY_LEN], const uint8_t server_key[SCRAM_KEY_LEN],
                          char *out, size_t outlen);

/* ---- weir's own connect (backend_raw.c), used by backend.c only ---- */

/* What the raw connect logs in with: opts from PQconninfoParse. */
int raw_connect_start(const PQconninfoOption *opts, struct raw_conn **out, char *err, size_t errlen);
weir_poll raw_connect_poll(struct raw_conn *r);
int raw_socket(const struct raw_conn *r);
int raw_command_start(struct raw_conn *r, const char *const *cmds, int n);
weir_poll raw_command_poll(struct raw_conn *r);
weir_poll raw_idle_readable(struct raw_conn *r);
int raw_is_broken(const struct raw_conn *r);
char raw_txn(const struct raw_conn *r);
const char *raw_error(const struct raw_conn *r);
/* After a failed login: did the server refuse it, or weir fail its
 * authentication, for a reason a retry will not mend? */
int raw_refused(const struct raw_conn *r);
const char *raw_param(const struct raw_conn *r, const char *name);
int raw_pid(const struct raw_conn *r);
uint32_t raw_cancel_key(const struct raw_conn *r);
const char *raw_host(const struct raw_conn *r);
int raw_port(const struct raw_conn *r);
/* The peer address, for a CancelRequest on a fresh socket. */
int raw_peer(const struct raw_conn *r, void *sa, size_t salen, size_t *len);
void raw_close(struct raw_conn *r);

#endif
