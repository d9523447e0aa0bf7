/* The streaming tar reader against archives GNU tar writes at run time (ustar, gnu, pax,
 * fed whole and in pieces down to one byte), committed fixtures, and hand-made headers for
 * what tar will not write: damaged checksums, escaping paths, base-256 sizes, truncation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "backup/tar.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

#define BLOCK 512

/* ---- recording what the reader reports ---------------------------------------------- */

struct got_entry {
    char *path;
    char *link;
    enum tar_type type;
    uint64_t size;
    uint64_t got; /* bytes passed to data() */
    mode_t mode;
    int64_t mtime;
    uint64_t hash; /* FNV-1a over the data */
    bool ended;
};

struct got {
    struct got_entry *e;
    size_t n, cap;
    bool open;
    /* The fed buffer: every data pointer must point into it (no intermediate copy). */
    const uint8_t *lo, *hi;
    bool copied;
    long fail_begin_at; /* begin() fails on this entry index; -1 never */
};

#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void got_init(struct got *g)
{
    memset(g, 0, sizeof *g);
    g->fail_begin_at = -1;
}

static void got_free(struct got *g)
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

static const struct tar_callbacks CB = {on_begin, on_data, on_end};

#define PIECE_RANDOM SIZE_MAX

/* Feeds buf in pieces of `piece` bytes (0: all at once; PIECE_RANDOM: 1..3000, seeded) and
 * returns the first error of feed or finish. */
static int parse(const uint8_t *buf, size_t len, size_t piece, struct got *g, wv_err_t *err)
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

static void assert_same(const struct got *a, const struct got *b)
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

static const struct got_entry *find(const struct got *g, const char *path)
{
    const struct got_entry *hit = NULL;
    for (size_t i = 0; i < g->n; i++) {
        if (strcmp(g->e[i].path, path) == 0) {
            assert_null(hit); /* reported once */
            hit = &g->e[i];
        }
    }
    return hit;
}

/* ---- files ------------------------------------------------------------------------- */

static char g_root[64]; /* temporary directory for the whole run */
static char g_src[128]; /* the tree tar archives */

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    assert_non_null(b);
    size_t k;
    while ((k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap);
            assert_non_null(b);
        }
    }
    fclose(f);
    *len = n;
    return b;
}

static void write_all(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static void src_path(char *out, size_t cap, const char *rel)
{
    int n = snprintf(out, cap, "%s/%s", g_src, rel);
    assert_true(n > 0 && (size_t)n < cap);
}

/* Deterministic, incompressible-looking bytes. */
static void fill_random(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        b[i] = (uint8_t)seed;
    }
}

static void make_file(const char *rel, size_t random_len, size_t zero_len)
{
    char p[512];
    src_path(p, sizeof p, rel);
    uint8_t *b = calloc(1, random_len + zero_len + 1);
    assert_non_null(b);
    fill_random(b, random_len, (uint32_t)(random_len * 2654435761u + 1));
    write_all(p, b, random_len + zero_len);
    free(b);
}

static char NAME150[151]; /* 60-char directory / 89-char file: needs the ustar prefix */
static char NAME300[301]; /* needs GNU 'L' or a pax path */
static char LINK_TARGET[200];

/* Files every format can hold, in archive order. "hard" is a second name for "big". */
static const char *const BASIC[] = {
    "empty",    "one", "odd",        "block",    "block_plus", "big",        "zeros_tail",
    "all_zero", "dir", "dir/nested", "emptydir", "hard",       "link_short", "fifo",
};

