/* Command-line options, the environment and the config file, in that order of precedence:
 * a flag beats WALVAULT_<NAME>, which beats the config file, which beats the default. */
#ifndef WALVAULT_AGENT_CONFIG_H
#define WALVAULT_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

enum opt_id {
    OPT_CONFIG,
    OPT_REPO,
    OPT_NODE,
    OPT_PG,
    OPT_PGDATA,
    OPT_KEY_FILE,
    OPT_JOBS,
    OPT_LOG_FORMAT,
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
    OPT_ARCHIVE_TIMEOUT,
    OPT_SOURCE,
    OPT_PREFETCH,
    OPT_SPOOL_DIR,
    OPT_OUT,
    OPT_FULL,
    OPT_INCREMENTAL,
    OPT_PARENT,
    OPT_PACK_SIZE,
    OPT_TO,
    OPT_BACKUP,
    OPT_TARGET_TIME,
    OPT_TARGET_LSN,
    OPT_TARGET_ACTION,
    OPT_TABLESPACE_MAP,
    OPT_JSON,
    OPT_RETAIN_FULL,
    OPT_RETAIN_DAYS,
    OPT_DRY_RUN,
    OPT_GC_GRACE,
    OPT_SLOT,
    OPT_APPLICATION_NAME,
    OPT_SYNC_INTERVAL,
    OPT_WATERMARK,
    OPT_WATERMARK_TIMEOUT,
    OPT_WATERMARK_EVERY,
    OPT_BACKUP_EVERY,
    OPT_ONCE,
    OPT_RETAIN_WATERMARKS,
    OPT_FULL_EVERY,
    OPT_INCREMENTAL_EVERY,
    OPT_LISTEN,
    OPT_MAX_LAG_SECONDS,
    OPT_MAX_LAG_BYTES,
    OPT_ARCHIVE_MODE,
    OPT_LEASE_SECONDS,
    OPT_HELP,
    OPT_VERSION,
    OPT_COUNT
};

enum opt_origin { ORIGIN_DEFAULT, ORIGIN_FILE, ORIGIN_ENV, ORIGIN_FLAG };

struct opt_def {
    const char *name; /* the flag without "--"; WALVAULT_<NAME> and the file key derive */
    bool has_arg;
    const char *def;      /* default, or NULL */
    const char *commands; /* space-separated commands it applies to, NULL for all */
    const char *help;
};

/* --listen of `walvault coordinator` when none is given (the agent's is 127.0.0.1:9187). */
#define COORDINATOR_LISTEN_DEFAULT "127.0.0.1:9188"

#define CONFIG_MAX_ARGS 8
#define CONFIG_MAX_MAPS 32

struct config {
    char *values[OPT_COUNT];
    enum opt_origin origin[OPT_COUNT];
    char *maps[CONFIG_MAX_MAPS]; /* --tablespace-map OLD=NEW, repeatable */
    size_t nmaps;
    const char *command;
    char *args[CONFIG_MAX_ARGS];
    int nargs;
    /* What config_load read, so that the agent can load it again on SIGHUP. */
    int argc;
    char **argv;
};

const struct opt_def *config_options(void);
/* Parses argv, then the environment (env may be NULL for the process environment), then the
 * config file named by --config or WALVAULT_CONFIG. WV_EUSAGE on bad input. */
int config_load(int argc, char **argv, char **env, struct config *cfg, wv_err_t *err);
void config_free(struct config *cfg);
const char *config_get(const struct config *cfg, enum opt_id id);
bool config_flag(const struct config *cfg, enum opt_id id);
/* A duration: seconds with decimals ("1.5"), or with a unit: ms, s, min ("200ms", "2s");
 * from min_s to max_s seconds. WV_EUSAGE naming the option otherwise. */
int config_duration(const struct config *cfg, enum opt_id id, double min_s, double max_s,
                    double *out, wv_err_t *err);
/* A positive integer option; WV_EUSAGE naming the option otherwise. */
int config_int(const struct config *cfg, enum opt_id id, int min, int max, int *out, wv_err_t *err);

#endif
