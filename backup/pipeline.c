/* The part of a base backup both sources share: files become blocks, blocks become frames
 * of sealed packs, and the problems found on the way are recorded. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/checksum.h"
#include "backup/internal.h"
#include "common/log.h"

int backup_ctx_init(struct backup_ctx *c, repo_t *r, const struct backup_opts *opts, wv_err_t *err)
{
    memset(c, 0, sizeof *c);
    c->r = r;
    c->opts = opts;
    pthread_mutex_init(&c->lock, NULL);
    c->packs = json_array();
    c->checksum_failures = json_array();
    c->pack_target =
        opts->pack_size_mib > 0 ? (uint64_t)opts->pack_size_mib << 20 : BACKUP_PACK_TARGET;
    if (!c->packs || !c->checksum_failures)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    return 0;
}

static void free_file(struct bfile *f)
{
    free(f->path);
    free(f->source);
    free(f->target);
    for (size_t i = 0; i < f->nslots; i++)
        free(f->slots[i].refs);
    free(f->slots);
    backup_free_parent_file(f->parent);
}

void backup_ctx_free(struct backup_ctx *c)
{
    for (size_t i = 0; i < c->nfiles; i++)
        free_file(&c->files[i]);
    free(c->files);
    json_decref(c->packs);
    json_decref(c->checksum_failures);
    json_decref(c->resume);
    backup_free_parent(c);
    pthread_mutex_destroy(&c->lock);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

long backup_add_file(struct backup_ctx *c, const struct bfile *f)
{
    if (c->nfiles == c->cap_files) {
        size_t cap = c->cap_files ? c->cap_files * 2 : 256;
        struct bfile *files = realloc(c->files, cap * sizeof *files);
        if (!files)
            return -1;
        c->files = files;
        c->cap_files = cap;
    }
    struct bfile *copy = &c->files[c->nfiles];
    *copy = *f;
    copy->path = dup_or_null(f->path);
    copy->source = dup_or_null(f->source);
    copy->target = dup_or_null(f->target);
    copy->slots = NULL;
    copy->nslots = 0;
    copy->parent = NULL;
    backup_classify_file(copy);
    return (long)c->nfiles++;
}

int backup_file_prepare(struct backup_ctx *c, struct bfile *f, wv_err_t *err)
{
    f->nslots = (size_t)((f->size + BACKUP_BLOCK_SIZE - 1) / BACKUP_BLOCK_SIZE);
    if (f->nslots > 0) {
        f->slots = calloc(f->nslots, sizeof *f->slots);
        if (!f->slots)
            return wv_err_set(err, WV_EFAIL, "out of memory for the blocks of %s", f->path);
    }
    return c->parent ? backup_find_parent_file(c, f, err) : 0;
}

/* Only the worker that reads a block touches its slot, so no lock is needed. */
int backup_slot_append(struct bfile *f, size_t slot, const struct block_ref *ref, wv_err_t *err)
{
    struct block_slot *s = &f->slots[slot];
    struct block_ref *refs = realloc(s->refs, (s->count + 1) * sizeof *refs);
    if (!refs)
        return wv_err_set(err, WV_EFAIL, "out of memory for the blocks of %s", f->path);
    refs[s->count++] = *ref;
    s->refs = refs;
    return 0;
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* "<relfilenode>[_fsm|_vm|_init][.<segno>]"; sets *segno. */
static bool relation_file_name(const char *name, uint32_t *segno)
{
    size_t digits = strspn(name, "0123456789");
    if (digits == 0)
        return false;
    const char *rest = name + digits;
    static const char *forks[] = {"_fsm", "_vm", "_init"};
    for (size_t i = 0; i < sizeof forks / sizeof *forks; i++) {
        size_t n = strlen(forks[i]);
        if (strncmp(rest, forks[i], n) == 0) {
            rest += n;
            break;
        }
    }
    *segno = 0;
    if (*rest == '\0')
        return true;
    if (*rest != '.' || !all_digits(rest + 1, strlen(rest + 1)))
        return false;
    *segno = (uint32_t)strtoul(rest + 1, NULL, 10);
    return true;
}

/* Relation storage lives in global/, base/<db>/ and pg_tblspc/<oid>/<version dir>/<db>/. */
static bool in_relation_dir(const char *path)
{
    if (strncmp(path, "global/", 7) == 0)
        return strchr(path + 7, '/') == NULL;
    if (strncmp(path, "base/", 5) == 0) {
        const char *db = path + 5;
        const char *slash = strchr(db, '/');
        return slash && all_digits(db, (size_t)(slash - db)) && !strchr(slash + 1, '/');
    }
    if (strncmp(path, "pg_tblspc/", 10) == 0) {
        int parts = 0;
        for (const char *p = path + 10; *p; p++)
            parts += *p == '/';
        return parts == 3;
    }
    return false;
}

void backup_classify_file(struct bfile *f)
{
    f->relation = false;
    f->first_block = 0;
    if (f->type != BFILE_FILE || !in_relation_dir(f->path))
        return;
    const char *name = strrchr(f->path, '/') + 1;
    uint32_t segno;
    if (relation_file_name(name, &segno)) {
        f->relation = true;
        f->first_block = segno * PG_RELSEG_BLOCKS;
    }
}

/* Directories whose contents PostgreSQL rebuilds or never needs after a restore. */
static const char *const excluded_dir_contents[] = {
    "pg_wal",    "pg_stat_tmp", "pg_replslot",  "pg_dynshmem",
    "pg_notify", "pg_serial",   "pg_snapshots", "pg_subtrans",
};

static const char *const excluded_files[] = {
    "postmaster.pid",           "postmaster.opts",      "backup_label",    "tablespace_map",
    "postgresql.auto.conf.tmp", "current_logfiles.tmp", "recovery.signal", "standby.signal",
};

bool backup_dir_contents_excluded(const char *relpath)
{
    for (size_t i = 0; i < sizeof excluded_dir_contents / sizeof *excluded_dir_contents; i++)
        if (strcmp(relpath, excluded_dir_contents[i]) == 0)
            return true;
    return false;
}

bool backup_path_excluded(const char *relpath, bool is_dir)
{
    const char *name = strrchr(relpath, '/');
    name = name ? name + 1 : relpath;
    if (strncmp(name, "pgsql_tmp", 9) == 0 || strcmp(name, "pg_internal.init") == 0)
        return true;
    if (is_dir)
        return false;
    if (strchr(relpath, '/') == NULL) {
        for (size_t i = 0; i < sizeof excluded_files / sizeof *excluded_files; i++)
            if (strcmp(relpath, excluded_files[i]) == 0)
                return true;
    }
    return false;
}

void pack_writer_init(struct pack_writer *w, struct backup_ctx *c, int worker)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    w->worker = worker;
    buf_init(&w->frame_buf, SEAL_CHUNK_MAX + SEAL_FRAME_OVERHEAD + 1024);
}

