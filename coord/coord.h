/* The coordinator: consistent cuts ("watermarks") across the databases of one distributed
 * system (a Canton sequencer, its mediators and participants), ordered group backups, and
 * the restore plan that puts every node at a point of one watermark.
 *
 * Why a watermark cannot fork the ledger: a participant (or mediator) writes only what the
 * sequencer committed before. The flush LSNs of all mediators and participants are read
 * first; only after every one has answered is the sequencer's insert LSN read. Whatever a
 * participant held at its LSN came from a sequencer commit that had happened before its
 * LSN was read, hence before the sequencer's LSN was read: restoring every node to its LSN
 * of one watermark restores the sequencer to a state that contains it. Clocks are never
 * compared across hosts; the watermark's time is the coordinator's, for people only. */
#ifndef WALVAULT_COORD_COORD_H
#define WALVAULT_COORD_COORD_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "backup/backup.h"
#include "common/err.h"
#include "repo/repo.h"
#include "wal/walname.h"

/* ---- the cluster (coord/cluster.c) ---- */

enum coord_role { COORD_SEQUENCER, COORD_MEDIATOR, COORD_PARTICIPANT };
/* How the node's WAL reaches the repository: archive_command (the coordinator may force a
 * segment switch so the cut's segment is archived) or wal-stream (fragments arrive by
 * themselves). */
enum coord_archive { COORD_ARCHIVE_COMMAND, COORD_ARCHIVE_STREAM };

#define COORD_NAME_MAX 64
#define COORD_NODES_MAX 256

struct coord_node {
    char name[COORD_NAME_MAX];
    enum coord_role role;
    enum coord_archive archive;
    char *pg;     /* libpq connection string */
    char *pgdata; /* data directory for a local backup source, or NULL */
};

struct coord_cluster {
    struct coord_node *nodes; /* in the config file's order */
    size_t count;
    size_t sequencer; /* index of the one sequencer */
};

/* The [node NAME] sections of an INI config file: role = sequencer|mediator|participant,
 * pg = CONNINFO, archive = command|stream (default command), pgdata = DIR (optional).
 * Exactly one sequencer. Other sections and keys outside sections are not looked at (they
 * are the agent's options). WV_EUSAGE with the file and the node named on bad input. */
int coord_cluster_load(const char *path, struct coord_cluster *out, wv_err_t *err);
/* The same from text (origin names it in messages). */
int coord_cluster_parse(const char *text, const char *origin, struct coord_cluster *out,
                        wv_err_t *err);
void coord_cluster_free(struct coord_cluster *c);
const char *coord_role_name(enum coord_role role);
const struct coord_node *coord_cluster_find(const struct coord_cluster *c, const char *name);

/* ---- the cut (coord/cut.c) ---- */

/* Reads the position of node `node`: the flush LSN of a mediator or participant, the insert
 * LSN of the sequencer. Called from several threads at once for different nodes. */
typedef int (*coord_read_fn)(void *ctx, size_t node, wal_lsn_t *lsn, wv_err_t *err);

/* The order that makes a cut consistent: every mediator and participant in parallel (one
 * thread each), then, only once all of them have answered, the sequencer. On a failure the
 * sequencer is not read and the error names the node that failed. */
int coord_cut_read(const struct coord_cluster *c, coord_read_fn read, void *ctx, wal_lsn_t *lsns,
                   wv_err_t *err);

/* Runs fn(ctx, i) for i in [0, count) on one thread each and waits for all of them. Returns
 * the first failure by index (its message in err) or 0; *failed is its index. */
typedef int (*coord_task_fn)(void *ctx, size_t index, wv_err_t *err);
int coord_parallel(size_t count, coord_task_fn fn, void *ctx, size_t *failed, wv_err_t *err);

/* ---- watermarks (coord/watermark.c) ---- */

#define COORD_WATERMARK_PREFIX "cluster/watermarks/"
#define COORD_WATERMARK_FORMAT 1

struct coord_wm_node {
    char name[COORD_NAME_MAX];
    enum coord_role role;
    uint64_t system_identifier;
    uint32_t timeline;
    wal_lsn_t lsn;
};

struct coord_watermark {
    uint32_t number;
    int64_t time_ms; /* the coordinator's clock when the sequencer was read (UTC) */
    struct coord_wm_node *nodes;
    size_t count;
};

