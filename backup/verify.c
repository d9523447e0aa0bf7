/* verify: read every object a node's backups and WAL consist of, authenticate it, and check
 * that the backups' block references and WAL ranges hold together. Like pg_verifybackup,
 * every problem is recorded and checking goes on; the caller fails once at the end. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/internal_restore.h"
#include "common/log.h"
#include "common/workers.h"

#define WAL_BATCH 256
#define BLOCK_PROBLEMS_MAX 20

struct verify_state {
    repo_t *r;
    const struct verify_opts *opts;
    json_t *problems;
    pthread_mutex_t lock;
    atomic_uint_fast64_t objects;
    atomic_uint_fast64_t bytes;
    atomic_uint_fast64_t done; /* objects of the current phase, for progress */
    uint64_t backups;
    json_t *packs; /* pack key -> true: each pack is read once however many backups use it */
    struct manifest_summary *sums;
    size_t nsums, cap;
    struct repo_node_info node;
    bool have_node;
};

static void problem(struct verify_state *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(struct verify_state *v, const char *fmt, ...)
{
    char line[WV_ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&v->lock);
    json_array_append_new(v->problems, json_string(line));
    pthread_mutex_unlock(&v->lock);
}

/* Names the object unless the message does already. */
static void object_problem(struct verify_state *v, const char *key, const wv_err_t *e)
{
    if (strstr(e->msg, key))
        problem(v, "%s", e->msg);
    else
        problem(v, "object %s: %s", key, e->msg);
}

static void progress(struct verify_state *v, const char *what, uint64_t total)
{
    uint64_t done = atomic_fetch_add(&v->done, 1) + 1;
    if (!v->opts->progress.update)
        return;
    pthread_mutex_lock(&v->lock);
    v->opts->progress.update(v->opts->progress.ctx, what, done, total);
    pthread_mutex_unlock(&v->lock);
}

/* ---- reading a whole object ---- */

struct whole {
    seal_reader_t *reader;
    uint64_t stored;
    uint64_t plain;
    uint8_t head[WAL_LONG_HEADER_BYTES];
};

static int keep_head(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct whole *w = ctx;
    (void)err;
    if (w->plain < sizeof w->head) {
        size_t n = sizeof w->head - (size_t)w->plain;
        memcpy(w->head + w->plain, data, n < len ? n : len);
    }
    w->plain += len;
    return 0;
}

static int feed_reader(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct whole *w = ctx;
    w->stored += len;
    return seal_reader_feed(w->reader, data, len, err);
}

/* Streams the object through the opener: every frame authenticated, truncation and bytes
 * after the final frame detected, plaintext discarded but for its first page. */
static int read_whole(struct verify_state *v, const char *key, struct whole *w, wv_err_t *err)
{
    memset(w, 0, sizeof *w);
    int rc = seal_reader_new(repo_keys(v->r), key, keep_head, w, &w->reader, err);
    if (rc)
        return rc;
    rc = storage_get_stream(repo_storage(v->r), key, feed_reader, w, err);
    if (rc == 0)
        rc = seal_reader_finish(w->reader, err);
    seal_reader_free(w->reader);
    atomic_fetch_add(&v->objects, 1);
    atomic_fetch_add(&v->bytes, w->stored);
    return rc;
}

/* ---- manifests and their blocks ---- */

struct block_check {
    struct verify_state *v;
    struct restore_fetch f;
    const char *id;
    atomic_size_t failures;
};

static int check_block_item(void *ctx, size_t index, wv_err_t *unused)
{
    struct block_check *bc = ctx;
    wv_err_t e = {0};
    (void)unused;
    if (restore_fetch_item(&bc->f, index, &e) != 0 &&
        atomic_fetch_add(&bc->failures, 1) < BLOCK_PROBLEMS_MAX)
        problem(bc->v, "backup %s: %s", bc->id, e.msg);
    return 0;
}

/* Every block reference is checked with the range reads a restore would make, each frame
 * opened once: its frame index, offset and sealed length must name exactly one frame of its
 * pack, and the bytes it takes must lie inside that frame's plaintext. */
static void check_blocks(struct verify_state *v, json_t *m, const char *id)
{
    struct restore_plan plan;
    struct block_check bc = {.v = v, .id = id};
    wv_err_t e = {0};
    atomic_init(&bc.failures, 0);
    if (restore_plan_build(m, &plan, &e) != 0) {
        problem(v, "backup %s: %s", id, e.msg);
        return;
    }
    if (restore_fetch_init(&bc.f, v->r, m, &plan, NULL, v->opts->jobs, &e) == 0) {
        bc.f.progress = v->opts->progress;
        workers_run(v->opts->jobs, plan.count, check_block_item, &bc, &e);
        atomic_fetch_add(&v->bytes, atomic_load(&bc.f.read_bytes));
        restore_fetch_free(&bc.f);
    } else
        problem(v, "backup %s: %s", id, e.msg);
    size_t n = atomic_load(&bc.failures);
    if (n > BLOCK_PROBLEMS_MAX)
        problem(v, "backup %s: %zu more block problems not listed", id, n - BLOCK_PROBLEMS_MAX);
    restore_plan_free(&plan);
}

static int note_packs(struct verify_state *v, json_t *m, const char *id)
{
    json_t *packs = json_object_get(m, "packs");
    for (size_t i = 0; i < json_array_size(packs); i++) {
        const char *name = json_string_value(json_array_get(packs, i));
        char key[REPO_KEY_MAX];
        if (!name || repo_key_pack(v->r, name, key, sizeof key) != 0)
            problem(v, "backup %s: bad name for pack %zu", id, i);
        else if (json_object_set_new(v->packs, key, json_true()) != 0)
            return -1;
    }
    return 0;
}

static int keep_summary(struct verify_state *v, const struct manifest_summary *s)
{
    if (v->nsums == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        struct manifest_summary *p = realloc(v->sums, cap * sizeof *p);
        if (!p)
            return -1;
        v->sums = p;
        v->cap = cap;
    }
    v->sums[v->nsums++] = *s;
    return 0;
}

static int check_backup(void *ctx, const char *id, wv_err_t *err)
{
    struct verify_state *v = ctx;
    struct manifest_summary s;
    json_t *m;
    wv_err_t e = {0};
    atomic_fetch_add(&v->objects, 1);
    if (manifest_load(v->r, id, &m, &e) != 0) {
        problem(v, "manifest of backup %s: %s", id, e.msg);
        return 0;
    }
    int rc = 0;
    if (manifest_summary_get(m, &s, &e) != 0)
        problem(v, "manifest of backup %s: %s", id, e.msg);
    else if (keep_summary(v, &s) != 0 || note_packs(v, m, id) != 0)
        rc = wv_err_set(err, WV_EFAIL, "out of memory verifying backup %s", id);
    else {
        v->backups++;
        check_blocks(v, m, id);
    }
    json_decref(m);
    return rc;
}

/* ---- packs ---- */

struct key_list {
    struct verify_state *v;
    const char **keys;
    uint64_t total;
    const char *what;
};

static int check_object_item(void *ctx, size_t index, wv_err_t *unused)
{
    struct key_list *l = ctx;
    struct whole w;
    wv_err_t e = {0};
    (void)unused;
    if (read_whole(l->v, l->keys[index], &w, &e) != 0)
        object_problem(l->v, l->keys[index], &e);
    progress(l->v, l->what, l->total);
    return 0;
}

static int check_packs(struct verify_state *v, wv_err_t *err)
{
    size_t n = json_object_size(v->packs), i = 0;
    struct key_list l = {.v = v, .total = n, .what = "verify packs"};
    l.keys = calloc(n ? n : 1, sizeof *l.keys);
    if (!l.keys)
        return wv_err_set(err, WV_EFAIL, "out of memory verifying packs");
    const char *key;
    json_t *value;
    json_object_foreach(v->packs, key, value)
    {
        (void)value;
        l.keys[i++] = key;
    }
    atomic_store(&v->done, 0);
    int rc = workers_run(v->opts->jobs, n, check_object_item, &l, err);
    free(l.keys);
    return rc;
}

/* ---- WAL objects ---- */

struct wal_batch {
    struct verify_state *v;
    uint32_t seg_size;
    char *keys[WAL_BATCH];
    size_t count;
    uint64_t total;
};

/* A whole segment must be one segment of this node, starting where its name says. */
static void check_segment(struct verify_state *v, const char *key, const struct whole *w,
                          uint32_t seg_size)
{
    struct wal_file wf;
    struct wal_segment_header h;
    wv_err_t e = {0};
    const char *name = strrchr(key, '/') ? strrchr(key, '/') + 1 : key;
    if (wal_file_parse(name, seg_size, &wf, &e) != 0 ||
        (wf.kind != WAL_KIND_SEGMENT && wf.kind != WAL_KIND_FRAGMENT))
        return;
    if (wf.kind == WAL_KIND_FRAGMENT && w->plain != wf.frag_end - wf.frag_start) {
        problem(v, "WAL fragment %s holds %" PRIu64 " bytes, not the %u its name says", key,
                w->plain, wf.frag_end - wf.frag_start);
    } else if (wf.kind == WAL_KIND_FRAGMENT && wf.frag_start != 0) {
        return; /* only a segment's first bytes carry its header */
    } else if (wf.kind == WAL_KIND_SEGMENT && w->plain != seg_size) {
        problem(v, "WAL segment %s holds %" PRIu64 " bytes, not the segment size %u", key, w->plain,
                seg_size);
    } else if (wal_segment_header_parse(w->head, sizeof w->head, &h, &e) != 0) {
        problem(v, "WAL segment %s: %s", key, e.msg);
    } else if (h.pageaddr != wal_segment_start(wf.segno, seg_size)) {
        char got[WAL_LSN_STR_MAX], want[WAL_LSN_STR_MAX];
        wal_lsn_format(h.pageaddr, got);
        wal_lsn_format(wal_segment_start(wf.segno, seg_size), want);
        problem(v, "WAL segment %s: its first page is for LSN %s, not %s", key, got, want);
    } else if (v->have_node && v->node.system_identifier &&
               h.system_identifier != v->node.system_identifier) {
        problem(v,
                "WAL segment %s belongs to PostgreSQL system %" PRIu64 ", not the node's %" PRIu64,
                key, h.system_identifier, v->node.system_identifier);
    }
}

static int check_wal_item(void *ctx, size_t index, wv_err_t *unused)
{
    struct wal_batch *b = ctx;
    struct whole w;
    wv_err_t e = {0};
    (void)unused;
    if (read_whole(b->v, b->keys[index], &w, &e) != 0)
        object_problem(b->v, b->keys[index], &e);
    else
        check_segment(b->v, b->keys[index], &w, b->seg_size);
    progress(b->v, "verify WAL", b->total);
    return 0;
}

static int run_batch(struct wal_batch *b, wv_err_t *err)
{
    int rc = workers_run(b->v->opts->jobs, b->count, check_wal_item, b, err);
    for (size_t i = 0; i < b->count; i++)
        free(b->keys[i]);
    b->count = 0;
    return rc;
}

/* The listing is read in batches so memory does not grow with the number of segments. */
static int add_to_batch(void *ctx, const char *key, uint64_t size, wv_err_t *err)
{
    struct wal_batch *b = ctx;
    (void)size;
    if (!(b->keys[b->count] = strdup(key)))
        return wv_err_set(err, WV_EFAIL, "out of memory verifying WAL");
    return ++b->count == WAL_BATCH ? run_batch(b, err) : 0;
}

static int count_object(void *ctx, const char *key, uint64_t size, wv_err_t *err)
{
    (void)key, (void)size, (void)err;
    ++*(uint64_t *)ctx;
    return 0;
}

static void name_range(uint32_t tli, uint64_t a, uint64_t b, uint32_t seg_size, char *out,
                       size_t len)
{
    char first[WAL_NAME_MAX], last[WAL_NAME_MAX];
    wal_segment_name(tli, a, seg_size, first);
    wal_segment_name(tli, b, seg_size, last);
    if (a == b)
        snprintf(out, len, "%s", first);
    else
        snprintf(out, len, "%s to %s", first, last);
}

/* The stop segment may be one wal-stream has not finished: its fragments must reach the
 * backup's stop LSN, and no segment may be missing before it. */
static void check_partial(struct verify_state *v, const struct wal_timeline *t,
                          const struct manifest_summary *s, uint64_t next, uint32_t seg_size)
{
    char names[2 * WAL_NAME_MAX + 8];
    if (t->partial.segno > next) {
        name_range(s->timeline, next, t->partial.segno - 1, seg_size, names, sizeof names);
        problem(v, "WAL gap on timeline %u: %s missing (needed by backup %s)", s->timeline, names,
                s->id);
    }
    wal_lsn_t held = wal_segment_start(t->partial.segno, seg_size) + t->partial.end;
    if (held < s->stop_lsn) {
        char have[WAL_LSN_STR_MAX], want[WAL_LSN_STR_MAX];
        wal_lsn_format(held, have);
        wal_lsn_format(s->stop_lsn, want);
        problem(v,
                "backup %s: WAL on timeline %u is archived up to %s only, not to its stop LSN %s",
                s->id, s->timeline, have, want);
    }
}

/* Every segment from the one holding start_lsn to the newest of the timeline must be there:
 * recovery replays them all, in order. */
static void check_continuity(struct verify_state *v, const struct wal_catalog *cat,
                             const struct manifest_summary *s)
{
    const struct wal_timeline *t = wal_catalog_find(cat, s->timeline);
    uint64_t next = wal_segno_of(s->start_lsn, cat->seg_size);
    uint64_t stop = wal_segno_of(s->stop_lsn ? s->stop_lsn - 1 : 0, cat->seg_size);
    char names[2 * WAL_NAME_MAX + 8];
    for (size_t i = 0; t && i < t->count; i++) {
        const struct wal_range *r = &t->ranges[i];
        if (r->last < next)
            continue;
        if (r->first > next) {
            name_range(s->timeline, next, r->first - 1, cat->seg_size, names, sizeof names);
            problem(v, "WAL gap on timeline %u: %s missing (needed by backup %s)", s->timeline,
                    names, s->id);
        }
        next = r->last + 1;
    }
    if (t && t->partial.any && t->partial.segno >= next && next <= stop) {
        check_partial(v, t, s, next, cat->seg_size);
        return;
    }
    if (next <= stop) {
        name_range(s->timeline, next, stop, cat->seg_size, names, sizeof names);
        problem(v,
                "backup %s: WAL up to its stop segment is not archived on timeline %u: %s "
                "missing",
                s->id, s->timeline, names);
    }
}

static uint32_t wal_seg_size(const struct verify_state *v)
{
    if (v->have_node && wal_seg_size_valid(v->node.wal_seg_size))
        return v->node.wal_seg_size;
    return v->nsums ? v->sums[0].wal_seg_size : WAL_DEFAULT_SEG_SIZE;
}

static int check_wal(struct verify_state *v, wv_err_t *err)
{
    struct wal_batch *b = calloc(1, sizeof *b);
    struct wal_catalog cat, again;
    if (!b)
        return wv_err_set(err, WV_EFAIL, "out of memory verifying WAL");
    *b = (struct wal_batch){.v = v, .seg_size = wal_seg_size(v)};
    int rc = wal_catalog_load(v->r, b->seg_size, count_object, &b->total, &cat, err);
    if (rc == 0) {
        atomic_store(&v->done, 0);
        rc = wal_catalog_load(v->r, b->seg_size, add_to_batch, b, &again, err);
        if (rc == 0) {
            wal_catalog_free(&again);
            rc = run_batch(b, err);
        }
        for (size_t i = 0; i < v->nsums; i++)
            check_continuity(v, &cat, &v->sums[i]);
        wal_catalog_free(&cat);
    }
    for (size_t i = 0; i < b->count; i++)
        free(b->keys[i]);
    free(b);
    return rc;
}

/* ---- verify_run ---- */

static void check_node(struct verify_state *v)
{
    wv_err_t e = {0};
    int rc = repo_node_get(v->r, &v->node, &e);
    v->have_node = rc == 0;
    if (rc != WV_ENOTFOUND)
        atomic_fetch_add(&v->objects, 1);
    if (rc && rc != WV_ENOTFOUND)
        problem(v, "node record of %s: %s", repo_node(v->r), e.msg);
}

static int check_all(struct verify_state *v, wv_err_t *err)
{
    check_node(v);
    int rc = v->opts->backup_id ? check_backup(v, v->opts->backup_id, err)
                                : catalog_each_backup_id(v->r, check_backup, v, err);
    if (rc == 0)
        rc = check_packs(v, err);
    if (rc == 0)
        rc = check_wal(v, err);
    return rc;
}

int verify_run(repo_t *r, const struct verify_opts *opts, json_t **report, wv_err_t *err)
{
    struct verify_state v = {.r = r, .opts = opts};
    *report = NULL;
    v.problems = json_array();
    v.packs = json_object();
    pthread_mutex_init(&v.lock, NULL);
    atomic_init(&v.objects, 0);
    atomic_init(&v.bytes, 0);
    atomic_init(&v.done, 0);
    int rc = v.problems && v.packs ? check_all(&v, err)
                                   : wv_err_set(err, WV_EFAIL, "out of memory verifying");
    if (rc == 0) {
        log_debug("verify of node %s: %zu problems in %" PRIu64 " backups", repo_node(r),
                  json_array_size(v.problems), v.backups);
        *report =
            json_pack("{s:O, s:I, s:I, s:I}", "problems", v.problems, "backups_checked",
                      (json_int_t)v.backups, "objects_checked", (json_int_t)atomic_load(&v.objects),
                      "bytes_checked", (json_int_t)atomic_load(&v.bytes));
        if (!*report)
            rc = wv_err_set(err, WV_EFAIL, "out of memory writing the verify report");
    }
    json_decref(v.problems);
    json_decref(v.packs);
    free(v.sums);
    pthread_mutex_destroy(&v.lock);
    return rc;
}
