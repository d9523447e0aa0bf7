/* restore_command: write one archived WAL file to where PostgreSQL asks, and fetch the
 * following segments ahead, still sealed, into a bounded spool, so replay is not bound by
 * one round trip per segment. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/workers.h"
#include "wal/archive.h"

struct file_sink {
    int fd;
    const char *path;
};

static int write_to_file(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct file_sink *s = ctx;
    if (fs_write_all(s->fd, data, len) != 0)
        return wv_err_errno(err, WV_EFAIL, "cannot write %s", s->path);
    return 0;
}

/* Plaintext goes to a temporary name beside dest and is renamed into place, so PostgreSQL
 * never reads a half-written segment. */
static int open_temp(const char *dest, char *tmp, size_t len, struct file_sink *s, wv_err_t *err)
{
    if (snprintf(tmp, len, "%s.walvault.%ld", dest, (long)getpid()) >= (int)len)
        return wv_err_set(err, WV_EFAIL, "path too long: %s", dest);
    s->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    s->path = dest;
    if (s->fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot create %s", tmp);
    return 0;
}

static int finish_temp(struct file_sink *s, const char *tmp, const char *dest, int rc,
                       wv_err_t *err)
{
    if (close(s->fd) != 0 && rc == 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot write %s", dest);
    if (rc == 0 && rename(tmp, dest) != 0)
        rc = wv_err_errno(err, WV_EFAIL, "cannot rename %s to %s", tmp, dest);
    if (rc)
        unlink(tmp);
    return rc;
}

/* A spooled segment holds the sealed object exactly as stored: opening it checks it just as
 * a fetch from the store would. */
static int open_spooled(repo_t *r, const char *spooled, const char *key, struct file_sink *s,
                        wv_err_t *err)
{
    int fd = open(spooled, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return WV_ENOTFOUND;
    seal_reader_t *reader = NULL;
    int rc = seal_reader_new(repo_keys(r), key, write_to_file, s, &reader, err);
    uint8_t *chunk = malloc(1 << 20);
    while (rc == 0 && chunk) {
        ssize_t n = fs_read_full(fd, chunk, 1 << 20);
        if (n < 0)
            rc = wv_err_errno(err, WV_EFAIL, "cannot read %s", spooled);
        if (n <= 0)
            break;
        rc = seal_reader_feed(reader, chunk, (size_t)n, err);
    }
    if (rc == 0)
        rc = seal_reader_finish(reader, err);
    if (reader)
        seal_reader_free(reader);
    free(chunk);
    close(fd);
    return rc;
}

static void spool_path(const struct wal_fetch_opts *opts, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", opts->spool_dir, name);
}

static int fetch_to(repo_t *r, const char *name, const char *key, const char *dest,
                    const struct wal_fetch_opts *opts, wv_err_t *err)
{
    char tmp[PATH_MAX];
    struct file_sink s;
    int rc = open_temp(dest, tmp, sizeof tmp, &s, err);
    if (rc)
        return rc;
    if (opts && opts->spool_dir) {
        char spooled[PATH_MAX];
        spool_path(opts, name, spooled, sizeof spooled);
        rc = open_spooled(r, spooled, key, &s, err);
        unlink(spooled);
        if (rc == 0)
            return finish_temp(&s, tmp, dest, 0, err);
        if (rc != WV_ENOTFOUND) /* a bad spool file is refetched from the store */
            log_warn("discarding spooled %s: %s", name, err->msg);
        if (ftruncate(s.fd, 0) != 0 || lseek(s.fd, 0, SEEK_SET) != 0)
            return finish_temp(&s, tmp, dest, wv_err_errno(err, WV_EFAIL, "cannot reset %s", tmp),
                               err);
    }
    rc = repo_get_sealed_stream(r, key, write_to_file, &s, err);
    return finish_temp(&s, tmp, dest, rc, err);
}

struct prefetch {
    repo_t *r;
    const struct wal_fetch_opts *opts;
    uint32_t tli;
    uint64_t first_segno;
    uint32_t seg_size;
};

static int store_raw(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return write_to_file(ctx, data, len, err);
}

static int prefetch_item(void *ctx, size_t i, wv_err_t *err)
{
    struct prefetch *p = ctx;
    char name[WAL_NAME_MAX], key[REPO_KEY_MAX], dest[PATH_MAX], tmp[PATH_MAX];
    wal_segment_name(p->tli, p->first_segno + i, p->seg_size, name);
    spool_path(p->opts, name, dest, sizeof dest);
    struct stat st;
    if (stat(dest, &st) == 0)
        return 0;
    repo_key_wal(p->r, p->tli, name, key, sizeof key);
    struct file_sink s;
    if (open_temp(dest, tmp, sizeof tmp, &s, err) != 0)
        return 0;
    int rc = storage_get_stream(repo_storage(p->r), key, store_raw, &s, err);
    finish_temp(&s, tmp, dest, rc, err);
    return 0; /* absent or failing segments are simply not spooled */
}

/* Spooled segments before the one just served are never asked for again. */
static void trim_spool(const struct wal_fetch_opts *opts, const char *served)
{
    DIR *d = opendir(opts->spool_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) == WAL_NAME_LEN && strcmp(e->d_name, served) <= 0) {
            char path[PATH_MAX];
            spool_path(opts, e->d_name, path, sizeof path);
            unlink(path);
        }
    }
    closedir(d);
}

/* The fetch ahead runs in a detached grandchild so PostgreSQL gets its segment at once. */
static void start_prefetch(repo_t *r, const struct wal_file *f, uint32_t seg_size, const char *name,
                           const struct wal_fetch_opts *opts)
{
    wv_err_t err;
    if (fs_mkdir_p(opts->spool_dir, 0700, &err) != 0)
        return;
    trim_spool(opts, name);
    pid_t child = fork();
    if (child != 0) {
        if (child > 0)
            waitpid(child, NULL, 0);
        return;
    }
    setsid();
    if (fork() != 0)
        _exit(0);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
    }
    struct prefetch p = {r, opts, f->tli, f->segno + 1, seg_size};
    workers_run(opts->prefetch < 4 ? opts->prefetch : 4, (size_t)opts->prefetch, prefetch_item, &p,
                &err);
    _exit(0);
}

