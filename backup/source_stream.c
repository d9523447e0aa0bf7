/* The stream source: BASE_BACKUP on a replication connection (PostgreSQL 15+: one COPY
 * stream whose messages say "new archive", "data", "progress" or "manifest"), read by the
 * streaming tar reader straight into the block pipeline, with no temporary files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backup/internal.h"
#include "backup/tar.h"
#include "common/log.h"

struct stream_run {
    struct backup_ctx *c;
    struct backup_result *res;
    struct pack_writer writer;
    tar_reader_t *tar;
    char prefix[64]; /* "" for base.tar, "pg_tblspc/<oid>/" for a tablespace */
    long file;       /* index of the entry being read, -1 for none */
    buf_t *capture;  /* backup_label / tablespace_map go into the manifest itself */
    buf_t label, spcmap;
    uint8_t *block;
    size_t block_len;
    uint64_t block_offset;
    bool in_manifest;
};

static int flush_block(struct stream_run *s, wv_err_t *err)
{
    if (s->block_len == 0)
        return 0;
    struct bfile *f = &s->c->files[s->file];
    backup_check_pages(s->c, f, s->block_offset, s->block, s->block_len);
    int rc = backup_store_block(&s->writer, f, s->block_offset, s->block, s->block_len, err);
    backup_progress(s->c, s->block_len);
    s->block_offset += s->block_len;
    s->block_len = 0;
    return rc;
}

static enum bfile_type entry_type(enum tar_type t)
{
    return t == TAR_DIR ? BFILE_DIR : t == TAR_SYMLINK ? BFILE_LINK : BFILE_FILE;
}

static int on_begin(void *ctx, const struct tar_entry *e, wv_err_t *err)
{
    struct stream_run *s = ctx;
    s->file = -1;
    s->capture = NULL;
    if (e->type == TAR_HARDLINK || e->type == TAR_OTHER)
        return 0;
    if (!s->prefix[0] && strcmp(e->path, "backup_label") == 0)
        s->capture = &s->label;
    else if (!s->prefix[0] && strcmp(e->path, "tablespace_map") == 0)
        s->capture = &s->spcmap;
    if (s->capture)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s%s", s->prefix, e->path);
    struct bfile f = {.path = path,
                      .type = entry_type(e->type),
                      .mode = e->mode & 07777,
                      .mtime = e->mtime,
                      .size = e->type == TAR_FILE ? e->size : 0,
                      .target = e->type == TAR_SYMLINK ? (char *)e->linkpath : NULL};
    s->file = backup_add_file(s->c, &f);
    if (s->file < 0)
        return wv_err_set(err, WV_EFAIL, "out of memory listing %s", path);
    s->block_len = 0;
    s->block_offset = 0;
    return backup_file_prepare(s->c, &s->c->files[s->file], err);
}

