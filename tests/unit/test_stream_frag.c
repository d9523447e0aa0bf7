/* wal-stream fragments: their names, how a listing's fragments chain into the bytes a
 * segment holds (holes, overlaps, leftovers beside a whole segment), and, against a real
 * file:// repository, reading them back, the archived range a backup waits for, the tail of
 * a timeline, and wal-fetch of an unfinished segment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/fsutil.h"
#include "wal/archive.h"
#include "wal/stream_internal.h"

#define MIB (1024u * 1024u)
#define SEG (16 * MIB)

static void test_fragment_names(void **state)
{
    (void)state;
    char name[WAL_NAME_MAX];
    struct wal_file f;
    wv_err_t err;
    wal_fragment_name(1, 3, SEG, 0, 0x2000, name);
    assert_string_equal(name, "000000010000000000000003.00000000-00002000.frag");
    assert_int_equal(wal_file_parse(name, SEG, &f, &err), 0);
    assert_int_equal(f.kind, WAL_KIND_FRAGMENT);
    assert_int_equal(f.tli, 1);
    assert_int_equal(f.segno, 3);
    assert_int_equal(f.frag_start, 0);
    assert_int_equal(f.frag_end, 0x2000);
    wal_fragment_name(2, 256 + 7, SEG, 0x2000, SEG, name);
    assert_string_equal(name, "000000020000000100000007.00002000-01000000.frag");
    assert_int_equal(wal_file_parse(name, SEG, &f, &err), 0);
    assert_int_equal(f.segno, 256 + 7);
    assert_int_equal(f.frag_end, SEG);
}

static void assert_not_fragment(const char *name)
{
    struct wal_file f;
    wv_err_t err;
    if (wal_file_parse(name, SEG, &f, &err) != WV_EUSAGE)
        fail_msg("\"%s\" accepted", name);
}

static void test_fragment_names_rejected(void **state)
{
    (void)state;
    assert_not_fragment("000000010000000000000003.00002000-00002000.frag"); /* empty */
    assert_not_fragment("000000010000000000000003.00003000-00002000.frag"); /* backwards */
    assert_not_fragment("000000010000000000000003.00000000-01000001.frag"); /* past the end */
    assert_not_fragment("000000010000000000000003.00000000-0000200.frag");
    assert_not_fragment("000000010000000000000003.00000000_00002000.frag");
    assert_not_fragment("000000010000000000000003.00000000-00002000.fra");
    assert_not_fragment("000000010000000000000003.0000000a-00002000.frag"); /* lowercase */
    assert_not_fragment("000000010000000000000003.00000000-00002000.frag.x");
    /* wal-push refuses to store a file under a fragment's name */
    char key[REPO_KEY_MAX];
    wv_err_t err;
    assert_int_equal(wal_archive_key(NULL, "000000010000000000000003.00000000-00002000.frag", SEG,
                                     key, sizeof key, &err),
                     WV_EUSAGE);
}

static struct wal_file frag(uint64_t segno, uint32_t start, uint32_t end)
{
    return (struct wal_file){
        .kind = WAL_KIND_FRAGMENT, .tli = 1, .segno = segno, .frag_start = start, .frag_end = end};
}

static void test_chain(void **state)
{
    (void)state;
    struct wal_frag_chain c = {0};
    struct wal_file f[] = {frag(5, 0, 100), frag(5, 100, 250), frag(5, 100, 300), frag(5, 300, 400),
                           frag(5, 500, 600)};
    for (size_t i = 0; i < 5; i++)
        wal_frag_chain_add(&c, &f[i]);
    assert_true(c.any);
    assert_int_equal(c.segno, 5);
    assert_int_equal(c.end, 400); /* the overlap counts once, the hole at 400 ends it */
    assert_int_equal(c.count, 5);

    struct wal_file next = frag(6, 0, 10);
    wal_frag_chain_add(&c, &next);
    assert_int_equal(c.segno, 6);
    assert_int_equal(c.end, 10);

    struct wal_frag_chain late = {0};
    struct wal_file g = frag(7, 10, 20);
    wal_frag_chain_add(&late, &g);
    assert_true(late.any);
    assert_int_equal(late.end, 0); /* not from the segment's start: nothing replayable */
}

/* ---- against a repository ---- */

struct fixture {
    char dir[64];
    repo_t *r;
    uint8_t *seg;
};

static int setup_repo(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    char url[128], key[128];
    wv_err_t err = {0};
    bool created;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/wv-stream-frag-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(url, sizeof url, "file://%s/repo", fx->dir);
    snprintf(key, sizeof key, "%s/key", fx->dir);
    assert_int_equal(seal_init(&err), 0);
    assert_int_equal(seal_keygen(key, &err), 0);
    struct repo_config cfg = {.url = url, .key_file = key, .node = "n1"};
    assert_int_equal(repo_init(&cfg, &created, &err), 0);
    assert_int_equal(repo_open(&cfg, &fx->r, &err), 0);
    struct repo_node_info info = {.system_identifier = 42, .wal_seg_size = SEG};
    assert_int_equal(repo_node_bind(fx->r, &info, &err), 0);
    fx->seg = malloc(SEG);
    for (uint32_t i = 0; i < SEG; i++)
        fx->seg[i] = (uint8_t)(i * 7 + (i >> 12));
    *state = fx;
    return 0;
}

static int teardown_repo(void **state)
{
    struct fixture *fx = *state;
    char cmd[128];
    repo_close(fx->r);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx->seg);
    free(fx);
    return 0;
}

