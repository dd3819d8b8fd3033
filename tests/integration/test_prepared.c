/*
 * Prepared statements through weir in transaction mode, with libpq: the
 * test starts its own weir (pool of 2 servers, max_prepared_statements=2, so
 * statements are evicted and prepared again all the time) in front of the
 * test cluster and checks every result:
 *
 *   PQprepare / PQexecPrepared across transactions, several clients;
 *   PQdescribePrepared (parameter and result types) after evictions;
 *   pipeline mode: many PQsendPrepare / PQsendQueryPrepared, then one
 *   PQpipelineSync, results matched one for one and in order; an error in
 *   the middle (PGRES_PIPELINE_ABORTED until the sync, usable after); a
 *   failing PQsendPrepare in the middle; PQsendFlushRequest without a sync;
 *   two clients with the same statement name for different queries;
 *   one client cycling through 5 statements; a failed Parse; 8 threads;
 *   PQclosePrepared (libpq 17 only; skipped before).
 *
 * Every wait for weir has a deadline (3 s), so a missing answer fails the
 * test instead of hanging it.
 *
 * Environment: WEIR_DAEMON (the weir binary) and the cluster's WEIR_TEST_PGHOST,
 * WEIR_TEST_PGPORT, WEIR_TEST_USER, WEIR_TEST_DB (tests/tools/check.sh, or
 * tests/tools/pgcluster.sh's env.sh). Without them every test is skipped.
 * WEIR_TEST_KEEP=1 keeps weir's directory (ini, log) for a look afterwards.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#define WAIT_MS 3000
#define POOL_SIZE 2
#define MAX_PREPARED 2

static const char *skip_reason;
static char dir[256];
static char conninfo[512];
static int weir_port;
static pid_t weir_pid = -1;

/* ---- small things ---- */

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

