/*
 * Proto: the PostgreSQL v3 wire protocol as a pooler needs it. Framing of
 * messages (type byte + 32-bit length, or the untyped startup packet) on
 * libevent evbuffers, builders for every message weir writes itself, and
 * parsers for the messages a pooler must look into. Nothing here trusts a
 * length: every read is bounds-checked and a bad length is an error code.
 *
 * Parsers work on one message body (the bytes after the length field) held
 * contiguously by the caller, and return structs whose strings point into
 * that body (borrowed, zero-copy): keep the body alive while you use them.
 * Builders append one complete message to an evbuffer and return 0,
 * WEIR_ENOMEM or WEIR_EINVAL.
 */
#ifndef WEIR_PROTO_H
#define WEIR_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <weir/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct evbuffer;

#define WEIR_PROTO_V3 196608u               /* 3 << 16 */
#define WEIR_PROTO_SSL_REQUEST 80877103u
#define WEIR_PROTO_GSSENC_REQUEST 80877104u
#define WEIR_PROTO_CANCEL_REQUEST 80877102u
#define WEIR_PROTO_STARTUP_MAX_PARAMS 64
#define WEIR_PROTO_HEADER_LEN 5             /* type + length */

/* Authentication request codes ('R' messages). */
enum weir_auth_code {
    WEIR_AUTH_OK = 0,
    WEIR_AUTH_CLEARTEXT = 3,
    WEIR_AUTH_MD5 = 5,
    WEIR_AUTH_SASL = 10,
    WEIR_AUTH_SASL_CONTINUE = 11,
    WEIR_AUTH_SASL_FINAL = 12,
};

/* One framed message found at the head of a buffer. */
typedef struct weir_frame {
    char type;        /* message type byte; 0 for a startup packet */
    size_t total;     /* bytes the whole message occupies in the buffer */
    size_t body_len;  /* bytes after the length field */
    size_t body_off;  /* offset of the body from the message start (5 or 4) */
} weir_frame;

/*
 * Look at the head of buf without consuming anything. Returns 1 and fills f
 * when a whole message is buffered, 0 when more bytes are needed,
 * WEIR_EPROTO for a length below the minimum, WEIR_ETOOBIG for a message
 * longer than max_len bytes (0 = no limit beyond the protocol's 1 GiB).
 */
WEIR_API int weir_proto_peek(struct evbuffer *buf, size_t max_len, weir_frame *f);
/* The same for the untyped startup packet (length, then body). */
WEIR_API int weir_proto_peek_startup(struct evbuffer *buf, size_t max_len, weir_frame *f);
/* The same two over flat memory (for callers without an evbuffer, fuzzers). */
WEIR_API int weir_proto_peek_mem(const void *data, size_t len, size_t max_len, weir_frame *f);
WEIR_API int weir_proto_peek_startup_mem(const void *data, size_t len, size_t max_len, weir_frame *f);

/* ---- parsers: body points at the bytes after the length field ---- */

typedef enum weir_startup_kind {
    WEIR_STARTUP_NORMAL = 0,   /* StartupMessage with parameters */
    WEIR_STARTUP_SSL = 1,      /* SSLRequest */
    WEIR_STARTUP_GSSENC = 2,   /* GSSENCRequest */
    WEIR_STARTUP_CANCEL = 3,   /* CancelRequest */
} weir_startup_kind;

typedef struct weir_startup {
    weir_startup_kind kind;
    uint32_t protocol;                   /* as sent (major << 16 | minor) */
    uint32_t cancel_pid, cancel_key;     /* CancelRequest only */
    int nparams;
    const char *names[WEIR_PROTO_STARTUP_MAX_PARAMS];
    const char *values[WEIR_PROTO_STARTUP_MAX_PARAMS];
} weir_startup;

/* Parses any packet that may open a connection. A StartupMessage must be
 * protocol 3.x with NUL-terminated name/value pairs and a final NUL;
 * other major versions and too many parameters give WEIR_EPROTO. */
WEIR_API int weir_proto_parse_startup(const void *body, size_t len, weir_startup *out);
/* Value of a startup parameter, or NULL. */
WEIR_API const char *weir_startup_param(const weir_startup *s, const char *name);

/* ErrorResponse / NoticeResponse fields; absent fields are NULL. */
typedef struct weir_error_fields {
    const char *severity;   /* 'S', localized */
    const char *severity_v; /* 'V', never localized */
    const char *sqlstate;   /* 'C' */
    const char *message;    /* 'M' */
    const char *detail;     /* 'D' */
    const char *hint;       /* 'H' */
} weir_error_fields;
WEIR_API int weir_proto_parse_error(const void *body, size_t len, weir_error_fields *out);

/*
 * A server refused a login with this SQLSTATE (five characters): will a
 * retry in a while most likely fail the same way? 1 for authentication,
 * unknown database or role, missing permission, a protocol violation and the
 * like; 0 for the passing refusals of a server starting, stopping or full
 * (class 53 such as too_many_connections; 57P01-57P03 admin_shutdown,
 * crash_shutdown, cannot_connect_now; 08000, 08001, 08003, 08004, 08006)
 * and for NULL.
 */
