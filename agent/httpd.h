/* A small HTTP endpoint for probes and metrics (libmicrohttpd, one internal thread), shared
 * by the agent and the coordinator: it parses --listen, serves GET/HEAD of /healthz, /readyz
 * and /metrics by calling back into its owner, and stops. The callbacks run on the server's
 * thread; they should only read their owner's state for a moment, never touch the
 * repository or PostgreSQL, so a slow store never makes a probe time out. */
#ifndef WALVAULT_AGENT_HTTPD_H
#define WALVAULT_AGENT_HTTPD_H

#include <stddef.h>

#include "common/err.h"

/* Room for a /metrics body. */
#define HTTPD_METRICS_MAX (64 * 1024)

struct httpd_routes {
    void *ctx;
    /* /healthz and /readyz: one line (no newline) into why; returns the HTTP status (200 when
     * healthy or ready, 503 when not). */
    unsigned int (*healthz)(void *ctx, char *why, size_t len);
    unsigned int (*readyz)(void *ctx, char *why, size_t len);
    /* /metrics: Prometheus text (0.0.4) into out, NUL-terminated; returns its length. */
    size_t (*metrics)(void *ctx, char *out, size_t len);
};

/* Room for a /healthz or /readyz reason. */
#define HTTPD_WHY_MAX (WV_ERR_MSG_MAX + 64)

/* 0 when listen is off, ADDR:PORT, [ADDR6]:PORT or :PORT; WV_EUSAGE otherwise. */
int httpd_check_listen(const char *listen, wv_err_t *err);
/* Serves routes on listen until httpd_stop; *out is NULL (and 0 returned) with --listen off.
 * routes is copied. WV_EFAIL when the address cannot be bound. */
int httpd_start(const char *listen, const struct httpd_routes *routes, void **out, wv_err_t *err);
/* NULL is fine. */
void httpd_stop(void *server);

/* Prometheus text written into a caller's fixed buffer; what does not fit is cut off (the
 * buffers are sized for every metric). */
struct httpd_text {
    char *p;
    size_t cap, n;
};
void httpd_printf(struct httpd_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void httpd_metric_family(struct httpd_text *t, const char *name, const char *type,
                         const char *help);

#endif