static int free_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int port_open(int port)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* The whole of a small file (weir's log), malloc'ed; NULL if absent. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf) {
        n = (long)fread(buf, 1, (size_t)n, f);
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

/* ---- weir ---- */

static int start_weir(void)
{
    const char *daemon = getenv("WEIR_DAEMON"), *host = getenv("WEIR_TEST_PGHOST"),
               *pgport = getenv("WEIR_TEST_PGPORT"), *user = getenv("WEIR_TEST_USER"),
               *db = getenv("WEIR_TEST_DB");
    char path[512], ini[2048], users[512];

    if (daemon == NULL || host == NULL || pgport == NULL || user == NULL || db == NULL) {
        skip_reason = "WEIR_DAEMON and WEIR_TEST_PGHOST/PGPORT/USER/DB are not all set "
                      "(run tests/tools/check.sh, or source a pgcluster.sh env.sh and set WEIR_DAEMON)";
        return 0;
    }
    if (access(daemon, X_OK) != 0) {
        fprintf(stderr, "weir daemon not executable: %s\n", daemon);
        return -1;
    }
    snprintf(dir, sizeof(dir), "/tmp/weir-prep-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    chmod(dir, 0755);
    snprintf(users, sizeof(users), "\"%s\" \"weir-test-pw\"\n", user);
    snprintf(path, sizeof(path), "%s/userlist.txt", dir);
    if (write_file(path, users) != 0)
        return -1;

    for (int attempt = 0; attempt < 3; attempt++) {
        weir_port = free_port();
        snprintf(ini, sizeof(ini),
                 "[databases]\n%s = host=%s port=%s dbname=%s\n"
                 "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir = %s\n"
                 "auth_type = trust\nauth_file = %s/userlist.txt\npool_mode = transaction\n"
                 "default_pool_size = %d\nmax_prepared_statements = %d\nmax_client_conn = 200\n"
                 "logfile = %s/weir.log\n",
                 db, host, pgport, db, weir_port, dir, dir, POOL_SIZE, MAX_PREPARED, dir);
        snprintf(path, sizeof(path), "%s/weir.ini", dir);
        if (write_file(path, ini) != 0)
            return -1;
        weir_pid = fork();
        if (weir_pid < 0)
            return -1;
        if (weir_pid == 0) {
            char errpath[512];
            FILE *err;

            prctl(PR_SET_PDEATHSIG, SIGKILL); /* a killed test leaves no weir behind */
            snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
            err = fopen(errpath, "a");
            if (err) {
                dup2(fileno(err), 1);
                dup2(fileno(err), 2);
            }
            execl(daemon, daemon, path, (char *)NULL);
            _exit(127);
        }
        for (int64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(20)) {
            int status;
            if (waitpid(weir_pid, &status, WNOHANG) == weir_pid) {
                weir_pid = -1;
                break; /* exited: maybe the port was taken meanwhile; try another */
            }
            if (port_open(weir_port)) {
                snprintf(conninfo, sizeof(conninfo),
                         "host=127.0.0.1 port=%d dbname=%s user=%s password=weir-test-pw connect_timeout=10", weir_port,
                         db, user);
                return 0;
            }
        }
        if (weir_pid > 0) {
            kill(weir_pid, SIGKILL);
            waitpid(weir_pid, NULL, 0);
            weir_pid = -1;
        }
    }
    fprintf(stderr, "weir did not start; see %s\n", dir);
    return -1;
}

/* Stop weir; non-zero if it had died or reported a bug. */
static int stop_weir(void)
{
    static const char *const bad[] = {"AddressSanitizer", "LeakSanitizer", "runtime error:",
                                      "invalid client transition", "invalid server transition"};
    int problems = 0, status = 0;
    char path[512];

    if (weir_pid <= 0)
        return 0;
    if (waitpid(weir_pid, &status, WNOHANG) == weir_pid) {
        fprintf(stderr, "weir exited during the tests (status %d)\n", status);
        problems++;
    } else {
        kill(weir_pid, SIGTERM);
        for (int64_t end = now_ms() + 5000;; sleep_ms(10)) {
            if (waitpid(weir_pid, &status, WNOHANG) == weir_pid)
                break;
            if (now_ms() > end) {
                fprintf(stderr, "weir still running 5 s after SIGTERM\n");
                kill(weir_pid, SIGKILL);
                waitpid(weir_pid, &status, 0);
                problems++;
                break;
            }
        }
        if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
            fprintf(stderr, "weir was killed by signal %d\n", WTERMSIG(status));
            problems++;
        }
    }
    weir_pid = -1;
    for (int f = 0; f < 2; f++) {
        char *text;
        snprintf(path, sizeof(path), "%s/%s", dir, f ? "stderr" : "weir.log");
        if ((text = read_file(path)) == NULL)
            continue;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            if (strstr(text, bad[i])) {
                fprintf(stderr, "weir reported \"%s\" (%s)\n", bad[i], path);
                problems++;
            }
        free(text);
    }
    if (problems || getenv("WEIR_TEST_KEEP"))
        fprintf(stderr, "weir's files are in %s\n", dir);
    else {
        const char *names[] = {"weir.ini", "userlist.txt", "weir.log", "stderr"};
        for (size_t i = 0; i < 4; i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    return problems;
}

static int group_setup(void **state)
{
    (void)state;
    return start_weir();
}

static int group_teardown(void **state)
{
    (void)state;
    return stop_weir() ? -1 : 0;
}

/* ---- connections, closed after each test whatever happened ---- */

#define MAX_CONNS 16
static PGconn *conns[MAX_CONNS];

static int test_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i])
            PQfinish(conns[i]);
        conns[i] = NULL;
    }
    return 0;
}

static void need_weir(void)
{
    if (skip_reason) {
        print_message("skipped: %s\n", skip_reason);
        skip();
    }
}

static PGconn *open_conn(void)
{
    PGconn *c = PQconnectdb(conninfo);

    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connecting to weir: %s", PQerrorMessage(c));
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i] == NULL) {
            conns[i] = c;
            return c;
        }
    }
    PQfinish(c);
    fail_msg("too many connections in one test");
    return NULL;
}

/* ---- waiting for results with a deadline ---- */

/* The next result (NULL between commands, as PQgetResult); fails the test
 * when weir has not answered within WAIT_MS. */
static PGresult *next_result(PGconn *c, const char *what)
{
    int64_t end = now_ms() + WAIT_MS;

    if (PQflush(c) < 0)
        fail_msg("%s: flush: %s", what, PQerrorMessage(c));
    while (PQisBusy(c)) {
        struct pollfd p = {PQsocket(c), POLLIN, 0};
        int left = (int)(end - now_ms());
        if (left <= 0)
            fail_msg("%s: no answer from weir within %d ms", what, WAIT_MS);
        if (poll(&p, 1, left) < 0 && errno != EINTR)
            fail_msg("poll: %s", strerror(errno));
        if (!PQconsumeInput(c))
            fail_msg("%s: %s", what, PQerrorMessage(c));
    }
    return PQgetResult(c);
}

