/* Minimal, bounded XML reading for S3 responses (see s3_xml.h). */
#include "storage/s3_xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/s3_sign.h"

#define XML_TEXT_MAX (64 * 1024)
#define LIST_PAGE_MAX 100000

/* ---- finding elements ---- */

static bool name_ends(char c)
{
    return c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The start of "<name" followed by the end of the name, or NULL. */
static const char *find_open(const char *p, const char *end, const char *name, size_t nlen)
{
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt || (size_t)(end - lt) < nlen + 2)
            return NULL;
        if (memcmp(lt + 1, name, nlen) == 0 && name_ends(lt[1 + nlen]))
            return lt;
        p = lt + 1;
    }
    return NULL;
}

static const char *find_close(const char *p, const char *end, const char *name, size_t nlen)
{
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt || (size_t)(end - lt) < nlen + 3)
            return NULL;
        if (lt[1] == '/' && memcmp(lt + 2, name, nlen) == 0 && lt[2 + nlen] == '>')
            return lt;
        p = lt + 1;
    }
    return NULL;
}

bool s3_xml_find(const char *p, const char *end, const char *name, const char **content,
                 size_t *len, const char **next)
{
    size_t nlen = strlen(name);
    const char *open = find_open(p, end, name, nlen);
    if (!open)
        return false;
    const char *gt = memchr(open, '>', (size_t)(end - open));
    if (!gt)
        return false;
    if (gt[-1] == '/') { /* <name/> */
        *content = gt + 1;
        *len = 0;
        *next = gt + 1;
        return true;
    }
    const char *close = find_close(gt + 1, end, name, nlen);
    if (!close)
        return false;
    *content = gt + 1;
    *len = (size_t)(close - (gt + 1));
    *next = close + nlen + 3;
    return true;
}

/* ---- entities ---- */

static int put_utf8(buf_t *out, unsigned long cp, wv_err_t *err)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return buf_append(out, b, n, err);
}

static int bad_entity(const char *ent, size_t len, wv_err_t *err)
{
    return wv_err_set(err, WV_ECORRUPT, "malformed XML from S3: bad entity \"%.*s\"",
                      (int)(len > 16 ? 16 : len), ent);
}

static int decode_numeric(const char *ent, size_t len, buf_t *out, wv_err_t *err)
{
    /* ent is "#123" or "#x1F" without '&' and ';' */
    bool hex = len > 1 && (ent[1] == 'x' || ent[1] == 'X');
    const char *digits = ent + (hex ? 2 : 1);
    size_t ndigits = len - (size_t)(digits - ent);
    if (ndigits == 0 || ndigits > 8)
        return bad_entity(ent, len, err);
    unsigned long cp = 0;
    for (size_t i = 0; i < ndigits; i++) {
        char c = digits[i];
        int v = c >= '0' && c <= '9'          ? c - '0'
                : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
                                              : -1;
        if (v < 0)
            return bad_entity(ent, len, err);
        cp = cp * (hex ? 16 : 10) + (unsigned long)v;
    }
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return bad_entity(ent, len, err);
    return put_utf8(out, cp, err);
}

static int decode_entity(const char *ent, size_t len, buf_t *out, wv_err_t *err)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    if (len > 0 && ent[0] == '#')
        return decode_numeric(ent, len, out, err);
    for (size_t i = 0; i < sizeof named / sizeof *named; i++)
        if (strlen(named[i].name) == len && memcmp(ent, named[i].name, len) == 0)
            return buf_append(out, &named[i].c, 1, err);
    return bad_entity(ent, len, err);
}

int s3_xml_decode(const char *raw, size_t len, buf_t *out, wv_err_t *err)
{
    const char *p = raw, *end = raw + len;
    int rc = 0;
    while (p < end && !rc) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        rc = buf_append(out, p, (size_t)(stop - p), err);
        if (rc || !amp)
            break;
        const char *semi = memchr(amp, ';', (size_t)(end - amp));
        if (!semi)
            return bad_entity(amp, (size_t)(end - amp), err);
        rc = decode_entity(amp + 1, (size_t)(semi - amp - 1), out, err);
        p = semi + 1;
    }
    return rc ? rc : s3_buf_terminate(out, err);
}

int s3_xml_text(const char *p, const char *end, const char *name, buf_t *out, wv_err_t *err)
{
    const char *content, *next;
    size_t len;
    if (!s3_xml_find(p, end, name, &content, &len, &next))
        return 0;
    buf_reset(out);
    int rc = s3_xml_decode(content, len, out, err);
    return rc ? rc : 1;
}

int s3_xml_escape(buf_t *out, const char *s, wv_err_t *err)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        const char *rep = *s == '&'    ? "&amp;"
                          : *s == '<'  ? "&lt;"
                          : *s == '>'  ? "&gt;"
                          : *s == '"'  ? "&quot;"
                          : *s == '\'' ? "&apos;"
                                       : NULL;
        rc = rep ? buf_append_str(out, rep, err) : buf_append(out, s, 1, err);
    }
    return rc;
}

/* ---- error bodies ---- */

static void text_into(const char *p, const char *end, const char *name, char *dst, size_t cap)
{
    buf_t b;
    buf_init(&b, XML_TEXT_MAX);
    wv_err_t ignored;
    dst[0] = '\0';
    if (s3_xml_text(p, end, name, &b, &ignored) == 1) {
        /* keep messages on one line whatever the store sends */
        for (size_t i = 0; i < b.len; i++)
            if (b.data[i] < 0x20)
                b.data[i] = ' ';
        snprintf(dst, cap, "%s", (const char *)b.data);
    }
    buf_free(&b);
}

