/* The coordinator's commands: read the options and the cluster's [node NAME] sections, call
 * coord/, print the outcome. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cmd_coord.h"
#include "agent/commands.h"
#include "agent/coord_http.h"
#include "agent/httpd.h"
#include "common/log.h"

static int take_opts_of(const struct config *cfg, struct coord_take_opts *o, wv_err_t *err)
{
    *o = (struct coord_take_opts){.attempts = 20};
    int rc = config_int(cfg, OPT_WATERMARK_TIMEOUT, 1, 86400, &o->timeout_s, err);
    /* A node that does not answer must not use up the whole wait on its own. */
    o->connect_timeout_s = o->timeout_s < 10 ? o->timeout_s : 10;
    return rc;
}

static void print_watermark(const struct coord_watermark *w, bool json)
{
    if (json) {
        json_t *doc = coord_watermark_json(w);
        json_dumpf(doc, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(doc);
        return;
    }
    char when[40];
    coord_format_time(w->time_ms, when, sizeof when);
    printf("watermark %" PRIu32 " taken at %s (the coordinator's clock)\n", w->number, when);
    printf("  %-20s %-12s %-8s %-18s %s\n", "node", "role", "timeline", "lsn", "system identifier");
    for (size_t i = 0; i < w->count; i++) {
        char lsn[WAL_LSN_STR_MAX];
        wal_lsn_format(w->nodes[i].lsn, lsn);
        printf("  %-20s %-12s %-8" PRIu32 " %-18s %" PRIu64 "\n", w->nodes[i].name,
               coord_role_name(w->nodes[i].role), w->nodes[i].timeline, lsn,
               w->nodes[i].system_identifier);
    }
}

int cmd_watermark(const struct config *cfg)
{
    wv_err_t err = {0};
    struct coord_cluster c;
    struct coord_take_opts o;
    if (take_opts_of(cfg, &o, &err) != 0 ||
        coord_cluster_load(config_get(cfg, OPT_CONFIG), &c, &err) != 0)
        return commands_fail(&err);
    struct repo_config repo = commands_repo_config(cfg);
    struct coord_watermark w = {0};
    int rc = coord_watermark_take(&c, &repo, &o, &w, &err);
    coord_cluster_free(&c);
    if (rc)
        return commands_fail(&err);
    print_watermark(&w, config_flag(cfg, OPT_JSON));
    coord_watermark_free(&w);
    return EXIT_OK;
}

/* ---- coordinator ---- */

static volatile sig_atomic_t coordinator_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    coordinator_stop = 1;
}

static int loop_opts_of(const struct config *cfg, struct coord_loop_opts *o, wv_err_t *err)
{
    *o = (struct coord_loop_opts){.once = config_flag(cfg, OPT_ONCE), .stop = &coordinator_stop};
    const char *source = config_get(cfg, OPT_SOURCE);
    o->backup.source = strcmp(source, "local") == 0    ? BACKUP_SOURCE_LOCAL
                       : strcmp(source, "stream") == 0 ? BACKUP_SOURCE_STREAM
                                                       : BACKUP_SOURCE_AUTO;
    if (strcmp(source, "auto") != 0 && o->backup.source == BACKUP_SOURCE_AUTO)
        return wv_err_set(err, WV_EUSAGE, "--source wants local, stream or auto, got \"%s\"",
                          source);
    int rc = take_opts_of(cfg, &o->take, err);
    if (rc == 0)
        rc = config_duration(cfg, OPT_WATERMARK_EVERY, 0, 7 * 86400, &o->watermark_every_s, err);
    if (rc == 0)
        rc = config_duration(cfg, OPT_BACKUP_EVERY, 0, 366 * 86400, &o->backup_every_s, err);
    if (rc == 0)
        rc = config_int(cfg, OPT_JOBS, 1, 256, &o->backup.jobs, err);
    if (rc == 0)
        rc = config_int(cfg, OPT_ARCHIVE_TIMEOUT, 1, 86400, &o->backup.archive_timeout_s, err);
    if (rc == 0 && o->watermark_every_s <= 0 && o->backup_every_s <= 0)
        rc = wv_err_set(err, WV_EUSAGE,
                        "the coordinator has nothing to do: --watermark-every and --backup-every "
                        "are both 0");
    return rc;
}

