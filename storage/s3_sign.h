/* AWS Signature Version 4 and the encodings it depends on. Private to storage/.
 *
 * Real requests are signed by libcurl (CURLOPT_AWS_SIGV4), which signs the path and query
 * exactly as they are given; so the backend builds both in canonical form with the functions
 * here, and this module's own signer exists to prove that claim: it is checked against AWS's
 * published test vectors, and against what curl actually sends (tests/unit/test_s3_sign.c). */
#ifndef WALVAULT_STORAGE_S3_SIGN_H
#define WALVAULT_STORAGE_S3_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define S3_SHA256_HEX_LEN 64
/* The SHA-256 of nothing: the payload hash of a request without a body. */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Makes b->data a C string (a '\0' after the last byte, not counted in len). */
int s3_buf_terminate(buf_t *b, wv_err_t *err);

void s3_sha256_hex(const void *data, size_t len, char hex[S3_SHA256_HEX_LEN + 1]);
/* Base64 of the MD5 of data, as Content-MD5 wants it (24 characters). */
void s3_md5_base64(const void *data, size_t len, char out[25]);

/* RFC 3986 percent-encoding of every byte outside A-Za-z0-9-_.~ (and '/' when keep_slash),
 * with upper-case hex: the encoding SigV4 expects of S3 object paths (keep_slash) and of
 * query names and values. Appends to out. */
int s3_uri_encode(buf_t *out, const char *s, bool keep_slash, wv_err_t *err);

struct s3_param {
    const char *name;
    const char *value; /* NULL is the same as "": either way "name=" is written */
};

/* The canonical query string: every name and value encoded, pairs sorted by encoded name
 * then value, every pair as name=value (also "uploads=" and "delete="), joined with '&'.
 * Appends to out. */
int s3_query_build(buf_t *out, const struct s3_param *params, size_t count, wv_err_t *err);

struct s3_header {
    const char *name;
    const char *value;
};

struct s3_sig_request {
    const char *method;
    const char *path;  /* canonical path, already encoded */
    const char *query; /* canonical query, "" when none */
    const struct s3_header *headers;
    size_t header_count;
    const char *payload_hash; /* hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
};

struct s3_sig_scope {
    const char *amz_date; /* "20130524T000000Z" */
    const char *region;
    const char *service; /* "s3" */
};

/* The canonical request; signed_headers receives "host;range;x-amz-date"-style names. Header
 * names are lower-cased and sorted, values trimmed with inner runs of spaces collapsed, and
 * repeated names joined with ','. */
int s3_sig_canonical_request(const struct s3_sig_request *req, buf_t *out, buf_t *signed_headers,
                             wv_err_t *err);
int s3_sig_string_to_sign(const struct s3_sig_scope *scope, const char *canonical_request,
                          buf_t *out, wv_err_t *err);
void s3_sig_signing_key(const char *secret, const struct s3_sig_scope *scope, uint8_t key[32]);
void s3_sig_signature(const uint8_t key[32], const char *string_to_sign,
                      char hex[S3_SHA256_HEX_LEN + 1]);
/* All of the above: the whole Authorization header value. */
int s3_sig_authorization(const struct s3_sig_request *req, const struct s3_sig_scope *scope,
                         const char *access_key, const char *secret, buf_t *out, wv_err_t *err);

#endif
