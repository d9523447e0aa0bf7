/* WAL names, LSNs, timeline history files and segment headers. The header samples are the
 * first page of pg_wal/000000010000000000000001 right after a PostgreSQL 15 initdb, once with
 * the default 16 MiB segments and once with --wal-segsize=64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "wal/walname.h"

#define MIB (1024u * 1024u)

/* From pg_controldata of the clusters the samples were taken from. */
#define SAMPLE_16M_SYSID UINT64_C(7714087435062727584)
#define SAMPLE_64M_SYSID UINT64_C(7714087437925114798)

static void load_sample(const char *file, uint8_t page[8192])
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TEST_DATA_DIR, file);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(page, 1, 8192, f), 8192);
    fclose(f);
}

static void test_seg_size_valid(void **state)
{
    (void)state;
    for (uint32_t s = MIB; s <= 1024 * MIB; s *= 2)
        assert_true(wal_seg_size_valid(s));
    assert_false(wal_seg_size_valid(0));
    assert_false(wal_seg_size_valid(MIB / 2));
    assert_false(wal_seg_size_valid(2048 * MIB));
    assert_false(wal_seg_size_valid(3 * MIB));
    assert_false(wal_seg_size_valid(16 * MIB + 1));
    assert_false(wal_seg_size_valid(UINT32_MAX));
}

static void assert_name(uint32_t tli, uint64_t segno, uint32_t seg_size, const char *expected)
{
    char name[WAL_NAME_MAX];
    wal_segment_name(tli, segno, seg_size, name);
    assert_string_equal(name, expected);
}

static void test_segment_names_known(void **state)
{
    (void)state;
    assert_name(1, 1, 16 * MIB, "000000010000000000000001");
    assert_name(1, 255, 16 * MIB, "0000000100000000000000FF");
    assert_name(1, 256, 16 * MIB, "000000010000000100000000");
    assert_name(0xAB, 0x1234 * 256 + 0x5C, 16 * MIB, "000000AB000012340000005C");
    assert_name(1, 4095, MIB, "000000010000000000000FFF");
    assert_name(1, 4096, MIB, "000000010000000100000000");
    assert_name(2, 63, 64 * MIB, "00000002000000000000003F");
    assert_name(2, 64, 64 * MIB, "000000020000000100000000");
    assert_name(1, 3, 1024 * MIB, "000000010000000000000003");
    assert_name(1, 4, 1024 * MIB, "000000010000000100000000");
    assert_name(UINT32_MAX, UINT64_MAX / (16 * MIB), 16 * MIB, "FFFFFFFFFFFFFFFF000000FF");

    char name[WAL_NAME_MAX];
    wal_history_name(2, name);
    assert_string_equal(name, "00000002.history");
    wal_history_name(0x1A, name);
    assert_string_equal(name, "0000001A.history");
}

/* For every segment size: name -> parse -> segno, and LSN <-> segno, around the points
 * where the middle part of the name (the "xlogid") steps. */
static void test_segment_round_trips_every_size(void **state)
{
    (void)state;
    for (uint32_t size = MIB; size <= 1024 * MIB; size *= 2) {
        uint64_t per = UINT64_C(0x100000000) / size;
        uint64_t last = UINT64_MAX / size;
        uint64_t segnos[] = {0, 1, per - 1, per, per + 1, 7 * per + per / 2, last - 1, last};
        for (size_t i = 0; i < sizeof segnos / sizeof segnos[0]; i++) {
            uint64_t segno = segnos[i];
            char name[WAL_NAME_MAX];
            wal_segment_name(7, segno, size, name);
            assert_int_equal(strlen(name), WAL_NAME_LEN);

            char expected[WAL_NAME_MAX];
            snprintf(expected, sizeof expected, "00000007%08X%08X", (unsigned)(segno / per),
                     (unsigned)(segno % per));
            assert_string_equal(name, expected);

            struct wal_file f;
            wv_err_t err;
            assert_int_equal(wal_file_parse(name, size, &f, &err), 0);
            assert_int_equal(f.kind, WAL_KIND_SEGMENT);
            assert_int_equal(f.tli, 7);
            assert_int_equal(f.segno, segno);

            wal_lsn_t start = wal_segment_start(segno, size);
            assert_int_equal(start, segno * size);
            assert_int_equal(wal_segno_of(start, size), segno);
            assert_int_equal(wal_segno_of(start + size - 1, size), segno);
            if (segno > 0)
                assert_int_equal(wal_segno_of(start - 1, size), segno - 1);
            /* The name's middle part is the LSN's high half. */
            assert_int_equal(start >> 32, segno / per);
        }
        /* The first segment of xlogid 1 starts at LSN 1/0 for every size. */
        assert_int_equal(wal_segment_start(per, size), UINT64_C(0x100000000));
    }
}

