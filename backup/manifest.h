/* Backup manifests: the one object a restore reads to rebuild a data directory. A manifest
 * names every file with its mode, size and the sealed blocks that hold its bytes, and the
 * WAL range and timeline recovery needs. It stands alone: restoring a backup never reads
 * another manifest. It is sealed like every other object (repo_put_json/repo_get_json).
 *
 * JSON shape (format 1):
 * {
 *   "format": 1, "id": "20261130T221500Z-F", "node": "db1", "type": "full", "parent": null,
 *   "system_identifier": "7312...", "pg_version": 150020, "wal_seg_size": 16777216,
 *   "timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000138",
 *   "start_time": 1796000000, "stop_time": 1796000005,   (epoch seconds, this host's clock)
 *   "stop_time_ms": 1796000005123,                     (taken after pg_backup_stop returned)
 *   "backup_label": "...", "tablespace_map": "16385 /srv/ts1\n" or null,
 *   "source": "local" | "stream",
 *   "tablespaces": [{"oid": 16385, "path": "/srv/ts1"}],
 *   "packs": ["20261130T221500Z-F-0-0", ...],                 (index = pack number below)
 *   "files": [
 *     {"path": "base", "type": "dir", "mode": 448},
 *     {"path": "pg_tblspc/16385", "type": "link", "target": "/srv/ts1"},
 *     {"path": "base/5/1259", "type": "file", "mode": 384, "size": 106496, "mtime": 1796000000,
 *      "nblocks": 2, "blocks": "<base64>"}      (the references, packed: see below)
 *   ],
 *   "db_bytes": 23456789, "stored_bytes": 3456789,
 *   "checksum_failures": [{"path": "base/5/16384", "block": 3}]
 * }
 *
 * A file's block references are stored packed, as base64 of unsigned LEB128 varints, seven
 * per reference, each relative to the reference before it (which makes most of them one
 * byte): pack, frame + 1 - previous frame (zigzag), offset - previous end in the same pack
 * (zigzag), sealed_len, file_offset - previous file end, plain_len, skip. A manifest with
 * one JSON array per reference would cost tens of bytes per reference on disk and far
 * more in memory. Readers also accept the plain form, an array of references
 * [pack, frame, offset, sealed_len, file_offset, plain_len] or, with a seventh element,
 * [..., skip].
 *
 * A block reference It names one frame of a sealed pack object (see
 * crypto/seal.h): the frame's bytes are [offset, offset + sealed_len) of pack "packs[pack]"
 * and it opens with seal_open_frame(name = repo_key_pack(packs[pack]), index = frame). Of its
 * plaintext, plain_len bytes starting at skip (default 0) are the file's bytes at
 * file_offset. A full backup's references take whole frames (skip 0, plain_len = the frame's
 * plaintext length); an incremental's reference unchanged parts of a parent's frames, so
 * several references, of one file or of several, may share one frame. References of a file
 * are sorted by file_offset and do not overlap;
 * bytes of a file not covered by any block are zeros (holes). Paths are relative to the data
 * directory; files of tablespaces are under "pg_tblspc/<oid>/...". */
#ifndef WALVAULT_BACKUP_MANIFEST_H
#define WALVAULT_BACKUP_MANIFEST_H

#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "repo/repo.h"
#include "wal/walname.h"

#define MANIFEST_FORMAT 1

struct block_ref {
    uint32_t pack;
    uint32_t frame;
    uint64_t offset;
    uint32_t sealed_len;
    uint64_t file_offset;
    uint32_t plain_len;
    uint32_t skip; /* where in the frame's plaintext the referenced bytes start */
};

/* The fields of a manifest that choosing and replaying a backup needs. */
struct manifest_summary {
    char id[64];
    char type[16];
    char parent[64]; /* "" for a full backup */
    uint32_t timeline;
    wal_lsn_t start_lsn;
    wal_lsn_t stop_lsn;
    int64_t start_time;
    int64_t stop_time;
    int64_t stop_time_ms; /* the same instant in milliseconds: targets are compared with it */
    uint32_t wal_seg_size;
    uint64_t db_bytes;
    uint64_t stored_bytes;
    uint64_t new_bytes; /* plaintext the backup stored itself rather than referenced */
};

int manifest_summary_get(json_t *manifest, struct manifest_summary *out, wv_err_t *err);
/* Decodes the blocks array of one file entry; *out is malloc'd (caller frees). */
int manifest_file_blocks(json_t *file, struct block_ref **out, size_t *count, wv_err_t *err);
json_t *manifest_block_json(const struct block_ref *b);
/* One reference (six or seven numbers); -1 when malformed. */
int manifest_block_decode(json_t *v, struct block_ref *b);
/* The packed "blocks" string of refs[0..n) (references in file order). */
json_t *manifest_blocks_pack(const struct block_ref *refs, size_t n);
/* How many references a file entry holds (0 for anything but a regular file). */
size_t manifest_file_block_count(json_t *file);
int manifest_load(repo_t *r, const char *backup_id, json_t **out, wv_err_t *err);

#endif
