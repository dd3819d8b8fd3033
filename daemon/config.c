/*
 * Loads weir's PgBouncer-compatible ini file into a struct weir_config. inih
 * tracks sections and dispatches entries; a custom reader in front of it owns
 * the line syntax, because PgBouncer's differs from inih's: ';' and '#' start
 * a comment only at the beginning of a line, indented lines are ordinary
 * lines (not continuations), lines have no length limit, database names may
 * be double-quoted, and `%include FILE` splices another file in place. The
 * reader keeps the current file and line, the decoded key and the raw value;
 * inih sees one short normalized line per header or entry. One table of
 * settings drives defaults, parsing, SHOW CONFIG, SET and the reload diff.
 * Facts checked against PgBouncer 1.18 itself: includes are relative to the
 * working directory, values are trimmed, empty numbers are errors, and
 * conninfo quoting is '...' with '' for a quote.
 */
#include "config.h"
#include "tls.h"
#include "hba.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Enum settings are written through an int. */
_Static_assert(sizeof(enum pool_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum auth_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum tls_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum load_balance_hosts) == sizeof(int), "enum size");

static const char *const pool_mode_words[] = {"session", "transaction", "statement", NULL};
static const char *const auth_type_words[] = {"any", "trust", "plain", "md5", "scram-sha-256",
                                              "cert", "hba", "pam", NULL};
static const char *const tls_mode_words[] = {"disable", "allow", "prefer", "require",
                                             "verify-ca", "verify-full", NULL};
static const char *const load_balance_words[] = {"round-robin", "disable", "least-connections", NULL};

#define RELOAD true
#define RESTART false
#define F(field) offsetof(struct weir_config, field)
#define STR(n, def, rel) {#n, CONFIG_STRING, F(n), def, rel, 0, 0, NULL}
#define INT(n, def, rel, lo, hi) {#n, CONFIG_INT, F(n), def, rel, lo, hi, NULL}
#define BOOL(n, def, rel) {#n, CONFIG_BOOL, F(n), def, rel, 0, 1, NULL}
#define TIME(n, def, rel) {#n, CONFIG_TIME, F(n##_us), def, rel, 0, 0, NULL}
#define MODE(n, def, rel) {#n, CONFIG_MODE, F(n), def, rel, 0, 07777, NULL}
#define ENUM(n, def, rel, w) {#n, CONFIG_ENUM, F(n), def, rel, 0, 0, w}

/*
 * Alphabetical, as PgBouncer's SHOW CONFIG. Defaults and reloadability are
 * those PgBouncer 1.18 reports in SHOW CONFIG, except verbose (its default
 * shows empty there; the man page says 0). Rows marked weir_own are not
 * PgBouncer 1.18's.
 */
static const struct config_setting settings[] = {
    STR(admin_users, "", RELOAD),
    BOOL(application_name_add_host, "0", RELOAD),
    STR(auth_dbname, "", RELOAD), /* weir_own (PgBouncer 1.19) */
    STR(auth_file, "", RELOAD),
    STR(auth_hba_file, "", RELOAD),
    STR(auth_query,
        "SELECT usename, passwd FROM pg_shadow WHERE usename=$1", RELOAD),
    ENUM(auth_type, "md5", RELOAD, auth_type_words),
    STR(auth_user, "", RELOAD),
    TIME(autodb_idle_timeout, "3600", RELOAD),
    TIME(client_idle_timeout, "0", RELOAD),
    TIME(client_login_timeout, "60", RELOAD),
    STR(client_tls_ca_file, "", RELOAD),
    STR(client_tls_cert_file, "", RELOAD),
    STR(client_tls_ciphers, "fast", RELOAD),
    STR(client_tls_dheparams, "auto", RELOAD),
    STR(client_tls_ecdhcurve, "auto", RELOAD),
    STR(client_tls_key_file, "", RELOAD),
    STR(client_tls_protocols, "secure", RELOAD),
    ENUM(client_tls_sslmode, "disable", RELOAD, tls_mode_words),
    STR(conffile, "", RELOAD),
    INT(default_pool_size, "20", RELOAD, 0, INT_MAX),
    BOOL(disable_pqexec, "0", RESTART),
    TIME(dns_max_ttl, "15", RELOAD),
    TIME(dns_nxdomain_ttl, "15", RELOAD),
    TIME(dns_zone_check_period, "0", RELOAD),
    TIME(health_check_period, "2", RELOAD),             /* weir_own: role and lag checks (health.c) */
    TIME(idle_transaction_timeout, "0", RELOAD),
    STR(ignore_startup_parameters, "", RELOAD),
    STR(job_name, "pgbouncer", RESTART),
    STR(listen_addr, "", RESTART),
    INT(listen_backlog, "128", RESTART, 0, INT_MAX),
    INT(listen_port, "6432", RESTART, 1, 65535),
    ENUM(load_balance_hosts, "round-robin", RELOAD, load_balance_words), /* weir_own */
    BOOL(log_connections, "1", RELOAD),
    BOOL(log_disconnections, "1", RELOAD),
    BOOL(log_pooler_errors, "1", RELOAD),
    BOOL(log_stats, "1", RELOAD),
    STR(logfile, "", RELOAD),
    INT(max_client_conn, "100", RELOAD, 1, INT_MAX),
    INT(max_db_connections, "0", RELOAD, 0, INT_MAX),
    INT(max_packet_size, "2147483647", RELOAD, 1, INT_MAX),
    INT(max_prepared_statements, "200", RELOAD, 0, INT_MAX), /* weir_own (PgBouncer 1.21) */
    TIME(max_standby_lag, "0", RELOAD),                 /* weir_own: 0 = no bound */
    INT(max_user_connections, "0", RELOAD, 0, INT_MAX),
    STR(metrics_addr, "127.0.0.1", RESTART),           /* weir_own */
    INT(metrics_port, "0", RESTART, 0, 65535),         /* weir_own */
    INT(min_pool_size, "0", RELOAD, 0, INT_MAX),
    STR(pidfile, "", RESTART),
    INT(pkt_buf, "4096", RESTART, 1, INT_MAX),
    ENUM(pool_mode, "session", RELOAD, pool_mode_words),
    TIME(query_timeout, "0", RELOAD),
    TIME(query_wait_timeout, "120", RELOAD),
    INT(reserve_pool_size, "0", RELOAD, 0, INT_MAX),
    TIME(reserve_pool_timeout, "5", RELOAD),
    STR(resolv_conf, "", RESTART),
    INT(sbuf_loopcnt, "5", RELOAD, 0, INT_MAX),
    INT(scram_iterations, "4096", RELOAD, 1, INT_MAX), /* weir_own (PostgreSQL 16's name) */
    TIME(server_check_delay, "30", RELOAD),
    STR(server_check_query, "select 1", RELOAD),
    TIME(server_connect_timeout, "15", RELOAD),
    BOOL(server_fast_close, "0", RELOAD),
    TIME(server_idle_timeout, "600", RELOAD),
    TIME(server_lifetime, "3600", RELOAD),
    TIME(server_login_retry, "15", RELOAD),
    STR(server_reset_query, "DISCARD ALL", RELOAD),
    BOOL(server_reset_query_always, "0", RELOAD),
    BOOL(server_round_robin, "0", RELOAD),
    STR(server_tls_ca_file, "", RELOAD),
    STR(server_tls_cert_file, "", RELOAD),
    STR(server_tls_ciphers, "fast", RELOAD),
    STR(server_tls_key_file, "", RELOAD),
    STR(server_tls_protocols, "secure", RELOAD),
    ENUM(server_tls_sslmode, "disable", RELOAD, tls_mode_words),
    BOOL(so_reuseport, "0", RESTART),
    INT(stats_period, "60", RELOAD, 1, INT_MAX),
    STR(stats_users, "", RELOAD),
    TIME(suspend_timeout, "10", RELOAD),
    BOOL(syslog, "0", RELOAD),
    STR(syslog_facility, "daemon", RELOAD),
    STR(syslog_ident, "pgbouncer", RELOAD),
    BOOL(tcp_defer_accept, "1", RELOAD),
    BOOL(tcp_keepalive, "1", RELOAD),
    INT(tcp_keepcnt, "0", RELOAD, 0, INT_MAX),
    INT(tcp_keepidle, "0", RELOAD, 0, INT_MAX),
    INT(tcp_keepintvl, "0", RELOAD, 0, INT_MAX),
    INT(tcp_socket_buffer, "0", RELOAD, 0, INT_MAX),
    INT(tcp_user_timeout, "0", RELOAD, 0, INT_MAX),
    STR(unix_socket_dir, "/tmp", RESTART),
    STR(unix_socket_group, "", RESTART),
    MODE(unix_socket_mode, "0777", RESTART),
    STR(user, "", RESTART),
    INT(verbose, "0", RELOAD, 0, INT_MAX),
    INT(workers, "0", RESTART, 0, 1024), /* weir_own */
};

