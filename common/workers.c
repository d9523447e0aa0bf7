#include "common/workers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static _Thread_local int self_index;

int workers_self(void)
{
    return self_index;
}

struct pool {
    workers_item_fn fn;
    void *ctx;
    size_t count;
    atomic_size_t next;
    atomic_int failed;
    pthread_mutex_t lock;
    wv_err_t first;
};

struct thread_arg {
    struct pool *p;
    int index;
};

static void *run_items(void *arg)
{
    struct thread_arg *ta = arg;
    struct pool *p = ta->p;
    self_index = ta->index;
    wv_err_t err = {0};
    for (;;) {
        if (atomic_load(&p->failed))
            break;
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->count)
            break;
        int rc = p->fn(p->ctx, i, &err);
        if (rc) {
            pthread_mutex_lock(&p->lock);
            if (!atomic_load(&p->failed)) {
                p->first = err;
                p->first.code = rc;
                atomic_store(&p->failed, 1);
            }
            pthread_mutex_unlock(&p->lock);
            break;
        }
    }
    return NULL;
}

int workers_run(int threads, size_t count, workers_item_fn fn, void *ctx, wv_err_t *err)
{
    struct pool p = {.fn = fn, .ctx = ctx, .count = count};
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, 0);
    pthread_mutex_init(&p.lock, NULL);
    if (threads < 1)
        threads = 1;
    if ((size_t)threads > count)
        threads = count > 0 ? (int)count : 1;
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    struct thread_arg *args = calloc((size_t)threads, sizeof *args);
    int started = 0;
    for (int t = 1; tids && args && t < threads; t++) {
        args[t] = (struct thread_arg){&p, t};
        if (pthread_create(&tids[t], NULL, run_items, &args[t]) != 0)
            break;
        started = t;
    }
    struct thread_arg own = {&p, 0};
    int saved = self_index;
    run_items(&own); /* the calling thread works too */
    self_index = saved;
    for (int t = 1; t <= started; t++)
        pthread_join(tids[t], NULL);
    free(tids);
    free(args);
    pthread_mutex_destroy(&p.lock);
    if (atomic_load(&p.failed)) {
        if (err)
            *err = p.first;
        return p.first.code ? p.first.code : WV_EFAIL;
    }
    return 0;
}
