#include "agent/progress.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/timeutil.h"

struct progress_display {
    pthread_mutex_t lock;
    double started;
    double last_draw;
    int drawn;
};

struct progress_display *progress_display_new(void)
{
    if (!isatty(STDERR_FILENO))
        return NULL;
    struct progress_display *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    pthread_mutex_init(&d->lock, NULL);
    d->started = time_monotonic();
    return d;
}

static void human(double bytes, char *out, size_t len)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(out, len, "%.1f %s", bytes, units[u]);
}

static void draw(void *ctx, const char *what, uint64_t done, uint64_t total)
{
    struct progress_display *d = ctx;
    double now = time_monotonic();
    pthread_mutex_lock(&d->lock);
    if (now - d->last_draw >= 0.2 || done == total) {
        d->last_draw = now;
        double elapsed = now - d->started;
        double rate = elapsed > 0 ? (double)done / elapsed : 0;
        char a[32], b[32], r[32];
        human((double)done, a, sizeof a);
        human((double)total, b, sizeof b);
        human(rate, r, sizeof r);
        double left = rate > 0 && total > done ? (double)(total - done) / rate : 0;
        fprintf(stderr, "\r\033[K%s: %s / %s (%3.0f%%), %s/s, %.0f s left", what, a, b,
                total ? 100.0 * (double)done / (double)total : 100.0, r, left);
        fflush(stderr);
        d->drawn = 1;
    }
    pthread_mutex_unlock(&d->lock);
}

struct progress_sink progress_display_sink(struct progress_display *d)
{
    struct progress_sink s = {d ? draw : NULL, d};
    return s;
}

void progress_display_free(struct progress_display *d)
{
    if (!d)
        return;
    if (d->drawn)
        fprintf(stderr, "\r\033[K");
    pthread_mutex_destroy(&d->lock);
    free(d);
}
