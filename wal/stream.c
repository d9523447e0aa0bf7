/* The copy loop of wal-stream: read what the server sends into the segment buffer, hand
 * stores to the store thread, report what is durable, follow timeline switches, reconnect
 * after failures, and at the end store what was received before leaving. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "wal/stream_loop.h"

#define STATUS_INTERVAL_S 10.0
#define BACKOFF_FIRST_S 0.5
#define BACKOFF_MAX_S 10.0
#define POLL_MAX_MS 250
#define SHUTDOWN_STORE_S 20.0
#define STREAM_COPY_ENDED 1

bool stream_stopping(const struct stream *s)
{
    return s->o->stop && *s->o->stop;
}

bool stream_fatal(int rc)
{
    return rc == WV_EMISMATCH || rc == WV_EUSAGE;
}

double stream_next_backoff(double b)
{
    return b <= 0 ? BACKOFF_FIRST_S : (b * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : b * 2);
}

/* In short steps so that a stop request is seen at once. */
void stream_nap(struct stream *s, double seconds)
{
    double until = time_monotonic() + seconds;
    while (!stream_stopping(s) && time_monotonic() < until)
        time_sleep_ms(50);
}

void stream_note_durable(struct stream *s, wal_lsn_t lsn)
{
    if (lsn > s->durable_lsn) {
        s->durable_lsn = lsn;
        atomic_store(&s->stats->archived_lsn, lsn);
        s->status_now = true;
    }
}

/* ---- choosing the next store ---- */

static struct store_job job_for_seg(const struct stream *s, enum store_kind kind)
{
    const struct stream_seg *g = &s->seg;
    return (struct store_job){.kind = kind,
                              .tli = g->tli,
                              .segno = g->segno,
                              .seg_size = g->seg_size,
                              .data = g->data,
                              .start = g->submitted,
                              .end = g->received,
                              .system_identifier = s->id.system_identifier};
}

/* Synchronous standbys store as soon as the socket is drained and a lane is free: what
 * arrived while every lane was busy makes one fragment, however many commits it holds.
 * Otherwise a fragment waits for the sync interval, so a busy node makes one store per
 * interval. */
static bool fragment_due(const struct stream *s, double now)
{
    if (!stream_seg_unsubmitted(&s->seg))
        return false;
    return s->id.synchronous || s->force_store || stream_stopping(s) ||
           now - s->pending_since >= s->interval;
}

/* A full segment is stored whole once its fragments are all done; fragments go to any free
 * lane. */
static void schedule(struct stream *s)
{
    double now = time_monotonic();
    if (now < s->retry_at)
        return;
    if (stream_seg_full(&s->seg)) {
        if (stream_lanes_idle(s)) {
            struct store_job j = job_for_seg(s, STORE_SEGMENT);
            stream_lanes_submit(s, 0, &j);
        }
        return;
    }
    double wait;
    int lane = stream_lanes_free(s, &wait);
    if (lane >= 0 && fragment_due(s, now)) {
        struct store_job j = job_for_seg(s, STORE_FRAGMENT);
        stream_lanes_submit(s, lane, &j);
        s->pending_since = 0;
        s->force_store = false;
    }
}

/* ---- messages ---- */

static void drop_held(struct stream *s)
{
    if (s->held)
        PQfreemem(s->held);
    s->held = NULL;
}

/* Feeds the held XLogData message into the segment until it is all taken or the segment is
 * full (then the rest waits for the next segment's buffer). */
static int feed_held(struct stream *s, wv_err_t *err)
{
    struct sconn_msg m;
    int rc = sconn_parse_msg(s->held, s->held_len, &m, err);
    while (rc == 0 && s->held_off < m.len && !stream_seg_full(&s->seg)) {
        bool was_pending = stream_seg_unsubmitted(&s->seg) > 0;
        size_t taken;
        rc = stream_seg_put(&s->seg, m.start + s->held_off, m.data + s->held_off,
                            m.len - s->held_off, &taken, err);
        s->held_off += taken;
        if (!was_pending && stream_seg_unsubmitted(&s->seg))
            s->pending_since = time_monotonic();
    }
    atomic_store(&s->stats->received_lsn, stream_seg_next(&s->seg));
    if (rc || s->held_off == m.len)
        drop_held(s);
    return rc;
}

