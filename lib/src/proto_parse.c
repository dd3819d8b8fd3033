/*
 * Parsers for the PostgreSQL v3 messages a pooler must look into. Each takes
 * one message body exactly as framed and either accepts all of it or returns
 * WEIR_EPROTO: every count and length is checked against the bytes left,
 * every string must end with a NUL inside the body, and bytes left over after
 * the last expected field are an error too, because a peer that disagrees
 * with us about where a message ends would desynchronise the stream. Results
 * borrow from the body (zero-copy); nothing is allocated.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <weir/proto.h>

#include "internal.h"

/* A cursor over one body. Reads past the end fail instead of moving on. */
typedef struct reader {
    const uint8_t *p;
    size_t len;
    size_t off;
} reader;

static reader rd_init(const void *body, size_t len)
{
    reader r = { body, len, 0 };
    return r;
}

static size_t rd_left(const reader *r)
{
    return r->len - r->off;
}

static bool rd_u8(reader *r, uint8_t *v)
{
    if (rd_left(r) < 1)
        return false;
    *v = r->p[r->off++];
    return true;
}

static bool rd_u16(reader *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return false;
    *v = (uint16_t)(r->p[r->off] << 8 | r->p[r->off + 1]);
    r->off += 2;
    return true;
}

static bool rd_u32(reader *r, uint32_t *v)
{
    const uint8_t *q;

    if (rd_left(r) < 4)
        return false;
    q = r->p + r->off;
    *v = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | (uint32_t)q[3];
    r->off += 4;
    return true;
}

/* Signed int32 without relying on implementation-defined conversion. */
static bool rd_i32(reader *r, int32_t *v)
{
    uint32_t u;

    if (!rd_u32(r, &u))
        return false;
    *v = u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
    return true;
}

/* Borrow n raw bytes. */
static bool rd_bytes(reader *r, size_t n, const uint8_t **v)
{
    if (rd_left(r) < n)
        return false;
    *v = r->p + r->off;
    r->off += n;
    return true;
}

/* Borrow a string; its NUL must lie inside the body. */
static bool rd_str(reader *r, const char **v)
{
    const uint8_t *nul;

    if (rd_left(r) == 0)
        return false;
    nul = memchr(r->p + r->off, 0, rd_left(r));
    if (nul == NULL)
        return false;
    *v = (const char *)(r->p + r->off);
    r->off = (size_t)(nul - r->p) + 1;
    return true;
}

/* A length-prefixed value: -1 is SQL NULL, other negatives are bad. */
static bool rd_value(reader *r, const uint8_t **data, int32_t *n)
{
    if (!rd_i32(r, n) || *n < -1)
        return false;
    if (*n == -1) {
        *data = NULL;
        return true;
    }
    return rd_bytes(r, (size_t)*n, data);
}

static bool rd_done(const reader *r)
{
    return r->off == r->len;
}

static bool body_ok(const void *body, size_t len)
{
    return body != NULL || len == 0;
}

/* ---- startup ---- */

static int parse_startup_params(reader *r, weir_startup *out)
{
    const char *name, *value;

    for (;;) {
        if (!rd_str(r, &name))
            return WEIR_EPROTO;
        if (name[0] == '\0')
            return rd_done(r) ? 0 : WEIR_EPROTO;
        if (out->nparams == WEIR_PROTO_STARTUP_MAX_PARAMS || !rd_str(r, &value))
            return WEIR_EPROTO;
        out->names[out->nparams] = name;
        out->values[out->nparams] = value;
        out->nparams++;
    }
}

/* The special request codes are fixed-size packets with no parameters. */
static int parse_startup_request(reader *r, weir_startup *out)
{
    switch (out->protocol) {
    case WEIR_PROTO_SSL_REQUEST:
        out->kind = WEIR_STARTUP_SSL;
        break;
    case WEIR_PROTO_GSSENC_REQUEST:
        out->kind = WEIR_STARTUP_GSSENC;
        break;
    case WEIR_PROTO_CANCEL_REQUEST:
        out->kind = WEIR_STARTUP_CANCEL;
        if (!rd_u32(r, &out->cancel_pid) || !rd_u32(r, &out->cancel_key))
            return WEIR_EPROTO;
        break;
    default:
        return WEIR_EPROTO;
    }
    return rd_done(r) ? 0 : WEIR_EPROTO;
}

