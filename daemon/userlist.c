/*
 * The auth_file loader: reads PgBouncer's userlist.txt format into a sorted
 * array looked up by binary search, so thousands of users cost O(log n) per
 * login and one allocation per user. The file is read whole into a buffer
 * that is wiped afterwards, since it holds passwords; so are the entries when
 * the list is freed. The format and its differences from PgBouncer are
 * described in auth.h.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "internal.h" /* libweir's shared helpers */

/* PgBouncer's MAX_USERNAME and MAX_PASSWORD, minus their NUL. */
#define USER_MAX 127
#define SECRET_MAX 2047

/* Refuse absurd files rather than let a mistake eat memory. */
#define FILE_MAX (256u * 1024 * 1024)

struct entry {
    char *user; /* user, NUL, secret, NUL: one allocation */
    const char *secret;
    size_t size; /* of the allocation, to wipe it */
    size_t seq;  /* order in the file: the last duplicate wins */
};

struct userlist {
    struct entry *v;
    size_t n, cap;
};

/* What parse_line found on one line. */
struct line_fields {
    char user[USER_MAX + 1];
    char secret[SECRET_MAX + 1];
};


/* Replaces buf with a larger copy, wiping the old one: it holds passwords. */
static int grow_wiped(char **buf, size_t *cap, size_t used)
{
    size_t ncap = *cap ? *cap * 2 : 4096;
    char *nbuf;

    if (ncap > FILE_MAX + 1)
        ncap = FILE_MAX + 1;
    if (ncap <= *cap) {
        errno = EFBIG;
        return -1;
    }
    nbuf = malloc(ncap);
    if (nbuf == NULL)
        return -1;
    if (*buf != NULL) {
        memcpy(nbuf, *buf, used);
        OPENSSL_cleanse(*buf, *cap);
        free(*buf);
    }
    *buf = nbuf;
    *cap = ncap;
    return 0;
}

/* Reads the whole of fd; sizes the buffer from fstat so it rarely grows. */
static int read_all(int fd, char **out, size_t *outlen)
{
    struct stat st;
    char *buf = NULL;
    size_t cap = 0, used = 0;
    ssize_t r;
    int saved;

    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size < FILE_MAX) {
        cap = (size_t)st.st_size + 2; /* room to see EOF without growing */
        buf = malloc(cap);
        if (buf == NULL)
            return -1;
    }
    for (;;) {
        if (used + 1 >= cap && grow_wiped(&buf, &cap, used) < 0)
            goto fail;
        r = read(fd, buf + used, cap - used - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto fail;
        if (r == 0)
            break;
        used += (size_t)r;
    }
    buf[used] = '\0';
    *out = buf;
    *outlen = used;
    return 0;
fail:
    saved = errno;
    if (buf != NULL) {
        OPENSSL_cleanse(buf, cap);
        free(buf);
    }
    errno = saved;
    return -1;
}

/*
 * Copies the quoted string starting after the opening quote at *p, turning
 * `""` into `"`. Stops at the closing quote (and moves *p past it).
 */
static const char *read_quoted(const char **p, const char *end, char *dst, size_t max,
                               const char *what_too_long)
{
    const char *s = *p;
    size_t n = 0;

    for (;;) {
        if (s >= end)
            return "unterminated quoted string";
        if (*s == '"') {
            if (s + 1 < end && s[1] == '"')
                s++;
            else
                break;
        }
        if (n >= max)
            return what_too_long;
        dst[n++] = *s++;
    }
    dst[n] = '\0';
    *p = s + 1;
    return NULL;
}

/*
 * Parses one line (without its newline). Returns 1 with f filled, 0 for a
 * blank or comment line, -1 with *why for a malformed one.
 */
static int parse_line(const char *line, size_t len, struct line_fields *f, const char **why)
{
    const char *p = line, *end = line + len;

    while (p < end && isspace((unsigned char)*p))
        p++;
    if (p == end || *p == ';')
        return 0;
    if (memchr(line, '\0', len) != NULL) {
        *why = "NUL byte in line";
        return -1;
    }
    if (*p != '"') {
        *why = "expected a quoted user name";
        return -1;
    }
    p++;
    *why = read_quoted(&p, end, f->user, USER_MAX, "user name longer than 127 bytes");
    if (*why != NULL)
        return -1;
    if (f->user[0] == '\0') {
        *why = "empty user name";
        return -1;
    }
    /* PgBouncer skips whatever lies between the two fields; so do we. */
    p = memchr(p, '"', (size_t)(end - p));
    if (p == NULL) {
        *why = "expected a quoted password after the user name";
        return -1;
    }
    p++;
    *why = read_quoted(&p, end, f->secret, SECRET_MAX, "password longer than 2047 bytes");
    return *why != NULL ? -1 : 1;
}

