/* The storage interface on the file:// backend: what a caller can rely on (round trips,
 * atomic put-if-absent, nothing visible before commit, list order), checked through the
 * public functions and, where it matters, the files left on disk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "storage/backend.h"
#include "storage/storage.h"

struct fixture {
    char dir[256];
    storage_t *st;
    wv_err_t err;
};

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_storage.XXXXXX");
    *state = f;
    if (!mkdtemp(f->dir))
        return -1;
    if (storage_open(f->dir, NULL, &f->st, &f->err) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    storage_close(f->st);
    remove_tree(f->dir);
    free(f);
    return 0;
}

static void put_str(struct fixture *f, const char *key, const char *s)
{
    int rc = storage_put(f->st, key, s, strlen(s), false, &f->err);
    assert_int_equal(rc, 0);
}

static void assert_content(struct fixture *f, const char *key, const char *want)
{
    buf_t b;
    assert_int_equal(storage_get(f->st, key, &b, 1 << 20, &f->err), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
}

/* Lists prefix into one string, keys separated by ' ', for easy comparison. */
static void list_joined(struct fixture *f, const char *prefix, char *out, size_t cap)
{
    storage_iter_t *it;
    assert_int_equal(storage_list_open(f->st, prefix, &it, &f->err), 0);
    out[0] = '\0';
    const char *key;
    uint64_t size;
    int rc;
    while ((rc = storage_iter_next(it, &key, &size, &f->err)) == 1) {
        if (out[0])
            strncat(out, " ", cap - strlen(out) - 1);
        strncat(out, key, cap - strlen(out) - 1);
    }
    assert_int_equal(rc, 0);
    storage_iter_close(it);
}

static void test_round_trip_empty(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(storage_put(f->st, "empty", "", 0, false, &f->err), 0);
    buf_t b;
    assert_int_equal(storage_get(f->st, "empty", &b, 10, &f->err), 0);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    uint64_t size = 99;
    assert_int_equal(storage_head(f->st, "empty", &size, &f->err), 0);
    assert_int_equal(size, 0);
}

struct stream_check {
    const uint8_t *want;
    size_t len;
    size_t seen;
    size_t calls;
};

static int check_sink(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    (void)err;
    struct stream_check *c = ctx;
    assert_true(len <= 1024 * 1024);
    assert_true(c->seen + len <= c->len);
    assert_memory_equal(data, c->want + c->seen, len);
    c->seen += len;
    c->calls++;
    return 0;
}

static void test_round_trip_streamed(void **state)
{
    struct fixture *f = *state;
    size_t total = 3 * 1024 * 1024;
    uint8_t *data = malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    storage_writer_t *w;
    assert_int_equal(storage_put_begin(f->st, "nodes/db1/wal/big", false, &w, &f->err), 0);
    size_t off = 0, piece = 1;
    while (off < total) {
        size_t n = piece < total - off ? piece : total - off;
        assert_int_equal(storage_put_write(w, data + off, n, &f->err), 0);
        off += n;
        piece = piece * 7 + 13; /* odd, growing sizes that straddle every boundary */
    }
    assert_int_equal(storage_put_commit(w, &f->err), 0);

    struct stream_check c = {data, total, 0, 0};
    assert_int_equal(storage_get_stream(f->st, "nodes/db1/wal/big", check_sink, &c, &f->err), 0);
    assert_int_equal(c.seen, total);
    assert_int_equal(c.calls, 3);

    buf_t b;
    assert_int_equal(storage_get(f->st, "nodes/db1/wal/big", &b, total, &f->err), 0);
    assert_int_equal(b.len, total);
    assert_memory_equal(b.data, data, total);
    buf_free(&b);
    /* a limit below the object's size is an error, not a truncated read */
    assert_int_not_equal(storage_get(f->st, "nodes/db1/wal/big", &b, total - 1, &f->err), 0);
    assert_non_null(strstr(f->err.msg, "nodes/db1/wal/big"));
    free(data);
}

static int stop_sink(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    (void)ctx;
    (void)data;
    (void)len;
    return wv_err_set(err, WV_EMISMATCH, "sink says stop");
}

static void test_sink_stops_get(void **state)
{
    struct fixture *f = *state;
    put_str(f, "k", "data");
    assert_int_equal(storage_get_stream(f->st, "k", stop_sink, NULL, &f->err), WV_EMISMATCH);
    assert_string_equal(f->err.msg, "sink says stop");
}