static int take_message(struct stream *s, char *buf, int len, wv_err_t *err)
{
    struct sconn_msg m;
    int rc = sconn_parse_msg(buf, len, &m, err);
    if (rc == 0 && m.type == 'w') {
        s->streamed = true;
        s->held = buf;
        s->held_len = len;
        s->held_off = 0;
        return feed_held(s, err);
    }
    if (rc == 0 && m.reply_requested) {
        s->status_now = true;
        s->force_store = stream_seg_unsubmitted(&s->seg) > 0;
    }
    PQfreemem(buf);
    return rc;
}

/* Takes every complete message libpq holds. STREAM_COPY_ENDED when the server ended the
 * copy (end of its timeline, or shutting down). */
static int take_messages(struct stream *s, wv_err_t *err)
{
    int rc = s->held ? feed_held(s, err) : 0;
    while (rc == 0 && !s->held && !stream_seg_full(&s->seg)) {
        char *buf = NULL;
        int n = PQgetCopyData(s->conn, &buf, 1);
        if (n == 0)
            break;
        if (n == -1)
            return STREAM_COPY_ENDED;
        if (n < 0) {
            char line[512];
            sconn_error_line(s->conn, line, sizeof line);
            return wv_err_set(err, WV_EFAIL, "replication stream broke: %s", line);
        }
        rc = take_message(s, buf, n, err);
    }
    return rc;
}

static int report(struct stream *s, wv_err_t *err)
{
    double now = time_monotonic();
    if (!s->status_now && s->durable_lsn == s->reported && now - s->last_status < STATUS_INTERVAL_S)
        return 0;
    int rc = sconn_send_status(s->conn, s->durable_lsn, err);
    if (rc == 0) {
        s->reported = s->durable_lsn;
        s->last_status = now;
        s->status_now = false;
    }
    return rc;
}

static double later(double a, double b)
{
    return a > b ? a : b;
}

/* When schedule() would hand over the next store; 0: no store to wait for (a running one
 * wakes the loop when it ends). */
static double next_store_due(struct stream *s, double now)
{
    if (stream_seg_full(&s->seg)) /* stored whole once every lane is idle */
        return stream_lanes_idle(s) ? later(s->retry_at, now) : 0;
    double lane_wait;
    if (!stream_seg_unsubmitted(&s->seg) ||
        (stream_lanes_free(s, &lane_wait) < 0 && lane_wait <= 0))
        return 0;
    double due = now + lane_wait;
    if (!s->id.synchronous)
        due = later(due, s->pending_since + s->interval);
    return later(due, s->retry_at);
}

/* While a store runs its end wakes the loop; otherwise the next fragment, retry or status
 * update is due at a known time. */
static int poll_timeout_ms(struct stream *s)
{
    double now = time_monotonic(), wait = POLL_MAX_MS / 1000.0;
    double status_due = s->last_status + STATUS_INTERVAL_S - now;
    wait = status_due < wait ? status_due : wait;
    double store_due = next_store_due(s, now);
    if (store_due > 0 && store_due - now < wait)
        wait = store_due - now;
    return wait <= 0 ? 0 : (int)(wait * 1000) + 1;
}

/* Waits for the server, the store thread or a deadline. A full segment stops reading until
 * its store is done: the buffer is the only one. */
static int wait_events(struct stream *s, wv_err_t *err)
{
    struct pollfd p[STREAM_LANES + 2];
    nfds_t n = stream_lanes_pollfds(s, p), stores = n;
    if (!stream_seg_full(&s->seg) && !s->held)
        p[n++] = (struct pollfd){.fd = PQsocket(s->conn), .events = POLLIN};
    int rc = poll(p, n, poll_timeout_ms(s));
    if (rc < 0 && errno != EINTR)
        return wv_err_errno(err, WV_EFAIL, "poll failed");
    if (rc > 0 && n > stores && (p[stores].revents & (POLLIN | POLLERR | POLLHUP)) &&
        !PQconsumeInput(s->conn)) {
        char line[512];
        sconn_error_line(s->conn, line, sizeof line);
        return wv_err_set(err, WV_EFAIL, "replication connection lost: %s", line);
    }
    return 0;
}