static int setup_tree(void **state)
{
    (void)state;
    snprintf(g_root, sizeof g_root, "/tmp/wv_test_tar_XXXXXX");
    if (!mkdtemp(g_root))
        return -1;
    snprintf(g_src, sizeof g_src, "%s/src", g_root);
    if (mkdir(g_src, 0755) != 0)
        return -1;
    make_file("empty", 0, 0);
    make_file("one", 1, 0);
    make_file("odd", 511, 0);
    make_file("block", 512, 0);
    make_file("block_plus", 513, 0);
    make_file("big", 100000, 0);
    /* Data followed by whole zero blocks: must not be taken for the end of the archive. */
    make_file("zeros_tail", 3000, 16384);
    make_file("all_zero", 0, 10240);
    char p[512], q[512];
    src_path(p, sizeof p, "dir");
    mkdir(p, 0750);
    make_file("dir/nested", 777, 0);
    src_path(p, sizeof p, "emptydir");
    mkdir(p, 0700);
    src_path(p, sizeof p, "big");
    src_path(q, sizeof q, "hard");
    if (link(p, q) != 0)
        return -1;
    src_path(p, sizeof p, "link_short");
    if (symlink("one", p) != 0)
        return -1;
    src_path(p, sizeof p, "fifo");
    if (mkfifo(p, 0600) != 0)
        return -1;

    memset(NAME150, 'a', 60);
    NAME150[60] = '/';
    memset(NAME150 + 61, 'b', 89);
    NAME150[150] = '\0';
    src_path(p, sizeof p, NAME150);
    *strrchr(p, '/') = '\0';
    mkdir(p, 0755);
    make_file(NAME150, 1234, 0);

    memset(NAME300, 'c', 100);
    NAME300[100] = '/';
    memset(NAME300 + 101, 'd', 100);
    NAME300[201] = '/';
    memset(NAME300 + 202, 'e', 98);
    NAME300[300] = '\0';
    run("mkdir -p %s/%.201s", g_src, NAME300);
    make_file(NAME300, 5000, 0);

    strcpy(LINK_TARGET, "/nonexistent/");
    memset(LINK_TARGET + 13, 't', 150);
    LINK_TARGET[163] = '\0';
    src_path(p, sizeof p, "link_long");
    if (symlink(LINK_TARGET, p) != 0)
        return -1;
    return 0;
}

static int teardown_tree(void **state)
{
    (void)state;
    if (g_root[0])
        run("rm -rf %s", g_root);
    return 0;
}

/* Archives the listed names (no recursion, in order) and returns the archive bytes. */
static uint8_t *make_tar(const char *format, const char *extra_opts, bool with_long, size_t *len)
{
    char list[4096] = "";
    for (size_t i = 0; i < sizeof BASIC / sizeof BASIC[0]; i++) {
        strcat(list, " ");
        strcat(list, BASIC[i]);
    }
    strcat(list, " ");
    strcat(list, NAME150);
    if (with_long) {
        strcat(list, " link_long ");
        strcat(list, NAME300);
    }
    char out[256];
    snprintf(out, sizeof out, "%s/%s.tar", g_root, format);
    run("tar --no-recursion --format=%s %s -C %s -cf %s %s", format, extra_opts, g_src, out, list);
    return read_all(out, len);
}

/* Every reported entry matches the tree on disk, and every archived name was reported;
 * `extra` counts entries beyond BASIC and the long names (directories tar added). */
static void verify_against_tree(const struct got *g, bool with_long, size_t extra)
{
    for (size_t i = 0; i < g->n; i++) {
        const struct got_entry *x = &g->e[i];
        char p[512];
        struct stat st;
        src_path(p, sizeof p, x->path);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(x->ended);
        assert_int_equal(x->got, x->size);
        switch (x->type) {
        case TAR_FILE: {
            assert_true(S_ISREG(st.st_mode));
            assert_int_equal(x->size, (uint64_t)st.st_size);
            size_t len;
            uint8_t *b = read_all(p, &len);
            assert_int_equal(x->hash, fnv1a(FNV_INIT, b, len));
            free(b);
            assert_int_equal(x->mode, st.st_mode & 07777);
            assert_int_equal(x->mtime, (int64_t)st.st_mtime);
            assert_string_equal(x->link, "");
            break;
        }
        case TAR_DIR:
            assert_true(S_ISDIR(st.st_mode));
            assert_int_equal(x->mode, st.st_mode & 07777);
            assert_int_equal(x->size, 0);
            break;
        case TAR_SYMLINK: {
            char t[512];
            ssize_t n = readlink(p, t, sizeof t - 1);
            assert_true(n > 0);
            t[n] = '\0';
            assert_string_equal(x->link, t);
            break;
        }
        case TAR_HARDLINK: {
            char q[512];
            struct stat st2;
            src_path(q, sizeof q, x->link);
            assert_int_equal(stat(q, &st2), 0);
            assert_int_equal(st.st_ino, st2.st_ino);
            assert_int_equal(x->size, 0);
            break;
        }
        case TAR_OTHER:
            assert_true(S_ISFIFO(st.st_mode));
            break;
        }
    }
    for (size_t i = 0; i < sizeof BASIC / sizeof BASIC[0]; i++)
        assert_non_null(find(g, BASIC[i]));
    assert_non_null(find(g, NAME150));
    size_t want = sizeof BASIC / sizeof BASIC[0] + 1 + extra;
    if (with_long) {
        assert_non_null(find(g, NAME300));
        const struct got_entry *l = find(g, "link_long");
        assert_non_null(l);
        assert_string_equal(l->link, LINK_TARGET);
        want += 2;
    }
    assert_int_equal(g->n, want);
    /* whichever of the two names tar met first holds the data */
    const struct got_entry *hard = find(g, "hard"), *big = find(g, "big");
    if (hard->type != TAR_HARDLINK) {
        const struct got_entry *t = hard;
        hard = big;
        big = t;
    }
    assert_int_equal(hard->type, TAR_HARDLINK);
    assert_int_equal(big->type, TAR_FILE);
    assert_string_equal(hard->link, big->path);
    assert_int_equal(find(g, "fifo")->type, TAR_OTHER);
    assert_int_equal(find(g, "dir")->type, TAR_DIR);
    assert_int_equal(find(g, "emptydir")->type, TAR_DIR);
}

