/* Starting a wal-stream session: connect, check that the server is the node's cluster, make
 * sure the slot exists, and choose where to start. The first time that is the later of what
 * the repository holds on the server's history and the slot's restart_lsn, rounded down to
 * a segment start (bytes already archived are sent again: identical content); after a
 * reconnect it is where the stream stood, less what was not yet archived. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "wal/stream_loop.h"

#define HISTORY_MAX 256

void wal_stream_slot_name(const char *node, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "walvault_");
    for (const char *p = node; *p && n + 1 < len && n < 63; p++)
        out[n++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    out[n] = '\0';
}

static int check_slot_name(const char *slot, wv_err_t *err)
{
    size_t n = strlen(slot);
    bool ok = n > 0 && n < 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = islower((unsigned char)slot[i]) || isdigit((unsigned char)slot[i]) || slot[i] == '_';
    if (!ok)
        return wv_err_set(err, WV_EUSAGE,
                          "invalid replication slot name \"%s\": use 1-63 lowercase letters, "
                          "digits or '_'",
                          slot);
    return 0;
}

/* ---- synchronous_standby_names ---- */

/* The next name of the list: a quoted identifier, or a run of anything but separators.
 * Returns the position after it, or NULL at the end. */
static const char *next_name(const char *p, char *out, size_t len, bool *quoted)
{
    while (*p && (isspace((unsigned char)*p) || *p == ',' || *p == '(' || *p == ')'))
        p++;
    if (!*p)
        return NULL;
    size_t n = 0;
    *quoted = *p == '"';
    if (*quoted) {
        for (p++; *p && !(p[0] == '"' && p[1] != '"'); p++) {
            if (*p == '"')
                p++; /* "" is one quote */
            if (n + 1 < len)
                out[n++] = *p;
        }
        if (*p)
            p++;
    } else {
        for (; *p && !isspace((unsigned char)*p) && !strchr(",()", *p); p++)
            if (n + 1 < len)
                out[n++] = *p;
    }
    out[n] = '\0';
    return p;
}

static bool is_number(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return *s != '\0';
}

/* The grammar is "[FIRST|ANY] [n] (name, ...)" or "name, ...": every word but the keywords
 * and the count is a standby name; PostgreSQL compares names case-insensitively. */
bool wal_stream_is_named(const char *standby_names, const char *application_name)
{
    char name[256];
    bool quoted;
    const char *p = standby_names;
    while ((p = next_name(p, name, sizeof name, &quoted)) != NULL) {
        if (!quoted &&
            (strcasecmp(name, "FIRST") == 0 || strcasecmp(name, "ANY") == 0 || is_number(name)))
            continue;
        if (strcmp(name, "*") == 0 || strcasecmp(name, application_name) == 0)
            return true;
    }
    return false;
}

/* ---- the server's timelines ---- */

/* Timelines of the server's history, oldest first; the last is the server's own, open-ended. */
struct timelines {
    struct wal_history_entry e[HISTORY_MAX + 1];
    int count;
};

static int load_timelines(struct stream *s, struct timelines *t, wv_err_t *err)
{
    t->count = 0;
    if (s->id.timeline > 1) {
        char *text;
        size_t len;
        int rc = sconn_timeline_history(s->conn, s->id.timeline, &text, &len, err);
        if (rc)
            return rc;
        t->count = wal_history_parse(text, len, t->e, HISTORY_MAX, err);
        struct store_job j = {.kind = STORE_HISTORY,
                              .tli = s->id.timeline,
                              .data = (const uint8_t *)text,
                              .end = (uint32_t)len};
        rc = t->count < 0 ? t->count : stream_store_now(s, &j, err);
        free(text);
        if (rc)
            return wv_err_prefix(err, "timeline history %" PRIu32, s->id.timeline);
    }
    t->e[t->count++] = (struct wal_history_entry){.tli = s->id.timeline, .end_lsn = UINT64_MAX};
    return 0;
}

static uint32_t timeline_of(const struct timelines *t, wal_lsn_t lsn)
{
    for (int i = 0; i < t->count; i++)
        if (lsn < t->e[i].end_lsn)
            return t->e[i].tli;
    return t->e[t->count - 1].tli;
}

/* Where the repository ends on the server's history: the newest timeline of it holding
 * anything, capped at that timeline's switch point (past it, the child timeline starts). */
static int repository_end(struct stream *s, const struct timelines *t, uint32_t *tli,
                          wal_lsn_t *end, wv_err_t *err)
{
    *end = 0;
    for (int i = t->count - 1; i >= 0; i--) {
        struct wal_tail tail;
        int rc = wal_timeline_tail(s->r, t->e[i].tli, s->id.seg_size, &tail, err);
        if (rc)
            return rc;
        for (size_t k = 0; k < tail.nstale; k++)
            stream_queue_cleanup(s, t->e[i].tli, tail.stale[k]);
        if (tail.end == 0)
            continue;
        bool past = tail.end >= t->e[i].end_lsn;
        *tli = past ? t->e[i + 1].tli : t->e[i].tli;
        *end = past ? t->e[i].end_lsn : tail.end;
        return 0;
    }
    return 0;
}

