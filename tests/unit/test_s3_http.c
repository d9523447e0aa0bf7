/* The s3:// backend against a scripted HTTP server on 127.0.0.1: every request it sends
 * is captured, and
 *  - curl's signature is recomputed with our own SigV4 module from what was actually sent
 *    (curl's X-Amz-Date, the signed headers as sent): they must agree, so what curl signs
 *    is what S3 will check. Path and query must be canonical (decode + re-encode + sort
 *    gives them back), x-amz-content-sha256 must be the body's hash;
 *  - faults are scripted per request: status codes, resets, bodies cut short, stalls; the
 *    backend must retry what is idempotent and fail with one clear line otherwise;
 *  - multipart uploads, aborts and conditional PUTs go through the expected requests.
 * Real-server behaviour (s3rver behind the test proxy) is covered by tests/integration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/s3_sign.h"
#include "storage/storage.h"

#define KEY_ID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN "session/token+with=odd chars"
#define MAX_REQS 64
#define REQ_HEAD_MAX 16384

struct captured {
    char method[16];
    char target[4096];
    char head[REQ_HEAD_MAX]; /* header lines, "\r\n"-separated */
    uint8_t *body;
    size_t body_len;
};

enum action { REPLY, RESET, TRUNCATE, STALL };

struct reply {
    enum action action;
    const char *status; /* "200 OK" */
    const char *headers;
    const char *body;
};

struct server;
typedef struct reply (*script_fn)(struct server *srv, const struct captured *req, int nth);

struct server {
    int fd, port;
    pthread_t thread;
    volatile int stop;
    script_fn script;
    pthread_mutex_t mu;
    struct captured reqs[MAX_REQS];
    int n;
    char scratch[4096];
};

/* ---- the scripted server ---- */

static const char *find_header(const char *head, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *p = head; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(len - (size_t)(v - p)), v);
            return out;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

static int read_head(int c, char *buf, size_t cap, size_t *len)
{
    *len = 0;
    while (*len + 1 < cap) {
        ssize_t n = recv(c, buf + *len, 1, 0);
        if (n <= 0)
            return -1;
        *len += 1;
        buf[*len] = '\0';
        if (*len >= 4 && memcmp(buf + *len - 4, "\r\n\r\n", 4) == 0)
            return 0;
    }
    return -1;
}

static int read_request(int c, struct captured *r)
{
    char head[REQ_HEAD_MAX + 4200], v[64];
    size_t len;
    if (read_head(c, head, sizeof head, &len) != 0)
        return -1;
    char *eol = strstr(head, "\r\n");
    *eol = '\0';
    if (sscanf(head, "%15s %4095s", r->method, r->target) != 2)
        return -1;
    snprintf(r->head, sizeof r->head, "%s", eol + 2);
    if (find_header(r->head, "Expect", v, sizeof v) && strcasecmp(v, "100-continue") == 0)
        send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL);
    r->body_len = find_header(r->head, "Content-Length", v, sizeof v) ? strtoul(v, NULL, 10) : 0;
    r->body = malloc(r->body_len + 1);
    for (size_t got = 0; got < r->body_len;) {
        ssize_t n = recv(c, r->body + got, r->body_len - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    r->body[r->body_len] = '\0';
    return 0;
}

static void send_reply(int c, const struct reply *rep)
{
    char out[8192];
    const char *body = rep->body ? rep->body : "";
    size_t blen = strlen(body);
    if (rep->action == RESET)
        return;
    if (rep->action == STALL)
        sleep(2); /* longer than the client's stall limit of 1 s */
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
                     rep->status, blen, rep->headers ? rep->headers : "");
    send(c, out, (size_t)n, MSG_NOSIGNAL);
    send(c, body, rep->action == TRUNCATE ? blen / 2 : blen, MSG_NOSIGNAL);
}

static void serve_one(struct server *srv, int c)
{
    struct captured r = {0};
    if (read_request(c, &r) != 0) {
        free(r.body);
        return;
    }
    pthread_mutex_lock(&srv->mu);
    int nth = srv->n;
    if (srv->n < MAX_REQS)
        srv->reqs[srv->n++] = r;
    else
        free(r.body);
    pthread_mutex_unlock(&srv->mu);
    struct reply rep = srv->script(srv, &srv->reqs[nth < MAX_REQS ? nth : MAX_REQS - 1], nth);
    send_reply(c, &rep);
}

