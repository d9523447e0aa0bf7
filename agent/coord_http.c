/* The coordinator's HTTP endpoint: its health (the main loop turns), its readiness (the
 * newest watermark attempt succeeded and is recent) and its metrics, all read from the
 * coord_status the loop updates. Nothing here touches the repository or PostgreSQL. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "agent/coord_http.h"
#include "agent/httpd.h"
#include "common/timeutil.h"

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned int healthz(void *ctx, char *why, size_t len)
{
    struct coord_http *h = ctx;
    pthread_mutex_lock(&h->s->lock);
    double age = time_monotonic() - h->s->heartbeat_s;
    pthread_mutex_unlock(&h->s->lock);
    if (age > COORD_STALL_S) {
        snprintf(why, len, "stalled: the coordinator's loop last ran %.1f s ago", age);
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    snprintf(why, len, "ok");
    return MHD_HTTP_OK;
}

/* Lock held. With watermarks off, ready unless the newest group backup failed. */
static bool ready(const struct coord_http *h, char *why, size_t len)
{
    const struct coord_status *s = h->s;
    double every = h->o->watermark_every_s, limit = COORD_READY_PERIODS * every;
    if (s->stopping) {
        snprintf(why, len, "not ready: stopping");
        return false;
    }
    if (every <= 0) {
        if (s->gb_attempted && !s->gb_last_ok) {
            snprintf(why, len, "not ready: the last group backup failed: %s", s->gb_error);
            return false;
        }
        snprintf(why, len, "ready: group backups only (--watermark-every 0)");
        return true;
    }
    if (!s->wm_attempted) {
        snprintf(why, len, "not ready: no watermark taken yet");
        return false;
    }
    if (!s->wm_last_ok) {
        snprintf(why, len, "not ready: the last watermark failed: %s", s->wm_error);
        return false;
    }
    double age = wall_s() - (double)s->wm_time_ms / 1000.0;
    if (age > limit) {
        snprintf(why, len,
                 "not ready: the newest watermark %" PRIu32
                 " is %.1f s old, over %g x --watermark-every (%g s)",
                 s->wm_number, age, COORD_READY_PERIODS, limit);
        return false;
    }
    snprintf(why, len, "ready: watermark %" PRIu32 ", %.1f s old", s->wm_number, age);
    return true;
}

static unsigned int readyz(void *ctx, char *why, size_t len)
{
    struct coord_http *h = ctx;
    pthread_mutex_lock(&h->s->lock);
    bool ok = ready(h, why, len);
    pthread_mutex_unlock(&h->s->lock);
    return ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
}

/* ---- /metrics ---- */

struct out {
    struct httpd_text t;
};

static void gauge_f(struct out *o, const char *name, const char *help, double v)
{
    httpd_metric_family(&o->t, name, "gauge", help);
    httpd_printf(&o->t, "%s %.3f\n", name, v);
}

static void results(struct out *o, const char *name, const char *help, uint64_t ok, uint64_t failed)
{
    httpd_metric_family(&o->t, name, "counter", help);
    httpd_printf(&o->t, "%s{result=\"success\"} %" PRIu64 "\n", name, ok);
    httpd_printf(&o->t, "%s{result=\"failure\"} %" PRIu64 "\n", name, failed);
}

static void watermarks(struct out *o, const struct coord_http *h)
{
    const struct coord_status *s = h->s;
    results(o, "walvault_coordinator_watermarks_total",
            "Watermark attempts of this coordinator by result", s->wm_ok, s->wm_failed);
    if (h->o->watermark_every_s > 0) {
        httpd_metric_family(&o->t, "walvault_coordinator_last_watermark_success", "gauge",
                            "1 when the newest watermark attempt succeeded (0 before any)");
        httpd_printf(&o->t, "walvault_coordinator_last_watermark_success %d\n",
                     s->wm_attempted && s->wm_last_ok ? 1 : 0);
    }
    if (!s->wm_known)
        return;
    httpd_metric_family(&o->t, "walvault_coordinator_last_watermark", "gauge",
                        "Number of the newest watermark this coordinator wrote");
    httpd_printf(&o->t, "walvault_coordinator_last_watermark %" PRIu32 "\n", s->wm_number);
    gauge_f(o, "walvault_coordinator_last_watermark_timestamp_seconds",
            "Time of the newest watermark this coordinator wrote (its cut), Unix time",
            (double)s->wm_time_ms / 1000.0);
    gauge_f(o, "walvault_coordinator_watermark_age_seconds",
            "Seconds since the newest watermark's cut, by the coordinator's clock",
            wall_s() - (double)s->wm_time_ms / 1000.0);
}

