#include "wal/walname.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define WAL_MIN_SEG_SIZE (1u << 20)
#define WAL_MAX_SEG_SIZE (1u << 30)
#define WAL_LSN_PART_DIGITS 8
#define WAL_TLI_DIGITS 8
#define WAL_BACKUP_OFFSET_DIGITS 8
#define WAL_FRAGMENT_OFFSET_DIGITS 8
#define WAL_XLP_LONG_HEADER 0x0002

/* XLOG_PAGE_MAGIC of each PostgreSQL release whose WAL page header we understand. The long
 * header layout is the same in all of them; a new release changes the magic whenever the WAL
 * format changes, so anything else is refused rather than guessed at. */
static const uint16_t supported_page_magics[] = {
    0xD110, /* PostgreSQL 15 */
    0xD113, /* PostgreSQL 16 */
    0xD116, /* PostgreSQL 17 */
};

/* Byte offsets inside XLogLongPageHeaderData (native byte order). */
enum {
    XLP_MAGIC_OFF = 0,
    XLP_INFO_OFF = 2,
    XLP_TLI_OFF = 4,
    XLP_PAGEADDR_OFF = 8,
    XLP_REM_LEN_OFF = 16,
    XLP_SYSID_OFF = 24,
    XLP_SEG_SIZE_OFF = 32,
    XLP_XLOG_BLCKSZ_OFF = 36,
};

bool wal_seg_size_valid(uint32_t seg_size)
{
    return seg_size >= WAL_MIN_SEG_SIZE && seg_size <= WAL_MAX_SEG_SIZE &&
           (seg_size & (seg_size - 1)) == 0;
}

static uint64_t segs_per_xlogid(uint32_t seg_size)
{
    assert(wal_seg_size_valid(seg_size));
    return UINT64_C(0x100000000) / seg_size;
}

