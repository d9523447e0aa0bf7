/* The local source: pg_backup_start/pg_backup_stop on a connection held open, and the files
 * read straight from the data directory by parallel workers. Work is cut into ranges of a
 * few blocks, so one 1 GiB relation segment keeps every worker busy. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backup/internal.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/workers.h"

#define RANGE_BYTES (16u * BACKUP_BLOCK_SIZE)

/* A piece of one file, at most RANGE_BYTES long. */
struct range_item {
    size_t file;
    uint64_t offset;
    uint64_t len;
};

struct local_run {
    struct backup_ctx *c;
    struct range_item *items;
    size_t nitems, cap_items;
    /* Work units: consecutive pieces adding up to about RANGE_BYTES. Many small files go to
     * one worker in order, so their blocks lie back to back in one pack and a restore reads
     * them with one request. group_start has ngroups + 1 entries. */
    size_t *group_start;
    size_t ngroups;
    struct pack_writer *writers;
    uint8_t **buffers;
};

static int walk(struct backup_ctx *c, const char *abs_dir, const char *rel_dir, wv_err_t *err);

static void join_path(char *out, size_t len, const char *dir, const char *name)
{
    if (*dir)
        snprintf(out, len, "%s/%s", dir, name);
    else
        snprintf(out, len, "%s", name);
}

static int add_entry(struct backup_ctx *c, struct bfile *f, wv_err_t *err)
{
    if (backup_add_file(c, f) < 0)
        return wv_err_set(err, WV_EFAIL, "out of memory listing %s", f->path);
    return 0;
}

/* pg_tblspc/<oid> links lead to tablespaces: recorded as links, their files read through
 * them. A link elsewhere (pg_wal on another disk) is kept as a directory. */
static int walk_link(struct backup_ctx *c, const char *abs, const char *rel, const char *rel_dir,
                     const struct stat *st, wv_err_t *err)
{
    char target[PATH_MAX];
    ssize_t n = readlink(abs, target, sizeof target - 1);
    if (n < 0)
        return errno == ENOENT ? 0 : wv_err_errno(err, WV_EFAIL, "cannot read link %s", abs);
    target[n] = '\0';
    if (strcmp(rel_dir, "pg_tblspc") == 0) {
        struct bfile f = {
            .path = (char *)rel, .target = target, .type = BFILE_LINK, .mode = st->st_mode & 07777};
        int rc = add_entry(c, &f, err);
        return rc ? rc : walk(c, abs, rel, err);
    }
    struct stat tst;
    if (stat(abs, &tst) == 0 && S_ISDIR(tst.st_mode)) {
        struct bfile f = {.path = (char *)rel, .type = BFILE_DIR, .mode = tst.st_mode & 07777};
        int rc = add_entry(c, &f, err);
        return rc || backup_dir_contents_excluded(rel) ? rc : walk(c, abs, rel, err);
    }
    struct bfile f = {.path = (char *)rel, .target = target, .type = BFILE_LINK, .mode = 0777};
    return add_entry(c, &f, err);
}

static int walk_entry(struct backup_ctx *c, const char *abs_dir, const char *rel_dir,
                      const char *name, wv_err_t *err)
{
    char abs[PATH_MAX], rel[PATH_MAX];
    join_path(abs, sizeof abs, abs_dir, name);
    join_path(rel, sizeof rel, rel_dir, name);
    struct stat st;
    if (lstat(abs, &st) != 0)
        return errno == ENOENT ? 0 : wv_err_errno(err, WV_EFAIL, "cannot stat %s", abs);
    if (backup_path_excluded(rel, S_ISDIR(st.st_mode)))
        return 0;
    if (S_ISLNK(st.st_mode))
        return walk_link(c, abs, rel, rel_dir, &st, err);
    if (S_ISDIR(st.st_mode)) {
        struct bfile f = {.path = rel, .type = BFILE_DIR, .mode = st.st_mode & 07777};
        int rc = add_entry(c, &f, err);
        return rc || backup_dir_contents_excluded(rel) ? rc : walk(c, abs, rel, err);
    }
    if (!S_ISREG(st.st_mode))
        return 0;
    struct bfile f = {.path = rel,
                      .source = abs,
                      .type = BFILE_FILE,
                      .mode = st.st_mode & 07777,
                      .mtime = st.st_mtime,
                      .ino = (uint64_t)st.st_ino,
                      .size = (uint64_t)st.st_size};
    c->total_bytes += f.size;
    return add_entry(c, &f, err);
}

