/* The sealed-object format (see seal.h): framing, lz4, XChaCha20-Poly1305. */
#include "crypto/seal.h"

#include <inttypes.h>
#include <lz4.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/internal.h"

#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define NAME_HASH_BYTES 32
#define FRAME_MAX (SEAL_FRAME_OVERHEAD + SEAL_CHUNK_MAX)
/* Below this lz4 cannot win back its own framing; skip the attempt. */
#define COMPRESS_MIN 32

/* Where each field sits in the frame header. plain_len, flags and key id are contiguous so
 * the associated data can take them straight from the wire. */
enum {
    OFF_SEALED_LEN = 0,
    OFF_PLAIN_LEN = 4,
    OFF_FLAGS = 8,
    OFF_KEY_ID = 9,
    OFF_NONCE = 17,
};
#define BOUND_FIELDS_BYTES (OFF_NONCE - OFF_PLAIN_LEN)

/* header | BLAKE2b(name) | index | plain_len | flags | key id. Hashing the name keeps the
 * associated data fixed-size, so it lives on the stack whatever the name's length. */
#define AD_BYTES (SEAL_HEADER_BYTES + NAME_HASH_BYTES + 8 + BOUND_FIELDS_BYTES)

_Static_assert(OFF_NONCE + NONCE_BYTES == SEAL_FRAME_HEADER_BYTES, "frame header layout");
_Static_assert(SEAL_FRAME_OVERHEAD == SEAL_FRAME_HEADER_BYTES + TAG_BYTES, "frame overhead");
_Static_assert(SEAL_CHUNK_MAX <= INT32_MAX, "lz4 takes int sizes");

static const uint8_t seal_magic[SEAL_HEADER_BYTES] = {'W', 'V', 'S', 'E', 'A', 'L', 'v', '1'};

struct frame_info {
    uint32_t body_len; /* encrypted bytes before the tag: lz4 data or the plaintext */
    uint32_t plain_len;
    uint8_t flags;
};

int seal_init(wv_err_t *err)
{
    if (sodium_init() < 0)
        return wv_err_set(err, WV_EFAIL, "cannot initialise libsodium");
    return 0;
}

/* ---- little-endian fields ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- pieces shared by sealing and opening ---- */

static void name_hash(const char *name, uint8_t out[NAME_HASH_BYTES])
{
    crypto_generichash(out, NAME_HASH_BYTES, (const unsigned char *)name, strlen(name), NULL, 0);
}

static void ad_build(uint8_t ad[AD_BYTES], const uint8_t nh[NAME_HASH_BYTES], uint64_t index,
                     const uint8_t *frame_hdr)
{
    memcpy(ad, seal_magic, SEAL_HEADER_BYTES);
    memcpy(ad + SEAL_HEADER_BYTES, nh, NAME_HASH_BYTES);
    put_u64(ad + SEAL_HEADER_BYTES + NAME_HASH_BYTES, index);
    memcpy(ad + SEAL_HEADER_BYTES + NAME_HASH_BYTES + 8, frame_hdr + OFF_PLAIN_LEN,
           BOUND_FIELDS_BYTES);
}

static size_t frame_total(const struct frame_info *fi)
{
    return SEAL_FRAME_OVERHEAD + (size_t)fi->body_len;
}

/* Checks the header before anything is buffered or decrypted, so a forged length can make
 * us neither allocate more than one frame nor run lz4 into a bigger buffer. Returns what is
 * wrong, or NULL. */
static const char *frame_parse(const uint8_t *hdr, struct frame_info *fi)
{
    uint32_t sealed_len = get_u32(hdr + OFF_SEALED_LEN);
    fi->body_len = 0;
    fi->plain_len = get_u32(hdr + OFF_PLAIN_LEN);
    fi->flags = hdr[OFF_FLAGS];
    if (fi->flags & ~(SEAL_FLAG_FINAL | SEAL_FLAG_LZ4))
        return "unknown flags";
    if (fi->plain_len > SEAL_CHUNK_MAX)
        return "more plaintext than a frame may hold";
    if (sealed_len < TAG_BYTES)
        return "shorter than its tag";
    fi->body_len = sealed_len - TAG_BYTES;
    /* The sealer compresses only when that makes the frame smaller. */
    if ((fi->flags & SEAL_FLAG_LZ4) && (fi->body_len == 0 || fi->body_len >= fi->plain_len))
        return "compressed data not smaller than its plaintext";
    if (!(fi->flags & SEAL_FLAG_LZ4) && fi->body_len != fi->plain_len)
        return "lengths disagree";
    return NULL;
}

