/*
 * The daemon's configuration: a PgBouncer-compatible ini file (sections
 * [databases], [users], and [weir] or its synonym [pgbouncer], plus
 * `%include FILE`) parsed into a fresh, immutable-by-convention struct
 * weir_config. Setting names, meanings and defaults are PgBouncer 1.18's, so
 * an existing pgbouncer.ini loads unchanged; weir adds a few keys of its own.
 * A single table of settings drives parsing, defaults, SHOW CONFIG, the admin
 * SET command and the restart-needed check on reload. Nothing here prints:
 * warnings and errors go to the caller's report callback with file and line.
 */
#ifndef WEIR_DAEMON_CONFIG_H
#define WEIR_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <weir/common.h>

/* Per-database and per-user numbers and pool modes not given in the file. */
#define CONFIG_UNSET (-1)

enum pool_mode { POOL_MODE_SESSION, POOL_MODE_TRANSACTION, POOL_MODE_STATEMENT };

enum auth_type {
    AUTH_TYPE_ANY,
    AUTH_TYPE_TRUST,
    AUTH_TYPE_PLAIN,
    AUTH_TYPE_MD5,
    AUTH_TYPE_SCRAM_SHA_256,
    AUTH_TYPE_CERT,
    AUTH_TYPE_HBA,
    AUTH_TYPE_PAM,
};

/* client_tls_sslmode and server_tls_sslmode, in libpq's order of strictness. */
enum tls_mode {
    TLS_MODE_DISABLE,
    TLS_MODE_ALLOW,
    TLS_MODE_PREFER,
    TLS_MODE_REQUIRE,
    TLS_MODE_VERIFY_CA,
    TLS_MODE_VERIFY_FULL,
};

/* How a comma-separated host list is used: PgBouncer's words. */
enum load_balance_hosts { LOAD_BALANCE_ROUND_ROBIN, LOAD_BALANCE_DISABLE, LOAD_BALANCE_LEAST_CONNECTIONS };

/* One key=value of a [databases] entry that weir passes on to libpq. */
struct config_kv {
    char *key;
    char *value;
};

/*
 * One [databases] entry. Strings are NULL when the key was not given; ints
 * and pool_mode are CONFIG_UNSET, meaning "use the global setting". dbname
 * NULL means "the name the client asked for", which is how the "*" entry
 * usually serves every database. port is libpq's form: one port or a
 * comma-separated list matching host. PgBouncer's keys never appear in
 * extra, not even those libpq also knows (host, user, client_encoding...).
 */
struct db_config {
    char *name;
    const char *file; /* where the entry is; owned by the config */
    int line;
    char *dbname, *host, *port, *user, *password, *auth_user, *auth_dbname;
    char *connect_query, *client_encoding, *datestyle, *timezone, *application_name;
    int pool_size, min_pool_size, reserve_pool, max_db_connections;
    int pool_mode; /* enum pool_mode or CONFIG_UNSET */
    int load_balance_hosts; /* enum load_balance_hosts or CONFIG_UNSET */
    struct config_kv *extra; /* every other key, in file order, for libpq */
    size_t n_extra;
};

/* One [users] entry; fields CONFIG_UNSET when not given. */
struct user_config {
    char *name;
    const char *file;
    int line;
    int pool_mode; /* enum pool_mode or CONFIG_UNSET */
    int max_user_connections;
};

struct hba;
struct config_sources; /* private: file names and where each setting was set */

/*
 * Every setting, with PgBouncer's name. Strings are never NULL ("" = not
 * set). Times are microseconds (PgBouncer's files give seconds, fractions
 * allowed). Read-only for everyone but config.c.
 */
struct weir_config {
    /* general */
    char *logfile, *pidfile, *listen_addr;
    int listen_port;
    char *unix_socket_dir;
    int unix_socket_mode;
    char *unix_socket_group, *user;
    enum pool_mode pool_mode;
    int max_client_conn, default_pool_size, min_pool_size, reserve_pool_size;
    int64_t reserve_pool_timeout_us;
    int max_db_connections, max_user_connections;
    bool server_round_robin;
    char *ignore_startup_parameters;
    bool disable_pqexec, application_name_add_host;
    char *conffile, *job_name;
    int stats_period;
    /* authentication */
    enum auth_type auth_type;
    char *auth_hba_file, *auth_file, *auth_user, *auth_query;
    char *auth_dbname; /* [databases] entry auth_query runs in; "" = the client's */
    /* logging */
    bool syslog;
    char *syslog_ident, *syslog_facility;
    bool log_connections, log_disconnections, log_pooler_errors, log_stats;
    int verbose;
    /* console access */
    char *admin_users, *stats_users;
    /* server checks and timeouts */
    char *server_reset_query;
    bool server_reset_query_always;
    int64_t server_check_delay_us;
    char *server_check_query;
    bool server_fast_close;
    int64_t server_lifetime_us, server_idle_timeout_us, server_connect_timeout_us;
    int64_t server_login_retry_us, client_login_timeout_us, autodb_idle_timeout_us;
    int64_t dns_max_ttl_us, dns_nxdomain_ttl_us, dns_zone_check_period_us;
    char *resolv_conf;
    /* TLS */
    enum tls_mode client_tls_sslmode;
    char *client_tls_key_file, *client_tls_cert_file, *client_tls_ca_file;
    char *client_tls_protocols, *client_tls_ciphers, *client_tls_ecdhcurve, *client_tls_dheparams;
    enum tls_mode server_tls_sslmode;
    char *server_tls_ca_file, *server_tls_key_file, *server_tls_cert_file;
    char *server_tls_protocols, *server_tls_ciphers;
    /* dangerous timeouts */
    int64_t query_timeout_us, query_wait_timeout_us, client_idle_timeout_us;
    int64_t idle_transaction_timeout_us, suspend_timeout_us;
    /* low-level network */
    int pkt_buf, max_packet_size, listen_backlog, sbuf_loopcnt;
    bool so_reuseport, tcp_defer_accept;
    int tcp_socket_buffer;
    bool tcp_keepalive;
    int tcp_keepcnt, tcp_keepidle, tcp_keepintvl, tcp_user_timeout;
    /* weir's own */
    int workers;      /* event loops; 0 = one per core */
    int scram_iterations; /* offered to clients for plain-text auth_file passwords */
    int metrics_port; /* 0 = no metrics endpoint */
    char *metrics_addr;
    int max_prepared_statements;
    enum load_balance_hosts load_balance_hosts;
    int64_t health_check_period_us; /* role and lag checks of multi-host entries; 0 = off */
    int64_t max_standby_lag_us;     /* standbys further behind are not used; 0 = no bound */