static void test_get_absent(void **state)
{
    struct fixture *f = *state;
    buf_t b;
    assert_int_equal(storage_get(f->st, "nodes/x/node.json", &b, 100, &f->err), WV_ENOTFOUND);
    assert_string_equal(f->err.msg, "object not found: nodes/x/node.json");
    uint64_t size;
    assert_int_equal(storage_head(f->st, "nodes/x/node.json", &size, &f->err), WV_ENOTFOUND);
    char c;
    assert_int_equal(storage_get_range(f->st, "nope", 0, 1, &c, &f->err), WV_ENOTFOUND);
}

static void test_get_range(void **state)
{
    struct fixture *f = *state;
    put_str(f, "packs/p1", "0123456789");
    char out[16] = {0};
    assert_int_equal(storage_get_range(f->st, "packs/p1", 3, 4, out, &f->err), 0);
    assert_memory_equal(out, "3456", 4);
    assert_int_equal(storage_get_range(f->st, "packs/p1", 7, 3, out, &f->err), 0);
    assert_memory_equal(out, "789", 3);
    assert_int_equal(storage_get_range(f->st, "packs/p1", 10, 0, out, &f->err), 0);
    assert_int_equal(storage_get_range(f->st, "packs/p1", 8, 3, out, &f->err), WV_ECORRUPT);
    assert_non_null(strstr(f->err.msg, "packs/p1"));
    assert_int_equal(storage_get_range(f->st, "packs/p1", 11, 0, out, &f->err), WV_ECORRUPT);
    assert_int_equal(storage_get_range(f->st, "packs/p1", UINT64_MAX, 2, out, &f->err),
                     WV_ECORRUPT);
}

static void test_head(void **state)
{
    struct fixture *f = *state;
    put_str(f, "a/b/c", "hello");
    uint64_t size = 0;
    assert_int_equal(storage_head(f->st, "a/b/c", &size, &f->err), 0);
    assert_int_equal(size, 5);
    /* a directory is a prefix of keys, not an object */
    assert_int_equal(storage_head(f->st, "a/b", &size, &f->err), WV_ENOTFOUND);
    assert_int_equal(storage_head(f->st, "a/b/c/d", &size, &f->err), WV_ENOTFOUND);
}

static void test_put_if_absent_twice(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(storage_put(f->st, "wal/seg", "first", 5, true, &f->err), 0);
    assert_int_equal(storage_put(f->st, "wal/seg", "second", 6, true, &f->err), WV_EEXISTS);
    assert_non_null(strstr(f->err.msg, "wal/seg"));
    assert_content(f, "wal/seg", "first");
    char listed[256];
    list_joined(f, "", listed, sizeof listed);
    assert_string_equal(listed, "wal/seg");
}

struct racer {
    storage_t *st;
    pthread_barrier_t *barrier;
    char content[32];
    int rc;
};

static void *race_put(void *arg)
{
    struct racer *r = arg;
    wv_err_t err;
    storage_writer_t *w;
    r->rc = storage_put_begin(r->st, "race/key", true, &w, &err);
    if (r->rc == 0)
        r->rc = storage_put_write(w, r->content, strlen(r->content), &err);
    pthread_barrier_wait(r->barrier); /* all commit together */
    if (r->rc == 0)
        r->rc = storage_put_commit(w, &err);
    return NULL;
}

static void test_put_if_absent_race(void **state)
{
    struct fixture *f = *state;
    enum { N = 8 };
    pthread_t th[N];
    struct racer r[N];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, N);
    for (int i = 0; i < N; i++) {
        r[i].st = f->st;
        r[i].barrier = &barrier;
        snprintf(r[i].content, sizeof r[i].content, "writer %d", i);
        assert_int_equal(pthread_create(&th[i], NULL, race_put, &r[i]), 0);
    }
    int winners = 0, winner = -1;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (r[i].rc == 0) {
            winners++;
            winner = i;
        } else {
            assert_int_equal(r[i].rc, WV_EEXISTS);
        }
    }
    pthread_barrier_destroy(&barrier);
    assert_int_equal(winners, 1);
    assert_content(f, "race/key", r[winner].content);
    /* the losers' temporary files are gone */
    char path[512];
    snprintf(path, sizeof path, "%s/race", f->dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        entries += de->d_name[0] != '.' || strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    assert_int_equal(entries, 1);
}

static void test_overwrite(void **state)
{
    struct fixture *f = *state;
    put_str(f, "repo.json", "version 1, a longer body");
    put_str(f, "repo.json", "version 2");
    assert_content(f, "repo.json", "version 2");
}

