/*
 * libweir benchmark (first part of `make bench`): SELECT 1 per second
 * through the Engine's pool against a fresh libpq connection per query, and
 * bare checkout/check-in operations per second with 1, 2 and 8 threads.
 * Usage: bench_engine "<libpq conninfo>" [seconds per scenario]
 * Prints one table; only ratios from the same run are meaningful.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weir/weir.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static weir_engine *engine_or_die(const char *dsn, const char *pool_opts)
{
    char url[2048], err[512];
    weir_engine *e;

    snprintf(url, sizeof(url), "%s %s", dsn, pool_opts);
    if (weir_engine_new(url, NULL, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_engine: %s\n", err);
        exit(1);
    }
    return e;
}

/* SELECT 1 through the pool: checkout, execute, return. */
static double engine_qps(const char *dsn, const char *pool_opts, double seconds)
{
    weir_engine *e = engine_or_die(dsn, pool_opts);
    long n = 0;
    double t0 = now_s(), t;

    do {
        weir_conn *c;
        weir_result *r;
        if (weir_engine_connect(e, -2, &c) != 0 || weir_conn_execute(c, "SELECT 1", 0, NULL, &r) != 0) {
            fprintf(stderr, "bench_engine: query through the pool failed\n");
            exit(1);
        }
        weir_result_free(r);
        weir_conn_close(c);
        n++;
    } while ((t = now_s() - t0) < seconds);
    weir_engine_free(e);
    return (double)n / t;
}

/* SELECT 1 on a new libpq connection each time: what a pool saves. */
static double direct_qps(const char *dsn, double seconds)
{
    long n = 0;
    double t0 = now_s(), t;

    do {
        PGconn *c = PQconnectdb(dsn);
        PGresult *r;
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "bench_engine: %s", PQerrorMessage(c));
            exit(1);
        }
        r = PQexec(c, "SELECT 1");
        PQclear(r);
        PQfinish(c);
        n++;
    } while ((t = now_s() - t0) < seconds);
    return (double)n / t;
}

struct churn {
    weir_engine *e;
    double until;
    atomic_long ops;
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    long n = 0;

    while (now_s() < c->until) {
        for (int i = 0; i < 256; i++) {
            weir_conn *conn;
            if (weir_engine_connect(c->e, -2, &conn) != 0) {
                fprintf(stderr, "bench_engine: checkout failed\n");
                exit(1);
            }
            weir_conn_close(conn);
        }
        n += 256;
    }
    atomic_fetch_add(&c->ops, n);
    return NULL;
}

/* Checkout + check-in without a query: the pool's own overhead. */
static double checkout_ops(const char *dsn, int threads, double seconds)
{
    struct churn c = {engine_or_die(dsn, "pool_size=8 max_overflow=0 pool_reset_on_return=0"), 0, 0};
    pthread_t t[8];
    weir_conn *warm[8];
    double t0;

    for (int i = 0; i < 8; i++) /* open all eight first: measure the pool, not connects */
        if (weir_engine_connect(c.e, -2, &warm[i]) != 0)
            exit(1);
    for (int i = 0; i < 8; i++)
        weir_conn_close(warm[i]);
    t0 = now_s();
    c.until = t0 + seconds;
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, churn_main, &c);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double rate = (double)atomic_load(&c.ops) / (now_s() - t0);
    weir_engine_free(c.e);
    return rate;
}

int main(int argc, char **argv)
{
    double secs = argc > 2 ? atof(argv[2]) : 3.0;
    const char *dsn = argc > 1 ? argv[1] : "";
    double pooled, pooled_noreset, direct;

    pooled = engine_qps(dsn, "pool_size=1", secs);
    pooled_noreset = engine_qps(dsn, "pool_size=1 pool_reset_on_return=0", secs);
    direct = direct_qps(dsn, secs);
    printf("%-52s %12s\n", "libweir scenario", "per second");
    printf("%-52s %12.0f\n", "SELECT 1, Engine pool (reset on return: DISCARD ALL)", pooled);
    printf("%-52s %12.0f\n", "SELECT 1, Engine pool (no reset)", pooled_noreset);
    printf("%-52s %12.0f\n", "SELECT 1, new libpq connection per query", direct);
    printf("%-52s %11.1fx\n", "  pool (no reset) / new connection", pooled_noreset / direct);
    for (int threads = 1; threads <= 8; threads *= (threads == 2 ? 4 : 2))
        printf("checkout+checkin, %d thread%s %*s %12.0f\n", threads, threads > 1 ? "s" : "",
               threads > 1 ? 32 : 33, "", checkout_ops(dsn, threads, secs));
    return 0;
}
