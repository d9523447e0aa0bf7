/* The agent's HTTP endpoint: /healthz, /readyz and /metrics on the shared server (httpd.c).
 * Handlers only read the shared state under the lock for a moment; nothing here touches the
 * repository or PostgreSQL, so a slow store never makes a probe time out. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <microhttpd.h>

#include "agent/daemon_internal.h"
#include "agent/httpd.h"
#include "common/timeutil.h"

/* Alive: the control loop turned recently and nothing fatal happened. */
static unsigned int healthz(void *ctx, char *why, size_t len)
{
    struct agent *a = ctx;
    int64_t age = agent_monotonic_ms() - atomic_load(&a->heartbeat_ms);
    pthread_mutex_lock(&a->lock);
    bool failed = a->failed;
    pthread_mutex_unlock(&a->lock);
    if (failed) {
        snprintf(why, len, "failed");
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    if (age > AGENT_STALL_MS) {
        snprintf(why, len, "stalled: the agent's loop last ran %" PRId64 " ms ago", age);
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    snprintf(why, len, "ok");
    return MHD_HTTP_OK;
}

/* Lock held. 0 when ready; otherwise why not, in why. */
static int not_ready_streaming(struct agent *a, char *why, size_t len)
{
    uint64_t received = atomic_load(&a->stats.received_lsn);
    uint64_t archived = atomic_load(&a->stats.archived_lsn);
    uint64_t bytes = received > archived ? received - archived : 0;
    double secs = lag_seconds(&a->lag, time_monotonic(), received, archived);
    if (!atomic_load(&a->stats.streaming))
        snprintf(why, len, "not streaming: connecting to PostgreSQL or retrying");
    else if (bytes > a->opts.max_lag_bytes)
        snprintf(why, len, "archive lag %" PRIu64 " bytes is over --max-lag-bytes %" PRIu64, bytes,
                 a->opts.max_lag_bytes);
    else if (secs > a->opts.max_lag_s)
        snprintf(why, len, "archive lag %.1f s is over --max-lag-seconds %g", secs,
                 a->opts.max_lag_s);
    else {
        snprintf(why, len, "ready: streaming, archive lag %" PRIu64 " bytes, %.1f s", bytes, secs);
        return 0;
    }
    return -1;
}

static unsigned int readyz(void *ctx, char *why, size_t len)
{
    struct agent *a = ctx;
    int rc = -1;
    pthread_mutex_lock(&a->lock);
    if (a->stop || a->failed)
        snprintf(why, len, "not ready: %s", a->failed ? a->failure : "stopping");
    else if (!a->lease_valid)
        snprintf(why, len, "not ready: the agent lease is not renewed");
    else if (a->opts.streaming)
        rc = not_ready_streaming(a, why, len);
    else if (a->last.known && !a->last.success)
        snprintf(why, len, "not ready: the last backup failed");
    else {
        snprintf(why, len, "ready: WAL archived by archive_command; last backup %s",
                 a->last.known ? a->last.id : "none yet");
        rc = 0;
    }
    pthread_mutex_unlock(&a->lock);
    return rc == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
}

static size_t metrics(void *ctx, char *out, size_t len)
{
    struct agent *a = ctx;
    pthread_mutex_lock(&a->lock);
    int n = agent_metrics_render(a, out, len);
    pthread_mutex_unlock(&a->lock);
    return n < 0 ? 0 : (size_t)n;
}

int agent_http_check_listen(const char *listen, wv_err_t *err)
{
    return httpd_check_listen(listen, err);
}

int agent_http_start(struct agent *a, wv_err_t *err)
{
    struct httpd_routes routes = {
        .ctx = a, .healthz = healthz, .readyz = readyz, .metrics = metrics};
    return httpd_start(a->opts.listen, &routes, &a->http, err);
}

void agent_http_stop(struct agent *a)
{
    httpd_stop(a->http);
    a->http = NULL;
}
