/* `walvault coordinator`: watermarks and ordered group backups, each on its own schedule and
 * its own thread, so a long group backup never delays the watermarks. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "coord/coord.h"

/* ---- group backups ---- */

struct group {
    const struct coord_cluster *c;
    const struct repo_config *repo;
    const struct backup_opts *o;
    size_t *members; /* node indexes backed up in this step */
};

static int backup_node(const struct group *g, const struct coord_node *n, wv_err_t *err)
{
    struct repo_config rc_node = *g->repo;
    rc_node.node = n->name;
    struct backup_opts o = *g->o;
    o.pg_conninfo = n->pg;
    o.pgdata = n->pgdata;
    o.progress = (struct progress_sink){0};
    repo_t *r;
    char id[64];
    double start = time_monotonic();
    int rc = repo_open(&rc_node, &r, err);
    if (rc == 0) {
        rc = backup_run(r, &o, id, err);
        repo_close(r);
    }
    if (rc)
        return wv_err_prefix(err, "backup of node %s (%s)", n->name, coord_role_name(n->role));
    log_info("coordinator: backed up node %s (%s) as %s in %.1f s", n->name,
             coord_role_name(n->role), id, time_monotonic() - start);
    return 0;
}

static int backup_member(void *arg, size_t i, wv_err_t *err)
{
    const struct group *g = arg;
    return backup_node(g, &g->c->nodes[g->members[i]], err);
}

int coord_group_backup(const struct coord_cluster *c, const struct repo_config *repo,
                       const struct backup_opts *o, wv_err_t *err)
{
    struct group g = {.c = c, .repo = repo, .o = o};
    g.members = calloc(c->count ? c->count : 1, sizeof *g.members);
    if (!g.members)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < c->count; i++)
        if (i != c->sequencer)
            g.members[n++] = i;
    double start = time_monotonic();
    log_info("coordinator: group backup of %zu mediators and participants started", n);
    int rc = coord_parallel(n, backup_member, &g, NULL, err);
    free(g.members);
    /* Only now the sequencer: its backup must be newer than every other node's, or a
     * restore of the group's newest backups could leave a participant ahead of it. */
    if (rc == 0)
        rc = backup_node(&g, &c->nodes[c->sequencer], err);
    if (rc)
        return wv_err_prefix(err, "group backup (sequencer not backed up)");
    log_info("coordinator: group backup finished in %.1f s", time_monotonic() - start);
    return 0;
}

/* ---- the loop ---- */

struct loop {
    const struct coord_cluster *c;
    const struct repo_config *repo;
    const struct coord_loop_opts *o;
};

static bool stopping(const struct loop *l)
{
    return l->o->stop && *l->o->stop;
}

/* Sleeps until `until` (monotonic seconds) in short steps, so a stop request is seen soon. */
static void sleep_until(const struct loop *l, double until)
{
    while (!stopping(l) && time_monotonic() < until) {
        double left = until - time_monotonic();
        time_sleep_ms(left > 0.2 ? 200 : (long)(left * 1000) + 1);
    }
}

int coord_status_init(struct coord_status *s, size_t nodes, wv_err_t *err)
{
    memset(s, 0, sizeof *s);
    s->lags = calloc(nodes ? nodes : 1, sizeof *s->lags);
    if (!s->lags)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->heartbeat_s = time_monotonic();
    return 0;
}

void coord_status_free(struct coord_status *s)
{
    if (!s->lags)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s->lags);
    s->lags = NULL;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void report_watermark(const struct loop *l, const struct coord_watermark *w,
                             const struct coord_node_lag *lags, const wv_err_t *err)
{
    struct coord_status *s = l->o->status;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->wm_attempted = true;
    s->wm_last_ok = err == NULL;
    if (err) {
        s->wm_failed++;
        snprintf(s->wm_error, sizeof s->wm_error, "%s", err->msg);
    } else {
        s->wm_ok++;
        s->wm_known = true;
        s->wm_number = w->number;
        s->wm_time_ms = w->time_ms;
        memcpy(s->lags, lags, l->c->count * sizeof *lags);
    }
    pthread_mutex_unlock(&s->lock);
}

