/*
 * Dialect: how to talk to one database flavour through its driver. A dialect
 * is a constant table of functions (an interface, like SQLAlchemy's Dialect);
 * the Pool is generic over the connections a dialect produces and never looks
 * inside them. Flavours that differ (a server without DISCARD ALL) are other
 * tables, found by name with weir_dialect_find(), not if-statements in the
 * pool. Tests may define their own table (a fake dialect) to drive the pool.
 *
 * Every operation is non-blocking: the caller (normally the pool's event
 * loop) starts an operation, then calls the matching *_poll function whenever
 * the connection's socket is ready in the direction the last poll asked for.
 * A dialect connection ("dconn") is an opaque pointer owned by whoever holds
 * it; dialect->close() releases it.
 */
#ifndef WEIR_DIALECT_H
#define WEIR_DIALECT_H

#include <stddef.h>
#include <weir/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a non-blocking step wants next. */
typedef enum weir_poll {
    WEIR_POLL_FAILED = -1, /* gave up: dialect->error_message() says why */
    WEIR_POLL_OK = 0,      /* finished successfully */
    WEIR_POLL_READ = 1,    /* call again when the socket is readable */
    WEIR_POLL_WRITE = 2,   /* call again when the socket is writable */
} weir_poll;

/* Classification of a failure: does the connection survive it? */
typedef enum weir_error_class {
    WEIR_ERRCLASS_STATEMENT = 0,  /* the statement failed, connection usable */
    WEIR_ERRCLASS_CONNECTION = 1, /* the connection is gone or unusable */
} weir_error_class;

typedef struct weir_dialect weir_dialect;

struct weir_dialect {
    const char *name;

    /* Begin connecting. conninfo is borrowed (a libpq key=value string or URI
     * for "postgresql"). On success *dconn is owned by the caller; on failure
     * nothing is left to free and an error text is in errbuf (NUL-terminated). */
    int (*connect_start)(const char *conninfo, void **dconn, char *errbuf, size_t errlen);
    /* Advance a connect. OK means ready for use at a transaction boundary. */
    weir_poll (*connect_poll)(void *dconn);
    /* The socket to wait on; it may change after each poll. -1 if none. */
    int (*socket)(void *dconn);

    /* Begin a liveness check / a reset for the next user (roll back an open
     * transaction, drop session state). Both are then driven by command_poll,
     * which the pool calls once at once, then on each readiness it asked for. */
    int (*ping_start)(void *dconn);
    int (*reset_start)(void *dconn);
    weir_poll (*command_poll)(void *dconn);

    /* The idle connection's socket became readable although nothing was asked:
     * consume what arrived. OK if the connection is still usable, FAILED if the
     * server closed it or sent a fatal error (e.g. pg_terminate_backend). */
    weir_poll (*idle_readable)(void *dconn);

    /* Is the connection known to be unusable (lost, or mid-statement)? */
    int (*is_broken)(void *dconn);

    /* Classify an error by its SQLSTATE (five characters, or NULL when the
     * driver reported no SQLSTATE, i.e. a client-side/connection failure). */
    weir_error_class (*classify)(const char *sqlstate);

    /* Last error text of this connection; borrowed, valid until the next call. */
    const char *(*error_message)(void *dconn);
    /* Server version as an integer (150018 for 15.18), 0 if unknown. */
    int (*server_version)(void *dconn);
    /* The driver's own handle (PGconn * for "postgresql"); borrowed. */
    void *(*driver_handle)(void *dconn);

    /* Quoting: return a malloc'd quoted copy of s (caller frees), NULL on ENOMEM. */
    char *(*quote_identifier)(const char *s);
    char *(*quote_literal)(const char *s);

    /* Close and free. Accepts NULL. */
    void (*close)(void *dconn);

    /* After a failed connect: was it refused for a reason a retry will not
     * soon mend (wrong password, unknown database, a certificate that does
     * not verify)? 0 when the server was unreachable, timed out, hung up,
     * or was starting, stopping or full. error is the failure's text
     * (borrowed); dconn the failed connection, or NULL when connect_start
     * itself failed. Lets a pool keep its waiters through a restart but not
     * through a misconfiguration. May be NULL: every failure then counts as
     * refused. */
    int (*connect_refused)(void *dconn, const char *error);
};

/*
 * Find a built-in dialect by name: "postgresql" (libpq; reset is ROLLBACK when
 * in a transaction, then DISCARD ALL) and "postgresql-nodiscard" (for servers
 * without DISCARD ALL: ROLLBACK, RESET ALL, CLOSE ALL, DEALLOCATE ALL). Names
 * match case-insensitively. Returns a static table, or NULL.
 */
WEIR_API const weir_dialect *weir_dialect_find(const char *name);

/* Convenience wrappers so callers need not reach into the table. */
WEIR_API weir_error_class weir_dialect_classify(const weir_dialect *d, const char *sqlstate);
WEIR_API char *weir_dialect_quote_identifier(const weir_dialect *d, const char *s);
WEIR_API char *weir_dialect_quote_literal(const weir_dialect *d, const char *s);

#ifdef __cplusplus
}
#endif

#endif