static int on_data(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct stream_run *s = ctx;
    if (s->capture)
        return buf_append(s->capture, data, len, err);
    if (s->file < 0)
        return 0;
    const uint8_t *p = data;
    while (len > 0) {
        size_t room = BACKUP_BLOCK_SIZE - s->block_len;
        size_t n = len < room ? len : room;
        memcpy(s->block + s->block_len, p, n);
        s->block_len += n;
        p += n;
        len -= n;
        if (s->block_len == BACKUP_BLOCK_SIZE) {
            int rc = flush_block(s, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int on_end(void *ctx, wv_err_t *err)
{
    struct stream_run *s = ctx;
    int rc = s->file >= 0 ? flush_block(s, err) : 0;
    s->file = -1;
    s->capture = NULL;
    return rc;
}

static const struct tar_callbacks tar_cb = {on_begin, on_data, on_end};

static int pg_fail(PGconn *conn, PGresult *res, const char *what, wv_err_t *err)
{
    char line[512];
    snprintf(line, sizeof line, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    line[strcspn(line, "\n")] = '\0';
    PQclear(res);
    return wv_err_set(err, WV_EFAIL, "%s failed: %s", what, line);
}

static int finish_archive(struct stream_run *s, wv_err_t *err)
{
    if (!s->tar)
        return 0;
    int rc = tar_reader_finish(s->tar, err);
    tar_reader_free(s->tar);
    s->tar = NULL;
    return rc;
}

/* 'n' starts archive "base.tar" or "<oid>.tar" of the tablespace at the given location. */
static int new_archive(struct stream_run *s, const char *msg, int len, wv_err_t *err)
{
    int rc = finish_archive(s, err);
    if (rc)
        return rc;
    const char *name = msg + 1;
    if (memchr(name, '\0', (size_t)(len - 1)) == NULL)
        return wv_err_set(err, WV_ECORRUPT, "BASE_BACKUP: malformed new-archive message");
    if (strcmp(name, "base.tar") == 0)
        s->prefix[0] = '\0';
    else
        snprintf(s->prefix, sizeof s->prefix, "pg_tblspc/%.*s/", (int)strcspn(name, "."), name);
    return tar_reader_new(&tar_cb, s, &s->tar, err);
}

static int handle_message(struct stream_run *s, const char *msg, int len, wv_err_t *err)
{
    if (len < 1)
        return wv_err_set(err, WV_ECORRUPT, "BASE_BACKUP: empty COPY message");
    switch (msg[0]) {
    case 'n':
        return new_archive(s, msg, len, err);
    case 'd':
        if (s->in_manifest)
            return 0; /* PostgreSQL's own manifest: our manifest replaces it */
        if (!s->tar)
            return wv_err_set(err, WV_ECORRUPT, "BASE_BACKUP: data before any archive");
        return tar_reader_feed(s->tar, msg + 1, (size_t)len - 1, err);
    case 'm':
        s->in_manifest = true;
        return finish_archive(s, err);
    case 'p':
        return 0;
    default:
        return wv_err_set(err, WV_ECORRUPT, "BASE_BACKUP: unknown COPY message type '%c'", msg[0]);
    }
}

static int receive_copy(PGconn *conn, struct stream_run *s, wv_err_t *err)
{
    for (;;) {
        char *msg = NULL;
        int len = PQgetCopyData(conn, &msg, 0);
        if (len == -1)
            break;
        if (len == -2)
            return pg_fail(conn, NULL, "receiving the base backup", err);
        int rc = handle_message(s, msg, len, err);
        PQfreemem(msg);
        if (rc)
            return rc;
    }
    return finish_archive(s, err);
}

static int read_position(PGconn *conn, const char *what, wal_lsn_t *lsn, uint32_t *tli,
                         wv_err_t *err)
{
    PGresult *res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 2)
        return pg_fail(conn, res, what, err);
    int rc = wal_lsn_parse(PQgetvalue(res, 0, 0), lsn, err);
    *tli = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return rc;
}

static int read_tablespaces(PGconn *conn, struct backup_result *out, wv_err_t *err)
{
    PGresult *res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return pg_fail(conn, res, "BASE_BACKUP tablespace list", err);
    out->tablespaces = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 0))
            continue; /* the main data directory */
        json_array_append_new(out->tablespaces,
                              json_pack("{s:I, s:s}", "oid",
                                        (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10),
                                        "path", PQgetvalue(res, i, 1)));
    }
    PQclear(res);
    return 0;
}

static PGconn *connect_replication(const char *conninfo)
{
    const char *keys[] = {"dbname", "replication", "application_name", NULL};
    const char *vals[] = {conninfo && *conninfo ? conninfo : NULL, "true", "walvault", NULL};
    if (!vals[0]) {
        keys[0] = "replication";
        vals[0] = "true";
        keys[1] = "application_name";
        vals[1] = "walvault";
        keys[2] = vals[2] = NULL;
    }
    return PQconnectdbParams(keys, vals, 1);
}

static int run_stream(PGconn *conn, struct stream_run *s, wv_err_t *err)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "BASE_BACKUP (LABEL '%s', CHECKPOINT 'fast', MANIFEST 'yes', "
             "MANIFEST_CHECKSUMS 'NONE', WAIT false, TABLESPACE_MAP true, "
             "VERIFY_CHECKSUMS false)",
             s->c->id);
    if (!PQsendQuery(conn, cmd))
        return pg_fail(conn, NULL, "BASE_BACKUP", err);
    uint32_t tli;
    int rc = read_position(conn, "BASE_BACKUP", &s->res->start_lsn, &tli, err);
    if (rc == 0) {
        s->c->start_lsn = s->res->start_lsn;
        s->res->timeline = tli;
        rc = read_tablespaces(conn, s->res, err);
    }
    if (rc)
        return rc;
    PGresult *res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COPY_OUT)
        return pg_fail(conn, res, "BASE_BACKUP", err);
    PQclear(res);
    if ((rc = receive_copy(conn, s, err)) != 0)
        return rc;
    rc = read_position(conn, "BASE_BACKUP end", &s->res->stop_lsn, &tli, err);
    while ((res = PQgetResult(conn)) != NULL) {
        if (rc == 0 && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = pg_fail(conn, res, "BASE_BACKUP completion", err);
        else
            PQclear(res);
    }
    return rc;
}

static char *buf_to_string(buf_t *b)
{
    char *s = malloc(b->len + 1);
    if (s) {
        if (b->len)
            memcpy(s, b->data, b->len);
        s[b->len] = '\0';
    }
    return s;
}

int backup_source_stream(struct backup_ctx *c, const char *conninfo, struct backup_result *res,
                         wv_err_t *err)
{
    struct stream_run s = {.c = c, .res = res, .file = -1};
    res->source = "stream";
    buf_init(&s.label, 1 << 20);
    buf_init(&s.spcmap, 1 << 20);
    s.block = malloc(BACKUP_BLOCK_SIZE);
    pack_writer_init(&s.writer, c, 0);
    PGconn *conn = connect_replication(conninfo);
    int rc =
        PQstatus(conn) == CONNECTION_OK ? 0 : pg_fail(conn, NULL, "replication connection", err);
    if (rc == 0 && !s.block)
        rc = wv_err_set(err, WV_EFAIL, "out of memory");
    if (rc == 0)
        rc = run_stream(conn, &s, err);
    if (rc == 0)
        rc = pack_writer_finish(&s.writer, err);
    else
        pack_writer_abort(&s.writer);
    if (s.tar)
        tar_reader_free(s.tar);
    if (rc == 0) {
        res->backup_label = buf_to_string(&s.label);
        res->tablespace_map = s.spcmap.len ? buf_to_string(&s.spcmap) : NULL;
        if (!res->backup_label || s.label.len == 0)
            rc = wv_err_set(err, WV_ECORRUPT, "BASE_BACKUP sent no backup_label");
    }
    buf_free(&s.label);
    buf_free(&s.spcmap);
    free(s.block);
    PQfinish(conn);
    return rc;
}