static int add_entry(struct userlist *list, const struct line_fields *f)
{
    size_t ulen = strlen(f->user), slen = strlen(f->secret);
    struct entry *e;

    if (list->n == list->cap) {
        size_t ncap = list->cap ? list->cap * 2 : 64;
        struct entry *nv = realloc(list->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        list->v = nv;
        list->cap = ncap;
    }
    e = &list->v[list->n];
    e->size = ulen + slen + 2;
    e->user = malloc(e->size);
    if (e->user == NULL)
        return -1;
    memcpy(e->user, f->user, ulen + 1);
    memcpy(e->user + ulen + 1, f->secret, slen + 1);
    e->secret = e->user + ulen + 1;
    e->seq = list->n;
    list->n++;
    return 0;
}

static void entry_wipe(struct entry *e)
{
    OPENSSL_cleanse(e->user, e->size);
    free(e->user);
    e->user = NULL;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->user, y->user);

    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts by user and keeps, of each user's entries, the one latest in the file. */
static void sort_dedup(struct userlist *list)
{
    size_t i, out = 0;

    if (list->n == 0)
        return;
    qsort(list->v, list->n, sizeof(*list->v), entry_cmp);
    for (i = 0; i < list->n; i++) {
        if (i + 1 < list->n && strcmp(list->v[i].user, list->v[i + 1].user) == 0) {
            entry_wipe(&list->v[i]);
            continue;
        }
        list->v[out++] = list->v[i];
    }
    list->n = out;
}

/* Walks buf line by line; returns the number of malformed lines or -1 (ENOMEM). */
static int parse_buffer(struct userlist *list, const char *path, const char *buf, size_t len,
                        char *err, size_t errlen)
{
    struct line_fields f;
    const char *p = buf, *end = buf + len, *nl, *why = NULL;
    unsigned lineno = 0;
    int bad = 0, r, rc = 0;

    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            nl = end;
        lineno++;
        r = parse_line(p, (size_t)(nl - p), &f, &why);
        if (r < 0 && bad++ == 0)
            weir__set_err(err, errlen, "%s:%u: %s", path, lineno, why);
        if (r > 0 && add_entry(list, &f) < 0) {
            rc = -1;
            break;
        }
        p = nl + 1;
    }
    OPENSSL_cleanse(&f, sizeof(f));
    return rc < 0 ? rc : bad;
}

int userlist_load(const char *path, struct userlist **out, char *err, size_t errlen)
{
    struct userlist *list;
    char *buf = NULL, ebuf[128];
    size_t len = 0;
    int fd, rc;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read_all(fd, &buf, &len) < 0) {
        int saved = errno;
        weir__set_err(err, errlen, "could not read auth_file \"%s\": %s", path,
                strerror_r(saved, ebuf, sizeof(ebuf)));
        if (fd >= 0)
            close(fd);
        return saved == ENOMEM ? AUTH_ENOMEM : AUTH_EFILE;
    }
    close(fd);
    list = calloc(1, sizeof(*list));
    rc = list ? parse_buffer(list, path, buf, len, err, errlen) : -1;
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (rc < 0) {
        userlist_free(list);
        weir__set_err(err, errlen, "out of memory loading auth_file \"%s\"", path);
        return AUTH_ENOMEM;
    }
    sort_dedup(list);
    *out = list;
    return rc;
}

const char *userlist_secret(const struct userlist *list, const char *user)
{
    size_t lo = 0, hi;

    if (list == NULL || user == NULL)
        return NULL;
    hi = list->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(user, list->v[mid].user);
        if (c == 0)
            return list->v[mid].secret;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t userlist_count(const struct userlist *list)
{
    return list ? list->n : 0;
}

void userlist_free(struct userlist *list)
{
    size_t i;

    if (list == NULL)
        return;
    for (i = 0; i < list->n; i++)
        entry_wipe(&list->v[i]);
    free(list->v);
    free(list);
}

const char *userlist_user_at(const struct userlist *list, size_t i)
{
    return list && i < list->n ? list->v[i].user : NULL;
}
