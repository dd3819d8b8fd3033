/*
 * Framing of PostgreSQL v3 messages: decide from the first few bytes of a
 * buffer whether a whole message is there, how long it is and where its body
 * starts, without consuming or copying the body. The length field is checked
 * as soon as it is readable, so an absurd length is refused before the caller
 * buffers megabytes waiting for a message that will never be valid. Works on
 * evbuffers (the daemon's data path) and on flat memory (fuzzers, embedders).
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>
#include <weir/proto.h>

#include "internal.h"

/* PostgreSQL refuses messages of 1 GiB and more (MaxAllocSize). */
#define PROTO_MAX_TOTAL ((size_t)0x40000000u)
#define STARTUP_HEADER_LEN 4
/* A startup packet carries at least its length and a protocol code. */
#define STARTUP_MIN_LEN 8
/* A typed message's length counts itself, so 4 is an empty body. */
#define TYPED_MIN_LEN 4

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/*
 * Shared by the four peek functions once the header is in hdr: the length
 * field is the big-endian int32 after the type byte (if any). PostgreSQL reads
 * it as signed, so a value with the top bit set is a bad length, not a big one.
 */
static int frame_from_header(const uint8_t *hdr, bool typed, size_t avail, size_t max_len,
                             weir_frame *f)
{
    size_t off = typed ? WEIR_PROTO_HEADER_LEN : STARTUP_HEADER_LEN;
    uint32_t len = load_be32(typed ? hdr + 1 : hdr);
    size_t limit = max_len != 0 && max_len < PROTO_MAX_TOTAL ? max_len : PROTO_MAX_TOTAL;
    size_t total;

    if (len > INT32_MAX || len < (typed ? TYPED_MIN_LEN : STARTUP_MIN_LEN))
        return WEIR_EPROTO;
    total = (size_t)len + (typed ? 1 : 0);
    if (total > limit)
        return WEIR_ETOOBIG;
    if (avail < total)
        return 0;
    f->type = typed ? (char)hdr[0] : 0;
    f->total = total;
    f->body_off = off;
    f->body_len = total - off;
    return 1;
}

static int peek_evbuffer(struct evbuffer *buf, bool typed, size_t max_len, weir_frame *f)
{
    uint8_t hdr[WEIR_PROTO_HEADER_LEN];
    size_t need = typed ? WEIR_PROTO_HEADER_LEN : STARTUP_HEADER_LEN;
    size_t avail;

    if (buf == NULL || f == NULL)
        return WEIR_EINVAL;
    avail = evbuffer_get_length(buf);
    if (avail < need)
        return 0;
    /* Copy only the header: the body may span chains and must stay there. */
    if (evbuffer_copyout(buf, hdr, need) != (ev_ssize_t)need)
        return 0;
    return frame_from_header(hdr, typed, avail, max_len, f);
}

static int peek_mem(const void *data, size_t len, bool typed, size_t max_len, weir_frame *f)
{
    size_t need = typed ? WEIR_PROTO_HEADER_LEN : STARTUP_HEADER_LEN;

    if ((data == NULL && len != 0) || f == NULL)
        return WEIR_EINVAL;
    if (len < need)
        return 0;
    return frame_from_header(data, typed, len, max_len, f);
}

int weir_proto_peek(struct evbuffer *buf, size_t max_len, weir_frame *f)
{
    return peek_evbuffer(buf, true, max_len, f);
}

int weir_proto_peek_startup(struct evbuffer *buf, size_t max_len, weir_frame *f)
{
    return peek_evbuffer(buf, false, max_len, f);
}

int weir_proto_peek_mem(const void *data, size_t len, size_t max_len, weir_frame *f)
{
    return peek_mem(data, len, true, max_len, f);
}

int weir_proto_peek_startup_mem(const void *data, size_t len, size_t max_len, weir_frame *f)
{
    return peek_mem(data, len, false, max_len, f);
}
