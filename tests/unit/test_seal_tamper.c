/* Every kind of tampering with a sealed object fails with WV_ECORRUPT and an error naming the
 * object, whichever way it is opened: flipped bits in the object header, a frame's header,
 * nonce, ciphertext or tag; truncation (a dropped final frame, a cut mid-frame); extension;
 * reordered frames, a frame from another object, a renamed object; opening with a key that is
 * not in the key file or with other key bytes under the right key id; frames that
 * authenticate but hold bad lz4; and impossible frame headers, refused before any of the body
 * is buffered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/internal.h"
#include "crypto/seal.h"
#include "seal_fixtures.h"

#define FRAME_MAX ((size_t)SEAL_CHUNK_MAX + SEAL_FRAME_OVERHEAD)

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

int main(void)
{
    const struct CMUnitTest tests[] = {
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
        cmocka_unit_test(test_authenticated_bad_lz4),
        cmocka_unit_test(test_impossible_frame_headers),
    };
    return cmocka_run_group_tests(tests, seal_group_setup, NULL);
}