/* Parses whole, then in every piece size, and requires identical reports. */
static void check_format(const char *format, bool with_long, const char *needle)
{
    size_t len;
    uint8_t *buf = make_tar(format, "", with_long, &len);
    assert_int_equal(len % 10240, 0); /* default blocking: zero records at the end */
    if (needle)
        assert_non_null(memmem(buf, len, needle, strlen(needle)));
    wv_err_t err;
    struct got whole;
    got_init(&whole);
    assert_int_equal(parse(buf, len, 0, &whole, &err), 0);
    verify_against_tree(&whole, with_long, 0);
    assert_false(whole.copied);

    const size_t pieces[] = {1, 7, 511, 512, 513, 4096, PIECE_RANDOM};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        struct got g;
        got_init(&g);
        assert_int_equal(parse(buf, len, pieces[i], &g, &err), 0);
        assert_same(&whole, &g);
        assert_false(g.copied);
        got_free(&g);
    }
    got_free(&whole);
    free(buf);
}

static void test_ustar(void **state)
{
    (void)state;
    check_format("ustar", false, NULL);
}

static void test_gnu_long_name_and_link(void **state)
{
    (void)state;
    check_format("gnu", true, "././@LongLink");
}

static void test_pax_path_and_linkpath(void **state)
{
    (void)state;
    check_format("pax", true, " linkpath=");
}

/* `tar -C dir .` names entries "./x" and the root "./"; record padding follows the end. */
static void test_dot_prefix_and_record_padding(void **state)
{
    (void)state;
    char out[256];
    snprintf(out, sizeof out, "%s/dotted.tar", g_root);
    run("tar -C %s -b 20 -cf %s .", g_src, out);
    size_t len;
    uint8_t *buf = read_all(out, &len);
    assert_int_equal(len % 10240, 0);
    wv_err_t err;
    struct got g;
    got_init(&g);
    assert_int_equal(parse(buf, len, 7, &g, &err), 0);
    /* ".", and the parent directories of the long names */
    verify_against_tree(&g, true, 4);
    const struct got_entry *root = find(&g, ".");
    assert_non_null(root);
    assert_int_equal(root->type, TAR_DIR);
    for (size_t i = 0; i < g.n; i++)
        assert_true(strncmp(g.e[i].path, "./", 2) != 0);
    got_free(&g);
    free(buf);
}