#define N_SETTINGS ((int)(sizeof(settings) / sizeof(settings[0])))

/* Other names PgBouncer documents for a setting. */
static const struct {
    const char *alias, *name;
} setting_aliases[] = {{"service_name", "job_name"}};

/* Where a setting's value came from; file NULL = default or SET. */
struct origin {
    const char *file;
    int line;
};

struct config_sources {
    char **files; /* every file read, as named; entries point into these */
    size_t n_files, cap_files;
    struct origin origin[N_SETTINGS];
};

union value {
    char *s;
    int i;
    bool b;
    int64_t t;
};

/* ------------------------------------------------------------------ */
/* Loading context and reporting                                       */

#define MAX_INCLUDE_DEPTH 16

struct include_frame {
    FILE *fp;
    const char *name; /* interned in cfg->sources */
    int line;
    dev_t dev;        /* which file it is, to refuse an include loop */
    ino_t ino;
};

struct load_ctx {
    struct weir_config *cfg;
    config_report_fn report;
    void *arg;
    int errors;
    bool oom;
    struct include_frame stack[MAX_INCLUDE_DEPTH];
    int depth;
    char *buf; /* the current physical line (getline's buffer) */
    size_t cap;
    const char *file; /* position of the entry being handled */
    int line;
    char *key;         /* its decoded name */
    const char *value; /* its trimmed value, inside buf */
    PQconninfoOption *libpq_opts; /* libpq's keywords, for [databases] */
    /* growing arrays for [databases] and [users], in file order */
    size_t cap_dbs, cap_users;
};

static void vreport(struct load_ctx *ctx, weir_log_level sev, const char *file, int line,
                    const char *fmt, va_list ap)
{
    char msg[1024];

    if (sev >= WEIR_LOG_ERROR)
        ctx->errors++;
    if (ctx->report == NULL)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    ctx->report(ctx->arg, sev, file, line, msg);
}

__attribute__((format(printf, 5, 6))) static void report_at(struct load_ctx *ctx, weir_log_level sev,
                                                            const char *file, int line,
                                                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(ctx, sev, file, line, fmt, ap);
    va_end(ap);
}

/* About the entry or line being read. */
__attribute__((format(printf, 3, 4))) static void report_here(struct load_ctx *ctx, weir_log_level sev,
                                                              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(ctx, sev, ctx->file, ctx->line, fmt, ap);
    va_end(ap);
}

static void report_oom(struct load_ctx *ctx)
{
    if (!ctx->oom)
        report_at(ctx, WEIR_LOG_ERROR, ctx->file, ctx->line, "out of memory while loading the configuration");
    ctx->oom = true;
}

/* ------------------------------------------------------------------ */
/* Values: text <-> typed field                                        */

static int find_word(const char *const *words, const char *text)
{
    for (int i = 0; words[i]; i++)
        if (strcasecmp(words[i], text) == 0)
            return i;
    return -1;
}

static void list_words(const char *const *words, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; words[i] && used < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? ", " : "", words[i]);
}

/* A whole decimal integer (leading sign allowed), or false. */
static bool parse_integer(const char *text, long long *out)
{
    char *end;

    if (!isdigit((unsigned char)text[0]) && !((text[0] == '-' || text[0] == '+') &&
                                               isdigit((unsigned char)text[1])))
        return false;
    errno = 0;
    *out = strtoll(text, &end, 10);
    return errno == 0 && *end == '\0';
}

static int parse_int(const struct config_setting *s, const char *text, union value *v, char *why,
                     size_t wl)
{
    long long n;

    if (!parse_integer(text, &n)) {
        snprintf(why, wl, "expected an integer");
        return WEIR_EINVAL;
    }
    if (n < s->min || n > s->max) {
        if (s->max == INT_MAX && n < s->min)
            snprintf(why, wl, "must be at least %lld", (long long)s->min);
        else
            snprintf(why, wl, "must be between %lld and %lld", (long long)s->min, (long long)s->max);
        return WEIR_EINVAL;
    }
    v->i = (int)n;
    return 0;
}

/* PgBouncer 1.18 stores these as integers, so any integer works (non-zero is on). */
static int parse_bool(const char *text, union value *v, char *why, size_t wl)
{
    static const char *const on[] = {"yes", "on", "true", NULL};
    static const char *const off[] = {"no", "off", "false", NULL};
    long long n;

    if (parse_integer(text, &n)) {
        v->b = n != 0;
        return 0;
    }
    if (find_word(on, text) >= 0 || find_word(off, text) >= 0) {
        v->b = find_word(on, text) >= 0;
        return 0;
    }
    snprintf(why, wl, "expected a boolean (0/1, yes/no, on/off, true/false)");
    return WEIR_EINVAL;
}

/* Seconds, fractions and exponents allowed, no unit: what PgBouncer accepts. */
static int parse_time(const char *text, union value *v, char *why, size_t wl)
{
    char *end;
    double secs;

    errno = 0;
    secs = strtod(text, &end);
    if (text[0] == '\0' || isspace((unsigned char)text[0]) || *end != '\0' || errno != 0 ||
        !isfinite(secs) || isalpha((unsigned char)text[0])) {
        snprintf(why, wl, "expected a number of seconds, without a unit (e.g. 30 or 1.5)");
        return WEIR_EINVAL;
    }
    if (secs < 0 || secs > 9e12) {
        snprintf(why, wl, "must be between 0 and 9e12 seconds");
        return WEIR_EINVAL;
    }
    v->t = llround(secs * 1e6);
    return 0;
}

/* Always octal, so "777" means 0777 (PgBouncer would read it as decimal). */
static int parse_mode(const char *text, union value *v, char *why, size_t wl)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(text, &end, 8);
    if (text[0] < '0' || text[0] > '7' || *end != '\0' || errno != 0 || n > 07777) {
        snprintf(why, wl, "expected an octal file mode such as 0777");
        return WEIR_EINVAL;
    }
    v->i = (int)n;
    return 0;
}

static int parse_enum(const struct config_setting *s, const char *text, union value *v, char *why,
                      size_t wl)
{
    char words[256];
    int i = find_word(s->words, text);

    if (i < 0) {
        list_words(s->words, words, sizeof(words));
        snprintf(why, wl, "expected one of: %s", words);
        return WEIR_EINVAL;
    }
    v->i = i;
    return 0;
}

