/* One agent per node: the lease in the repository (repo/lock.c), taken at start, renewed
 * every third of its length, given up at a clean exit. While renewals fail the agent keeps
 * streaming (the stream must not stop over a store outage) but starts no backup once its
 * own clock says the lease ran out; a lease another agent took over ends this one. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "agent/daemon_internal.h"
#include "common/log.h"

#define LEASE_RETRY_MS 1000
#define LEASE_LOG_EVERY 30 /* failed renewals between two warnings */

static void holder_name(char *out, size_t len)
{
    char host[256] = "unknown-host";
    gethostname(host, sizeof host - 1);
    unsigned int nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        nonce = (unsigned int)time(NULL) ^ (unsigned int)getpid();
    snprintf(out, len, "%.80s:%ld:%08x", host, (long)getpid(), nonce);
}

int agent_lease_take(struct agent *a, wv_err_t *err)
{
    char holder[128];
    holder_name(holder, sizeof holder);
    int rc = repo_lease_acquire(a->repo, holder, (int64_t)a->opts.lease_s * 1000, agent_now_ms(),
                                &a->lease, err);
    if (rc)
        return rc;
    a->lease_valid = true;
    log_info("agent lease of node %s taken as %s (generation %llu, %d s)", repo_node(a->repo),
             holder, (unsigned long long)a->lease.generation, a->opts.lease_s);
    return 0;
}

static void wait_until(struct agent *a, int64_t when_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(when_ms / 1000),
                          .tv_nsec = (long)(when_ms % 1000) * 1000000L};
    pthread_cond_timedwait(&a->cond, &a->lock, &ts);
}

/* Lock held. Returns false when the lease is lost for good. */
static bool renew_once(struct agent *a, int64_t *last_ok, unsigned *failures)
{
    struct repo_lease l = a->lease;
    pthread_mutex_unlock(&a->lock);
    wv_err_t err = {0};
    int rc = repo_lease_renew(a->repo, &l, agent_now_ms(), &err);
    int64_t now = agent_monotonic_ms();
    if (rc == WV_EMISMATCH) {
        agent_fail(a, err.msg);
        pthread_mutex_lock(&a->lock);
        a->lease_lost = true;
        a->lease_valid = false;
        return false;
    }
    pthread_mutex_lock(&a->lock);
    if (rc == 0) {
        if (!a->lease_valid || *failures)
            log_info("agent lease renewed after %u failed attempts", *failures);
        a->lease = l;
        a->lease_valid = true;
        *last_ok = now;
        *failures = 0;
        return true;
    }
    a->lease_errors++;
    if ((*failures)++ % LEASE_LOG_EVERY == 0)
        log_warn("cannot renew the agent lease (retrying): %s", err.msg);
    if (a->lease_valid && now - *last_ok > a->lease.lease_ms) {
        a->lease_valid = false;
        log_error("the agent lease ran out unrenewed; no backup starts until it is renewed");
    }
    return true;
}

static void *lease_main(void *arg)
{
    struct agent *a = arg;
    pthread_mutex_lock(&a->lock);
    int64_t period = a->lease.lease_ms / 3, last_ok = agent_monotonic_ms();
    int64_t next = last_ok + period;
    unsigned failures = 0;
    while (!a->lease_quit) {
        if (agent_monotonic_ms() < next) {
            wait_until(a, next);
            continue;
        }
        if (!renew_once(a, &last_ok, &failures))
            break;
        next = agent_monotonic_ms() + (failures ? LEASE_RETRY_MS : period);
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int agent_lease_start(struct agent *a, wv_err_t *err)
{
    int rc = pthread_create(&a->lease_thread, NULL, lease_main, a);
    if (rc != 0)
        return wv_err_set(err, WV_EFAIL, "cannot start the lease thread: %s", strerror(rc));
    a->lease_started = true;
    return 0;
}

/* After the stream and the backups stopped: a successor need not wait for the expiry. */
void agent_lease_stop(struct agent *a)
{
    pthread_mutex_lock(&a->lock);
    a->lease_quit = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    if (a->lease_started)
        pthread_join(a->lease_thread, NULL);
    a->lease_started = false;
    if (a->lease_lost || !a->lease.generation)
        return;
    wv_err_t err = {0};
    if (repo_lease_release(a->repo, &a->lease, &err) != 0)
        log_warn("cannot give the agent lease up (a successor waits for it to expire): %s",
                 err.msg);
    else
        log_info("agent lease of node %s given up", repo_node(a->repo));
}
