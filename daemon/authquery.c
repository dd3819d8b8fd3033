/*
 * auth_query lookups (see authquery.h). libweir's Engine is a blocking API,
 * so the queries run on a few worker threads of their own (up to
 * AUTHQ_WORKERS, started as lookups need them) fed by a queue; a finished
 * lookup goes onto a done list and one byte down a pipe wakes the event
 * loop, which calls the asker back on its own thread, the same way a cancel
 * comes back from its worker in server.c. The event loop never waits: a
 * slow auth_query delays only the login that asked for it. One Engine per
 * distinct (database, auth_user) conninfo, made on first use and kept, each
 * with a small pool of its own, so lookups reuse connections instead of
 * logging in each time. A lookup whose client left runs to its end and is
 * dropped unanswered. The workers only touch jobs and engines, under the
 * lock; the callback, its argument and the abandoned flag belong to the
 * loop's thread alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <weir/engine.h>

#include "authquery.h"
#include "config.h"
#include "daemon.h"

#define AUTHQ_WORKERS 4
/* Each engine's pool: a few connections, checked when idle a while, given up
 * after PgBouncer-like waits. */
#define ENGINE_POOL_KEYS " pool_size=4 pool_timeout=30 pool_connect_timeout=15 pool_pre_ping=10 pool_idle_timeout=600"

struct authq_job {
    struct authq_job *next;
    char *conninfo, *query, *user;
    int wait_ms, retry_max_ms; /* the config's, read on the loop (workers may not read d->cfg) */
    /* loop thread only */
    authq_done_fn done;
    void *arg;
    int abandoned;
    /* written by the worker, read by the loop after the hand-off */
    enum authq_status status;
    char *secret;
    char err[512];
};

struct engine_slot {
    struct engine_slot *next;
    char *conninfo;
    weir_engine *engine;
};

struct authq {
    struct daemon *d;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct authq_job *queue, **queue_tail; /* waiting for a worker */
    struct authq_job *finished;            /* waiting for the loop */
    struct engine_slot *engines;
    pthread_t workers[AUTHQ_WORKERS];
    int nworkers, idle_workers, stopping;
    int pipe[2];
    struct event *wake;
};

static void job_free(struct authq_job *job)
{
    free(job->conninfo);
    free(job->query);
    free(job->user);
    if (job->secret) {
        OPENSSL_cleanse(job->secret, strlen(job->secret));
        free(job->secret);
    }
    free(job);
}

/* ---- worker side ---- */

