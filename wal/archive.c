/* What push and fetch share: where each kind of WAL file lives in the repository. */
#include "wal/archive.h"

#include <stdio.h>

int wal_archive_key(repo_t *r, const char *name, uint32_t seg_size, char *out, size_t len,
                    wv_err_t *err)
{
    struct wal_file f;
    int rc = wal_file_parse(name, seg_size, &f, err);
    if (rc)
        return rc;
    /* Fragments are wal-stream's alone: a pushed file must never pose as one. */
    if (f.kind == WAL_KIND_FRAGMENT)
        return wv_err_set(err, WV_EUSAGE, "%s names a wal-stream fragment, not a WAL file", name);
    if (repo_key_wal(r, f.tli, name, out, len) != 0)
        return wv_err_set(err, WV_EUSAGE, "WAL file name too long: %s", name);
    return 0;
}

int wal_archived_range(repo_t *r, uint32_t tli, wal_lsn_t start_lsn, wal_lsn_t stop_lsn,
                       uint32_t seg_size, bool *yes, char missing[WAL_NAME_MAX], wv_err_t *err)
{
    uint64_t first = wal_segno_of(start_lsn, seg_size);
    uint64_t last = wal_segno_of(stop_lsn > 0 ? stop_lsn - 1 : 0, seg_size);
    *yes = true;
    for (uint64_t segno = first; segno <= last; segno++) {
        char name[WAL_NAME_MAX], key[REPO_KEY_MAX];
        wal_segment_name(tli, segno, seg_size, name);
        repo_key_wal(r, tli, name, key, sizeof key);
        uint64_t size;
        int rc = storage_head(repo_storage(r), key, &size, err);
        if (rc == WV_ENOTFOUND) {
            /* wal-stream's fragments of an unfinished segment serve as far as they reach. */
            uint32_t need = segno == last ? (uint32_t)((stop_lsn - 1) % seg_size) + 1 : seg_size;
            struct wal_frag_chain c;
            if ((rc = wal_fragments_scan(r, tli, segno, seg_size, &c, err)) != 0)
                return rc;
            if (c.end >= need)
                continue;
            *yes = false;
            snprintf(missing, WAL_NAME_MAX, "%s", name);
            return 0;
        }
        if (rc)
            return rc;
    }
    return 0;
}
