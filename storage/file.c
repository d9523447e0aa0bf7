/* The file:// backend: one object is one file under the root directory, at the path its key
 * names, so a repository can be browsed, copied or synced to S3 with ordinary tools.
 *
 * Names starting with '.' are this backend's own (temporary files being written), so keys
 * with such a component are refused and listings skip them. Because an object is a file, a
 * key cannot be both an object and the directory of other keys ("a/b" and "a/b/c"); such a
 * put fails with a message that says so. Listing is in file_list.c. */
#include "storage/file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"

#define DIR_MODE 0750
#define FILE_MODE 0640
#define READ_CHUNK (1024 * 1024)
/* Keeps ".<base>.tmp.<pid>.<counter>" within NAME_MAX; pid and counter make it unique. */
#define TEMP_BASE_MAX 200

/* Process-wide rather than per store, so two stores opened on one directory never pick the
 * same temporary name. */
static atomic_ulong temp_counter;
/* A file system of the repository refused O_TMPFILE (EOPNOTSUPP; EISDIR before Linux 3.11). */
static atomic_bool tmpfile_unsupported;

struct file_store *file_store_of(storage_t *st)
{
    return st->impl;
}

/* ---- errors ---- */

static int not_found(const char *key, wv_err_t *err)
{
    return wv_err_set(err, WV_ENOTFOUND, "object not found: %s", key);
}

static int io_error(const char *verb, const char *key, const char *path, wv_err_t *err)
{
    return wv_err_errno(err, WV_EFAIL, "cannot %s object %s (%s)", verb, key, path);
}

bool file_is_absent_errno(int e)
{
    return e == ENOENT || e == ENOTDIR;
}

/* ---- paths ---- */

static int check_reserved(const char *key, wv_err_t *err)
{
    for (const char *part = key; part;) {
        if (part[0] == '.')
            return wv_err_set(err, WV_EUSAGE,
                              "invalid object key \"%s\": names starting with '.' are reserved "
                              "for temporary files in file:// repositories",
                              key);
        const char *slash = strchr(part, '/');
        part = slash ? slash + 1 : NULL;
    }
    return 0;
}

/* The file of key; refuses the names this backend keeps for itself. */
static int key_path(const struct file_store *fs, const char *key, char *path, size_t cap,
                    wv_err_t *err)
{
    int rc = check_reserved(key, err);
    if (rc)
        return rc;
    int n = snprintf(path, cap, "%s/%s", fs->root, key);
    if (n < 0 || (size_t)n >= cap)
        return wv_err_set(err, WV_EFAIL, "object key too long for a file path: %.100s...", key);
    return 0;
}

static int sync_parent(const char *key, const char *path, wv_err_t *err)
{
    if (fs_fsync_parent(path, err) != 0)
        return wv_err_prefix(err, "storing object %s", key);
    return 0;
}

/* A directory entry only survives a crash once its parent is fsynced, so each directory
 * created here is followed by that. key names the object being stored, for messages (NULL
 * while creating the root). */
static int make_dir(const char *dir, const char *key, wv_err_t *err)
{
    if (mkdir(dir, DIR_MODE) == 0)
        return fs_fsync_parent(dir, err);
    if (errno != EEXIST)
        return wv_err_errno(err, WV_EFAIL, "cannot create directory %s", dir);
    struct stat sb;
    if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
        return 0;
    if (!key)
        return wv_err_set(err, WV_EFAIL, "cannot use %s as a repository: not a directory", dir);
    return wv_err_set(err, WV_EFAIL,
                      "cannot store object %s (%s): an object of that name exists, and a "
                      "file:// repository cannot hold an object and keys below it",
                      key, dir);
}

/* Creates every missing directory of dir after its first `from` bytes, dir included. */
static int make_dirs(const char *dir, size_t from, const char *key, wv_err_t *err)
{
    char buf[PATH_MAX];
    size_t len = strlen(dir);
    if (len >= sizeof buf)
        return wv_err_set(err, WV_EFAIL, "path too long: %.100s...", dir);
    memcpy(buf, dir, len + 1);
    for (size_t i = from + 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        int rc = make_dir(buf, key, err);
        buf[i] = saved;
        if (rc)
            return rc;
    }
    return 0;
}

static int make_parent_dirs(const struct file_store *fs, const char *key, const char *path,
                            wv_err_t *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    return make_dirs(dir, strlen(fs->root), key, err);
}

/* ---- put ---- */

/* Bytes written between two requests to start writeback. */
#define WRITEBACK_STEP (1u << 20)

