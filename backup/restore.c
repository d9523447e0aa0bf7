/* Restore: rebuild a data directory from one manifest. Every frame the manifest references
 * is fetched with range reads of its pack (adjacent frames coalesced into one read), opened
 * (authenticated, decompressed) once and its pieces written in place (restore_fetch.c); then
 * the files PostgreSQL needs to start recovery (backup_label, the recovery settings,
 * recovery.signal) are written. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/internal_restore.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/workers.h"

#define AUTO_CONF_MAX (64u * 1024 * 1024)

/* ---- restore_run ---- */

static int full_path(const char *dir, const char *rel, char out[PATH_MAX], wv_err_t *err)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, rel);
    if (n < 0 || n >= PATH_MAX)
        return wv_err_set(err, WV_EFAIL, "path too long: %s/%s", dir, rel);
    return 0;
}

struct restore_ctx {
    repo_t *r;
    const struct restore_opts *opts;
    json_t *manifest;
    struct manifest_summary sum;
    struct restore_time time;
    bool has_time;
    wal_lsn_t lsn;
    bool has_lsn;
    const char *action;
    const char **ts_dest; /* per manifest "tablespaces" entry */
    size_t nts;
    struct restore_fetch *fetch; /* keeps the output files open for the workers */
};

static int check_value(const char *what, const char *v, wv_err_t *err)
{
    if (strpbrk(v, "\n\r"))
        return wv_err_set(err, WV_EUSAGE, "%s must be one line", what);
    return 0;
}

static int check_opts(struct restore_ctx *c, const struct restore_opts *o, wv_err_t *err)
{
    if (!o->target_dir || !o->target_dir[0])
        return wv_err_set(err, WV_EUSAGE, "restore needs a target directory (--to DIR)");
    if (!o->restore_command || !o->restore_command[0])
        return wv_err_set(err, WV_EUSAGE, "restore needs a restore_command for recovery");
    if (o->target_time && o->target_lsn)
        return wv_err_set(err, WV_EUSAGE, "give a target time or a target LSN, not both");
    c->action = o->target_action ? o->target_action : "promote";
    if (strcmp(c->action, "promote") && strcmp(c->action, "pause") && strcmp(c->action, "shutdown"))
        return wv_err_set(err, WV_EUSAGE,
                          "invalid recovery target action \"%s\": use promote, pause or shutdown",
                          c->action);
    int rc = check_value("restore_command", o->restore_command, err);
    if (rc == 0 && o->target_time) {
        rc = restore_parse_time(o->target_time, &c->time, err);
        c->has_time = true;
    }
    if (rc == 0 && o->target_lsn) {
        rc = wal_lsn_parse(o->target_lsn, &c->lsn, err);
        c->has_lsn = true;
        if (rc)
            rc = wv_err_set(err, WV_EUSAGE, "invalid target LSN \"%s\": use X/Y in hex",
                            o->target_lsn);
    }
    return rc;
}

static const char *tablespace_dest(const struct restore_opts *o, json_t *ts)
{
    char oid[32];
    snprintf(oid, sizeof oid, "%lld", (long long)json_integer_value(json_object_get(ts, "oid")));
    const char *orig = json_string_value(json_object_get(ts, "path"));
    for (size_t i = 0; i < o->relocation_count; i++) {
        const char *from = o->relocations[i].from;
        if (from && (strcmp(from, oid) == 0 || (orig && strcmp(from, orig) == 0)))
            return o->relocations[i].to;
    }
    return orig;
}

static int check_empty(const char *dir, const char *what, wv_err_t *err)
{
    if (!fs_dir_is_empty(dir))
        return wv_err_set(err, WV_EUSAGE,
                          "%s %s is not empty; restore into an empty or new directory", what, dir);
    return 0;
}

