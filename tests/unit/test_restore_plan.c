/* Restore's logic: recovery target times, the plan that groups block references into
 * range reads (each frame read and opened once), the checks a manifest's block references
 * and paths get before anything is written, and the workers that run a plan against a
 * file:// repository. */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/internal_restore.h"
#include "common/fsutil.h"
#include "common/workers.h"

/* 2026-11-30 22:15:00 UTC */
#define T0 INT64_C(1796076900)

static int64_t parse_ok(const char *text, const char *frac)
{
    struct restore_time t;
    wv_err_t err = {0};
    assert_int_equal(restore_parse_time(text, &t, &err), 0);
    assert_string_equal(t.frac, frac);
    return t.sec;
}

static void test_time_zones(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2026-11-30 22:15:00", ""), T0);
    assert_int_equal(parse_ok("2026-11-30T22:15:00Z", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 22:15:00 UTC", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 22:15:00+00", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 23:15:00+01", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 23:45:00 +01:30", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 23:45:00+0130", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 17:15:00-05", ""), T0);
    assert_int_equal(parse_ok("2026-11-30 22:15:00.123456+00", "123456"), T0);
    assert_int_equal(parse_ok("2024-02-29 00:00:00", ""), INT64_C(1709164800));
    assert_int_equal(parse_ok("1970-01-01 00:00:00", ""), 0);
}

static void test_time_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-11-30",
        "2026-11-30 22:15",
        "2026-13-01 00:00:00",
        "2026-02-29 00:00:00",
        "2026-04-31 00:00:00",
        "2026-11-30 24:00:00",
        "2026-11-30 22:60:00",
        "2026-11-30 22:15:60",
        "2026-11-30 22:15:00.",
        "2026-11-30 22:15:00.1234567890",
        "2026-11-30 22:15:00+16",
        "2026-11-30 22:15:00+01:60",
        "2026-11-30 22:15:00 CET",
        "2026-11-30 22:15:00Zjunk",
        "26-11-30 22:15:00",
        "2026/11/30 22:15:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct restore_time t;
        wv_err_t err = {0};
        assert_int_equal(restore_parse_time(bad[i], &t, &err), WV_EUSAGE);
        assert_non_null(strstr(err.msg, "invalid target time"));
    }
}

static void test_time_format(void **state)
{
    (void)state;
    struct restore_time t;
    wv_err_t err = {0};
    char out[64];
    assert_int_equal(restore_parse_time("2026-12-01 00:15:00.5+02", &t, &err), 0);
    restore_format_time(&t, out, sizeof out);
    assert_string_equal(out, "2026-11-30 22:15:00.5+00");
    assert_int_equal(restore_parse_time("2026-11-30 22:15:00", &t, &err), 0);
    restore_format_time(&t, out, sizeof out);
    assert_string_equal(out, "2026-11-30 22:15:00+00");
}

/* A reference of 8192 bytes at skip 0 of frame `frame`, for file offset frame * 8192. */
static struct block_ref ref(uint32_t pack, uint32_t frame, uint64_t offset, uint32_t sealed)
{
    return (struct block_ref){pack, frame, offset, sealed, (uint64_t)frame * 8192, 8192, 0};
}

static struct block_ref part(uint32_t pack, uint32_t frame, uint64_t offset, uint32_t sealed,
                             uint32_t skip, uint32_t len, uint64_t file_offset)
{
    return (struct block_ref){pack, frame, offset, sealed, file_offset, len, skip};
}

static void plan_of(struct restore_plan *p, size_t max_read, const size_t *files,
                    const struct block_ref *b, size_t n)
{
    wv_err_t err = {0};
    restore_plan_init(p, max_read);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(restore_plan_add(p, files ? files[i] : 0, i, &b[i], &err), 0);
    assert_int_equal(restore_plan_finish(p, NULL, NULL, &err), 0);
}