/* Cutting the stream anywhere but after an entry's padding (or a whole zero block) fails. */
static void test_truncation_at_every_offset(void **state)
{
    (void)state;
    char out[256];
    snprintf(out, sizeof out, "%s/trunc.tar", g_root);
    run("tar --no-recursion --format=ustar -b 1 -C %s -cf %s one block empty dir", g_src, out);
    size_t len;
    uint8_t *buf = read_all(out, &len);
    /* one: 512+512, block: 512+512, empty: 512, dir: 512, then two zero blocks */
    assert_int_equal(len, 4096);
    const size_t ok[] = {0, 1024, 2048, 2560, 3072, 3584, 4096};
    for (size_t cut = 0; cut <= len; cut++) {
        bool want_ok = false;
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
            want_ok |= ok[i] == cut;
        wv_err_t err;
        struct got g;
        got_init(&g);
        int rc = parse(buf, cut, cut % 3 ? 0 : 5, &g, &err);
        if (want_ok) {
            assert_int_equal(rc, 0);
        } else {
            if (rc != WV_ECORRUPT)
                fail_msg("cut at %zu: rc %d, want WV_ECORRUPT", cut, rc);
            assert_non_null(strstr(err.msg, "truncated at offset"));
            assert_null(strchr(err.msg, '\n'));
        }
        got_free(&g);
    }
    wv_err_t err;
    struct got g;
    got_init(&g);
    assert_int_equal(parse(buf, 700, 0, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar stream truncated at offset 700: inside the padding after "
                                 "the header at offset 0");
    got_free(&g);
    got_init(&g);
    assert_int_equal(parse(buf, 1600, 0, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar stream truncated at offset 1600: 448 bytes of 'block' "
                                 "missing");
    assert_false(g.e[1].ended);
    got_free(&g);
    got_init(&g);
    assert_int_equal(parse(buf, 2100, 0, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar stream truncated at offset 2100: inside the header at "
                                 "offset 2048");
    got_free(&g);
    free(buf);
}

static void test_bad_checksum(void **state)
{
    (void)state;
    char out[256];
    snprintf(out, sizeof out, "%s/sum.tar", g_root);
    run("tar --no-recursion --format=gnu -C %s -cf %s one block", g_src, out);
    size_t len;
    uint8_t *buf = read_all(out, &len);
    buf[1024 + 3] ^= 0x01; /* a letter of the second name */
    wv_err_t err;
    struct got g;
    got_init(&g);
    assert_int_equal(parse(buf, len, 1, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar header at offset 1024: bad checksum");
    assert_int_equal(g.n, 1);
    assert_true(g.e[0].ended);
    got_free(&g);
    free(buf);
}

/* ---- hand-made archives -------------------------------------------------------------- */

struct arc {
    uint8_t *b;
    size_t len, cap;
};

static uint8_t *arc_grow(struct arc *a, size_t n)
{
    if (a->len + n > a->cap) {
        a->cap = (a->len + n) * 2;
        a->b = realloc(a->b, a->cap);
        assert_non_null(a->b);
    }
    uint8_t *p = a->b + a->len;
    memset(p, 0, n);
    a->len += n;
    return p;
}

static void put_octal(uint8_t *f, size_t n, uint64_t v)
{
    f[n - 1] = '\0';
    for (size_t i = n - 1; i-- > 0;) {
        f[i] = (uint8_t)('0' + (v & 7));
        v >>= 3;
    }
}

static void set_checksum(uint8_t *h, bool signed_sum)
{
    memset(h + 148, ' ', 8);
    int64_t sum = 0;
    for (size_t i = 0; i < BLOCK; i++)
        sum += signed_sum ? (int8_t)h[i] : (int64_t)h[i];
    put_octal(h + 148, 7, (uint64_t)sum);
    h[155] = ' ';
}

static void put_str(uint8_t *f, size_t n, const char *s)
{
    size_t k = strlen(s);
    memcpy(f, s, k < n ? k : n);
}

/* Appends a POSIX ustar header and returns it (valid until the next append). */
static uint8_t *add_header(struct arc *a, const char *name, char type, uint64_t size,
                           const char *link)
{
    uint8_t *h = arc_grow(a, BLOCK);
    put_str(h, 100, name);
    put_octal(h + 100, 8, 0644);
    put_octal(h + 108, 8, 0);
    put_octal(h + 116, 8, 0);
    put_octal(h + 124, 12, size);
    put_octal(h + 136, 12, 1700000000);
    h[156] = (uint8_t)type;
    if (link)
        put_str(h + 157, 100, link);
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    set_checksum(h, false);
    return h;
}

static void add_data(struct arc *a, const void *data, size_t n)
{
    uint8_t *p = arc_grow(a, n + (BLOCK - n % BLOCK) % BLOCK);
    memcpy(p, data, n);
}

static void add_file(struct arc *a, const char *name, const char *content)
{
    add_header(a, name, '0', strlen(content), NULL);
    add_data(a, content, strlen(content));
}

static void add_zero_blocks(struct arc *a, size_t n)
{
    arc_grow(a, n * BLOCK);
}

/* One pax record, its length field counting itself. */
static void pax_rec(char *out, size_t cap, const char *key, const char *val)
{
    size_t body = strlen(key) + strlen(val) + 3; /* ' ', '=', '\n' */
    size_t len = body + 1;
    while (len != body + (size_t)snprintf(NULL, 0, "%zu", len))
        len++;
    size_t used = strlen(out);
    snprintf(out + used, cap - used, "%zu %s=%s\n", len, key, val);
}

static void add_ext(struct arc *a, char type, const char *payload, size_t n)
{
    add_header(a, "./PaxHeaders/x", type, n, NULL);
    add_data(a, payload, n);
}

static int parse_arc(const struct arc *a, struct got *g, wv_err_t *err)
{
    got_init(g);
    int rc = parse(a->b, a->len, 0, g, err);
    struct got g1;
    got_init(&g1);
    wv_err_t err1;
    int rc1 = parse(a->b, a->len, 1, &g1, &err1);
    assert_int_equal(rc, rc1);
    if (rc)
        assert_string_equal(err->msg, err1.msg);
    else
        assert_same(g, &g1);
    got_free(&g1);
    return rc;
}

static void test_signed_checksum_accepted(void **state)
{
    (void)state;
    struct arc a = {0};
    uint8_t *h = add_header(&a, "caf\xc3\xa9", '0', 0, NULL);
    set_checksum(h, true);
    add_zero_blocks(&a, 2);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.e[0].path, "caf\xc3\xa9");
    got_free(&g);

    h = a.b;
    put_octal(h + 148, 7, 12345);
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar header at offset 0: bad checksum");
    got_free(&g);
    free(a.b);
}

static void expect_rejected(const char *name, char type, const char *link, const char *needle)
{
    struct arc a = {0};
    add_file(&a, "fine", "ok");
    add_header(&a, name, type, 0, link);
    add_zero_blocks(&a, 2);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    if (!strstr(err.msg, needle))
        fail_msg("'%s' not in '%s'", needle, err.msg);
    assert_int_equal(g.n, 1);
    got_free(&g);
    free(a.b);
}

static void test_escaping_paths_rejected(void **state)
{
    (void)state;
    expect_rejected("../evil", '0', NULL, "'../evil'");
    expect_rejected("a/../../b", '0', NULL, "'a/../../b' at offset 1024 contains a '..'");
    expect_rejected("..", '5', NULL, "'..'");
    expect_rejected("a/..", '0', NULL, "'a/..'");
    expect_rejected("./../x", '0', NULL, "'../x'");
    expect_rejected("/etc/passwd", '0', NULL, "'/etc/passwd' at offset 1024 is absolute");
    expect_rejected(".//etc/passwd", '0', NULL, "is absolute");
    expect_rejected("h", '1', "../outside", "hardlink target '../outside'");
    expect_rejected("h", '1', "/etc/shadow", "hardlink target '/etc/shadow'");
    expect_rejected("", '0', NULL, "empty");
    expect_rejected(".", '0', NULL, "empty or '.' path");

    /* pax paths are checked the same way */
    struct arc a = {0};
    char pax[256] = "";
    pax_rec(pax, sizeof pax, "path", "x/../../y");
    add_ext(&a, 'x', pax, strlen(pax));
    add_header(&a, "harmless", '0', 0, NULL);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "'x/../../y'"));
    got_free(&g);
    free(a.b);
}

static void test_names_normalized(void **state)
{
    (void)state;
    struct arc a = {0};
    add_header(&a, "./", '5', 0, NULL);
    add_header(&a, "./a/b/", '5', 0, NULL);
    add_header(&a, "old_style_dir/", '0', 0, NULL);
    add_file(&a, "././a/b/f", "x");
    add_header(&a, "./a/s", '2', 0, "/absolute/target/is/fine");
    add_header(&a, "a/..b/c..", '0', 0, NULL); /* dots inside names are not '..' components */
    add_header(&a, "a/h", '1', 0, "./a/b/f");
    add_zero_blocks(&a, 2);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 7);
    assert_string_equal(g.e[0].path, ".");
    assert_int_equal(g.e[0].type, TAR_DIR);
    assert_string_equal(g.e[1].path, "a/b");
    assert_string_equal(g.e[2].path, "old_style_dir");
    assert_int_equal(g.e[2].type, TAR_DIR);
    assert_string_equal(g.e[3].path, "a/b/f");
    assert_string_equal(g.e[4].path, "a/s");
    assert_int_equal(g.e[4].type, TAR_SYMLINK);
    assert_string_equal(g.e[4].link, "/absolute/target/is/fine");
    assert_string_equal(g.e[5].path, "a/..b/c..");
    assert_string_equal(g.e[6].link, "a/b/f");
    assert_int_equal(g.e[6].type, TAR_HARDLINK);
    assert_int_equal(g.e[3].mode, 0644);
    assert_int_equal(g.e[3].mtime, 1700000000);
    got_free(&g);
    free(a.b);
}

static void put_base256(uint8_t *f, size_t n, uint64_t v)
{
    memset(f, 0, n);
    f[0] = 0x80;
    for (size_t i = n; i-- > 1 && v;) {
        f[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void test_base256_size(void **state)
{
    (void)state;
    /* A 9 GiB file cannot have an octal size; only its header and some data are here. */
    const uint64_t huge = 9ULL << 30;
    struct arc a = {0};
    uint8_t *h = add_header(&a, "huge", '0', 0, NULL);
    put_base256(h + 124, 12, huge);
    set_checksum(h, false);
    uint8_t chunk[3000];
    fill_random(chunk, sizeof chunk, 7);
    memcpy(arc_grow(&a, sizeof chunk), chunk, sizeof chunk);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.e[0].size, huge);
    assert_int_equal(g.e[0].got, sizeof chunk);
    assert_string_equal(err.msg,
                        "tar stream truncated at offset 3512: 9663673416 bytes of 'huge' missing");
    got_free(&g);
    free(a.b);

    /* a small size in base-256 reads the same as in octal */
    memset(&a, 0, sizeof a);
    h = add_header(&a, "small", '0', 0, NULL);
    put_base256(h + 124, 12, 600);
    set_checksum(h, false);
    add_data(&a, chunk, 600);
    add_file(&a, "next", "after");
    add_zero_blocks(&a, 2);
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.e[0].size, 600);
    assert_int_equal(g.e[0].hash, fnv1a(FNV_INIT, chunk, 600));
    assert_string_equal(g.e[1].path, "next");
    got_free(&g);
    free(a.b);

    /* negative sizes are damage */
    memset(&a, 0, sizeof a);
    h = add_header(&a, "neg", '0', 0, NULL);
    memset(h + 124, 0xff, 12);
    set_checksum(h, false);
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar header at offset 0: bad size field");
    got_free(&g);
    free(a.b);
}

static void test_pax_overrides(void **state)
{
    (void)state;
    char long_path[400];
    memset(long_path, 'p', 350);
    strcpy(long_path + 350, "/file");
    char pax[1024] = "";
    pax_rec(pax, sizeof pax, "path", long_path);
    pax_rec(pax, sizeof pax, "size", "700");
    pax_rec(pax, sizeof pax, "mtime", "1234567890.987654321");
    pax_rec(pax, sizeof pax, "uid", "1000");
    pax_rec(pax, sizeof pax, "SCHILY.xattr.user.x", "a=b\nc"); /* '=' and '\n' in a value */
    char global[256] = "";
    pax_rec(global, sizeof global, "path", "global/ignored");
    pax_rec(global, sizeof global, "mtime", "1");

    struct arc a = {0};
    add_ext(&a, 'g', global, strlen(global));
    add_ext(&a, 'x', pax, strlen(pax));
    add_header(&a, "short", '0', 0, NULL); /* header size 0: pax says 700 */
    uint8_t data[700];
    fill_random(data, sizeof data, 3);
    add_data(&a, data, sizeof data);
    char lp[128] = "";
    pax_rec(lp, sizeof lp, "linkpath", "pax/target");
    pax_rec(lp, sizeof lp, "mtime", "-10.5");
    add_ext(&a, 'x', lp, strlen(lp));
    add_header(&a, "sl", '2', 0, "header/target");
    add_file(&a, "plain", "no overrides left over");
    add_zero_blocks(&a, 2);

    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.e[0].path, long_path);
    assert_int_equal(g.e[0].size, 700);
    assert_int_equal(g.e[0].hash, fnv1a(FNV_INIT, data, sizeof data));
    assert_int_equal(g.e[0].mtime, 1234567890);
    assert_string_equal(g.e[1].path, "sl");
    assert_string_equal(g.e[1].link, "pax/target");
    assert_int_equal(g.e[1].mtime, -11);
    assert_string_equal(g.e[2].path, "plain");
    assert_int_equal(g.e[2].mtime, 1700000000);
    assert_int_equal(g.e[2].size, 22);
    got_free(&g);
    free(a.b);
}

static void test_gnu_long_name_crafted(void **state)
{
    (void)state;
    char name[700];
    memset(name, 'n', 600);
    strcpy(name + 600, "/dir/");
    struct arc a = {0};
    add_header(&a, "././@LongLink", 'L', strlen(name) + 1, NULL);
    add_data(&a, name, strlen(name) + 1);
    add_header(&a, "truncated-name", '5', 0, NULL);
    add_header(&a, "././@LongLink", 'K', 4, NULL);
    add_data(&a, "abc", 4);
    add_header(&a, "././@LongLink", 'L', 3, NULL);
    add_data(&a, "lnk", 3); /* no NUL: the payload length ends the name */
    add_header(&a, "x", '2', 0, "ignored");
    add_zero_blocks(&a, 2);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 2);
    name[604] = '\0';
    assert_string_equal(g.e[0].path, name);
    assert_int_equal(g.e[0].type, TAR_DIR);
    assert_string_equal(g.e[1].path, "lnk");
    assert_string_equal(g.e[1].link, "abc");
    got_free(&g);
    free(a.b);
}

