/* Sealed objects over the store: seal_writer frames go straight into a streaming put, and a
 * streaming get feeds seal_reader, so no object is ever held whole unless asked for. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fsutil.h"
#include "common/workers.h"

#include "repo/internal.h"

struct repo_sealed_writer {
    storage_writer_t *sw;
    seal_writer_t *seal;
};

static int to_store(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return storage_put_write(ctx, data, len, err);
}

int repo_sealed_begin(repo_t *r, const char *key, bool if_absent, repo_sealed_writer_t **out,
                      wv_err_t *err)
{
    repo_sealed_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    int rc = storage_put_begin(r->st, key, if_absent, &w->sw, err);
    if (rc == 0)
        rc = seal_writer_new(r->keys, key, to_store, w->sw, &w->seal, err);
    if (rc) {
        repo_sealed_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

int repo_sealed_write(repo_sealed_writer_t *w, const void *data, size_t len, wv_err_t *err)
{
    return seal_writer_write(w->seal, data, len, err);
}

int repo_sealed_commit(repo_sealed_writer_t *w, wv_err_t *err)
{
    int rc = seal_writer_finish(w->seal, err);
    if (rc) {
        repo_sealed_abort(w);
        return rc;
    }
    seal_writer_free(w->seal);
    rc = storage_put_commit(w->sw, err);
    free(w);
    return rc;
}

void repo_sealed_abort(repo_sealed_writer_t *w)
{
    if (!w)
        return;
    if (w->seal)
        seal_writer_free(w->seal);
    if (w->sw)
        storage_put_abort(w->sw);
    free(w);
}

int repo_put_sealed(repo_t *r, const char *key, const void *data, size_t len, bool if_absent,
                    wv_err_t *err)
{
    repo_sealed_writer_t *w = NULL;
    int rc = repo_sealed_begin(r, key, if_absent, &w, err);
    if (rc)
        return rc;
    if ((rc = repo_sealed_write(w, data, len, err)) != 0) {
        repo_sealed_abort(w);
        return rc;
    }
    return repo_sealed_commit(w, err);
}

static int to_opener(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return seal_reader_feed(ctx, data, len, err);
}

int repo_get_sealed_stream(repo_t *r, const char *key, seal_sink_fn sink, void *ctx, wv_err_t *err)
{
    seal_reader_t *reader;
    int rc = seal_reader_new(r->keys, key, sink, ctx, &reader, err);
    if (rc)
        return rc;
    rc = storage_get_stream(r->st, key, to_opener, reader, err);
    if (rc == 0)
        rc = seal_reader_finish(reader, err);
    seal_reader_free(reader);
    return rc;
}

static int to_buffer(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return buf_append(ctx, data, len, err);
}

int repo_get_sealed(repo_t *r, const char *key, buf_t *out, size_t max, wv_err_t *err)
{
    buf_init(out, max);
    int rc = repo_get_sealed_stream(r, key, to_buffer, out, err);
    if (rc)
        buf_free(out);
    return rc;
}

int repo_put_json(repo_t *r, const char *key, json_t *doc, bool if_absent, wv_err_t *err)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return wv_err_set(err, WV_EFAIL, "cannot encode %s as JSON", key);
    int rc = repo_put_sealed(r, key, text, strlen(text), if_absent, err);
    free(text);
    return rc;
}

int repo_get_json(repo_t *r, const char *key, json_t **out, wv_err_t *err)
{
    buf_t text;
    int rc = repo_get_sealed(r, key, &text, REPO_JSON_MAX, err);
    if (rc)
        return rc;
    json_error_t jerr;
    *out = json_loadb((const char *)text.data, text.len, 0, &jerr);
    buf_free(&text);
    if (!*out)
        return wv_err_set(err, WV_ECORRUPT, "object %s: authenticated but not valid JSON: %s", key,
                          jerr.text);
    return 0;
}

/* ---- sealing a file's frames in parallel ---- */