int weir_proto_parse_startup(const void *body, size_t len, weir_startup *out)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || out == NULL)
        return WEIR_EINVAL;
    memset(out, 0, sizeof(*out));
    if (!rd_u32(&r, &out->protocol))
        return WEIR_EPROTO;
    if (out->protocol >> 16 == WEIR_PROTO_V3 >> 16) {
        out->kind = WEIR_STARTUP_NORMAL;
        return parse_startup_params(&r, out);
    }
    return parse_startup_request(&r, out);
}

const char *weir_startup_param(const weir_startup *s, const char *name)
{
    if (s == NULL || name == NULL)
        return NULL;
    for (int i = 0; i < s->nparams && i < WEIR_PROTO_STARTUP_MAX_PARAMS; i++) {
        if (strcmp(s->names[i], name) == 0)
            return s->values[i];
    }
    return NULL;
}

/* ---- messages from the server ---- */

static void error_field_set(weir_error_fields *out, uint8_t code, const char *value)
{
    switch (code) {
    case 'S': out->severity = value; break;
    case 'V': out->severity_v = value; break;
    case 'C': out->sqlstate = value; break;
    case 'M': out->message = value; break;
    case 'D': out->detail = value; break;
    case 'H': out->hint = value; break;
    default: break; /* other fields are allowed and not needed here */
    }
}

int weir_proto_parse_error(const void *body, size_t len, weir_error_fields *out)
{
    reader r = rd_init(body, len);
    uint8_t code;
    const char *value;

    if (!body_ok(body, len) || out == NULL)
        return WEIR_EINVAL;
    memset(out, 0, sizeof(*out));
    for (;;) {
        if (!rd_u8(&r, &code))
            return WEIR_EPROTO;
        if (code == 0)
            return rd_done(&r) ? 0 : WEIR_EPROTO;
        if (!rd_str(&r, &value))
            return WEIR_EPROTO;
        error_field_set(out, code, value);
    }
}

int weir_proto_login_refusal_lasts(const char *sqlstate)
{
    /* A class (two characters) or one code each. */
    static const char *const passing[] = {"53", "08000", "08001", "08003", "08004", "08006",
                                          "57P01", "57P02", "57P03"};

    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return 0;
    for (size_t i = 0; i < sizeof(passing) / sizeof(passing[0]); i++)
        if (strncmp(sqlstate, passing[i], strlen(passing[i])) == 0)
            return 0;
    return 1;
}

int weir_proto_parse_parameter_status(const void *body, size_t len, const char **name,
                                      const char **value)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || name == NULL || value == NULL)
        return WEIR_EINVAL;
    if (!rd_str(&r, name) || !rd_str(&r, value) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}

int weir_proto_parse_ready(const void *body, size_t len, char *status)
{
    const uint8_t *p = body;

    if (!body_ok(body, len) || status == NULL)
        return WEIR_EINVAL;
    if (len != 1 || (p[0] != 'I' && p[0] != 'T' && p[0] != 'E'))
        return WEIR_EPROTO;
    *status = (char)p[0];
    return 0;
}

int weir_proto_parse_backend_key(const void *body, size_t len, uint32_t *pid, uint32_t *key)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || pid == NULL || key == NULL)
        return WEIR_EINVAL;
    if (!rd_u32(&r, pid) || !rd_u32(&r, key) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}

/* AuthenticationSASL: mechanism names, then an empty one. */
static bool sasl_list_ok(reader *r)
{
    const char *mech;
    int n = 0;

    for (;;) {
        if (!rd_str(r, &mech))
            return false;
        if (mech[0] == '\0')
            return n > 0 && rd_done(r);
        n++;
    }
}

