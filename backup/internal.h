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

/* The references of one BACKUP_BLOCK_SIZE block of a file, in file order: one for a block
 * stored whole, several for an incremental block that mixes new pages with a parent's, none
 * for a hole. Files outside relation storage also keep the block's keyed hash, which is how
 * the next incremental tells whether the block changed. */
struct block_slot {
    struct block_ref *refs;
    uint32_t count;
    bool hashed;
    uint8_t hash[SEAL_HASH_BYTES];
};

/* What the parent backup holds of the same path, decoded once per file. */
struct parent_file {
    uint64_t size;
    uint64_t ino;
    struct block_ref *refs;
    size_t nrefs;
    uint8_t (*hashes)[SEAL_HASH_BYTES];
    size_t nhashes;
};

struct bfile {
    char *path;   /* relative to the data directory, as the manifest names it */
    char *source; /* local source: absolute path to read */
    char *target; /* links */
    enum bfile_type type;
    mode_t mode;
    int64_t mtime;
    uint64_t size;            /* expected size (listing or tar header) */
    uint64_t got_size;        /* bytes actually read: a live file may shrink */
    bool relation;            /* a relation segment whose pages carry checksums */
    uint32_t first_block;     /* absolute block number of the file's first page */
    uint64_t ino;             /* local source: inode, to notice a file recreated under one name */
    struct block_slot *slots; /* one per BACKUP_BLOCK_SIZE */
    size_t nslots;
    struct parent_file *parent; /* NULL: stored whole (full backup, or new since the parent) */
    bool vanished;
};

struct backup_ctx {
    repo_t *r;
    const struct backup_opts *opts;
    char id[64];
    wal_lsn_t start_lsn;
    bool check_pages;

    /* Incremental backups: the parent's manifest, its files by path, its start LSN. */
    json_t *parent;
    json_t *parent_files;
    wal_lsn_t parent_start_lsn;
    /* Blocks of interrupted backups that can be reused ("path@offset" -> entry). */
    json_t *resume;
    uint64_t pack_target; /* close a pack once it holds this many sealed bytes */

    pthread_mutex_t lock; /* guards the fields below */
    json_t *packs;        /* pack ids in order of creation */
    json_t *checksum_failures;
    uint64_t stored_bytes;
    uint64_t new_bytes; /* plaintext this backup stored itself, not referenced */
    uint64_t done_bytes;
    uint64_t total_bytes;

    struct bfile *files;
    size_t nfiles, cap_files;
};

int backup_ctx_init(struct backup_ctx *c, repo_t *r, const struct backup_opts *opts, wv_err_t *err);
void backup_ctx_free(struct backup_ctx *c);
/* Appends a file entry (copies strings) and returns its index, or -1. */
long backup_add_file(struct backup_ctx *c, const struct bfile *f);
/* Sizes the block slots of a file from its expected size, and finds what its parent held. */
int backup_file_prepare(struct backup_ctx *c, struct bfile *f, wv_err_t *err);
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
    void *plan;             /* incremental.c's per-worker scratch */
    json_t *index;          /* whole blocks in the open pack, for resume.c */
    uint32_t pack;
    uint32_t frame;
    uint64_t offset;
    buf_t frame_buf;
};

void pack_writer_init(struct pack_writer *w, struct backup_ctx *c, int worker);
/* Seals plain[0..len) as the next frame of the writer's pack; fills pack, frame, offset and
 * sealed_len of *out. */
int pack_writer_seal(struct pack_writer *w, const uint8_t *plain, size_t len, struct block_ref *out,
                     wv_err_t *err);
/* Stores one block of file f at file_offset (len <= BACKUP_BLOCK_SIZE, at a block boundary):
 * whole, or, in an incremental, only what changed since the parent. All-zero pages and
 * blocks are holes. */
int backup_store_block(struct pack_writer *w, struct bfile *f, uint64_t file_offset,
                       const uint8_t *data, size_t len, wv_err_t *err);
int backup_slot_append(struct bfile *f, size_t slot, const struct block_ref *ref, wv_err_t *err);

/* Incremental backups (incremental.c). */
int backup_load_parent(struct backup_ctx *c, const char *parent_id, wv_err_t *err);
void backup_free_parent(struct backup_ctx *c);
/* Sets f->parent when the parent backup holds the same file, and it is not to be re-stored
 * whole (recreated, or its references too scattered). */
int backup_find_parent_file(struct backup_ctx *c, struct bfile *f, wv_err_t *err);
void backup_free_parent_file(struct parent_file *p);
void backup_free_block_plan(void *plan);

/* Resuming interrupted backups (resume.c). */
int backup_load_resume(struct backup_ctx *c, wv_err_t *err);
/* 1 when the block was referenced from an interrupted backup, 0 when it must be stored. */
int backup_try_resume(struct pack_writer *w, struct bfile *f, uint64_t off, const uint8_t *data,
                      size_t len, wv_err_t *err);
int backup_index_block(struct pack_writer *w, const struct bfile *f, const struct block_ref *ref,
                       const uint8_t *hash);
int backup_write_pack_index(struct pack_writer *w, wv_err_t *err);
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
