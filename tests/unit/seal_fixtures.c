/* Helpers shared by the test_seal_*.c programs (see seal_fixtures.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seal_fixtures.h"

seal_keyring_t *ring_of(const char *seeds)
{
    size_t n = strlen(seeds);
    uint8_t *keys = malloc(n * SEAL_KEY_BYTES);
    assert_non_null(keys);
    for (size_t i = 0; i < n; i++)
        memset(keys + i * SEAL_KEY_BYTES, seeds[i], SEAL_KEY_BYTES);
    seal_keyring_t *kr = NULL;
    wv_err_t err;
    assert_int_equal(seal_keyring_from_bytes(keys, n, &kr, &err), 0);
    free(keys);
    return kr;
}

uint8_t *random_data(size_t len, uint8_t seed)
{
    uint8_t s[randombytes_SEEDBYTES];
    memset(s, seed, sizeof s);
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    randombytes_buf_deterministic(p, len, s);
    return p;
}

/* Text with some variation: what lz4 does well on, like a heap page of similar rows. */
uint8_t *compressible_data(size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    size_t off = 0;
    for (unsigned row = 0; off < len; row++) {
        char line[64];
        int n = snprintf(line, sizeof line, "row %u: customer %u ordered %u items\n", row, row % 97,
                         row % 13);
        size_t take = len - off < (size_t)n ? len - off : (size_t)n;
        memcpy(p + off, line, take);
        off += take;
    }
    return p;
}

int sink_append(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    return buf_append(ctx, data, len, err);
}

void assert_msg_has(const wv_err_t *err, const char *needle)
{
    if (!strstr(err->msg, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err->msg, needle);
}

/* Seals with the streaming writer, written in pieces of `piece` bytes. */
void seal_stream(const seal_keyring_t *kr, const char *name, const uint8_t *data, size_t len,
                 size_t piece, buf_t *sealed)
{
    seal_writer_t *w = NULL;
    wv_err_t err;
    buf_init(sealed, SEALED_MAX);
    assert_int_equal(seal_writer_new(kr, name, sink_append, sealed, &w, &err), 0);
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        assert_int_equal(seal_writer_write(w, data + off, n, &err), 0);
    }
    assert_int_equal(seal_writer_finish(w, &err), 0);
    seal_writer_free(w);
}

/* Opens with the reader fed in pieces; returns the first error. */
int open_stream(const seal_keyring_t *kr, const char *name, const uint8_t *sealed, size_t len,
                size_t piece, buf_t *plain, wv_err_t *err)
{
    seal_reader_t *r = NULL;
    buf_init(plain, SEALED_MAX);
    assert_int_equal(seal_reader_new(kr, name, sink_append, plain, &r, err), 0);
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        rc = seal_reader_feed(r, sealed + off, n, err);
    }
    if (rc == 0)
        rc = seal_reader_finish(r, err);
    seal_reader_free(r);
    return rc;
}

int seal_group_setup(void **state)
{
    (void)state;
    wv_err_t err;
    if (seal_init(&err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}