/* Text to a typed value; strings are copied (the caller owns v->s). */
static int parse_value(const struct config_setting *s, const char *text, union value *v, char *why,
                       size_t wl)
{
    switch (s->type) {
    case CONFIG_STRING:
        v->s = strdup(text);
        return v->s ? 0 : WEIR_ENOMEM;
    case CONFIG_INT: return parse_int(s, text, v, why, wl);
    case CONFIG_BOOL: return parse_bool(text, v, why, wl);
    case CONFIG_TIME: return parse_time(text, v, why, wl);
    case CONFIG_MODE: return parse_mode(text, v, why, wl);
    case CONFIG_ENUM: return parse_enum(s, text, v, why, wl);
    }
    return WEIR_EINVAL;
}

static void *field(const struct weir_config *cfg, const struct config_setting *s)
{
    return (char *)cfg + s->offset;
}

/* Store v in cfg, freeing a replaced string. memcpy: fields differ in type. */
static void store_value(struct weir_config *cfg, const struct config_setting *s, union value v)
{
    char *old;

    switch (s->type) {
    case CONFIG_STRING:
        memcpy(&old, field(cfg, s), sizeof(old));
        free(old);
        memcpy(field(cfg, s), &v.s, sizeof(v.s));
        break;
    case CONFIG_BOOL: memcpy(field(cfg, s), &v.b, sizeof(v.b)); break;
    case CONFIG_TIME: memcpy(field(cfg, s), &v.t, sizeof(v.t)); break;
    default: memcpy(field(cfg, s), &v.i, sizeof(v.i)); break;
    }
}

static union value load_value(const struct weir_config *cfg, const struct config_setting *s)
{
    union value v;

    switch (s->type) {
    case CONFIG_STRING: memcpy(&v.s, field(cfg, s), sizeof(v.s)); break;
    case CONFIG_BOOL: memcpy(&v.b, field(cfg, s), sizeof(v.b)); break;
    case CONFIG_TIME: memcpy(&v.t, field(cfg, s), sizeof(v.t)); break;
    default: memcpy(&v.i, field(cfg, s), sizeof(v.i)); break;
    }
    return v;
}

/* Microseconds as seconds, without trailing zeros: 3600, 1.5, 0.000001. */
static int format_time(int64_t us, char *buf, size_t len)
{
    char frac[8];
    int n;

    if (us % 1000000 == 0)
        return snprintf(buf, len, "%lld", (long long)(us / 1000000));
    snprintf(frac, sizeof(frac), "%06lld", (long long)(us % 1000000));
    for (n = 5; n > 0 && frac[n] == '0'; n--)
        frac[n] = '\0';
    return snprintf(buf, len, "%lld.%s", (long long)(us / 1000000), frac);
}

/* ------------------------------------------------------------------ */
/* Settings table lookups                                              */

static int setting_index(const char *name)
{
    for (size_t i = 0; i < sizeof(setting_aliases) / sizeof(setting_aliases[0]); i++)
        if (strcasecmp(name, setting_aliases[i].alias) == 0)
            name = setting_aliases[i].name;
    for (int i = 0; i < N_SETTINGS; i++)
        if (strcasecmp(name, settings[i].name) == 0)
            return i;
    return -1;
}

static const char *intern_file(struct load_ctx *ctx, const char *name)
{
    struct config_sources *src = ctx->cfg->sources;
    char *copy;

    if (src->n_files == src->cap_files) {
        size_t cap = src->cap_files ? src->cap_files * 2 : 4;
        char **files = realloc(src->files, cap * sizeof(*files));
        if (files == NULL)
            return NULL;
        src->files = files;
        src->cap_files = cap;
    }
    copy = strdup(name);
    if (copy)
        src->files[src->n_files++] = copy;
    return copy;
}

/* ------------------------------------------------------------------ */
/* The reader: PgBouncer's line syntax, %include, positions            */

static char *skip_blank(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return (char *)p;
}

static void rtrim(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* fopen() succeeds on a directory; reading it would fail without a clear reason. */
static bool is_directory(FILE *fp)
{
    struct stat st;

    return fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode);
}

/* Is the file already being read further up the include stack? Without this
 * a file that includes itself twice is read 2^MAX_INCLUDE_DEPTH times. */
static bool already_open(const struct load_ctx *ctx, const struct stat *st)
{
    for (int i = 0; i < ctx->depth; i++)
        if (ctx->stack[i].dev == st->st_dev && ctx->stack[i].ino == st->st_ino)
            return true;
    return false;
}

static bool push_file(struct load_ctx *ctx, const char *path)
{
    struct include_frame *fr;
    struct stat st = {0};
    const char *name;
    FILE *fp;

    if (ctx->depth == MAX_INCLUDE_DEPTH) {
        report_here(ctx, WEIR_LOG_ERROR,
                    "%%include of \"%s\" nested more than %d deep (does a file include itself?)", path,
                    MAX_INCLUDE_DEPTH);
        return false;
    }
    fp = fopen(path, "r");
    if (fp == NULL || is_directory(fp)) {
        report_here(ctx, WEIR_LOG_ERROR, "cannot open config file \"%s\": %s", path,
                    strerror(fp ? EISDIR : errno));
        if (fp)
            fclose(fp);
        return false;
    }
    if (fstat(fileno(fp), &st) == 0 && already_open(ctx, &st)) {
        report_here(ctx, WEIR_LOG_ERROR, "%%include of \"%s\" loops: that file is already being read", path);
        fclose(fp);
        return false;
    }
    name = intern_file(ctx, path);
    if (name == NULL) {
        fclose(fp);
        report_oom(ctx);
        return false;
    }
    fr = &ctx->stack[ctx->depth++];
    fr->fp = fp;
    fr->name = name;
    fr->line = 0;
    fr->dev = st.st_dev;
    fr->ino = st.st_ino;
    return true;
}

static void pop_file(struct load_ctx *ctx)
{
    struct include_frame *fr = &ctx->stack[--ctx->depth];

    if (ferror(fr->fp))
        report_at(ctx, WEIR_LOG_ERROR, fr->name, fr->line, "error reading \"%s\"", fr->name);
    fclose(fr->fp);
}

/* "%include FILE": FILE is relative to the working directory, as in PgBouncer. */
static void do_include(struct load_ctx *ctx, char *rest)
{
    char *path = skip_blank(rest);

    if (*path == '\0') {
        report_here(ctx, WEIR_LOG_ERROR, "%%include needs a file name");
        return;
    }
    push_file(ctx, path);
}

/* A section header: returns the text inih should see, or NULL to skip the line. */
static char *header_line(struct load_ctx *ctx, char *p, char *out, int num)
{
    char *end = strchr(p, ']');

    if (end == NULL || *skip_blank(end + 1) != '\0') {
        report_here(ctx, WEIR_LOG_ERROR, "syntax error: expected \"[section]\"");
        return NULL;
    }
    *end = '\0';
    if (snprintf(out, (size_t)num, "[%s]\n", p + 1) >= num) {
        report_here(ctx, WEIR_LOG_ERROR, "section name too long");
        return NULL;
    }
    if (strcasecmp(p + 1, "databases") && strcasecmp(p + 1, "users") && strcasecmp(p + 1, "weir") &&
        strcasecmp(p + 1, "pgbouncer"))
        report_here(ctx, WEIR_LOG_WARNING, "unknown section [%s]; its entries are ignored", p + 1);
    return out;
}

static bool is_key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-' || c == '*';
}

