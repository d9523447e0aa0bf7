#include "backup/manifest.h"

#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_lsn(json_t *m, const char *field, wal_lsn_t *out, wv_err_t *err)
{
    const char *text = json_string_value(json_object_get(m, field));
    if (!text)
        return wv_err_set(err, WV_ECORRUPT, "manifest has no %s", field);
    return wal_lsn_parse(text, out, err);
}

int manifest_summary_get(json_t *m, struct manifest_summary *out, wv_err_t *err)
{
    memset(out, 0, sizeof *out);
    const char *id = json_string_value(json_object_get(m, "id"));
    const char *type = json_string_value(json_object_get(m, "type"));
    if (!id || !type || json_integer_value(json_object_get(m, "format")) != MANIFEST_FORMAT)
        return wv_err_set(err, WV_ECORRUPT, "manifest without id, type or known format");
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->type, sizeof out->type, "%s", type);
    const char *parent = json_string_value(json_object_get(m, "parent"));
    snprintf(out->parent, sizeof out->parent, "%s", parent ? parent : "");
    out->new_bytes = (uint64_t)json_integer_value(json_object_get(m, "new_bytes"));
    out->timeline = (uint32_t)json_integer_value(json_object_get(m, "timeline"));
    out->start_time = json_integer_value(json_object_get(m, "start_time"));
    out->stop_time = json_integer_value(json_object_get(m, "stop_time"));
    json_t *ms = json_object_get(m, "stop_time_ms");
    out->stop_time_ms = json_is_integer(ms) ? json_integer_value(ms) : out->stop_time * 1000 + 999;
    out->wal_seg_size = (uint32_t)json_integer_value(json_object_get(m, "wal_seg_size"));
    out->db_bytes = (uint64_t)json_integer_value(json_object_get(m, "db_bytes"));
    out->stored_bytes = (uint64_t)json_integer_value(json_object_get(m, "stored_bytes"));
    int rc = get_lsn(m, "start_lsn", &out->start_lsn, err);
    if (rc == 0)
        rc = get_lsn(m, "stop_lsn", &out->stop_lsn, err);
    if (rc == 0 && (out->timeline == 0 || !wal_seg_size_valid(out->wal_seg_size)))
        rc = wv_err_set(err, WV_ECORRUPT, "manifest %s: bad timeline or WAL segment size", id);
    return rc;
}

json_t *manifest_block_json(const struct block_ref *b)
{
    json_t *v = json_pack("[I, I, I, I, I, I]", (json_int_t)b->pack, (json_int_t)b->frame,
                          (json_int_t)b->offset, (json_int_t)b->sealed_len,
                          (json_int_t)b->file_offset, (json_int_t)b->plain_len);
    if (v && b->skip) /* whole-frame references, the common case, stay six numbers */
        json_array_append_new(v, json_integer(b->skip));
    return v;
}

int manifest_block_decode(json_t *v, struct block_ref *b)
{
    json_int_t f[7] = {0};
    size_t n = json_array_size(v);
    if (!json_is_array(v) || (n != 6 && n != 7))
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return -1;
        f[i] = json_integer_value(x);
    }
    if (f[0] > UINT32_MAX || f[1] > UINT32_MAX || f[3] > UINT32_MAX || f[5] > UINT32_MAX ||
        f[6] > UINT32_MAX)
        return -1;
    *b = (struct block_ref){(uint32_t)f[0], (uint32_t)f[1], (uint64_t)f[2], (uint32_t)f[3],
                            (uint64_t)f[4], (uint32_t)f[5], (uint32_t)f[6]};
    return 0;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Each reference is told relative to the one before: the next frame of the same pack,
 * right after it, continuing the file where it ended. */
struct ref_cursor {
    uint32_t pack;
    uint64_t frame_next;
    uint64_t pack_end;
    uint64_t file_end;
};

static size_t pack_ref(uint8_t *out, const struct block_ref *b, struct ref_cursor *c)
{
    size_t n = put_varint(out, b->pack);
    if (b->pack != c->pack)
        c->frame_next = c->pack_end = 0;
    n += put_varint(out + n, zigzag((int64_t)b->frame - (int64_t)c->frame_next));
    n += put_varint(out + n, zigzag((int64_t)(b->offset - c->pack_end)));
    n += put_varint(out + n, b->sealed_len);
    n += put_varint(out + n, b->file_offset - c->file_end);
    n += put_varint(out + n, b->plain_len);
    n += put_varint(out + n, b->skip);
    *c = (struct ref_cursor){b->pack, (uint64_t)b->frame + 1, b->offset + b->sealed_len,
                             b->file_offset + b->plain_len};
    return n;
}