static void test_lsn_parse_valid(void **state)
{
    (void)state;
    struct {
        const char *text;
        wal_lsn_t lsn;
    } cases[] = {
        {"0/0", 0},
        {"0/1", 1},
        {"16/B374D848", UINT64_C(0x16B374D848)},
        {"16/b374d848", UINT64_C(0x16B374D848)},
        {"aBc/DeF", UINT64_C(0xABC00000DEF)},
        {"00000001/00000000", UINT64_C(0x100000000)},
        {"FFFFFFFF/FFFFFFFF", UINT64_MAX},
        {"ffffffff/ffffffff", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wal_lsn_t lsn = 1234;
        wv_err_t err;
        assert_int_equal(wal_lsn_parse(cases[i].text, &lsn, &err), 0);
        assert_int_equal(lsn, cases[i].lsn);
    }
}

static void test_lsn_parse_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "/",
        "0/",
        "/0",
        "0",
        "00",
        "0/0 ",
        " 0/0",
        "0/0\n",
        "0x1/0",
        "1/0x1",
        "G/0",
        "0/G",
        "1/2/3",
        "-1/0",
        "+1/0",
        "1//2",
        "1/-2",
        "1 /2",
        "1/ 2",
        "123456789/0",
        "0/123456789",
        "100000000/0",
        "0/100000000",
        "FFFFFFFFF/0",
        "0/FFFFFFFFF",
        "1\\2",
        "1.2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wal_lsn_t lsn = 42;
        wv_err_t err;
        assert_int_equal(wal_lsn_parse(bad[i], &lsn, &err), WV_EUSAGE);
        assert_int_equal(err.code, WV_EUSAGE);
        assert_non_null(strstr(err.msg, "invalid LSN"));
        assert_null(strchr(err.msg, '\n'));
        assert_int_equal(lsn, 42);
    }
    wv_err_t err;
    wal_lsn_t lsn;
    assert_int_equal(wal_lsn_parse(NULL, &lsn, &err), WV_EUSAGE);
    assert_int_equal(wal_lsn_parse("0/0 trailing", &lsn, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "0/0 trailing"));
}

static void test_lsn_format(void **state)
{
    (void)state;
    char s[WAL_LSN_STR_MAX];
    wal_lsn_format(0, s);
    assert_string_equal(s, "0/0");
    wal_lsn_format(UINT64_C(0x16B374D848), s);
    assert_string_equal(s, "16/B374D848");
    wal_lsn_format(UINT64_C(0x100000000), s);
    assert_string_equal(s, "1/0");
    wal_lsn_format(UINT64_MAX, s);
    assert_string_equal(s, "FFFFFFFF/FFFFFFFF");

    wal_lsn_t samples[] = {0,
                           1,
                           0xFFFFFFFF,
                           UINT64_C(0x100000000),
                           UINT64_C(0xDEADBEEF00C0FFEE),
                           UINT64_MAX - 1,
                           UINT64_MAX};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        wal_lsn_t back;
        wv_err_t err;
        wal_lsn_format(samples[i], s);
        assert_int_equal(wal_lsn_parse(s, &back, &err), 0);
        assert_int_equal(back, samples[i]);
    }
}

static void assert_parses(const char *name, uint32_t seg_size, enum wal_file_kind kind,
                          uint32_t tli, uint64_t segno)
{
    struct wal_file f;
    wv_err_t err;
    memset(&f, 0xAA, sizeof f);
    int rc = wal_file_parse(name, seg_size, &f, &err);
    if (rc != 0)
        fail_msg("%s: %s", name, err.msg);
    assert_int_equal(f.kind, kind);
    assert_int_equal(f.tli, tli);
    if (kind != WAL_KIND_HISTORY)
        assert_int_equal(f.segno, segno);
}

