/* Private to crypto/: the keyring layout shared by keys.c and seal.c, and a raw frame sealer
 * that lets tests and the fuzzer reach the code behind authentication. */
#ifndef WALVAULT_CRYPTO_INTERNAL_H
#define WALVAULT_CRYPTO_INTERNAL_H

#include <stdint.h>

#include "crypto/seal.h"

#define SEAL_FLAG_FINAL 0x01
#define SEAL_FLAG_LZ4 0x02

struct seal_key {
    uint8_t key[SEAL_KEY_BYTES];
    uint8_t id[SEAL_KEY_ID_BYTES];
    char id_hex[SEAL_KEY_ID_HEX];
};

struct seal_keyring {
    uint8_t hash_key[SEAL_KEY_BYTES]; /* block-hash key, derived from keys[0] */
    size_t count;
    struct seal_key keys[]; /* keys[0] seals new objects */
};

/* The key with this id, or NULL. */
const struct seal_key *seal_keyring_find(const seal_keyring_t *kr,
                                         const uint8_t id[SEAL_KEY_ID_BYTES]);

/* Appends a frame whose body (the bytes that get encrypted) and header fields are taken as
 * given, with the current key, so tests can build frames the normal sealer never makes
 * (bad lz4 data, lengths that disagree) and check that they fail after authenticating. */
int seal_frame_raw(const seal_keyring_t *kr, const char *name, uint64_t index, uint8_t flags,
                   uint32_t plain_len, const void *body, size_t body_len, buf_t *out,
                   wv_err_t *err);

#endif