static int frame_parse_named(const char *name, uint64_t index, const uint8_t *hdr,
                             struct frame_info *fi, wv_err_t *err)
{
    const char *problem = frame_parse(hdr, fi);
    if (!problem)
        return 0;
    return wv_err_set(err, WV_ECORRUPT,
                      "sealed object %s: frame %" PRIu64 " has an impossible header (%s)", name,
                      index, problem);
}

int64_t seal_frame_size(const void *hdr, size_t avail, wv_err_t *err)
{
    if (avail < SEAL_FRAME_HEADER_BYTES)
        return wv_err_set(err, WV_ECORRUPT, "sealed frame header cut short (%zu of %d bytes)",
                          avail, SEAL_FRAME_HEADER_BYTES);
    struct frame_info fi;
    const char *problem = frame_parse(hdr, &fi);
    if (problem)
        return wv_err_set(err, WV_ECORRUPT, "sealed frame has an impossible header (%s)", problem);
    return (int64_t)frame_total(&fi);
}

/* ---- sealing ---- */

/* lz4 into dst, which has room for len bytes; 0 when the result would not be smaller. */
static size_t try_compress(const uint8_t *plain, size_t len, uint8_t *dst)
{
    if (len < COMPRESS_MIN)
        return 0;
    /* A capacity one short of the input makes lz4 give up as soon as it cannot win. */
    int n = LZ4_compress_default((const char *)plain, (char *)dst, (int)len, (int)len - 1);
    return n > 0 ? (size_t)n : 0;
}

/* Fills the header at hdr and encrypts src into the body right after it (src may be that
 * body itself: in-place). */
static void frame_encrypt(const struct seal_key *key, const uint8_t nh[NAME_HASH_BYTES],
                          uint64_t index, uint8_t flags, uint32_t plain_len, const uint8_t *src,
                          size_t body_len, uint8_t *hdr)
{
    put_u32(hdr + OFF_SEALED_LEN, (uint32_t)(body_len + TAG_BYTES));
    put_u32(hdr + OFF_PLAIN_LEN, plain_len);
    hdr[OFF_FLAGS] = flags;
    memcpy(hdr + OFF_KEY_ID, key->id, SEAL_KEY_ID_BYTES);
    randombytes_buf(hdr + OFF_NONCE, NONCE_BYTES);
    uint8_t ad[AD_BYTES];
    ad_build(ad, nh, index, hdr);
    crypto_aead_xchacha20poly1305_ietf_encrypt(hdr + SEAL_FRAME_HEADER_BYTES, NULL, src, body_len,
                                               ad, sizeof ad, NULL, hdr + OFF_NONCE, key->key);
}

/* Appends one frame; lz4 writes straight into out and is encrypted in place, so a frame
 * costs no copy of its plaintext. */
static int frame_seal_append(const struct seal_key *key, const uint8_t nh[NAME_HASH_BYTES],
                             uint64_t index, bool final, const void *plain, size_t len, buf_t *out,
                             wv_err_t *err)
{
    int rc = buf_reserve(out, SEAL_FRAME_OVERHEAD + len, err);
    if (rc)
        return rc;
    uint8_t *hdr = out->data + out->len;
    uint8_t *body = hdr + SEAL_FRAME_HEADER_BYTES;
    uint8_t flags = final ? SEAL_FLAG_FINAL : 0;
    size_t body_len = try_compress(plain, len, body);
    const uint8_t *src = body;
    if (body_len)
        flags |= SEAL_FLAG_LZ4;
    else {
        body_len = len;
        src = plain;
    }
    frame_encrypt(key, nh, index, flags, (uint32_t)len, src, body_len, hdr);
    out->len += SEAL_FRAME_OVERHEAD + body_len;
    return 0;
}

