/* The stores of wal-stream: fragments on several lanes at once, whole segments and history
 * files alone and in order, deletions of stored segments' fragments on the janitor; and what
 * their outcomes mean for what is durable. Fragments may finish out of order: the durable
 * end only moves over bytes stored without a gap, so the server never hears of a byte whose
 * predecessors could still be lost. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "wal/stream_loop.h"

int stream_lanes_start(struct stream *s, wv_err_t *err)
{
    int rc = 0;
    size_t started = 0;
    while (rc == 0 && started < STREAM_LANES)
        if ((rc = stream_store_start(&s->lanes[started], s->r, s->stats, err)) == 0)
            started++;
    if (rc == 0 && (rc = stream_store_start(&s->janitor, s->r, NULL, err)) == 0)
        return 0;
    while (started > 0)
        stream_store_stop(&s->lanes[--started]);
    return rc;
}

void stream_lanes_stop(struct stream *s)
{
    stream_store_stop(&s->janitor);
    for (size_t i = 0; i < STREAM_LANES; i++)
        stream_store_stop(&s->lanes[i]);
}

bool stream_lanes_idle(struct stream *s)
{
    for (size_t i = 0; i < STREAM_LANES; i++)
        if (!stream_store_idle(&s->lanes[i]))
            return false;
    return true;
}

int stream_lanes_free(struct stream *s, double *wait_s)
{
    double now = time_monotonic(), newest = 0;
    int free_lane = -1;
    for (int i = 0; i < STREAM_LANES; i++) {
        if (stream_store_idle(&s->lanes[i])) {
            free_lane = free_lane < 0 ? i : free_lane;
        } else if (s->lane_started[i] > newest) {
            newest = s->lane_started[i];
        }
    }
    double wait = newest + STREAM_LANE_PATIENCE_S - now;
    *wait_s = free_lane >= 0 && wait > 0 ? wait : 0;
    return *wait_s > 0 ? -1 : free_lane;
}

void stream_lanes_submit(struct stream *s, int lane, const struct store_job *job)
{
    s->lane_started[lane] = time_monotonic();
    if (job->kind == STORE_FRAGMENT && job->tli == s->seg.tli && job->segno == s->seg.segno)
        s->seg.submitted = job->end;
    stream_store_submit(&s->lanes[lane], job);
}

nfds_t stream_lanes_pollfds(struct stream *s, struct pollfd *p)
{
    for (size_t i = 0; i < STREAM_LANES; i++)
        p[i] = (struct pollfd){.fd = stream_store_fd(&s->lanes[i]), .events = POLLIN};
    p[STREAM_LANES] = (struct pollfd){.fd = stream_store_fd(&s->janitor), .events = POLLIN};
    return STREAM_LANES + 1;
}

/* ---- outcomes ---- */

static void describe_job(const struct store_job *j, char *out, size_t len)
{
    char name[WAL_NAME_MAX];
    if (j->kind == STORE_FRAGMENT)
        wal_fragment_name(j->tli, j->segno, j->seg_size, j->start, j->end, name);
    else if (j->kind == STORE_HISTORY)
        wal_history_name(j->tli, name);
    else
        wal_segment_name(j->tli, j->segno, j->seg_size, name);
    snprintf(out, len, "%s", name);
}

static void forget_ahead(struct stream *s, size_t i)
{
    s->ahead[i] = s->ahead[--s->nahead];
}

/* Moves the durable end over every stored fragment that starts at or before it. */
static void advance_durable(struct stream *s)
{
    struct stream_seg *g = &s->seg;
    bool moved = true;
    while (moved) {
        moved = false;
        for (size_t i = 0; i < s->nahead;) {
            const struct stream_range *a = &s->ahead[i];
            if (a->tli != g->tli || a->segno != g->segno || a->end <= g->durable) {
                forget_ahead(s, i);
            } else if (a->start <= g->durable) {
                g->durable = a->end;
                forget_ahead(s, i);
                moved = true;
            } else {
                i++;
            }
        }
    }
    if (g->submitted < g->durable)
        g->submitted = g->durable;
    stream_note_durable(s, stream_seg_start(g) + g->durable);
}

void stream_queue_cleanup(struct stream *s, uint32_t tli, uint64_t segno)
{
    if (s->ncleanup == STREAM_CLEANUP_MAX) /* left for the next start to find */
        return;
    s->cleanup[s->ncleanup].tli = tli;
    s->cleanup[s->ncleanup].segno = segno;
    s->ncleanup++;
}

