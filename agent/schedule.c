#include "agent/schedule.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_INTERVAL_S (10LL * 366 * 86400)

int schedule_parse_interval(const char *text, int64_t *seconds, wv_err_t *err)
{
    static const struct {
        const char *unit;
        int64_t seconds;
    } units[] = {{"", 1},     {"s", 1},     {"m", 60},       {"min", 60},
                 {"h", 3600}, {"d", 86400}, {"w", 7 * 86400}};
    char *end = NULL;
    long long n = isdigit((unsigned char)text[0]) ? strtoll(text, &end, 10) : -1;
    for (size_t i = 0; n > 0 && i < sizeof units / sizeof *units; i++) {
        if (strcmp(end, units[i].unit) != 0)
            continue;
        if (n > MAX_INTERVAL_S / units[i].seconds)
            break;
        *seconds = n * units[i].seconds;
        return 0;
    }
    return wv_err_set(err, WV_EUSAGE,
                      "\"%s\" is no interval: give a whole number with a unit, s, m, h, d or w "
                      "(30s, 15m, 6h, 1d), at most 10 years",
                      text);
}

/* ---- cron ---- */

struct field_spec {
    const char *what;
    int min, max;
    const char *const *names; /* names[i] stands for min + i, or NULL */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field_spec fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day of week", 0, 7, day_names},
};

/* A number or a three-letter name; advances *p past it. -1 when there is neither. */
static int take_value(const char **p, const struct field_spec *f)
{
    if (isdigit((unsigned char)**p)) {
        long v = 0;
        while (isdigit((unsigned char)**p) && v <= 1000)
            v = v * 10 + (*(*p)++ - '0');
        return v > 1000 ? -1 : (int)v;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (strncasecmp(*p, f->names[i], 3) == 0 && !isalpha((unsigned char)(*p)[3])) {
            *p += 3;
            return f->min + i;
        }
    }
    return -1;
}

/* One list item: "*", "a", "a-b", each optionally "/step"; "a/step" runs to the maximum. */
static int parse_item(const char *item, const struct field_spec *f, uint64_t *bits)
{
    const char *p = item;
    int lo = f->min, hi = f->max, step = 1;
    if (*p == '*') {
        p++;
    } else {
        if ((lo = hi = take_value(&p, f)) < 0)
            return -1;
        if (*p == '-') {
            p++;
            if ((hi = take_value(&p, f)) < 0)
                return -1;
        } else if (*p == '/') {
            hi = f->max;
        }
    }
    if (*p == '/') {
        p++;
        if (!isdigit((unsigned char)*p) || (step = take_value(&p, f)) < 1)
            return -1;
    }
    if (*p || lo < f->min || hi > f->max || lo > hi)
        return -1;
    for (int v = lo; v <= hi; v += step)
        *bits |= 1ULL << v;
    return 0;
}

static int parse_field(char *text, const struct field_spec *f, uint64_t *bits, wv_err_t *err)
{
    *bits = 0;
    char *save = NULL;
    for (char *item = strtok_r(text, ",", &save); item; item = strtok_r(NULL, ",", &save))
        if (parse_item(item, f, bits) != 0)
            return wv_err_set(err, WV_EUSAGE,
                              "cron %s field: \"%s\" is not a value, range or "
                              "step from %d to %d",
                              f->what, item, f->min, f->max);
    if (*bits == 0)
        return wv_err_set(err, WV_EUSAGE, "cron %s field is empty", f->what);
    return 0;
}

