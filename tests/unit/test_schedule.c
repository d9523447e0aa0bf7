/* The agent's backup schedules: intervals, cron matching (ranges, steps, lists, names,
 * Sunday as 0 or 7, the day-of-month/day-of-week rule) and the next firing time, in UTC
 * and across daylight saving changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/schedule.h"

static void use_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static int utc(void **state)
{
    (void)state;
    use_tz("UTC");
    return 0;
}

/* Epoch seconds of a UTC date and time. */
static int64_t at(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm);
}

static struct schedule parse_ok(const char *text)
{
    struct schedule s;
    wv_err_t err = {0};
    int rc = schedule_parse(text, &s, &err);
    if (rc)
        fail_msg("schedule_parse(\"%s\"): %s", text, err.msg);
    return s;
}

static bool fires_at(const struct schedule *s, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    return schedule_cron_matches(s, &tm);
}

static void test_intervals(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t seconds;
    } good[] = {{"30s", 30},   {"15m", 900},    {"90min", 5400}, {"6h", 21600},
                {"1d", 86400}, {"2w", 1209600}, {"45", 45},      {"3650d", 315360000}};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        int64_t s = 0;
        wv_err_t err = {0};
        assert_int_equal(schedule_parse_interval(good[i].text, &s, &err), 0);
        assert_int_equal(s, good[i].seconds);
        struct schedule sc = parse_ok(good[i].text);
        assert_int_equal(sc.kind, SCHEDULE_INTERVAL);
        assert_int_equal(schedule_next(&sc, 1000), 1000 + good[i].seconds);
    }
    static const char *const bad[] = {"",   "0s",   "-5s",       "1.5h", "s",
                                      "5x", "10 s", "99999999d", "h1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t s;
        wv_err_t err = {0};
        assert_int_equal(schedule_parse_interval(bad[i], &s, &err), WV_EUSAGE);
        assert_non_null(strstr(err.msg, "interval"));
    }
}

static void test_off(void **state)
{
    (void)state;
    static const char *const off[] = {"off", "never", "none", "0"};
    for (size_t i = 0; i < sizeof off / sizeof *off; i++) {
        struct schedule s = parse_ok(off[i]);
        assert_int_equal(s.kind, SCHEDULE_OFF);
        assert_true(schedule_next(&s, 1000) == SCHEDULE_NEVER);
    }
}

static void test_cron_steps_and_lists(void **state)
{
    (void)state;
    struct schedule s = parse_ok("*/15 * * * *");
    assert_int_equal(s.kind, SCHEDULE_CRON);
    assert_true(fires_at(&s, at(2024, 1, 1, 0, 0)));
    assert_true(fires_at(&s, at(2024, 1, 1, 7, 45)));
    assert_false(fires_at(&s, at(2024, 1, 1, 7, 44)));

    s = parse_ok("5,10,50 * * * *");
    assert_true(fires_at(&s, at(2024, 1, 1, 3, 10)));
    assert_false(fires_at(&s, at(2024, 1, 1, 3, 11)));

    s = parse_ok("10-30/10 * * * *"); /* 10, 20, 30 */
    assert_true(fires_at(&s, at(2024, 1, 1, 3, 20)));
    assert_true(fires_at(&s, at(2024, 1, 1, 3, 30)));
    assert_false(fires_at(&s, at(2024, 1, 1, 3, 40)));
    assert_false(fires_at(&s, at(2024, 1, 1, 3, 0)));

    s = parse_ok("5/20 * * * *"); /* 5, 25, 45 */
    assert_true(fires_at(&s, at(2024, 1, 1, 3, 45)));
    assert_false(fires_at(&s, at(2024, 1, 1, 3, 50)));

    s = parse_ok("0 0 1 jan,Jul *");
    assert_true(fires_at(&s, at(2024, 7, 1, 0, 0)));
    assert_false(fires_at(&s, at(2024, 6, 1, 0, 0)));
}

static void test_cron_ranges_and_weekdays(void **state)
{
    (void)state;
    /* 2024-01-01 is a Monday, 2024-01-06 a Saturday, 2024-01-07 a Sunday. */
    struct schedule s = parse_ok("0 9-17 * * mon-fri");
    assert_true(fires_at(&s, at(2024, 1, 1, 9, 0)));
    assert_true(fires_at(&s, at(2024, 1, 5, 17, 0)));
    assert_false(fires_at(&s, at(2024, 1, 1, 18, 0)));
    assert_false(fires_at(&s, at(2024, 1, 6, 9, 0)));

    struct schedule sun7 = parse_ok("0 0 * * 7"), sun0 = parse_ok("0 0 * * 0");
    assert_true(fires_at(&sun7, at(2024, 1, 7, 0, 0)));
    assert_true(fires_at(&sun0, at(2024, 1, 7, 0, 0)));
    assert_false(fires_at(&sun7, at(2024, 1, 6, 0, 0)));

    s = parse_ok("0 0 * * 5-7"); /* Friday to Sunday */
    assert_true(fires_at(&s, at(2024, 1, 5, 0, 0)));
    assert_true(fires_at(&s, at(2024, 1, 6, 0, 0)));
    assert_true(fires_at(&s, at(2024, 1, 7, 0, 0)));
    assert_false(fires_at(&s, at(2024, 1, 8, 0, 0)));
}

