/* The s3:// backend: the table of functions, and the reading side (get, range get, head,
 * delete, list). Writing is in s3_put.c and s3_multipart.c; HTTP in s3_http.c.
 *
 * Object names are the URL's prefix followed by the repository key. Names with a component
 * starting with '.' are refused as keys and skipped by listings, as in file:// repositories:
 * the backend keeps ".walvault/" under the prefix for itself (see s3_put.c). */
#include "storage/s3_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define LIST_PAGE_BYTES (8u * 1024 * 1024)
#define DELETE_BATCH 1000
#define DELETE_BODY_MAX (2u * 1024 * 1024)

char *s3_object_name(const struct s3_store *s, const char *key)
{
    size_t n = strlen(s->prefix) + strlen(key) + 1;
    char *o = malloc(n);
    if (o)
        snprintf(o, n, "%s%s", s->prefix, key);
    return o;
}

static bool has_dot_component(const char *key)
{
    for (const char *part = key; part;) {
        if (part[0] == '.')
            return true;
        const char *slash = strchr(part, '/');
        part = slash ? slash + 1 : NULL;
    }
    return false;
}

int s3_check_key(const char *key, wv_err_t *err)
{
    if (has_dot_component(key))
        return wv_err_set(err, WV_EUSAGE,
                          "invalid object key \"%s\": names starting with '.' are reserved", key);
    return 0;
}

static int object_of(storage_t *st, const char *key, char **object, wv_err_t *err)
{
    int rc = s3_check_key(key, err);
    if (rc)
        return rc;
    *object = s3_object_name(s3_store_of(st), key);
    return *object ? 0 : wv_err_set(err, WV_EFAIL, "out of memory (object %s)", key);
}

static int not_found(const char *key, wv_err_t *err)
{
    return wv_err_set(err, WV_ENOTFOUND, "object not found: %s", key);
}

/* ---- head ---- */

int s3_head_object(struct s3_store *s, const char *object, const char *key, uint64_t *size,
                   char *token, size_t token_cap, wv_err_t *err)
{
    struct s3_call c = {.method = "HEAD", .op = "HEAD", .key = key, .object = object};
    int rc = s3_call_run(s, &c, err);
    if (rc == WV_ENOTFOUND)
        rc = not_found(key, err);
    if (!rc && size)
        *size = c.content_length;
    if (!rc && token)
        snprintf(token, token_cap, "%s", c.token);
    s3_call_free(&c);
    return rc;
}

static int s3_head(storage_t *st, const char *key, uint64_t *size, wv_err_t *err)
{
    char *object;
    int rc = object_of(st, key, &object, err);
    if (rc)
        return rc;
    rc = s3_head_object(s3_store_of(st), object, key, size, NULL, 0, err);
    free(object);
    return rc;
}

/* ---- get ---- */

static int s3_get_stream(storage_t *st, const char *key, storage_sink_fn sink, void *ctx,
                         wv_err_t *err)
{
    char *object;
    int rc = object_of(st, key, &object, err);
    if (rc)
        return rc;
    struct s3_call c = {
        .method = "GET", .op = "GET", .key = key, .object = object, .sink = sink, .sink_ctx = ctx};
    rc = s3_call_run(s3_store_of(st), &c, err);
    if (rc == WV_ENOTFOUND)
        rc = not_found(key, err);
    s3_call_free(&c);
    free(object);
    return rc;
}

static int short_object(const char *key, uint64_t size, uint64_t off, size_t len, wv_err_t *err)
{
    return wv_err_set(err, WV_ECORRUPT,
                      "object %s is %llu bytes, too short for %zu bytes at offset %llu", key,
                      (unsigned long long)size, len, (unsigned long long)off);
}

static int range_result(const struct s3_call *c, int rc, const char *key, uint64_t off, size_t len,
                        wv_err_t *err)
{
    if (rc == WV_ENOTFOUND)
        return not_found(key, err);
    if (rc == WV_ECORRUPT && c->status == 416)
        return short_object(key, c->range_total, off, len, err);
    if (rc)
        return rc;
    if (c->received != len) {
        uint64_t size = c->range_total ? c->range_total : off + c->received;
        return short_object(key, size, off, len, err);
    }
    return 0;
}

