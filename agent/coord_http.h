/* The coordinator's /healthz, /readyz and /metrics, on the shared HTTP server (httpd.h).
 * Inside agent/ only. */
#ifndef WALVAULT_AGENT_COORD_HTTP_H
#define WALVAULT_AGENT_COORD_HTTP_H

#include "coord/coord.h"

struct coord_http {
    const struct coord_cluster *c;
    const struct coord_loop_opts *o;
    struct coord_status *s;
};

/* /healthz fails when the coordinator's main loop has not turned for this long. */
#define COORD_STALL_S 10.0
/* /readyz fails when the newest watermark is older than this many --watermark-every. */
#define COORD_READY_PERIODS 3.0

/* h must outlive the server; *server is NULL with --listen off. */
int coord_http_start(const char *listen, struct coord_http *h, void **server, wv_err_t *err);
/* Prometheus text of h into out; returns its length. */
size_t coord_metrics_render(struct coord_http *h, char *out, size_t len);

#endif
