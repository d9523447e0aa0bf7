/* The pure parts of restore: recovery target times, the plan that coalesces block reads,
 * and the checks a manifest's block references and paths get before anything is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backup/internal_restore.h"

/* 2026-11-30 22:15:00 UTC */
#define T0 INT64_C(1796076900)

static int64_t parse_ok(const char *text, const char *frac)
{
    struct restore_time t;
    wv_err_t err = {0};
    assert_int_equal(restore_parse_time(text, &t, &err), 0);
    assert_string_equal(t.frac, frac);
    return t.sec;
}

static void test_time_zones(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2026-11-30 22:15:00", ""), T0);
    assert_int_equal(parse_ok("2026-11-30T22:15:00Z", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 22:15:00 UTC", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 22:15:00+00", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 23:15:00+01", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 23:45:00 +01:30", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 23:45:00+0130", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 17:15:00-05", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 22:15:00.123456+00", "123456"), T0);
    assert_int_equal(parse_ok("2024-02-29 00:00:00", ""), INT64_C(1709164800));
    assert_int_equal(parse_ok("1970-01-01 00:00:00", ""), 0);
}

static void test_time_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-11-30",
        "2026-11-30 22:15",
        "2026-13-01 00:00:00",
        "2026-02-29 00:00:00",
        "2026-04-31 00:00:00",
        "2026-11-30 24:00:00",
        "2026-11-30 22:60:00",
        "2026-11-30 22:15:60",
        "2026-11-30 22:15:00.",
        "2026-11-30 22:15:00.1234567890",
        "2026-11-30 22:15:00+16",
        "2026-11-30 22:15:00+01:60",
        "2026-11-30 22:15:00 CET",
        "2026-11-30 22:15:00Zjunk",
        "26-11-30 22:15:00",
        "2026/11/30 22:15:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct restore_time t;
        wv_err_t err = {0};
        assert_int_equal(restore_parse_time(bad[i], &t, &err), WV_EUSAGE);
        assert_non_null(strstr(err.msg, "invalid target time"));
    }
}

static void test_time_format(void **state)
{
    (void)state;
    struct restore_time t;
    wv_err_t err = {0};
    char out[64];
    assert_int_equal(restore_parse_time("2026-12-01 00:15:00.5+02", &t, &err), 0);
    restore_format_time(&t, out, sizeof out);
    assert_string_equal(out, "2026-11-30 22:15:00.5+00");
    assert_int_equal(restore_parse_time("2026-11-30 22:15:00", &t, &err), 0);
    restore_format_time(&t, out, sizeof out);
    assert_string_equal(out, "2026-11-30 22:15:00+00");
}

static struct block_ref ref(uint32_t pack, uint32_t frame, uint64_t offset, uint32_t sealed)
{
    return (struct block_ref){pack, frame, offset, sealed, (uint64_t)frame * 8192, 8192, 0};
}

