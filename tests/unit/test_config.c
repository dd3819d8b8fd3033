/*
 * Unit tests of the daemon's configuration (daemon/config.c): a file with
 * only [databases] yields PgBouncer 1.18's defaults (checked against rows
 * copied from a real PgBouncer 1.18's SHOW CONFIG), [pgbouncer] and [weir]
 * are one section, %include nests and resolves relative paths against the
 * working directory as PgBouncer does, unknown keys warn and bad values fail
 * with file and line, [databases] and [users] entries parse as PgBouncer
 * parses them while libpq's keys are kept, and SET and the reload diff
 * respect which settings need a restart. Every fixture file is written into
 * a fresh temporary directory, which is also the working directory.
 */
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "hba.h"

#define MAX_REPORTS 64

struct report {
    weir_log_level sev;
    char file[PATH_MAX];
    int line;
    char msg[1024];
};

struct fixture {
    char dir[64];
    char oldcwd[PATH_MAX];
    struct report reports[MAX_REPORTS];
    int n_reports, n_errors, n_warnings;
    struct weir_config *cfg;
};

static void collect(void *arg, weir_log_level sev, const char *file, int line, const char *msg)
{
    struct fixture *f = arg;
    struct report *r;

    if (sev == WEIR_LOG_ERROR)
        f->n_errors++;
    else
        f->n_warnings++;
    if (f->n_reports == MAX_REPORTS)
        return;
    r = &f->reports[f->n_reports++];
    r->sev = sev;
    snprintf(r->file, sizeof(r->file), "%s", file ? file : "");
    r->line = line;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/weir-config-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_non_null(getcwd(f->oldcwd, sizeof(f->oldcwd)));
    assert_int_equal(chdir(f->dir), 0);
    *state = f;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    config_free(f->cfg);
    assert_int_equal(chdir(f->oldcwd), 0);
    nftw(f->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Write text to path (relative to the fixture directory), creating directories. */
static void write_file(const char *path, const char *text)
{
    char dir[PATH_MAX];
    char *slash;
    FILE *fp;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        mkdir(dir, 0700);
    }
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int load(struct fixture *f, const char *path)
{
    config_free(f->cfg);
    f->cfg = NULL;
    f->n_reports = f->n_errors = f->n_warnings = 0;
    return config_load(path, &f->cfg, collect, f);
}

/* The report with this severity, file and line whose message contains text. */
static const struct report *find_report(const struct fixture *f, weir_log_level sev, const char *file, int line,
                                        const char *text)
{
    for (int i = 0; i < f->n_reports; i++) {
        const struct report *r = &f->reports[i];
        if (r->sev == sev && strcmp(r->file, file) == 0 && r->line == line && strstr(r->msg, text))
            return r;
    }
    return NULL;
}

static void assert_reported(const struct fixture *f, weir_log_level sev, const char *file, int line,
                            const char *text)
{
    if (find_report(f, sev, file, line, text) == NULL) {
        for (int i = 0; i < f->n_reports; i++)
            print_message("  got: %d %s:%d %s\n", f->reports[i].sev, f->reports[i].file, f->reports[i].line,
                          f->reports[i].msg);
        fail_msg("no %s at %s:%d containing \"%s\"", sev == WEIR_LOG_ERROR ? "error" : "warning", file, line,
                 text);
    }
}

static const char *value_of(const struct weir_config *cfg, const char *name)
{
    static char buf[512];
    const struct config_setting *s = config_setting_find(name);

    assert_non_null(s);
    config_format_value(cfg, s, buf, sizeof(buf));
    return buf;
}

/*
 * PgBouncer 1.18.0's SHOW CONFIG on Debian 12 (key, default, changeable),
 * captured from the running daemon. Its verbose default shows empty; the man
 * page's 0 is what we use.
 */
static const struct {
    const char *key, *def;
    bool changeable;
} pgbouncer_118[] = {
    {"admin_users", "", 1}, {"application_name_add_host", "0", 1}, {"auth_file", "", 1},
    {"auth_hba_file", "", 1},
    {"auth_query", "SELECT usename, passwd FROM pg_shadow WHERE usename=$1", 1},
    {"auth_type", "md5", 1}, {"auth_user", "", 1}, {"autodb_idle_timeout", "3600", 1},
    {"client_idle_timeout", "0", 1}, {"client_login_timeout", "60", 1}, {"client_tls_ca_file", "", 1},
    {"client_tls_cert_file", "", 1}, {"client_tls_ciphers", "fast", 1}, {"client_tls_dheparams", "auto", 1},
    {"client_tls_ecdhcurve", "auto", 1}, {"client_tls_key_file", "", 1}, {"client_tls_protocols", "secure", 1},
    {"client_tls_sslmode", "disable", 1}, {"conffile", "", 1}, {"default_pool_size", "20", 1},
    {"disable_pqexec", "0", 0}, {"dns_max_ttl", "15", 1}, {"dns_nxdomain_ttl", "15", 1},
    {"dns_zone_check_period", "0", 1}, {"idle_transaction_timeout", "0", 1}, {"ignore_startup_parameters", "", 1},
    {"job_name", "pgbouncer", 0}, {"listen_addr", "", 0}, {"listen_backlog", "128", 0}, {"listen_port", "6432", 0},
    {"log_connections", "1", 1}, {"log_disconnections", "1", 1}, {"log_pooler_errors", "1", 1},
    {"log_stats", "1", 1}, {"logfile", "", 1}, {"max_client_conn", "100", 1}, {"max_db_connections", "0", 1},
    {"max_packet_size", "2147483647", 1}, {"max_user_connections", "0", 1}, {"min_pool_size", "0", 1},
    {"pidfile", "", 0}, {"pkt_buf", "4096", 0}, {"pool_mode", "session", 1}, {"query_timeout", "0", 1},
    {"query_wait_timeout", "120", 1}, {"reserve_pool_size", "0", 1}, {"reserve_pool_timeout", "5", 1},
    {"resolv_conf", "", 0}, {"sbuf_loopcnt", "5", 1}, {"server_check_delay", "30", 1},
    {"server_check_query", "select 1", 1}, {"server_connect_timeout", "15", 1}, {"server_fast_close", "0", 1},
    {"server_idle_timeout", "600", 1}, {"server_lifetime", "3600", 1}, {"server_login_retry", "15", 1},
    {"server_reset_query", "DISCARD ALL", 1}, {"server_reset_query_always", "0", 1},
    {"server_round_robin", "0", 1}, {"server_tls_ca_file", "", 1}, {"server_tls_cert_file", "", 1},
    {"server_tls_ciphers", "fast", 1}, {"server_tls_key_file", "", 1}, {"server_tls_protocols", "secure", 1},
    {"server_tls_sslmode", "disable", 1}, {"so_reuseport", "0", 0}, {"stats_period", "60", 1},
    {"stats_users", "", 1}, {"suspend_timeout", "10", 1}, {"syslog", "0", 1}, {"syslog_facility", "daemon", 1},
    {"syslog_ident", "pgbouncer", 1}, {"tcp_defer_accept", "1", 1}, {"tcp_keepalive", "1", 1},
    {"tcp_keepcnt", "0", 1}, {"tcp_keepidle", "0", 1}, {"tcp_keepintvl", "0", 1}, {"tcp_socket_buffer", "0", 1},
    {"tcp_user_timeout", "0", 1}, {"unix_socket_dir", "/tmp", 0}, {"unix_socket_group", "", 0},
    {"unix_socket_mode", "0777", 0}, {"user", "", 0}, {"verbose", "0", 1},
};

#define N_PGBOUNCER ((int)(sizeof(pgbouncer_118) / sizeof(pgbouncer_118[0])))

static const char *const weir_own[] = {"workers", "metrics_port", "metrics_addr", "max_prepared_statements",
                                       "load_balance_hosts", "auth_dbname", "health_check_period", "max_standby_lag",
                                       "scram_iterations"};

static void test_table_matches_pgbouncer_1_18(void **state)
{
    (void)state;
    assert_int_equal(N_PGBOUNCER, 84);
    assert_int_equal(config_setting_count(), N_PGBOUNCER + 9);
    for (int i = 0; i < N_PGBOUNCER; i++) {
        const struct config_setting *s = config_setting_find(pgbouncer_118[i].key);
        if (s == NULL)
            fail_msg("PgBouncer setting %s missing", pgbouncer_118[i].key);
        assert_string_equal(s->name, pgbouncer_118[i].key);
        assert_string_equal(s->default_value, pgbouncer_118[i].def);
        assert_int_equal(s->reloadable, pgbouncer_118[i].changeable);
    }
    for (size_t i = 0; i < sizeof(weir_own) / sizeof(weir_own[0]); i++)
        assert_non_null(config_setting_find(weir_own[i]));
    for (int i = 1; i < config_setting_count(); i++)
        assert_true(strcmp(config_setting_at(i - 1)->name, config_setting_at(i)->name) < 0);
    assert_null(config_setting_at(config_setting_count()));
    assert_string_equal(config_setting_find("SERVICE_NAME")->name, "job_name");
    assert_null(config_setting_find("no_such_setting"));
}

static void test_defaults_with_only_databases(void **state)
{
    struct fixture *f = *state;
    const struct weir_config *c;

    write_file("only.ini", "[databases]\nappdb = host=127.0.0.1\n");
    assert_int_equal(load(f, "only.ini"), 0);
    assert_int_equal(f->n_errors, 0);
    c = f->cfg;
    for (int i = 0; i < config_setting_count(); i++) {
        const struct config_setting *s = config_setting_at(i);
        if (strcmp(s->name, "conffile") != 0)
            assert_string_equal(value_of(c, s->name), s->default_value);
    }
    assert_string_equal(c->conffile, "only.ini");
    assert_int_equal(c->listen_port, 6432);
    assert_int_equal(c->max_client_conn, 100);
    assert_int_equal(c->default_pool_size, 20);
    assert_int_equal(c->pool_mode, POOL_MODE_SESSION);
    assert_int_equal(c->auth_type, AUTH_TYPE_MD5);
    assert_int_equal(c->unix_socket_mode, 0777);
    assert_string_equal(c->unix_socket_dir, "/tmp");
    assert_string_equal(c->listen_addr, "");
    assert_true(c->server_lifetime_us == 3600LL * 1000000);
    assert_true(c->reserve_pool_timeout_us == 5LL * 1000000);
    assert_true(c->query_wait_timeout_us == 120LL * 1000000);
    assert_true(c->query_timeout_us == 0);
    assert_true(c->tcp_defer_accept && c->tcp_keepalive && c->log_stats && !c->syslog);
    assert_int_equal(c->max_packet_size, 2147483647);
    assert_int_equal(c->client_tls_sslmode, TLS_MODE_DISABLE);
    assert_string_equal(c->server_reset_query, "DISCARD ALL");
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->metrics_port, 0);
    assert_int_equal(c->max_prepared_statements, 200);
    assert_int_equal(c->load_balance_hosts, LOAD_BALANCE_ROUND_ROBIN);
    /* md5 with no way to find passwords is legal but worth a word */
    assert_reported(f, WEIR_LOG_WARNING, "only.ini", 0, "neither auth_file nor auth_user");
}

static void test_pgbouncer_and_weir_sections(void **state)
{
    struct fixture *f = *state;

    write_file("both.ini", "[pgbouncer]\nlisten_port = 7000\nservice_name = mybouncer\n"
                           "[weir]\nmax_client_conn = 5\nworkers = 4\n"
                           "[PgBouncer]\ndefault_pool_size = 7\n");
    assert_int_equal(load(f, "both.ini"), 0);
    assert_int_equal(f->cfg->listen_port, 7000);
    assert_int_equal(f->cfg->max_client_conn, 5);
    assert_int_equal(f->cfg->workers, 4);
    assert_int_equal(f->cfg->default_pool_size, 7);
    assert_string_equal(f->cfg->job_name, "mybouncer");
}

/* PgBouncer 1.18 (checked): a relative %include is taken from the working
 * directory, also inside an included file, and sections carry across. */
static void test_include_nested_relative_to_cwd(void **state)
{
    struct fixture *f = *state;

    write_file("main.ini", "[databases]\n"
                           "%include conf.d/dbs.ini\n"
                           "after = host=after\n"
                           "[weir]\n"
                           "bogus_after_include = 1\n");
    write_file("conf.d/dbs.ini", "fromsub = host=sub\n"
                                 "   %include level2.ini\n"
                                 "[weir]\n"
                                 "typo_in_sub = 1\n"
                                 "[databases]\n");
    write_file("level2.ini", "fromcwd = host=cwd\n");
    write_file("conf.d/level2.ini", "wrong = host=wrong\n");
    assert_int_equal(load(f, "main.ini"), 0);
    assert_non_null(config_find_db(f->cfg, "fromsub"));
    assert_non_null(config_find_db(f->cfg, "fromcwd"));
    assert_null(config_find_db(f->cfg, "wrong"));
    assert_string_equal(config_find_db(f->cfg, "after")->host, "after");
    assert_string_equal(config_find_db(f->cfg, "fromcwd")->file, "level2.ini");
    assert_int_equal(config_find_db(f->cfg, "fromcwd")->line, 1);
    assert_int_equal(config_find_db(f->cfg, "after")->line, 3);
    assert_reported(f, WEIR_LOG_WARNING, "conf.d/dbs.ini", 4, "\"typo_in_sub\"");
    assert_reported(f, WEIR_LOG_WARNING, "main.ini", 5, "\"bogus_after_include\"");
}

static void test_include_errors(void **state)
{
    struct fixture *f = *state;

    write_file("missing.ini", "[weir]\n%include nowhere.ini\n");
    assert_int_equal(load(f, "missing.ini"), WEIR_EINVAL);
    assert_null(f->cfg);
    assert_reported(f, WEIR_LOG_ERROR, "missing.ini", 2, "\"nowhere.ini\"");

    write_file("self.ini", "[weir]\n%include self.ini\n");
    assert_int_equal(load(f, "self.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "self.ini", 2, "loops");

    /* Found by fuzz_config: two self-includes used to mean 2^16 reads (a hang). */
    write_file("twice.ini", "[weir]\n%include twice.ini\n%include twice.ini\n");
    assert_int_equal(load(f, "twice.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "twice.ini", 3, "loops");
    write_file("ping.ini", "%include pong.ini\n");
    write_file("pong.ini", "%include ping.ini\n%include ping.ini\n");
    assert_int_equal(load(f, "ping.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "pong.ini", 2, "loops");

    write_file("empty.ini", "%include\n");
    assert_int_equal(load(f, "empty.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "empty.ini", 1, "needs a file name");
}

static void test_missing_file_names_it(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load(f, "/nonexistent/weir.ini"), WEIR_EINVAL);
    assert_null(f->cfg);
    assert_int_equal(f->n_errors, 1);
    assert_reported(f, WEIR_LOG_ERROR, "/nonexistent/weir.ini", 0,
                    "cannot open config file \"/nonexistent/weir.ini\"");
}

static void test_unknown_key_warns_and_loads(void **state)
{
    struct fixture *f = *state;

    write_file("unknown.ini", "[weir]\nlisten_port = 7001\nmax_clients = 10\n");
    assert_int_equal(load(f, "unknown.ini"), 0);
    assert_int_equal(f->cfg->listen_port, 7001);
    assert_reported(f, WEIR_LOG_WARNING, "unknown.ini", 3, "unknown setting \"max_clients\"");
}

static void test_bad_values_error_with_position(void **state)
{
    struct fixture *f = *state;

    write_file("bad.ini", "[weir]\n"
                          "max_client_conn = lots\n"     /* 2 */
                          "log_stats = maybe\n"          /* 3 */
                          "pool_mode = sessions\n"       /* 4 */
                          "server_lifetime = 10s\n"      /* 5 */
                          "server_idle_timeout = -5\n"   /* 6 */
                          "listen_port = 70000\n"        /* 7 */
                          "default_pool_size = -1\n"     /* 8 */
                          "tcp_keepcnt =\n"              /* 9 */
                          "unix_socket_mode = 0778\n"    /* 10 */
                          "auth_type = crypt\n"          /* 11 */
                          "client_tls_sslmode = maybe\n" /* 12 */
                          "max_client_conn = 12abc\n"   /* 13 */
                          "max_client_conn = 99999999999\n"); /* 14 */
    assert_int_equal(load(f, "bad.ini"), WEIR_EINVAL);
    assert_null(f->cfg);
    assert_int_equal(f->n_errors, 13);
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 2, "invalid value \"lots\" for max_client_conn");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 3, "invalid value \"maybe\" for log_stats");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 4,
                    "\"sessions\" for pool_mode: expected one of: session, transaction, statement");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 5, "\"10s\" for server_lifetime: expected a number of seconds");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 6, "\"-5\" for server_idle_timeout");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 7, "\"70000\" for listen_port: must be between 1 and 65535");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 8, "\"-1\" for default_pool_size: must be at least 0");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 9, "\"\" for tcp_keepcnt");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 10, "\"0778\" for unix_socket_mode");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 11, "\"crypt\" for auth_type");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 12, "\"maybe\" for client_tls_sslmode");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 13, "\"12abc\" for max_client_conn");
    assert_reported(f, WEIR_LOG_ERROR, "bad.ini", 14, "must be between 1 and 2147483647");
}

