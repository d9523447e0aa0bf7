/* The s3:// backend's parts, shared between its files. Private to storage/.
 *
 *   s3_conf.c       URL, endpoint, region, addressing style, credentials; open and close
 *   s3_http.c       one HTTP request to S3 on libcurl: URL, headers, signing, response
 *                   capture, retries with backoff; handle pools and the curl share
 *   s3.c            the table of functions: get, range get, head, delete, list
 *   s3_put.c        streaming writer, single PUT, put-if-absent
 *   s3_multipart.c  multipart uploads with parts in flight in parallel on curl multi
 *   s3_sign.c       SigV4 and canonical encodings; s3_xml.c  S3's XML answers */
#ifndef WALVAULT_STORAGE_S3_INTERNAL_H
#define WALVAULT_STORAGE_S3_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "storage/backend.h"
#include "storage/s3_sign.h"
#include "storage/s3_xml.h"

#define S3_PART_MIN (8u * 1024 * 1024)
#define S3_PART_MAX (5ull * 1024 * 1024 * 1024)
#define S3_MAX_PARTS 10000
/* Parts in flight per multipart upload; memory is (this + 1) x part size per writer. */
#define S3_PARALLEL_PARTS 4
/* A put-if-absent body up to this size goes in one conditional PUT where the store honours
 * If-None-Match, so WAL segments need no claim (see s3_put.c). */
#define S3_IF_ABSENT_SINGLE_MAX (64u * 1024 * 1024)
#define S3_MAX_HEADERS 12
#define S3_ERRBODY_MAX (64 * 1024)
#define S3_META_TOKEN "x-amz-meta-walvault-token"
/* Object names the backend keeps for itself, under the repository prefix; listings skip
 * them and keys may not start with '.' (as in file:// repositories). */
#define S3_RESERVED_DIR ".walvault/"

/* Whether the store honours If-None-Match: * on PUT (REJECTED: it refuses the header). */
enum s3_inm { S3_INM_UNKNOWN, S3_INM_HONOURED, S3_INM_IGNORED, S3_INM_REJECTED };

struct s3_easy_pool {
    pthread_mutex_t lock;
    CURL **free;
    size_t count, cap;
};

struct s3_store {
    char *bucket;
    char *prefix;      /* "" or "dir/sub/" */
    char *base_url;    /* scheme://host[:port] (host style: the bucket's host) */
    char *bucket_path; /* "/bucket" in path style, "" in host style */
    char *region;
    char *sigv4;  /* "aws:amz:<region>:s3" for CURLOPT_AWS_SIGV4 */
    char *key_id; /* credentials */
    char *secret;
    char *token;
    char *ca_file;
    char *sse;            /* AES256 or aws:kms, or NULL */
    char *sse_kms_id;     /* with aws:kms, or NULL */
    char *sse_headers[2]; /* the header lines of both, for every PUT and upload start */
    long retry_ms;        /* give up retrying after this long without progress */
    long stall_s;         /* a transfer without a byte for this long is cut and retried */
    CURLSH *share;        /* DNS and TLS sessions; connections stay with handles (see s3_http.c) */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    struct s3_easy_pool easy;
    atomic_int inm; /* enum s3_inm: whether the store honours If-None-Match */
};

static inline struct s3_store *s3_store_of(storage_t *st)
{
    return st->impl;
}

/* ---- one request (s3_http.c) ---- */

/* The outcome of one attempt. */
enum s3_verdict { S3_DONE, S3_FAILED, S3_RETRY };

struct s3_call {
    /* request, set by the caller */
    const char *method; /* GET HEAD PUT POST DELETE */
    const char *op;     /* for messages: "PUT", "LIST", "UPLOAD PART", ... */
    const char *key;    /* for messages: the repository key, or NULL */
    const char *object; /* object name in the bucket (prefix included); NULL: the bucket */
    const char *query;  /* canonical query (s3_query_build), or NULL */
    const char *headers[S3_MAX_HEADERS]; /* "Name: value" */
    size_t header_count;
    const void *body; /* PUT/POST body; NULL with body_len 0 for none */
    size_t body_len;
    char payload_hash[S3_SHA256_HEX_LEN + 1]; /* of the body; computed when left empty */
    bool single_shot;                         /* no retries: the caller retries the whole step */
    long timeout_ms;                          /* limit per attempt, 0 for none */
    /* where a 2xx body goes: a buffer, a sink, or a fixed range; none: discarded */
    buf_t *out;
    storage_sink_fn sink;
    void *sink_ctx;
    uint8_t *range_buf; /* range_len bytes of the object from range_off */
    size_t range_len;
    uint64_t range_off;
    /* response */
    long status;
    uint64_t content_length;
    bool has_length;
    char etag[128];
    char token[80];         /* x-amz-meta-walvault-token */
    char bucket_region[64]; /* x-amz-bucket-region, sent with redirects */
    uint64_t range_total;   /* object size from Content-Range, when given */
    struct s3_error_info error;
    uint64_t received; /* 2xx body bytes delivered, over all attempts */
    int attempts;
    bool transient; /* the failure was of a kind retried (and the retries ran out) */
    /* internal */
    CURL *easy;
    struct curl_slist *slist;
    char *url;
    size_t body_off;
    buf_t errbody;
    uint64_t attempt_received;
    uint64_t resume_from; /* streamed GET resumed at this offset with Range and If-Match */
    char resume_etag[128];
    int sink_rc;
    wv_err_t sink_err;
    int64_t fail_since_ms;
    char curl_err[CURL_ERROR_SIZE];
    long stall_ms; /* progress watch: bytes moved, and when they last changed */
    uint64_t moved;
    int64_t moved_at_ms;
    bool stalled;
};

