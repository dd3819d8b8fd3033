/*
 * The daemon's log, in PgBouncer's line format so pgBadger and existing
 * alerting parse it unchanged:
 *   2026-11-25 17:20:00.123 UTC [1234] LOG C-0x1a: db/user@127.0.0.1:5555 login attempt: ...
 * Lines go to stderr (unless quiet), to logfile when set, and to syslog
 * (without the stamp and pid, which syslog adds) when syslog = 1. Formatting
 * is skipped when the level is below the threshold.
 */
#ifndef WEIR_DAEMON_LOG_H
#define WEIR_DAEMON_LOG_H

#include <stdio.h>

enum log_level { LG_NOISE = 0, LG_DEBUG = 1, LG_LOG = 2, LG_WARNING = 3, LG_ERROR = 4, LG_FATAL = 5 };

struct daemon_log {
    FILE *file;        /* logfile, or NULL */
    char *path;
    int to_stderr;
    int min_level;     /* LG_LOG by default; -v lowers it */
    int to_syslog;
    char *syslog_ident; /* openlog() keeps the pointer: owned here */
};

int log_open(struct daemon_log *log, const char *path);   /* path may be NULL */
int log_reopen(struct daemon_log *log, const char *path); /* after rotation / reload */
void log_close(struct daemon_log *log);
/* Start, change or stop logging to syslog (the syslog, syslog_ident and
 * syslog_facility settings). 0, or -1 for an unknown facility (then "daemon"). */
int log_set_syslog(struct daemon_log *log, int on, const char *ident, const char *facility);
void log_line(struct daemon_log *log, int level, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_at(log, level, ...)                                                                              \
    do {                                                                                                     \
        if ((level) >= (log)->min_level)                                                                     \
            log_line((log), (level), NULL, __VA_ARGS__);                                                     \
    } while (0)

#endif
