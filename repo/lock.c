/* The node's agent lease. Each holder writes its own generation of the lease object,
 * nodes/<node>/agent/lease-<generation>, and the highest generation is the lease. Taking a
 * lease over writes the next generation with put-if-absent, so of two agents that both find
 * an expired lease exactly one wins; the holder only ever overwrites its own generation, so
 * a late renewal by a holder that lost the lease cannot clobber its successor's. Generations
 * only grow: a holder that stops marks its lease released rather than deleting it, and only
 * generations below a new holder's are deleted. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repo/internal.h"

#define LEASE_PREFIX_FMT "nodes/%s/agent/lease-"
#define LEASE_ATTEMPTS 4
#define LEASE_OLD_MAX 16

static void lease_key(const repo_t *r, uint64_t generation, char *out, size_t len)
{
    snprintf(out, len, LEASE_PREFIX_FMT "%020" PRIu64, r->node, generation);
}

struct generations {
    uint64_t highest;
    uint64_t old[LEASE_OLD_MAX]; /* lower generations left behind, to delete */
    size_t nold;
};

static int list_generations(repo_t *r, struct generations *g, wv_err_t *err)
{
    char prefix[REPO_KEY_MAX];
    snprintf(prefix, sizeof prefix, LEASE_PREFIX_FMT, r->node);
    memset(g, 0, sizeof *g);
    storage_iter_t *it;
    int rc = storage_list_open(r->st, prefix, &it, err);
    if (rc)
        return rc;
    const char *key;
    uint64_t size;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1) {
        char *end;
        uint64_t gen = strtoull(key + strlen(prefix), &end, 10);
        if (*end || gen == 0)
            continue; /* a backend's temporary, or no lease of ours */
        if (g->highest && g->nold < LEASE_OLD_MAX)
            g->old[g->nold++] = g->highest;
        g->highest = gen > g->highest ? gen : g->highest;
    }
    storage_iter_close(it);
    return rc < 0 ? rc : 0;
}

static int read_lease(repo_t *r, uint64_t generation, struct repo_lease *out, wv_err_t *err)
{
    char key[REPO_KEY_MAX];
    lease_key(r, generation, key, sizeof key);
    json_t *doc;
    int rc = repo_get_json(r, key, &doc, err);
    if (rc)
        return rc;
    const char *holder = json_string_value(json_object_get(doc, "holder"));
    memset(out, 0, sizeof *out);
    snprintf(out->holder, sizeof out->holder, "%s", holder ? holder : "?");
    out->generation = generation;
    out->renewed_ms = json_integer_value(json_object_get(doc, "renewed_ms"));
    out->expires_ms = json_integer_value(json_object_get(doc, "expires_ms"));
    out->lease_ms = json_integer_value(json_object_get(doc, "lease_ms"));
    out->released = json_is_true(json_object_get(doc, "released"));
    json_decref(doc);
    if (!holder || out->expires_ms <= 0)
        return wv_err_set(err, WV_ECORRUPT, "lease object %s has no holder or expiry", key);
    return 0;
}

static int write_lease(repo_t *r, const struct repo_lease *l, bool if_absent, wv_err_t *err)
{
    char key[REPO_KEY_MAX];
    lease_key(r, l->generation, key, sizeof key);
    json_t *doc =
        json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I}", "holder", l->holder, "node", r->node,
                  "released", l->released, "generation", (json_int_t)l->generation, "renewed_ms",
                  (json_int_t)l->renewed_ms, "expires_ms", (json_int_t)l->expires_ms, "lease_ms",
                  (json_int_t)l->lease_ms);
    if (!doc)
        return wv_err_set(err, WV_EFAIL, "out of memory writing lease %s", key);
    int rc = repo_put_json(r, key, doc, if_absent, err);
    json_decref(doc);
    return rc;
}

