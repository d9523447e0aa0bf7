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
 * archived on timeline tli, whole or, as far as stop_lsn needs, in fragments (wal-stream).
 * *missing names the first absent one. */
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

/* ---- fragments: what wal-stream stores of a segment before it is finished ----
 *
 * A fragment holds bytes [start, end) of one segment (walname.h names it). Each store adds
 * the bytes received since the previous one, so a segment's fragments are read in name
 * (= start offset) order and concatenated; an overlap (a store retried with more bytes after
 * an ambiguous failure) is skipped, a hole ends what they hold. Once the segment is stored
 * whole its fragments are deleted; fragments beside a whole segment are leftovers. */

/* Feeds a segment's fragments in name order; `end` is how far bytes [0, end) are held. */
struct wal_frag_chain {
    bool any;
    uint64_t segno;
    uint32_t end;
    size_t count;
};
void wal_frag_chain_add(struct wal_frag_chain *c, const struct wal_file *f);

/* The fragments of one segment (none: c->any false). */
int wal_fragments_scan(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size,
                       struct wal_frag_chain *c, wv_err_t *err);
/* Bytes [0, end) of the segment, from its fragments, to sink; *end as in the chain. */
int wal_fragments_read(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size,
                       storage_sink_fn sink, void *ctx, uint32_t *end, wv_err_t *err);
int wal_fragments_delete(repo_t *r, uint32_t tli, uint64_t segno, uint32_t seg_size, wv_err_t *err);

#define WAL_TAIL_STALE_MAX 4
/* The newest WAL a timeline holds: its last whole segment and the fragments after it. */
struct wal_tail {
    bool has_whole;
    uint64_t last_whole;
    struct wal_frag_chain frag;         /* fragments of the newest fragmented segment after it */
    wal_lsn_t end;                      /* the first byte not held (0: nothing on the timeline) */
    uint64_t stale[WAL_TAIL_STALE_MAX]; /* segments stored whole that still have fragments */
    size_t nstale;
};
int wal_timeline_tail(repo_t *r, uint32_t tli, uint32_t seg_size, struct wal_tail *out,
                      wv_err_t *err);

#endif
