/* The replication connection: libpq with replication=true, the commands wal-stream needs
 * (IDENTIFY_SYSTEM, SHOW, READ/CREATE_REPLICATION_SLOT, TIMELINE_HISTORY,
 * START_REPLICATION) and the messages of the copy stream. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/log.h"
#include "wal/stream_internal.h"

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
#define PG_EPOCH_OFFSET_US INT64_C(946684800000000)

void sconn_error_line(PGconn *c, char *out, size_t len)
{
    snprintf(out, len, "%s", c ? PQerrorMessage(c) : "no connection");
    out[strcspn(out, "\n")] = '\0';
    if (!out[0])
        snprintf(out, len, "connection lost");
}

static int conn_error(PGconn *c, const char *what, wv_err_t *err)
{
    char line[512];
    sconn_error_line(c, line, sizeof line);
    return wv_err_set(err, WV_EFAIL, "%s: %s", what, line);
}

/* Keepalives and a TCP user timeout notice a dead network while nothing is sent; they come
 * first so that the operator's connection string can override them. */
int sconn_open(const char *conninfo, const char *app, PGconn **out, wv_err_t *err)
{
    const char *keys[] = {"connect_timeout",  "keepalives",
                          "keepalives_idle",  "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout",
                          "dbname",           "replication",
                          "application_name", NULL};
    const char *values[] = {"10",   "1", "10", "5", "3", "30000", conninfo ? conninfo : "",
                            "true", app, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = conn_error(c, "cannot connect to PostgreSQL for replication", err);
        PQfinish(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Runs a command that returns rows; *res is the caller's to clear. */
static int query(PGconn *c, const char *sql, int min_cols, PGresult **res, wv_err_t *err)
{
    *res = PQexec(c, sql);
    if (PQresultStatus(*res) != PGRES_TUPLES_OK) {
        char line[512];
        snprintf(line, sizeof line, "%s", PQresultErrorMessage(*res));
        line[strcspn(line, "\n")] = '\0';
        PQclear(*res);
        *res = NULL;
        return wv_err_set(err, WV_EFAIL, "%s failed: %s", sql, line[0] ? line : PQerrorMessage(c));
    }
    if (PQnfields(*res) < min_cols) {
        PQclear(*res);
        *res = NULL;
        return wv_err_set(err, WV_EFAIL, "%s: unexpected answer from PostgreSQL", sql);
    }
    return 0;
}

static int parse_lsn_value(const char *text, wal_lsn_t *out, wv_err_t *err)
{
    if (wal_lsn_parse(text, out, err) != 0)
        return wv_err_prefix(err, "from PostgreSQL");
    return 0;
}

/* "16MB", "1GB", "1024kB": SHOW's units. */
static int parse_size(const char *text, uint32_t *out, wv_err_t *err)
{
    char *end;
    unsigned long long n = strtoull(text, &end, 10);
    unsigned long long unit = strcmp(end, "GB") == 0   ? 1ull << 30
                              : strcmp(end, "MB") == 0 ? 1ull << 20
                              : strcmp(end, "kB") == 0 ? 1ull << 10
                              : *end == '\0'           ? 1
                                                       : 0;
    if (end == text || unit == 0 || n * unit > UINT32_MAX ||
        !wal_seg_size_valid((uint32_t)(n * unit)))
        return wv_err_set(err, WV_EFAIL, "PostgreSQL reports an invalid wal_segment_size \"%s\"",
                          text);
    *out = (uint32_t)(n * unit);
    return 0;
}

static int show(PGconn *c, const char *setting, char *out, size_t len, wv_err_t *err)
{
    char sql[128];
    PGresult *res;
    snprintf(sql, sizeof sql, "SHOW %s", setting);
    int rc = query(c, sql, 1, &res, err);
    if (rc)
        return rc;
    snprintf(out, len, "%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return 0;
}

int sconn_is_synchronous(PGconn *c, const char *app, bool *synchronous, wv_err_t *err)
{
    char text[1024];
    int rc = show(c, "synchronous_standby_names", text, sizeof text, err);
    if (rc == 0)
        *synchronous = wal_stream_is_named(text, app);
    return rc;
}

int sconn_identify(PGconn *c, const char *app, struct sconn_identity *id, wv_err_t *err)
{
    PGresult *res;
    memset(id, 0, sizeof *id);
    int rc = query(c, "IDENTIFY_SYSTEM", 3, &res, err);
    if (rc)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return wv_err_set(err, WV_EFAIL, "IDENTIFY_SYSTEM: unexpected answer from PostgreSQL");
    }
    id->system_identifier = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    id->timeline = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    rc = parse_lsn_value(PQgetvalue(res, 0, 2), &id->flush_lsn, err);
    PQclear(res);
    id->server_version = PQserverVersion(c);
    char text[1024];
    if (rc == 0)
        rc = show(c, "wal_segment_size", text, sizeof text, err);
    if (rc == 0)
        rc = parse_size(text, &id->seg_size, err);
    if (rc == 0)
        rc = sconn_is_synchronous(c, app, &id->synchronous, err);
    return rc;
}

static int create_slot(PGconn *c, const char *slot, wv_err_t *err)
{
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT %s PHYSICAL RESERVE_WAL", slot);
    PGresult *res;
    int rc = query(c, sql, 1, &res, err);
    if (rc == 0) {
        log_info("created physical replication slot %s", slot);
        PQclear(res);
    }
    return rc;
}

/* READ_REPLICATION_SLOT came with PostgreSQL 15; before it a slot is created when absent
 * and its position taken as unknown. */
int sconn_slot(PGconn *c, const char *slot, wal_lsn_t *restart, uint32_t *restart_tli,
               wv_err_t *err)
{
    char sql[160];
    PGresult *res;
    *restart = 0;
    *restart_tli = 0;
    if (PQserverVersion(c) < 150000) {
        int rc = create_slot(c, slot, err);
        return rc && strstr(err->msg, "already exists") ? 0 : rc;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        snprintf(sql, sizeof sql, "READ_REPLICATION_SLOT %s", slot);
        int rc = query(c, sql, 3, &res, err);
        if (rc)
            return rc;
        bool exists = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
        if (exists && strcmp(PQgetvalue(res, 0, 0), "physical") != 0) {
            rc = wv_err_set(err, WV_EUSAGE, "replication slot %s is a %s slot, not physical", slot,
                            PQgetvalue(res, 0, 0));
            PQclear(res);
            return rc;
        }
        if (exists && !PQgetisnull(res, 0, 1))
            rc = parse_lsn_value(PQgetvalue(res, 0, 1), restart, err);
        if (exists && !PQgetisnull(res, 0, 2))
            *restart_tli = (uint32_t)strtoul(PQgetvalue(res, 0, 2), NULL, 10);
        PQclear(res);
        if (exists || rc)
            return rc;
        if ((rc = create_slot(c, slot, err)) != 0)
            return rc;
    }
    return wv_err_set(err, WV_EFAIL, "replication slot %s was created but cannot be read", slot);
}

int sconn_timeline_history(PGconn *c, uint32_t tli, char **text, size_t *len, wv_err_t *err)
{
    char sql[64];
    PGresult *res;
    snprintf(sql, sizeof sql, "TIMELINE_HISTORY %" PRIu32, tli);
    int rc = query(c, sql, 2, &res, err);
    if (rc)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return wv_err_set(err, WV_EFAIL, "%s: unexpected answer from PostgreSQL", sql);
    }
    *len = (size_t)PQgetlength(res, 0, 1);
    *text = malloc(*len + 1);
    if (*text) {
        memcpy(*text, PQgetvalue(res, 0, 1), *len);
        (*text)[*len] = '\0';
    }
    PQclear(res);
    return *text ? 0 : wv_err_set(err, WV_EFAIL, "out of memory");
}

int sconn_start(PGconn *c, const char *slot, uint32_t tli, wal_lsn_t pos, wv_err_t *err)
{
    char sql[256], lsn[WAL_LSN_STR_MAX];
    wal_lsn_format(pos, lsn);
    snprintf(sql, sizeof sql, "START_REPLICATION SLOT %s PHYSICAL %s TIMELINE %" PRIu32, slot, lsn,
             tli);
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        char line[512];
        snprintf(line, sizeof line, "%s", PQresultErrorMessage(res));
        line[strcspn(line, "\n")] = '\0';
        PQclear(res);
        return wv_err_set(err, WV_EFAIL, "%s failed: %s", sql, line);
    }
    PQclear(res);
    return 0;
}

static void put64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xFF);
}

