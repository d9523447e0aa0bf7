/* Multipart uploads: parts go up in parallel while the writer fills the next one.
 *
 * One thread per upload drives a curl multi handle with up to S3_PARALLEL_PARTS transfers;
 * the writer hands it full part buffers and blocks only when every slot is busy, so memory
 * stays at (S3_PARALLEL_PARTS + 1) x part size. The multi handle keeps its connections for
 * all the parts of the upload; new ones resume TLS sessions through the store's share.
 * A part is an idempotent PUT: failed parts are retried with backoff by the thread (the
 * same judgement as every request, s3_http.c). The first part that fails for good stops the
 * upload; the writer then aborts it, so no parts are left behind. */
#include "storage/s3_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define POLL_IDLE_MS 1000
#define UPLOAD_ID_MAX 1024
#define COMPLETE_BODY_MAX (4u * 1024 * 1024)

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_WAIT };

struct slot {
    enum slot_state state;
    buf_t buf;
    unsigned part;
    buf_t query;
    struct s3_call call;
    int64_t due_ms;
};

struct s3_upload {
    struct s3_store *s;
    char *object;
    char *key;
    char *upload_id;
    char token_header[96];
    CURLM *multi;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct slot slots[S3_PARALLEL_PARTS];
    char **etags; /* by part number - 1 */
    size_t etag_cap;
    unsigned parts;
    bool stop;
    bool completed;
    int fail_rc;
    wv_err_t fail_err;
};

size_t s3_part_size(unsigned part)
{
    unsigned doublings = part > 0 ? (part - 1) / 1000 : 0;
    uint64_t size = (uint64_t)S3_PART_MIN << (doublings < 20 ? doublings : 20);
    return (size_t)(size < S3_PART_MAX ? size : S3_PART_MAX);
}

/* ---- the thread ---- */

static int start_part(struct s3_upload *u, struct slot *sl)
{
    wv_err_t err;
    int rc = s3_call_prepare(u->s, &sl->call, &err);
    if (!rc && curl_multi_add_handle(u->multi, sl->call.easy) != CURLM_OK)
        rc = wv_err_set(&err, WV_EFAIL, "S3 UPLOAD PART %s: cannot start a transfer", u->key);
    if (rc) {
        u->fail_rc = rc;
        u->fail_err = err;
        sl->state = SLOT_FREE;
        return rc;
    }
    sl->state = SLOT_BUSY;
    return 0;
}

static int record_etag(struct s3_upload *u, struct slot *sl, wv_err_t *err)
{
    if (!sl->call.etag[0])
        return wv_err_set(err, WV_EFAIL, "S3 UPLOAD PART %s: part %u stored without an ETag",
                          u->key, sl->part);
    if (sl->part > u->etag_cap) {
        size_t cap = u->etag_cap ? u->etag_cap * 2 : 64;
        while (cap < sl->part)
            cap *= 2;
        char **p = realloc(u->etags, cap * sizeof *p);
        if (!p)
            return wv_err_set(err, WV_EFAIL, "out of memory uploading %s", u->key);
        memset(p + u->etag_cap, 0, (cap - u->etag_cap) * sizeof *p);
        u->etags = p;
        u->etag_cap = cap;
    }
    u->etags[sl->part - 1] = strdup(sl->call.etag);
    return u->etags[sl->part - 1] ? 0 : wv_err_set(err, WV_EFAIL, "out of memory");
}

static void finish_part(struct s3_upload *u, struct slot *sl, CURLcode cc)
{
    curl_multi_remove_handle(u->multi, sl->call.easy);
    long delay = 0;
    int rc = 0;
    wv_err_t err;
    pthread_mutex_lock(&u->mu);
    enum s3_verdict v = s3_call_judge(u->s, &sl->call, cc, &delay, &rc, &err);
    if (v == S3_RETRY) {
        sl->state = SLOT_WAIT;
        sl->due_ms = s3_now_ms() + delay;
    } else {
        if (v == S3_DONE)
            rc = record_etag(u, sl, &err);
        if (rc && !u->fail_rc) {
            u->fail_rc = rc;
            u->fail_err = err;
        }
        sl->state = SLOT_FREE;
        pthread_cond_broadcast(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
}

static void read_finished(struct s3_upload *u)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        for (int i = 0; i < S3_PARALLEL_PARTS; i++)
            if (u->slots[i].state == SLOT_BUSY && u->slots[i].call.easy == m->easy_handle) {
                finish_part(u, &u->slots[i], m->data.result);
                break;
            }
    }
}