struct file_writer {
    struct storage_writer base;
    int fd;
    bool if_absent;
    bool anonymous;   /* an O_TMPFILE file: no temporary name to create and remove */
    bool failed;      /* a write failed: commit must not publish */
    uint64_t written; /* bytes written so far */
    uint64_t synced;  /* of which writeback was started */
    char *key;
    char *path;
    char *tmp;
};

static void free_writer(struct file_writer *fw)
{
    if (fw->fd >= 0)
        close(fw->fd);
    free(fw->key);
    free(fw->path);
    free(fw->tmp);
    free(fw);
}

/* The temporary file sits beside the final one so that rename and link stay within one
 * directory (atomic, same file system). */
static void temp_path(const char *path, char *tmp, size_t cap)
{
    const char *slash = strrchr(path, '/');
    unsigned long n = atomic_fetch_add(&temp_counter, 1);
    snprintf(tmp, cap, "%.*s/.%.*s.tmp.%ld.%lu", (int)(slash - path), path, TEMP_BASE_MAX,
             slash + 1, (long)getpid(), n);
}

/* Where the bytes go before they are published, for messages. */
static const char *temp_of(const struct file_writer *fw)
{
    return fw->anonymous ? fw->path : fw->tmp;
}

/* linkat() gives an O_TMPFILE file its name through /proc (AT_EMPTY_PATH needs a
 * capability); without /proc, named temporary files it is. */
static bool proc_fd_links(void)
{
    static atomic_int known; /* 0: not checked, 1: yes, 2: no */
    if (atomic_load(&known) == 0)
        atomic_store(&known, access("/proc/self/fd", X_OK) == 0 ? 1 : 2);
    return atomic_load(&known) == 1;
}

/* An unnamed file in the object's directory, published by one link(): WAL fragments arrive
 * by the thousand, and a temporary name costs two more directory updates each. Returns
 * false when the file system (or the missing directory) says to use a named one. */
static bool open_anonymous(struct file_writer *fw)
{
    if (!fw->if_absent || atomic_load(&tmpfile_unsupported) || !proc_fd_links())
        return false;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", fw->path);
    *strrchr(dir, '/') = '\0';
    fw->fd = open(*dir ? dir : "/", O_TMPFILE | O_WRONLY | O_CLOEXEC, FILE_MODE);
    fw->anonymous = fw->fd >= 0;
    if (!fw->anonymous && (errno == EOPNOTSUPP || errno == EISDIR))
        atomic_store(&tmpfile_unsupported, true);
    return fw->anonymous;
}