/* A double-quoted name, "" standing for one quote; returns past it or NULL. */
static char *quoted_key(const char *p, char *dst)
{
    for (p++;; p++) {
        if (*p == '\0')
            return NULL;
        if (*p == '"' && p[1] != '"')
            break;
        if (*p == '"')
            p++;
        *dst++ = *p;
    }
    *dst = '\0';
    return (char *)p + 1;
}

/* "key = value": sets ctx->key and ctx->value; false after reporting. */
static bool split_entry(struct load_ctx *ctx, char *p)
{
    char *q;

    free(ctx->key);
    ctx->key = malloc(strlen(p) + 1);
    if (ctx->key == NULL) {
        report_oom(ctx);
        return false;
    }
    if (*p == '"') {
        q = quoted_key(p, ctx->key);
    } else {
        for (q = p; is_key_char(*q); q++)
            ;
        memcpy(ctx->key, p, (size_t)(q - p));
        ctx->key[q - p] = '\0';
    }
    if (q == NULL || q == p || *(q = skip_blank(q)) != '=') {
        report_here(ctx, WEIR_LOG_ERROR, "syntax error: expected \"name = value\"");
        return false;
    }
    ctx->value = skip_blank(q + 1);
    return true;
}

/*
 * inih's fgets-style reader. Reads whole physical lines from the file on top
 * of the include stack, handles comments and %include itself, and hands inih
 * either "[section]" or a placeholder "k=" whose real key and value the
 * handler takes from ctx (so neither length nor ';' inside values matter).
 */