static int check_destinations(struct restore_ctx *c, wv_err_t *err)
{
    json_t *tss = json_object_get(c->manifest, "tablespaces");
    int rc = check_empty(c->opts->target_dir, "restore target", err);
    c->nts = json_array_size(tss);
    c->ts_dest = calloc(c->nts ? c->nts : 1, sizeof *c->ts_dest);
    if (!c->ts_dest)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; rc == 0 && i < c->nts; i++) {
        json_t *ts = json_array_get(tss, i);
        c->ts_dest[i] = tablespace_dest(c->opts, ts);
        if (!c->ts_dest[i] || c->ts_dest[i][0] != '/' ||
            !json_is_integer(json_object_get(ts, "oid")))
            rc = wv_err_set(err, WV_EUSAGE,
                            "tablespace %lld of backup %s: destination must be an absolute path",
                            (long long)json_integer_value(json_object_get(ts, "oid")), c->sum.id);
        else
            rc = check_empty(c->ts_dest[i], "tablespace destination", err);
        for (size_t j = 0; rc == 0 && j < i; j++)
            if (strcmp(c->ts_dest[i], c->ts_dest[j]) == 0)
                rc = wv_err_set(err, WV_EUSAGE,
                                "two tablespaces would be restored into %s; relocate one of them",
                                c->ts_dest[i]);
    }
    return rc;
}

/* ---- the directory tree ---- */

