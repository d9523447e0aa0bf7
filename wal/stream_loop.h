/* The state of one wal-stream run, shared by stream.c (the copy loop, reconnects, shutdown)
 * and stream_start.c (connecting and choosing where to start). */
#ifndef WALVAULT_WAL_STREAM_LOOP_H
#define WALVAULT_WAL_STREAM_LOOP_H

#include <poll.h>

#include "wal/stream_internal.h"

#define STREAM_CLEANUP_MAX 16
/* Fragment stores run side by side when stores are slow (an S3 round trip, a slow fsync):
 * what arrives meanwhile need not wait for the running one. When stores are fast, one lane
 * at a time makes fewer, larger fragments for the same commits, which costs less CPU than
 * more stores in parallel (measured: bench/stream.sh). So a further lane only starts once
 * every running store has taken STREAM_LANE_PATIENCE_S. What is reported durable still only
 * grows over bytes stored without a gap. */
#define STREAM_LANES 4
#define STREAM_LANE_PATIENCE_S 0.002
/* Fragments stored beyond one still being stored (or failed); when more arrive, all are
 * forgotten and the next fragment starts again at the durable end, covering them again. */
#define STREAM_AHEAD_MAX 32

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
    bool positioned; /* seg names where the stream stands (after the first start) */
    bool streamed;   /* this session received WAL: after it breaks, retry at once */
    /* Fragments on any free lane; whole segments and history files on lanes[0] alone, once
     * every lane is idle, so they follow the fragments before them. */
    struct stream_store lanes[STREAM_LANES];
    double lane_started[STREAM_LANES]; /* when each lane's running store was handed over */
    struct stream_store janitor;       /* deletes the fragments of segments stored whole */
    struct stream_probe probe;         /* synchronous_standby_names while streaming */
    unsigned probe_seen;
    struct stream_range {
        uint32_t tli;
        uint64_t segno;
        uint32_t start, end;
    } ahead[STREAM_AHEAD_MAX]; /* fragments stored past a gap in what is durable */
    size_t nahead;
    wal_lsn_t durable_lsn; /* the highest LSN durable in the repository: what the server hears */
    wal_lsn_t reported;
    double last_status;
    bool status_now;
    double pending_since; /* when the oldest byte not yet archived arrived; 0: none */
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
void stream_note_durable(struct stream *s, wal_lsn_t lsn);
bool stream_fatal(int rc);
/* Sleeps up to seconds, less when the stream is told to stop. */
void stream_nap(struct stream *s, double seconds);
/* The wait before the next attempt after one of b seconds (0: the first). */
double stream_next_backoff(double b);

/* ---- the store lanes and the janitor (stream_lanes.c) ---- */

int stream_lanes_start(struct stream *s, wv_err_t *err);
void stream_lanes_stop(struct stream *s);
/* Takes in every finished store without waiting; an error only when one failed for good
 * (the others are retried after a backoff). */
int stream_lanes_collect(struct stream *s, wv_err_t *err);
/* Waits for every running store and takes in their outcomes; then nothing is in flight, so
 * the next fragment starts at the durable end. */
int stream_lanes_settle(struct stream *s, wv_err_t *err);
bool stream_lanes_idle(struct stream *s);
/* Deleting a segment's fragments, once the janitor is free (at most STREAM_CLEANUP_MAX
 * queued; more are left for the next start). */
void stream_queue_cleanup(struct stream *s, uint32_t tli, uint64_t segno);
/* A lane free for a fragment, or -1: every lane busy (*wait_s 0), or a free one may take
 * the next fragment in *wait_s seconds (the running stores' patience). */
int stream_lanes_free(struct stream *s, double *wait_s);
void stream_lanes_submit(struct stream *s, int lane, const struct store_job *job);
/* Stores one job now, after every running store, retrying with backoff until it succeeds,
 * fails for good, or the stream is told to stop (then its error). */
int stream_store_now(struct stream *s, const struct store_job *job, wv_err_t *err);
/* Adds the lanes' and the janitor's wake-up descriptors to p; returns how many. */
nfds_t stream_lanes_pollfds(struct stream *s, struct pollfd *p);
/* Hands the oldest queued fragment cleanup to the janitor, and takes in its outcome. */
void stream_janitor_work(struct stream *s);

#endif