int seal_header(buf_t *out, wv_err_t *err)
{
    return buf_append(out, seal_magic, sizeof seal_magic, err);
}

int seal_frame(const seal_keyring_t *kr, const char *name, uint64_t index, bool final,
               const void *plain, size_t len, buf_t *out, wv_err_t *err)
{
    if (len > SEAL_CHUNK_MAX)
        return wv_err_set(err, WV_EUSAGE,
                          "sealing object %s: frame %" PRIu64 " of %zu bytes exceeds %u", name,
                          index, len, SEAL_CHUNK_MAX);
    uint8_t nh[NAME_HASH_BYTES];
    name_hash(name, nh);
    return frame_seal_append(&kr->keys[0], nh, index, final, plain, len, out, err);
}

int seal_frame_raw(const seal_keyring_t *kr, const char *name, uint64_t index, uint8_t flags,
                   uint32_t plain_len, const void *body, size_t body_len, buf_t *out, wv_err_t *err)
{
    if (body_len > FRAME_MAX)
        return wv_err_set(err, WV_EUSAGE, "raw frame body of %zu bytes too large", body_len);
    uint8_t nh[NAME_HASH_BYTES];
    name_hash(name, nh);
    int rc = buf_reserve(out, SEAL_FRAME_OVERHEAD + body_len, err);
    if (rc)
        return rc;
    uint8_t *hdr = out->data + out->len;
    frame_encrypt(&kr->keys[0], nh, index, flags, plain_len, body, body_len, hdr);
    out->len += SEAL_FRAME_OVERHEAD + body_len;
    return 0;
}

int seal_buffer(const seal_keyring_t *kr, const char *name, const void *plain, size_t len,
                buf_t *out, wv_err_t *err)
{
    uint8_t nh[NAME_HASH_BYTES];
    name_hash(name, nh);
    int rc = seal_header(out, err);
    size_t off = 0;
    uint64_t index = 0;
    /* do-while: an empty object still gets its (empty) final frame. */
    do {
        size_t n = len - off < SEAL_CHUNK_MAX ? len - off : SEAL_CHUNK_MAX;
        const uint8_t *src = len ? (const uint8_t *)plain + off : plain;
        if (rc == 0)
            rc = frame_seal_append(&kr->keys[0], nh, index++, off + n == len, src, n, out, err);
        off += n;
    } while (rc == 0 && off < len);
    return rc;
}

/* ---- opening ---- */

static int check_magic(const char *name, const uint8_t *hdr, wv_err_t *err)
{
    if (memcmp(hdr, seal_magic, SEAL_HEADER_BYTES) == 0)
        return 0;
    return wv_err_set(err, WV_ECORRUPT,
                      "sealed object %s: bad header (not a walvault sealed object, or a format "
                      "version this build does not know)",
                      name);
}

static int truncated(const char *name, wv_err_t *err)
{
    return wv_err_set(err, WV_ECORRUPT, "sealed object %s: truncated (no final frame)", name);
}

static int data_after_final(const char *name, wv_err_t *err)
{
    return wv_err_set(err, WV_ECORRUPT, "sealed object %s: data after the final frame", name);
}

/* Authenticates the whole frame at `frame` and writes its body_len decrypted bytes to dst
 * (which may be the frame's own body: in-place). Nothing reaches dst unless the tag holds. */
static int frame_decrypt(const seal_keyring_t *kr, const char *name,
                         const uint8_t nh[NAME_HASH_BYTES], uint64_t index, const uint8_t *frame,
                         const struct frame_info *fi, uint8_t *dst, wv_err_t *err)
{
    const struct seal_key *key = seal_keyring_find(kr, frame + OFF_KEY_ID);
    if (!key) {
        char hex[SEAL_KEY_ID_HEX];
        sodium_bin2hex(hex, sizeof hex, frame + OFF_KEY_ID, SEAL_KEY_ID_BYTES);
        return wv_err_set(err, WV_ECORRUPT,
                          "sealed object %s: frame %" PRIu64
                          " sealed with key id %s which is not in the key file",
                          name, index, hex);
    }
    uint8_t ad[AD_BYTES];
    ad_build(ad, nh, index, frame);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(dst, NULL, NULL, frame + SEAL_FRAME_HEADER_BYTES,
                                                   fi->body_len + TAG_BYTES, ad, sizeof ad,
                                                   frame + OFF_NONCE, key->key) != 0)
        return wv_err_set(err, WV_ECORRUPT,
                          "sealed object %s: frame %" PRIu64
                          " failed authentication (altered, renamed, swapped or wrong key)",
                          name, index);
    return 0;
}