/* All results of the command just sent; -> the last one (caller clears). */
static PGresult *last_result(PGconn *c, const char *what)
{
    PGresult *r, *last = NULL;

    while ((r = next_result(c, what)) != NULL) {
        PQclear(last);
        last = r;
    }
    if (last == NULL)
        fail_msg("%s: no result", what);
    return last;
}

static const char *sqlstate(const PGresult *r)
{
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s ? s : "";
}

static void check_status(PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) != want)
        fail_msg("%s: %s (want %s) %s %s", what, PQresStatus(PQresultStatus(r)), PQresStatus(want), sqlstate(r),
                 PQresultErrorMessage(r));
}

static void check_error(PGresult *r, const char *state, const char *what)
{
    if (PQresultStatus(r) != PGRES_FATAL_ERROR || strcmp(sqlstate(r), state) != 0)
        fail_msg("%s: %s %s (want an error %s) %s", what, PQresStatus(PQresultStatus(r)), sqlstate(r), state,
                 PQresultErrorMessage(r));
}

static void check_value(PGresult *r, const char *want, const char *what)
{
    check_status(r, PGRES_TUPLES_OK, what);
    if (PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), want) != 0)
        fail_msg("%s: got %d rows, \"%s\", want \"%s\"", what, PQntuples(r), PQntuples(r) ? PQgetvalue(r, 0, 0) : "",
                 want);
}

static PGresult *x_exec(PGconn *c, const char *sql)
{
    if (!PQsendQuery(c, sql))
        fail_msg("send %s: %s", sql, PQerrorMessage(c));
    return last_result(c, sql);
}

static void x_ok(PGconn *c, const char *sql)
{
    PGresult *r = x_exec(c, sql);
    check_status(r, PGRES_COMMAND_OK, sql);
    PQclear(r);
}

static PGresult *x_prepare(PGconn *c, const char *name, const char *query, int n, const Oid *types)
{
    if (!PQsendPrepare(c, name, query, n, types))
        fail_msg("send prepare %s: %s", name, PQerrorMessage(c));
    return last_result(c, name);
}

static void x_prepare_ok(PGconn *c, const char *name, const char *query, int n, const Oid *types)
{
    PGresult *r = x_prepare(c, name, query, n, types);
    check_status(r, PGRES_COMMAND_OK, name);
    PQclear(r);
}

static PGresult *x_exec_prepared(PGconn *c, const char *name, int n, const char *const *values)
{
    if (!PQsendQueryPrepared(c, name, n, values, NULL, NULL, 0))
        fail_msg("send exec %s: %s", name, PQerrorMessage(c));
    return last_result(c, name);
}

static void x_expect_prepared(PGconn *c, const char *name, int n, const char *const *values, const char *want)
{
    PGresult *r = x_exec_prepared(c, name, n, values);
    char what[128];

    snprintf(what, sizeof(what), "exec %s", name);
    check_value(r, want, what);
    PQclear(r);
}

static PGresult *x_describe(PGconn *c, const char *name)
{
    if (!PQsendDescribePrepared(c, name))
        fail_msg("send describe %s: %s", name, PQerrorMessage(c));
    return last_result(c, name);
}

/* In pipeline mode: the next command's result, then its NULL. */
static PGresult *pipe_result(PGconn *c, const char *what)
{
    PGresult *r = next_result(c, what), *end;

    if (r == NULL)
        fail_msg("%s: NULL where a result was due", what);
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
        return r; /* no NULL after a sync */
    end = next_result(c, what);
    if (end != NULL)
        fail_msg("%s: a second result %s where NULL was due", what, PQresStatus(PQresultStatus(end)));
    return r;
}

static void pipe_expect(PGconn *c, ExecStatusType want, const char *value, const char *what)
{
    PGresult *r = pipe_result(c, what);

    if (value)
        check_value(r, value, what);
    else
        check_status(r, want, what);
    PQclear(r);
}

static void enter_pipeline(PGconn *c)
{
    if (!PQenterPipelineMode(c))
        fail_msg("PQenterPipelineMode: %s", PQerrorMessage(c));
}

static void exit_pipeline(PGconn *c)
{
    if (!PQexitPipelineMode(c))
        fail_msg("PQexitPipelineMode: %s", PQerrorMessage(c));
}

/* ---- tests ---- */

/* 3 clients, 3 statements each (one more than max_prepared_statements),
 * autocommit and explicit transactions, results checked. */
