/*
 * Integration tests of the Engine against a real PostgreSQL: statements with
 * parameters and results, statement errors that leave the connection usable,
 * transactions, reset of session state between users, recovery from a
 * backend killed while idle in the pool, while checked out, and from a server
 * restart, checkout timeouts, the PGconn escape hatch, and clear errors for
 * bad URLs and unreachable servers.
 *
 * Environment: WEIR_TEST_DSN, a libpq conninfo or URI for a superuser (for
 * pg_terminate_backend), e.g. "host=/tmp/x port=5433 user=weir_test
 * dbname=postgres"; without it every test is skipped. WEIR_TEST_PG_RESTART, a
 * shell command that restarts that server; without it the restart test is
 * skipped. WEIR_TEST_VERBOSE=1 prints the library's log lines.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <weir/weir.h>

static const char *dsn;

static void log_to_stderr(void *arg, weir_log_level level, const char *msg)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};

    (void)arg;
    fprintf(stderr, "    [weir %s] %s\n", names[level], msg);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void need_dsn(void)
{
    if (dsn == NULL) {
        print_message("WEIR_TEST_DSN is not set: skipping\n");
        skip();
    }
}

/* The test DSN plus extra "key=value ..." settings, in the DSN's own form. */
static void make_url(char *buf, size_t len, const char *extra)
{
    int uri = strncmp(dsn, "postgresql://", 13) == 0 || strncmp(dsn, "postgres://", 11) == 0;

    if (!uri) {
        snprintf(buf, len, "%s %s", dsn, extra);
        return;
    }
    snprintf(buf, len, "%s%s%s", dsn, *extra ? (strchr(dsn, '?') ? "&" : "?") : "", extra);
    for (char *p = buf + strlen(dsn); *p; p++)
        if (*p == ' ')
            *p = '&';
}

static weir_engine *engine_with(const char *extra)
{
    char url[1024], err[256] = "";
    weir_engine_options opts = {0};
    weir_engine *e = NULL;

    if (getenv("WEIR_TEST_VERBOSE"))
        opts.log_fn = log_to_stderr;
    make_url(url, sizeof(url), extra);
    if (weir_engine_new(url, &opts, &e, err, sizeof(err)) != 0)
        fail_msg("weir_engine_new(%s): %s", url, err);
    return e;
}

static weir_conn *connect_ok(weir_engine *e)
{
    weir_conn *c = NULL;
    int rc = weir_engine_connect(e, 10000, &c);

    if (rc != 0) {
        char why[256];

        weir_pool_last_error(weir_engine_pool(e), why, sizeof(why));
        fail_msg("connect: %s (%s)", weir_strerror(rc), why);
    }
    return c;
}

/* Run sql expecting success; return the first column of the first row as
 * an int (or -1 when there is none). */
static long query_int(weir_conn *c, const char *sql)
{
    weir_result *r = NULL;
    long v = -1;
    int rc = weir_conn_execute(c, sql, 0, NULL, &r);

    if (rc != 0)
        fail_msg("%s: %s: %s", sql, weir_strerror(rc), weir_conn_error(c));
    if (weir_result_rows(r) > 0 && weir_result_value(r, 0, 0))
        v = strtol(weir_result_value(r, 0, 0), NULL, 10);
    weir_result_free(r);
    return v;
}

static void exec_ok(weir_conn *c, const char *sql)
{
    int rc = weir_conn_execute(c, sql, 0, NULL, NULL);

    if (rc != 0)
        fail_msg("%s: %s: %s", sql, weir_strerror(rc), weir_conn_error(c));
}

/* Kill a backend from a separate, plain libpq connection. */
static void terminate_backend(long pid)
{
    char sql[64];
    PGconn *admin = PQconnectdb(dsn);
    PGresult *res;

    if (PQstatus(admin) != CONNECTION_OK)
        fail_msg("admin connection: %s", PQerrorMessage(admin));
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%ld)", pid);
    res = PQexec(admin, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        fail_msg("pg_terminate_backend(%ld): %s", pid, PQerrorMessage(admin));
    PQclear(res);
    PQfinish(admin);
}

