/* Following synchronous_standby_names while streaming: see stream_internal.h. A failed
 * probe changes nothing (the last answer stands, the next reconnect asks again) and is
 * logged once until a probe succeeds again. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "wal/stream_internal.h"

/* Ends early when told to quit; returns false then. Called with the lock held. */
static bool sleep_interval(struct stream_probe *p)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += STREAM_PROBE_INTERVAL_S;
    while (!p->quit && pthread_cond_timedwait(&p->cond, &p->lock, &until) != ETIMEDOUT)
        ;
    return !p->quit;
}

static int ask(const struct stream_probe *p, bool *synchronous, wv_err_t *err)
{
    PGconn *c = NULL;
    char app[160];
    /* Not the stream's name: a walsender of that name is a candidate standby. */
    snprintf(app, sizeof app, "%s (settings probe)", p->app);
    int rc = sconn_open(p->conninfo, app, &c, err);
    if (rc == 0)
        rc = sconn_is_synchronous(c, p->app, synchronous, err);
    PQfinish(c);
    return rc;
}

static void *probe_main(void *arg)
{
    struct stream_probe *p = arg;
    bool failing = false;
    pthread_mutex_lock(&p->lock);
    while (sleep_interval(p)) {
        pthread_mutex_unlock(&p->lock);
        bool synchronous = false;
        wv_err_t err = {0};
        int rc = ask(p, &synchronous, &err);
        if (rc && !failing)
            log_warn("cannot check synchronous_standby_names (the next reconnect will): %s",
                     err.msg);
        failing = rc != 0;
        pthread_mutex_lock(&p->lock);
        if (rc == 0) {
            p->synchronous = synchronous;
            p->answers++;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int stream_probe_start(struct stream_probe *p, const char *conninfo, const char *app, wv_err_t *err)
{
    memset(p, 0, sizeof *p);
    p->conninfo = conninfo;
    snprintf(p->app, sizeof p->app, "%s", app);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    /* Signals (SIGTERM) must reach the streaming thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->thread, NULL, probe_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        return wv_err_set(err, WV_EFAIL, "cannot start the settings probe thread: %s",
                          strerror(rc));
    }
    return 0;
}

void stream_probe_stop(struct stream_probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->quit = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
}

bool stream_probe_answer(struct stream_probe *p, unsigned *seen, bool *synchronous)
{
    pthread_mutex_lock(&p->lock);
    bool fresh = p->answers != *seen;
    *seen = p->answers;
    *synchronous = p->synchronous;
    pthread_mutex_unlock(&p->lock);
    return fresh;
}
