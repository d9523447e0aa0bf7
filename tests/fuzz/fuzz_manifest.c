/* libFuzzer target: manifest decoding (the summary a restore chooses by, and every file's
 * block references) on arbitrary JSON. Manifests are authenticated before they are parsed,
 * but a parser must still never crash on what it is given. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "backup/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *m = json_loadb((const char *)data, size, 0, NULL);
    if (!m)
        return 0;
    struct manifest_summary s;
    wv_err_t err;
    manifest_summary_get(m, &s, &err);
    size_t i;
    json_t *file;
    json_array_foreach(json_object_get(m, "files"), i, file)
    {
        struct block_ref *refs;
        size_t n;
        if (manifest_file_blocks(file, &refs, &n, &err) == 0)
            free(refs);
    }
    json_decref(m);
    return 0;
}
