/* The libpq side of a watermark: one connection per node, a handful of one-row queries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord/internal.h"

/* libpq's messages end in a newline and may span lines; errors here are one line. */
static void one_line(const char *in, char *out, size_t len)
{
    snprintf(out, len, "%s", in ? in : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == ' ')
        out[--n] = '\0';
}

static int node_error(wv_err_t *err, const struct coord_node *n, const char *what,
                      const char *detail)
{
    char line[512];
    one_line(detail, line, sizeof line);
    return wv_err_set(err, WV_EFAIL, "node %s (%s): %s: %s", n->name, coord_role_name(n->role),
                      what, line);
}

int coord_pg_connect(const struct coord_node *n, int timeout_s, PGconn **out, wv_err_t *err)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", timeout_s > 0 ? timeout_s : 10);
    /* Entries before the expanded conninfo are defaults it may override. */
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *values[] = {timeout, "walvault-coordinator", n->pg, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn)
        return wv_err_set(err, WV_EFAIL, "out of memory connecting to node %s", n->name);
    if (PQstatus(conn) != CONNECTION_OK) {
        int rc =
            node_error(err, n, "cannot connect to PostgreSQL (is it down?)", PQerrorMessage(conn));
        PQfinish(conn);
        return rc;
    }
    *out = conn;
    return 0;
}

/* Runs a query that returns one row of `cols` columns; *res is the result to PQclear. */
static int query_row(PGconn *conn, const struct coord_node *n, const char *sql, int cols,
                     PGresult **res, wv_err_t *err)
{
    *res = PQexec(conn, sql);
    if (PQresultStatus(*res) != PGRES_TUPLES_OK || PQntuples(*res) != 1 ||
        PQnfields(*res) != cols) {
        const char *msg = PQresultErrorMessage(*res);
        int rc = node_error(err, n, "query failed", msg && *msg ? msg : PQerrorMessage(conn));
        PQclear(*res);
        *res = NULL;
        return rc;
    }
    return 0;
}

int coord_pg_info(PGconn *conn, const struct coord_node *n, struct coord_pg_info *out,
                  wv_err_t *err)
{
    PGresult *res;
    int rc = query_row(conn, n,
                       "SELECT s.system_identifier, (SELECT setting FROM pg_settings WHERE name = "
                       "'wal_segment_size'), pg_is_in_recovery() FROM pg_control_system() s",
                       3, &res, err);
    if (rc)
        return rc;
    out->system_identifier = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    out->seg_size = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    if (strcmp(PQgetvalue(res, 0, 2), "t") == 0)
        rc = wv_err_set(err, WV_EUSAGE,
                        "node %s (%s) is a standby in recovery: give the coordinator the primary's "
                        "connection string",
                        n->name, coord_role_name(n->role));
    else if (!wal_seg_size_valid(out->seg_size))
        rc = node_error(err, n, "unexpected wal_segment_size", PQgetvalue(res, 0, 1));
    PQclear(res);
    return rc;
}

static int parse_lsn(const struct coord_node *n, const char *text, wal_lsn_t *lsn, wv_err_t *err)
{
    if (wal_lsn_parse(text, lsn, err) != 0)
        return node_error(err, n, "unexpected LSN", text);
    return 0;
}

int coord_pg_position(PGconn *conn, const struct coord_node *n, wal_lsn_t *lsn, uint32_t *tli,
                      wv_err_t *err)
{
    /* One call of the LSN function, so the LSN and the timeline describe the same moment.
     * pg_walfile_name names the timeline WAL is being written on (after a promotion, the
     * new one), which pg_control_checkpoint() would only show after the next checkpoint. */
    const char *sql = n->role == COORD_SEQUENCER
                          ? "SELECT l, pg_walfile_name(l) FROM pg_current_wal_insert_lsn() l"
                          : "SELECT l, pg_walfile_name(l) FROM pg_current_wal_flush_lsn() l";
    PGresult *res;
    int rc = query_row(conn, n, sql, 2, &res, err);
    if (rc)
        return rc;
    char tli_hex[9];
    snprintf(tli_hex, sizeof tli_hex, "%s", PQgetvalue(res, 0, 1));
    *tli = (uint32_t)strtoul(tli_hex, NULL, 16);
    rc = parse_lsn(n, PQgetvalue(res, 0, 0), lsn, err);
    if (rc == 0 && *tli == 0)
        rc = node_error(err, n, "unexpected WAL file name", PQgetvalue(res, 0, 1));
    PQclear(res);
    return rc;
}

static int query_lsn(PGconn *conn, const struct coord_node *n, const char *sql, wal_lsn_t *lsn,
                     wv_err_t *err)
{
    PGresult *res;
    int rc = query_row(conn, n, sql, 1, &res, err);
    if (rc == 0)
        rc = parse_lsn(n, PQgetvalue(res, 0, 0), lsn, err);
    PQclear(res);
    return rc;
}

int coord_pg_nudge(PGconn *conn, const struct coord_node *n, wal_lsn_t lsn, uint32_t seg_size,
                   wv_err_t *err)
{
    /* On a node idle since the cut no record starts at or after lsn yet (the insert LSN can
     * lie past lsn by no more than a page header then). A logical message is the smallest
     * record there is; it changes no data and takes no transaction id. */
    wal_lsn_t insert;
    int rc = query_lsn(conn, n, "SELECT pg_logical_emit_message(false, 'walvault', 'watermark')",
                       &insert, err);
    /* archive_command sends a segment only once it is finished. Switch once, and only while
     * lsn's segment is still the current one: otherwise it is finished already. */
    if (rc == 0 && n->archive == COORD_ARCHIVE_COMMAND &&
        wal_segno_of(insert, seg_size) == wal_segno_of(lsn, seg_size))
        rc = query_lsn(conn, n, "SELECT pg_switch_wal()", &insert, err);
    return rc;
}
