/* Writing objects: a streaming writer of unknown length that buffers up to one part, sends
 * a small object as one PUT and a large one as a multipart upload (s3_multipart.c), so that
 * nothing is visible under the key before commit and never half of it.
 *
 * Put-if-absent. S3 (since 2024), MinIO, Ceph RGW and R2 refuse a PUT with If-None-Match: *
 * when the key exists (412), atomically. Other stores, s3rver among them, ignore the header
 * and overwrite. Whether this store honours it is found once per process by a probe object
 * (".walvault/if-none-match-probe": a conditional PUT of an existing object must get 412).
 *
 *  - Honoured, and the object fits in one PUT (S3_IF_ABSENT_SINGLE_MAX, which holds a WAL
 *    segment): one conditional PUT; the store decides atomically.
 *  - Otherwise (the store ignores it, or a multipart upload, whose completion not every
 *    store checks): a claim protocol over the store's strongly consistent PUT and LIST. Each
 *    writer PUTs its own claim object ".walvault/claim.<key>.<token>", then LISTs the claims
 *    of the key. Of two writers that both put a claim and then list, at least one sees the
 *    other's claim (whichever lists last), so at most one sees only its own. That one HEADs
 *    the key (absent, or it reports WV_EEXISTS), publishes (PUT, or completes its upload; the
 *    parts were sent before claiming, so publishing is short) and deletes its claim. A writer
 *    that sees another claim backs off and tries again; by then the other has either
 *    published (the HEAD sees it: WV_EEXISTS) or given up.
 *    So two writers of one key never both succeed, and a caller that gets WV_EEXISTS can read
 *    the winner's object (walvault then compares contents). What it assumes: a store that is
 *    strongly consistent for PUT, LIST and HEAD (AWS S3 since 2020, MinIO, Ceph, R2, GCS),
 *    and that a claim is held for less than CLAIM_LEASE_S: a writer publishes only while its
 *    claim is younger than half the lease and with a timeout for the rest of that half, and
 *    a claim older than the lease (by the store's clock, against the newer claim's time) is
 *    stale: its writer crashed, and it is removed. A crashed writer therefore delays the next
 *    writer of the same key by at most the lease.
 *  - Either way the object carries x-amz-meta-walvault-token; a retried request whose first
 *    attempt did land (lost response) finds its own token and succeeds, not WV_EEXISTS. */
#include "storage/s3_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define CLAIM_PREFIX S3_RESERVED_DIR "claim."
#define PROBE_OBJECT S3_RESERVED_DIR "if-none-match-probe"
#define CLAIM_LEASE_S 60
#define CLAIM_PUBLISH_MIN_MS 5000

struct s3_writer {
    struct storage_writer base;
    struct s3_store *s;
    char *key;
    char *object;
    bool if_absent;
    char token[33];
    char token_header[96];
    buf_t part;
    size_t part_limit; /* the current part's size; the first one decides single PUT or not */
    unsigned parts;    /* parts handed to the upload */
    struct s3_upload *upload;
    int inm;        /* enum s3_inm, for put-if-absent */
    int failed;     /* the error of a failed write; commit must not publish */
    bool transient; /* the last publish failed in a way worth another round */
};

typedef int (*publish_fn)(struct s3_writer *w, bool single_shot, long timeout_ms, wv_err_t *err);

static char *probe_name(const struct s3_store *s)
{
    size_t n = strlen(s->prefix) + strlen(PROBE_OBJECT) + 1;
    char *o = malloc(n);
    if (o)
        snprintf(o, n, "%s%s", s->prefix, PROBE_OBJECT);
    return o;
}

/* Claims lie flat beside the probe object, "<prefix>.walvault/claim.<key>.<token>" with
 * '%', '/' and '.' of the key escaped: so the first '.' after "claim." ends the key, and the
 * directory never empties (s3rver removes an empty directory and can then lose a PUT racing
 * into it). token NULL gives the prefix of all claims on the key. */
static char *claim_name(const struct s3_store *s, const char *key, const char *token)
{
    buf_t b;
    buf_init(&b, 4096);
    wv_err_t err;
    int rc = buf_append_str(&b, s->prefix, &err);
    if (!rc)
        rc = buf_append_str(&b, CLAIM_PREFIX, &err);
    for (const char *p = key; *p && !rc; p++) {
        char esc[4];
        snprintf(esc, sizeof esc, "%%%02X", (unsigned char)*p);
        bool plain = *p != '%' && *p != '/' && *p != '.';
        rc = plain ? buf_append(&b, p, 1, &err) : buf_append(&b, esc, 3, &err);
    }
    if (!rc)
        rc = buf_append(&b, ".", 1, &err);
    if (!rc && token)
        rc = buf_append_str(&b, token, &err);
    if (!rc)
        rc = s3_buf_terminate(&b, &err);
    if (rc)
        buf_free(&b);
    return (char *)b.data;
}

