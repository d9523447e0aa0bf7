#include "repo/repo.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/timeutil.h"
#include "repo/internal.h"

#define REPO_JSON_KEY "repo.json"

storage_t *repo_storage(repo_t *r)
{
    return r->st;
}

const seal_keyring_t *repo_keys(const repo_t *r)
{
    return r->keys;
}

const char *repo_node(const repo_t *r)
{
    return r->node;
}

static int open_parts(const struct repo_config *cfg, repo_t *r, wv_err_t *err)
{
    if (!cfg->url || !*cfg->url)
        return wv_err_set(err, WV_EUSAGE, "no repository given: use --repo URL or WALVAULT_REPO");
    if (!cfg->key_file || !*cfg->key_file)
        return wv_err_set(err, WV_EUSAGE,
                          "no repository key given: use --key-file FILE or WALVAULT_KEY_FILE");
    const char *node = cfg->node && *cfg->node ? cfg->node : "default";
    int rc = repo_check_node_name(node, err);
    if (rc)
        return rc;
    r->node = strdup(node);
    if ((rc = seal_init(err)) != 0)
        return rc;
    if ((rc = seal_keyring_load(cfg->key_file, &r->keys, err)) != 0)
        return rc;
    return storage_open(cfg->url, &cfg->storage, &r->st, err);
}

static void free_parts(repo_t *r)
{
    if (r->st)
        storage_close(r->st);
    if (r->keys)
        seal_keyring_free(r->keys);
    free(r->node);
}

static int read_repo_json(repo_t *r, json_t **out, wv_err_t *err)
{
    buf_t raw;
    buf_init(&raw, 1 << 20);
    int rc = storage_get(r->st, REPO_JSON_KEY, &raw, 1 << 20, err);
    if (rc == WV_ENOTFOUND)
        return wv_err_set(err, WV_ENOTFOUND, "no repository at %s: run `walvault init` first",
                          storage_url(r->st));
    if (rc)
        return rc;
    json_error_t jerr;
    *out = json_loadb((const char *)raw.data, raw.len, 0, &jerr);
    buf_free(&raw);
    if (!*out)
        return wv_err_set(err, WV_ECORRUPT, "repo.json in %s is not valid JSON: %s",
                          storage_url(r->st), jerr.text);
    json_t *fmt = json_object_get(*out, "format");
    if (!json_is_integer(fmt) || json_integer_value(fmt) != REPO_FORMAT_VERSION) {
        json_decref(*out);
        return wv_err_set(err, WV_EMISMATCH,
                          "repo.json in %s has an unsupported format version (this walvault "
                          "reads version %d)",
                          storage_url(r->st), REPO_FORMAT_VERSION);
    }
    return 0;
}

static bool repo_json_knows_key(json_t *doc, const char *key_id)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "key_ids"), i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), key_id) == 0)
            return true;
    }
    return false;
}

static int refuse_key(repo_t *r, json_t *doc, wv_err_t *err)
{
    json_t *ids = json_object_get(doc, "key_ids");
    char *known = json_dumps(ids, JSON_COMPACT);
    wv_err_set(err, WV_EMISMATCH,
               "the key in the key file (id %s) is not a key of the repository at %s (its key ids: "
               "%s); use the repository's key file",
               seal_keyring_current_id(r->keys), storage_url(r->st), known ? known : "?");
    free(known);
    return WV_EMISMATCH;
}

static json_t *new_repo_json(const repo_t *r)
{
    char created[64];
    time_format_utc(time(NULL), created, sizeof created);
    return json_pack("{s:i, s:s, s:s, s:[s]}", "format", REPO_FORMAT_VERSION, "tool", "walvault",
                     "created", created, "key_ids", seal_keyring_current_id(r->keys));
}

static int write_repo_json(repo_t *r, json_t *doc, bool if_absent, wv_err_t *err)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return wv_err_set(err, WV_EFAIL, "cannot encode repo.json");
    int rc = storage_put(r->st, REPO_JSON_KEY, text, strlen(text), if_absent, err);
    free(text);
    return rc;
}

/* A rotated key is registered by `init` when the key file still holds a key the repository
 * knows, which proves the operator holds the repository's key. */
static int register_rotated_key(repo_t *r, json_t *doc, wv_err_t *err)
{
    size_t i;
    json_t *v;
    bool holds_known = false;
    json_array_foreach(json_object_get(doc, "key_ids"), i, v)
    {
        if (json_is_string(v) && seal_keyring_has_id(r->keys, json_string_value(v)))
            holds_known = true;
    }
    if (!holds_known)
        return refuse_key(r, doc, err);
    json_array_append_new(json_object_get(doc, "key_ids"),
                          json_string(seal_keyring_current_id(r->keys)));
    return write_repo_json(r, doc, false, err);
}

int repo_init(const struct repo_config *cfg, bool *created, wv_err_t *err)
{
    repo_t r = {0};
    *created = false;
    int rc = open_parts(cfg, &r, err);
    json_t *doc = NULL;
    if (rc == 0) {
        doc = new_repo_json(&r);
        rc = write_repo_json(&r, doc, true, err);
        json_decref(doc);
        doc = NULL;
        if (rc == 0)
            *created = true;
    }
    if (rc == WV_EEXISTS) {
        rc = read_repo_json(&r, &doc, err);
        if (rc == 0 && !repo_json_knows_key(doc, seal_keyring_current_id(r.keys)))
            rc = register_rotated_key(&r, doc, err);
        json_decref(doc);
    }
    free_parts(&r);
    return rc;
}

int repo_open(const struct repo_config *cfg, repo_t **out, wv_err_t *err)
{
    repo_t *r = calloc(1, sizeof *r);
    if (!r)
        return wv_err_set(err, WV_EFAIL, "out of memory");
    json_t *doc = NULL;
    int rc = open_parts(cfg, r, err);
    if (rc == 0)
        rc = read_repo_json(r, &doc, err);
    if (rc == 0 && !repo_json_knows_key(doc, seal_keyring_current_id(r->keys)))
        rc = refuse_key(r, doc, err);
    json_decref(doc);
    if (rc) {
        free_parts(r);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void repo_close(repo_t *r)
{
    if (!r)
        return;
    free_parts(r);
    free(r);
}