static void one_watermark(const struct loop *l)
{
    struct coord_watermark w = {0};
    wv_err_t err = {0};
    double start = time_monotonic();
    struct coord_node_lag *lags = calloc(l->c->count ? l->c->count : 1, sizeof *lags);
    if (!lags || coord_watermark_take_lags(l->c, l->repo, &l->o->take, &w, lags, &err) != 0) {
        if (!lags)
            wv_err_set(&err, WV_EFAIL, "out of memory");
        log_error("coordinator: watermark failed: %s", err.msg);
        report_watermark(l, NULL, NULL, &err);
        free(lags);
        return;
    }
    report_watermark(l, &w, lags, NULL);
    free(lags);
    char when[40];
    coord_format_time(w.time_ms, when, sizeof when);
    log_info("coordinator: watermark %" PRIu32 " taken at %s in %.2f s", w.number, when,
             time_monotonic() - start);
    coord_watermark_free(&w);
}

static void one_group_backup(const struct loop *l)
{
    wv_err_t err = {0};
    struct coord_status *s = l->o->status;
    if (s) {
        pthread_mutex_lock(&s->lock);
        s->gb_running = true;
        pthread_mutex_unlock(&s->lock);
    }
    int rc = coord_group_backup(l->c, l->repo, &l->o->backup, &err);
    if (rc)
        log_error("coordinator: %s", err.msg);
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->gb_running = false;
    s->gb_attempted = true;
    s->gb_last_ok = rc == 0;
    if (rc) {
        s->gb_failed++;
        snprintf(s->gb_error, sizeof s->gb_error, "%s", err.msg);
    } else {
        s->gb_ok++;
        s->gb_end_ms = wall_ms();
    }
    pthread_mutex_unlock(&s->lock);
}

/* The main thread's turn while the rounds run: /healthz sees it alive. */
static void heartbeat(const struct loop *l, bool stopping_now)
{
    struct coord_status *s = l->o->status;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->heartbeat_s = time_monotonic();
    s->stopping = s->stopping || stopping_now;
    pthread_mutex_unlock(&s->lock);
}

/* Fixed-rate schedule: the next round is due one period after the previous one was due, not
 * after it ended; a round that overran its period starts the next one at once. */
static void *watermark_loop(void *arg)
{
    const struct loop *l = arg;
    double due = time_monotonic();
    while (!stopping(l)) {
        one_watermark(l);
        due += l->o->watermark_every_s;
        if (due < time_monotonic())
            due = time_monotonic();
        sleep_until(l, due);
    }
    return NULL;
}

static void *backup_loop(void *arg)
{
    const struct loop *l = arg;
    double due = time_monotonic();
    while (!stopping(l)) {
        one_group_backup(l);
        due += l->o->backup_every_s;
        if (due < time_monotonic())
            due = time_monotonic();
        sleep_until(l, due);
    }
    return NULL;
}

int coord_run(const struct coord_cluster *c, const struct repo_config *repo,
              const struct coord_loop_opts *o, wv_err_t *err)
{
    struct loop l = {.c = c, .repo = repo, .o = o};
    if (o->once) { /* the backup first, so that the watermark after it is restorable */
        if (o->backup_every_s > 0 && coord_group_backup(c, repo, &o->backup, err) != 0)
            return err->code;
        if (o->watermark_every_s <= 0)
            return 0;
        struct coord_watermark w = {0};
        int rc = coord_watermark_take(c, repo, &o->take, &w, err);
        if (rc == 0)
            log_info("coordinator: watermark %" PRIu32 " written", w.number);
        coord_watermark_free(&w);
        return rc;
    }
    pthread_t wt, bt;
    bool w_on = o->watermark_every_s > 0, b_on = o->backup_every_s > 0;
    if (w_on && pthread_create(&wt, NULL, watermark_loop, &l) != 0)
        return wv_err_set(err, WV_EFAIL, "cannot start the coordinator's watermark thread");
    if (b_on && pthread_create(&bt, NULL, backup_loop, &l) != 0) {
        if (w_on && o->stop) {
            *o->stop = 1;
            pthread_join(wt, NULL);
        }
        return wv_err_set(err, WV_EFAIL, "cannot start the coordinator's backup thread");
    }
    log_info("coordinator: %zu nodes; watermark every %g s, group backup every %g s", c->count,
             o->watermark_every_s, o->backup_every_s);
    while (!stopping(&l)) {
        heartbeat(&l, false);
        time_sleep_ms(200);
    }
    heartbeat(&l, true);
    if (w_on)
        pthread_join(wt, NULL);
    if (b_on)
        pthread_join(bt, NULL);
    log_info("coordinator: stopped");
    return 0;
}
