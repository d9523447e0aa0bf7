/* `walvault watermark`: connect to every node, take the cut, wait until every node's archive
 * holds its LSN, write the watermark. Nothing is written unless every node took part. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "coord/internal.h"
#include "wal/archive.h"

struct take_node {
    const struct coord_node *n;
    PGconn *conn;
    repo_t *repo;
    struct coord_pg_info info;
    uint32_t tli;
    wal_lsn_t lsn;
    bool nudged, held, looked;
    uint64_t lag_bytes; /* at the first look after the cut */
    double held_s;      /* seconds after the cut when it was seen held */
};

struct take {
    const struct coord_cluster *c;
    const struct repo_config *repo;
    const struct coord_take_opts *o;
    struct take_node *nodes;
    wal_lsn_t *lsns;
    double cut_s; /* monotonic: when the cut was read */
};

/* The node record binds a node name to one PostgreSQL system: a watermark must not name
 * the LSN of one cluster for the WAL of another. */
static int check_node_record(struct take_node *t, wv_err_t *err)
{
    struct repo_node_info rec;
    int rc = repo_node_get(t->repo, &rec, err);
    if (rc == WV_ENOTFOUND)
        return wv_err_set(err, WV_EUSAGE,
                          "node %s: the repository holds no WAL or backup of it yet; archive its "
                          "WAL (archive_command or wal-stream) before taking watermarks",
                          t->n->name);
    if (rc)
        return wv_err_prefix(err, "node %s", t->n->name);
    if (rec.system_identifier != t->info.system_identifier)
        return wv_err_set(err, WV_EMISMATCH,
                          "node %s: the server at its connection string is PostgreSQL system "
                          "%" PRIu64 ", but the repository's node %s is system %" PRIu64
                          "; check pg of [node %s]",
                          t->n->name, t->info.system_identifier, t->n->name, rec.system_identifier,
                          t->n->name);
    if (rec.wal_seg_size && rec.wal_seg_size != t->info.seg_size)
        return wv_err_set(err, WV_EMISMATCH,
                          "node %s: WAL segment size %u differs from the repository's %u",
                          t->n->name, t->info.seg_size, rec.wal_seg_size);
    return 0;
}

static int prepare_node(void *arg, size_t i, wv_err_t *err)
{
    struct take *t = arg;
    struct take_node *tn = &t->nodes[i];
    struct repo_config rc_node = *t->repo;
    rc_node.node = tn->n->name;
    int rc = coord_pg_connect(tn->n, t->o->connect_timeout_s, &tn->conn, err);
    if (rc == 0)
        rc = coord_pg_info(tn->conn, tn->n, &tn->info, err);
    if (rc == 0)
        rc = repo_open(&rc_node, &tn->repo, err);
    if (rc == 0)
        rc = check_node_record(tn, err);
    return rc;
}

/* A coord_read_fn: the cut's read of one node, on the connection made beforehand so that
 * the reads themselves are quick and close together. */