static void expect_ext_error(char type, const char *payload, size_t n, const char *msg)
{
    struct arc a = {0};
    add_ext(&a, type, payload, n);
    add_file(&a, "f", "data");
    add_zero_blocks(&a, 2);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, msg);
    assert_int_equal(g.n, 0);
    got_free(&g);
    free(a.b);
}

static void test_extended_header_limits(void **state)
{
    (void)state;
    size_t big = 64 * 1024 + 1;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, 'z', big);
    expect_ext_error('x', p, big,
                     "tar header at offset 0: extended header of 65537 bytes exceeds the "
                     "65536-byte limit");
    expect_ext_error('L', p, big,
                     "tar header at offset 0: extended header of 65537 bytes exceeds the "
                     "65536-byte limit");
    free(p);
    const char *bad = "tar header at offset 0: malformed pax extended header record";
    expect_ext_error('x', "5 a\n", 4, bad);           /* no '=' */
    expect_ext_error('x', "8 path=x\n", 9, bad);      /* length disagrees */
    expect_ext_error('x', "x path=a\n", 9, bad);      /* no length */
    expect_ext_error('x', "7 =abc\n", 7, bad);        /* empty key */
    expect_ext_error('x', "12 path=abc\n1", 13, bad); /* trailing junk */
    expect_ext_error('x', "11 size=-1\n", 11, "tar header at offset 0: bad pax size value");
    expect_ext_error('x', "12 mtime=1x\n", 12, "tar header at offset 0: bad pax mtime value");
    expect_ext_error('x', "10 path=\0\n", 10,
                     "tar header at offset 0: pax path contains a NUL byte");
}

