/*
 * libFuzzer target for the first bytes a client sends: the untyped startup
 * packet (StartupMessage, SSLRequest, GSSENCRequest or CancelRequest), framed
 * with both startup peeks and parsed, then whatever typed messages follow it
 * framed one by one as the daemon would. Checks that the two peeks agree,
 * that borrowed names and values lie inside the packet, that lookups find
 * every parsed name, and that a parsed packet rebuilds byte for byte.
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

/* PostgreSQL's own cap on a startup packet; also exercise ours without one. */
#define STARTUP_LIMIT 10000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, const uint8_t *body, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;

    CHECK(p >= body && p < body + len);
    CHECK(memchr(p, 0, (size_t)(body + len - p)) != NULL);
}

/* The builder for this kind of packet must reproduce body exactly. */
static void check_rebuilds(const weir_startup *s, const uint8_t *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    const uint8_t *flat;
    int rc;

    CHECK(b != NULL);
    if (s->kind == WEIR_STARTUP_CANCEL)
        rc = weir_proto_build_cancel(b, s->cancel_pid, s->cancel_key);
    else if (s->kind == WEIR_STARTUP_SSL)
        rc = weir_proto_build_ssl_request(b);
    else if (s->kind == WEIR_STARTUP_NORMAL && s->protocol == WEIR_PROTO_V3)
        rc = weir_proto_build_startup(b, s->names, s->values, s->nparams);
    else
        goto out; /* GSSENC and 3.x minors have no builder */
    CHECK(rc == 0);
    CHECK(evbuffer_get_length(b) == 4 + len);
    flat = evbuffer_pullup(b, -1);
    CHECK(memcmp(flat + 4, body, len) == 0);
out:
    evbuffer_free(b);
}

static void parse_packet(const uint8_t *packet, size_t body_len)
{
    uint8_t *body = malloc(body_len ? body_len : 1);
    weir_startup s;
    int rc;

    CHECK(body != NULL);
    memcpy(body, packet, body_len);
    rc = weir_proto_parse_startup(body_len ? body : NULL, body_len, &s);
    CHECK(rc == 0 || rc == WEIR_EPROTO);
    if (rc == 0) {
        CHECK(s.nparams >= 0 && s.nparams <= WEIR_PROTO_STARTUP_MAX_PARAMS);
        for (int i = 0; i < s.nparams; i++) {
            check_str(s.names[i], body, body_len);
            check_str(s.values[i], body, body_len);
            CHECK(s.names[i][0] != '\0');
            CHECK(weir_startup_param(&s, s.names[i]) != NULL);
        }
        check_rebuilds(&s, body, body_len);
    }
    free(body);
}

/* Flat and evbuffer peeks must give the same answer. */
static int peek_startup(const uint8_t *data, size_t size, size_t max_len, weir_frame *f)
{
    struct evbuffer *b = evbuffer_new();
    weir_frame g;
    int rc, rc2;

    CHECK(b != NULL);
    CHECK(evbuffer_add(b, data, size) == 0);
    rc = weir_proto_peek_startup_mem(data, size, max_len, f);
    rc2 = weir_proto_peek_startup(b, max_len, &g);
    CHECK(rc == rc2);
    CHECK(rc == 1 || rc == 0 || rc == WEIR_EPROTO || rc == WEIR_ETOOBIG);
    if (rc == 1) {
        CHECK(f->total == g.total && f->body_len == g.body_len && f->type == 0);
        CHECK(f->total <= size && f->body_off == 4 && f->total == 4 + f->body_len);
        CHECK(max_len == 0 || f->total <= max_len);
    }
    evbuffer_free(b);
    return rc;
}

/* After the packet come typed messages; frame them until one is incomplete. */
static void frame_rest(const uint8_t *p, size_t n)
{
    weir_frame f;
    int rc;

    while ((rc = weir_proto_peek_mem(p, n, STARTUP_LIMIT, &f)) == 1) {
        CHECK(f.total <= n && f.total >= 5);
        p += f.total;
        n -= f.total;
    }
    CHECK(rc == 0 || rc == WEIR_EPROTO || rc == WEIR_ETOOBIG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    weir_frame f;

    if (peek_startup(data, size, 0, &f) == 1) {
        weir_frame limited;
        int rc = peek_startup(data, size, STARTUP_LIMIT, &limited);

        CHECK(rc == (f.total <= STARTUP_LIMIT ? 1 : WEIR_ETOOBIG));
        parse_packet(data + f.body_off, f.body_len);
        frame_rest(data + f.total, size - f.total);
    }
    return 0;
}
