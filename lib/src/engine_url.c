/*
 * Engine URL parsing. An engine is configured by one string, either a libpq
 * URI (postgresql://...?...) or a libpq key=value conninfo, in which weir's
 * own keys (pool_size, pool_timeout, dialect, ...) sit beside libpq's. This
 * file takes weir's keys out, converts their values (seconds, as SQLAlchemy
 * spells them, into the pool's milliseconds), and rebuilds the rest for libpq
 * in the same form it came in. The key=value tokenizer follows libpq's
 * quoting rules so that what libpq would have read is what it still reads.
 */
#include <ctype.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "engine_url.h"

/* How a key's text value becomes a config field. */
enum key_kind {
    KEY_SIZE,      /* whole number >= 1 */
    KEY_COUNT,     /* whole number >= 0 */
    KEY_WAITERS,   /* whole number >= 0, or -1 for unlimited */
    KEY_SECONDS,   /* seconds >= 0, fractions allowed, into ms */
    KEY_SECONDS_OFF, /* seconds >= 0, or -1 meaning 0 (off), into ms */
    KEY_TIMEOUT,   /* seconds >= 0, or -1 for forever, into ms */
    KEY_BOOL,
    KEY_PRE_PING,  /* 0/false never, 1/true always, N > 1 seconds idle */
    KEY_DIALECT,
};

struct key_def {
    const char *name;
    enum key_kind kind;
    size_t offset; /* into weir_pool_config */
};

static const struct key_def key_defs[] = {
    {"pool_size", KEY_SIZE, offsetof(weir_pool_config, max_size)},
    {"max_overflow", KEY_COUNT, offsetof(weir_pool_config, max_overflow)},
    {"pool_min_size", KEY_COUNT, offsetof(weir_pool_config, min_size)},
    {"pool_timeout", KEY_TIMEOUT, offsetof(weir_pool_config, timeout_ms)},
    {"pool_recycle", KEY_SECONDS_OFF, offsetof(weir_pool_config, recycle_ms)},
    {"pool_recycle_jitter", KEY_SECONDS, offsetof(weir_pool_config, recycle_jitter_ms)},
    {"pool_idle_timeout", KEY_SECONDS_OFF, offsetof(weir_pool_config, idle_timeout_ms)},
    {"pool_pre_ping", KEY_PRE_PING, offsetof(weir_pool_config, pre_ping_ms)},
    {"pool_max_waiters", KEY_WAITERS, offsetof(weir_pool_config, max_waiters)},
    {"pool_use_lifo", KEY_BOOL, offsetof(weir_pool_config, lifo)},
    {"pool_reset_on_return", KEY_BOOL, offsetof(weir_pool_config, reset_on_return)},
    {"pool_connect_timeout", KEY_SECONDS, offsetof(weir_pool_config, connect_timeout_ms)},
    {"dialect", KEY_DIALECT, 0},
};

/* A growable string; on allocation failure it remembers and stays put. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Hand over the built string ("" when nothing was added), NULL on ENOMEM. */
static char *sb_take(sbuf *b)
{
    if (!b->oom && b->s == NULL)
        sb_add(b, "", 0);
    if (b->oom) {
        free(b->s);
        return NULL;
    }
    return b->s;
}

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errbuf == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* ---- value conversion ---- */

static int parse_whole(const char *v, long long *out)
{
    const char *p = v;
    long long n = 0;

    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (LLONG_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*p - '0');
    }
    if (*p != '\0')
        return -1;
    *out = v[0] == '-' ? -n : n;
    return 0;
}

/* Seconds as digits with an optional fraction, into milliseconds (rounded).
 * Plain digits only: strtod would also take "inf", "0x1p3" and "1e9". */