static void test_plan_merges_back_to_back(void **state)
{
    (void)state;
    struct restore_plan p;
    struct block_ref b[] = {
        ref(0, 0, 8, 100),   ref(0, 1, 108, 100), ref(0, 2, 208, 100), /* one read */
        ref(1, 0, 208, 100),                                           /* other pack */
        ref(1, 2, 400, 100),                                           /* gap */
        ref(1, 3, 500, 100),
    };
    plan_of(&p, 1000, NULL, b, sizeof b / sizeof b[0]);
    assert_int_equal(p.count, 3);
    assert_int_equal(p.reads[0].count, 3);
    assert_int_equal(p.reads[0].frames, 3);
    assert_int_equal(p.reads[0].offset, 8);
    assert_int_equal(p.reads[0].len, 300);
    assert_int_equal(p.reads[0].plain, 3 * 8192);
    assert_int_equal(p.reads[1].pack, 1);
    assert_int_equal(p.reads[1].first, 3);
    assert_int_equal(p.pieces[p.reads[1].first].block, 3);
    assert_int_equal(p.reads[1].count, 1);
    assert_int_equal(p.reads[2].offset, 400);
    assert_int_equal(p.reads[2].len, 200);
    assert_int_equal(p.total_plain, 6 * 8192);
    assert_int_equal(p.total_frames, 6);
    restore_plan_free(&p);
}

/* An incremental's pattern: old frames of a parent pack, each taken in two or three parts
 * by several files, interleaved in manifest order with new frames of another pack. */
static void test_plan_groups_pieces_of_one_frame(void **state)
{
    (void)state;
    struct restore_plan p;
    size_t files[] = {0, 0, 0, 1, 2, 2, 1};
    struct block_ref b[] = {
        part(0, 4, 1000, 300, 0, 8192, 0),         /* file 0: old frame 4, first page */
        part(1, 0, 8, 50, 0, 8192, 8192),          /* file 0: a new page */
        part(0, 4, 1000, 300, 16384, 8192, 16384), /* file 0: old frame 4 again */
        part(0, 4, 1000, 300, 8192, 4096, 0),      /* file 1: the same frame */
        part(0, 5, 1300, 200, 0, 8192, 0),         /* file 2: the next frame */
        part(1, 1, 58, 50, 0, 8192, 8192),         /* file 2: a new page */
        part(0, 4, 1000, 300, 12288, 4096, 4096),  /* file 1: frame 4 once more */
    };
    plan_of(&p, 1000, files, b, sizeof b / sizeof b[0]);
    assert_int_equal(p.count, 2);
    /* pack 0: frames 4 and 5, back to back, one read; frame 4 opened once for 4 pieces */
    assert_int_equal(p.reads[0].pack, 0);
    assert_int_equal(p.reads[0].offset, 1000);
    assert_int_equal(p.reads[0].len, 500);
    assert_int_equal(p.reads[0].count, 5);
    assert_int_equal(p.reads[0].frames, 2);
    assert_int_equal(p.reads[0].plain, 8192 * 3 + 4096 * 2);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(p.pieces[i].frame, 4);
    /* ... ordered by where in the frame they start */
    assert_int_equal(p.pieces[0].skip, 0);
    assert_int_equal(p.pieces[1].skip, 8192);
    assert_int_equal(p.pieces[1].file, 1);
    assert_int_equal(p.pieces[2].skip, 12288);
    assert_int_equal(p.pieces[3].skip, 16384);
    assert_int_equal(p.pieces[4].frame, 5);
    assert_int_equal(p.reads[1].pack, 1);
    assert_int_equal(p.reads[1].count, 2);
    assert_int_equal(p.reads[1].len, 100);
    assert_int_equal(p.total_frames, 4);
    restore_plan_free(&p);
}

static void test_plan_bounds_reads(void **state)
{
    (void)state;
    struct restore_plan p;
    struct block_ref b[7];
    for (uint32_t i = 0; i < 5; i++)
        b[i] = ref(0, i, 8 + 100 * (uint64_t)i, 100);
    /* two more parts of frame 1: they never start a read of their own */
    b[5] = part(0, 1, 108, 100, 100, 10, 1 << 20);
    b[6] = part(0, 1, 108, 100, 200, 10, 2 << 20);
    plan_of(&p, 250, NULL, b, 7);
    /* 100 + 100 fit in 250, a third would not */
    assert_int_equal(p.count, 3);
    assert_int_equal(p.reads[0].count, 4);
    assert_int_equal(p.reads[0].frames, 2);
    assert_int_equal(p.reads[1].count, 2);
    assert_int_equal(p.reads[2].count, 1);
    for (size_t i = 0; i < p.count; i++)
        assert_true(p.reads[i].len <= 250);
    restore_plan_free(&p);
}

