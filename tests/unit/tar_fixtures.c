/* Helpers shared by the test_tar_*.c programs (see tar_fixtures.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backup/tar.h"
#include "tar_fixtures.h"

uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void got_init(struct got *g)
{
    memset(g, 0, sizeof *g);
    g->fail_begin_at = -1;
}

void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->e[i].path);
        free(g->e[i].link);
    }
    free(g->e);
    got_init(g);
}

static int on_begin(void *ctx, const struct tar_entry *e, wv_err_t *err)
{
    struct got *g = ctx;
    assert_false(g->open);
    if ((long)g->n == g->fail_begin_at)
        return wv_err_set(err, WV_EFAIL, "begin refused '%s'", e->path);
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 16;
        g->e = realloc(g->e, g->cap * sizeof *g->e);
        assert_non_null(g->e);
    }
    struct got_entry *x = &g->e[g->n++];
    memset(x, 0, sizeof *x);
    x->path = strdup(e->path);
    x->link = strdup(e->linkpath);
    x->type = e->type;
    x->size = e->size;
    x->mode = e->mode;
    x->mtime = e->mtime;
    x->hash = FNV_INIT;
    g->open = true;
    return 0;
}

static int on_data(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    (void)err;
    struct got *g = ctx;
    assert_true(g->open);
    assert_true(len > 0);
    const uint8_t *p = data;
    if (p < g->lo || p + len > g->hi)
        g->copied = true;
    struct got_entry *x = &g->e[g->n - 1];
    x->got += len;
    assert_true(x->got <= x->size);
    x->hash = fnv1a(x->hash, data, len);
    return 0;
}

static int on_end(void *ctx, wv_err_t *err)
{
    (void)err;
    struct got *g = ctx;
    assert_true(g->open);
    struct got_entry *x = &g->e[g->n - 1];
    assert_int_equal(x->got, x->size);
    x->ended = true;
    g->open = false;
    return 0;
}

const struct tar_callbacks CB = {on_begin, on_data, on_end};

/* Feeds buf in pieces of `piece` bytes (0: all at once; PIECE_RANDOM: 1..3000, seeded) and
 * returns the first error of feed or finish. */
int parse(const uint8_t *buf, size_t len, size_t piece, struct got *g, wv_err_t *err)
{
    tar_reader_t *r = NULL;
    wv_err_clear(err);
    g->lo = buf;
    g->hi = buf + len;
    int rc = tar_reader_new(&CB, g, &r, err);
    assert_int_equal(rc, 0);
    uint32_t seed = 12345;
    size_t off = 0;
    while (!rc && off < len) {
        size_t n = piece == 0 ? len : piece;
        if (piece == PIECE_RANDOM) {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 8) % 3000;
        }
        if (n > len - off)
            n = len - off;
        rc = tar_reader_feed(r, buf + off, n, err);
        off += n;
    }
    if (!rc)
        rc = tar_reader_finish(r, err);
    tar_reader_free(r);
    return rc;
}

void assert_same(const struct got *a, const struct got *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->e[i].path, b->e[i].path);
        assert_string_equal(a->e[i].link, b->e[i].link);
        assert_int_equal(a->e[i].type, b->e[i].type);
        assert_int_equal(a->e[i].size, b->e[i].size);
        assert_int_equal(a->e[i].got, b->e[i].got);
        assert_int_equal(a->e[i].mode, b->e[i].mode);
        assert_int_equal(a->e[i].mtime, b->e[i].mtime);
        assert_int_equal(a->e[i].hash, b->e[i].hash);
        assert_int_equal(a->e[i].ended, b->e[i].ended);
    }
}

/* Deterministic, incompressible-looking bytes. */
void fill_random(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        b[i] = (uint8_t)seed;
    }
}