/* Reached only with authenticated data, so a failure here means a bug or a stolen key. */
static int frame_inflate(const char *name, uint64_t index, const uint8_t *src,
                         const struct frame_info *fi, uint8_t *dst, wv_err_t *err)
{
    int n =
        LZ4_decompress_safe((const char *)src, (char *)dst, (int)fi->body_len, (int)fi->plain_len);
    if (n == (int)fi->plain_len)
        return 0;
    return wv_err_set(err, WV_ECORRUPT,
                      "sealed object %s: frame %" PRIu64
                      " authenticated but its lz4 data does not decompress to %" PRIu32 " bytes",
                      name, index, fi->plain_len);
}

/* Decrypts (and inflates) one whole frame, appending the plaintext to out. scratch holds
 * the lz4 data between the two steps and is kept for the next frame. */
static int frame_open_append(const seal_keyring_t *kr, const char *name,
                             const uint8_t nh[NAME_HASH_BYTES], uint64_t index,
                             const uint8_t *frame, const struct frame_info *fi, buf_t *scratch,
                             buf_t *out, wv_err_t *err)
{
    int rc = buf_reserve(out, fi->plain_len, err);
    if (rc)
        return rc;
    uint8_t *dst = out->data ? out->data + out->len : NULL; /* NULL only for 0 bytes */
    if (!(fi->flags & SEAL_FLAG_LZ4))
        rc = frame_decrypt(kr, name, nh, index, frame, fi, dst, err);
    else {
        buf_reset(scratch);
        rc = buf_reserve(scratch, fi->body_len, err);
        if (rc == 0)
            rc = frame_decrypt(kr, name, nh, index, frame, fi, scratch->data, err);
        if (rc == 0)
            rc = frame_inflate(name, index, scratch->data, fi, dst, err);
    }
    if (rc == 0)
        out->len += fi->plain_len;
    return rc;
}

int seal_open_frame(const seal_keyring_t *kr, const char *name, uint64_t index, const void *frame,
                    size_t len, buf_t *out, bool *final, wv_err_t *err)
{
    buf_reset(out);
    *final = false;
    if (len < SEAL_FRAME_HEADER_BYTES)
        return wv_err_set(err, WV_ECORRUPT,
                          "sealed object %s: frame %" PRIu64 " cut short (%zu bytes)", name, index,
                          len);
    struct frame_info fi;
    int rc = frame_parse_named(name, index, frame, &fi, err);
    if (rc)
        return rc;
    if (len != frame_total(&fi))
        return wv_err_set(err, WV_ECORRUPT,
                          "sealed object %s: frame %" PRIu64
                          " is %zu bytes but its header says %zu",
                          name, index, len, frame_total(&fi));
    uint8_t nh[NAME_HASH_BYTES];
    name_hash(name, nh);
    buf_t scratch;
    buf_init(&scratch, FRAME_MAX);
    rc = frame_open_append(kr, name, nh, index, frame, &fi, &scratch, out, err);
    buf_free(&scratch);
    if (rc == 0)
        *final = fi.flags & SEAL_FLAG_FINAL;
    return rc;
}

/* Opens the frame at the start of p[0..avail) and returns its size. */
static int64_t buffer_open_frame(const seal_keyring_t *kr, const char *name,
                                 const uint8_t nh[NAME_HASH_BYTES], uint64_t index,
                                 const uint8_t *p, size_t avail, buf_t *scratch, buf_t *out,
                                 bool *final, wv_err_t *err)
{
    struct frame_info fi;
    if (avail < SEAL_FRAME_HEADER_BYTES)
        return truncated(name, err);
    int rc = frame_parse_named(name, index, p, &fi, err);
    if (rc)
        return rc;
    if (avail < frame_total(&fi))
        return truncated(name, err);
    rc = frame_open_append(kr, name, nh, index, p, &fi, scratch, out, err);
    if (rc)
        return rc;
    *final = fi.flags & SEAL_FLAG_FINAL;
    return (int64_t)frame_total(&fi);
}

