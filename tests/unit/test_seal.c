/* The sealed format: round trips, and every kind of tampering fails with WV_ECORRUPT and an
 * error naming the object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lz4.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "crypto/internal.h"
#include "crypto/seal.h"

#define MIB ((size_t)1024 * 1024)
#define SEALED_MAX (64u * MIB)
#define NAME "nodes/x/backups/y"
#define OTHER_NAME "nodes/x/backups/z"
#define FRAME_MAX ((size_t)SEAL_CHUNK_MAX + SEAL_FRAME_OVERHEAD)

/* ---- helpers ---- */

static seal_keyring_t *ring_of(const char *seeds)
{
    size_t n = strlen(seeds);
    uint8_t *keys = malloc(n * SEAL_KEY_BYTES);
    assert_non_null(keys);
    for (size_t i = 0; i < n; i++)
        memset(keys + i * SEAL_KEY_BYTES, seeds[i], SEAL_KEY_BYTES);
    seal_keyring_t *kr = NULL;
    wv_err_t err;
    assert_int_equal(seal_keyring_from_bytes(keys, n, &kr, &err), 0);
    free(keys);
    return kr;
}

static uint8_t *random_data(size_t len, uint8_t seed)
{
    uint8_t s[randombytes_SEEDBYTES];
    memset(s, seed, sizeof s);
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    randombytes_buf_deterministic(p, len, s);
    return p;
}

/* Text with some variation: what lz4 does well on, like a heap page of similar rows. */
static uint8_t *compressible_data(size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    size_t off = 0;
    for (unsigned row = 0; off < len; row++) {
        char line[64];
        int n = snprintf(line, sizeof line, "row %u: customer %u ordered %u items\n", row, row % 97,
                         row % 13);
        size_t take = len - off < (size_t)n ? len - off : (size_t)n;
        memcpy(p + off, line, take);
        off += take;
    }
    return p;
}

static int sink_append(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return buf_append(ctx, data, len, err);
}

static void assert_msg_has(const wv_err_t *err, const char *needle)
{
    if (!strstr(err->msg, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err->msg, needle);
}

/* Seals with the streaming writer, written in pieces of `piece` bytes. */
static void seal_stream(const seal_keyring_t *kr, const char *name, const uint8_t *data, size_t len,
                        size_t piece, buf_t *sealed)
{
    seal_writer_t *w = NULL;
    wv_err_t err;
    buf_init(sealed, SEALED_MAX);
    assert_int_equal(seal_writer_new(kr, name, sink_append, sealed, &w, &err), 0);
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        assert_int_equal(seal_writer_write(w, data + off, n, &err), 0);
    }
    assert_int_equal(seal_writer_finish(w, &err), 0);
    seal_writer_free(w);
}

/* Opens with the reader fed in pieces; returns the first error. */
static int open_stream(const seal_keyring_t *kr, const char *name, const uint8_t *sealed,
                       size_t len, size_t piece, buf_t *plain, wv_err_t *err)
{
    seal_reader_t *r = NULL;
    buf_init(plain, SEALED_MAX);
    assert_int_equal(seal_reader_new(kr, name, sink_append, plain, &r, err), 0);
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        rc = seal_reader_feed(r, sealed + off, n, err);
    }
    if (rc == 0)
        rc = seal_reader_finish(r, err);
    seal_reader_free(r);
    return rc;
}

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

/* ---- tampering ---- */

/* A three-frame object of random bytes (so every frame is full size and uncompressed), with
 * the offset and size of each frame found by walking seal_frame_size. */
struct object {
    seal_keyring_t *kr;
    uint8_t *plain;
    size_t plain_len;
    buf_t sealed;
    size_t off[4];
    size_t size[4];
    size_t frames;
};