static int parse_seconds_ms(const char *v, long long *ms)
{
    const char *p = v;
    long long whole = 0, frac = 0, scale = 1000;
    int neg = 0, digits = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (; isdigit((unsigned char)*p); p++, digits++) {
        if (whole > INT_MAX)
            return -1;
        whole = whole * 10 + (*p - '0');
    }
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++, digits++) {
            if (scale > 1) {
                scale /= 10;
                frac += (*p - '0') * scale;
            } else if (scale == 1 && *p >= '5') {
                frac += 1; /* round half up at the millisecond */
                scale = 0;
            } else {
                scale = 0;
            }
        }
    }
    if (*p != '\0' || digits == 0)
        return -1;
    *ms = whole * 1000 + frac;
    if (neg)
        *ms = -*ms;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* What each kind accepts, for the error message. */
static const char *kind_expects(enum key_kind kind)
{
    switch (kind) {
    case KEY_SIZE: return "a whole number >= 1";
    case KEY_COUNT: return "a whole number >= 0";
    case KEY_WAITERS: return "a whole number >= 0, or -1 for unlimited";
    case KEY_SECONDS: return "seconds >= 0";
    case KEY_SECONDS_OFF: return "seconds >= 0, or -1 for off";
    case KEY_TIMEOUT: return "seconds >= 0, or -1 for no limit";
    case KEY_BOOL: return "0/1, true/false, yes/no or on/off";
    case KEY_PRE_PING: return "0 (never), 1 (always) or seconds idle > 1";
    case KEY_DIALECT: return "postgresql or postgresql-nodiscard";
    }
    return "a valid value";
}

/* Convert v for kind into an int setting; -1 when it isn't acceptable. */
static int convert(enum key_kind kind, const char *v, int *out)
{
    long long n;
    int b;

    switch (kind) {
    case KEY_SIZE:
    case KEY_COUNT:
    case KEY_WAITERS:
        if (parse_whole(v, &n) != 0 || n > INT_MAX || n < (kind == KEY_SIZE ? 1 : kind == KEY_WAITERS ? -1 : 0))
            return -1;
        break;
    case KEY_SECONDS:
    case KEY_SECONDS_OFF:
    case KEY_TIMEOUT:
        if (parse_seconds_ms(v, &n) != 0 || n > INT_MAX)
            return -1;
        if (n < 0 && (kind == KEY_SECONDS || n != -1000))
            return -1;
        if (n < 0)
            n = kind == KEY_SECONDS_OFF ? 0 : -1;
        break;
    case KEY_BOOL:
        if (parse_bool(v, &b) != 0)
            return -1;
        n = b;
        break;
    case KEY_PRE_PING:
        if (parse_bool(v, &b) == 0)
            n = b ? 0 : -1;
        else if (parse_seconds_ms(v, &n) != 0 || n <= 1000 || n > INT_MAX)
            return -1;
        break;
    default:
        return -1;
    }
    *out = (int)n;
    return 0;
}

static const struct key_def *find_key(const char *name)
{
    for (size_t i = 0; i < sizeof(key_defs) / sizeof(key_defs[0]); i++)
        if (strcmp(key_defs[i].name, name) == 0)
            return &key_defs[i];
    return NULL;
}

/* Is name one of weir's keys, or one it would claim (pool_*)? */
static int is_weir_key(const char *name)
{
    return find_key(name) != NULL || strncmp(name, "pool_", 5) == 0;
}

/* Apply one of weir's keys. */
static int apply_key(const char *name, const char *v, weir_pool_config *cfg, weir_engine_url *out,
                     char *errbuf, size_t errlen)
{
    const struct key_def *k = find_key(name);
    int n;

    if (k == NULL) {
        set_err(errbuf, errlen, "unknown pool option \"%s\"", name);
        return WEIR_EINVAL;
    }
    if (k->kind == KEY_DIALECT) {
        out->dialect = weir_dialect_find(v);
        if (out->dialect == NULL) {
            set_err(errbuf, errlen, "dialect: unknown dialect \"%s\"", v);
            return WEIR_EINVAL;
        }
        return 0;
    }
    if (convert(k->kind, v, &n) != 0) {
        set_err(errbuf, errlen, "%s: invalid value \"%s\" (expected %s)", name, v, kind_expects(k->kind));
        return WEIR_EINVAL;
    }
    *(int *)(void *)((char *)cfg + k->offset) = n;
    return 0;
}

