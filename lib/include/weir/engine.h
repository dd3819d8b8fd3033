/*
 * Engine: a Dialect plus a Pool for one database URL, with a small blocking
 * API for applications: check out a connection, run statements with $n
 * parameters, read results without touching libpq, run transactions, give the
 * connection back. The engine runs the pool's background work on a thread of
 * its own, so callers need no event loop. Engines are thread-safe; a
 * weir_conn belongs to one thread at a time.
 *
 * URL: postgresql://user:password@host:port/dbname?pool_size=10&max_overflow=5
 *      &pool_timeout=30&pool_recycle=3600&pool_pre_ping=1 (seconds, like
 * SQLAlchemy). Every other query parameter goes to libpq untouched. A libpq
 * key=value conninfo works too, with the same pool_* keys mixed in.
 * Pool keys: pool_size, max_overflow, pool_min_size, pool_timeout,
 * pool_recycle, pool_recycle_jitter, pool_idle_timeout, pool_pre_ping
 * (0/1, or seconds idle before pinging when > 1), pool_max_waiters,
 * pool_use_lifo, pool_reset_on_return, pool_connect_timeout, dialect.
 */
#ifndef WEIR_ENGINE_H
#define WEIR_ENGINE_H

#include <stdint.h>
#include <weir/common.h>
#include <weir/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pg_conn; /* libpq's PGconn */

typedef struct weir_engine weir_engine;
typedef struct weir_conn weir_conn;
typedef struct weir_result weir_result;

typedef struct weir_engine_options {
    weir_log_fn log_fn;   /* may be NULL */
    void *log_arg;
    /* Overrides applied after the URL's pool_* keys; NULL = none. Only its
     * sizing, timeout and flag fields are used, and of those only the ones
     * that differ from weir_pool_config_init()'s defaults. */
    const weir_pool_config *pool;
} weir_engine_options;

/*
 * Create an engine for url (borrowed). opts may be NULL. On error *out is
 * NULL and, if errbuf is given, it holds a readable reason.
 */
WEIR_API WEIR_MUST_CHECK int weir_engine_new(const char *url, const weir_engine_options *opts,
                                             weir_engine **out, char *errbuf, size_t errlen);
/* Dispose: closes the pool. Connections must have been closed first. NULL ok. */
WEIR_API void weir_engine_free(weir_engine *engine);

/* The engine's pool (borrowed), for stats, pause, invalidation. */
WEIR_API weir_pool *weir_engine_pool(weir_engine *engine);

/* Check out a connection (timeout_ms: -1 forever, -2 the pool's default). */
WEIR_API WEIR_MUST_CHECK int weir_engine_connect(weir_engine *engine, int timeout_ms, weir_conn **out);
/* Give it back: reset and return to the pool, or discarded if broken. NULL ok. */
WEIR_API void weir_conn_close(weir_conn *conn);

/*
 * Run sql with nparams text parameters ($1..$n; a NULL entry is SQL NULL).
 * On 0 or WEIR_EQUERY, *out (if out is non-NULL) holds a result the caller
 * frees; with WEIR_EQUERY it carries the SQLSTATE and message. WEIR_EGONE:
 * the server went away; the connection is discarded at close.
 */
WEIR_API WEIR_MUST_CHECK int weir_conn_execute(weir_conn *conn, const char *sql, int nparams,
                                               const char *const *params, weir_result **out);
WEIR_API WEIR_MUST_CHECK int weir_conn_begin(weir_conn *conn);
WEIR_API WEIR_MUST_CHECK int weir_conn_commit(weir_conn *conn);
WEIR_API WEIR_MUST_CHECK int weir_conn_rollback(weir_conn *conn);
/* Error text of the last failed call on conn (borrowed; "" if none). */
WEIR_API const char *weir_conn_error(const weir_conn *conn);
/* Escape hatch: the libpq connection. Borrowed; do not PQfinish it. */
WEIR_API struct pg_conn *weir_conn_pgconn(weir_conn *conn);
/* 1 if the connection was found broken (it will not be reused). */
WEIR_API int weir_conn_is_broken(const weir_conn *conn);

/* Results. Row and column numbers start at 0; strings are borrowed from r. */
WEIR_API int weir_result_rows(const weir_result *r);
WEIR_API int weir_result_columns(const weir_result *r);
WEIR_API const char *weir_result_column_name(const weir_result *r, int col);
/* Text value, or NULL for SQL NULL and for out-of-range positions. */
WEIR_API const char *weir_result_value(const weir_result *r, int row, int col);
WEIR_API int weir_result_is_null(const weir_result *r, int row, int col);
/* Rows affected by INSERT/UPDATE/DELETE/...; -1 when not applicable. */
WEIR_API int64_t weir_result_affected(const weir_result *r);
/* Command tag such as "INSERT 0 1". */
WEIR_API const char *weir_result_command(const weir_result *r);
/* On error: the SQLSTATE ("23505") and primary message; NULL on success. */
WEIR_API const char *weir_result_sqlstate(const weir_result *r);
WEIR_API const char *weir_result_error(const weir_result *r);
WEIR_API void weir_result_free(weir_result *r);

#ifdef __cplusplus
}
#endif

#endif
