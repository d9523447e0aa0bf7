#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "repo/internal.h"

static int format_key(char *out, size_t len, const char *fmt, const char *node, const char *a)
{
    int n = snprintf(out, len, fmt, node, a);
    return n < 0 || (size_t)n >= len ? WV_EFAIL : 0;
}

int repo_check_node_name(const char *node, wv_err_t *err)
{
    size_t n = strlen(node);
    bool ok = n > 0 && n < 64 && node[0] != '.';
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)node[i]) || strchr("-_.", node[i]) != NULL;
    if (!ok)
        return wv_err_set(err, WV_EUSAGE,
                          "invalid node name \"%s\": use 1-63 letters, digits, '-', '_' or '.'",
                          node);
    return 0;
}

int repo_key_node_record(const repo_t *r, char *out, size_t len)
{
    return format_key(out, len, "nodes/%s/node.json%s", r->node, "");
}

int repo_key_wal_dir(const repo_t *r, uint32_t tli, char *out, size_t len)
{
    char t[16];
    snprintf(t, sizeof t, "%08X", tli);
    return format_key(out, len, "nodes/%s/wal/%s/", r->node, t);
}

int repo_key_wal(const repo_t *r, uint32_t tli, const char *file, char *out, size_t len)
{
    int n = snprintf(out, len, "nodes/%s/wal/%08X/%s", r->node, tli, file);
    return n < 0 || (size_t)n >= len ? WV_EFAIL : 0;
}

int repo_key_backups_dir(const repo_t *r, char *out, size_t len)
{
    return format_key(out, len, "nodes/%s/backups/%s", r->node, "");
}

int repo_key_backup(const repo_t *r, const char *backup_id, char *out, size_t len)
{
    return format_key(out, len, "nodes/%s/backups/%s", r->node, backup_id);
}

int repo_key_pack(const repo_t *r, const char *pack_id, char *out, size_t len)
{
    return format_key(out, len, "nodes/%s/packs/%s", r->node, pack_id);
}
