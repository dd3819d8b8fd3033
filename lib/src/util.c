/*
 * Small shared helpers: the error-code table behind weir_strerror(), the
 * monotonic clock and the log formatter every module uses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

const char *weir_strerror(int code)
{
    switch (code) {
    case WEIR_OK: return "success";
    case WEIR_ENOMEM: return "out of memory";
    case WEIR_EINVAL: return "invalid argument";
    case WEIR_ETIMEDOUT: return "timed out";
    case WEIR_ECONNECT: return "could not connect to server";
    case WEIR_EGONE: return "connection to server lost";
    case WEIR_EQUERY: return "statement failed";
    case WEIR_EPROTO: return "protocol violation";
    case WEIR_ETOOMANY: return "too many waiters";
    case WEIR_ECLOSED: return "pool is draining or closed";
    case WEIR_EAGAIN: return "not available yet";
    case WEIR_ETOOBIG: return "message too large";
    case WEIR_ENOTFOUND: return "not found";
    case WEIR_ESTATE: return "invalid in current state";
    case WEIR_ESYS: return "system call failed";
    default: return "unknown error";
    }
}

const char *weir_version(void)
{
    return WEIR_VERSION_STRING;
}

int64_t weir__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t weir_now_us(void)
{
    return weir__now_us();
}

void weir__log(weir_log_fn fn, void *arg, weir_log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fn(arg, level, line);
}

void weir__set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char *weir__strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}
