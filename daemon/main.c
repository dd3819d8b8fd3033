/*
 * weir's entry point: command line (PgBouncer's: -d -q -v -u USER CONFIG,
 * plus --check-config, -V, -h), the daemon context, signals (SIGHUP reload,
 * SIGINT graceful shutdown, SIGTERM immediate, SIGUSR1/2 pause/resume),
 * systemd readiness notification, and the event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/rand.h>

#include "admin.h"
#include "auth.h"
#include "authquery.h"
#include "client.h"
#include "config.h"
#include "health.h"
#include "listener.h"
#include "metrics.h"
#include "pooler.h"
#include "prepared.h"
#include "server.h"
#include "stats.h"
#include "tls.h"

struct options {
    int daemonize, quiet, verbose, check_only;
    const char *user, *config;
};

static void usage(FILE *out)
{
    fprintf(out, "weir is a PostgreSQL connection pooler (PgBouncer-compatible).\n\n"
                 "usage: weir [OPTION]... CONFIG_FILE\n"
                 "  -d, --daemon        run in the background (needs pidfile)\n"
                 "  -q, --quiet         do not log to stderr\n"
                 "  -v, --verbose       more logging; repeat for more\n"
                 "  -u, --user=USER     switch to USER after startup\n"
                 "      --check-config  check the configuration and exit (0 if valid)\n"
                 "  -V, --version       print the version and exit\n"
                 "  -h, --help          print this help and exit\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("weir %s\nlibweir %s\nlibevent %s\nlibpq %d\n", WEIR_VERSION_STRING, weir_version(), event_get_version(),
                   PQlibVersion());
            exit(0);
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--daemon") == 0) {
            o->daemonize = 1;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose++;
        } else if (strcmp(a, "--check-config") == 0) {
            o->check_only = 1;
        } else if (strcmp(a, "-u") == 0 && i + 1 < argc) {
            o->user = argv[++i];
        } else if (strncmp(a, "--user=", 7) == 0) {
            o->user = a + 7;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "weir: unknown option %s\n", a);
            return -1;
        } else if (o->config == NULL) {
            o->config = a;
        } else {
            fprintf(stderr, "weir: more than one config file given\n");
            return -1;
        }
    }
    if (o->config == NULL) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;

    (void)what;
    switch (sig) {
    case SIGHUP:
        log_at(&d->log, LG_LOG, "got SIGHUP, re-reading config");
        (void)daemon_reload(daemon_main_worker(d));
        break;
    case SIGINT:
        daemon_begin_shutdown(d);
        break;
    case SIGTERM:
        daemon_notify("STOPPING=1");
        log_at(&d->log, LG_LOG, "got SIGTERM, fast exit");
        event_base_loopbreak(d->base);
        break;
    case SIGUSR1: /* the console's PAUSE; PgBouncer's lines */
        if (d->paused) {
            log_at(&d->log, LG_LOG, "got SIGUSR1, but already paused/suspended");
            break;
        }
        log_at(&d->log, LG_LOG, "got SIGUSR1, pausing all activity");
        admin_pause_all(d);
        break;
    case SIGUSR2: /* the console's RESUME */
        if (!d->paused) {
            log_at(&d->log, LG_LOG, "got SIGUSR2, but not paused/suspended");
            break;
        }
        log_at(&d->log, LG_LOG, "got SIGUSR2, continuing from PAUSE");
        admin_resume_all(d);
        break;
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    (void)fd;
    (void)what;
    stream_loop_tick(&daemon_main_worker(d)->loop);
    pooler_expire_autodb(d, stream_loop_now(&daemon_main_worker(d)->loop));
    pooler_collect(d);
    daemon_client_gone(d);
}

static struct event *add_signal(struct daemon *d, int sig)
{
    struct event *ev = evsignal_new(d->base, sig, signal_cb, d);
    if (ev)
        event_add(ev, NULL);
    return ev;
}

/* ---- process set-up ---- */

static int write_pidfile(const char *path)
{
    char buf[32];
    int fd, n;

    if (path[0] == '\0')
        return 0;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    return close(fd);
}

static int go_background(void)
{
    pid_t pid = fork();
    int fd;

    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    setsid();
    fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    return 0;
}

static int switch_user(const char *name)
{
    struct passwd *pw = getpwnam(name);

    if (pw == NULL)
        return -1;
    if (getuid() == pw->pw_uid)
        return 0;
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        return -1;
    return 0;
}