static weir_pool_stats stats_of(weir_engine *e)
{
    weir_pool_stats st;

    weir_pool_get_stats(weir_engine_pool(e), &st);
    return st;
}

/* Wait for the pool to have exactly `idle` idle connections and nothing busy. */
static void wait_idle(weir_engine *e, int idle, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    weir_pool_stats st;

    for (;;) {
        st = stats_of(e);
        if (st.idle == idle && st.busy == 0 && st.connecting == 0)
            return;
        if (now_ms() > end)
            fail_msg("pool never settled at %d idle (idle %d, busy %d, total %d)", idle, st.idle, st.busy,
                     st.total);
        sleep_ms(10);
    }
}

/* ---- tests ---- */

static void test_execute_params_nulls_and_columns(void **state)
{
    weir_engine *e;
    weir_conn *c;
    weir_result *r = NULL;
    const char *params[] = {"41", "hi", NULL};

    need_dsn();
    e = engine_with("");
    c = connect_ok(e);
    assert_int_equal(weir_conn_execute(c, "SELECT $1::int + 1 AS n, $2::text AS t, $3::text AS z", 3,
                                       params, &r),
                     0);
    assert_int_equal(weir_result_rows(r), 1);
    assert_int_equal(weir_result_columns(r), 3);
    assert_string_equal(weir_result_column_name(r, 0), "n");
    assert_string_equal(weir_result_column_name(r, 1), "t");
    assert_string_equal(weir_result_column_name(r, 2), "z");
    assert_null(weir_result_column_name(r, 3));
    assert_string_equal(weir_result_value(r, 0, 0), "42");
    assert_string_equal(weir_result_value(r, 0, 1), "hi");
    assert_null(weir_result_value(r, 0, 2));
    assert_true(weir_result_is_null(r, 0, 2));
    assert_false(weir_result_is_null(r, 0, 1));
    assert_null(weir_result_value(r, 1, 0));
    assert_null(weir_result_value(r, 0, -1));
    assert_string_equal(weir_result_command(r), "SELECT 1");
    assert_null(weir_result_sqlstate(r));
    assert_null(weir_result_error(r));
    weir_result_free(r);

    exec_ok(c, "CREATE TEMP TABLE t_affected (x int)");
    assert_int_equal(weir_conn_execute(c, "INSERT INTO t_affected SELECT generate_series(1, 5)", 0, NULL, &r),
                     0);
    assert_int_equal(weir_result_affected(r), 5);
    assert_string_equal(weir_result_command(r), "INSERT 0 5");
    weir_result_free(r);
    assert_int_equal(weir_conn_execute(c, "UPDATE t_affected SET x = x + 1 WHERE x > $1", 1,
                                       (const char *[]){"2"}, &r),
                     0);
    assert_int_equal(weir_result_affected(r), 3);
    weir_result_free(r);
    assert_int_equal(weir_conn_execute(c, "SET application_name = 'weir-test'", 0, NULL, &r), 0);
    assert_int_equal(weir_result_affected(r), -1);
    weir_result_free(r);

    /* NULL results and NULL arguments are harmless. */
    assert_int_equal(weir_result_rows(NULL), 0);
    assert_null(weir_result_value(NULL, 0, 0));
    assert_int_equal(weir_result_affected(NULL), -1);
    weir_result_free(NULL);
    assert_int_equal(weir_conn_execute(c, NULL, 0, NULL, NULL), WEIR_EINVAL);
    weir_conn_close(c);
    weir_conn_close(NULL);
    weir_engine_free(e);
    weir_engine_free(NULL);
}