/* The forms PgBouncer accepts, plus the boolean words weir adds. */
static void test_value_forms_accepted(void **state)
{
    struct fixture *f = *state;
    char text[2048];
    char longq[600];

    memset(longq, 'x', sizeof(longq) - 1);
    longq[sizeof(longq) - 1] = '\0';
    snprintf(text, sizeof(text),
             "# comment\n; comment\n"
             "[weir]\r\n"
             "log_stats = off\n"
             "  log_connections = no\n" /* indented: an ordinary line, not a continuation */
             "log_disconnections = FALSE\n"
             "syslog = on\n"
             "server_round_robin = 2\n" /* PgBouncer stores booleans as integers */
             "server_lifetime = 1.5\r\n"
             "server_idle_timeout = 1e3\n"
             "client_idle_timeout = 0.000001\n"
             "unix_socket_mode = 700\n"
             "pool_mode = Transaction\n"
             "auth_type = SCRAM-SHA-256\n"
             "admin_users = admin ; not a comment # either\n"
             "server_check_query = %s\n",
             longq);
    write_file("forms.ini", text);
    assert_int_equal(load(f, "forms.ini"), 0);
    assert_false(f->cfg->log_stats);
    assert_false(f->cfg->log_connections);
    assert_false(f->cfg->log_disconnections);
    assert_true(f->cfg->syslog);
    assert_true(f->cfg->server_round_robin);
    assert_true(f->cfg->server_lifetime_us == 1500000);
    assert_true(f->cfg->server_idle_timeout_us == 1000LL * 1000000);
    assert_true(f->cfg->client_idle_timeout_us == 1);
    assert_int_equal(f->cfg->unix_socket_mode, 0700);
    assert_int_equal(f->cfg->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(f->cfg->auth_type, AUTH_TYPE_SCRAM_SHA_256);
    assert_string_equal(f->cfg->admin_users, "admin ; not a comment # either");
    assert_string_equal(f->cfg->server_check_query, longq);
    assert_string_equal(value_of(f->cfg, "server_lifetime"), "1.5");
    assert_string_equal(value_of(f->cfg, "client_idle_timeout"), "0.000001");
    assert_string_equal(value_of(f->cfg, "unix_socket_mode"), "0700");
    assert_string_equal(value_of(f->cfg, "server_round_robin"), "1");
    assert_string_equal(value_of(f->cfg, "pool_mode"), "transaction");
}

static void test_syntax_errors_and_sections(void **state)
{
    struct fixture *f = *state;

    write_file("syntax.ini", "early = 1\n"
                             "[weir]\n"
                             "this is not valid\n"
                             "[extras]\n"
                             "anything = goes\n"
                             "[databases\n"
                             "a:b = 1\n");
    assert_int_equal(load(f, "syntax.ini"), WEIR_EINVAL);
    assert_int_equal(f->n_errors, 3);
    assert_reported(f, WEIR_LOG_WARNING, "syntax.ini", 1, "outside any section");
    assert_reported(f, WEIR_LOG_ERROR, "syntax.ini", 3, "syntax error");
    assert_reported(f, WEIR_LOG_WARNING, "syntax.ini", 4, "unknown section [extras]");
    assert_reported(f, WEIR_LOG_ERROR, "syntax.ini", 6, "syntax error");
    assert_reported(f, WEIR_LOG_ERROR, "syntax.ini", 7, "syntax error");
}

static void test_databases(void **state)
{
    struct fixture *f = *state;
    const struct db_config *db;

    write_file("dbs.ini",
               "[databases]\n"
               "app = host=db1,db2 port=5432,5433 dbname='my app' user=alice password='it''s; secret'"
               " sslmode=require target_session_attrs=read-write pool_size=30 min_pool_size=2"
               " reserve_pool=3 pool_mode=transaction max_db_connections=40 connect_query='SET x = ''y'''"
               " auth_user=checker client_encoding=UTF8 datestyle=ISO timezone=UTC"
               " application_name=web connect_timeout=5\n"
               "spaced = host = 127.0.0.1   port= 6000\n"
               "bare =\n"
               "\"odd name\" = host=odd\n"
               "* = host=fallback\n"
               "legacy = host=h pool_size=-1\n");
    assert_int_equal(load(f, "dbs.ini"), 0);
    assert_int_equal(f->n_errors, 0);
    assert_int_equal(f->cfg->n_dbs, 6);

    db = config_find_db(f->cfg, "app");
    assert_non_null(db);
    assert_string_equal(db->name, "app");
    assert_string_equal(db->file, "dbs.ini");
    assert_int_equal(db->line, 2);
    assert_string_equal(db->host, "db1,db2");
    assert_string_equal(db->port, "5432,5433");
    assert_string_equal(db->dbname, "my app");
    assert_string_equal(db->user, "alice");
    assert_string_equal(db->password, "it's; secret");
    assert_string_equal(db->connect_query, "SET x = 'y'");
    assert_string_equal(db->auth_user, "checker");
    assert_string_equal(db->client_encoding, "UTF8");
    assert_string_equal(db->datestyle, "ISO");
    assert_string_equal(db->timezone, "UTC");
    assert_string_equal(db->application_name, "web");
    assert_int_equal(db->pool_size, 30);
    assert_int_equal(db->min_pool_size, 2);
    assert_int_equal(db->reserve_pool, 3);
    assert_int_equal(db->max_db_connections, 40);
    assert_int_equal(db->pool_mode, POOL_MODE_TRANSACTION);
    /* libpq's own keys stay, in file order */
    assert_int_equal(db->n_extra, 3);
    assert_string_equal(db->extra[0].key, "sslmode");
    assert_string_equal(db->extra[0].value, "require");
    assert_string_equal(db->extra[1].key, "target_session_attrs");
    assert_string_equal(db->extra[1].value, "read-write");
    assert_string_equal(db->extra[2].key, "connect_timeout");
    assert_string_equal(db->extra[2].value, "5");

    db = config_find_db(f->cfg, "spaced");
    assert_string_equal(db->host, "127.0.0.1");
    assert_string_equal(db->port, "6000");

    db = config_find_db(f->cfg, "bare");
    assert_null(db->host);
    assert_null(db->dbname);
    assert_int_equal(db->pool_size, CONFIG_UNSET);
    assert_int_equal(db->pool_mode, CONFIG_UNSET);
    assert_int_equal(db->n_extra, 0);

    assert_string_equal(config_find_db(f->cfg, "odd name")->host, "odd");
    assert_int_equal(config_find_db(f->cfg, "legacy")->pool_size, CONFIG_UNSET);

    /* unknown names fall back to "*" */
    db = config_find_db(f->cfg, "anything_else");
    assert_non_null(db);
    assert_string_equal(db->name, "*");
    assert_string_equal(db->host, "fallback");
    assert_string_equal(config_pool_mode_name(config_find_db(f->cfg, "app")->pool_mode), "transaction");
    assert_string_equal(config_pool_mode_name(CONFIG_UNSET), "");
}

static void test_no_fallback_means_no_database(void **state)
{
    struct fixture *f = *state;

    write_file("nofb.ini", "[databases]\nonly = host=x\n");
    assert_int_equal(load(f, "nofb.ini"), 0);
    assert_non_null(config_find_db(f->cfg, "only"));
    assert_null(config_find_db(f->cfg, "Only"));
    assert_null(config_find_db(f->cfg, "other"));
    assert_null(config_find_user(f->cfg, "nobody"));
}

static void test_database_errors(void **state)
{
    struct fixture *f = *state;

    write_file("dberr.ini", "[databases]\n"
                            "a = host=x sslmod=require\n"     /* 2: libpq has no such key */
                            "b = host=x pool_size=many\n"     /* 3 */
                            "c = host=x pool_mode=sessions\n" /* 4 */
                            "d = host=x password='open\n"     /* 5 */
                            "pgbouncer = host=x\n"            /* 6 */
                            "weir = host=x\n"                 /* 7 */
                            "e = host=x port=99999\n"         /* 8 */
                            "f = host\n"                      /* 9 */
                            "g = host=x\n");
    assert_int_equal(load(f, "dberr.ini"), WEIR_EINVAL);
    assert_int_equal(f->n_errors, 8);
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 2, "database \"a\": unknown connection parameter \"sslmod\"");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 3, "\"many\" for pool_size");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 4, "invalid pool_mode \"sessions\"");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 5, "quoting in the value of \"password\"");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 6, "reserved");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 7, "reserved");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 8, "invalid port \"99999\"");
    assert_reported(f, WEIR_LOG_ERROR, "dberr.ini", 9, "expected \"=\" after \"host\"");
    /* a password never appears in a message */
    for (int i = 0; i < f->n_reports; i++)
        assert_null(strstr(f->reports[i].msg, "open"));
}