/* ---- URI form ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) into a new string. NULL with *bad set when the
 * encoding is malformed or decodes to a NUL, as libpq rejects both. */
static char *pct_decode(const char *s, size_t n, int *bad)
{
    char *out = malloc(n + 1), *p = out;

    *bad = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *p++ = s[i];
            continue;
        }
        if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0 ||
            (s[i + 1] == '0' && s[i + 2] == '0')) {
            *bad = 1;
            free(out);
            return NULL;
        }
        *p++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
        i += 2;
    }
    *p = '\0';
    return out;
}

/* One "key=value" segment of the query string: apply it if it is weir's,
 * otherwise append it untouched to kept. */
static int uri_param(const char *seg, size_t len, weir_pool_config *cfg, weir_engine_url *out, sbuf *kept,
                     char *errbuf, size_t errlen)
{
    const char *eq = memchr(seg, '=', len);
    char *key, *val;
    int bad, rc;

    key = pct_decode(seg, eq ? (size_t)(eq - seg) : len, &bad);
    if (key == NULL) {
        set_err(errbuf, errlen, "invalid percent-encoding in URL parameter \"%.*s\"", (int)len, seg);
        return bad ? WEIR_EINVAL : WEIR_ENOMEM;
    }
    if (!is_weir_key(key)) {
        free(key);
        sb_add(kept, kept->len ? "&" : "", kept->len ? 1 : 0);
        sb_add(kept, seg, len);
        return 0;
    }
    if (eq == NULL) {
        set_err(errbuf, errlen, "%s: missing \"=\" and value", key);
        free(key);
        return WEIR_EINVAL;
    }
    val = pct_decode(eq + 1, len - (size_t)(eq + 1 - seg), &bad);
    if (val == NULL) {
        set_err(errbuf, errlen, "%s: invalid percent-encoding in value", key);
        rc = bad ? WEIR_EINVAL : WEIR_ENOMEM;
    } else {
        rc = apply_key(key, val, cfg, out, errbuf, errlen);
    }
    free(key);
    free(val);
    return rc;
}

static int parse_uri(const char *url, weir_pool_config *cfg, weir_engine_url *out, sbuf *res, char *errbuf,
                     size_t errlen)
{
    const char *q = strchr(url, '?');
    sbuf kept = {0};
    int rc = 0;

    if (q == NULL) {
        sb_puts(res, url);
        return 0;
    }
    sb_add(res, url, (size_t)(q - url));
    for (const char *seg = q + 1; rc == 0 && *seg;) {
        size_t len = strcspn(seg, "&");

        if (len > 0)
            rc = uri_param(seg, len, cfg, out, &kept, errbuf, errlen);
        seg += len + (seg[len] == '&');
    }
    if (rc == 0 && kept.len > 0) {
        sb_puts(res, "?");
        sb_add(res, kept.s, kept.len);
    }
    if (rc == 0 && kept.oom)
        rc = WEIR_ENOMEM;
    free(kept.s);
    return rc;
}

/* ---- key=value form ---- */

/*
 * Read the next "key = value" pair at *pp into key and val (malloc'd) the
 * way libpq does: whitespace separates pairs and may surround '='; a value
 * is either bare (ends at whitespace) or in single quotes; in both a
 * backslash takes the next character literally. Returns 1 for a pair, 0 at
 * the end, or a negative code with errbuf set.
 */
