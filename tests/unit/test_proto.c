/*
 * Unit tests for Proto, the PostgreSQL v3 wire codec: every builder's output
 * frames with weir_proto_peek() and parses back to what went in; framing says
 * "need more" until a message is whole and refuses bad or oversize lengths as
 * soon as the header is readable; every parser rejects truncated, unterminated
 * or over-long input with WEIR_EPROTO; and a builder that runs out of memory
 * leaves the output buffer exactly as it was.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <weir/proto.h>

/* ---- a failing allocator for libevent, to prove builders are atomic ---- */

static int allocs_left = -1; /* -1: never fail */

static void *fail_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return malloc(n);
}

static void *fail_realloc(void *p, size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return realloc(p, n);
}

/* ---- hand-made message bodies ---- */

typedef struct bytes {
    uint8_t d[8192];
    size_t n;
} bytes;

static void b_raw(bytes *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof(b->d));
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void b_u8(bytes *b, uint8_t v)
{
    b_raw(b, &v, 1);
}

static void b_u16(bytes *b, uint16_t v)
{
    uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };

    b_raw(b, x, 2);
}

static void b_u32(bytes *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

    b_raw(b, x, 4);
}

/* A string with its NUL. */
static void b_str(bytes *b, const char *s)
{
    b_raw(b, s, strlen(s) + 1);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* A typed message header in front of nothing: the body may follow or not. */
static struct evbuffer *buf_with_header(char type, uint32_t len)
{
    struct evbuffer *b = evbuffer_new();
    bytes h = { .n = 0 };

    assert_non_null(b);
    b_u8(&h, (uint8_t)type);
    b_u32(&h, len);
    assert_int_equal(evbuffer_add(b, h.d, h.n), 0);
    return b;
}

/* Field by field: the struct has padding after type. */
static void same_frame(const weir_frame *a, const weir_frame *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->total, b->total);
    assert_int_equal(a->body_len, b->body_len);
    assert_int_equal(a->body_off, b->body_off);
}

/*
 * Frames the message at the head of b, checks that the flat-memory peek
 * agrees, and returns its body (valid until b is drained).
 */
static const uint8_t *frame(struct evbuffer *b, char type, weir_frame *f)
{
    weir_frame m;
    const uint8_t *flat;

    assert_int_equal(weir_proto_peek(b, 0, f), 1);
    assert_int_equal(f->type, type);
    assert_int_equal(f->body_off, 5);
    assert_int_equal(f->body_off + f->body_len, f->total);
    flat = evbuffer_pullup(b, (ev_ssize_t)f->total);
    assert_non_null(flat);
    assert_int_equal(weir_proto_peek_mem(flat, evbuffer_get_length(b), 0, &m), 1);
    same_frame(&m, f);
    return flat + f->body_off;
}

static const uint8_t *frame_startup(struct evbuffer *b, weir_frame *f)
{
    weir_frame m;
    const uint8_t *flat;

    assert_int_equal(weir_proto_peek_startup(b, 0, f), 1);
    assert_int_equal(f->type, 0);
    assert_int_equal(f->body_off, 4);
    assert_int_equal(f->body_off + f->body_len, f->total);
    flat = evbuffer_pullup(b, (ev_ssize_t)f->total);
    assert_non_null(flat);
    assert_int_equal(weir_proto_peek_startup_mem(flat, evbuffer_get_length(b), 0, &m), 1);
    same_frame(&m, f);
    return flat + f->body_off;
}

/* ---- framing ---- */

static void test_peek_needs_more_until_whole(void **state)
{
    struct evbuffer *whole = evbuffer_new();
    const uint8_t *flat;
    size_t total;
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_build_query(whole, "SELECT 1"), 0);
    total = evbuffer_get_length(whole);
    flat = evbuffer_pullup(whole, -1);
    for (size_t n = 0; n < total; n++) {
        struct evbuffer *part = evbuffer_new();

        assert_int_equal(evbuffer_add(part, flat, n), 0);
        assert_int_equal(weir_proto_peek(part, 0, &f), 0);
        assert_int_equal(weir_proto_peek_mem(flat, n, 0, &f), 0);
        evbuffer_free(part);
    }
    assert_int_equal(weir_proto_peek_mem(flat, total, 0, &f), 1);
    assert_int_equal(f.total, total);
    evbuffer_free(whole);
}

static void test_peek_length_below_four_is_eproto(void **state)
{
    weir_frame f;

    (void)state;
    for (uint32_t len = 0; len < 4; len++) {
        struct evbuffer *b = buf_with_header('Q', len);

        assert_int_equal(weir_proto_peek(b, 0, &f), WEIR_EPROTO);
        assert_int_equal(weir_proto_peek_mem(evbuffer_pullup(b, -1), 5, 0, &f), WEIR_EPROTO);
        evbuffer_free(b);
    }
    struct evbuffer *b = buf_with_header('S', 4);
    assert_int_equal(weir_proto_peek(b, 0, &f), 1);
    assert_int_equal(f.body_len, 0);
    assert_int_equal(f.total, 5);
    evbuffer_free(b);
}

static void test_peek_negative_length_is_eproto(void **state)
{
    weir_frame f;
    uint32_t bad[] = { 0x80000000u, 0xffffffffu, 0xfffffffcu };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct evbuffer *b = buf_with_header('D', bad[i]);

        assert_int_equal(weir_proto_peek(b, 0, &f), WEIR_EPROTO);
        evbuffer_free(b);
    }
}

static void test_peek_oversize_is_etoobig_before_body_arrives(void **state)
{
    weir_frame f;
    struct evbuffer *b;

    (void)state;
    b = buf_with_header('Q', 200);
    assert_int_equal(weir_proto_peek(b, 100, &f), WEIR_ETOOBIG);
    assert_int_equal(weir_proto_peek(b, 201, &f), 0);  /* exactly the limit: wait */
    assert_int_equal(weir_proto_peek(b, 200, &f), WEIR_ETOOBIG);
    evbuffer_free(b);

    /* Without a limit the protocol's 1 GiB still applies. */
    b = buf_with_header('Q', 0x40000000u);
    assert_int_equal(weir_proto_peek(b, 0, &f), WEIR_ETOOBIG);
    assert_int_equal(weir_proto_peek(b, SIZE_MAX, &f), WEIR_ETOOBIG);
    evbuffer_free(b);
    b = buf_with_header('Q', 0x3fffffffu);
    assert_int_equal(weir_proto_peek(b, 0, &f), 0);
    evbuffer_free(b);
}

