/*
 * Definitions every libweir header shares: the export macro, error codes,
 * log levels and the log callback type. Included by each layer's header;
 * embedders normally include <weir/weir.h> instead.
 */
#ifndef WEIR_COMMON_H
#define WEIR_COMMON_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEIR_VERSION_MAJOR 0
#define WEIR_VERSION_MINOR 1
#define WEIR_VERSION_PATCH 0
#define WEIR_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define WEIR_API __attribute__((visibility("default")))
#define WEIR_MUST_CHECK __attribute__((warn_unused_result))
#else
#define WEIR_API
#define WEIR_MUST_CHECK
#endif

/* Error codes: every fallible call returns 0 or one of these (negative). */
enum weir_error {
    WEIR_OK = 0,
    WEIR_ENOMEM = -1,      /* out of memory */
    WEIR_EINVAL = -2,      /* invalid argument or malformed input */
    WEIR_ETIMEDOUT = -3,   /* a deadline passed (checkout, connect) */
    WEIR_ECONNECT = -4,    /* could not connect to the server */
    WEIR_EGONE = -5,       /* the connection is lost; it will be replaced */
    WEIR_EQUERY = -6,      /* the statement failed; the connection is fine */
    WEIR_EPROTO = -7,      /* protocol violation: bad length, bad field */
    WEIR_ETOOMANY = -8,    /* too many waiters for a connection */
    WEIR_ECLOSED = -9,     /* the pool is draining or closed */
    WEIR_EAGAIN = -10,     /* not yet: more input needed, or nothing idle */
    WEIR_ETOOBIG = -11,    /* a message longer than the allowed maximum */
    WEIR_ENOTFOUND = -12,  /* no such name (dialect, option) */
    WEIR_ESTATE = -13,     /* call not valid in the object's current state */
    WEIR_ESYS = -14,       /* a system call failed (threads, sockets) */
};

/* A static English description of code; never NULL, also for unknown codes. */
WEIR_API const char *weir_strerror(int code);

/* Library version as "MAJOR.MINOR.PATCH"; static string. */
WEIR_API const char *weir_version(void);

/* The clock of every weir time: CLOCK_MONOTONIC in microseconds. Callers
 * that read it once per event-loop callback hand the reading to the *_at()
 * calls of the pool. */
WEIR_API int64_t weir_now_us(void);

typedef enum weir_log_level {
    WEIR_LOG_DEBUG = 0,
    WEIR_LOG_INFO = 1,
    WEIR_LOG_WARNING = 2,
    WEIR_LOG_ERROR = 3,
} weir_log_level;

/*
 * Log callback. msg is borrowed for the duration of the call, has no trailing
 * newline. May be called from the pool's background thread as well as from
 * the caller's: it must be thread-safe if the object is used from threads.
 */
typedef void (*weir_log_fn)(void *arg, weir_log_level level, const char *msg);

#ifdef __cplusplus
}
#endif

#endif
