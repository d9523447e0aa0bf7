/* Restore plans: for each node of a watermark, the backup to start from and the point to
 * recover to. The rule is the same for restore, plan, verify and expire: the newest backup
 * of the node, on the watermark's timeline, whose stop LSN is at or before the node's LSN
 * (recovery must reach the backup's consistent point before the target). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coord/coord.h"
#include "wal/archive.h"

const struct manifest_summary *coord_plan_pick(const struct manifest_summary *all, size_t n,
                                               uint32_t tli, wal_lsn_t lsn)
{
    const struct manifest_summary *pick = NULL;
    for (size_t i = 0; i < n; i++)
        if (all[i].timeline == tli && all[i].stop_lsn <= lsn &&
            (!pick || all[i].stop_lsn >= pick->stop_lsn))
            pick = &all[i];
    return pick;
}

/* The backups of one node, loaded once for all the watermarks that name it. */
struct node_catalog {
    repo_t *r;
    struct manifest_summary *all;
    size_t n;
    struct repo_node_info info;
    bool has_info;
    /* verify: problems of watermarks older than any this node can be restored to. */
    json_t *pending;
    bool ok_seen;
};

static int catalog_load(repo_t *r, struct node_catalog *cat, wv_err_t *err)
{
    *cat = (struct node_catalog){.r = r};
    int rc = repo_node_get(r, &cat->info, err);
    cat->has_info = rc == 0;
    if (rc && rc != WV_ENOTFOUND)
        return rc;
    return cat->has_info ? catalog_backups(r, &cat->all, &cat->n, err) : 0;
}

static void check_wal(const struct node_catalog *cat, const struct manifest_summary *b,
                      const struct coord_wm_node *wn, struct coord_plan_node *out, wv_err_t *err)
{
    bool held;
    char missing[WAL_NAME_MAX] = "", lsn[WAL_LSN_STR_MAX];
    int rc = wal_archived_range(cat->r, wn->timeline, b->start_lsn, wn->lsn + 1, b->wal_seg_size,
                                &held, missing, err);
    wal_lsn_format(wn->lsn, lsn);
    if (rc)
        snprintf(out->problem, sizeof out->problem, "cannot check its WAL: %.900s", err->msg);
    else if (!held)
        snprintf(out->problem, sizeof out->problem,
                 "WAL segment %s is missing: recovery from backup %s to LSN %s needs it", missing,
                 b->id, lsn);
}

static void plan_with(const struct node_catalog *cat, const struct coord_wm_node *wn, bool wal,
                      struct coord_plan_node *out, wv_err_t *err)
{
    char lsn[WAL_LSN_STR_MAX];
    wal_lsn_format(wn->lsn, lsn);
    *out = (struct coord_plan_node){.role = wn->role, .timeline = wn->timeline, .lsn = wn->lsn};
    snprintf(out->name, sizeof out->name, "%s", wn->name);
    if (!cat->has_info) {
        snprintf(out->problem, sizeof out->problem, "the repository holds nothing of it");
        return;
    }
    if (cat->info.system_identifier != wn->system_identifier) {
        snprintf(out->problem, sizeof out->problem,
                 "the watermark names PostgreSQL system %" PRIu64
                 ", but the node is now system %" PRIu64,
                 wn->system_identifier, cat->info.system_identifier);
        return;
    }
    const struct manifest_summary *b = coord_plan_pick(cat->all, cat->n, wn->timeline, wn->lsn);
    if (!b) {
        snprintf(out->problem, sizeof out->problem,
                 "no backup on timeline %u stopped at or before LSN %s (it was taken later, "
                 "or expired)",
                 wn->timeline, lsn);
        return;
    }
    snprintf(out->backup_id, sizeof out->backup_id, "%s", b->id);
    out->backup_start = b->start_lsn;
    out->backup_stop = b->stop_lsn;
    if (wal)
        check_wal(cat, b, wn, out, err);
}

int coord_plan_node(repo_t *r, const struct coord_wm_node *wn, bool check,
                    struct coord_plan_node *out, wv_err_t *err)
{
    struct node_catalog cat;
    int rc = catalog_load(r, &cat, err);
    if (rc == 0)
        plan_with(&cat, wn, check, out, err);
    free(cat.all);
    return rc;
}

/* ---- one watermark, every node ---- */

struct catalogs {
    const struct repo_config *repo;
    struct node_catalog *cats;
    char (*names)[COORD_NAME_MAX];
    size_t count;
};

static void catalogs_free(struct catalogs *cs)
{
    for (size_t i = 0; i < cs->count; i++) {
        json_decref(cs->cats[i].pending);
        free(cs->cats[i].all);
        repo_close(cs->cats[i].r);
    }
    free(cs->cats);
    free(cs->names);
}

