#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

void buf_init(buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int buf_reserve(buf_t *b, size_t extra, wv_err_t *err)
{
    if (extra > b->max || b->len > b->max - extra)
        return wv_err_set(err, WV_EFAIL, "buffer limit of %zu bytes exceeded", b->max);
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > b->max / 2 ? b->max : cap * 2;
    uint8_t *p = realloc(b->data, cap ? cap : 1);
    if (!p)
        return wv_err_set(err, WV_EFAIL, "out of memory growing a buffer to %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf_t *b, const void *data, size_t len, wv_err_t *err)
{
    int rc = buf_reserve(b, len, err);
    if (rc)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int buf_append_str(buf_t *b, const char *s, wv_err_t *err)
{
    return buf_append(b, s, strlen(s), err);
}

void buf_reset(buf_t *b)
{
    b->len = 0;
}

void buf_free(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