static int buffer_open_frames(const seal_keyring_t *kr, const char *name, const uint8_t *p,
                              size_t len, buf_t *scratch, buf_t *out, wv_err_t *err)
{
    uint8_t nh[NAME_HASH_BYTES];
    name_hash(name, nh);
    size_t off = SEAL_HEADER_BYTES;
    bool final = false;
    for (uint64_t index = 0; !final; index++) {
        int64_t n =
            buffer_open_frame(kr, name, nh, index, p + off, len - off, scratch, out, &final, err);
        if (n < 0)
            return (int)n;
        off += (size_t)n;
    }
    return off == len ? 0 : data_after_final(name, err);
}

int seal_open_buffer(const seal_keyring_t *kr, const char *name, const void *sealed, size_t len,
                     buf_t *out, wv_err_t *err)
{
    buf_reset(out);
    if (len < SEAL_HEADER_BYTES)
        return truncated(name, err);
    int rc = check_magic(name, sealed, err);
    if (rc)
        return rc;
    buf_t scratch;
    buf_init(&scratch, FRAME_MAX);
    rc = buffer_open_frames(kr, name, sealed, len, &scratch, out, err);
    buf_free(&scratch);
    if (rc)
        buf_reset(out); /* no partial plaintext from an object that failed */
    return rc;
}

/* ---- the incremental reader ---- */

enum reader_state { RS_HEADER, RS_FRAMES, RS_DONE };

struct seal_reader {
    const seal_keyring_t *kr;
    char *name;
    uint8_t name_hash[NAME_HASH_BYTES];
    seal_sink_fn sink;
    void *ctx;
    enum reader_state state;
    int failed; /* sticky: the code of the first error */
    uint64_t index;
    uint8_t header[SEAL_HEADER_BYTES];
    size_t header_len;
    buf_t frame;       /* the current frame while it arrives in pieces: at most one frame */
    size_t frame_size; /* its total size once its header is in, else 0 */
    buf_t plain;       /* an lz4 frame's inflated plaintext */
};

int seal_reader_new(const seal_keyring_t *kr, const char *name, seal_sink_fn sink, void *ctx,
                    seal_reader_t **out, wv_err_t *err)
{
    *out = NULL;
    seal_reader_t *r = calloc(1, sizeof *r);
    if (r)
        r->name = strdup(name);
    if (!r || !r->name) {
        free(r);
        return wv_err_set(err, WV_EFAIL, "out of memory opening sealed object %s", name);
    }
    r->kr = kr;
    name_hash(name, r->name_hash);
    r->sink = sink;
    r->ctx = ctx;
    buf_init(&r->frame, FRAME_MAX);
    buf_init(&r->plain, SEAL_CHUNK_MAX);
    *out = r;
    return 0;
}

