#include "common/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_mkdir_p(const char *path, mode_t mode, wv_err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return wv_err_set(err, WV_EFAIL, "path too long: %s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST)
            return wv_err_errno(err, WV_EFAIL, "cannot create directory %s", tmp);
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return wv_err_errno(err, WV_EFAIL, "cannot create directory %s", tmp);
    return 0;
}

int fs_fsync_dir(const char *dir, wv_err_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot open directory %s", dir);
    int rc = fsync(fd);
    close(fd);
    if (rc != 0)
        return wv_err_errno(err, WV_EFAIL, "cannot fsync directory %s", dir);
    return 0;
}

int fs_fsync_parent(const char *path, wv_err_t *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return fs_fsync_dir(".", err);
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    return fs_fsync_dir(dir, err);
}

int fs_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_pwrite_all(int fd, const void *data, size_t len, off_t off)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t fs_read_full(int fd, void *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, (char *)data + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

ssize_t fs_pread_full(int fd, void *data, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)data + done, len - done, off + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, wv_err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return wv_err_set(err, WV_EFAIL, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot create %s", tmp);
    if (fs_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        wv_err_errno(err, WV_EFAIL, "cannot write %s", tmp);
        close(fd);
        unlink(tmp);
        return WV_EFAIL;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        wv_err_errno(err, WV_EFAIL, "cannot rename %s to %s", tmp, path);
        unlink(tmp);
        return WV_EFAIL;
    }
    return fs_fsync_parent(path, err);
}

int fs_read_file(const char *path, buf_t *out, size_t max, wv_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return wv_err_set(err, WV_ENOTFOUND, "file not found: %s", path);
        return wv_err_errno(err, WV_EFAIL, "cannot open %s", path);
    }
    buf_init(out, max);
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            wv_err_errno(err, WV_EFAIL, "cannot read %s", path);
            close(fd);
            buf_free(out);
            return WV_EFAIL;
        }
        if (n == 0)
            break;
        if (buf_append(out, chunk, (size_t)n, err) != 0) {
            close(fd);
            buf_free(out);
            return wv_err_prefix(err, "reading %s", path);
        }
    }
    close(fd);
    return 0;
}

int fs_dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    }
    closedir(d);
    return empty;
}

int fs_absolute_path(const char *path, char *out, size_t len, wv_err_t *err)
{
    char cwd[PATH_MAX];
    if (access(path, F_OK) != 0)
        return wv_err_errno(err, WV_EUSAGE, "cannot find %s", path);
    if (path[0] != '/' && !getcwd(cwd, sizeof cwd))
        return wv_err_errno(err, WV_EFAIL, "cannot read the current directory");
    int n =
        path[0] == '/' ? snprintf(out, len, "%s", path) : snprintf(out, len, "%s/%s", cwd, path);
    if (n < 0 || (size_t)n >= len)
        return wv_err_set(err, WV_EUSAGE, "path too long: %s", path);
    return 0;
}
