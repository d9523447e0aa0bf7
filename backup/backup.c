/* backup_run: one full base backup of the node, from whichever source can reach the data,
 * through the block pipeline into packs, then (only once the WAL it needs is archived) the
 * manifest, which is what makes the backup exist. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "backup/internal.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "wal/archive.h"

struct server_info {
    int version;
    uint64_t system_identifier;
    uint32_t wal_seg_size;
    bool data_checksums;
    char data_directory[4096];
};

static int query_one(PGconn *conn, const char *sql, char *out, size_t len, wv_err_t *err)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char line[512];
        snprintf(line, sizeof line, "%s", PQresultErrorMessage(res));
        line[strcspn(line, "\n")] = '\0';
        PQclear(res);
        return wv_err_set(err, WV_EFAIL, "query \"%s\" failed: %s", sql, line);
    }
    snprintf(out, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

static int read_server_info(PGconn *conn, struct server_info *info, wv_err_t *err)
{
    char v[4096];
    info->version = PQserverVersion(conn);
    if (info->version < 150000)
        return wv_err_set(err, WV_EUSAGE,
                          "PostgreSQL %d is not supported: walvault needs 15 or later",
                          info->version / 10000);
    int rc = query_one(conn, "SELECT system_identifier FROM pg_control_system()", v, sizeof v, err);
    if (rc)
        return rc;
    info->system_identifier = strtoull(v, NULL, 10);
    if ((rc = query_one(conn, "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'", v,
                        sizeof v, err)) != 0)
        return rc;
    info->wal_seg_size = (uint32_t)strtoul(v, NULL, 10);
    if ((rc = query_one(conn, "SHOW data_checksums", v, sizeof v, err)) != 0)
        return rc;
    info->data_checksums = strcmp(v, "on") == 0;
    /* Only superusers and pg_read_all_settings may see it; the stream source needs neither. */
    if (query_one(conn, "SHOW data_directory", info->data_directory, sizeof info->data_directory,
                  NULL) != 0)
        info->data_directory[0] = '\0';
    return 0;
}

static const char *choose_local_dir(const struct backup_opts *o, const struct server_info *info)
{
    const char *dir = o->pgdata && *o->pgdata ? o->pgdata : info->data_directory;
    char control[4200];
    snprintf(control, sizeof control, "%s/global/pg_control", dir);
    return *dir && access(control, R_OK) == 0 ? dir : NULL;
}

static int wait_for_archive(repo_t *r, const struct backup_result *res, int timeout_s,
                            wv_err_t *err)
{
    double deadline = time_monotonic() + (timeout_s > 0 ? timeout_s : 300);
    long sleep_ms = 20; /* archive_command usually lands the last segment within milliseconds */
    for (;;) {
        bool done;
        char missing[WAL_NAME_MAX] = "";
        int rc = wal_archived_range(r, res->timeline, res->start_lsn, res->stop_lsn,
                                    res->wal_seg_size, &done, missing, err);
        if (rc || done)
            return rc;
        if (time_monotonic() > deadline) {
            char stop[WAL_LSN_STR_MAX];
            wal_lsn_format(res->stop_lsn, stop);
            return wv_err_set(err, WV_ETIMEOUT,
                              "WAL segment %s, needed to restore the backup (stop LSN %s), was not "
                              "archived within %d s; check archive_command or wal-stream",
                              missing, stop, timeout_s);
        }
        time_sleep_ms(sleep_ms);
        sleep_ms = sleep_ms < 250 ? sleep_ms * 2 : 250;
    }
}

/* Packs the manifest names: only those its references use, renumbered in order. An
 * incremental starts from its parent's whole list; packs no longer referenced drop out. */
struct pack_map {
    uint32_t *to; /* old number -> new number */
    bool *used;
    size_t count;
};

static uint64_t file_size_now(const struct bfile *f)
{
    return f->got_size && f->got_size < f->size ? f->got_size : f->size;
}