int cmd_coordinator(const struct config *cfg)
{
    commands_long_running();
    wv_err_t err = {0};
    struct coord_cluster c;
    struct coord_loop_opts o;
    const char *listen = config_get(cfg, OPT_LISTEN);
    if (loop_opts_of(cfg, &o, &err) != 0 || httpd_check_listen(listen, &err) != 0 ||
        coord_cluster_load(config_get(cfg, OPT_CONFIG), &c, &err) != 0)
        return commands_fail(&err);
    struct coord_status status;
    if (coord_status_init(&status, c.count, &err) != 0) {
        coord_cluster_free(&c);
        return commands_fail(&err);
    }
    o.status = &status;
    /* No SA_RESTART: the loops sleep in short steps and look at the flag between them. */
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct repo_config repo = commands_repo_config(cfg);
    /* /healthz, /readyz and /metrics while it runs on a schedule; --once has no probes. */
    struct coord_http http = {.c = &c, .o = &o, .s = &status};
    void *server = NULL;
    int rc = o.once ? 0 : coord_http_start(listen, &http, &server, &err);
    if (rc == 0)
        rc = coord_run(&c, &repo, &o, &err);
    httpd_stop(server);
    coord_status_free(&status);
    coord_cluster_free(&c);
    return rc ? commands_fail(&err) : EXIT_OK;
}

/* ---- plan ---- */

static void print_plan(const struct coord_watermark *w, const struct coord_plan_node *p)
{
    char when[40];
    coord_format_time(w->time_ms, when, sizeof when);
    printf("watermark %" PRIu32 ", cut at %s (the coordinator's clock)\n", w->number, when);
    printf("  %-20s %-12s %-8s %-18s %-26s %s\n", "node", "role", "timeline", "target lsn",
           "backup", "backup stop lsn");
    for (size_t i = 0; i < w->count; i++) {
        char lsn[WAL_LSN_STR_MAX], stop[WAL_LSN_STR_MAX] = "-";
        wal_lsn_format(p[i].lsn, lsn);
        if (p[i].backup_id[0])
            wal_lsn_format(p[i].backup_stop, stop);
        printf("  %-20s %-12s %-8" PRIu32 " %-18s %-26s %s\n", p[i].name,
               coord_role_name(p[i].role), p[i].timeline, lsn,
               p[i].backup_id[0] ? p[i].backup_id : "(none)", stop);
    }
    printf("restore every node, each with: walvault --node NODE restore --to DIR --watermark "
           "%" PRIu32 "\n"
           "recovery stops before the first WAL record at or after the target LSN, on that "
           "timeline\n"
           "Canton: command deduplication is reliable again once the synchronizer's time is past "
           "%s plus its ledger-time-record-time tolerance\n",
           w->number, when);
}

static int plan_watermark(const struct config *cfg, repo_t *r, struct coord_watermark *w,
                          wv_err_t *err)
{
    const char *spec = config_get(cfg, OPT_WATERMARK);
    const char *at = config_get(cfg, OPT_TARGET_TIME);
    if (!spec == !at)
        return wv_err_set(err, WV_EUSAGE, "plan needs --watermark N|latest or --target-time T");
    if (spec)
        return coord_watermark_resolve(r, spec, w, err);
    int64_t ms;
    int rc = coord_parse_time(at, &ms, err);
    return rc ? rc : coord_watermark_at_time(r, ms, w, err);
}