static void test_zero_blocks(void **state)
{
    (void)state;
    struct got g;
    wv_err_t err;

    /* PostgreSQL may end a tar right after the last entry */
    struct arc a = {0};
    add_file(&a, "a", "1");
    add_file(&a, "b", "22");
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 2);
    got_free(&g);

    /* anything after the end marker is ignored */
    add_zero_blocks(&a, 2);
    add_file(&a, "after_end", "ignored");
    memset(arc_grow(&a, 100), 0x5a, 100);
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 2);
    got_free(&g);
    free(a.b);

    /* a single zero block in the middle: the rest would be silently lost */
    memset(&a, 0, sizeof a);
    add_file(&a, "a", "1");
    add_zero_blocks(&a, 1);
    add_file(&a, "b", "22");
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg,
                        "tar header at offset 1536: entry after a zero block (damaged archive?)");
    got_free(&g);
    free(a.b);

    /* an empty stream and a lone zero block at the end are accepted */
    memset(&a, 0, sizeof a);
    add_zero_blocks(&a, 1);
    got_init(&g);
    assert_int_equal(parse(a.b, 0, 0, &g, &err), 0);
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 0);
    got_free(&g);
    free(a.b);
}

static void test_extended_header_without_entry(void **state)
{
    (void)state;
    char pax[64] = "";
    pax_rec(pax, sizeof pax, "path", "orphan");
    struct arc a = {0};
    add_file(&a, "a", "1");
    add_ext(&a, 'x', pax, strlen(pax));
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg, "tar stream ended at offset 2048 after an extended header, "
                                 "before its entry");
    got_free(&g);
    add_zero_blocks(&a, 2);
    assert_int_equal(parse_arc(&a, &g, &err), WV_ECORRUPT);
    assert_string_equal(err.msg,
                        "tar header at offset 2560: end of archive right after an extended header");
    got_free(&g);
    free(a.b);
}

