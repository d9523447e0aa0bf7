/* The catalog of what the repository holds for a node: its backups (and which one serves a
 * recovery target), the block reads one backup is made of, and its archived WAL as ranges of
 * consecutive segments per timeline. Everything here reads; nothing writes. */
#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/internal_restore.h"
#include "common/timeutil.h"

/* ---- the plan ---- */

void restore_plan_init(struct restore_plan *p, size_t max_read)
{
    memset(p, 0, sizeof *p);
    p->max_read = max_read;
}

void restore_plan_free(struct restore_plan *p)
{
    free(p->pieces);
    free(p->reads);
    p->pieces = NULL;
    p->reads = NULL;
    p->npieces = p->pieces_cap = p->count = p->cap = 0;
}

/* items (of `size` bytes each, `count` used of *cap) with room for one more: the same
 * pointer, a larger copy, or NULL when out of memory (items is then left as it was). */
static void *plan_grow(void *items, size_t *cap, size_t count, size_t size)
{
    if (items && count < *cap)
        return items;
    size_t n = *cap ? *cap * 2 : 256;
    void *p = n <= SIZE_MAX / size ? realloc(items, n * size) : NULL;
    if (p)
        *cap = n;
    return p;
}

int restore_plan_add(struct restore_plan *p, size_t file, size_t block, const struct block_ref *b,
                     wv_err_t *err)
{
    if (file > UINT32_MAX || block > UINT32_MAX)
        return wv_err_set(err, WV_ECORRUPT, "manifest has too many files or blocks");
    struct restore_piece *pieces =
        plan_grow(p->pieces, &p->pieces_cap, p->npieces, sizeof *p->pieces);
    if (!pieces)
        return wv_err_set(err, WV_EFAIL, "out of memory planning the restore");
    p->pieces = pieces;
    p->pieces[p->npieces++] = (struct restore_piece){.offset = b->offset,
                                                     .file_offset = b->file_offset,
                                                     .file = (uint32_t)file,
                                                     .block = (uint32_t)block,
                                                     .pack = b->pack,
                                                     .frame = b->frame,
                                                     .sealed_len = b->sealed_len,
                                                     .skip = b->skip,
                                                     .plain_len = b->plain_len};
    p->total_plain += b->plain_len;
    return 0;
}

static int order(uint64_t a, uint64_t b)
{
    return (a > b) - (a < b);
}

/* Where the frame lies, then where in it; file and offset only make the order total. */
static int compare_pieces(const void *a, const void *b)
{
    const struct restore_piece *x = a, *y = b;
    int c = order(x->pack, y->pack);
    c = c ? c : order(x->offset, y->offset);
    c = c ? c : order(x->skip, y->skip);
    c = c ? c : order(x->file, y->file);
    return c ? c : order(x->file_offset, y->file_offset);
}

const char *restore_file_path(json_t *files, size_t i)
{
    const char *p = json_string_value(json_object_get(json_array_get(files, i), "path"));
    return p ? p : "(unnamed)";
}

static const char *pack_name(json_t *packs, uint32_t pack)
{
    const char *p = json_string_value(json_array_get(packs, pack));
    return p ? p : "(unnamed)";
}

static int piece_problem(const struct restore_piece *q, json_t *files, json_t *packs,
                         const char *why, wv_err_t *err)
{
    return wv_err_set(err, WV_ECORRUPT,
                      "manifest entry %s: block %" PRIu32 " %s (frame %" PRIu32 " at %" PRIu64
                      " of pack %s)",
                      restore_file_path(files, q->file), q->block, why, q->frame, q->offset,
                      pack_name(packs, q->pack));
}

/* Sorted pieces that name one frame must agree on it; distinct frames must not overlap. */
static int check_neighbours(const struct restore_piece *prev, const struct restore_piece *q,
                            json_t *files, json_t *packs, wv_err_t *err)
{
    if (prev->pack != q->pack)
        return 0;
    if (prev->offset == q->offset && (prev->frame != q->frame || prev->sealed_len != q->sealed_len))
        return piece_problem(q, files, packs, "names a frame another reference names otherwise",
                             err);
    if (prev->offset != q->offset && q->offset < prev->offset + prev->sealed_len)
        return piece_problem(q, files, packs, "names a frame that overlaps another", err);
    return 0;
}

