/*
 * Helpers shared by the library's modules and nothing else: the monotonic
 * clock, formatted logging through an object's callback, and the marker for
 * functions that are internal but reachable from unit tests. Never installed.
 */
#ifndef WEIR_INTERNAL_H
#define WEIR_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <weir/common.h>

/* Internal symbols keep hidden visibility; the prefix marks them as not API. */
#define WEIR_INTERNAL __attribute__((visibility("hidden")))

/* Monotonic clock in microseconds. */
WEIR_INTERNAL int64_t weir__now_us(void);

/* Format and deliver one log line; skips formatting when fn is NULL. */
WEIR_INTERNAL void weir__log(weir_log_fn fn, void *arg, weir_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* snprintf into an optional error buffer (err may be NULL or errlen 0). */
WEIR_INTERNAL void weir__set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* strdup that tolerates NULL (returns NULL) */
WEIR_INTERNAL char *weir__strdup(const char *s);

#endif
