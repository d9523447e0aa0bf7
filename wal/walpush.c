/* archive_command: seal and store one WAL file, and push the other files PostgreSQL has
 * already marked ready, in parallel, so archiving keeps up with bursts of writes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/workers.h"
#include "wal/archive.h"

#define PUSH_CHUNK (1u << 20)

struct local_file {
    const char *path;
    const char *name;
    uint32_t seg_size;
    uint32_t tli;
    struct wal_segment_header header;
    bool has_header;
};

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Segments carry their cluster's system identifier and segment size in their first page;
 * other files (.history, .backup) take the segment size the node was recorded with. */
static int inspect_local_file(repo_t *r, struct local_file *f, wv_err_t *err)
{
    f->name = base_name(f->path);
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot open WAL file %s", f->path);
    uint8_t page[WAL_LONG_HEADER_BYTES];
    ssize_t n = fs_read_full(fd, page, sizeof page);
    close(fd);
    size_t len = strlen(f->name);
    bool segment_like = len == WAL_NAME_LEN ||
                        (len > WAL_NAME_LEN && strcmp(f->name + WAL_NAME_LEN, ".partial") == 0);
    if (segment_like) {
        int rc = wal_segment_header_parse(page, n > 0 ? (size_t)n : 0, &f->header, err);
        if (rc)
            return wv_err_prefix(err, "WAL file %s", f->path);
        f->has_header = true;
        f->seg_size = f->header.seg_size;
        return 0;
    }
    struct repo_node_info node;
    f->seg_size = repo_node_get(r, &node, err) == 0 && node.wal_seg_size ? node.wal_seg_size
                                                                         : WAL_DEFAULT_SEG_SIZE;
    return 0;
}

struct compare_ctx {
    int fd;
    const char *path;
    uint8_t *scratch;
    bool differs;
};

static int compare_chunk(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct compare_ctx *c = ctx;
    (void)err;
    while (len > 0 && !c->differs) {
        size_t piece = len < PUSH_CHUNK ? len : PUSH_CHUNK;
        ssize_t n = fs_read_full(c->fd, c->scratch, piece);
        if (n != (ssize_t)piece || memcmp(c->scratch, data, piece) != 0)
            c->differs = true;
        data = (const uint8_t *)data + piece;
        len -= piece;
    }
    return 0;
}

/* An archived file exists under the same name: identical content makes the push a no-op
 * (PostgreSQL retries archive_command after a crash); anything else is refused. */
static int compare_with_archive(repo_t *r, const struct local_file *f, const char *key,
                                wv_err_t *err)
{
    struct compare_ctx c = {.path = f->path, .scratch = malloc(PUSH_CHUNK)};
    c.fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (c.fd < 0 || !c.scratch) {
        free(c.scratch);
        return wv_err_errno(err, WV_EFAIL, "cannot open WAL file %s", f->path);
    }
    int rc = repo_get_sealed_stream(r, key, compare_chunk, &c, err);
    uint8_t extra;
    if (rc == 0 && !c.differs && fs_read_full(c.fd, &extra, 1) != 0)
        c.differs = true;
    close(c.fd);
    free(c.scratch);
    if (rc)
        return rc;
    if (c.differs)
        return wv_err_set(err, WV_EMISMATCH,
                          "WAL file %s is already archived as %s with different content; "
                          "refusing to overwrite it (is another cluster archiving under node "
                          "\"%s\"?)",
                          f->name, key, repo_node(r));
    log_debug("%s was already archived with the same content", f->name);
    return 0;
}

static int upload_file(repo_t *r, const struct local_file *f, const char *key, int jobs,
                       wv_err_t *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot open WAL file %s", f->path);
    int rc = repo_put_sealed_fd(r, key, fd, true, jobs, err);
    close(fd);
    return rc;
}