static void node_family(struct out *o, const struct coord_http *h, const char *name,
                        const char *help, int kind)
{
    httpd_metric_family(&o->t, name, "gauge", help);
    for (size_t i = 0; i < h->c->count; i++) {
        const struct coord_node *n = &h->c->nodes[i];
        const struct coord_node_lag *g = &h->s->lags[i];
        httpd_printf(&o->t, "%s{node=\"%s\",role=\"%s\"} ", name, n->name,
                     coord_role_name(n->role));
        if (kind == 0)
            httpd_printf(&o->t, "%" PRIu64 "\n", (uint64_t)g->lsn);
        else if (kind == 1)
            httpd_printf(&o->t, "%" PRIu64 "\n", g->lag_bytes);
        else
            httpd_printf(&o->t, "%.3f\n", g->wait_s);
    }
}

static void nodes(struct out *o, const struct coord_http *h)
{
    if (!h->s->wm_known)
        return;
    node_family(o, h, "walvault_coordinator_node_watermark_lsn",
                "The node's LSN (as bytes) in the newest watermark", 0);
    node_family(o, h, "walvault_coordinator_node_archive_lag_bytes",
                "At the newest watermark's cut: the node's LSN minus what its archive held when "
                "the coordinator first looked (0 when held already). Measured from the start of "
                "the WAL segment holding the LSN (archive_command; earlier segments assumed "
                "archived, so an LSN at a segment's start reads 0) or from the end of "
                "wal-stream's fragments of it. The watermark then waited until the archive held "
                "the LSN: see walvault_coordinator_node_archive_wait_seconds",
                1);
    node_family(o, h, "walvault_coordinator_node_archive_wait_seconds",
                "How long the newest watermark waited after its cut until the node's archive "
                "held its LSN",
                2);
}

static void group_backups(struct out *o, const struct coord_http *h)
{
    const struct coord_status *s = h->s;
    results(o, "walvault_coordinator_group_backups_total",
            "Ordered group backups (mediators and participants, then the sequencer) by result",
            s->gb_ok, s->gb_failed);
    httpd_metric_family(&o->t, "walvault_coordinator_group_backup_running", "gauge",
                        "1 while a group backup runs");
    httpd_printf(&o->t, "walvault_coordinator_group_backup_running %d\n", s->gb_running ? 1 : 0);
    if (s->gb_end_ms)
        gauge_f(o, "walvault_coordinator_last_group_backup_timestamp_seconds",
                "When the newest successful group backup finished, Unix time",
                (double)s->gb_end_ms / 1000.0);
}

size_t coord_metrics_render(struct coord_http *h, char *out, size_t len)
{
    struct out o = {.t = {.p = out, .cap = len}};
    out[0] = '\0';
    pthread_mutex_lock(&h->s->lock);
    watermarks(&o, h);
    nodes(&o, h);
    group_backups(&o, h);
    pthread_mutex_unlock(&h->s->lock);
    return o.t.n;
}

static size_t metrics(void *ctx, char *out, size_t len)
{
    return coord_metrics_render(ctx, out, len);
}

int coord_http_start(const char *listen, struct coord_http *h, void **server, wv_err_t *err)
{
    struct httpd_routes routes = {
        .ctx = h, .healthz = healthz, .readyz = readyz, .metrics = metrics};
    return httpd_start(listen, &routes, server, err);
}
