/* The generic object-store layer: picks a backend from the URL, checks every key before a
 * backend sees it, then dispatches through the backend's table of functions. */
#include "storage/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_SCHEME "file://"
#define S3_SCHEME "s3://"

/* ---- keys ---- */

static int bad_key(const char *key, const char *why, wv_err_t *err)
{
    return wv_err_set(err, WV_EUSAGE, "invalid object key \"%s\": %s", key, why);
}

/* Control characters would break one-line messages and file names, so they are refused
 * before the key is ever printed. */
static int check_key_chars(const char *key, wv_err_t *err)
{
    for (size_t i = 0; key[i]; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            return wv_err_set(err, WV_EUSAGE,
                              "invalid object key: control character 0x%02x at byte %zu", c, i);
    }
    return 0;
}

static int check_key_component(const char *key, const char *part, size_t len, wv_err_t *err)
{
    if (len == 0)
        return bad_key(key, "empty path component", err);
    if ((len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.'))
        return bad_key(key, "\".\" and \"..\" components are not allowed", err);
    return 0;
}

int storage_check_key(const char *key, wv_err_t *err)
{
    if (!key || !key[0])
        return wv_err_set(err, WV_EUSAGE, "invalid object key: empty");
    int rc = check_key_chars(key, err);
    if (rc)
        return rc;
    if (key[0] == '/')
        return bad_key(key, "keys are relative and must not start with '/'", err);
    const char *part = key;
    for (;;) {
        const char *slash = strchr(part, '/');
        size_t len = slash ? (size_t)(slash - part) : strlen(part);
        rc = check_key_component(key, part, len, err);
        if (rc || !slash)
            return rc;
        part = slash + 1;
    }
}

/* A list prefix is a plain string prefix: "" lists everything, and its last part may be
 * the start of a name ("nodes/db1/wal/0000"), so only the directory part must be a key. */
static int check_prefix(const char *prefix, wv_err_t *err)
{
    if (!prefix)
        return wv_err_set(err, WV_EUSAGE, "invalid list prefix: missing");
    int rc = check_key_chars(prefix, err);
    if (rc)
        return rc;
    if (prefix[0] == '/')
        return wv_err_set(err, WV_EUSAGE, "invalid list prefix \"%s\": must not start with '/'",
                          prefix);
    const char *last = strrchr(prefix, '/');
    if (!last)
        return 0;
    char dir[4096];
    size_t len = (size_t)(last - prefix);
    if (len >= sizeof dir)
        return wv_err_set(err, WV_EUSAGE, "invalid list prefix \"%.64s...\": too long", prefix);
    memcpy(dir, prefix, len);
    dir[len] = '\0';
    rc = storage_check_key(dir, err);
    return rc ? wv_err_prefix(err, "in list prefix \"%s\"", prefix) : 0;
}

/* ---- opening ---- */

/* Returns a copy of an absolute directory without trailing slashes ("/" stays "/"). */
static char *clean_dir(const char *dir)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    char *out = malloc(len + 1);
    if (out) {
        memcpy(out, dir, len);
        out[len] = '\0';
    }
    return out;
}

/* Maps the URL to a local directory, or explains why it cannot. */
static int file_dir_from_url(const char *url, char **dir, wv_err_t *err)
{
    const char *path = url;
    if (url[0] == '/') {
        /* a plain absolute path, even if it happens to contain "://" */
    } else if (strncmp(url, FILE_SCHEME, strlen(FILE_SCHEME)) == 0) {
        path = url + strlen(FILE_SCHEME);
        if (path[0] != '/')
            return wv_err_set(err, WV_EUSAGE,
                              "invalid repository URL %s: use file:///absolute/dir (no host)", url);
    } else if (strstr(url, "://")) {
        return wv_err_set(err, WV_EUSAGE,
                          "unsupported repository URL %s: use file:///dir or s3://bucket/prefix",
                          url);
    } else {
        return wv_err_set(err, WV_EUSAGE,
                          "invalid repository %s: give an absolute path or a file:/// URL", url);
    }
    *dir = clean_dir(path);
    if (!*dir)
        return wv_err_set(err, WV_EFAIL, "out of memory opening repository %s", url);
    return 0;
}

static int open_file_store(storage_t *st, const char *url, wv_err_t *err)
{
    char *dir = NULL;
    int rc = file_dir_from_url(url, &dir, err);
    if (rc || !dir)
        return rc ? rc : WV_EFAIL;
    size_t n = strlen(FILE_SCHEME) + strlen(dir) + 1;
    st->url = malloc(n);
    if (!st->url) {
        free(dir);
        return wv_err_set(err, WV_EFAIL, "out of memory opening repository %s", url);
    }
    snprintf(st->url, n, "%s%s", FILE_SCHEME, dir);
    rc = storage_file_open(dir, st, err);
    free(dir);
    return rc;
}

int storage_open(const char *url, const struct storage_opts *opts, storage_t **out, wv_err_t *err)
{
    *out = NULL;
    if (!url || !url[0])
        return wv_err_set(err, WV_EUSAGE, "no repository given: use file:///dir or s3://...");
    storage_t *st = calloc(1, sizeof *st);
    if (!st)
        return wv_err_set(err, WV_EFAIL, "out of memory opening repository %s", url);
    int rc = strncmp(url, S3_SCHEME, strlen(S3_SCHEME)) == 0 ? storage_s3_open(url, opts, st, err)
                                                             : open_file_store(st, url, err);
    if (rc) {
        free(st->url);
        free(st);
        return rc;
    }
    *out = st;
    return 0;
}

void storage_close(storage_t *st)
{
    if (!st)
        return;
    if (st->ops)
        st->ops->close(st);
    free(st->url);
    free(st);
}

const char *storage_url(const storage_t *st)
{
    return st->url;
}

/* ---- puts ---- */

int storage_put_begin(storage_t *st, const char *key, bool if_absent, storage_writer_t **out,
                      wv_err_t *err)
{
    *out = NULL;
    int rc = storage_check_key(key, err);
    if (rc)
        return rc;
    return st->ops->put_begin(st, key, if_absent, out, err);
}

int storage_put_write(storage_writer_t *w, const void *data, size_t len, wv_err_t *err)
{
    return w->st->ops->put_write(w, data, len, err);
}

int storage_put_commit(storage_writer_t *w, wv_err_t *err)
{
    return w->st->ops->put_commit(w, err);
}

void storage_put_abort(storage_writer_t *w)
{
    if (w)
        w->st->ops->put_abort(w);
}

int storage_put(storage_t *st, const char *key, const void *data, size_t len, bool if_absent,
                wv_err_t *err)
{
    storage_writer_t *w;
    int rc = storage_put_begin(st, key, if_absent, &w, err);
    if (rc)
        return rc;
    rc = storage_put_write(w, data, len, err);
    if (rc) {
        storage_put_abort(w);
        return rc;
    }
    return storage_put_commit(w, err);
}

/* ---- gets ---- */

struct get_buf_ctx {
    buf_t *out;
    const char *key;
};

static int append_to_buf(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct get_buf_ctx *g = ctx;
    if (buf_append(g->out, data, len, err) != 0)
        return wv_err_prefix(err, "reading object %s", g->key);
    return 0;
}

/* Like fs_read_file: out is initialised here with max as its limit, and left empty on
 * failure. */
int storage_get(storage_t *st, const char *key, buf_t *out, size_t max, wv_err_t *err)
{
    buf_init(out, max);
    struct get_buf_ctx g = {out, key};
    int rc = storage_get_stream(st, key, append_to_buf, &g, err);
    if (rc)
        buf_free(out);
    return rc;
}

int storage_get_stream(storage_t *st, const char *key, storage_sink_fn sink, void *ctx,
                       wv_err_t *err)
{
    int rc = storage_check_key(key, err);
    if (rc)
        return rc;
    return st->ops->get_stream(st, key, sink, ctx, err);
}

int storage_get_range(storage_t *st, const char *key, uint64_t off, size_t len, void *out,
                      wv_err_t *err)
{
    int rc = storage_check_key(key, err);
    if (rc)
        return rc;
    return st->ops->get_range(st, key, off, len, out, err);
}

int storage_head(storage_t *st, const char *key, uint64_t *size, wv_err_t *err)
{
    int rc = storage_check_key(key, err);
    if (rc)
        return rc;
    return st->ops->head(st, key, size, err);
}

int storage_delete(storage_t *st, const char *key, wv_err_t *err)
{
    int rc = storage_check_key(key, err);
    if (rc)
        return rc;
    return st->ops->del(st, key, err);
}

int storage_delete_many(storage_t *st, const char *const *keys, size_t count, wv_err_t *err)
{
    for (size_t i = 0; i < count; i++) {
        int rc = storage_check_key(keys[i], err);
        if (rc)
            return rc;
    }
    if (count == 0)
        return 0;
    if (st->ops->del_many)
        return st->ops->del_many(st, keys, count, err);
    for (size_t i = 0; i < count; i++) {
        int rc = st->ops->del(st, keys[i], err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- listing ---- */

int storage_list_open(storage_t *st, const char *prefix, storage_iter_t **out, wv_err_t *err)
{
    *out = NULL;
    int rc = check_prefix(prefix, err);
    if (rc)
        return rc;
    return st->ops->list_open(st, prefix, out, err);
}

int storage_iter_next(storage_iter_t *it, const char **key, uint64_t *size, wv_err_t *err)
{
    return it->st->ops->iter_next(it, key, size, err);
}

void storage_iter_close(storage_iter_t *it)
{
    if (it)
        it->st->ops->iter_close(it);
}
