/* The agent's HTTP endpoint (libmicrohttpd, one internal thread): /healthz, /readyz and
 * /metrics. Handlers only read the shared state under the lock for a moment; nothing here
 * touches the repository or PostgreSQL, so a slow store never makes a probe time out. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "agent/daemon_internal.h"
#include "common/log.h"
#include "common/timeutil.h"

#define METRICS_MAX (64 * 1024)
#define TEXT_PLAIN "text/plain; charset=utf-8"
#define PROMETHEUS_TEXT "text/plain; version=0.0.4; charset=utf-8"

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned int status, const char *fmt,
                                  ...) __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned int status, const char *fmt,
                                  ...)
{
    char body[WV_ERR_MSG_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body - 1, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body - 1 ? (size_t)n : sizeof body - 2;
    body[len++] = '\n';
    return reply(c, status, TEXT_PLAIN, body, len);
}

/* Alive: the control loop turned recently and nothing fatal happened. */
static enum MHD_Result healthz(struct agent *a, struct MHD_Connection *c)
{
    int64_t age = agent_monotonic_ms() - atomic_load(&a->heartbeat_ms);
    pthread_mutex_lock(&a->lock);
    bool failed = a->failed;
    pthread_mutex_unlock(&a->lock);
    if (failed)
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "failed");
    if (age > AGENT_STALL_MS)
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "stalled: the agent's loop last ran "
                          "%" PRId64 " ms ago",
                          age);
    return reply_text(c, MHD_HTTP_OK, "ok");
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

static enum MHD_Result readyz(struct agent *a, struct MHD_Connection *c)
{
    char why[WV_ERR_MSG_MAX + 64];
    int rc = -1;
    pthread_mutex_lock(&a->lock);
    if (a->stop || a->failed)
        snprintf(why, sizeof why, "not ready: %s", a->failed ? a->failure : "stopping");
    else if (!a->lease_valid)
        snprintf(why, sizeof why, "not ready: the agent lease is not renewed");
    else if (a->opts.streaming)
        rc = not_ready_streaming(a, why, sizeof why);
    else if (a->last.known && !a->last.success)
        snprintf(why, sizeof why, "not ready: the last backup failed");
    else {
        snprintf(why, sizeof why, "ready: WAL archived by archive_command; last backup %s",
                 a->last.known ? a->last.id : "none yet");
        rc = 0;
    }
    pthread_mutex_unlock(&a->lock);
    return reply_text(c, rc == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "%s", why);
}

static enum MHD_Result metrics(struct agent *a, struct MHD_Connection *c)
{
    char *body = malloc(METRICS_MAX);
    if (!body)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    pthread_mutex_lock(&a->lock);
    int n = agent_metrics_render(a, body, METRICS_MAX);
    pthread_mutex_unlock(&a->lock);
    enum MHD_Result rc = reply(c, MHD_HTTP_OK, PROMETHEUS_TEXT, body, (size_t)n);
    free(body);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)req_cls;
    struct agent *a = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD");
    if (strcmp(url, "/healthz") == 0)
        return healthz(a, c);
    if (strcmp(url, "/readyz") == 0)
        return readyz(a, c);
    if (strcmp(url, "/metrics") == 0)
        return metrics(a, c);
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: try /healthz, /readyz or /metrics");
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_warn("http: %s", line);
}

/* ADDR:PORT, [ADDR6]:PORT or :PORT (every IPv4 address); numeric addresses or localhost. */
static int parse_listen(const char *text, struct sockaddr_storage *ss, bool *v6, uint16_t *port_out,
                        wv_err_t *err)
{
    char host[INET6_ADDRSTRLEN + 8] = "";
    const char *port = NULL, *end = text[0] == '[' ? strchr(text, ']') : strrchr(text, ':');
    *v6 = text[0] == '[';
    if (end && (*v6 ? end[1] == ':' : true) && (size_t)(end - text) < sizeof host) {
        snprintf(host, sizeof host, "%.*s", (int)(end - text - (*v6 ? 1 : 0)), text + *v6);
        port = end + (*v6 ? 2 : 1);
    }
    char *stop;
    long p = port ? strtol(port, &stop, 10) : 0;
    if (!port || !*port || *stop || p < 1 || p > 65535)
        return wv_err_set(err, WV_EUSAGE,
                          "--listen wants ADDR:PORT (127.0.0.1:9187, "
                          "[::1]:9187, :9187) or off, got \"%s\"",
                          text);
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    const char *addr = !host[0] ? "0.0.0.0" : strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    bool ok = *v6 ? inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1
                  : inet_pton(AF_INET, addr, &in4->sin_addr) == 1;
    if (!ok)
        return wv_err_set(err, WV_EUSAGE, "--listen %s: \"%s\" is not a numeric IP address", text,
                          host);
    *port_out = (uint16_t)p;
    if (*v6) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
    } else {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)p);
    }
    return 0;
}

static bool listen_off(const char *listen)
{
    return strcmp(listen, "off") == 0 || strcmp(listen, "none") == 0;
}

int agent_http_check_listen(const char *listen, wv_err_t *err)
{
    struct sockaddr_storage ss;
    bool v6;
    uint16_t port;
    return listen_off(listen) ? 0 : parse_listen(listen, &ss, &v6, &port, err);
}

int agent_http_start(struct agent *a, wv_err_t *err)
{
    const char *listen = a->opts.listen;
    if (listen_off(listen)) {
        log_info("no HTTP endpoint (--listen off)");
        return 0;
    }
    struct sockaddr_storage ss = {0};
    bool v6 = false;
    uint16_t port = 0;
    int rc = parse_listen(listen, &ss, &v6, &port, err);
    if (rc)
        return rc;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    /* The logger comes first, or MHD prints what comes before it in its own format. */
    a->http = MHD_start_daemon(flags | (v6 ? MHD_USE_IPv6 : 0), port, NULL, NULL, on_request, a,
                               MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
                               (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 64u,
                               MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!a->http)
        return wv_err_set(err, WV_EFAIL,
                          "cannot listen on %s for /healthz, /readyz and /metrics (is the port "
                          "taken? choose another with --listen ADDR:PORT)",
                          listen);
    log_info("serving /healthz, /readyz and /metrics on http://%s", listen);
    return 0;
}

void agent_http_stop(struct agent *a)
{
    if (a->http)
        MHD_stop_daemon(a->http);
    a->http = NULL;
}