static int kv_next(const char **pp, char **key, char **val, char *errbuf, size_t errlen)
{
    const char *p = *pp, *k;
    char *v;
    size_t klen, n = 0;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0')
        return 0;
    for (k = p; *p && *p != '=' && !isspace((unsigned char)*p); p++)
        ;
    klen = (size_t)(p - k);
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '=') {
        set_err(errbuf, errlen, "missing \"=\" after \"%.*s\" in connection info string", (int)klen, k);
        return WEIR_EINVAL;
    }
    for (p++; isspace((unsigned char)*p);)
        p++;
    v = malloc(strlen(p) + 1);
    *key = strndup(k, klen);
    if (v == NULL || *key == NULL) {
        free(v);
        free(*key);
        return WEIR_ENOMEM;
    }
    if (*p == '\'') {
        for (p++; *p && *p != '\''; p++) {
            if (*p == '\\' && p[1])
                p++;
            v[n++] = *p;
        }
        if (*p != '\'') {
            set_err(errbuf, errlen, "unterminated quoted string in connection info string");
            free(v);
            free(*key);
            return WEIR_EINVAL;
        }
        p++;
    } else {
        for (; *p && !isspace((unsigned char)*p); p++) {
            if (*p == '\\' && p[1])
                p++;
            v[n++] = *p;
        }
    }
    v[n] = '\0';
    *val = v;
    *pp = p;
    return 1;
}

/* Append key=value, quoting the value when libpq would otherwise misread it. */
static void kv_emit(sbuf *b, const char *key, const char *val)
{
    int quote = val[0] == '\0';

    for (const char *c = val; *c && !quote; c++)
        quote = isspace((unsigned char)*c) || *c == '\'' || *c == '\\';
    if (b->len)
        sb_puts(b, " ");
    sb_puts(b, key);
    sb_puts(b, quote ? "='" : "=");
    for (const char *c = val; *c; c++) {
        if (quote && (*c == '\'' || *c == '\\'))
            sb_add(b, "\\", 1);
        sb_add(b, c, 1);
    }
    if (quote)
        sb_puts(b, "'");
}

static int parse_kv(const char *s, weir_pool_config *cfg, weir_engine_url *out, sbuf *res, char *errbuf,
                    size_t errlen)
{
    for (;;) {
        char *key = NULL, *val = NULL;
        int rc = kv_next(&s, &key, &val, errbuf, errlen);

        if (rc <= 0)
            return rc;
        rc = 0;
        if (is_weir_key(key))
            rc = apply_key(key, val, cfg, out, errbuf, errlen);
        else
            kv_emit(res, key, val);
        free(key);
        free(val);
        if (rc != 0)
            return rc;
    }
}

/* ---- entry points ---- */

static int is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* Let libpq judge what will be handed to it, so a bad string fails here,
 * with libpq's own words, rather than at every connect. */
static int validate_conninfo(const char *conninfo, char *errbuf, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    size_t n;

    if (opts != NULL) {
        PQconninfoFree(opts);
        return 0;
    }
    if (perr == NULL)
        return WEIR_ENOMEM;
    set_err(errbuf, errlen, "invalid connection string: %s", perr);
    PQfreemem(perr);
    n = errbuf ? strlen(errbuf) : 0;
    while (n > 0 && errbuf[n - 1] == '\n')
        errbuf[--n] = '\0';
    return WEIR_EINVAL;
}

int weir__engine_url_parse(const char *url, weir_pool_config *cfg, weir_engine_url *out, char *errbuf,
                           size_t errlen)
{
    sbuf res = {0};
    int rc;

    memset(out, 0, sizeof(*out));
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (url == NULL || cfg == NULL) {
        set_err(errbuf, errlen, "no URL given");
        return WEIR_EINVAL;
    }
    rc = is_uri(url) ? parse_uri(url, cfg, out, &res, errbuf, errlen)
                     : parse_kv(url, cfg, out, &res, errbuf, errlen);
    out->conninfo = sb_take(&res);
    if (rc == 0 && out->conninfo == NULL)
        rc = WEIR_ENOMEM;
    if (rc == 0)
        rc = validate_conninfo(out->conninfo, errbuf, errlen);
    if (rc == WEIR_ENOMEM)
        set_err(errbuf, errlen, "out of memory");
    if (rc != 0)
        weir__engine_url_clear(out);
    return rc;
}

void weir__engine_url_clear(weir_engine_url *u)
{
    if (u == NULL)
        return;
    free(u->conninfo);
    u->conninfo = NULL;
    u->dialect = NULL;
}
