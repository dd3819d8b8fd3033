/*
 * Builders for the PostgreSQL v3 messages weir writes itself: errors and
 * notices, the handshake (authentication requests, ParameterStatus,
 * BackendKeyData, ReadyForQuery), the client side of startup, and the simple
 * result set the admin console returns. Each builder computes the message
 * length first, reserves that much contiguous space at the end of the output
 * evbuffer in one step and commits it only once fully written: a message is
 * appended whole or not at all, so an allocation failure can never leave half
 * a message in a stream that the peer would then misframe.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>
#include <weir/proto.h>

#include "internal.h"

/* Keep what we build within what weir_proto_peek() accepts. */
#define PROTO_MAX_TOTAL ((size_t)0x40000000u)
/* Counts in RowDescription and DataRow are int16. */
#define MAX_COLUMNS 32767
#define TEXT_OID 25u

/* ---- lengths ---- */

/* Adds n to *acc unless that passes the protocol's limit. */
static bool len_add(size_t *acc, size_t n)
{
    if (n > PROTO_MAX_TOTAL || *acc > PROTO_MAX_TOTAL - n)
        return false;
    *acc += n;
    return true;
}

/* A string field with its NUL; NULL is never a valid string field. */
static bool len_str(size_t *acc, const char *s)
{
    return s != NULL && len_add(acc, strlen(s) + 1);
}

/* ---- writing into reserved space ---- */

typedef struct writer {
    struct evbuffer *out;
    struct evbuffer_iovec v;
    uint8_t *p;
    size_t off, total;
    bool overrun; /* a length miscount; the message is then dropped */
} writer;

static void put_bytes(writer *w, const void *data, size_t n)
{
    if (w->overrun || n > w->total - w->off) {
        w->overrun = true;
        return;
    }
    if (n != 0)
        memcpy(w->p + w->off, data, n);
    w->off += n;
}

static void put_u8(writer *w, uint8_t v)
{
    put_bytes(w, &v, 1);
}

static void put_u16(writer *w, uint16_t v)
{
    uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };

    put_bytes(w, b, sizeof(b));
}

static void put_u32(writer *w, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

    put_bytes(w, b, sizeof(b));
}

/* Two's complement on the wire, whatever the host's signed conversions do. */
static void put_i32(writer *w, int32_t v)
{
    put_u32(w, (uint32_t)v);
}

static void put_str(writer *w, const char *s)
{
    put_bytes(w, s, strlen(s) + 1);
}

/* Reserves the whole message and writes its header; type 0 is a startup
 * packet, which has no type byte. */
static int wr_begin(writer *w, struct evbuffer *out, char type, size_t body_len)
{
    size_t hdr = type != 0 ? WEIR_PROTO_HEADER_LEN : 4;

    if (out == NULL)
        return WEIR_EINVAL;
    if (body_len > PROTO_MAX_TOTAL - hdr)
        return WEIR_EINVAL;
    memset(w, 0, sizeof(*w));
    w->out = out;
    w->total = hdr + body_len;
    if (evbuffer_reserve_space(out, (ev_ssize_t)w->total, &w->v, 1) != 1)
        return WEIR_ENOMEM;
    w->p = w->v.iov_base;
    if (type != 0)
        put_u8(w, (uint8_t)type);
    put_u32(w, (uint32_t)(body_len + 4));
    return 0;
}

/* Commits what wr_begin reserved; an uncommitted reservation is discarded. */
static int wr_end(writer *w)
{
    if (w->overrun || w->off != w->total)
        return WEIR_EINVAL;
    w->v.iov_len = w->total;
    return evbuffer_commit_space(w->out, &w->v, 1) == 0 ? 0 : WEIR_ENOMEM;
}

/* ---- generic ---- */

int weir_proto_build_message(struct evbuffer *out, char type, const void *body, size_t len)
{
    writer w;
    int rc;

    if (type == 0 || (body == NULL && len != 0))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, type, len)) != 0)
        return rc;
    put_bytes(&w, body, len);
    return wr_end(&w);
}

/* One message whose body is a single string (Query, CommandComplete...). */
static int build_string(struct evbuffer *out, char type, const char *s)
{
    size_t len = 0;
    writer w;
    int rc;

    if (!len_str(&len, s))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, type, len)) != 0)
        return rc;
    put_str(&w, s);
    return wr_end(&w);
}

static int build_empty(struct evbuffer *out, char type)
{
    return weir_proto_build_message(out, type, NULL, 0);
}

/* ---- errors and notices ---- */

typedef struct error_args {
    const char *severity, *sqlstate, *message, *detail, *hint;
} error_args;

/* Each field is a code byte and a string; the list ends with a NUL byte. */
static bool field_len(size_t *len, const char *value)
{
    return value == NULL || (len_add(len, 1) && len_str(len, value));
}

static bool error_len(const error_args *a, size_t *len)
{
    if (strlen(a->sqlstate) != 5)
        return false;
    return field_len(len, a->severity) && field_len(len, a->severity) &&
           field_len(len, a->sqlstate) && field_len(len, a->message) &&
           field_len(len, a->detail) && field_len(len, a->hint) && len_add(len, 1);
}