    /* [databases] and [users], sorted by name, names unique */
    struct db_config *dbs;
    size_t n_dbs;
    struct user_config *users;
    size_t n_users;

    struct hba *hba; /* auth_hba_file's rules when auth_type = hba, else NULL */

    struct config_sources *sources;
};

enum config_type {
    CONFIG_STRING,
    CONFIG_INT,
    CONFIG_BOOL, /* 0/1, yes/no, on/off, true/false; any integer, as PgBouncer */
    CONFIG_TIME, /* seconds, fractions allowed; stored as int64_t microseconds */
    CONFIG_MODE, /* octal file mode */
    CONFIG_ENUM, /* one of words[], stored as its index */
};

/* One row of the settings table. */
struct config_setting {
    const char *name;
    enum config_type type;
    size_t offset;             /* of the field in struct weir_config */
    const char *default_value; /* as PgBouncer 1.18's SHOW CONFIG shows it */
    bool reloadable;           /* SET and RELOAD may change it */
    int64_t min, max;          /* CONFIG_INT: allowed range */
    const char *const *words;  /* CONFIG_ENUM: NULL-terminated */
};

/* sev is WEIR_LOG_WARNING or WEIR_LOG_ERROR; line is 0 when not about one line. */
typedef void (*config_report_fn)(void *arg, weir_log_level sev, const char *file, int line,
                                 const char *message);

/*
 * Parse path (and what it includes) into a fresh config, then validate it.
 * Every problem goes to report (which may be NULL). Returns 0 when nothing
 * was an error (warnings allowed) and sets *out; else WEIR_EINVAL (or
 * WEIR_ENOMEM) with *out NULL. Relative %include paths are taken from the
 * working directory, as PgBouncer does.
 */
__attribute__((warn_unused_result)) int config_load(const char *path, struct weir_config **out,
                                                    config_report_fn report, void *arg);

/* Accepts NULL. */
void config_free(struct weir_config *cfg);

/* The entry called name, else the "*" entry, else NULL. */
const struct db_config *config_find_db(const struct weir_config *cfg, const char *name);

/* The [users] entry called name, or NULL. */
const struct user_config *config_find_user(const struct weir_config *cfg, const char *name);

/* The settings table, for SHOW CONFIG: 0 <= i < config_setting_count(). */
int config_setting_count(void);
const struct config_setting *config_setting_at(int i);

/* By name (case-insensitive; PgBouncer's alias service_name works too), or NULL. */
const struct config_setting *config_setting_find(const char *name);

/*
 * The setting's current value as SHOW CONFIG prints it (times in seconds,
 * booleans 0/1, modes in octal). snprintf semantics: returns the length of
 * the whole value; buf holds a truncated copy if that is >= len.
 */
int config_format_value(const struct weir_config *cfg, const struct config_setting *s, char *buf,
                        size_t len);

/*
 * The admin console's SET. Returns 0, or a negative code with a sentence in
 * err: WEIR_ENOTFOUND (no such setting), WEIR_ESTATE (needs a restart),
 * WEIR_EINVAL (bad value), WEIR_ENOMEM. Not thread-safe: the caller makes sure
 * nothing reads cfg meanwhile.
 */
__attribute__((warn_unused_result)) int config_set(struct weir_config *cfg, const char *key,
                                                   const char *value, char *err, size_t errlen);

/*
 * On reload: report (as warnings) each setting that differs between old and
 * new but only takes effect on restart, e.g. "listen_port changed from 6432
 * to 7000; restart weir to apply", at the file and line of the new value.
 */
void config_diff(const struct weir_config *old, const struct weir_config *new_cfg,
                 config_report_fn report, void *arg);

/* "session", "transaction", "statement"; "" for CONFIG_UNSET. */
const char *config_pool_mode_name(int mode);

#endif