/* ---- the If-None-Match probe ---- */

static int probe_put(struct s3_store *s, const char *object, long *status, wv_err_t *err)
{
    struct s3_call c = {.method = "PUT",
                        .op = "PUT",
                        .key = PROBE_OBJECT,
                        .object = object,
                        .headers = {"If-None-Match: *"},
                        .header_count = 1};
    s3_add_sse_headers(s, &c);
    int rc = s3_call_run(s, &c, err);
    *status = c.status;
    s3_call_free(&c);
    return rc;
}

static int probe_once(struct s3_store *s, wv_err_t *err)
{
    char *object = probe_name(s);
    if (!object)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    long status = 0;
    int rc = 0, mode = S3_INM_IGNORED;
    /* the first PUT may have created the object; the second one must then be refused */
    for (int i = 0; i < 2 && mode == S3_INM_IGNORED; i++) {
        rc = probe_put(s, object, &status, err);
        if (rc == WV_EEXISTS)
            mode = S3_INM_HONOURED;
        else if (rc && (status == 400 || status == 501))
            mode = S3_INM_REJECTED;
        else if (rc)
            mode = S3_INM_UNKNOWN;
    }
    free(object);
    if (mode == S3_INM_UNKNOWN)
        return rc;
    log_debug("S3 store %s If-None-Match", mode == S3_INM_HONOURED  ? "honours"
                                           : mode == S3_INM_IGNORED ? "ignores"
                                                                    : "rejects");
    atomic_store(&s->inm, mode);
    return 0;
}

static int if_none_match_mode(struct s3_store *s, int *mode, wv_err_t *err)
{
    if (atomic_load(&s->inm) == S3_INM_UNKNOWN) {
        int rc = probe_once(s, err);
        if (rc)
            return wv_err_prefix(err, "checking whether the store supports conditional PUT");
    }
    *mode = atomic_load(&s->inm);
    return 0;
}

/* ---- publishing ---- */

static int head_token(struct s3_writer *w, bool *exists, bool *ours, wv_err_t *err)
{
    char token[80];
    int rc = s3_head_object(w->s, w->object, w->key, NULL, token, sizeof token, err);
    *exists = rc == 0;
    *ours = rc == 0 && strcmp(token, w->token) == 0;
    return rc == WV_ENOTFOUND ? 0 : rc;
}

static int exists_error(struct s3_writer *w, wv_err_t *err)
{
    return wv_err_set(err, WV_EEXISTS, "object already exists: %s", w->key);
}

/* A 412 after a retry may be our own first attempt, which landed but lost its answer. */
static int settle_412(struct s3_writer *w, int rc, int attempts, wv_err_t *err)
{
    if (rc != WV_EEXISTS)
        return rc;
    bool exists = false, ours = false;
    if (attempts > 1 && head_token(w, &exists, &ours, err) == 0 && ours)
        return 0;
    return exists_error(w, err);
}

static int put_single(struct s3_writer *w, bool single_shot, long timeout_ms, wv_err_t *err)
{
    struct s3_call c = {.method = "PUT",
                        .op = "PUT",
                        .key = w->key,
                        .object = w->object,
                        .body = w->part.data,
                        .body_len = w->part.len,
                        .single_shot = single_shot,
                        .timeout_ms = timeout_ms};
    if (w->if_absent && w->inm != S3_INM_REJECTED)
        c.headers[c.header_count++] = "If-None-Match: *";
    if (w->if_absent)
        c.headers[c.header_count++] = w->token_header;
    s3_add_sse_headers(w->s, &c);
    int rc = s3_call_run(w->s, &c, err);
    w->transient = c.transient;
    rc = w->if_absent ? settle_412(w, rc, c.attempts, err) : rc;
    s3_call_free(&c);
    return rc;
}

static int complete_upload(struct s3_writer *w, bool single_shot, long timeout_ms, wv_err_t *err)
{
    bool inm = w->if_absent && w->inm != S3_INM_REJECTED;
    int rc = s3_upload_complete(w->upload, inm, single_shot, timeout_ms, &w->transient, err);
    return w->if_absent ? settle_412(w, rc, 2, err) : rc;
}

/* ---- claims ---- */

struct claim_view {
    bool own_seen;
    int64_t own_mtime;
    int others; /* live claims of other writers */
};

static void drop_stale(struct s3_writer *w, const char *object, const char *name)
{
    wv_err_t ignored;
    log_debug("removing stale claim %s on %s (older than %d s)", name, w->key, CLAIM_LEASE_S);
    s3_delete_object(w->s, object, w->key, &ignored);
}

