/* What the backup sources (local read, BASE_BACKUP stream) share: the list of files being
 * backed up and the pack writers their blocks go into. Private to backup/. */
#ifndef WALVAULT_BACKUP_INTERNAL_H
#define WALVAULT_BACKUP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "backup/backup.h"

/* A file is cut into blocks of at most this size at offsets that are multiples of it; each
 * block becomes one sealed frame. 1 MiB keeps per-frame costs negligible while letting two
 * workers share one big relation segment. */
#define BACKUP_BLOCK_SIZE (1u << 20)
/* A pack is closed once it holds this many sealed bytes. */
#define BACKUP_PACK_TARGET (64u << 20)

enum bfile_type { BFILE_FILE, BFILE_DIR, BFILE_LINK };

struct bfile {
    char *path;   /* relative to the data directory, as the manifest names it */
    char *source; /* local source: absolute path to read */
    char *target; /* links */
    enum bfile_type type;
    mode_t mode;
    int64_t mtime;
    uint64_t size;     /* expected size (listing or tar header) */
    uint64_t got_size; /* bytes actually read: a live file may shrink */
    bool relation;     /* a relation segment whose pages carry checksums */
    uint32_t first_block; /* absolute block number of the file's first page */
    struct block_ref *blocks; /* one slot per BACKUP_BLOCK_SIZE; plain_len 0 = hole */
    size_t slots;
    bool vanished;
};

struct backup_ctx {
    repo_t *r;
    const struct backup_opts *opts;
    char id[64];
    wal_lsn_t start_lsn;
    bool check_pages;

    pthread_mutex_t lock; /* guards the fields below */
    json_t *packs;        /* pack ids in order of creation */
    json_t *checksum_failures;
    uint64_t stored_bytes;
    uint64_t done_bytes;
    uint64_t total_bytes;

    struct bfile *files;
    size_t nfiles, cap_files;
};

int backup_ctx_init(struct backup_ctx *c, repo_t *r, const struct backup_opts *opts,
                    wv_err_t *err);
void backup_ctx_free(struct backup_ctx *c);
/* Appends a file entry (copies strings) and returns its index, or -1. */
long backup_add_file(struct backup_ctx *c, const struct bfile *f);
/* Sizes the block slots of a file from its expected size. */
int backup_file_alloc_slots(struct bfile *f, wv_err_t *err);
/* Relation files: "base/<db>/<rel>[_fork][.seg]", "global/...", and the same under a
 * tablespace. Sets relation and first_block. */
void backup_classify_file(struct bfile *f);
/* Excluded from every base backup, as pg_basebackup excludes them. */
bool backup_path_excluded(const char *relpath, bool is_dir);
bool backup_dir_contents_excluded(const char *relpath);

/* One pack writer per thread. */
struct pack_writer {
    struct backup_ctx *c;
    int worker;
    int seq;
    storage_writer_t *sw;
    char key[REPO_KEY_MAX]; /* the open pack's object name */
    uint32_t pack;
    uint32_t frame;
    uint64_t offset;
    buf_t frame_buf;
};

void pack_writer_init(struct pack_writer *w, struct backup_ctx *c, int worker);
/* Seals one block of file f at file_offset; all-zero blocks are left as holes. */
int pack_writer_add_block(struct pack_writer *w, struct bfile *f, uint64_t file_offset,
                          const uint8_t *data, size_t len, wv_err_t *err);
int pack_writer_finish(struct pack_writer *w, wv_err_t *err);
void pack_writer_abort(struct pack_writer *w);

void backup_progress(struct backup_ctx *c, uint64_t bytes);

/* Page checksums of one block of a relation file; failures are recorded, not fatal. */
void backup_check_pages(struct backup_ctx *c, const struct bfile *f, uint64_t file_offset,
                        const uint8_t *data, size_t len);

/* Sources: fill c->files, the blocks, and the fields of the manifest they learn. */
struct backup_result {
    uint32_t timeline;
    wal_lsn_t start_lsn, stop_lsn;
    uint64_t system_identifier;
    int pg_version;
    uint32_t wal_seg_size;
    char *backup_label;
    char *tablespace_map;
    json_t *tablespaces; /* [{"oid": n, "path": s}] */
    const char *source;
};
int backup_source_local(struct backup_ctx *c, void *pgconn, const char *pgdata,
                        struct backup_result *res, wv_err_t *err);
int backup_source_stream(struct backup_ctx *c, const char *conninfo, struct backup_result *res,
                         wv_err_t *err);
/* Parses "START WAL LOCATION: X/Y (file ...)" and "START TIMELINE: n" from a backup_label. */
int backup_label_parse(const char *label, wal_lsn_t *start, uint32_t *tli, wv_err_t *err);

#endif