static int store(struct fixture *fx, enum store_kind kind, uint64_t segno, uint32_t start,
                 uint32_t end)
{
    struct store_job j = {.kind = kind,
                          .tli = 1,
                          .segno = segno,
                          .seg_size = SEG,
                          .data = fx->seg,
                          .start = start,
                          .end = end};
    wv_err_t err = {0};
    return stream_store_run(fx->r, &j, &err);
}

struct collected {
    uint8_t *data;
    size_t len;
};

static int collect(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    struct collected *c = ctx;
    (void)err;
    memcpy(c->data + c->len, data, len);
    c->len += len;
    return 0;
}

static void test_read_back(void **state)
{
    struct fixture *fx = *state;
    wv_err_t err = {0};
    assert_int_equal(store(fx, STORE_FRAGMENT, 9, 0, 1000), 0);
    assert_int_equal(store(fx, STORE_FRAGMENT, 9, 1000, 5000), 0);
    /* a store retried with more bytes after an ambiguous failure overlaps the one before */
    assert_int_equal(store(fx, STORE_FRAGMENT, 9, 1000, 7000), 0);
    /* the same fragment again, as after a restart: not an error */
    assert_int_equal(store(fx, STORE_FRAGMENT, 9, 1000, 5000), 0);
    struct collected c = {.data = malloc(SEG)};
    uint32_t end;
    assert_int_equal(wal_fragments_read(fx->r, 1, 9, SEG, collect, &c, &end, &err), 0);
    assert_int_equal(end, 7000);
    assert_int_equal(c.len, 7000);
    assert_memory_equal(c.data, fx->seg, 7000);

    bool yes;
    char missing[WAL_NAME_MAX];
    wal_lsn_t start = wal_segment_start(9, SEG);
    assert_int_equal(wal_archived_range(fx->r, 1, start, start + 7000, SEG, &yes, missing, &err),
                     0);
    assert_true(yes);
    assert_int_equal(wal_archived_range(fx->r, 1, start, start + 7001, SEG, &yes, missing, &err),
                     0);
    assert_false(yes);
    assert_string_equal(missing, "000000010000000000000009");

    /* other content under a fragment's name is refused */
    fx->seg[10] ^= 1;
    assert_int_equal(store(fx, STORE_FRAGMENT, 9, 0, 1000), WV_EMISMATCH);
    fx->seg[10] ^= 1;
    free(c.data);
}

static void test_tail_and_fetch(void **state)
{
    struct fixture *fx = *state;
    wv_err_t err = {0};
    struct wal_tail t;
    assert_int_equal(wal_timeline_tail(fx->r, 2, SEG, &t, &err), 0);
    assert_int_equal(t.end, 0); /* nothing on timeline 2 */

    /* segment 3 stored whole (with a first page that says so), leftover fragments beside it,
     * then fragments of segment 4 */
    memset(fx->seg, 0, WAL_LONG_HEADER_BYTES);
    uint16_t magic = 0xD110, info = 2;
    uint32_t tli = 1, seg_size = SEG, blcksz = 8192;
    uint64_t pageaddr = wal_segment_start(3, SEG);
    memcpy(fx->seg, &magic, 2);
    memcpy(fx->seg + 2, &info, 2);
    memcpy(fx->seg + 4, &tli, 4);
    memcpy(fx->seg + 8, &pageaddr, 8);
    memcpy(fx->seg + 32, &seg_size, 4);
    memcpy(fx->seg + 36, &blcksz, 4);
    assert_int_equal(store(fx, STORE_FRAGMENT, 3, 0, 4096), 0);
    assert_int_equal(store(fx, STORE_SEGMENT, 3, 0, SEG), 0);
    assert_int_equal(store(fx, STORE_FRAGMENT, 4, 0, 300), 0);
    assert_int_equal(store(fx, STORE_FRAGMENT, 4, 300, 800), 0);
    assert_int_equal(wal_timeline_tail(fx->r, 1, SEG, &t, &err), 0);
    assert_true(t.has_whole);
    assert_int_equal(t.last_whole, 3);
    assert_int_equal(t.end, wal_segment_start(9, SEG) + 7000); /* segment 9's fragments */
    assert_int_equal(t.nstale, 1);
    assert_int_equal(t.stale[0], 3);

    /* segment 4 is not the newest (5 follows): wal-fetch does not pad it */
    assert_int_equal(store(fx, STORE_FRAGMENT, 5, 0, 100), 0);
    char dest[128];
    snprintf(dest, sizeof dest, "%s/fetched", fx->dir);
    assert_int_equal(wal_fetch(fx->r, "000000010000000000000004", dest, NULL, &err), WV_ENOTFOUND);
    /* segment 9 is: its fragments, then zeros to the segment's size */
    assert_int_equal(wal_fetch(fx->r, "000000010000000000000009", dest, NULL, &err), 0);
    struct stat st;
    assert_int_equal(stat(dest, &st), 0);
    assert_int_equal(st.st_size, SEG);

    assert_int_equal(wal_fragments_delete(fx->r, 1, 3, SEG, &err), 0);
    assert_int_equal(wal_timeline_tail(fx->r, 1, SEG, &t, &err), 0);
    assert_int_equal(t.nstale, 0);
    struct wal_frag_chain c;
    assert_int_equal(wal_fragments_scan(fx->r, 1, 4, SEG, &c, &err), 0);
    assert_int_equal(c.end, 800);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fragment_names),
        cmocka_unit_test(test_fragment_names_rejected),
        cmocka_unit_test(test_chain),
    };
    /* in order, on one repository */
    const struct CMUnitTest repo_tests[] = {
        cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_tail_and_fetch),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests(repo_tests, setup_repo, teardown_repo);
}
