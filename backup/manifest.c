#include "backup/manifest.h"

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

int manifest_file_blocks(json_t *file, struct block_ref **out, size_t *count, wv_err_t *err)
{
    json_t *blocks = json_object_get(file, "blocks");
    size_t n = json_array_size(blocks);
    *out = NULL;
    *count = 0;
    if (n == 0)
        return 0;
    struct block_ref *refs = calloc(n, sizeof *refs);
    if (!refs)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (manifest_block_decode(json_array_get(blocks, i), &refs[i]) != 0) {
            free(refs);
            return wv_err_set(err, WV_ECORRUPT, "manifest entry %s: bad block reference %zu",
                              json_string_value(json_object_get(file, "path")), i);
        }
    }
    *out = refs;
    *count = n;
    return 0;
}
