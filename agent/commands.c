/* One function per command: read the options, call the module, print the result, turn the
 * outcome into an exit status. The only place, with main.c, that prints to the terminal. */
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/cmd_coord.h"
#include "agent/commands.h"
#include "agent/daemon.h"
#include "agent/progress.h"
#include "backup/backup.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "wal/archive.h"
#include "wal/stream.h"

static int fail(const wv_err_t *err)
{
    log_error("%s", err->msg);
    return err->code == WV_EUSAGE ? EXIT_USAGE : EXIT_FAILURE_;
}

static int usage_error(const char *fmt, const char *arg)
{
    wv_err_t err;
    wv_err_set(&err, WV_EUSAGE, fmt, arg);
    return fail(&err);
}

static struct repo_config repo_config_of(const struct config *cfg)
{
    struct repo_config rc = {
        .url = config_get(cfg, OPT_REPO),
        .key_file = config_get(cfg, OPT_KEY_FILE),
        .node = config_get(cfg, OPT_NODE),
        .storage = {.s3_endpoint = config_get(cfg, OPT_S3_ENDPOINT),
                    .s3_region = config_get(cfg, OPT_S3_REGION),
                    .s3_uri_style = config_get(cfg, OPT_S3_URI_STYLE),
                    .s3_ca_file = config_get(cfg, OPT_S3_CA_FILE),
                    .s3_profile = config_get(cfg, OPT_S3_PROFILE),
                    .s3_access_key_id = config_get(cfg, OPT_S3_ACCESS_KEY_ID),
                    .s3_secret_access_key = config_get(cfg, OPT_S3_SECRET_ACCESS_KEY),
                    .s3_session_token = config_get(cfg, OPT_S3_SESSION_TOKEN),
                    .s3_sse = config_get(cfg, OPT_S3_SSE),
                    .s3_sse_kms_key_id = config_get(cfg, OPT_S3_SSE_KMS_KEY_ID),
                    .s3_retry_seconds = config_get(cfg, OPT_S3_RETRY_SECONDS),
                    .s3_stall_seconds = config_get(cfg, OPT_S3_STALL_SECONDS)},
    };
    return rc;
}

static int open_repo(const struct config *cfg, repo_t **r, wv_err_t *err)
{
    struct repo_config rc = repo_config_of(cfg);
    return repo_open(&rc, r, err);
}

static int jobs_of(const struct config *cfg, int *jobs, wv_err_t *err)
{
    return config_int(cfg, OPT_JOBS, 1, 256, jobs, err);
}

static int cmd_keygen(const struct config *cfg)
{
    wv_err_t err = {0};
    const char *out = config_get(cfg, OPT_OUT);
    if (!out)
        return usage_error("keygen needs --out FILE%s", "");
    if (seal_init(&err) != 0 || seal_keygen(out, &err) != 0)
        return fail(&err);
    printf("wrote a new repository key to %s (keep a copy: without it nothing in the repository "
           "can be read)\n",
           out);
    return EXIT_OK;
}

static int cmd_init(const struct config *cfg)
{
    wv_err_t err = {0};
    struct repo_config rc = repo_config_of(cfg);
    bool created;
    if (repo_init(&rc, &created, &err) != 0)
        return fail(&err);
    printf("%s %s\n",
           created ? "initialised repository" : "repository already initialised:", rc.url);
    return EXIT_OK;
}

