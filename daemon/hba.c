/*
 * The auth_hba_file parser and matcher (see hba.h for what is understood).
 * A line is read as tokens (bare words, "quoted strings" with "" for a
 * quote, commas, and the end of the line or a # comment), then as fields:
 * type, databases, users, address (not for local), method. Names are kept
 * sorted per rule and looked up by binary search, so an @file of thousands
 * of users costs O(log n) per login. Rules are immutable once parsed; the
 * config owns them.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "hba.h"

#define INCLUDE_DEPTH_MAX 10          /* @file inside @file: enough, and no loop */
#define FILE_MAX (64u * 1024 * 1024) /* refuse absurd files */

enum rule_type { RT_LOCAL, RT_HOST, RT_HOSTSSL, RT_HOSTNOSSL };

#define NAMES_ALL 1u
#define NAMES_SAMEUSER 2u

struct names {
    unsigned flags;
    char **v; /* sorted, unique */
    size_t n, cap;
};

struct rule {
    enum rule_type type;
    enum hba_method method;
    int line;
    int family; /* AF_INET / AF_INET6; AF_UNIX for local */
    uint8_t addr[16], mask[16];
    struct names db, user;
};

struct hba {
    struct rule *rules;
    size_t n, cap;
};

/* ---- tokens ---- */

enum tok_type { TK_WORD, TK_STRING, TK_COMMA, TK_EOL, TK_BAD };

struct tokens {
    const char *pos, *end; /* the line, without its newline */
    enum tok_type type;
    char *text; /* the current word or string, NUL-terminated */
    size_t cap;
};

static int tok_store(struct tokens *t, const char *s, size_t len, int unquote)
{
    char *dst;

    if (len + 1 > t->cap) {
        char *nb = realloc(t->text, len + 1);
        if (nb == NULL)
            return -1;
        t->text = nb;
        t->cap = len + 1;
    }
    dst = t->text;
    for (size_t i = 0; i < len; i++) {
        *dst++ = s[i];
        if (unquote && s[i] == '"')
            i++; /* "" stands for one " */
    }
    *dst = '\0';
    return 0;
}

/* Moves to the next token; TK_BAD for an unterminated quote or no memory. */
static enum tok_type tok_next(struct tokens *t)
{
    const char *p = t->pos, *s;

    if (t->type == TK_EOL || t->type == TK_BAD)
        return t->type;
    while (p < t->end && isspace((unsigned char)*p))
        p++;
    if (p == t->end || *p == '#') {
        t->pos = t->end;
        return t->type = TK_EOL;
    }
    if (*p == ',') {
        t->pos = p + 1;
        return t->type = TK_COMMA;
    }
    if (*p == '"') {
        for (s = p + 1; s < t->end; s++) {
            if (*s == '"' && s + 1 < t->end && s[1] == '"')
                s++;
            else if (*s == '"')
                break;
        }
        if (s == t->end || tok_store(t, p + 1, (size_t)(s - p - 1), 1) != 0)
            return t->type = TK_BAD;
        t->pos = s + 1;
        return t->type = TK_STRING;
    }
    for (s = p + 1; s < t->end && *s != ',' && *s != '#' && *s != '"' && !isspace((unsigned char)*s); s++)
        ;
    if (tok_store(t, p, (size_t)(s - p), 0) != 0)
        return t->type = TK_BAD;
    t->pos = s;
    return t->type = TK_WORD;
}

static void tok_start(struct tokens *t, const char *line, size_t len)
{
    t->pos = line;
    t->end = line + len;
    t->type = TK_COMMA; /* anything but EOL/BAD */
    tok_next(t);
}

static int is_word(const struct tokens *t, const char *kw)
{
    return t->type == TK_WORD && strcmp(t->text, kw) == 0;
}

/* ---- the parse of one file ---- */

