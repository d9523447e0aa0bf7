/* A streaming tar reader: bytes go in, in pieces of any size; entries come out through
 * callbacks. No temporary files, memory bounded by the longest name/pax header allowed.
 * Knows ustar, pax extended headers (path, linkpath, size), GNU long names and long links
 * ('L' and 'K'), and ignores trailing zero blocks. */
#ifndef WALVAULT_BACKUP_TAR_H
#define WALVAULT_BACKUP_TAR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

enum tar_type { TAR_FILE, TAR_DIR, TAR_SYMLINK, TAR_HARDLINK, TAR_OTHER };

struct tar_entry {
    const char *path;     /* without a trailing '/' for directories */
    const char *linkpath; /* symlink and hardlink targets, else "" */
    enum tar_type type;
    uint64_t size;
    mode_t mode;
    int64_t mtime;
};

struct tar_callbacks {
    /* An entry begins; its data (size bytes) follows through data(). */
    int (*begin)(void *ctx, const struct tar_entry *e, wv_err_t *err);
    int (*data)(void *ctx, const void *data, size_t len, wv_err_t *err);
    /* The entry's data is complete. */
    int (*end)(void *ctx, wv_err_t *err);
};

typedef struct tar_reader tar_reader_t;
int tar_reader_new(const struct tar_callbacks *cb, void *ctx, tar_reader_t **out, wv_err_t *err);
int tar_reader_feed(tar_reader_t *r, const void *data, size_t len, wv_err_t *err);
/* Fails (WV_ECORRUPT) when the stream ended inside an entry. */
int tar_reader_finish(tar_reader_t *r, wv_err_t *err);
void tar_reader_free(tar_reader_t *r);

#endif