static void test_cron_day_fields(void **state)
{
    (void)state;
    /* Both day fields restricted: either one matches (the 13th, or any Friday). */
    struct schedule s = parse_ok("0 0 13 * 5");
    assert_true(fires_at(&s, at(2024, 2, 13, 0, 0))); /* a Tuesday */
    assert_true(fires_at(&s, at(2024, 2, 2, 0, 0)));  /* a Friday */
    assert_false(fires_at(&s, at(2024, 2, 3, 0, 0)));
    /* Only one restricted: that one alone decides. */
    s = parse_ok("0 0 1 * *");
    assert_true(fires_at(&s, at(2024, 2, 1, 0, 0)));
    assert_false(fires_at(&s, at(2024, 2, 2, 0, 0)));
    s = parse_ok("0 0 * * 1");
    assert_true(fires_at(&s, at(2024, 1, 8, 0, 0)));
    assert_false(fires_at(&s, at(2024, 1, 9, 0, 0)));
}

static void test_cron_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {"60 * * * *",  "* 24 * * *",  "* * 0 * *",   "* * * 13 *",
                                      "* * * * 8",   "5-1 * * * *", "*/0 * * * *", "* * * *",
                                      "* * * * * *", "a * * * *",   "1- * * * *",  "@fortnightly",
                                      "0 0 30 2 *",  "* * * foo *", "*/ * * * *"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct schedule s;
        wv_err_t err = {0};
        if (schedule_parse(bad[i], &s, &err) != WV_EUSAGE)
            fail_msg("\"%s\" was accepted", bad[i]);
        assert_true(err.msg[0] != '\0');
    }
    struct schedule s;
    wv_err_t err = {0};
    assert_int_equal(schedule_parse("0 0 30 2 *", &s, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "no date"));
}

static void test_next_fire(void **state)
{
    (void)state;
    struct schedule s = parse_ok("*/15 * * * *");
    assert_int_equal(schedule_next(&s, at(2024, 1, 1, 0, 0)), at(2024, 1, 1, 0, 15));
    assert_int_equal(schedule_next(&s, at(2024, 1, 1, 0, 7) + 30), at(2024, 1, 1, 0, 15));
    assert_int_equal(schedule_next(&s, at(2024, 1, 1, 23, 50)), at(2024, 1, 2, 0, 0));

    s = parse_ok("0 2 * * *");
    assert_int_equal(schedule_next(&s, at(2024, 1, 1, 3, 0)), at(2024, 1, 2, 2, 0));
    assert_int_equal(schedule_next(&s, at(2024, 1, 1, 1, 59)), at(2024, 1, 1, 2, 0));

    s = parse_ok("0 0 29 2 *");
    assert_int_equal(schedule_next(&s, at(2024, 3, 1, 0, 0)), at(2028, 2, 29, 0, 0));
    s = parse_ok("@yearly");
    assert_int_equal(schedule_next(&s, at(2024, 6, 1, 0, 0)), at(2025, 1, 1, 0, 0));
    s = parse_ok("0 0 31 * *");
    assert_int_equal(schedule_next(&s, at(2024, 4, 1, 0, 0)), at(2024, 5, 31, 0, 0));
    /* 2024-01-02 is a Tuesday: the Friday comes before the 15th. */
    s = parse_ok("30 4 1,15 * fri");
    assert_int_equal(schedule_next(&s, at(2024, 1, 2, 0, 0)), at(2024, 1, 5, 4, 30));
    s = parse_ok("@hourly");
    assert_int_equal(schedule_next(&s, at(2024, 1, 1, 5, 0)), at(2024, 1, 1, 6, 0));
}

/* Europe/Berlin: 2024-03-31 02:00 CET becomes 03:00 CEST; 2024-10-27 03:00 CEST becomes
 * 02:00 CET. */
static void test_daylight_saving(void **state)
{
    (void)state;
    if (access("/usr/share/zoneinfo/Europe/Berlin", R_OK) != 0)
        skip();
    use_tz("Europe/Berlin");
    struct schedule s = parse_ok("30 2 * * *");
    /* 02:30 does not exist on March 31: the next is April 1, 02:30 CEST (00:30 UTC). */
    assert_int_equal(schedule_next(&s, at(2024, 3, 30, 2, 0)), at(2024, 4, 1, 0, 30));
    /* On October 27, 02:30 happens twice: it fires at the first (00:30 UTC) only. */
    assert_int_equal(schedule_next(&s, at(2024, 10, 26, 12, 0)), at(2024, 10, 27, 0, 30));
    assert_int_equal(schedule_next(&s, at(2024, 10, 27, 0, 30)), at(2024, 10, 28, 1, 30));
    /* A schedule for every hour runs in both passes of the repeated hour. */
    s = parse_ok("30 * * * *");
    assert_int_equal(schedule_next(&s, at(2024, 10, 27, 0, 30)), at(2024, 10, 27, 1, 30));
    /* Local midnight on a day of 23 hours. */
    s = parse_ok("0 0 * * *");
    assert_int_equal(schedule_next(&s, at(2024, 3, 30, 23, 30)), at(2024, 3, 31, 22, 0));
    use_tz("UTC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intervals),
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_cron_steps_and_lists),
        cmocka_unit_test(test_cron_ranges_and_weekdays),
        cmocka_unit_test(test_cron_day_fields),
        cmocka_unit_test(test_cron_errors),
        cmocka_unit_test(test_next_fire),
        cmocka_unit_test(test_daylight_saving),
    };
    return cmocka_run_group_tests(tests, utc, NULL);
}
