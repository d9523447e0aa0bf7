/* The sealed format read back as written: round trips of empty, one-byte, chunk-sized and
 * multi-MiB objects through the streaming writer and reader in every piece size and through
 * the one-shot pair, the size of the framing, single frames opened alone by offset (a block
 * restore's range read), and the writer's refusals and sticky errors. Tampering is in
 * test_seal_tamper.c, keys in test_seal_keys.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "crypto/seal.h"
#include "seal_fixtures.h"

static size_t frames_for(size_t len)
{
    return len == 0 ? 1 : (len + SEAL_CHUNK_MAX - 1) / SEAL_CHUNK_MAX;
}

static void round_trip(const uint8_t *data, size_t len)
{
    seal_keyring_t *kr = ring_of("A");
    const size_t writer_pieces[] = {len <= 2 * MIB ? 1 : 65537, 4099, len ? len : 1};
    for (size_t w = 0; w < 3; w++) {
        buf_t sealed;
        seal_stream(kr, NAME, data, len, writer_pieces[w], &sealed);
        const size_t reader_pieces[] = {1, 7, sealed.len};
        for (size_t r = 0; r < 3; r++) {
            buf_t plain;
            wv_err_t err;
            int rc = open_stream(kr, NAME, sealed.data, sealed.len, reader_pieces[r], &plain, &err);
            if (rc)
                fail_msg("%s", err.msg);
            assert_int_equal(plain.len, len);
            if (len)
                assert_memory_equal(plain.data, data, len);
            buf_free(&plain);
        }
        buf_free(&sealed);
    }
    /* The one-shot pair reads the same format. */
    buf_t sealed, plain;
    wv_err_t err;
    buf_init(&sealed, SEALED_MAX);
    buf_init(&plain, SEALED_MAX);
    assert_int_equal(seal_buffer(kr, NAME, data, len, &sealed, &err), 0);
    assert_int_equal(seal_open_buffer(kr, NAME, sealed.data, sealed.len, &plain, &err), 0);
    assert_int_equal(plain.len, len);
    if (len)
        assert_memory_equal(plain.data, data, len);
    assert_true(sealed.len <= SEAL_HEADER_BYTES + frames_for(len) * SEAL_FRAME_OVERHEAD + len);
    buf_free(&sealed);
    buf_free(&plain);
    seal_keyring_free(kr);
}

static size_t sealed_size(const uint8_t *data, size_t len)
{
    seal_keyring_t *kr = ring_of("A");
    buf_t sealed;
    seal_stream(kr, NAME, data, len, len ? len : 1, &sealed);
    size_t n = sealed.len;
    buf_free(&sealed);
    seal_keyring_free(kr);
    return n;
}

/* ---- round trips ---- */

static void test_round_trip_empty(void **state)
{
    (void)state;
    round_trip(NULL, 0);
    assert_int_equal(sealed_size(NULL, 0), SEAL_HEADER_BYTES + SEAL_FRAME_OVERHEAD);
}

static void test_round_trip_one_byte(void **state)
{
    (void)state;
    uint8_t b = 0x5a;
    round_trip(&b, 1);
}

static void test_round_trip_chunk_sizes(void **state)
{
    (void)state;
    uint8_t *data = random_data(SEAL_CHUNK_MAX + 1, 1);
    round_trip(data, SEAL_CHUNK_MAX);
    round_trip(data, SEAL_CHUNK_MAX + 1);
    /* Exactly one chunk is one final frame; one byte more makes two. */
    assert_int_equal(sealed_size(data, SEAL_CHUNK_MAX),
                     SEAL_HEADER_BYTES + SEAL_FRAME_OVERHEAD + SEAL_CHUNK_MAX);
    assert_int_equal(sealed_size(data, SEAL_CHUNK_MAX + 1),
                     SEAL_HEADER_BYTES + 2 * SEAL_FRAME_OVERHEAD + SEAL_CHUNK_MAX + 1);
    free(data);
}

static void test_round_trip_random_5mib(void **state)
{
    (void)state;
    size_t len = 5 * MIB + 12345;
    uint8_t *data = random_data(len, 2);
    round_trip(data, len);
    /* Random data is stored uncompressed: only the framing is added. */
    assert_int_equal(sealed_size(data, len),
                     SEAL_HEADER_BYTES + frames_for(len) * SEAL_FRAME_OVERHEAD + len);
    free(data);
}

static void test_round_trip_compressible_5mib(void **state)
{
    (void)state;
    size_t len = 5 * MIB + 777;
    uint8_t *data = compressible_data(len);
    round_trip(data, len);
    assert_true(sealed_size(data, len) < len / 3);
    free(data);
}