static void test_prepare_exec_across_transactions(void **state)
{
    PGconn *c[3];
    char a[16], b[16], want[64];

    (void)state;
    need_weir();
    for (int i = 0; i < 3; i++) {
        c[i] = open_conn();
        x_prepare_ok(c[i], "add", "SELECT $1::int + $2::int", 0, NULL);
        x_prepare_ok(c[i], "rep", "SELECT repeat($1::text, $2::int)", 0, NULL);
        x_prepare_ok(c[i], "cnt", "SELECT count(*) FROM generate_series(1, $1::int)", 0, NULL);
    }
    for (int n = 0; n < 150; n++) {
        PGconn *x = c[n % 3];
        int txn = n % 4 == 3;
        const char *v[2] = {a, b};

        if (txn)
            x_ok(x, "BEGIN");
        snprintf(a, sizeof(a), "%d", n);
        snprintf(b, sizeof(b), "%d", n % 3 * 1000);
        snprintf(want, sizeof(want), "%d", n + n % 3 * 1000);
        x_expect_prepared(x, "add", 2, v, want);
        snprintf(a, sizeof(a), "%c", 'a' + n % 26);
        snprintf(b, sizeof(b), "%d", n % 5 + 1);
        memset(want, 'a' + n % 26, (size_t)(n % 5 + 1));
        want[n % 5 + 1] = '\0';
        x_expect_prepared(x, "rep", 2, v, want);
        snprintf(a, sizeof(a), "%d", n);
        snprintf(want, sizeof(want), "%d", n);
        x_expect_prepared(x, "cnt", 1, v, want);
        if (txn)
            x_ok(x, "COMMIT");
    }
}

static void check_description(PGresult *r)
{
    check_status(r, PGRES_COMMAND_OK, "describe");
    assert_int_equal(PQnparams(r), 2);
    assert_int_equal(PQparamtype(r, 0), 23); /* int4 */
    assert_int_equal(PQparamtype(r, 1), 25); /* text */
    assert_int_equal(PQnfields(r), 3);
    assert_string_equal(PQfname(r, 0), "num");
    assert_string_equal(PQfname(r, 1), "txt");
    assert_string_equal(PQfname(r, 2), "ts");
    assert_int_equal(PQftype(r, 0), 23);
    assert_int_equal(PQftype(r, 1), 25);
    assert_int_equal(PQftype(r, 2), 1184); /* timestamptz */
}

/* PQdescribePrepared, also after other clients' statements evicted it. */
static void test_describe_prepared(void **state)
{
    PGconn *c = NULL, *other = NULL;
    PGresult *r;

    (void)state;
    need_weir();
    c = open_conn();
    other = open_conn();
    r = x_prepare(c, "d", "SELECT $1::int4 AS num, $2::text AS txt, now() AS ts", 0, NULL);
    check_status(r, PGRES_COMMAND_OK, "prepare d");
    PQclear(r);
    for (int n = 0; n < 10; n++) {
        char name[16], q[64];

        check_description(r = x_describe(c, "d"));
        PQclear(r);
        /* the other client fills the servers with its own statements */
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof(name), "o%d_%d", n, k);
            snprintf(q, sizeof(q), "SELECT %d + %d", n, k);
            x_prepare_ok(other, name, q, 0, NULL);
        }
        x_ok(c, "BEGIN");
        check_description(r = x_describe(c, "d"));
        PQclear(r);
        x_ok(c, "COMMIT");
    }
    r = x_describe(c, "nosuch");
    check_error(r, "26000", "describe an unknown name");
    PQclear(r);
}

/* Many statements in one pipeline, results in order; three rounds, two
 * clients taking turns. */