static int open_pack(struct pack_writer *w, wv_err_t *err)
{
    struct backup_ctx *c = w->c;
    char id[128];
    snprintf(id, sizeof id, "%s-%d-%d", c->id, w->worker, w->seq++);
    repo_key_pack(c->r, id, w->key, sizeof w->key);
    int rc = storage_put_begin(repo_storage(c->r), w->key, false, &w->sw, err);
    if (rc)
        return rc;
    buf_reset(&w->frame_buf);
    if ((rc = seal_header(&w->frame_buf, err)) == 0)
        rc = storage_put_write(w->sw, w->frame_buf.data, w->frame_buf.len, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&c->lock);
    w->pack = (uint32_t)json_array_size(c->packs);
    json_array_append_new(c->packs, json_string(id));
    pthread_mutex_unlock(&c->lock);
    w->frame = 0;
    w->offset = w->frame_buf.len;
    return 0;
}

/* Closes the current pack with an empty final frame, so a truncated pack is detected. */
static int close_pack(struct pack_writer *w, wv_err_t *err)
{
    struct backup_ctx *c = w->c;
    buf_reset(&w->frame_buf);
    int rc = seal_frame(repo_keys(c->r), w->key, w->frame, true, NULL, 0, &w->frame_buf, err);
    if (rc == 0)
        rc = storage_put_write(w->sw, w->frame_buf.data, w->frame_buf.len, err);
    storage_writer_t *sw = w->sw;
    w->sw = NULL;
    if (rc) {
        storage_put_abort(sw);
        return rc;
    }
    pthread_mutex_lock(&c->lock);
    c->stored_bytes += w->offset + w->frame_buf.len;
    pthread_mutex_unlock(&c->lock);
    rc = storage_put_commit(sw, err);
    return rc ? rc : backup_write_pack_index(w, err);
}