static uint64_t get64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (uint8_t)p[i];
    return v;
}

static int64_t pg_now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - PG_EPOCH_OFFSET_US;
}

int sconn_send_status(PGconn *c, wal_lsn_t lsn, wv_err_t *err)
{
    char msg[1 + 8 + 8 + 8 + 8 + 1];
    msg[0] = 'r';
    put64(msg + 1, lsn);  /* written */
    put64(msg + 9, lsn);  /* flushed */
    put64(msg + 17, lsn); /* applied */
    put64(msg + 25, (uint64_t)pg_now_us());
    msg[33] = 0; /* no reply wanted */
    if (PQputCopyData(c, msg, sizeof msg) <= 0 || PQflush(c) != 0)
        return conn_error(c, "cannot send a status update to PostgreSQL", err);
    return 0;
}

int sconn_parse_msg(const char *buf, int len, struct sconn_msg *m, wv_err_t *err)
{
    memset(m, 0, sizeof *m);
    if (len < 1)
        return wv_err_set(err, WV_EFAIL, "empty message in the replication stream");
    m->type = buf[0];
    if (m->type == 'w') {
        if (len < 25)
            return wv_err_set(err, WV_EFAIL, "short XLogData message (%d bytes)", len);
        m->start = get64(buf + 1);
        m->data = (const uint8_t *)buf + 25;
        m->len = (size_t)len - 25;
        return 0;
    }
    if (m->type == 'k') {
        if (len < 18)
            return wv_err_set(err, WV_EFAIL, "short keepalive message (%d bytes)", len);
        m->reply_requested = buf[17] != 0;
        return 0;
    }
    return wv_err_set(err, WV_EFAIL, "unknown message type '%c' in the replication stream",
                      isprint((unsigned char)m->type) ? m->type : '?');
}

