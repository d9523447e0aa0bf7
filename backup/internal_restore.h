/* What restore.c, restore_fetch.c, catalog.c and verify.c share inside backup/: choosing a
 * backup for a recovery target, the plan of coalesced range reads that fetches a backup's
 * blocks (restore writes them, verify only opens them), and the archived WAL ranges of a
 * node. */
#ifndef WALVAULT_BACKUP_INTERNAL_RESTORE_H
#define WALVAULT_BACKUP_INTERNAL_RESTORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "backup/backup.h"
#include "backup/manifest.h"
#include "crypto/seal.h"
#include "wal/archive.h"

/* ---- recovery target times (catalog.c) ---- */

/* A parsed "YYYY-MM-DD HH:MM:SS[.frac][ ][+-HH[:MM]|Z|UTC]" (no zone: UTC). */
struct restore_time {
    int64_t sec;   /* epoch seconds, UTC */
    char frac[10]; /* the fraction's digits as given (at most 9), "" when none */
};

int restore_parse_time(const char *text, struct restore_time *out, wv_err_t *err);
/* The time in epoch milliseconds (the fraction cut to 3 digits). */
int64_t restore_time_ms(const struct restore_time *t);
/* "YYYY-MM-DD HH:MM:SS[.frac]+00": the same instant, spelled so that PostgreSQL reads it
 * the way we did whatever its TimeZone setting. */
void restore_format_time(const struct restore_time *t, char *out, size_t len);

/* The backup a restore starts from: backup_id when given, else the newest one that
 * finished before the target (time or LSN, at most one non-NULL), else the newest. */
struct restore_target {
    const char *backup_id;
    const struct restore_time *time;
    const wal_lsn_t *lsn;
};
int restore_choose_backup(repo_t *r, const struct restore_target *t, json_t **manifest,
                          struct manifest_summary *summary, wv_err_t *err);

/* Calls fn with the id of every backup of the node (manifests are not opened). */
typedef int (*catalog_id_fn)(void *ctx, const char *id, wv_err_t *err);
int catalog_each_backup_id(repo_t *r, catalog_id_fn fn, void *ctx, wv_err_t *err);

/* ---- archived WAL (catalog.c) ---- */

/* A run of consecutive archived segments on one timeline. */
struct wal_range {
    uint64_t first, last;
};

struct wal_timeline {
    uint32_t tli;
    bool history;
    struct wal_range *ranges; /* ascending */
    size_t count, cap;
    /* wal-stream's fragments of the newest segment when it is not stored whole yet: that
     * segment is archived up to partial.end (bytes from its start). */
    struct wal_frag_chain partial;
};

struct wal_catalog {
    struct wal_timeline *tls; /* ascending by timeline */
    size_t count;
    uint32_t seg_size;
};

/* Called for every object under the node's WAL prefix, parsable name or not. */
typedef int (*wal_object_fn)(void *ctx, const char *key, uint64_t size, wv_err_t *err);
/* Lists the node's WAL once, grouping segments into ranges; each key also goes to fn when
 * fn is not NULL. */
int wal_catalog_load(repo_t *r, uint32_t seg_size, wal_object_fn fn, void *ctx,
                     struct wal_catalog *out, wv_err_t *err);
const struct wal_timeline *wal_catalog_find(const struct wal_catalog *c, uint32_t tli);
void wal_catalog_free(struct wal_catalog *c);

/* ---- the block reads of a backup (catalog.c) ---- */

/* Bytes of one range read; bounds each worker's read buffer. */
#define RESTORE_READ_MAX (8u << 20)
/* The largest frame the sealer writes: a stored (uncompressed) full chunk. */
#define RESTORE_FRAME_MAX (SEAL_CHUNK_MAX + SEAL_FRAME_OVERHEAD)

/* One block reference, located: plaintext [skip, skip + plain_len) of frame `frame`, whose
 * sealed bytes are [offset, offset + sealed_len) of pack `pack`, goes to file_offset of file
 * `file` (an index into the manifest's "files"; `block` is the reference's index there). */
struct restore_piece {
    uint64_t offset;
    uint64_t file_offset;
    uint32_t file;
    uint32_t block;
    uint32_t pack;
    uint32_t frame;
    uint32_t sealed_len;
    uint32_t skip;
    uint32_t plain_len;
};