static void test_statement_error_keeps_connection(void **state)
{
    weir_engine *e;
    weir_conn *c;
    weir_result *r = NULL;

    need_dsn();
    e = engine_with("");
    c = connect_ok(e);
    assert_int_equal(weir_conn_execute(c, "SELECT 1/0", 0, NULL, &r), WEIR_EQUERY);
    assert_non_null(r);
    assert_string_equal(weir_result_sqlstate(r), "22012");
    assert_non_null(strstr(weir_result_error(r), "division by zero"));
    assert_non_null(strstr(weir_conn_error(c), "division by zero"));
    weir_result_free(r);
    assert_false(weir_conn_is_broken(c));
    assert_int_equal(query_int(c, "SELECT 2"), 2);

    /* A failed statement inside a transaction: the rest of it fails with
     * 25P02, and COMMIT reports the rollback instead of pretending. */
    assert_int_equal(weir_conn_begin(c), 0);
    assert_int_equal(weir_conn_execute(c, "SELECT 1/0", 0, NULL, NULL), WEIR_EQUERY);
    assert_int_equal(weir_conn_execute(c, "SELECT 1", 0, NULL, &r), WEIR_EQUERY);
    assert_string_equal(weir_result_sqlstate(r), "25P02");
    weir_result_free(r);
    assert_int_equal(weir_conn_commit(c), WEIR_EQUERY);
    assert_non_null(strstr(weir_conn_error(c), "rolled back"));
    assert_int_equal(query_int(c, "SELECT 3"), 3);
    assert_false(weir_conn_is_broken(c));
    weir_conn_close(c);
    weir_engine_free(e);
}

static void test_transactions(void **state)
{
    weir_engine *e;
    weir_conn *c;

    need_dsn();
    e = engine_with("");
    c = connect_ok(e);
    exec_ok(c, "CREATE TEMP TABLE t_txn (x int)");
    assert_int_equal(weir_conn_begin(c), 0);
    exec_ok(c, "INSERT INTO t_txn VALUES (1)");
    assert_int_equal(query_int(c, "SELECT count(*) FROM t_txn"), 1);
    assert_int_equal(weir_conn_rollback(c), 0);
    assert_int_equal(query_int(c, "SELECT count(*) FROM t_txn"), 0);

    assert_int_equal(weir_conn_begin(c), 0);
    exec_ok(c, "INSERT INTO t_txn VALUES (2)");
    assert_int_equal(weir_conn_commit(c), 0);
    assert_int_equal(query_int(c, "SELECT count(*) FROM t_txn"), 1);
    weir_conn_close(c);
    weir_engine_free(e);
}

/*
 * One connection (pool_size=1) used twice: the backend is the same, yet a
 * SET, a temporary table, a prepared statement and an open transaction from
 * the first user are gone for the second.
 */
static void test_session_state_does_not_leak(void **state)
{
    weir_engine *e;
    weir_conn *c;
    long pid;

    need_dsn();
    e = engine_with("pool_size=1 max_overflow=0");
    c = connect_ok(e);
    pid = query_int(c, "SELECT pg_backend_pid()");
    exec_ok(c, "SET statement_timeout = '12345ms'");
    exec_ok(c, "CREATE TEMP TABLE t_leak (x int)");
    exec_ok(c, "PREPARE leak_stmt AS SELECT 1");
    assert_int_equal(weir_conn_begin(c), 0);
    exec_ok(c, "INSERT INTO t_leak VALUES (1)");
    weir_conn_close(c); /* inside the open transaction */

    c = connect_ok(e);
    assert_int_equal(query_int(c, "SELECT pg_backend_pid()"), pid);
    assert_int_equal(PQtransactionStatus(weir_conn_pgconn(c)), PQTRANS_IDLE);
    assert_int_equal(query_int(c, "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"), 0);
    assert_int_equal(query_int(c, "SELECT count(*) FROM pg_class WHERE relname = 't_leak'"), 0);
    assert_int_equal(query_int(c, "SELECT count(*) FROM pg_prepared_statements"), 0);
    weir_conn_close(c);
    weir_engine_free(e);
}

