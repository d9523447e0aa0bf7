#include "agent/config.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

extern char **environ;

static const struct opt_def options[OPT_COUNT] = {
    [OPT_CONFIG] = {"config", true, NULL, NULL, "config file (INI: key = value)"},
    [OPT_REPO] = {"repo", true, NULL, NULL, "repository URL: file:///dir or s3://bucket/prefix"},
    [OPT_NODE] = {"node", true, "default", NULL, "node name in the repository"},
    [OPT_PG] = {"pg", true, NULL, NULL, "libpq connection string (default: libpq's environment)"},
    [OPT_PGDATA] = {"pgdata", true, NULL, "backup agent", "data directory for the local source"},
    [OPT_KEY_FILE] = {"key-file", true, NULL, NULL, "repository key file"},
    [OPT_JOBS] = {"jobs", true, "2", NULL, "parallel workers"},
    [OPT_LOG_FORMAT] = {"log-format", true, "text", NULL, "text or json"},
    [OPT_S3_ENDPOINT] = {"s3-endpoint", true, NULL, NULL, "S3 endpoint URL"},
    [OPT_S3_REGION] = {"s3-region", true, NULL, NULL, "S3 region"},
    [OPT_S3_URI_STYLE] = {"s3-uri-style", true, NULL, NULL,
                          "path or host (default host; path for an IP or localhost endpoint)"},
    [OPT_S3_CA_FILE] = {"s3-ca-file", true, NULL, NULL, "CA bundle for the S3 endpoint"},
    [OPT_S3_PROFILE] = {"s3-profile", true, NULL, NULL,
                        "profile in ~/.aws/credentials (default AWS_PROFILE or default)"},
    [OPT_S3_ACCESS_KEY_ID] = {"s3-access-key-id", true, NULL, NULL,
                              "S3 access key id (default AWS_ACCESS_KEY_ID)"},
    [OPT_S3_SECRET_ACCESS_KEY] = {"s3-secret-access-key", true, NULL, NULL,
                                  "S3 secret key: config file or environment only"},
    [OPT_S3_SESSION_TOKEN] = {"s3-session-token", true, NULL, NULL,
                              "S3 session token: config file or environment only"},
    [OPT_S3_SSE] = {"s3-sse", true, NULL, NULL, "server-side encryption: AES256 or aws:kms"},
    [OPT_S3_SSE_KMS_KEY_ID] = {"s3-sse-kms-key-id", true, NULL, NULL, "KMS key for aws:kms"},
    [OPT_S3_RETRY_SECONDS] = {"s3-retry-seconds", true, NULL, NULL,
                              "give up an S3 request after this long without progress (60)"},
    [OPT_S3_STALL_SECONDS] = {"s3-stall-seconds", true, NULL, NULL,
                              "retry an S3 transfer idle this long (30)"},
    [OPT_ARCHIVE_TIMEOUT] = {"archive-timeout", true, "300", "backup coordinator agent",
                             "seconds to wait for the WAL a backup needs to be archived"},
    [OPT_SOURCE] = {"source", true, "auto", "backup coordinator agent", "local, stream or auto"},
    [OPT_PREFETCH] = {"prefetch", true, "8", "wal-fetch", "segments to fetch ahead"},
    [OPT_SPOOL_DIR] = {"spool-dir", true, NULL, "wal-fetch",
                       "where prefetched segments wait (default: beside DEST)"},
    [OPT_OUT] = {"out", true, NULL, "keygen", "key file to write"},
    [OPT_FULL] = {"full", false, NULL, "backup",
                  "take a full backup (default: incremental when a parent exists)"},
    [OPT_INCREMENTAL] = {"incremental", false, NULL, "backup",
                         "store only what changed since the parent backup"},
    [OPT_PACK_SIZE] = {"pack-size", true, "64", "backup agent",
                       "MiB of sealed blocks per pack object (smaller: finer garbage collection)"},
    [OPT_PARENT] = {"parent", true, NULL, "backup",
                    "parent of an incremental (default: the newest on the timeline)"},
    [OPT_TO] = {"to", true, NULL, "restore", "empty directory to restore into"},
    [OPT_BACKUP] = {"backup", true, NULL, "restore verify", "backup id"},
    [OPT_TARGET_TIME] = {"target-time", true, NULL, "restore plan", "recover to this time"},
    [OPT_TARGET_LSN] = {"target-lsn", true, NULL, "restore", "recover to this LSN"},
    [OPT_TARGET_ACTION] = {"target-action", true, "promote", "restore",
                           "promote, pause or shutdown at the target"},
    [OPT_TABLESPACE_MAP] = {"tablespace-map", true, NULL, "restore",
                            "OID=DIR or OLD_DIR=DIR, repeatable: relocate a tablespace"},
    [OPT_JSON] = {"json", false, NULL, "list plan watermark", "print JSON"},
    [OPT_RETAIN_FULL] = {"retain-full", true, NULL, "expire agent",
                         "keep the newest N full backups and all backups after them"},
    [OPT_RETAIN_DAYS] = {"retain-days", true, NULL, "expire agent",
                         "keep what restores to any time in the last D days"},
    [OPT_DRY_RUN] = {"dry-run", false, NULL, "expire",
                     "list what would be removed, remove nothing"},
    [OPT_GC_GRACE] = {"gc-grace", true, "86400", "expire agent",
                      "seconds: packs of backups started this recently are never collected"},
    [OPT_SLOT] = {"slot", true, NULL, "wal-stream agent",
                  "physical replication slot (default walvault_<node>)"},
    [OPT_APPLICATION_NAME] = {"application-name", true, NULL, "wal-stream agent",
                              "application_name to name in synchronous_standby_names "
                              "(default: the node name)"},
    [OPT_SYNC_INTERVAL] = {"sync-interval", true, "1s", "wal-stream agent",
                           "store received WAL at least this often (200ms, 1s, 0.5)"},
    [OPT_WATERMARK] = {"watermark", true, NULL, "restore plan",
                       "watermark number or latest: the node's point of that consistent cut"},
    [OPT_WATERMARK_TIMEOUT] = {"watermark-timeout", true, "60", "watermark coordinator",
                               "seconds to wait until every node's archive holds its LSN"},
    [OPT_WATERMARK_EVERY] = {"watermark-every", true, "60s", "coordinator",
                             "take a watermark this often (30s, 5m, 1h; 0: never)"},
    [OPT_BACKUP_EVERY] = {"backup-every", true, "24h", "coordinator",
                          "ordered group backup this often (0: never)"},
    [OPT_ONCE] = {"once", false, NULL, "coordinator",
                  "one group backup, then one watermark, then exit"},
    [OPT_RETAIN_WATERMARKS] = {"retain-watermarks", true, NULL, "expire agent",
                               "keep the newest N watermarks restorable; remove older ones"},
    [OPT_FULL_EVERY] = {"full-every", true, "7d", "agent",
                        "full backup schedule: an interval (30s, 15m, 6h, 1d) or cron "
                        "\"m h dom mon dow\" (local time); off: none"},
    [OPT_INCREMENTAL_EVERY] = {"incremental-every", true, "1d", "agent",
                               "incremental backup schedule, as --full-every; off: none"},
    [OPT_LISTEN] = {"listen", true, "127.0.0.1:9187", "agent coordinator",
                    "ADDR:PORT of /healthz, /readyz and /metrics ([::1]:PORT; off: none)"},
    [OPT_MAX_LAG_SECONDS] = {"max-lag-seconds", true, "30", "agent",
                             "/readyz fails when received WAL waits longer to be archived"},
    [OPT_MAX_LAG_BYTES] = {"max-lag-bytes", true, "1GiB", "agent",
                           "/readyz fails when more received WAL waits to be archived "
                           "(bytes, or with kB, MB, GB, KiB, MiB, GiB)"},
    [OPT_ARCHIVE_MODE] = {"archive-mode", true, "stream", "agent",
                          "stream: the agent streams WAL; command: the node's archive_command "
                          "archives it, the agent only takes backups"},
    [OPT_LEASE_SECONDS] = {"lease-seconds", true, "30", "agent",
                           "one agent per node: the lease a dead agent's successor waits out"},
    [OPT_HELP] = {"help", false, NULL, NULL, "show help"},
    [OPT_VERSION] = {"version", false, NULL, NULL, "show the version"},
};