static int plan_new_read(struct restore_plan *p, size_t first, wv_err_t *err)
{
    struct restore_read *reads = plan_grow(p->reads, &p->cap, p->count, sizeof *p->reads);
    if (!reads)
        return wv_err_set(err, WV_EFAIL, "out of memory planning the restore");
    p->reads = reads;
    const struct restore_piece *q = &p->pieces[first];
    p->reads[p->count++] = (struct restore_read){
        .first = first, .pack = q->pack, .offset = q->offset, .len = q->sealed_len};
    return 0;
}

/* A piece joins the read before it when it shares that read's last frame (always: a frame
 * is read and opened once), or when its frame follows that read's last one directly and the
 * read stays within max_read. */
static int plan_place(struct restore_plan *p, size_t i, json_t *files, json_t *packs, wv_err_t *err)
{
    const struct restore_piece *q = &p->pieces[i];
    const struct restore_piece *prev = i ? &p->pieces[i - 1] : NULL;
    struct restore_read *cur = p->count ? &p->reads[p->count - 1] : NULL;
    if (q->sealed_len > p->max_read)
        return piece_problem(q, files, packs, "names a frame larger than a read", err);
    int rc = prev ? check_neighbours(prev, q, files, packs, err) : 0;
    if (rc)
        return rc;
    bool same_frame = cur && prev && prev->pack == q->pack && prev->offset == q->offset;
    if (!same_frame) {
        if (cur && cur->pack == q->pack && cur->offset + cur->len == q->offset &&
            cur->len + q->sealed_len <= p->max_read) {
            cur->len += q->sealed_len;
        } else {
            if ((rc = plan_new_read(p, i, err)) != 0)
                return rc;
            cur = &p->reads[p->count - 1];
        }
        cur->frames++;
        p->total_frames++;
    }
    cur->count++;
    cur->plain += q->plain_len;
    return 0;
}

int restore_plan_finish(struct restore_plan *p, json_t *files, json_t *packs, wv_err_t *err)
{
    p->count = 0;
    p->total_frames = 0;
    if (!p->pieces) /* no reference at all */
        return 0;
    qsort(p->pieces, p->npieces, sizeof *p->pieces, compare_pieces);
    for (size_t i = 0; i < p->npieces; i++) {
        int rc = plan_place(p, i, files, packs, err);
        if (rc)
            return rc;
    }
    return 0;
}

int restore_piece_check(const struct restore_piece *q, size_t frame_plain, json_t *files,
                        json_t *packs, wv_err_t *err)
{
    if ((uint64_t)q->skip + q->plain_len <= frame_plain)
        return 0;
    char why[96];
    snprintf(why, sizeof why, "takes bytes %" PRIu32 "..%" PRIu64 " of a frame of %zu bytes",
             q->skip, (uint64_t)q->skip + q->plain_len, frame_plain);
    return piece_problem(q, files, packs, why, err);
}

size_t restore_file_block_count(json_t *files, size_t i)
{
    return manifest_file_block_count(json_array_get(files, i));
}

/* The manifest is authenticated, but a path that climbs out of the target directory must
 * never be written, whatever produced it. */
bool restore_path_is_safe(const char *p)
{
    if (!p || !p[0] || p[0] == '/')
        return false;
    for (const char *s = p; s; s = strchr(s, '/')) {
        if (*s == '/')
            s++;
        if (strncmp(s, "..", 2) == 0 && (s[2] == '/' || s[2] == '\0'))
            return false;
    }
    return true;
}

/* Checked in manifest order, before sorting mixes the files: a file's references ascend
 * and do not overlap. */
