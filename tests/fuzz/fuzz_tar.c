/* libFuzzer target for the streaming tar reader. The first two input bytes seed the piece
 * sizes, the rest is the stream. Each input is parsed twice, whole and in pieces of 1 to 1024
 * bytes; the two runs must report the same entries, data and outcome, and every reported
 * entry must keep the reader's promises (balanced callbacks, exact data length, safe paths).
 * Seeds: tests/data/tar/. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backup/tar.h"

struct trace {
    uint64_t digest; /* FNV-1a over every event */
    bool open;
    uint64_t size, got;
};

static void mix(struct trace *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        t->digest ^= b[i];
        t->digest *= 0x100000001b3ULL;
    }
}

static void check(bool ok)
{
    if (!ok)
        abort();
}

static bool path_is_safe(const char *p, bool dir)
{
    size_t n = strlen(p);
    if (n == 0 || p[0] == '/' || strncmp(p, "./", 2) == 0)
        return false;
    if (dir && n > 1 && p[n - 1] == '/')
        return false;
    for (const char *c = p;;) {
        const char *slash = strchr(c, '/');
        size_t k = slash ? (size_t)(slash - c) : strlen(c);
        if (k == 2 && c[0] == '.' && c[1] == '.')
            return false;
        if (!slash)
            return true;
        c = slash + 1;
    }
}

static int on_begin(void *ctx, const struct tar_entry *e, wv_err_t *err)
{
    (void)err;
    struct trace *t = ctx;
    check(!t->open);
    check(e->path && e->linkpath);
    check(path_is_safe(e->path, e->type == TAR_DIR));
    if (e->type == TAR_HARDLINK)
        check(path_is_safe(e->linkpath, false));
    if (e->type != TAR_SYMLINK && e->type != TAR_HARDLINK)
        check(e->linkpath[0] == '\0');
    mix(t, e->path, strlen(e->path) + 1);
    mix(t, e->linkpath, strlen(e->linkpath) + 1);
    mix(t, &e->type, sizeof e->type);
    mix(t, &e->size, sizeof e->size);
    mix(t, &e->mode, sizeof e->mode);
    mix(t, &e->mtime, sizeof e->mtime);
    t->open = true;
    t->size = e->size;
    t->got = 0;
    return 0;
}

static int on_data(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    (void)err;
    struct trace *t = ctx;
    check(t->open && len > 0);
    t->got += len;
    check(t->got <= t->size);
    mix(t, data, len);
    return 0;
}

static int on_end(void *ctx, wv_err_t *err)
{
    (void)err;
    struct trace *t = ctx;
    check(t->open && t->got == t->size);
    t->open = false;
    mix(t, "E", 1);
    return 0;
}

static const struct tar_callbacks CB = {on_begin, on_data, on_end};

/* piece 0: the whole input in one call; else sizes drawn from the seed. */
static int run(const uint8_t *data, size_t len, uint32_t seed, bool pieces, struct trace *t)
{
    tar_reader_t *r;
    wv_err_t err;
    memset(t, 0, sizeof *t);
    t->digest = 0xcbf29ce484222325ULL;
    if (tar_reader_new(&CB, t, &r, &err))
        abort();
    int rc = 0;
    size_t off = 0;
    while (!rc && off < len) {
        size_t n = len - off;
        if (pieces) {
            seed = seed * 1103515245u + 12345u;
            /* mostly tiny pieces, sometimes up to 1 KiB */
            size_t cap = (seed >> 28) < 12 ? 16 : 1024;
            size_t want = 1 + (seed >> 12) % cap;
            n = want < n ? want : n;
        }
        rc = tar_reader_feed(r, data + off, n, &err);
        off += n;
    }
    if (!rc)
        rc = tar_reader_finish(r, &err);
    if (rc) {
        check(rc < 0);
        check(strchr(err.msg, '\n') == NULL && err.msg[0] != '\0');
    } else {
        check(!t->open);
    }
    tar_reader_free(r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = (uint32_t)data[0] << 8 | data[1];
    data += 2;
    size -= 2;
    struct trace whole, split;
    int rc1 = run(data, size, seed, false, &whole);
    int rc2 = run(data, size, seed, true, &split);
    check(rc1 == rc2);
    check(whole.digest == split.digest);
    return 0;
}