static void test_peek_startup_lengths(void **state)
{
    uint8_t pkt[8] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f }; /* SSLRequest */
    weir_frame f;

    (void)state;
    for (uint8_t len = 0; len < 8; len++) {
        uint8_t bad[8] = { 0, 0, 0, len, 0, 3, 0, 0 };

        assert_int_equal(weir_proto_peek_startup_mem(bad, 8, 0, &f), WEIR_EPROTO);
    }
    for (size_t n = 0; n < sizeof(pkt); n++)
        assert_int_equal(weir_proto_peek_startup_mem(pkt, n, 0, &f), 0);
    assert_int_equal(weir_proto_peek_startup_mem(pkt, 8, 7, &f), WEIR_ETOOBIG);
    assert_int_equal(weir_proto_peek_startup_mem(pkt, 8, 8, &f), 1);
    assert_int_equal(f.type, 0);
    assert_int_equal(f.total, 8);
    assert_int_equal(f.body_off, 4);
    assert_int_equal(f.body_len, 4);

    uint8_t neg[4] = { 0x80, 0, 0, 0 };
    assert_int_equal(weir_proto_peek_startup_mem(neg, 4, 0, &f), WEIR_EPROTO);
    uint8_t big[4] = { 0x40, 0, 0, 1 };
    assert_int_equal(weir_proto_peek_startup_mem(big, 4, 0, &f), WEIR_ETOOBIG);
}

static void test_peek_header_split_across_chains(void **state)
{
    struct evbuffer *src = evbuffer_new(), *b = evbuffer_new();
    const char *names[] = { "user" }, *values[] = { "alice" };
    const uint8_t *flat, *body;
    size_t n;
    weir_frame f;
    char status;

    (void)state;
    assert_int_equal(weir_proto_build_startup(src, names, values, 1), 0);
    assert_int_equal(weir_proto_build_ready(src, 'T'), 0);
    n = evbuffer_get_length(src);
    flat = evbuffer_pullup(src, -1);
    /* One chain per byte: the header is never contiguous in b. */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(evbuffer_add_reference(b, flat + i, 1, NULL, NULL), 0);
    body = frame_startup(b, &f);
    assert_int_equal(f.total, n - 6);
    assert_int_equal(be32(body), WEIR_PROTO_V3);
    assert_int_equal(evbuffer_drain(b, f.total), 0);
    body = frame(b, 'Z', &f);
    assert_int_equal(weir_proto_parse_ready(body, f.body_len, &status), 0);
    assert_int_equal(status, 'T');
    evbuffer_free(b);
    evbuffer_free(src);
}

static void test_peek_rejects_null_arguments(void **state)
{
    struct evbuffer *b = evbuffer_new();
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_peek(NULL, 0, &f), WEIR_EINVAL);
    assert_int_equal(weir_proto_peek(b, 0, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_peek_startup(NULL, 0, &f), WEIR_EINVAL);
    assert_int_equal(weir_proto_peek_mem(NULL, 5, 0, &f), WEIR_EINVAL);
    assert_int_equal(weir_proto_peek_mem(NULL, 0, 0, &f), 0);
    assert_int_equal(weir_proto_peek_startup_mem("x", 1, 0, NULL), WEIR_EINVAL);
    evbuffer_free(b);
}

/* ---- builders round-trip through peek and the parsers ---- */

static void test_error_round_trip_in_field_order(void **state)
{
    struct evbuffer *b = evbuffer_new();
    weir_error_fields e;
    const uint8_t *body;
    weir_frame f;
    const char order[] = { 'S', 'V', 'C', 'M', 'D', 'H', 0 };
    size_t off = 0;

    (void)state;
    assert_int_equal(weir_proto_build_error(b, "FATAL", "28P01", "password authentication failed",
                                            "user \"bob\"", "check .pgpass"), 0);
    body = frame(b, 'E', &f);
    assert_int_equal(weir_proto_parse_error(body, f.body_len, &e), 0);
    assert_string_equal(e.severity, "FATAL");
    assert_string_equal(e.severity_v, "FATAL");
    assert_string_equal(e.sqlstate, "28P01");
    assert_string_equal(e.message, "password authentication failed");
    assert_string_equal(e.detail, "user \"bob\"");
    assert_string_equal(e.hint, "check .pgpass");
    for (size_t i = 0; i < sizeof(order); i++) {
        assert_true(off < f.body_len);
        assert_int_equal(body[off], order[i]);
        if (order[i] != 0)
            off += 1 + strlen((const char *)body + off + 1) + 1;
    }
    assert_int_equal(off + 1, f.body_len);
    evbuffer_free(b);
}

static void test_notice_without_detail_or_hint(void **state)
{
    struct evbuffer *b = evbuffer_new();
    weir_error_fields e;
    const uint8_t *body;
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_build_notice(b, "WARNING", "01000", "pool is paused", NULL, NULL),
                     0);
    body = frame(b, 'N', &f);
    assert_int_equal(weir_proto_parse_error(body, f.body_len, &e), 0);
    assert_string_equal(e.severity, "WARNING");
    assert_string_equal(e.sqlstate, "01000");
    assert_string_equal(e.message, "pool is paused");
    assert_null(e.detail);
    assert_null(e.hint);
    evbuffer_free(b);
}

