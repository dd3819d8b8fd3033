/*
 * libFuzzer target for Proto's framing and message parsers. The first input
 * byte chooses what runs on the rest: one parser, one of the peek functions,
 * or a stream mode that feeds the bytes into an evbuffer in uneven pieces and
 * frames message after message, running every parser on every body. Beyond
 * "no crash", it checks what callers rely on: borrowed strings lie inside the
 * body and end there, frames never claim more than was buffered, the evbuffer
 * and flat-memory peeks agree, and whatever parses rebuilds byte for byte
 * with the matching builder.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <weir/proto.h>

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A borrowed string must start in the body and find its NUL there. */
static void check_str(const char *s, const uint8_t *body, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;

    CHECK(s != NULL && body != NULL);
    CHECK(p >= body && p < body + len);
    CHECK(memchr(p, 0, (size_t)(body + len - p)) != NULL);
}

static void check_span(const uint8_t *p, size_t n, const uint8_t *body, size_t len)
{
    CHECK(n <= len);
    if (n != 0)
        CHECK(p >= body && p + n <= body + len);
}

static void check_rc(int rc)
{
    CHECK(rc == 0 || rc == WEIR_EPROTO);
}

/* The one message in b must have exactly this body. */
static void check_rebuilt(struct evbuffer *b, int rc, bool typed, const uint8_t *body, size_t len)
{
    size_t off = typed ? 5 : 4;
    const uint8_t *flat;

    CHECK(rc == 0);
    CHECK(evbuffer_get_length(b) == off + len);
    flat = evbuffer_pullup(b, -1);
    CHECK(len == 0 || memcmp(flat + off, body, len) == 0);
    evbuffer_free(b);
}

/* ---- one function per parser ---- */