static void test_pipeline(void **state)
{
    PGconn *c[2];
    static const char *const names[] = {"p1", "p2", "p3"};

    (void)state;
    need_weir();
    for (int i = 0; i < 2; i++)
        c[i] = open_conn();
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 2; i++) {
            PGconn *x = c[i];
            char vals[90][16], want[16];

            enter_pipeline(x);
            if (round == 0) {
                char q[64];
                snprintf(q, sizeof(q), "SELECT $1::int * 10 + %d", i);
                if (!PQsendPrepare(x, "p1", q, 0, NULL) ||
                    !PQsendPrepare(x, "p2", "SELECT $1::text || '!'", 0, NULL) ||
                    !PQsendPrepare(x, "p3", "SELECT $1::int - 1", 0, NULL))
                    fail_msg("send prepare: %s", PQerrorMessage(x));
            }
            for (int k = 0; k < 90; k++) {
                const char *v[1] = {vals[k]};
                snprintf(vals[k], sizeof(vals[k]), "%d", k + round * 1000);
                if (!PQsendQueryPrepared(x, names[k % 3], 1, v, NULL, NULL, 0))
                    fail_msg("send query %d: %s", k, PQerrorMessage(x));
            }
            if (!PQpipelineSync(x))
                fail_msg("sync: %s", PQerrorMessage(x));
            if (round == 0)
                for (int k = 0; k < 3; k++)
                    pipe_expect(x, PGRES_COMMAND_OK, NULL, "pipelined prepare");
            for (int k = 0; k < 90; k++) {
                int v = k + round * 1000;
                if (k % 3 == 0)
                    snprintf(want, sizeof(want), "%d", v * 10 + i);
                else if (k % 3 == 1)
                    snprintf(want, sizeof(want), "%d!", v);
                else
                    snprintf(want, sizeof(want), "%d", v - 1);
                pipe_expect(x, PGRES_TUPLES_OK, want, "pipelined query");
            }
            pipe_expect(x, PGRES_PIPELINE_SYNC, NULL, "sync");
            exit_pipeline(x);
        }
    }
    {
        const char *v[1] = {"7"};
        x_expect_prepared(c[0], "p1", 1, v, "70");
        x_expect_prepared(c[1], "p1", 1, v, "71");
    }
}

/* An error in the middle of a pipeline: later commands are aborted until the
 * sync; afterwards the connection and its statements work. */
static void test_pipeline_error_in_middle(void **state)
{
    PGconn *c;
    char buf[16][8];
    const char *v[1];

    (void)state;
    need_weir();
    c = open_conn();
    enter_pipeline(c);
    if (!PQsendPrepare(c, "div", "SELECT 100 / $1::int", 0, NULL))
        fail_msg("%s", PQerrorMessage(c));
    for (int k = 0; k < 11; k++) {
        snprintf(buf[k], sizeof(buf[k]), "%d", k < 5 ? k + 1 : k == 5 ? 0 : k);
        v[0] = buf[k];
        if (!PQsendQueryPrepared(c, "div", 1, v, NULL, NULL, 0))
            fail_msg("%s", PQerrorMessage(c));
    }
    if (!PQpipelineSync(c))
        fail_msg("%s", PQerrorMessage(c));
    v[0] = "4";
    if (!PQsendQueryPrepared(c, "div", 1, v, NULL, NULL, 0) || !PQpipelineSync(c))
        fail_msg("%s", PQerrorMessage(c));

    pipe_expect(c, PGRES_COMMAND_OK, NULL, "prepare div");
    for (int k = 0; k < 5; k++) {
        char want[8];
        snprintf(want, sizeof(want), "%d", 100 / (k + 1));
        pipe_expect(c, PGRES_TUPLES_OK, want, "before the error");
    }
    {
        PGresult *r = pipe_result(c, "the error");
        check_error(r, "22012", "division by zero");
        PQclear(r);
    }
    for (int k = 6; k < 11; k++)
        pipe_expect(c, PGRES_PIPELINE_ABORTED, NULL, "after the error");
    pipe_expect(c, PGRES_PIPELINE_SYNC, NULL, "first sync");
    pipe_expect(c, PGRES_TUPLES_OK, "25", "after the sync");
    pipe_expect(c, PGRES_PIPELINE_SYNC, NULL, "second sync");
    exit_pipeline(c);
    v[0] = "50";
    x_expect_prepared(c, "div", 1, v, "2");
}

/* A PQsendPrepare that fails in the middle of a pipeline. Afterwards the
 * failed name and the skipped one do not exist (as in PostgreSQL); the
 * statement prepared before the error does. `shared` uses statement texts
 * another client has already prepared (so weir has them on its servers). */
