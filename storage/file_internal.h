/* The file:// backend's parts, shared between its two files. Private to storage/.
 *
 *   file.c       paths, put (temporary or unnamed file, fsync, link or rename, directory
 *                fsync), get, range get, head, delete; open and close
 *   file_list.c  listing: a depth-first walk of sorted directories */
#ifndef WALVAULT_STORAGE_FILE_INTERNAL_H
#define WALVAULT_STORAGE_FILE_INTERNAL_H

#include <stdbool.h>

#include "storage/backend.h"

struct file_store {
    char *root; /* without trailing '/'; "" when the root is "/" */
};

struct file_store *file_store_of(storage_t *st);
/* errno values that mean "no such object": absent, or a key component is itself an object. */
bool file_is_absent_errno(int e);

int file_list_open(storage_t *st, const char *prefix, storage_iter_t **out, wv_err_t *err);
int file_iter_next(storage_iter_t *base, const char **key, uint64_t *size, wv_err_t *err);
void file_iter_close(storage_iter_t *base);

#endif