#define CLAIMS_SEEN_MAX 64

struct claim_set {
    struct claim_view view;
    char *names[CLAIMS_SEEN_MAX]; /* other writers' claims, to judge once our own time is known */
    int64_t mtimes[CLAIMS_SEEN_MAX];
    size_t n;
};

static void note_claim(struct claim_set *cs, const struct s3_list_entry *e, const char *name,
                       const char *token)
{
    if (strchr(name, '.') || strchr(name, '/')) /* not a claim on this key */
        return;
    if (strcmp(name, token) == 0) {
        cs->view.own_seen = true;
        cs->view.own_mtime = e->mtime;
    } else if (cs->n < CLAIMS_SEEN_MAX && (cs->names[cs->n] = strdup(e->key))) {
        cs->mtimes[cs->n++] = e->mtime;
    } else {
        cs->view.others++;
    }
}

static int read_claims(struct s3_writer *w, const char *claims, struct claim_view *v, wv_err_t *err)
{
    struct s3_lister l;
    struct claim_set cs = {0};
    size_t clen = strlen(claims);
    const struct s3_list_entry *e = NULL;
    int rc = s3_lister_init(&l, w->s, claims, err);
    while (rc == 0 && (rc = s3_lister_next(&l, &e, err)) == 1) {
        note_claim(&cs, e, e->key + clen, w->token);
        rc = 0;
    }
    for (size_t i = 0; i < cs.n; i++) {
        bool stale =
            rc == 0 && cs.view.own_seen && cs.mtimes[i] < cs.view.own_mtime - CLAIM_LEASE_S;
        if (stale)
            drop_stale(w, cs.names[i], cs.names[i] + clen);
        else
            cs.view.others++;
        free(cs.names[i]);
    }
    s3_lister_free(&l);
    *v = cs.view;
    return rc;
}

static int put_claim(struct s3_writer *w, const char *claim, wv_err_t *err)
{
    struct s3_call c = {.method = "PUT", .op = "PUT CLAIM", .key = w->key, .object = claim};
    s3_add_sse_headers(w->s, &c);
    int rc = s3_call_run(w->s, &c, err);
    s3_call_free(&c);
    return rc;
}

static void release_claim(struct s3_writer *w, const char *claim)
{
    wv_err_t err;
    if (s3_delete_object(w->s, claim, w->key, &err) != 0)
        log_warn("%s (a leftover claim delays the next writer of %s by up to %d s)", err.msg,
                 w->key, CLAIM_LEASE_S);
}

/* With the claim held and no rival: publish unless the key exists. *again asks for another
 * round. */
static int publish_held(struct s3_writer *w, publish_fn step, int64_t t0, bool *again,
                        wv_err_t *err)
{
    bool exists, ours;
    int rc = head_token(w, &exists, &ours, err);
    if (rc || exists)
        return rc ? rc : ours ? 0 : exists_error(w, err);
    long left = CLAIM_LEASE_S * 1000L / 2 - (long)(s3_now_ms() - t0);
    if (left < CLAIM_PUBLISH_MIN_MS) {
        *again = true;
        return wv_err_set(err, WV_ETIMEOUT, "S3 PUT %s: claiming the key took too long", w->key);
    }
    rc = step(w, true, left, err);
    *again = rc != 0 && w->transient;
    return rc;
}

static int claim_round(struct s3_writer *w, publish_fn step, const char *claims, const char *claim,
                       bool *again, wv_err_t *err)
{
    *again = false;
    int64_t t0 = s3_now_ms();
    int rc = put_claim(w, claim, err);
    if (rc)
        return rc;
    struct claim_view v;
    rc = read_claims(w, claims, &v, err);
    if (!rc && !v.own_seen) {
        *again = true;
        rc = wv_err_set(err, WV_EFAIL, "S3 PUT %s: the store does not list a claim just written",
                        w->key);
    } else if (!rc && v.others > 0) {
        bool exists, ours;
        rc = head_token(w, &exists, &ours, err);
        if (!rc && exists)
            rc = ours ? 0 : exists_error(w, err);
        else if (!rc) {
            *again = true;
            rc = wv_err_set(err, WV_EFAIL, "S3 PUT %s: another writer is storing this key", w->key);
        }
    } else if (!rc) {
        rc = publish_held(w, step, t0, again, err);
    }
    release_claim(w, claim);
    return rc;
}

