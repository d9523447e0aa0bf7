/* The agent's options: parsing them (at start and on SIGHUP), what a reload may not change,
 * and the configuration handed to child walvault processes. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/daemon_internal.h"
#include "common/log.h"

extern char **environ;

int agent_parse_bytes(const char *text, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t scale;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"kb", 1000},
                 {"mb", 1000000},
                 {"gb", 1000000000},
                 {"kib", 1ULL << 10},
                 {"mib", 1ULL << 20},
                 {"gib", 1ULL << 30},
                 {"k", 1ULL << 10},
                 {"m", 1ULL << 20},
                 {"g", 1ULL << 30}};
    char *end;
    if (!text || !isdigit((unsigned char)text[0]))
        return -1;
    unsigned long long n = strtoull(text, &end, 10);
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (strcasecmp(end, units[i].unit) != 0)
            continue;
        if (n > UINT64_MAX / units[i].scale)
            return -1;
        *out = n * units[i].scale;
        return 0;
    }
    return -1;
}

static int parse_schedule(const struct config *cfg, enum opt_id id, struct schedule *s,
                          wv_err_t *err)
{
    int rc = schedule_parse(config_get(cfg, id), s, err);
    return rc ? wv_err_prefix(err, "--%s", config_options()[id].name) : 0;
}

static int optional_int(const struct config *cfg, enum opt_id id, int *out, wv_err_t *err)
{
    *out = 0;
    return config_get(cfg, id) ? config_int(cfg, id, 1, 100000, out, err) : 0;
}

/* What a child backup would refuse is refused at start (or reload), not hours later. */
static int check_backup_options(const struct config *cfg, wv_err_t *err)
{
    int n;
    const char *source = config_get(cfg, OPT_SOURCE);
    if (strcmp(source, "auto") != 0 && strcmp(source, "local") != 0 &&
        strcmp(source, "stream") != 0)
        return wv_err_set(err, WV_EUSAGE, "--source wants local, stream or auto, got \"%s\"",
                          source);
    int rc = config_int(cfg, OPT_JOBS, 1, 256, &n, err);
    if (rc == 0)
        rc = config_int(cfg, OPT_ARCHIVE_TIMEOUT, 1, 86400, &n, err);
    if (rc == 0)
        rc = config_int(cfg, OPT_PACK_SIZE, 1, 4096, &n, err);
    if (rc == 0)
        rc = config_int(cfg, OPT_GC_GRACE, 0, 365 * 86400, &n, err);
    return rc;
}

static int parse_mode(const struct config *cfg, struct agent_opts *o, wv_err_t *err)
{
    const char *mode = config_get(cfg, OPT_ARCHIVE_MODE);
    if (strcmp(mode, "stream") != 0 && strcmp(mode, "command") != 0)
        return wv_err_set(err, WV_EUSAGE, "--archive-mode wants stream or command, got \"%s\"",
                          mode);
    o->streaming = strcmp(mode, "stream") == 0;
    const char *bytes = config_get(cfg, OPT_MAX_LAG_BYTES);
    if (agent_parse_bytes(bytes, &o->max_lag_bytes) != 0)
        return wv_err_set(err, WV_EUSAGE,
                          "--max-lag-bytes wants a byte count (1073741824, 512MiB, 2GB), got "
                          "\"%s\"",
                          bytes);
    const char *format = config_get(cfg, OPT_LOG_FORMAT);
    if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
        return wv_err_set(err, WV_EUSAGE, "--log-format wants text or json, got \"%s\"", format);
    return 0;
}