static int walk(struct backup_ctx *c, const char *abs_dir, const char *rel_dir, wv_err_t *err)
{
    DIR *d = opendir(abs_dir);
    if (!d)
        return errno == ENOENT ? 0
                               : wv_err_errno(err, WV_EFAIL, "cannot read directory %s", abs_dir);
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            rc = walk_entry(c, abs_dir, rel_dir, e->d_name, err);
    }
    closedir(d);
    return rc;
}

static int add_item(struct local_run *run, size_t file, uint64_t off, uint64_t len, wv_err_t *err)
{
    if (run->nitems == run->cap_items) {
        size_t cap = run->cap_items ? run->cap_items * 2 : 1024;
        struct range_item *items = realloc(run->items, cap * sizeof *items);
        if (!items)
            return wv_err_set(err, WV_EFAIL, "out of memory planning the backup");
        run->items = items;
        run->cap_items = cap;
    }
    run->items[run->nitems++] = (struct range_item){file, off, len};
    return 0;
}

static int group_pieces(struct local_run *run, wv_err_t *err)
{
    run->group_start = malloc((run->nitems + 1) * sizeof *run->group_start);
    if (!run->group_start)
        return wv_err_set(err, WV_EFAIL, "out of memory planning the backup");
    uint64_t bytes = RANGE_BYTES;
    for (size_t i = 0; i < run->nitems; i++) {
        if (bytes + run->items[i].len > RANGE_BYTES) {
            run->group_start[run->ngroups++] = i;
            bytes = 0;
        }
        bytes += run->items[i].len;
    }
    run->group_start[run->ngroups] = run->nitems;
    return 0;
}

static int plan_ranges(struct local_run *run, wv_err_t *err)
{
    struct backup_ctx *c = run->c;
    for (size_t i = 0; i < c->nfiles; i++) {
        struct bfile *f = &c->files[i];
        if (f->type != BFILE_FILE)
            continue;
        int rc = backup_file_prepare(c, f, err);
        for (uint64_t off = 0; rc == 0 && off < f->size; off += RANGE_BYTES)
            rc = add_item(run, i, off, f->size - off < RANGE_BYTES ? f->size - off : RANGE_BYTES,
                          err);
        if (rc)
            return rc;
    }
    return group_pieces(run, err);
}

/* A live database's files change under us: a file may vanish (a dropped table) or shrink
 * (vacuum truncation). Both are fine: WAL replay from the start LSN redoes them. */
static void note_short_read(struct backup_ctx *c, struct bfile *f, uint64_t end, bool vanished)
{
    pthread_mutex_lock(&c->lock);
    if (vanished)
        f->vanished = true;
    else if (end < f->got_size || f->got_size == 0)
        f->got_size = end;
    pthread_mutex_unlock(&c->lock);
}

static int read_piece(struct local_run *run, size_t index, wv_err_t *err)
{
    struct backup_ctx *c = run->c;
    struct range_item *it = &run->items[index];
    struct bfile *f = &c->files[it->file];
    struct pack_writer *w = &run->writers[workers_self()];
    uint8_t *buf = run->buffers[workers_self()];
    int fd = open(f->source, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            return wv_err_errno(err, WV_EFAIL, "cannot open %s", f->source);
        note_short_read(c, f, 0, true);
        return 0;
    }
    int rc = 0;
    for (uint64_t done = 0; rc == 0 && done < it->len; done += BACKUP_BLOCK_SIZE) {
        uint64_t off = it->offset + done;
        size_t want =
            it->len - done < BACKUP_BLOCK_SIZE ? (size_t)(it->len - done) : BACKUP_BLOCK_SIZE;
        ssize_t n = fs_pread_full(fd, buf, want, (off_t)off);
        if (n < 0) {
            rc = wv_err_errno(err, WV_EFAIL, "cannot read %s", f->source);
            break;
        }
        if (n > 0) {
            backup_check_pages(c, f, off, buf, (size_t)n);
            rc = backup_store_block(w, f, off, buf, (size_t)n, err);
            backup_progress(c, (uint64_t)n);
        }
        if ((size_t)n < want) {
            note_short_read(c, f, off + (uint64_t)n, false);
            break;
        }
    }
    close(fd);
    return rc;
}