static void test_other_types(void **state)
{
    (void)state;
    uint8_t blob[600];
    fill_random(blob, sizeof blob, 11);
    struct arc a = {0};
    add_header(&a, "chardev", '3', 0, NULL);
    add_header(&a, "vendor", 'Z', sizeof blob, NULL);
    add_data(&a, blob, sizeof blob);
    add_header(&a, "contiguous", '7', 3, NULL);
    add_data(&a, "abc", 3);
    /* old GNU sparse: one extension block of sparse map before the stored data */
    uint8_t *h = add_header(&a, "sparse", 'S', BLOCK, NULL);
    h[482] = 1;
    set_checksum(h, false);
    uint8_t *ext = arc_grow(&a, BLOCK);
    ext[504] = 0;
    memcpy(ext, "map", 3);
    add_data(&a, blob, BLOCK);
    add_file(&a, "last", "z");
    add_zero_blocks(&a, 2);
    struct got g;
    wv_err_t err;
    assert_int_equal(parse_arc(&a, &g, &err), 0);
    assert_int_equal(g.n, 5);
    assert_int_equal(g.e[0].type, TAR_OTHER);
    assert_int_equal(g.e[1].type, TAR_OTHER);
    assert_int_equal(g.e[1].got, sizeof blob);
    assert_int_equal(g.e[1].hash, fnv1a(FNV_INIT, blob, sizeof blob));
    assert_int_equal(g.e[2].type, TAR_FILE);
    assert_int_equal(g.e[3].type, TAR_OTHER);
    assert_int_equal(g.e[3].hash, fnv1a(FNV_INIT, blob, BLOCK));
    assert_string_equal(g.e[4].path, "last");
    got_free(&g);
    free(a.b);
}

