/* The streaming tar reader against archives built header by header, for what GNU tar will
 * not write: signed and damaged header checksums, paths escaping the target (.., absolute,
 * through pax) and names normalized (./, trailing /), base-256 and negative sizes, pax
 * overrides and global headers, crafted GNU 'L'/'K' names, extended headers over the size
 * limit or malformed, zero blocks (a missing end marker, data after it, one in the middle),
 * an extended header with no entry after it, other entry types (devices, vendor types, old
 * GNU sparse) and a callback error stopping the reader. Every archive is parsed whole and
 * byte by byte with the same outcome. Archives written by tar are in test_tar_generated.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/tar.h"
#include "tar_fixtures.h"

#define BLOCK 512

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

int main(void)
{
    const struct CMUnitTest tests[] = {
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
