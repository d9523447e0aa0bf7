/* Scheduled backups. Each runs as a child walvault ("backup", then "expire" when retention
 * is configured) with the agent's configuration in its environment: the agent can abort it
 * at any moment with a signal, which is safe because a backup exists only once its manifest
 * is stored (the next one reuses the packs it left); and whatever memory a backup of a large
 * database takes goes back to the system when the child ends, so the agent stays small.
 *
 * The schedule is anchored on the repository's catalog, not on the agent's start: "every
 * 1d" means one day after the newest backup began, so restarting the agent neither skips nor
 * repeats backups. A node without a backup gets one at once. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/daemon_internal.h"
#include "backup/backup.h"
#include "common/log.h"

struct child_run {
    int status; /* from waitpid */
    char last_line[512];
};

int agent_backup_load_history(struct agent *a, wv_err_t *err)
{
    struct manifest_summary *all;
    size_t n;
    int rc = catalog_backups(a->repo, &all, &n, err);
    if (rc)
        return wv_err_prefix(err, "cannot read the backup catalog");
    for (size_t i = 0; i < n; i++) {
        if (all[i].start_time > a->last_any_start)
            a->last_any_start = all[i].start_time;
        if (strcmp(all[i].type, "full") == 0 && all[i].start_time > a->last_full_start)
            a->last_full_start = all[i].start_time;
    }
    if (n) {
        const struct manifest_summary *s = &all[n - 1];
        a->last = (struct backup_record){.known = true,
                                         .success = true,
                                         .end_s = s->stop_time,
                                         .duration_s = (double)(s->stop_time - s->start_time),
                                         .bytes = s->stored_bytes,
                                         .db_bytes = s->db_bytes};
        snprintf(a->last.id, sizeof a->last.id, "%s", s->id);
        snprintf(a->last.type, sizeof a->last.type, "%s", s->type);
    }
    free(all);
    return 0;
}

static int64_t retry_hold(const struct agent *a, const struct schedule *s)
{
    int64_t next = schedule_next(s, a->failed_at), retry = a->failed_at + AGENT_BACKUP_RETRY_S;
    return next < retry ? next : retry;
}

void agent_backup_due(const struct agent *a, int64_t *full_at, int64_t *incremental_at)
{
    const struct agent_opts *o = &a->opts;
    int64_t f = o->full.kind == SCHEDULE_OFF ? SCHEDULE_NEVER
                : a->last_full_start         ? schedule_next(&o->full, a->last_full_start)
                                             : 0;
    int64_t i = o->incremental.kind == SCHEDULE_OFF ? SCHEDULE_NEVER
                : a->last_any_start ? schedule_next(&o->incremental, a->last_any_start)
                                    : 0;
    if (a->failed_at) {
        int64_t hf = retry_hold(a, &o->full), hi = retry_hold(a, &o->incremental);
        f = f != SCHEDULE_NEVER && f < hf ? hf : f;
        i = i != SCHEDULE_NEVER && i < hi ? hi : i;
    }
    *full_at = f;
    *incremental_at = i;
}

int64_t agent_backup_next_due(const struct agent *a, bool *full)
{
    int64_t f, i;
    agent_backup_due(a, &f, &i);
    *full = f <= i;
    return f <= i ? f : i;
}

void agent_backup_schedule(struct agent *a, int64_t now_s)
{
    bool full;
    if (a->stop || a->failed || a->backup_running || a->backup_requested || !a->lease_valid ||
        agent_backup_next_due(a, &full) > now_s)
        return;
    a->backup_requested = true;
    a->requested_full = full;
    pthread_cond_broadcast(&a->cond);
}

/* Lock held (so that a stop cannot miss the child). */
static int spawn_child(struct agent *a, char *const argv[], pid_t *pid, int *out, wv_err_t *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return wv_err_errno(err, WV_EFAIL, "cannot create a pipe for %s", argv[1]);
    char **env = agent_child_env(&a->cfg);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGHUP);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* no socket of the agent's leaks */
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none); /* the agent blocks these for its signal thread */
    posix_spawnattr_setsigdefault(&at, &defaults);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = env ? posix_spawn(pid, a->self, &fa, &at, argv, env) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    agent_env_free(env);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return wv_err_set(err, WV_EFAIL, "cannot start %s %s: %s", a->self, argv[1], strerror(rc));
    }
    *out = fds[0];
    return 0;
}

/* Keeps the child's last line of output (the backup id, expire's summary). */
static void read_output(int fd, char *last, size_t len)
{
    char buf[4096], cur[512];
    size_t n = 0;
    ssize_t got;
    last[0] = '\0';
    while ((got = read(fd, buf, sizeof buf)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] != '\n' && n + 1 < sizeof cur)
                cur[n++] = buf[i];
            else if (buf[i] == '\n' && n) {
                snprintf(last, len, "%.*s", (int)n, cur);
                n = 0;
            }
        }
    }
    if (n)
        snprintf(last, len, "%.*s", (int)n, cur);
}

/* Lock held on entry and return; released while the child runs. -1 when it did not start. */
static int run_child(struct agent *a, char *const argv[], struct child_run *out)
{
    wv_err_t err = {0};
    pid_t pid = 0;
    int fd = -1;
    if (a->backup_quit)
        return -1;
    if (spawn_child(a, argv, &pid, &fd, &err) != 0) {
        log_error("%s", err.msg);
        return -1;
    }
    a->child = pid;
    pthread_mutex_unlock(&a->lock);
    read_output(fd, out->last_line, sizeof out->last_line);
    close(fd);
    siginfo_t info; /* wait without reaping: a stop may still signal this pid meanwhile */
    while (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&a->lock);
    a->child = 0;
    while (waitpid(pid, &out->status, 0) < 0 && errno == EINTR)
        ;
    return 0;
}

