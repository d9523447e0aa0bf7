/* The agent's parts and the state they share. Threads: the control loop (daemon.c: signals,
 * reloads, the schedule), the WAL stream (daemon_stream.c), the backup runner
 * (daemon_backup.c, one child process at a time), the lease keeper (daemon_lease.c) and the
 * HTTP server (http.c, libmicrohttpd's thread). Everything below `lock` is read and written
 * under it, except the stream's statistics, which are atomics of their own. */
#ifndef WALVAULT_AGENT_DAEMON_INTERNAL_H
#define WALVAULT_AGENT_DAEMON_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/config.h"
#include "agent/schedule.h"
#include "repo/repo.h"
#include "wal/stream.h"

/* After a failed backup, the next try waits this long at most (less when the schedule
 * fires sooner). */
#define AGENT_BACKUP_RETRY_S 300
/* The control loop wakes at least this often; /healthz fails when it has not for longer
 * than AGENT_STALL_MS. */
#define AGENT_TICK_MS 1000
#define AGENT_STALL_MS 10000
#define AGENT_LAG_SAMPLES 128

/* What the current configuration asks of the agent (SIGHUP may change it). */
struct agent_opts {
    struct schedule full, incremental;
    int retain_full, retain_days; /* 0: not given, no retention after backups */
    double max_lag_s;
    uint64_t max_lag_bytes;
    bool streaming; /* --archive-mode stream */
    int lease_s;
    const char *listen; /* points into the configuration it was parsed from */
};

int agent_opts_parse(const struct config *cfg, struct agent_opts *o, wv_err_t *err);
/* Options the running agent cannot change (repository, node, stream, listener, lease): a
 * changed value in a reloaded configuration is logged and replaced by the running one. */
void agent_opts_keep_restart_only(const struct config *running, struct config *fresh);
/* The environment of a child walvault: the agent's own, without WALVAULT_* and
 * WALVAULT_CONFIG, plus WALVAULT_<NAME>=value for every option cfg sets, so the child sees
 * exactly the agent's configuration (and no secret reaches its arguments). NULL-terminated;
 * free with agent_env_free. */
char **agent_child_env(const struct config *cfg);
void agent_env_free(char **env);
/* "1.5 GiB"-style byte counts: a number with an optional unit. */
int agent_parse_bytes(const char *text, uint64_t *out);

/* Received but not yet archived WAL, for the lag in seconds: when each new received LSN was
 * first seen. The oldest entry is kept when the ring is full, so the lag stays right. */
struct lag_tracker {
    double t[AGENT_LAG_SAMPLES];
    uint64_t lsn[AGENT_LAG_SAMPLES];
    size_t head, count;
};
void lag_track(struct lag_tracker *l, double now, uint64_t received, uint64_t archived);
double lag_seconds(const struct lag_tracker *l, double now, uint64_t received, uint64_t archived);

struct backup_record {
    bool known;
    bool success;
    int64_t end_s; /* epoch seconds */
    double duration_s;
    uint64_t bytes, db_bytes;
    char id[64];
    char type[16];
};

struct agent {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; broadcast on every change below */
    struct config boot;  /* as started: the stream's and the lease's settings */
    struct config cfg;   /* current: reloaded on SIGHUP */
    struct agent_opts opts;
    repo_t *repo;
    char self[4096]; /* this binary, for child processes */

    bool stop, reload, failed;
    char failure[WV_ERR_MSG_MAX];
    atomic_int_fast64_t heartbeat_ms; /* monotonic: the control loop's last turn */

    /* WAL stream */
    pthread_t stream_thread;
    bool stream_started;
    volatile sig_atomic_t stream_stop;
    struct wal_stream_stats stats;
    struct lag_tracker lag;

    /* backups */
    pthread_t backup_thread;
    bool backup_started, backup_quit, backup_requested, backup_running;
    bool requested_full;
    pid_t child;               /* running child walvault, 0: none */
    int64_t last_full_start;   /* epoch seconds of the newest full backup's start; 0 */
    int64_t last_any_start;    /* the same for any backup */
    int64_t failed_at;         /* the last attempt failed then (0: it did not) */
    struct backup_record last; /* the newest backup's outcome */
    uint64_t backups_ok, backups_failed, expire_failed;

    /* lease */
    pthread_t lease_thread;
    bool lease_started, lease_quit, lease_valid, lease_lost;
    struct repo_lease lease;
    uint64_t lease_errors;

    void *http; /* httpd_start's server (agent/httpd.h) */
};

int64_t agent_now_ms(void);       /* wall clock */
int64_t agent_monotonic_ms(void); /* monotonic */
/* Marks the agent failed (exit 1) with err's message and wakes the control loop. Locks. */
void agent_fail(struct agent *a, const char *msg);

int agent_stream_start(struct agent *a, wv_err_t *err);
void agent_stream_stop(struct agent *a);

/* Reads the catalog: when the newest backups started, and the newest one's record. */
int agent_backup_load_history(struct agent *a, wv_err_t *err);
int agent_backup_start(struct agent *a, wv_err_t *err);
/* Called with the lock held: starts a due backup when none runs. */
void agent_backup_schedule(struct agent *a, int64_t now_s);
/* When (epoch seconds; 0: now, SCHEDULE_NEVER: never) each schedule wants its next backup;
 * lock held. */
void agent_backup_due(const struct agent *a, int64_t *full_at, int64_t *incremental_at);
/* The next time the schedule wants a backup, and whether a full one; lock held. */
int64_t agent_backup_next_due(const struct agent *a, bool *full);
void agent_backup_stop(struct agent *a);

int agent_lease_take(struct agent *a, wv_err_t *err);
int agent_lease_start(struct agent *a, wv_err_t *err);
void agent_lease_stop(struct agent *a);

/* WV_EUSAGE unless ADDR:PORT, [ADDR6]:PORT, :PORT or off. */
int agent_http_check_listen(const char *listen, wv_err_t *err);
int agent_http_start(struct agent *a, wv_err_t *err);
void agent_http_stop(struct agent *a);
/* The /metrics body (Prometheus text format 0.0.4) into out; lock held. */
int agent_metrics_render(struct agent *a, char *out, size_t len);

#endif