/* The same through the variant without DISCARD ALL, whose reset covers
 * settings, cursors and prepared statements (temporary tables stay). */
static void test_session_reset_nodiscard(void **state)
{
    weir_engine *e;
    weir_conn *c;
    long pid;

    need_dsn();
    e = engine_with("pool_size=1 max_overflow=0 dialect=postgresql-nodiscard");
    c = connect_ok(e);
    pid = query_int(c, "SELECT pg_backend_pid()");
    exec_ok(c, "SET statement_timeout = '12345ms'");
    exec_ok(c, "PREPARE leak_stmt AS SELECT 1");
    assert_int_equal(weir_conn_begin(c), 0);
    exec_ok(c, "DECLARE leak_cur CURSOR WITH HOLD FOR SELECT 1");
    assert_int_equal(weir_conn_commit(c), 0); /* a held cursor outlives it */
    assert_int_equal(weir_conn_begin(c), 0);
    weir_conn_close(c); /* inside an open transaction */

    c = connect_ok(e);
    assert_int_equal(query_int(c, "SELECT pg_backend_pid()"), pid);
    assert_int_equal(PQtransactionStatus(weir_conn_pgconn(c)), PQTRANS_IDLE);
    assert_int_equal(query_int(c, "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"), 0);
    assert_int_equal(query_int(c, "SELECT count(*) FROM pg_prepared_statements"), 0);
    /* (the statement's own unnamed portal is listed too) */
    assert_int_equal(query_int(c, "SELECT count(*) FROM pg_cursors WHERE name <> ''"), 0);
    weir_conn_close(c);
    weir_engine_free(e);
}

/*
 * A backend killed while its connection sits idle in the pool: the pool sees
 * the server's goodbye on the idle socket and drops the connection by itself
 * (no checkout, no pre-ping), and the next checkout gets a fresh backend.
 */
static void test_backend_killed_while_idle(void **state)
{
    weir_engine *e;
    weir_conn *c;
    weir_pool_stats st;
    long pid, pid2;
    int64_t end;

    need_dsn();
    e = engine_with("pool_size=1 max_overflow=0 pool_pre_ping=0");
    c = connect_ok(e);
    pid = query_int(c, "SELECT pg_backend_pid()");
    weir_conn_close(c);
    wait_idle(e, 1, 5000);

    terminate_backend(pid);
    end = now_ms() + 5000;
    do {
        sleep_ms(10);
        st = stats_of(e);
    } while (st.total != 0 && now_ms() < end);
    assert_int_equal(st.total, 0);
    assert_int_equal(st.idle, 0);

    c = connect_ok(e);
    pid2 = query_int(c, "SELECT pg_backend_pid()");
    assert_true(pid2 > 0);
    assert_true(pid2 != pid);
    weir_conn_close(c);
    weir_engine_free(e);
}

/* A backend killed while checked out: the statement says WEIR_EGONE, the
 * connection is discarded at close, and the engine carries on. */
static void test_backend_killed_while_checked_out(void **state)
{
    weir_engine *e;
    weir_conn *c;
    weir_result *r = NULL;
    long pid;

    need_dsn();
    e = engine_with("pool_size=1 max_overflow=0");
    c = connect_ok(e);
    pid = query_int(c, "SELECT pg_backend_pid()");
    terminate_backend(pid);
    sleep_ms(100);
    assert_int_equal(weir_conn_execute(c, "SELECT 1", 0, NULL, &r), WEIR_EGONE);
    assert_null(r);
    assert_true(weir_conn_is_broken(c));
    assert_true(strlen(weir_conn_error(c)) > 0);
    print_message("    execute on a killed backend: %s\n", weir_conn_error(c));
    /* It stays gone for later calls too. */
    assert_int_equal(weir_conn_execute(c, "SELECT 1", 0, NULL, NULL), WEIR_EGONE);
    weir_conn_close(c);

    c = connect_ok(e);
    assert_true(query_int(c, "SELECT pg_backend_pid()") != pid);
    weir_conn_close(c);
    assert_true(stats_of(e).closed >= 1);
    weir_engine_free(e);
}