static void test_error_builder_rejects_bad_arguments(void **state)
{
    struct evbuffer *b = evbuffer_new();

    (void)state;
    assert_int_equal(weir_proto_build_error(b, "ERROR", "0800", "m", NULL, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_error(b, "ERROR", "08000", NULL, NULL, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_error(b, NULL, "08000", "m", NULL, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_error(b, "ERROR", NULL, "m", NULL, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_error(NULL, "ERROR", "08000", "m", NULL, NULL), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_parameter_status_and_backend_key_round_trip(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const char *name, *value;
    const uint8_t *body;
    uint32_t pid, key;
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_build_parameter_status(b, "server_version", "16.2"), 0);
    assert_int_equal(weir_proto_build_parameter_status(b, "application_name", ""), 0);
    assert_int_equal(weir_proto_build_backend_key(b, 4242, 0xdeadbeefu), 0);
    body = frame(b, 'S', &f);
    assert_int_equal(weir_proto_parse_parameter_status(body, f.body_len, &name, &value), 0);
    assert_string_equal(name, "server_version");
    assert_string_equal(value, "16.2");
    evbuffer_drain(b, f.total);
    body = frame(b, 'S', &f);
    assert_int_equal(weir_proto_parse_parameter_status(body, f.body_len, &name, &value), 0);
    assert_string_equal(name, "application_name");
    assert_string_equal(value, "");
    evbuffer_drain(b, f.total);
    body = frame(b, 'K', &f);
    assert_int_equal(weir_proto_parse_backend_key(body, f.body_len, &pid, &key), 0);
    assert_int_equal(pid, 4242);
    assert_int_equal(key, 0xdeadbeefu);
    assert_int_equal(weir_proto_build_parameter_status(b, NULL, "x"), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_parameter_status(b, "x", NULL), WEIR_EINVAL);
    evbuffer_free(b);
}

static void test_ready_round_trip(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const char statuses[] = "ITE";
    const uint8_t *body;
    weir_frame f;
    char st;

    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(weir_proto_build_ready(b, statuses[i]), 0);
        body = frame(b, 'Z', &f);
        assert_int_equal(f.body_len, 1);
        assert_int_equal(weir_proto_parse_ready(body, f.body_len, &st), 0);
        assert_int_equal(st, statuses[i]);
        evbuffer_drain(b, f.total);
    }
    assert_int_equal(weir_proto_build_ready(b, 'X'), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_ready(b, 0), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void check_auth_msg(struct evbuffer *b, uint32_t code, const void *data, size_t len)
{
    const uint8_t *body, *got;
    size_t got_len;
    uint32_t got_code;
    weir_frame f;

    body = frame(b, 'R', &f);
    assert_int_equal(weir_proto_parse_auth(body, f.body_len, &got_code, &got, &got_len), 0);
    assert_int_equal(got_code, code);
    assert_int_equal(got_len, len);
    if (len != 0)
        assert_memory_equal(got, data, len);
    evbuffer_drain(b, f.total);
}

static void test_auth_round_trip(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const uint8_t salt[4] = { 1, 0, 0xff, 7 };
    const char *const mechs[] = { "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", NULL };
    const char sasl_list[] = "SCRAM-SHA-256\0SCRAM-SHA-256-PLUS\0";
    const char first[] = "r=abc,s=c2FsdA==,i=4096";

    (void)state;
    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_OK, NULL, 0), 0);
    check_auth_msg(b, WEIR_AUTH_OK, NULL, 0);
    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_CLEARTEXT, NULL, 0), 0);
    check_auth_msg(b, WEIR_AUTH_CLEARTEXT, NULL, 0);
    assert_int_equal(weir_proto_build_auth_md5(b, salt), 0);
    check_auth_msg(b, WEIR_AUTH_MD5, salt, 4);
    assert_int_equal(weir_proto_build_auth_sasl(b, mechs), 0);
    check_auth_msg(b, WEIR_AUTH_SASL, sasl_list, sizeof(sasl_list));
    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_SASL_CONTINUE, first, strlen(first)), 0);
    check_auth_msg(b, WEIR_AUTH_SASL_CONTINUE, first, strlen(first));
    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_SASL_FINAL, "v=xyz", 5), 0);
    check_auth_msg(b, WEIR_AUTH_SASL_FINAL, "v=xyz", 5);

    const char *const none[] = { NULL };
    const char *const empty_name[] = { "", NULL };
    assert_int_equal(weir_proto_build_auth_sasl(b, none), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_auth_sasl(b, empty_name), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_auth_sasl(b, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_auth(b, WEIR_AUTH_SASL_FINAL, NULL, 3), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_auth_md5(b, NULL), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void check_string_msg(struct evbuffer *b, char type, const char *want)
{
    const uint8_t *body;
    const char *s;
    weir_frame f;

    body = frame(b, type, &f);
    assert_int_equal(weir_proto_parse_string(body, f.body_len, &s), 0);
    assert_string_equal(s, want);
    evbuffer_drain(b, f.total);
}

static void check_empty_msg(struct evbuffer *b, char type)
{
    weir_frame f;

    frame(b, type, &f);
    assert_int_equal(f.body_len, 0);
    evbuffer_drain(b, f.total);
}

static void test_string_and_empty_messages_round_trip(void **state)
{
    struct evbuffer *b = evbuffer_new();

    (void)state;
    assert_int_equal(weir_proto_build_query(b, "SELECT 1; SELECT 2"), 0);
    assert_int_equal(weir_proto_build_password(b, "md5abcdef"), 0);
    assert_int_equal(weir_proto_build_command_complete(b, "INSERT 0 1"), 0);
    assert_int_equal(weir_proto_build_query(b, ""), 0);
    assert_int_equal(weir_proto_build_terminate(b), 0);
    assert_int_equal(weir_proto_build_sync(b), 0);
    assert_int_equal(weir_proto_build_empty_query(b), 0);
    check_string_msg(b, 'Q', "SELECT 1; SELECT 2");
    check_string_msg(b, 'p', "md5abcdef");
    check_string_msg(b, 'C', "INSERT 0 1");
    check_string_msg(b, 'Q', "");
    check_empty_msg(b, 'X');
    check_empty_msg(b, 'S');
    check_empty_msg(b, 'I');
    assert_int_equal(evbuffer_get_length(b), 0);
    assert_int_equal(weir_proto_build_query(b, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_terminate(NULL), WEIR_EINVAL);
    evbuffer_free(b);
}

static void test_sasl_messages_round_trip(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const char first[] = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
    const uint8_t *body, *data;
    const char *mech;
    int32_t dlen;
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_build_sasl_initial(b, "SCRAM-SHA-256", first, strlen(first)), 0);
    body = frame(b, 'p', &f);
    assert_int_equal(weir_proto_parse_sasl_initial(body, f.body_len, &mech, &data, &dlen), 0);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(dlen, (int32_t)strlen(first));
    assert_memory_equal(data, first, strlen(first));
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_sasl_initial(b, "SCRAM-SHA-256", NULL, 0), 0);
    body = frame(b, 'p', &f);
    assert_int_equal(weir_proto_parse_sasl_initial(body, f.body_len, &mech, &data, &dlen), 0);
    assert_int_equal(dlen, -1);
    assert_null(data);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_sasl_initial(b, "PLAIN", "", 0), 0);
    body = frame(b, 'p', &f);
    assert_int_equal(weir_proto_parse_sasl_initial(body, f.body_len, &mech, &data, &dlen), 0);
    assert_int_equal(dlen, 0);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_sasl_response(b, "c=biws,r=x,p=y", 14), 0);
    body = frame(b, 'p', &f);
    assert_int_equal(f.body_len, 14);
    assert_memory_equal(body, "c=biws,r=x,p=y", 14);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_sasl_initial(b, "", NULL, 0), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_sasl_initial(b, NULL, NULL, 0), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_sasl_initial(b, "X", NULL, 2), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_sasl_response(b, NULL, 2), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_startup_round_trip(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const char *names[] = { "user", "database", "application_name", "options" };
    const char *values[] = { "alice", "shop", "psql", "" };
    const uint8_t *body;
    weir_startup s;
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_build_startup(b, names, values, 4), 0);
    body = frame_startup(b, &f);
    assert_int_equal(weir_proto_parse_startup(body, f.body_len, &s), 0);
    assert_int_equal(s.kind, WEIR_STARTUP_NORMAL);
    assert_int_equal(s.protocol, WEIR_PROTO_V3);
    assert_int_equal(s.nparams, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(s.names[i], names[i]);
        assert_string_equal(s.values[i], values[i]);
    }
    assert_string_equal(weir_startup_param(&s, "database"), "shop");
    assert_string_equal(weir_startup_param(&s, "options"), "");
    assert_null(weir_startup_param(&s, "client_encoding"));
    assert_null(weir_startup_param(&s, NULL));
    assert_null(weir_startup_param(NULL, "user"));
    evbuffer_free(b);
}