static char *read_line(char *out, int num, void *stream)
{
    struct load_ctx *ctx = stream;

    while (ctx->depth > 0 && !ctx->oom) {
        struct include_frame *fr = &ctx->stack[ctx->depth - 1];
        char *p;

        if (getline(&ctx->buf, &ctx->cap, fr->fp) < 0) {
            pop_file(ctx);
            continue;
        }
        fr->line++;
        ctx->file = fr->name;
        ctx->line = fr->line;
        p = ctx->buf;
        if (fr->line == 1 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
            p += 3;
        p = skip_blank(p);
        rtrim(p);
        if (*p == '\0' || *p == ';' || *p == '#')
            continue;
        if (strncmp(p, "%include", 8) == 0 && (p[8] == '\0' || isspace((unsigned char)p[8]))) {
            do_include(ctx, p + 8);
            continue;
        }
        if (*p == '[') {
            if (header_line(ctx, p, out, num))
                return out;
            continue;
        }
        if (split_entry(ctx, p)) {
            snprintf(out, (size_t)num, "k=\n");
            return out;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* [weir] / [pgbouncer]                                                */

static void set_from_file(struct load_ctx *ctx, const char *key, const char *text)
{
    int i = setting_index(key);
    union value v;
    char why[300];

    if (i < 0) {
        report_here(ctx, WEIR_LOG_WARNING, "unknown setting \"%s\" ignored", key);
        return;
    }
    switch (parse_value(&settings[i], text, &v, why, sizeof(why))) {
    case 0:
        store_value(ctx->cfg, &settings[i], v);
        ctx->cfg->sources->origin[i] = (struct origin){ctx->file, ctx->line};
        break;
    case WEIR_ENOMEM: report_oom(ctx); break;
    default:
        report_here(ctx, WEIR_LOG_ERROR, "invalid value \"%.200s\" for %s: %s", text, settings[i].name, why);
    }
}

/* ------------------------------------------------------------------ */
/* Conninfo-style values of [databases] and [users]                   */

/*
 * The next "key=value" of a PgBouncer connection string: blanks around '='
 * allowed, a value either bare (up to a blank) or in single quotes with ''
 * for a quote. Returns 1 with *key and *val set (malloc'd), 0 at the end,
 * WEIR_EINVAL with why, or WEIR_ENOMEM.
 */
static int conninfo_next(const char **pp, char **key, char **val, char *why, size_t wl)
{
    const char *p = skip_blank(*pp), *k = p;
    char *v, *d;

    if (*p == '\0')
        return 0;
    while (*p && !isspace((unsigned char)*p) && *p != '=')
        p++;
    if (p == k || *skip_blank(p) != '=') {
        snprintf(why, wl, p == k ? "missing parameter name before \"=\"" : "expected \"=\" after \"%.*s\"",
                 (int)(p - k), k);
        return WEIR_EINVAL;
    }
    *key = strndup(k, (size_t)(p - k));
    v = d = malloc(strlen(p) + 1);
    if (*key == NULL || v == NULL)
        goto oom;
    p = skip_blank(skip_blank(p) + 1);
    if (*p == '\'') {
        bool closed = false;
        for (p++; *p; p++) {
            if (*p == '\'' && *++p != '\'') {
                closed = true;
                break;
            }
            *d++ = *p;
        }
        if (!closed || (*p && !isspace((unsigned char)*p))) {
            snprintf(why, wl, "bad quoting in the value of \"%s\"", *key);
            free(*key);
            free(v);
            return WEIR_EINVAL;
        }
    } else {
        while (*p && !isspace((unsigned char)*p))
            *d++ = *p++;
    }
    *d = '\0';
    *val = v;
    *pp = p;
    return 1;
oom:
    free(*key);
    free(v);
    return WEIR_ENOMEM;
}

/* pool_size=-1 is PgBouncer's own spelling of "not set". */
static bool parse_count(const char *text, int *out)
{
    long long n;

    if (!parse_integer(text, &n) || n < -1 || n > INT_MAX)
        return false;
    *out = (int)n;
    return true;
}

enum db_key_kind { DBK_STR, DBK_PORT, DBK_COUNT, DBK_POOL_MODE, DBK_LOAD_BALANCE };

/* PgBouncer 1.18's per-database keys; others go to libpq. */
static const struct db_key {
    const char *name;
    enum db_key_kind kind;
    size_t offset;
} db_keys[] = {
#define D(n, k) {#n, k, offsetof(struct db_config, n)}
    D(dbname, DBK_STR),          D(host, DBK_STR),           D(port, DBK_PORT),
    D(user, DBK_STR),            D(password, DBK_STR),       D(auth_user, DBK_STR),
    D(auth_dbname, DBK_STR), /* PgBouncer 1.19's; accepted here too */
    D(pool_size, DBK_COUNT),     D(min_pool_size, DBK_COUNT), D(reserve_pool, DBK_COUNT),
    D(connect_query, DBK_STR),   D(pool_mode, DBK_POOL_MODE), D(max_db_connections, DBK_COUNT),
    D(client_encoding, DBK_STR), D(datestyle, DBK_STR),      D(timezone, DBK_STR),
    D(application_name, DBK_STR), D(load_balance_hosts, DBK_LOAD_BALANCE), /* PgBouncer 1.24's */
#undef D
};

/* libpq's form: comma-separated ports, an empty element meaning the default. */
static bool valid_port_list(const char *s)
{
    long long n;
    char item[16];

    while (*s) {
        size_t len = strcspn(s, ",");
        if (len >= sizeof(item))
            return false;
        memcpy(item, s, len);
        item[len] = '\0';
        if (len > 0 && (!parse_integer(item, &n) || n < 1 || n > 65535))
            return false;
        s += len + (s[len] == ',');
    }
    return true;
}

static bool is_libpq_keyword(const struct load_ctx *ctx, const char *key)
{
    for (const PQconninfoOption *o = ctx->libpq_opts; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0)
            return true;
    return false;
}

static int add_extra(struct db_config *db, char *key, char *val)
{
    struct config_kv *kv;

    for (size_t i = 0; i < db->n_extra; i++) {
        if (strcmp(db->extra[i].key, key) == 0) {
            free(db->extra[i].value);
            free(key);
            db->extra[i].value = val;
            return 0;
        }
    }
    kv = realloc(db->extra, (db->n_extra + 1) * sizeof(*kv));
    if (kv == NULL) {
        free(key);
        free(val);
        return WEIR_ENOMEM;
    }
    db->extra = kv;
    kv[db->n_extra++] = (struct config_kv){key, val};
    return 0;
}

/* One key of a database entry; takes ownership of key and val. */
static int db_set(struct load_ctx *ctx, struct db_config *db, char *key, char *val)
{
    const struct db_key *k = NULL;
    char **str;
    int bad = 0;

    for (size_t i = 0; i < sizeof(db_keys) / sizeof(db_keys[0]); i++)
        if (strcmp(db_keys[i].name, key) == 0)
            k = &db_keys[i];
    if (k == NULL) {
        if (is_libpq_keyword(ctx, key))
            return add_extra(db, key, val);
        report_here(ctx, WEIR_LOG_ERROR, "database \"%s\": unknown connection parameter \"%s\"",
                    db->name, key);
        bad = 1;
    } else if (k->kind == DBK_STR || k->kind == DBK_PORT) {
        if (k->kind == DBK_PORT && !valid_port_list(val)) {
            report_here(ctx, WEIR_LOG_ERROR, "database \"%s\": invalid port \"%.50s\"", db->name, val);
            bad = 1;
        } else {
            str = (char **)((char *)db + k->offset);
            free(*str);
            *str = val;
            val = NULL;
        }
    } else if (k->kind == DBK_COUNT) {
        if (!parse_count(val, (int *)((char *)db + k->offset))) {
            report_here(ctx, WEIR_LOG_ERROR,
                        "database \"%s\": invalid value \"%.50s\" for %s: expected a non-negative integer",
                        db->name, val, key);
            bad = 1;
        }
    } else if (k->kind == DBK_LOAD_BALANCE) {
        if ((db->load_balance_hosts = find_word(load_balance_words, val)) < 0) {
            report_here(ctx, WEIR_LOG_ERROR,
                        "database \"%s\": invalid load_balance_hosts \"%.50s\": expected round-robin, disable "
                        "or least-connections",
                        db->name, val);
            bad = 1;
        }
    } else if ((db->pool_mode = find_word(pool_mode_words, val)) < 0) {
        report_here(ctx, WEIR_LOG_ERROR,
                    "database \"%s\": invalid pool_mode \"%.50s\": expected session, transaction or statement",
                    db->name, val);
        bad = 1;
    }
    free(key);
    free(val);
    return bad ? WEIR_EINVAL : 0;
}

static void free_db(struct db_config *db)
{
    char **str;

    free(db->name);
    for (size_t i = 0; i < sizeof(db_keys) / sizeof(db_keys[0]); i++) {
        if (db_keys[i].kind == DBK_STR || db_keys[i].kind == DBK_PORT) {
            str = (char **)((char *)db + db_keys[i].offset);
            free(*str);
        }
    }
    for (size_t i = 0; i < db->n_extra; i++) {
        free(db->extra[i].key);
        free(db->extra[i].value);
    }
    free(db->extra);
}

/* Run each key=value of text through set(); false if any was bad. */
static bool parse_pairs(struct load_ctx *ctx, const char *what, const char *name, const char *text,
                        int (*set)(struct load_ctx *, void *, char *, char *), void *obj)
{
    char why[200], *key, *val;
    bool ok = true;
    int rc;

    while ((rc = conninfo_next(&text, &key, &val, why, sizeof(why))) == 1) {
        rc = set(ctx, obj, key, val);
        if (rc == WEIR_ENOMEM)
            break;
        ok = ok && rc == 0;
    }
    if (rc == WEIR_ENOMEM) {
        report_oom(ctx);
        return false;
    }
    if (rc < 0)
        report_here(ctx, WEIR_LOG_ERROR, "%s \"%s\": %s", what, name, why);
    return ok && rc == 0;
}

static int db_set_cb(struct load_ctx *ctx, void *obj, char *key, char *val)
{
    return db_set(ctx, obj, key, val);
}


/* Room for one more element in a growing array (doubling); false after
 * reporting out of memory. */
static bool grow(struct load_ctx *ctx, void **v, size_t *cap, size_t n, size_t elem)
{
    void *bigger;
    size_t want;

    if (n < *cap)
        return true;
    want = *cap ? *cap * 2 : 8;
    bigger = realloc(*v, want * elem);
    if (bigger == NULL) {
        report_oom(ctx);
        return false;
    }
    *v = bigger;
    *cap = want;
    return true;
}

static void on_database(struct load_ctx *ctx, const char *name, const char *text)
{
    struct weir_config *cfg = ctx->cfg;
    struct db_config db = {.line = ctx->line, .file = ctx->file};

    if (name[0] == '\0') {
        report_here(ctx, WEIR_LOG_ERROR, "empty database name");
        return;
    }
    if (strcmp(name, "pgbouncer") == 0 || strcmp(name, "weir") == 0) {
        report_here(ctx, WEIR_LOG_ERROR, "database name \"%s\" is reserved for the admin console", name);
        return;
    }
    db.pool_size = db.min_pool_size = db.reserve_pool = db.max_db_connections = CONFIG_UNSET;
    db.pool_mode = db.load_balance_hosts = CONFIG_UNSET;
    db.name = strdup(name);
    if (db.name == NULL) {
        report_oom(ctx);
        return;
    }
    if (!parse_pairs(ctx, "database", name, text, db_set_cb, &db))
        goto drop;
    if (!grow(ctx, (void **)&cfg->dbs, &ctx->cap_dbs, cfg->n_dbs, sizeof(*cfg->dbs)))
        goto drop;
    cfg->dbs[cfg->n_dbs++] = db;
    return;
drop:
    free_db(&db);
}

/* [users]: PgBouncer 1.18 allows pool_mode and max_user_connections. */
static int user_set_cb(struct load_ctx *ctx, void *obj, char *key, char *val)
{
    struct user_config *u = obj;
    int rc = 0;
    long long n;

    if (strcmp(key, "pool_mode") == 0) {
        if ((u->pool_mode = find_word(pool_mode_words, val)) < 0) {
            report_here(ctx, WEIR_LOG_ERROR,
                        "user \"%s\": invalid pool_mode \"%.50s\": expected session, transaction or statement",
                        u->name, val);
            rc = WEIR_EINVAL;
        }
    } else if (strcmp(key, "max_user_connections") == 0) {
        if (!parse_integer(val, &n) || n < 0 || n > INT_MAX) {
            report_here(ctx, WEIR_LOG_ERROR,
                        "user \"%s\": invalid value \"%.50s\" for max_user_connections: "
                        "expected a non-negative integer",
                        u->name, val);
            rc = WEIR_EINVAL;
        } else {
            u->max_user_connections = (int)n;
        }
    } else {
        report_here(ctx, WEIR_LOG_ERROR,
                    "user \"%s\": unknown setting \"%s\" (allowed: pool_mode, max_user_connections)", u->name,
                    key);
        rc = WEIR_EINVAL;
    }
    free(key);
    free(val);
    return rc;
}

static void on_user(struct load_ctx *ctx, const char *name, const char *text)
{
    struct weir_config *cfg = ctx->cfg;
    struct user_config u = {.line = ctx->line, .file = ctx->file};

    if (name[0] == '\0') {
        report_here(ctx, WEIR_LOG_ERROR, "empty user name");
        return;
    }
    u.pool_mode = u.max_user_connections = CONFIG_UNSET;
    u.name = strdup(name);
    if (u.name == NULL) {
        report_oom(ctx);
        return;
    }
    if (!parse_pairs(ctx, "user", name, text, user_set_cb, &u))
        goto drop;
    if (!grow(ctx, (void **)&cfg->users, &ctx->cap_users, cfg->n_users, sizeof(*cfg->users)))
        goto drop;
    cfg->users[cfg->n_users++] = u;
    return;
drop:
    free(u.name);
}

/* inih's handler: the real key and value are in ctx (see read_line). */
static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = user;

    (void)name;
    (void)value;
    if (ctx->oom)
        return 1;
    if (section[0] == '\0')
        report_here(ctx, WEIR_LOG_WARNING, "\"%s\" is outside any section; ignored", ctx->key);
    else if (strcasecmp(section, "databases") == 0)
        on_database(ctx, ctx->key, ctx->value);
    else if (strcasecmp(section, "users") == 0)
        on_user(ctx, ctx->key, ctx->value);
    else if (strcasecmp(section, "weir") == 0 || strcasecmp(section, "pgbouncer") == 0)
        set_from_file(ctx, ctx->key, ctx->value);
    return 1;
}

/* ------------------------------------------------------------------ */
/* After parsing: unique sorted names, cross-checks                    */

struct entry_ref {
    const char *name, *file;
    int line;
    size_t idx;
};

static int cmp_ref(const void *a, const void *b)
{
    const struct entry_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/*
 * Sort the n elements at base by name; of duplicates the later one wins, as
 * in PgBouncer, with a warning. refs describes each element (refs[i] is
 * element i) and is reordered.
 */
static void sort_unique(struct load_ctx *ctx, const char *what, void *base, size_t *n, size_t size,
                        struct entry_ref *refs, void (*free_elem)(void *))
{
    char *sorted;
    size_t out = 0;

    if (*n == 0)
        return;
    sorted = malloc(*n * size);
    if (sorted == NULL) {
        report_oom(ctx);
        return;
    }
    qsort(refs, *n, sizeof(*refs), cmp_ref);
    for (size_t i = 0; i < *n; i++) {
        char *elem = (char *)base + refs[i].idx * size;
        if (i + 1 < *n && strcmp(refs[i].name, refs[i + 1].name) == 0) {
            report_at(ctx, WEIR_LOG_WARNING, refs[i + 1].file, refs[i + 1].line,
                      "%s \"%s\" defined again; this replaces the definition at %s:%d", what,
                      refs[i].name, refs[i].file, refs[i].line);
            free_elem(elem);
            continue;
        }
        memcpy(sorted + out++ * size, elem, size);
    }
    memcpy(base, sorted, out * size);
    *n = out;
    free(sorted);
}

static void free_db_cb(void *db)
{
    free_db(db);
}

static void free_user_cb(void *u)
{
    free(((struct user_config *)u)->name);
}

static void sort_entries(struct load_ctx *ctx)
{
    struct weir_config *cfg = ctx->cfg;
    size_t n = cfg->n_dbs > cfg->n_users ? cfg->n_dbs : cfg->n_users;
    struct entry_ref *refs = malloc((n + 1) * sizeof(*refs));

    if (refs == NULL) {
        report_oom(ctx);
        return;
    }
    for (size_t i = 0; i < cfg->n_dbs; i++)
        refs[i] = (struct entry_ref){cfg->dbs[i].name, cfg->dbs[i].file, cfg->dbs[i].line, i};
    sort_unique(ctx, "database", cfg->dbs, &cfg->n_dbs, sizeof(*cfg->dbs), refs, free_db_cb);
    for (size_t i = 0; i < cfg->n_users; i++)
        refs[i] = (struct entry_ref){cfg->users[i].name, cfg->users[i].file, cfg->users[i].line, i};
    sort_unique(ctx, "user", cfg->users, &cfg->n_users, sizeof(*cfg->users), refs, free_user_cb);
    free(refs);
}

/* Where a setting was set, for messages; the main file when it is a default. */
static struct origin origin_of(const struct weir_config *cfg, const char *name)
{
    struct origin o = cfg->sources->origin[setting_index(name)];

    if (o.file == NULL)
        o = (struct origin){cfg->sources->n_files ? cfg->sources->files[0] : cfg->conffile, 0};
    return o;
}

__attribute__((format(printf, 4, 5))) static void report_setting(struct load_ctx *ctx, weir_log_level sev,
                                                                 const char *name, const char *fmt, ...)
{
    struct origin o = origin_of(ctx->cfg, name);
    va_list ap;

    va_start(ap, fmt);
    vreport(ctx, sev, o.file, o.line, fmt, ap);
    va_end(ap);
}

/* A file-name setting that must name a readable file when set (or required). */
static void check_readable(struct load_ctx *ctx, const char *name, const char *path, const char *needed_by)
{
    if (path[0] == '\0') {
        if (needed_by)
            report_setting(ctx, WEIR_LOG_ERROR, name, "%s must be set when %s", name, needed_by);
        return;
    }
    if (access(path, R_OK) != 0)
        report_setting(ctx, WEIR_LOG_ERROR, name, "%s \"%s\" cannot be read: %s", name, path,
                       strerror(errno));
}

static bool any_auth_user(const struct weir_config *cfg)
{
    if (cfg->auth_user[0])
        return true;
    for (size_t i = 0; i < cfg->n_dbs; i++)
        if (cfg->dbs[i].auth_user && cfg->dbs[i].auth_user[0])
            return true;
    return false;
}

/* A skipped hba line is a warning (PgBouncer skips it too); an unreadable file an error. */
static void hba_report(void *arg, const char *file, int line, const char *message)
{
    struct load_ctx *ctx = arg;
    report_at(ctx, line > 0 ? WEIR_LOG_WARNING : WEIR_LOG_ERROR, file, line, "%s", message);
}

/* The rules hang off the config: a reload that fails keeps the old ones. */
static void load_hba(struct load_ctx *ctx)
{
    struct weir_config *cfg = ctx->cfg;

    if (cfg->auth_hba_file[0] == '\0' || access(cfg->auth_hba_file, R_OK) != 0)
        return; /* check_readable said why */
    if (hba_load(cfg->auth_hba_file, &cfg->hba, hba_report, ctx) < 0 && cfg->hba == NULL && !ctx->errors)
        report_oom(ctx);
}

static void check_auth(struct load_ctx *ctx)
{
    const struct weir_config *cfg = ctx->cfg;
    enum auth_type t = cfg->auth_type;
    bool uses_file = t == AUTH_TYPE_TRUST || t == AUTH_TYPE_PLAIN || t == AUTH_TYPE_MD5 ||
                     t == AUTH_TYPE_SCRAM_SHA_256 || t == AUTH_TYPE_HBA;

    if (uses_file && cfg->auth_file[0])
        check_readable(ctx, "auth_file", cfg->auth_file, NULL);
    else if (uses_file && t != AUTH_TYPE_HBA && !any_auth_user(cfg))
        report_setting(ctx, WEIR_LOG_WARNING, "auth_type",
                       "auth_type is %s but neither auth_file nor auth_user is set: no client can log in",
                       auth_type_words[t]);
    if (t == AUTH_TYPE_HBA) {
        check_readable(ctx, "auth_hba_file", cfg->auth_hba_file, "auth_type is hba");
        load_hba(ctx);
    }
}

static void check_protocols(struct load_ctx *ctx, const char *name, const char *value)
{
    unsigned mask;

    if (tls_parse_protocols(value, &mask) != 0)
        report_setting(ctx, WEIR_LOG_ERROR, name,
                       "invalid %s \"%s\": a list of tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, or all, secure, legacy",
                       name, value);
}

/* TLS files are only read when the mode enables TLS; PgBouncer ignores them
 * otherwise. The combinations PgBouncer refuses to start with are errors. */
static void check_tls(struct load_ctx *ctx)
{
    const struct weir_config *cfg = ctx->cfg;
    const char *ciphers = cfg->server_tls_ciphers;

    if (cfg->client_tls_sslmode != TLS_MODE_DISABLE) {
        const char *why = "client_tls_sslmode is not disable";
        const char *dh = cfg->client_tls_dheparams;
        check_readable(ctx, "client_tls_key_file", cfg->client_tls_key_file, why);
        check_readable(ctx, "client_tls_cert_file", cfg->client_tls_cert_file, why);
        check_readable(ctx, "client_tls_ca_file", cfg->client_tls_ca_file,
                       cfg->client_tls_sslmode == TLS_MODE_VERIFY_FULL ? "client_tls_sslmode is verify-full" : NULL);
        check_protocols(ctx, "client_tls_protocols", cfg->client_tls_protocols);
        if (dh[0] && strcasecmp(dh, "auto") != 0 && strcasecmp(dh, "none") != 0 && strcasecmp(dh, "legacy") != 0)
            report_setting(ctx, WEIR_LOG_ERROR, "client_tls_dheparams",
                           "invalid client_tls_dheparams \"%s\": auto, none or legacy", dh);
    }
    if (cfg->auth_type == AUTH_TYPE_PAM) /* loudly at start or reload, not at every login */
        report_setting(ctx, WEIR_LOG_ERROR, "auth_type",
                       "auth_type pam is not supported by weir (it would need libpam): use hba, "
                       "scram-sha-256, md5 or an auth_query instead");
    if (cfg->auth_type == AUTH_TYPE_CERT && cfg->client_tls_sslmode != TLS_MODE_VERIFY_FULL)
        report_setting(ctx, WEIR_LOG_ERROR, "auth_type", "auth_type cert requires client_tls_sslmode = verify-full");
    if (cfg->server_tls_sslmode != TLS_MODE_DISABLE) {
        check_readable(ctx, "server_tls_ca_file", cfg->server_tls_ca_file, NULL);
        check_readable(ctx, "server_tls_key_file", cfg->server_tls_key_file, NULL);
        check_readable(ctx, "server_tls_cert_file", cfg->server_tls_cert_file, NULL);
        check_protocols(ctx, "server_tls_protocols", cfg->server_tls_protocols);
        if (ciphers[0] && strcasecmp(ciphers, "fast") != 0 && strcasecmp(ciphers, "normal") != 0 &&
            strcasecmp(ciphers, "default") != 0 && strcasecmp(ciphers, "secure") != 0)
            report_setting(ctx, WEIR_LOG_WARNING, "server_tls_ciphers",
                           "server_tls_ciphers \"%s\" is not applied: libpq, which makes the backend "
                           "connections, takes no cipher list; OpenSSL's defaults are used",
                           ciphers);
    }
}

/* PgBouncer would only fail when it binds; failing at load tells the operator sooner. */
static void check_socket_dir(struct load_ctx *ctx)
{
    const char *dir = ctx->cfg->unix_socket_dir;
    struct stat st;

    if (dir[0] == '\0' || dir[0] == '@')
        return;
    if (stat(dir, &st) != 0)
        report_setting(ctx, WEIR_LOG_ERROR, "unix_socket_dir", "unix_socket_dir \"%s\": %s", dir,
                       strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        report_setting(ctx, WEIR_LOG_ERROR, "unix_socket_dir", "unix_socket_dir \"%s\" is not a directory",
                       dir);
}

/* Only a warning: the daemon can still log to stderr. */
static void check_logfile(struct load_ctx *ctx)
{
    const char *path = ctx->cfg->logfile;
    char *copy;

    if (path[0] == '\0')
        return;
    if (access(path, F_OK) == 0) {
        if (access(path, W_OK) != 0)
            report_setting(ctx, WEIR_LOG_WARNING, "logfile", "logfile \"%s\" is not writable: %s", path,
                           strerror(errno));
        return;
    }
    copy = strdup(path);
    if (copy == NULL) {
        report_oom(ctx);
        return;
    }
    if (access(dirname(copy), W_OK) != 0)
        report_setting(ctx, WEIR_LOG_WARNING, "logfile", "logfile \"%s\" cannot be created in \"%s\": %s",
                       path, copy, strerror(errno));
    free(copy);
}

/* PgBouncer settings weir reads and has no use for: say so when one is set
 * to other than its default, rather than let it look applied. */
static void check_without_effect(struct load_ctx *ctx)
{
    const struct weir_config *cfg = ctx->cfg;

    if (cfg->sbuf_loopcnt != 5)
        report_setting(ctx, WEIR_LOG_WARNING, "sbuf_loopcnt",
                       "sbuf_loopcnt has no effect in weir: a connection's data is relayed in bounded windows "
                       "and the event loop takes turns by itself");
    if (cfg->dns_max_ttl_us != 15000000 || cfg->dns_nxdomain_ttl_us != 15000000 || cfg->dns_zone_check_period_us)
        report_setting(ctx, WEIR_LOG_WARNING, "dns_max_ttl",
                       "dns_max_ttl, dns_nxdomain_ttl and dns_zone_check_period have no effect in weir: host "
                       "names are looked up afresh for each new server connection, so there is no cache");
    if (cfg->suspend_timeout_us != 10000000)
        report_setting(ctx, WEIR_LOG_WARNING, "suspend_timeout",
                       "suspend_timeout has no effect in weir: it has no SUSPEND or online restart (-R)");
}

static void validate(struct load_ctx *ctx)
{
    check_without_effect(ctx);
    check_socket_dir(ctx);
    check_auth(ctx);
    check_tls(ctx);
    check_logfile(ctx);
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */

static bool apply_defaults(struct load_ctx *ctx)
{
    char why[300];
    union value v;

    for (int i = 0; i < N_SETTINGS; i++) {
        int rc = parse_value(&settings[i], settings[i].default_value, &v, why, sizeof(why));
        if (rc == WEIR_ENOMEM) {
            report_oom(ctx);
            return false;
        }
        if (rc != 0) {
            report_at(ctx, WEIR_LOG_ERROR, ctx->file, 0, "internal error: bad default for %s: %s",
                      settings[i].name, why);
            return false;
        }
        store_value(ctx->cfg, &settings[i], v);
    }
    return true;
}

static struct weir_config *new_config(struct load_ctx *ctx)
{
    struct weir_config *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL || (cfg->sources = calloc(1, sizeof(*cfg->sources))) == NULL) {
        free(cfg);
        report_oom(ctx);
        return NULL;
    }
    ctx->cfg = cfg;
    if (!apply_defaults(ctx)) {
        config_free(cfg);
        ctx->cfg = NULL;
    }
    return ctx->cfg;
}

static void parse_files(struct load_ctx *ctx, const char *path)
{
    int rc;

    if (!push_file(ctx, path))
        return;
    rc = ini_parse_stream(read_line, ctx, on_entry, ctx);
    while (ctx->depth > 0)
        pop_file(ctx);
    if (rc == -2)
        report_oom(ctx);
    else if (rc != 0 && !ctx->oom)
        report_at(ctx, WEIR_LOG_ERROR, path, 0, "internal error: the ini parser rejected a line (%d)", rc);
}

static void set_conffile(struct load_ctx *ctx, const char *path)
{
    int i = setting_index("conffile");
    char *copy;

    if (ctx->cfg->sources->origin[i].file != NULL)
        return;
    copy = strdup(path);
    if (copy == NULL) {
        report_oom(ctx);
        return;
    }
    store_value(ctx->cfg, &settings[i], (union value){.s = copy});
}

int config_load(const char *path, struct weir_config **out, config_report_fn report, void *arg)
{
    struct load_ctx ctx = {.report = report, .arg = arg, .file = path};

    *out = NULL;
    if (new_config(&ctx) == NULL)
        return ctx.oom ? WEIR_ENOMEM : WEIR_EINVAL;
    ctx.libpq_opts = PQconninfoParse("", NULL);
    if (ctx.libpq_opts == NULL)
        report_oom(&ctx);
    else
        parse_files(&ctx, path);
    if (ctx.cfg->sources->n_files > 0 && !ctx.oom) {
        sort_entries(&ctx);
        set_conffile(&ctx, path);
        validate(&ctx);
    }
    PQconninfoFree(ctx.libpq_opts);
    free(ctx.buf);
    free(ctx.key);
    if (ctx.errors == 0 && !ctx.oom) {
        *out = ctx.cfg;
        return 0;
    }
    config_free(ctx.cfg);
    return ctx.oom ? WEIR_ENOMEM : WEIR_EINVAL;
}

void config_free(struct weir_config *cfg)
{
    if (cfg == NULL)
        return;
    for (int i = 0; i < N_SETTINGS; i++)
        if (settings[i].type == CONFIG_STRING)
            free(load_value(cfg, &settings[i]).s);
    for (size_t i = 0; i < cfg->n_dbs; i++)
        free_db(&cfg->dbs[i]);
    free(cfg->dbs);
    for (size_t i = 0; i < cfg->n_users; i++)
        free(cfg->users[i].name);
    free(cfg->users);
    hba_free(cfg->hba);
    if (cfg->sources) {
        for (size_t i = 0; i < cfg->sources->n_files; i++)
            free(cfg->sources->files[i]);
        free(cfg->sources->files);
        free(cfg->sources);
    }
    free(cfg);
}

static int cmp_name_db(const void *key, const void *elem)
{
    return strcmp(key, ((const struct db_config *)elem)->name);
}

static int cmp_name_user(const void *key, const void *elem)
{
    return strcmp(key, ((const struct user_config *)elem)->name);
}

const struct db_config *config_find_db(const struct weir_config *cfg, const char *name)
{
    const struct db_config *db = NULL;

    if (cfg->n_dbs == 0)
        return NULL;
    db = bsearch(name, cfg->dbs, cfg->n_dbs, sizeof(*db), cmp_name_db);
    return db ? db : bsearch("*", cfg->dbs, cfg->n_dbs, sizeof(*db), cmp_name_db);
}

const struct user_config *config_find_user(const struct weir_config *cfg, const char *name)
{
    if (cfg->n_users == 0)
        return NULL;
    return bsearch(name, cfg->users, cfg->n_users, sizeof(*cfg->users), cmp_name_user);
}

int config_setting_count(void)
{
    return N_SETTINGS;
}

const struct config_setting *config_setting_at(int i)
{
    return i >= 0 && i < N_SETTINGS ? &settings[i] : NULL;
}

const struct config_setting *config_setting_find(const char *name)
{
    int i = setting_index(name);

    return i < 0 ? NULL : &settings[i];
}

int config_format_value(const struct weir_config *cfg, const struct config_setting *s, char *buf, size_t len)
{
    union value v = load_value(cfg, s);

    switch (s->type) {
    case CONFIG_STRING: return snprintf(buf, len, "%s", v.s);
    case CONFIG_INT: return snprintf(buf, len, "%d", v.i);
    case CONFIG_BOOL: return snprintf(buf, len, "%d", v.b ? 1 : 0);
    case CONFIG_TIME: return format_time(v.t, buf, len);
    case CONFIG_MODE: return snprintf(buf, len, "%04o", (unsigned)v.i);
    case CONFIG_ENUM: return snprintf(buf, len, "%s", s->words[v.i]);
    }
    return snprintf(buf, len, "?");
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* SET auth_type = hba, or SET auth_hba_file while it is: the rules are read
 * now, and a file that cannot be read refuses the SET (old rules kept). */
static int set_hba_rules(struct weir_config *cfg, const char *name, union value v, char *err, size_t errlen)
{
    const char *path = cfg->auth_hba_file;
    struct hba *rules = NULL;

    if (strcmp(name, "auth_type") == 0 && v.i != AUTH_TYPE_HBA)
        return 0;
    if (strcmp(name, "auth_hba_file") == 0) {
        if (cfg->auth_type != AUTH_TYPE_HBA)
            return 0;
        path = v.s;
    } else if (strcmp(name, "auth_type") != 0) {
        return 0;
    }
    if (path[0] == '\0') {
        set_err(err, errlen, "auth_hba_file must be set when auth_type is hba");
        return WEIR_EINVAL;
    }
    if (hba_load(path, &rules, NULL, NULL) < 0) {
        set_err(err, errlen, "auth_hba_file \"%s\" cannot be read", path);
        return WEIR_EINVAL;
    }
    hba_free(cfg->hba);
    cfg->hba = rules;
    return 0;
}

int config_set(struct weir_config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    int i = setting_index(key), rc;
    char why[300];
    union value v;

    if (i < 0) {
        set_err(err, errlen, "unknown setting \"%s\"", key);
        return WEIR_ENOTFOUND;
    }
    if (!settings[i].reloadable) {
        set_err(err, errlen, "%s cannot be changed at runtime; change it in the config file and restart weir",
                settings[i].name);
        return WEIR_ESTATE;
    }
    rc = parse_value(&settings[i], value, &v, why, sizeof(why));
    if (rc == WEIR_ENOMEM)
        set_err(err, errlen, "out of memory");
    else if (rc != 0)
        set_err(err, errlen, "invalid value \"%s\" for %s: %s", value, settings[i].name, why);
    if (rc != 0)
        return rc;
    rc = set_hba_rules(cfg, settings[i].name, v, err, errlen);
    if (rc != 0) {
        if (settings[i].type == CONFIG_STRING)
            free(v.s);
        return rc;
    }
    store_value(cfg, &settings[i], v);
    cfg->sources->origin[i] = (struct origin){NULL, 0};
    return 0;
}

void config_diff(const struct weir_config *old, const struct weir_config *new_cfg, config_report_fn report,
                 void *arg)
{
    char a[512], b[512], msg[1200];

    if (report == NULL)
        return;
    for (int i = 0; i < N_SETTINGS; i++) {
        const struct config_setting *s = &settings[i];
        const char *q = s->type == CONFIG_STRING ? "\"" : "";
        struct origin o;

        if (s->reloadable)
            continue;
        config_format_value(old, s, a, sizeof(a));
        config_format_value(new_cfg, s, b, sizeof(b));
        if (strcmp(a, b) == 0)
            continue;
        o = origin_of(new_cfg, s->name);
        snprintf(msg, sizeof(msg), "%s changed from %s%s%s to %s%s%s; restart weir to apply", s->name, q, a,
                 q, q, b, q);
        report(arg, WEIR_LOG_WARNING, o.file, o.line, msg);
    }
}

const char *config_pool_mode_name(int mode)
{
    return mode >= 0 && mode <= POOL_MODE_STATEMENT ? pool_mode_words[mode] : "";
}