int pack_writer_seal(struct pack_writer *w, const uint8_t *plain, size_t len, struct block_ref *out,
                     wv_err_t *err)
{
    int rc = 0;
    /* A full pack is closed before the next frame, not after the last one, so that what the
     * caller records about a frame (resume.c's index) lands with the pack that holds it. */
    if (w->sw && w->offset >= w->c->pack_target && (rc = close_pack(w, err)) != 0)
        return rc;
    if (!w->sw && (rc = open_pack(w, err)) != 0)
        return rc;
    buf_reset(&w->frame_buf);
    rc = seal_frame(repo_keys(w->c->r), w->key, w->frame, false, plain, len, &w->frame_buf, err);
    if (rc == 0)
        rc = storage_put_write(w->sw, w->frame_buf.data, w->frame_buf.len, err);
    if (rc)
        return rc;
    out->pack = w->pack;
    out->frame = w->frame;
    out->offset = w->offset;
    out->sealed_len = (uint32_t)w->frame_buf.len;
    w->frame++;
    w->offset += w->frame_buf.len;
    pthread_mutex_lock(&w->c->lock);
    w->c->new_bytes += len;
    pthread_mutex_unlock(&w->c->lock);
    return 0;
}

int pack_writer_finish(struct pack_writer *w, wv_err_t *err)
{
    int rc = w->sw ? close_pack(w, err) : 0;
    buf_free(&w->frame_buf);
    backup_free_block_plan(w->plan);
    w->plan = NULL;
    return rc;
}

void pack_writer_abort(struct pack_writer *w)
{
    if (w->sw)
        storage_put_abort(w->sw);
    w->sw = NULL;
    buf_free(&w->frame_buf);
    json_decref(w->index);
    w->index = NULL;
    backup_free_block_plan(w->plan);
    w->plan = NULL;
}

void backup_progress(struct backup_ctx *c, uint64_t bytes)
{
    pthread_mutex_lock(&c->lock);
    c->done_bytes += bytes;
    uint64_t done = c->done_bytes, total = c->total_bytes;
    pthread_mutex_unlock(&c->lock);
    const struct progress_sink *p = &c->opts->progress;
    if (p->update)
        p->update(p->ctx, "backup", done, total > done ? total : done);
}

/* A page newer than the backup's start may be mid-write (a torn read): WAL replay rewrites
 * it from a full-page image, so only older pages can show real corruption. */
void backup_check_pages(struct backup_ctx *c, const struct bfile *f, uint64_t file_offset,
                        const uint8_t *data, size_t len)
{
    if (!c->check_pages || !f->relation)
        return;
    for (size_t off = 0; off + PG_PAGE_SIZE <= len; off += PG_PAGE_SIZE) {
        const uint8_t *page = data + off;
        uint32_t blkno = f->first_block + (uint32_t)((file_offset + off) / PG_PAGE_SIZE);
        if (pg_page_checksum_ok(page, blkno) || pg_page_lsn(page) >= c->start_lsn)
            continue;
        uint32_t in_file = (uint32_t)((file_offset + off) / PG_PAGE_SIZE);
        log_warn("page checksum failure in %s block %u; the backup goes on", f->path, in_file);
        pthread_mutex_lock(&c->lock);
        json_array_append_new(c->checksum_failures, json_pack("{s:s, s:I}", "path", f->path,
                                                              "block", (json_int_t)in_file));
        pthread_mutex_unlock(&c->lock);
    }
}

int backup_label_parse(const char *label, wal_lsn_t *start, uint32_t *tli, wv_err_t *err)
{
    const char *loc = strstr(label, "START WAL LOCATION: ");
    const char *tl = strstr(label, "START TIMELINE: ");
    if (!loc || !tl)
        return wv_err_set(err, WV_ECORRUPT, "backup_label without start location or timeline");
    char lsn[WAL_LSN_STR_MAX + 1];
    if (sscanf(loc + 20, "%20s", lsn) != 1)
        return wv_err_set(err, WV_ECORRUPT, "backup_label: bad start location");
    *tli = (uint32_t)strtoul(tl + 16, NULL, 10);
    return wal_lsn_parse(lsn, start, err);
}