void s3_xml_error(const char *body, size_t len, struct s3_error_info *info)
{
    const char *end = body + len;
    const char *content = body, *next;
    size_t clen = len;
    if (s3_xml_find(body, end, "Error", &content, &clen, &next))
        end = content + clen;
    else
        content = body;
    text_into(content, end, "Code", info->code, sizeof info->code);
    text_into(content, end, "Message", info->message, sizeof info->message);
    text_into(content, end, "Region", info->region, sizeof info->region);
}

/* ---- list pages ---- */

int64_t s3_parse_iso8601(const char *s)
{
    struct tm tm = {0};
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static int parse_size(const buf_t *b, uint64_t *size, wv_err_t *err)
{
    const char *s = (const char *)b->data;
    char *endp;
    if (!s[0] || s[0] < '0' || s[0] > '9')
        return wv_err_set(err, WV_ECORRUPT, "malformed ListObjectsV2 answer: size \"%.32s\"", s);
    unsigned long long v = strtoull(s, &endp, 10);
    if (*endp)
        return wv_err_set(err, WV_ECORRUPT, "malformed ListObjectsV2 answer: size \"%.32s\"", s);
    *size = v;
    return 0;
}

static int parse_entry(const char *p, const char *end, struct s3_list_entry *e, buf_t *tmp,
                       wv_err_t *err)
{
    buf_t key;
    buf_init(&key, XML_TEXT_MAX);
    int rc = s3_xml_text(p, end, "Key", &key, err);
    if (rc == 0)
        rc = wv_err_set(err, WV_ECORRUPT, "malformed ListObjectsV2 answer: an entry has no key");
    if (rc < 0) {
        buf_free(&key);
        return rc;
    }
    e->key = (char *)key.data;
    rc = s3_xml_text(p, end, "Size", tmp, err);
    if (rc == 0)
        rc = wv_err_set(err, WV_ECORRUPT, "malformed ListObjectsV2 answer: %s has no size", e->key);
    if (rc > 0)
        rc = parse_size(tmp, &e->size, err);
    if (rc < 0)
        return rc;
    rc = s3_xml_text(p, end, "LastModified", tmp, err);
    e->mtime = rc == 1 ? s3_parse_iso8601((const char *)tmp->data) : 0;
    return rc < 0 ? rc : 0;
}

static int add_entry(struct s3_list_page *page, size_t *cap, wv_err_t *err)
{
    if (page->count < *cap)
        return 0;
    if (*cap >= LIST_PAGE_MAX)
        return wv_err_set(err, WV_ECORRUPT, "ListObjectsV2 answer has too many entries");
    size_t ncap = *cap ? *cap * 2 : 64;
    struct s3_list_entry *p = realloc(page->entries, ncap * sizeof *p);
    if (!p)
        return wv_err_set(err, WV_EFAIL, "out of memory reading a listing");
    page->entries = p;
    *cap = ncap;
    return 0;
}

static int parse_entries(const char *body, const char *end, struct s3_list_page *page, buf_t *tmp,
                         wv_err_t *err)
{
    size_t cap = 0;
    const char *p = body, *content, *next;
    size_t len;
    while (s3_xml_find(p, end, "Contents", &content, &len, &next)) {
        int rc = add_entry(page, &cap, err);
        if (rc)
            return rc;
        struct s3_list_entry *e = &page->entries[page->count];
        memset(e, 0, sizeof *e);
        page->count++;
        rc = parse_entry(content, content + len, e, tmp, err);
        if (rc)
            return rc;
        p = next;
    }
    return 0;
}

static int parse_paging(const char *body, const char *end, struct s3_list_page *page, buf_t *tmp,
                        wv_err_t *err)
{
    int rc = s3_xml_text(body, end, "IsTruncated", tmp, err);
    if (rc < 0)
        return rc;
    page->truncated = rc == 1 && strcmp((const char *)tmp->data, "true") == 0;
    if (!page->truncated)
        return 0;
    rc = s3_xml_text(body, end, "NextContinuationToken", tmp, err);
    if (rc < 0)
        return rc;
    if (rc == 0 || tmp->len == 0)
        return wv_err_set(err, WV_ECORRUPT,
                          "ListObjectsV2 answer is truncated but has no continuation token");
    page->next_token = strdup((const char *)tmp->data);
    return page->next_token ? 0 : wv_err_set(err, WV_EFAIL, "out of memory reading a listing");
}

int s3_xml_list_page(const char *body, size_t len, struct s3_list_page *page, wv_err_t *err)
{
    memset(page, 0, sizeof *page);
    const char *end = body + len, *content, *next;
    size_t clen;
    if (!s3_xml_find(body, end, "ListBucketResult", &content, &clen, &next))
        return wv_err_set(err, WV_ECORRUPT, "S3 answered a listing without a ListBucketResult");
    end = content + clen;
    buf_t tmp;
    buf_init(&tmp, XML_TEXT_MAX);
    int rc = parse_entries(content, end, page, &tmp, err);
    if (!rc)
        rc = parse_paging(content, end, page, &tmp, err);
    buf_free(&tmp);
    if (rc)
        s3_list_page_free(page);
    return rc;
}

void s3_list_page_free(struct s3_list_page *page)
{
    for (size_t i = 0; i < page->count; i++)
        free(page->entries[i].key);
    free(page->entries);
    free(page->next_token);
    memset(page, 0, sizeof *page);
}
