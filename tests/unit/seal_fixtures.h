/* Helpers shared by the test_seal_*.c programs: deterministic key rings and data, and sealing
 * or opening an object in pieces through the streaming writer and reader. */
#ifndef WALVAULT_TESTS_SEAL_FIXTURES_H
#define WALVAULT_TESTS_SEAL_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "crypto/seal.h"

#define MIB ((size_t)1024 * 1024)
#define SEALED_MAX (64u * MIB)
#define NAME "nodes/x/backups/y"
#define OTHER_NAME "nodes/x/backups/z"

/* cmocka group setup of every seal test program: libsodium initialised. */
int seal_group_setup(void **state);

/* A key ring with one key per character of `seeds`, each key that byte repeated; the first is
 * current. */
seal_keyring_t *ring_of(const char *seeds);

/* `len` pseudo-random bytes, the same for the same seed; the caller frees. */
uint8_t *random_data(size_t len, uint8_t seed);

/* Text with some variation: what lz4 does well on, like a heap page of similar rows; the
 * caller frees. */
uint8_t *compressible_data(size_t len);

/* A sink that appends to the buf_t at ctx. */
int sink_append(void *ctx, const void *data, size_t len, wv_err_t *err);

/* Fails the test unless the error message contains needle. */
void assert_msg_has(const wv_err_t *err, const char *needle);

/* Seals with the streaming writer, written in pieces of `piece` bytes. */
void seal_stream(const seal_keyring_t *kr, const char *name, const uint8_t *data, size_t len,
                 size_t piece, buf_t *sealed);

/* Opens with the reader fed in pieces; returns the first error. */
int open_stream(const seal_keyring_t *kr, const char *name, const uint8_t *sealed, size_t len,
                size_t piece, buf_t *plain, wv_err_t *err);

#endif