static void test_startup_max_params(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const char *names[WEIR_PROTO_STARTUP_MAX_PARAMS + 1], *values[WEIR_PROTO_STARTUP_MAX_PARAMS + 1];
    char namebuf[WEIR_PROTO_STARTUP_MAX_PARAMS + 1][8];
    const uint8_t *body;
    weir_startup s;
    weir_frame f;
    bytes over = { .n = 0 };

    (void)state;
    for (int i = 0; i <= WEIR_PROTO_STARTUP_MAX_PARAMS; i++) {
        snprintf(namebuf[i], sizeof(namebuf[i]), "p%d", i);
        names[i] = namebuf[i];
        values[i] = "v";
    }
    assert_int_equal(weir_proto_build_startup(b, names, values, WEIR_PROTO_STARTUP_MAX_PARAMS), 0);
    body = frame_startup(b, &f);
    assert_int_equal(weir_proto_parse_startup(body, f.body_len, &s), 0);
    assert_int_equal(s.nparams, WEIR_PROTO_STARTUP_MAX_PARAMS);
    assert_string_equal(weir_startup_param(&s, "p63"), "v");
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_startup(b, names, values, WEIR_PROTO_STARTUP_MAX_PARAMS + 1),
                     WEIR_EINVAL);
    assert_int_equal(weir_proto_build_startup(b, names, values, -1), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);

    b_u32(&over, WEIR_PROTO_V3);
    for (int i = 0; i <= WEIR_PROTO_STARTUP_MAX_PARAMS; i++) {
        b_str(&over, names[i]);
        b_str(&over, "v");
    }
    b_u8(&over, 0);
    assert_int_equal(weir_proto_parse_startup(over.d, over.n, &s), WEIR_EPROTO);
    evbuffer_free(b);
}

static void test_ssl_gssenc_cancel_requests(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const uint8_t *body;
    weir_startup s;
    weir_frame f;
    bytes gss = { .n = 0 };

    (void)state;
    assert_int_equal(weir_proto_build_ssl_request(b), 0);
    body = frame_startup(b, &f);
    assert_int_equal(f.total, 8);
    assert_int_equal(weir_proto_parse_startup(body, f.body_len, &s), 0);
    assert_int_equal(s.kind, WEIR_STARTUP_SSL);
    assert_int_equal(s.protocol, WEIR_PROTO_SSL_REQUEST);
    assert_int_equal(s.nparams, 0);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_cancel(b, 77, 0x80000001u), 0);
    body = frame_startup(b, &f);
    assert_int_equal(f.total, 16);
    assert_int_equal(weir_proto_parse_startup(body, f.body_len, &s), 0);
    assert_int_equal(s.kind, WEIR_STARTUP_CANCEL);
    assert_int_equal(s.cancel_pid, 77);
    assert_int_equal(s.cancel_key, 0x80000001u);
    evbuffer_drain(b, f.total);

    b_u32(&gss, WEIR_PROTO_GSSENC_REQUEST);
    assert_int_equal(weir_proto_parse_startup(gss.d, gss.n, &s), 0);
    assert_int_equal(s.kind, WEIR_STARTUP_GSSENC);
    b_u8(&gss, 0);
    assert_int_equal(weir_proto_parse_startup(gss.d, gss.n, &s), WEIR_EPROTO);
    evbuffer_free(b);
}

