/*
 * The daemon's log writer (see log.h): one timestamped line per event, with
 * PgBouncer's level words and prefix layout, to stderr and/or a log file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
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
    char line[2048];
    size_t n;
    va_list ap;

    if (level < log->min_level)
        return;
    n = format_stamp(line, sizeof(line));
    n += (size_t)snprintf(line + n, sizeof(line) - n, " [%d] %s %s", (int)getpid(),
                          level_words[level < 0 ? 0 : level > LG_FATAL ? LG_FATAL : level], prefix ? prefix : "");
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
    }
    if (log->to_stderr)
        fprintf(stderr, "%s\n", line);
    if (log->file)
        fprintf(log->file, "%s\n", line);
}