static void test_abort_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    storage_writer_t *w;
    assert_int_equal(storage_put_begin(f->st, "nodes/n/backups/b1", false, &w, &f->err), 0);
    assert_int_equal(storage_put_write(w, "partial", 7, &f->err), 0);
    char listed[256];
    list_joined(f, "", listed, sizeof listed);
    assert_string_equal(listed, ""); /* nothing visible before commit */
    storage_put_abort(w);
    list_joined(f, "", listed, sizeof listed);
    assert_string_equal(listed, "");
    uint64_t size;
    assert_int_equal(storage_head(f->st, "nodes/n/backups/b1", &size, &f->err), WV_ENOTFOUND);
    char path[512];
    snprintf(path, sizeof path, "%s/nodes/n/backups", f->dir);
    assert_true(fs_dir_is_empty(path));
}

/* Keys whose names straddle '/' in byte order: '-' and '.' sort before '/', 'b' after. */
static const char *const nested_keys[] = {"a/bb", "ab", "a/b/c", "a!", "a/b.x", "b", "a/b-c"};

static void put_nested(struct fixture *f)
{
    for (size_t i = 0; i < sizeof nested_keys / sizeof *nested_keys; i++)
        put_str(f, nested_keys[i], nested_keys[i]);
}

static void test_list_order(void **state)
{
    struct fixture *f = *state;
    put_nested(f);
    char listed[256];
    list_joined(f, "", listed, sizeof listed);
    assert_string_equal(listed, "a! a/b-c a/b.x a/b/c a/bb ab b");

    storage_iter_t *it;
    assert_int_equal(storage_list_open(f->st, "a/b/", &it, &f->err), 0);
    const char *key;
    uint64_t size = 0;
    assert_int_equal(storage_iter_next(it, &key, &size, &f->err), 1);
    assert_string_equal(key, "a/b/c");
    assert_int_equal(size, 5);
    assert_int_equal(storage_iter_next(it, &key, &size, &f->err), 0);
    storage_iter_close(it);
}

static void test_list_prefix_mid_name(void **state)
{
    struct fixture *f = *state;
    put_nested(f);
    char listed[256];
    list_joined(f, "a/b", listed, sizeof listed);
    assert_string_equal(listed, "a/b-c a/b.x a/b/c a/bb");
    list_joined(f, "a", listed, sizeof listed);
    assert_string_equal(listed, "a! a/b-c a/b.x a/b/c a/bb ab");
    list_joined(f, "a/b/c", listed, sizeof listed);
    assert_string_equal(listed, "a/b/c");
    list_joined(f, "a/b/cd", listed, sizeof listed);
    assert_string_equal(listed, "");
    list_joined(f, "zz/top/", listed, sizeof listed);
    assert_string_equal(listed, "");
    list_joined(f, "ab/", listed, sizeof listed); /* "ab" is an object, not a directory */
    assert_string_equal(listed, "");
}

static void test_list_deep_tree_matches_sorted_keys(void **state)
{
    struct fixture *f = *state;
    /* directory names whose order differs from the order of their keys ("w" vs "w-x") */
    const char *dirs[] = {"w", "w-x", "w.y", "w0"};
    char keys[60][64];
    int n = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 5; k++)
                snprintf(keys[n++], sizeof keys[0], "n%d/%s/%c%d", i, dirs[j], "aZ_~0"[k], k);
    for (int i = 0; i < n; i++)
        put_str(f, keys[i], "x");
    qsort(keys, (size_t)n, sizeof keys[0], (int (*)(const void *, const void *))strcmp);
    storage_iter_t *it;
    assert_int_equal(storage_list_open(f->st, "n", &it, &f->err), 0);
    const char *key;
    uint64_t size;
    for (int i = 0; i < n; i++) {
        assert_int_equal(storage_iter_next(it, &key, &size, &f->err), 1);
        assert_string_equal(key, keys[i]);
    }
    assert_int_equal(storage_iter_next(it, &key, &size, &f->err), 0);
    storage_iter_close(it);
}

static void test_delete(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(storage_delete(f->st, "never/was", &f->err), 0);
    put_str(f, "x/y", "1");
    assert_int_equal(storage_delete(f->st, "x/y", &f->err), 0);
    uint64_t size;
    assert_int_equal(storage_head(f->st, "x/y", &size, &f->err), WV_ENOTFOUND);
    assert_int_equal(storage_delete(f->st, "x/y", &f->err), 0);
    assert_int_equal(storage_delete(f->st, "x", &f->err), 0); /* a prefix, not an object */
}

