/* The agent's control loop: start the parts in order (lease first, so that a second agent
 * for the node refuses before it touches anything), then wait on one condition variable for
 * signals, reloads, due backups and failures, and stop the parts in the reverse order. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/cmd_coord.h"
#include "agent/commands.h"
#include "agent/daemon.h"
#include "agent/daemon_internal.h"
#include "common/log.h"
#include "common/timeutil.h"

int64_t agent_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t agent_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void agent_fail(struct agent *a, const char *msg)
{
    pthread_mutex_lock(&a->lock);
    if (!a->failed) {
        a->failed = true;
        snprintf(a->failure, sizeof a->failure, "%s", msg);
    }
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

/* ---- signals: blocked in every thread, taken by one with sigwait ---- */

static void agent_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1); /* from the agent itself: the signal thread may end */
}

static void *signal_main(void *arg)
{
    struct agent *a = arg;
    sigset_t set;
    agent_signals(&set);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0 || sig == SIGUSR1)
            break;
        pthread_mutex_lock(&a->lock);
        if (sig == SIGHUP) {
            a->reload = true;
        } else if (!a->stop) {
            log_info("%s: stopping", strsignal(sig));
            a->stop = true;
        }
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
    }
    return NULL;
}

/* ---- SIGHUP ---- */

static void describe_opts(const struct agent_opts *o, char *out, size_t len)
{
    char retention[64] = "none";
    if (o->retain_full || o->retain_days)
        snprintf(retention, sizeof retention, "%d full, %d days", o->retain_full, o->retain_days);
    snprintf(out, len, "full backups %s, incremental backups %s, retention %s", o->full.text,
             o->incremental.text, retention);
}

static void reload_config(struct agent *a)
{
    struct config fresh;
    struct agent_opts o;
    wv_err_t err = {0};
    log_info("SIGHUP: reloading the configuration");
    /* Only this thread replaces a->cfg, so it reads it here without the lock. */
    int rc = config_load(a->boot.argc, a->boot.argv, NULL, &fresh, &err);
    if (rc == 0) {
        agent_opts_keep_restart_only(&a->cfg, &fresh);
        rc = agent_opts_parse(&fresh, &o, &err);
    }
    if (rc != 0) {
        log_error("reload failed, the running configuration stays: %s", err.msg);
        config_free(&fresh);
        return;
    }
    bool json = strcmp(config_get(&fresh, OPT_LOG_FORMAT), "json") == 0;
    log_set_format(json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
    pthread_mutex_lock(&a->lock);
    struct config old = a->cfg;
    a->cfg = fresh;
    a->opts = o;
    pthread_mutex_unlock(&a->lock);
    config_free(&old);
    char what[256];
    describe_opts(&o, what, sizeof what);
    log_info("configuration reloaded: %s; log format %s", what, json ? "json" : "text");
}

/* ---- the loop ---- */

static void wait_tick(struct agent *a)
{
    int64_t until = agent_monotonic_ms() + AGENT_TICK_MS;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000),
                          .tv_nsec = (long)(until % 1000) * 1000000L};
    pthread_cond_timedwait(&a->cond, &a->lock, &ts);
}

static void control_loop(struct agent *a)
{
    pthread_mutex_lock(&a->lock);
    while (!a->stop && !a->failed) {
        if (a->reload) {
            a->reload = false;
            pthread_mutex_unlock(&a->lock);
            reload_config(a);
            pthread_mutex_lock(&a->lock);
            continue;
        }
        atomic_store(&a->heartbeat_ms, agent_monotonic_ms());
        if (a->opts.streaming)
            lag_track(&a->lag, time_monotonic(), atomic_load(&a->stats.received_lsn),
                      atomic_load(&a->stats.archived_lsn));
        agent_backup_schedule(a, (int64_t)time(NULL));
        wait_tick(a);
    }
    pthread_mutex_unlock(&a->lock);
}

/* ---- start and stop ---- */