static void pipeline_failed_prepare(const char *const texts[3])
{
    PGconn *c = open_conn();
    PGresult *r;
    const char *v[1] = {"5"};

    enter_pipeline(c);
    if (!PQsendPrepare(c, "good1", texts[0], 0, NULL) || !PQsendPrepare(c, "badp", "SELEC $1", 0, NULL) ||
        !PQsendPrepare(c, "good2", texts[1], 0, NULL) || !PQsendQueryPrepared(c, "good1", 1, v, NULL, NULL, 0) ||
        !PQpipelineSync(c))
        fail_msg("%s", PQerrorMessage(c));
    pipe_expect(c, PGRES_COMMAND_OK, NULL, "prepare good1");
    r = pipe_result(c, "prepare badp");
    check_error(r, "42601", "syntax error");
    PQclear(r);
    pipe_expect(c, PGRES_PIPELINE_ABORTED, NULL, "prepare good2 (skipped)");
    pipe_expect(c, PGRES_PIPELINE_ABORTED, NULL, "query good1 (skipped)");
    pipe_expect(c, PGRES_PIPELINE_SYNC, NULL, "sync");
    exit_pipeline(c);

    x_expect_prepared(c, "good1", 1, v, texts[2]);
    r = x_describe(c, "badp");
    check_error(r, "26000", "describe the failed name");
    PQclear(r);
    r = x_describe(c, "good2");
    check_error(r, "26000", "describe the skipped name");
    PQclear(r);
    r = x_exec_prepared(c, "good2", 1, v);
    check_error(r, "26000", "execute the skipped name");
    PQclear(r);
    x_prepare_ok(c, "good2", texts[1], 0, NULL);
    x_prepare_ok(c, "badp", "SELECT $1::int * 3", 0, NULL);
    x_expect_prepared(c, "badp", 1, v, "15");
}

static void test_pipeline_failed_prepare(void **state)
{
    static const char *const texts[3] = {"SELECT $1::int + 11", "SELECT $1::int + 12", "16"};

    (void)state;
    need_weir();
    pipeline_failed_prepare(texts);
}

static void test_pipeline_failed_prepare_shared_texts(void **state)
{
    static const char *const texts[3] = {"SELECT $1::int + 21", "SELECT $1::int + 22", "26"};
    PGconn *a, *b;

    (void)state;
    need_weir();
    /* both servers get both statements: two clients hold them at once */
    a = open_conn();
    b = open_conn();
    x_ok(a, "BEGIN");
    x_ok(b, "BEGIN");
    x_prepare_ok(a, "x1", texts[0], 0, NULL);
    x_prepare_ok(a, "x2", texts[1], 0, NULL);
    x_prepare_ok(b, "x1", texts[0], 0, NULL);
    x_prepare_ok(b, "x2", texts[1], 0, NULL);
    x_ok(a, "COMMIT");
    x_ok(b, "COMMIT");
    pipeline_failed_prepare(texts);
}

/* PQsendFlushRequest instead of a sync: the answers come without one. */
static void flush_request(int on_servers)
{
    PGconn *c;
    PGresult *r;
    const char *q = on_servers ? "SELECT 77" : "SELECT 78";

    if (on_servers) { /* both servers get the statement: two clients hold them at once */
        PGconn *a = open_conn(), *b = open_conn();
        x_ok(a, "BEGIN");
        x_ok(b, "BEGIN");
        x_prepare_ok(a, "warm", q, 0, NULL);
        x_prepare_ok(b, "warm", q, 0, NULL);
        x_ok(a, "COMMIT");
        x_ok(b, "COMMIT");
    }
    c = open_conn();
    enter_pipeline(c);
    if (!PQsendPrepare(c, "f", q, 0, NULL) || !PQsendFlushRequest(c))
        fail_msg("%s", PQerrorMessage(c));
    r = next_result(c, "prepare then flush request");
    if (r == NULL)
        fail_msg("no result for the prepare");
    check_status(r, PGRES_COMMAND_OK, "prepare then flush request");
    PQclear(r);
    if ((r = next_result(c, "end of the prepare")) != NULL)
        fail_msg("unexpected %s", PQresStatus(PQresultStatus(r)));
    if (!PQsendQueryPrepared(c, "f", 0, NULL, NULL, NULL, 0) || !PQsendFlushRequest(c))
        fail_msg("%s", PQerrorMessage(c));
    pipe_expect(c, PGRES_TUPLES_OK, on_servers ? "77" : "78", "query then flush request");
    if (!PQpipelineSync(c))
        fail_msg("%s", PQerrorMessage(c));
    pipe_expect(c, PGRES_PIPELINE_SYNC, NULL, "sync");
    exit_pipeline(c);
}

static void test_pipeline_flush_request_new_statement(void **state)
{
    (void)state;
    need_weir();
    flush_request(0);
}

static void test_pipeline_flush_request_statement_on_server(void **state)
{
    (void)state;
    need_weir();
    flush_request(1);
}