WEIR_API int weir_proto_login_refusal_lasts(const char *sqlstate);

WEIR_API int weir_proto_parse_parameter_status(const void *body, size_t len,
                                               const char **name, const char **value);
/* ReadyForQuery: status is 'I', 'T' or 'E'; anything else is WEIR_EPROTO. */
WEIR_API int weir_proto_parse_ready(const void *body, size_t len, char *status);
WEIR_API int weir_proto_parse_backend_key(const void *body, size_t len, uint32_t *pid, uint32_t *key);
/* Authentication request: code, and the bytes after it (borrowed). */
WEIR_API int weir_proto_parse_auth(const void *body, size_t len, uint32_t *code,
                                   const uint8_t **data, size_t *data_len);
/* A body that is exactly one NUL-terminated string: Query, CommandComplete,
 * PasswordMessage (cleartext/md5). */
WEIR_API int weir_proto_parse_string(const void *body, size_t len, const char **str);

typedef struct weir_parse_msg {
    const char *name;        /* "" = unnamed statement */
    const char *query;
    uint16_t nparam_types;
    const uint8_t *param_types; /* nparam_types big-endian OIDs, borrowed */
} weir_parse_msg;
WEIR_API int weir_proto_parse_parse(const void *body, size_t len, weir_parse_msg *out);

typedef struct weir_bind_msg {
    const char *portal;
    const char *statement;
    size_t rest_off;         /* offset in body where the part after the names starts */
    uint16_t nformats, nparams, nresult_formats;
} weir_bind_msg;
/* Validates the whole Bind message, including every parameter length. */
WEIR_API int weir_proto_parse_bind(const void *body, size_t len, weir_bind_msg *out);

/* Describe and Close: kind 'S' (statement) or 'P' (portal), and the name. */
WEIR_API int weir_proto_parse_target(const void *body, size_t len, char *kind, const char **name);
WEIR_API int weir_proto_parse_execute(const void *body, size_t len, const char **portal,
                                      uint32_t *max_rows);
/* SASLInitialResponse: mechanism and initial data (data_len -1 means none). */
WEIR_API int weir_proto_parse_sasl_initial(const void *body, size_t len, const char **mechanism,
                                           const uint8_t **data, int32_t *data_len);

/* ---- builders: append one whole message to out ---- */

WEIR_API int weir_proto_build_message(struct evbuffer *out, char type, const void *body, size_t len);
/* severity "ERROR"/"FATAL"/...; detail and hint may be NULL. */
WEIR_API int weir_proto_build_error(struct evbuffer *out, const char *severity, const char *sqlstate,
                                    const char *message, const char *detail, const char *hint);
WEIR_API int weir_proto_build_notice(struct evbuffer *out, const char *severity, const char *sqlstate,
                                     const char *message, const char *detail, const char *hint);
WEIR_API int weir_proto_build_parameter_status(struct evbuffer *out, const char *name, const char *value);
WEIR_API int weir_proto_build_backend_key(struct evbuffer *out, uint32_t pid, uint32_t key);
WEIR_API int weir_proto_build_ready(struct evbuffer *out, char status);
/* Authentication request with a code and optional payload. */
WEIR_API int weir_proto_build_auth(struct evbuffer *out, uint32_t code, const void *data, size_t len);
WEIR_API int weir_proto_build_auth_md5(struct evbuffer *out, const uint8_t salt[4]);
/* AuthenticationSASL listing mechanisms (NULL-terminated array). */
WEIR_API int weir_proto_build_auth_sasl(struct evbuffer *out, const char *const *mechanisms);
WEIR_API int weir_proto_build_query(struct evbuffer *out, const char *sql);
WEIR_API int weir_proto_build_terminate(struct evbuffer *out);
WEIR_API int weir_proto_build_sync(struct evbuffer *out);
WEIR_API int weir_proto_build_password(struct evbuffer *out, const char *password);
WEIR_API int weir_proto_build_sasl_initial(struct evbuffer *out, const char *mechanism,
                                           const void *data, size_t len);
WEIR_API int weir_proto_build_sasl_response(struct evbuffer *out, const void *data, size_t len);
/* StartupMessage v3 with n name/value pairs. */
WEIR_API int weir_proto_build_startup(struct evbuffer *out, const char *const *names,
                                      const char *const *values, int n);
WEIR_API int weir_proto_build_ssl_request(struct evbuffer *out);
WEIR_API int weir_proto_build_cancel(struct evbuffer *out, uint32_t pid, uint32_t key);
/* RowDescription of ncols text columns (type_oids NULL means all "text"). */
WEIR_API int weir_proto_build_row_description(struct evbuffer *out, int ncols,
                                              const char *const *names, const uint32_t *type_oids);
/* DataRow in text format; a NULL value is SQL NULL. */
WEIR_API int weir_proto_build_data_row(struct evbuffer *out, int ncols, const char *const *values);
WEIR_API int weir_proto_build_command_complete(struct evbuffer *out, const char *tag);
WEIR_API int weir_proto_build_empty_query(struct evbuffer *out);

#ifdef __cplusplus
}
#endif

#endif
