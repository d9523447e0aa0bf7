/* SigV4 (canonical request, string to sign, signing key, signature) and the canonical
 * encodings of S3 paths and queries. Hashes come from OpenSSL's libcrypto, which libcurl
 * links anyway and which is several times faster at SHA-256 than the alternatives here. */
#include "storage/s3_sign.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/sha.h>

#define SIG_ALGORITHM "AWS4-HMAC-SHA256"
#define SIG_TERMINATOR "aws4_request"
#define SIG_TEXT_MAX (1u << 20)

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const uint8_t *in, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int s3_buf_terminate(buf_t *b, wv_err_t *err)
{
    int rc = buf_reserve(b, 1, err);
    if (rc)
        return rc;
    b->data[b->len] = '\0';
    return 0;
}

void s3_sha256_hex(const void *data, size_t len, char hex[S3_SHA256_HEX_LEN + 1])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    to_hex(md, sizeof md, hex);
}

void s3_md5_base64(const void *data, size_t len, char out[25])
{
    uint8_t md[16];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, 16);
}

static void hmac_sha256(const void *key, size_t key_len, const char *msg, uint8_t out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out, &n);
}

/* ---- encoding ---- */

static bool unreserved(unsigned char c)
{
    /* ASCII ranges, not isalnum(): the locale must not change what is signed */
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

int s3_uri_encode(buf_t *out, const char *s, bool keep_slash, wv_err_t *err)
{
    static const char upper[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char enc[3] = {'%', upper[*p >> 4], upper[*p & 15]};
        int rc = (unreserved(*p) || (keep_slash && *p == '/')) ? buf_append(out, p, 1, err)
                                                               : buf_append(out, enc, 3, err);
        if (rc)
            return rc;
    }
    return 0;
}

struct encoded_param {
    buf_t name;
    buf_t value;
};

static int compare_params(const void *a, const void *b)
{
    const struct encoded_param *x = a, *y = b;
    int c = strcmp((const char *)x->name.data, (const char *)y->name.data);
    return c ? c : strcmp((const char *)x->value.data, (const char *)y->value.data);
}

static int encode_param(struct encoded_param *e, const struct s3_param *p, wv_err_t *err)
{
    buf_init(&e->name, SIG_TEXT_MAX);
    buf_init(&e->value, SIG_TEXT_MAX);
    int rc = s3_uri_encode(&e->name, p->name, false, err);
    if (!rc)
        rc = s3_uri_encode(&e->value, p->value ? p->value : "", false, err);
    if (!rc)
        rc = s3_buf_terminate(&e->name, err);
    if (!rc)
        rc = s3_buf_terminate(&e->value, err);
    return rc;
}

static int join_params(buf_t *out, const struct encoded_param *e, size_t count, wv_err_t *err)
{
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++) {
        if (i > 0)
            rc = buf_append(out, "&", 1, err);
        if (!rc)
            rc = buf_append(out, e[i].name.data, e[i].name.len, err);
        if (!rc)
            rc = buf_append(out, "=", 1, err);
        if (!rc)
            rc = buf_append(out, e[i].value.data, e[i].value.len, err);
    }
    return rc;
}

int s3_query_build(buf_t *out, const struct s3_param *params, size_t count, wv_err_t *err)
{
    if (count == 0)
        return 0;
    struct encoded_param *e = calloc(count, sizeof *e);
    if (!e)
        return wv_err_set(err, WV_EFAIL, "out of memory building an S3 query");
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++)
        rc = encode_param(&e[i], &params[i], err);
    if (!rc) {
        qsort(e, count, sizeof *e, compare_params);
        rc = join_params(out, e, count, err);
    }
    for (size_t i = 0; i < count; i++) {
        buf_free(&e[i].name);
        buf_free(&e[i].value);
    }
    free(e);
    return rc;
}

/* ---- canonical headers ---- */