static void object_make(struct object *o, const char *name, uint8_t seed)
{
    o->kr = ring_of("A");
    o->plain_len = 2 * SEAL_CHUNK_MAX + 1000;
    o->plain = random_data(o->plain_len, seed);
    buf_init(&o->sealed, SEALED_MAX);
    wv_err_t err;
    assert_int_equal(seal_buffer(o->kr, name, o->plain, o->plain_len, &o->sealed, &err), 0);
    size_t off = SEAL_HEADER_BYTES;
    for (o->frames = 0; off < o->sealed.len; o->frames++) {
        int64_t n = seal_frame_size(o->sealed.data + off, o->sealed.len - off, &err);
        assert_true(n > 0);
        o->off[o->frames] = off;
        o->size[o->frames] = (size_t)n;
        off += (size_t)n;
    }
    assert_int_equal(off, o->sealed.len);
    assert_int_equal(o->frames, 3);
}

static void object_free(struct object *o)
{
    buf_free(&o->sealed);
    free(o->plain);
    seal_keyring_free(o->kr);
}

/* What reached the sink before the failure must be whole authenticated frames of the
 * original plaintext. */
static void assert_only_whole_frames(const struct object *o, const buf_t *got)
{
    assert_true(got->len <= o->plain_len);
    assert_true(got->len % SEAL_CHUNK_MAX == 0 || got->len == o->plain_len);
    if (got->len)
        assert_memory_equal(got->data, o->plain, got->len);
}

/* Every way of opening (one shot, reader whole, reader in 7-byte and 1000-byte pieces) must
 * fail with WV_ECORRUPT and an error naming the object and saying `why`. */
static void assert_corrupt_as(const struct object *o, const seal_keyring_t *kr, const char *name,
                              const uint8_t *bytes, size_t len, const char *why)
{
    wv_err_t err;
    buf_t plain;
    buf_init(&plain, SEALED_MAX);
    assert_int_equal(seal_open_buffer(kr, name, bytes, len, &plain, &err), WV_ECORRUPT);
    assert_int_equal(plain.len, 0);
    assert_msg_has(&err, name);
    assert_msg_has(&err, why);
    buf_free(&plain);
    const size_t pieces[] = {len ? len : 1, 7, 1000};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(open_stream(kr, name, bytes, len, pieces[i], &plain, &err), WV_ECORRUPT);
        assert_msg_has(&err, name);
        assert_msg_has(&err, why);
        assert_only_whole_frames(o, &plain);
        buf_free(&plain);
    }
}

static void assert_corrupt(const struct object *o, const uint8_t *bytes, size_t len,
                           const char *why)
{
    assert_corrupt_as(o, o->kr, NAME, bytes, len, why);
}

static uint8_t *copy_of(const struct object *o)
{
    uint8_t *p = malloc(o->sealed.len);
    assert_non_null(p);
    memcpy(p, o->sealed.data, o->sealed.len);
    return p;
}

static void assert_flip_fails(const struct object *o, size_t at, uint8_t mask, const char *why)
{
    uint8_t *p = copy_of(o);
    p[at] ^= mask;
    assert_corrupt(o, p, o->sealed.len, why);
    free(p);
}

static void test_untampered_object_opens(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    buf_t plain;
    wv_err_t err;
    assert_int_equal(open_stream(o.kr, NAME, o.sealed.data, o.sealed.len, 7, &plain, &err), 0);
    assert_int_equal(plain.len, o.plain_len);
    assert_memory_equal(plain.data, o.plain, o.plain_len);
    buf_free(&plain);
    object_free(&o);
}

static void test_tamper_object_header(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    for (size_t at = 0; at < SEAL_HEADER_BYTES; at++)
        assert_flip_fails(&o, at, 0x01, "bad header");
    object_free(&o);
}

/* sealed_len, plain_len, flags and key id of a middle frame, every byte, low and high bit. */
static void test_tamper_frame_header_fields(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    for (size_t at = 0; at < 17; at++) {
        assert_flip_fails(&o, o.off[1] + at, 0x01, "frame");
        assert_flip_fails(&o, o.off[1] + at, 0x80, "frame");
    }
    object_free(&o);
}

static void test_tamper_nonce(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    for (size_t at = 17; at < SEAL_FRAME_HEADER_BYTES; at += 5)
        assert_flip_fails(&o, o.off[1] + at, 0x04, "frame 1 failed authentication");
    object_free(&o);
}