static int check_block(const char *path, size_t i, const struct block_ref *b, size_t npacks,
                       uint64_t size, uint64_t *next, wv_err_t *err)
{
    const char *why = NULL;
    if (b->pack >= npacks)
        why = "names no pack of the manifest";
    else if (b->sealed_len < SEAL_FRAME_OVERHEAD || b->sealed_len > RESTORE_FRAME_MAX)
        why = "has an impossible sealed length";
    else if ((uint64_t)b->skip + b->plain_len > SEAL_CHUNK_MAX)
        why = "reaches beyond the end of any frame";
    else if (b->file_offset + b->plain_len > size)
        why = "lies beyond the end of its file";
    else if (b->file_offset < *next)
        why = "overlaps the block before it";
    if (why)
        return wv_err_set(err, WV_ECORRUPT, "manifest entry %s: block %zu %s", path, i, why);
    *next = b->file_offset + b->plain_len;
    return 0;
}

static int plan_file(struct restore_plan *p, json_t *files, size_t fi, size_t npacks, wv_err_t *err)
{
    json_t *f = json_array_get(files, fi);
    const char *path = json_string_value(json_object_get(f, "path"));
    if (manifest_file_block_count(f) == 0)
        return 0;
    if (!restore_path_is_safe(path))
        return wv_err_set(err, WV_ECORRUPT, "manifest has an unsafe file path \"%s\"",
                          path ? path : "(none)");
    uint64_t size = (uint64_t)json_integer_value(json_object_get(f, "size"));
    uint64_t next = 0;
    struct block_ref *refs;
    size_t n;
    int rc = manifest_file_blocks(f, &refs, &n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = check_block(path, i, &refs[i], npacks, size, &next, err);
        if (rc == 0)
            rc = restore_plan_add(p, fi, i, &refs[i], err);
    }
    free(refs);
    return rc;
}

/* The pieces array is sized once, to the number of references. */
static int plan_reserve(struct restore_plan *p, json_t *files, wv_err_t *err)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(files); i++)
        n += restore_file_block_count(files, i);
    if (n == 0)
        return 0;
    p->pieces = n <= SIZE_MAX / sizeof *p->pieces ? malloc(n * sizeof *p->pieces) : NULL;
    if (!p->pieces)
        return wv_err_set(err, WV_EFAIL, "out of memory planning the restore of %zu blocks", n);
    p->pieces_cap = n;
    return 0;
}

int restore_plan_build(json_t *manifest, struct restore_plan *p, wv_err_t *err)
{
    json_t *files = json_object_get(manifest, "files");
    json_t *packs = json_object_get(manifest, "packs");
    restore_plan_init(p, RESTORE_READ_MAX);
    if (!json_is_array(files))
        return wv_err_set(err, WV_ECORRUPT, "manifest has no file list");
    int rc = plan_reserve(p, files, err);
    for (size_t i = 0; rc == 0 && i < json_array_size(files); i++)
        rc = plan_file(p, files, i, json_array_size(packs), err);
    if (rc == 0)
        rc = restore_plan_finish(p, files, packs, err);
    if (rc)
        restore_plan_free(p);
    return rc;
}

/* ---- backups ---- */

int catalog_each_backup_id(repo_t *r, catalog_id_fn fn, void *ctx, wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    storage_iter_t *it;
    if (repo_key_backups_dir(r, prefix, sizeof prefix) != 0)
        return wv_err_set(err, WV_EFAIL, "node name too long: %s", repo_node(r));
    int rc = storage_list_open(repo_storage(r), prefix, &it, err);
    if (rc)
        return rc;
    const char *key;
    uint64_t size;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        const char *name = key + strlen(prefix);
        /* '.' names are a backend's own (temporaries); a '/' is no backup of ours. */
        if (!name[0] || name[0] == '.' || strchr(name, '/'))
            continue;
        if ((rc = fn(ctx, name, err)) != 0)
            break;
    }
    storage_iter_close(it);
    return rc < 0 ? rc : 0;
}

struct summaries {
    repo_t *r;
    struct manifest_summary *items;
    size_t count, cap;
};

static int add_summary(void *ctx, const char *id, wv_err_t *err)
{
    struct summaries *s = ctx;
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct manifest_summary *p = realloc(s->items, cap * sizeof *p);
        if (!p)
            return wv_err_set(err, WV_EFAIL, "out of memory listing backups");
        s->items = p;
        s->cap = cap;
    }
    json_t *m;
    int rc = manifest_load(s->r, id, &m, err);
    if (rc == 0) {
        rc = manifest_summary_get(m, &s->items[s->count], err);
        json_decref(m);
    }
    if (rc)
        return wv_err_prefix(err, "cannot open the manifest of backup %s of node %s", id,
                             repo_node(s->r));
    s->count++;
    return 0;
}

