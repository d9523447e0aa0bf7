/* wal-stream's pure logic: the segment buffer, replication messages, slot names, whether
 * synchronous_standby_names names us, and the --sync-interval duration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/config.h"
#include "wal/stream_internal.h"

#define MIB (1024u * 1024u)

static void test_segment_buffer(void **state)
{
    (void)state;
    struct stream_seg s;
    wv_err_t err = {0};
    uint8_t data[300];
    size_t taken;
    memset(data, 7, sizeof data);
    assert_int_equal(stream_seg_init(&s, MIB, &err), 0);
    /* the repository holds 100 bytes of segment 5 already: the stream starts at 0 */
    stream_seg_reset(&s, 1, 5, 100);
    assert_int_equal(stream_seg_next(&s), 5 * MIB);
    assert_int_equal(stream_seg_put(&s, 5 * MIB, data, 80, &taken, &err), 0);
    assert_int_equal(taken, 80);
    assert_int_equal(stream_seg_pending(&s), 0); /* resent bytes are not new */
    assert_int_equal(stream_seg_put(&s, 5 * MIB + 80, data, 50, &taken, &err), 0);
    assert_int_equal(stream_seg_pending(&s), 30);
    /* bytes anywhere else are refused */
    assert_int_equal(stream_seg_put(&s, 5 * MIB + 200, data, 10, &taken, &err), WV_EFAIL);
    assert_int_equal(taken, 0);
    assert_non_null(strstr(err.msg, "0/500082"));
    /* a message crossing the segment's end fills it; the rest waits */
    s.received = MIB - 100;
    assert_int_equal(stream_seg_put(&s, 6 * MIB - 100, data, 300, &taken, &err), 0);
    assert_int_equal(taken, 100);
    assert_true(stream_seg_full(&s));
    stream_seg_free(&s);
    assert_int_equal(stream_seg_init(&s, 3 * MIB, &err), WV_EFAIL);
}

static void put64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xFF);
}

static void test_messages(void **state)
{
    (void)state;
    char buf[64] = {0};
    struct sconn_msg m;
    wv_err_t err = {0};
    buf[0] = 'w';
    put64(buf + 1, UINT64_C(0x100000028));
    memcpy(buf + 25, "abc", 3);
    assert_int_equal(sconn_parse_msg(buf, 28, &m, &err), 0);
    assert_int_equal(m.type, 'w');
    assert_int_equal(m.start, UINT64_C(0x100000028));
    assert_int_equal(m.len, 3);
    assert_memory_equal(m.data, "abc", 3);
    assert_int_equal(sconn_parse_msg(buf, 24, &m, &err), WV_EFAIL);

    memset(buf, 0, sizeof buf);
    buf[0] = 'k';
    assert_int_equal(sconn_parse_msg(buf, 18, &m, &err), 0);
    assert_false(m.reply_requested);
    buf[17] = 1;
    assert_int_equal(sconn_parse_msg(buf, 18, &m, &err), 0);
    assert_true(m.reply_requested);
    assert_int_equal(sconn_parse_msg(buf, 17, &m, &err), WV_EFAIL);
    buf[0] = 'x';
    assert_int_equal(sconn_parse_msg(buf, 18, &m, &err), WV_EFAIL);
    assert_int_equal(sconn_parse_msg(buf, 0, &m, &err), WV_EFAIL);
}

static void test_slot_names(void **state)
{
    (void)state;
    char slot[64];
    wal_stream_slot_name("db-1.Main", slot, sizeof slot);
    assert_string_equal(slot, "walvault_db_1_main");
    wal_stream_slot_name("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", slot,
                         sizeof slot);
    assert_int_equal(strlen(slot), 63);
}

static void test_standby_names(void **state)
{
    (void)state;
    assert_true(wal_stream_is_named("walvault", "walvault"));
    assert_true(wal_stream_is_named("s1, WalVault", "walvault"));
    assert_true(wal_stream_is_named("FIRST 1 (s1, walvault)", "walvault"));
    assert_true(wal_stream_is_named("ANY 1 (walvault,standby1)", "walvault"));
    assert_true(wal_stream_is_named("2(s1,walvault,s3)", "walvault"));
    assert_true(wal_stream_is_named("*", "anything"));
    assert_true(wal_stream_is_named("\"Wal,\"\"vault\"\"\"", "wal,\"vault\""));
    assert_false(wal_stream_is_named("", "walvault"));
    assert_false(wal_stream_is_named("s1, s2", "walvault"));
    assert_false(wal_stream_is_named("FIRST 1 (walvault_x)", "walvault"));
    assert_false(wal_stream_is_named("ANY 1 (first)", "any"));
    assert_true(wal_stream_is_named("ANY 1 (\"first\")", "first"));
}

static int duration(const char *text, double *out)
{
    char *argv[] = {"walvault", "--sync-interval", (char *)text, "wal-stream", NULL};
    char *env[] = {NULL};
    struct config cfg;
    wv_err_t err = {0};
    assert_int_equal(config_load(4, argv, env, &cfg, &err), 0);
    int rc = config_duration(&cfg, OPT_SYNC_INTERVAL, 0.001, 3600, out, &err);
    if (rc)
        assert_non_null(strstr(err.msg, "--sync-interval"));
    config_free(&cfg);
    return rc;
}

static void test_sync_interval(void **state)
{
    (void)state;
    double s;
    assert_int_equal(duration("1s", &s), 0);
    assert_true(s == 1.0);
    assert_int_equal(duration("200ms", &s), 0);
    assert_true(s > 0.1999 && s < 0.2001);
    assert_int_equal(duration("0.5", &s), 0);
    assert_true(s == 0.5);
    assert_int_equal(duration("2min", &s), 0);
    assert_true(s == 120.0);
    assert_int_equal(duration("0", &s), WV_EUSAGE);
    assert_int_equal(duration("1h", &s), 0);
    assert_true(s == 3600.0);
    assert_int_equal(duration("2h", &s), WV_EUSAGE); /* more than the maximum */
    assert_int_equal(duration("1d", &s), WV_EUSAGE);
    assert_int_equal(duration("fast", &s), WV_EUSAGE);
    assert_int_equal(duration("nan", &s), WV_EUSAGE);
    assert_int_equal(duration("-1s", &s), WV_EUSAGE);
    assert_int_equal(duration("2 s", &s), WV_EUSAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segment_buffer), cmocka_unit_test(test_messages),
        cmocka_unit_test(test_slot_names),     cmocka_unit_test(test_standby_names),
        cmocka_unit_test(test_sync_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