/* The server's answer after a timeline ends: one row (next timeline, its start), then
 * CommandComplete. A server that shuts down sends CommandComplete alone. */
static int read_end_results(PGconn *c, uint32_t *next_tli, wal_lsn_t *next_pos, wv_err_t *err)
{
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) >= 2 && rc == 0) {
            *next_tli = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
            rc = parse_lsn_value(PQgetvalue(res, 0, 1), next_pos, err);
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && rc == 0) {
            char line[512];
            snprintf(line, sizeof line, "%s", PQresultErrorMessage(res));
            line[strcspn(line, "\n")] = '\0';
            rc = wv_err_set(err, WV_EFAIL, "PostgreSQL ended the stream: %s",
                            line[0] ? line : "connection lost");
        }
        PQclear(res);
        if (PQstatus(c) == CONNECTION_BAD)
            break;
    }
    return rc;
}

int sconn_end_copy(PGconn *c, uint32_t *next_tli, wal_lsn_t *next_pos, wv_err_t *err)
{
    *next_tli = 0;
    *next_pos = 0;
    PGresult *res = PQgetResult(c);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COPY_IN) { /* the server's CopyDone: answer with ours */
        PQclear(res);
        if (PQputCopyEnd(c, NULL) <= 0 || PQflush(c) != 0)
            return conn_error(c, "cannot end the replication stream", err);
        return read_end_results(c, next_tli, next_pos, err);
    }
    char line[512];
    snprintf(line, sizeof line, "%s", PQresultErrorMessage(res));
    line[strcspn(line, "\n")] = '\0';
    PQclear(res);
    read_end_results(c, next_tli, next_pos, err);
    if (st == PGRES_COMMAND_OK)
        return 0;
    return wv_err_set(err, WV_EFAIL, "PostgreSQL ended the stream: %s",
                      line[0] ? line : "connection lost");
}