/* The newest segment of a timeline: nothing of the next one, whole or fragment, exists. */
static int is_newest(repo_t *r, const struct wal_file *f, uint32_t seg_size, bool *yes,
                     wv_err_t *err)
{
    char name[WAL_NAME_MAX], key[REPO_KEY_MAX];
    wal_segment_name(f->tli, f->segno + 1, seg_size, name);
    repo_key_wal(r, f->tli, name, key, sizeof key);
    uint64_t size;
    int rc = storage_head(repo_storage(r), key, &size, err);
    *yes = false;
    if (rc != WV_ENOTFOUND)
        return rc;
    struct wal_frag_chain next;
    if ((rc = wal_fragments_scan(r, f->tli, f->segno + 1, seg_size, &next, err)) != 0)
        return rc;
    *yes = !next.any;
    return 0;
}

static int write_zeros(struct file_sink *s, uint64_t count, wv_err_t *err)
{
    static const uint8_t zeros[65536];
    while (count > 0) {
        size_t n = count < sizeof zeros ? (size_t)count : sizeof zeros;
        int rc = write_to_file(s, zeros, n, err);
        if (rc)
            return rc;
        count -= n;
    }
    return 0;
}

/* A segment wal-stream has not finished: its fragments, then zeros to the segment's size.
 * Recovery replays to the last archived byte and finds the zeros an invalid record, the
 * normal end of WAL. Only the newest segment of a timeline is served so: fragments of an
 * older one mean its whole copy is missing, and padding would hide that. */
static int fetch_fragments(repo_t *r, const struct wal_file *f, uint32_t seg_size, const char *name,
                           const char *dest, wv_err_t *err)
{
    bool newest;
    int rc = is_newest(r, f, seg_size, &newest, err);
    if (rc)
        return rc;
    if (!newest)
        return wv_err_set(err, WV_ENOTFOUND, "WAL segment %s is not archived", name);
    char tmp[PATH_MAX];
    struct file_sink s;
    if ((rc = open_temp(dest, tmp, sizeof tmp, &s, err)) != 0)
        return rc;
    uint32_t end = 0;
    rc = wal_fragments_read(r, f->tli, f->segno, seg_size, write_to_file, &s, &end, err);
    if (rc == 0 && end == 0)
        rc = wv_err_set(err, WV_ENOTFOUND, "WAL segment %s is not archived", name);
    if (rc == 0)
        rc = write_zeros(&s, seg_size - end, err);
    if (rc == 0) {
        char lsn[WAL_LSN_STR_MAX];
        wal_lsn_format(wal_segment_start(f->segno, seg_size) + end, lsn);
        log_info("%s is not finished: served its streamed fragments up to LSN %s", name, lsn);
    }
    return finish_temp(&s, tmp, dest, rc, err);
}

int wal_fetch(repo_t *r, const char *name, const char *dest, const struct wal_fetch_opts *opts,
              wv_err_t *err)
{
    struct repo_node_info node;
    int rc = repo_node_get(r, &node, err);
    if (rc)
        return rc;
    uint32_t seg_size = node.wal_seg_size ? node.wal_seg_size : WAL_DEFAULT_SEG_SIZE;
    struct wal_file f;
    if ((rc = wal_file_parse(name, seg_size, &f, err)) != 0)
        return rc;
    char key[REPO_KEY_MAX];
    repo_key_wal(r, f.tli, name, key, sizeof key);
    rc = fetch_to(r, name, key, dest, opts, err);
    if (rc == WV_ENOTFOUND && f.kind == WAL_KIND_SEGMENT)
        rc = fetch_fragments(r, &f, seg_size, name, dest, err);
    if (rc == 0 && f.kind == WAL_KIND_SEGMENT && opts && opts->prefetch > 0 && opts->spool_dir)
        start_prefetch(r, &f, seg_size, name, opts);
    return rc;
}
