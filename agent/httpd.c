/* The shared HTTP endpoint (see httpd.h): request routing, replies and --listen parsing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "agent/httpd.h"
#include "common/log.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define PROMETHEUS_TEXT "text/plain; version=0.0.4; charset=utf-8"

struct httpd {
    struct MHD_Daemon *mhd;
    struct httpd_routes routes;
};

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

static enum MHD_Result reply_line(struct MHD_Connection *c, unsigned int status, const char *line)
{
    char body[HTTPD_WHY_MAX + 2];
    int n = snprintf(body, sizeof body - 1, "%s", line);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body - 1 ? (size_t)n : sizeof body - 2;
    body[len++] = '\n';
    return reply(c, status, TEXT_PLAIN, body, len);
}

static enum MHD_Result probe(struct MHD_Connection *c, const struct httpd_routes *r,
                             unsigned int (*fn)(void *, char *, size_t))
{
    char why[HTTPD_WHY_MAX] = "";
    unsigned int status = fn(r->ctx, why, sizeof why);
    return reply_line(c, status, why);
}

static enum MHD_Result metrics(struct MHD_Connection *c, const struct httpd_routes *r)
{
    char *body = malloc(HTTPD_METRICS_MAX);
    if (!body)
        return reply_line(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    body[0] = '\0';
    size_t n = r->metrics(r->ctx, body, HTTPD_METRICS_MAX);
    enum MHD_Result rc =
        reply(c, MHD_HTTP_OK, PROMETHEUS_TEXT, body, n < HTTPD_METRICS_MAX ? n : 0);
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
    const struct httpd *h = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_line(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD");
    if (strcmp(url, "/healthz") == 0)
        return probe(c, &h->routes, h->routes.healthz);
    if (strcmp(url, "/readyz") == 0)
        return probe(c, &h->routes, h->routes.readyz);
    if (strcmp(url, "/metrics") == 0)
        return metrics(c, &h->routes);
    return reply_line(c, MHD_HTTP_NOT_FOUND, "not found: try /healthz, /readyz or /metrics");
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

int httpd_check_listen(const char *listen, wv_err_t *err)
{
    struct sockaddr_storage ss;
    bool v6;
    uint16_t port;
    return listen_off(listen) ? 0 : parse_listen(listen, &ss, &v6, &port, err);
}

int httpd_start(const char *listen, const struct httpd_routes *routes, void **out, wv_err_t *err)
{
    *out = NULL;
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
    struct httpd *h = calloc(1, sizeof *h);
    if (!h)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    h->routes = *routes;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    /* The logger comes first, or MHD prints what comes before it in its own format. */
    h->mhd = MHD_start_daemon(flags | (v6 ? MHD_USE_IPv6 : 0), port, NULL, NULL, on_request, h,
                              MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 64u,
                              MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!h->mhd) {
        free(h);
        return wv_err_set(err, WV_EFAIL,
                          "cannot listen on %s for /healthz, /readyz and /metrics (is the port "
                          "taken? choose another with --listen ADDR:PORT)",
                          listen);
    }
    log_info("serving /healthz, /readyz and /metrics on http://%s", listen);
    *out = h;
    return 0;
}

void httpd_stop(void *server)
{
    struct httpd *h = server;
    if (!h)
        return;
    MHD_stop_daemon(h->mhd);
    free(h);
}

void httpd_printf(struct httpd_text *t, const char *fmt, ...)
{
    if (t->n + 1 >= t->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        t->n = t->n + (size_t)k < t->cap ? t->n + (size_t)k : t->cap - 1;
}

void httpd_metric_family(struct httpd_text *t, const char *name, const char *type, const char *help)
{
    httpd_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}
