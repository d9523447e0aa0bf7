/* Running a restore plan (see catalog.c): each worker takes one range read at a time, opens
 * every frame in it once and writes each piece of that frame where its file wants it. The
 * output files are written by several workers at once, at disjoint offsets, through
 * descriptors opened once for the whole restore. With no target directory (verify) the
 * frames are only opened and the pieces checked against them. */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backup/internal_restore.h"
#include "common/fsutil.h"
#include "common/timeutil.h"

#define PROGRESS_INTERVAL_S 0.25
/* Descriptors left for everything but the output files: the store, logs, the manifest. */
#define FD_SPARE 256

/* How many output files may stay open. Holding them all wants more than the usual soft
 * limit of 1024, so the soft limit goes up to the hard one (the process is ours: a restore
 * is the command it runs). */
static size_t open_files_budget(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= RESTORE_OPEN_FILES_MAX + FD_SPARE)
        return RESTORE_OPEN_FILES_MAX;
    return rl.rlim_cur > FD_SPARE ? (size_t)(rl.rlim_cur - FD_SPARE) : 0;
}

int restore_fetch_init(struct restore_fetch *f, repo_t *r, json_t *manifest,
                       const struct restore_plan *plan, const char *target_dir, int jobs,
                       wv_err_t *err)
{
    memset(f, 0, sizeof *f);
    f->r = r;
    f->files = json_object_get(manifest, "files");
    f->packs = json_object_get(manifest, "packs");
    f->plan = plan;
    f->target_dir = target_dir;
    f->what = target_dir ? "restore" : "verify blocks";
    f->nfiles = json_array_size(f->files);
    f->nslots = jobs < 1 ? 1 : (size_t)jobs;
    f->slots = calloc(f->nslots, sizeof *f->slots);
    if (target_dir) {
        f->fds = malloc((f->nfiles ? f->nfiles : 1) * sizeof *f->fds);
        for (size_t i = 0; f->fds && i < f->nfiles; i++)
            f->fds[i] = -1;
        f->max_open = open_files_budget();
    }
    if (!f->slots || (target_dir && !f->fds)) {
        free(f->slots);
        free(f->fds);
        f->slots = NULL;
        f->fds = NULL;
        return wv_err_set(err, WV_EFAIL, "out of memory starting %d workers", jobs);
    }
    pthread_mutex_init(&f->lock, NULL);
    atomic_init(&f->done_plain, 0);
    atomic_init(&f->read_bytes, 0);
    atomic_init(&f->frames_opened, 0);
    return 0;
}

bool restore_fetch_keep_fd(struct restore_fetch *f, size_t file, int fd)
{
    if (!f->fds || file >= f->nfiles || f->nopen >= f->max_open ||
        restore_file_block_count(f->files, file) == 0)
        return false;
    f->fds[file] = fd;
    f->nopen++;
    return true;
}

int restore_fetch_close_files(struct restore_fetch *f, wv_err_t *err)
{
    int rc = 0;
    for (size_t i = 0; f->fds && i < f->nfiles; i++) {
        if (f->fds[i] >= 0 && close(f->fds[i]) != 0 && rc == 0)
            rc = wv_err_errno(err, WV_EFAIL, "cannot write %s", restore_file_path(f->files, i));
        f->fds[i] = -1;
    }
    f->nopen = 0;
    return rc;
}

void restore_fetch_free(struct restore_fetch *f)
{
    wv_err_t ignored;
    if (!f->slots)
        return;
    restore_fetch_close_files(f, &ignored);
    free(f->fds);
    f->fds = NULL;
    for (size_t i = 0; i < f->nslots; i++) {
        free(f->slots[i].read);
        buf_free(&f->slots[i].plain);
    }
    free(f->slots);
    f->slots = NULL;
    pthread_mutex_destroy(&f->lock);
}

/* ---- read buffers ---- */

static void slot_give(struct restore_fetch *f, struct restore_slot *s)
{
    pthread_mutex_lock(&f->lock);
    s->busy = false;
    pthread_mutex_unlock(&f->lock);
}

/* At most nslots items run at once (workers_run starts no more threads), so a free slot is
 * always there; its buffers are allocated on first use and kept for the next item. */
