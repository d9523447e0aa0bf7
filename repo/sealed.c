/* Sealed objects over the store: seal_writer frames go straight into a streaming put, and a
 * streaming get feeds seal_reader, so no object is ever held whole unless asked for. */
#include <stdlib.h>
#include <string.h>

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

int repo_get_sealed_stream(repo_t *r, const char *key, seal_sink_fn sink, void *ctx,
                           wv_err_t *err)
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
        return wv_err_set(err, WV_ECORRUPT, "object %s: authenticated but not valid JSON: %s",
                          key, jerr.text);
    return 0;
}
