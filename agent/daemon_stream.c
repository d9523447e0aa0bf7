/* The agent's WAL stream: wal_stream_run on a thread of its own, and the archive lag in
 * seconds derived from its statistics. */
#include <stdio.h>
#include <string.h>

#include "agent/daemon_internal.h"
#include "common/log.h"

void lag_track(struct lag_tracker *l, double now, uint64_t received, uint64_t archived)
{
    while (l->count && l->lsn[l->head] <= archived) { /* archived since: no longer waiting */
        l->head = (l->head + 1) % AGENT_LAG_SAMPLES;
        l->count--;
    }
    if (received <= archived)
        return;
    size_t last = (l->head + l->count + AGENT_LAG_SAMPLES - 1) % AGENT_LAG_SAMPLES;
    if (l->count && l->lsn[last] >= received)
        return;
    if (l->count == AGENT_LAG_SAMPLES) {
        /* Full: the oldest entry dates the lag, so drop the one after it instead. */
        size_t second = (l->head + 1) % AGENT_LAG_SAMPLES;
        l->t[second] = l->t[l->head];
        l->lsn[second] = l->lsn[l->head];
        l->head = second;
        l->count--;
    }
    size_t at = (l->head + l->count) % AGENT_LAG_SAMPLES;
    l->t[at] = now;
    l->lsn[at] = received;
    l->count++;
}

/* How long the oldest received byte not yet archived has waited: since the first sample
 * that saw WAL beyond what is archived now. Bytes newer than every sample count as 0. */
double lag_seconds(const struct lag_tracker *l, double now, uint64_t received, uint64_t archived)
{
    if (received <= archived)
        return 0;
    for (size_t i = 0; i < l->count; i++) {
        size_t at = (l->head + i) % AGENT_LAG_SAMPLES;
        if (l->lsn[at] > archived)
            return now > l->t[at] ? now - l->t[at] : 0;
    }
    return 0;
}

static void *stream_main(void *arg)
{
    struct agent *a = arg;
    const struct config *cfg = &a->boot;
    struct wal_stream_opts o = {.conninfo = config_get(cfg, OPT_PG),
                                .slot = config_get(cfg, OPT_SLOT),
                                .application_name = config_get(cfg, OPT_APPLICATION_NAME),
                                .stop = &a->stream_stop,
                                .stats = &a->stats};
    wv_err_t err = {0};
    int rc = config_duration(cfg, OPT_SYNC_INTERVAL, 0.001, 3600, &o.sync_interval_s, &err);
    if (rc == 0)
        rc = wal_stream_run(a->repo, &o, &err);
    if (rc != 0)
        agent_fail(a, err.msg);
    else if (!a->stream_stop)
        agent_fail(a, "the WAL stream ended without being asked to");
    return NULL;
}

int agent_stream_start(struct agent *a, wv_err_t *err)
{
    double interval;
    int rc = config_duration(&a->boot, OPT_SYNC_INTERVAL, 0.001, 3600, &interval, err);
    if (rc)
        return rc;
    rc = pthread_create(&a->stream_thread, NULL, stream_main, a);
    if (rc != 0)
        return wv_err_set(err, WV_EFAIL, "cannot start the WAL stream thread: %s", strerror(rc));
    a->stream_started = true;
    return 0;
}

/* The stream stores what it received, reports it to the server and returns. */
void agent_stream_stop(struct agent *a)
{
    a->stream_stop = 1;
    if (a->stream_started)
        pthread_join(a->stream_thread, NULL);
    a->stream_started = false;
}
