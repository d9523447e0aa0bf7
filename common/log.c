#include "common/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static enum log_format current_format = LOG_FORMAT_TEXT;
static enum log_level current_level = LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"debug", "info", "warning", "error"};

void log_set_format(enum log_format format)
{
    current_format = format;
}

void log_set_level(enum log_level level)
{
    current_level = level;
}

static void write_json_line(enum log_level level, const char *msg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    json_t *line =
        json_pack("{s:s, s:s, s:s}", "time", when, "level", level_names[level], "msg", msg);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < current_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    if (current_format == LOG_FORMAT_JSON)
        write_json_line(level, msg);
    else if (level >= LOG_WARN)
        fprintf(stderr, "walvault: %s: %s\n", level_names[level], msg);
    else
        fprintf(stderr, "walvault: %s\n", msg);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}