static int catalogs_get(struct catalogs *cs, const char *name, struct node_catalog **out,
                        wv_err_t *err)
{
    for (size_t i = 0; i < cs->count; i++)
        if (strcmp(cs->names[i], name) == 0) {
            *out = &cs->cats[i];
            return 0;
        }
    struct node_catalog *cats = realloc(cs->cats, (cs->count + 1) * sizeof *cats);
    char(*names)[COORD_NAME_MAX] =
        cats ? realloc(cs->names, (cs->count + 1) * sizeof *names) : NULL;
    if (cats)
        cs->cats = cats;
    if (!names) {
        wv_err_set(err, WV_EFAIL, "out of memory");
        return WV_EFAIL;
    }
    cs->names = names;
    struct repo_config rc_node = *cs->repo;
    rc_node.node = name;
    repo_t *r;
    int rc = repo_open(&rc_node, &r, err);
    if (rc == 0 && (rc = catalog_load(r, &cs->cats[cs->count], err)) != 0)
        repo_close(r);
    if (rc) {
        wv_err_prefix(err, "node %s", name);
        return rc;
    }
    snprintf(cs->names[cs->count], COORD_NAME_MAX, "%s", name);
    *out = &cs->cats[cs->count++];
    return 0;
}

static int plan_all(struct catalogs *cs, const struct coord_watermark *w, bool check,
                    struct coord_plan_node *out, wv_err_t *err)
{
    for (size_t i = 0; i < w->count; i++) {
        struct node_catalog *cat = NULL;
        int rc = catalogs_get(cs, w->nodes[i].name, &cat, err);
        if (rc)
            return rc;
        plan_with(cat, &w->nodes[i], check, &out[i], err);
    }
    return 0;
}

int coord_plan(const struct repo_config *repo, const struct coord_watermark *w, bool check,
               struct coord_plan_node **out, wv_err_t *err)
{
    struct catalogs cs = {.repo = repo};
    *out = calloc(w->count ? w->count : 1, sizeof **out);
    int rc = *out ? plan_all(&cs, w, check, *out, err) : wv_err_set(err, WV_EFAIL, "out of memory");
    catalogs_free(&cs);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

json_t *coord_plan_json(const struct coord_watermark *w, const struct coord_plan_node *plan)
{
    char when[40];
    coord_format_time(w->time_ms, when, sizeof when);
    json_t *nodes = json_array();
    bool ok = true;
    for (size_t i = 0; i < w->count; i++) {
        const struct coord_plan_node *p = &plan[i];
        char lsn[WAL_LSN_STR_MAX], stop[WAL_LSN_STR_MAX];
        wal_lsn_format(p->lsn, lsn);
        wal_lsn_format(p->backup_stop, stop);
        json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s}", "name", p->name, "role",
                              coord_role_name(p->role), "timeline", (json_int_t)p->timeline,
                              "target_lsn", lsn, "recovery_target_inclusive", "off");
        json_object_set_new(j, "backup", p->backup_id[0] ? json_string(p->backup_id) : json_null());
        json_object_set_new(j, "backup_stop_lsn",
                            p->backup_id[0] ? json_string(stop) : json_null());
        json_object_set_new(j, "problem", p->problem[0] ? json_string(p->problem) : json_null());
        ok = ok && !p->problem[0];
        json_array_append_new(nodes, j);
    }
    return json_pack("{s:I, s:s, s:I, s:b, s:o}", "watermark", (json_int_t)w->number, "time", when,
                     "time_ms", (json_int_t)w->time_ms, "restorable", ok, "nodes", nodes);
}

/* ---- restore --watermark ---- */

static int node_missing(const struct coord_watermark *w, const char *node, wv_err_t *err)
{
    char names[512] = "";
    for (size_t i = 0; i < w->count && strlen(names) + COORD_NAME_MAX + 2 < sizeof names; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                 w->nodes[i].name);
    return wv_err_set(err, WV_EUSAGE,
                      "watermark %" PRIu32 " does not name node %s (its nodes: %s); give --node",
                      w->number, node, names);
}

int coord_restore_target(repo_t *r, const char *spec, struct coord_watermark *w,
                         struct coord_plan_node *out, wv_err_t *err)
{
    int rc = coord_watermark_resolve(r, spec, w, err);
    if (rc)
        return rc;
    const struct coord_wm_node *wn = coord_watermark_node(w, repo_node(r));
    rc = wn ? coord_plan_node(r, wn, false, out, err) : node_missing(w, repo_node(r), err);
    if (rc == 0 && out->problem[0])
        rc =
            wv_err_set(err, WV_ENOTFOUND, "node %s cannot be restored to watermark %" PRIu32 ": %s",
                       out->name, w->number, out->problem);
    if (rc)
        coord_watermark_free(w);
    return rc;
}

/* ---- verify and expire ---- */