/* One range read: whole frames that lie back to back in one pack, and the `count` pieces
 * (from piece `first` on) that take bytes of them. */
struct restore_read {
    size_t first;
    size_t count;
    uint32_t pack;
    uint64_t offset;
    uint64_t len;
    uint64_t plain;  /* bytes the pieces write */
    uint32_t frames; /* distinct frames: each is opened once */
};

/* Every reference of every file, sorted by where its frame lies, so the references that
 * share a frame (an incremental's unchanged pages, of one file or several) are neighbours
 * and one read and one decryption serve them all. The pieces array is O(references), about
 * 48 bytes each: a 1 TB database at 1 MiB frames is ~1 M references, ~48 MB. */
struct restore_plan {
    struct restore_piece *pieces;
    size_t npieces, pieces_cap;
    struct restore_read *reads;
    size_t count, cap; /* reads */
    uint64_t total_plain;
    uint64_t total_frames;
    size_t max_read;
};

void restore_plan_init(struct restore_plan *p, size_t max_read);
/* Appends reference `block` of file `file` as a piece; no read is planned before finish. */
int restore_plan_add(struct restore_plan *p, size_t file, size_t block, const struct block_ref *b,
                     wv_err_t *err);
/* Sorts the pieces by (pack, offset, skip) and groups them into reads of at most max_read
 * bytes; every piece of one frame lands in one read. Frames named two ways (one offset with
 * two lengths or indexes) or overlapping are WV_ECORRUPT. */
int restore_plan_finish(struct restore_plan *p, json_t *files, json_t *packs, wv_err_t *err);
/* The plan of every block of the manifest; checks each reference against its file and the
 * pack list on the way. */
int restore_plan_build(json_t *manifest, struct restore_plan *p, wv_err_t *err);
void restore_plan_free(struct restore_plan *p);
/* Once the frame of piece is open and holds frame_plain bytes: the piece must lie inside. */
int restore_piece_check(const struct restore_piece *piece, size_t frame_plain, json_t *files,
                        json_t *packs, wv_err_t *err);

/* How many block references manifest "files" entry i holds (0 unless a regular file). */
size_t restore_file_block_count(json_t *files, size_t i);
/* The path of manifest "files" entry i, for messages. */
const char *restore_file_path(json_t *files, size_t i);
/* A manifest path that stays inside the directory it is restored into. */
bool restore_path_is_safe(const char *path);

/* ---- fetching a backup's blocks (restore_fetch.c) ---- */

/* Output files held open through a restore, at most this many (and within RLIMIT_NOFILE);
 * the others are opened by each read that writes them. */
#define RESTORE_OPEN_FILES_MAX 4096

struct restore_slot {
    uint8_t *read;
    buf_t plain;
    bool busy;
};

/* Shared state of the workers that run a plan. With target_dir NULL the blocks are only
 * opened and checked (verify). */
struct restore_fetch {
    repo_t *r;
    json_t *files;
    json_t *packs;
    const struct restore_plan *plan;
    const char *target_dir;
    int *fds; /* per manifest file: open for writing, or -1 (target_dir only) */
    size_t nfiles, nopen, max_open;
    struct restore_slot *slots; /* one per worker: memory stays jobs x RESTORE_READ_MAX */
    size_t nslots;
    pthread_mutex_t lock;
    atomic_uint_fast64_t done_plain;
    atomic_uint_fast64_t read_bytes;
    atomic_uint_fast64_t frames_opened;
    struct progress_sink progress;
    const char *what;
    double last_progress;
};

int restore_fetch_init(struct restore_fetch *f, repo_t *r, json_t *manifest,
                       const struct restore_plan *plan, const char *target_dir, int jobs,
                       wv_err_t *err);
/* Offers the open, sized output file of manifest entry `file`: true when f keeps it (and
 * closes it in restore_fetch_close_files), false when the caller should close it. */
bool restore_fetch_keep_fd(struct restore_fetch *f, size_t file, int fd);
/* A workers_item_fn: runs plan read `index` (ctx is the struct restore_fetch). */
int restore_fetch_item(void *ctx, size_t index, wv_err_t *err);
/* Closes the kept output files; a failed close is a failed write. */
int restore_fetch_close_files(struct restore_fetch *f, wv_err_t *err);
void restore_fetch_free(struct restore_fetch *f);

#endif
