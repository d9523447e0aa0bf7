/* Streaming tar reader. A push parser: tar_reader_feed() takes pieces of any size and walks
 * a small state machine. Entry data is handed to the data callback straight from the caller's
 * piece, never copied; only 512-byte headers and extended-header payloads (pax 'x', GNU 'L'
 * and 'K', bounded by TAR_EXT_MAX) are buffered.
 *
 * The struct tar_entry passed to begin() and its strings are valid only during that call. */
#include "backup/tar.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

#define TAR_BLOCK 512
/* Longest pax or GNU long-name payload we buffer; real ones are a few hundred bytes. */
#define TAR_EXT_MAX (64 * 1024)
/* Longest path or link target we hold: a pax/GNU name, or ustar prefix + '/' + name. */
#define TAR_NAME_MAX (TAR_EXT_MAX + 1)

/* ustar header field offsets and lengths */
#define H_NAME 0
#define H_NAME_LEN 100
#define H_MODE 100
#define H_MODE_LEN 8
#define H_SIZE 124
#define H_SIZE_LEN 12
#define H_MTIME 136
#define H_MTIME_LEN 12
#define H_CHKSUM 148
#define H_CHKSUM_LEN 8
#define H_TYPE 156
#define H_LINK 157
#define H_LINK_LEN 100
#define H_MAGIC 257
#define H_PREFIX 345
#define H_PREFIX_LEN 155
#define H_GNU_ISEXTENDED 482        /* old GNU sparse header: more sparse blocks follow */
#define H_SPARSE_EXT_ISEXTENDED 504 /* same flag inside each sparse extension block */

enum tar_state {
    ST_HEADER, /* collecting a 512-byte header block */
    ST_DATA,   /* passing entry data to the callback */
    ST_EXT,    /* collecting a pax or GNU long-name payload */
    ST_SKIP,   /* skipping padding or an ignored payload */
    ST_SPARSE, /* skipping old GNU sparse extension blocks before an entry's data */
    ST_END,    /* after the end-of-archive marker: everything else is ignored */
    ST_FAILED,
};

struct tar_reader {
    struct tar_callbacks cb;
    void *ctx;
    enum tar_state state;
    int fail_code;
    uint64_t offset;     /* bytes consumed so far */
    uint64_t hdr_offset; /* stream offset of the header being or last collected */

    uint8_t hdr[TAR_BLOCK];
    size_t hdr_len;
    int zero_blocks;

    uint64_t data_left; /* ST_DATA: entry bytes still to deliver */
    uint64_t pad_left;  /* padding that follows the data or payload */
    uint64_t skip_left; /* ST_SKIP */

    char ext_type; /* ST_EXT: 'x', 'L' or 'K' */
    uint64_t ext_left;
    buf_t ext;

    /* Overrides collected from extended headers, applied to the next entry. */
    bool has_long_name, has_long_link, has_pax_path, has_pax_link;
    bool has_pax_size, has_pax_mtime, pax_sparse;
    buf_t long_name, long_link, pax_path, pax_link;
    uint64_t pax_size;
    int64_t pax_mtime;

    /* The current entry; path and link are NUL-terminated. */
    struct tar_entry entry;
    buf_t path, link;
};

