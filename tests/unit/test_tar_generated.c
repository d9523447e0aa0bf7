/* The streaming tar reader against archives GNU tar writes: at run time, from a tree holding
 * every kind of entry (empty, odd-sized and zero-filled files, directories, hard and symbolic
 * links, a FIFO, names needing the ustar prefix, GNU 'L'/'K' headers or pax records) in the
 * ustar, gnu and pax formats, fed whole and in pieces down to one byte with identical
 * reports; `tar -C dir .` names and record padding; such an archive cut at every offset; a
 * damaged header checksum; and the committed fixtures of tests/data/tar. Archives built
 * header by header, for what tar will not write, are in test_tar_headers.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "backup/tar.h"
#include "common/fsutil.h"
#include "tar_fixtures.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

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
    buf_t b;
    wv_err_t err = {0};
    if (fs_read_file(path, &b, SIZE_MAX, &err) != 0)
        fail_msg("%s", err.msg);
    *len = b.len;
    return b.data ? b.data : calloc(1, 1); /* the caller frees it; an empty file too */
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
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, setup_tree, teardown_tree);
}
