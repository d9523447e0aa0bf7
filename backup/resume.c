/* Resuming an interrupted backup. Each pack, once stored, gets a small sealed index
 * ("<pack>.idx") of the whole blocks it holds. A later backup reads the indexes of packs
 * whose backup never wrote its manifest (killed, or the store failed) and references those
 * blocks instead of sending them again, when it can tell they did not change:
 * - relation blocks: every page carries an LSN at or below the interrupted backup's start
 *   LSN and none is all zeros (the argument of incremental.c: such a page is what the
 *   interrupted backup read, or WAL replay from our start LSN rewrites it);
 * - other files: the keyed hash of the block equals the one recorded.
 * The same file must also have the same inode. Anything else is stored as usual. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "backup/checksum.h"
#include "backup/internal.h"
#include "backup/internal_restore.h"
#include "common/log.h"

/* Interrupted backups older than this are not looked at (expire collects them). */
#define RESUME_MAX_AGE_S (7 * 86400)

static void entry_key(const char *path, uint64_t off, char *out, size_t len)
{
    snprintf(out, len, "%s@%llu", path, (unsigned long long)off);
}

/* Called by the pack writer for every block it stores whole. */
int backup_index_block(struct pack_writer *w, const struct bfile *f, const struct block_ref *ref,
                       const uint8_t *hash)
{
    if (!w->index && !(w->index = json_array()))
        return -1;
    char hex[SEAL_HASH_BYTES * 2 + 1] = "";
    if (hash)
        sodium_bin2hex(hex, sizeof hex, hash, SEAL_HASH_BYTES);
    return json_array_append_new(w->index,
                                 json_pack("[s, I, I, I, I, I, I, s]", f->path,
                                           (json_int_t)ref->file_offset, (json_int_t)ref->plain_len,
                                           (json_int_t)ref->frame, (json_int_t)ref->offset,
                                           (json_int_t)ref->sealed_len, (json_int_t)f->ino, hex));
}

int backup_write_pack_index(struct pack_writer *w, wv_err_t *err)
{
    if (!w->index)
        return 0;
    char key[REPO_KEY_MAX + 8], lsn[WAL_LSN_STR_MAX];
    snprintf(key, sizeof key, "%s.idx", w->key);
    wal_lsn_format(w->c->start_lsn, lsn);
    json_t *doc =
        json_pack("{s:s, s:s, s:O}", "backup", w->c->id, "start_lsn", lsn, "blocks", w->index);
    int rc = doc ? repo_put_json(w->c->r, key, doc, false, err) : WV_EFAIL;
    json_decref(doc);
    json_decref(w->index);
    w->index = NULL;
    return rc;
}

/* ---- reading the indexes of interrupted backups ---- */

struct resume_ctx {
    struct backup_ctx *c;
    json_t *finished; /* backup ids that have a manifest */
};

static int note_finished(void *ctx, const char *id, wv_err_t *err)
{
    (void)err;
    json_object_set_new(((struct resume_ctx *)ctx)->finished, id, json_true());
    return 0;
}

static bool interrupted_and_recent(struct resume_ctx *x, const char *pack_id)
{
    char backup_id[64];
    snprintf(backup_id, sizeof backup_id, "%.23s", pack_id);
    if (json_object_get(x->finished, backup_id) || strcmp(backup_id, x->c->id) == 0)
        return false;
    struct tm tm = {0};
    if (!strptime(backup_id, "%Y%m%dT%H%M%SZ", &tm))
        return false;
    return (int64_t)time(NULL) - (int64_t)timegm(&tm) < RESUME_MAX_AGE_S;
}

static void add_index(struct backup_ctx *c, json_t *idx, const char *pack_id)
{
    wal_lsn_t start;
    wv_err_t ignored;
    const char *lsn = json_string_value(json_object_get(idx, "start_lsn"));
    if (!lsn || wal_lsn_parse(lsn, &start, &ignored) != 0)
        return;
    json_array_append_new(c->packs, json_string(pack_id));
    json_int_t pack = (json_int_t)json_array_size(c->packs) - 1;
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(idx, "blocks"), i, b)
    {
        char key[4200];
        const char *path = json_string_value(json_array_get(b, 0));
        if (!path || json_array_size(b) != 8)
            continue;
        entry_key(path, (uint64_t)json_integer_value(json_array_get(b, 1)), key, sizeof key);
        json_t *e = json_copy(b);
        json_array_append_new(e, json_integer(pack));
        json_array_append_new(e, json_integer((json_int_t)start));
        json_object_set_new(c->resume, key, e);
    }
}