static int s3_get_range(storage_t *st, const char *key, uint64_t off, size_t len, void *out,
                        wv_err_t *err)
{
    if (len == 0) { /* no valid Range for zero bytes: check the size instead */
        uint64_t size;
        int rc = s3_head(st, key, &size, err);
        return rc ? rc : off > size ? short_object(key, size, off, len, err) : 0;
    }
    char *object;
    int rc = object_of(st, key, &object, err);
    if (rc)
        return rc;
    char range[80];
    snprintf(range, sizeof range, "Range: bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    struct s3_call c = {.method = "GET",
                        .op = "GET",
                        .key = key,
                        .object = object,
                        .headers = {range},
                        .header_count = 1,
                        .range_buf = out,
                        .range_len = len,
                        .range_off = off};
    rc = s3_call_run(s3_store_of(st), &c, err);
    rc = range_result(&c, rc, key, off, len, err);
    s3_call_free(&c);
    free(object);
    return rc;
}

/* ---- delete ---- */

int s3_delete_object(struct s3_store *s, const char *object, const char *key, wv_err_t *err)
{
    struct s3_call c = {.method = "DELETE", .op = "DELETE", .key = key, .object = object};
    int rc = s3_call_run(s, &c, err);
    if (rc == WV_ENOTFOUND)
        rc = 0;
    s3_call_free(&c);
    return rc;
}

static int s3_del(storage_t *st, const char *key, wv_err_t *err)
{
    char *object;
    int rc = object_of(st, key, &object, err);
    if (rc)
        return rc;
    rc = s3_delete_object(s3_store_of(st), object, key, err);
    free(object);
    return rc;
}

static int delete_body(const struct s3_store *s, const char *const *keys, size_t n, buf_t *body,
                       wv_err_t *err)
{
    int rc = buf_append_str(body, "<Delete><Quiet>true</Quiet>", err);
    for (size_t i = 0; i < n && !rc; i++) {
        rc = buf_append_str(body, "<Object><Key>", err);
        if (!rc)
            rc = s3_xml_escape(body, s->prefix, err);
        if (!rc)
            rc = s3_xml_escape(body, keys[i], err);
        if (!rc)
            rc = buf_append_str(body, "</Key></Object>", err);
    }
    return rc ? rc : buf_append_str(body, "</Delete>", err);
}

/* In quiet mode S3 lists only the keys it failed to delete. */
static int delete_errors(const struct s3_store *s, const buf_t *resp, wv_err_t *err)
{
    const char *p = (const char *)resp->data, *end = p + resp->len, *content, *next;
    size_t len;
    while (s3_xml_find(p, end, "Error", &content, &len, &next)) {
        struct s3_error_info info;
        s3_xml_error(content, len, &info);
        buf_t key;
        buf_init(&key, 64 * 1024);
        int found = s3_xml_text(content, content + len, "Key", &key, err);
        const char *k = found == 1 ? (const char *)key.data : "?";
        size_t plen = strlen(s->prefix);
        if (strncmp(k, s->prefix, plen) == 0)
            k += plen;
        if (strcmp(info.code, "NoSuchKey") != 0) {
            wv_err_set(err, WV_EFAIL, "S3 DELETE %s: %s (%s)", k, info.code, info.message);
            buf_free(&key);
            return WV_EFAIL;
        }
        buf_free(&key);
        p = next;
    }
    return 0;
}

static int delete_batch(struct s3_store *s, const char *const *keys, size_t n, wv_err_t *err)
{
    buf_t body, resp;
    buf_init(&body, DELETE_BODY_MAX * 4);
    buf_init(&resp, DELETE_BODY_MAX);
    int rc = delete_body(s, keys, n, &body, err);
    if (!rc) {
        char md5[25], header[64];
        s3_md5_base64(body.data, body.len, md5);
        snprintf(header, sizeof header, "Content-MD5: %s", md5);
        struct s3_call c = {.method = "POST",
                            .op = "DELETE OBJECTS",
                            .key = keys[0],
                            .query = "delete=",
                            .headers = {header},
                            .header_count = 1,
                            .body = body.data,
                            .body_len = body.len,
                            .out = &resp};
        rc = s3_call_run(s, &c, err);
        s3_call_free(&c);
    }
    if (!rc)
        rc = delete_errors(s, &resp, err);
    buf_free(&body);
    buf_free(&resp);
    return rc;
}