struct parser {
    struct hba *hba;
    int flags;
    hba_report_fn report;
    void *arg;
    const char *path; /* the top-level file: reports name it */
    int line;
    char why[512]; /* why the current line is skipped */
    int oom;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *p, const char *fmt, ...)
{
    va_list ap;

    if (p->why[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(p->why, sizeof(p->why), fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int oom(struct parser *p)
{
    p->oom = 1;
    return fail(p, "out of memory");
}

static int names_add(struct parser *p, struct names *n, const char *name)
{
    if (n->n == n->cap) {
        size_t ncap = n->cap ? n->cap * 2 : 4;
        char **nv = realloc(n->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return oom(p);
        n->v = nv;
        n->cap = ncap;
    }
    if ((n->v[n->n] = strdup(name)) == NULL)
        return oom(p);
    n->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_sort(struct names *n)
{
    size_t w = 0;

    if (n->n == 0)
        return;
    qsort(n->v, n->n, sizeof(*n->v), cmp_str);
    for (size_t r = 1; r < n->n; r++) {
        if (strcmp(n->v[r], n->v[w]) == 0)
            free(n->v[r]);
        else
            n->v[++w] = n->v[r];
    }
    n->n = w + 1;
}

static void names_free(struct names *n)
{
    for (size_t i = 0; i < n->n; i++)
        free(n->v[i]);
    free(n->v);
    memset(n, 0, sizeof(*n));
}

static int names_has(const struct names *n, const char *name)
{
    return n->n > 0 && bsearch(&name, n->v, n->n, sizeof(*n->v), cmp_str) != NULL;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0, used = 0, got;

    if (f == NULL) {
        snprintf(err, errlen, "could not open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    do {
        if (cap - used < 4096) {
            char *nb = cap > FILE_MAX ? NULL : realloc(buf, cap + 65536);
            if (nb == NULL) {
                snprintf(err, errlen, "\"%s\" is too large or memory ran out", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap += 65536;
        }
        got = fread(buf + used, 1, cap - used - 1, f);
        used += got;
    } while (got > 0);
    if (ferror(f)) {
        snprintf(err, errlen, "could not read \"%s\": %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[used] = '\0';
    *len = used;
    return buf;
}

/* dir of parent + "/" + name, unless name is absolute. malloc'd. */
static char *include_path(const char *parent, const char *name)
{
    const char *slash = strrchr(parent, '/');
    size_t dlen = slash ? (size_t)(slash - parent) + 1 : 0;
    char *out;

    if (name[0] == '/' || dlen == 0)
        return strdup(name);
    out = malloc(dlen + strlen(name) + 1);
    if (out) {
        memcpy(out, parent, dlen);
        strcpy(out + dlen, name);
    }
    return out;
}

static int parse_names(struct parser *p, struct names *n, struct tokens *t, const char *file, int depth);

/* @file: every name in it, separated by commas, whitespace or newlines. */
static int parse_name_file(struct parser *p, struct names *n, const char *name, const char *parent, int depth)
{
    char err[600], *path, *text;
    size_t len;
    int rc = 0;

    if (p->flags & HBA_NO_INCLUDES)
        return fail(p, "@file includes are disabled here");
    if (depth >= INCLUDE_DEPTH_MAX)
        return fail(p, "@%s: includes nested more than %d deep", name, INCLUDE_DEPTH_MAX);
    if ((path = include_path(parent, name)) == NULL)
        return oom(p);
    text = read_file(path, &len, err, sizeof(err));
    if (text == NULL) {
        rc = fail(p, "@%s: %s", name, err);
        free(path);
        return rc;
    }
    for (const char *line = text; rc == 0 && line < text + len;) {
        const char *eol = memchr(line, '\n', (size_t)(text + len - line));
        size_t l = eol ? (size_t)(eol - line) : (size_t)(text + len - line);
        struct tokens t = {0};

        tok_start(&t, line, l);
        while (rc == 0 && t.type != TK_EOL) {
            rc = parse_names(p, n, &t, path, depth + 1);
            if (rc == 0 && t.type == TK_BAD)
                rc = fail(p, "@%s: bad quoting", name);
        }
        free(t.text);
        line += l + 1;
    }
    free(text);
    free(path);
    return rc;
}

/*
 * A comma list of names at t, as PgBouncer reads both the database and the
 * user field: keywords all and sameuser, @file, plain or quoted names.
 * Leaves t at the token after the list.
 */
static int parse_names(struct parser *p, struct names *n, struct tokens *t, const char *file, int depth)
{
    for (;;) {
        if (is_word(t, "all")) {
            n->flags |= NAMES_ALL;
        } else if (is_word(t, "sameuser")) {
            n->flags |= NAMES_SAMEUSER;
        } else if (is_word(t, "samerole") || is_word(t, "samegroup") || is_word(t, "replication")) {
            return fail(p, "%s is not supported", t->text);
        } else if (t->type == TK_WORD && t->text[0] == '+') {
            return fail(p, "group membership (%s) is not supported", t->text);
        } else if (t->type == TK_WORD && t->text[0] == '@') {
            char *name = strdup(t->text + 1);
            int rc = name ? parse_name_file(p, n, name, file, depth) : oom(p);
            free(name);
            if (rc != 0)
                return rc;
        } else if (t->type == TK_WORD || t->type == TK_STRING) {
            if (names_add(p, n, t->text) != 0)
                return -1;
        } else {
            return fail(p, t->type == TK_BAD ? "bad quoting" : "expected a name");
        }
        if (tok_next(t) != TK_COMMA)
            return 0;
        tok_next(t);
    }
}

static int parse_bits(struct parser *p, struct rule *r, const char *text)
{
    char *end;
    unsigned long bits;
    unsigned max = r->family == AF_INET ? 32 : 128;

    errno = 0;
    bits = strtoul(text, &end, 10);
    if (errno || end == text || *end || !isdigit((unsigned char)text[0]) || bits > max)
        return fail(p, "invalid CIDR mask in address \"/%s\"", text);
    for (unsigned i = 0; i < bits / 8; i++)
        r->mask[i] = 0xff;
    if (bits % 8)
        r->mask[bits / 8] = (uint8_t)(0xff << (8 - bits % 8));
    return 0;
}

/* The address field (and the mask field when not CIDR). */
static int parse_address(struct parser *p, struct rule *r, struct tokens *t)
{
    char addr[128], *slash;

    if (t->type != TK_WORD)
        return fail(p, "expected an address");
    if (strcmp(t->text, "all") == 0 || strcmp(t->text, "samehost") == 0 || strcmp(t->text, "samenet") == 0)
        return fail(p, "address \"%s\" is not supported", t->text);
    if (strlen(t->text) >= sizeof(addr))
        return fail(p, "invalid address");
    strcpy(addr, t->text);
    slash = strchr(addr, '/');
    if (slash)
        *slash++ = '\0';
    if (inet_pton(AF_INET6, addr, r->addr) == 1)
        r->family = AF_INET6;
    else if (inet_pton(AF_INET, addr, r->addr) == 1)
        r->family = AF_INET;
    else
        return fail(p, "invalid IP address \"%s\" (host names are not supported)", addr);
    if (slash) {
        if (parse_bits(p, r, slash) != 0)
            return -1;
    } else {
        if (tok_next(t) != TK_WORD)
            return fail(p, "expected an IP mask after the address");
        if (inet_pton(r->family, t->text, r->mask) != 1)
            return fail(p, "invalid IP mask \"%s\"", t->text);
    }
    for (int i = 0; i < 16; i++) {
        if (r->addr[i] & ~r->mask[i]) {
            /* PgBouncer warns too; PostgreSQL ignores the host bits, so do we. */
            if (p->report) {
                char msg[200];
                snprintf(msg, sizeof(msg), "address has bits set beyond its mask; they are ignored");
                p->report(p->arg, p->path, p->line, msg);
            }
            break;
        }
    }
    for (int i = 0; i < 16; i++)
        r->addr[i] &= r->mask[i];
    tok_next(t);
    return 0;
}

static const struct {
    const char *name;
    enum hba_method m;
} methods[] = {
    {"trust", HBA_TRUST}, {"reject", HBA_REJECT}, {"md5", HBA_MD5},   {"password", HBA_PASSWORD},
    {"peer", HBA_PEER},   {"cert", HBA_CERT},     {"scram-sha-256", HBA_SCRAM},
};

const char *hba_method_name(enum hba_method m)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].m == m)
            return methods[i].name;
    return "?";
}

static int parse_method(struct parser *p, struct rule *r, struct tokens *t)
{
    if (t->type != TK_WORD)
        return fail(p, "expected an authentication method");
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(t->text, methods[i].name) == 0) {
            r->method = methods[i].m;
            if (tok_next(t) != TK_EOL)
                return fail(p, "options after the method are not supported");
            return 0;
        }
    }
    return fail(p, "unsupported authentication method \"%s\"", t->text);
}

static int parse_type(struct parser *p, struct rule *r, struct tokens *t)
{
    static const char *const types[] = {"local", "host", "hostssl", "hostnossl"};

    for (int i = 0; i < 4; i++) {
        if (is_word(t, types[i])) {
            r->type = (enum rule_type)i;
            tok_next(t);
            return 0;
        }
    }
    if (t->type == TK_WORD && (strcmp(t->text, "hostgssenc") == 0 || strcmp(t->text, "hostnogssenc") == 0))
        return fail(p, "connection type \"%s\" is not supported", t->text);
    return fail(p, "unknown connection type");
}

static void rule_free(struct rule *r)
{
    names_free(&r->db);
    names_free(&r->user);
}

/* One line: 1 when a rule was added, 0 for a blank/comment line, -1 skipped. */
static int parse_line(struct parser *p, const char *line, size_t len)
{
    struct tokens t = {0};
    struct rule r;
    int rc = -1;

    memset(&r, 0, sizeof(r));
    r.line = p->line;
    p->why[0] = '\0';
    tok_start(&t, line, len);
    if (t.type == TK_EOL) {
        free(t.text);
        return 0;
    }
    if (parse_type(p, &r, &t) != 0 || parse_names(p, &r.db, &t, p->path, 0) != 0 ||
        parse_names(p, &r.user, &t, p->path, 0) != 0)
        goto out;
    if (r.type == RT_LOCAL)
        r.family = AF_UNIX;
    else if (parse_address(p, &r, &t) != 0)
        goto out;
    if (parse_method(p, &r, &t) != 0)
        goto out;
    if (p->hba->n == p->hba->cap) {
        size_t ncap = p->hba->cap ? p->hba->cap * 2 : 16;
        struct rule *nr = realloc(p->hba->rules, ncap * sizeof(*nr));
        if (nr == NULL) {
            oom(p);
            goto out;
        }
        p->hba->rules = nr;
        p->hba->cap = ncap;
    }
    names_sort(&r.db);
    names_sort(&r.user);
    p->hba->rules[p->hba->n++] = r;
    rc = 1;
out:
    free(t.text);
    if (rc < 0)
        rule_free(&r);
    return rc;
}

int hba_parse(const char *text, const char *path, int flags, struct hba **out, hba_report_fn report, void *arg)
{
    struct parser p = {.flags = flags, .report = report, .arg = arg, .path = path};
    size_t len = strlen(text);
    int skipped = 0;

    *out = NULL;
    if ((p.hba = calloc(1, sizeof(*p.hba))) == NULL)
        return -1;
    for (const char *line = text; line < text + len && !p.oom;) {
        const char *eol = memchr(line, '\n', (size_t)(text + len - line));
        size_t l = eol ? (size_t)(eol - line) : (size_t)(text + len - line);

        p.line++;
        if (parse_line(&p, line, l) < 0) {
            skipped++;
            if (report) {
                char msg[600];
                snprintf(msg, sizeof(msg), "%s; line skipped", p.why);
                report(arg, path, p.line, msg);
            }
        }
        line += l + 1;
    }
    if (p.oom) {
        hba_free(p.hba);
        return -1;
    }
    *out = p.hba;
    return skipped;
}

int hba_load(const char *path, struct hba **out, hba_report_fn report, void *arg)
{
    char err[600];
    size_t len;
    char *text = read_file(path, &len, err, sizeof(err));
    int rc;

    *out = NULL;
    if (text == NULL) {
        if (report)
            report(arg, path, 0, err);
        return -1;
    }
    if (memchr(text, '\0', len) != NULL) {
        if (report)
            report(arg, path, 0, "the file contains a NUL byte");
        free(text);
        return -1;
    }
    rc = hba_parse(text, path, 0, out, report, arg);
    free(text);
    return rc;
}

void hba_free(struct hba *hba)
{
    if (hba == NULL)
        return;
    for (size_t i = 0; i < hba->n; i++)
        rule_free(&hba->rules[i]);
    free(hba->rules);
    free(hba);
}

int hba_rule_count(const struct hba *hba)
{
    return hba ? (int)hba->n : 0;
}

/* ---- matching ---- */

int hba_peer_from_text(struct hba_peer *peer, bool is_unix, const char *text, bool tls)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(peer, 0, sizeof(*peer));
    peer->tls = tls;
    if (is_unix) {
        peer->family = AF_UNIX;
        return 0;
    }
    if (inet_pton(AF_INET, text, peer->addr) == 1) {
        peer->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, peer->addr) != 1)
        return -1;
    peer->family = AF_INET6;
    if (memcmp(peer->addr, v4mapped, 12) == 0) {
        memmove(peer->addr, peer->addr + 12, 4);
        memset(peer->addr + 4, 0, 12);
        peer->family = AF_INET;
    }
    return 0;
}

static int address_matches(const struct rule *r, const struct hba_peer *peer)
{
    if (peer->family == AF_UNIX)
        return r->type == RT_LOCAL;
    if (r->type == RT_LOCAL || (r->type == RT_HOSTSSL && !peer->tls) || (r->type == RT_HOSTNOSSL && peer->tls))
        return 0;
    if (r->family != peer->family)
        return 0;
    for (int i = 0; i < (r->family == AF_INET ? 4 : 16); i++)
        if ((peer->addr[i] & r->mask[i]) != r->addr[i])
            return 0;
    return 1;
}

static int name_matches(const struct names *n, const char *name, const char *other)
{
    if (n->flags & NAMES_ALL)
        return 1;
    if ((n->flags & NAMES_SAMEUSER) && strcmp(name, other) == 0)
        return 1;
    return names_has(n, name);
}

enum hba_method hba_match(const struct hba *hba, const struct hba_peer *peer, const char *dbname,
                          const char *user, int *line)
{
    if (line)
        *line = 0;
    for (size_t i = 0; hba && i < hba->n; i++) {
        const struct rule *r = &hba->rules[i];
        if (!address_matches(r, peer) || !name_matches(&r->db, dbname, user) ||
            !name_matches(&r->user, user, dbname))
            continue;
        if (line)
            *line = r->line;
        return r->method;
    }
    return HBA_REJECT;
}