static void test_file_kinds(void **state)
{
    (void)state;
    assert_parses("000000010000000000000001", 16 * MIB, WAL_KIND_SEGMENT, 1, 1);
    assert_parses("0000000300000002000000A0", 16 * MIB, WAL_KIND_SEGMENT, 3, 2 * 256 + 0xA0);
    assert_parses("000000010000000000000003.partial", 16 * MIB, WAL_KIND_PARTIAL, 1, 3);
    assert_parses("00000002000000010000003F.partial", 64 * MIB, WAL_KIND_PARTIAL, 2, 64 + 63);
    assert_parses("000000010000000000000003.00000028.backup", 16 * MIB, WAL_KIND_BACKUP, 1, 3);
    assert_parses("000000010000000100000002.00FFFFF8.backup", 16 * MIB, WAL_KIND_BACKUP, 1,
                  256 + 2);
    assert_parses("00000002.history", 16 * MIB, WAL_KIND_HISTORY, 2, 0);
    assert_parses("FFFFFFFF.history", 16 * MIB, WAL_KIND_HISTORY, UINT32_MAX, 0);
    /* A history name needs no segment size. */
    assert_parses("0000000A.history", 0, WAL_KIND_HISTORY, 10, 0);
    /* The same name means different segments for different sizes. */
    assert_parses("000000010000000100000003", MIB, WAL_KIND_SEGMENT, 1, 4096 + 3);
    assert_parses("000000010000000100000003", 1024 * MIB, WAL_KIND_SEGMENT, 1, 4 + 3);
}

static void assert_rejected(const char *name, uint32_t seg_size)
{
    struct wal_file f;
    wv_err_t err;
    int rc = wal_file_parse(name, seg_size, &f, &err);
    if (rc != WV_EUSAGE)
        fail_msg("\"%s\" accepted (rc %d)", name, rc);
    assert_int_equal(err.code, WV_EUSAGE);
    assert_null(strchr(err.msg, '\n'));
}