/* The engine for conninfo; made under the lock on first use. */
static weir_engine *engine_for(struct authq *aq, const struct authq_job *job, char *err, size_t errlen)
{
    const char *conninfo = job->conninfo;
    struct engine_slot *s;
    weir_pool_config pool;
    weir_engine_options opts = {.pool = &pool};
    char *url;
    size_t len;

    for (s = aq->engines; s; s = s->next)
        if (strcmp(s->conninfo, conninfo) == 0)
            return s->engine;
    len = strlen(conninfo) + sizeof(ENGINE_POOL_KEYS);
    s = calloc(1, sizeof(*s));
    url = malloc(len);
    if (s == NULL || url == NULL || (s->conninfo = strdup(conninfo)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(url, len, "%s%s", conninfo, ENGINE_POOL_KEYS);
    /* As the daemon's own pools: a server that is away holds the lookup
     * (and so the login) while weir retries; a lasting refusal ends it. */
    weir_pool_config_init(&pool);
    pool.fail_waiters_on_connect_error = WEIR_WAITERS_FAIL_REFUSED;
    pool.retry_min_ms = 250;
    pool.retry_max_ms = job->retry_max_ms > 250 ? job->retry_max_ms : 250;
    if (weir_engine_new(url, &opts, &s->engine, err, errlen) != 0)
        goto fail;
    OPENSSL_cleanse(url, strlen(url));
    free(url);
    s->next = aq->engines;
    aq->engines = s;
    return s->engine;
fail:
    if (url) {
        OPENSSL_cleanse(url, strlen(url));
        free(url);
    }
    if (s)
        free(s->conninfo);
    free(s);
    return NULL;
}

/* Read the answer as PgBouncer does: two columns, user and password. */
static void take_result(struct authq_job *job, weir_result *res)
{
    const char *pw;

    if (weir_result_rows(res) == 0) {
        job->status = AUTHQ_NOT_FOUND;
        return;
    }
    if (weir_result_columns(res) != 2) {
        job->status = AUTHQ_FAILED;
        snprintf(job->err, sizeof(job->err), "expected 2 columns from auth_query, not %d", weir_result_columns(res));
        return;
    }
    if (weir_result_is_null(res, 0, 0)) {
        job->status = AUTHQ_FAILED;
        snprintf(job->err, sizeof(job->err), "auth_query response contained null user name");
        return;
    }
    pw = weir_result_is_null(res, 0, 1) ? "" : weir_result_value(res, 0, 1);
    job->secret = strdup(pw ? pw : "");
    job->status = job->secret ? AUTHQ_FOUND : AUTHQ_FAILED;
    if (job->secret == NULL)
        snprintf(job->err, sizeof(job->err), "out of memory");
}

/* One lookup, with one retry when a pooled connection turns out dead. */
static void run_job(struct authq *aq, struct authq_job *job)
{
    const char *params[1] = {job->user};
    weir_engine *e;
    int rc = WEIR_EGONE;

    job->status = AUTHQ_FAILED;
    pthread_mutex_lock(&aq->mu);
    e = engine_for(aq, job, job->err, sizeof(job->err));
    pthread_mutex_unlock(&aq->mu);
    if (e == NULL)
        return;
    for (int attempt = 0; attempt < 2 && rc == WEIR_EGONE; attempt++) {
        weir_conn *conn = NULL;
        weir_result *res = NULL;

        job->err[0] = '\0';
        rc = weir_engine_connect(e, job->wait_ms, &conn);
        if (rc != 0) {
            const char *why = weir_strerror(rc);
            char last[400] = "";
            weir_pool_last_error(weir_engine_pool(e), last, sizeof(last));
            snprintf(job->err, sizeof(job->err), "%s", last[0] ? last : why);
            return;
        }
        rc = weir_conn_execute(conn, job->query, 1, params, &res);
        if (rc == 0)
            take_result(job, res);
        else if (res && weir_result_error(res))
            snprintf(job->err, sizeof(job->err), "%s", weir_result_error(res));
        else
            snprintf(job->err, sizeof(job->err), "%s", weir_conn_error(conn)[0] ? weir_conn_error(conn)
                                                                                 : weir_strerror(rc));
        weir_result_free(res);
        weir_conn_close(conn);
    }
}

static void *worker_main(void *arg)
{
    struct authq *aq = arg;

    pthread_mutex_lock(&aq->mu);
    for (;;) {
        struct authq_job *job;

        while (aq->queue == NULL && !aq->stopping)
            pthread_cond_wait(&aq->cv, &aq->mu);
        if (aq->stopping)
            break;
        job = aq->queue;
        aq->queue = job->next;
        if (aq->queue == NULL)
            aq->queue_tail = &aq->queue;
        aq->idle_workers--;
        pthread_mutex_unlock(&aq->mu);

        run_job(aq, job);

        pthread_mutex_lock(&aq->mu);
        aq->idle_workers++;
        job->next = aq->finished;
        aq->finished = job;
        if (write(aq->pipe[1], "x", 1) != 1) {
            /* the pipe is non-blocking; when full, the loop is already woken */
        }
    }
    pthread_mutex_unlock(&aq->mu);
    return NULL;
}

/* ---- loop side ---- */

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct authq *aq = arg;
    struct authq_job *done, *rev = NULL;
    char buf[64];

    (void)what;
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    pthread_mutex_lock(&aq->mu);
    done = aq->finished;
    aq->finished = NULL;
    pthread_mutex_unlock(&aq->mu);
    while (done) { /* oldest first */
        struct authq_job *next = done->next;
        done->next = rev;
        rev = done;
        done = next;
    }
    while (rev) {
        struct authq_job *job = rev;
        rev = job->next;
        if (!job->abandoned)
            job->done(job->arg, job->status, job->secret, job->err);
        job_free(job);
    }
}

struct authq *authq_new(struct daemon *d, struct event_base *base)
{
    struct authq *aq = calloc(1, sizeof(*aq));

    if (aq == NULL)
        return NULL;
    aq->d = d;
    aq->queue_tail = &aq->queue;
    if (pipe2(aq->pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(aq);
        return NULL;
    }
    pthread_mutex_init(&aq->mu, NULL);
    pthread_cond_init(&aq->cv, NULL);
    aq->wake = event_new(base, aq->pipe[0], EV_READ | EV_PERSIST, on_wake, aq);
    if (aq->wake == NULL || event_add(aq->wake, NULL) != 0) {
        authq_free(aq);
        return NULL;
    }
    return aq;
}

/* A lookup waits for a connection as a login would wait for a server:
 * up to query_wait_timeout, and never past client_login_timeout. */
static int lookup_wait_ms(const struct weir_config *cfg)
{
    int64_t us = cfg->query_wait_timeout_us;

    if (cfg->client_login_timeout_us > 0 && (us <= 0 || cfg->client_login_timeout_us < us))
        us = cfg->client_login_timeout_us;
    if (us <= 0)
        return -1;
    return us / 1000 > 0x7fffffff ? 0x7fffffff : (int)(us / 1000);
}

struct authq_job *authq_start(struct authq *aq, const char *conninfo, const char *query, const char *user,
                              authq_done_fn done, void *arg)
{
    struct authq_job *job = calloc(1, sizeof(*job));

    if (job == NULL || (job->conninfo = strdup(conninfo)) == NULL || (job->query = strdup(query)) == NULL ||
        (job->user = strdup(user)) == NULL) {
        if (job)
            job_free(job);
        return NULL;
    }
    job->done = done;
    job->arg = arg;
    job->wait_ms = lookup_wait_ms(aq->d->cfg);
    job->retry_max_ms = (int)(aq->d->cfg->server_login_retry_us / 1000);
    pthread_mutex_lock(&aq->mu);
    if (aq->idle_workers == 0 && aq->nworkers < AUTHQ_WORKERS &&
        pthread_create(&aq->workers[aq->nworkers], NULL, worker_main, aq) == 0) {
        aq->nworkers++;
        aq->idle_workers++;
    }
    if (aq->nworkers == 0) { /* no thread could be made */
        pthread_mutex_unlock(&aq->mu);
        job_free(job);
        return NULL;
    }
    *aq->queue_tail = job;
    aq->queue_tail = &job->next;
    pthread_cond_signal(&aq->cv);
    pthread_mutex_unlock(&aq->mu);
    return job;
}

void authq_abandon(struct authq_job *job)
{
    if (job)
        job->abandoned = 1;
}

void authq_free(struct authq *aq)
{
    if (aq == NULL)
        return;
    pthread_mutex_lock(&aq->mu);
    aq->stopping = 1;
    pthread_cond_broadcast(&aq->cv);
    pthread_mutex_unlock(&aq->mu);
    for (int i = 0; i < aq->nworkers; i++)
        pthread_join(aq->workers[i], NULL);
    for (struct authq_job *lists[2] = {aq->queue, aq->finished}, **l = lists; l < lists + 2; l++)
        while (*l) {
            struct authq_job *next = (*l)->next;
            job_free(*l);
            *l = next;
        }
    while (aq->engines) {
        struct engine_slot *s = aq->engines;
        aq->engines = s->next;
        weir_engine_free(s->engine);
        OPENSSL_cleanse(s->conninfo, strlen(s->conninfo));
        free(s->conninfo);
        free(s);
    }
    if (aq->wake)
        event_free(aq->wake);
    close(aq->pipe[0]);
    close(aq->pipe[1]);
    pthread_mutex_destroy(&aq->mu);
    pthread_cond_destroy(&aq->cv);
    free(aq);
}
