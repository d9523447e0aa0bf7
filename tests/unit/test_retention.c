/* Retention decisions: by count of full backups, by age, both, and never the last full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backup/retention.h"

#define DAY_MS (86400LL * 1000)

/* "F" full, "I" incremental; backup i stopped i days ago counted from the end. */
static size_t make(const char *kinds, struct manifest_summary *b, int64_t now)
{
    size_t n = strlen(kinds);
    for (size_t i = 0; i < n; i++) {
        memset(&b[i], 0, sizeof b[i]);
        snprintf(b[i].id, sizeof b[i].id, "b%zu", i);
        snprintf(b[i].type, sizeof b[i].type, "%s", kinds[i] == 'F' ? "full" : "incr");
        b[i].stop_time_ms = now - (int64_t)(n - i) * DAY_MS;
    }
    return n;
}

static void expect(const bool *keep, const char *want)
{
    char got[32] = {0};
    for (size_t i = 0; i < strlen(want); i++)
        got[i] = keep[i] ? 'k' : '-';
    assert_string_equal(got, want);
}

static void test_no_rule_is_usage_error(void **state)
{
    (void)state;
    struct manifest_summary b[4];
    bool keep[4];
    size_t n = make("FIFI", b, 100 * DAY_MS);
    struct retention_policy p = {0, 0, 100 * DAY_MS};
    wv_err_t err = {0};
    assert_int_equal(retention_decide(b, n, &p, keep, &err), WV_EUSAGE);
}

static void test_retain_full_keeps_newer_incrementals(void **state)
{
    (void)state;
    struct manifest_summary b[8];
    bool keep[8];
    size_t n = make("FIIFIIFI", b, 100 * DAY_MS);
    struct retention_policy p = {2, 0, 100 * DAY_MS};
    wv_err_t err = {0};
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    expect(keep, "---kkkkk");
    p.retain_full = 1;
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    expect(keep, "------kk");
    p.retain_full = 5; /* more than there are: keep all */
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    expect(keep, "kkkkkkkk");
}

static void test_retain_days_keeps_the_backup_before_the_window(void **state)
{
    (void)state;
    struct manifest_summary b[6];
    bool keep[6];
    int64_t now = 100 * DAY_MS;
    size_t n = make("FIIFII", b, now); /* stopped 6, 5, 4, 3, 2, 1 days ago */
    struct retention_policy p = {0, 2, now};
    wv_err_t err = {0};
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    /* the window holds the last two; the one 3 days ago starts it; the newest full stays */
    expect(keep, "---kkk");
    p.retain_days = 30;
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    expect(keep, "kkkkkk");
}

static void test_never_the_last_full(void **state)
{
    (void)state;
    struct manifest_summary b[3];
    bool keep[3];
    int64_t now = 100 * DAY_MS;
    size_t n = make("FII", b, now - 50 * DAY_MS); /* all older than any window */
    struct retention_policy p = {0, 1, now};
    wv_err_t err = {0};
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    expect(keep, "kkk");
}

static void test_both_rules_keep_the_union(void **state)
{
    (void)state;
    struct manifest_summary b[6];
    bool keep[6];
    int64_t now = 100 * DAY_MS;
    size_t n = make("FIFIFI", b, now);
    struct retention_policy p = {1, 4, now}; /* full: from index 4; days: from index 1 */
    wv_err_t err = {0};
    assert_int_equal(retention_decide(b, n, &p, keep, &err), 0);
    expect(keep, "-kkkkk");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_rule_is_usage_error),
        cmocka_unit_test(test_retain_full_keeps_newer_incrementals),
        cmocka_unit_test(test_retain_days_keeps_the_backup_before_the_window),
        cmocka_unit_test(test_never_the_last_full),
        cmocka_unit_test(test_both_rules_keep_the_union),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