void coord_watermark_free(struct coord_watermark *w);
/* cluster/watermarks/0000000042: zero-padded so that listing order is number order. */
void coord_watermark_key(uint32_t number, char *out, size_t len);
json_t *coord_watermark_json(const struct coord_watermark *w);
int coord_watermark_from_json(json_t *doc, uint32_t number, struct coord_watermark *out,
                              wv_err_t *err);
/* Every watermark number in the repository, ascending (*out malloc'd, may be NULL). */
int coord_watermark_numbers(repo_t *r, uint32_t **out, size_t *count, wv_err_t *err);
int coord_watermark_load(repo_t *r, uint32_t number, struct coord_watermark *out, wv_err_t *err);
/* spec: a number or "latest". WV_ENOTFOUND names what is missing. */
int coord_watermark_resolve(repo_t *r, const char *spec, struct coord_watermark *out,
                            wv_err_t *err);
/* The newest watermark (highest number) whose recorded time is at or before time_ms. */
int coord_watermark_at_time(repo_t *r, int64_t time_ms, struct coord_watermark *out, wv_err_t *err);
const struct coord_wm_node *coord_watermark_node(const struct coord_watermark *w, const char *name);
/* True when, for every node both name, `newer` is on a later timeline or at an LSN at or
 * after `older`'s: watermark numbers then never go back in what they hold. */
bool coord_watermark_not_older(const struct coord_watermark *newer,
                               const struct coord_watermark *older);
/* Writes w as number (newest + 1) with put-if-absent, setting w->number. WV_EEXISTS: another
 * coordinator took that number first; WV_EMISMATCH: the newest watermark holds a later point
 * than w for some node. Either way the caller takes a new cut and tries again. */
int coord_watermark_publish(repo_t *r, struct coord_watermark *w, wv_err_t *err);
/* "YYYY-MM-DD HH:MM:SS[.fff][Z|+HH[:MM]|-HH[:MM]| UTC]" (or with 'T'); no zone means UTC. */
int coord_parse_time(const char *text, int64_t *ms, wv_err_t *err);
void coord_format_time(int64_t ms, char *out, size_t len);

/* ---- taking one (coord/take.c) ---- */

struct coord_take_opts {
    int timeout_s;         /* how long to wait for every archive to hold its LSN */
    int connect_timeout_s; /* per connection */
    int attempts;          /* new cuts after losing a number to another coordinator */
};

/* Takes one consistent cut of the cluster now and writes it. `repo` is the repository's
 * configuration; its node field is replaced by each node's name. A node that cannot be
 * reached, belongs to another PostgreSQL system than its node record, or whose archive does
 * not hold its LSN in time fails the whole watermark with an error naming it; nothing is
 * written then. */
int coord_watermark_take(const struct coord_cluster *c, const struct repo_config *repo,
                         const struct coord_take_opts *o, struct coord_watermark *out,
                         wv_err_t *err);

/* How far each node's archive was behind the cut that became the watermark, as far as the
 * wait for it can tell without extra work. */
struct coord_node_lag {
    wal_lsn_t lsn; /* the node's LSN in the watermark */
    /* The node's LSN minus what its archive held when the wait first looked, right after the
     * cut: 0 when it held the LSN already; otherwise measured from the start of the segment
     * holding the LSN (archive_command: earlier segments assumed archived, so an LSN at a
     * segment's start reads 0) or from the end of wal-stream's fragments of that segment. */
    uint64_t lag_bytes;
    double wait_s; /* how long the watermark waited until the archive held the LSN */
};
/* coord_watermark_take, and on success lags[i] for every node i of c (in c's order). */
int coord_watermark_take_lags(const struct coord_cluster *c, const struct repo_config *repo,
                              const struct coord_take_opts *o, struct coord_watermark *out,
                              struct coord_node_lag *lags, wv_err_t *err);

/* ---- restore plans (coord/plan.c) ---- */

struct coord_plan_node {
    char name[COORD_NAME_MAX];
    enum coord_role role;
    uint32_t timeline;
    wal_lsn_t lsn;      /* recover up to here: every record that starts before */
    char backup_id[64]; /* "" when the node has no backup for it */
    wal_lsn_t backup_start, backup_stop;
    char problem[WV_ERR_MSG_MAX]; /* "" when restorable */
};