const struct opt_def *config_options(void)
{
    return options;
}

static void set_value(struct config *cfg, enum opt_id id, const char *value, enum opt_origin o)
{
    if (cfg->origin[id] > o)
        return;
    free(cfg->values[id]);
    cfg->values[id] = strdup(value);
    cfg->origin[id] = o;
}

static void env_name(const char *opt, char *out, size_t len)
{
    int n = snprintf(out, len, "WALVAULT_");
    for (const char *p = opt; *p && (size_t)n + 1 < len; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static int find_option(const char *key)
{
    for (int i = 0; i < OPT_COUNT; i++) {
        const char *a = options[i].name, *b = key;
        while (*a && *b && (*a == *b || (*a == '-' && *b == '_')))
            a++, b++;
        if (!*a && !*b)
            return i;
    }
    return -1;
}

static int add_map(struct config *cfg, const char *value, wv_err_t *err)
{
    if (!strchr(value, '=') || cfg->nmaps == CONFIG_MAX_MAPS)
        return wv_err_set(err, WV_EUSAGE,
                          "--tablespace-map wants OID=DIR or OLD_DIR=DIR, got \"%s\"", value);
    cfg->maps[cfg->nmaps++] = strdup(value);
    return 0;
}

static int parse_flags(int argc, char **argv, struct config *cfg, wv_err_t *err)
{
    struct option longopts[OPT_COUNT + 1];
    for (int i = 0; i < OPT_COUNT; i++)
        longopts[i] = (struct option){
            options[i].name, options[i].has_arg ? required_argument : no_argument, NULL, 1000 + i};
    longopts[OPT_COUNT] = (struct option){0};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1 || optind < argc) {
        if (c == -1) { /* a positional argument: the command or its arguments */
            if (!cfg->command)
                cfg->command = argv[optind];
            else if (cfg->nargs < CONFIG_MAX_ARGS)
                cfg->args[cfg->nargs++] = argv[optind];
            else
                return wv_err_set(err, WV_EUSAGE, "too many arguments");
            optind++;
            continue;
        }
        if (c == 'h') {
            set_value(cfg, OPT_HELP, "1", ORIGIN_FLAG);
            continue;
        }
        if (c == '?' || c == ':')
            return wv_err_set(err, WV_EUSAGE, "%s option: %s (see walvault --help)",
                              c == ':' ? "missing value for" : "unknown", argv[optind - 1]);
        enum opt_id id = (enum opt_id)(c - 1000);
        if (id == OPT_S3_SECRET_ACCESS_KEY || id == OPT_S3_SESSION_TOKEN)
            return wv_err_set(err, WV_EUSAGE,
                              "--%s is not taken on the command line, where other users can "
                              "read it: put it in the config file or the environment",
                              options[id].name);
        if (id == OPT_TABLESPACE_MAP) {
            int rc = add_map(cfg, optarg, err);
            if (rc)
                return rc;
        } else {
            set_value(cfg, id, options[id].has_arg ? optarg : "1", ORIGIN_FLAG);
        }
    }
    return 0;
}

static void load_env(char **env, struct config *cfg)
{
    for (int i = 0; i < OPT_COUNT; i++) {
        char name[64];
        env_name(options[i].name, name, sizeof name);
        size_t len = strlen(name);
        for (char **e = env; e && *e; e++)
            if (strncmp(*e, name, len) == 0 && (*e)[len] == '=' && (*e)[len + 1])
                set_value(cfg, (enum opt_id)i, *e + len + 1, ORIGIN_ENV);
    }
}

struct file_ctx {
    struct config *cfg;
    char bad[128];
};

/* Keys outside any section, or in [walvault], are options; other sections belong to other
 * parts (the coordinator's [node NAME] sections). */
static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *f = user;
    if (section[0] && strcmp(section, "walvault") != 0)
        return 1;
    int id = find_option(name);
    if (id < 0 || id == OPT_CONFIG) {
        snprintf(f->bad, sizeof f->bad, "%s", name);
        return 0;
    }
    set_value(f->cfg, (enum opt_id)id, value, ORIGIN_FILE);
    return 1;
}