/* A reload may have named or unnamed the stream since it connected. */
static void follow_synchronous(struct stream *s)
{
    bool synchronous;
    if (!stream_probe_answer(&s->probe, &s->probe_seen, &synchronous) ||
        synchronous == s->id.synchronous)
        return;
    s->id.synchronous = synchronous;
    atomic_store(&s->stats->synchronous, synchronous);
    log_info("synchronous_standby_names %s %s: WAL is now stored %s",
             synchronous ? "now names" : "no longer names", s->app,
             synchronous ? "as it arrives" : "at each sync interval");
}

static int copy_loop(struct stream *s, wv_err_t *err)
{
    int rc = 0;
    while (rc == 0 && !stream_stopping(s)) {
        rc = take_messages(s, err);
        if (rc == 0)
            rc = stream_lanes_collect(s, err);
        if (rc != 0)
            break;
        follow_synchronous(s);
        schedule(s);
        stream_janitor_work(s);
        rc = report(s, err);
        if (rc == 0)
            rc = wait_events(s, err);
    }
    return rc;
}

/* ---- timeline switches ---- */

/* Stores everything received, whole segment or fragment, before the stream moves on. */
static int store_all(struct stream *s, wv_err_t *err)
{
    int rc = stream_lanes_settle(s, err);
    while (rc == 0 && (stream_seg_full(&s->seg) || stream_seg_pending(&s->seg))) {
        struct store_job j =
            job_for_seg(s, stream_seg_full(&s->seg) ? STORE_SEGMENT : STORE_FRAGMENT);
        rc = stream_store_now(s, &j, err);
    }
    return rc;
}

static int archive_history(struct stream *s, uint32_t tli, wv_err_t *err)
{
    char *text;
    size_t len;
    int rc = sconn_timeline_history(s->conn, tli, &text, &len, err);
    if (rc)
        return rc;
    struct store_job j = {
        .kind = STORE_HISTORY, .tli = tli, .data = (const uint8_t *)text, .end = (uint32_t)len};
    rc = stream_store_now(s, &j, err);
    free(text);
    return rc;
}

static int next_timeline(struct stream *s, wv_err_t *err)
{
    uint32_t tli;
    wal_lsn_t pos;
    int rc = sconn_end_copy(s->conn, &tli, &pos, err);
    if (rc == 0 && tli == 0)
        rc = wv_err_set(err, WV_EFAIL, "PostgreSQL ended the replication stream (shutting down?)");
    if (rc == 0)
        rc = store_all(s, err);
    if (rc == 0)
        rc = archive_history(s, tli, err);
    if (rc)
        return rc;
    char at[WAL_LSN_STR_MAX];
    wal_lsn_format(pos, at);
    log_info("timeline %" PRIu32 " ended at %s; streaming timeline %" PRIu32, s->seg.tli, at, tli);
    drop_held(s);
    stream_seg_reset(&s->seg, tli, wal_segno_of(pos, s->seg.seg_size), 0);
    atomic_store(&s->stats->timeline, tli);
    return sconn_start(s->conn, s->slot, tli, stream_seg_start(&s->seg), err);
}

/* ---- sessions, reconnects and the end ---- */

static int session(struct stream *s, wv_err_t *err)
{
    int rc = stream_session_start(s, err);
    while (rc == 0) {
        atomic_store(&s->stats->streaming, true);
        rc = copy_loop(s, err);
        if (rc == STREAM_COPY_ENDED)
            rc = next_timeline(s, err);
        else
            break;
    }
    atomic_store(&s->stats->streaming, false);
    return rc;
}

/* After a broken session the stream resumes from what is durable: bytes received but not
 * stored are asked for again, so none is lost and none reported early. */
static void drop_connection(struct stream *s)
{
    wv_err_t ignored;
    stream_lanes_settle(s, &ignored);
    drop_held(s);
    if (s->seg.received > s->seg.durable)
        s->seg.received = s->seg.durable;
    s->seg.submitted = s->seg.durable;
    s->nahead = 0;
    s->pending_since = 0;
    s->force_store = false;
    PQfinish(s->conn);
    s->conn = NULL;
}

