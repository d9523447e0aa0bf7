/* What restore.c, catalog.c and verify.c share inside backup/: choosing a backup for a
 * recovery target, the plan of coalesced range reads that fetches a backup's blocks (restore
 * writes them, verify only opens them), and the archived WAL ranges of a node. */
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

/* One range read: `count` blocks that lie back to back in one pack, taken in manifest order
 * from block `block` of file `file` on (a run may go on into the following files). */
struct restore_item {
    size_t file;
    size_t block;
    size_t count;
    uint32_t pack;
    uint64_t offset;
    uint64_t len;
    uint64_t plain;
};

struct restore_plan {
    struct restore_item *items;
    size_t count, cap;
    uint64_t total_plain;
    size_t max_read;
};

void restore_plan_init(struct restore_plan *p, size_t max_read);
/* True when b can be read in the same request as the run cur ends with. */
bool restore_plan_extends(const struct restore_plan *p, const struct restore_item *cur,
                          const struct block_ref *b);
/* Appends block `block` of file `file`, extending the last run when it can. */
int restore_plan_add(struct restore_plan *p, size_t file, size_t block, const struct block_ref *b,
                     wv_err_t *err);
/* The plan of every block of the manifest; checks each reference against its file and the
 * pack list on the way. */
int restore_plan_build(json_t *manifest, struct restore_plan *p, wv_err_t *err);
void restore_plan_free(struct restore_plan *p);

/* The manifest "files" entry i's blocks when it is a regular file, else NULL. */
json_t *restore_file_blocks(json_t *files, size_t i);
/* One [pack, frame, offset, sealed_len, file_offset, plain_len] element; -1 when malformed. */
int restore_ref_decode(json_t *v, struct block_ref *b);
/* A manifest path that stays inside the directory it is restored into. */
bool restore_path_is_safe(const char *path);

/* ---- fetching a backup's blocks (restore.c) ---- */

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
    struct restore_slot *slots; /* one per worker: memory stays jobs x RESTORE_READ_MAX */
    size_t nslots;
    pthread_mutex_t lock;
    atomic_uint_fast64_t done_plain;
    atomic_uint_fast64_t read_bytes;
    struct progress_sink progress;
    const char *what;
    double last_progress;
};

int restore_fetch_init(struct restore_fetch *f, repo_t *r, json_t *manifest,
                       const struct restore_plan *plan, const char *target_dir, int jobs,
                       wv_err_t *err);
/* A workers_item_fn: runs plan item `index` (ctx is the struct restore_fetch). */
int restore_fetch_item(void *ctx, size_t index, wv_err_t *err);
void restore_fetch_free(struct restore_fetch *f);

#endif