static int load_configs(struct agent *a, const struct config *cfg, wv_err_t *err)
{
    if (cfg->nargs != 0)
        return wv_err_set(err, WV_EUSAGE, "agent takes no arguments");
    /* Two copies of our own: the one as started (the stream's settings point into it for
     * its whole life) and the current one, replaced on SIGHUP. */
    int rc = config_load(cfg->argc, cfg->argv, NULL, &a->boot, err);
    if (rc == 0)
        rc = config_load(cfg->argc, cfg->argv, NULL, &a->cfg, err);
    if (rc == 0)
        rc = agent_opts_parse(&a->cfg, &a->opts, err);
    if (rc == 0 && !config_get(&a->cfg, OPT_REPO))
        rc = wv_err_set(err, WV_EUSAGE, "agent needs --repo");
    ssize_t n = rc == 0 ? readlink("/proc/self/exe", a->self, sizeof a->self - 1) : 0;
    if (n < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot find the walvault binary's path");
    a->self[n] = '\0';
    return rc;
}

static void log_started(struct agent *a)
{
    char what[256];
    describe_opts(&a->opts, what, sizeof what);
    if (a->opts.streaming) {
        const char *app = config_get(&a->boot, OPT_APPLICATION_NAME);
        log_info("agent of node %s started: streaming WAL as application_name %s; %s",
                 repo_node(a->repo), app ? app : repo_node(a->repo), what);
    } else {
        log_info("agent of node %s started: WAL archived by archive_command; %s",
                 repo_node(a->repo), what);
    }
}

static int start_parts(struct agent *a, wv_err_t *err)
{
    struct repo_config rc_repo = commands_repo_config(&a->boot);
    int rc = repo_open(&rc_repo, &a->repo, err);
    if (rc == 0)
        rc = agent_lease_take(a, err);
    /* WAL matters more than the schedule: an unreadable catalog must not stop the stream. */
    if (rc == 0 && agent_backup_load_history(a, err) != 0)
        log_warn("%s; scheduling as if node %s had no backup", err->msg, repo_node(a->repo));
    if (rc == 0)
        rc = agent_http_start(a, err);
    if (rc == 0)
        rc = agent_lease_start(a, err);
    if (rc == 0 && a->opts.streaming)
        rc = agent_stream_start(a, err);
    if (rc == 0)
        rc = agent_backup_start(a, err);
    if (rc == 0)
        log_started(a);
    return rc;
}

/* The stream first (it stores what it received and reports it), the backup child aborted,
 * the lease given up only once nothing of ours writes any more. */
static void stop_parts(struct agent *a)
{
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_mutex_unlock(&a->lock);
    a->stream_stop = 1;
    agent_backup_stop(a);
    agent_stream_stop(a);
    if (a->repo)
        agent_lease_stop(a);
    agent_http_stop(a);
    if (a->repo)
        repo_close(a->repo);
}

static void agent_init(struct agent *a)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&a->lock, NULL);
    atomic_store(&a->heartbeat_ms, agent_monotonic_ms());
}

static void agent_free(struct agent *a)
{
    config_free(&a->boot);
    config_free(&a->cfg);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

int cmd_agent(const struct config *cfg)
{
    struct agent *a = calloc(1, sizeof *a);
    if (!a) {
        fprintf(stderr, "walvault: error: out of memory\n");
        return EXIT_FAILURE_;
    }
    agent_init(a);
    commands_long_running();
    /* Blocked before any thread exists, so that every thread inherits the mask. */
    sigset_t set;
    agent_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t sig_thread;
    wv_err_t err = {0};
    int rc = pthread_create(&sig_thread, NULL, signal_main, a);
    if (rc != 0) {
        wv_err_set(&err, WV_EFAIL, "cannot start the signal thread: %s", strerror(rc));
        agent_free(a);
        return commands_fail(&err);
    }
    rc = load_configs(a, cfg, &err);
    if (rc == 0)
        rc = start_parts(a, &err);
    if (rc == 0)
        control_loop(a);
    stop_parts(a);
    pthread_kill(sig_thread, SIGUSR1);
    pthread_join(sig_thread, NULL);
    int status = EXIT_OK;
    if (rc != 0)
        status = commands_fail(&err);
    else if (a->failed) {
        log_error("agent stopped: %s", a->failure);
        status = EXIT_FAILURE_;
    } else {
        log_info("agent stopped");
    }
    agent_free(a);
    return status;
}