static void test_special_requests_with_wrong_length(void **state)
{
    bytes ssl = { .n = 0 }, cancel_short = { .n = 0 }, cancel_long = { .n = 0 };
    weir_startup s;

    (void)state;
    b_u32(&ssl, WEIR_PROTO_SSL_REQUEST);
    b_u32(&ssl, 0);
    assert_int_equal(weir_proto_parse_startup(ssl.d, ssl.n, &s), WEIR_EPROTO);
    b_u32(&cancel_short, WEIR_PROTO_CANCEL_REQUEST);
    b_u32(&cancel_short, 1);
    assert_int_equal(weir_proto_parse_startup(cancel_short.d, cancel_short.n, &s), WEIR_EPROTO);
    b_u32(&cancel_long, WEIR_PROTO_CANCEL_REQUEST);
    b_u32(&cancel_long, 1);
    b_u32(&cancel_long, 2);
    b_u32(&cancel_long, 3);
    assert_int_equal(weir_proto_parse_startup(cancel_long.d, cancel_long.n, &s), WEIR_EPROTO);
    /* 1234.5681 is a code PostgreSQL may define later: not ours to accept. */
    bytes unknown = { .n = 0 };
    b_u32(&unknown, (1234u << 16) | 5681u);
    assert_int_equal(weir_proto_parse_startup(unknown.d, unknown.n, &s), WEIR_EPROTO);
}

/* One column of a RowDescription body, at *off; advances *off past it. */
static void check_column(const uint8_t *body, size_t *off, const char *name, uint32_t oid,
                          int16_t typlen)
{
    const uint8_t *p = body + *off;

    assert_string_equal((const char *)p, name);
    p += strlen(name) + 1;
    assert_int_equal(be32(p), 0);
    assert_int_equal(be16(p + 4), 0);
    assert_int_equal(be32(p + 6), oid);
    assert_int_equal((int16_t)be16(p + 10), typlen);
    assert_int_equal(be32(p + 12), 0xffffffffu);
    assert_int_equal(be16(p + 16), 0);
    *off += strlen(name) + 1 + 18;
}