static bool child_ok(const struct child_run *r)
{
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

static void describe_status(const struct child_run *r, char *out, size_t len)
{
    if (WIFSIGNALED(r->status))
        snprintf(out, len, "killed by signal %d", WTERMSIG(r->status));
    else
        snprintf(out, len, "exit status %d", WEXITSTATUS(r->status));
}

/* Lock held. */
static void run_retention(struct agent *a)
{
    if (!a->opts.retain_full && !a->opts.retain_days)
        return;
    char *argv[] = {"walvault", "expire", NULL};
    struct child_run r = {0};
    if (run_child(a, argv, &r) != 0 || a->backup_quit)
        return;
    if (child_ok(&r)) {
        log_info("retention: %s", r.last_line);
        return;
    }
    char why[64];
    describe_status(&r, why, sizeof why);
    a->expire_failed++;
    log_error("retention after the backup failed (%s); it runs again after the next backup", why);
}

/* Lock held; released while the manifest is read. */
static void record_success(struct agent *a, const char *id, bool full, int64_t start,
                           double duration)
{
    struct backup_record rec = {
        .known = true, .success = true, .end_s = (int64_t)time(NULL), .duration_s = duration};
    snprintf(rec.id, sizeof rec.id, "%.63s", id);
    snprintf(rec.type, sizeof rec.type, "%s", full ? "full" : "incr");
    pthread_mutex_unlock(&a->lock);
    wv_err_t err = {0};
    json_t *m = NULL;
    struct manifest_summary s;
    if (manifest_load(a->repo, id, &m, &err) == 0 && manifest_summary_get(m, &s, &err) == 0) {
        rec.bytes = s.stored_bytes;
        rec.db_bytes = s.db_bytes;
        snprintf(rec.type, sizeof rec.type, "%s", s.type);
    } else {
        log_warn("backup %s is stored, but its manifest could not be read back: %s", id, err.msg);
    }
    json_decref(m);
    pthread_mutex_lock(&a->lock);
    a->last = rec;
    a->backups_ok++;
    a->failed_at = 0;
    a->last_any_start = start;
    if (strcmp(rec.type, "full") == 0)
        a->last_full_start = start;
    log_info("%s backup %s done in %.1f s: %llu bytes stored", rec.type, id, duration,
             (unsigned long long)rec.bytes);
}

static void record_failure(struct agent *a, const struct child_run *r, double duration)
{
    char why[64];
    describe_status(r, why, sizeof why);
    a->last =
        (struct backup_record){.known = true, .end_s = (int64_t)time(NULL), .duration_s = duration};
    a->backups_failed++;
    a->failed_at = a->last.end_s;
    log_error("scheduled backup failed (%s, see the lines above); retrying in %d s at most", why,
              AGENT_BACKUP_RETRY_S);
}

/* Lock held on entry and return. */
static void run_backup(struct agent *a, bool full)
{
    char *argv[] = {"walvault", "backup", full ? "--full" : NULL, NULL};
    struct child_run r = {0};
    int64_t start = (int64_t)time(NULL);
    int64_t t0 = agent_monotonic_ms();
    log_info("scheduled %s backup starting", full ? "full" : "incremental");
    if (run_child(a, argv, &r) != 0) {
        r.status = 1 << 8; /* as exit status 1 */
        if (a->backup_quit)
            return;
    }
    double duration = (double)(agent_monotonic_ms() - t0) / 1000.0;
    if (a->backup_quit && !child_ok(&r)) {
        log_warn("backup aborted: the agent is stopping (the next backup reuses what it stored)");
        return;
    }
    if (child_ok(&r) && r.last_line[0]) {
        record_success(a, r.last_line, full, start, duration);
        run_retention(a);
    } else {
        record_failure(a, &r, duration);
    }
}

static void *backup_main(void *arg)
{
    struct agent *a = arg;
    pthread_mutex_lock(&a->lock);
    while (!a->backup_quit) {
        if (!a->backup_requested) {
            pthread_cond_wait(&a->cond, &a->lock);
            continue;
        }
        a->backup_requested = false;
        a->backup_running = true;
        run_backup(a, a->requested_full);
        a->backup_running = false;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int agent_backup_start(struct agent *a, wv_err_t *err)
{
    int rc = pthread_create(&a->backup_thread, NULL, backup_main, a);
    if (rc != 0)
        return wv_err_set(err, WV_EFAIL, "cannot start the backup thread: %s", strerror(rc));
    a->backup_started = true;
    return 0;
}

/* A running backup (or expire) is sent SIGTERM: it stops where it is, and what it stored
 * stays for the next backup to reuse. */
void agent_backup_stop(struct agent *a)
{
    pthread_mutex_lock(&a->lock);
    a->backup_quit = true;
    if (a->child > 0) {
        log_info("stopping the running backup (pid %ld)", (long)a->child);
        kill(a->child, SIGTERM);
    }
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    if (a->backup_started)
        pthread_join(a->backup_thread, NULL);
    a->backup_started = false;
}
