/* Stores on a thread of their own, so the stream keeps reading (and answering the server)
 * while one runs: what arrives meanwhile goes into the next store. One job at a time, in
 * the order handed over, which keeps fragments of a segment in order and the whole segment
 * after them. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "wal/stream_internal.h"

/* ---- one job ---- */

struct compare_ctx {
    const uint8_t *want;
    size_t len, pos;
    bool differs;
};

static int compare_chunk(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct compare_ctx *c = ctx;
    (void)err;
    if (c->differs || len > c->len - c->pos || memcmp(c->want + c->pos, data, len) != 0)
        c->differs = true;
    else
        c->pos += len;
    return 0;
}

/* After a restart or an ambiguous failure the same object may be stored twice: identical
 * content is success, anything else means another writer and is refused. */
static int compare_existing(repo_t *r, const char *key, const uint8_t *data, size_t len,
                            wv_err_t *err)
{
    struct compare_ctx c = {.want = data, .len = len};
    int rc = repo_get_sealed_stream(r, key, compare_chunk, &c, err);
    if (rc)
        return rc;
    if (c.differs || c.pos != len)
        return wv_err_set(err, WV_EMISMATCH,
                          "%s is already archived with different content; refusing to "
                          "overwrite it (is another cluster streaming under node \"%s\"?)",
                          key, repo_node(r));
    log_debug("%s was already archived with the same content", key);
    return 0;
}

static int put_once(repo_t *r, const char *name, uint32_t tli, const uint8_t *data, size_t len,
                    wv_err_t *err)
{
    char key[REPO_KEY_MAX];
    if (repo_key_wal(r, tli, name, key, sizeof key) != 0)
        return wv_err_set(err, WV_EFAIL, "node name too long: %s", repo_node(r));
    int rc = repo_put_sealed(r, key, data, len, true, err);
    if (rc == WV_EEXISTS)
        return compare_existing(r, key, data, len, err);
    return rc;
}

/* The first page must be this segment of this cluster: a last check before it is final. Its
 * timeline may be older: a new timeline's first segment starts as a copy of its parent's. */
static int check_header(const struct store_job *j, const char *name, wv_err_t *err)
{
    struct wal_segment_header h;
    int rc = wal_segment_header_parse(j->data, j->seg_size, &h, err);
    if (rc)
        return wv_err_prefix(err, "received WAL segment %s", name);
    if (h.pageaddr != wal_segment_start(j->segno, j->seg_size) || h.tli > j->tli ||
        h.seg_size != j->seg_size ||
        (j->system_identifier && h.system_identifier != j->system_identifier))
        return wv_err_set(err, WV_EMISMATCH,
                          "received WAL segment %s has the header of another segment or "
                          "cluster (system %" PRIu64 ", timeline %" PRIu32 ")",
                          name, h.system_identifier, h.tli);
    return 0;
}

int stream_store_run(repo_t *r, const struct store_job *j, wv_err_t *err)
{
    char name[WAL_NAME_MAX];
    int rc;
    switch (j->kind) {
    case STORE_FRAGMENT:
        wal_fragment_name(j->tli, j->segno, j->seg_size, j->start, j->end, name);
        return put_once(r, name, j->tli, j->data + j->start, j->end - j->start, err);
    case STORE_SEGMENT:
        wal_segment_name(j->tli, j->segno, j->seg_size, name);
        if ((rc = check_header(j, name, err)) != 0)
            return rc;
        return put_once(r, name, j->tli, j->data, j->seg_size, err);
    case STORE_HISTORY:
        wal_history_name(j->tli, name);
        return put_once(r, name, j->tli, j->data, j->end, err);
    case STORE_CLEANUP:
        return wal_fragments_delete(r, j->tli, j->segno, j->seg_size, err);
    }
    return wv_err_set(err, WV_EFAIL, "unknown store job %d", (int)j->kind);
}