static void test_invalid_names(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "0",
        "00000001000000000000000",   /* 23 digits */
        "0000000100000000000000011", /* 25 digits */
        "00000001000000000000000a",  /* lowercase */
        "00000001000000000000000G",
        " 00000001000000000000000",
        "00000000000000000000000A", /* timeline 0 */
        "000000010000000000000001.",
        "000000010000000000000001.partia",
        "000000010000000000000001.partial.gz",
        "000000010000000000000001.PARTIAL",
        "000000010000000000000001.gz",
        "000000010000000000000001.tmp",
        "000000010000000000000001.backup",
        "000000010000000000000001.0000028.backup",
        "000000010000000000000001.000000028.backup",
        "000000010000000000000001.0000002g.backup",
        "000000010000000000000001.00000028.backu",
        "000000010000000000000001.00000028.backup.x",
        "000000010000000000000001.01000000.backup", /* offset beyond a 16 MiB segment */
        "00000002.histor",
        "00000002.history.tmp",
        "0000002.history",
        "000000002.history",
        "0000000g.history",
        "00000000.history",
        ".history",
        "history",
        "../000000010000000000000001",
        "000000010000000000000001/",
        "pg_wal/000000010000000000000001",
        "archive_status",
        "000000010000000000000001.ready",
        "000000010000000000000100", /* low part 0x100 is past 16 MiB's 0xFF */
        "0000000100000000FFFFFFFF",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_rejected(bad[i], 16 * MIB);

    /* Low part limits depend on the segment size. */
    assert_parses("000000010000000000000FFF", MIB, WAL_KIND_SEGMENT, 1, 4095);
    assert_rejected("000000010000000000001000", MIB);
    assert_parses("000000010000000000000003", 1024 * MIB, WAL_KIND_SEGMENT, 1, 3);
    assert_rejected("000000010000000000000004", 1024 * MIB);
    assert_rejected("000000010000000000000040.partial", 64 * MIB);
    assert_rejected("000000010000000000000004.00000028.backup", 1024 * MIB);

    /* A segment name with a bad segment size is refused, not misread. */
    assert_rejected("000000010000000000000001", 0);
    assert_rejected("000000010000000000000001", 3 * MIB);

    /* The message names the file, made printable. */
    struct wal_file f;
    wv_err_t err;
    assert_int_equal(wal_file_parse("0000000100000000000000011", 16 * MIB, &f, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "0000000100000000000000011"));
    assert_int_equal(wal_file_parse("bad\nname", 16 * MIB, &f, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "bad?name"));
    char long_name[4096];
    memset(long_name, 'A', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(wal_file_parse(long_name, 16 * MIB, &f, &err), WV_EUSAGE);
    assert_true(strlen(err.msg) < 200);
    assert_int_equal(wal_file_parse(NULL, 16 * MIB, &f, &err), WV_EUSAGE);
}

static void test_history_parse(void **state)
{
    (void)state;
    const char text[] = "1\t0/3000158\tno recovery target specified\n"
                        "\n"
                        "# a comment\n"
                        "   # an indented comment\n"
                        "2\t0/5000060\tat restore point \"before_drop\"\n"
                        "5\t1A/FF000028\tafter promotion\r\n"
                        "6\t1b/ab\n"
                        "7 \t  FFFFFFFF/FFFFFFFF  reason with  spaces";
    struct wal_history_entry e[8];
    wv_err_t err;
    int n = wal_history_parse(text, sizeof text - 1, e, 8, &err);
    if (n < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(n, 5);
    assert_int_equal(e[0].tli, 1);
    assert_int_equal(e[0].end_lsn, UINT64_C(0x3000158));
    assert_int_equal(e[1].tli, 2);
    assert_int_equal(e[1].end_lsn, UINT64_C(0x5000060));
    assert_int_equal(e[2].tli, 5);
    assert_int_equal(e[2].end_lsn, UINT64_C(0x1AFF000028));
    assert_int_equal(e[3].tli, 6);
    assert_int_equal(e[3].end_lsn, UINT64_C(0x1B000000AB));
    assert_int_equal(e[4].tli, 7);
    assert_int_equal(e[4].end_lsn, UINT64_MAX);

    /* Empty and comment-only files (timeline 1 has none) hold no entries. */
    assert_int_equal(wal_history_parse("", 0, e, 8, &err), 0);
    assert_int_equal(wal_history_parse("# nothing\n\n", 11, e, 8, &err), 0);
    /* Only len bytes are read. */
    assert_int_equal(wal_history_parse("1\t0/10\tx\n2\t0/20\tx\n", 9, e, 8, &err), 1);
}

static void assert_history_bad(const char *text, int code)
{
    struct wal_history_entry e[4];
    wv_err_t err;
    int rc = wal_history_parse(text, strlen(text), e, 4, &err);
    if (rc != code)
        fail_msg("\"%s\": got %d, want %d", text, rc, code);
    assert_null(strchr(err.msg, '\n'));
}

static void test_history_invalid(void **state)
{
    (void)state;
    assert_history_bad("2\t0/10\tx\n1\t0/20\tx\n", WV_ECORRUPT); /* decreasing */
    assert_history_bad("2\t0/10\tx\n2\t0/20\tx\n", WV_ECORRUPT); /* repeated */
    assert_history_bad("x\t0/10\treason\n", WV_ECORRUPT);
    assert_history_bad("1\n", WV_ECORRUPT);
    assert_history_bad("1\t\n", WV_ECORRUPT);
    assert_history_bad("1\t0/\n", WV_ECORRUPT);
    assert_history_bad("1\t/10\n", WV_ECORRUPT);
    assert_history_bad("1\t0x0/10\n", WV_ECORRUPT);
    assert_history_bad("1\t0/10x reason\n", WV_ECORRUPT);
    assert_history_bad("1\t123456789/10\n", WV_ECORRUPT);
    assert_history_bad("1\t0/123456789\n", WV_ECORRUPT);
    assert_history_bad("10/10\n", WV_ECORRUPT);
    assert_history_bad("0\t0/10\n", WV_ECORRUPT);
    assert_history_bad("4294967296\t0/10\n", WV_ECORRUPT);
    assert_history_bad("99999999999999999999999\t0/10\n", WV_ECORRUPT);
    assert_history_bad("-1\t0/10\n", WV_ECORRUPT);
    /* More entries than the caller has room for is an error, not a silent truncation. */
    assert_history_bad("1\t0/1\n2\t0/2\n3\t0/3\n4\t0/4\n5\t0/5\n", WV_EFAIL);

    struct wal_history_entry e[4];
    wv_err_t err;
    assert_int_equal(wal_history_parse("1\t0/1\n2\tzz\n", 11, e, 4, &err), WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "line 2"));
    const char with_nul[] = "1\t0/1\0garbage\n";
    assert_int_equal(wal_history_parse(with_nul, sizeof with_nul - 1, e, 4, &err), WV_ECORRUPT);
}

static void test_header_real_16m(void **state)
{
    (void)state;
    uint8_t page[8192];
    load_sample("wal_first_page.bin", page);
    struct wal_segment_header h;
    wv_err_t err;
    int rc = wal_segment_header_parse(page, sizeof page, &h, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(h.magic, 0xD110);
    assert_int_equal(h.tli, 1);
    assert_int_equal(h.pageaddr, UINT64_C(0x1000000)); /* segment 1 */
    assert_int_equal(h.system_identifier, SAMPLE_16M_SYSID);
    assert_int_equal(h.seg_size, 16 * MIB);
    assert_int_equal(h.block_size, 8192);
    assert_int_equal(wal_segno_of(h.pageaddr, h.seg_size), 1);

    /* Only the long header itself is needed. */
    assert_int_equal(wal_segment_header_parse(page, WAL_LONG_HEADER_BYTES, &h, &err), 0);
}

static void test_header_real_64m(void **state)
{
    (void)state;
    uint8_t page[8192];
    load_sample("wal_first_page_64m.bin", page);
    struct wal_segment_header h;
    wv_err_t err;
    int rc = wal_segment_header_parse(page, sizeof page, &h, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(h.magic, 0xD110);
    assert_int_equal(h.tli, 1);
    assert_int_equal(h.pageaddr, UINT64_C(0x4000000));
    assert_int_equal(h.system_identifier, SAMPLE_64M_SYSID);
    assert_int_equal(h.seg_size, 64 * MIB);
    assert_int_equal(h.block_size, 8192);
    char name[WAL_NAME_MAX];
    wal_segment_name(h.tli, wal_segno_of(h.pageaddr, h.seg_size), h.seg_size, name);
    assert_string_equal(name, "000000010000000000000001");
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof v);
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
}

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

static void assert_header_bad(const uint8_t *page, size_t len, const char *needle)
{
    struct wal_segment_header h;
    wv_err_t err;
    assert_int_equal(wal_segment_header_parse(page, len, &h, &err), WV_ECORRUPT);
    assert_int_equal(err.code, WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "not a WAL segment: "));
    if (!strstr(err.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_header_corrupt(void **state)
{
    (void)state;
    uint8_t orig[8192], page[8192];
    load_sample("wal_first_page.bin", orig);
    struct wal_segment_header h;
    wv_err_t err;

    assert_header_bad(orig, WAL_LONG_HEADER_BYTES - 1, "39 bytes");
    assert_header_bad(orig, 0, "0 bytes");

    /* Later releases' magics are accepted, anything else is not. */
    const uint16_t ok_magics[] = {0xD110, 0xD113, 0xD116};
    for (size_t i = 0; i < 3; i++) {
        memcpy(page, orig, sizeof page);
        put16(page, ok_magics[i]);
        assert_int_equal(wal_segment_header_parse(page, sizeof page, &h, &err), 0);
        assert_int_equal(h.magic, ok_magics[i]);
    }
    const uint16_t bad_magics[] = {0, 0xD10D, 0xD10F, 0xD111, 0xD114, 0xD117, 0x10D1, 0xFFFF};
    for (size_t i = 0; i < sizeof bad_magics / sizeof bad_magics[0]; i++) {
        memcpy(page, orig, sizeof page);
        put16(page, bad_magics[i]);
        assert_header_bad(page, sizeof page, "magic");
    }

    memcpy(page, orig, sizeof page);
    put16(page + 2, 0x0001); /* XLP_FIRST_IS_CONTRECORD only: a short header */
    assert_header_bad(page, sizeof page, "no long header");

    memcpy(page, orig, sizeof page);
    put32(page + 4, 0);
    assert_header_bad(page, sizeof page, "timeline 0");

    const uint32_t bad_sizes[] = {0, MIB / 2, 3 * MIB, 2048 * MIB, 16 * MIB + 8192};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        memcpy(page, orig, sizeof page);
        put32(page + 32, bad_sizes[i]);
        assert_header_bad(page, sizeof page, "segment size");
    }

    memcpy(page, orig, sizeof page);
    put64(page + 8, UINT64_C(0x1002000)); /* the second page, not a segment start */
    assert_header_bad(page, sizeof page, "1002000");

    memcpy(page, orig, sizeof page);
    put32(page + 32, 64 * MIB); /* 0/1000000 is not a 64 MiB boundary */
    assert_header_bad(page, sizeof page, "boundary");

    memcpy(page, orig, sizeof page);
    put32(page + 36, 1000);
    assert_header_bad(page, sizeof page, "block size");

    /* A segment of zeros (preallocated, never written) is not a WAL segment. */
    memset(page, 0, sizeof page);
    assert_header_bad(page, sizeof page, "magic");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seg_size_valid),
        cmocka_unit_test(test_segment_names_known),
        cmocka_unit_test(test_segment_round_trips_every_size),
        cmocka_unit_test(test_lsn_parse_valid),
        cmocka_unit_test(test_lsn_parse_invalid),
        cmocka_unit_test(test_lsn_format),
        cmocka_unit_test(test_file_kinds),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_history_parse),
        cmocka_unit_test(test_history_invalid),
        cmocka_unit_test(test_header_real_16m),
        cmocka_unit_test(test_header_real_64m),
        cmocka_unit_test(test_header_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