static struct restore_slot *slot_take(struct restore_fetch *f, wv_err_t *err)
{
    struct restore_slot *s = NULL;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; !s && i < f->nslots; i++) {
        if (!f->slots[i].busy) {
            s = &f->slots[i];
            s->busy = true;
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (!s) {
        wv_err_set(err, WV_EFAIL, "restore: more workers than read buffers");
        return NULL;
    }
    if (!s->read) {
        s->read = malloc(f->plan->max_read);
        buf_init(&s->plain, SEAL_CHUNK_MAX);
    }
    if (!s->read) {
        slot_give(f, s);
        wv_err_set(err, WV_EFAIL, "out of memory for a %zu-byte read buffer", f->plan->max_read);
        return NULL;
    }
    return s;
}

static void progress_add(struct restore_fetch *f, uint64_t plain)
{
    uint64_t done = atomic_fetch_add(&f->done_plain, plain) + plain;
    if (!f->progress.update)
        return;
    pthread_mutex_lock(&f->lock);
    double now = time_monotonic();
    if (now - f->last_progress >= PROGRESS_INTERVAL_S || done == f->plan->total_plain) {
        f->last_progress = now;
        f->progress.update(f->progress.ctx, f->what, done, f->plan->total_plain);
    }
    pthread_mutex_unlock(&f->lock);
}

/* ---- one read ---- */

/* The output file a read opened itself because it is not held open. */
struct out_cursor {
    int fd;
    size_t file;
};

static int cursor_close(const struct restore_fetch *f, struct out_cursor *c, wv_err_t *err)
{
    int rc = 0;
    if (c->fd >= 0 && close(c->fd) != 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot write %s", restore_file_path(f->files, c->file));
    c->fd = -1;
    return rc;
}

static int piece_fd(const struct restore_fetch *f, struct out_cursor *c, size_t file, int *fd,
                    wv_err_t *err)
{
    char path[PATH_MAX];
    *fd = f->fds && file < f->nfiles ? f->fds[file] : -1;
    if (*fd >= 0)
        return 0;
    if (c->fd >= 0 && c->file == file) {
        *fd = c->fd;
        return 0;
    }
    int rc = cursor_close(f, c, err);
    if (rc)
        return rc;
    int n = snprintf(path, sizeof path, "%s/%s", f->target_dir, restore_file_path(f->files, file));
    if (n < 0 || (size_t)n >= sizeof path)
        return wv_err_set(err, WV_EFAIL, "path too long: %s/%s", f->target_dir,
                          restore_file_path(f->files, file));
    c->fd = open(path, O_WRONLY | O_CLOEXEC);
    c->file = file;
    if (c->fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot open %s", path);
    *fd = c->fd;
    return 0;
}

static int write_piece(const struct restore_fetch *f, struct out_cursor *c,
                       const struct restore_piece *q, const buf_t *plain, wv_err_t *err)
{
    int fd;
    int rc = piece_fd(f, c, q->file, &fd, err);
    if (rc == 0 &&
        fs_pwrite_all(fd, plain->data + q->skip, q->plain_len, (off_t)q->file_offset) != 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot write %s/%s", f->target_dir,
                          restore_file_path(f->files, q->file));
    /* Start writing back now, while other frames are decrypted, so that the one file system
     * sync at the end finds little left to do (it still waits for all of it). */
    if (rc == 0 && q->plain_len >= (1u << 18))
        sync_file_range(fd, (off_t)q->file_offset, q->plain_len, SYNC_FILE_RANGE_WRITE);
    return rc;
}

static int open_frame(struct restore_fetch *f, const char *key, const struct restore_read *rd,
                      const struct restore_piece *q, struct restore_slot *s, wv_err_t *err)
{
    bool final;
    if (q->pack != rd->pack || q->offset < rd->offset ||
        q->offset - rd->offset + q->sealed_len > rd->len)
        return wv_err_set(err, WV_EFAIL, "frame %" PRIu32 " of %s lies outside its planned read",
                          q->frame, key);
    int rc = seal_open_frame(repo_keys(f->r), key, q->frame, s->read + (q->offset - rd->offset),
                             q->sealed_len, &s->plain, &final, err);
    if (rc == 0)
        atomic_fetch_add(&f->frames_opened, 1);
    else
        wv_err_prefix(err, "%s %s", f->target_dir ? "restoring" : "checking",
                      restore_file_path(f->files, q->file));
    return rc;
}

/* The pieces of a read come sorted by frame: each frame is opened when its first piece
 * comes, then serves every piece that follows it. */
static int run_pieces(struct restore_fetch *f, const struct restore_read *rd, const char *key,
                      struct restore_slot *s, wv_err_t *err)
{
    struct out_cursor c = {.fd = -1};
    const struct restore_piece *opened = NULL;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < rd->count; k++) {
        const struct restore_piece *q = &f->plan->pieces[rd->first + k];
        if (!opened || opened->offset != q->offset) {
            rc = open_frame(f, key, rd, q, s, err);
            opened = q;
        }
        if (rc == 0)
            rc = restore_piece_check(q, s->plain.len, f->files, f->packs, err);
        if (rc == 0 && f->target_dir)
            rc = write_piece(f, &c, q, &s->plain, err);
    }
    wv_err_t ignored;
    int closed = cursor_close(f, &c, rc ? &ignored : err);
    return rc ? rc : closed;
}

int restore_fetch_item(void *ctx, size_t index, wv_err_t *err)
{
    struct restore_fetch *f = ctx;
    const struct restore_read *rd = &f->plan->reads[index];
    const char *pack = json_string_value(json_array_get(f->packs, rd->pack));
    char key[REPO_KEY_MAX];
    if (!pack || repo_key_pack(f->r, pack, key, sizeof key) != 0)
        return wv_err_set(err, WV_ECORRUPT, "manifest: bad name for pack %" PRIu32, rd->pack);
    struct restore_slot *s = slot_take(f, err);
    if (!s)
        return WV_EFAIL;
    int rc = storage_get_range(repo_storage(f->r), key, rd->offset, rd->len, s->read, err);
    if (rc == 0) {
        atomic_fetch_add(&f->read_bytes, rd->len);
        rc = run_pieces(f, rd, key, s, err);
    }
    slot_give(f, s);
    if (rc == 0)
        progress_add(f, rd->plain);
    return rc;
}