static int compare_summaries(const void *a, const void *b)
{
    const struct manifest_summary *x = a, *y = b;
    if (x->stop_lsn != y->stop_lsn)
        return x->stop_lsn < y->stop_lsn ? -1 : 1;
    return strcmp(x->id, y->id);
}

int catalog_backups(repo_t *r, struct manifest_summary **out, size_t *count, wv_err_t *err)
{
    struct summaries s = {.r = r};
    int rc = catalog_each_backup_id(r, add_summary, &s, err);
    if (rc) {
        free(s.items);
        return rc;
    }
    if (s.count > 1)
        qsort(s.items, s.count, sizeof *s.items, compare_summaries);
    *out = s.items;
    *count = s.count;
    return 0;
}

/* ---- recovery target times ---- */

static const char *take_digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; p && i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return NULL;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return p ? p + n : NULL;
}

static const char *take_char(const char *p, const char *accepted)
{
    return p && *p && strchr(accepted, *p) ? p + 1 : NULL;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* "YYYY-MM-DD HH:MM:SS" (or with 'T'); fills tm and returns what follows, or NULL. */
static const char *take_date_time(const char *p, struct tm *tm)
{
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
    p = take_char(take_digits(p, 4, &y), "-");
    p = take_char(take_digits(p, 2, &mo), "-");
    p = take_char(take_digits(p, 2, &d), " T");
    p = take_char(take_digits(p, 2, &h), ":");
    p = take_char(take_digits(p, 2, &mi), ":");
    p = take_digits(p, 2, &s);
    if (!p || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59)
        return NULL;
    *tm = (struct tm){.tm_year = y - 1900,
                      .tm_mon = mo - 1,
                      .tm_mday = d,
                      .tm_hour = h,
                      .tm_min = mi,
                      .tm_sec = s};
    return p;
}

static const char *take_fraction(const char *p, char frac[10])
{
    size_t n = 0;
    frac[0] = '\0';
    if (!p || *p != '.')
        return p;
    for (p++; isdigit((unsigned char)*p); p++) {
        if (n == 9)
            return NULL;
        frac[n++] = *p;
    }
    frac[n] = '\0';
    return n ? p : NULL;
}

/* The zone, as seconds east of UTC; the end of the text must follow it. */
static bool take_zone(const char *p, int *offset)
{
    int h = 0, m = 0;
    *offset = 0;
    if (p && *p == ' ')
        p++;
    if (!p || !*p || strcmp(p, "Z") == 0 || strcmp(p, "UTC") == 0)
        return p != NULL;
    int sign = *p == '-' ? -1 : 1;
    p = take_digits(take_char(p, "+-"), 2, &h);
    if (p && *p == ':')
        p++;
    if (p && *p)
        p = take_digits(p, 2, &m);
    if (!p || *p || h > 15 || m > 59)
        return false;
    *offset = sign * (h * 3600 + m * 60);
    return true;
}

int restore_parse_time(const char *text, struct restore_time *out, wv_err_t *err)
{
    struct tm tm;
    int offset;
    const char *p = take_fraction(take_date_time(text, &tm), out->frac);
    if (!take_zone(p, &offset))
        return wv_err_set(err, WV_EUSAGE,
                          "invalid target time \"%s\": use YYYY-MM-DD HH:MM:SS[.frac][+HH[:MM]|Z]"
                          " (no zone means UTC)",
                          text);
    out->sec = (int64_t)timegm(&tm) - offset;
    return 0;
}

void restore_format_time(const struct restore_time *t, char *out, size_t len)
{
    struct tm tm;
    time_t sec = (time_t)t->sec;
    char base[32];
    gmtime_r(&sec, &tm);
    strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, len, "%s%s%s+00", base, t->frac[0] ? "." : "", t->frac);
}

