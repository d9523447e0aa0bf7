/* Growable byte buffer with a maximum size fixed at creation, so no input can grow memory
 * without bound. */
#ifndef WALVAULT_COMMON_BUF_H
#define WALVAULT_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;
} buf_t;

void buf_init(buf_t *b, size_t max);
/* Ensures room for `extra` more bytes; fails with WV_EFAIL past the maximum. */
int buf_reserve(buf_t *b, size_t extra, wv_err_t *err);
int buf_append(buf_t *b, const void *data, size_t len, wv_err_t *err);
int buf_append_str(buf_t *b, const char *s, wv_err_t *err);
void buf_reset(buf_t *b);
void buf_free(buf_t *b);

#endif