/* Under the lock: starts queued and due parts; returns how long to wait at most. */
static long schedule(struct s3_upload *u, int *busy)
{
    long wait = POLL_IDLE_MS;
    int64_t now = s3_now_ms();
    *busy = 0;
    for (int i = 0; i < S3_PARALLEL_PARTS; i++) {
        struct slot *sl = &u->slots[i];
        bool due = sl->state == SLOT_WAIT && sl->due_ms <= now;
        if ((sl->state == SLOT_QUEUED || due) && !u->fail_rc && start_part(u, sl) != 0)
            pthread_cond_broadcast(&u->cv);
        if (sl->state == SLOT_WAIT && sl->due_ms - now < wait)
            wait = (long)(sl->due_ms - now);
        if (sl->state == SLOT_BUSY)
            (*busy)++;
    }
    return wait > 0 ? wait : 0;
}

static void drop_transfers(struct s3_upload *u)
{
    for (int i = 0; i < S3_PARALLEL_PARTS; i++) {
        struct slot *sl = &u->slots[i];
        if (sl->state == SLOT_BUSY)
            curl_multi_remove_handle(u->multi, sl->call.easy);
        sl->state = SLOT_FREE;
    }
    pthread_cond_broadcast(&u->cv);
}

static void *upload_thread(void *arg)
{
    struct s3_upload *u = arg;
    pthread_mutex_lock(&u->mu);
    while (!u->stop && !u->fail_rc) {
        int busy;
        long wait = schedule(u, &busy);
        pthread_mutex_unlock(&u->mu);
        curl_multi_poll(u->multi, NULL, 0, (int)wait, NULL);
        int running;
        curl_multi_perform(u->multi, &running);
        read_finished(u);
        pthread_mutex_lock(&u->mu);
    }
    drop_transfers(u);
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

/* ---- the writer's side ---- */

static int initiate(struct s3_upload *u, wv_err_t *err)
{
    buf_t body;
    buf_init(&body, 64 * 1024);
    struct s3_call c = {.method = "POST",
                        .op = "START UPLOAD",
                        .key = u->key,
                        .object = u->object,
                        .query = "uploads=",
                        .headers = {u->token_header},
                        .header_count = 1,
                        .out = &body};
    s3_add_sse_headers(u->s, &c);
    int rc = s3_call_run(u->s, &c, err);
    s3_call_free(&c);
    buf_t id;
    buf_init(&id, UPLOAD_ID_MAX);
    if (!rc) {
        const char *p = (const char *)body.data;
        int found = s3_xml_text(p, p + body.len, "UploadId", &id, err);
        if (found == 0 || (found == 1 && id.len == 0))
            rc = wv_err_set(err, WV_EFAIL, "S3 START UPLOAD %s: no UploadId in the answer", u->key);
        else if (found < 0)
            rc = found;
    }
    if (!rc)
        u->upload_id = (char *)id.data;
    else
        buf_free(&id);
    buf_free(&body);
    return rc;
}

static int start_thread(struct s3_upload *u, wv_err_t *err)
{
    u->multi = curl_multi_init();
    if (!u->multi)
        return wv_err_set(err, WV_EFAIL, "cannot create a curl multi handle");
    for (int i = 0; i < S3_PARALLEL_PARTS; i++) {
        u->slots[i].call.easy = s3_easy_get(u->s);
        if (!u->slots[i].call.easy)
            return wv_err_set(err, WV_EFAIL, "cannot create a curl handle");
    }
    if (pthread_create(&u->thread, NULL, upload_thread, u) != 0)
        return wv_err_set(err, WV_EFAIL, "cannot start an upload thread for %s", u->key);
    u->thread_started = true;
    return 0;
}

int s3_upload_begin(struct s3_store *s, const char *object, const char *key, const char *token,
                    struct s3_upload **out, wv_err_t *err)
{
    struct s3_upload *u = calloc(1, sizeof *u);
    if (!u)
        return wv_err_set(err, WV_EFAIL, "out of memory uploading %s", key);
    u->s = s;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    for (int i = 0; i < S3_PARALLEL_PARTS; i++) {
        buf_init(&u->slots[i].buf, 0);
        buf_init(&u->slots[i].query, UPLOAD_ID_MAX * 4);
    }
    snprintf(u->token_header, sizeof u->token_header, "%s: %s", S3_META_TOKEN, token);
    u->object = strdup(object);
    u->key = strdup(key);
    int rc = u->object && u->key ? initiate(u, err)
                                 : wv_err_set(err, WV_EFAIL, "out of memory uploading %s", key);
    if (!rc)
        rc = start_thread(u, err);
    if (rc) {
        if (u->upload_id)
            s3_upload_abort(u);
        s3_upload_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

static int failure(struct s3_upload *u, wv_err_t *err)
{
    *err = u->fail_err;
    return u->fail_rc;
}

static int setup_part(struct s3_upload *u, struct slot *sl, const char *hash, wv_err_t *err)
{
    char number[16];
    snprintf(number, sizeof number, "%u", sl->part);
    struct s3_param params[] = {{"partNumber", number}, {"uploadId", u->upload_id}};
    buf_reset(&sl->query);
    int rc = s3_query_build(&sl->query, params, 2, err);
    if (!rc)
        rc = s3_buf_terminate(&sl->query, err);
    if (rc)
        return rc;
    CURL *easy = sl->call.easy;
    s3_call_free(&sl->call);
    sl->call = (struct s3_call){.method = "PUT",
                                .op = "UPLOAD PART",
                                .key = u->key,
                                .object = u->object,
                                .query = (const char *)sl->query.data,
                                .body = sl->buf.data,
                                .body_len = sl->buf.len,
                                .easy = easy};
    memcpy(sl->call.payload_hash, hash, sizeof sl->call.payload_hash);
    return 0;
}

int s3_upload_part(struct s3_upload *u, buf_t *buf, wv_err_t *err)
{
    /* hashed here, on the writer's thread, while the parts before it are in flight */
    char hash[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex(buf->data, buf->len, hash);
    pthread_mutex_lock(&u->mu);
    struct slot *sl = NULL;
    while (!u->fail_rc && !sl) {
        for (int i = 0; i < S3_PARALLEL_PARTS && !sl; i++)
            if (u->slots[i].state == SLOT_FREE)
                sl = &u->slots[i];
        if (!sl)
            pthread_cond_wait(&u->cv, &u->mu);
    }
    int rc = u->fail_rc ? failure(u, err) : 0;
    if (!rc) {
        buf_t mine = sl->buf; /* swap: the slot takes the data, the writer an empty buffer */
        sl->buf = *buf;
        *buf = mine;
        buf->len = 0;
        buf->max = sl->buf.max;
        sl->part = ++u->parts;
        rc = setup_part(u, sl, hash, err);
        if (!rc)
            sl->state = SLOT_QUEUED;
    }
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
    return rc;
}

int s3_upload_flush(struct s3_upload *u, wv_err_t *err)
{
    pthread_mutex_lock(&u->mu);
    for (;;) {
        bool idle = true;
        for (int i = 0; i < S3_PARALLEL_PARTS; i++)
            idle = idle && u->slots[i].state == SLOT_FREE;
        if (idle || u->fail_rc)
            break;
        pthread_cond_wait(&u->cv, &u->mu);
    }
    int rc = u->fail_rc ? failure(u, err) : 0;
    pthread_mutex_unlock(&u->mu);
    return rc;
}

static int complete_body(struct s3_upload *u, buf_t *body, wv_err_t *err)
{
    int rc = buf_append_str(body, "<CompleteMultipartUpload>", err);
    for (unsigned i = 0; i < u->parts && !rc; i++) {
        char number[64];
        snprintf(number, sizeof number, "<Part><PartNumber>%u</PartNumber><ETag>", i + 1);
        rc = buf_append_str(body, number, err);
        if (!rc)
            rc = s3_xml_escape(body, u->etags[i], err);
        if (!rc)
            rc = buf_append_str(body, "</ETag></Part>", err);
    }
    return rc ? rc : buf_append_str(body, "</CompleteMultipartUpload>", err);
}

/* A completion whose answer was lost leaves NoSuchUpload behind: done if the object now
 * carries this upload's token. */
static int completed_meanwhile(struct s3_upload *u, const struct s3_call *c, int rc, wv_err_t *err)
{
    if (rc != WV_ENOTFOUND || strcmp(c->error.code, "NoSuchUpload") != 0)
        return rc;
    char token[80];
    wv_err_t herr;
    const char *mine = u->token_header + strlen(S3_META_TOKEN) + 2;
    if (s3_head_object(u->s, u->object, u->key, NULL, token, sizeof token, &herr) == 0 &&
        strcmp(token, mine) == 0)
        return 0;
    err->code = WV_EFAIL; /* the upload is gone, not the object: not a "not found" */
    return WV_EFAIL;
}

static int post_complete(struct s3_upload *u, const buf_t *body, const char *query,
                         bool if_none_match, bool single_shot, long timeout_ms, bool *transient,
                         wv_err_t *err)
{
    buf_t resp;
    buf_init(&resp, 1024 * 1024);
    struct s3_call c = {.method = "POST",
                        .op = "COMPLETE UPLOAD",
                        .key = u->key,
                        .object = u->object,
                        .query = query,
                        .body = body->data,
                        .body_len = body->len,
                        .single_shot = single_shot,
                        .timeout_ms = timeout_ms,
                        .out = &resp};
    if (if_none_match)
        c.headers[c.header_count++] = "If-None-Match: *";
    int rc = s3_call_run(u->s, &c, err);
    *transient = c.transient;
    rc = completed_meanwhile(u, &c, rc, err);
    s3_call_free(&c);
    buf_free(&resp);
    return rc;
}

int s3_upload_complete(struct s3_upload *u, bool if_none_match, bool single_shot, long timeout_ms,
                       bool *transient, wv_err_t *err)
{
    *transient = false;
    int rc = s3_upload_flush(u, err);
    if (rc)
        return rc;
    buf_t body, query;
    buf_init(&body, COMPLETE_BODY_MAX);
    buf_init(&query, UPLOAD_ID_MAX * 4);
    struct s3_param param = {"uploadId", u->upload_id};
    rc = complete_body(u, &body, err);
    if (!rc)
        rc = s3_query_build(&query, &param, 1, err);
    if (!rc)
        rc = s3_buf_terminate(&query, err);
    if (!rc)
        rc = post_complete(u, &body, (const char *)query.data, if_none_match, single_shot,
                           timeout_ms, transient, err);
    u->completed = rc == 0;
    buf_free(&body);
    buf_free(&query);
    return rc;
}

static void stop_thread(struct s3_upload *u)
{
    if (!u->thread_started)
        return;
    pthread_mutex_lock(&u->mu);
    u->stop = true;
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
    pthread_join(u->thread, NULL);
    u->thread_started = false;
}

/* s3rver answers 405 to AbortMultipartUpload, and an upload that is already gone is fine. */
void s3_upload_abort(struct s3_upload *u)
{
    stop_thread(u);
    if (!u->upload_id || u->completed)
        return;
    struct s3_param param = {"uploadId", u->upload_id};
    buf_t query;
    buf_init(&query, UPLOAD_ID_MAX * 4);
    wv_err_t err;
    if (s3_query_build(&query, &param, 1, &err) != 0 || s3_buf_terminate(&query, &err) != 0) {
        buf_free(&query);
        return;
    }
    struct s3_call c = {.method = "DELETE",
                        .op = "ABORT UPLOAD",
                        .key = u->key,
                        .object = u->object,
                        .query = (const char *)query.data};
    int rc = s3_call_run(u->s, &c, &err);
    if (rc && (c.status == 405 || c.status == 501 || c.status == 404))
        log_debug("%s (taken as aborted)", err.msg);
    else if (rc)
        log_warn("%s (its parts stay until a lifecycle rule removes them)", err.msg);
    s3_call_free(&c);
    buf_free(&query);
    free(u->upload_id);
    u->upload_id = NULL;
}

void s3_upload_free(struct s3_upload *u)
{
    stop_thread(u);
    for (int i = 0; i < S3_PARALLEL_PARTS; i++) {
        s3_easy_put(u->s, u->slots[i].call.easy);
        u->slots[i].call.easy = NULL;
        s3_call_free(&u->slots[i].call);
        buf_free(&u->slots[i].buf);
        buf_free(&u->slots[i].query);
    }
    if (u->multi)
        curl_multi_cleanup(u->multi);
    for (size_t i = 0; i < u->etag_cap; i++)
        free(u->etags[i]);
    free(u->etags);
    free(u->upload_id);
    free(u->object);
    free(u->key);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}