struct lc_header {
    char *name;  /* lower case */
    buf_t value; /* trimmed, runs of spaces collapsed */
};

static int compare_headers(const void *a, const void *b)
{
    const struct lc_header *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static int trim_value(buf_t *out, const char *v, wv_err_t *err)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t len = strlen(v);
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        bool space = v[i] == ' ' || v[i] == '\t';
        if (space && i > 0 && (v[i - 1] == ' ' || v[i - 1] == '\t'))
            continue;
        rc = buf_append(out, space ? " " : &v[i], 1, err);
    }
    return rc;
}

static int lower_headers(const struct s3_sig_request *req, struct lc_header *h, wv_err_t *err)
{
    for (size_t i = 0; i < req->header_count; i++) {
        h[i].name = strdup(req->headers[i].name);
        buf_init(&h[i].value, SIG_TEXT_MAX);
        if (!h[i].name)
            return wv_err_set(err, WV_EFAIL, "out of memory signing a request");
        for (char *p = h[i].name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        int rc = trim_value(&h[i].value, req->headers[i].value, err);
        if (rc)
            return rc;
    }
    qsort(h, req->header_count, sizeof *h, compare_headers);
    return 0;
}

/* Writes "name:v1,v2\n" per distinct name into out and "a;b;c" into names. */
static int write_headers(const struct lc_header *h, size_t n, buf_t *out, buf_t *names,
                         wv_err_t *err)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        bool same = i > 0 && strcmp(h[i].name, h[i - 1].name) == 0;
        if (same) {
            out->len--; /* drop the '\n' of the previous value */
            rc = buf_append(out, ",", 1, err);
        } else {
            if (i > 0)
                rc = buf_append(names, ";", 1, err);
            if (!rc)
                rc = buf_append_str(names, h[i].name, err);
            if (!rc)
                rc = buf_append_str(out, h[i].name, err);
            if (!rc)
                rc = buf_append(out, ":", 1, err);
        }
        if (!rc)
            rc = buf_append(out, h[i].value.data, h[i].value.len, err);
        if (!rc)
            rc = buf_append(out, "\n", 1, err);
    }
    return rc;
}

static int append_line(buf_t *out, const char *s, wv_err_t *err)
{
    int rc = buf_append_str(out, s, err);
    return rc ? rc : buf_append(out, "\n", 1, err);
}

int s3_sig_canonical_request(const struct s3_sig_request *req, buf_t *out, buf_t *signed_headers,
                             wv_err_t *err)
{
    size_t n = req->header_count;
    struct lc_header *h = calloc(n ? n : 1, sizeof *h);
    if (!h)
        return wv_err_set(err, WV_EFAIL, "out of memory signing a request");
    int rc = lower_headers(req, h, err);
    if (!rc)
        rc = append_line(out, req->method, err);
    if (!rc)
        rc = append_line(out, req->path, err);
    if (!rc)
        rc = append_line(out, req->query ? req->query : "", err);
    if (!rc)
        rc = write_headers(h, n, out, signed_headers, err);
    if (!rc)
        rc = buf_append(out, "\n", 1, err);
    if (!rc)
        rc = buf_append(out, signed_headers->data, signed_headers->len, err);
    if (!rc)
        rc = buf_append(out, "\n", 1, err);
    if (!rc)
        rc = buf_append_str(out, req->payload_hash, err);
    if (!rc)
        rc = s3_buf_terminate(out, err);
    if (!rc)
        rc = s3_buf_terminate(signed_headers, err);
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        buf_free(&h[i].value);
    }
    free(h);
    return rc;
}

/* ---- signing ---- */

static int append_scope(buf_t *out, const struct s3_sig_scope *scope, wv_err_t *err)
{
    int rc = buf_append(out, scope->amz_date, 8, err);
    const char *parts[] = {"/", scope->region, "/", scope->service, "/", SIG_TERMINATOR};
    for (size_t i = 0; i < sizeof parts / sizeof *parts && !rc; i++)
        rc = buf_append_str(out, parts[i], err);
    return rc;
}

