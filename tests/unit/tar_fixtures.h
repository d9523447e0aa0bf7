/* Helpers shared by the test_tar_*.c programs: a recorder of what the streaming tar reader
 * reports (every entry, its metadata and a hash of its data, and whether any data pointer
 * left the fed buffer), a driver feeding an archive to the reader in pieces, and
 * deterministic bytes to archive. */
#ifndef WALVAULT_TESTS_TAR_FIXTURES_H
#define WALVAULT_TESTS_TAR_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "backup/tar.h"
#include "common/err.h"

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

/* FNV-1a, as the recorder hashes each entry's data (start from FNV_INIT). */
uint64_t fnv1a(uint64_t h, const void *p, size_t n);
void got_init(struct got *g);
void got_free(struct got *g);

/* Callbacks recording into the struct got passed as their context. */
extern const struct tar_callbacks CB;

#define PIECE_RANDOM SIZE_MAX

/* Feeds buf in pieces of `piece` bytes (0: all at once; PIECE_RANDOM: 1..3000, seeded) and
 * returns the first error of feed or finish. */
int parse(const uint8_t *buf, size_t len, size_t piece, struct got *g, wv_err_t *err);

/* Fails the test unless both recorded the same entries, data and all. */
void assert_same(const struct got *a, const struct got *b);

/* Deterministic, incompressible-looking bytes. */
void fill_random(uint8_t *b, size_t n, uint32_t seed);

#endif
