/* Manifests: the summary a restore chooses by, and block references decoded strictly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backup/manifest.h"

static json_t *sample(void)
{
    return json_pack("{s:i, s:s, s:s, s:i, s:s, s:s, s:I, s:I, s:I, s:i, s:I, s:I}", "format",
                     MANIFEST_FORMAT, "id", "20261130T221500Z-abcdef", "type", "full", "timeline",
                     2, "start_lsn", "0/2000028", "stop_lsn", "1/A0000100", "start_time",
                     (json_int_t)1796000000, "stop_time", (json_int_t)1796000005, "stop_time_ms",
                     (json_int_t)1796000005123, "wal_seg_size", 16777216, "db_bytes",
                     (json_int_t)123456, "stored_bytes", (json_int_t)2345);
}

static void test_summary(void **state)
{
    (void)state;
    json_t *m = sample();
    struct manifest_summary s;
    wv_err_t err = {0};
    assert_int_equal(manifest_summary_get(m, &s, &err), 0);
    assert_string_equal(s.id, "20261130T221500Z-abcdef");
    assert_int_equal(s.timeline, 2);
    assert_true(s.start_lsn == 0x2000028);
    assert_true(s.stop_lsn == 0x1A0000100ULL);
    assert_true(s.stop_time_ms == 1796000005123LL);
    assert_int_equal(s.wal_seg_size, 16777216);
    json_decref(m);
}

static void test_summary_of_older_manifest_rounds_up(void **state)
{
    (void)state;
    json_t *m = sample();
    json_object_del(m, "stop_time_ms");
    struct manifest_summary s;
    wv_err_t err = {0};
    assert_int_equal(manifest_summary_get(m, &s, &err), 0);
    assert_true(s.stop_time_ms == 1796000005999LL);
    json_decref(m);
}

static void test_summary_rejects_bad_fields(void **state)
{
    (void)state;
    const char *fields[] = {"id", "start_lsn", "format"};
    for (size_t i = 0; i < 3; i++) {
        json_t *m = sample();
        json_object_del(m, fields[i]);
        struct manifest_summary s;
        wv_err_t err = {0};
        assert_true(manifest_summary_get(m, &s, &err) < 0);
        json_decref(m);
    }
    json_t *m = sample();
    json_object_set_new(m, "wal_seg_size", json_integer(12345));
    struct manifest_summary s;
    wv_err_t err = {0};
    assert_int_equal(manifest_summary_get(m, &s, &err), WV_ECORRUPT);
    json_decref(m);
}

static void test_block_round_trip(void **state)
{
    (void)state;
    struct block_ref b = {3, 17, 1234567890123ULL, 65536, 8u << 30, 1u << 20, 4096};
    json_t *file =
        json_pack("{s:s, s:[o]}", "path", "base/5/16384", "blocks", manifest_block_json(&b));
    struct block_ref *out;
    size_t n;
    wv_err_t err = {0};
    assert_int_equal(manifest_file_blocks(file, &out, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].pack, b.pack);
    assert_int_equal(out[0].frame, b.frame);
    assert_true(out[0].offset == b.offset);
    assert_int_equal(out[0].sealed_len, b.sealed_len);
    assert_true(out[0].file_offset == b.file_offset);
    assert_int_equal(out[0].plain_len, b.plain_len);
    assert_int_equal(out[0].skip, b.skip);
    free(out);
    json_decref(file);
}

static void test_block_rejects_malformed(void **state)
{
    (void)state;
    const char *bad[] = {"[[1,2,3]]", "[[1,2,3,4,5,-6]]", "[[1,2,3,4294967296,5,6]]",
                         "[[1,2,\"x\",4,5,6]]", "[7]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *file = json_pack("{s:s, s:o}", "path", "f", "blocks", json_loads(bad[i], 0, NULL));
        struct block_ref *out;
        size_t n;
        wv_err_t err = {0};
        assert_int_equal(manifest_file_blocks(file, &out, &n, &err), WV_ECORRUPT);
        json_decref(file);
    }
}

static void test_packed_round_trip(void **state)
{
    (void)state;
    /* the shapes an incremental makes: runs of one pack, parts of frames, jumps back */
    struct block_ref in[] = {
        {0, 0, 8, 70000, 0, 1 << 20, 0},
        {0, 1, 70008, 60000, 1 << 20, 8192, 0},
        {2, 5, 123456789, 9000, (1 << 20) + 8192, 16384, 8192},
        {0, 1, 70008, 60000, (1 << 20) + 24576, 1000000, 24576},
        {4294967295u, 4294967295u, 1ULL << 40, 1u << 20, 1ULL << 38, 1u << 20, 0},
    };
    size_t n = sizeof in / sizeof *in;
    json_t *file = json_pack("{s:s, s:s, s:I, s:o}", "path", "base/1/2", "type", "file", "nblocks",
                             (json_int_t)n, "blocks", manifest_blocks_pack(in, n));
    assert_int_equal(manifest_file_block_count(file), n);
    struct block_ref *out;
    size_t got;
    wv_err_t err = {0};
    assert_int_equal(manifest_file_blocks(file, &out, &got, &err), 0);
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].pack, in[i].pack);
        assert_int_equal(out[i].frame, in[i].frame);
        assert_true(out[i].offset == in[i].offset);
        assert_int_equal(out[i].sealed_len, in[i].sealed_len);
        assert_true(out[i].file_offset == in[i].file_offset);
        assert_int_equal(out[i].plain_len, in[i].plain_len);
        assert_int_equal(out[i].skip, in[i].skip);
    }
    free(out);
    /* a count the string cannot hold, and a damaged string, are refused */
    json_object_set_new(file, "nblocks", json_integer(100000));
    assert_int_equal(manifest_file_blocks(file, &out, &got, &err), WV_ECORRUPT);
    json_object_set_new(file, "nblocks", json_integer((json_int_t)n));
    json_object_set_new(file, "blocks", json_string("AAAA*"));
    assert_int_equal(manifest_file_blocks(file, &out, &got, &err), WV_ECORRUPT);
    json_decref(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_summary_of_older_manifest_rounds_up),
        cmocka_unit_test(test_summary_rejects_bad_fields),
        cmocka_unit_test(test_block_round_trip),
        cmocka_unit_test(test_block_rejects_malformed),
        cmocka_unit_test(test_packed_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
