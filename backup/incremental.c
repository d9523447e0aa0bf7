/* Storing a block: whole in a full backup, and in an incremental only what changed since
 * the parent, the rest referenced in the parent's packs.
 *
 * Why the page LSN cannot miss a change of a relation page (full_page_writes must be on,
 * backup.c refuses an incremental otherwise):
 * - Every WAL-logged change sets the page LSN to the LSN of its record. The parent's
 *   start LSN is the redo point of the checkpoint pg_backup_start made; every change after
 *   it has a record after it, so a page changed since then carries an LSN above the
 *   parent's start LSN on disk once it is written out, as it is by the time our own start
 *   checkpoint completes. A page whose stored LSN is at or below the parent's start LSN
 *   therefore holds what the parent backup read, or it is being changed while we read it;
 *   then the first change after our start checkpoint wrote a full-page image to WAL after
 *   our start LSN, and replay restores the page whatever we stored.
 * - Hint bits are not WAL-logged unless data checksums or wal_log_hints are on; without
 *   them a restored page may lack hint bits the source had, which PostgreSQL recomputes.
 * - A page beyond the end of the parent's copy of the file, a page with LSN 0 (new, or of an
 *   unlogged relation), and an all-zero page (a hole, or an extension not yet written) are
 *   never taken from the parent: an all-zero page is restored as zeros, the others stored.
 * - A file the parent did not have is stored whole, and so is one whose inode changed (a
 *   file dropped and recreated under the same name, e.g. by CREATE DATABASE ... FILE_COPY
 *   of a database with a reused OID, which copies pages with their old LSNs).
 * - A truncated file: only the blocks that exist now are stored or referenced, so the
 *   restored file has the current length.
 * - Files outside relation storage carry no page LSNs: each block is compared by a keyed
 *   BLAKE2b hash with the parent's hash of the same block, which cannot miss a change. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backup/checksum.h"
#include "backup/internal.h"

/* After many incrementals a file's pages are spread over many frames, each only partly
 * used, and a restore decrypts every one of them whole. A file whose referenced frames hold
 * more than SCATTER_MAX_READ times its size, or whose references average less than
 * SCATTER_MIN_BYTES, is stored whole again: restores stay close to a full's cost and
 * manifests stay small. */
#define SCATTER_MAX_READ 1.2
#define SCATTER_MIN_BYTES (16u * 1024)

static bool all_zero(const uint8_t *data, size_t len)
{
    const uint64_t *words = (const uint64_t *)data;
    size_t n = len / 8;
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= words[i];
    for (size_t i = n * 8; i < len; i++)
        acc |= data[i];
    return acc == 0;
}

static size_t slot_of(uint64_t file_offset)
{
    return (size_t)(file_offset / BACKUP_BLOCK_SIZE);
}

static int store_whole(struct pack_writer *w, struct bfile *f, uint64_t off, const uint8_t *data,
                       size_t len, wv_err_t *err)
{
    if (all_zero(data, len))
        return 0;
    struct block_ref ref = {.file_offset = off, .plain_len = (uint32_t)len};
    int rc = pack_writer_seal(w, data, len, &ref, err);
    if (rc == 0)
        rc = backup_slot_append(f, slot_of(off), &ref, err);
    const struct block_slot *s = &f->slots[slot_of(off)];
    if (rc == 0 && backup_index_block(w, f, &ref, s->hashed ? s->hash : NULL) != 0)
        rc = wv_err_set(err, WV_EFAIL, "out of memory");
    return rc ? wv_err_prefix(err, "backing up %s", f->path) : 0;
}

/* Appends the parent's references for [from, to) of the file, cut to that range. Fails
 * (returns 1) when they do not cover every byte: then the caller stores the bytes itself. */