static void test_plan_sorts_across_files_and_packs(void **state)
{
    (void)state;
    struct restore_plan p;
    size_t files[] = {3, 3, 1, 0, 2};
    struct block_ref b[] = {
        part(2, 0, 8, 100, 0, 10, 0),    part(1, 1, 108, 100, 0, 10, 10),
        part(1, 0, 8, 100, 50, 10, 0),   part(1, 0, 8, 100, 0, 10, 0),
        part(0, 7, 5000, 100, 0, 10, 0),
    };
    plan_of(&p, 1000, files, b, 5);
    static const uint32_t packs[] = {0, 1, 1, 1, 2};
    static const uint32_t skips[] = {0, 0, 50, 0, 0};
    static const uint32_t file_of[] = {2, 0, 1, 3, 3};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(p.pieces[i].pack, packs[i]);
        assert_int_equal(p.pieces[i].skip, skips[i]);
        assert_int_equal(p.pieces[i].file, file_of[i]);
    }
    assert_int_equal(p.count, 3);
    assert_int_equal(p.reads[1].count, 3);
    assert_int_equal(p.reads[1].len, 200);
    restore_plan_free(&p);
}

static int finish_of(const struct block_ref *b, size_t n, wv_err_t *err)
{
    struct restore_plan p;
    restore_plan_init(&p, 1000);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(restore_plan_add(&p, i, 0, &b[i], err), 0);
    int rc = restore_plan_finish(&p, NULL, NULL, err);
    restore_plan_free(&p);
    return rc;
}

static void test_plan_rejects_inconsistent_frames(void **state)
{
    (void)state;
    wv_err_t err = {0};
    struct block_ref two_lengths[] = {part(0, 1, 8, 100, 0, 10, 0), part(0, 1, 8, 90, 10, 10, 0)};
    struct block_ref two_indexes[] = {part(0, 1, 8, 100, 0, 10, 0), part(0, 2, 8, 100, 10, 10, 0)};
    struct block_ref overlapping[] = {part(0, 1, 8, 100, 0, 10, 0), part(0, 2, 58, 100, 0, 10, 0)};
    struct block_ref too_big[] = {part(0, 1, 8, 2000, 0, 10, 0)};
    assert_int_equal(finish_of(two_lengths, 2, &err), WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "names a frame another reference names otherwise"));
    assert_int_equal(finish_of(two_indexes, 2, &err), WV_ECORRUPT);
    assert_int_equal(finish_of(overlapping, 2, &err), WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "overlaps"));
    assert_int_equal(finish_of(too_big, 1, &err), WV_ECORRUPT);
}

static void test_piece_beyond_frame(void **state)
{
    (void)state;
    wv_err_t err = {0};
    json_t *files = json_pack("[{s:s}]", "path", "base/5/1259");
    json_t *packs = json_pack("[s]", "20261130T221500Z-F-0-0");
    struct restore_piece q = {.offset = 8, .pack = 0, .frame = 3, .skip = 8192, .plain_len = 8192};
    assert_int_equal(restore_piece_check(&q, 16384, files, packs, &err), 0);
    assert_int_equal(restore_piece_check(&q, 16383, files, packs, &err), WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "manifest entry base/5/1259"));
    assert_non_null(strstr(err.msg, "20261130T221500Z-F-0-0"));
    q.skip = UINT32_MAX;
    assert_int_equal(restore_piece_check(&q, SEAL_CHUNK_MAX, files, packs, &err), WV_ECORRUPT);
    json_decref(files);
    json_decref(packs);
}

static json_t *manifest_with(json_t *blocks, json_int_t size, const char *path)
{
    return json_pack("{s:[s,s], s:[{s:s, s:s, s:I, s:o}]}", "packs", "p0", "p1", "files", "path",
                     path, "type", "file", "size", size, "blocks", blocks);
}

static int build(json_t *m, wv_err_t *err)
{
    struct restore_plan p;
    int rc = restore_plan_build(m, &p, err);
    if (rc == 0)
        restore_plan_free(&p);
    json_decref(m);
    return rc;
}

