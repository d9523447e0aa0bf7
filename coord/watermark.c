/* Watermark records: cluster/watermarks/<n>, sealed JSON like every other object, written
 * once with put-if-absent so that two coordinators can never both write number n.
 *
 * {"format": 1, "number": 42, "time": "2026-11-30T22:15:00.123Z", "time_ms": 1796...,
 *  "nodes": [{"name": "seq", "role": "sequencer", "system_identifier": "7312...",
 *             "timeline": 1, "lsn": "0/3000060"}, ...]} */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord/coord.h"

#define NUMBER_DIGITS 10

void coord_watermark_free(struct coord_watermark *w)
{
    free(w->nodes);
    memset(w, 0, sizeof *w);
}

void coord_watermark_key(uint32_t number, char *out, size_t len)
{
    snprintf(out, len, COORD_WATERMARK_PREFIX "%0*" PRIu32, NUMBER_DIGITS, number);
}

void coord_format_time(int64_t ms, char *out, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%03dZ", day, (int)(ms % 1000));
}

json_t *coord_watermark_json(const struct coord_watermark *w)
{
    char when[40];
    coord_format_time(w->time_ms, when, sizeof when);
    json_t *nodes = json_array();
    for (size_t i = 0; i < w->count; i++) {
        const struct coord_wm_node *n = &w->nodes[i];
        char sysid[32], lsn[WAL_LSN_STR_MAX];
        snprintf(sysid, sizeof sysid, "%" PRIu64, n->system_identifier);
        wal_lsn_format(n->lsn, lsn);
        json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:I, s:s}", "name", n->name, "role",
                                               coord_role_name(n->role), "system_identifier", sysid,
                                               "timeline", (json_int_t)n->timeline, "lsn", lsn));
    }
    return json_pack("{s:i, s:I, s:s, s:I, s:o}", "format", COORD_WATERMARK_FORMAT, "number",
                     (json_int_t)w->number, "time", when, "time_ms", (json_int_t)w->time_ms,
                     "nodes", nodes);
}

static int node_from_json(json_t *j, struct coord_wm_node *n)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *role = json_string_value(json_object_get(j, "role"));
    const char *sysid = json_string_value(json_object_get(j, "system_identifier"));
    const char *lsn = json_string_value(json_object_get(j, "lsn"));
    json_t *tli = json_object_get(j, "timeline");
    wv_err_t ignored;
    if (!name || !role || !sysid || !lsn || !json_is_integer(tli) ||
        strlen(name) >= sizeof n->name || wal_lsn_parse(lsn, &n->lsn, &ignored) != 0)
        return -1;
    snprintf(n->name, sizeof n->name, "%s", name);
    n->system_identifier = strtoull(sysid, NULL, 10);
    n->timeline = (uint32_t)json_integer_value(tli);
    for (int r = COORD_SEQUENCER; r <= COORD_PARTICIPANT; r++)
        if (strcmp(role, coord_role_name((enum coord_role)r)) == 0) {
            n->role = (enum coord_role)r;
            return 0;
        }
    return -1;
}

int coord_watermark_from_json(json_t *doc, uint32_t number, struct coord_watermark *out,
                              wv_err_t *err)
{
    memset(out, 0, sizeof *out);
    json_t *nodes = json_object_get(doc, "nodes");
    json_t *num = json_object_get(doc, "number");
    if (!json_is_array(nodes) || !json_is_integer(num) ||
        json_integer_value(num) != (json_int_t)number ||
        !json_is_integer(json_object_get(doc, "time_ms")))
        return wv_err_set(err, WV_ECORRUPT, "watermark %" PRIu32 " is malformed", number);
    out->number = number;
    out->time_ms = json_integer_value(json_object_get(doc, "time_ms"));
    out->count = json_array_size(nodes);
    out->nodes = calloc(out->count ? out->count : 1, sizeof *out->nodes);
    if (!out->nodes)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    for (size_t i = 0; i < out->count; i++)
        if (node_from_json(json_array_get(nodes, i), &out->nodes[i]) != 0) {
            coord_watermark_free(out);
            return wv_err_set(err, WV_ECORRUPT,
                              "watermark %" PRIu32 ": node entry %zu is malformed", number, i);
        }
    return 0;
}