/* Expiring backups makes the oldest watermarks unrestorable first, and watermarks taken
 * before a node's first backup never were: an unrestorable run older than every watermark
 * the node can be restored to is expected (a warning; expire --retain-watermarks removes
 * it). One after a restorable watermark is damage, and so is a node restorable to none. */
static void note_outcome(struct node_catalog *cat, uint32_t number, const struct coord_plan_node *p,
                         json_t *problems)
{
    if (!p->problem[0]) {
        size_t i;
        json_t *line;
        json_array_foreach(cat->pending, i, line)
        {
            log_warn("%s (older than every watermark it can be restored to)",
                     json_string_value(line));
        }
        json_array_clear(cat->pending);
        cat->ok_seen = true;
        return;
    }
    json_t *line = json_sprintf("watermark %" PRIu32 ": node %s cannot be restored to it: %s",
                                number, p->name, p->problem);
    if (cat->ok_seen)
        json_array_append_new(problems, line);
    else if (cat->pending || (cat->pending = json_array()) != NULL)
        json_array_append_new(cat->pending, line);
}

static int verify_one(struct catalogs *cs, uint32_t number, json_t *problems, wv_err_t *err)
{
    struct coord_watermark w = {0};
    struct coord_plan_node *plan = NULL;
    int rc = coord_watermark_load(cs->cats ? cs->cats[0].r : NULL, number, &w, err);
    if (rc)
        return rc;
    plan = calloc(w.count ? w.count : 1, sizeof *plan);
    if (!plan) {
        coord_watermark_free(&w);
        wv_err_set(err, WV_EFAIL, "out of memory");
        return WV_EFAIL;
    }
    rc = plan_all(cs, &w, true, plan, err);
    for (size_t i = 0; rc == 0 && i < w.count; i++) {
        struct node_catalog *cat = NULL;
        if ((rc = catalogs_get(cs, plan[i].name, &cat, err)) == 0)
            note_outcome(cat, number, &plan[i], problems);
    }
    free(plan);
    coord_watermark_free(&w);
    return rc;
}

int coord_verify_watermarks(const struct repo_config *repo, json_t *problems, size_t *checked,
                            wv_err_t *err)
{
    struct catalogs cs = {.repo = repo};
    struct node_catalog *first = NULL;
    uint32_t *numbers = NULL;
    size_t count = 0;
    *checked = 0;
    /* The catalog of the configured node comes first: its handle reads the watermarks. */
    int rc = catalogs_get(&cs, repo->node ? repo->node : "default", &first, err);
    if (rc == 0)
        rc = coord_watermark_numbers(first->r, &numbers, &count, err);
    for (size_t i = 0; rc == 0 && i < count; i++, (*checked)++)
        rc = verify_one(&cs, numbers[i], problems, err);
    for (size_t i = 0; rc == 0 && i < cs.count; i++) /* restorable to none of them */
        json_array_extend(problems, cs.cats[i].pending);
    free(numbers);
    catalogs_free(&cs);
    return rc;
}

int coord_watermarks_needs(repo_t *r, int retain, json_t *keep, wv_err_t *err)
{
    uint32_t *numbers;
    size_t count;
    struct node_catalog cat = {0};
    int rc = coord_watermark_numbers(r, &numbers, &count, err);
    if (rc == 0 && count)
        rc = catalog_load(r, &cat, err);
    for (size_t i = count > (size_t)retain ? count - (size_t)retain : 0; rc == 0 && i < count;
         i++) {
        struct coord_watermark w = {0};
        if ((rc = coord_watermark_load(r, numbers[i], &w, err)) != 0)
            break;
        const struct coord_wm_node *wn = coord_watermark_node(&w, repo_node(r));
        struct coord_plan_node p;
        if (wn)
            plan_with(&cat, wn, false, &p, err);
        if (wn && p.backup_id[0])
            json_array_append_new(keep, json_string(p.backup_id));
        else if (wn)
            log_warn("watermark %" PRIu32 " cannot be restored for node %s: %s", numbers[i],
                     repo_node(r), p.problem);
        coord_watermark_free(&w);
    }
    free(cat.all);
    free(numbers);
    return rc;
}

int coord_watermarks_prune(repo_t *r, int retain, bool dry_run, json_t *removed, wv_err_t *err)
{
    uint32_t *numbers;
    size_t count;
    int rc = coord_watermark_numbers(r, &numbers, &count, err);
    for (size_t i = 0; rc == 0 && i + (size_t)retain < count; i++) {
        char key[REPO_KEY_MAX];
        coord_watermark_key(numbers[i], key, sizeof key);
        json_array_append_new(removed, json_string(key));
        if (!dry_run)
            rc = storage_delete(repo_storage(r), key, err);
    }
    free(numbers);
    return rc;
}
