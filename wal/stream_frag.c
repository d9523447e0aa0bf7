/* Fragments in the repository: reading a segment's fragments back in order, deleting them
 * once the segment is stored whole, and finding how far a timeline's archive reaches. Push,
 * fetch, the backup's wait for its WAL, list and verify all see fragments through here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "wal/archive.h"

void wal_frag_chain_add(struct wal_frag_chain *c, const struct wal_file *f)
{
    if (f->kind != WAL_KIND_FRAGMENT)
        return;
    if (!c->any || f->segno != c->segno) {
        /* Bytes that do not start at the segment's start cannot be replayed. */
        *c = (struct wal_frag_chain){.any = true, .segno = f->segno, .end = 0};
    }
    c->count++;
    if (f->frag_start <= c->end && f->frag_end > c->end)
        c->end = f->frag_end;
}

/* "nodes/<node>/wal/<tli>/<segment>." : the segment's fragments and nothing else. */
static int fragment_prefix(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size, char *out,
                           size_t len, wv_err_t *err)
{
    char name[WAL_NAME_MAX + 1];
    wal_segment_name(tli, segno, seg_size, name);
    strcat(name, ".");
    if (repo_key_wal(r, tli, name, out, len) != 0)
        return wv_err_set(err, WV_EFAIL, "node name too long: %s", repo_node(r));
    return 0;
}

typedef int (*fragment_fn)(void *ctx, const char *key, const struct wal_file *f, wv_err_t *err);

static int each_fragment(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size, fragment_fn fn,
                         void *ctx, wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    storage_iter_t *it;
    int rc = fragment_prefix(r, tli, segno, seg_size, prefix, sizeof prefix, err);
    if (rc == 0)
        rc = storage_list_open(repo_storage(r), prefix, &it, err);
    if (rc)
        return rc;
    const char *key;
    uint64_t size;
    const char *slash = strrchr(prefix, '/');
    size_t dir_len = (size_t)(slash - prefix) + 1;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        struct wal_file f;
        wv_err_t ignored;
        if (wal_file_parse(key + dir_len, seg_size, &f, &ignored) != 0 ||
            f.kind != WAL_KIND_FRAGMENT || f.tli != tli || f.segno != segno)
            continue;
        if ((rc = fn(ctx, key, &f, err)) != 0)
            break;
    }
    storage_iter_close(it);
    return rc < 0 ? rc : 0;
}

static int chain_one(void *ctx, const char *key, const struct wal_file *f, wv_err_t *err)
{
    (void)key, (void)err;
    wal_frag_chain_add(ctx, f);
    return 0;
}

int wal_fragments_scan(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size,
                       struct wal_frag_chain *c, wv_err_t *err)
{
    *c = (struct wal_frag_chain){0};
    return each_fragment(r, tli, segno, seg_size, chain_one, c, err);
}

/* ---- reading ---- */

struct frag_list {
    struct wal_file *items;
    size_t count, cap;
};

static int remember(void *ctx, const char *key, const struct wal_file *f, wv_err_t *err)
{
    struct frag_list *l = ctx;
    (void)key;
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct wal_file *p = realloc(l->items, cap * sizeof *p);
        if (!p)
            return wv_err_set(err, WV_EFAIL, "out of memory listing WAL fragments");
        l->items = p;
        l->cap = cap;
    }
    l->items[l->count++] = *f;
    return 0;
}

/* Passes on the part of a fragment past what earlier fragments gave already. */
struct skip_sink {
    storage_sink_fn sink;
    void *ctx;
    uint64_t skip;
};

static int skip_then_pass(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct skip_sink *s = ctx;
    if (s->skip >= len) {
        s->skip -= len;
        return 0;
    }
    const uint8_t *p = (const uint8_t *)data + s->skip;
    len -= (size_t)s->skip;
    s->skip = 0;
    return s->sink(s->ctx, p, len, err);
}

static int read_listed(repo_t *r, const struct frag_list *l, uint32_t seg_size,
                       storage_sink_fn sink, void *ctx, uint32_t *end, wv_err_t *err)
{
    *end = 0;
    for (size_t i = 0; i < l->count; i++) {
        const struct wal_file *f = &l->items[i];
        if (f->frag_start > *end)
            break; /* a hole: what follows cannot be replayed */
        if (f->frag_end <= *end)
            continue;
        char name[WAL_NAME_MAX], key[REPO_KEY_MAX];
        wal_fragment_name(f->tli, f->segno, seg_size, f->frag_start, f->frag_end, name);
        repo_key_wal(r, f->tli, name, key, sizeof key);
        struct skip_sink s = {sink, ctx, *end - f->frag_start};
        int rc = repo_get_sealed_stream(r, key, skip_then_pass, &s, err);
        if (rc)
            return rc;
        *end = f->frag_end;
    }
    return 0;
}