static int take_from_parent(struct bfile *f, uint64_t from, uint64_t to, wv_err_t *err)
{
    const struct parent_file *p = f->parent;
    size_t lo = 0, hi = p->nrefs;
    while (lo < hi) { /* first reference that ends after `from` */
        size_t mid = (lo + hi) / 2;
        if (p->refs[mid].file_offset + p->refs[mid].plain_len <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t covered = from;
    size_t first_new = f->slots[slot_of(from)].count;
    for (size_t i = lo; i < p->nrefs && p->refs[i].file_offset < to; i++) {
        const struct block_ref *r = &p->refs[i];
        uint64_t a = r->file_offset > from ? r->file_offset : from;
        uint64_t b = r->file_offset + r->plain_len < to ? r->file_offset + r->plain_len : to;
        if (a != covered)
            break;
        struct block_ref cut = *r;
        cut.file_offset = a;
        cut.plain_len = (uint32_t)(b - a);
        cut.skip = r->skip + (uint32_t)(a - r->file_offset);
        int rc = backup_slot_append(f, slot_of(from), &cut, err);
        if (rc)
            return rc;
        covered = b;
    }
    if (covered == to)
        return 0;
    f->slots[slot_of(from)].count = (uint32_t)first_new; /* drop the partial run */
    return 1;
}

static bool page_unchanged(const struct backup_ctx *c, const struct bfile *f, uint64_t off,
                           const uint8_t *page)
{
    uint64_t lsn = pg_page_lsn(page);
    return lsn != 0 && lsn <= c->parent_start_lsn && off + PG_PAGE_SIZE <= f->parent->size;
}

enum page_kind { PAGE_PARENT, PAGE_NEW, PAGE_ZERO };

static enum page_kind classify_page(const struct backup_ctx *c, const struct bfile *f, uint64_t off,
                                    const uint8_t *page, size_t len)
{
    if (all_zero(page, len))
        return PAGE_ZERO;
    if (len == PG_PAGE_SIZE && page_unchanged(c, f, off, page))
        return PAGE_PARENT;
    return PAGE_NEW;
}

/* The pages of one block: what each is, and the new ones gathered to be sealed together as
 * one frame (fewer frames, better compression), each run of them referenced into it. */
#define BLOCK_PAGES (BACKUP_BLOCK_SIZE / PG_PAGE_SIZE)

struct block_plan {
    enum page_kind kind[BLOCK_PAGES];
    size_t npages;
    uint8_t *buf;
    size_t len;
    struct block_ref runs[BLOCK_PAGES];
    size_t nruns;
};

static void add_new_page(struct block_plan *bp, uint64_t off, const uint8_t *data, size_t len)
{
    struct block_ref *last = bp->nruns ? &bp->runs[bp->nruns - 1] : NULL;
    if (last && last->file_offset + last->plain_len == off)
        last->plain_len += (uint32_t)len;
    else
        bp->runs[bp->nruns++] = (struct block_ref){
            .file_offset = off, .plain_len = (uint32_t)len, .skip = (uint32_t)bp->len};
    memcpy(bp->buf + bp->len, data, len);
    bp->len += len;
}

static void plan_block(const struct backup_ctx *c, const struct bfile *f, uint64_t off,
                       const uint8_t *data, size_t len, struct block_plan *bp)
{
    bp->npages = (len + PG_PAGE_SIZE - 1) / PG_PAGE_SIZE;
    for (size_t i = 0; i < bp->npages; i++) {
        size_t p = i * PG_PAGE_SIZE;
        size_t plen = len - p < PG_PAGE_SIZE ? len - p : PG_PAGE_SIZE;
        bp->kind[i] = classify_page(c, f, off + p, data + p, plen);
        if (bp->kind[i] == PAGE_NEW)
            add_new_page(bp, off + p, data + p, plen);
    }
}

/* Emits the block's references in file order: runs from the parent, runs into the new
 * frame; zero pages get none. Returns 1 when the parent does not cover a run it should. */
static int emit_block(struct pack_writer *w, struct bfile *f, uint64_t off, size_t len,
                      struct block_plan *bp, wv_err_t *err)
{
    struct block_ref sealed = {0};
    int rc = bp->len ? pack_writer_seal(w, bp->buf, bp->len, &sealed, err) : 0;
    size_t next_run = 0;
    for (size_t i = 0; rc == 0 && i < bp->npages;) {
        size_t j = i + 1;
        while (j < bp->npages && bp->kind[j] == bp->kind[i])
            j++;
        uint64_t from = off + i * PG_PAGE_SIZE;
        uint64_t to = off + (j * PG_PAGE_SIZE < len ? j * PG_PAGE_SIZE : len);
        if (bp->kind[i] == PAGE_PARENT)
            rc = take_from_parent(f, from, to, err);
        for (; rc == 0 && bp->kind[i] == PAGE_NEW && next_run < bp->nruns &&
               bp->runs[next_run].file_offset < to;
             next_run++) {
            struct block_ref ref = sealed;
            ref.file_offset = bp->runs[next_run].file_offset;
            ref.plain_len = bp->runs[next_run].plain_len;
            ref.skip = bp->runs[next_run].skip;
            rc = backup_slot_append(f, slot_of(off), &ref, err);
        }
        i = j;
    }
    return rc;
}

static int store_changed_pages(struct pack_writer *w, struct bfile *f, uint64_t off,
                               const uint8_t *data, size_t len, wv_err_t *err)
{
    if (!w->plan && !(w->plan = calloc(1, sizeof(struct block_plan))))
        return wv_err_set(err, WV_EFAIL, "out of memory");
    struct block_plan *bp = w->plan;
    if (!bp->buf && !(bp->buf = malloc(BACKUP_BLOCK_SIZE)))
        return wv_err_set(err, WV_EFAIL, "out of memory");
    bp->len = 0;
    bp->nruns = 0;
    plan_block(w->c, f, off, data, len, bp);
    uint32_t before = f->slots[slot_of(off)].count;
    int rc = emit_block(w, f, off, len, bp, err);
    if (rc == 1) { /* the parent does not cover what it should: store the block whole */
        f->slots[slot_of(off)].count = before;
        return store_whole(w, f, off, data, len, err);
    }
    return rc;
}

static bool parent_hash_matches(const struct bfile *f, size_t slot, const uint8_t *hash,
                                uint64_t off, size_t len)
{
    const struct parent_file *p = f->parent;
    return slot < p->nhashes && off + len <= p->size &&
           (off + len == p->size || len == BACKUP_BLOCK_SIZE) &&
           memcmp(p->hashes[slot], hash, SEAL_HASH_BYTES) == 0;
}

static int store_hashed(struct pack_writer *w, struct bfile *f, uint64_t off, const uint8_t *data,
                        size_t len, wv_err_t *err)
{
    struct block_slot *s = &f->slots[slot_of(off)];
    seal_block_hash(repo_keys(w->c->r), data, len, s->hash);
    s->hashed = true;
    if (f->parent && parent_hash_matches(f, slot_of(off), s->hash, off, len)) {
        int rc = take_from_parent(f, off, off + len, err);
        if (rc <= 0)
            return rc;
    }
    return store_whole(w, f, off, data, len, err);
}

int backup_store_block(struct pack_writer *w, struct bfile *f, uint64_t off, const uint8_t *data,
                       size_t len, wv_err_t *err)
{
    if (w->c->resume && json_object_size(w->c->resume) > 0) {
        int rc = backup_try_resume(w, f, off, data, len, err);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    if (!f->relation)
        return store_hashed(w, f, off, data, len, err);
    if (!f->parent)
        return store_whole(w, f, off, data, len, err);
    return store_changed_pages(w, f, off, data, len, err);
}

void backup_free_block_plan(void *plan)
{
    struct block_plan *bp = plan;
    if (bp)
        free(bp->buf);
    free(bp);
}

/* ---- the parent backup ---- */

int backup_load_parent(struct backup_ctx *c, const char *parent_id, wv_err_t *err)
{
    struct manifest_summary s;
    int rc = manifest_load(c->r, parent_id, &c->parent, err);
    if (rc == 0)
        rc = manifest_summary_get(c->parent, &s, err);
    if (rc)
        return rc;
    c->parent_start_lsn = s.start_lsn;
    c->parent_files = json_object();
    size_t i;
    json_t *file;
    json_array_foreach(json_object_get(c->parent, "files"), i, file)
    {
        const char *path = json_string_value(json_object_get(file, "path"));
        const char *type = json_string_value(json_object_get(file, "type"));
        if (path && type && strcmp(type, "file") == 0)
            json_object_set(c->parent_files, path, file);
    }
    /* The parent's pack numbers stay valid in this backup; unused ones are dropped when the
     * manifest is written. */
    json_t *packs = json_object_get(c->parent, "packs");
    if (!json_is_array(packs))
        return wv_err_set(err, WV_ECORRUPT, "manifest of backup %s has no pack list", parent_id);
    json_array_extend(c->packs, packs);
    return 0;
}

void backup_free_parent(struct backup_ctx *c)
{
    json_decref(c->parent_files);
    json_decref(c->parent);
    c->parent_files = c->parent = NULL;
}

void backup_free_parent_file(struct parent_file *p)
{
    if (!p)
        return;
    free(p->refs);
    free(p->hashes);
    free(p);
}

static int decode_hashes(json_t *hashes, struct parent_file *p)
{
    size_t n = json_array_size(hashes);
    if (n == 0)
        return 0;
    p->hashes = calloc(n, sizeof *p->hashes);
    if (!p->hashes)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *hex = json_string_value(json_array_get(hashes, i));
        size_t got = 0;
        if (!hex ||
            sodium_hex2bin(p->hashes[i], SEAL_HASH_BYTES, hex, strlen(hex), NULL, &got, NULL) !=
                0 ||
            got != SEAL_HASH_BYTES)
            return -1;
    }
    p->nhashes = n;
    return 0;
}

static int by_frame(const void *a, const void *b)
{
    const struct block_ref *x = a, *y = b;
    if (x->pack != y->pack)
        return x->pack < y->pack ? -1 : 1;
    return x->frame < y->frame ? -1 : x->frame > y->frame;
}

/* Plaintext a restore decrypts for this file: each distinct frame once, as long as the
 * furthest byte any reference takes from it. */
static uint64_t frames_read(const struct parent_file *p)
{
    struct block_ref *sorted = malloc(p->nrefs * sizeof *sorted);
    if (!sorted)
        return UINT64_MAX;
    memcpy(sorted, p->refs, p->nrefs * sizeof *sorted);
    qsort(sorted, p->nrefs, sizeof *sorted, by_frame);
    uint64_t total = 0, frame_end = 0;
    for (size_t i = 0; i < p->nrefs; i++) {
        if (i > 0 && by_frame(&sorted[i - 1], &sorted[i]) != 0) {
            total += frame_end;
            frame_end = 0;
        }
        uint64_t end = (uint64_t)sorted[i].skip + sorted[i].plain_len;
        frame_end = end > frame_end ? end : frame_end;
    }
    free(sorted);
    return total + frame_end;
}

static bool too_scattered(const struct parent_file *p)
{
    if (p->nrefs <= 4 || p->size == 0)
        return false;
    return p->size / p->nrefs < SCATTER_MIN_BYTES ||
           (double)frames_read(p) > SCATTER_MAX_READ * (double)p->size;
}

int backup_find_parent_file(struct backup_ctx *c, struct bfile *f, wv_err_t *err)
{
    json_t *pf = json_object_get(c->parent_files, f->path);
    if (!pf || f->type != BFILE_FILE)
        return 0;
    uint64_t ino = (uint64_t)json_integer_value(json_object_get(pf, "ino"));
    if (f->ino && ino && f->ino != ino)
        return 0; /* recreated under the same name: its pages are not the parent's */
    struct parent_file *p = calloc(1, sizeof *p);
    if (!p)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    p->size = (uint64_t)json_integer_value(json_object_get(pf, "size"));
    p->ino = ino;
    int rc = manifest_file_blocks(pf, &p->refs, &p->nrefs, err);
    if (rc == 0 && decode_hashes(json_object_get(pf, "hashes"), p) != 0)
        rc = wv_err_set(err, WV_ECORRUPT, "parent manifest entry %s: bad block hashes", f->path);
    if (rc) {
        backup_free_parent_file(p);
        return rc;
    }
    if (f->relation && too_scattered(p)) {
        backup_free_parent_file(p); /* too scattered: store it whole again */
        return 0;
    }
    f->parent = p;
    return 0;
}