static const char *cron_alias(const char *text)
{
    static const struct {
        const char *alias, *fields;
    } aliases[] = {{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
                   {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
                   {"@hourly", "0 * * * *"}};
    for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
        if (strcasecmp(text, aliases[i].alias) == 0)
            return aliases[i].fields;
    return text[0] == '@' ? NULL : text;
}

static int parse_cron(const char *text, struct schedule *s, wv_err_t *err)
{
    const char *expr = cron_alias(text);
    if (!expr)
        return wv_err_set(err, WV_EUSAGE,
                          "unknown schedule \"%s\" (@hourly, @daily, @weekly, "
                          "@monthly, @yearly)",
                          text);
    char copy[sizeof s->text], *save = NULL, *field[6] = {0};
    snprintf(copy, sizeof copy, "%s", expr);
    int n = 0;
    for (char *f = strtok_r(copy, " \t", &save); f && n < 6; f = strtok_r(NULL, " \t", &save))
        field[n++] = f;
    if (n != 5)
        return wv_err_set(err, WV_EUSAGE,
                          "cron schedule \"%s\" needs five fields: minute hour "
                          "day-of-month month day-of-week",
                          text);
    uint64_t bits[5];
    for (int i = 0; i < 5; i++) {
        int rc = parse_field(field[i], &fields[i], &bits[i], err);
        if (rc)
            return wv_err_prefix(err, "schedule \"%s\"", text);
    }
    s->kind = SCHEDULE_CRON;
    s->minutes = bits[0];
    s->hours = (uint32_t)bits[1];
    s->days = (uint32_t)bits[2];
    s->months = (uint16_t)bits[3];
    s->weekdays = (uint8_t)((bits[4] | bits[4] >> 7) & 0x7f); /* 7 is Sunday too */
    s->days_restricted = field[2][0] != '*';
    s->weekdays_restricted = field[4][0] != '*';
    return 0;
}

int schedule_parse(const char *text, struct schedule *out, wv_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!text || strlen(text) >= sizeof out->text)
        return wv_err_set(err, WV_EUSAGE, "schedule \"%s\" is too long", text ? text : "");
    snprintf(out->text, sizeof out->text, "%s", text);
    if (strcmp(text, "off") == 0 || strcmp(text, "never") == 0 || strcmp(text, "none") == 0 ||
        strcmp(text, "0") == 0)
        return 0;
    if (!strpbrk(text, " \t") && text[0] != '@') {
        out->kind = SCHEDULE_INTERVAL;
        return schedule_parse_interval(text, &out->interval_s, err);
    }
    int rc = parse_cron(text, out, err);
    if (rc == 0 && schedule_next(out, (int64_t)time(NULL)) == SCHEDULE_NEVER)
        rc = wv_err_set(err, WV_EUSAGE,
                        "cron schedule \"%s\" matches no date in the next %d "
                        "years",
                        text, SCHEDULE_CRON_HORIZON_YEARS);
    return rc;
}

/* cron(8): when both day fields are restricted, a day matches either of them. */
static bool day_matches(const struct schedule *s, const struct tm *tm)
{
    bool day = s->days >> tm->tm_mday & 1, weekday = s->weekdays >> tm->tm_wday & 1;
    return s->days_restricted && s->weekdays_restricted ? day || weekday : day && weekday;
}

bool schedule_cron_matches(const struct schedule *s, const struct tm *tm)
{
    return s->kind == SCHEDULE_CRON && (s->minutes >> tm->tm_min & 1) &&
           (s->hours >> tm->tm_hour & 1) && (s->months >> (tm->tm_mon + 1) & 1) &&
           day_matches(s, tm);
}

/* Local midnight `days` days after tm's day, or the first of the next month. mktime
 * resolves days of 23 or 25 hours; a result that does not move forward (a zone that skips
 * midnight) is pushed on by a minute so the search always ends. */
static int64_t local_start_of(const struct tm *tm, int days, bool next_month, int64_t now)
{
    struct tm n = {.tm_year = tm->tm_year,
                   .tm_mon = tm->tm_mon + (next_month ? 1 : 0),
                   .tm_mday = next_month ? 1 : tm->tm_mday + days,
                   .tm_isdst = -1};
    int64_t t = (int64_t)mktime(&n);
    return t > now ? t : now + 60;
}

/* When the clocks go back, an hour of local time happens twice; cron(8) runs a job set for
 * a fixed hour once, not in both passes. Schedules for every hour run in both. */
static bool repeated_wall_time(const struct schedule *s, int64_t t, const struct tm *tm)
{
    if (s->hours == 0xffffffu || tm->tm_isdst != 0)
        return false;
    time_t earlier = (time_t)(t - 3600);
    struct tm e;
    localtime_r(&earlier, &e);
    return e.tm_hour == tm->tm_hour && e.tm_min == tm->tm_min && e.tm_isdst > 0;
}

static int64_t cron_next(const struct schedule *s, int64_t after)
{
    int64_t t = after - (after % 60 + 60) % 60 + 60; /* the next whole minute */
    int64_t limit = after + (int64_t)SCHEDULE_CRON_HORIZON_YEARS * 366 * 86400;
    while (t <= limit) {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        if (!(s->months >> (tm.tm_mon + 1) & 1))
            t = local_start_of(&tm, 0, true, t);
        else if (!day_matches(s, &tm))
            t = local_start_of(&tm, 1, false, t);
        else if (!(s->hours >> tm.tm_hour & 1))
            t += 3600 - tm.tm_min * 60 - tm.tm_sec;
        else if (!(s->minutes >> tm.tm_min & 1) || repeated_wall_time(s, t, &tm))
            t += 60 - tm.tm_sec;
        else
            return t;
    }
    return SCHEDULE_NEVER;
}

int64_t schedule_next(const struct schedule *s, int64_t after)
{
    switch (s->kind) {
    case SCHEDULE_INTERVAL:
        return after > SCHEDULE_NEVER - s->interval_s ? SCHEDULE_NEVER : after + s->interval_s;
    case SCHEDULE_CRON:
        return cron_next(s, after);
    default:
        return SCHEDULE_NEVER;
    }
}