static uint64_t pad_of(uint64_t size)
{
    return (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
}

static bool is_octal(uint8_t c)
{
    return c >= '0' && c <= '7';
}

/* GNU base-256: high bit of the first byte set, next bit the sign, the rest big-endian two's
 * complement. Fails when the value does not fit an int64_t. */
static bool parse_base256(const uint8_t *f, size_t n, int64_t *out)
{
    bool negative = (f[0] & 0x40) != 0;
    uint8_t flip = negative ? 0xff : 0x00;
    uint64_t v = (uint8_t)(f[0] ^ flip) & 0x3f;
    for (size_t i = 1; i < n; i++) {
        if (v > (UINT64_MAX >> 8))
            return false;
        v = (v << 8) | (uint8_t)(f[i] ^ flip);
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = negative ? -(int64_t)v - 1 : (int64_t)v;
    return true;
}

/* Octal digits after optional leading spaces, ended by a NUL, a space or the field's end.
 * An all-blank field reads as blank_ok ? 0 : failure. */
static bool parse_octal(const uint8_t *f, size_t n, bool blank_ok, int64_t *out)
{
    size_t i = 0;
    while (i < n && f[i] == ' ')
        i++;
    size_t start = i;
    uint64_t v = 0;
    while (i < n && is_octal(f[i])) {
        if (v > ((uint64_t)INT64_MAX >> 3))
            return false;
        v = (v << 3) | (uint64_t)(f[i] - '0');
        i++;
    }
    if (i < n && f[i] != '\0' && f[i] != ' ')
        return false;
    if (i == start && !blank_ok)
        return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_number(const uint8_t *f, size_t n, bool blank_ok, int64_t *out)
{
    if (f[0] & 0x80)
        return parse_base256(f, n, out);
    return parse_octal(f, n, blank_ok, out);
}

static int corrupt_at(tar_reader_t *r, wv_err_t *err, const char *what)
{
    return wv_err_set(err, WV_ECORRUPT, "tar header at offset %" PRIu64 ": %s", r->hdr_offset,
                      what);
}

static bool block_is_zero(const uint8_t *b)
{
    for (size_t i = 0; i < TAR_BLOCK; i++)
        if (b[i])
            return false;
    return true;
}

/* POSIX sums the header bytes as unsigned with the checksum field read as spaces; some old
 * tars summed signed chars, so either sum is accepted. */
static bool checksum_ok(const uint8_t *h)
{
    int64_t stored;
    if (!parse_octal(h + H_CHKSUM, H_CHKSUM_LEN, false, &stored))
        return false;
    int64_t usum = 0, ssum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        bool in_field = i >= H_CHKSUM && i < H_CHKSUM + H_CHKSUM_LEN;
        uint8_t c = in_field ? ' ' : h[i];
        usum += c;
        ssum += (int8_t)c;
    }
    return stored == usum || stored == ssum;
}

/* Copies a possibly unterminated header field or payload into b as a C string. */
static int set_string(buf_t *b, const void *s, size_t n, wv_err_t *err)
{
    buf_reset(b);
    int rc = buf_append(b, s, n, err);
    if (!rc)
        rc = buf_append(b, "", 1, err);
    return rc;
}

static size_t field_len(const uint8_t *f, size_t n)
{
    const void *nul = memchr(f, '\0', n);
    return nul ? (size_t)((const uint8_t *)nul - f) : n;
}

static void clear_overrides(tar_reader_t *r)
{
    r->has_long_name = r->has_long_link = false;
    r->has_pax_path = r->has_pax_link = false;
    r->has_pax_size = r->has_pax_mtime = r->pax_sparse = false;
}

static bool has_overrides(const tar_reader_t *r)
{
    return r->has_long_name || r->has_long_link || r->has_pax_path || r->has_pax_link ||
           r->has_pax_size || r->has_pax_mtime || r->pax_sparse;
}

/* ---- pax extended headers ---------------------------------------------------------- */

static bool pax_decimal(const char *s, size_t n, uint64_t *out)
{
    if (n == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* "[-]seconds[.fraction]", rounded down to whole seconds. */
static bool pax_time(const char *s, size_t n, int64_t *out)
{
    bool negative = n > 0 && s[0] == '-';
    size_t i = negative ? 1 : 0;
    const char *dot = memchr(s + i, '.', n - i);
    size_t int_len = dot ? (size_t)(dot - (s + i)) : n - i;
    uint64_t secs;
    if (!pax_decimal(s + i, int_len, &secs) || secs > (uint64_t)INT64_MAX - 1)
        return false;
    bool fraction = false;
    if (dot) {
        for (const char *p = dot + 1; p < s + n; p++) {
            if (*p < '0' || *p > '9')
                return false;
            if (*p != '0')
                fraction = true;
        }
    }
    *out = negative ? -(int64_t)secs - (fraction ? 1 : 0) : (int64_t)secs;
    return true;
}

static bool key_is(const char *key, size_t klen, const char *want)
{
    return klen == strlen(want) && memcmp(key, want, klen) == 0;
}

/* An empty value removes an earlier override, as POSIX specifies. */
static int pax_string(tar_reader_t *r, buf_t *b, bool *has, const char *key, const char *val,
                      size_t vlen, wv_err_t *err)
{
    if (vlen == 0) {
        *has = false;
        return 0;
    }
    if (memchr(val, '\0', vlen))
        return wv_err_set(err, WV_ECORRUPT,
                          "tar header at offset %" PRIu64 ": pax %s contains a NUL byte",
                          r->hdr_offset, key);
    *has = true;
    return set_string(b, val, vlen, err);
}

static int pax_record(tar_reader_t *r, const char *key, size_t klen, const char *val, size_t vlen,
                      wv_err_t *err)
{
    if (key_is(key, klen, "path"))
        return pax_string(r, &r->pax_path, &r->has_pax_path, "path", val, vlen, err);
    if (key_is(key, klen, "linkpath"))
        return pax_string(r, &r->pax_link, &r->has_pax_link, "linkpath", val, vlen, err);
    if (key_is(key, klen, "size")) {
        r->has_pax_size = vlen > 0;
        if (vlen && (!pax_decimal(val, vlen, &r->pax_size) || r->pax_size > (uint64_t)INT64_MAX))
            return corrupt_at(r, err, "bad pax size value");
        return 0;
    }
    if (key_is(key, klen, "mtime")) {
        r->has_pax_mtime = vlen > 0;
        if (vlen && !pax_time(val, vlen, &r->pax_mtime))
            return corrupt_at(r, err, "bad pax mtime value");
        return 0;
    }
    /* GNU sparse files store a map plus the non-hole data: the bytes are not the file. */
    if (klen > 11 && memcmp(key, "GNU.sparse.", 11) == 0)
        r->pax_sparse = true;
    return 0;
}

/* Records are "<length> <key>=<value>\n", the length counting the whole record. */
static int pax_parse(tar_reader_t *r, wv_err_t *err)
{
    const char *p = (const char *)r->ext.data;
    size_t left = r->ext.len;
    if (!p)
        return 0; /* an empty payload was never allocated */
    while (left > 0) {
        size_t i = 0, len = 0;
        while (i < left && p[i] >= '0' && p[i] <= '9' && i < 10)
            len = len * 10 + (size_t)(p[i++] - '0');
        if (i == 0 || i >= left || p[i] != ' ' || len <= i + 1 || len > left || p[len - 1] != '\n')
            return corrupt_at(r, err, "malformed pax extended header record");
        const char *key = p + i + 1;
        const char *end = p + len - 1;
        const char *eq = memchr(key, '=', (size_t)(end - key));
        if (!eq || eq == key)
            return corrupt_at(r, err, "malformed pax extended header record");
        int rc = pax_record(r, key, (size_t)(eq - key), eq + 1, (size_t)(end - eq - 1), err);
        if (rc)
            return rc;
        p += len;
        left -= len;
    }
    return 0;
}

static int ext_complete(tar_reader_t *r, wv_err_t *err)
{
    size_t n = field_len(r->ext.data ? r->ext.data : (const uint8_t *)"", r->ext.len);
    switch (r->ext_type) {
    case 'L':
        r->has_long_name = true;
        return set_string(&r->long_name, r->ext.data, n, err);
    case 'K':
        r->has_long_link = true;
        return set_string(&r->long_link, r->ext.data, n, err);
    default:
        return pax_parse(r, err);
    }
}

/* ---- entries ----------------------------------------------------------------------- */

static bool has_dotdot(const char *p)
{
    for (const char *c = p; *c;) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (n == 2 && c[0] == '.' && c[1] == '.')
            return true;
        if (!slash)
            break;
        c = slash + 1;
    }
    return false;
}

/* Strips leading "./" and, for directories, trailing '/'; rejects what would escape the
 * restore directory. `what` names the field in messages. */
static int normalize_path(tar_reader_t *r, buf_t *b, bool dir, const char *what, wv_err_t *err)
{
    char *s = (char *)b->data;
    size_t n = strlen(s);
    size_t start = 0;
    while (n - start >= 2 && s[start] == '.' && s[start + 1] == '/')
        start += 2;
    if (dir)
        while (n > start && s[n - 1] == '/')
            n--;
    memmove(s, s + start, n - start);
    n -= start;
    s[n] = '\0';
    b->len = n + 1;
    if (n == 0 && dir && strcmp(what, "path") == 0) {
        memcpy(s, ".", 2);
        b->len = 2;
        return 0;
    }
    if (n == 0 || (n == 1 && s[0] == '.'))
        return wv_err_set(err, WV_ECORRUPT, "tar header at offset %" PRIu64 ": empty or '.' %s",
                          r->hdr_offset, what);
    if (s[0] == '/')
        return wv_err_set(err, WV_ECORRUPT, "tar entry %s '%s' at offset %" PRIu64 " is absolute",
                          what, s, r->hdr_offset);
    if (has_dotdot(s))
        return wv_err_set(err, WV_ECORRUPT,
                          "tar entry %s '%s' at offset %" PRIu64 " contains a '..' component", what,
                          s, r->hdr_offset);
    return 0;
}

static enum tar_type type_of(uint8_t flag)
{
    switch (flag) {
    case '0':
    case '\0':
    case '7': /* contiguous file: a regular file everywhere that matters */
        return TAR_FILE;
    case '5':
        return TAR_DIR;
    case '2':
        return TAR_SYMLINK;
    case '1':
        return TAR_HARDLINK;
    default:
        return TAR_OTHER;
    }
}

static int build_path(tar_reader_t *r, wv_err_t *err)
{
    const uint8_t *h = r->hdr;
    if (r->has_pax_path)
        return set_string(&r->path, r->pax_path.data, r->pax_path.len - 1, err);
    if (r->has_long_name)
        return set_string(&r->path, r->long_name.data, r->long_name.len - 1, err);
    buf_reset(&r->path);
    int rc = 0;
    /* Only POSIX ustar has a prefix field; GNU keeps times there. */
    bool posix = memcmp(h + H_MAGIC, "ustar", 6) == 0;
    size_t plen = posix ? field_len(h + H_PREFIX, H_PREFIX_LEN) : 0;
    if (plen) {
        rc = buf_append(&r->path, h + H_PREFIX, plen, err);
        if (!rc)
            rc = buf_append(&r->path, "/", 1, err);
    }
    if (!rc)
        rc = buf_append(&r->path, h + H_NAME, field_len(h + H_NAME, H_NAME_LEN), err);
    if (!rc)
        rc = buf_append(&r->path, "", 1, err);
    return rc;
}

static int build_link(tar_reader_t *r, wv_err_t *err)
{
    if (r->has_pax_link)
        return set_string(&r->link, r->pax_link.data, r->pax_link.len - 1, err);
    if (r->has_long_link)
        return set_string(&r->link, r->long_link.data, r->long_link.len - 1, err);
    return set_string(&r->link, r->hdr + H_LINK, field_len(r->hdr + H_LINK, H_LINK_LEN), err);
}

/* Fills r->entry from the header in r->hdr and the pending overrides. */
static int build_entry(tar_reader_t *r, int64_t size, wv_err_t *err)
{
    const uint8_t *h = r->hdr;
    struct tar_entry *e = &r->entry;
    uint8_t flag = h[H_TYPE];
    e->type = type_of(flag);
    int64_t mode = 0, mtime = 0;
    if (!parse_number(h + H_MODE, H_MODE_LEN, true, &mode))
        return corrupt_at(r, err, "bad mode field");
    if (!parse_number(h + H_MTIME, H_MTIME_LEN, true, &mtime))
        return corrupt_at(r, err, "bad mtime field");
    e->mode = (mode_t)(mode & 07777);
    e->mtime = r->has_pax_mtime ? r->pax_mtime : mtime;
    e->size = r->has_pax_size ? r->pax_size : (uint64_t)size;
    if (r->pax_sparse)
        e->type = TAR_OTHER;

    int rc = build_path(r, err);
    if (!rc)
        rc = build_link(r, err);
    if (rc)
        return rc;
    /* Pre-POSIX tars marked directories only by a trailing slash. */
    if (e->type == TAR_FILE && flag != '7' && r->path.len >= 2 &&
        r->path.data[r->path.len - 2] == '/')
        e->type = TAR_DIR;
    rc = normalize_path(r, &r->path, e->type == TAR_DIR, "path", err);
    if (!rc && e->type == TAR_HARDLINK)
        rc = normalize_path(r, &r->link, false, "hardlink target", err);
    if (rc)
        return rc;
    e->path = (const char *)r->path.data;
    e->linkpath =
        (e->type == TAR_SYMLINK || e->type == TAR_HARDLINK) ? (const char *)r->link.data : "";
    clear_overrides(r);
    return 0;
}

static int call_end(tar_reader_t *r, wv_err_t *err)
{
    int rc = r->cb.end ? r->cb.end(r->ctx, err) : 0;
    if (r->pad_left) {
        r->state = ST_SKIP;
        r->skip_left = r->pad_left;
        r->pad_left = 0;
    } else {
        r->state = ST_HEADER;
    }
    return rc;
}

static int start_entry(tar_reader_t *r, wv_err_t *err)
{
    int rc = r->cb.begin ? r->cb.begin(r->ctx, &r->entry, err) : 0;
    if (rc)
        return rc;
    r->data_left = r->entry.size;
    r->pad_left = pad_of(r->entry.size);
    if (r->data_left == 0)
        return call_end(r, err);
    r->state = ST_DATA;
    return 0;
}

static int end_of_archive(tar_reader_t *r, wv_err_t *err)
{
    if (has_overrides(r))
        return corrupt_at(r, err, "end of archive right after an extended header");
    r->state = ST_END;
    return 0;
}

static int header_complete(tar_reader_t *r, wv_err_t *err)
{
    const uint8_t *h = r->hdr;
    r->hdr_len = 0;
    if (block_is_zero(h)) {
        if (++r->zero_blocks == 2)
            return end_of_archive(r, err);
        return 0;
    }
    if (r->zero_blocks)
        return corrupt_at(r, err, "entry after a zero block (damaged archive?)");
    if (!checksum_ok(h))
        return corrupt_at(r, err, "bad checksum");
    int64_t size;
    if (!parse_number(h + H_SIZE, H_SIZE_LEN, false, &size) || size < 0)
        return corrupt_at(r, err, "bad size field");

    uint8_t flag = h[H_TYPE];
    uint64_t usize = (uint64_t)size;
    if (flag == 'x' || flag == 'L' || flag == 'K') {
        if (usize > TAR_EXT_MAX)
            return wv_err_set(err, WV_ECORRUPT,
                              "tar header at offset %" PRIu64 ": extended header of %" PRIu64
                              " bytes exceeds the %d-byte limit",
                              r->hdr_offset, usize, TAR_EXT_MAX);
        r->ext_type = (char)flag;
        r->ext_left = usize;
        r->pad_left = pad_of(usize);
        buf_reset(&r->ext);
        int rc = buf_reserve(&r->ext, (size_t)usize, err);
        if (rc)
            return rc;
        r->state = ST_EXT;
        return 0;
    }
    if (flag == 'g') {
        r->skip_left = usize + pad_of(usize);
        r->state = ST_SKIP;
        return 0;
    }
    int rc = build_entry(r, size, err);
    if (rc)
        return rc;
    if (flag == 'S' && h[H_GNU_ISEXTENDED]) {
        r->state = ST_SPARSE;
        return 0;
    }
    return start_entry(r, err);
}

/* ---- the state machine ------------------------------------------------------------- */

static size_t min_sz(size_t a, uint64_t b)
{
    return b < a ? (size_t)b : a;
}

/* Consumes up to len bytes of p in the current state; *used says how many. */
static int step(tar_reader_t *r, const uint8_t *p, size_t len, size_t *used, wv_err_t *err)
{
    size_t n;
    int rc = 0;
    switch (r->state) {
    case ST_HEADER:
    case ST_SPARSE:
        if (r->hdr_len == 0)
            r->hdr_offset = r->offset;
        n = min_sz(len, TAR_BLOCK - r->hdr_len);
        memcpy(r->hdr + r->hdr_len, p, n);
        r->hdr_len += n;
        *used = n;
        if (r->hdr_len < TAR_BLOCK)
            return 0;
        if (r->state == ST_HEADER)
            return header_complete(r, err);
        r->hdr_len = 0;
        return r->hdr[H_SPARSE_EXT_ISEXTENDED] ? 0 : start_entry(r, err);
    case ST_DATA:
        n = min_sz(len, r->data_left);
        *used = n;
        if (r->cb.data)
            rc = r->cb.data(r->ctx, p, n, err);
        r->data_left -= n;
        if (!rc && r->data_left == 0)
            rc = call_end(r, err);
        return rc;
    case ST_EXT:
        n = min_sz(len, r->ext_left);
        *used = n;
        rc = buf_append(&r->ext, p, n, err);
        r->ext_left -= n;
        if (!rc && r->ext_left == 0) {
            rc = ext_complete(r, err);
            r->skip_left = r->pad_left;
            r->pad_left = 0;
            r->state = r->skip_left ? ST_SKIP : ST_HEADER;
        }
        return rc;
    case ST_SKIP:
        n = min_sz(len, r->skip_left);
        *used = n;
        r->skip_left -= n;
        if (r->skip_left == 0)
            r->state = ST_HEADER;
        return 0;
    case ST_END:
        /* Zero padding up to the record size, or anything a writer appended. */
        *used = len;
        return 0;
    case ST_FAILED:
        break;
    }
    return WV_EFAIL;
}

int tar_reader_new(const struct tar_callbacks *cb, void *ctx, tar_reader_t **out, wv_err_t *err)
{
    tar_reader_t *r = calloc(1, sizeof *r);
    if (!r)
        return wv_err_set(err, WV_EFAIL, "out of memory creating a tar reader");
    if (cb)
        r->cb = *cb;
    r->ctx = ctx;
    r->state = ST_HEADER;
    buf_init(&r->ext, TAR_EXT_MAX);
    buf_init(&r->long_name, TAR_NAME_MAX);
    buf_init(&r->long_link, TAR_NAME_MAX);
    buf_init(&r->pax_path, TAR_NAME_MAX);
    buf_init(&r->pax_link, TAR_NAME_MAX);
    /* ustar prefix + '/' + name + NUL fits easily; pax and GNU names are capped above. */
    buf_init(&r->path, TAR_NAME_MAX);
    buf_init(&r->link, TAR_NAME_MAX);
    *out = r;
    return 0;
}

int tar_reader_feed(tar_reader_t *r, const void *data, size_t len, wv_err_t *err)
{
    if (r->state == ST_FAILED)
        return wv_err_set(err, r->fail_code,
                          "tar stream at offset %" PRIu64 ": already failed, input refused",
                          r->offset);
    const uint8_t *p = data;
    while (len > 0) {
        size_t used = 0;
        int rc = step(r, p, len, &used, err);
        r->offset += used;
        if (rc) {
            r->state = ST_FAILED;
            r->fail_code = rc;
            return rc;
        }
        p += used;
        len -= used;
    }
    return 0;
}

static int truncated(tar_reader_t *r, wv_err_t *err)
{
    int rc;
    switch (r->state) {
    case ST_HEADER:
    case ST_SPARSE:
        rc = wv_err_set(err, WV_ECORRUPT,
                        "tar stream truncated at offset %" PRIu64
                        ": inside the header at offset %" PRIu64,
                        r->offset, r->hdr_offset);
        break;
    case ST_DATA:
        rc = wv_err_set(err, WV_ECORRUPT,
                        "tar stream truncated at offset %" PRIu64 ": %" PRIu64
                        " bytes of '%s' missing",
                        r->offset, r->data_left, r->entry.path);
        break;
    case ST_EXT:
        rc = wv_err_set(err, WV_ECORRUPT,
                        "tar stream truncated at offset %" PRIu64
                        ": inside the extended header at offset %" PRIu64,
                        r->offset, r->hdr_offset);
        break;
    default:
        rc = wv_err_set(err, WV_ECORRUPT,
                        "tar stream truncated at offset %" PRIu64
                        ": inside the padding after the header at offset %" PRIu64,
                        r->offset, r->hdr_offset);
        break;
    }
    r->state = ST_FAILED;
    r->fail_code = rc;
    return rc;
}

int tar_reader_finish(tar_reader_t *r, wv_err_t *err)
{
    switch (r->state) {
    case ST_FAILED:
        return wv_err_set(err, r->fail_code, "tar stream at offset %" PRIu64 ": already failed",
                          r->offset);
    case ST_END:
        return 0;
    case ST_HEADER:
        if (r->hdr_len == 0 && !has_overrides(r))
            return 0; /* ended after an entry's padding, or after one zero block */
        if (r->hdr_len == 0) {
            r->state = ST_FAILED;
            r->fail_code = WV_ECORRUPT;
            return wv_err_set(err, WV_ECORRUPT,
                              "tar stream ended at offset %" PRIu64
                              " after an extended header, before its entry",
                              r->offset);
        }
        return truncated(r, err);
    default:
        return truncated(r, err);
    }
}

void tar_reader_free(tar_reader_t *r)
{
    if (!r)
        return;
    buf_free(&r->ext);
    buf_free(&r->long_name);
    buf_free(&r->long_link);
    buf_free(&r->pax_path);
    buf_free(&r->pax_link);
    buf_free(&r->path);
    buf_free(&r->link);
    free(r);
}
