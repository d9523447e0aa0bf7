/* Reading a manifest from the repository; kept apart from manifest.c, whose decoding of
 * outside bytes is fuzzed on its own. */
#include <string.h>

#include "backup/manifest.h"

int manifest_load(repo_t *r, const char *backup_id, json_t **out, wv_err_t *err)
{
    char key[REPO_KEY_MAX];
    if (repo_key_backup(r, backup_id, key, sizeof key) != 0 || strchr(backup_id, '/'))
        return wv_err_set(err, WV_EUSAGE, "invalid backup id \"%s\"", backup_id);
    int rc = repo_get_json(r, key, out, err);
    if (rc == WV_ENOTFOUND)
        return wv_err_set(err, WV_ENOTFOUND, "no backup \"%s\" for node \"%s\"", backup_id,
                          repo_node(r));
    return rc;
}