struct frame_batch {
    repo_t *r;
    const char *key;
    uint8_t *plain; /* count chunks of SEAL_CHUNK_MAX */
    size_t *plain_len;
    buf_t *sealed;
    uint64_t first; /* frame index of chunk 0 */
    uint64_t last;  /* index of the object's final frame */
};

static int seal_batch_item(void *ctx, size_t i, wv_err_t *err)
{
    struct frame_batch *b = ctx;
    buf_reset(&b->sealed[i]);
    uint64_t index = b->first + i;
    return seal_frame(b->r->keys, b->key, index, index == b->last, b->plain + i * SEAL_CHUNK_MAX,
                      b->plain_len[i], &b->sealed[i], err);
}

/* Reads up to count chunks; returns how many (the last may be short), or -1. */
static long read_chunks(int fd, struct frame_batch *b, size_t count)
{
    size_t n = 0;
    for (; n < count; n++) {
        ssize_t got = fs_read_full(fd, b->plain + n * SEAL_CHUNK_MAX, SEAL_CHUNK_MAX);
        if (got < 0)
            return -1;
        b->plain_len[n] = (size_t)got;
        if ((size_t)got < SEAL_CHUNK_MAX) {
            n += got > 0 || b->first + n == b->last;
            break;
        }
    }
    return (long)n;
}

static int put_batches(storage_writer_t *sw, int fd, struct frame_batch *b, size_t batch, int jobs,
                       wv_err_t *err)
{
    for (;;) {
        long n = read_chunks(fd, b, batch);
        if (n < 0)
            return wv_err_errno(err, WV_EFAIL, "cannot read the file for %s", b->key);
        if (n == 0)
            return 0;
        int rc = workers_run(jobs, (size_t)n, seal_batch_item, b, err);
        for (long i = 0; rc == 0 && i < n; i++)
            rc = storage_put_write(sw, b->sealed[i].data, b->sealed[i].len, err);
        if (rc)
            return rc;
        b->first += (uint64_t)n;
        if (b->first > b->last)
            return 0;
    }
}

int repo_put_sealed_fd(repo_t *r, const char *key, int fd, bool if_absent, int jobs, wv_err_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return wv_err_errno(err, WV_EFAIL, "cannot stat the file for %s", key);
    size_t batch = (size_t)(jobs < 1 ? 1 : jobs) * 2;
    struct frame_batch b = {.r = r, .key = key};
    uint64_t chunks = ((uint64_t)st.st_size + SEAL_CHUNK_MAX - 1) / SEAL_CHUNK_MAX;
    /* A file that ends on a chunk boundary gets its final flag on the last full chunk; an
     * empty file is one empty final frame. */
    b.last = chunks ? chunks - 1 : 0;
    b.plain = malloc(batch * SEAL_CHUNK_MAX);
    b.plain_len = calloc(batch, sizeof *b.plain_len);
    b.sealed = calloc(batch, sizeof *b.sealed);
    storage_writer_t *sw = NULL;
    int rc = b.plain && b.plain_len && b.sealed ? storage_put_begin(r->st, key, if_absent, &sw, err)
                                                : wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; b.sealed && i < batch; i++)
        buf_init(&b.sealed[i], SEAL_CHUNK_MAX + SEAL_FRAME_OVERHEAD + 1024);
    buf_t header;
    buf_init(&header, 64);
    if (rc == 0 && (rc = seal_header(&header, err)) == 0)
        rc = storage_put_write(sw, header.data, header.len, err);
    if (rc == 0)
        rc = put_batches(sw, fd, &b, batch, jobs, err);
    if (rc == 0 && b.first <= b.last)
        rc = wv_err_set(err, WV_EFAIL, "the file for %s shrank while it was read", key);
    if (rc == 0)
        rc = storage_put_commit(sw, err);
    else if (sw)
        storage_put_abort(sw);
    buf_free(&header);
    for (size_t i = 0; b.sealed && i < batch; i++)
        buf_free(&b.sealed[i]);
    free(b.plain);
    free(b.plain_len);
    free(b.sealed);
    return rc;
}