static int map_packs(struct backup_ctx *c, struct pack_map *m, json_t **packs)
{
    m->count = json_array_size(c->packs);
    m->to = calloc(m->count + 1, sizeof *m->to);
    m->used = calloc(m->count + 1, sizeof *m->used);
    *packs = json_array();
    if (!m->to || !m->used || !*packs)
        return -1;
    for (size_t i = 0; i < c->nfiles; i++) {
        const struct bfile *f = &c->files[i];
        for (size_t s = 0; !f->vanished && s < f->nslots; s++)
            for (uint32_t k = 0; k < f->slots[s].count; k++)
                m->used[f->slots[s].refs[k].pack] = true;
    }
    uint32_t next = 0;
    for (size_t i = 0; i < m->count; i++)
        if (m->used[i]) {
            m->to[i] = next++;
            json_array_append(*packs, json_array_get(c->packs, i));
        }
    return 0;
}

/* The file's references in file order, cut to its size now, with packs renumbered. */
static struct block_ref *file_refs(const struct bfile *f, const struct pack_map *m, uint64_t size,
                                   size_t *n)
{
    size_t total = 0;
    for (size_t s = 0; s < f->nslots; s++)
        total += f->slots[s].count;
    struct block_ref *refs = malloc((total ? total : 1) * sizeof *refs);
    *n = 0;
    for (size_t s = 0; refs && s < f->nslots; s++)
        for (uint32_t k = 0; k < f->slots[s].count; k++) {
            struct block_ref r = f->slots[s].refs[k];
            if (r.file_offset >= size)
                continue;
            if (r.file_offset + r.plain_len > size)
                r.plain_len = (uint32_t)(size - r.file_offset);
            r.pack = m->to[r.pack];
            refs[(*n)++] = r;
        }
    return refs;
}

/* Keyed hashes of the blocks of files outside relation storage: what the next incremental
 * compares with. */
static json_t *hashes_json(const struct bfile *f)
{
    if (f->relation || f->nslots == 0)
        return NULL;
    json_t *hashes = json_array();
    for (size_t s = 0; s < f->nslots && f->slots[s].hashed; s++) {
        char hex[SEAL_HASH_BYTES * 2 + 1];
        sodium_bin2hex(hex, sizeof hex, f->slots[s].hash, SEAL_HASH_BYTES);
        json_array_append_new(hashes, json_string(hex));
    }
    return hashes;
}

static json_t *file_json(const struct bfile *f, const struct pack_map *m)
{
    if (f->type == BFILE_DIR)
        return json_pack("{s:s, s:s, s:i}", "path", f->path, "type", "dir", "mode", (int)f->mode);
    if (f->type == BFILE_LINK)
        return json_pack("{s:s, s:s, s:s}", "path", f->path, "type", "link", "target",
                         f->target ? f->target : "");
    uint64_t size = file_size_now(f);
    size_t n;
    struct block_ref *refs = file_refs(f, m, size, &n);
    json_t *blocks = refs ? manifest_blocks_pack(refs, n) : NULL;
    free(refs);
    json_t *j = json_pack("{s:s, s:s, s:i, s:I, s:I, s:I, s:o}", "path", f->path, "type", "file",
                          "mode", (int)f->mode, "size", (json_int_t)size, "mtime",
                          (json_int_t)f->mtime, "nblocks", (json_int_t)n, "blocks", blocks);
    json_t *hashes = hashes_json(f);
    if (j && hashes)
        json_object_set_new(j, "hashes", hashes);
    if (j && f->ino)
        json_object_set_new(j, "ino", json_integer((json_int_t)f->ino));
    return j;
}

static json_t *files_json(struct backup_ctx *c, const struct pack_map *m, uint64_t *db_bytes)
{
    json_t *files = json_array();
    *db_bytes = 0;
    for (size_t i = 0; i < c->nfiles; i++) {
        if (c->files[i].vanished)
            continue;
        json_t *f = file_json(&c->files[i], m);
        *db_bytes += (uint64_t)json_integer_value(json_object_get(f, "size"));
        json_array_append_new(files, f);
    }
    return files;
}

