/* Local file helpers that keep the "temporary name, fsync, rename, fsync the directory"
 * rule in one place. */
#ifndef WALVAULT_COMMON_FSUTIL_H
#define WALVAULT_COMMON_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "common/buf.h"
#include "common/err.h"

int fs_mkdir_p(const char *path, mode_t mode, wv_err_t *err);
int fs_fsync_dir(const char *dir, wv_err_t *err);
int fs_fsync_parent(const char *path, wv_err_t *err);
/* Writes data under a temporary name beside path, fsyncs, renames, fsyncs the directory. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, wv_err_t *err);
/* Reads a whole (small) file; fails past max bytes. WV_ENOTFOUND when absent. */
int fs_read_file(const char *path, buf_t *out, size_t max, wv_err_t *err);
int fs_write_all(int fd, const void *data, size_t len);
int fs_pwrite_all(int fd, const void *data, size_t len, off_t off);
/* Reads until len bytes or end of file; returns the count or -1. */
ssize_t fs_read_full(int fd, void *data, size_t len);
ssize_t fs_pread_full(int fd, void *data, size_t len, off_t off);
/* True when dir does not exist or holds no entries. */
int fs_dir_is_empty(const char *dir);
/* The absolute path of an existing file, without resolving symbolic links: a Kubernetes
 * secret or config map file is a link into a directory replaced on every update, so its
 * resolved path goes stale. */
int fs_absolute_path(const char *path, char *out, size_t len, wv_err_t *err);

#endif