static int parse_number(const char *s, uint32_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long n = strtoull(s, &end, 10);
    if (*end || n == 0 || n > UINT32_MAX)
        return -1;
    *out = (uint32_t)n;
    return 0;
}

static int append_number(uint32_t **out, size_t *count, size_t *cap, uint32_t n, wv_err_t *err)
{
    if (*count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        uint32_t *grown = realloc(*out, ncap * sizeof *grown);
        if (!grown)
            return wv_err_set(err, WV_EFAIL, "out of memory listing watermarks");
        *out = grown;
        *cap = ncap;
    }
    (*out)[(*count)++] = n;
    return 0;
}

int coord_watermark_numbers(repo_t *r, uint32_t **out, size_t *count, wv_err_t *err)
{
    *out = NULL;
    *count = 0;
    size_t cap = 0;
    storage_iter_t *it;
    int rc = storage_list_open(repo_storage(r), COORD_WATERMARK_PREFIX, &it, err);
    if (rc)
        return rc;
    const char *key;
    uint64_t size;
    uint32_t n;
    while ((rc = storage_iter_next(it, &key, &size, err)) == 1)
        if (parse_number(key + strlen(COORD_WATERMARK_PREFIX), &n) == 0 &&
            (rc = append_number(out, count, &cap, n, err)) != 0)
            break;
    storage_iter_close(it);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        *count = 0;
        return rc;
    }
    return 0;
}

int coord_watermark_load(repo_t *r, uint32_t number, struct coord_watermark *out, wv_err_t *err)
{
    memset(out, 0, sizeof *out); /* freeing it is safe whatever happens */
    char key[REPO_KEY_MAX];
    json_t *doc;
    coord_watermark_key(number, key, sizeof key);
    int rc = repo_get_json(r, key, &doc, err);
    if (rc == WV_ENOTFOUND)
        return wv_err_set(err, WV_ENOTFOUND, "no watermark %" PRIu32 " in the repository", number);
    if (rc)
        return rc;
    rc = coord_watermark_from_json(doc, number, out, err);
    json_decref(doc);
    return rc;
}

static int newest_number(repo_t *r, uint32_t *n, wv_err_t *err)
{
    uint32_t *all;
    size_t count;
    int rc = coord_watermark_numbers(r, &all, &count, err);
    if (rc)
        return rc;
    *n = count ? all[count - 1] : 0;
    free(all);
    return 0;
}

int coord_watermark_resolve(repo_t *r, const char *spec, struct coord_watermark *out, wv_err_t *err)
{
    uint32_t n;
    memset(out, 0, sizeof *out);
    if (strcmp(spec, "latest") == 0) {
        int rc = newest_number(r, &n, err);
        if (rc)
            return rc;
        if (n == 0)
            return wv_err_set(err, WV_ENOTFOUND,
                              "the repository holds no watermark yet (walvault watermark)");
    } else if (parse_number(spec, &n) != 0) {
        return wv_err_set(err, WV_EUSAGE, "--watermark wants a number or latest, got \"%s\"", spec);
    }
    return coord_watermark_load(r, n, out, err);
}

int coord_watermark_at_time(repo_t *r, int64_t time_ms, struct coord_watermark *out, wv_err_t *err)
{
    uint32_t *all;
    size_t count;
    int rc = coord_watermark_numbers(r, &all, &count, err);
    /* Newest first: usually the answer is among the last few. */
    for (size_t i = count; rc == 0 && i-- > 0;) {
        rc = coord_watermark_load(r, all[i], out, err);
        if (rc == 0 && out->time_ms <= time_ms) {
            free(all);
            return 0;
        }
        if (rc == 0)
            coord_watermark_free(out);
    }
    free(all);
    if (rc == 0) {
        char when[40];
        coord_format_time(time_ms, when, sizeof when);
        rc = wv_err_set(err, WV_ENOTFOUND, "no watermark was taken at or before %s", when);
    }
    return rc;
}

const struct coord_wm_node *coord_watermark_node(const struct coord_watermark *w, const char *name)
{
    for (size_t i = 0; i < w->count; i++)
        if (strcmp(w->nodes[i].name, name) == 0)
            return &w->nodes[i];
    return NULL;
}