json_t *manifest_blocks_pack(const struct block_ref *refs, size_t n)
{
    uint8_t *raw = malloc(n * 7 * 10 + 1);
    if (!raw)
        return NULL;
    struct ref_cursor c = {0};
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += pack_ref(raw + len, &refs[i], &c);
    size_t b64 = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *text = malloc(b64);
    json_t *v =
        text ? json_string(sodium_bin2base64(text, b64, raw, len, sodium_base64_VARIANT_ORIGINAL))
             : NULL;
    free(text);
    free(raw);
    return v;
}

static int get_varint(const uint8_t *in, size_t len, size_t *pos, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *pos < len; shift += 7) {
        uint8_t byte = in[(*pos)++];
        *v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return 0;
    }
    return -1;
}

static int unpack_ref(const uint8_t *in, size_t len, size_t *pos, struct block_ref *b,
                      struct ref_cursor *c)
{
    uint64_t f[7];
    for (int i = 0; i < 7; i++)
        if (get_varint(in, len, pos, &f[i]) != 0)
            return -1;
    if (f[0] > UINT32_MAX || f[3] > UINT32_MAX || f[5] > UINT32_MAX || f[6] > UINT32_MAX)
        return -1;
    if ((uint32_t)f[0] != c->pack)
        c->frame_next = c->pack_end = 0;
    int64_t frame = (int64_t)c->frame_next + unzigzag(f[1]);
    int64_t offset = (int64_t)c->pack_end + unzigzag(f[2]);
    if (frame < 0 || frame > UINT32_MAX || offset < 0)
        return -1;
    *b = (struct block_ref){(uint32_t)f[0],     (uint32_t)frame, (uint64_t)offset, (uint32_t)f[3],
                            c->file_end + f[4], (uint32_t)f[5],  (uint32_t)f[6]};
    *c = (struct ref_cursor){b->pack, (uint64_t)b->frame + 1, b->offset + b->sealed_len,
                             b->file_offset + b->plain_len};
    return 0;
}

static int unpack_blocks(const char *text, size_t n, struct block_ref *refs)
{
    size_t tlen = strlen(text), len = 0;
    uint8_t *raw = malloc(tlen + 1);
    int rc = raw && sodium_base642bin(raw, tlen + 1, text, tlen, NULL, &len, NULL,
                                      sodium_base64_VARIANT_ORIGINAL) == 0
                 ? 0
                 : -1;
    struct ref_cursor c = {0};
    size_t pos = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = unpack_ref(raw, len, &pos, &refs[i], &c);
    if (rc == 0 && pos != len)
        rc = -1;
    free(raw);
    return rc;
}

size_t manifest_file_block_count(json_t *file)
{
    const char *type = json_string_value(json_object_get(file, "type"));
    json_t *blocks = json_object_get(file, "blocks");
    if (!type || strcmp(type, "file") != 0)
        return 0;
    if (json_is_string(blocks))
        return (size_t)json_integer_value(json_object_get(file, "nblocks"));
    return json_array_size(blocks);
}

static int decode_array(json_t *blocks, struct block_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (manifest_block_decode(json_array_get(blocks, i), &refs[i]) != 0)
            return -1;
    return 0;
}

int manifest_file_blocks(json_t *file, struct block_ref **out, size_t *count, wv_err_t *err)
{
    json_t *blocks = json_object_get(file, "blocks");
    size_t n = json_is_string(blocks) ? (size_t)json_integer_value(json_object_get(file, "nblocks"))
                                      : json_array_size(blocks);
    /* every packed reference takes at least seven bytes: a count beyond that is a lie */
    if (json_is_string(blocks) && n > json_string_length(blocks))
        return wv_err_set(err, WV_ECORRUPT, "manifest entry %s: impossible block count",
                          json_string_value(json_object_get(file, "path")));
    *out = NULL;
    *count = 0;
    if (n == 0)
        return 0;
    struct block_ref *refs = n < ((size_t)1 << 32) ? calloc(n, sizeof *refs) : NULL;
    if (!refs)
        return wv_err_set(err, WV_ECORRUPT, "manifest entry %s: impossible block count",
                          json_string_value(json_object_get(file, "path")));
    int rc = json_is_string(blocks) ? unpack_blocks(json_string_value(blocks), n, refs)
                                    : decode_array(blocks, refs, n);
    if (rc != 0) {
        free(refs);
        return wv_err_set(err, WV_ECORRUPT, "manifest entry %s: bad block references",
                          json_string_value(json_object_get(file, "path")));
    }
    *out = refs;
    *count = n;
    return 0;
}
