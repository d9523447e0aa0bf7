/* What the wal-stream files share: the segment buffer (stream_seg.c), the store thread
 * (stream_store.c), the replication connection (stream_conn.c) and the loop (stream.c). */
#ifndef WALVAULT_WAL_STREAM_INTERNAL_H
#define WALVAULT_WAL_STREAM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "wal/archive.h"
#include "wal/stream.h"

/* ---- the segment being received (stream_seg.c) ----
 *
 * Bytes [0, received) of segment segno are in data; [0, durable) are in the repository,
 * whole or in fragments; [durable, submitted) are being stored. received < durable happens
 * at a start: the stream begins at the segment's start to have every byte for the whole
 * store, while the repository already holds fragments of it. */
struct stream_seg {
    uint8_t *data;
    uint32_t seg_size;
    uint32_t tli;
    uint64_t segno;
    uint32_t received;
    uint32_t durable;
    uint32_t submitted; /* >= durable */
};

int stream_seg_init(struct stream_seg *s, uint32_t seg_size, wv_err_t *err);
void stream_seg_free(struct stream_seg *s);
void stream_seg_reset(struct stream_seg *s, uint32_t tli, uint64_t segno, uint32_t durable);
wal_lsn_t stream_seg_start(const struct stream_seg *s);
/* The LSN of the next byte expected. */
wal_lsn_t stream_seg_next(const struct stream_seg *s);
bool stream_seg_full(const struct stream_seg *s);
/* Bytes not yet in the repository: [durable, received) when received > durable. */
uint32_t stream_seg_pending(const struct stream_seg *s);
/* Bytes no store has been handed yet: [submitted, received) when received > submitted. */
uint32_t stream_seg_unsubmitted(const struct stream_seg *s);
/* Takes the bytes of one XLogData message that start at lsn, up to the segment's end;
 * *taken says how many. Bytes anywhere but at stream_seg_next are a protocol error. */
int stream_seg_put(struct stream_seg *s, wal_lsn_t lsn, const void *data, size_t len, size_t *taken,
                   wv_err_t *err);

/* ---- stores, on their own thread (stream_store.c) ---- */

enum store_kind {
    STORE_FRAGMENT, /* bytes [start, end) of the segment as a fragment */
    STORE_SEGMENT,  /* the whole segment */
    STORE_HISTORY,  /* a timeline history file */
    STORE_CLEANUP,  /* delete the fragments of a segment stored whole */
};

struct store_job {
    enum store_kind kind;
    uint32_t tli;
    uint64_t segno;
    uint32_t seg_size;
    const uint8_t *data;        /* the segment's first byte, or the history file */
    uint32_t start, end;        /* FRAGMENT: the range; HISTORY: end is the length */
    uint64_t system_identifier; /* SEGMENT: what its first page must say */
};

/* Runs one job in the calling thread. Storing what exists already with the same content
 * succeeds; other content is WV_EMISMATCH. */
int stream_store_run(repo_t *r, const struct store_job *job, wv_err_t *err);

struct stream_store {
    repo_t *r;
    struct wal_stream_stats *stats;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct store_job job;
    bool queued, busy, finished, quit;
    int rc; /* of the finished job */
    wv_err_t err;
    int wake[2]; /* a byte is written to wake[1] when a job finishes */
};

int stream_store_start(struct stream_store *st, repo_t *r, struct wal_stream_stats *stats,
                       wv_err_t *err);
void stream_store_stop(struct stream_store *st);
/* Hands a job over; the store must be idle. */
void stream_store_submit(struct stream_store *st, const struct store_job *job);
bool stream_store_idle(struct stream_store *st);
/* The poll()able descriptor that turns readable when a job finished. */
int stream_store_fd(const struct stream_store *st);
/* true when a job finished since the last call: *job is what it was, *rc and *err how it
 * went. */
bool stream_store_collect(struct stream_store *st, struct store_job *job, int *rc, wv_err_t *err);
/* Blocks until the running job (if any) finished; collects it as stream_store_collect. */
bool stream_store_wait(struct stream_store *st, struct store_job *job, int *rc, wv_err_t *err);

/* ---- the replication connection (stream_conn.c) ---- */

struct sconn_identity {
    uint64_t system_identifier;
    uint32_t timeline;
    wal_lsn_t flush_lsn;
    int server_version;
    uint32_t seg_size;
    bool synchronous; /* synchronous_standby_names names our application_name */
};

int sconn_open(const char *conninfo, const char *app, PGconn **out, wv_err_t *err);
int sconn_identify(PGconn *c, const char *app, struct sconn_identity *id, wv_err_t *err);
/* Whether the server's synchronous_standby_names names app (outside the copy stream). */
int sconn_is_synchronous(PGconn *c, const char *app, bool *synchronous, wv_err_t *err);

/* ---- synchronous_standby_names, followed while streaming (stream_probe.c) ----
 *
 * A reload can name or unname the stream at any time, and inside the copy stream no
 * command can ask. A thread asks over a short replication connection of its own (the
 * stream's own pg_hba entry lets it in, and it takes a walsender slot for that moment)
 * every STREAM_PROBE_INTERVAL_S. */
#define STREAM_PROBE_INTERVAL_S 5

struct stream_probe {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    const char *conninfo;
    char app[128];
    bool quit;
    unsigned session; /* sessions started: an answer asked for before one is stale */
    unsigned answers; /* how many times it found out; the loop adopts a new answer */
    bool synchronous;
};

int stream_probe_start(struct stream_probe *p, const char *conninfo, const char *app,
                       wv_err_t *err);
void stream_probe_stop(struct stream_probe *p);
/* A session asked the server itself: answers asked for before now are dropped. */
void stream_probe_new_session(struct stream_probe *p);
/* true with *synchronous when an answer came since *seen (which it updates). */
bool stream_probe_answer(struct stream_probe *p, unsigned *seen, bool *synchronous);
/* Reads the slot, creating it (PHYSICAL RESERVE_WAL) when absent; *restart is 0 when the
 * server cannot say. */
int sconn_slot(PGconn *c, const char *slot, wal_lsn_t *restart, uint32_t *restart_tli,
               wv_err_t *err);
/* The history file of timeline tli (caller frees *text). */
int sconn_timeline_history(PGconn *c, uint32_t tli, char **text, size_t *len, wv_err_t *err);
int sconn_start(PGconn *c, const char *slot, uint32_t tli, wal_lsn_t pos, wv_err_t *err);
/* Standby status update: written = flushed = applied = lsn. */
int sconn_send_status(PGconn *c, wal_lsn_t lsn, wv_err_t *err);
/* After the server ended the copy: our CopyDone, then its answer. *next_tli is 0 when the
 * server ended streaming without a next timeline (it is shutting down). */
int sconn_end_copy(PGconn *c, uint32_t *next_tli, wal_lsn_t *next_pos, wv_err_t *err);
/* One line of libpq's last error. */
void sconn_error_line(PGconn *c, char *out, size_t len);

/* The messages inside the copy stream. */
struct sconn_msg {
    char type;            /* 'w' XLogData, 'k' keepalive */
    wal_lsn_t start;      /* 'w': where data starts */
    const uint8_t *data;  /* 'w' */
    size_t len;           /* 'w' */
    bool reply_requested; /* 'k' */
};
int sconn_parse_msg(const char *buf, int len, struct sconn_msg *m, wv_err_t *err);

#endif
