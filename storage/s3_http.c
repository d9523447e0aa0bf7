/* One S3 request on libcurl, with the retries that make it dependable.
 *
 * Signing is curl's (CURLOPT_AWS_SIGV4): it signs the method, the path and query exactly as
 * given (both built canonically here with s3_sign.c), Host, X-Amz-Date and every header we
 * add. curl 7.88 does not add x-amz-content-sha256, but takes the payload hash from that
 * header when present, so it is always sent: the SHA-256 of the body, which S3 then checks.
 *
 * Connections: libcurl documents that a connection cache shared between threads is not safe,
 * so the share handle holds only DNS and TLS sessions (a new connection resumes its TLS
 * session instead of a full handshake), and connections stay with the easy handles, which
 * a mutex-protected pool hands to one thread at a time; a handle back in the pool keeps its
 * connection open for the next request.
 *
 * Retries: on connection failures, resets, stalls, truncated bodies, 5xx, 429 and S3's
 * RequestTimeout; with exponential backoff and jitter; until retry_ms have passed without
 * progress. A GET that fails midway resumes where it stopped (Range + If-Match on the
 * ETag), so a sink never sees a byte twice. 4xx other than those are final. */
#include "storage/s3_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "common/log.h"

#define EASY_POOL_MAX 64
#define CONNECT_TIMEOUT_S 10L
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS 8000
#define USER_AGENT "walvault/0.1"

/* ---- process and store setup ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *user)
{
    (void)h;
    (void)access;
    struct s3_store *s = user;
    pthread_mutex_lock(&s->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *user)
{
    (void)h;
    struct s3_store *s = user;
    pthread_mutex_unlock(&s->share_locks[data]);
}

int s3_http_init(struct s3_store *s, wv_err_t *err)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return wv_err_set(err, WV_EFAIL, "cannot initialise libcurl: %s",
                          curl_easy_strerror(global_rc));
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->share_locks[i], NULL);
    pthread_mutex_init(&s->easy.lock, NULL);
    s->share = curl_share_init();
    if (!s->share)
        return wv_err_set(err, WV_EFAIL, "cannot create a curl share handle");
    curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    return 0;
}

void s3_http_cleanup(struct s3_store *s)
{
    for (size_t i = 0; i < s->easy.count; i++)
        curl_easy_cleanup(s->easy.free[i]);
    free(s->easy.free);
    s->easy.free = NULL;
    s->easy.count = s->easy.cap = 0;
    if (s->share)
        curl_share_cleanup(s->share);
    s->share = NULL;
    pthread_mutex_destroy(&s->easy.lock);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&s->share_locks[i]);
}

CURL *s3_easy_get(struct s3_store *s)
{
    CURL *e = NULL;
    pthread_mutex_lock(&s->easy.lock);
    if (s->easy.count > 0)
        e = s->easy.free[--s->easy.count];
    pthread_mutex_unlock(&s->easy.lock);
    return e ? e : curl_easy_init();
}

void s3_easy_put(struct s3_store *s, CURL *easy)
{
    if (!easy)
        return;
    pthread_mutex_lock(&s->easy.lock);
    if (s->easy.count == s->easy.cap && s->easy.cap < EASY_POOL_MAX) {
        size_t cap = s->easy.cap ? s->easy.cap * 2 : 8;
        CURL **p = realloc(s->easy.free, cap * sizeof *p);
        if (p) {
            s->easy.free = p;
            s->easy.cap = cap;
        }
    }
    if (s->easy.count < s->easy.cap) {
        s->easy.free[s->easy.count++] = easy;
        easy = NULL;
    }
    pthread_mutex_unlock(&s->easy.lock);
    if (easy)
        curl_easy_cleanup(easy);
}

/* ---- small utilities ---- */

int64_t s3_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void s3_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

long s3_backoff_ms(int attempt)
{
    long d = BACKOFF_BASE_MS;
    for (int i = 1; i < attempt && d < BACKOFF_CAP_MS; i++)
        d *= 2;
    if (d > BACKOFF_CAP_MS)
        d = BACKOFF_CAP_MS;
    unsigned int r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (unsigned int)s3_now_ms();
    return d / 2 + (long)(r % (unsigned int)(d / 2 + 1)); /* "equal jitter" */
}