static int publish_claimed(struct s3_writer *w, publish_fn step, wv_err_t *err)
{
    char *claims = claim_name(w->s, w->key, NULL);
    char *claim = claim_name(w->s, w->key, w->token);
    int rc = claims && claim ? 0 : wv_err_set(err, WV_EFAIL, "out of memory storing %s", w->key);
    int64_t start = s3_now_ms();
    for (int round = 1; !rc; round++) {
        bool again = false;
        rc = claim_round(w, step, claims, claim, &again, err);
        if (!again || s3_now_ms() - start > w->s->retry_ms + CLAIM_LEASE_S * 1000L)
            break;
        log_debug("%s; trying again", err->msg);
        s3_sleep_ms(s3_backoff_ms(round));
        rc = 0;
    }
    free(claims);
    free(claim);
    return rc;
}

static int publish(struct s3_writer *w, wv_err_t *err)
{
    publish_fn step = w->upload ? complete_upload : put_single;
    if (!w->if_absent)
        return step(w, false, 0, err);
    if (w->inm == S3_INM_HONOURED && !w->upload)
        return step(w, false, 0, err);
    return publish_claimed(w, step, err);
}

/* ---- the writer ---- */

static void free_writer(struct s3_writer *w)
{
    if (w->upload)
        s3_upload_free(w->upload);
    buf_free(&w->part);
    free(w->key);
    free(w->object);
    free(w);
}

static int first_part_limit(struct s3_writer *w, wv_err_t *err)
{
    w->part_limit = s3_part_size(1);
    if (!w->if_absent)
        return 0;
    int rc = if_none_match_mode(w->s, &w->inm, err);
    if (!rc && w->inm == S3_INM_HONOURED)
        w->part_limit = S3_IF_ABSENT_SINGLE_MAX;
    return rc;
}

int s3_put_begin(storage_t *st, const char *key, bool if_absent, storage_writer_t **out,
                 wv_err_t *err)
{
    int rc = s3_check_key(key, err);
    if (rc)
        return rc;
    struct s3_writer *w = calloc(1, sizeof *w);
    if (!w)
        return wv_err_set(err, WV_EFAIL, "out of memory storing %s", key);
    w->base.st = st;
    w->s = s3_store_of(st);
    w->if_absent = if_absent;
    w->key = strdup(key);
    w->object = s3_object_name(w->s, key);
    rc = w->key && w->object ? s3_random_token(w->token, err)
                             : wv_err_set(err, WV_EFAIL, "out of memory storing %s", key);
    snprintf(w->token_header, sizeof w->token_header, "%s: %s", S3_META_TOKEN, w->token);
    if (!rc)
        rc = first_part_limit(w, err);
    if (rc) {
        free_writer(w);
        return rc;
    }
    buf_init(&w->part, w->part_limit);
    *out = &w->base;
    return 0;
}

static int hand_over_part(struct s3_writer *w, wv_err_t *err)
{
    int rc = 0;
    if (!w->upload)
        rc = s3_upload_begin(w->s, w->object, w->key, w->token, &w->upload, err);
    if (!rc)
        rc = s3_upload_part(w->upload, &w->part, err);
    if (rc)
        return rc;
    w->parts++;
    if (w->parts >= S3_MAX_PARTS)
        return wv_err_set(err, WV_EFAIL, "S3 PUT %s: object too large (more than %d parts)", w->key,
                          S3_MAX_PARTS);
    w->part_limit = s3_part_size(w->parts + 1);
    w->part.max = w->part_limit;
    return 0;
}

int s3_put_write(storage_writer_t *base, const void *data, size_t len, wv_err_t *err)
{
    struct s3_writer *w = (struct s3_writer *)base;
    if (w->failed)
        return wv_err_set(err, WV_EFAIL, "object %s: write after a failed write", w->key);
    const uint8_t *p = data;
    while (len > 0) {
        size_t room = w->part_limit - w->part.len;
        size_t n = len < room ? len : room;
        int rc = buf_append(&w->part, p, n, err);
        if (!rc && w->part.len == w->part_limit)
            rc = hand_over_part(w, err);
        if (rc) {
            w->failed = rc;
            return rc;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int s3_put_commit(storage_writer_t *base, wv_err_t *err)
{
    struct s3_writer *w = (struct s3_writer *)base;
    int rc = 0;
    if (w->failed)
        rc = wv_err_set(err, WV_EFAIL, "object %s was not stored: a write failed", w->key);
    if (!rc && w->upload && (w->part.len > 0 || w->parts == 0))
        rc = s3_upload_part(w->upload, &w->part, err);
    if (!rc && w->upload)
        rc = s3_upload_flush(w->upload, err);
    if (!rc)
        rc = publish(w, err);
    if (rc && w->upload)
        s3_upload_abort(w->upload);
    free_writer(w);
    return rc;
}

void s3_put_abort(storage_writer_t *base)
{
    struct s3_writer *w = (struct s3_writer *)base;
    if (w->upload)
        s3_upload_abort(w->upload);
    free_writer(w);
}
