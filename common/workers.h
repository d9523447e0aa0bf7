/* Runs count independent items on up to `threads` threads. Items are taken in order; after
 * the first failure no new item starts, and that failure is returned. */
#ifndef WALVAULT_COMMON_WORKERS_H
#define WALVAULT_COMMON_WORKERS_H

#include <stddef.h>

#include "common/err.h"

typedef int (*workers_item_fn)(void *ctx, size_t index, wv_err_t *err);

int workers_run(int threads, size_t count, workers_item_fn fn, void *ctx, wv_err_t *err);
/* Inside an item: which of the run's threads (0 .. threads-1) runs it, so items can use
 * per-thread state such as one pack writer per thread. */
int workers_self(void);

#endif