/* ---- the thread ---- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count(struct wal_stream_stats *s, const struct store_job *j, int rc)
{
    if (!s)
        return;
    if (rc) {
        atomic_fetch_add(&s->store_errors, 1);
        return;
    }
    if (j->kind == STORE_FRAGMENT) {
        atomic_fetch_add(&s->fragments, 1);
        atomic_fetch_add(&s->bytes_stored, j->end - j->start);
        atomic_store(&s->last_fragment_ms, wall_ms());
    } else if (j->kind == STORE_SEGMENT) {
        atomic_fetch_add(&s->segments, 1);
        atomic_fetch_add(&s->bytes_stored, j->seg_size);
        atomic_store(&s->last_segment_ms, wall_ms());
    }
}

static void *store_main(void *arg)
{
    struct stream_store *st = arg;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        while (!st->queued && !st->quit)
            pthread_cond_wait(&st->cond, &st->lock);
        if (st->quit)
            break;
        st->queued = false;
        struct store_job job = st->job;
        pthread_mutex_unlock(&st->lock);
        wv_err_t err = {0};
        int rc = stream_store_run(st->r, &job, &err);
        count(st->stats, &job, rc);
        pthread_mutex_lock(&st->lock);
        st->rc = rc;
        st->err = err;
        st->busy = false;
        st->finished = true;
        pthread_cond_broadcast(&st->cond);
        char one = 1;
        ssize_t ignored = write(st->wake[1], &one, 1);
        (void)ignored;
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

int stream_store_start(struct stream_store *st, repo_t *r, struct wal_stream_stats *stats,
                       wv_err_t *err)
{
    memset(st, 0, sizeof *st);
    st->r = r;
    st->stats = stats;
    if (pipe2(st->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return wv_err_errno(err, WV_EFAIL, "cannot create a pipe");
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->cond, NULL);
    /* Signals (SIGTERM) must reach the streaming thread, whose poll() they interrupt. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&st->thread, NULL, store_main, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(st->wake[0]);
        close(st->wake[1]);
        return wv_err_set(err, WV_EFAIL, "cannot start the store thread: %s", strerror(rc));
    }
    return 0;
}

void stream_store_stop(struct stream_store *st)
{
    pthread_mutex_lock(&st->lock);
    st->quit = true;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
    pthread_join(st->thread, NULL);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->cond);
    close(st->wake[0]);
    close(st->wake[1]);
}

void stream_store_submit(struct stream_store *st, const struct store_job *job)
{
    pthread_mutex_lock(&st->lock);
    st->job = *job;
    st->queued = true;
    st->busy = true;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

bool stream_store_idle(struct stream_store *st)
{
    pthread_mutex_lock(&st->lock);
    bool idle = !st->busy && !st->finished;
    pthread_mutex_unlock(&st->lock);
    return idle;
}

int stream_store_fd(const struct stream_store *st)
{
    return st->wake[0];
}

static void drain_wake(struct stream_store *st)
{
    char buf[64];
    while (read(st->wake[0], buf, sizeof buf) > 0)
        ;
}

/* Called with the lock held. */
static bool take_result(struct stream_store *st, struct store_job *job, int *rc, wv_err_t *err)
{
    if (!st->finished)
        return false;
    st->finished = false;
    *job = st->job;
    *rc = st->rc;
    if (err)
        *err = st->err;
    return true;
}

bool stream_store_collect(struct stream_store *st, struct store_job *job, int *rc, wv_err_t *err)
{
    drain_wake(st);
    pthread_mutex_lock(&st->lock);
    bool got = take_result(st, job, rc, err);
    pthread_mutex_unlock(&st->lock);
    return got;
}

bool stream_store_wait(struct stream_store *st, struct store_job *job, int *rc, wv_err_t *err)
{
    pthread_mutex_lock(&st->lock);
    while (st->busy)
        pthread_cond_wait(&st->cond, &st->lock);
    bool got = take_result(st, job, rc, err);
    pthread_mutex_unlock(&st->lock);
    drain_wake(st);
    return got;
}