static void test_tamper_ciphertext(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    size_t body = o.off[1] + SEAL_FRAME_HEADER_BYTES;
    assert_flip_fails(&o, body, 0x01, "frame 1 failed authentication");
    assert_flip_fails(&o, body + o.size[1] / 2, 0x10, "frame 1 failed authentication");
    assert_flip_fails(&o, o.off[2] + SEAL_FRAME_HEADER_BYTES + 3, 0x01,
                      "frame 2 failed authentication");
    object_free(&o);
}

static void test_tamper_tag(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    assert_flip_fails(&o, o.off[1] + o.size[1] - 1, 0x01, "frame 1 failed authentication");
    assert_flip_fails(&o, o.off[1] + o.size[1] - 16, 0x80, "frame 1 failed authentication");
    assert_flip_fails(&o, o.sealed.len - 1, 0x01, "frame 2 failed authentication");
    object_free(&o);
}

static void test_truncate_drop_final_frame(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    assert_corrupt(&o, o.sealed.data, o.off[2], "truncated (no final frame");
    assert_corrupt(&o, o.sealed.data, o.off[1], "truncated (no final frame");
    /* Dropping the last frame and marking the one before as final: the flag is bound. */
    uint8_t *p = copy_of(&o);
    p[o.off[1] + 8] |= SEAL_FLAG_FINAL;
    assert_corrupt(&o, p, o.off[2], "frame 1 failed authentication");
    free(p);
    object_free(&o);
}