static void test_plan_build_runs_across_files(void **state)
{
    (void)state;
    json_t *m = json_pack("{s:[s], s:[{s:s, s:s, s:I, s:[[i,i,i,i,i,i]]}, {s:s, s:s},"
                          " {s:s, s:s, s:I, s:[[i,i,i,i,i,i], [i,i,i,i,i,i,i]]}]}",
                          "packs", "p0", "files", "path", "a", "type", "file", "size",
                          (json_int_t)10, "blocks", 0, 0, 8, 60, 0, 10, "path", "d", "type", "dir",
                          "path", "b", "type", "file", "size", (json_int_t)20, "blocks", 0, 1, 68,
                          60, 0, 10, 0, 0, 8, 60, 10, 5, 5);
    struct restore_plan p;
    wv_err_t err = {0};
    assert_non_null(m);
    assert_int_equal(restore_plan_build(m, &p, &err), 0);
    assert_int_equal(p.count, 1);
    assert_int_equal(p.npieces, 3);
    assert_int_equal(p.reads[0].count, 3);
    assert_int_equal(p.reads[0].frames, 2);
    assert_int_equal(p.reads[0].len, 120);
    assert_int_equal(p.total_plain, 25);
    /* frame 0 serves "a" (skip 0) and then "b" (skip 5) */
    assert_int_equal(p.pieces[0].file, 0);
    assert_int_equal(p.pieces[1].file, 2);
    assert_int_equal(p.pieces[1].block, 1);
    assert_int_equal(p.pieces[1].skip, 5);
    assert_int_equal(p.pieces[2].frame, 1);
    restore_plan_free(&p);
    json_decref(m);
}

static void test_plan_build_rejects(void **state)
{
    (void)state;
    wv_err_t err = {0};
    /* [pack, frame, offset, sealed_len, file_offset, plain_len(, skip)] */
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 100, 0, 50), 50, "base/1/2"),
              &err),
        0);
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 2, 0, 8, 100, 0, 50), 50, "base/1/2"),
              &err),
        WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "base/1/2"));
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 100, 10, 50), 50, "base/1/2"),
              &err),
        WV_ECORRUPT);
    /* overlapping references of one file, even when sorting would separate them */
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i],[i,i,i,i,i,i]]", 0, 0, 8, 100, 0,
                                                   50, 0, 1, 108, 100, 40, 10),
                                         100, "base/1/2"),
                           &err),
                     WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "overlaps"));
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i,i],[i,i,i,i,i,i,i]]", 1, 0, 8,
                                                   100, 0, 50, 0, 0, 0, 8, 100, 40, 10, 60),
                                         100, "base/1/2"),
                           &err),
                     WV_ECORRUPT);
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 10, 0, 5), 5, "base/1/2"), &err),
        WV_ECORRUPT);
    assert_int_equal(
        build(manifest_with(json_pack("[[i,i,i,i,i]]", 0, 0, 8, 100, 0), 50, "base/1/2"), &err),
        WV_ECORRUPT);
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i]]", 0, 0, 8, 100, 0, 50), 50,
                                         "base/../../etc/passwd"),
                           &err),
                     WV_ECORRUPT);
    /* skip + plain_len beyond the largest frame */
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i,i]]", 0, 0, 8, 100, 0, 8192,
                                                   (json_int_t)SEAL_CHUNK_MAX - 8191),
                                         8192, "base/1/2"),
                           &err),
                     WV_ECORRUPT);
    assert_non_null(strstr(err.msg, "beyond the end of any frame"));
    assert_int_equal(build(manifest_with(json_pack("[[i,i,i,i,i,i,i]]", 0, 0, 8, 100, 0, 8192,
                                                   (json_int_t)SEAL_CHUNK_MAX - 8192),
                                         8192, "base/1/2"),
                           &err),
                     0);
}

/* ---- running a plan against a real file:// repository ---- */

struct sealed_pack {
    const char *name;
    uint64_t offset[4];
    uint32_t sealed[4];
};

static uint8_t frame_byte(int pack, int frame, size_t i)
{
    return (uint8_t)(pack * 101 + frame * 37 + (i * 13) % 251);
}

