/* LSN and WAL file-name arithmetic, for every segment size PostgreSQL allows (1 MiB to
 * 1 GiB, powers of two), timelines, the auxiliary files (.history, .backup, .partial), and
 * the fragments wal-stream stores of a segment not yet finished. */
#ifndef WALVAULT_WAL_WALNAME_H
#define WALVAULT_WAL_WALNAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef uint64_t wal_lsn_t;

#define WAL_NAME_LEN 24    /* 000000010000000000000001 */
#define WAL_NAME_MAX 64    /* room for any archived file name */
#define WAL_LSN_STR_MAX 20 /* "FFFFFFFF/FFFFFFFF" */
#define WAL_DEFAULT_SEG_SIZE (16u * 1024 * 1024)

enum wal_file_kind {
    WAL_KIND_SEGMENT, /* 000000010000000000000003 */
    WAL_KIND_PARTIAL, /* 000000010000000000000003.partial */
    WAL_KIND_BACKUP,  /* 000000010000000000000003.00000028.backup */
    WAL_KIND_HISTORY, /* 00000002.history */
    /* 000000010000000000000003.00000000-00002000.frag: bytes [start, end) of the segment,
     * streamed before the segment was finished. A sibling of the segment's own name rather
     * than an object below it, because a file:// repository cannot hold "X" and "X/...". */
    WAL_KIND_FRAGMENT,
};

struct wal_file {
    enum wal_file_kind kind;
    uint32_t tli;
    uint64_t segno;      /* not set for HISTORY */
    uint32_t frag_start; /* FRAGMENT only: byte range within the segment */
    uint32_t frag_end;
};

bool wal_seg_size_valid(uint32_t seg_size);
/* "X/Y" hex, as PostgreSQL prints it. */
int wal_lsn_parse(const char *s, wal_lsn_t *out, wv_err_t *err);
void wal_lsn_format(wal_lsn_t lsn, char out[WAL_LSN_STR_MAX]);

uint64_t wal_segno_of(wal_lsn_t lsn, uint32_t seg_size);
wal_lsn_t wal_segment_start(uint64_t segno, uint32_t seg_size);
void wal_segment_name(uint32_t tli, uint64_t segno, uint32_t seg_size, char out[WAL_NAME_MAX]);
void wal_history_name(uint32_t tli, char out[WAL_NAME_MAX]);
/* The fragment holding bytes [start, end) of a segment; start < end <= seg_size. */
void wal_fragment_name(uint32_t tli, uint64_t segno, uint32_t seg_size, uint32_t start,
                       uint32_t end, char out[WAL_NAME_MAX]);
/* Classifies an archived file name; WV_EUSAGE for anything else. For segment-like names
 * the seg_size is needed to compute segno. */
int wal_file_parse(const char *name, uint32_t seg_size, struct wal_file *out, wv_err_t *err);

/* A timeline history file: the lines "parentTLI switchpoint reason". */
struct wal_history_entry {
    uint32_t tli;      /* the parent timeline */
    wal_lsn_t end_lsn; /* where it was left for the next one */
};
/* Parses up to max entries; returns the count or a negative error. */
int wal_history_parse(const char *text, size_t len, struct wal_history_entry *entries, int max,
                      wv_err_t *err);

/* From the long page header at the start of every segment. */
struct wal_segment_header {
    uint16_t magic;
    uint32_t tli;
    wal_lsn_t pageaddr;
    uint64_t system_identifier;
    uint32_t seg_size;
    uint32_t block_size;
};
#define WAL_LONG_HEADER_BYTES 40
int wal_segment_header_parse(const void *page, size_t len, struct wal_segment_header *out,
                             wv_err_t *err);

#endif