int64_t restore_time_ms(const struct restore_time *t)
{
    int64_t ms = 0;
    for (int i = 0; i < 3; i++)
        ms = ms * 10 + (t->frac[0] && i < (int)strlen(t->frac) ? t->frac[i] - '0' : 0);
    return t->sec * 1000 + ms;
}

/* ---- choosing the backup of a restore ---- */

static const struct manifest_summary *pick_backup(const struct manifest_summary *all, size_t n,
                                                  const struct restore_target *t)
{
    const struct manifest_summary *pick = NULL;
    for (size_t i = 0; i < n; i++) {
        bool fits = true;
        if (t->lsn)
            fits = all[i].stop_lsn <= *t->lsn;
        /* stop_time_ms was read after pg_backup_stop returned: earlier than the target
         * means the backup surely ended before it. */
        else if (t->time)
            fits = all[i].stop_time_ms < restore_time_ms(t->time);
        if (fits && (!pick || !t->time || all[i].stop_time_ms >= pick->stop_time_ms))
            pick = &all[i];
    }
    return pick;
}

static int no_backup(repo_t *r, const struct manifest_summary *all, size_t n,
                     const struct restore_target *t, wv_err_t *err)
{
    char want[64], oldest[64];
    if (n == 0 || (!t->lsn && !t->time))
        return wv_err_set(err, WV_ENOTFOUND,
                          "no backup of node %s in %s; take one with 'walvault backup'",
                          repo_node(r), storage_url(repo_storage(r)));
    if (t->lsn) {
        wal_lsn_format(*t->lsn, want);
        wal_lsn_format(all[0].stop_lsn, oldest);
        return wv_err_set(err, WV_ENOTFOUND,
                          "no backup of node %s stopped at or before LSN %s; the oldest "
                          "stopped at %s",
                          repo_node(r), want, oldest);
    }
    int64_t first = all[0].stop_time;
    for (size_t i = 1; i < n; i++)
        first = all[i].stop_time < first ? all[i].stop_time : first;
    restore_format_time(t->time, want, sizeof want);
    time_format_utc((time_t)first, oldest, sizeof oldest);
    return wv_err_set(err, WV_ENOTFOUND,
                      "no backup of node %s finished before %s; the oldest finished at %s",
                      repo_node(r), want, oldest);
}

static int load_chosen(repo_t *r, const char *id, json_t **manifest,
                       struct manifest_summary *summary, wv_err_t *err)
{
    int rc = manifest_load(r, id, manifest, err);
    if (rc)
        return rc;
    rc = manifest_summary_get(*manifest, summary, err);
    if (rc) {
        json_decref(*manifest);
        *manifest = NULL;
        wv_err_prefix(err, "backup %s", id);
    }
    return rc;
}

int restore_choose_backup(repo_t *r, const struct restore_target *t, json_t **manifest,
                          struct manifest_summary *summary, wv_err_t *err)
{
    *manifest = NULL;
    if (t->backup_id)
        return load_chosen(r, t->backup_id, manifest, summary, err);
    struct manifest_summary *all;
    size_t n;
    int rc = catalog_backups(r, &all, &n, err);
    if (rc)
        return rc;
    const struct manifest_summary *pick = pick_backup(all, n, t);
    if (pick)
        rc = load_chosen(r, pick->id, manifest, summary, err);
    else
        rc = no_backup(r, all, n, t, err);
    free(all);
    return rc;
}

/* ---- archived WAL ---- */

const struct wal_timeline *wal_catalog_find(const struct wal_catalog *c, uint32_t tli)
{
    for (size_t i = 0; i < c->count; i++)
        if (c->tls[i].tli == tli)
            return &c->tls[i];
    return NULL;
}

void wal_catalog_free(struct wal_catalog *c)
{
    for (size_t i = 0; i < c->count; i++)
        free(c->tls[i].ranges);
    free(c->tls);
    c->tls = NULL;
    c->count = 0;
}

