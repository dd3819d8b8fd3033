/*
 * The daemon's log writer (see log.h): one timestamped line per event, with
 * PgBouncer's level words and prefix layout, to stderr and/or a log file,
 * and to syslog with the level as its priority.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *const level_words[] = {"NOISE", "DEBUG", "LOG", "WARNING", "ERROR", "FATAL"};

int log_open(struct daemon_log *log, const char *path)
{
    if (log->min_level == 0 && log->to_stderr == 0 && log->file == NULL && log->path == NULL)
        log->min_level = LG_LOG;
    return log_reopen(log, path);
}

int log_reopen(struct daemon_log *log, const char *path)
{
    FILE *f = NULL;

    if (path != NULL && path[0] != '\0') {
        f = fopen(path, "a");
        if (f == NULL)
            return -errno;
        setvbuf(f, NULL, _IOLBF, 0);
    }
    if (log->file)
        fclose(log->file);
    free(log->path);
    log->file = f;
    log->path = f ? strdup(path) : NULL;
    return 0;
}

void log_close(struct daemon_log *log)
{
    if (log->file)
        fclose(log->file);
    free(log->path);
    log->file = NULL;
    log->path = NULL;
    (void)log_set_syslog(log, 0, NULL, NULL);
}

static const struct {
    const char *name;
    int facility;
} facilities[] = {
    {"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON}, {"user", LOG_USER},
    {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1},     {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},
    {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},     {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

int log_set_syslog(struct daemon_log *log, int on, const char *ident, const char *facility)
{
    int fac = LOG_DAEMON, rc = facility ? -1 : 0;

    if (log->to_syslog)
        closelog();
    free(log->syslog_ident);
    log->syslog_ident = NULL;
    log->to_syslog = 0;
    for (size_t i = 0; facility && i < sizeof(facilities) / sizeof(facilities[0]); i++)
        if (strcasecmp(facility, facilities[i].name) == 0) {
            fac = facilities[i].facility;
            rc = 0;
        }
    if (!on)
        return rc;
    log->syslog_ident = strdup(ident && ident[0] ? ident : "weir");
    openlog(log->syslog_ident, LOG_PID | LOG_NDELAY, fac);
    log->to_syslog = 1;
    return rc;
}

static int syslog_priority(int level)
{
    static const int prio[] = {LOG_DEBUG, LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT};

    return prio[level < 0 ? 0 : level > LG_FATAL ? LG_FATAL : level];
}

static size_t format_stamp(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;
    size_t n;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, len - n, ".%03d ", (int)(tv.tv_usec / 1000));
    n += strftime(buf + n, len - n, "%Z", &tm);
    return n;
}

void log_line(struct daemon_log *log, int level, const char *prefix, const char *fmt, ...)
{
    const char *word = level_words[level < 0 ? 0 : level > LG_FATAL ? LG_FATAL : level];
    char line[2048];
    size_t n, body;
    va_list ap;

    if (level < log->min_level)
        return;
    n = format_stamp(line, sizeof(line));
    n += (size_t)snprintf(line + n, sizeof(line) - n, " [%d] %s ", (int)getpid(), word);
    body = n < sizeof(line) ? n : sizeof(line) - 1;
    n += (size_t)snprintf(line + body, sizeof(line) - body, "%s", prefix ? prefix : "");
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
    }
    if (log->to_stderr)
        fprintf(stderr, "%s\n", line);
    if (log->file)
        fprintf(log->file, "%s\n", line);
    if (log->to_syslog) /* syslog stamps the time and pid itself */
        syslog(syslog_priority(level), "%s %s", word, line + body);
}