static int load_file(struct config *cfg, const char *path, wv_err_t *err)
{
    struct file_ctx f = {.cfg = cfg};
    int rc = ini_parse(path, on_ini, &f);
    if (rc == -1)
        return wv_err_set(err, WV_EUSAGE, "cannot open config file %s", path);
    if (f.bad[0])
        return wv_err_set(err, WV_EUSAGE, "config file %s: unknown option \"%s\"", path, f.bad);
    if (rc != 0)
        return wv_err_set(err, WV_EUSAGE, "config file %s: syntax error on line %d", path, rc);
    return 0;
}

int config_load(int argc, char **argv, char **env, struct config *cfg, wv_err_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->argc = argc;
    cfg->argv = argv;
    int rc = parse_flags(argc, argv, cfg, err);
    if (rc)
        return rc;
    load_env(env ? env : environ, cfg);
    if (cfg->values[OPT_CONFIG] && (rc = load_file(cfg, cfg->values[OPT_CONFIG], err)) != 0)
        return rc;
    for (int i = 0; i < OPT_COUNT; i++)
        if (options[i].def)
            set_value(cfg, (enum opt_id)i, options[i].def, ORIGIN_DEFAULT);
    /* The coordinator's own port, so that it and an agent can share a host by default. */
    if (cfg->command && strcmp(cfg->command, "coordinator") == 0)
        set_value(cfg, OPT_LISTEN, COORDINATOR_LISTEN_DEFAULT, ORIGIN_DEFAULT);
    return 0;
}