/* The server restarts under an engine holding idle connections; once it is
 * back, the same engine serves statements again. */
static void test_server_restart(void **state)
{
    const char *restart = getenv("WEIR_TEST_PG_RESTART");
    weir_engine *e;
    weir_conn *c, *c2;
    int64_t end;
    int attempts = 0, rc;

    need_dsn();
    if (restart == NULL) {
        print_message("WEIR_TEST_PG_RESTART is not set: skipping the restart test\n");
        skip();
    }
    e = engine_with("pool_size=2 max_overflow=0");
    c = connect_ok(e);
    c2 = connect_ok(e);
    assert_int_equal(query_int(c, "SELECT 1"), 1);
    assert_int_equal(query_int(c2, "SELECT 1"), 1);
    weir_conn_close(c);
    weir_conn_close(c2);
    wait_idle(e, 2, 5000);

    if (system(restart) != 0)
        fail_msg("restart command failed: %s", restart);

    end = now_ms() + 30000;
    for (;;) {
        weir_result *r = NULL;

        attempts++;
        rc = weir_engine_connect(e, 5000, &c);
        if (rc == 0) {
            rc = weir_conn_execute(c, "SELECT 1", 0, NULL, &r);
            weir_result_free(r);
            weir_conn_close(c);
        }
        if (rc == 0 || now_ms() > end)
            break;
        sleep_ms(200);
    }
    print_message("    recovered after the restart in %d attempt(s)\n", attempts);
    assert_int_equal(rc, 0);
    /* The idle connections died with the old server and were noticed while
     * idle, so the very first attempt already had a live connection. */
    assert_int_equal(attempts, 1);
    weir_engine_free(e);
}

static void test_checkout_timeout(void **state)
{
    weir_engine *e;
    weir_conn *c, *c2 = NULL;
    int64_t t0, took;

    need_dsn();
    e = engine_with("pool_size=1 max_overflow=0 pool_timeout=0.3");
    c = connect_ok(e);
    t0 = now_ms();
    assert_int_equal(weir_engine_connect(e, -2, &c2), WEIR_ETIMEDOUT);
    took = now_ms() - t0;
    assert_null(c2);
    print_message("    second checkout timed out after %lld ms (pool_timeout 300 ms)\n", (long long)took);
    assert_true(took >= 280);
    assert_true(took < 1500);
    /* An explicit timeout overrides the pool's. */
    t0 = now_ms();
    assert_int_equal(weir_engine_connect(e, 50, &c2), WEIR_ETIMEDOUT);
    assert_true(now_ms() - t0 < 280);
    weir_conn_close(c);
    c2 = connect_ok(e);
    weir_conn_close(c2);
    weir_engine_free(e);
}

static void test_pgconn_escape_hatch(void **state)
{
    weir_engine *e;
    weir_conn *c;
    PGconn *pg;
    PGresult *res;

    need_dsn();
    e = engine_with("pool_size=1");
    c = connect_ok(e);
    pg = weir_conn_pgconn(c);
    assert_non_null(pg);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    assert_int_equal(PQisnonblocking(pg), 0);
    res = PQexecParams(pg, "SELECT $1::int * 6", 1, NULL, (const char *[]){"7"}, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "42");
    PQclear(res);
    assert_true(PQserverVersion(pg) >= 90000);
    weir_conn_close(c);

    c = connect_ok(e);
    assert_int_equal(query_int(c, "SELECT 5"), 5);
    weir_conn_close(c);
    weir_engine_free(e);
}

