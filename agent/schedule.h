/* When the agent's scheduled backups fire: an interval ("30s", "15m", "6h", "1d") or a
 * five-field cron expression ("m h dom mon dow", local time, as cron(8) reads it). */
#ifndef WALVAULT_AGENT_SCHEDULE_H
#define WALVAULT_AGENT_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/err.h"

/* schedule_next's answer for a schedule that never fires. */
#define SCHEDULE_NEVER INT64_MAX
/* A cron expression with no date in this many years (30 2 31 2 *) is refused. */
#define SCHEDULE_CRON_HORIZON_YEARS 5

enum schedule_kind { SCHEDULE_OFF, SCHEDULE_INTERVAL, SCHEDULE_CRON };

struct schedule {
    enum schedule_kind kind;
    int64_t interval_s;
    /* Cron: bit i set when value i matches. */
    uint64_t minutes; /* 0..59 */
    uint32_t hours;   /* 0..23 */
    uint32_t days;    /* 1..31 */
    uint16_t months;  /* 1..12 */
    uint8_t weekdays; /* 0..6, Sunday 0 (7 in the text is Sunday too) */
    /* cron(8): when both day fields are restricted, a day matches either of them. */
    bool days_restricted, weekdays_restricted;
    char text[96]; /* as given, for logs */
};

/* "off", "never", "none" or "0": SCHEDULE_OFF. An integer with a unit s, m (or min), h, d
 * or w (a bare number is seconds): an interval. Five fields, or @hourly, @daily, @weekly,
 * @monthly, @yearly: cron. WV_EUSAGE with a message naming the text otherwise. */
int schedule_parse(const char *text, struct schedule *out, wv_err_t *err);
/* An interval alone (no cron, no "off"): seconds > 0. */
int schedule_parse_interval(const char *text, int64_t *seconds, wv_err_t *err);

/* Whether a cron schedule fires in the minute tm describes (local time). */
bool schedule_cron_matches(const struct schedule *s, const struct tm *tm);

/* The first time, in epoch seconds strictly after `after`, at which the schedule fires:
 * after + interval for an interval, the start of the next matching local minute for cron,
 * SCHEDULE_NEVER when off or when cron finds no match within the horizon. A local time that
 * a daylight saving change skips does not fire that day. */
int64_t schedule_next(const struct schedule *s, int64_t after);

#endif