static int s3_del_many(storage_t *st, const char *const *keys, size_t count, wv_err_t *err)
{
    for (size_t i = 0; i < count; i++) {
        int rc = s3_check_key(keys[i], err);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < count; i += DELETE_BATCH) {
        size_t n = count - i < DELETE_BATCH ? count - i : DELETE_BATCH;
        int rc = delete_batch(s3_store_of(st), keys + i, n, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- list ---- */

int s3_lister_init(struct s3_lister *l, struct s3_store *s, const char *prefix, wv_err_t *err)
{
    memset(l, 0, sizeof *l);
    l->s = s;
    l->prefix = strdup(prefix);
    return l->prefix ? 0 : wv_err_set(err, WV_EFAIL, "out of memory listing %s", prefix);
}

static int fetch_page(struct s3_lister *l, wv_err_t *err)
{
    struct s3_param params[] = {{"list-type", "2"},
                                {"max-keys", "1000"},
                                {"prefix", l->prefix},
                                {"continuation-token", l->token}};
    size_t nparams = l->token ? 4 : 3;
    buf_t query, body;
    buf_init(&query, 64 * 1024);
    buf_init(&body, LIST_PAGE_BYTES);
    int rc = s3_query_build(&query, params, nparams, err);
    if (!rc)
        rc = s3_buf_terminate(&query, err);
    if (!rc) {
        const char *what = l->prefix[0] ? l->prefix : "(everything)";
        struct s3_call c = {.method = "GET",
                            .op = "LIST",
                            .key = what,
                            .query = (const char *)query.data,
                            .out = &body};
        rc = s3_call_run(l->s, &c, err);
        s3_call_free(&c);
    }
    s3_list_page_free(&l->page);
    l->next = 0;
    if (!rc)
        rc = s3_xml_list_page((const char *)body.data, body.len, &l->page, err);
    buf_free(&query);
    buf_free(&body);
    if (rc)
        return rc;
    free(l->token);
    l->token = l->page.next_token;
    l->page.next_token = NULL;
    l->done = !l->page.truncated;
    return 0;
}

int s3_lister_next(struct s3_lister *l, const struct s3_list_entry **entry, wv_err_t *err)
{
    while (l->next >= l->page.count) {
        if (l->done)
            return 0;
        int rc = fetch_page(l, err);
        if (rc)
            return rc;
    }
    *entry = &l->page.entries[l->next++];
    return 1;
}

void s3_lister_free(struct s3_lister *l)
{
    s3_list_page_free(&l->page);
    free(l->prefix);
    free(l->token);
    memset(l, 0, sizeof *l);
}

struct s3_iter {
    struct storage_iter base;
    struct s3_lister lister;
};

static int s3_list_open(storage_t *st, const char *prefix, storage_iter_t **out, wv_err_t *err)
{
    struct s3_iter *it = calloc(1, sizeof *it);
    char *object = s3_object_name(s3_store_of(st), prefix);
    if (!it || !object) {
        free(it);
        free(object);
        return wv_err_set(err, WV_EFAIL, "out of memory listing %s", prefix);
    }
    int rc = s3_lister_init(&it->lister, s3_store_of(st), object, err);
    free(object);
    if (rc) {
        free(it);
        return rc;
    }
    it->base.st = st;
    *out = &it->base;
    return 0;
}

/* Keys the repository could not have written (reserved, or not valid keys at all, e.g. put
 * there by another tool) are skipped, as a file:// listing skips what is not a file. */
static bool listable(const char *key)
{
    wv_err_t ignored;
    return key[0] && !has_dot_component(key) && storage_check_key(key, &ignored) == 0;
}

static int s3_iter_next(storage_iter_t *base, const char **key, uint64_t *size, wv_err_t *err)
{
    struct s3_iter *it = (struct s3_iter *)base;
    size_t plen = strlen(s3_store_of(base->st)->prefix);
    const struct s3_list_entry *e = NULL;
    int rc;
    while ((rc = s3_lister_next(&it->lister, &e, err)) == 1) {
        if (strlen(e->key) < plen || !listable(e->key + plen)) {
            log_debug("skipping object %s in listing", e->key);
            continue;
        }
        *key = e->key + plen;
        *size = e->size;
        return 1;
    }
    return rc;
}

static void s3_iter_close(storage_iter_t *base)
{
    struct s3_iter *it = (struct s3_iter *)base;
    s3_lister_free(&it->lister);
    free(it);
}

/* ---- the store ---- */

static void s3_close(storage_t *st)
{
    s3_store_free(s3_store_of(st));
    st->impl = NULL;
}

static const struct storage_ops s3_ops = {
    .put_begin = s3_put_begin,
    .put_write = s3_put_write,
    .put_commit = s3_put_commit,
    .put_abort = s3_put_abort,
    .get_stream = s3_get_stream,
    .get_range = s3_get_range,
    .head = s3_head,
    .del = s3_del,
    .list_open = s3_list_open,
    .iter_next = s3_iter_next,
    .iter_close = s3_iter_close,
    .del_many = s3_del_many,
    .close = s3_close,
};

int storage_s3_open(const char *url, const struct storage_opts *opts, storage_t *st, wv_err_t *err)
{
    struct s3_store *s;
    int rc = s3_store_new(url, opts, &s, &st->url, err);
    if (rc)
        return rc;
    st->ops = &s3_ops;
    st->impl = s;
    return 0;
}