/* Keeps tls sorted by timeline; history files and segments may name any of them. */
static struct wal_timeline *timeline_get(struct wal_catalog *c, uint32_t tli)
{
    struct wal_timeline *t = (struct wal_timeline *)wal_catalog_find(c, tli);
    if (t)
        return t;
    struct wal_timeline *tls = realloc(c->tls, (c->count + 1) * sizeof *tls);
    if (!tls)
        return NULL;
    c->tls = tls;
    size_t at = c->count;
    while (at > 0 && tls[at - 1].tli > tli)
        at--;
    memmove(&tls[at + 1], &tls[at], (c->count - at) * sizeof *tls);
    tls[at] = (struct wal_timeline){.tli = tli};
    c->count++;
    return &tls[at];
}

/* Listings come in lexical order, which for segment names of one timeline is segment
 * order: a segment either extends the last range or starts a new one. */
static int timeline_add_segment(struct wal_timeline *t, uint64_t segno)
{
    struct wal_range *last = t->count ? &t->ranges[t->count - 1] : NULL;
    if (last && segno <= last->last)
        return 0;
    if (last && segno == last->last + 1) {
        last->last = segno;
        return 0;
    }
    if (t->count == t->cap || !t->ranges) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        struct wal_range *p = realloc(t->ranges, cap * sizeof *p);
        if (!p)
            return -1;
        t->ranges = p;
        t->cap = cap;
    }
    t->ranges[t->count++] = (struct wal_range){segno, segno};
    return 0;
}

/* rel is "TTTTTTTT/name"; names that are no WAL file of that timeline are left out. */
static int catalog_wal_name(struct wal_catalog *c, const char *rel, wv_err_t *err)
{
    const char *name = strchr(rel, '/');
    struct wal_file wf;
    wv_err_t ignored;
    if (!name || wal_file_parse(name + 1, c->seg_size, &wf, &ignored) != 0 ||
        strtoul(rel, NULL, 16) != wf.tli)
        return 0;
    if (wf.kind != WAL_KIND_SEGMENT && wf.kind != WAL_KIND_HISTORY && wf.kind != WAL_KIND_FRAGMENT)
        return 0;
    struct wal_timeline *t = timeline_get(c, wf.tli);
    if (t && wf.kind == WAL_KIND_HISTORY)
        t->history = true;
    if (t && wf.kind == WAL_KIND_FRAGMENT) { /* leftovers beside a whole segment don't count */
        if (!t->count || wf.segno > t->ranges[t->count - 1].last)
            wal_frag_chain_add(&t->partial, &wf);
        return 0;
    }
    /* a whole segment after a fragmented one: that one is a hole, not the newest */
    if (t && wf.kind == WAL_KIND_SEGMENT && t->partial.any && wf.segno > t->partial.segno)
        t->partial = (struct wal_frag_chain){0};
    if (!t || (wf.kind == WAL_KIND_SEGMENT && timeline_add_segment(t, wf.segno) != 0))
        return wv_err_set(err, WV_EFAIL, "out of memory listing WAL");
    return 0;
}

static int wal_prefix(repo_t *r, char *out, size_t len, wv_err_t *err)
{
    /* "nodes/<node>/wal/00000001/" less its timeline part, so repo/ keeps the naming. */
    if (repo_key_wal_dir(r, 1, out, len) != 0 || strlen(out) < 9)
        return wv_err_set(err, WV_EFAIL, "node name too long: %s", repo_node(r));
    out[strlen(out) - 9] = '\0';
    return 0;
}

int wal_catalog_load(repo_t *r, uint32_t seg_size, wal_object_fn fn, void *ctx,
                     struct wal_catalog *out, wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    storage_iter_t *it;
    *out = (struct wal_catalog){.seg_size = seg_size};
    int rc = wal_prefix(r, prefix, sizeof prefix, err);
    if (rc == 0)
        rc = storage_list_open(repo_storage(r), prefix, &it, err);
    if (rc)
        return rc;
    const char *key;
    uint64_t size;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        rc = catalog_wal_name(out, key + strlen(prefix), err);
        if (rc == 0 && fn)
            rc = fn(ctx, key, size, err);
        if (rc)
            break;
    }
    storage_iter_close(it);
    if (rc < 0)
        wal_catalog_free(out);
    return rc < 0 ? rc : 0;
}

/* ---- catalog_describe ---- */