static void test_truncate_mid_frame(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    const size_t cuts[] = {0,
                           4,
                           SEAL_HEADER_BYTES,
                           o.off[2] + 1,
                           o.off[2] + SEAL_FRAME_HEADER_BYTES - 1,
                           o.off[2] + SEAL_FRAME_HEADER_BYTES,
                           o.off[2] + o.size[2] / 2,
                           o.sealed.len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        assert_corrupt(&o, o.sealed.data, cuts[i], "truncated (no final frame");
    object_free(&o);
}

static void test_extend_with_bytes(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    uint8_t *p = malloc(o.sealed.len + 100);
    assert_non_null(p);
    memcpy(p, o.sealed.data, o.sealed.len);
    memset(p + o.sealed.len, 0, 100);
    assert_corrupt(&o, p, o.sealed.len + 1, "data after the final frame");
    assert_corrupt(&o, p, o.sealed.len + 100, "data after the final frame");
    free(p);
    object_free(&o);
}

/* A genuine frame, sealed with the right key, name and next index, still may not follow the
 * final one. */
static void test_extend_with_frame(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    wv_err_t err;
    buf_t ext;
    buf_init(&ext, SEALED_MAX);
    assert_int_equal(buf_append(&ext, o.sealed.data, o.sealed.len, &err), 0);
    assert_int_equal(seal_frame(o.kr, NAME, 3, true, "more", 4, &ext, &err), 0);
    assert_corrupt(&o, ext.data, ext.len, "data after the final frame");
    buf_free(&ext);
    object_free(&o);
}

static void test_reorder_frames(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    assert_int_equal(o.size[0], o.size[1]);
    uint8_t *p = copy_of(&o);
    memcpy(p + o.off[0], o.sealed.data + o.off[1], o.size[1]);
    memcpy(p + o.off[1], o.sealed.data + o.off[0], o.size[0]);
    assert_corrupt(&o, p, o.sealed.len, "frame 0 failed authentication");
    free(p);
    object_free(&o);
}

static void test_swap_frame_from_other_object(void **state)
{
    (void)state;
    struct object o, other;
    object_make(&o, NAME, 3);
    object_make(&other, OTHER_NAME, 4);
    assert_int_equal(o.size[1], other.size[1]);
    uint8_t *p = copy_of(&o);
    memcpy(p + o.off[1], other.sealed.data + other.off[1], other.size[1]);
    /* other was sealed under the same key bytes, so only the name tells them apart. */
    assert_corrupt(&o, p, o.sealed.len, "frame 1 failed authentication");
    free(p);
    object_free(&other);
    object_free(&o);
}

static void test_renamed_object(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    assert_corrupt_as(&o, o.kr, OTHER_NAME, o.sealed.data, o.sealed.len,
                      "frame 0 failed authentication");
    object_free(&o);
}

static void test_wrong_key(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    seal_keyring_t *other = ring_of("C");
    assert_corrupt_as(&o, other, NAME, o.sealed.data, o.sealed.len, "not in the key file");
    assert_corrupt_as(&o, other, NAME, o.sealed.data, o.sealed.len, seal_keyring_current_id(o.kr));
    seal_keyring_free(other);
    object_free(&o);
}

/* A frame whose key id is right but whose key bytes are not (as if the key file held a
 * different key with a colliding id) fails authentication rather than decrypting garbage. */
static void test_wrong_key_bytes_same_id(void **state)
{
    (void)state;
    struct object o;
    object_make(&o, NAME, 3);
    seal_keyring_t *forged = ring_of("C");
    memcpy(forged->keys[0].id, o.kr->keys[0].id, SEAL_KEY_ID_BYTES);
    assert_corrupt_as(&o, forged, NAME, o.sealed.data, o.sealed.len,
                      "frame 0 failed authentication");
    seal_keyring_free(forged);
    object_free(&o);
}

static void frame_key_id(const buf_t *sealed, char hex[SEAL_KEY_ID_HEX])
{
    sodium_bin2hex(hex, SEAL_KEY_ID_HEX, sealed->data + SEAL_HEADER_BYTES + 9, SEAL_KEY_ID_BYTES);
}

static void test_key_rotation(void **state)
{
    (void)state;
    seal_keyring_t *a = ring_of("A"), *b = ring_of("B"), *ba = ring_of("BA");
    uint8_t *data = compressible_data(3 * MIB);
    buf_t old_obj, new_obj, plain;
    wv_err_t err;
    seal_stream(a, NAME, data, 3 * MIB, 3 * MIB, &old_obj);
    seal_stream(ba, NAME, data, 3 * MIB, 3 * MIB, &new_obj);

    assert_int_equal(open_stream(ba, NAME, old_obj.data, old_obj.len, 4096, &plain, &err), 0);
    assert_int_equal(plain.len, 3 * MIB);
    assert_memory_equal(plain.data, data, 3 * MIB);
    buf_free(&plain);

    char hex[SEAL_KEY_ID_HEX];
    assert_string_equal(seal_keyring_current_id(ba), seal_keyring_current_id(b));
    frame_key_id(&new_obj, hex);
    assert_string_equal(hex, seal_keyring_current_id(b));
    frame_key_id(&old_obj, hex);
    assert_string_equal(hex, seal_keyring_current_id(a));
    assert_true(seal_keyring_has_id(ba, seal_keyring_current_id(a)));
    assert_false(seal_keyring_has_id(a, seal_keyring_current_id(b)));

    assert_int_equal(open_stream(a, NAME, new_obj.data, new_obj.len, 4096, &plain, &err),
                     WV_ECORRUPT);
    assert_msg_has(&err, "not in the key file");
    buf_free(&plain);

    buf_free(&old_obj);
    buf_free(&new_obj);
    free(data);
    seal_keyring_free(a);
    seal_keyring_free(b);
    seal_keyring_free(ba);
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

/* Frames the sealer never makes, but that authenticate: the checks after decryption hold. */
static void test_authenticated_bad_lz4(void **state)
{
    (void)state;
    seal_keyring_t *kr = ring_of("A");
    uint8_t junk[50];
    memset(junk, 0xff, sizeof junk);
    wv_err_t err;
    buf_t frame, plain;
    buf_init(&frame, FRAME_MAX);
    buf_init(&plain, SEAL_CHUNK_MAX);
    bool final;
    assert_int_equal(seal_frame_raw(kr, NAME, 0, SEAL_FLAG_FINAL | SEAL_FLAG_LZ4, 100, junk,
                                    sizeof junk, &frame, &err),
                     0);
    assert_int_equal(seal_open_frame(kr, NAME, 0, frame.data, frame.len, &plain, &final, &err),
                     WV_ECORRUPT);
    assert_msg_has(&err, "lz4");

    /* Valid lz4 of 90 bytes, but the header claims 100. */
    uint8_t text[90], lz[128];
    memset(text, 'a', sizeof text);
    int n = LZ4_compress_default((const char *)text, (char *)lz, sizeof text, sizeof lz);
    assert_true(n > 0 && n < 90);
    buf_reset(&frame);
    assert_int_equal(seal_frame_raw(kr, NAME, 0, SEAL_FLAG_FINAL | SEAL_FLAG_LZ4, 100, lz,
                                    (size_t)n, &frame, &err),
                     0);
    assert_int_equal(seal_open_frame(kr, NAME, 0, frame.data, frame.len, &plain, &final, &err),
                     WV_ECORRUPT);
    assert_int_equal(plain.len, 0);
    buf_free(&frame);
    buf_free(&plain);
    seal_keyring_free(kr);
}

/* ---- bounded memory ---- */

static void make_frame_header(uint8_t hdr[SEAL_FRAME_HEADER_BYTES], uint32_t sealed_len,
                              uint32_t plain_len, uint8_t flags)
{
    memset(hdr, 0, SEAL_FRAME_HEADER_BYTES);
    for (int i = 0; i < 4; i++) {
        hdr[i] = (uint8_t)(sealed_len >> (8 * i));
        hdr[4 + i] = (uint8_t)(plain_len >> (8 * i));
    }
    hdr[8] = flags;
}

static void test_impossible_frame_headers(void **state)
{
    (void)state;
    uint8_t hdr[SEAL_FRAME_HEADER_BYTES];
    wv_err_t err;
    make_frame_header(hdr, 116, 100, 0);
    assert_int_equal(seal_frame_size(hdr, sizeof hdr, &err), SEAL_FRAME_OVERHEAD + 100);
    assert_true(seal_frame_size(hdr, sizeof hdr - 1, &err) < 0);

    struct {
        uint32_t sealed_len, plain_len;
        uint8_t flags;
    } bad[] = {
        {SEAL_CHUNK_MAX + 17, SEAL_CHUNK_MAX + 1, 0}, /* more than one chunk */
        {UINT32_MAX, UINT32_MAX, SEAL_FLAG_LZ4},      /* lz4 bound of anything */
        {UINT32_MAX, 100, SEAL_FLAG_LZ4},             /* "compressed" but larger */
        {116, 100, SEAL_FLAG_LZ4},                    /* compressed, not smaller */
        {16, 100, SEAL_FLAG_LZ4},                     /* compressed to nothing */
        {117, 100, 0},                                /* lengths disagree */
        {15, 0, 0},                                   /* shorter than a tag */
        {116, 100, 0x04},                             /* unknown flag */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        make_frame_header(hdr, bad[i].sealed_len, bad[i].plain_len, bad[i].flags);
        assert_int_equal(seal_frame_size(hdr, sizeof hdr, &err), WV_ECORRUPT);

        /* The reader refuses on the header alone, before buffering any of the body. */
        seal_keyring_t *kr = ring_of("A");
        seal_reader_t *r = NULL;
        buf_t plain;
        buf_init(&plain, SEAL_CHUNK_MAX);
        assert_int_equal(seal_reader_new(kr, NAME, sink_append, &plain, &r, &err), 0);
        assert_int_equal(seal_reader_feed(r, "WVSEALv1", SEAL_HEADER_BYTES, &err), 0);
        assert_int_equal(seal_reader_feed(r, hdr, sizeof hdr, &err), WV_ECORRUPT);
        assert_msg_has(&err, NAME);
        assert_msg_has(&err, "impossible header");
        /* and stays failed */
        assert_int_equal(seal_reader_finish(r, &err), WV_ECORRUPT);
        seal_reader_free(r);
        buf_free(&plain);
        seal_keyring_free(kr);
    }
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

/* ---- keys ---- */

static char *temp_dir(void)
{
    char *dir = strdup("/tmp/test_seal.XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0); /* as a key file should be: no warning */
}

static void test_keygen(void **state)
{
    (void)state;
    char *dir = temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/repo.key", dir);
    wv_err_t err;
    mode_t old_mask = umask(0277); /* would strip the owner's read bit if not forced */
    assert_int_equal(seal_keygen(path, &err), 0);
    umask(old_mask);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, SEAL_KEY_BYTES * 2 + 1);

    char before[256];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(before, sizeof before, f));
    fclose(f);
    assert_int_equal(seal_keygen(path, &err), WV_EEXISTS);
    assert_msg_has(&err, path);
    assert_msg_has(&err, "refusing to overwrite");
    f = fopen(path, "r");
    char after[256];
    assert_non_null(f);
    assert_non_null(fgets(after, sizeof after, f));
    fclose(f);
    assert_string_equal(before, after);

    seal_keyring_t *kr = NULL;
    assert_int_equal(seal_keyring_load(path, &kr, &err), 0);
    assert_int_equal(kr->count, 1);
    assert_int_equal(strlen(seal_keyring_current_id(kr)), SEAL_KEY_ID_BYTES * 2);

    /* The key it loads is the key in the file. */
    uint8_t raw[SEAL_KEY_BYTES];
    assert_int_equal(sodium_hex2bin(raw, sizeof raw, before, 64, NULL, NULL, NULL), 0);
    seal_keyring_t *same = NULL;
    assert_int_equal(seal_keyring_from_bytes(raw, 1, &same, &err), 0);
    assert_string_equal(seal_keyring_current_id(kr), seal_keyring_current_id(same));
    seal_keyring_free(same);
    seal_keyring_free(kr);

    /* A second keygen makes a different key. */
    char path2[512];
    snprintf(path2, sizeof path2, "%s/second.key", dir);
    assert_int_equal(seal_keygen(path2, &err), 0);
    assert_int_equal(seal_keyring_load(path2, &kr, &err), 0);
    assert_int_equal(seal_keyring_load(path, &same, &err), 0);
    assert_string_not_equal(seal_keyring_current_id(kr), seal_keyring_current_id(same));
    seal_keyring_free(same);
    seal_keyring_free(kr);

    unlink(path);
    unlink(path2);
    rmdir(dir);
    free(dir);
}

static const char key_a_hex[] = "4141414141414141414141414141414141414141414141414141414141414141";
static const char key_b_hex[] = "4242424242424242424242424242424242424242424242424242424242424242";

static void assert_load_fails(const char *dir, const char *text, int code, const char *why)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad.key", dir);
    write_text(path, text);
    seal_keyring_t *kr = (seal_keyring_t *)1;
    wv_err_t err;
    assert_int_equal(seal_keyring_load(path, &kr, &err), code);
    assert_null(kr);
    assert_msg_has(&err, path);
    assert_msg_has(&err, why);
    assert_null(strchr(err.msg, '\n'));
    assert_null(strstr(err.msg, "4141414141")); /* a key never shows in an error */
    unlink(path);
}

static void test_keyring_load(void **state)
{
    (void)state;
    char *dir = temp_dir();
    char path[512];
    wv_err_t err;
    seal_keyring_t *kr = NULL;

    snprintf(path, sizeof path, "%s/missing.key", dir);
    assert_int_equal(seal_keyring_load(path, &kr, &err), WV_ENOTFOUND);
    assert_msg_has(&err, path);

    assert_load_fails(dir, "", WV_EUSAGE, "holds no key");
    assert_load_fails(dir, "# only a comment\n\n", WV_EUSAGE, "holds no key");
    char text[512];
    snprintf(text, sizeof text, "%.62s\n", key_a_hex);
    assert_load_fails(dir, text, WV_EUSAGE, "line 1: expected 64 hex digits, found 62");
    snprintf(text, sizeof text, "%.63sg\n", key_a_hex);
    assert_load_fails(dir, text, WV_EUSAGE, "line 1: not a key");
    snprintf(text, sizeof text, "%s\n%s41\n", key_a_hex, key_a_hex);
    assert_load_fails(dir, text, WV_EUSAGE, "line 2");

    /* Comments, blank lines, CRLF and surrounding spaces are fine; the first key is current. */
    snprintf(text, sizeof text, "# rotated 2024-05-01\r\n\r\n  %s \r\n%s\n", key_b_hex, key_a_hex);
    snprintf(path, sizeof path, "%s/good.key", dir);
    write_text(path, text);
    assert_int_equal(seal_keyring_load(path, &kr, &err), 0);
    assert_int_equal(kr->count, 2);
    seal_keyring_t *b = ring_of("B"), *a = ring_of("A");
    assert_string_equal(seal_keyring_current_id(kr), seal_keyring_current_id(b));
    assert_true(seal_keyring_has_id(kr, seal_keyring_current_id(a)));
    seal_keyring_free(a);
    seal_keyring_free(b);
    seal_keyring_free(kr);

    /* Loose permissions are worth a warning, not a refusal. */
    assert_int_equal(chmod(path, 0644), 0);
    log_set_level(LOG_ERROR);
    assert_int_equal(seal_keyring_load(path, &kr, &err), 0);
    log_set_level(LOG_INFO);
    seal_keyring_free(kr);
    unlink(path);

    rmdir(dir);
    free(dir);
}

static void test_block_hash(void **state)
{
    (void)state;
    seal_keyring_t *a = ring_of("A"), *a2 = ring_of("A"), *b = ring_of("B"), *ab = ring_of("AB");
    uint8_t page[8192];
    memset(page, 0x33, sizeof page);
    uint8_t h1[SEAL_HASH_BYTES], h2[SEAL_HASH_BYTES], h3[SEAL_HASH_BYTES];

    seal_block_hash(a, page, sizeof page, h1);
    seal_block_hash(a2, page, sizeof page, h2);
    assert_memory_equal(h1, h2, SEAL_HASH_BYTES); /* stable for one key */
    seal_block_hash(ab, page, sizeof page, h2);
    assert_memory_equal(h1, h2, SEAL_HASH_BYTES); /* follows the current key only */
    seal_block_hash(b, page, sizeof page, h3);
    assert_memory_not_equal(h1, h3, SEAL_HASH_BYTES); /* differs between keys */

    uint8_t plain_hash[SEAL_HASH_BYTES];
    crypto_generichash(plain_hash, sizeof plain_hash, page, sizeof page, NULL, 0);
    assert_memory_not_equal(h1, plain_hash, SEAL_HASH_BYTES); /* keyed */
    page[4000] ^= 1;
    seal_block_hash(a, page, sizeof page, h3);
    assert_memory_not_equal(h1, h3, SEAL_HASH_BYTES);

    seal_keyring_free(a);
    seal_keyring_free(a2);
    seal_keyring_free(b);
    seal_keyring_free(ab);
}

int main(void)
{
    wv_err_t err;
    if (seal_init(&err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_empty),
        cmocka_unit_test(test_round_trip_one_byte),
        cmocka_unit_test(test_round_trip_chunk_sizes),
        cmocka_unit_test(test_round_trip_random_5mib),
        cmocka_unit_test(test_round_trip_compressible_5mib),
        cmocka_unit_test(test_untampered_object_opens),
        cmocka_unit_test(test_tamper_object_header),
        cmocka_unit_test(test_tamper_frame_header_fields),
        cmocka_unit_test(test_tamper_nonce),
        cmocka_unit_test(test_tamper_ciphertext),
        cmocka_unit_test(test_tamper_tag),
        cmocka_unit_test(test_truncate_drop_final_frame),
        cmocka_unit_test(test_truncate_mid_frame),
        cmocka_unit_test(test_extend_with_bytes),
        cmocka_unit_test(test_extend_with_frame),
        cmocka_unit_test(test_reorder_frames),
        cmocka_unit_test(test_swap_frame_from_other_object),
        cmocka_unit_test(test_renamed_object),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_wrong_key_bytes_same_id),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_range_read_one_frame),
        cmocka_unit_test(test_authenticated_bad_lz4),
        cmocka_unit_test(test_impossible_frame_headers),
        cmocka_unit_test(test_seal_frame_rejects_oversized_plaintext),
        cmocka_unit_test(test_writer_errors_are_sticky),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_keyring_load),
        cmocka_unit_test(test_block_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