static json_t *build_manifest(struct backup_ctx *c, const struct backup_result *res,
                              int64_t start_time, int64_t stop_time)
{
    char start[WAL_LSN_STR_MAX], stop[WAL_LSN_STR_MAX], sysid[32];
    wal_lsn_format(res->start_lsn, start);
    wal_lsn_format(res->stop_lsn, stop);
    snprintf(sysid, sizeof sysid, "%" PRIu64, res->system_identifier);
    struct pack_map map = {0};
    json_t *packs = NULL;
    uint64_t db_bytes;
    json_t *m = NULL;
    if (map_packs(c, &map, &packs) == 0) {
        json_t *files = files_json(c, &map, &db_bytes);
        m = json_pack(
            "{s:i, s:s, s:s, s:s, s:s?, s:s, s:i, s:I, s:I, s:s, s:s, s:I, s:I, s:s, s:s, s:O, "
            "s:o, s:o, s:I, s:I, s:I, s:O}",
            "format", MANIFEST_FORMAT, "id", c->id, "node", repo_node(c->r), "type",
            c->parent ? "incr" : "full", "parent",
            c->parent ? json_string_value(json_object_get(c->parent, "id")) : NULL,
            "system_identifier", sysid, "pg_version", res->pg_version, "wal_seg_size",
            (json_int_t)res->wal_seg_size, "timeline", (json_int_t)res->timeline, "start_lsn",
            start, "stop_lsn", stop, "start_time", (json_int_t)start_time, "stop_time",
            (json_int_t)stop_time, "backup_label", res->backup_label, "source", res->source,
            "tablespaces", res->tablespaces, "packs", packs, "files", files, "db_bytes",
            (json_int_t)db_bytes, "stored_bytes", (json_int_t)c->stored_bytes, "new_bytes",
            (json_int_t)c->new_bytes, "checksum_failures", c->checksum_failures);
        packs = NULL;
    }
    json_decref(packs);
    free(map.to);
    free(map.used);
    if (m)
        json_object_set_new(m, "tablespace_map",
                            res->tablespace_map ? json_string(res->tablespace_map) : json_null());
    return m;
}

static int write_manifest(struct backup_ctx *c, const struct backup_result *res, int64_t start_time,
                          int64_t stop_time_ms, wv_err_t *err)
{
    json_t *m = build_manifest(c, res, start_time, stop_time_ms / 1000);
    if (!m)
        return wv_err_set(err, WV_EFAIL, "cannot build the manifest of backup %s", c->id);
    json_object_set_new(m, "stop_time_ms", json_integer(stop_time_ms));
    char key[REPO_KEY_MAX];
    repo_key_backup(c->r, c->id, key, sizeof key);
    int rc = repo_put_json(c->r, key, m, true, err);
    json_decref(m);
    return rc;
}

static void free_result(struct backup_result *res)
{
    free(res->backup_label);
    free(res->tablespace_map);
    json_decref(res->tablespaces);
}

static int run_source(struct backup_ctx *c, PGconn *conn, const struct server_info *info,
                      struct backup_result *res, wv_err_t *err)
{
    const struct backup_opts *o = c->opts;
    const char *local_dir = choose_local_dir(o, info);
    if (o->source == BACKUP_SOURCE_LOCAL && !local_dir)
        return wv_err_set(err, WV_EUSAGE,
                          "--source local needs a readable data directory (--pgdata DIR); "
                          "cannot read %s/global/pg_control",
                          o->pgdata && *o->pgdata ? o->pgdata : info->data_directory);
    if (o->source == BACKUP_SOURCE_STREAM || !local_dir)
        return backup_source_stream(c, o->pg_conninfo, res, err);
    return backup_source_local(c, conn, local_dir, res, err);
}

/* Ids sort by start time; the random part keeps two backups started in the same second
 * (and their packs) apart. */