static void test_plan_coalesces_adjacent(void **state)
{
    (void)state;
    struct restore_plan p;
    wv_err_t err = {0};
    restore_plan_init(&p, 1000);
    struct block_ref b[] = {
        ref(0, 0, 8, 100),   ref(0, 1, 108, 100), ref(0, 2, 208, 100), /* one run */
        ref(1, 0, 208, 100),                                           /* other pack */
        ref(1, 2, 400, 100),                                           /* gap */
        ref(1, 3, 500, 100),
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        assert_int_equal(restore_plan_add(&p, 7, i, &b[i], &err), 0);
    assert_int_equal(p.count, 3);
    assert_int_equal(p.items[0].count, 3);
    assert_int_equal(p.items[0].offset, 8);
    assert_int_equal(p.items[0].len, 300);
    assert_int_equal(p.items[0].plain, 3 * 8192);
    assert_int_equal(p.items[1].pack, 1);
    assert_int_equal(p.items[1].block, 3);
    assert_int_equal(p.items[1].count, 1);
    assert_int_equal(p.items[2].offset, 400);
    assert_int_equal(p.items[2].len, 200);
    assert_int_equal(p.total_plain, 6 * 8192);
    restore_plan_free(&p);
}

static void test_plan_bounds_reads(void **state)
{
    (void)state;
    struct restore_plan p;
    wv_err_t err = {0};
    restore_plan_init(&p, 250);
    for (uint32_t i = 0; i < 5; i++) {
        struct block_ref b = ref(0, i, 8 + 100 * (uint64_t)i, 100);
        assert_int_equal(restore_plan_add(&p, 0, i, &b, &err), 0);
    }
    /* 100 + 100 fit in 250, a third would not */
    assert_int_equal(p.count, 3);
    assert_int_equal(p.items[0].count, 2);
    assert_int_equal(p.items[1].count, 2);
    assert_int_equal(p.items[2].count, 1);
    for (size_t i = 0; i < p.count; i++)
        assert_true(p.items[i].len <= 250);
    restore_plan_free(&p);
}

static json_t *manifest_with(json_t *blocks, json_int_t size, const char *path)
{
    return json_pack("{s:[s,s], s:[{s:s, s:s, s:I, s:o}]}", "packs", "p0", "p1", "files", "path",
                     path, "type", "file", "size", size, "blocks", blocks);
}

static int build(json_t *m, wv_err_t *err)
{
    struct restore_plan p;
    int rc = restore_plan_build(m, &p, err);
    if (rc == 0)
        restore_plan_free(&p);
    json_decref(m);
    return rc;
}

static void test_plan_build_runs_across_files(void **state)
{
    (void)state;
    json_t *m =
        json_pack("{s:[s], s:[{s:s, s:s, s:I, s:[[i,i,i,i,i,i]]}, {s:s, s:s},"
                  " {s:s, s:s, s:I, s:[[i,i,i,i,i,i]]}]}",
                  "packs", "p0", "files", "path", "a", "type", "file", "size", (json_int_t)10,
                  "blocks", 0, 0, 8, 60, 0, 10, "path", "d", "type", "dir", "path", "b", "type",
                  "file", "size", (json_int_t)10, "blocks", 0, 1, 68, 60, 0, 10);
    struct restore_plan p;
    wv_err_t err = {0};
    assert_non_null(m);
    assert_int_equal(restore_plan_build(m, &p, &err), 0);
    assert_int_equal(p.count, 1);
    assert_int_equal(p.items[0].file, 0);
    assert_int_equal(p.items[0].count, 2);
    assert_int_equal(p.items[0].len, 120);
    restore_plan_free(&p);
    json_decref(m);
}

static void test_plan_build_rejects(void **state)
{
    (void)state;
    wv_err_t err = {0};
    /* [pack, frame, offset, sealed_len, file_offset, plain_len] */
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 100, 0, 50), 50, "base/1/2"),
              &err),
        0);
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 2, 0, 8, 100, 0, 50), 50, "base/1/2"),
              &err),
        WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "base/1/2"));
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 100, 10, 50), 50, "base/1/2"),
              &err),
        WV_ECORRUPT);
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i],[i,i,i,i,i,i]]", 0, 0, 8, 100, 0,
                                                   50, 0, 1, 108, 100, 40, 10),
                                         100, "base/1/2"),
                           &err),
                     WV_ECORRUPT);
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 10, 0, 5), 5, "base/1/2"), &err),
        WV_ECORRUPT);
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i]]", 0, 0, 8, 100, 0), 50, "base/1/2"), &err),
        WV_ECORRUPT);
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 100, 0, 50), 50,
                                         "base/../../etc/passwd"),
                           &err),
                     WV_ECORRUPT);
}

static void test_path_is_safe(void **state)
{
    (void)state;
    assert_true(restore_path_is_safe("base/5/1259"));
    assert_true(restore_path_is_safe("pg_tblspc/16385/PG_15_202209061/5/100"));
    assert_true(restore_path_is_safe("..data"));
    assert_true(restore_path_is_safe("a/..b"));
    assert_false(restore_path_is_safe(NULL));
    assert_false(restore_path_is_safe(""));
    assert_false(restore_path_is_safe("/etc/passwd"));
    assert_false(restore_path_is_safe(".."));
    assert_false(restore_path_is_safe("../x"));
    assert_false(restore_path_is_safe("a/../../x"));
    assert_false(restore_path_is_safe("a/.."));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_zones),
        cmocka_unit_test(test_time_invalid),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_plan_coalesces_adjacent),
        cmocka_unit_test(test_plan_bounds_reads),
        cmocka_unit_test(test_plan_build_runs_across_files),
        cmocka_unit_test(test_plan_build_rejects),
        cmocka_unit_test(test_path_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