static int read_group(void *ctx, size_t group, wv_err_t *err)
{
    struct local_run *run = ctx;
    int rc = 0;
    for (size_t i = run->group_start[group]; rc == 0 && i < run->group_start[group + 1]; i++)
        rc = read_piece(run, i, err);
    return rc;
}

static int read_all(struct backup_ctx *c, wv_err_t *err)
{
    struct local_run run = {.c = c};
    int jobs = c->opts->jobs > 0 ? c->opts->jobs : 1;
    int rc = plan_ranges(&run, err);
    run.writers = calloc((size_t)jobs, sizeof *run.writers);
    run.buffers = calloc((size_t)jobs, sizeof *run.buffers);
    for (int i = 0; rc == 0 && i < jobs; i++) {
        pack_writer_init(&run.writers[i], c, i);
        run.buffers[i] = malloc(BACKUP_BLOCK_SIZE);
        if (!run.buffers[i])
            rc = wv_err_set(err, WV_EFAIL, "out of memory");
    }
    if (rc == 0)
        rc = workers_run(jobs, run.ngroups, read_group, &run, err);
    for (int i = 0; i < jobs && run.writers; i++) {
        if (rc == 0)
            rc = pack_writer_finish(&run.writers[i], err);
        else
            pack_writer_abort(&run.writers[i]);
        if (run.buffers)
            free(run.buffers[i]);
    }
    free(run.writers);
    free(run.buffers);
    free(run.items);
    free(run.group_start);
    return rc;
}

static int pg_error(PGconn *conn, PGresult *res, const char *what, wv_err_t *err)
{
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    char line[512];
    snprintf(line, sizeof line, "%s", msg);
    line[strcspn(line, "\n")] = '\0';
    wv_err_set(err, WV_EFAIL, "%s failed: %s", what, line);
    PQclear(res);
    return WV_EFAIL;
}

static int backup_start(PGconn *conn, struct backup_ctx *c, wv_err_t *err)
{
    const char *params[1] = {c->id};
    PGresult *res =
        PQexecParams(conn, "SELECT pg_backup_start($1, true)", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_error(conn, res, "pg_backup_start", err);
    int rc = wal_lsn_parse(PQgetvalue(res, 0, 0), &c->start_lsn, err);
    PQclear(res);
    return rc;
}

static int backup_stop(PGconn *conn, struct backup_result *out, wv_err_t *err)
{
    PGresult *res = PQexec(conn, "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(false)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_error(conn, res, "pg_backup_stop", err);
    int rc = wal_lsn_parse(PQgetvalue(res, 0, 0), &out->stop_lsn, err);
    out->backup_label = strdup(PQgetvalue(res, 0, 1));
    out->tablespace_map = PQgetisnull(res, 0, 2) ? NULL : strdup(PQgetvalue(res, 0, 2));
    PQclear(res);
    if (rc == 0)
        rc = backup_label_parse(out->backup_label, &out->start_lsn, &out->timeline, err);
    return rc;
}

static void list_tablespaces(struct backup_ctx *c, struct backup_result *res)
{
    res->tablespaces = json_array();
    for (size_t i = 0; i < c->nfiles; i++) {
        struct bfile *f = &c->files[i];
        if (f->type == BFILE_LINK && strncmp(f->path, "pg_tblspc/", 10) == 0)
            json_array_append_new(res->tablespaces,
                                  json_pack("{s:I, s:s}", "oid",
                                            (json_int_t)strtoll(f->path + 10, NULL, 10), "path",
                                            f->target));
    }
}

int backup_source_local(struct backup_ctx *c, void *pgconn, const char *pgdata,
                        struct backup_result *res, wv_err_t *err)
{
    PGconn *conn = pgconn;
    res->source = "local";
    int rc = backup_start(conn, c, err);
    if (rc)
        return rc;
    char lsn[WAL_LSN_STR_MAX];
    wal_lsn_format(c->start_lsn, lsn);
    log_debug("backup %s started at LSN %s, reading %s", c->id, lsn, pgdata);
    rc = walk(c, pgdata, "", err);
    if (rc == 0)
        rc = read_all(c, err);
    if (rc) {
        PQclear(PQexec(conn, "SELECT pg_backup_stop(false)"));
        return rc;
    }
    list_tablespaces(c, res);
    return backup_stop(conn, res, err);
}