int s3_sig_string_to_sign(const struct s3_sig_scope *scope, const char *canonical_request,
                          buf_t *out, wv_err_t *err)
{
    if (strlen(scope->amz_date) != 16)
        return wv_err_set(err, WV_EUSAGE, "invalid x-amz-date \"%s\"", scope->amz_date);
    char hash[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex(canonical_request, strlen(canonical_request), hash);
    int rc = append_line(out, SIG_ALGORITHM, err);
    if (!rc)
        rc = append_line(out, scope->amz_date, err);
    if (!rc)
        rc = append_scope(out, scope, err);
    if (!rc)
        rc = buf_append(out, "\n", 1, err);
    if (!rc)
        rc = buf_append_str(out, hash, err);
    return rc ? rc : s3_buf_terminate(out, err);
}

void s3_sig_signing_key(const char *secret, const struct s3_sig_scope *scope, uint8_t key[32])
{
    char date[9];
    memcpy(date, scope->amz_date, 8);
    date[8] = '\0';
    size_t slen = strlen(secret);
    char *k0 = malloc(slen + 5);
    uint8_t k1[32], k2[32], k3[32];
    if (!k0) {
        memset(key, 0, 32);
        return;
    }
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, slen + 1);
    hmac_sha256(k0, slen + 4, date, k1);
    hmac_sha256(k1, 32, scope->region, k2);
    hmac_sha256(k2, 32, scope->service, k3);
    hmac_sha256(k3, 32, SIG_TERMINATOR, key);
    OPENSSL_cleanse(k0, slen + 4);
    OPENSSL_cleanse(k1, sizeof k1);
    free(k0);
}

void s3_sig_signature(const uint8_t key[32], const char *string_to_sign,
                      char hex[S3_SHA256_HEX_LEN + 1])
{
    uint8_t sig[32];
    hmac_sha256(key, 32, string_to_sign, sig);
    to_hex(sig, sizeof sig, hex);
}

static int format_authorization(const struct s3_sig_scope *scope, const char *access_key,
                                const buf_t *names, const char *signature, buf_t *out,
                                wv_err_t *err)
{
    int rc = buf_append_str(out, SIG_ALGORITHM " Credential=", err);
    if (!rc)
        rc = buf_append_str(out, access_key, err);
    if (!rc)
        rc = buf_append(out, "/", 1, err);
    if (!rc)
        rc = append_scope(out, scope, err);
    if (!rc)
        rc = buf_append_str(out, ", SignedHeaders=", err);
    if (!rc)
        rc = buf_append(out, names->data, names->len, err);
    if (!rc)
        rc = buf_append_str(out, ", Signature=", err);
    if (!rc)
        rc = buf_append_str(out, signature, err);
    return rc ? rc : s3_buf_terminate(out, err);
}

int s3_sig_authorization(const struct s3_sig_request *req, const struct s3_sig_scope *scope,
                         const char *access_key, const char *secret, buf_t *out, wv_err_t *err)
{
    buf_t creq, names, sts;
    buf_init(&creq, SIG_TEXT_MAX);
    buf_init(&names, SIG_TEXT_MAX);
    buf_init(&sts, SIG_TEXT_MAX);
    int rc = s3_sig_canonical_request(req, &creq, &names, err);
    if (!rc)
        rc = s3_sig_string_to_sign(scope, (const char *)creq.data, &sts, err);
    if (!rc) {
        uint8_t key[32];
        char signature[S3_SHA256_HEX_LEN + 1];
        s3_sig_signing_key(secret, scope, key);
        s3_sig_signature(key, (const char *)sts.data, signature);
        OPENSSL_cleanse(key, sizeof key);
        rc = format_authorization(scope, access_key, &names, signature, out, err);
    }
    buf_free(&creq);
    buf_free(&names);
    buf_free(&sts);
    return rc;
}