static void put_field(writer *w, char code, const char *value)
{
    if (value == NULL)
        return;
    put_u8(w, (uint8_t)code);
    put_str(w, value);
}

static int build_fields(struct evbuffer *out, char type, const error_args *a)
{
    size_t len = 0;
    writer w;
    int rc;

    if (a->severity == NULL || a->sqlstate == NULL || a->message == NULL || !error_len(a, &len))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, type, len)) != 0)
        return rc;
    put_field(&w, 'S', a->severity);
    put_field(&w, 'V', a->severity); /* weir's severities are never localized */
    put_field(&w, 'C', a->sqlstate);
    put_field(&w, 'M', a->message);
    put_field(&w, 'D', a->detail);
    put_field(&w, 'H', a->hint);
    put_u8(&w, 0);
    return wr_end(&w);
}

int weir_proto_build_error(struct evbuffer *out, const char *severity, const char *sqlstate,
                           const char *message, const char *detail, const char *hint)
{
    error_args a = { severity, sqlstate, message, detail, hint };

    return build_fields(out, 'E', &a);
}

int weir_proto_build_notice(struct evbuffer *out, const char *severity, const char *sqlstate,
                            const char *message, const char *detail, const char *hint)
{
    error_args a = { severity, sqlstate, message, detail, hint };

    return build_fields(out, 'N', &a);
}

/* ---- handshake, server side ---- */

int weir_proto_build_parameter_status(struct evbuffer *out, const char *name, const char *value)
{
    size_t len = 0;
    writer w;
    int rc;

    if (!len_str(&len, name) || !len_str(&len, value))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, 'S', len)) != 0)
        return rc;
    put_str(&w, name);
    put_str(&w, value);
    return wr_end(&w);
}

int weir_proto_build_backend_key(struct evbuffer *out, uint32_t pid, uint32_t key)
{
    writer w;
    int rc;

    if ((rc = wr_begin(&w, out, 'K', 8)) != 0)
        return rc;
    put_u32(&w, pid);
    put_u32(&w, key);
    return wr_end(&w);
}

int weir_proto_build_ready(struct evbuffer *out, char status)
{
    if (status != 'I' && status != 'T' && status != 'E')
        return WEIR_EINVAL;
    return weir_proto_build_message(out, 'Z', &status, 1);
}

int weir_proto_build_auth(struct evbuffer *out, uint32_t code, const void *data, size_t len)
{
    writer w;
    int rc;

    if (data == NULL && len != 0)
        return WEIR_EINVAL;
    if (len > PROTO_MAX_TOTAL - 4)
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, 'R', 4 + len)) != 0)
        return rc;
    put_u32(&w, code);
    put_bytes(&w, data, len);
    return wr_end(&w);
}

int weir_proto_build_auth_md5(struct evbuffer *out, const uint8_t salt[4])
{
    if (salt == NULL)
        return WEIR_EINVAL;
    return weir_proto_build_auth(out, WEIR_AUTH_MD5, salt, 4);
}

/* An empty name would end the list early, so it is refused. */
static bool sasl_list_len(const char *const *mechanisms, size_t *len)
{
    if (mechanisms == NULL || mechanisms[0] == NULL)
        return false;
    for (size_t i = 0; mechanisms[i] != NULL; i++) {
        if (mechanisms[i][0] == '\0' || !len_str(len, mechanisms[i]))
            return false;
    }
    return len_add(len, 1);
}

int weir_proto_build_auth_sasl(struct evbuffer *out, const char *const *mechanisms)
{
    size_t len = 4;
    writer w;
    int rc;

    if (!sasl_list_len(mechanisms, &len))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, 'R', len)) != 0)
        return rc;
    put_u32(&w, WEIR_AUTH_SASL);
    for (size_t i = 0; mechanisms[i] != NULL; i++)
        put_str(&w, mechanisms[i]);
    put_u8(&w, 0);
    return wr_end(&w);
}

/* ---- client side ---- */

int weir_proto_build_query(struct evbuffer *out, const char *sql)
{
    return build_string(out, 'Q', sql);
}

int weir_proto_build_terminate(struct evbuffer *out)
{
    return build_empty(out, 'X');
}

int weir_proto_build_sync(struct evbuffer *out)
{
    return build_empty(out, 'S');
}

int weir_proto_build_password(struct evbuffer *out, const char *password)
{
    return build_string(out, 'p', password);
}

/* data NULL sends length -1: the client has no initial response. */
int weir_proto_build_sasl_initial(struct evbuffer *out, const char *mechanism, const void *data,
                                  size_t len)
{
    size_t body = 4;
    writer w;
    int rc;

    if (data == NULL && len != 0)
        return WEIR_EINVAL;
    if (mechanism == NULL || mechanism[0] == '\0' || !len_str(&body, mechanism) ||
        !len_add(&body, len))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, 'p', body)) != 0)
        return rc;
    put_str(&w, mechanism);
    put_i32(&w, data != NULL ? (int32_t)len : -1);
    put_bytes(&w, data, len);
    return wr_end(&w);
}