void config_free(struct config *cfg)
{
    for (int i = 0; i < OPT_COUNT; i++)
        free(cfg->values[i]);
    for (size_t i = 0; i < cfg->nmaps; i++)
        free(cfg->maps[i]);
    memset(cfg, 0, sizeof *cfg);
}

const char *config_get(const struct config *cfg, enum opt_id id)
{
    return cfg->values[id];
}

bool config_flag(const struct config *cfg, enum opt_id id)
{
    const char *v = cfg->values[id];
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0 ||
                 strcmp(v, "yes") == 0);
}

int config_int(const struct config *cfg, enum opt_id id, int min, int max, int *out, wv_err_t *err)
{
    const char *v = cfg->values[id];
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || end == v || n < min || n > max)
        return wv_err_set(err, WV_EUSAGE, "--%s wants a whole number from %d to %d, got \"%s\"",
                          options[id].name, min, max, v ? v : "");
    *out = (int)n;
    return 0;
}

int config_duration(const struct config *cfg, enum opt_id id, double min_s, double max_s,
                    double *out, wv_err_t *err)
{
    const char *v = cfg->values[id];
    char *end = NULL;
    double n = v ? strtod(v, &end) : 0;
    double scale = !end || end == v          ? 0
                   : strcmp(end, "") == 0    ? 1
                   : strcmp(end, "s") == 0   ? 1
                   : strcmp(end, "ms") == 0  ? 0.001
                   : strcmp(end, "min") == 0 ? 60
                   : strcmp(end, "m") == 0   ? 60
                   : strcmp(end, "h") == 0   ? 3600
                                             : 0;
    n *= scale;
    if (scale == 0 || !(n >= min_s && n <= max_s))
        return wv_err_set(err, WV_EUSAGE,
                          "--%s wants a duration from %g to %g s (e.g. 200ms, 1s, 0.5), got \"%s\"",
                          options[id].name, min_s, max_s, v ? v : "");
    *out = n;
    return 0;
}
