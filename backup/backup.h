/* Base backup, restore, the backup catalog and verification: the public face of backup/. */
#ifndef WALVAULT_BACKUP_BACKUP_H
#define WALVAULT_BACKUP_BACKUP_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "backup/manifest.h"
#include "repo/repo.h"

/* Long work reports progress through this; agent/ draws it on a terminal. */
struct progress_sink {
    void (*update)(void *ctx, const char *what, uint64_t done, uint64_t total);
    void *ctx;
};

enum backup_source { BACKUP_SOURCE_AUTO, BACKUP_SOURCE_LOCAL, BACKUP_SOURCE_STREAM };
/* AUTO: incremental when the node has a backup on the current timeline, else full. */
enum backup_mode { BACKUP_MODE_AUTO, BACKUP_MODE_FULL, BACKUP_MODE_INCREMENTAL };

struct backup_opts {
    const char *pg_conninfo; /* NULL or "": libpq's environment */
    const char *pgdata;      /* local source: the data directory (default: asked from the server) */
    enum backup_source source;
    enum backup_mode mode;
    const char *parent_id; /* incremental: this parent instead of the newest backup */
    int jobs;
    int pack_size_mib;     /* 0: the default (64 MiB) */
    int archive_timeout_s; /* wait this long for the WAL up to the stop LSN to be archived */
    struct progress_sink progress;
};

/* Takes a full base backup of the node; writes its id (64 bytes) on success. */
int backup_run(repo_t *r, const struct backup_opts *opts, char *id_out, wv_err_t *err);

struct tablespace_relocation {
    const char *from; /* tablespace OID, or its original path */
    const char *to;
};

struct restore_opts {
    const char *target_dir;
    const char *backup_id;     /* NULL: chosen from the target */
    const char *target_time;   /* "YYYY-MM-DD HH:MM:SS[.frac][+TZ]" */
    const char *target_lsn;    /* "X/Y" */
    const char *target_action; /* promote (default) | pause | shutdown */
    const struct tablespace_relocation *relocations;
    size_t relocation_count;
    const char *restore_command; /* written into the recovery settings as it is */
    /* A watermark's point (coord/): recover on this timeline (0: latest) and stop before the
     * first record that starts at or after target_lsn (recovery_target_inclusive = off),
     * so that nothing written after the cut is replayed. */
    uint32_t target_timeline;
    bool target_exclusive;
    int jobs;
    struct progress_sink progress;
};

int restore_run(repo_t *r, const struct restore_opts *opts, char *id_out, wv_err_t *err);

/* All backups of the node, oldest first (by stop LSN then id). */
int catalog_backups(repo_t *r, struct manifest_summary **out, size_t *count, wv_err_t *err);
/* {"node":..., "backups":[...], "wal":[{"timeline":1,"ranges":[{"first":..,"last":..}]}]} */
int catalog_describe(repo_t *r, json_t **out, wv_err_t *err);

struct expire_opts {
    int retain_full;
    int retain_days;
    bool dry_run;
    int64_t grace_s; /* packs of backups started this recently are never collected */
    int64_t now_ms;
    json_t *keep_ids; /* backup ids kept whatever the rules say (retained watermarks), or NULL */
};
/* Applies retention and collects garbage; *report lists what went (or would go, dry run):
 * {"backups": [keys], "packs": [keys], "wal": [keys], "backups_kept": n, "dry_run": b}. */
int expire_run(repo_t *r, const struct expire_opts *opts, json_t **report, wv_err_t *err);

struct verify_opts {
    const char *backup_id; /* NULL: every backup */
    int jobs;
    struct progress_sink progress;
};
/* Reads and checks every object; problems (one line each) go into *report's "problems"
 * array. Returns 0 when the checks ran, whatever they found; a negative code only when
 * verification itself could not run. */
int verify_run(repo_t *r, const struct verify_opts *opts, json_t **report, wv_err_t *err);

#endif