/* Several threads share one engine of three connections. */
struct worker {
    weir_engine *e;
    int ok;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < 40; i++) {
        weir_conn *c = NULL;
        weir_result *r = NULL;
        char n[16];
        const char *params[] = {n};

        snprintf(n, sizeof(n), "%d", i);
        if (weir_engine_connect(w->e, 10000, &c) != 0)
            continue;
        if (weir_conn_execute(c, "SELECT $1::int", 1, params, &r) == 0 && strcmp(weir_result_value(r, 0, 0), n) == 0)
            w->ok++;
        weir_result_free(r);
        weir_conn_close(c);
    }
    return NULL;
}

static void test_threads_share_engine(void **state)
{
    enum { N = 8 };
    struct worker w[N];
    pthread_t th[N];
    weir_engine *e;
    weir_pool_stats st;

    need_dsn();
    e = engine_with("pool_size=3 max_overflow=0");
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){e, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].ok, 40);
    }
    st = stats_of(e);
    assert_true(st.total <= 3);
    assert_int_equal(st.in_use, 0);
    weir_engine_free(e);
}

static int free_tcp_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void test_bad_url_and_unreachable_server(void **state)
{
    weir_engine *e = (weir_engine *)1;
    weir_conn *c = NULL;
    char err[256], url[256], why[256];
    int64_t t0;

    assert_int_equal(weir_engine_new("host=/tmp pool_size=lots", NULL, &e, err, sizeof(err)), WEIR_EINVAL);
    assert_null(e);
    assert_non_null(strstr(err, "pool_size"));
    print_message("    bad value: %s\n", err);

    assert_int_equal(weir_engine_new("postgresql:///db?pool_sizes=1", NULL, &e, err, sizeof(err)), WEIR_EINVAL);
    assert_non_null(strstr(err, "pool_sizes"));
    print_message("    unknown pool key: %s\n", err);

    assert_int_equal(weir_engine_new("host=/tmp hots=x", NULL, &e, err, sizeof(err)), WEIR_EINVAL);
    assert_non_null(strstr(err, "hots"));
    print_message("    unknown libpq key: %s\n", err);

    assert_int_equal(weir_engine_new("postgresql://h/db?pool_size=5&pool_min_size=9&max_overflow=0", NULL, &e,
                                     err, sizeof(err)),
                     WEIR_EINVAL);
    assert_null(e);
    print_message("    inconsistent sizes: %s\n", err);

    /* Unreachable: the engine is created lazily; the connect fails fast with
     * WEIR_ECONNECT and the pool can say why. */
    snprintf(url, sizeof(url), "host=127.0.0.1 port=%d user=nobody dbname=nothing pool_timeout=10",
             free_tcp_port());
    assert_int_equal(weir_engine_new(url, NULL, &e, err, sizeof(err)), 0);
    t0 = now_ms();
    assert_int_equal(weir_engine_connect(e, -2, &c), WEIR_ECONNECT);
    assert_null(c);
    assert_true(now_ms() - t0 < 5000);
    weir_pool_last_error(weir_engine_pool(e), why, sizeof(why));
    print_message("    unreachable: %s\n", why);
    assert_non_null(strstr(why, "refused"));
    weir_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_execute_params_nulls_and_columns),
        cmocka_unit_test(test_statement_error_keeps_connection),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_session_state_does_not_leak),
        cmocka_unit_test(test_session_reset_nodiscard),
        cmocka_unit_test(test_backend_killed_while_idle),
        cmocka_unit_test(test_backend_killed_while_checked_out),
        cmocka_unit_test(test_checkout_timeout),
        cmocka_unit_test(test_pgconn_escape_hatch),
        cmocka_unit_test(test_threads_share_engine),
        cmocka_unit_test(test_bad_url_and_unreachable_server),
        cmocka_unit_test(test_server_restart),
    };

    dsn = getenv("WEIR_TEST_DSN");
    if (dsn && !*dsn)
        dsn = NULL;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