/* A pack of `n` frames of the given lengths, stored under its key. */
static void put_pack(repo_t *r, struct sealed_pack *pk, int pack, const size_t *lens, int n)
{
    char key[REPO_KEY_MAX];
    buf_t out, plain;
    wv_err_t err = {0};
    buf_init(&out, 1u << 24);
    buf_init(&plain, SEAL_CHUNK_MAX);
    assert_int_equal(repo_key_pack(r, pk->name, key, sizeof key), 0);
    assert_int_equal(seal_header(&out, &err), 0);
    for (int f = 0; f < n; f++) {
        buf_reset(&plain);
        for (size_t i = 0; i < lens[f]; i++)
            assert_int_equal(buf_append(&plain, &(uint8_t){frame_byte(pack, f, i)}, 1, &err), 0);
        pk->offset[f] = out.len;
        assert_int_equal(seal_frame(repo_keys(r), key, (uint64_t)f, f == n - 1, plain.data,
                                    plain.len, &out, &err),
                         0);
        pk->sealed[f] = (uint32_t)(out.len - pk->offset[f]);
    }
    assert_int_equal(storage_put(repo_storage(r), key, out.data, out.len, false, &err), 0);
    buf_free(&out);
    buf_free(&plain);
}

struct use {
    int file, pack, frame;
    uint32_t skip, len;
    uint64_t file_offset;
};

/* Two files that take parts of the frames of two packs, in an incremental's interleaved
 * order: frame 0 of p0 serves both files. */
static const struct use uses[] = {
    {0, 0, 0, 0, 1000, 0},      {0, 1, 0, 0, 500, 1000}, {0, 0, 0, 1500, 1500, 1500},
    {0, 0, 2, 100, 3000, 3000}, {1, 0, 1, 0, 5000, 0},   {1, 0, 0, 1000, 500, 5000},
    {1, 1, 1, 0, 2000, 5500},
};
static const char *const paths[] = {"base/1/a", "base/1/b"};
static const json_int_t sizes[] = {6000, 9000};

static json_t *fetch_manifest(const struct sealed_pack pk[2], uint32_t bad_skip)
{
    json_t *blocks[2] = {json_array(), json_array()};
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++) {
        const struct use *u = &uses[i];
        struct block_ref b = {(uint32_t)u->pack,
                              (uint32_t)u->frame,
                              pk[u->pack].offset[u->frame],
                              pk[u->pack].sealed[u->frame],
                              u->file_offset,
                              u->len,
                              i == 4 && bad_skip ? bad_skip : u->skip};
        json_array_append_new(blocks[u->file], manifest_block_json(&b));
    }
    return json_pack("{s:[s,s], s:[{s:s, s:s, s:I, s:o}, {s:s, s:s}, {s:s, s:s, s:I, s:o}]}",
                     "packs", pk[0].name, pk[1].name, "files", "path", paths[0], "type", "file",
                     "size", sizes[0], "blocks", blocks[0], "path", "base/1", "type", "dir", "path",
                     paths[1], "type", "file", "size", sizes[1], "blocks", blocks[1]);
}

static void check_output(const char *dir, int file)
{
    char path[512];
    uint8_t want[9000] = {0}, got[9000];
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++)
        for (uint32_t k = 0; uses[i].file == file && k < uses[i].len; k++)
            want[uses[i].file_offset + k] =
                frame_byte(uses[i].pack, uses[i].frame, uses[i].skip + k);
    snprintf(path, sizeof path, "%s/%s", dir, paths[file]);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(got, 1, sizeof got, fp), (size_t)sizes[file]);
    fclose(fp);
    assert_memory_equal(got, want, (size_t)sizes[file]);
}