int cmd_plan(const struct config *cfg)
{
    wv_err_t err = {0};
    struct repo_config repo = commands_repo_config(cfg);
    repo_t *r;
    struct coord_watermark w = {0};
    if (repo_open(&repo, &r, &err) != 0)
        return commands_fail(&err);
    int rc = plan_watermark(cfg, r, &w, &err);
    repo_close(r);
    struct coord_plan_node *plan = NULL;
    if (rc == 0 && (rc = coord_plan(&repo, &w, true, &plan, &err)) != 0)
        coord_watermark_free(&w);
    if (rc)
        return commands_fail(&err);
    int status = EXIT_OK;
    if (config_flag(cfg, OPT_JSON)) {
        json_t *doc = coord_plan_json(&w, plan);
        json_dumpf(doc, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(doc);
    } else {
        print_plan(&w, plan);
    }
    for (size_t i = 0; i < w.count; i++)
        if (plan[i].problem[0]) {
            log_error("watermark %" PRIu32 ": node %s cannot be restored: %s", w.number,
                      plan[i].name, plan[i].problem);
            status = EXIT_FAILURE_;
        }
    free(plan);
    coord_watermark_free(&w);
    return status;
}

/* ---- what other commands do with watermarks ---- */

int cmd_coord_restore_target(const struct config *cfg, repo_t *r, struct restore_opts *opts,
                             struct watermark_target *t, wv_err_t *err)
{
    memset(t, 0, sizeof *t);
    if (opts->backup_id || opts->target_time || opts->target_lsn)
        return wv_err_set(err, WV_EUSAGE,
                          "--watermark chooses the backup and the target itself: give no "
                          "--backup, --target-time or --target-lsn with it");
    int rc = coord_restore_target(r, config_get(cfg, OPT_WATERMARK), &t->w, &t->plan, err);
    if (rc)
        return rc;
    wal_lsn_format(t->plan.lsn, t->lsn);
    opts->backup_id = t->plan.backup_id;
    opts->target_lsn = t->lsn;
    opts->target_timeline = t->plan.timeline;
    opts->target_exclusive = true;
    log_info("watermark %" PRIu32
             ": node %s recovers from backup %s to LSN %s on timeline %" PRIu32,
             t->w.number, t->plan.name, t->plan.backup_id, t->lsn, t->plan.timeline);
    return 0;
}

void cmd_coord_restore_done(struct watermark_target *t)
{
    coord_watermark_free(&t->w);
}

int cmd_coord_verify(const struct config *cfg, json_t *report, wv_err_t *err)
{
    struct repo_config repo = commands_repo_config(cfg);
    size_t checked = 0;
    json_t *problems = json_object_get(report, "problems");
    int rc = coord_verify_watermarks(&repo, problems, &checked, err);
    json_object_set_new(report, "watermarks_checked", json_integer((json_int_t)checked));
    return rc;
}

int cmd_coord_expire_keep(const struct config *cfg, repo_t *r, json_t **keep, wv_err_t *err)
{
    int retain;
    *keep = NULL;
    if (!config_get(cfg, OPT_RETAIN_WATERMARKS))
        return 0;
    int rc = config_int(cfg, OPT_RETAIN_WATERMARKS, 1, 1000000, &retain, err);
    if (rc)
        return rc;
    *keep = json_array();
    rc = coord_watermarks_needs(r, retain, *keep, err);
    if (rc) {
        json_decref(*keep);
        *keep = NULL;
    }
    return rc;
}

int cmd_coord_expire_prune(const struct config *cfg, repo_t *r, json_t *report, wv_err_t *err)
{
    int retain;
    if (!config_get(cfg, OPT_RETAIN_WATERMARKS))
        return 0;
    int rc = config_int(cfg, OPT_RETAIN_WATERMARKS, 1, 1000000, &retain, err);
    json_t *removed = json_array();
    if (rc == 0)
        rc = coord_watermarks_prune(r, retain, config_flag(cfg, OPT_DRY_RUN), removed, err);
    json_object_set_new(report, "watermarks", removed);
    return rc;
}

/* Loading every watermark would cost one read each; the newest few say what matters. */
#define LIST_WATERMARKS_MAX 20

int cmd_coord_list(repo_t *r, json_t *doc, wv_err_t *err)
{
    uint32_t *numbers;
    size_t count;
    int rc = coord_watermark_numbers(r, &numbers, &count, err);
    if (rc)
        return rc;
    json_t *list = json_array();
    size_t first = count > LIST_WATERMARKS_MAX ? count - LIST_WATERMARKS_MAX : 0;
    for (size_t i = first; rc == 0 && i < count; i++) {
        struct coord_watermark w = {0};
        if ((rc = coord_watermark_load(r, numbers[i], &w, err)) != 0)
            break;
        const struct coord_wm_node *mine = coord_watermark_node(&w, repo_node(r));
        char when[40], lsn[WAL_LSN_STR_MAX] = "";
        coord_format_time(w.time_ms, when, sizeof when);
        if (mine)
            wal_lsn_format(mine->lsn, lsn);
        json_array_append_new(list, json_pack("{s:I, s:s, s:I, s:s?}", "number",
                                              (json_int_t)w.number, "time", when, "nodes",
                                              (json_int_t)w.count, "lsn", mine ? lsn : NULL));
        coord_watermark_free(&w);
    }
    free(numbers);
    json_object_set_new(doc, "watermarks", list);
    json_object_set_new(doc, "watermarks_total", json_integer((json_int_t)count));
    return rc;
}

void cmd_coord_list_print(json_t *doc)
{
    json_t *list = json_object_get(doc, "watermarks");
    json_int_t total = json_integer_value(json_object_get(doc, "watermarks_total"));
    if (total == 0)
        return;
    printf("watermarks: %" JSON_INTEGER_FORMAT " (the newest %zu below)\n", total,
           json_array_size(list));
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w)
    {
        const char *lsn = json_string_value(json_object_get(w, "lsn"));
        printf("  %-10" JSON_INTEGER_FORMAT " %s  %" JSON_INTEGER_FORMAT " nodes%s%s\n",
               json_integer_value(json_object_get(w, "number")),
               json_string_value(json_object_get(w, "time")),
               json_integer_value(json_object_get(w, "nodes")), lsn ? ", this node at LSN " : "",
               lsn ? lsn : "");
    }
}