static int open_temp(const struct file_store *fs, struct file_writer *fw, wv_err_t *err)
{
    if (open_anonymous(fw))
        return 0;
    fw->fd = open(fw->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
    if (fw->fd >= 0)
        return 0;
    if (!file_is_absent_errno(errno))
        return io_error("create", fw->key, fw->tmp, err);
    int rc = make_parent_dirs(fs, fw->key, fw->path, err);
    if (rc)
        return rc;
    if (open_anonymous(fw))
        return 0;
    fw->fd = open(fw->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
    if (fw->fd < 0)
        return io_error("create", fw->key, fw->tmp, err);
    return 0;
}

static int file_put_begin(storage_t *st, const char *key, bool if_absent, storage_writer_t **out,
                          wv_err_t *err)
{
    char path[PATH_MAX];
    char tmp[PATH_MAX];
    int rc = key_path(file_store_of(st), key, path, sizeof path, err);
    if (rc)
        return rc;
    temp_path(path, tmp, sizeof tmp);
    struct file_writer *fw = calloc(1, sizeof *fw);
    if (!fw)
        return wv_err_set(err, WV_EFAIL, "out of memory storing object %s", key);
    fw->base.st = st;
    fw->fd = -1;
    fw->if_absent = if_absent;
    fw->key = strdup(key);
    fw->path = strdup(path);
    fw->tmp = strdup(tmp);
    if (!fw->key || !fw->path || !fw->tmp)
        rc = wv_err_set(err, WV_EFAIL, "out of memory storing object %s", key);
    else
        rc = open_temp(file_store_of(st), fw, err);
    if (rc) {
        free_writer(fw);
        return rc;
    }
    *out = &fw->base;
    return 0;
}

static int file_put_write(storage_writer_t *w, const void *data, size_t len, wv_err_t *err)
{
    struct file_writer *fw = (struct file_writer *)w;
    if (fw->failed)
        return wv_err_set(err, WV_EFAIL, "object %s: write after a failed write", fw->key);
    if (fs_write_all(fw->fd, data, len) != 0) {
        fw->failed = true;
        return io_error("write", fw->key, temp_of(fw), err);
    }
    /* Start writeback of what was written so far: the fsync at commit then finds most of
     * it on disk already instead of writing it all while the caller waits. */
    fw->written += len;
    if (fw->written - fw->synced >= WRITEBACK_STEP) {
        sync_file_range(fw->fd, (off_t)fw->synced, (off_t)(fw->written - fw->synced),
                        SYNC_FILE_RANGE_WRITE);
        fw->synced = fw->written;
    }
    return 0;
}

static int flush_temp(struct file_writer *fw, wv_err_t *err)
{
    if (fsync(fw->fd) != 0)
        return io_error("fsync", fw->key, temp_of(fw), err);
    if (fw->anonymous) /* its descriptor is its only name until it is linked */
        return 0;
    int rc = close(fw->fd);
    fw->fd = -1;
    if (rc != 0)
        return io_error("close", fw->key, fw->tmp, err);
    return 0;
}

static int prefix_conflict(struct file_writer *fw, wv_err_t *err)
{
    return wv_err_set(err, WV_EFAIL,
                      "cannot store object %s (%s): keys below %s/ exist, and a file:// "
                      "repository cannot hold an object and keys below it",
                      fw->key, fw->path, fw->key);
}

/* link(2) fails when the name exists, so checking and publishing are one atomic step. */
static int link_temp(const struct file_writer *fw)
{
    if (!fw->anonymous)
        return link(fw->tmp, fw->path);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fw->fd);
    return linkat(AT_FDCWD, proc, AT_FDCWD, fw->path, AT_SYMLINK_FOLLOW);
}

static int publish_if_absent(struct file_writer *fw, wv_err_t *err)
{
    if (link_temp(fw) != 0) {
        struct stat sb;
        if (errno != EEXIST)
            return io_error("publish", fw->key, fw->path, err);
        if (lstat(fw->path, &sb) == 0 && S_ISDIR(sb.st_mode))
            return prefix_conflict(fw, err);
        return wv_err_set(err, WV_EEXISTS, "object already exists: %s", fw->key);
    }
    /* The object is published; a leftover temporary name is hidden and harmless. */
    if (!fw->anonymous)
        unlink(fw->tmp);
    return 0;
}

static int publish_replace(struct file_writer *fw, wv_err_t *err)
{
    if (rename(fw->tmp, fw->path) == 0)
        return 0;
    if (errno == EISDIR)
        return prefix_conflict(fw, err);
    return io_error("publish", fw->key, fw->path, err);
}

static int file_put_commit(storage_writer_t *w, wv_err_t *err)
{
    struct file_writer *fw = (struct file_writer *)w;
    int rc = 0;
    if (fw->failed)
        rc = wv_err_set(err, WV_EFAIL, "object %s was not stored: a write failed", fw->key);
    if (!rc)
        rc = flush_temp(fw, err);
    if (!rc)
        rc = fw->if_absent ? publish_if_absent(fw, err) : publish_replace(fw, err);
    if (!rc)
        rc = sync_parent(fw->key, fw->path, err);
    if (rc && !fw->anonymous)
        unlink(fw->tmp); /* already gone once published; then this is a no-op */
    free_writer(fw);
    return rc;
}

static void file_put_abort(storage_writer_t *w)
{
    struct file_writer *fw = (struct file_writer *)w;
    if (!fw->anonymous)
        unlink(fw->tmp);
    free_writer(fw);
}

/* ---- get, head, delete ---- */

/* Opens the regular file of key; a directory is a key prefix, not an object. */
static int open_object(storage_t *st, const char *key, char *path, int *fd, uint64_t *size,
                       wv_err_t *err)
{
    int rc = key_path(file_store_of(st), key, path, PATH_MAX, err);
    if (rc)
        return rc;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return file_is_absent_errno(errno) ? not_found(key, err) : io_error("read", key, path, err);
    struct stat sb;
    if (fstat(*fd, &sb) != 0)
        rc = io_error("stat", key, path, err);
    else if (!S_ISREG(sb.st_mode))
        rc = not_found(key, err);
    if (rc) {
        close(*fd);
        return rc;
    }
    *size = (uint64_t)sb.st_size;
    return 0;
}

static int stream_fd(int fd, const char *key, const char *path, char *chunk, storage_sink_fn sink,
                     void *ctx, wv_err_t *err)
{
    for (;;) {
        ssize_t n = fs_read_full(fd, chunk, READ_CHUNK);
        if (n < 0)
            return io_error("read", key, path, err);
        if (n == 0)
            return 0;
        int rc = sink(ctx, chunk, (size_t)n, err);
        if (rc)
            return rc;
        if (n < READ_CHUNK)
            return 0;
    }
}

static int file_get_stream(storage_t *st, const char *key, storage_sink_fn sink, void *ctx,
                           wv_err_t *err)
{
    char path[PATH_MAX];
    int fd = -1;
    uint64_t size = 0;
    int rc = open_object(st, key, path, &fd, &size, err);
    if (rc)
        return rc;
    char *chunk = malloc(READ_CHUNK);
    if (chunk)
        rc = stream_fd(fd, key, path, chunk, sink, ctx, err);
    else
        rc = wv_err_set(err, WV_EFAIL, "out of memory reading object %s", key);
    free(chunk);
    close(fd);
    return rc;
}

static int short_object(const char *key, const char *path, uint64_t size, uint64_t off, size_t len,
                        wv_err_t *err)
{
    return wv_err_set(err, WV_ECORRUPT,
                      "object %s (%s) is %llu bytes, too short for %zu bytes at offset %llu", key,
                      path, (unsigned long long)size, len, (unsigned long long)off);
}

static int file_get_range(storage_t *st, const char *key, uint64_t off, size_t len, void *out,
                          wv_err_t *err)
{
    char path[PATH_MAX];
    int fd = -1;
    uint64_t size = 0;
    int rc = open_object(st, key, path, &fd, &size, err);
    if (rc)
        return rc;
    if (off > size || len > size - off) {
        close(fd);
        return short_object(key, path, size, off, len, err);
    }
    ssize_t n = fs_pread_full(fd, out, len, (off_t)off);
    if (n < 0)
        rc = io_error("read", key, path, err);
    else if ((size_t)n < len) /* truncated while we read */
        rc = short_object(key, path, off + (uint64_t)n, off, len, err);
    close(fd);
    return rc;
}

static int file_head(storage_t *st, const char *key, uint64_t *size, wv_err_t *err)
{
    char path[PATH_MAX];
    int rc = key_path(file_store_of(st), key, path, sizeof path, err);
    if (rc)
        return rc;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return file_is_absent_errno(errno) ? not_found(key, err) : io_error("stat", key, path, err);
    if (!S_ISREG(sb.st_mode))
        return not_found(key, err);
    *size = (uint64_t)sb.st_size;
    return 0;
}

/* Empty parent directories are left in place: removing them would race with a put that
 * has just created them. */
static int file_del(storage_t *st, const char *key, wv_err_t *err)
{
    char path[PATH_MAX];
    int rc = key_path(file_store_of(st), key, path, sizeof path, err);
    if (rc)
        return rc;
    if (unlink(path) != 0) {
        /* EISDIR: the key is only a prefix of other keys, so no object of that name */
        if (file_is_absent_errno(errno) || errno == EISDIR)
            return 0;
        return io_error("delete", key, path, err);
    }
    /* A deletion that a crash undoes could bring back a manifest whose packs are gone. */
    return sync_parent(key, path, err);
}

/* ---- the store ---- */

static void file_close(storage_t *st)
{
    struct file_store *fs = file_store_of(st);
    if (fs)
        free(fs->root);
    free(fs);
    st->impl = NULL;
}

static const struct storage_ops file_ops = {
    .put_begin = file_put_begin,
    .put_write = file_put_write,
    .put_commit = file_put_commit,
    .put_abort = file_put_abort,
    .get_stream = file_get_stream,
    .get_range = file_get_range,
    .head = file_head,
    .del = file_del,
    .list_open = file_list_open,
    .iter_next = file_iter_next,
    .iter_close = file_iter_close,
    .close = file_close,
};

/* dir is absolute, without trailing '/' (except "/" itself). */
int storage_file_open(const char *dir, storage_t *st, wv_err_t *err)
{
    if (dir[0] != '/')
        return wv_err_set(err, WV_EUSAGE, "repository directory must be absolute: %s", dir);
    struct file_store *fs = calloc(1, sizeof *fs);
    if (!fs || !(fs->root = strdup(strcmp(dir, "/") == 0 ? "" : dir))) {
        free(fs);
        return wv_err_set(err, WV_EFAIL, "out of memory opening repository %s", dir);
    }
    int rc = fs->root[0] ? make_dirs(fs->root, 0, NULL, err) : 0;
    if (rc) {
        free(fs->root);
        free(fs);
        return wv_err_prefix(err, "opening repository %s", dir);
    }
    st->ops = &file_ops;
    st->impl = fs;
    return 0;
}