static void stored(struct stream *s, const struct store_job *j)
{
    struct stream_seg *g = &s->seg;
    bool current = j->tli == g->tli && j->segno == g->segno;
    s->store_backoff = 0;
    if (j->kind == STORE_FRAGMENT && current) {
        if (s->nahead < STREAM_AHEAD_MAX) {
            s->ahead[s->nahead++] = (struct stream_range){
                .tli = j->tli, .segno = j->segno, .start = j->start, .end = j->end};
        } else { /* too many past a gap: store them again rather than lose track */
            s->nahead = 0;
            g->submitted = g->durable;
        }
        advance_durable(s);
    } else if (j->kind == STORE_SEGMENT && current) {
        stream_note_durable(s, stream_seg_start(g) + g->seg_size);
        stream_queue_cleanup(s, g->tli, g->segno);
        stream_seg_reset(g, g->tli, g->segno + 1, 0);
        s->nahead = 0;
        s->pending_since = 0;
    }
}

/* A failed fragment's bytes go into the next fragment again, after a backoff; fragments
 * after it that are stored meanwhile are duplicates then, which readers skip. */
static int store_failed(struct stream *s, const struct store_job *j, int rc, wv_err_t *e,
                        wv_err_t *err)
{
    char what[WAL_NAME_MAX + 16];
    describe_job(j, what, sizeof what);
    if (stream_fatal(rc)) {
        *err = *e;
        return rc;
    }
    struct stream_seg *g = &s->seg;
    if (j->kind == STORE_FRAGMENT && j->tli == g->tli && j->segno == g->segno &&
        j->start < g->submitted) {
        g->submitted = j->start > g->durable ? j->start : g->durable;
        s->pending_since = time_monotonic() - s->interval; /* due once the backoff is over */
    }
    s->store_backoff = stream_next_backoff(s->store_backoff);
    s->retry_at = time_monotonic() + s->store_backoff;
    log_warn("storing %s failed (retrying in %.1f s): %s", what, s->store_backoff, e->msg);
    return 0;
}

static int take_outcome(struct stream *s, const struct store_job *j, int rc, wv_err_t *e,
                        wv_err_t *err)
{
    if (rc)
        return store_failed(s, j, rc, e, err);
    stored(s, j);
    return 0;
}

/* The outcome of every finished store (wait: of every store, once it finished). */
static int take_outcomes(struct stream *s, bool wait, wv_err_t *err)
{
    int first = 0;
    for (size_t i = 0; i < STREAM_LANES; i++) {
        struct store_job j;
        int rc;
        wv_err_t e = {0};
        bool got = wait ? stream_store_wait(&s->lanes[i], &j, &rc, &e)
                        : stream_store_collect(&s->lanes[i], &j, &rc, &e);
        if (!got)
            continue;
        rc = take_outcome(s, &j, rc, &e, first ? &e : err);
        first = first ? first : rc;
    }
    return first;
}

int stream_lanes_collect(struct stream *s, wv_err_t *err)
{
    return take_outcomes(s, false, err);
}

int stream_lanes_settle(struct stream *s, wv_err_t *err)
{
    int rc = take_outcomes(s, true, err);
    if (s->seg.submitted > s->seg.durable) /* past a gap: nothing stores those bytes now */
        s->seg.submitted = s->seg.durable;
    return rc;
}

int stream_store_now(struct stream *s, const struct store_job *job, wv_err_t *err)
{
    int rc = stream_lanes_settle(s, err);
    while (rc == 0) {
        wv_err_t e = {0};
        stream_lanes_submit(s, 0, job);
        struct store_job done;
        int job_rc;
        stream_store_wait(&s->lanes[0], &done, &job_rc, &e);
        if (job_rc == 0) {
            stored(s, &done);
            return 0;
        }
        if ((rc = store_failed(s, &done, job_rc, &e, err)) != 0)
            return rc;
        if (stream_stopping(s)) {
            *err = e;
            return job_rc;
        }
        stream_nap(s, s->store_backoff);
    }
    return rc;
}

/* ---- the janitor ---- */

/* Deleting a finished segment's fragments runs on a thread of its own: with thousands of
 * fragments it takes long, and fragment stores (commits waiting) must not queue behind it.
 * Leftovers are harmless (a whole segment hides its fragments) and the next start retries. */
void stream_janitor_work(struct stream *s)
{
    struct store_job j;
    int rc;
    wv_err_t e = {0};
    if (stream_store_collect(&s->janitor, &j, &rc, &e) && s->ncleanup > 0) {
        if (rc) {
            char name[WAL_NAME_MAX];
            wal_segment_name(j.tli, j.segno, j.seg_size, name);
            log_warn("deleting the fragments of %s failed: %s", name, e.msg);
        }
        memmove(&s->cleanup[0], &s->cleanup[1], --s->ncleanup * sizeof s->cleanup[0]);
    }
    if (s->ncleanup == 0 || !stream_store_idle(&s->janitor))
        return;
    struct store_job next = {.kind = STORE_CLEANUP,
                             .tli = s->cleanup[0].tli,
                             .segno = s->cleanup[0].segno,
                             .seg_size = s->seg.seg_size};
    stream_store_submit(&s->janitor, &next);
}