int s3_random_token(char out[33], wv_err_t *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return wv_err_set(err, WV_EFAIL, "cannot get random bytes from OpenSSL");
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
    return 0;
}

/* ---- response capture ---- */

static bool is_2xx(long status)
{
    return status >= 200 && status < 300;
}

static void header_value(const char *line, size_t len, char *out, size_t cap)
{
    const char *colon = memchr(line, ':', len);
    const char *v = colon ? colon + 1 : line + len, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t n = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static bool header_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

/* A new status line starts a new response (after "100 Continue", or a retry). */
static void on_status_line(struct s3_call *c, const char *line, size_t len)
{
    char buf[64];
    header_value(line, len < sizeof buf ? len : sizeof buf - 1, buf, sizeof buf);
    const char *sp = memchr(line, ' ', len);
    c->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    c->has_length = false;
    c->content_length = 0;
    c->etag[0] = c->token[0] = c->bucket_region[0] = '\0';
    c->range_total = 0;
}

static void on_content_range(struct s3_call *c, const char *v)
{
    const char *slash = strchr(v, '/');
    if (slash && slash[1] != '*')
        c->range_total = strtoull(slash + 1, NULL, 10);
}

static size_t on_header(char *line, size_t size, size_t n, void *user)
{
    struct s3_call *c = user;
    size_t len = size * n;
    char v[256];
    if (len > 5 && memcmp(line, "HTTP/", 5) == 0) {
        on_status_line(c, line, len);
    } else if (header_is(line, len, "content-length")) {
        header_value(line, len, v, sizeof v);
        c->content_length = strtoull(v, NULL, 10);
        c->has_length = true;
    } else if (header_is(line, len, "etag")) {
        header_value(line, len, c->etag, sizeof c->etag);
    } else if (header_is(line, len, S3_META_TOKEN)) {
        header_value(line, len, c->token, sizeof c->token);
    } else if (header_is(line, len, "x-amz-bucket-region")) {
        header_value(line, len, c->bucket_region, sizeof c->bucket_region);
    } else if (header_is(line, len, "content-range")) {
        header_value(line, len, v, sizeof v);
        on_content_range(c, v);
    }
    return len;
}

/* Bytes of a 2xx body that belong to the caller: a 200 answered to a resumed or ranged GET
 * starts at offset 0, so the bytes before the wanted offset are skipped. */
static size_t skip_unwanted(struct s3_call *c, const char **data, size_t len)
{
    uint64_t want = c->range_buf ? c->range_off : c->resume_from;
    if (c->status != 200 || want == 0 || c->attempt_received >= want)
        return len;
    uint64_t skip = want - c->attempt_received;
    if (skip >= len) {
        c->attempt_received += len;
        return 0;
    }
    c->attempt_received += skip;
    *data += skip;
    return len - (size_t)skip;
}

static int deliver(struct s3_call *c, const char *data, size_t len)
{
    if (c->out)
        return buf_append(c->out, data, len, &c->sink_err);
    if (c->sink)
        return c->sink(c->sink_ctx, data, len, &c->sink_err);
    if (c->range_buf) {
        /* a ranged GET restarts whole on retry; a store that ignores Range sends the whole
         * object, of which the bytes past the range are dropped */
        size_t room = c->range_len - (size_t)c->received;
        memcpy(c->range_buf + c->received, data, len < room ? len : room);
    }
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    struct s3_call *c = user;
    size_t len = size * n;
    if (!is_2xx(c->status)) {
        size_t room = S3_ERRBODY_MAX - c->errbody.len;
        wv_err_t ignored;
        buf_append(&c->errbody, data, len < room ? len : room, &ignored);
        return len;
    }
    const char *p = data;
    size_t want = skip_unwanted(c, &p, len);
    if (want == 0)
        return len;
    if (c->range_buf && want > c->range_len - c->received)
        want = c->range_len - (size_t)c->received;
    int rc = deliver(c, p, want);
    if (rc) {
        c->sink_rc = rc;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    c->attempt_received += want;
    c->received += want;
    return len;
}

static size_t on_read(char *dst, size_t size, size_t n, void *user)
{
    struct s3_call *c = user;
    size_t room = size * n, left = c->body_len - c->body_off;
    size_t len = left < room ? left : room;
    if (len)
        memcpy(dst, (const char *)c->body + c->body_off, len);
    c->body_off += len;
    return len;
}

static int on_seek(void *user, curl_off_t off, int origin)
{
    struct s3_call *c = user;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > c->body_len)
        return CURL_SEEKFUNC_FAIL;
    c->body_off = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)ultotal;
    struct s3_call *c = user;
    int64_t now = s3_now_ms();
    uint64_t moved = (uint64_t)dlnow + (uint64_t)ulnow;
    if (moved != c->moved || c->moved_at_ms == 0) {
        c->moved = moved;
        c->moved_at_ms = now;
        return 0;
    }
    if (now - c->moved_at_ms < c->stall_ms)
        return 0;
    snprintf(c->curl_err, sizeof c->curl_err, "no data moved for %lld s",
             (long long)(now - c->moved_at_ms) / 1000);
    c->stalled = true;
    return 1; /* aborts the transfer */
}