int weir_proto_build_sasl_response(struct evbuffer *out, const void *data, size_t len)
{
    return weir_proto_build_message(out, 'p', data, len);
}

static bool startup_len(const char *const *names, const char *const *values, int n, size_t *len)
{
    if (n < 0 || n > WEIR_PROTO_STARTUP_MAX_PARAMS || (n > 0 && (names == NULL || values == NULL)))
        return false;
    for (int i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0')
            return false;
        if (!len_str(len, names[i]) || !len_str(len, values[i]))
            return false;
    }
    return len_add(len, 1);
}

int weir_proto_build_startup(struct evbuffer *out, const char *const *names,
                             const char *const *values, int n)
{
    size_t len = 4;
    writer w;
    int rc;

    if (!startup_len(names, values, n, &len))
        return WEIR_EINVAL;
    if ((rc = wr_begin(&w, out, 0, len)) != 0)
        return rc;
    put_u32(&w, WEIR_PROTO_V3);
    for (int i = 0; i < n; i++) {
        put_str(&w, names[i]);
        put_str(&w, values[i]);
    }
    put_u8(&w, 0);
    return wr_end(&w);
}

int weir_proto_build_ssl_request(struct evbuffer *out)
{
    writer w;
    int rc;

    if ((rc = wr_begin(&w, out, 0, 4)) != 0)
        return rc;
    put_u32(&w, WEIR_PROTO_SSL_REQUEST);
    return wr_end(&w);
}

int weir_proto_build_cancel(struct evbuffer *out, uint32_t pid, uint32_t key)
{
    writer w;
    int rc;

    if ((rc = wr_begin(&w, out, 0, 12)) != 0)
        return rc;
    put_u32(&w, WEIR_PROTO_CANCEL_REQUEST);
    put_u32(&w, pid);
    put_u32(&w, key);
    return wr_end(&w);
}

/* ---- result sets ---- */

/* Few clients look at typlen, but reporting it right for the fixed-size
 * types costs nothing and keeps drivers that do check it quiet. */
static int16_t type_len(uint32_t oid)
{
    switch (oid) {
    case 16: return 1;  /* bool */
    case 20: return 8;  /* int8 */
    case 21: return 2;  /* int2 */
    case 23: return 4;  /* int4 */
    case 26: return 4;  /* oid */
    case 700: return 4; /* float4 */
    case 701: return 8; /* float8 */
    default: return -1; /* variable length */
    }
}

/* Per column: name, table oid, attnum, type oid, typlen, typmod, format. */
#define COLUMN_FIXED_LEN (4 + 2 + 4 + 2 + 4 + 2)

int weir_proto_build_row_description(struct evbuffer *out, int ncols, const char *const *names,
                                     const uint32_t *type_oids)
{
    size_t len = 2;
    writer w;
    int rc;

    if (ncols < 0 || ncols > MAX_COLUMNS || (ncols > 0 && names == NULL))
        return WEIR_EINVAL;
    for (int i = 0; i < ncols; i++) {
        if (!len_str(&len, names[i]) || !len_add(&len, COLUMN_FIXED_LEN))
            return WEIR_EINVAL;
    }
    if ((rc = wr_begin(&w, out, 'T', len)) != 0)
        return rc;
    put_u16(&w, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        uint32_t oid = type_oids != NULL ? type_oids[i] : TEXT_OID;

        put_str(&w, names[i]);
        put_u32(&w, 0);                        /* not a table column */
        put_u16(&w, 0);
        put_u32(&w, oid);
        put_u16(&w, (uint16_t)type_len(oid));
        put_i32(&w, -1);                       /* no typmod */
        put_u16(&w, 0);                        /* text format */
    }
    return wr_end(&w);
}

int weir_proto_build_data_row(struct evbuffer *out, int ncols, const char *const *values)
{
    size_t len = 2;
    writer w;
    int rc;

    if (ncols < 0 || ncols > MAX_COLUMNS || (ncols > 0 && values == NULL))
        return WEIR_EINVAL;
    for (int i = 0; i < ncols; i++) {
        if (!len_add(&len, 4) || (values[i] != NULL && !len_add(&len, strlen(values[i]))))
            return WEIR_EINVAL;
    }
    if ((rc = wr_begin(&w, out, 'D', len)) != 0)
        return rc;
    put_u16(&w, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        if (values[i] == NULL) {
            put_i32(&w, -1);
            continue;
        }
        put_i32(&w, (int32_t)strlen(values[i]));
        put_bytes(&w, values[i], strlen(values[i]));
    }
    return wr_end(&w);
}

int weir_proto_build_command_complete(struct evbuffer *out, const char *tag)
{
    return build_string(out, 'C', tag);
}

int weir_proto_build_empty_query(struct evbuffer *out)
{
    return build_empty(out, 'I');
}