static void format_ms(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static int refuse(repo_t *r, const struct repo_lease *held, int64_t now_ms, wv_err_t *err)
{
    char expires[40];
    format_ms(held->expires_ms, expires, sizeof expires);
    int64_t wait_s = (held->expires_ms + REPO_LEASE_GRACE_MS - now_ms + 999) / 1000;
    return wv_err_set(err, WV_EEXISTS,
                      "node \"%s\" already has an agent: %s holds its lease until %s; one agent "
                      "per node (if that agent is gone, its lease can be taken over in %" PRId64
                      " s)",
                      r->node, held->holder, expires, wait_s > 0 ? wait_s : 0);
}

static void delete_older(repo_t *r, const struct generations *g, uint64_t mine)
{
    for (size_t i = 0; i < g->nold + 1; i++) {
        uint64_t gen = i < g->nold ? g->old[i] : g->highest;
        if (gen >= mine)
            continue;
        char key[REPO_KEY_MAX];
        wv_err_t ignored;
        lease_key(r, gen, key, sizeof key);
        storage_delete(r->st, key, &ignored); /* garbage only: the next holder tries again */
    }
}

/* One round: when the highest generation is absent or expired, write the next one. 0 when
 * taken; WV_EEXISTS when another agent won a race (look again); *held when a live lease
 * stands (err names its holder). */
static int try_acquire(repo_t *r, struct repo_lease *l, int64_t now_ms, bool *held, wv_err_t *err)
{
    struct generations g;
    int rc = list_generations(r, &g, err);
    if (rc)
        return rc;
    if (g.highest) {
        struct repo_lease other;
        rc = read_lease(r, g.highest, &other, err);
        if (rc == WV_ENOTFOUND)
            return WV_EEXISTS; /* released while we looked */
        if (rc)
            return rc;
        if (!other.released && now_ms <= other.expires_ms + REPO_LEASE_GRACE_MS) {
            *held = true;
            return refuse(r, &other, now_ms, err);
        }
    }
    l->generation = g.highest + 1;
    l->renewed_ms = now_ms;
    l->expires_ms = now_ms + l->lease_ms;
    rc = write_lease(r, l, true, err);
    if (rc == 0)
        delete_older(r, &g, l->generation);
    return rc;
}

int repo_lease_acquire(repo_t *r, const char *holder, int64_t lease_ms, int64_t now_ms,
                       struct repo_lease *out, wv_err_t *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->holder, sizeof out->holder, "%s", holder);
    out->lease_ms = lease_ms;
    for (int i = 0; i < LEASE_ATTEMPTS; i++) {
        bool held = false;
        int rc = try_acquire(r, out, now_ms, &held, err);
        if (held || rc != WV_EEXISTS)
            return rc;
    }
    return wv_err_set(err, WV_EEXISTS,
                      "node \"%s\": another agent is taking the lease at the same moment; one "
                      "agent per node",
                      r->node);
}

int repo_lease_renew(repo_t *r, struct repo_lease *l, int64_t now_ms, wv_err_t *err)
{
    struct generations g;
    int rc = list_generations(r, &g, err);
    if (rc)
        return rc;
    if (g.highest > l->generation) {
        struct repo_lease other;
        if (read_lease(r, g.highest, &other, err) != 0)
            snprintf(other.holder, sizeof other.holder, "another agent");
        return wv_err_set(err, WV_EMISMATCH,
                          "node \"%s\": %s took the agent lease over (generation %" PRIu64
                          " after ours, %" PRIu64 "): this agent could not renew it in time",
                          r->node, other.holder, g.highest, l->generation);
    }
    struct repo_lease next = *l;
    next.renewed_ms = now_ms;
    next.expires_ms = now_ms + l->lease_ms;
    rc = write_lease(r, &next, false, err);
    if (rc == 0)
        *l = next;
    if (rc == 0 && g.nold)
        delete_older(r, &g, l->generation);
    return rc;
}

int repo_lease_release(repo_t *r, const struct repo_lease *l, wv_err_t *err)
{
    struct repo_lease released = *l;
    released.released = true;
    return write_lease(r, &released, false, err);
}