/* ---- building an attempt ---- */

static int append_object_path(buf_t *url, const struct s3_store *s, const struct s3_call *c,
                              wv_err_t *err)
{
    int rc = buf_append_str(url, s->bucket_path, err);
    if (!rc && c->object) {
        rc = buf_append(url, "/", 1, err);
        if (!rc)
            rc = s3_uri_encode(url, c->object, true, err);
    } else if (!rc && !s->bucket_path[0]) {
        rc = buf_append(url, "/", 1, err);
    }
    return rc;
}

static int build_url(const struct s3_store *s, struct s3_call *c, wv_err_t *err)
{
    buf_t url;
    buf_init(&url, 64 * 1024);
    int rc = buf_append_str(&url, s->base_url, err);
    if (!rc)
        rc = append_object_path(&url, s, c, err);
    if (!rc && c->query && c->query[0]) {
        rc = buf_append(&url, "?", 1, err);
        if (!rc)
            rc = buf_append_str(&url, c->query, err);
    }
    if (!rc)
        rc = s3_buf_terminate(&url, err);
    if (rc) {
        buf_free(&url);
        return rc;
    }
    free(c->url);
    c->url = (char *)url.data;
    return 0;
}

static int add_header(struct curl_slist **list, const char *name, const char *value, wv_err_t *err)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof line)
        return wv_err_set(err, WV_EFAIL, "S3 request header %s too long", name);
    struct curl_slist *l = curl_slist_append(*list, line);
    if (!l)
        return wv_err_set(err, WV_EFAIL, "out of memory building an S3 request");
    *list = l;
    return 0;
}

static int build_headers(const struct s3_store *s, struct s3_call *c, wv_err_t *err)
{
    if (!c->payload_hash[0])
        s3_sha256_hex(c->body, c->body_len, c->payload_hash); /* once, not per attempt */
    curl_slist_free_all(c->slist);
    c->slist = NULL;
    int rc = add_header(&c->slist, "x-amz-content-sha256", c->payload_hash, err);
    if (!rc && s->token)
        rc = add_header(&c->slist, "x-amz-security-token", s->token, err);
    if (!rc && strcmp(c->method, "POST") == 0)
        rc = add_header(&c->slist, "Content-Type", "application/xml", err);
    for (size_t i = 0; i < c->header_count && !rc; i++) {
        struct curl_slist *l = curl_slist_append(c->slist, c->headers[i]);
        if (!l)
            return wv_err_set(err, WV_EFAIL, "out of memory building an S3 request");
        c->slist = l;
    }
    if (!rc && c->resume_from > 0) {
        char range[64];
        snprintf(range, sizeof range, "bytes=%llu-", (unsigned long long)c->resume_from);
        rc = add_header(&c->slist, "Range", range, err);
        if (!rc)
            rc = add_header(&c->slist, "If-Match", c->resume_etag, err);
    }
    return rc;
}

static void set_method(CURL *e, struct s3_call *c)
{
    if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(c->method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, c);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, c);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->body_len);
    } else if (strcmp(c->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body_len ? (const char *)c->body : "");
    } else if (strcmp(c->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
    }
}

