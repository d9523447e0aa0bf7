/* The order of reads that makes a cut consistent, kept apart from libpq so that a unit test
 * can drive it against a simulated cluster. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord.h"

struct task {
    coord_task_fn fn;
    void *ctx;
    size_t index;
    int rc;
    wv_err_t err;
    pthread_t thread;
    bool started;
};

static void *task_main(void *arg)
{
    struct task *t = arg;
    t->rc = t->fn(t->ctx, t->index, &t->err);
    return NULL;
}

/* One thread per item rather than a pool: items are nodes waiting on the network (a few, at
 * most COORD_NODES_MAX), and a slow node must not hold up the others' reads. */
int coord_parallel(size_t count, coord_task_fn fn, void *ctx, size_t *failed, wv_err_t *err)
{
    struct task *tasks = calloc(count ? count : 1, sizeof *tasks);
    if (!tasks)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; i < count; i++) {
        tasks[i] = (struct task){.fn = fn, .ctx = ctx, .index = i};
        if (pthread_create(&tasks[i].thread, NULL, task_main, &tasks[i]) == 0)
            tasks[i].started = true;
        else /* no thread to spare: run it here, still before anything that depends on it */
            task_main(&tasks[i]);
    }
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        if (tasks[i].started)
            pthread_join(tasks[i].thread, NULL);
        if (tasks[i].rc && rc == 0) {
            rc = tasks[i].rc;
            *err = tasks[i].err;
            if (failed)
                *failed = i;
        }
    }
    free(tasks);
    return rc;
}

struct cut_ctx {
    coord_read_fn read;
    void *ctx;
    wal_lsn_t *lsns;
    size_t *others; /* node indexes of the mediators and participants */
};

static int read_other(void *arg, size_t i, wv_err_t *err)
{
    struct cut_ctx *x = arg;
    size_t node = x->others[i];
    return x->read(x->ctx, node, &x->lsns[node], err);
}

int coord_cut_read(const struct coord_cluster *c, coord_read_fn read, void *ctx, wal_lsn_t *lsns,
                   wv_err_t *err)
{
    struct cut_ctx x = {.read = read, .ctx = ctx, .lsns = lsns};
    x.others = calloc(c->count ? c->count : 1, sizeof *x.others);
    if (!x.others)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < c->count; i++)
        if (i != c->sequencer)
            x.others[n++] = i;
    int rc = coord_parallel(n, read_other, &x, NULL, err);
    free(x.others);
    /* The joins above are the barrier: every other read has returned before this one
     * starts, which is what the consistency argument needs. */
    if (rc == 0)
        rc = read(ctx, c->sequencer, &lsns[c->sequencer], err);
    return rc;
}
