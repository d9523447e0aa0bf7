/* The segment being received: one buffer of the segment's size, allocated once, so memory
 * stays bounded whatever the write rate; a finished segment is stored whole before the
 * buffer is reused for the next one. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "wal/stream_internal.h"

int stream_seg_init(struct stream_seg *s, uint32_t seg_size, wv_err_t *err)
{
    memset(s, 0, sizeof *s);
    if (!wal_seg_size_valid(seg_size))
        return wv_err_set(err, WV_EFAIL, "invalid WAL segment size %" PRIu32, seg_size);
    s->data = malloc(seg_size);
    if (!s->data)
        return wv_err_set(err, WV_EFAIL, "out of memory for a %" PRIu32 " MiB WAL segment",
                          seg_size >> 20);
    s->seg_size = seg_size;
    return 0;
}

void stream_seg_free(struct stream_seg *s)
{
    free(s->data);
    s->data = NULL;
}

void stream_seg_reset(struct stream_seg *s, uint32_t tli, uint64_t segno, uint32_t durable)
{
    s->tli = tli;
    s->segno = segno;
    s->received = 0;
    s->durable = durable;
    s->submitted = durable;
}

wal_lsn_t stream_seg_start(const struct stream_seg *s)
{
    return wal_segment_start(s->segno, s->seg_size);
}

wal_lsn_t stream_seg_next(const struct stream_seg *s)
{
    return stream_seg_start(s) + s->received;
}

bool stream_seg_full(const struct stream_seg *s)
{
    return s->data && s->received == s->seg_size;
}

uint32_t stream_seg_pending(const struct stream_seg *s)
{
    return s->received > s->durable ? s->received - s->durable : 0;
}

uint32_t stream_seg_unsubmitted(const struct stream_seg *s)
{
    return s->received > s->submitted ? s->received - s->submitted : 0;
}

int stream_seg_put(struct stream_seg *s, wal_lsn_t lsn, const void *data, size_t len, size_t *taken,
                   wv_err_t *err)
{
    *taken = 0;
    if (lsn != stream_seg_next(s)) {
        char got[WAL_LSN_STR_MAX], want[WAL_LSN_STR_MAX];
        wal_lsn_format(lsn, got);
        wal_lsn_format(stream_seg_next(s), want);
        return wv_err_set(err, WV_EFAIL, "PostgreSQL sent WAL at %s, expected %s", got, want);
    }
    size_t room = s->seg_size - s->received;
    size_t n = len < room ? len : room;
    memcpy(s->data + s->received, data, n);
    s->received += (uint32_t)n;
    *taken = n;
    return 0;
}