static void set_transport(const struct s3_store *s, CURL *e, struct s3_call *c)
{
    curl_easy_setopt(e, CURLOPT_SHARE, s->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    /* a transfer that moves no byte for stall_s seconds is cut and retried (curl's own
     * low-speed check averages over several seconds, so it would see a stall late) */
    c->stall_ms = s->stall_s * 1000;
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, c);
    if (c->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    if (s->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(e, CURLOPT_USERNAME, s->key_id);
    curl_easy_setopt(e, CURLOPT_PASSWORD, s->secret);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->curl_err);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
}

int s3_call_prepare(struct s3_store *s, struct s3_call *c, wv_err_t *err)
{
    if (!c->easy)
        return wv_err_set(err, WV_EFAIL, "cannot create a curl handle");
    if (c->attempts == 0)
        buf_init(&c->errbody, S3_ERRBODY_MAX);
    int rc = build_url(s, c, err);
    if (!rc)
        rc = build_headers(s, c, err);
    if (rc)
        return rc;
    c->attempts++;
    c->status = 0;
    c->body_off = 0;
    c->attempt_received = 0;
    c->curl_err[0] = '\0';
    c->stalled = false;
    c->moved = 0;
    c->moved_at_ms = 0;
    c->sink_rc = 0;
    c->transient = false;
    buf_reset(&c->errbody);
    if (c->range_buf)
        c->received = 0;
    if (c->out && c->resume_from == 0)
        buf_reset(c->out);
    curl_easy_reset(c->easy);
    set_transport(s, c->easy, c);
    set_method(c->easy, c);
    curl_easy_setopt(c->easy, CURLOPT_URL, c->url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->slist);
    return 0;
}

void s3_call_free(struct s3_call *c)
{
    curl_slist_free_all(c->slist);
    c->slist = NULL;
    free(c->url);
    c->url = NULL;
    buf_free(&c->errbody);
}

/* ---- judging an attempt ---- */

static const char *call_what(const struct s3_call *c)
{
    return c->key ? c->key : c->object ? c->object : "bucket";
}

static bool retryable_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_AGAIN:
        return true;
    default:
        return false;
    }
}

static bool retryable_status(long status, const char *code)
{
    if (status >= 500 || status == 408 || status == 429 || status == 409)
        return true;
    return status == 400 && strcmp(code, "RequestTimeout") == 0;
}

/* S3 may answer 200 to CompleteMultipartUpload and still fail: the body is then <Error>. */
static bool body_is_error(const struct s3_call *c)
{
    if (!c->out || strcmp(c->method, "POST") != 0)
        return false;
    const char *p = (const char *)c->out->data, *end = p + c->out->len;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt || lt + 1 >= end)
            return false;
        if (lt[1] != '?' && lt[1] != '!')
            return (size_t)(end - lt) >= 7 && memcmp(lt, "<Error>", 7) == 0;
        p = lt + 1;
    }
    return false;
}

static int status_code(long status)
{
    return status == 404   ? WV_ENOTFOUND
           : status == 412 ? WV_EEXISTS
           : status == 416 ? WV_ECORRUPT
                           : WV_EFAIL;
}

static const char *status_hint(const struct s3_call *c)
{
    const char *code = c->error.code;
    if (strcmp(code, "InvalidAccessKeyId") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
        strcmp(code, "AccessDenied") == 0)
        return "; access denied: check the S3 credentials and the bucket policy";
    if (strcmp(code, "NoSuchBucket") == 0)
        return "; check the bucket name in the repository URL";
    if (strcmp(code, "RequestTimeTooSkewed") == 0)
        return "; this host's clock is off";
    return "";
}

int s3_call_error(const struct s3_call *c, int code, wv_err_t *err)
{
    char tries[64] = "";
    if (c->attempts > 1)
        snprintf(tries, sizeof tries, " (gave up after %d attempts)", c->attempts);
    if (c->status == 0)
        return wv_err_set(err, code, "S3 %s %s: %s%s", c->op, call_what(c),
                          c->curl_err[0] ? c->curl_err : "no answer", tries);
    char region[200] = "";
    const char *r = c->error.region[0] ? c->error.region : c->bucket_region;
    if (r[0] && (c->status == 301 || c->status == 400))
        snprintf(region, sizeof region, "; the bucket is in region %s: set --s3-region %s", r, r);
    const char *msg = c->error.message[0] ? c->error.message : "";
    return wv_err_set(err, code, "S3 %s %s: HTTP %ld%s%s%s%s%s%s%s%s", c->op, call_what(c),
                      c->status, c->error.code[0] ? " " : "", c->error.code, msg[0] ? " (" : "",
                      msg, msg[0] ? ")" : "", region, status_hint(c), tries);
}