int wal_fragments_read(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size,
                       storage_sink_fn sink, void *ctx, uint32_t *end, wv_err_t *err)
{
    struct frag_list l = {0};
    int rc = each_fragment(r, tli, segno, seg_size, remember, &l, err);
    if (rc == 0)
        rc = read_listed(r, &l, seg_size, sink, ctx, end, err);
    free(l.items);
    return rc;
}

/* ---- deleting ---- */

struct key_batch {
    repo_t *r;
    char *keys[256];
    size_t count;
};

static int flush_batch(struct key_batch *b, wv_err_t *err)
{
    int rc = storage_delete_many(repo_storage(b->r), (const char *const *)b->keys, b->count, err);
    for (size_t i = 0; i < b->count; i++)
        free(b->keys[i]);
    b->count = 0;
    return rc;
}

static int batch_key(void *ctx, const char *key, const struct wal_file *f, wv_err_t *err)
{
    struct key_batch *b = ctx;
    (void)f;
    if (!(b->keys[b->count] = strdup(key)))
        return wv_err_set(err, WV_EFAIL, "out of memory deleting WAL fragments");
    return ++b->count == sizeof b->keys / sizeof b->keys[0] ? flush_batch(b, err) : 0;
}

/* Keys are collected in batches and deleted after the listing moved past them, so the
 * listing never walks a directory that changes under it. */
int wal_fragments_delete(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size, wv_err_t *err)
{
    struct key_batch *b = calloc(1, sizeof *b);
    if (!b)
        return wv_err_set(err, WV_EFAIL, "out of memory deleting WAL fragments");
    b->r = r;
    int rc = each_fragment(r, tli, segno, seg_size, batch_key, b, err);
    wv_err_t later;
    int rc2 = flush_batch(b, rc ? &later : err);
    free(b);
    return rc ? rc : rc2;
}

/* ---- the tail of a timeline ---- */

static void tail_add(struct wal_tail *t, const struct wal_file *f)
{
    if (f->kind == WAL_KIND_SEGMENT) {
        if (!t->has_whole || f->segno > t->last_whole)
            t->last_whole = f->segno;
        t->has_whole = true;
        return;
    }
    if (f->kind != WAL_KIND_FRAGMENT)
        return;
    if (t->has_whole && f->segno <= t->last_whole) {
        bool known = t->nstale && t->stale[t->nstale - 1] == f->segno;
        if (!known && t->nstale < WAL_TAIL_STALE_MAX)
            t->stale[t->nstale++] = f->segno;
        return;
    }
    if (!t->frag.any || f->segno >= t->frag.segno)
        wal_frag_chain_add(&t->frag, f);
}

static void tail_finish(struct wal_tail *t, uint32_t seg_size)
{
    if (t->frag.any && t->has_whole && t->frag.segno <= t->last_whole)
        t->frag = (struct wal_frag_chain){0};
    t->end = 0;
    if (t->has_whole)
        t->end = wal_segment_start(t->last_whole + 1, seg_size);
    if (t->frag.any && t->frag.end > 0) {
        wal_lsn_t e = wal_segment_start(t->frag.segno, seg_size) + t->frag.end;
        t->end = e > t->end ? e : t->end;
    }
}

int wal_timeline_tail(repo_t *r, uint32_t tli, uint32_t seg_size, struct wal_tail *out,
                      wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    storage_iter_t *it;
    *out = (struct wal_tail){0};
    if (repo_key_wal_dir(r, tli, prefix, sizeof prefix) != 0)
        return wv_err_set(err, WV_EFAIL, "node name too long: %s", repo_node(r));
    int rc = storage_list_open(repo_storage(r), prefix, &it, err);
    if (rc)
        return rc;
    const char *key;
    uint64_t size;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        struct wal_file f;
        wv_err_t ignored;
        if (wal_file_parse(key + strlen(prefix), seg_size, &f, &ignored) == 0 && f.tli == tli)
            tail_add(out, &f);
    }
    storage_iter_close(it);
    if (rc < 0)
        return rc;
    tail_finish(out, seg_size);
    return 0;
}