static void stderr_report(void *arg, weir_log_level sev, const char *file, int line, const char *message)
{
    (void)arg;
    if (line > 0)
        fprintf(stderr, "%s: %s:%d: %s\n", sev == WEIR_LOG_ERROR ? "ERROR" : "WARNING", file, line, message);
    else
        fprintf(stderr, "%s: %s%s%s\n", sev == WEIR_LOG_ERROR ? "ERROR" : "WARNING", file ? file : "",
                file ? ": " : "", message);
}

static int check_config(const char *path)
{
    struct weir_config *cfg = NULL;
    int rc = config_load(path, &cfg, stderr_report, NULL);

    if (rc == 0 && cfg->auth_file[0]) {
        struct userlist *ul = NULL;
        char err[512];
        if (userlist_load(cfg->auth_file, &ul, err, sizeof(err)) < 0) {
            fprintf(stderr, "ERROR: auth_file: %s\n", err);
            rc = -1;
        }
        userlist_free(ul);
    }
    if (rc == 0) { /* the certificates and keys load, the TLS settings are valid */
        struct tls_ctx *t = NULL;
        char err[1400];
        if (tls_ctx_new(cfg, &t, err, sizeof(err)) != 0) {
            fprintf(stderr, "ERROR: %s\n", err);
            rc = -1;
        }
        tls_ctx_free(t);
    }
    config_free(cfg);
    if (rc == 0)
        printf("%s: configuration is valid\n", path);
    return rc == 0 ? 0 : 1;
}

/* workers = 0: one per core. */
static int worker_count(const struct weir_config *cfg)
{
    long n = cfg->workers > 0 ? cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : (int)n;
}

/* The event loops: libevent's locks only when several threads share them
 * (they cost on every event operation of the data path). */
static int make_loops(struct daemon *d)
{
    int n = worker_count(d->cfg);

    if (n > 1 && evthread_use_pthreads() != 0)
        return -1;
    d->base = event_base_new();
    if (d->base == NULL || workers_new(d, n, d->base) != 0)
        return -1;
    return 0;
}

/* PgBouncer's first line: the fd limit and its own estimate of the fds it may
 * need (max_client_conn + 10, plus every pool at full size: one per database
 * with a forced user, one per user and database otherwise, the console's 2). */
static void log_limits(struct daemon *d)
{
    const struct weir_config *cfg = d->cfg;
    size_t users = (d->users ? userlist_count(d->users) : 0) + 1;
    long long want = (long long)cfg->max_client_conn + 10 + 2;
    struct rlimit lim;

    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        log_at(&d->log, LG_ERROR, "could not get RLIMIT_NOFILE: %s", strerror(errno));
        return;
    }
    for (size_t i = 0; i < cfg->n_dbs; i++) {
        const struct db_config *db = &cfg->dbs[i];
        int size = db->pool_size != CONFIG_UNSET ? db->pool_size : cfg->default_pool_size;
        want += (long long)size * (db->user ? 1 : (long long)users);
    }
    log_at(&d->log, LG_LOG, "kernel file descriptor limit: %lld (hard: %lld); max_client_conn: %d, max expected fd use: %lld",
           (long long)lim.rlim_cur, (long long)lim.rlim_max, cfg->max_client_conn, want);
}

static int daemon_start(struct daemon *d, const struct options *o)
{
    d->log.to_stderr = !o->quiet && !o->daemonize;
    d->log.min_level = LG_LOG - (o->verbose > 2 ? 2 : o->verbose);
    if (config_load(o->config, &d->cfg, daemon_report_to_log, d) != 0)
        return -1;
    if (make_loops(d) != 0) {
        log_at(&d->log, LG_FATAL, "cannot make the event loops");
        return -1;
    }
    if (d->cfg->verbose > o->verbose)
        d->log.min_level = LG_LOG - (d->cfg->verbose > 2 ? 2 : d->cfg->verbose);
    if (log_reopen(&d->log, d->cfg->logfile) != 0)
        log_at(&d->log, LG_WARNING, "cannot open logfile %s", d->cfg->logfile);
    if (log_set_syslog(&d->log, d->cfg->syslog, d->cfg->syslog_ident, d->cfg->syslog_facility) != 0)
        log_at(&d->log, LG_WARNING, "unknown syslog_facility %s; using daemon", d->cfg->syslog_facility);
    if (daemon_load_userlist(d, d->cfg, &d->users) != 0 || tls_start(d) != 0)
        return -1;
    d->scram = scram_cache_new(0);
    d->pstmts = pstmt_registry_new();
    if (d->pstmts == NULL)
        return -1;
    if (d->scram == NULL || RAND_bytes(d->mock_secret, sizeof(d->mock_secret)) != 1)
        return -1;
    log_limits(d);
    if (listeners_open(d) != 0) {
        log_at(&d->log, LG_FATAL, "no listening socket could be opened");
        return -1;
    }
    if (o->daemonize && go_background() != 0)
        return -1;
    if (write_pidfile(d->cfg->pidfile) != 0)
        log_at(&d->log, LG_WARNING, "cannot write pidfile %s: %s", d->cfg->pidfile, strerror(errno));
    if ((o->user || d->cfg->user[0]) && switch_user(o->user ? o->user : d->cfg->user) != 0) {
        log_at(&d->log, LG_FATAL, "cannot switch to user %s", o->user ? o->user : d->cfg->user);
        return -1;
    }
    return 0;
}