static void read_error_body(struct s3_call *c)
{
    memset(&c->error, 0, sizeof c->error);
    const buf_t *b = is_2xx(c->status) && c->out ? c->out : &c->errbody;
    if (b->len)
        s3_xml_error((const char *)b->data, b->len, &c->error);
}

static bool resume_possible(struct s3_call *c)
{
    if (!c->sink || c->attempt_received == 0)
        return true; /* nothing delivered: the next attempt starts over */
    if (!c->etag[0])
        return false;
    c->resume_from = c->received;
    snprintf(c->resume_etag, sizeof c->resume_etag, "%s", c->etag);
    return true;
}

static enum s3_verdict retry_or_fail(struct s3_store *s, struct s3_call *c, bool retryable,
                                     int code, long *delay_ms, int *rc, wv_err_t *err)
{
    int64_t now = s3_now_ms();
    if (c->attempt_received > 0 && strcmp(c->method, "GET") == 0)
        c->fail_since_ms = 0; /* progress: the budget starts again */
    if (c->fail_since_ms == 0)
        c->fail_since_ms = now;
    bool in_budget = now - c->fail_since_ms < s->retry_ms;
    c->transient = retryable;
    if (retryable && !c->single_shot && in_budget && resume_possible(c)) {
        *delay_ms = s3_backoff_ms(c->attempts);
        wv_err_t why;
        s3_call_error(c, code, &why);
        log_debug("%s; retrying in %ld ms", why.msg, *delay_ms);
        return S3_RETRY;
    }
    *rc = s3_call_error(c, code, err);
    return S3_FAILED;
}

static enum s3_verdict judge_transport(struct s3_store *s, struct s3_call *c, CURLcode cc,
                                       long *delay_ms, int *rc, wv_err_t *err)
{
    if (c->sink_rc) {
        *err = c->sink_err;
        *rc = c->sink_rc;
        return S3_FAILED;
    }
    if (!c->curl_err[0])
        snprintf(c->curl_err, sizeof c->curl_err, "%s", curl_easy_strerror(cc));
    if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE) {
        *rc = wv_err_set(err, WV_EFAIL, "S3 %s %s: %s (give the CA bundle with --s3-ca-file)",
                         c->op, call_what(c), c->curl_err);
        return S3_FAILED;
    }
    c->status = 0; /* a response cut short counts as none */
    bool retryable = retryable_curl(cc) || (cc == CURLE_ABORTED_BY_CALLBACK && c->stalled);
    return retry_or_fail(s, c, retryable, WV_EFAIL, delay_ms, rc, err);
}

enum s3_verdict s3_call_judge(struct s3_store *s, struct s3_call *c, CURLcode cc, long *delay_ms,
                              int *rc, wv_err_t *err)
{
    *rc = 0;
    if (cc != CURLE_OK)
        return judge_transport(s, c, cc, delay_ms, rc, err);
    if (is_2xx(c->status) && !body_is_error(c))
        return S3_DONE;
    read_error_body(c);
    if (c->status == 412 && c->resume_from > 0) {
        *rc = wv_err_set(err, WV_EFAIL, "S3 %s %s: the object changed while it was read", c->op,
                         call_what(c));
        return S3_FAILED;
    }
    bool retry = retryable_status(c->status, c->error.code) ||
                 (is_2xx(c->status) && strcmp(c->error.code, "InternalError") == 0);
    int code = is_2xx(c->status) ? WV_EFAIL : status_code(c->status);
    return retry_or_fail(s, c, retry, code, delay_ms, rc, err);
}

int s3_call_run(struct s3_store *s, struct s3_call *c, wv_err_t *err)
{
    c->easy = s3_easy_get(s);
    int rc = 0;
    for (;;) {
        rc = s3_call_prepare(s, c, err);
        if (rc)
            break;
        CURLcode cc = curl_easy_perform(c->easy);
        long delay = 0;
        if (s3_call_judge(s, c, cc, &delay, &rc, err) != S3_RETRY)
            break;
        s3_sleep_ms(delay);
    }
    s3_easy_put(s, c->easy);
    c->easy = NULL;
    return rc;
}
