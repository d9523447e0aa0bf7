/* The state of one wal-stream run, shared by stream.c (the copy loop, reconnects, shutdown)
 * and stream_start.c (connecting and choosing where to start). */
#ifndef WALVAULT_WAL_STREAM_LOOP_H
#define WALVAULT_WAL_STREAM_LOOP_H

#include "wal/stream_internal.h"

#define STREAM_CLEANUP_MAX 16

struct stream {
    repo_t *r;
    const struct wal_stream_opts *o;
    struct wal_stream_stats own_stats;
    struct wal_stream_stats *stats;
    char slot[64];
    char app[128];
    double interval;
    struct sconn_identity id;
    PGconn *conn;
    struct stream_seg seg;
    bool positioned;             /* seg names where the stream stands (after the first start) */
    bool streamed;               /* this session received WAL: after it breaks, retry at once */
    struct stream_store store;   /* fragments, segments, history files: in order */
    struct stream_store janitor; /* deletes the fragments of segments stored whole */
    wal_lsn_t durable_lsn; /* the highest LSN durable in the repository: what the server hears */
    wal_lsn_t reported;
    double last_status;
    bool status_now;
    double pending_since; /* when the oldest byte not yet archived arrived; 0: none */
    double submitted_at;  /* when the running store was handed over */
    bool force_store;     /* the server asked for a reply */
    double retry_at;
    double store_backoff;
    char *held; /* an XLogData message not all taken: the segment filled up */
    int held_len;
    size_t held_off;
    struct {
        uint32_t tli;
        uint64_t segno;
    } cleanup[STREAM_CLEANUP_MAX];
    size_t ncleanup;
};

bool stream_stopping(const struct stream *s);
/* Connects, checks the server against the node, places the stream (the first time: from
 * the repository, the server's timeline history and the slot) and starts replication. */
int stream_session_start(struct stream *s, wv_err_t *err);
/* Stores one job now, retrying with backoff until it succeeds, fails for good, or the
 * stream is told to stop (then its error). */
int stream_store_now(struct stream *s, const struct store_job *job, wv_err_t *err);
void stream_note_durable(struct stream *s, wal_lsn_t lsn);
void stream_queue_cleanup(struct stream *s, uint32_t tli, uint64_t segno);
bool stream_fatal(int rc);

#endif