static int cmd_wal_push(const struct config *cfg)
{
    if (cfg->nargs != 1)
        return usage_error("wal-push needs exactly one PATH%s", "");
    wv_err_t err = {0};
    repo_t *r;
    struct wal_push_opts opts = {0};
    if (jobs_of(cfg, &opts.jobs, &err) != 0 || open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    int rc = wal_push(r, cfg->args[0], &opts, &err);
    repo_close(r);
    return rc ? fail(&err) : EXIT_OK;
}

/* Absent is the normal end of archive recovery: exit 1 without a word. */
static int cmd_wal_fetch(const struct config *cfg)
{
    if (cfg->nargs != 2)
        return usage_error("wal-fetch needs NAME and DEST%s", "");
    wv_err_t err = {0};
    struct wal_fetch_opts opts = {0};
    char spool[PATH_MAX];
    const char *dest = cfg->args[1];
    const char *slash = strrchr(dest, '/');
    snprintf(spool, sizeof spool, "%.*s%swalvault_spool", slash ? (int)(slash - dest) : 0, dest,
             slash ? "/" : "");
    opts.spool_dir = config_get(cfg, OPT_SPOOL_DIR) ? config_get(cfg, OPT_SPOOL_DIR) : spool;
    repo_t *r;
    if (config_int(cfg, OPT_PREFETCH, 0, 64, &opts.prefetch, &err) != 0 ||
        open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    int rc = wal_fetch(r, cfg->args[0], dest, &opts, &err);
    repo_close(r);
    if (rc == WV_ENOTFOUND)
        return EXIT_FAILURE_;
    return rc ? fail(&err) : EXIT_OK;
}

static volatile sig_atomic_t stop_requested;

static void request_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* SIGTERM and SIGINT end the stream cleanly: what was received is stored and reported
 * first. No SA_RESTART, so the signal also cuts the stream's poll() short. */
static void catch_stop_signals(void)
{
    struct sigaction sa = {.sa_handler = request_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static int cmd_wal_stream(const struct config *cfg)
{
    if (cfg->nargs != 0)
        return usage_error("wal-stream takes no arguments%s", "");
    wv_err_t err = {0};
    struct wal_stream_opts opts = {.conninfo = config_get(cfg, OPT_PG),
                                   .slot = config_get(cfg, OPT_SLOT),
                                   .application_name = config_get(cfg, OPT_APPLICATION_NAME),
                                   .stop = &stop_requested};
    repo_t *r;
    if (config_duration(cfg, OPT_SYNC_INTERVAL, 0.001, 3600, &opts.sync_interval_s, &err) != 0 ||
        open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    catch_stop_signals();
    int rc = wal_stream_run(r, &opts, &err);
    repo_close(r);
    return rc ? fail(&err) : EXIT_OK;
}

static int source_of(const char *s, enum backup_source *out)
{
    if (strcmp(s, "auto") == 0)
        *out = BACKUP_SOURCE_AUTO;
    else if (strcmp(s, "local") == 0)
        *out = BACKUP_SOURCE_LOCAL;
    else if (strcmp(s, "stream") == 0)
        *out = BACKUP_SOURCE_STREAM;
    else
        return -1;
    return 0;
}

static int cmd_backup(const struct config *cfg)
{
    wv_err_t err = {0};
    struct backup_opts opts = {.pg_conninfo = config_get(cfg, OPT_PG),
                               .pgdata = config_get(cfg, OPT_PGDATA)};
    if (config_flag(cfg, OPT_INCREMENTAL) && config_flag(cfg, OPT_FULL))
        return usage_error("give --full or --incremental, not both%s", "");
    opts.mode = config_flag(cfg, OPT_FULL)          ? BACKUP_MODE_FULL
                : config_flag(cfg, OPT_INCREMENTAL) ? BACKUP_MODE_INCREMENTAL
                                                    : BACKUP_MODE_AUTO;
    opts.parent_id = config_get(cfg, OPT_PARENT);
    if (opts.parent_id && opts.mode == BACKUP_MODE_FULL)
        return usage_error("--parent is for incremental backups%s", "");
    if (source_of(config_get(cfg, OPT_SOURCE), &opts.source) != 0)
        return usage_error("--source wants local, stream or auto, got \"%s\"",
                           config_get(cfg, OPT_SOURCE));
    repo_t *r;
    if (jobs_of(cfg, &opts.jobs, &err) != 0 ||
        config_int(cfg, OPT_ARCHIVE_TIMEOUT, 1, 86400, &opts.archive_timeout_s, &err) != 0 ||
        config_int(cfg, OPT_PACK_SIZE, 1, 4096, &opts.pack_size_mib, &err) != 0 ||
        open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    struct progress_display *pd = progress_display_new();
    opts.progress = progress_display_sink(pd);
    char id[64];
    int rc = backup_run(r, &opts, id, &err);
    progress_display_free(pd);
    repo_close(r);
    if (rc)
        return fail(&err);
    printf("%s\n", id);
    return EXIT_OK;
}

/* Single-quoted for /bin/sh; restore doubles the quotes again for postgresql.conf. */
static void append_quoted(char *out, size_t len, const char *arg)
{
    size_t n = strlen(out);
    if (n + 2 >= len)
        return;
    out[n++] = ' ';
    out[n++] = '\'';
    for (const char *p = arg; *p && n + 5 < len; p++) {
        if (*p == '\'') {
            memcpy(out + n, "'\\''", 4);
            n += 4;
        } else {
            out[n++] = *p;
        }
    }
    out[n++] = '\'';
    out[n] = '\0';
}

/* The restored server calls this binary by its absolute path, with the same repository, key
 * file and node, so it replays by itself. */
/* Files named in the restore_command must not depend on the directory PostgreSQL runs it
 * in; the config file carries the S3 credentials when they are not in the environment. */
static int append_file_option(const struct config *cfg, enum opt_id id, char *out, size_t len,
                              wv_err_t *err)
{
    const char *file = config_get(cfg, id);
    char abs[PATH_MAX], flag[64];
    if (!file)
        return 0;
    if (fs_absolute_path(file, abs, sizeof abs, err) != 0)
        return wv_err_prefix(err, "--%s", config_options()[id].name);
    snprintf(flag, sizeof flag, "--%s", config_options()[id].name);
    append_quoted(out, len, flag);
    append_quoted(out, len, abs);
    return 0;
}

static int build_restore_command(const struct config *cfg, char *out, size_t len, wv_err_t *err)
{
    char self[PATH_MAX], key[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot find the walvault binary's path");
    self[n] = '\0';
    if (fs_absolute_path(config_get(cfg, OPT_KEY_FILE), key, sizeof key, err) != 0)
        return wv_err_prefix(err, "key file");
    out[0] = '\0';
    append_quoted(out, len, self);
    if (append_file_option(cfg, OPT_CONFIG, out, len, err) != 0 ||
        append_file_option(cfg, OPT_S3_CA_FILE, out, len, err) != 0)
        return err->code;
    static const enum opt_id passed[] = {
        OPT_REPO,         OPT_NODE,       OPT_S3_ENDPOINT,     OPT_S3_REGION,
        OPT_S3_URI_STYLE, OPT_S3_PROFILE, OPT_S3_RETRY_SECONDS};
    for (size_t i = 0; i < sizeof passed / sizeof *passed; i++) {
        if (!config_get(cfg, passed[i]))
            continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", config_options()[passed[i]].name);
        append_quoted(out, len, flag);
        append_quoted(out, len, config_get(cfg, passed[i]));
    }
    append_quoted(out, len, "--key-file");
    append_quoted(out, len, key);
    snprintf(out + strlen(out), len - strlen(out), " wal-fetch %%f %%p");
    memmove(out, out + 1, strlen(out)); /* drop the leading space */
    return 0;
}

static int parse_relocations(const struct config *cfg, struct tablespace_relocation *rel)
{
    for (size_t i = 0; i < cfg->nmaps; i++) {
        char *eq = strchr(cfg->maps[i], '=');
        *eq = '\0';
        rel[i].from = cfg->maps[i];
        rel[i].to = eq + 1;
    }
    return (int)cfg->nmaps;
}

static int cmd_restore(const struct config *cfg)
{
    wv_err_t err = {0};
    if (!config_get(cfg, OPT_TO))
        return usage_error("restore needs --to DIR%s", "");
    if (config_get(cfg, OPT_TARGET_TIME) && config_get(cfg, OPT_TARGET_LSN))
        return usage_error("give --target-time or --target-lsn, not both%s", "");
    char command[8192];
    struct tablespace_relocation rel[CONFIG_MAX_MAPS];
    struct restore_opts opts = {.target_dir = config_get(cfg, OPT_TO),
                                .backup_id = config_get(cfg, OPT_BACKUP),
                                .target_time = config_get(cfg, OPT_TARGET_TIME),
                                .target_lsn = config_get(cfg, OPT_TARGET_LSN),
                                .target_action = config_get(cfg, OPT_TARGET_ACTION),
                                .relocations = rel,
                                .restore_command = command};
    opts.relocation_count = (size_t)parse_relocations(cfg, rel);
    repo_t *r;
    struct repo_node_info node;
    if (jobs_of(cfg, &opts.jobs, &err) != 0 ||
        build_restore_command(cfg, command, sizeof command, &err) != 0 ||
        open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    struct watermark_target wm = {0};
    if (repo_node_get(r, &node, &err) != 0 || /* the node record authenticates too */
        (config_get(cfg, OPT_WATERMARK) &&
         cmd_coord_restore_target(cfg, r, &opts, &wm, &err) != 0)) {
        repo_close(r);
        return fail(&err);
    }
    struct progress_display *pd = progress_display_new();
    opts.progress = progress_display_sink(pd);
    char id[64];
    int rc = restore_run(r, &opts, id, &err);
    progress_display_free(pd);
    repo_close(r);
    cmd_coord_restore_done(&wm);
    if (rc)
        return fail(&err);
    printf("restored backup %s into %s; start PostgreSQL there to recover\n", id, opts.target_dir);
    return EXIT_OK;
}

static void print_backups(json_t *doc)
{
    size_t i;
    json_t *b;
    printf("%-23s %-4s %-23s %-3s %-12s %-12s %-19s %12s %12s %5s\n", "backup", "type", "parent",
           "tli", "start lsn", "stop lsn", "stopped (UTC)", "db bytes", "stored", "new");
    json_array_foreach(json_object_get(doc, "backups"), i, b)
    {
        char when[32];
        time_t t = (time_t)json_integer_value(json_object_get(b, "stop_time"));
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        const char *parent = json_string_value(json_object_get(b, "parent"));
        printf("%-23s %-4s %-23s %-3" JSON_INTEGER_FORMAT
               " %-12s %-12s %-19s %12" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT " %4.0f%%\n",
               json_string_value(json_object_get(b, "id")),
               json_string_value(json_object_get(b, "type")), parent ? parent : "-",
               json_integer_value(json_object_get(b, "timeline")),
               json_string_value(json_object_get(b, "start_lsn")),
               json_string_value(json_object_get(b, "stop_lsn")), when,
               json_integer_value(json_object_get(b, "db_bytes")),
               json_integer_value(json_object_get(b, "stored_bytes")),
               100.0 * json_real_value(json_object_get(b, "new_share")));
    }
}

static void print_wal(json_t *doc)
{
    size_t i, j;
    json_t *tl, *range;
    json_array_foreach(json_object_get(doc, "wal"), i, tl)
    {
        printf("WAL timeline %" JSON_INTEGER_FORMAT ":\n",
               json_integer_value(json_object_get(tl, "timeline")));
        json_array_foreach(json_object_get(tl, "ranges"), j, range)
        {
            printf("  %s .. %s (%" JSON_INTEGER_FORMAT " segments)\n",
                   json_string_value(json_object_get(range, "first")),
                   json_string_value(json_object_get(range, "last")),
                   json_integer_value(json_object_get(range, "segments")));
        }
        json_t *partial = json_object_get(tl, "partial");
        if (partial)
            printf("  + partial segment %s up to LSN %s (streamed, %" JSON_INTEGER_FORMAT
                   " fragments)\n",
                   json_string_value(json_object_get(partial, "segment")),
                   json_string_value(json_object_get(partial, "end_lsn")),
                   json_integer_value(json_object_get(partial, "fragments")));
    }
}

static int cmd_list(const struct config *cfg)
{
    wv_err_t err = {0};
    repo_t *r;
    json_t *doc;
    if (open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    int rc = catalog_describe(r, &doc, &err);
    if (rc == 0 && (rc = cmd_coord_list(r, doc, &err)) != 0)
        json_decref(doc);
    repo_close(r);
    if (rc)
        return fail(&err);
    if (config_flag(cfg, OPT_JSON)) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        printf("\n");
    } else {
        printf("node %s\n", json_string_value(json_object_get(doc, "node")));
        print_backups(doc);
        print_wal(doc);
        cmd_coord_list_print(doc);
    }
    json_decref(doc);
    return EXIT_OK;
}

static int cmd_verify(const struct config *cfg)
{
    wv_err_t err = {0};
    repo_t *r;
    struct verify_opts opts = {.backup_id = config_get(cfg, OPT_BACKUP)};
    if (jobs_of(cfg, &opts.jobs, &err) != 0 || open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    struct progress_display *pd = progress_display_new();
    opts.progress = progress_display_sink(pd);
    json_t *report = NULL;
    int rc = verify_run(r, &opts, &report, &err);
    progress_display_free(pd);
    repo_close(r);
    if (rc == 0 && (rc = cmd_coord_verify(cfg, report, &err)) != 0)
        json_decref(report);
    if (rc)
        return fail(&err);
    json_t *problems = json_object_get(report, "problems");
    size_t i;
    json_t *p;
    json_array_foreach(problems, i, p) log_error("%s", json_string_value(p));
    size_t n = json_array_size(problems);
    printf("verified %" JSON_INTEGER_FORMAT " backups, %" JSON_INTEGER_FORMAT
           " objects, %" JSON_INTEGER_FORMAT " bytes, %" JSON_INTEGER_FORMAT
           " watermarks: %zu problem%s\n",
           json_integer_value(json_object_get(report, "backups_checked")),
           json_integer_value(json_object_get(report, "objects_checked")),
           json_integer_value(json_object_get(report, "bytes_checked")),
           json_integer_value(json_object_get(report, "watermarks_checked")), n, n == 1 ? "" : "s");
    json_decref(report);
    return n ? EXIT_FAILURE_ : EXIT_OK;
}

static int optional_int(const struct config *cfg, enum opt_id id, int max, int *out, wv_err_t *err)
{
    *out = 0;
    return config_get(cfg, id) ? config_int(cfg, id, 1, max, out, err) : 0;
}

static void print_expired(json_t *report)
{
    bool dry = json_is_true(json_object_get(report, "dry_run"));
    static const char *const kinds[] = {"backups", "packs", "wal", "watermarks"};
    for (size_t k = 0; k < 4; k++) {
        size_t i;
        json_t *key;
        json_array_foreach(json_object_get(report, kinds[k]), i, key)
            printf("%s %s\n", dry ? "would remove" : "removed", json_string_value(key));
    }
    printf("%s %zu backups, %zu packs, %zu WAL files; %" JSON_INTEGER_FORMAT " backups kept\n",
           dry ? "would remove" : "removed", json_array_size(json_object_get(report, "backups")),
           json_array_size(json_object_get(report, "packs")),
           json_array_size(json_object_get(report, "wal")),
           json_integer_value(json_object_get(report, "backups_kept")));
}

static int cmd_expire(const struct config *cfg)
{
    wv_err_t err = {0};
    struct expire_opts opts = {.dry_run = config_flag(cfg, OPT_DRY_RUN)};
    int grace;
    repo_t *r;
    if (optional_int(cfg, OPT_RETAIN_FULL, 100000, &opts.retain_full, &err) != 0 ||
        optional_int(cfg, OPT_RETAIN_DAYS, 100000, &opts.retain_days, &err) != 0 ||
        config_int(cfg, OPT_GC_GRACE, 0, 365 * 86400, &grace, &err) != 0)
        return fail(&err);
    if (!opts.retain_full && !opts.retain_days && !config_get(cfg, OPT_RETAIN_WATERMARKS))
        return usage_error("expire needs --retain-full N, --retain-days D and/or "
                           "--retain-watermarks N%s",
                           "");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    opts.now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    opts.grace_s = grace;
    if (open_repo(cfg, &r, &err) != 0)
        return fail(&err);
    json_t *report = NULL;
    int rc = cmd_coord_expire_keep(cfg, r, &opts.keep_ids, &err);
    if (rc == 0)
        rc = expire_run(r, &opts, &report, &err);
    if (rc == 0)
        rc = cmd_coord_expire_prune(cfg, r, report, &err);
    json_decref(opts.keep_ids);
    repo_close(r);
    if (rc) {
        json_decref(report);
        return fail(&err);
    }
    print_expired(report);
    json_decref(report);
    return EXIT_OK;
}

int commands_run(const struct config *cfg)
{
    static const struct {
        const char *name;
        int (*run)(const struct config *);
    } table[] = {
        {"keygen", cmd_keygen},
        {"init", cmd_init},
        {"wal-push", cmd_wal_push},
        {"wal-fetch", cmd_wal_fetch},
        {"backup", cmd_backup},
        {"restore", cmd_restore},
        {"list", cmd_list},
        {"verify", cmd_verify},
        {"expire", cmd_expire},
        {"wal-stream", cmd_wal_stream},
        {"agent", cmd_agent},
        {"watermark", cmd_watermark},
        {"coordinator", cmd_coordinator},
        {"plan", cmd_plan},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(cfg->command, table[i].name) == 0)
            return table[i].run(cfg);
    return usage_error("unknown command \"%s\" (see walvault --help)", cfg->command);
}

struct repo_config commands_repo_config(const struct config *cfg)
{
    return repo_config_of(cfg);
}

void commands_long_running(void)
{
#ifdef M_MMAP_THRESHOLD
    /* glibc raises its mmap threshold whenever a large block is freed, after which large
     * buffers (segments, sealed frames) come from the heaps, fragment them and RSS creeps
     * up over hours. A fixed threshold keeps each large buffer mapped on its own and given
     * back when freed (bench/stream.sh's soak: 36.7 -> 38.0 MiB over 7 min without, 29.6 ->
     * 29.7 MiB with). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
}

int commands_fail(const wv_err_t *err)
{
    return fail(err);
}
