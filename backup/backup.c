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
    long sleep_ms = 100;
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
        sleep_ms = sleep_ms < 1000 ? sleep_ms * 2 : 1000;
    }
}

static json_t *file_json(const struct bfile *f)
{
    if (f->type == BFILE_DIR)
        return json_pack("{s:s, s:s, s:i}", "path", f->path, "type", "dir", "mode", (int)f->mode);
    if (f->type == BFILE_LINK)
        return json_pack("{s:s, s:s, s:s}", "path", f->path, "type", "link", "target",
                         f->target ? f->target : "");
    uint64_t size = f->got_size && f->got_size < f->size ? f->got_size : f->size;
    json_t *blocks = json_array();
    for (size_t i = 0; i < f->slots; i++)
        if (f->blocks[i].plain_len > 0 && f->blocks[i].file_offset < size)
            json_array_append_new(blocks, manifest_block_json(&f->blocks[i]));
    return json_pack("{s:s, s:s, s:i, s:I, s:I, s:o}", "path", f->path, "type", "file", "mode",
                     (int)f->mode, "size", (json_int_t)size, "mtime", (json_int_t)f->mtime,
                     "blocks", blocks);
}

static json_t *build_manifest(struct backup_ctx *c, const struct backup_result *res,
                              int64_t start_time, int64_t stop_time)
{
    char start[WAL_LSN_STR_MAX], stop[WAL_LSN_STR_MAX], sysid[32];
    wal_lsn_format(res->start_lsn, start);
    wal_lsn_format(res->stop_lsn, stop);
    snprintf(sysid, sizeof sysid, "%" PRIu64, res->system_identifier);
    json_t *files = json_array();
    uint64_t db_bytes = 0;
    for (size_t i = 0; i < c->nfiles; i++) {
        if (c->files[i].vanished)
            continue;
        json_t *f = file_json(&c->files[i]);
        db_bytes += (uint64_t)json_integer_value(json_object_get(f, "size"));
        json_array_append_new(files, f);
    }
    json_t *m = json_pack(
        "{s:i, s:s, s:s, s:s, s:n, s:s, s:i, s:I, s:I, s:s, s:s, s:I, s:I, s:s, s:s, s:O, s:O, "
        "s:o, "
        "s:I, s:I, s:O}",
        "format", MANIFEST_FORMAT, "id", c->id, "node", repo_node(c->r), "type", "full", "parent",
        "system_identifier", sysid, "pg_version", res->pg_version, "wal_seg_size",
        (json_int_t)res->wal_seg_size, "timeline", (json_int_t)res->timeline, "start_lsn", start,
        "stop_lsn", stop, "start_time", (json_int_t)start_time, "stop_time", (json_int_t)stop_time,
        "backup_label", res->backup_label, "source", res->source, "tablespaces", res->tablespaces,
        "packs", c->packs, "files", files, "db_bytes", (json_int_t)db_bytes, "stored_bytes",
        (json_int_t)c->stored_bytes, "checksum_failures", c->checksum_failures);
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
    time_t start_time = time(NULL);
    new_backup_id(start_time, c.id, sizeof c.id);
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