/* Statement names belong to their client. */
static void test_same_name_two_clients(void **state)
{
    PGconn *a, *b;
    char n[16], want[32];
    const char *v[1] = {n};

    (void)state;
    need_weir();
    a = open_conn();
    b = open_conn();
    x_prepare_ok(a, "s", "SELECT 'one:' || $1::text", 0, NULL);
    x_prepare_ok(b, "s", "SELECT $1::int * 2", 0, NULL);
    for (int k = 0; k < 50; k++) {
        snprintf(n, sizeof(n), "%d", k);
        snprintf(want, sizeof(want), "one:%d", k);
        x_expect_prepared(a, "s", 1, v, want);
        snprintf(want, sizeof(want), "%d", k * 2);
        x_expect_prepared(b, "s", 1, v, want);
        if (k % 10 == 9) { /* and inside transactions */
            x_ok(a, "BEGIN");
            x_ok(b, "BEGIN");
            x_expect_prepared(b, "s", 1, v, want);
            snprintf(want, sizeof(want), "one:%d", k);
            x_expect_prepared(a, "s", 1, v, want);
            x_ok(a, "COMMIT");
            x_ok(b, "COMMIT");
        }
    }
}

/* max_prepared_statements=2, 5 statements: autocommit, transactions, pipelines. */
static void test_eviction_five_statements(void **state)
{
    PGconn *c[2];
    char n[16], want[32], q[64], name[8];
    const char *v[1] = {n};

    (void)state;
    need_weir();
    for (int i = 0; i < 2; i++) {
        c[i] = open_conn();
        for (int k = 0; k < 5; k++) {
            snprintf(name, sizeof(name), "e%d", k);
            snprintf(q, sizeof(q), "SELECT $1::int * %d + %d", k + 1, i);
            x_prepare_ok(c[i], name, q, 0, NULL);
        }
    }
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 2; i++) {
            PGconn *x = c[i];
            int mode = round % 3; /* 0 autocommit, 1 transaction, 2 pipeline */

            snprintf(n, sizeof(n), "%d", round);
            if (mode == 1)
                x_ok(x, "BEGIN");
            if (mode == 2) {
                enter_pipeline(x);
                for (int k = 0; k < 5; k++) {
                    snprintf(name, sizeof(name), "e%d", (k + round) % 5);
                    if (!PQsendQueryPrepared(x, name, 1, v, NULL, NULL, 0))
                        fail_msg("%s", PQerrorMessage(x));
                }
                if (!PQpipelineSync(x))
                    fail_msg("%s", PQerrorMessage(x));
            }
            for (int k = 0; k < 5; k++) {
                int e = (k + round) % 5;
                snprintf(name, sizeof(name), "e%d", e);
                snprintf(want, sizeof(want), "%d", round * (e + 1) + i);
                if (mode == 2)
                    pipe_expect(x, PGRES_TUPLES_OK, want, "pipelined");
                else
                    x_expect_prepared(x, name, 1, v, want);
            }
            if (mode == 2) {
                pipe_expect(x, PGRES_PIPELINE_SYNC, NULL, "sync");
                exit_pipeline(x);
            }
            if (mode == 1)
                x_ok(x, "COMMIT");
        }
    }
}

/* A Parse that fails: PostgreSQL's error; the name does not exist after. */
static void test_failed_parse(void **state)
{
    PGconn *c;
    PGresult *r;

    (void)state;
    need_weir();
    c = open_conn();
    r = x_prepare(c, "bad", "SELEC 1", 0, NULL);
    check_error(r, "42601", "prepare with a syntax error");
    PQclear(r);
    r = x_exec(c, "SELECT 1");
    check_value(r, "1", "a query after it");
    PQclear(r);
    r = x_describe(c, "bad");
    check_error(r, "26000", "describe the failed name");
    PQclear(r);
    r = x_exec_prepared(c, "bad", 0, NULL);
    check_error(r, "26000", "execute the failed name");
    PQclear(r);
    x_prepare_ok(c, "bad", "SELECT 2", 0, NULL);
    x_expect_prepared(c, "bad", 0, NULL, "2");
    /* and in a transaction: PostgreSQL's error, then ROLLBACK, then it works */
    x_ok(c, "BEGIN");
    r = x_prepare(c, "bad2", "SELECT nosuchcolumn", 0, NULL);
    check_error(r, "42703", "prepare with an unknown column");
    PQclear(r);
    r = x_exec(c, "SELECT 1");
    check_error(r, "25P02", "in the aborted transaction");
    PQclear(r);
    x_ok(c, "ROLLBACK");
    x_prepare_ok(c, "bad2", "SELECT 3", 0, NULL);
    x_expect_prepared(c, "bad2", 0, NULL, "3");
}

