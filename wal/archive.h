/* WAL archive push and fetch: the archive_command and restore_command sides. */
#ifndef WALVAULT_WAL_ARCHIVE_H
#define WALVAULT_WAL_ARCHIVE_H

#include <stdbool.h>

#include "repo/repo.h"
#include "wal/walname.h"

struct wal_push_opts {
    int jobs;      /* parallel pushes of other .ready segments, besides the one asked for */
    int ahead_max; /* at most this many other .ready files per call */
};

/* Archives the file at path (a segment, .partial, .backup or .history file). Pushing a file
 * that is already archived with the same content succeeds; with other content it fails with
 * WV_EMISMATCH. A segment binds the node to its system identifier. */
int wal_push(repo_t *r, const char *path, const struct wal_push_opts *opts, wv_err_t *err);

/* The repository key of an archived WAL file name (segment, history, ...). */
int wal_archive_key(repo_t *r, const char *name, uint32_t seg_size, char *out, size_t len,
                    wv_err_t *err);

/* *yes when every segment from start_lsn's to the one holding the byte before stop_lsn is
 * archived on timeline tli. *missing names the first absent one. */
int wal_archived_range(repo_t *r, uint32_t tli, wal_lsn_t start_lsn, wal_lsn_t stop_lsn,
                       uint32_t seg_size, bool *yes, char missing[WAL_NAME_MAX], wv_err_t *err);

struct wal_fetch_opts {
    int prefetch;          /* following segments to fetch ahead into the spool (0: none) */
    const char *spool_dir; /* where prefetched (still sealed) segments wait */
};

/* Writes the archived file `name` to dest. WV_ENOTFOUND when the archive has no such file
 * (the normal end of recovery). */
int wal_fetch(repo_t *r, const char *name, const char *dest, const struct wal_fetch_opts *opts,
              wv_err_t *err);

#endif