/* Creates the output files as restore.c does; keep says whether the fetch holds them. */
static void run_fetch(repo_t *r, json_t *m, const char *dir, bool keep, int expect_rc,
                      uint64_t *frames, wv_err_t *err)
{
    struct restore_plan plan;
    struct restore_fetch f;
    assert_int_equal(restore_plan_build(m, &plan, err), 0);
    assert_int_equal(restore_fetch_init(&f, r, m, &plan, dir, 2, err), 0);
    for (int i = 0; dir && i < 2; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, paths[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)sizes[i]), 0);
        if (!keep || !restore_fetch_keep_fd(&f, (size_t)(i * 2), fd))
            assert_int_equal(close(fd), 0);
    }
    assert_int_equal(workers_run(2, plan.count, restore_fetch_item, &f, err), expect_rc);
    assert_int_equal(restore_fetch_close_files(&f, err), 0);
    assert_int_equal(plan.count, 2);
    *frames = atomic_load(&f.frames_opened);
    restore_fetch_free(&f);
    restore_plan_free(&plan);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void test_fetch_opens_each_frame_once(void **state)
{
    (void)state;
    char tmp[] = "/tmp/wv-restore-plan-XXXXXX", url[256], key[160], out[160];
    wv_err_t err = {0};
    repo_t *r;
    bool created;
    uint64_t frames;
    assert_non_null(mkdtemp(tmp));
    snprintf(url, sizeof url, "file://%s/repo", tmp);
    snprintf(key, sizeof key, "%s/key", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    assert_int_equal(seal_init(&err), 0);
    assert_int_equal(seal_keygen(key, &err), 0);
    struct repo_config cfg = {.url = url, .key_file = key, .node = "n1"};
    assert_int_equal(repo_init(&cfg, &created, &err), 0);
    assert_int_equal(repo_open(&cfg, &r, &err), 0);
    struct sealed_pack pk[2] = {{.name = "T-0-0"}, {.name = "T-1-0"}};
    put_pack(r, &pk[0], 0, (const size_t[]){3000, 5000, 4000}, 3);
    put_pack(r, &pk[1], 1, (const size_t[]){500, 2000}, 2);
    assert_int_equal(fs_mkdir_p(out, 0700, &err), 0);
    snprintf(url, sizeof url, "%s/base/1", out);
    assert_int_equal(fs_mkdir_p(url, 0700, &err), 0);

    json_t *m = fetch_manifest(pk, 0);
    for (int keep = 0; keep < 2; keep++) {
        run_fetch(r, m, out, keep, 0, &frames, &err);
        assert_int_equal(frames, 5); /* five distinct frames, seven references */
        check_output(out, 0);
        check_output(out, 1);
    }
    run_fetch(r, m, NULL, false, 0, &frames, &err); /* verify */
    assert_int_equal(frames, 5);
    json_decref(m);

    /* 4500 + 5000 bytes of a 5000-byte frame */
    m = fetch_manifest(pk, 4500);
    run_fetch(r, m, out, true, WV_ECORRUPT, &frames, &err);
    assert_non_null(strstr(err.msg, "manifest entry base/1/b"));
    assert_non_null(strstr(err.msg, "T-0-0"));
    run_fetch(r, m, NULL, false, WV_ECORRUPT, &frames, &err);
    json_decref(m);
    repo_close(r);
    assert_int_equal(nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static void test_path_is_safe(void **state)
{
    (void)state;
    assert_true(restore_path_is_safe("base/5/1259"));
    assert_true(restore_path_is_safe("pg_tblspc/16385/PG_15_202209061/5/100"));
    assert_true(restore_path_is_safe("..data"));
    assert_true(restore_path_is_safe("a/..b"));
    assert_false(restore_path_is_safe(NULL));
    assert_false(restore_path_is_safe(""));
    assert_false(restore_path_is_safe("/etc/passwd"));
    assert_false(restore_path_is_safe(".."));
    assert_false(restore_path_is_safe("../x"));
    assert_false(restore_path_is_safe("a/../../x"));
    assert_false(restore_path_is_safe("a/.."));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_zones),
        cmocka_unit_test(test_time_invalid),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_plan_merges_back_to_back),
        cmocka_unit_test(test_plan_groups_pieces_of_one_frame),
        cmocka_unit_test(test_plan_bounds_reads),
        cmocka_unit_test(test_plan_sorts_across_files_and_packs),
        cmocka_unit_test(test_plan_rejects_inconsistent_frames),
        cmocka_unit_test(test_piece_beyond_frame),
        cmocka_unit_test(test_plan_build_runs_across_files),
        cmocka_unit_test(test_plan_build_rejects),
        cmocka_unit_test(test_fetch_opens_each_frame_once),
        cmocka_unit_test(test_path_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