static void test_close_prepared(void **state)
{
    (void)state;
    need_weir();
#ifdef LIBPQ_HAS_CLOSE_PREPARED
    {
        PGconn *c = open_conn(), *other = open_conn();
        PGresult *r;

        x_prepare_ok(c, "cl", "SELECT 5", 0, NULL);
        x_prepare_ok(other, "cl", "SELECT 5", 0, NULL);
        r = PQclosePrepared(c, "cl");
        check_status(r, PGRES_COMMAND_OK, "close");
        PQclear(r);
        r = x_exec_prepared(c, "cl", 0, NULL);
        check_error(r, "26000", "execute a closed statement");
        PQclear(r);
        x_expect_prepared(other, "cl", 0, NULL, "5");
        x_prepare_ok(c, "cl", "SELECT 6", 0, NULL);
        x_expect_prepared(c, "cl", 0, NULL, "6");
    }
#else
    print_message("skipped: PQclosePrepared needs libpq 17, this is libpq %d\n", PQlibVersion());
    skip();
#endif
}

/* 8 threads, each its own connection, over the 2 servers. */
struct worker {
    int id, failed;
    char msg[256];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    PGconn *c = PQconnectdb(conninfo);
    char q[64], n[16], want[32], name[8];
    const char *v[1] = {n};

    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(w->msg, sizeof(w->msg), "connect: %s", PQerrorMessage(c));
        w->failed = 1;
        PQfinish(c);
        return NULL;
    }
    for (int k = 0; k < 4 && !w->failed; k++) {
        PGresult *r;
        snprintf(name, sizeof(name), "t%d", k);
        snprintf(q, sizeof(q), "SELECT $1::int * %d + %d", k + 2, w->id);
        r = PQprepare(c, name, q, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(w->msg, sizeof(w->msg), "prepare %s: %s", name, PQresultErrorMessage(r));
            w->failed = 1;
        }
        PQclear(r);
    }
    for (int i = 0; i < 200 && !w->failed; i++) {
        int k = (i * 7 + w->id) % 4, txn = i % 5 == 0;
        PGresult *r;

        if (txn)
            PQclear(PQexec(c, "BEGIN"));
        snprintf(name, sizeof(name), "t%d", k);
        snprintf(n, sizeof(n), "%d", i);
        snprintf(want, sizeof(want), "%d", i * (k + 2) + w->id);
        r = PQexecPrepared(c, name, 1, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), want) != 0) {
            snprintf(w->msg, sizeof(w->msg), "thread %d, %s(%s): %s %s, want %s", w->id, name, n,
                     PQresStatus(PQresultStatus(r)), PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0)
                                                                                          : PQresultErrorMessage(r),
                     want);
            w->failed = 1;
        }
        PQclear(r);
        if (txn)
            PQclear(PQexec(c, "COMMIT"));
    }
    PQfinish(c);
    return NULL;
}

static void test_threads(void **state)
{
    enum { N = 8 };
    pthread_t t[N];
    struct worker w[N];

    (void)state;
    need_weir();
    alarm(60); /* blocking libpq calls here: a hang ends the program */
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    alarm(0);
    for (int i = 0; i < N; i++)
        if (w[i].failed)
            fail_msg("%s", w[i].msg);
}

static void on_alarm(int sig)
{
    static const char msg[] = "test_prepared: a test hung (no answer from weir in 60 s)\n";

    (void)sig;
    if (weir_pid > 0)
        kill(weir_pid, SIGTERM);
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_prepare_exec_across_transactions, test_teardown),
        cmocka_unit_test_teardown(test_describe_prepared, test_teardown),
        cmocka_unit_test_teardown(test_pipeline, test_teardown),
        cmocka_unit_test_teardown(test_pipeline_error_in_middle, test_teardown),
        cmocka_unit_test_teardown(test_pipeline_failed_prepare, test_teardown),
        cmocka_unit_test_teardown(test_pipeline_failed_prepare_shared_texts, test_teardown),
        cmocka_unit_test_teardown(test_pipeline_flush_request_new_statement, test_teardown),
        cmocka_unit_test_teardown(test_pipeline_flush_request_statement_on_server, test_teardown),
        cmocka_unit_test_teardown(test_same_name_two_clients, test_teardown),
        cmocka_unit_test_teardown(test_eviction_five_statements, test_teardown),
        cmocka_unit_test_teardown(test_failed_parse, test_teardown),
        cmocka_unit_test_teardown(test_close_prepared, test_teardown),
        cmocka_unit_test_teardown(test_threads, test_teardown),
    };

    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