static void fuzz_startup(const uint8_t *body, size_t len)
{
    weir_startup s;
    int rc = weir_proto_parse_startup(body, len, &s);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    CHECK(s.nparams >= 0 && s.nparams <= WEIR_PROTO_STARTUP_MAX_PARAMS);
    for (int i = 0; i < s.nparams; i++) {
        check_str(s.names[i], body, len);
        check_str(s.values[i], body, len);
        CHECK(weir_startup_param(&s, s.names[i]) != NULL);
    }
    b = evbuffer_new();
    CHECK(b != NULL);
    if (s.kind == WEIR_STARTUP_CANCEL)
        check_rebuilt(b, weir_proto_build_cancel(b, s.cancel_pid, s.cancel_key), false, body, len);
    else if (s.kind == WEIR_STARTUP_SSL)
        check_rebuilt(b, weir_proto_build_ssl_request(b), false, body, len);
    else if (s.kind == WEIR_STARTUP_NORMAL && s.protocol == WEIR_PROTO_V3)
        check_rebuilt(b, weir_proto_build_startup(b, s.names, s.values, s.nparams), false, body,
                      len);
    else
        evbuffer_free(b);
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Field order may differ from ours, so compare what parses back. */
static void error_rebuilds(const weir_error_fields *e)
{
    struct evbuffer *b;
    weir_error_fields again;
    weir_frame f;
    const uint8_t *flat;

    if (e->severity == NULL || e->sqlstate == NULL || e->message == NULL ||
        strlen(e->sqlstate) != 5)
        return;
    b = evbuffer_new();
    CHECK(b != NULL);
    CHECK(weir_proto_build_error(b, e->severity, e->sqlstate, e->message, e->detail, e->hint) == 0);
    CHECK(weir_proto_peek(b, 0, &f) == 1 && f.total == evbuffer_get_length(b));
    flat = evbuffer_pullup(b, -1);
    CHECK(weir_proto_parse_error(flat + f.body_off, f.body_len, &again) == 0);
    CHECK(same_str(again.severity, e->severity) && same_str(again.sqlstate, e->sqlstate));
    CHECK(same_str(again.message, e->message) && same_str(again.detail, e->detail));
    CHECK(same_str(again.hint, e->hint) && same_str(again.severity_v, e->severity));
    evbuffer_free(b);
}

static void fuzz_error(const uint8_t *body, size_t len)
{
    weir_error_fields e;
    int rc = weir_proto_parse_error(body, len, &e);
    const char *fields[6];

    check_rc(rc);
    if (rc != 0)
        return;
    fields[0] = e.severity, fields[1] = e.severity_v, fields[2] = e.sqlstate;
    fields[3] = e.message, fields[4] = e.detail, fields[5] = e.hint;
    for (int i = 0; i < 6; i++) {
        if (fields[i] != NULL)
            check_str(fields[i], body, len);
    }
    error_rebuilds(&e);
}

static void fuzz_parameter_status(const uint8_t *body, size_t len)
{
    const char *name, *value;
    int rc = weir_proto_parse_parameter_status(body, len, &name, &value);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    check_str(name, body, len);
    check_str(value, body, len);
    b = evbuffer_new();
    CHECK(b != NULL);
    check_rebuilt(b, weir_proto_build_parameter_status(b, name, value), true, body, len);
}

static void fuzz_ready(const uint8_t *body, size_t len)
{
    char st;
    int rc = weir_proto_parse_ready(body, len, &st);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    CHECK(st == 'I' || st == 'T' || st == 'E');
    b = evbuffer_new();
    CHECK(b != NULL);
    check_rebuilt(b, weir_proto_build_ready(b, st), true, body, len);
}

static void fuzz_backend_key(const uint8_t *body, size_t len)
{
    uint32_t pid, key;
    int rc = weir_proto_parse_backend_key(body, len, &pid, &key);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    b = evbuffer_new();
    CHECK(b != NULL);
    check_rebuilt(b, weir_proto_build_backend_key(b, pid, key), true, body, len);
}

static void fuzz_auth(const uint8_t *body, size_t len)
{
    uint32_t code;
    const uint8_t *d;
    size_t dlen;
    int rc = weir_proto_parse_auth(body, len, &code, &d, &dlen);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    CHECK(dlen == len - 4);
    check_span(d, dlen, body, len);
    b = evbuffer_new();
    CHECK(b != NULL);
    check_rebuilt(b, weir_proto_build_auth(b, code, dlen ? d : NULL, dlen), true, body, len);
}

static void fuzz_string(const uint8_t *body, size_t len)
{
    const char *s;
    int rc = weir_proto_parse_string(body, len, &s);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    check_str(s, body, len);
    CHECK(strlen(s) + 1 == len);
    b = evbuffer_new();
    CHECK(b != NULL);
    check_rebuilt(b, weir_proto_build_query(b, s), true, body, len);
}

static void fuzz_parse(const uint8_t *body, size_t len)
{
    weir_parse_msg m;
    int rc = weir_proto_parse_parse(body, len, &m);

    check_rc(rc);
    if (rc != 0)
        return;
    check_str(m.name, body, len);
    check_str(m.query, body, len);
    check_span(m.param_types, (size_t)m.nparam_types * 4, body, len);
}

static void fuzz_bind(const uint8_t *body, size_t len)
{
    weir_bind_msg m;
    int rc = weir_proto_parse_bind(body, len, &m);

    check_rc(rc);
    if (rc != 0)
        return;
    check_str(m.portal, body, len);
    check_str(m.statement, body, len);
    /* Counts alone need 6 bytes; each format 2, each parameter at least 4. */
    CHECK(m.rest_off + 6 + 2u * m.nformats + 4u * m.nparams + 2u * m.nresult_formats <= len);
}

static void fuzz_target(const uint8_t *body, size_t len)
{
    char kind;
    const char *name;
    int rc = weir_proto_parse_target(body, len, &kind, &name);

    check_rc(rc);
    if (rc != 0)
        return;
    CHECK(kind == 'S' || kind == 'P');
    check_str(name, body, len);
    CHECK(strlen(name) + 2 == len);
}

static void fuzz_execute(const uint8_t *body, size_t len)
{
    const char *portal;
    uint32_t rows;
    int rc = weir_proto_parse_execute(body, len, &portal, &rows);

    check_rc(rc);
    if (rc != 0)
        return;
    check_str(portal, body, len);
    CHECK(strlen(portal) + 5 == len);
}

static void fuzz_sasl_initial(const uint8_t *body, size_t len)
{
    const char *mech;
    const uint8_t *d;
    int32_t dlen;
    int rc = weir_proto_parse_sasl_initial(body, len, &mech, &d, &dlen);
    struct evbuffer *b;

    check_rc(rc);
    if (rc != 0)
        return;
    check_str(mech, body, len);
    CHECK(dlen >= -1);
    if (dlen == -1)
        CHECK(d == NULL);
    else
        check_span(d, (size_t)dlen, body, len);
    if (mech[0] == '\0')
        return; /* the builder refuses an empty mechanism name */
    b = evbuffer_new();
    CHECK(b != NULL);
    /* d is NULL exactly when dlen is -1, which is how the builder says "none". */
    check_rebuilt(b, weir_proto_build_sasl_initial(b, mech, d, dlen >= 0 ? (size_t)dlen : 0), true,
                  body, len);
}

typedef void (*parser_fn)(const uint8_t *body, size_t len);

static const parser_fn parsers[] = {
    fuzz_startup, fuzz_error, fuzz_parameter_status, fuzz_ready, fuzz_backend_key, fuzz_auth,
    fuzz_string, fuzz_parse, fuzz_bind, fuzz_target, fuzz_execute, fuzz_sasl_initial,
};
#define NPARSERS (sizeof(parsers) / sizeof(parsers[0]))

/* ---- framing ---- */

static void check_frame(int rc, const weir_frame *f, size_t avail, size_t max_len, bool typed)
{
    CHECK(rc == 0 || rc == 1 || rc == WEIR_EPROTO || rc == WEIR_ETOOBIG);
    if (rc != 1)
        return;
    CHECK(f->total <= avail && f->body_off == (typed ? 5u : 4u));
    CHECK(f->body_off + f->body_len == f->total);
    CHECK(max_len == 0 || f->total <= max_len);
    CHECK(typed || f->type == 0);
}

/* Both peeks, over flat memory and over an evbuffer, must agree. */
static int peek_both(const uint8_t *p, size_t n, size_t max_len, bool typed, weir_frame *f)
{
    struct evbuffer *b = evbuffer_new();
    weir_frame g;
    int rc, rc2;

    CHECK(b != NULL);
    CHECK(evbuffer_add(b, p, n) == 0);
    rc = typed ? weir_proto_peek_mem(p, n, max_len, f) : weir_proto_peek_startup_mem(p, n, max_len, f);
    rc2 = typed ? weir_proto_peek(b, max_len, &g) : weir_proto_peek_startup(b, max_len, &g);
    check_frame(rc, f, n, max_len, typed);
    CHECK(rc == rc2);
    if (rc == 1)
        CHECK(f->total == g.total && f->type == g.type && f->body_len == g.body_len);
    evbuffer_free(b);
    return rc;
}

/* Runs a parser on an exact-size copy, so any over-read hits a redzone. */
static void run_parser(parser_fn fn, const uint8_t *body, size_t len)
{
    uint8_t *copy = NULL;

    if (len != 0) {
        copy = malloc(len);
        CHECK(copy != NULL);
        memcpy(copy, body, len);
    }
    fn(copy, len);
    free(copy);
}

static void fuzz_peek(const uint8_t *p, size_t n, size_t max_len, bool typed)
{
    weir_frame f;

    if (peek_both(p, n, max_len, typed, &f) != 1)
        return;
    if (typed) {
        for (size_t i = 1; i < NPARSERS; i++)
            run_parser(parsers[i], p + f.body_off, f.body_len);
    } else {
        run_parser(fuzz_startup, p + f.body_off, f.body_len);
    }
}

/* Adds p to b in pieces whose sizes come from seed, one chain each. */
static void add_in_pieces(struct evbuffer *b, const uint8_t *p, size_t n, unsigned seed)
{
    size_t pos = 0;

    while (pos < n) {
        size_t chunk = 1 + (seed = seed * 1103515245u + 12345u) % 13;

        if (chunk > n - pos)
            chunk = n - pos;
        CHECK(evbuffer_add_reference(b, p + pos, chunk, NULL, NULL) == 0);
        pos += chunk;
    }
}

/*
 * In a stream, the parsers a pooler would run for each type byte (client and
 * server types share letters). The single-parser modes cover the rest.
 */
static void run_by_type(char type, const uint8_t *body, size_t len)
{
    switch (type) {
    case 'E': run_parser(fuzz_error, body, len); run_parser(fuzz_execute, body, len); break;
    case 'N': run_parser(fuzz_error, body, len); break;
    case 'S': run_parser(fuzz_parameter_status, body, len); break;
    case 'Z': run_parser(fuzz_ready, body, len); break;
    case 'K': run_parser(fuzz_backend_key, body, len); break;
    case 'R': run_parser(fuzz_auth, body, len); break;
    case 'Q': run_parser(fuzz_string, body, len); break;
    case 'C': run_parser(fuzz_string, body, len); run_parser(fuzz_target, body, len); break;
    case 'D': run_parser(fuzz_target, body, len); break;
    case 'P': run_parser(fuzz_parse, body, len); break;
    case 'B': run_parser(fuzz_bind, body, len); break;
    case 'p': run_parser(fuzz_string, body, len); run_parser(fuzz_sasl_initial, body, len); break;
    default: break;
    }
}

/* A client's byte stream: optionally a startup packet, then typed messages. */
static void fuzz_stream(const uint8_t *p, size_t n, size_t max_len, bool startup_first)
{
    struct evbuffer *b = evbuffer_new();
    size_t before;
    weir_frame f;
    uint8_t *body;
    int rc;

    CHECK(b != NULL);
    add_in_pieces(b, p, n, (unsigned)n);
    rc = startup_first ? weir_proto_peek_startup(b, max_len, &f) : weir_proto_peek(b, max_len, &f);
    while (rc == 1) {
        before = evbuffer_get_length(b);
        check_frame(rc, &f, before, max_len, !startup_first);
        body = evbuffer_pullup(b, (ev_ssize_t)f.total);
        CHECK(body != NULL);
        if (startup_first) {
            run_parser(fuzz_startup, body + f.body_off, f.body_len);
        } else {
            run_by_type(f.type, body + f.body_off, f.body_len);
        }
        CHECK(evbuffer_drain(b, f.total) == 0);
        CHECK(evbuffer_get_length(b) == before - f.total);
        startup_first = false;
        rc = weir_proto_peek(b, max_len, &f);
    }
    check_frame(rc, &f, evbuffer_get_length(b), max_len, true);
    evbuffer_free(b);
}

enum { MODE_PEEK = NPARSERS, MODE_PEEK_STARTUP, MODE_STREAM, MODE_STREAM_STARTUP, MODE_COUNT };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *rest = data + 1;
    size_t n, mode, max_len;

    if (size == 0)
        return 0;
    n = size - 1;
    mode = data[0] % MODE_COUNT;
    /* The higher part of the selector sets a limit: 0 (none) or a small one. */
    max_len = (size_t)(data[0] / MODE_COUNT) * 8;
    if (mode < NPARSERS)
        run_parser(parsers[mode], rest, n);
    else if (mode == MODE_PEEK || mode == MODE_PEEK_STARTUP)
        fuzz_peek(rest, n, max_len, mode == MODE_PEEK);
    else
        fuzz_stream(rest, n, max_len, mode == MODE_STREAM_STARTUP);
    return 0;
}