static void daemon_stop(struct daemon *d)
{
    d->stopping = 1;
    metrics_stop(d);
    admin_free(d);
    stats_stop(d);
    for (int i = 0; i < d->nworkers; i++)
        while (d->workers[i]->clients)
            client_disconnect(d->workers[i]->clients, NULL, "shutting down");
    for (int i = 0; i < d->nworkers; i++) {
        authq_free(d->workers[i]->authq); /* waits for lookups still running */
        d->workers[i]->authq = NULL;
    }
    server_close_unlinked(d);
    listeners_close(d);
    pooler_free_all(d);
    health_stop(d); /* after the pools: their connections report to it when closed */
    pstmt_registry_free(d->pstmts); /* after every server and client that referenced it */
    if (d->cfg && d->cfg->pidfile[0])
        unlink(d->cfg->pidfile);
    userlist_free(d->users);
    tls_ctx_free(d->tls);
    scram_cache_free(d->scram);
    config_free(d->cfg);
    free(d->by_id);
    d->by_id = NULL;
    log_close(&d->log);
}

int main(int argc, char **argv)
{
    struct options o = {0};
    struct daemon d;
    struct event *sigs[5], *tick;
    struct timeval second = {1, 0};
    const int signals[5] = {SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    int rc = 0;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    if (o.check_only)
        return check_config(o.config);
    memset(&d, 0, sizeof(d));
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&d.lock, NULL);
    d.main_thread = pthread_self();
    d.config_path = o.config;
    d.start_us = weir__now_us();
    d.start_wall = (int64_t)time(NULL);
    if (daemon_start(&d, &o) != 0) {
        fprintf(stderr, "weir: could not start; see the log above\n");
        daemon_stop(&d);
        return 1;
    }
    for (int i = 0; i < 5; i++)
        sigs[i] = add_signal(&d, signals[i]);
    (void)stats_start(&d);   /* logged; the pooler runs without them */
    (void)metrics_start(&d);
    if (health_start(&d) != 0)
        log_at(&d.log, LG_ERROR, "health checks: out of memory; multi-host entries use libpq's choice");
    tick = event_new(d.base, -1, EV_PERSIST, tick_cb, &d);
    event_add(tick, &second);
    if (workers_run(&d) != 0) {
        workers_join(&d);
        daemon_stop(&d);
        return 1;
    }
    log_at(&d.log, LG_LOG, "process up: weir %s, libevent %s (%s), libpq %d, %d worker%s", WEIR_VERSION_STRING,
           event_get_version(), event_base_get_method(d.base), PQlibVersion(), d.nworkers,
           d.nworkers == 1 ? "" : "s");
    daemon_notify("READY=1\nSTATUS=serving\nMAINPID=%d", (int)getpid());
    if (event_base_dispatch(d.base) < 0)
        rc = 1;
    log_at(&d.log, LG_LOG, "shutting down");
    workers_join(&d);
    daemon_stop(&d);
    /* Clients and servers closed above are freed by callbacks parked for the
     * next loop iteration: run it once so nothing is left behind. */
    event_base_loop(d.base, EVLOOP_NONBLOCK);
    workers_free(&d); /* the other loops get their last iteration there */
    event_free(tick);
    for (int i = 0; i < 5; i++)
        if (sigs[i])
            event_free(sigs[i]);
    if (d.base)
        event_base_free(d.base);
    pthread_mutex_destroy(&d.lock);
    return rc;
}