static int read_position(void *arg, size_t i, wal_lsn_t *lsn, wv_err_t *err)
{
    struct take *t = arg;
    return coord_pg_position(t->nodes[i].conn, t->nodes[i].n, lsn, &t->nodes[i].tli, err);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int take_cut(struct take *t, struct coord_watermark *w, wv_err_t *err)
{
    int rc = coord_cut_read(t->c, read_position, t, t->lsns, err);
    if (rc)
        return rc;
    w->time_ms = now_ms(); /* the sequencer was read last: this is the cut's moment */
    t->cut_s = time_monotonic();
    for (size_t i = 0; i < t->c->count; i++) {
        struct take_node *tn = &t->nodes[i];
        tn->lsn = t->lsns[i];
        tn->nudged = tn->held = tn->looked = false;
        tn->lag_bytes = 0;
        tn->held_s = 0;
        w->nodes[i] = (struct coord_wm_node){.role = tn->n->role,
                                             .system_identifier = tn->info.system_identifier,
                                             .timeline = tn->tli,
                                             .lsn = tn->lsn};
        snprintf(w->nodes[i].name, sizeof w->nodes[i].name, "%s", tn->n->name);
    }
    return 0;
}

/* At the first look after the cut, how far the archive is behind lsn: one more listing of
 * the cut's segment's fragments for a streaming node, nothing more for archive_command. */
static int note_lag(struct take_node *tn, wv_err_t *err)
{
    tn->looked = true;
    if (tn->held)
        return 0;
    uint32_t seg = tn->info.seg_size;
    uint64_t segno = wal_segno_of(tn->lsn, seg);
    wal_lsn_t archived = wal_segment_start(segno, seg);
    if (tn->n->archive == COORD_ARCHIVE_STREAM) {
        struct wal_frag_chain c = {0};
        int rc = wal_fragments_scan(tn->repo, tn->tli, segno, seg, &c, err);
        if (rc)
            return rc;
        if (c.any)
            archived += c.end;
    }
    tn->lag_bytes = tn->lsn > archived ? tn->lsn - archived : 0;
    return 0;
}

/* Held: the archive has the bytes at lsn (the segment holding it whole, or wal-stream's
 * fragments past it), so recovery finds the record where it must stop. */
static int check_held(struct take_node *tn, double cut_s, char missing[WAL_NAME_MAX], wv_err_t *err)
{
    int rc = wal_archived_range(tn->repo, tn->tli, tn->lsn, tn->lsn + 1, tn->info.seg_size,
                                &tn->held, missing, err);
    if (rc == 0 && !tn->looked)
        rc = note_lag(tn, err);
    if (rc == 0 && tn->held)
        tn->held_s = time_monotonic() - cut_s;
    if (rc == 0 && !tn->held && !tn->nudged) {
        tn->nudged = true;
        rc = coord_pg_nudge(tn->conn, tn->n, tn->lsn, tn->info.seg_size, err);
    }
    return rc ? wv_err_prefix(err, "node %s", tn->n->name) : 0;
}

static int wait_timeout(const struct take *t, const struct take_node *tn, const char *missing,
                        wv_err_t *err)
{
    char lsn[WAL_LSN_STR_MAX];
    wal_lsn_format(tn->lsn, lsn);
    return wv_err_set(err, WV_ETIMEOUT,
                      "node %s (%s): its archive did not reach LSN %s on timeline %u within %d s "
                      "(%s missing); check its %s; no watermark written",
                      tn->n->name, coord_role_name(tn->n->role), lsn, tn->tli, t->o->timeout_s,
                      missing,
                      tn->n->archive == COORD_ARCHIVE_COMMAND ? "archive_command" : "wal-stream");
}

static int wait_archives(struct take *t, wv_err_t *err)
{
    double deadline = time_monotonic() + (t->o->timeout_s > 0 ? t->o->timeout_s : 60);
    long sleep_ms = 10; /* archive_command usually lands a switched segment within ms */
    for (;;) {
        struct take_node *waiting = NULL;
        char missing[WAL_NAME_MAX] = "";
        for (size_t i = 0; i < t->c->count; i++) {
            struct take_node *tn = &t->nodes[i];
            char m[WAL_NAME_MAX] = "";
            int rc = tn->held ? 0 : check_held(tn, t->cut_s, m, err);
            if (rc)
                return rc;
            if (!tn->held && !waiting) {
                waiting = tn;
                snprintf(missing, sizeof missing, "%s", m);
            }
        }
        if (!waiting)
            return 0;
        if (time_monotonic() > deadline)
            return wait_timeout(t, waiting, missing, err);
        time_sleep_ms(sleep_ms);
        sleep_ms = sleep_ms < 250 ? sleep_ms * 2 : 250;
    }
}

static int setup(struct take *t, struct coord_watermark *w, wv_err_t *err)
{
    size_t n = t->c->count;
    t->nodes = calloc(n, sizeof *t->nodes);
    t->lsns = calloc(n, sizeof *t->lsns);
    w->nodes = calloc(n, sizeof *w->nodes);
    w->count = n;
    if (!t->nodes || !t->lsns || !w->nodes)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; i < n; i++)
        t->nodes[i].n = &t->c->nodes[i];
    /* Connections and identity checks first, all nodes at once: a node that is down fails
     * here, before anything is read or written. */
    return coord_parallel(n, prepare_node, t, NULL, err);
}

static void teardown(struct take *t)
{
    for (size_t i = 0; t->nodes && i < t->c->count; i++) {
        if (t->nodes[i].conn)
            PQfinish(t->nodes[i].conn);
        if (t->nodes[i].repo)
            repo_close(t->nodes[i].repo);
    }
    free(t->nodes);
    free(t->lsns);
}

/* One attempt: a fresh cut, the archives, the write. WV_EEXISTS / WV_EMISMATCH from publish
 * mean another coordinator wrote the next number first: the caller tries again. */
static int attempt(struct take *t, struct coord_watermark *w, wv_err_t *err)
{
    int rc = take_cut(t, w, err);
    if (rc == 0)
        rc = wait_archives(t, err);
    if (rc == 0)
        rc = coord_watermark_publish(t->nodes[t->c->sequencer].repo, w, err);
    return rc;
}

int coord_watermark_take(const struct coord_cluster *c, const struct repo_config *repo,
                         const struct coord_take_opts *o, struct coord_watermark *out,
                         wv_err_t *err)
{
    return coord_watermark_take_lags(c, repo, o, out, NULL, err);
}

int coord_watermark_take_lags(const struct coord_cluster *c, const struct repo_config *repo,
                              const struct coord_take_opts *o, struct coord_watermark *out,
                              struct coord_node_lag *lags, wv_err_t *err)
{
    struct take t = {.c = c, .repo = repo, .o = o};
    memset(out, 0, sizeof *out);
    int rc = setup(&t, out, err);
    int attempts = o->attempts > 0 ? o->attempts : 20;
    for (int i = 0; rc == 0 && i < attempts; i++) {
        rc = attempt(&t, out, err);
        if (rc != WV_EEXISTS && rc != WV_EMISMATCH)
            break;
        log_info("%s; taking a new cut", err->msg);
        if (i + 1 < attempts)
            rc = 0;
    }
    for (size_t i = 0; rc == 0 && lags && i < c->count; i++)
        lags[i] = (struct coord_node_lag){
            .lsn = t.nodes[i].lsn, .lag_bytes = t.nodes[i].lag_bytes, .wait_s = t.nodes[i].held_s};
    teardown(&t);
    if (rc)
        coord_watermark_free(out);
    return rc;
}