static int push_one(repo_t *r, const char *path, int jobs, wv_err_t *err)
{
    struct local_file f = {.path = path};
    int rc = inspect_local_file(r, &f, err);
    if (rc)
        return rc;
    if (f.has_header) {
        struct stat st;
        if (stat(path, &st) == 0 && strlen(f.name) == WAL_NAME_LEN &&
            (uint64_t)st.st_size != f.seg_size)
            return wv_err_set(err, WV_EFAIL, "WAL segment %s is %lld bytes, expected %u", path,
                              (long long)st.st_size, f.seg_size);
        struct repo_node_info info = {.system_identifier = f.header.system_identifier,
                                      .wal_seg_size = f.seg_size};
        if ((rc = repo_node_bind(r, &info, err)) != 0)
            return wv_err_prefix(err, "refusing WAL file %s", f.name);
    }
    char key[REPO_KEY_MAX];
    if ((rc = wal_archive_key(r, f.name, f.seg_size, key, sizeof key, err)) != 0)
        return rc;
    uint64_t size;
    rc = storage_head(repo_storage(r), key, &size, err);
    if (rc == 0)
        return compare_with_archive(r, &f, key, err);
    if (rc != WV_ENOTFOUND)
        return rc;
    rc = upload_file(r, &f, key, jobs, err);
    if (rc == WV_EEXISTS) /* a concurrent push won the race */
        return compare_with_archive(r, &f, key, err);
    return rc;
}

/* Item 0 is the file PostgreSQL asked for: its result is the command's result. The other
 * items are pushed ahead; their failures are only warnings, since PostgreSQL will ask for
 * each of them again. */
struct push_batch {
    repo_t *r;
    const char *path;
    char **ahead;
    size_t ahead_count;
    int jobs; /* with nothing to push ahead, the file's frames are sealed this many at once */
    int rc;
    wv_err_t err;
};

static int push_batch_item(void *ctx, size_t i, wv_err_t *unused)
{
    struct push_batch *b = ctx;
    (void)unused;
    if (i == 0) {
        b->rc = push_one(b->r, b->path, b->ahead_count ? 1 : b->jobs, &b->err);
        return 0;
    }
    wv_err_t local = {0};
    if (push_one(b->r, b->ahead[i - 1], 1, &local) != 0)
        log_warn("pushing ready file %s ahead failed (PostgreSQL will retry it): %s",
                 b->ahead[i - 1], local.msg);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects up to max other files marked .ready in pg_wal/archive_status, oldest first. */
static size_t collect_ready(const char *path, int max, char ***out)
{
    char dir[PATH_MAX], status[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *wal_dir = dirname(dir);
    snprintf(status, sizeof status, "%s/archive_status", wal_dir);
    DIR *d = opendir(status);
    *out = NULL;
    if (!d || max <= 0) {
        if (d)
            closedir(d);
        return 0;
    }
    char **names = calloc((size_t)max, sizeof *names);
    size_t count = 0;
    struct dirent *e;
    const char *self = base_name(path);
    while (names && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 6 || strcmp(e->d_name + len - 6, ".ready") != 0)
            continue;
        if (strncmp(e->d_name, self, len - 6) == 0 && self[len - 6] == '\0')
            continue;
        char full[PATH_MAX];
        snprintf(full, sizeof full, "%s/%.*s", wal_dir, (int)(len - 6), e->d_name);
        if (count < (size_t)max) {
            names[count++] = strdup(full);
        } else {
            /* keep the oldest max names */
            qsort(names, count, sizeof *names, compare_names);
            if (strcmp(full, names[count - 1]) < 0) {
                free(names[count - 1]);
                names[count - 1] = strdup(full);
            }
        }
    }
    closedir(d);
    if (names)
        qsort(names, count, sizeof *names, compare_names);
    *out = names;
    return count;
}

int wal_push(repo_t *r, const char *path, const struct wal_push_opts *opts, wv_err_t *err)
{
    int jobs = opts && opts->jobs > 1 ? opts->jobs : 1;
    struct push_batch b = {.r = r, .path = path, .jobs = jobs};
    if (jobs > 1)
        b.ahead_count =
            collect_ready(path, opts->ahead_max > 0 ? opts->ahead_max : 4 * jobs, &b.ahead);
    wv_err_t ignored;
    workers_run(jobs, 1 + b.ahead_count, push_batch_item, &b, &ignored);
    for (size_t i = 0; i < b.ahead_count; i++)
        free(b.ahead[i]);
    free(b.ahead);
    if (b.rc && err)
        *err = b.err;
    return b.rc;
}