static void test_duplicate_database_later_wins(void **state)
{
    struct fixture *f = *state;

    write_file("dup.ini", "[databases]\nx = host=first\ny = host=y\nx = host=second\n");
    assert_int_equal(load(f, "dup.ini"), 0);
    assert_int_equal(f->cfg->n_dbs, 2);
    assert_string_equal(config_find_db(f->cfg, "x")->host, "second");
    assert_reported(f, WEIR_LOG_WARNING, "dup.ini", 4, "replaces the definition at dup.ini:2");
}

static void test_users(void **state)
{
    struct fixture *f = *state;
    const struct user_config *u;

    write_file("users.ini", "[users]\n"
                            "alice = pool_mode=transaction max_user_connections=10\n"
                            "bob = max_user_connections = 3\n"
                            "carol =\n");
    assert_int_equal(load(f, "users.ini"), 0);
    u = config_find_user(f->cfg, "alice");
    assert_non_null(u);
    assert_int_equal(u->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(u->max_user_connections, 10);
    assert_int_equal(u->line, 2);
    u = config_find_user(f->cfg, "bob");
    assert_int_equal(u->pool_mode, CONFIG_UNSET);
    assert_int_equal(u->max_user_connections, 3);
    assert_int_equal(config_find_user(f->cfg, "carol")->max_user_connections, CONFIG_UNSET);
    assert_null(config_find_user(f->cfg, "dave"));

    /* PgBouncer 1.18 knows only these two keys for a user */
    write_file("users2.ini", "[users]\nalice = pool_size=3\nbob = pool_mode=never\n"
                             "carol = max_user_connections=-2\n");
    assert_int_equal(load(f, "users2.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "users2.ini", 2, "user \"alice\": unknown setting \"pool_size\"");
    assert_reported(f, WEIR_LOG_ERROR, "users2.ini", 3, "invalid pool_mode \"never\"");
    assert_reported(f, WEIR_LOG_ERROR, "users2.ini", 4, "\"-2\" for max_user_connections");
}

static void test_validation_after_parse(void **state)
{
    struct fixture *f = *state;

    write_file("val.ini", "[weir]\n"
                          "unix_socket_dir = /nonexistent/sockets\n" /* 2 */
                          "auth_type = md5\n"                        /* 3 */
                          "auth_file = /nonexistent/userlist.txt\n"  /* 4 */
                          "client_tls_sslmode = require\n"           /* 5 */
                          "logfile = /nonexistent/dir/weir.log\n");  /* 6 */
    assert_int_equal(load(f, "val.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "val.ini", 2, "unix_socket_dir \"/nonexistent/sockets\"");
    assert_reported(f, WEIR_LOG_ERROR, "val.ini", 4, "auth_file \"/nonexistent/userlist.txt\" cannot be read");
    assert_reported(f, WEIR_LOG_ERROR, "val.ini", 0, "client_tls_key_file must be set");
    assert_reported(f, WEIR_LOG_WARNING, "val.ini", 6, "logfile \"/nonexistent/dir/weir.log\"");

    write_file("hba.ini", "[weir]\nauth_type = hba\n");
    assert_int_equal(load(f, "hba.ini"), WEIR_EINVAL);
    assert_reported(f, WEIR_LOG_ERROR, "hba.ini", 0, "auth_hba_file must be set when auth_type is hba");

    /* a readable auth_file and an unwritable logfile directory still load */
    write_file("users.txt", "\"alice\" \"secret\"\n");
    write_file("ok.ini", "[weir]\nauth_type = scram-sha-256\nauth_file = users.txt\nunix_socket_dir = \n"
                         "logfile = /nonexistent/weir.log\nclient_tls_key_file = /nonexistent/key\n");
    assert_int_equal(load(f, "ok.ini"), 0);
    assert_int_equal(f->n_warnings, 1);
}

/* auth_hba_file's rules hang off the config: loaded with it (bad lines
 * warned about and skipped), replaced by SET, kept when SET cannot read. */
static void test_hba_rules_in_config(void **state)
{
    struct fixture *f = *state;
    char err[256];

    write_file("hba.conf", "local all all trust\nlocal all all ident\n");
    write_file("hba2.conf", "local all all trust\nhost all all 10.0.0.0/8 md5\n");
    write_file("hbaok.ini", "[weir]\nauth_type = hba\nauth_hba_file = hba.conf\n");
    assert_int_equal(load(f, "hbaok.ini"), 0);
    assert_int_equal(hba_rule_count(f->cfg->hba), 1);
    assert_non_null(find_report(f, WEIR_LOG_WARNING, "hba.conf", 2, "unsupported authentication method"));

    assert_int_equal(config_set(f->cfg, "auth_hba_file", "missing.conf", err, sizeof(err)), WEIR_EINVAL);
    assert_string_equal(err, "auth_hba_file \"missing.conf\" cannot be read");
    assert_string_equal(f->cfg->auth_hba_file, "hba.conf");
    assert_int_equal(hba_rule_count(f->cfg->hba), 1);
    assert_int_equal(config_set(f->cfg, "auth_hba_file", "hba2.conf", err, sizeof(err)), 0);
    assert_int_equal(hba_rule_count(f->cfg->hba), 2);

    /* Not hba: nothing to read until auth_type says so. */
    write_file("nohba.ini", "[weir]\nauth_type = md5\n");
    assert_int_equal(load(f, "nohba.ini"), 0);
    assert_null(f->cfg->hba);
    assert_int_equal(config_set(f->cfg, "auth_type", "hba", err, sizeof(err)), WEIR_EINVAL);
    assert_int_equal(f->cfg->auth_type, AUTH_TYPE_MD5);
    assert_int_equal(config_set(f->cfg, "auth_hba_file", "missing.conf", err, sizeof(err)), 0);
    assert_int_equal(config_set(f->cfg, "auth_hba_file", "hba.conf", err, sizeof(err)), 0);
    assert_int_equal(config_set(f->cfg, "auth_type", "hba", err, sizeof(err)), 0);
    assert_int_equal(hba_rule_count(f->cfg->hba), 1);
}

static void test_set_respects_reloadable(void **state)
{
    struct fixture *f = *state;
    char err[256];

    write_file("set.ini", "[weir]\n");
    assert_int_equal(load(f, "set.ini"), 0);

    assert_int_equal(config_set(f->cfg, "default_pool_size", "50", err, sizeof(err)), 0);
    assert_int_equal(f->cfg->default_pool_size, 50);
    assert_int_equal(config_set(f->cfg, "POOL_MODE", "transaction", err, sizeof(err)), 0);
    assert_int_equal(f->cfg->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(config_set(f->cfg, "server_lifetime", "1.25", err, sizeof(err)), 0);
    assert_true(f->cfg->server_lifetime_us == 1250000);
    assert_int_equal(config_set(f->cfg, "admin_users", "root, admin", err, sizeof(err)), 0);
    assert_string_equal(f->cfg->admin_users, "root, admin");

    assert_int_equal(config_set(f->cfg, "listen_port", "7000", err, sizeof(err)), WEIR_ESTATE);
    assert_string_equal(err, "listen_port cannot be changed at runtime; "
                             "change it in the config file and restart weir");
    assert_int_equal(f->cfg->listen_port, 6432);
    assert_int_equal(config_set(f->cfg, "service_name", "x", err, sizeof(err)), WEIR_ESTATE);

    assert_int_equal(config_set(f->cfg, "default_pool_size", "big", err, sizeof(err)), WEIR_EINVAL);
    assert_non_null(strstr(err, "invalid value \"big\" for default_pool_size"));
    assert_int_equal(f->cfg->default_pool_size, 50);

    assert_int_equal(config_set(f->cfg, "no_such", "1", err, sizeof(err)), WEIR_ENOTFOUND);
    assert_string_equal(err, "unknown setting \"no_such\"");
    assert_int_equal(config_set(f->cfg, "no_such", "1", NULL, 0), WEIR_ENOTFOUND);
}

static void test_diff_reports_restart_only_changes(void **state)
{
    struct fixture *f = *state;
    struct weir_config *old;

    write_file("old.ini", "[weir]\nlisten_port = 6432\ndefault_pool_size = 10\n");
    write_file("new.ini", "[weir]\ndefault_pool_size = 30\nlisten_port = 7000\nunix_socket_dir = .\n"
                          "pool_mode = statement\n");
    assert_int_equal(load(f, "old.ini"), 0);
    old = f->cfg;
    f->cfg = NULL;
    assert_int_equal(load(f, "new.ini"), 0);
    f->n_reports = f->n_warnings = 0;
    config_diff(old, f->cfg, collect, f);
    assert_int_equal(f->n_reports, 2);
    assert_reported(f, WEIR_LOG_WARNING, "new.ini", 3,
                    "listen_port changed from 6432 to 7000; restart weir to apply");
    assert_reported(f, WEIR_LOG_WARNING, "new.ini", 4, "unix_socket_dir changed from \"/tmp\" to \".\"");
    f->n_reports = 0;
    config_diff(old, old, collect, f);
    assert_int_equal(f->n_reports, 0);
    config_free(old);
}

static void test_format_value_truncates_like_snprintf(void **state)
{
    struct fixture *f = *state;
    char small[4];

    write_file("fmt.ini", "[weir]\n");
    assert_int_equal(load(f, "fmt.ini"), 0);
    assert_int_equal(config_format_value(f->cfg, config_setting_find("server_reset_query"), small, sizeof(small)),
                     11);
    assert_string_equal(small, "DIS");
    config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_table_matches_pgbouncer_1_18),
        T(test_defaults_with_only_databases),
        T(test_pgbouncer_and_weir_sections),
        T(test_include_nested_relative_to_cwd),
        T(test_include_errors),
        T(test_missing_file_names_it),
        T(test_unknown_key_warns_and_loads),
        T(test_bad_values_error_with_position),
        T(test_value_forms_accepted),
        T(test_syntax_errors_and_sections),
        T(test_databases),
        T(test_no_fallback_means_no_database),
        T(test_database_errors),
        T(test_duplicate_database_later_wins),
        T(test_users),
        T(test_validation_after_parse),
        T(test_hba_rules_in_config),
        T(test_set_respects_reloadable),
        T(test_diff_reports_restart_only_changes),
        T(test_format_value_truncates_like_snprintf),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