static void *server_main(void *arg)
{
    struct server *srv = arg;
    while (!srv->stop) {
        struct pollfd p = {srv->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(srv->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(srv, c);
        shutdown(c, SHUT_RDWR);
        close(c);
    }
    return NULL;
}

static struct server *server_start(script_fn script)
{
    struct server *srv = calloc(1, sizeof *srv);
    srv->script = script;
    pthread_mutex_init(&srv->mu, NULL);
    srv->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(srv->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(srv->fd, 16), 0);
    getsockname(srv->fd, (struct sockaddr *)&a, &alen);
    srv->port = ntohs(a.sin_port);
    pthread_create(&srv->thread, NULL, server_main, srv);
    return srv;
}

static void server_stop(struct server *srv)
{
    srv->stop = 1;
    pthread_join(srv->thread, NULL);
    close(srv->fd);
    for (int i = 0; i < srv->n; i++)
        free(srv->reqs[i].body);
    free(srv);
}

static storage_t *open_store(const struct server *srv, const char *retry_s)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", srv->port);
    struct storage_opts o = {.s3_endpoint = endpoint,
                             .s3_region = "eu-west-3",
                             .s3_access_key_id = KEY_ID,
                             .s3_secret_access_key = SECRET,
                             .s3_session_token = TOKEN,
                             .s3_retry_seconds = retry_s,
                             .s3_stall_seconds = "1"};
    storage_t *st = NULL;
    wv_err_t err;
    int rc = storage_open("s3://bucket/pre fix", &o, &st, &err);
    if (rc)
        fail_msg("open: %s", err.msg);
    return st;
}

/* ---- checking what was sent ---- */

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes %XX (upper-case hex only: anything else is not canonical). */
static char *pct_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            assert_true(i + 2 < len + 1 && unhex(s[i + 1]) >= 0 && unhex(s[i + 2]) >= 0);
            *o++ = (char)(unhex(s[i + 1]) * 16 + unhex(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static void check_canonical_path(const char *path)
{
    char *raw = pct_decode(path, strlen(path));
    buf_t b;
    buf_init(&b, 1 << 16);
    wv_err_t err;
    assert_int_equal(s3_uri_encode(&b, raw, true, &err), 0);
    assert_int_equal(s3_buf_terminate(&b, &err), 0);
    assert_string_equal((char *)b.data, path);
    buf_free(&b);
    free(raw);
}

static void check_canonical_query(const char *query)
{
    struct s3_param params[16];
    char *names[16], *values[16];
    size_t n = 0;
    for (const char *p = query; *p && n < 16; n++) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        assert_non_null(eq); /* name=value, always */
        names[n] = pct_decode(p, (size_t)(eq - p));
        values[n] = pct_decode(eq + 1, (size_t)(end - eq - 1));
        params[n] = (struct s3_param){names[n], values[n]};
        p = amp ? amp + 1 : end;
    }
    buf_t b;
    buf_init(&b, 1 << 16);
    wv_err_t err;
    assert_int_equal(s3_query_build(&b, params, n, &err), 0);
    assert_int_equal(s3_buf_terminate(&b, &err), 0);
    assert_string_equal((char *)b.data, query);
    buf_free(&b);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        free(values[i]);
    }
}

struct auth_parts {
    char date8[9], region[64], signed_headers[1024], signature[65];
};

static void parse_authorization(const char *auth, struct auth_parts *a)
{
    const char *cred = strstr(auth, "Credential=" KEY_ID "/");
    assert_non_null(cred);
    assert_int_equal(
        sscanf(cred + strlen("Credential=" KEY_ID "/"), "%8[0-9]/%63[^/]/s3/", a->date8, a->region),
        2);
    const char *sh = strstr(auth, "SignedHeaders="), *sig = strstr(auth, "Signature=");
    assert_non_null(sh);
    assert_non_null(sig);
    assert_int_equal(sscanf(sh + 14, "%1023[^,]", a->signed_headers), 1);
    assert_int_equal(sscanf(sig + 10, "%64[0-9a-f]", a->signature), 1);
}

static void check_signature(const struct captured *r)
{
    char auth[2048], date[32], sha[80], values[16][1024];
    assert_non_null(find_header(r->head, "Authorization", auth, sizeof auth));
    assert_non_null(find_header(r->head, "X-Amz-Date", date, sizeof date));
    assert_non_null(find_header(r->head, "x-amz-content-sha256", sha, sizeof sha));
    assert_null(strstr(r->head, "Expect:\r\n")); /* an empty Expect: would be signed, not sent */
    char body_sha[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex(r->body, r->body_len, body_sha);
    assert_string_equal(sha, body_sha);
    struct auth_parts a;
    parse_authorization(auth, &a);
    assert_memory_equal(a.date8, date, 8);
    assert_string_equal(a.region, "eu-west-3");
    struct s3_header headers[16];
    size_t n = 0;
    char *list = strdup(a.signed_headers), *save = NULL;
    for (char *name = strtok_r(list, ";", &save); name && n < 16;
         name = strtok_r(NULL, ";", &save), n++) {
        assert_non_null(find_header(r->head, name, values[n], sizeof values[n]));
        headers[n] = (struct s3_header){strdup(name), values[n]};
    }
    assert_non_null(strstr(a.signed_headers, "x-amz-security-token"));
    char *q = strchr(r->target, '?');
    char path[4096];
    snprintf(path, sizeof path, "%.*s", q ? (int)(q - r->target) : (int)strlen(r->target),
             r->target);
    check_canonical_path(path);
    if (q)
        check_canonical_query(q + 1);
    struct s3_sig_request req = {r->method, path, q ? q + 1 : "", headers, n, sha};
    struct s3_sig_scope scope = {date, "eu-west-3", "s3"};
    buf_t expect;
    buf_init(&expect, 1 << 16);
    wv_err_t err;
    assert_int_equal(s3_sig_authorization(&req, &scope, KEY_ID, SECRET, &expect, &err), 0);
    assert_string_equal((char *)expect.data, auth);
    buf_free(&expect);
    for (size_t i = 0; i < n; i++)
        free((char *)headers[i].name);
    free(list);
}

static void check_all_signatures(struct server *srv)
{
    for (int i = 0; i < srv->n; i++)
        check_signature(&srv->reqs[i]);
}

static bool target_has(const struct captured *r, const char *s)
{
    return strstr(r->target, s) != NULL;
}

/* ---- scripts ---- */

static const struct reply ok = {REPLY, "200 OK", "ETag: \"e1\"\r\n", NULL};

static struct reply error_reply(const char *status, const char *code, const char *msg,
                                char *scratch)
{
    snprintf(scratch, 4096,
             "<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>%s</Message>"
             "<RequestId>1</RequestId></Error>",
             code, msg);
    return (struct reply){REPLY, status, "Content-Type: application/xml\r\n", scratch};
}

static struct reply script_ok(struct server *srv, const struct captured *r, int nth)
{
    (void)nth;
    if (strcmp(r->method, "GET") == 0 && target_has(r, "list-type=2"))
        return (struct reply){REPLY, "200 OK", NULL,
                              "<ListBucketResult><IsTruncated>false</IsTruncated>"
                              "<Contents><Key>pre fix/a&amp;b</Key><Size>3</Size></Contents>"
                              "<Contents><Key>pre fix/.walvault/x</Key><Size>0</Size></Contents>"
                              "</ListBucketResult>"};
    if (strcmp(r->method, "POST") == 0)
        return (struct reply){REPLY, "200 OK", NULL, "<DeleteResult></DeleteResult>"};
    if (strcmp(r->method, "GET") == 0) {
        snprintf(srv->scratch, sizeof srv->scratch, "abcdefghij");
        return (struct reply){REPLY, "206 Partial Content", "Content-Range: bytes 2-4/10\r\n",
                              "cde"};
    }
    if (strcmp(r->method, "HEAD") == 0)
        return (struct reply){REPLY, "200 OK", NULL, NULL};
    return ok;
}

static const char awkward[] = "a b/c+d=e:f&g~h/\xc3\xbc\xe2\x82\xac/100%!$'()*,;@[]";

static void test_curl_signs_as_we_do(void **state)
{
    (void)state;
    struct server *srv = server_start(script_ok);
    storage_t *st = open_store(srv, "5");
    wv_err_t err;
    assert_int_equal(storage_put(st, awkward, "hello", 5, false, &err), 0);
    uint64_t size;
    assert_int_equal(storage_head(st, awkward, &size, &err), 0);
    char range[3];
    assert_int_equal(storage_get_range(st, awkward, 2, 3, range, &err), 0);
    assert_memory_equal(range, "cde", 3);
    storage_iter_t *it;
    const char *key;
    assert_int_equal(storage_list_open(st, "a b/c+d=e:f&g", &it, &err), 0);
    assert_int_equal(storage_iter_next(it, &key, &size, &err), 1);
    assert_string_equal(key, "a&b");
    assert_int_equal(storage_iter_next(it, &key, &size, &err), 0); /* .walvault/ is skipped */
    storage_iter_close(it);
    const char *keys[] = {awkward, "x<y>&z"};
    assert_int_equal(storage_delete_many(st, keys, 2, &err), 0);
    assert_int_equal(storage_delete(st, awkward, &err), 0);
    storage_close(st);

    assert_int_equal(srv->n, 6);
    check_all_signatures(srv);
    assert_string_equal(srv->reqs[0].target,
                        "/bucket/pre%20fix/a%20b/c%2Bd%3De%3Af%26g~h/%C3%BC%E2%82%AC/"
                        "100%25%21%24%27%28%29%2A%2C%3B%40%5B%5D");
    assert_string_equal(srv->reqs[3].target, "/bucket?list-type=2&max-keys=1000&"
                                             "prefix=pre%20fix%2Fa%20b%2Fc%2Bd%3De%3Af%26g");
    /* DeleteObjects: Content-MD5 of the body, keys escaped and prefixed */
    const struct captured *del = &srv->reqs[4];
    char md5[64], want[25];
    assert_string_equal(del->target, "/bucket?delete=");
    assert_non_null(find_header(del->head, "Content-MD5", md5, sizeof md5));
    s3_md5_base64(del->body, del->body_len, want);
    assert_string_equal(md5, want);
    assert_non_null(strstr((char *)del->body, "<Key>pre fix/x&lt;y&gt;&amp;z</Key>"));
    server_stop(srv);
}

/* 503, then a reset connection, then a reply cut short, then success. */
static struct reply script_flaky_put(struct server *srv, const struct captured *r, int nth)
{
    (void)r;
    if (nth == 0)
        return error_reply("503 Slow Down", "SlowDown", "Please reduce your request rate.",
                           srv->scratch);
    if (nth == 1)
        return (struct reply){RESET, NULL, NULL, NULL};
    if (nth == 2)
        return (struct reply){TRUNCATE, "200 OK", NULL, "<unused>0123456789</unused>"};
    return ok;
}

static void test_retries_until_success(void **state)
{
    (void)state;
    struct server *srv = server_start(script_flaky_put);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    int rc = storage_put(st, "nodes/n/wal/1", "0123456789", 10, false, &err);
    if (rc)
        fail_msg("%s", err.msg);
    storage_close(st);
    assert_int_equal(srv->n, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(srv->reqs[i].method, "PUT");
        assert_int_equal(srv->reqs[i].body_len, 10);
    }
    check_all_signatures(srv);
    server_stop(srv);
}

static struct reply script_denied(struct server *srv, const struct captured *r, int nth)
{
    (void)r;
    (void)nth;
    return error_reply("403 Forbidden", "AccessDenied", "Access Denied", srv->scratch);
}

static void test_access_denied_is_one_line_and_not_retried(void **state)
{
    (void)state;
    struct server *srv = server_start(script_denied);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    assert_int_equal(storage_put(st, "nodes/db1/wal/00000001/x", "v", 1, false, &err), WV_EFAIL);
    assert_string_equal(err.msg, "S3 PUT nodes/db1/wal/00000001/x: HTTP 403 AccessDenied (Access "
                                 "Denied); access denied: check the S3 credentials and the "
                                 "bucket policy");
    assert_int_equal(srv->n, 1);
    uint64_t size;
    assert_int_equal(storage_head(st, "k", &size, &err), WV_EFAIL);
    assert_string_equal(err.msg, "S3 HEAD k: HTTP 403"); /* a HEAD answer has no body */
    storage_close(st);
    server_stop(srv);
}

static struct reply script_down(struct server *srv, const struct captured *r, int nth)
{
    (void)r;
    (void)nth;
    return error_reply("503 Service Unavailable", "ServiceUnavailable", "Try again", srv->scratch);
}

static void test_gives_up_after_the_budget(void **state)
{
    (void)state;
    struct server *srv = server_start(script_down);
    storage_t *st = open_store(srv, "1");
    wv_err_t err;
    assert_int_equal(storage_put(st, "k", "v", 1, false, &err), WV_EFAIL);
    assert_non_null(strstr(err.msg, "S3 PUT k: HTTP 503 ServiceUnavailable (Try again)"));
    assert_non_null(strstr(err.msg, "(gave up after "));
    assert_true(srv->n >= 2);
    storage_close(st);
    server_stop(srv);
}

/* The first answer is cut after 4 of 10 bytes; the GET resumes at 4 on the same ETag. */
static struct reply script_resume(struct server *srv, const struct captured *r, int nth)
{
    char v[128];
    if (nth == 0)
        return (struct reply){TRUNCATE, "200 OK", "ETag: \"abc\"\r\n", "01234567"};
    assert_non_null(find_header(r->head, "Range", v, sizeof v));
    assert_string_equal(v, "bytes=4-");
    assert_non_null(find_header(r->head, "If-Match", v, sizeof v));
    assert_string_equal(v, "\"abc\"");
    (void)srv;
    return (struct reply){REPLY, "206 Partial Content",
                          "ETag: \"abc\"\r\nContent-Range: bytes 4-7/8\r\n", "4567"};
}

static int collect(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return buf_append(ctx, data, len, err);
}

static void test_get_resumes_where_it_stopped(void **state)
{
    (void)state;
    struct server *srv = server_start(script_resume);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    buf_t got;
    buf_init(&got, 1024);
    int rc = storage_get_stream(st, "obj", collect, &got, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(got.len, 8);
    assert_memory_equal(got.data, "01234567", 8);
    buf_free(&got);
    storage_close(st);
    assert_int_equal(srv->n, 2);
    check_all_signatures(srv);
    server_stop(srv);
}

static struct reply script_stall(struct server *srv, const struct captured *r, int nth)
{
    (void)srv;
    (void)r;
    return nth == 0 ? (struct reply){STALL, "200 OK", NULL, "late"} : ok;
}

static void test_stalled_transfer_is_retried(void **state)
{
    (void)state;
    struct server *srv = server_start(script_stall);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    uint64_t size;
    assert_int_equal(storage_head(st, "k", &size, &err), 0);
    assert_true(srv->n >= 2); /* the server answers one connection at a time */
    storage_close(st);
    server_stop(srv);
}

/* ---- multipart ---- */

#define UPLOAD_ID "u/1+2=3"
#define UPLOAD_ID_Q "uploadId=u%2F1%2B2%3D3"

static struct reply script_multipart(struct server *srv, const struct captured *r, int nth)
{
    (void)nth;
    static int part2_failures;
    if (strcmp(r->method, "POST") == 0 && target_has(r, "?uploads="))
        return (struct reply){REPLY, "200 OK", NULL,
                              "<InitiateMultipartUploadResult><UploadId>u/1+2=3</UploadId>"
                              "</InitiateMultipartUploadResult>"};
    if (strcmp(r->method, "PUT") == 0 && target_has(r, "partNumber=2&") && part2_failures++ == 0)
        return error_reply("500 Internal Server Error", "InternalError", "oops", srv->scratch);
    if (strcmp(r->method, "PUT") == 0) {
        snprintf(srv->scratch, sizeof srv->scratch, "ETag: \"etag-%s\"\r\n",
                 target_has(r, "partNumber=1&") ? "one" : "two");
        return (struct reply){REPLY, "200 OK", srv->scratch, NULL};
    }
    if (strcmp(r->method, "POST") == 0 && target_has(r, UPLOAD_ID_Q))
        return (struct reply){REPLY, "200 OK", NULL,
                              "<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag>"
                              "</CompleteMultipartUploadResult>"};
    return (struct reply){REPLY, "405 Method Not Allowed", NULL, NULL};
}

static int put_streamed(storage_t *st, const char *key, size_t size, wv_err_t *err)
{
    storage_writer_t *w;
    int rc = storage_put_begin(st, key, false, &w, err);
    uint8_t chunk[65536];
    for (size_t off = 0; !rc && off < size; off += sizeof chunk) {
        size_t n = size - off < sizeof chunk ? size - off : sizeof chunk;
        memset(chunk, (int)(off / sizeof chunk), n);
        rc = storage_put_write(w, chunk, n, err);
    }
    if (rc) {
        storage_put_abort(w);
        return rc;
    }
    return storage_put_commit(w, err);
}

static void test_multipart_upload(void **state)
{
    (void)state;
    struct server *srv = server_start(script_multipart);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    size_t size = (8u << 20) + 100;
    int rc = put_streamed(st, "packs/p1", size, &err);
    if (rc)
        fail_msg("%s", err.msg);
    storage_close(st);
    assert_int_equal(srv->n, 5); /* start, part 1, part 2 twice, complete */
    check_all_signatures(srv);
    size_t sent = 0;
    const struct captured *complete = NULL;
    for (int i = 0; i < srv->n; i++) {
        const struct captured *r = &srv->reqs[i];
        if (strcmp(r->method, "PUT") == 0 && target_has(r, UPLOAD_ID_Q))
            sent += r->body_len;
        if (strcmp(r->method, "POST") == 0 && target_has(r, UPLOAD_ID_Q))
            complete = r;
    }
    assert_int_equal(sent, size + 100); /* part 2 twice */
    assert_non_null(complete);
    assert_string_equal((char *)complete->body,
                        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;"
                        "etag-one&quot;</ETag></Part><Part><PartNumber>2</PartNumber><ETag>&quot;"
                        "etag-two&quot;</ETag></Part></CompleteMultipartUpload>");
    server_stop(srv);
}

static struct reply script_part_denied(struct server *srv, const struct captured *r, int nth)
{
    (void)nth;
    if (strcmp(r->method, "POST") == 0)
        return (struct reply){REPLY, "200 OK", NULL,
                              "<InitiateMultipartUploadResult><UploadId>" UPLOAD_ID
                              "</UploadId></InitiateMultipartUploadResult>"};
    if (strcmp(r->method, "PUT") == 0)
        return error_reply("403 Forbidden", "AccessDenied", "Access Denied", srv->scratch);
    return (struct reply){REPLY, "405 Method Not Allowed", NULL, NULL}; /* s3rver's abort */
}

static void test_failed_upload_is_aborted(void **state)
{
    (void)state;
    struct server *srv = server_start(script_part_denied);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    assert_int_equal(put_streamed(st, "packs/p2", 20u << 20, &err), WV_EFAIL);
    assert_non_null(strstr(err.msg, "S3 UPLOAD PART packs/p2: HTTP 403 AccessDenied"));
    storage_close(st);
    const struct captured *last = &srv->reqs[srv->n - 1];
    assert_string_equal(last->method, "DELETE");
    assert_true(target_has(last, UPLOAD_ID_Q));
    check_all_signatures(srv);
    server_stop(srv);
}

/* ---- conditional PUT where the store honours If-None-Match ---- */

static struct reply script_conditional(struct server *srv, const struct captured *r, int nth)
{
    (void)srv;
    if (nth == 0) /* the probe object did not exist yet */
        return ok;
    if (nth == 1 || target_has(r, "/taken"))
        return (struct reply){REPLY, "412 Precondition Failed", NULL,
                              "<Error><Code>PreconditionFailed</Code></Error>"};
    char v[64];
    if (strcmp(r->method, "PUT") == 0)
        assert_non_null(find_header(r->head, "If-None-Match", v, sizeof v));
    return ok;
}

static void test_conditional_put(void **state)
{
    (void)state;
    struct server *srv = server_start(script_conditional);
    storage_t *st = open_store(srv, "10");
    wv_err_t err;
    assert_int_equal(storage_put(st, "free", "v", 1, true, &err), 0);
    assert_int_equal(storage_put(st, "taken", "v", 1, true, &err), WV_EEXISTS);
    assert_string_equal(err.msg, "object already exists: taken");
    storage_close(st);
    assert_int_equal(srv->n, 4); /* two probes, then one PUT each: no claims needed */
    assert_true(target_has(&srv->reqs[0], "/.walvault/if-none-match-probe"));
    char v[128];
    assert_non_null(find_header(srv->reqs[2].head, "x-amz-meta-walvault-token", v, sizeof v));
    assert_int_equal(strlen(v), 32);
    check_all_signatures(srv);
    server_stop(srv);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_signs_as_we_do),
        cmocka_unit_test(test_retries_until_success),
        cmocka_unit_test(test_access_denied_is_one_line_and_not_retried),
        cmocka_unit_test(test_gives_up_after_the_budget),
        cmocka_unit_test(test_get_resumes_where_it_stopped),
        cmocka_unit_test(test_stalled_transfer_is_retried),
        cmocka_unit_test(test_multipart_upload),
        cmocka_unit_test(test_failed_upload_is_aborted),
        cmocka_unit_test(test_conditional_put),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