static int hex_value(char c, bool allow_lower)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (allow_lower && c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reads 1..max_digits hex digits from s; returns how many it consumed, 0 when none. The
 * caller checks what follows, so "123456789" with max 8 stops at 8 and fails there. */
static size_t parse_hex(const char *s, size_t avail, size_t max_digits, bool allow_lower,
                        uint32_t *out)
{
    uint32_t v = 0;
    size_t n = 0;
    while (n < avail && n < max_digits) {
        int d = hex_value(s[n], allow_lower);
        if (d < 0)
            break;
        v = (v << 4) | (uint32_t)d;
        n++;
    }
    *out = v;
    return n;
}

/* Copies untrusted text into an error-message-safe form: printable ASCII only, bounded. */
static void printable(const char *s, size_t len, char *out, size_t out_size)
{
    size_t keep = out_size - 4; /* room for "..." and the terminator */
    size_t o = 0;
    for (; o < len && o < keep; o++) {
        unsigned char c = (unsigned char)s[o];
        out[o] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (o < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

#define SHOW_MAX 80

int wal_lsn_parse(const char *s, wal_lsn_t *out, wv_err_t *err)
{
    char shown[SHOW_MAX];
    if (!s)
        return wv_err_set(err, WV_EUSAGE, "invalid LSN: (null)");
    size_t len = strlen(s);
    uint32_t hi, lo;
    size_t n1 = parse_hex(s, len, WAL_LSN_PART_DIGITS, true, &hi);
    if (n1 == 0 || n1 >= len || s[n1] != '/')
        goto bad;
    const char *rest = s + n1 + 1;
    size_t rest_len = len - n1 - 1;
    size_t n2 = parse_hex(rest, rest_len, WAL_LSN_PART_DIGITS, true, &lo);
    if (n2 == 0 || n2 != rest_len)
        goto bad;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
bad:
    printable(s, len, shown, sizeof shown);
    return wv_err_set(err, WV_EUSAGE,
                      "invalid LSN \"%s\": expected X/Y with up to 8 hex digits each", shown);
}

void wal_lsn_format(wal_lsn_t lsn, char out[WAL_LSN_STR_MAX])
{
    snprintf(out, WAL_LSN_STR_MAX, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

uint64_t wal_segno_of(wal_lsn_t lsn, uint32_t seg_size)
{
    assert(wal_seg_size_valid(seg_size));
    return lsn / seg_size;
}

wal_lsn_t wal_segment_start(uint64_t segno, uint32_t seg_size)
{
    assert(wal_seg_size_valid(seg_size));
    return segno * seg_size;
}

void wal_segment_name(uint32_t tli, uint64_t segno, uint32_t seg_size, char out[WAL_NAME_MAX])
{
    uint64_t per = segs_per_xlogid(seg_size);
    snprintf(out, WAL_NAME_MAX, "%08" PRIX32 "%08" PRIX32 "%08" PRIX32, tli,
             (uint32_t)(segno / per), (uint32_t)(segno % per));
}

void wal_history_name(uint32_t tli, char out[WAL_NAME_MAX])
{
    snprintf(out, WAL_NAME_MAX, "%08" PRIX32 ".history", tli);
}

void wal_fragment_name(uint32_t tli, uint64_t segno, uint32_t seg_size, uint32_t start,
                       uint32_t end, char out[WAL_NAME_MAX])
{
    uint64_t per = segs_per_xlogid(seg_size);
    snprintf(out, WAL_NAME_MAX,
             "%08" PRIX32 "%08" PRIX32 "%08" PRIX32 ".%08" PRIX32 "-%08" PRIX32 ".frag", tli,
             (uint32_t)(segno / per), (uint32_t)(segno % per), start, end);
}

static int bad_name(const char *name, wv_err_t *err, const char *why)
{
    char shown[SHOW_MAX];
    printable(name, strlen(name), shown, sizeof shown);
    return wv_err_set(err, WV_EUSAGE, "not a WAL file name: \"%s\" (%s)", shown, why);
}

/* Exactly `digits` uppercase hex digits at s, as PostgreSQL writes file names. */
static bool fixed_hex(const char *s, size_t avail, size_t digits, uint32_t *out)
{
    return avail >= digits && parse_hex(s, avail, digits, false, out) == digits;
}

/* ".SSSSSSSS-EEEEEEEE.frag" */
static bool is_fragment_suffix(const char *suffix, size_t len, uint32_t *start, uint32_t *end)
{
    const size_t digits = WAL_FRAGMENT_OFFSET_DIGITS;
    return len == 1 + digits + 1 + digits + strlen(".frag") && suffix[0] == '.' &&
           fixed_hex(suffix + 1, len - 1, digits, start) && suffix[1 + digits] == '-' &&
           fixed_hex(suffix + 2 + digits, len - 2 - digits, digits, end) &&
           strcmp(suffix + 2 + 2 * digits, ".frag") == 0;
}

static int parse_segment_like(const char *name, size_t len, uint32_t seg_size, struct wal_file *out,
                              wv_err_t *err)
{
    uint32_t tli, hi, lo, offset = 0, frag_end = 0;
    if (!fixed_hex(name, len, WAL_TLI_DIGITS, &tli) || !fixed_hex(name + 8, len - 8, 8, &hi) ||
        !fixed_hex(name + 16, len - 16, 8, &lo))
        return bad_name(name, err, "expected 24 uppercase hex digits");
    const char *suffix = name + WAL_NAME_LEN;
    size_t suffix_len = len - WAL_NAME_LEN;
    enum wal_file_kind kind;
    if (suffix_len == 0) {
        kind = WAL_KIND_SEGMENT;
    } else if (strcmp(suffix, ".partial") == 0) {
        kind = WAL_KIND_PARTIAL;
    } else if (suffix_len == 1 + WAL_BACKUP_OFFSET_DIGITS + strlen(".backup") && suffix[0] == '.' &&
               fixed_hex(suffix + 1, suffix_len - 1, WAL_BACKUP_OFFSET_DIGITS, &offset) &&
               strcmp(suffix + 1 + WAL_BACKUP_OFFSET_DIGITS, ".backup") == 0) {
        kind = WAL_KIND_BACKUP;
    } else if (is_fragment_suffix(suffix, suffix_len, &offset, &frag_end)) {
        kind = WAL_KIND_FRAGMENT;
    } else {
        return bad_name(name, err, "unknown suffix");
    }
    if (tli == 0)
        return bad_name(name, err, "timeline 0");
    if (!wal_seg_size_valid(seg_size))
        return wv_err_set(err, WV_EUSAGE, "invalid WAL segment size %" PRIu32 " for \"%.*s\"",
                          seg_size, WAL_NAME_LEN, name);
    uint64_t per = segs_per_xlogid(seg_size);
    if (lo >= per) {
        char why[96];
        snprintf(why, sizeof why,
                 "segment part %08" PRIX32 " too large for %" PRIu32 " MiB segments", lo,
                 seg_size >> 20);
        return bad_name(name, err, why);
    }
    if (kind == WAL_KIND_BACKUP && offset >= seg_size)
        return bad_name(name, err, "backup start offset beyond the segment");
    if (kind == WAL_KIND_FRAGMENT && (offset >= frag_end || frag_end > seg_size))
        return bad_name(name, err, "fragment range empty or beyond the segment");
    out->kind = kind;
    out->tli = tli;
    out->segno = (uint64_t)hi * per + lo;
    out->frag_start = kind == WAL_KIND_FRAGMENT ? offset : 0;
    out->frag_end = frag_end;
    return 0;
}

int wal_file_parse(const char *name, uint32_t seg_size, struct wal_file *out, wv_err_t *err)
{
    if (!name)
        return wv_err_set(err, WV_EUSAGE, "not a WAL file name: (null)");
    size_t len = strlen(name);
    uint32_t tli;
    if (len == WAL_TLI_DIGITS + strlen(".history") && fixed_hex(name, len, WAL_TLI_DIGITS, &tli) &&
        strcmp(name + WAL_TLI_DIGITS, ".history") == 0) {
        if (tli == 0)
            return bad_name(name, err, "timeline 0");
        out->kind = WAL_KIND_HISTORY;
        out->tli = tli;
        out->segno = 0;
        return 0;
    }
    if (len < WAL_NAME_LEN)
        return bad_name(name, err, "too short");
    return parse_segment_like(name, len, seg_size, out, err);
}

/* ---- timeline history files ---- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int history_error(wv_err_t *err, int lineno, const char *why)
{
    return wv_err_set(err, WV_ECORRUPT, "timeline history line %d: %s", lineno, why);
}

/* One non-comment line: "parentTLI<ws>X/Y[<ws>reason]", TLI in decimal as PostgreSQL
 * writes it. */
static int history_line(const char *p, size_t n, int lineno, struct wal_history_entry *e,
                        wv_err_t *err)
{
    size_t i = 0;
    uint64_t tli = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        tli = tli * 10 + (uint64_t)(p[i] - '0');
        if (tli > UINT32_MAX)
            return history_error(err, lineno, "timeline ID out of range");
        i++;
    }
    if (i == 0)
        return history_error(err, lineno, "expected a numeric timeline ID");
    if (tli == 0)
        return history_error(err, lineno, "timeline ID 0");
    size_t ws = i;
    while (i < n && is_blank(p[i]))
        i++;
    if (i == ws)
        return history_error(err, lineno, "expected a tab after the timeline ID");
    uint32_t hi, lo;
    size_t d = parse_hex(p + i, n - i, WAL_LSN_PART_DIGITS, true, &hi);
    if (d == 0 || i + d >= n || p[i + d] != '/')
        return history_error(err, lineno, "expected a switchpoint LSN X/Y");
    i += d + 1;
    d = parse_hex(p + i, n - i, WAL_LSN_PART_DIGITS, true, &lo);
    if (d == 0)
        return history_error(err, lineno, "expected a switchpoint LSN X/Y");
    i += d;
    if (i < n && !is_blank(p[i]))
        return history_error(err, lineno, "garbage after the switchpoint LSN");
    e->tli = (uint32_t)tli;
    e->end_lsn = ((uint64_t)hi << 32) | lo;
    return 0;
}

int wal_history_parse(const char *text, size_t len, struct wal_history_entry *entries, int max,
                      wv_err_t *err)
{
    int count = 0;
    int lineno = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *line = text + pos;
        size_t n = end - pos;
        pos = end + 1;
        lineno++;
        while (n > 0 && is_blank(*line)) {
            line++;
            n--;
        }
        if (n == 0 || line[0] == '#')
            continue;
        if (memchr(line, '\0', n))
            return history_error(err, lineno, "NUL byte");
        struct wal_history_entry e;
        int rc = history_line(line, n, lineno, &e, err);
        if (rc)
            return rc;
        if (count > 0 && e.tli <= entries[count - 1].tli)
            return history_error(err, lineno, "timeline IDs must be in increasing sequence");
        if (count >= max)
            return wv_err_set(err, WV_EFAIL, "timeline history has more than %d entries", max);
        entries[count++] = e;
    }
    return count;
}

/* ---- WAL segment long page header ---- */

static uint16_t load16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static bool page_magic_supported(uint16_t magic)
{
    for (size_t i = 0; i < sizeof supported_page_magics / sizeof supported_page_magics[0]; i++)
        if (supported_page_magics[i] == magic)
            return true;
    return false;
}

static bool xlog_block_size_valid(uint32_t v)
{
    return v >= 1024 && v <= 65536 && (v & (v - 1)) == 0;
}

int wal_segment_header_parse(const void *page, size_t len, struct wal_segment_header *out,
                             wv_err_t *err)
{
    const uint8_t *p = page;
    if (!p || len < WAL_LONG_HEADER_BYTES)
        return wv_err_set(err, WV_ECORRUPT,
                          "not a WAL segment: %zu bytes, shorter than a long page header", len);
    uint16_t magic = load16(p + XLP_MAGIC_OFF);
    uint16_t info = load16(p + XLP_INFO_OFF);
    uint32_t tli = load32(p + XLP_TLI_OFF);
    uint64_t pageaddr = load64(p + XLP_PAGEADDR_OFF);
    uint64_t sysid = load64(p + XLP_SYSID_OFF);
    uint32_t seg_size = load32(p + XLP_SEG_SIZE_OFF);
    uint32_t blcksz = load32(p + XLP_XLOG_BLCKSZ_OFF);
    char lsn[WAL_LSN_STR_MAX];
    wal_lsn_format(pageaddr, lsn);

    if (!page_magic_supported(magic))
        return wv_err_set(err, WV_ECORRUPT,
                          "not a WAL segment: page magic 0x%04X is not a supported PostgreSQL "
                          "WAL version",
                          magic);
    if (!(info & WAL_XLP_LONG_HEADER))
        return wv_err_set(err, WV_ECORRUPT,
                          "not a WAL segment: page at %s has no long header (info 0x%04X)", lsn,
                          info);
    if (tli == 0)
        return wv_err_set(err, WV_ECORRUPT, "not a WAL segment: page at %s has timeline 0", lsn);
    if (!wal_seg_size_valid(seg_size))
        return wv_err_set(err, WV_ECORRUPT,
                          "not a WAL segment: page at %s has invalid segment size %" PRIu32, lsn,
                          seg_size);
    if (pageaddr % seg_size != 0)
        return wv_err_set(err, WV_ECORRUPT,
                          "not a WAL segment: page address %s is not at a %" PRIu32
                          " MiB segment boundary",
                          lsn, seg_size >> 20);
    if (!xlog_block_size_valid(blcksz))
        return wv_err_set(err, WV_ECORRUPT,
                          "not a WAL segment: page at %s has invalid WAL block size %" PRIu32, lsn,
                          blcksz);
    out->magic = magic;
    out->tli = tli;
    out->pageaddr = pageaddr;
    out->system_identifier = sysid;
    out->seg_size = seg_size;
    out->block_size = blcksz;
    return 0;
}
