/* Page checksums against real pages: tests/data/checksum_pages.bin is blocks 0-2 of a heap
 * table (3000 rows) from a PostgreSQL 15 cluster made with initdb --data-checksums, copied
 * after a CHECKPOINT and a clean shutdown; pg_checksums --check reported no bad blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backup/checksum.h"

#define SAMPLE_PAGES 3

static uint8_t pages[SAMPLE_PAGES][PG_PAGE_SIZE];

static int load_pages(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/checksum_pages.bin", TEST_DATA_DIR);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(pages, 1, sizeof pages, f);
    fclose(f);
    return n == sizeof pages ? 0 : -1;
}

static uint16_t stored_checksum(const uint8_t *page)
{
    uint16_t v;
    memcpy(&v, page + 8, sizeof v);
    return v;
}

static void test_real_pages_verify(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < SAMPLE_PAGES; b++) {
        assert_int_equal(pg_page_checksum(pages[b], b), stored_checksum(pages[b]));
        assert_true(pg_page_checksum_ok(pages[b], b));
    }
    /* Values as PostgreSQL wrote them (see the file with xxd, bytes 8-9 of each page). */
    assert_int_equal(pg_page_checksum(pages[0], 0), 0x6D48);
    assert_int_equal(pg_page_checksum(pages[1], 1), 0xD092);
}

static void test_page_lsn(void **state)
{
    (void)state;
    assert_int_equal(pg_page_lsn(pages[0]), UINT64_C(0x01780FA8));
    uint8_t page[PG_PAGE_SIZE] = {0};
    uint32_t xlogid = 0x16, xrecoff = 0xB374D848; /* 16/B374D848, native byte order */
    memcpy(page, &xlogid, 4);
    memcpy(page + 4, &xrecoff, 4);
    assert_int_equal(pg_page_lsn(page), UINT64_C(0x16B374D848));
}

static void test_flipped_byte_fails(void **state)
{
    (void)state;
    uint8_t page[PG_PAGE_SIZE];
    int tried = 0;
    for (uint32_t b = 0; b < SAMPLE_PAGES; b++) {
        for (size_t pos = 0; pos < PG_PAGE_SIZE; pos += (pos < 64 ? 1 : 61)) {
            if (pos == 14 || pos == 15)
                continue; /* pd_upper: covered by test_new_page_rules when it becomes 0 */
            memcpy(page, pages[b], sizeof page);
            page[pos] ^= 0x01;
            if (pg_page_checksum_ok(page, b))
                fail_msg("block %u: flipping byte %zu went unnoticed", b, pos);
            memcpy(page, pages[b], sizeof page);
            page[pos] ^= 0x80;
            if (pg_page_checksum_ok(page, b))
                fail_msg("block %u: flipping bit 7 of byte %zu went unnoticed", b, pos);
            tried++;
        }
    }
    assert_true(tried > 300);
    /* The input is left alone. */
    assert_true(pg_page_checksum_ok(pages[0], 0));
}

static void test_wrong_block_fails(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < SAMPLE_PAGES; b++) {
        for (uint32_t other = 0; other < SAMPLE_PAGES; other++)
            if (other != b)
                assert_false(pg_page_checksum_ok(pages[b], other));
        /* The same block in the next 1 GiB segment file. */
        assert_false(pg_page_checksum_ok(pages[b], b + PG_RELSEG_BLOCKS));
        assert_false(pg_page_checksum_ok(pages[b], UINT32_MAX));
    }
}

static void test_new_page_rules(void **state)
{
    (void)state;
    static uint8_t zero[PG_PAGE_SIZE];
    assert_true(pg_page_checksum_ok(zero, 0));
    assert_true(pg_page_checksum_ok(zero, 12345));

    uint8_t page[PG_PAGE_SIZE];
    const size_t positions[] = {0, 8, 9, 100, 5000, PG_PAGE_SIZE - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        memset(page, 0, sizeof page);
        page[positions[i]] = 1;
        if (pg_page_checksum_ok(page, 0))
            fail_msg("pd_upper 0 page with byte %zu set passed", positions[i]);
    }

    /* A real page whose pd_upper was zeroed is not a new page. */
    memcpy(page, pages[1], sizeof page);
    page[14] = 0;
    page[15] = 0;
    assert_false(pg_page_checksum_ok(page, 1));
}

static void test_unaligned_page(void **state)
{
    (void)state;
    static uint8_t buf[PG_PAGE_SIZE + 8];
    for (size_t off = 1; off < 8; off++) {
        memcpy(buf + off, pages[2], PG_PAGE_SIZE);
        assert_true(pg_page_checksum_ok(buf + off, 2));
        assert_int_equal(pg_page_lsn(buf + off), pg_page_lsn(pages[2]));
    }
}

static void test_checksum_never_zero(void **state)
{
    (void)state;
    uint8_t page[PG_PAGE_SIZE];
    uint32_t x = 2463534242u;
    for (int n = 0; n < 200; n++) {
        for (size_t i = 0; i < sizeof page; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            page[i] = (uint8_t)x;
        }
        uint16_t c = pg_page_checksum(page, (uint32_t)n);
        assert_true(c >= 1);
        /* The stored checksum field does not feed its own computation. */
        page[8] ^= 0xFF;
        assert_int_equal(pg_page_checksum(page, (uint32_t)n), c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_pages_verify),   cmocka_unit_test(test_page_lsn),
        cmocka_unit_test(test_flipped_byte_fails),  cmocka_unit_test(test_wrong_block_fails),
        cmocka_unit_test(test_new_page_rules),      cmocka_unit_test(test_unaligned_page),
        cmocka_unit_test(test_checksum_never_zero),
    };
    return cmocka_run_group_tests(tests, load_pages, NULL);
}