/* The rule: the newest backup on `tli` whose stop LSN is at or before `lsn`; NULL if none.
 * all: oldest first, as catalog_backups returns them. */
const struct manifest_summary *coord_plan_pick(const struct manifest_summary *all, size_t n,
                                               uint32_t tli, wal_lsn_t lsn);
/* One node's plan. With check_wal, also that its archive holds the WAL from the backup's
 * start through the watermark's LSN. What stands in the way goes to out->problem; the return
 * is non-zero only when the repository could not be read. */
int coord_plan_node(repo_t *r, const struct coord_wm_node *wn, bool check_wal,
                    struct coord_plan_node *out, wv_err_t *err);
/* Every node of w (*out has w->count entries, malloc'd). */
int coord_plan(const struct repo_config *repo, const struct coord_watermark *w, bool check_wal,
               struct coord_plan_node **out, wv_err_t *err);
json_t *coord_plan_json(const struct coord_watermark *w, const struct coord_plan_node *plan);
/* For `restore --watermark`: the node of r in watermark spec, planned. WV_EUSAGE when the
 * watermark does not name the node, WV_ENOTFOUND when the node has no backup for it. */
int coord_restore_target(repo_t *r, const char *spec, struct coord_watermark *w,
                         struct coord_plan_node *out, wv_err_t *err);
/* verify: every watermark restorable for every node in it; one line per problem appended to
 * problems. */
int coord_verify_watermarks(const struct repo_config *repo, json_t *problems, size_t *checked,
                            wv_err_t *err);
/* expire --retain-watermarks N: the backups of r's node that the newest N watermarks need
 * (ids appended to keep, a JSON array of strings). */
int coord_watermarks_needs(repo_t *r, int retain, json_t *keep, wv_err_t *err);
/* Removes (or, dry run, lists) watermarks older than the newest `retain`; keys appended to
 * removed. */
int coord_watermarks_prune(repo_t *r, int retain, bool dry_run, json_t *removed, wv_err_t *err);

/* ---- the coordinator (coord/coordinator.c) ---- */

/* What `coordinator` reports on /healthz, /readyz and /metrics; coord_run updates it under
 * lock as rounds end. */
struct coord_status {
    pthread_mutex_t lock;
    double heartbeat_s; /* monotonic: the coordinator's main loop's last turn */
    bool stopping;
    /* watermarks */
    bool wm_attempted, wm_last_ok; /* the newest attempt (success or failure) */
    char wm_error[WV_ERR_MSG_MAX]; /* the newest failure's message */
    bool wm_known;                 /* a watermark was written since the start */
    uint32_t wm_number;
    int64_t wm_time_ms;          /* its time, the coordinator's clock */
    struct coord_node_lag *lags; /* per node (cluster order), of the newest watermark */
    uint64_t wm_ok, wm_failed;
    /* group backups */
    bool gb_attempted, gb_last_ok, gb_running;
    char gb_error[WV_ERR_MSG_MAX];
    int64_t gb_end_ms; /* when the newest successful group backup finished (0: none yet) */
    uint64_t gb_ok, gb_failed;
};
int coord_status_init(struct coord_status *s, size_t nodes, wv_err_t *err);
void coord_status_free(struct coord_status *s);

struct coord_loop_opts {
    double watermark_every_s; /* 0: no watermarks */
    double backup_every_s;    /* 0: no group backups */
    struct coord_take_opts take;
    struct backup_opts backup; /* pg_conninfo and pgdata are each node's */
    bool once;                 /* one group backup, then one watermark, then return */
    volatile sig_atomic_t *stop;
    struct coord_status *status; /* optional: what the rounds did, for /metrics */
};

/* Backs up every mediator and participant in parallel, then, once all of them finished, the
 * sequencer, so the sequencer's newest backup is always the group's newest. A failed node
 * fails the group: the sequencer is not backed up then. */
int coord_group_backup(const struct coord_cluster *c, const struct repo_config *repo,
                       const struct backup_opts *o, wv_err_t *err);
/* Watermarks and group backups on their schedules until *o->stop is set (SIGTERM). Failures
 * of one round are logged and retried at the next; returns 0 after a clean stop. */
int coord_run(const struct coord_cluster *c, const struct repo_config *repo,
              const struct coord_loop_opts *o, wv_err_t *err);

#endif
