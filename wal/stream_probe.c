/* Following synchronous_standby_names while streaming: see stream_internal.h. A failed
 * probe changes nothing (the last answer stands, the next reconnect asks again) and is
 * logged once until a probe succeeds again. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "wal/stream_internal.h"

#define PROBE_ANSWER_S 10.0 /* a server that takes longer is asked again next time */
#define PROBE_SLICE_MS 100  /* how often a waiting probe checks whether to quit */

static bool quitting(struct stream_probe *p)
{
    pthread_mutex_lock(&p->lock);
    bool quit = p->quit;
    pthread_mutex_unlock(&p->lock);
    return quit;
}

/* Ends early when told to quit; returns false then. Called with the lock held. */
static bool sleep_interval(struct stream_probe *p)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += STREAM_PROBE_INTERVAL_S;
    while (!p->quit && pthread_cond_timedwait(&p->cond, &p->lock, &until) != ETIMEDOUT)
        ;
    return !p->quit;
}

/* SHOW without blocking for good: a server that stopped answering (but not the network)
 * must not keep the stream from stopping. */
static int show_standby_names(struct stream_probe *p, PGconn *c, char *out, size_t len,
                              wv_err_t *err)
{
    if (!PQsendQuery(c, "SHOW synchronous_standby_names"))
        return wv_err_set(err, WV_EFAIL, "SHOW synchronous_standby_names failed");
    double deadline = time_monotonic() + PROBE_ANSWER_S;
    while (PQisBusy(c)) {
        if (quitting(p) || time_monotonic() > deadline)
            return wv_err_set(err, WV_EFAIL, "no answer to SHOW synchronous_standby_names");
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        if ((poll(&pfd, 1, PROBE_SLICE_MS) < 0 && errno != EINTR) || !PQconsumeInput(c))
            return wv_err_set(err, WV_EFAIL, "connection lost during SHOW");
    }
    PGresult *res = PQgetResult(c);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (ok)
        snprintf(out, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    while ((res = PQgetResult(c)) != NULL)
        PQclear(res);
    return ok ? 0 : wv_err_set(err, WV_EFAIL, "SHOW synchronous_standby_names failed");
}

static int ask(struct stream_probe *p, bool *synchronous, wv_err_t *err)
{
    PGconn *c = NULL;
    char app[160], names[1024];
    /* Not the stream's name: a walsender of that name is a candidate standby. */
    snprintf(app, sizeof app, "%s (settings probe)", p->app);
    int rc = sconn_open(p->conninfo, app, &c, err);
    if (rc == 0)
        rc = show_standby_names(p, c, names, sizeof names, err);
    if (rc == 0)
        *synchronous = wal_stream_is_named(names, p->app);
    PQfinish(c);
    return rc;
}

static void *probe_main(void *arg)
{
    struct stream_probe *p = arg;
    bool failing = false;
    pthread_mutex_lock(&p->lock);
    while (sleep_interval(p)) {
        unsigned session = p->session;
        pthread_mutex_unlock(&p->lock);
        bool synchronous = false;
        wv_err_t err = {0};
        int rc = ask(p, &synchronous, &err);
        if (rc && !failing && !quitting(p))
            log_warn("cannot check synchronous_standby_names (the next reconnect will): %s",
                     err.msg);
        failing = rc != 0;
        pthread_mutex_lock(&p->lock);
        /* A session that started meanwhile asked the server itself, later than this. */
        if (rc == 0 && session == p->session) {
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
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* a clock step must not stall it */
    pthread_cond_init(&p->cond, &attr);
    pthread_condattr_destroy(&attr);
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

void stream_probe_new_session(struct stream_probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->session++;
    pthread_mutex_unlock(&p->lock);
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