bool coord_watermark_not_older(const struct coord_watermark *newer,
                               const struct coord_watermark *older)
{
    for (size_t i = 0; i < older->count; i++) {
        const struct coord_wm_node *o = &older->nodes[i];
        const struct coord_wm_node *n = coord_watermark_node(newer, o->name);
        if (n && (n->timeline < o->timeline || (n->timeline == o->timeline && n->lsn < o->lsn)))
            return false;
    }
    return true;
}

/* The newest watermark must not hold a later point than w: LSNs only grow, and the newest
 * one's were read before it was written, so a cut taken after seeing it is never older. */
static int check_not_older(repo_t *r, const struct coord_watermark *w, uint32_t newest,
                           wv_err_t *err)
{
    struct coord_watermark prev;
    if (newest == 0)
        return 0;
    int rc = coord_watermark_load(r, newest, &prev, err);
    if (rc)
        return rc;
    bool ok = coord_watermark_not_older(w, &prev);
    coord_watermark_free(&prev);
    if (!ok)
        return wv_err_set(err, WV_EMISMATCH,
                          "watermark %" PRIu32 ", written meanwhile, is newer than this cut",
                          newest);
    return 0;
}

int coord_watermark_publish(repo_t *r, struct coord_watermark *w, wv_err_t *err)
{
    uint32_t newest;
    int rc = newest_number(r, &newest, err);
    if (rc == 0 && newest == UINT32_MAX)
        rc = wv_err_set(err, WV_EFAIL, "watermark numbers are exhausted");
    if (rc == 0)
        rc = check_not_older(r, w, newest, err);
    if (rc)
        return rc;
    w->number = newest + 1;
    char key[REPO_KEY_MAX];
    coord_watermark_key(w->number, key, sizeof key);
    json_t *doc = coord_watermark_json(w);
    rc = doc ? repo_put_json(r, key, doc, true, err) : wv_err_set(err, WV_EFAIL, "out of memory");
    json_decref(doc);
    if (rc == WV_EEXISTS)
        wv_err_set(err, WV_EEXISTS, "watermark %" PRIu32 " was written by another coordinator",
                   w->number);
    return rc;
}

/* ---- times ---- */

static const char *take_int(const char *p, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++, p++) {
        if (!isdigit((unsigned char)*p))
            return NULL;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return p;
}

static const char *take_zone(const char *p, int *offset_s)
{
    int h = 0, m = 0, sign;
    *offset_s = 0;
    while (*p == ' ')
        p++;
    if (*p == '\0' || strcmp(p, "Z") == 0 || strcmp(p, "UTC") == 0)
        return p + strlen(p);
    if (*p != '+' && *p != '-')
        return NULL;
    sign = *p == '-' ? -1 : 1;
    if (!(p = take_int(p + 1, 2, &h)))
        return NULL;
    if (*p == ':')
        p++;
    if (*p && !(p = take_int(p, 2, &m)))
        return NULL;
    *offset_s = sign * (h * 3600 + m * 60);
    return *p ? NULL : p;
}

int coord_parse_time(const char *text, int64_t *ms, wv_err_t *err)
{
    struct tm tm = {0};
    int frac = 0, scale = 1000, offset, y, mo, d, h, mi, s;
    const char *p = text;
    bool ok = (p = take_int(p, 4, &y)) && *p++ == '-' && (p = take_int(p, 2, &mo)) && *p++ == '-' &&
              (p = take_int(p, 2, &d)) && (*p == ' ' || *p == 'T') &&
              (p = take_int(p + 1, 2, &h)) && *p++ == ':' && (p = take_int(p, 2, &mi)) &&
              *p++ == ':' && (p = take_int(p, 2, &s));
    if (ok && *p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            if (scale > 1)
                frac = frac * 10 + (*p - '0'), scale /= 10;
    ok = ok && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 && s < 61 &&
         take_zone(p, &offset);
    if (!ok)
        return wv_err_set(err, WV_EUSAGE,
                          "invalid time \"%s\": use YYYY-MM-DD HH:MM:SS[.fff][+HH:MM] (UTC when "
                          "no zone is given)",
                          text);
    tm = (struct tm){.tm_year = y - 1900,
                     .tm_mon = mo - 1,
                     .tm_mday = d,
                     .tm_hour = h,
                     .tm_min = mi,
                     .tm_sec = s};
    *ms = ((int64_t)timegm(&tm) - offset) * 1000 + (int64_t)frac * scale;
    return 0;
}
