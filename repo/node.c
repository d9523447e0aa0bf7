#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "repo/internal.h"

static int parse_node_json(json_t *doc, struct repo_node_info *out)
{
    const char *sysid = json_string_value(json_object_get(doc, "system_identifier"));
    if (!sysid)
        return -1;
    out->system_identifier = strtoull(sysid, NULL, 10);
    out->pg_version = (int)json_integer_value(json_object_get(doc, "pg_version"));
    out->wal_seg_size = (uint32_t)json_integer_value(json_object_get(doc, "wal_seg_size"));
    return 0;
}

int repo_node_get(repo_t *r, struct repo_node_info *out, wv_err_t *err)
{
    char key[REPO_KEY_MAX];
    repo_key_node_record(r, key, sizeof key);
    json_t *doc;
    int rc = repo_get_json(r, key, &doc, err);
    if (rc == WV_ENOTFOUND)
        return wv_err_set(err, WV_ENOTFOUND,
                          "node \"%s\" has nothing in the repository yet (no WAL or backup)",
                          r->node);
    if (rc)
        return rc;
    rc = parse_node_json(doc, out);
    json_decref(doc);
    if (rc)
        return wv_err_set(err, WV_ECORRUPT, "object %s: no system_identifier", key);
    return 0;
}

static json_t *node_json(const struct repo_node_info *info)
{
    char sysid[32];
    snprintf(sysid, sizeof sysid, "%" PRIu64, info->system_identifier);
    json_t *doc = json_pack("{s:s, s:i}", "system_identifier", sysid, "format", 1);
    if (info->pg_version)
        json_object_set_new(doc, "pg_version", json_integer(info->pg_version));
    if (info->wal_seg_size)
        json_object_set_new(doc, "wal_seg_size", json_integer(info->wal_seg_size));
    return doc;
}

static int compare_binding(repo_t *r, const struct repo_node_info *have,
                           const struct repo_node_info *want, wv_err_t *err)
{
    if (have->system_identifier != want->system_identifier)
        return wv_err_set(err, WV_EMISMATCH,
                          "node \"%s\" belongs to PostgreSQL system %" PRIu64
                          ", but this is system %" PRIu64
                          "; use another --node name for another cluster",
                          r->node, have->system_identifier, want->system_identifier);
    if (want->wal_seg_size && have->wal_seg_size && want->wal_seg_size != have->wal_seg_size)
        return wv_err_set(err, WV_EMISMATCH,
                          "node \"%s\" was recorded with WAL segment size %u, not %u", r->node,
                          have->wal_seg_size, want->wal_seg_size);
    return 0;
}

int repo_node_bind(repo_t *r, const struct repo_node_info *info, wv_err_t *err)
{
    struct repo_node_info have;
    int rc = repo_node_get(r, &have, err);
    if (rc == 0)
        return compare_binding(r, &have, info, err);
    if (rc != WV_ENOTFOUND)
        return rc;
    char key[REPO_KEY_MAX];
    repo_key_node_record(r, key, sizeof key);
    json_t *doc = node_json(info);
    rc = repo_put_json(r, key, doc, true, err);
    json_decref(doc);
    if (rc == WV_EEXISTS) /* another process bound it first: compare with what it wrote */
        return repo_node_bind(r, info, err);
    return rc;
}