/* Codes whose payload has a known shape are checked; others pass through. */
static bool auth_payload_ok(uint32_t code, reader *r)
{
    switch (code) {
    case WEIR_AUTH_OK:
    case WEIR_AUTH_CLEARTEXT:
        return rd_done(r);
    case WEIR_AUTH_MD5:
        return rd_left(r) == 4;
    case WEIR_AUTH_SASL:
        return sasl_list_ok(r);
    default:
        return true;
    }
}

int weir_proto_parse_auth(const void *body, size_t len, uint32_t *code, const uint8_t **data,
                          size_t *data_len)
{
    reader r = rd_init(body, len);
    reader payload;

    if (!body_ok(body, len) || code == NULL || data == NULL || data_len == NULL)
        return WEIR_EINVAL;
    if (!rd_u32(&r, code))
        return WEIR_EPROTO;
    payload = r;
    if (!auth_payload_ok(*code, &payload))
        return WEIR_EPROTO;
    *data = r.p + r.off;
    *data_len = rd_left(&r);
    return 0;
}

/* ---- messages from the client ---- */

int weir_proto_parse_string(const void *body, size_t len, const char **str)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || str == NULL)
        return WEIR_EINVAL;
    if (!rd_str(&r, str) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}

int weir_proto_parse_parse(const void *body, size_t len, weir_parse_msg *out)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || out == NULL)
        return WEIR_EINVAL;
    if (!rd_str(&r, &out->name) || !rd_str(&r, &out->query) || !rd_u16(&r, &out->nparam_types))
        return WEIR_EPROTO;
    if (!rd_bytes(&r, (size_t)out->nparam_types * 4, &out->param_types) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}

/* A list of n int16 format codes. Their values are the server's to judge. */
static bool bind_formats_ok(reader *r, uint16_t *n)
{
    const uint8_t *codes;

    return rd_u16(r, n) && rd_bytes(r, (size_t)*n * 2, &codes);
}

static bool bind_params_ok(reader *r, uint16_t *n)
{
    const uint8_t *data;
    int32_t vlen;

    if (!rd_u16(r, n))
        return false;
    for (uint16_t i = 0; i < *n; i++) {
        if (!rd_value(r, &data, &vlen))
            return false;
    }
    return true;
}

int weir_proto_parse_bind(const void *body, size_t len, weir_bind_msg *out)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || out == NULL)
        return WEIR_EINVAL;
    if (!rd_str(&r, &out->portal) || !rd_str(&r, &out->statement))
        return WEIR_EPROTO;
    out->rest_off = r.off;
    if (!bind_formats_ok(&r, &out->nformats) || !bind_params_ok(&r, &out->nparams))
        return WEIR_EPROTO;
    if (!bind_formats_ok(&r, &out->nresult_formats) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}

int weir_proto_parse_target(const void *body, size_t len, char *kind, const char **name)
{
    reader r = rd_init(body, len);
    uint8_t k;

    if (!body_ok(body, len) || kind == NULL || name == NULL)
        return WEIR_EINVAL;
    if (!rd_u8(&r, &k) || (k != 'S' && k != 'P'))
        return WEIR_EPROTO;
    if (!rd_str(&r, name) || !rd_done(&r))
        return WEIR_EPROTO;
    *kind = (char)k;
    return 0;
}

int weir_proto_parse_execute(const void *body, size_t len, const char **portal, uint32_t *max_rows)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || portal == NULL || max_rows == NULL)
        return WEIR_EINVAL;
    if (!rd_str(&r, portal) || !rd_u32(&r, max_rows) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}

int weir_proto_parse_sasl_initial(const void *body, size_t len, const char **mechanism,
                                  const uint8_t **data, int32_t *data_len)
{
    reader r = rd_init(body, len);

    if (!body_ok(body, len) || mechanism == NULL || data == NULL || data_len == NULL)
        return WEIR_EINVAL;
    if (!rd_str(&r, mechanism) || !rd_value(&r, data, data_len) || !rd_done(&r))
        return WEIR_EPROTO;
    return 0;
}