/* One frame of a pack, read by offset and opened alone, as a block restore does. */
static void check_range_reads(const uint8_t *data, size_t len)
{
    seal_keyring_t *kr = ring_of("A");
    buf_t sealed, plain;
    wv_err_t err;
    bool final = true;
    seal_stream(kr, NAME, data, len, 100000, &sealed);
    /* An output limited to one chunk suffices: decompression does not borrow from it. */
    buf_init(&plain, SEAL_CHUNK_MAX);
    size_t off = SEAL_HEADER_BYTES;
    for (uint64_t i = 0; off < sealed.len; i++) {
        int64_t n = seal_frame_size(sealed.data + off, SEAL_FRAME_HEADER_BYTES, &err);
        assert_true(n > 0);
        size_t size = (size_t)n;
        const uint8_t *frame = sealed.data + off;
        assert_int_equal(seal_open_frame(kr, NAME, i, frame, size, &plain, &final, &err), 0);
        size_t want =
            len - i * SEAL_CHUNK_MAX < SEAL_CHUNK_MAX ? len - i * SEAL_CHUNK_MAX : SEAL_CHUNK_MAX;
        assert_int_equal(plain.len, want);
        assert_memory_equal(plain.data, data + i * SEAL_CHUNK_MAX, want);
        assert_int_equal(final, off + size == sealed.len);

        assert_int_equal(seal_open_frame(kr, NAME, i + 1, frame, size, &plain, &final, &err),
                         WV_ECORRUPT);
        assert_int_equal(seal_open_frame(kr, OTHER_NAME, i, frame, size, &plain, &final, &err),
                         WV_ECORRUPT);
        assert_msg_has(&err, OTHER_NAME);
        assert_int_equal(seal_open_frame(kr, NAME, i, frame, size - 1, &plain, &final, &err),
                         WV_ECORRUPT);
        assert_int_equal(seal_open_frame(kr, NAME, i, frame, size + 1, &plain, &final, &err),
                         WV_ECORRUPT);
        assert_int_equal(seal_open_frame(kr, NAME, i, frame, 10, &plain, &final, &err),
                         WV_ECORRUPT);
        off += size;
    }
    buf_free(&plain);
    buf_free(&sealed);
    seal_keyring_free(kr);
}

static void test_range_read_one_frame(void **state)
{
    (void)state;
    size_t len = 3 * SEAL_CHUNK_MAX + 5000;
    uint8_t *data = compressible_data(len);
    check_range_reads(data, len);
    free(data);
    data = random_data(len, 9);
    check_range_reads(data, len);
    free(data);
}

static void test_seal_frame_rejects_oversized_plaintext(void **state)
{
    (void)state;
    seal_keyring_t *kr = ring_of("A");
    uint8_t *data = random_data(SEAL_CHUNK_MAX + 1, 5);
    buf_t out;
    wv_err_t err;
    buf_init(&out, 4 * MIB);
    assert_int_equal(seal_frame(kr, NAME, 0, true, data, SEAL_CHUNK_MAX + 1, &out, &err),
                     WV_EUSAGE);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    free(data);
    seal_keyring_free(kr);
}

/* ---- writer behaviour ---- */

static int failing_sink(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    (void)ctx;
    (void)data;
    (void)len;
    return wv_err_set(err, WV_EFAIL, "upload failed");
}

static void test_writer_errors_are_sticky(void **state)
{
    (void)state;
    seal_keyring_t *kr = ring_of("A");
    seal_writer_t *w = NULL;
    wv_err_t err;
    assert_int_equal(seal_writer_new(kr, NAME, failing_sink, NULL, &w, &err), 0);
    assert_int_equal(seal_writer_write(w, "abc", 3, &err), 0); /* buffered, nothing sent */
    assert_int_equal(seal_writer_finish(w, &err), WV_EFAIL);
    assert_msg_has(&err, "upload failed");
    assert_int_equal(seal_writer_write(w, "abc", 3, &err), WV_EFAIL);
    assert_msg_has(&err, NAME);
    seal_writer_free(w);

    buf_t sealed;
    buf_init(&sealed, MIB);
    assert_int_equal(seal_writer_new(kr, NAME, sink_append, &sealed, &w, &err), 0);
    assert_int_equal(seal_writer_finish(w, &err), 0);
    assert_true(seal_writer_write(w, "x", 1, &err) != 0);
    seal_writer_free(w);
    buf_free(&sealed);
    seal_keyring_free(kr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_empty),
        cmocka_unit_test(test_round_trip_one_byte),
        cmocka_unit_test(test_round_trip_chunk_sizes),
        cmocka_unit_test(test_round_trip_random_5mib),
        cmocka_unit_test(test_round_trip_compressible_5mib),
        cmocka_unit_test(test_range_read_one_frame),
        cmocka_unit_test(test_seal_frame_rejects_oversized_plaintext),
        cmocka_unit_test(test_writer_errors_are_sticky),
    };
    return cmocka_run_group_tests(tests, seal_group_setup, NULL);
}