static void new_backup_id(time_t start, char *out, size_t len)
{
    char when[32];
    time_format_id(start, when, sizeof when);
    snprintf(out, len, "%s-%06x", when, (unsigned)(randombytes_random() & 0xffffff));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int current_timeline(PGconn *conn, uint32_t *tli, wv_err_t *err)
{
    char v[64];
    int rc = query_one(conn, "SELECT timeline_id FROM pg_control_checkpoint()", v, sizeof v, err);
    *tli = (uint32_t)strtoul(v, NULL, 10);
    return rc;
}

/* The newest finished backup of the node on the server's current timeline. */
static int newest_on_timeline(repo_t *r, uint32_t tli, char *id, size_t len, wv_err_t *err)
{
    struct manifest_summary *all;
    size_t n;
    int rc = catalog_backups(r, &all, &n, err);
    if (rc)
        return rc;
    id[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (all[i].timeline == tli)
            snprintf(id, len, "%s", all[i].id);
    free(all);
    return 0;
}

/* Page LSNs tell changed pages apart only when every first change after a checkpoint writes
 * a full-page image (see incremental.c). */
static int incremental_allowed(PGconn *conn, bool *ok, wv_err_t *err)
{
    char v[16];
    int rc = query_one(conn, "SHOW full_page_writes", v, sizeof v, err);
    *ok = rc == 0 && strcmp(v, "on") == 0;
    return rc;
}

static int choose_parent(repo_t *r, PGconn *conn, const struct backup_opts *o, char *parent,
                         size_t len, wv_err_t *err)
{
    parent[0] = '\0';
    if (o->mode == BACKUP_MODE_FULL)
        return 0;
    uint32_t tli;
    bool fpw;
    int rc = current_timeline(conn, &tli, err);
    if (rc == 0)
        rc = incremental_allowed(conn, &fpw, err);
    if (rc == 0 && o->parent_id)
        snprintf(parent, len, "%s", o->parent_id);
    else if (rc == 0)
        rc = newest_on_timeline(r, tli, parent, len, err);
    if (rc)
        return rc;
    if (o->mode == BACKUP_MODE_INCREMENTAL && !parent[0])
        return wv_err_set(err, WV_EUSAGE,
                          "no backup of node \"%s\" on timeline %u to base an incremental on; "
                          "take a full backup first (backup --full)",
                          repo_node(r), tli);
    if (parent[0] && !fpw) {
        if (o->mode == BACKUP_MODE_INCREMENTAL)
            return wv_err_set(err, WV_EUSAGE,
                              "incremental backups need full_page_writes = on; "
                              "turn it on or take a full backup (backup --full)");
        log_warn("full_page_writes is off: taking a full backup instead of an incremental");
        parent[0] = '\0';
    }
    return 0;
}

static int take_backup(repo_t *r, PGconn *conn, const struct backup_opts *o, char *id_out,
                       wv_err_t *err)
{
    struct server_info info = {0};
    int rc = read_server_info(conn, &info, err);
    struct repo_node_info node = {info.system_identifier, info.version, info.wal_seg_size};
    if (rc == 0 && (rc = repo_node_bind(r, &node, err)) != 0)
        return wv_err_prefix(err, "refusing to back up");
    if (rc)
        return rc;
    struct backup_ctx c;
    struct backup_result res = {.system_identifier = info.system_identifier,
                                .pg_version = info.version,
                                .wal_seg_size = info.wal_seg_size};
    if ((rc = backup_ctx_init(&c, r, o, err)) != 0)
        return rc;
    char parent[64];
    if ((rc = choose_parent(r, conn, o, parent, sizeof parent, err)) != 0 ||
        (parent[0] && (rc = backup_load_parent(&c, parent, err)) != 0)) {
        backup_ctx_free(&c);
        return rc;
    }
    time_t start_time = time(NULL);
    new_backup_id(start_time, c.id, sizeof c.id);
    if ((rc = backup_load_resume(&c, err)) != 0) {
        backup_ctx_free(&c);
        return rc;
    }
    c.check_pages = info.data_checksums;
    rc = run_source(&c, conn, &info, &res, err);
    int64_t stop_time_ms = now_ms() + 1;
    if (rc == 0)
        rc = wait_for_archive(r, &res, o->archive_timeout_s, err);
    if (rc == 0)
        rc = write_manifest(&c, &res, (int64_t)start_time, stop_time_ms, err);
    if (rc == 0)
        snprintf(id_out, 64, "%s", c.id);
    free_result(&res);
    backup_ctx_free(&c);
    return rc;
}

int backup_run(repo_t *r, const struct backup_opts *o, char *id_out, wv_err_t *err)
{
    PGconn *conn = PQconnectdb(o->pg_conninfo ? o->pg_conninfo : "");
    int rc = 0;
    if (PQstatus(conn) != CONNECTION_OK) {
        char line[512];
        snprintf(line, sizeof line, "%s", PQerrorMessage(conn));
        line[strcspn(line, "\n")] = '\0';
        rc = wv_err_set(err, WV_EFAIL, "cannot connect to PostgreSQL: %s", line);
    }
    if (rc == 0)
        rc = take_backup(r, conn, o, id_out, err);
    PQfinish(conn);
    return rc;
}