static int make_dir(const char *path, mode_t mode, wv_err_t *err)
{
    int rc = fs_mkdir_p(path, 0700, err);
    /* The owner keeps rwx until the end, so files can still be created under it. */
    if (rc == 0 && chmod(path, (mode & 07777) | S_IRWXU) != 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot set the mode of %s", path);
    return rc;
}

static int create_tablespaces(struct restore_ctx *c, wv_err_t *err)
{
    json_t *tss = json_object_get(c->manifest, "tablespaces");
    char link[PATH_MAX];
    int rc = full_path(c->opts->target_dir, "pg_tblspc", link, err);
    if (rc == 0)
        rc = make_dir(link, 0700, err);
    for (size_t i = 0; rc == 0 && i < c->nts; i++) {
        char oid[32];
        snprintf(oid, sizeof oid, "pg_tblspc/%lld",
                 (long long)json_integer_value(json_object_get(json_array_get(tss, i), "oid")));
        rc = make_dir(c->ts_dest[i], 0700, err);
        if (rc == 0)
            rc = full_path(c->opts->target_dir, oid, link, err);
        if (rc == 0 && symlink(c->ts_dest[i], link) != 0)
            rc = wv_err_errno(err, WV_EFAIL, "cannot link %s to %s", link, c->ts_dest[i]);
    }
    return rc;
}

static bool is_tablespace_link(const struct restore_ctx *c, const char *path)
{
    json_t *tss = json_object_get(c->manifest, "tablespaces");
    for (size_t i = 0; i < c->nts; i++) {
        char p[48];
        snprintf(p, sizeof p, "pg_tblspc/%lld",
                 (long long)json_integer_value(json_object_get(json_array_get(tss, i), "oid")));
        if (strcmp(p, path) == 0)
            return true;
    }
    return false;
}

static int create_link(const struct restore_ctx *c, json_t *e, const char *path, wv_err_t *err)
{
    char full[PATH_MAX];
    const char *target = json_string_value(json_object_get(e, "target"));
    if (is_tablespace_link(c, path))
        return 0;
    int rc = full_path(c->opts->target_dir, path, full, err);
    /* A linked pg_wal points at the source server's WAL directory: never share it. */
    if (rc == 0 && strcmp(path, "pg_wal") == 0)
        return make_dir(full, 0700, err);
    if (rc == 0 && !target)
        return wv_err_set(err, WV_ECORRUPT, "manifest entry %s: link without target", path);
    if (rc == 0 && symlink(target, full) != 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot create link %s", full);
    return rc;
}

static int open_new_file(const char *full, wv_err_t *err)
{
    int fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) { /* a manifest need not list every directory */
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", full);
        *strrchr(parent, '/') = '\0';
        if (fs_mkdir_p(parent, 0700, err) != 0)
            return -1;
        fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0)
        wv_err_errno(err, WV_EFAIL, "cannot create %s", full);
    return fd;
}

static int create_file(const struct restore_ctx *c, json_t *e, size_t index, wv_err_t *err)
{
    const char *path = json_string_value(json_object_get(e, "path"));
    json_t *mode = json_object_get(e, "mode");
    mode_t m = mode ? (mode_t)json_integer_value(mode) & 07777 : 0600;
    char full[PATH_MAX];
    int rc = full_path(c->opts->target_dir, path, full, err);
    int fd = rc ? -1 : open_new_file(full, err);
    if (fd < 0)
        return rc ? rc : WV_EFAIL;
    /* The owner keeps write access so the workers can fill it; fix_modes narrows it. */
    if (fchmod(fd, m | S_IRUSR | S_IWUSR) != 0 ||
        ftruncate(fd, (off_t)json_integer_value(json_object_get(e, "size"))) != 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot size %s", full);
    if (rc == 0 && restore_fetch_keep_fd(c->fetch, index, fd))
        return 0;
    if (close(fd) != 0 && rc == 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot create %s", full);
    return rc;
}

enum tree_pass { PASS_DIRS, PASS_LINKS, PASS_FILES };

/* Directories first (tablespace links already exist, so their subdirectories land at the
 * destination), then links, then files, so no entry depends on the manifest's order. */
static int create_entry(const struct restore_ctx *c, size_t index, enum tree_pass pass,
                        wv_err_t *err)
{
    json_t *e = json_array_get(json_object_get(c->manifest, "files"), index);
    static const char *const types[] = {"dir", "link", "file"};
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *path = json_string_value(json_object_get(e, "path"));
    char full[PATH_MAX];
    if (!type || strcmp(type, types[pass]) != 0)
        return 0;
    if (!restore_path_is_safe(path))
        return wv_err_set(err, WV_ECORRUPT, "manifest has an unsafe path \"%s\"",
                          path ? path : "(none)");
    if (pass == PASS_LINKS)
        return create_link(c, e, path, err);
    if (pass == PASS_FILES)
        return create_file(c, e, index, err);
    int rc = full_path(c->opts->target_dir, path, full, err);
    json_t *mode = json_object_get(e, "mode");
    return rc ? rc : make_dir(full, mode ? (mode_t)json_integer_value(mode) : 0700, err);
}

static int create_tree(struct restore_ctx *c, wv_err_t *err)
{
    json_t *files = json_object_get(c->manifest, "files");
    int rc = make_dir(c->opts->target_dir, 0700, err);
    if (rc == 0)
        rc = create_tablespaces(c, err);
    for (int pass = PASS_DIRS; pass <= PASS_FILES; pass++)
        for (size_t i = 0; rc == 0 && i < json_array_size(files); i++)
            rc = create_entry(c, i, (enum tree_pass)pass, err);
    return rc;
}

/* ---- blocks ---- */

static int fetch_blocks(struct restore_ctx *c, const struct restore_plan *plan, wv_err_t *err)
{
    struct restore_fetch *f = c->fetch;
    f->progress = c->opts->progress;
    int rc = workers_run(c->opts->jobs, plan->count, restore_fetch_item, f, err);
    wv_err_t ignored;
    int closed = restore_fetch_close_files(f, rc ? &ignored : err);
    rc = rc ? rc : closed;
    if (rc == 0 && f->progress.update)
        f->progress.update(f->progress.ctx, f->what, plan->total_plain, plan->total_plain);
    if (rc == 0)
        log_debug("restore: %" PRIu64 " bytes of blocks from %" PRIu64
                  " bytes of packs in %zu reads, %" PRIu64 " frames opened for %zu references",
                  plan->total_plain, (uint64_t)atomic_load(&f->read_bytes), plan->count,
                  (uint64_t)atomic_load(&f->frames_opened), plan->npieces);
    return rc;
}

/* ---- what PostgreSQL needs to start recovery ---- */

static int write_small(const char *dir, const char *name, const char *text, wv_err_t *err)
{
    char path[PATH_MAX];
    int rc = full_path(dir, name, path, err);
    return rc ? rc : fs_write_atomic(path, text, strlen(text), 0600, err);
}

static int remove_file(const char *dir, const char *name, wv_err_t *err)
{
    char path[PATH_MAX];
    int rc = full_path(dir, name, path, err);
    if (rc == 0 && unlink(path) != 0 && errno != ENOENT)
        rc = wv_err_errno(err, WV_EFAIL, "cannot remove %s", path);
    return rc;
}

/* Directories a backup leaves out (their contents are runtime state) but the server
 * expects to find. */
static int ensure_runtime_dirs(const char *dir, wv_err_t *err)
{
    static const char *const names[] = {
        "pg_wal",     "pg_wal/archive_status", "pg_dynshmem",         "pg_notify",   "pg_replslot",
        "pg_serial",  "pg_snapshots",          "pg_stat_tmp",         "pg_subtrans", "pg_commit_ts",
        "pg_logical", "pg_logical/snapshots",  "pg_logical/mappings", "pg_twophase", "pg_stat"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[PATH_MAX];
        int rc = full_path(dir, names[i], path, err);
        if (rc)
            return rc;
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return wv_err_errno(err, WV_EFAIL, "cannot create directory %s", path);
    }
    return 0;
}

/* A quoted value in postgresql.conf: the parser reads '' and \' as a quote and \\ as a
 * backslash, so both are doubled to come back as given. */
static int append_setting(buf_t *b, const char *name, const char *value, wv_err_t *err)
{
    int rc = buf_append_str(b, name, err);
    if (rc == 0)
        rc = buf_append_str(b, " = '", err);
    for (const char *p = value; rc == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            rc = buf_append(b, p, 1, err);
        if (rc == 0)
            rc = buf_append(b, p, 1, err);
    }
    if (rc == 0)
        rc = buf_append_str(b, "'\n", err);
    return rc;
}

static int recovery_block(const struct restore_ctx *c, buf_t *b, wv_err_t *err)
{
    char line[160];
    snprintf(line, sizeof line, "# added by walvault restore of backup %s\n", c->sum.id);
    int rc = buf_append_str(b, line, err);
    if (rc == 0)
        rc = append_setting(b, "restore_command", c->opts->restore_command, err);
    if (rc == 0 && c->has_time) {
        char when[64];
        restore_format_time(&c->time, when, sizeof when);
        rc = append_setting(b, "recovery_target_time", when, err);
    }
    if (rc == 0 && c->has_lsn) {
        char lsn[WAL_LSN_STR_MAX];
        wal_lsn_format(c->lsn, lsn);
        rc = append_setting(b, "recovery_target_lsn", lsn, err);
    }
    /* PostgreSQL's inclusive LSN target also replays the record that starts at the target;
     * a watermark's LSN ends the cut, so that record is already after it. */
    if (rc == 0 && c->has_lsn && c->opts->target_exclusive)
        rc = append_setting(b, "recovery_target_inclusive", "off", err);
    if (rc == 0)
        rc = append_setting(b, "recovery_target_action", c->action, err);
    char tli[16] = "latest";
    if (c->opts->target_timeline)
        snprintf(tli, sizeof tli, "%u", c->opts->target_timeline);
    if (rc == 0)
        rc = append_setting(b, "recovery_target_timeline", tli, err);
    return rc;
}

static int write_recovery_settings(const struct restore_ctx *c, wv_err_t *err)
{
    char path[PATH_MAX];
    buf_t conf;
    int rc = full_path(c->opts->target_dir, "postgresql.auto.conf", path, err);
    if (rc)
        return rc;
    rc = fs_read_file(path, &conf, AUTO_CONF_MAX, err);
    if (rc == WV_ENOTFOUND) {
        buf_init(&conf, AUTO_CONF_MAX);
        rc = 0;
    }
    if (rc)
        return rc;
    if (conf.len > 0 && conf.data[conf.len - 1] != '\n')
        rc = buf_append_str(&conf, "\n", err);
    if (rc == 0)
        rc = recovery_block(c, &conf, err);
    if (rc == 0)
        rc = fs_write_atomic(path, conf.data, conf.len, 0600, err);
    buf_free(&conf);
    if (rc == 0)
        rc = write_small(c->opts->target_dir, "recovery.signal", "", err);
    return rc;
}

/* Files and directories were created with owner rw(x) so they could be filled; now the
 * modes the manifest recorded apply exactly. */
static int fix_modes(const struct restore_ctx *c, wv_err_t *err)
{
    json_t *files = json_object_get(c->manifest, "files");
    for (size_t i = 0; i < json_array_size(files); i++) {
        json_t *e = json_array_get(files, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        json_t *mode = json_object_get(e, "mode");
        char full[PATH_MAX];
        if (!type || !mode || strcmp(type, "link") == 0)
            continue;
        mode_t m = (mode_t)json_integer_value(mode) & 07777;
        mode_t given = strcmp(type, "dir") == 0 ? S_IRWXU : (S_IRUSR | S_IWUSR);
        if ((m & given) == given)
            continue;
        int rc = full_path(c->opts->target_dir, json_string_value(json_object_get(e, "path")), full,
                           err);
        if (rc == 0 && chmod(full, m) != 0)
            rc = wv_err_errno(err, WV_EFAIL, "cannot set the mode of %s", full);
        if (rc)
            return rc;
    }
    return 0;
}

/* One file-system sync instead of an fsync per file: nothing uses the directory before the
 * restore returns, so this is as durable and far cheaper for many small files. */
static int sync_fs(const char *dir, wv_err_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot open %s", dir);
    int rc = syncfs(fd) == 0 ? 0 : wv_err_errno(err, WV_EFAIL, "cannot sync %s", dir);
    close(fd);
    return rc;
}

static int finish_restore(const struct restore_ctx *c, wv_err_t *err)
{
    const char *dir = c->opts->target_dir;
    const char *label = json_string_value(json_object_get(c->manifest, "backup_label"));
    if (!label)
        return wv_err_set(err, WV_ECORRUPT, "manifest of backup %s has no backup_label", c->sum.id);
    int rc = write_small(dir, "backup_label", label, err);
    /* The links are made already; a tablespace_map would make the server redo them with the
     * original paths, undoing relocations. */
    if (rc == 0)
        rc = remove_file(dir, "tablespace_map", err);
    if (rc == 0)
        rc = remove_file(dir, "postmaster.pid", err);
    if (rc == 0)
        rc = ensure_runtime_dirs(dir, err);
    if (rc == 0)
        rc = write_recovery_settings(c, err);
    if (rc == 0)
        rc = fix_modes(c, err);
    if (rc == 0)
        rc = sync_fs(dir, err);
    for (size_t i = 0; rc == 0 && i < c->nts; i++)
        rc = sync_fs(c->ts_dest[i], err);
    return rc;
}

/* ---- the whole restore ---- */

static int restore_into(struct restore_ctx *c, wv_err_t *err)
{
    struct restore_plan plan;
    struct restore_fetch fetch;
    int rc = restore_plan_build(c->manifest, &plan, err);
    if (rc)
        return wv_err_prefix(err, "backup %s", c->sum.id);
    log_debug("restoring backup %s of node %s (%" PRIu64 " bytes) into %s", c->sum.id,
              repo_node(c->r), plan.total_plain, c->opts->target_dir);
    rc = restore_fetch_init(&fetch, c->r, c->manifest, &plan, c->opts->target_dir, c->opts->jobs,
                            err);
    if (rc == 0) {
        c->fetch = &fetch;
        rc = create_tree(c, err);
        if (rc == 0)
            rc = fetch_blocks(c, &plan, err);
        restore_fetch_free(&fetch);
        c->fetch = NULL;
    }
    if (rc == 0)
        rc = finish_restore(c, err);
    restore_plan_free(&plan);
    if (rc)
        log_warn("the restore into %s is incomplete: remove what it wrote before restoring "
                 "there again",
                 c->opts->target_dir);
    return rc;
}

static int check_backup_fits(const struct restore_ctx *c, wv_err_t *err)
{
    if (c->has_lsn && c->sum.stop_lsn > c->lsn) {
        char a[WAL_LSN_STR_MAX], b[WAL_LSN_STR_MAX];
        wal_lsn_format(c->sum.stop_lsn, a);
        wal_lsn_format(c->lsn, b);
        return wv_err_set(err, WV_EUSAGE,
                          "backup %s stopped at LSN %s, after the target LSN %s; choose an "
                          "older backup",
                          c->sum.id, a, b);
    }
    if (c->has_time && c->sum.stop_time_ms >= restore_time_ms(&c->time))
        return wv_err_set(err, WV_EUSAGE,
                          "backup %s finished at or after the target time %s; choose an older "
                          "backup",
                          c->sum.id, c->opts->target_time);
    return 0;
}

int restore_run(repo_t *r, const struct restore_opts *opts, char *id_out, wv_err_t *err)
{
    struct restore_ctx c = {.r = r, .opts = opts};
    int rc = check_opts(&c, opts, err);
    if (rc == 0) {
        struct restore_target t = {.backup_id = opts->backup_id,
                                   .time = c.has_time ? &c.time : NULL,
                                   .lsn = c.has_lsn ? &c.lsn : NULL};
        rc = restore_choose_backup(r, &t, &c.manifest, &c.sum, err);
    }
    if (rc == 0 && opts->backup_id)
        rc = check_backup_fits(&c, err);
    if (rc == 0)
        rc = check_destinations(&c, err);
    if (rc == 0)
        rc = restore_into(&c, err);
    if (rc == 0 && id_out)
        snprintf(id_out, 64, "%s", c.sum.id);
    free(c.ts_dest);
    json_decref(c.manifest);
    return rc;
}
