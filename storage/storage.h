/* The object-store interface. Backends (file:// here, s3:// later) sit behind a table of
 * functions; nothing above this header knows which one is in use. Keys are '/'-separated
 * relative names ("nodes/db1/wal/00000001/000000010000000000000003"). All functions are
 * safe to call from several threads on one storage_t. */
#ifndef WALVAULT_STORAGE_STORAGE_H
#define WALVAULT_STORAGE_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

typedef struct storage storage_t;
typedef struct storage_writer storage_writer_t;
typedef struct storage_iter storage_iter_t;

/* Options for backends that need more than a URL (S3). NULL means "not given": the S3
 * backend then falls back to AWS_* environment variables, ~/.aws/credentials and defaults. */
struct storage_opts {
    const char *s3_endpoint;  /* http(s)://host[:port]; default https://s3.<region>.amazonaws.com */
    const char *s3_region;    /* else AWS_REGION, AWS_DEFAULT_REGION, us-east-1 */
    const char *s3_uri_style; /* path or host; default host, path for IP and localhost */
    const char *s3_ca_file;   /* CA bundle to verify the endpoint's certificate */
    const char *s3_profile;   /* profile in the shared credentials file */
    const char *s3_access_key_id; /* credentials (from the config file) */
    const char *s3_secret_access_key;
    const char *s3_session_token;
    const char *s3_sse;            /* server-side encryption: AES256 or aws:kms */
    const char *s3_sse_kms_key_id; /* KMS key for aws:kms */
    const char *s3_retry_seconds;  /* give up after this long without progress (default 60) */
    const char *s3_stall_seconds;  /* cut a transfer idle this long and retry (default 30) */
};

/* Receives the bytes of a streamed get, in order. A non-zero return stops the get and is
 * returned by it. */
typedef int (*storage_sink_fn)(void *ctx, const void *data, size_t len, wv_err_t *err);

/* url: "file:///abs/dir" (or a plain absolute path), or "s3://bucket[/prefix]". */
int storage_open(const char *url, const struct storage_opts *opts, storage_t **out, wv_err_t *err);
void storage_close(storage_t *st);
/* A printable description of the store, for messages ("file:///var/backups"). */
const char *storage_url(const storage_t *st);

/* Streaming put of unknown length: nothing is visible under key until commit succeeds.
 * With if_absent, commit fails with WV_EEXISTS (and leaves the existing object alone) when
 * key already exists; the check and the publish are one atomic step. */
int storage_put_begin(storage_t *st, const char *key, bool if_absent, storage_writer_t **out,
                      wv_err_t *err);
int storage_put_write(storage_writer_t *w, const void *data, size_t len, wv_err_t *err);
int storage_put_commit(storage_writer_t *w, wv_err_t *err); /* frees w, success or not */
void storage_put_abort(storage_writer_t *w);                /* frees w */
int storage_put(storage_t *st, const char *key, const void *data, size_t len, bool if_absent,
                wv_err_t *err);

/* WV_ENOTFOUND when absent (the message names the key). */
int storage_get(storage_t *st, const char *key, buf_t *out, size_t max, wv_err_t *err);
int storage_get_stream(storage_t *st, const char *key, storage_sink_fn sink, void *ctx,
                       wv_err_t *err);
/* Reads exactly len bytes at off; a short object is WV_ECORRUPT. */
int storage_get_range(storage_t *st, const char *key, uint64_t off, size_t len, void *out,
                      wv_err_t *err);
int storage_head(storage_t *st, const char *key, uint64_t *size, wv_err_t *err);
/* Deleting an absent key succeeds. */
int storage_delete(storage_t *st, const char *key, wv_err_t *err);
/* Deletes count keys (absent ones succeed), in batches where the store has them (S3: 1000
 * keys per request). Stops at the first failure. */
int storage_delete_many(storage_t *st, const char *const *keys, size_t count, wv_err_t *err);

/* Lists keys that start with prefix, in lexical order, one at a time.
 * storage_iter_next returns 1 with *key (valid until the next call) and *size, 0 at the end,
 * or a negative error. */
int storage_list_open(storage_t *st, const char *prefix, storage_iter_t **out, wv_err_t *err);
int storage_iter_next(storage_iter_t *it, const char **key, uint64_t *size, wv_err_t *err);
void storage_iter_close(storage_iter_t *it);

#endif