void seal_reader_free(seal_reader_t *r)
{
    if (!r)
        return;
    buf_free(&r->frame);
    buf_free(&r->plain);
    free(r->name);
    free(r);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static int reader_take_header(seal_reader_t *r, const uint8_t *p, size_t len, size_t *used,
                              wv_err_t *err)
{
    size_t n = min_size(SEAL_HEADER_BYTES - r->header_len, len);
    memcpy(r->header + r->header_len, p, n);
    r->header_len += n;
    *used = n;
    if (r->header_len < SEAL_HEADER_BYTES)
        return 0;
    r->state = RS_FRAMES;
    return check_magic(r->name, r->header, err);
}

/* Authenticates, decrypts and hands on one whole frame. When the frame is still in the
 * caller's bytes it is decrypted from there into our buffer; when it was gathered in our
 * buffer it is decrypted in place: either way its bytes are copied at most once. */
static int reader_open(seal_reader_t *r, const uint8_t *frame, const struct frame_info *fi,
                       wv_err_t *err)
{
    bool in_place = frame == r->frame.data;
    int rc = in_place ? 0 : buf_reserve(&r->frame, fi->body_len, err);
    if (rc)
        return rc;
    uint8_t *body = in_place ? r->frame.data + SEAL_FRAME_HEADER_BYTES : r->frame.data;
    rc = frame_decrypt(r->kr, r->name, r->name_hash, r->index, frame, fi, body, err);
    const uint8_t *plain = body;
    if (rc == 0 && (fi->flags & SEAL_FLAG_LZ4)) {
        rc = buf_reserve(&r->plain, fi->plain_len, err);
        if (rc == 0)
            rc = frame_inflate(r->name, r->index, body, fi, r->plain.data, err);
        plain = r->plain.data;
    }
    if (rc == 0 && fi->plain_len > 0)
        rc = r->sink(r->ctx, plain, fi->plain_len, err);
    if (rc)
        return rc;
    r->index++;
    r->frame.len = 0;
    r->frame_size = 0;
    if (fi->flags & SEAL_FLAG_FINAL)
        r->state = RS_DONE;
    return 0;
}

/* Gathers a frame that arrives in pieces; opens it once complete. */
static int reader_gather(seal_reader_t *r, const uint8_t *p, size_t len, size_t *used,
                         wv_err_t *err)
{
    size_t want = r->frame_size ? r->frame_size : SEAL_FRAME_HEADER_BYTES;
    size_t n = min_size(want - r->frame.len, len);
    int rc = buf_append(&r->frame, p, n, err);
    *used = n;
    if (rc || r->frame.len < want)
        return rc;
    struct frame_info fi;
    rc = frame_parse_named(r->name, r->index, r->frame.data, &fi, err);
    if (rc)
        return rc;
    if (r->frame_size)
        return reader_open(r, r->frame.data, &fi, err);
    /* Header complete: room for the rest now, so the pieces never make us reallocate. */
    r->frame_size = frame_total(&fi);
    return buf_reserve(&r->frame, r->frame_size - r->frame.len, err);
}

static int reader_take_frame(seal_reader_t *r, const uint8_t *p, size_t len, size_t *used,
                             wv_err_t *err)
{
    if (r->frame.len == 0 && len >= SEAL_FRAME_HEADER_BYTES) {
        struct frame_info fi;
        int rc = frame_parse_named(r->name, r->index, p, &fi, err);
        if (rc)
            return rc;
        if (len >= frame_total(&fi)) {
            *used = frame_total(&fi);
            return reader_open(r, p, &fi, err);
        }
    }
    return reader_gather(r, p, len, used, err);
}

static int reader_step(seal_reader_t *r, const uint8_t *p, size_t len, size_t *used, wv_err_t *err)
{
    switch (r->state) {
    case RS_HEADER:
        return reader_take_header(r, p, len, used, err);
    case RS_FRAMES:
        return reader_take_frame(r, p, len, used, err);
    case RS_DONE:
        break;
    }
    return data_after_final(r->name, err);
}

static int reader_failed_before(const seal_reader_t *r, wv_err_t *err)
{
    return wv_err_set(err, r->failed, "sealed object %s: reading stopped at an earlier error",
                      r->name);
}

int seal_reader_feed(seal_reader_t *r, const void *data, size_t len, wv_err_t *err)
{
    if (r->failed)
        return reader_failed_before(r, err);
    const uint8_t *p = data;
    while (len > 0) {
        size_t used = 0;
        int rc = reader_step(r, p, len, &used, err);
        if (rc) {
            r->failed = rc;
            return rc;
        }
        p += used;
        len -= used;
    }
    return 0;
}

int seal_reader_finish(seal_reader_t *r, wv_err_t *err)
{
    if (r->failed)
        return reader_failed_before(r, err);
    if (r->state == RS_DONE)
        return 0;
    r->failed = WV_ECORRUPT;
    if (r->state == RS_HEADER)
        return truncated(r->name, err);
    return wv_err_set(err, WV_ECORRUPT,
                      "sealed object %s: truncated (no final frame; %" PRIu64
                      " frames complete, %zu bytes of the next)",
                      r->name, r->index, r->frame.len);
}

/* ---- the streaming writer ---- */

struct seal_writer {
    const struct seal_key *key;
    char *name;
    uint8_t name_hash[NAME_HASH_BYTES];
    seal_sink_fn sink;
    void *ctx;
    uint64_t index;
    bool started; /* header sent */
    bool finished;
    int failed;
    buf_t chunk; /* plaintext waiting for its frame: at most one chunk */
    buf_t out;   /* one sealed frame, after the header for the first */
};

int seal_writer_new(const seal_keyring_t *kr, const char *name, seal_sink_fn sink, void *ctx,
                    seal_writer_t **out, wv_err_t *err)
{
    *out = NULL;
    seal_writer_t *w = calloc(1, sizeof *w);
    if (w)
        w->name = strdup(name);
    if (!w || !w->name) {
        free(w);
        return wv_err_set(err, WV_EFAIL, "out of memory sealing object %s", name);
    }
    w->key = &kr->keys[0];
    name_hash(name, w->name_hash);
    w->sink = sink;
    w->ctx = ctx;
    buf_init(&w->chunk, SEAL_CHUNK_MAX);
    buf_init(&w->out, SEAL_HEADER_BYTES + FRAME_MAX);
    *out = w;
    return 0;
}

void seal_writer_free(seal_writer_t *w)
{
    if (!w)
        return;
    buf_free(&w->chunk);
    buf_free(&w->out);
    free(w->name);
    free(w);
}

static int writer_emit(seal_writer_t *w, const void *plain, size_t len, bool final, wv_err_t *err)
{
    buf_reset(&w->out);
    int rc = w->started ? 0 : seal_header(&w->out, err);
    if (rc == 0)
        rc = frame_seal_append(w->key, w->name_hash, w->index, final, plain, len, &w->out, err);
    if (rc == 0)
        rc = w->sink(w->ctx, w->out.data, w->out.len, err);
    if (rc == 0) {
        w->started = true;
        w->index++;
    }
    return rc;
}

/* A full chunk is sealed only once more data shows it is not the last, so an object whose
 * size is a multiple of the chunk needs no empty final frame. */
static int writer_step(seal_writer_t *w, const uint8_t *p, size_t len, size_t *used, wv_err_t *err)
{
    *used = 0;
    if (w->chunk.len == SEAL_CHUNK_MAX) {
        int rc = writer_emit(w, w->chunk.data, w->chunk.len, false, err);
        buf_reset(&w->chunk);
        return rc;
    }
    if (w->chunk.len == 0 && len > SEAL_CHUNK_MAX) {
        *used = SEAL_CHUNK_MAX; /* straight from the caller's bytes: no copy */
        return writer_emit(w, p, SEAL_CHUNK_MAX, false, err);
    }
    *used = min_size(SEAL_CHUNK_MAX - w->chunk.len, len);
    return buf_append(&w->chunk, p, *used, err);
}

static int writer_unusable(const seal_writer_t *w, wv_err_t *err)
{
    if (w->failed)
        return wv_err_set(err, w->failed, "sealing object %s: stopped at an earlier error",
                          w->name);
    return wv_err_set(err, WV_EUSAGE, "sealing object %s: already finished", w->name);
}

int seal_writer_write(seal_writer_t *w, const void *data, size_t len, wv_err_t *err)
{
    if (w->failed || w->finished)
        return writer_unusable(w, err);
    const uint8_t *p = data;
    while (len > 0) {
        size_t used = 0;
        int rc = writer_step(w, p, len, &used, err);
        if (rc) {
            w->failed = rc;
            return rc;
        }
        p += used;
        len -= used;
    }
    return 0;
}

int seal_writer_finish(seal_writer_t *w, wv_err_t *err)
{
    if (w->failed || w->finished)
        return writer_unusable(w, err);
    int rc = writer_emit(w, w->chunk.data, w->chunk.len, true, err);
    if (rc)
        w->failed = rc;
    else
        w->finished = true;
    buf_reset(&w->chunk);
    return rc;
}
