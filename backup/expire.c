/* expire: drop the backups retention no longer keeps, then the WAL and the packs that no
 * kept backup needs.
 *
 * Order matters for a reader at the same time: manifests go first (a backup disappears in
 * one step), then packs no kept manifest names, then WAL before the oldest kept backup.
 *
 * Packs of a backup still running are named by no manifest yet: a grace period protects
 * them (a pack's name starts with its backup's start time; packs younger than the grace
 * period are never collected). A lock would need every backup to renew it and a crashed
 * one to be timed out anyway; the grace period gives the same guarantee with no extra
 * object, for any backup that runs shorter than the grace period (default 24 h).
 *
 * A pack that kept backups reference only in part is kept whole, not rewritten: manifests
 * stand alone and name frames by pack and offset, so rewriting a pack would mean rewriting
 * every manifest that uses it. Its space returns when the last backup using it expires, and
 * incremental.c re-stores files whose references have become too scattered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/backup.h"
#include "backup/retention.h"
#include "common/log.h"

struct expire_run {
    repo_t *r;
    const struct expire_opts *opts;
    json_t *report;
    json_t *referenced; /* pack id -> true, from every kept manifest */
    uint32_t min_timeline;
    json_t *wal_cutoff; /* timeline (text) -> first segment number kept */
};

static int remove_object(struct expire_run *x, const char *list, const char *key, wv_err_t *err)
{
    json_array_append_new(json_object_get(x->report, list), json_string(key));
    if (x->opts->dry_run)
        return 0;
    return storage_delete(repo_storage(x->r), key, err);
}

static int note_kept(struct expire_run *x, const struct manifest_summary *b, wv_err_t *err)
{
    json_t *m;
    int rc = manifest_load(x->r, b->id, &m, err);
    if (rc)
        return rc;
    size_t i;
    json_t *pack;
    json_array_foreach(json_object_get(m, "packs"), i, pack)
        json_object_set(x->referenced, json_string_value(pack), json_true());
    json_decref(m);
    char tli[16];
    snprintf(tli, sizeof tli, "%u", b->timeline);
    uint64_t first = wal_segno_of(b->start_lsn, b->wal_seg_size);
    json_t *have = json_object_get(x->wal_cutoff, tli);
    if (!have || (uint64_t)json_integer_value(have) > first)
        json_object_set_new(x->wal_cutoff, tli, json_integer((json_int_t)first));
    if (x->min_timeline == 0 || b->timeline < x->min_timeline)
        x->min_timeline = b->timeline;
    return 0;
}

static bool is_kept_id(json_t *ids, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), id) == 0)
            return true;
    }
    return false;
}

static int expire_backups(struct expire_run *x, wv_err_t *err)
{
    struct manifest_summary *all;
    size_t n;
    int rc = catalog_backups(x->r, &all, &n, err);
    if (rc)
        return rc;
    bool *keep = calloc(n ? n : 1, sizeof *keep);
    struct retention_policy p = {x->opts->retain_full, x->opts->retain_days, x->opts->now_ms};
    if (p.retain_full <= 0 && p.retain_days <= 0 && x->opts->keep_ids)
        p.retain_full = 1; /* watermarks alone: the newest full backup and all after it stay */
    rc =
        keep ? retention_decide(all, n, &p, keep, err) : wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++)
        keep[i] = keep[i] || is_kept_id(x->opts->keep_ids, all[i].id);
    json_int_t kept = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char key[REPO_KEY_MAX];
        repo_key_backup(x->r, all[i].id, key, sizeof key);
        if (keep[i])
            kept++;
        rc = keep[i] ? note_kept(x, &all[i], err) : remove_object(x, "backups", key, err);
    }
    json_object_set_new(x->report, "backups_kept", json_integer(kept));
    free(keep);
    free(all);
    return rc;
}

/* "20261130T221500Z-..." -> the backup's start, in epoch seconds; -1 if not of that form. */
static int64_t pack_started(const char *id)
{
    struct tm tm = {0};
    const char *end = strptime(id, "%Y%m%dT%H%M%SZ", &tm);
    return end ? (int64_t)timegm(&tm) : -1;
}

static int collect_packs(struct expire_run *x, wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    repo_key_pack(x->r, "", prefix, sizeof prefix);
    storage_iter_t *it;
    int rc = storage_list_open(repo_storage(x->r), prefix, &it, err);
    if (rc)
        return rc;
    json_t *doomed = json_array(); /* deleted after the listing ends */
    const char *key;
    uint64_t size;
    int64_t young = x->opts->now_ms / 1000 - x->opts->grace_s;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        const char *id = key + strlen(prefix);
        int64_t started = pack_started(id);
        if (json_object_get(x->referenced, id) || started < 0 || started > young)
            continue;
        json_array_append_new(doomed, json_string(key));
    }
    storage_iter_close(it);
    size_t i;
    json_t *k;
    json_array_foreach(doomed, i, k) if (rc == 0) rc =
        remove_object(x, "packs", json_string_value(k), err);
    json_decref(doomed);
    return rc < 0 ? rc : 0;
}

/* A segment is needed when its timeline has a kept backup that starts at or before it, or
 * when its timeline is newer than the oldest kept backup's (a restore may follow a timeline
 * switch into it). History files are always kept. */
static bool wal_needed(struct expire_run *x, const struct wal_file *f)
{
    if (f->kind == WAL_KIND_HISTORY)
        return true;
    char tli[16];
    snprintf(tli, sizeof tli, "%u", f->tli);
    json_t *cutoff = json_object_get(x->wal_cutoff, tli);
    if (cutoff)
        return f->segno >= (uint64_t)json_integer_value(cutoff);
    return x->min_timeline == 0 || f->tli > x->min_timeline;
}

static int collect_wal(struct expire_run *x, uint32_t seg_size, wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    snprintf(prefix, sizeof prefix, "nodes/%s/wal/", repo_node(x->r));
    storage_iter_t *it;
    int rc = storage_list_open(repo_storage(x->r), prefix, &it, err);
    if (rc)
        return rc;
    json_t *doomed = json_array();
    const char *key;
    uint64_t size;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        const char *name = strrchr(key, '/') + 1;
        struct wal_file f;
        wv_err_t ignored;
        if (wal_file_parse(name, seg_size, &f, &ignored) == 0 && !wal_needed(x, &f))
            json_array_append_new(doomed, json_string(key));
    }
    storage_iter_close(it);
    size_t i;
    json_t *k;
    json_array_foreach(doomed, i, k) if (rc == 0) rc =
        remove_object(x, "wal", json_string_value(k), err);
    json_decref(doomed);
    return rc < 0 ? rc : 0;
}

int expire_run(repo_t *r, const struct expire_opts *opts, json_t **report, wv_err_t *err)
{
    struct expire_run x = {.r = r, .opts = opts};
    x.report =
        json_pack("{s:[], s:[], s:[], s:b}", "backups", "packs", "wal", "dry_run", opts->dry_run);
    x.referenced = json_object();
    x.wal_cutoff = json_object();
    struct repo_node_info node;
    int rc = repo_node_get(r, &node, err);
    if (rc == 0)
        rc = expire_backups(&x, err);
    if (rc == 0)
        rc = collect_packs(&x, err);
    if (rc == 0)
        rc = collect_wal(&x, node.wal_seg_size ? node.wal_seg_size : WAL_DEFAULT_SEG_SIZE, err);
    json_decref(x.referenced);
    json_decref(x.wal_cutoff);
    if (rc) {
        json_decref(x.report);
        return rc;
    }
    *report = x.report;
    return 0;
}