/* The file backend cannot hold "a/b" and "a/b/c" at once; it must say so, not misbehave. */
static void test_object_and_prefix_conflict(void **state)
{
    struct fixture *f = *state;
    put_str(f, "a/b/c", "deep");
    assert_int_equal(storage_put(f->st, "a/b", "x", 1, false, &f->err), WV_EFAIL);
    assert_non_null(strstr(f->err.msg, "keys below a/b/"));
    assert_int_equal(storage_put(f->st, "a/b", "x", 1, true, &f->err), WV_EFAIL);
    put_str(f, "p/q", "flat");
    assert_int_equal(storage_put(f->st, "p/q/r", "x", 1, false, &f->err), WV_EFAIL);
    assert_non_null(strstr(f->err.msg, "p/q/r"));
    assert_content(f, "a/b/c", "deep");
    assert_content(f, "p/q", "flat");
    char listed[256];
    list_joined(f, "", listed, sizeof listed);
    assert_string_equal(listed, "a/b/c p/q");
}

static void test_bad_keys_rejected(void **state)
{
    struct fixture *f = *state;
    const char *bad[] = {"",     "..",   "../x", "a/../b", "a/..", ".",    "a/./b",
                         "/abs", "a//b", "a/",   "a\nb",   "a\tb", "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(storage_check_key(bad[i], &f->err), WV_EUSAGE);
        assert_null(strchr(f->err.msg, '\n'));
        assert_int_equal(storage_put(f->st, bad[i], "x", 1, false, &f->err), WV_EUSAGE);
        uint64_t size;
        assert_int_equal(storage_head(f->st, bad[i], &size, &f->err), WV_EUSAGE);
        assert_int_equal(storage_delete(f->st, bad[i], &f->err), WV_EUSAGE);
    }
    assert_int_equal(storage_check_key(NULL, &f->err), WV_EUSAGE);
    const char *good[] = {"a", "a..b", "nodes/db1/wal/00000001.history", "x/...y"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(storage_check_key(good[i], &f->err), 0);
    /* names starting with '.' are the file backend's temporary files */
    assert_int_equal(storage_put(f->st, "a/.hidden", "x", 1, false, &f->err), WV_EUSAGE);
    storage_iter_t *it;
    assert_int_equal(storage_list_open(f->st, "../", &it, &f->err), WV_EUSAGE);
    assert_int_equal(storage_list_open(f->st, "/a", &it, &f->err), WV_EUSAGE);
    char listed[64];
    list_joined(f, "", listed, sizeof listed);
    assert_string_equal(listed, "");
}

static void test_open_urls(void **state)
{
    struct fixture *f = *state;
    storage_t *st = NULL;
    assert_int_equal(storage_open("s3://", NULL, &st, &f->err), WV_EUSAGE);
    assert_non_null(strstr(f->err.msg, "s3://bucket/prefix"));
    assert_null(st);
    assert_int_equal(storage_open("relative/dir", NULL, &st, &f->err), WV_EUSAGE);
    assert_non_null(strstr(f->err.msg, "relative/dir"));
    assert_int_equal(storage_open("file://host/dir", NULL, &st, &f->err), WV_EUSAGE);
    assert_int_equal(storage_open("ftp://x/y", NULL, &st, &f->err), WV_EUSAGE);

    char url[600], dir[512];
    snprintf(dir, sizeof dir, "%s/nonexistent/dir", f->dir);
    snprintf(url, sizeof url, "file://%s/", dir);
    assert_int_equal(storage_open(url, NULL, &st, &f->err), 0);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0027, 0); /* 0750 at most */
    snprintf(url, sizeof url, "file://%s", dir);
    assert_string_equal(storage_url(st), url);
    assert_int_equal(storage_put(st, "k", "v", 1, false, &f->err), 0);
    storage_close(st);

    /* a file where the repository should be */
    snprintf(dir, sizeof dir, "%s/nonexistent/dir/k", f->dir);
    assert_int_equal(storage_open(dir, NULL, &st, &f->err), WV_EFAIL);
    assert_non_null(strstr(f->err.msg, "not a directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_streamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sink_stops_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_absent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_if_absent_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_if_absent_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_prefix_mid_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_deep_tree_matches_sorted_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_and_prefix_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_urls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