/* How much of the start segment the repository holds already (fragments) on timeline tli. */
static int held_in_segment(struct stream *s, uint32_t tli, uint64_t segno, uint32_t *held,
                           wv_err_t *err)
{
    struct wal_frag_chain c;
    *held = 0;
    int rc = wal_fragments_scan(s->r, tli, segno, s->id.seg_size, &c, err);
    if (rc == 0 && c.end < s->id.seg_size)
        *held = c.end;
    return rc;
}

static int place_stream(struct stream *s, wal_lsn_t slot_lsn, wv_err_t *err)
{
    struct timelines *t = malloc(sizeof *t);
    if (!t)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    uint32_t tli = s->id.timeline;
    wal_lsn_t end = 0, start;
    int rc = load_timelines(s, t, err);
    if (rc == 0)
        rc = repository_end(s, t, &tli, &end, err);
    start = end;
    if (rc == 0 && slot_lsn > end) {
        if (end) {
            char a[WAL_LSN_STR_MAX], b[WAL_LSN_STR_MAX];
            wal_lsn_format(end, a);
            wal_lsn_format(slot_lsn, b);
            log_warn("the repository holds WAL up to %s, but slot %s starts at %s: WAL in "
                     "between is not archived",
                     a, s->slot, b);
        }
        start = slot_lsn;
        tli = timeline_of(t, slot_lsn);
    }
    if (rc == 0 && start == 0) /* no slot position (before PostgreSQL 15), nothing archived */
        start = s->id.flush_lsn;
    uint64_t segno = wal_segno_of(start, s->id.seg_size);
    uint32_t held = 0;
    if (rc == 0)
        rc = held_in_segment(s, tli, segno, &held, err);
    free(t);
    if (rc)
        return rc;
    stream_seg_reset(&s->seg, tli, segno, held);
    /* The server hears what the repository holds up to where the stream starts; with a gap
     * before it (or nothing yet) it hears nothing until the first store. */
    wal_lsn_t seg_start = stream_seg_start(&s->seg);
    if (held)
        stream_note_durable(s, seg_start + held > end ? seg_start + held : end);
    else if (end >= seg_start)
        stream_note_durable(s, end);
    return 0;
}

/* ---- the session ---- */

static int check_node(struct stream *s, wv_err_t *err)
{
    struct repo_node_info info = {.system_identifier = s->id.system_identifier,
                                  .pg_version = s->id.server_version,
                                  .wal_seg_size = s->id.seg_size};
    int rc = repo_node_bind(s->r, &info, err);
    if (rc)
        return wv_err_prefix(err, "refusing to stream from this server");
    if (s->seg.data && s->seg.seg_size != s->id.seg_size)
        return wv_err_set(err, WV_EMISMATCH, "the server's WAL segment size changed");
    return s->seg.data ? 0 : stream_seg_init(&s->seg, s->id.seg_size, err);
}

static void log_start(const struct stream *s, bool first)
{
    char at[WAL_LSN_STR_MAX], lsn[WAL_LSN_STR_MAX], archived[64] = "nothing archived yet";
    wal_lsn_format(stream_seg_next(&s->seg), at);
    wal_lsn_format(s->durable_lsn, lsn);
    if (s->durable_lsn)
        snprintf(archived, sizeof archived, "archived up to %s", lsn);
    log_info("%s WAL from %s on timeline %" PRIu32 " (slot %s, application_name %s, %s; %s)",
             first ? "streaming" : "resuming", at, s->seg.tli, s->slot, s->app,
             s->id.synchronous ? "synchronous" : "asynchronous", archived);
}

int stream_session_start(struct stream *s, wv_err_t *err)
{
    wal_lsn_t slot_lsn;
    uint32_t slot_tli;
    int rc = check_slot_name(s->slot, err);
    if (rc == 0)
        rc = sconn_open(s->o->conninfo, s->app, &s->conn, err);
    if (rc == 0)
        rc = sconn_identify(s->conn, s->app, &s->id, err);
    if (rc == 0)
        rc = check_node(s, err);
    if (rc == 0)
        rc = sconn_slot(s->conn, s->slot, &slot_lsn, &slot_tli, err);
    bool first = !s->positioned;
    if (rc == 0 && first)
        rc = place_stream(s, slot_lsn, err);
    if (rc)
        return rc;
    s->positioned = true;
    bool older_answer;
    stream_probe_new_session(&s->probe);
    stream_probe_answer(&s->probe, &s->probe_seen, &older_answer); /* this one is newer */
    atomic_store(&s->stats->synchronous, s->id.synchronous);
    atomic_store(&s->stats->timeline, s->seg.tli);
    log_start(s, first);
    rc = sconn_start(s->conn, s->slot, s->seg.tli, stream_seg_next(&s->seg), err);
    s->last_status = 0;
    s->status_now = true;
    return rc;
}
