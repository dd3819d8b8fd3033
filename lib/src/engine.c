/*
 * The Engine: one URL turned into a Dialect and a Pool, the pool's event loop
 * on a thread of the engine's own, and a blocking API over the connections it
 * hands out. Statements run with libpq's blocking calls in the caller's
 * thread; the pool thread only connects, pings, resets and watches idle
 * sockets. Every failure is classified through the dialect: a lost
 * connection is marked broken so check-in discards it, a failed statement
 * leaves the connection in service.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <libpq-fe.h>

#include <weir/engine.h>

#include "engine_url.h"
#include "internal.h"
#include "pg_internal.h"

struct weir_engine {
    struct event_base *base;
    pthread_t thread;
    int thread_started;
    weir_pool *pool;
    const weir_dialect *dialect;
    weir_log_fn log_fn;
    void *log_arg;
};

struct weir_conn {
    weir_engine *engine;
    weir_pooled *pooled;
    PGconn *pg;
    int broken;
    char err[512];
};

/* Defined in result.c: take ownership of res (cleared on ENOMEM). */
/* Defined in dialect_pg.c: a libpq message as one line. */

static void set_text(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Format into buf as one line (libpq's messages span several). */
static void set_text(char *buf, size_t len, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;

    if (buf == NULL || len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    weir__pg_one_line(buf, len, tmp);
}

/* ---- engine life cycle ---- */

static void *engine_thread(void *arg)
{
    weir_engine *e = arg;

    event_base_loop(e->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void engine_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/*
 * Stop the loop thread. event_base_loopbreak() alone could be lost if the
 * thread has not entered the loop yet (entering clears the flag), so the
 * break is queued as an event the loop runs whenever it gets there.
 */
static void engine_stop_thread(weir_engine *e)
{
    struct timeval now = {0, 0};

    if (!e->thread_started)
        return;
    if (event_base_once(e->base, -1, EV_TIMEOUT, engine_stop_cb, e->base, &now) != 0)
        event_base_loopbreak(e->base);
    pthread_join(e->thread, NULL);
    e->thread_started = 0;
}

/* Apply the caller's pool settings that differ from the defaults, so a
 * config made with weir_pool_config_init() overrides only what it changed
 * and the URL's pool_* keys keep the rest. */
static void apply_overrides(weir_pool_config *cfg, const weir_pool_config *o)
{
    weir_pool_config def;

    weir_pool_config_init(&def);
#define OVERRIDE(f) \
    if (o->f != def.f) \
    cfg->f = o->f
    OVERRIDE(min_size);
    OVERRIDE(max_size);
    OVERRIDE(max_overflow);
    OVERRIDE(keep_overflow);
    OVERRIDE(overflow_delay_ms);
    OVERRIDE(max_waiters);
    OVERRIDE(timeout_ms);
    OVERRIDE(connect_timeout_ms);
    OVERRIDE(recycle_ms);
    OVERRIDE(recycle_jitter_ms);
    OVERRIDE(idle_timeout_ms);
    OVERRIDE(pre_ping_ms);
    OVERRIDE(reset_on_return);
    OVERRIDE(lifo);
    OVERRIDE(watch_idle);
    OVERRIDE(retry_min_ms);
    OVERRIDE(retry_max_ms);
    OVERRIDE(fail_waiters_on_connect_error);
#undef OVERRIDE
}

/* A short name for log lines: the database, or "engine". */
static void engine_name(const char *conninfo, char *buf, size_t len)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;

    snprintf(buf, len, "engine");
    for (o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val && o->val[0])
            snprintf(buf, len, "engine:%s", o->val);
    PQconninfoFree(opts);
}

static int engine_start(weir_engine *e, weir_pool_config *cfg, char *errbuf, size_t errlen)
{
    int rc;

    /* libevent's locking must be on before the base exists: the base is run
     * by the engine's thread and poked by every caller's. */
    if (evthread_use_pthreads() != 0 || (e->base = event_base_new()) == NULL) {
        set_text(errbuf, errlen, "could not create the event loop");
        return WEIR_ESYS;
    }
    cfg->base = e->base;
    rc = weir_pool_new(cfg, &e->pool);
    if (rc == WEIR_EINVAL) {
        set_text(errbuf, errlen, "invalid pool settings: pool_size must be >= 1 and pool_min_size "
                                 "at most pool_size + max_overflow");
        return rc;
    }
    if (rc != 0) {
        set_text(errbuf, errlen, "could not create the pool: %s", weir_strerror(rc));
        return rc;
    }
    if (pthread_create(&e->thread, NULL, engine_thread, e) != 0) {
        set_text(errbuf, errlen, "could not start the engine thread");
        return WEIR_ESYS;
    }
    e->thread_started = 1;
    return 0;
}

int weir_engine_new(const char *url, const weir_engine_options *opts, weir_engine **out, char *errbuf,
                    size_t errlen)
{
    weir_pool_config cfg;
    weir_engine_url u;
    weir_engine *e;
    char name[128];
    int rc;

    if (out == NULL)
        return WEIR_EINVAL;
    *out = NULL;
    weir_pool_config_init(&cfg);
    rc = weir__engine_url_parse(url, &cfg, &u, errbuf, errlen);
    if (rc != 0)
        return rc;
    if (opts && opts->pool)
        apply_overrides(&cfg, opts->pool);
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        weir__engine_url_clear(&u);
        set_text(errbuf, errlen, "out of memory");
        return WEIR_ENOMEM;
    }
    e->dialect = u.dialect ? u.dialect : weir_dialect_find("postgresql");
    e->log_fn = opts ? opts->log_fn : NULL;
    e->log_arg = opts ? opts->log_arg : NULL;
    engine_name(u.conninfo, name, sizeof(name));
    cfg.dialect = e->dialect;
    cfg.conninfo = u.conninfo;
    cfg.name = name;
    cfg.log_fn = e->log_fn;
    cfg.log_arg = e->log_arg;
    rc = engine_start(e, &cfg, errbuf, errlen);
    weir__engine_url_clear(&u);
    if (rc != 0) {
        weir_engine_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void weir_engine_free(weir_engine *e)
{
    if (e == NULL)
        return;
    /* The pool is freed with its loop stopped, so no pool callback runs. */
    engine_stop_thread(e);
    weir_pool_free(e->pool);
    if (e->base)
        event_base_free(e->base);
    free(e);
}

weir_pool *weir_engine_pool(weir_engine *e)
{
    return e ? e->pool : NULL;
}

/* ---- connections ---- */

int weir_engine_connect(weir_engine *e, int timeout_ms, weir_conn **out)
{
    weir_conn *c;
    int rc;

    if (out)
        *out = NULL;
    if (e == NULL || out == NULL)
        return WEIR_EINVAL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return WEIR_ENOMEM;
    rc = weir_pool_checkout(e->pool, timeout_ms, &c->pooled);
    if (rc != 0) {
        char why[256] = "";

        if (rc == WEIR_ECONNECT)
            weir_pool_last_error(e->pool, why, sizeof(why));
        weir__log(e->log_fn, e->log_arg, WEIR_LOG_WARNING, "engine: checkout failed: %s%s%s",
                  weir_strerror(rc), why[0] ? ": " : "", why);
        free(c);
        return rc;
    }
    c->engine = e;
    c->pg = weir_pooled_driver_handle(c->pooled);
    /* The pool drives connections non-blocking; callers (and the PGconn
     * escape hatch) get libpq's ordinary blocking behaviour. */
    if (PQsetnonblocking(c->pg, 0) != 0)
        c->broken = 1;
    *out = c;
    return 0;
}

int weir_conn_is_broken(const weir_conn *c)
{
    const weir_dialect *d;

    if (c == NULL)
        return 1;
    d = c->engine->dialect;
    return c->broken || PQstatus(c->pg) == CONNECTION_BAD || d->is_broken(weir_pooled_dconn(c->pooled));
}

void weir_conn_close(weir_conn *c)
{
    int flags = WEIR_CHECKIN_HEALTHY; /* weir_conn_is_broken() just asked the dialect */

    if (c == NULL)
        return;
    if (weir_conn_is_broken(c) || PQsetnonblocking(c->pg, 1) != 0)
        flags = WEIR_CHECKIN_BROKEN;
    weir_pool_checkin(c->engine->pool, c->pooled, flags);
    free(c);
}

const char *weir_conn_error(const weir_conn *c)
{
    return c ? c->err : "";
}

struct pg_conn *weir_conn_pgconn(weir_conn *c)
{
    return c ? c->pg : NULL;
}

/* The connection is gone: remember why, and never hand it out again. */
static int conn_lost(weir_conn *c, const char *why)
{
    c->broken = 1;
    set_text(c->err, sizeof(c->err), "%s", why && why[0] ? why : "connection to server lost");
    weir__log(c->engine->log_fn, c->engine->log_arg, WEIR_LOG_WARNING, "engine: connection lost: %s", c->err);
    return WEIR_EGONE;
}

/*
 * COPY cannot be served through this API. Leave the connection where a next
 * statement can run: refuse the input side, drain the output side.
 */
static int refuse_copy(weir_conn *c, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    char *buf;

    PQclear(res);
    if (st == PGRES_COPY_IN)
        PQputCopyEnd(c->pg, "COPY FROM STDIN is not supported by weir_conn_execute");
    else if (st == PGRES_COPY_OUT)
        while (PQgetCopyData(c->pg, &buf, 0) > 0)
            PQfreemem(buf);
    else
        c->broken = 1;
    while ((res = PQgetResult(c->pg)) != NULL)
        PQclear(res);
    if (c->broken || PQstatus(c->pg) == CONNECTION_BAD)
        return conn_lost(c, "COPY is not supported by weir_conn_execute; use weir_conn_pgconn()");
    set_text(c->err, sizeof(c->err), "COPY is not supported by weir_conn_execute; use weir_conn_pgconn()");
    return WEIR_EINVAL;
}

/* An error result: a lost connection, or a failed statement on a live one. */
static int statement_failed(weir_conn *c, PGresult *res, weir_result **out)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    weir_result *r;

    if (weir_dialect_classify(c->engine->dialect, state) == WEIR_ERRCLASS_CONNECTION ||
        PQstatus(c->pg) == CONNECTION_BAD) {
        char why[sizeof(c->err)];

        set_text(why, sizeof(why), "%s", primary ? primary : PQerrorMessage(c->pg));
        PQclear(res);
        return conn_lost(c, why);
    }
    set_text(c->err, sizeof(c->err), "%s (SQLSTATE %s)", primary ? primary : "statement failed",
             state ? state : "none");
    weir__log(c->engine->log_fn, c->engine->log_arg, WEIR_LOG_DEBUG, "engine: %s", c->err);
    if (out == NULL) {
        PQclear(res);
        return WEIR_EQUERY;
    }
    r = weir__result_wrap(res, 1);
    if (r == NULL)
        return WEIR_ENOMEM;
    *out = r;
    return WEIR_EQUERY;
}

int weir_conn_execute(weir_conn *c, const char *sql, int nparams, const char *const *params,
                      weir_result **out)
{
    PGresult *res;

    if (out)
        *out = NULL;
    if (c == NULL || sql == NULL || nparams < 0 || (nparams > 0 && params == NULL))
        return WEIR_EINVAL;
    if (c->broken) {
        if (c->err[0] == '\0')
            set_text(c->err, sizeof(c->err), "connection is broken");
        return WEIR_EGONE;
    }
    res = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    if (res == NULL) {
        if (PQstatus(c->pg) == CONNECTION_BAD)
            return conn_lost(c, PQerrorMessage(c->pg));
        set_text(c->err, sizeof(c->err), "%s", PQerrorMessage(c->pg));
        return WEIR_ENOMEM;
    }
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        return refuse_copy(c, res);
    default:
        return statement_failed(c, res, out);
    }
    if (out == NULL) {
        PQclear(res);
        return 0;
    }
    *out = weir__result_wrap(res, 0);
    return *out ? 0 : WEIR_ENOMEM;
}

static int run_simple(weir_conn *c, const char *sql)
{
    return weir_conn_execute(c, sql, 0, NULL, NULL);
}

int weir_conn_begin(weir_conn *c)
{
    return run_simple(c, "BEGIN");
}

/* PostgreSQL answers COMMIT of a failed transaction by rolling it back,
 * successfully; to the caller that is a failed commit. */
int weir_conn_commit(weir_conn *c)
{
    weir_result *r = NULL;
    int rc = weir_conn_execute(c, "COMMIT", 0, NULL, &r);

    if (rc == 0 && r && strcmp(weir_result_command(r), "ROLLBACK") == 0) {
        set_text(c->err, sizeof(c->err), "COMMIT rolled back: the transaction had failed");
        rc = WEIR_EQUERY;
    }
    weir_result_free(r);
    return rc;
}

int weir_conn_rollback(weir_conn *c)
{
    return run_simple(c, "ROLLBACK");
}