static int load_one(struct resume_ctx *x, const char *key, const char *prefix, wv_err_t *err)
{
    size_t len = strlen(key);
    if (len < 4 || strcmp(key + len - 4, ".idx") != 0)
        return 0;
    char pack_id[256];
    snprintf(pack_id, sizeof pack_id, "%.*s", (int)(len - 4 - strlen(prefix)),
             key + strlen(prefix));
    if (!interrupted_and_recent(x, pack_id))
        return 0;
    json_t *idx;
    if (repo_get_json(x->c->r, key, &idx, err) != 0) {
        log_warn("ignoring the index of an interrupted backup: %s", err->msg);
        return 0;
    }
    add_index(x->c, idx, pack_id);
    json_decref(idx);
    return 0;
}

int backup_load_resume(struct backup_ctx *c, wv_err_t *err)
{
    struct resume_ctx x = {c, json_object()};
    c->resume = json_object();
    int rc = catalog_each_backup_id(c->r, note_finished, &x, err);
    char prefix[REPO_KEY_MAX];
    repo_key_pack(c->r, "", prefix, sizeof prefix);
    storage_iter_t *it = NULL;
    if (rc == 0)
        rc = storage_list_open(repo_storage(c->r), prefix, &it, err);
    json_t *keys = json_array();
    const char *key;
    uint64_t size;
    while (it && (rc = storage_iter_next(it, &key, &size, err)) == 1)
        json_array_append_new(keys, json_string(key));
    if (it)
        storage_iter_close(it);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) if (rc >= 0) load_one(&x, json_string_value(k), prefix, err);
    json_decref(keys);
    json_decref(x.finished);
    if (json_object_size(c->resume) > 0)
        log_info("resuming: %zu blocks of interrupted backups can be reused",
                 json_object_size(c->resume));
    return rc < 0 ? rc : 0;
}

/* ---- using them ---- */

static bool pages_unchanged_since(const uint8_t *data, size_t len, wal_lsn_t start)
{
    for (size_t p = 0; p + PG_PAGE_SIZE <= len; p += PG_PAGE_SIZE) {
        uint64_t lsn = pg_page_lsn(data + p);
        if (lsn == 0 || lsn > start)
            return false; /* new, unlogged, all zeros, or changed since */
    }
    return len % PG_PAGE_SIZE == 0;
}

static bool same_content(struct pack_writer *w, struct bfile *f, uint64_t off, const uint8_t *data,
                         size_t len, json_t *e)
{
    if (f->relation)
        return pages_unchanged_since(data, len,
                                     (wal_lsn_t)json_integer_value(json_array_get(e, 9)));
    struct block_slot *s = &f->slots[off / BACKUP_BLOCK_SIZE];
    seal_block_hash(repo_keys(w->c->r), data, len, s->hash);
    s->hashed = true;
    char hex[SEAL_HASH_BYTES * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, s->hash, SEAL_HASH_BYTES);
    return strcmp(hex, json_string_value(json_array_get(e, 7))) == 0;
}

int backup_try_resume(struct pack_writer *w, struct bfile *f, uint64_t off, const uint8_t *data,
                      size_t len, wv_err_t *err)
{
    char key[4200];
    entry_key(f->path, off, key, sizeof key);
    json_t *e = json_object_get(w->c->resume, key);
    if (!e || (size_t)json_integer_value(json_array_get(e, 2)) != len)
        return 0;
    uint64_t ino = (uint64_t)json_integer_value(json_array_get(e, 6));
    if ((f->ino && ino && f->ino != ino) || !same_content(w, f, off, data, len, e))
        return 0;
    struct block_ref ref = {
        .pack = (uint32_t)json_integer_value(json_array_get(e, 8)),
        .frame = (uint32_t)json_integer_value(json_array_get(e, 3)),
        .offset = (uint64_t)json_integer_value(json_array_get(e, 4)),
        .sealed_len = (uint32_t)json_integer_value(json_array_get(e, 5)),
        .file_offset = off,
        .plain_len = (uint32_t)len,
    };
    int rc = backup_slot_append(f, off / BACKUP_BLOCK_SIZE, &ref, err);
    return rc ? rc : 1;
}