static void test_callback_error_stops_reader(void **state)
{
    (void)state;
    struct arc a = {0};
    add_file(&a, "a", "1");
    add_file(&a, "b", "2");
    add_zero_blocks(&a, 2);
    tar_reader_t *r;
    wv_err_t err;
    struct got g;
    got_init(&g);
    g.fail_begin_at = 1;
    g.lo = a.b;
    g.hi = a.b + a.len;
    assert_int_equal(tar_reader_new(&CB, &g, &r, &err), 0);
    assert_int_equal(tar_reader_feed(r, a.b, a.len, &err), WV_EFAIL);
    assert_string_equal(err.msg, "begin refused 'b'");
    assert_int_equal(tar_reader_feed(r, a.b, 1, &err), WV_EFAIL);
    assert_int_equal(tar_reader_finish(r, &err), WV_EFAIL);
    tar_reader_free(r);
    got_free(&g);
    free(a.b);
}

/* Fixtures written once by GNU tar (see tests/data/tar/README.md); they also seed the fuzzer. */
static void check_fixture(const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tar/%s", TEST_DATA_DIR, file);
    size_t len;
    uint8_t *buf = read_all(path, &len);
    char name300[301];
    memset(name300, 'c', 100);
    name300[100] = '/';
    memset(name300 + 101, 'd', 100);
    name300[201] = '/';
    memset(name300 + 202, 'e', 98);
    name300[300] = '\0';
    char target[200] = "target/";
    memset(target + 7, 'y', 150);
    target[157] = '\0';

    const size_t pieces[] = {0, 1, 7, PIECE_RANDOM};
    struct got first;
    got_init(&first);
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        struct got g;
        got_init(&g);
        wv_err_t err;
        assert_int_equal(parse(buf, len, pieces[i], &g, &err), 0);
        if (i == 0) {
            first = g;
            continue;
        }
        assert_same(&first, &g);
        got_free(&g);
    }
    struct got *g = &first;
    assert_int_equal(g->n, 4);
    assert_string_equal(g->e[0].path, "hello.txt");
    assert_int_equal(g->e[0].type, TAR_FILE);
    assert_int_equal(g->e[0].size, 11);
    assert_int_equal(g->e[0].hash, fnv1a(FNV_INIT, "hello, tar\n", 11));
    assert_int_equal(g->e[0].mode, 0644);
    assert_int_equal(g->e[0].mtime, 1700000000);
    assert_string_equal(g->e[1].path, "ln_long");
    assert_int_equal(g->e[1].type, TAR_SYMLINK);
    assert_string_equal(g->e[1].link, target);
    assert_string_equal(g->e[2].path, name300);
    assert_int_equal(g->e[2].size, 10);
    assert_int_equal(g->e[2].hash, fnv1a(FNV_INIT, "long name\n", 10));
    assert_string_equal(g->e[3].path, "sub");
    assert_int_equal(g->e[3].type, TAR_DIR);
    assert_int_equal(g->e[3].mode, 0755);
    got_free(g);
    free(buf);
}

static void test_fixtures(void **state)
{
    (void)state;
    check_fixture("gnu_long.tar");
    check_fixture("pax_long.tar");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ustar),
        cmocka_unit_test(test_gnu_long_name_and_link),
        cmocka_unit_test(test_pax_path_and_linkpath),
        cmocka_unit_test(test_dot_prefix_and_record_padding),
        cmocka_unit_test(test_truncation_at_every_offset),
        cmocka_unit_test(test_bad_checksum),
        cmocka_unit_test(test_signed_checksum_accepted),
        cmocka_unit_test(test_escaping_paths_rejected),
        cmocka_unit_test(test_names_normalized),
        cmocka_unit_test(test_base256_size),
        cmocka_unit_test(test_pax_overrides),
        cmocka_unit_test(test_gnu_long_name_crafted),
        cmocka_unit_test(test_extended_header_limits),
        cmocka_unit_test(test_zero_blocks),
        cmocka_unit_test(test_extended_header_without_entry),
        cmocka_unit_test(test_other_types),
        cmocka_unit_test(test_callback_error_stops_reader),
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, setup_tree, teardown_tree);
}