/* Bytes already in this host's socket buffer were received: they are stored too. */
static void take_what_arrived(struct stream *s)
{
    wv_err_t ignored;
    if (s->conn && s->streamed && PQconsumeInput(s->conn))
        take_messages(s, &ignored);
}

static bool unstored(const struct stream *s)
{
    return stream_seg_full(&s->seg) || stream_seg_pending(&s->seg) || s->held;
}

static int finish(struct stream *s, wv_err_t *err)
{
    double deadline = time_monotonic() + SHUTDOWN_STORE_S;
    take_what_arrived(s);
    int rc = stream_lanes_settle(s, err);
    while (rc == 0 && unstored(s) && time_monotonic() < deadline) {
        wv_err_t ignored;
        if (s->held && !stream_seg_full(&s->seg) && feed_held(s, &ignored) != 0)
            break;
        struct store_job j =
            job_for_seg(s, stream_seg_full(&s->seg) ? STORE_SEGMENT : STORE_FRAGMENT);
        stream_lanes_submit(s, 0, &j);
        rc = stream_lanes_settle(s, err);
        if (rc == 0 && s->retry_at > time_monotonic())
            time_sleep_ms((long)((s->retry_at - time_monotonic()) * 1000));
    }
    if (rc == 0 && unstored(s)) {
        char lsn[WAL_LSN_STR_MAX];
        wal_lsn_format(s->durable_lsn, lsn);
        rc = wv_err_set(err, WV_EFAIL,
                        "stopping with WAL after %s not archived: stores kept failing (the "
                        "slot keeps it for the next start)",
                        lsn);
    }
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK) {
        wv_err_t ignored;
        s->status_now = true;
        report(s, &ignored);
        PQputCopyEnd(s->conn, NULL);
        PQflush(s->conn);
    }
    char lsn[WAL_LSN_STR_MAX];
    wal_lsn_format(s->durable_lsn, lsn);
    log_info("wal-stream stopped; WAL archived up to %s (%" PRIuFAST64 " fragments and %" PRIuFAST64
             " segments stored, %" PRIuFAST64 " failed stores retried)",
             lsn, atomic_load(&s->stats->fragments), atomic_load(&s->stats->segments),
             atomic_load(&s->stats->store_errors));
    return rc;
}

static int run(struct stream *s, wv_err_t *err)
{
    double backoff = 0;
    int rc = 0;
    while (!stream_stopping(s)) {
        rc = session(s, err);
        if (rc == 0 || stream_fatal(rc) || stream_stopping(s))
            break;
        backoff = s->streamed ? BACKOFF_FIRST_S : stream_next_backoff(backoff);
        s->streamed = false;
        log_warn("%s; reconnecting in %.1f s", err->msg, backoff);
        drop_connection(s);
        atomic_fetch_add(&s->stats->reconnects, 1);
        stream_nap(s, backoff);
        rc = 0;
    }
    if (!stream_fatal(rc))
        rc = finish(s, err);
    return rc;
}

int wal_stream_run(repo_t *r, const struct wal_stream_opts *o, wv_err_t *err)
{
    struct stream *s = calloc(1, sizeof *s);
    if (!s)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    s->r = r;
    s->o = o;
    s->stats = o->stats ? o->stats : &s->own_stats;
    s->interval = o->sync_interval_s > 0 ? o->sync_interval_s : 1.0;
    snprintf(s->app, sizeof s->app, "%s", o->application_name ? o->application_name : repo_node(r));
    if (o->slot)
        snprintf(s->slot, sizeof s->slot, "%s", o->slot);
    else
        wal_stream_slot_name(repo_node(r), s->slot, sizeof s->slot);
    int rc = stream_lanes_start(s, err);
    if (rc == 0 && (rc = stream_probe_start(&s->probe, o->conninfo, s->app, err)) != 0)
        stream_lanes_stop(s);
    if (rc == 0) {
        rc = run(s, err);
        stream_probe_stop(&s->probe);
        stream_lanes_stop(s);
    }
    drop_held(s);
    PQfinish(s->conn);
    stream_seg_free(&s->seg);
    free(s);
    return rc;
}