static void iso_time(int64_t t, char out[32])
{
    struct tm tm;
    time_t sec = (time_t)t;
    gmtime_r(&sec, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *backup_json(const struct manifest_summary *s)
{
    char start[WAL_LSN_STR_MAX], stop[WAL_LSN_STR_MAX], t0[32], t1[32];
    wal_lsn_format(s->start_lsn, start);
    wal_lsn_format(s->stop_lsn, stop);
    iso_time(s->start_time, t0);
    iso_time(s->stop_time, t1);
    /* new_share: the part of the database this backup stored itself rather than referenced */
    return json_pack("{s:s, s:s, s:s?, s:I, s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:f}",
                     "id", s->id, "type", s->type, "parent", s->parent[0] ? s->parent : NULL,
                     "timeline", (json_int_t)s->timeline, "start_lsn", start, "stop_lsn", stop,
                     "start_time", (json_int_t)s->start_time, "stop_time", (json_int_t)s->stop_time,
                     "start_time_text", t0, "stop_time_text", t1, "db_bytes",
                     (json_int_t)s->db_bytes, "stored_bytes", (json_int_t)s->stored_bytes,
                     "new_bytes", (json_int_t)s->new_bytes, "new_share",
                     s->db_bytes ? (double)s->new_bytes / (double)s->db_bytes : 0.0);
}

static json_t *timeline_json(const struct wal_timeline *t, uint32_t seg_size)
{
    json_t *ranges = json_array();
    for (size_t i = 0; i < t->count; i++) {
        char first[WAL_NAME_MAX], last[WAL_NAME_MAX];
        wal_segment_name(t->tli, t->ranges[i].first, seg_size, first);
        wal_segment_name(t->tli, t->ranges[i].last, seg_size, last);
        json_array_append_new(ranges,
                              json_pack("{s:s, s:s, s:I}", "first", first, "last", last, "segments",
                                        (json_int_t)(t->ranges[i].last - t->ranges[i].first + 1)));
    }
    json_t *doc = json_pack("{s:I, s:o, s:b}", "timeline", (json_int_t)t->tli, "ranges", ranges,
                            "history", t->history);
    if (t->partial.any && t->partial.end > 0) { /* streamed, not yet stored whole */
        char seg[WAL_NAME_MAX], end[WAL_LSN_STR_MAX];
        wal_segment_name(t->tli, t->partial.segno, seg_size, seg);
        wal_lsn_format(wal_segment_start(t->partial.segno, seg_size) + t->partial.end, end);
        json_object_set_new(doc, "partial",
                            json_pack("{s:s, s:s, s:I}", "segment", seg, "end_lsn", end,
                                      "fragments", (json_int_t)t->partial.count));
    }
    return doc;
}

static int describe_wal(repo_t *r, json_t *wal, wv_err_t *err)
{
    struct repo_node_info info;
    struct wal_catalog cat;
    int rc = repo_node_get(r, &info, err);
    if (rc == WV_ENOTFOUND)
        return 0;
    if (rc == 0)
        rc = wal_catalog_load(r, info.wal_seg_size ? info.wal_seg_size : WAL_DEFAULT_SEG_SIZE, NULL,
                              NULL, &cat, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < cat.count; i++)
        json_array_append_new(wal, timeline_json(&cat.tls[i], cat.seg_size));
    wal_catalog_free(&cat);
    return 0;
}

int catalog_describe(repo_t *r, json_t **out, wv_err_t *err)
{
    struct manifest_summary *all;
    size_t n;
    *out = NULL;
    int rc = catalog_backups(r, &all, &n, err);
    if (rc)
        return rc;
    json_t *backups = json_array(), *wal = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(backups, backup_json(&all[i]));
    free(all);
    rc = describe_wal(r, wal, err);
    json_t *doc =
        json_pack("{s:s, s:o, s:o}", "node", repo_node(r), "backups", backups, "wal", wal);
    if (rc == 0 && !doc)
        rc = wv_err_set(err, WV_EFAIL, "out of memory describing node %s", repo_node(r));
    if (rc)
        json_decref(doc);
    else
        *out = doc;
    return rc;
}