/* Blocking: runs the call with retries on an easy handle from the pool. 0 when S3 answered
 * 2xx; otherwise WV_ENOTFOUND (404), WV_EEXISTS (412) or WV_EFAIL, with one line in err
 * naming the operation, key, HTTP status and S3's error code; c->status tells which. */
int s3_call_run(struct s3_store *s, struct s3_call *c, wv_err_t *err);
void s3_call_free(struct s3_call *c);
/* For curl multi: configure c->easy for the next attempt, then judge it once done. On
 * S3_RETRY, *delay_ms says when to try again. */
int s3_call_prepare(struct s3_store *s, struct s3_call *c, wv_err_t *err);
enum s3_verdict s3_call_judge(struct s3_store *s, struct s3_call *c, CURLcode cc, long *delay_ms,
                              int *rc, wv_err_t *err);
/* Formats the one-line error of a failed call into err; returns code. */
int s3_call_error(const struct s3_call *c, int code, wv_err_t *err);

/* curl's global state (once per process) and the store's share handle and pool. */
int s3_http_init(struct s3_store *s, wv_err_t *err);
void s3_http_cleanup(struct s3_store *s);
CURL *s3_easy_get(struct s3_store *s);
void s3_easy_put(struct s3_store *s, CURL *easy);
int64_t s3_now_ms(void);
void s3_sleep_ms(long ms);
/* Exponential backoff with full jitter for the given attempt (1, 2, ...). */
long s3_backoff_ms(int attempt);
/* 32 random hex characters (plus NUL). */
int s3_random_token(char out[33], wv_err_t *err);

/* ---- names ---- */

/* The object name of a repository key (prefix + key), malloc'ed. */
char *s3_object_name(const struct s3_store *s, const char *key);
/* WV_EUSAGE for keys with a component starting with '.': those names are the backend's. */
int s3_check_key(const char *key, wv_err_t *err);

/* ---- internal operations (s3.c) ---- */

int s3_head_object(struct s3_store *s, const char *object, const char *key, uint64_t *size,
                   char *token, size_t token_cap, wv_err_t *err);
int s3_delete_object(struct s3_store *s, const char *object, const char *key, wv_err_t *err);

/* Lists object names (prefix included) under an object-name prefix, one page at a time. */
struct s3_lister {
    struct s3_store *s;
    char *prefix;
    char *token;
    bool done;
    struct s3_list_page page;
    size_t next;
};
int s3_lister_init(struct s3_lister *l, struct s3_store *s, const char *prefix, wv_err_t *err);
/* 1 with *entry, 0 at the end, < 0 on error. */
int s3_lister_next(struct s3_lister *l, const struct s3_list_entry **entry, wv_err_t *err);
void s3_lister_free(struct s3_lister *l);

/* ---- writers (s3_put.c, s3_multipart.c) ---- */

struct s3_upload; /* a multipart upload in progress */

/* Part n (1-based) of a multipart upload: 8 MiB, doubling every 1000 parts, so 10,000 parts
 * hold more than 5 TiB and no part exceeds 5 GiB. */
size_t s3_part_size(unsigned part);

int s3_upload_begin(struct s3_store *s, const char *object, const char *key, const char *token,
                    struct s3_upload **out, wv_err_t *err);
/* Hands a full part over (the upload takes buf's memory and gives back an empty buffer of at
 * least the same capacity in *buf); blocks while all parallel slots are busy. */
int s3_upload_part(struct s3_upload *u, buf_t *buf, wv_err_t *err);
/* Waits for every part, then CompleteMultipartUpload (with If-None-Match: * if asked).
 * single_shot: no retries (the caller holds a claim, see s3_put.c). */
int s3_upload_complete(struct s3_upload *u, bool if_none_match, bool single_shot, long timeout_ms,
                       bool *transient, wv_err_t *err);
/* Waits for the parts without completing: 0 when all were stored. */
int s3_upload_flush(struct s3_upload *u, wv_err_t *err);
/* Stops the parts in flight and aborts the upload at S3 (best effort). */
void s3_upload_abort(struct s3_upload *u);
void s3_upload_free(struct s3_upload *u);

int s3_put_begin(storage_t *st, const char *key, bool if_absent, storage_writer_t **out,
                 wv_err_t *err);
int s3_put_write(storage_writer_t *w, const void *data, size_t len, wv_err_t *err);
int s3_put_commit(storage_writer_t *w, wv_err_t *err);
void s3_put_abort(storage_writer_t *w);

/* ---- configuration (s3_conf.c) ---- */

/* url is "s3://bucket[/prefix]"; *printable receives the normalised URL. */
int s3_store_new(const char *url, const struct storage_opts *opts, struct s3_store **out,
                 char **printable, wv_err_t *err);
void s3_store_free(struct s3_store *s);
/* Adds the server-side encryption headers, if configured, to a PUT or upload start. */
void s3_add_sse_headers(const struct s3_store *s, struct s3_call *c);

#endif
