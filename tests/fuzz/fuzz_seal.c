/* libFuzzer target for the sealed-object reader, the parser of bytes read back from the
 * store. The first input byte picks a mode:
 *   0: the rest is a sealed object as read from the store: the reader (fed in pieces of a
 *      fuzzer-chosen size) and the one-shot opener must agree, and must not crash;
 *   1: the rest is plaintext: sealed with the fixed key, then altered at a fuzzer-chosen
 *      place or not at all: altered must fail with WV_ECORRUPT, unaltered must round-trip;
 *   2: the rest is the body of a frame sealed as given (flags, plain_len chosen by the
 *      fuzzer), reaching the checks that run only after authentication (lz4 of any data).
 * A broken property aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/internal.h"
#include "crypto/seal.h"

#define NAME "nodes/fuzz/packs/0"
#define PLAIN_MAX ((size_t)4 * SEAL_CHUNK_MAX)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static seal_keyring_t *fixed_keyring(void)
{
    static seal_keyring_t *kr; /* the harness's own, built once: the library keeps no state */
    if (!kr) {
        uint8_t key[SEAL_KEY_BYTES];
        memset(key, 0x42, sizeof key);
        wv_err_t err;
        if (seal_init(&err) != 0 || seal_keyring_from_bytes(key, 1, &kr, &err) != 0)
            abort();
    }
    return kr;
}

static void require(int ok)
{
    if (!ok)
        abort();
}

static int sink_append(void *ctx, const void *plain, size_t len, wv_err_t *err)
{
    return buf_append(ctx, plain, len, err);
}

/* Reader fed in pieces of `piece` bytes; the plaintext it passed on ends up in plain. */
static int open_with_reader(const uint8_t *sealed, size_t len, size_t piece, buf_t *plain)
{
    seal_reader_t *r = NULL;
    wv_err_t err;
    require(seal_reader_new(fixed_keyring(), NAME, sink_append, plain, &r, &err) == 0);
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < len; off += piece)
        rc = seal_reader_feed(r, sealed + off, len - off < piece ? len - off : piece, &err);
    if (rc == 0)
        rc = seal_reader_finish(r, &err);
    seal_reader_free(r);
    return rc;
}

/* Both openers agree on the verdict and, on success, on the plaintext. */
static int open_both_ways(const uint8_t *sealed, size_t len, size_t piece, buf_t *plain)
{
    buf_t one_shot;
    wv_err_t err;
    buf_init(&one_shot, PLAIN_MAX);
    int rc_buf = seal_open_buffer(fixed_keyring(), NAME, sealed, len, &one_shot, &err);
    int rc = open_with_reader(sealed, len, piece, plain);
    require((rc == 0) == (rc_buf == 0));
    require(rc == 0 || rc == WV_ECORRUPT);
    if (rc == 0)
        require(plain->len == one_shot.len &&
                (plain->len == 0 || memcmp(plain->data, one_shot.data, plain->len) == 0));
    buf_free(&one_shot);
    return rc;
}

static void fuzz_raw(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t piece = (size_t)data[0] + 1;
    buf_t plain, frame;
    bool final;
    wv_err_t err;
    buf_init(&plain, PLAIN_MAX);
    open_both_ways(data + 1, size - 1, piece, &plain);
    buf_free(&plain);

    int64_t n = seal_frame_size(data + 1, size - 1, &err);
    require(n < 0 || (n >= SEAL_FRAME_OVERHEAD && n <= SEAL_FRAME_OVERHEAD + SEAL_CHUNK_MAX));
    buf_init(&frame, SEAL_CHUNK_MAX);
    seal_open_frame(fixed_keyring(), NAME, 0, data + 1, size - 1, &frame, &final, &err);
    buf_free(&frame);
}

static void fuzz_altered(const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    size_t piece = (size_t)data[0] + 1;
    uint16_t where = (uint16_t)(data[1] | data[2] << 8);
    uint8_t mask = data[3];
    const uint8_t *text = data + 4;
    size_t text_len = size - 4;

    buf_t sealed, plain;
    wv_err_t err;
    buf_init(&sealed, PLAIN_MAX + (size_t)64 * SEAL_FRAME_OVERHEAD);
    buf_init(&plain, PLAIN_MAX);
    require(seal_buffer(fixed_keyring(), NAME, text, text_len, &sealed, &err) == 0);
    size_t at = where % sealed.len;
    if (mask == 0) {
        require(open_both_ways(sealed.data, sealed.len, piece, &plain) == 0);
        require(plain.len == text_len && (text_len == 0 || !memcmp(plain.data, text, text_len)));
    } else if (mask == 0xff) {
        /* cut the object short at `at` */
        require(open_both_ways(sealed.data, at, piece, &plain) == WV_ECORRUPT);
    } else {
        sealed.data[at] ^= mask;
        require(open_both_ways(sealed.data, sealed.len, piece, &plain) == WV_ECORRUPT);
    }
    buf_free(&sealed);
    buf_free(&plain);
}

static void fuzz_forged_frame(const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    uint8_t flags = data[0];
    uint32_t plain_len = (uint32_t)(data[1] | data[2] << 8 | (data[3] & 0x1f) << 16);
    buf_t sealed, plain;
    wv_err_t err;
    buf_init(&sealed, PLAIN_MAX);
    buf_init(&plain, PLAIN_MAX);
    require(seal_header(&sealed, &err) == 0);
    require(seal_frame_raw(fixed_keyring(), NAME, 0, flags, plain_len, data + 4, size - 4, &sealed,
                           &err) == 0);
    if (open_both_ways(sealed.data, sealed.len, 4096, &plain) == 0)
        require(plain.len == plain_len && (flags & SEAL_FLAG_FINAL));
    buf_free(&sealed);
    buf_free(&plain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_raw(data + 1, size - 1);
        break;
    case 1:
        fuzz_altered(data + 1, size - 1);
        break;
    default:
        fuzz_forged_frame(data + 1, size - 1);
        break;
    }
    return 0;
}