static void test_row_description_and_data_row(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const char *cols[] = { "database", "cl_active" };
    const uint32_t oids[] = { 25, 20 };
    const char *row[] = { "shop", NULL, "" };
    const uint8_t *body;
    weir_frame f;
    size_t off = 2;

    (void)state;
    assert_int_equal(weir_proto_build_row_description(b, 2, cols, oids), 0);
    body = frame(b, 'T', &f);
    assert_int_equal(be16(body), 2);
    check_column(body, &off, "database", 25, -1);
    check_column(body, &off, "cl_active", 20, 8);
    assert_int_equal(off, f.body_len);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_row_description(b, 1, cols, NULL), 0);
    body = frame(b, 'T', &f);
    off = 2;
    check_column(body, &off, "database", 25, -1);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_data_row(b, 3, row), 0);
    body = frame(b, 'D', &f);
    assert_int_equal(be16(body), 3);
    assert_int_equal(be32(body + 2), 4);
    assert_memory_equal(body + 6, "shop", 4);
    assert_int_equal(be32(body + 10), 0xffffffffu);
    assert_int_equal(be32(body + 14), 0);
    assert_int_equal(f.body_len, 18);
    evbuffer_drain(b, f.total);

    assert_int_equal(weir_proto_build_row_description(b, 0, NULL, NULL), 0);
    body = frame(b, 'T', &f);
    assert_int_equal(f.body_len, 2);
    evbuffer_drain(b, f.total);
    assert_int_equal(weir_proto_build_row_description(b, -1, cols, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_row_description(b, 2, NULL, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_data_row(b, 40000, row), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_data_row(b, 1, NULL), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_build_message_generic(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const uint8_t *body;
    weir_frame f;

    (void)state;
    assert_int_equal(weir_proto_build_message(b, 'd', "copy\ndata", 9), 0);
    body = frame(b, 'd', &f);
    assert_int_equal(f.body_len, 9);
    assert_memory_equal(body, "copy\ndata", 9);
    evbuffer_drain(b, f.total);
    assert_int_equal(weir_proto_build_message(b, 0, "x", 1), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_message(b, 'd', NULL, 1), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_message(NULL, 'd', "x", 1), WEIR_EINVAL);
    assert_int_equal(weir_proto_build_message(b, 'd', "x", (size_t)0x40000000u), WEIR_EINVAL);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

static void test_builder_out_of_memory_appends_nothing(void **state)
{
    struct evbuffer *b = evbuffer_new();
    static char big[16384];
    const uint8_t *body;
    weir_error_fields e;
    weir_frame f;
    int rc = WEIR_ENOMEM, failures = 0;

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    assert_int_equal(weir_proto_build_sync(b), 0);
    for (int budget = 0; rc == WEIR_ENOMEM && budget < 10; budget++) {
        allocs_left = budget;
        rc = weir_proto_build_error(b, "ERROR", "53200", big, NULL, NULL);
        allocs_left = -1;
        if (rc == WEIR_ENOMEM) {
            failures++;
            assert_int_equal(evbuffer_get_length(b), 5);
        }
    }
    assert_int_equal(rc, 0);
    assert_true(failures > 0);
    check_empty_msg(b, 'S');
    body = frame(b, 'E', &f);
    assert_int_equal(weir_proto_parse_error(body, f.body_len, &e), 0);
    assert_int_equal(strlen(e.message), sizeof(big) - 1);
    evbuffer_free(b);
}

/* ---- parsers reject malformed bodies ---- */

static void test_startup_rejects_malformed(void **state)
{
    weir_startup s;
    bytes v2 = { .n = 0 }, v4 = { .n = 0 }, nofinal = { .n = 0 }, novalue = { .n = 0 };
    bytes unterminated = { .n = 0 }, trailing = { .n = 0 }, minor = { .n = 0 };

    (void)state;
    assert_int_equal(weir_proto_parse_startup("\0\3\0", 3, &s), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_startup(NULL, 0, &s), WEIR_EPROTO);
    b_u32(&v2, 2u << 16);
    b_str(&v2, "user");
    b_str(&v2, "a");
    b_u8(&v2, 0);
    assert_int_equal(weir_proto_parse_startup(v2.d, v2.n, &s), WEIR_EPROTO);
    b_u32(&v4, 4u << 16);
    b_raw(&v4, v2.d + 4, v2.n - 4);
    assert_int_equal(weir_proto_parse_startup(v4.d, v4.n, &s), WEIR_EPROTO);

    b_u32(&nofinal, WEIR_PROTO_V3);
    b_str(&nofinal, "user");
    b_str(&nofinal, "a");
    assert_int_equal(weir_proto_parse_startup(nofinal.d, nofinal.n, &s), WEIR_EPROTO);
    b_u32(&novalue, WEIR_PROTO_V3);
    b_str(&novalue, "user");
    assert_int_equal(weir_proto_parse_startup(novalue.d, novalue.n, &s), WEIR_EPROTO);
    b_u32(&unterminated, WEIR_PROTO_V3);
    b_str(&unterminated, "user");
    b_raw(&unterminated, "alice", 5);
    assert_int_equal(weir_proto_parse_startup(unterminated.d, unterminated.n, &s), WEIR_EPROTO);
    b_raw(&trailing, v2.d, v2.n);
    trailing.d[1] = 3; /* now 3.0 */
    assert_int_equal(weir_proto_parse_startup(trailing.d, trailing.n, &s), 0);
    b_u8(&trailing, 'x');
    assert_int_equal(weir_proto_parse_startup(trailing.d, trailing.n, &s), WEIR_EPROTO);

    /* A newer minor version is the server's to negotiate down, not an error. */
    b_u32(&minor, WEIR_PROTO_V3 | 2);
    b_u8(&minor, 0);
    assert_int_equal(weir_proto_parse_startup(minor.d, minor.n, &s), 0);
    assert_int_equal(s.protocol, WEIR_PROTO_V3 | 2);
    assert_int_equal(weir_proto_parse_startup(minor.d, minor.n, NULL), WEIR_EINVAL);
}

static void test_string_parsers_reject_malformed(void **state)
{
    const char *s, *n, *v;

    (void)state;
    assert_int_equal(weir_proto_parse_string("", 0, &s), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_string("abc", 3, &s), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_string("abc\0x", 5, &s), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_string("abc\0", 5, &s), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_string("abc", 4, &s), 0);
    assert_string_equal(s, "abc");
    assert_int_equal(weir_proto_parse_string("abc", 4, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_string(NULL, 4, &s), WEIR_EINVAL);

    assert_int_equal(weir_proto_parse_parameter_status("a", 2, &n, &v), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_parameter_status("a\0b", 3, &n, &v), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_parameter_status("a\0b\0c", 5, &n, &v), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_parameter_status("a\0b", 4, &n, &v), 0);
}

static void test_ready_and_backend_key_reject_malformed(void **state)
{
    uint32_t pid, key;
    char st = '?';

    (void)state;
    assert_int_equal(weir_proto_parse_ready("", 0, &st), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_ready("II", 2, &st), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_ready("X", 1, &st), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_ready("i", 1, &st), WEIR_EPROTO);
    assert_int_equal(st, '?');
    assert_int_equal(weir_proto_parse_backend_key("1234567", 7, &pid, &key), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_backend_key("123456789", 9, &pid, &key), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_backend_key("12345678", 8, &pid, &key), 0);
}

static void test_error_rejects_malformed(void **state)
{
    weir_error_fields e;

    (void)state;
    assert_int_equal(weir_proto_parse_error("", 0, &e), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_error("SERROR", 7, &e), WEIR_EPROTO);  /* no final NUL */
    assert_int_equal(weir_proto_parse_error("SERR", 4, &e), WEIR_EPROTO);    /* unterminated */
    assert_int_equal(weir_proto_parse_error("S", 1, &e), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_error("SERROR\0\0x", 9, &e), WEIR_EPROTO);
    /* Unknown field codes are skipped, known ones still found. */
    assert_int_equal(weir_proto_parse_error("Ppos\0MHi\0", 10, &e), 0);
    assert_string_equal(e.message, "Hi");
    assert_null(e.sqlstate);
    assert_int_equal(weir_proto_parse_error("", 1, &e), 0);
}

static void test_auth_rejects_malformed(void **state)
{
    bytes ok_extra = { .n = 0 }, md5_short = { .n = 0 }, sasl_open = { .n = 0 };
    bytes sasl_empty = { .n = 0 }, gss = { .n = 0 };
    const uint8_t *data;
    size_t dlen;
    uint32_t code;

    (void)state;
    assert_int_equal(weir_proto_parse_auth("\0\0\0", 3, &code, &data, &dlen), WEIR_EPROTO);
    b_u32(&ok_extra, WEIR_AUTH_OK);
    b_u8(&ok_extra, 0);
    assert_int_equal(weir_proto_parse_auth(ok_extra.d, ok_extra.n, &code, &data, &dlen),
                     WEIR_EPROTO);
    b_u32(&md5_short, WEIR_AUTH_MD5);
    b_raw(&md5_short, "abc", 3);
    assert_int_equal(weir_proto_parse_auth(md5_short.d, md5_short.n, &code, &data, &dlen),
                     WEIR_EPROTO);
    b_u32(&sasl_open, WEIR_AUTH_SASL);
    b_str(&sasl_open, "SCRAM-SHA-256");
    assert_int_equal(weir_proto_parse_auth(sasl_open.d, sasl_open.n, &code, &data, &dlen),
                     WEIR_EPROTO);
    b_u32(&sasl_empty, WEIR_AUTH_SASL);
    b_u8(&sasl_empty, 0);
    assert_int_equal(weir_proto_parse_auth(sasl_empty.d, sasl_empty.n, &code, &data, &dlen),
                     WEIR_EPROTO);
    /* A code weir does not interpret passes its payload through. */
    b_u32(&gss, 8);
    b_raw(&gss, "tok", 3);
    assert_int_equal(weir_proto_parse_auth(gss.d, gss.n, &code, &data, &dlen), 0);
    assert_int_equal(code, 8);
    assert_int_equal(dlen, 3);
    assert_memory_equal(data, "tok", 3);
}

static void test_parse_message(void **state)
{
    bytes p = { .n = 0 };
    weir_parse_msg m;

    (void)state;
    b_str(&p, "s1");
    b_str(&p, "SELECT $1::int + $2");
    b_u16(&p, 2);
    b_u32(&p, 23);
    b_u32(&p, 0);
    assert_int_equal(weir_proto_parse_parse(p.d, p.n, &m), 0);
    assert_string_equal(m.name, "s1");
    assert_string_equal(m.query, "SELECT $1::int + $2");
    assert_int_equal(m.nparam_types, 2);
    assert_int_equal(be32(m.param_types), 23);
    assert_int_equal(weir_proto_parse_parse(p.d, p.n - 1, &m), WEIR_EPROTO);
    b_u8(&p, 0);
    assert_int_equal(weir_proto_parse_parse(p.d, p.n, &m), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_parse("s1\0SELECT", 9, &m), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_parse("\0SELECT 1\0\0", 11, &m), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_parse("\0SELECT 1\0\0", 12, &m), 0);
    assert_string_equal(m.name, "");
    assert_int_equal(m.nparam_types, 0);
}

/* Bind "" from "stmt" with formats {1}, params {"42", NULL, ""}, results {0,1}. */
static void bind_body(bytes *b, int32_t second_len)
{
    b_str(b, "");
    b_str(b, "stmt");
    b_u16(b, 1);
    b_u16(b, 1);
    b_u16(b, 3);
    b_u32(b, 2);
    b_raw(b, "42", 2);
    b_u32(b, (uint32_t)second_len);
    b_u32(b, 0);
    b_u16(b, 2);
    b_u16(b, 0);
    b_u16(b, 1);
}

static void test_bind_with_null_params(void **state)
{
    bytes b = { .n = 0 };
    weir_bind_msg m;

    (void)state;
    bind_body(&b, -1);
    assert_int_equal(weir_proto_parse_bind(b.d, b.n, &m), 0);
    assert_string_equal(m.portal, "");
    assert_string_equal(m.statement, "stmt");
    assert_int_equal(m.rest_off, 6);
    assert_int_equal(m.nformats, 1);
    assert_int_equal(m.nparams, 3);
    assert_int_equal(m.nresult_formats, 2);
    /* Every strict prefix is truncated somewhere. */
    for (size_t n = 0; n < b.n; n++)
        assert_int_equal(weir_proto_parse_bind(b.d, n, &m), WEIR_EPROTO);
    b_u8(&b, 0);
    assert_int_equal(weir_proto_parse_bind(b.d, b.n, &m), WEIR_EPROTO);
}

static void test_bind_rejects_bad_lengths(void **state)
{
    int32_t bad[] = { -2, INT32_MIN, 1, 4, INT32_MAX };
    bytes nul = { .n = 0 }, count = { .n = 0 };
    weir_bind_msg m;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bytes b = { .n = 0 };

        bind_body(&b, bad[i]);
        assert_int_equal(weir_proto_parse_bind(b.d, b.n, &m), WEIR_EPROTO);
    }
    b_raw(&nul, "portal", 6);
    assert_int_equal(weir_proto_parse_bind(nul.d, nul.n, &m), WEIR_EPROTO);
    /* Claims five parameters but carries none. */
    b_str(&count, "");
    b_str(&count, "");
    b_u16(&count, 0);
    b_u16(&count, 5);
    b_u16(&count, 0);
    assert_int_equal(weir_proto_parse_bind(count.d, count.n, &m), WEIR_EPROTO);
}

static void test_describe_close_execute(void **state)
{
    const char *name;
    uint32_t rows;
    char kind;
    bytes ex = { .n = 0 };

    (void)state;
    assert_int_equal(weir_proto_parse_target("Ss1", 4, &kind, &name), 0);
    assert_int_equal(kind, 'S');
    assert_string_equal(name, "s1");
    assert_int_equal(weir_proto_parse_target("P", 2, &kind, &name), 0);
    assert_int_equal(kind, 'P');
    assert_string_equal(name, "");
    assert_int_equal(weir_proto_parse_target("Xs1", 4, &kind, &name), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_target("S", 1, &kind, &name), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_target("Ss\0\0", 4, &kind, &name), WEIR_EPROTO);
    assert_int_equal(weir_proto_parse_target("", 0, &kind, &name), WEIR_EPROTO);

    b_str(&ex, "p1");
    b_u32(&ex, 100);
    assert_int_equal(weir_proto_parse_execute(ex.d, ex.n, &name, &rows), 0);
    assert_string_equal(name, "p1");
    assert_int_equal(rows, 100);
    assert_int_equal(weir_proto_parse_execute(ex.d, ex.n - 1, &name, &rows), WEIR_EPROTO);
    b_u8(&ex, 0);
    assert_int_equal(weir_proto_parse_execute(ex.d, ex.n, &name, &rows), WEIR_EPROTO);
}

static void test_sasl_initial_rejects_bad_lengths(void **state)
{
    const uint8_t *data;
    const char *mech;
    int32_t dlen;
    uint32_t lens[] = { 0xfffffffeu, 0x80000000u, 4, 2 };

    (void)state;
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        bytes b = { .n = 0 };

        b_str(&b, "SCRAM-SHA-256");
        b_u32(&b, lens[i]);
        b_raw(&b, "abc", 3);
        assert_int_equal(weir_proto_parse_sasl_initial(b.d, b.n, &mech, &data, &dlen), WEIR_EPROTO);
    }
    assert_int_equal(weir_proto_parse_sasl_initial("SCRAM", 6, &mech, &data, &dlen), WEIR_EPROTO);
}

/* ---- streams ---- */

static int build_nth(struct evbuffer *b, int i)
{
    char text[32];

    snprintf(text, sizeof(text), "SELECT %d", i);
    switch (i % 6) {
    case 0: return weir_proto_build_query(b, text);
    case 1: return weir_proto_build_parameter_status(b, "n", text);
    case 2: return weir_proto_build_ready(b, "ITE"[i % 3]);
    case 3: return weir_proto_build_error(b, "ERROR", "42P01", text, NULL, i % 2 ? "h" : NULL);
    case 4: return weir_proto_build_backend_key(b, (uint32_t)i, (uint32_t)~i);
    default: return weir_proto_build_sync(b);
    }
}

static void check_nth(char type, const uint8_t *body, size_t len, int i)
{
    const char *a, *v;
    char text[32], st;
    weir_error_fields e;
    uint32_t pid, key;

    snprintf(text, sizeof(text), "SELECT %d", i);
    switch (i % 6) {
    case 0:
        assert_int_equal(type, 'Q');
        assert_int_equal(weir_proto_parse_string(body, len, &a), 0);
        assert_string_equal(a, text);
        break;
    case 1:
        assert_int_equal(type, 'S');
        assert_int_equal(weir_proto_parse_parameter_status(body, len, &a, &v), 0);
        assert_string_equal(v, text);
        break;
    case 2:
        assert_int_equal(weir_proto_parse_ready(body, len, &st), 0);
        assert_int_equal(st, "ITE"[i % 3]);
        break;
    case 3:
        assert_int_equal(weir_proto_parse_error(body, len, &e), 0);
        assert_string_equal(e.message, text);
        break;
    case 4:
        assert_int_equal(weir_proto_parse_backend_key(body, len, &pid, &key), 0);
        assert_int_equal(pid, (uint32_t)i);
        assert_int_equal(key, (uint32_t)~i);
        break;
    default:
        assert_int_equal(type, 'S');
        assert_int_equal(len, 0);
    }
}

#define STREAM_MESSAGES 3000

static void test_back_to_back_messages_framed_one_by_one(void **state)
{
    struct evbuffer *b = evbuffer_new();
    const uint8_t *body;
    weir_frame f;
    int i;

    (void)state;
    for (i = 0; i < STREAM_MESSAGES; i++)
        assert_int_equal(build_nth(b, i), 0);
    for (i = 0; evbuffer_get_length(b) > 0; i++) {
        assert_int_equal(weir_proto_peek(b, 0, &f), 1);
        body = evbuffer_pullup(b, (ev_ssize_t)f.total) + f.body_off;
        check_nth(f.type, body, f.body_len, i);
        assert_int_equal(evbuffer_drain(b, f.total), 0);
    }
    assert_int_equal(i, STREAM_MESSAGES);
    assert_int_equal(weir_proto_peek(b, 0, &f), 0);
    evbuffer_free(b);
}

/* The same stream arriving in odd-sized reads, framed as bytes come in. */
static void test_stream_arriving_in_pieces(void **state)
{
    struct evbuffer *all = evbuffer_new(), *in = evbuffer_new();
    const uint8_t *flat, *body;
    size_t n, pos = 0;
    weir_frame f;
    int i = 0, rc;

    (void)state;
    for (int k = 0; k < STREAM_MESSAGES; k++)
        assert_int_equal(build_nth(all, k), 0);
    n = evbuffer_get_length(all);
    flat = evbuffer_pullup(all, -1);
    while (pos < n) {
        size_t chunk = 1 + (pos * 7919) % 23;

        if (chunk > n - pos)
            chunk = n - pos;
        assert_int_equal(evbuffer_add(in, flat + pos, chunk), 0);
        pos += chunk;
        while ((rc = weir_proto_peek(in, 64, &f)) == 1) {
            body = evbuffer_pullup(in, (ev_ssize_t)f.total) + f.body_off;
            check_nth(f.type, body, f.body_len, i++);
            evbuffer_drain(in, f.total);
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(i, STREAM_MESSAGES);
    evbuffer_free(in);
    evbuffer_free(all);
}

static void test_parsers_reject_null_arguments(void **state)
{
    weir_startup s;
    weir_error_fields e;
    weir_parse_msg pm;
    weir_bind_msg bm;
    const char *a;
    const uint8_t *d;
    uint32_t u;

    (void)state;
    assert_int_equal(weir_proto_parse_startup(NULL, 8, &s), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_error(NULL, 1, &e), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_error("", 1, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_parameter_status("a\0b", 4, NULL, &a), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_ready("I", 1, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_backend_key("12345678", 8, &u, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_auth("\0\0\0\0", 4, &u, &d, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_parse(NULL, 3, &pm), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_bind(NULL, 3, &bm), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_target("S", 2, NULL, &a), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_execute("", 1, &a, NULL), WEIR_EINVAL);
    assert_int_equal(weir_proto_parse_sasl_initial("", 1, &a, &d, NULL), WEIR_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peek_needs_more_until_whole),
        cmocka_unit_test(test_peek_length_below_four_is_eproto),
        cmocka_unit_test(test_peek_negative_length_is_eproto),
        cmocka_unit_test(test_peek_oversize_is_etoobig_before_body_arrives),
        cmocka_unit_test(test_peek_startup_lengths),
        cmocka_unit_test(test_peek_header_split_across_chains),
        cmocka_unit_test(test_peek_rejects_null_arguments),
        cmocka_unit_test(test_error_round_trip_in_field_order),
        cmocka_unit_test(test_notice_without_detail_or_hint),
        cmocka_unit_test(test_error_builder_rejects_bad_arguments),
        cmocka_unit_test(test_parameter_status_and_backend_key_round_trip),
        cmocka_unit_test(test_ready_round_trip),
        cmocka_unit_test(test_auth_round_trip),
        cmocka_unit_test(test_string_and_empty_messages_round_trip),
        cmocka_unit_test(test_sasl_messages_round_trip),
        cmocka_unit_test(test_startup_round_trip),
        cmocka_unit_test(test_startup_max_params),
        cmocka_unit_test(test_ssl_gssenc_cancel_requests),
        cmocka_unit_test(test_special_requests_with_wrong_length),
        cmocka_unit_test(test_row_description_and_data_row),
        cmocka_unit_test(test_build_message_generic),
        cmocka_unit_test(test_builder_out_of_memory_appends_nothing),
        cmocka_unit_test(test_startup_rejects_malformed),
        cmocka_unit_test(test_string_parsers_reject_malformed),
        cmocka_unit_test(test_ready_and_backend_key_reject_malformed),
        cmocka_unit_test(test_error_rejects_malformed),
        cmocka_unit_test(test_auth_rejects_malformed),
        cmocka_unit_test(test_parse_message),
        cmocka_unit_test(test_bind_with_null_params),
        cmocka_unit_test(test_bind_rejects_bad_lengths),
        cmocka_unit_test(test_describe_close_execute),
        cmocka_unit_test(test_sasl_initial_rejects_bad_lengths),
        cmocka_unit_test(test_back_to_back_messages_framed_one_by_one),
        cmocka_unit_test(test_stream_arriving_in_pieces),
        cmocka_unit_test(test_parsers_reject_null_arguments),
    };

    /* Before any libevent allocation, so every evbuffer uses it. */
    event_set_mem_functions(fail_malloc, fail_realloc, free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
