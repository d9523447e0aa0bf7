/* Just enough XML for S3's answers: ListObjectsV2 pages, error bodies, upload ids and
 * DeleteObjects results. S3's documents are flat and machine-written, so elements are found
 * by name and their text entity-decoded; no general XML parser is needed. Private to
 * storage/. */
#ifndef WALVAULT_STORAGE_S3_XML_H
#define WALVAULT_STORAGE_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* Finds the first element <name ...>...</name> (or <name/>) in [p, end). On success *content
 * and *len give its raw content and *next points just past it. */
bool s3_xml_find(const char *p, const char *end, const char *name, const char **content,
                 size_t *len, const char **next);
/* Decodes &amp; &lt; &gt; &quot; &apos; and numeric references, appending to out
 * (NUL-terminated). WV_ECORRUPT on a malformed reference. */
int s3_xml_decode(const char *raw, size_t len, buf_t *out, wv_err_t *err);
/* The decoded text of the first element called name: 1 found, 0 absent, < 0 error. */
int s3_xml_text(const char *p, const char *end, const char *name, buf_t *out, wv_err_t *err);
/* Escapes & < > " ' for element content; appends to out. */
int s3_xml_escape(buf_t *out, const char *s, wv_err_t *err);

/* What an S3 error body says; empty strings when it says nothing. */
struct s3_error_info {
    char code[64];
    char message[256];
    char region[64]; /* AuthorizationHeaderMalformed and redirects name the bucket's region */
};
void s3_xml_error(const char *body, size_t len, struct s3_error_info *info);

struct s3_list_entry {
    char *key;
    uint64_t size;
    int64_t mtime; /* LastModified, seconds since the epoch; 0 when absent */
};

struct s3_list_page {
    struct s3_list_entry *entries;
    size_t count;
    bool truncated;
    char *next_token; /* NextContinuationToken, NULL when none */
};

/* Parses one ListObjectsV2 page. A truncated page without a continuation token is
 * WV_ECORRUPT (paging would never end). */
int s3_xml_list_page(const char *body, size_t len, struct s3_list_page *page, wv_err_t *err);
void s3_list_page_free(struct s3_list_page *page);

/* "2013-09-17T18:07:53.000Z" to seconds since the epoch; -1 when malformed. */
int64_t s3_parse_iso8601(const char *s);

#endif