int agent_opts_parse(const struct config *cfg, struct agent_opts *o, wv_err_t *err)
{
    memset(o, 0, sizeof *o);
    o->listen = config_get(cfg, OPT_LISTEN);
    int rc = agent_http_check_listen(o->listen, err);
    if (rc == 0)
        rc = parse_schedule(cfg, OPT_FULL_EVERY, &o->full, err);
    if (rc == 0)
        rc = parse_schedule(cfg, OPT_INCREMENTAL_EVERY, &o->incremental, err);
    if (rc == 0)
        rc = optional_int(cfg, OPT_RETAIN_FULL, &o->retain_full, err);
    if (rc == 0)
        rc = optional_int(cfg, OPT_RETAIN_DAYS, &o->retain_days, err);
    if (rc == 0)
        rc = config_duration(cfg, OPT_MAX_LAG_SECONDS, 0.001, 365 * 86400.0, &o->max_lag_s, err);
    if (rc == 0)
        rc = config_int(cfg, OPT_LEASE_SECONDS, 2, 3600, &o->lease_s, err);
    if (rc == 0)
        rc = parse_mode(cfg, o, err);
    if (rc == 0)
        rc = check_backup_options(cfg, err);
    return rc;
}

static const enum opt_id restart_only[] = {OPT_REPO,
                                           OPT_NODE,
                                           OPT_KEY_FILE,
                                           OPT_PG,
                                           OPT_S3_ENDPOINT,
                                           OPT_S3_REGION,
                                           OPT_S3_URI_STYLE,
                                           OPT_S3_CA_FILE,
                                           OPT_S3_PROFILE,
                                           OPT_S3_ACCESS_KEY_ID,
                                           OPT_S3_SECRET_ACCESS_KEY,
                                           OPT_S3_SESSION_TOKEN,
                                           OPT_S3_SSE,
                                           OPT_S3_SSE_KMS_KEY_ID,
                                           OPT_S3_RETRY_SECONDS,
                                           OPT_S3_STALL_SECONDS,
                                           OPT_SLOT,
                                           OPT_APPLICATION_NAME,
                                           OPT_SYNC_INTERVAL,
                                           OPT_LISTEN,
                                           OPT_ARCHIVE_MODE,
                                           OPT_LEASE_SECONDS};

static bool secret(enum opt_id id)
{
    return id == OPT_S3_SECRET_ACCESS_KEY || id == OPT_S3_SESSION_TOKEN || id == OPT_PG;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

void agent_opts_keep_restart_only(const struct config *running, struct config *fresh)
{
    for (size_t i = 0; i < sizeof restart_only / sizeof *restart_only; i++) {
        enum opt_id id = restart_only[i];
        const char *was = config_get(running, id), *now = config_get(fresh, id);
        if (same(was, now))
            continue;
        if (secret(id))
            log_warn("reload: --%s changed; restart the agent to apply it (the running value "
                     "stays)",
                     config_options()[id].name);
        else
            log_warn("reload: --%s changed from \"%s\" to \"%s\"; restart the agent to apply "
                     "it (the running value stays)",
                     config_options()[id].name, was ? was : "", now ? now : "");
        free(fresh->values[id]);
        fresh->values[id] = was ? strdup(was) : NULL;
        fresh->origin[id] = running->origin[id];
    }
}

static char *env_entry(const char *name, const char *value)
{
    size_t n = strlen("WALVAULT_") + strlen(name) + 1 + strlen(value) + 1;
    char *e = malloc(n);
    if (!e)
        return NULL;
    int k = snprintf(e, n, "WALVAULT_");
    for (const char *p = name; *p; p++)
        e[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    snprintf(e + k, n - (size_t)k, "=%s", value);
    return e;
}

char **agent_child_env(const struct config *cfg)
{
    size_t n = 0, k = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **env = calloc(n + OPT_COUNT + 1, sizeof *env);
    if (!env)
        return NULL;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "WALVAULT_", 9) != 0)
            env[k++] = strdup(*e);
    for (int i = 0; i < OPT_COUNT; i++) {
        const char *v = cfg->values[i];
        if (!v || cfg->origin[i] == ORIGIN_DEFAULT || i == OPT_CONFIG || i == OPT_HELP ||
            i == OPT_VERSION)
            continue;
        env[k++] = env_entry(config_options()[i].name, v);
    }
    for (size_t i = 0; i < k; i++) {
        if (env[i])
            continue;
        for (size_t j = 0; j < k; j++) /* out of memory: no half environment */
            free(env[j]);
        free(env);
        return NULL;
    }
    return env;
}

void agent_env_free(char **env)
{
    for (char **e = env; e && *e; e++)
        free(*e);
    free(env);
}
