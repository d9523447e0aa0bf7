/* Repository keys and the sealed-object format.
 *
 * A sealed object is a 8-byte header ("WVSEALv1") and a sequence of frames. Each frame holds
 * at most SEAL_CHUNK_MAX bytes of plaintext, lz4-compressed when that helps, encrypted with
 * XChaCha20-Poly1305 under a random 24-byte nonce. A frame is self-describing:
 *
 *   u32 sealed_len | u32 plain_len | u8 flags | key_id[8] | nonce[24] | ciphertext+tag
 *
 * (little endian). The associated data binds the header, the object's name, the frame's
 * index, its flags (including "final") and its key id, so a renamed or swapped object, a
 * reordered, dropped or altered frame, a truncated object (no final frame) or an extended
 * one (bytes after the final frame) all fail to open. Because each frame carries its own
 * nonce and key id, one frame of a pack (one block) opens with a single range read, given
 * the object name and the frame index the manifest records.
 *
 * Keys: 32 random bytes; the key file holds one key per line in hex, the first being the
 * key new objects are sealed with; the others stay readable (rotation). A key id is the first
 * 8 bytes of a BLAKE2b hash of the key, printed as 16 hex digits. */
#ifndef WALVAULT_CRYPTO_SEAL_H
#define WALVAULT_CRYPTO_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define SEAL_KEY_BYTES 32
#define SEAL_KEY_ID_BYTES 8
#define SEAL_KEY_ID_HEX (SEAL_KEY_ID_BYTES * 2 + 1)
#define SEAL_HEADER_BYTES 8
#define SEAL_FRAME_HEADER_BYTES (4 + 4 + 1 + SEAL_KEY_ID_BYTES + 24)
#define SEAL_FRAME_OVERHEAD (SEAL_FRAME_HEADER_BYTES + 16)
#define SEAL_CHUNK_MAX (1u << 20)
#define SEAL_HASH_BYTES 16

typedef struct seal_keyring seal_keyring_t;

/* crypto_init must run once before anything else here (it initialises libsodium). */
int seal_init(wv_err_t *err);

/* Writes a new random key to path with mode 0600; refuses to overwrite an existing file. */
int seal_keygen(const char *path, wv_err_t *err);
int seal_keyring_load(const char *path, seal_keyring_t **out, wv_err_t *err);
/* For tests: a keyring from raw key bytes (count keys, first is current). */
int seal_keyring_from_bytes(const uint8_t *keys, size_t count, seal_keyring_t **out, wv_err_t *err);
void seal_keyring_free(seal_keyring_t *kr);
/* Hex id of the key new objects are sealed with. */
const char *seal_keyring_current_id(const seal_keyring_t *kr);
bool seal_keyring_has_id(const seal_keyring_t *kr, const char *hex_id);

/* Appends the object header to out. */
int seal_header(buf_t *out, wv_err_t *err);
/* Appends one frame sealing plain[0..len) (len <= SEAL_CHUNK_MAX) as frame `index` of the
 * object `name`. */
int seal_frame(const seal_keyring_t *kr, const char *name, uint64_t index, bool final,
               const void *plain, size_t len, buf_t *out, wv_err_t *err);
/* Total size of the frame that starts at hdr (needs SEAL_FRAME_HEADER_BYTES bytes), or a
 * negative error for an impossible header. */
int64_t seal_frame_size(const void *hdr, size_t avail, wv_err_t *err);
/* Opens one frame (exactly its bytes) of object `name` at `index`; replaces out's content
 * with the plaintext; *final tells whether it was the object's last frame. */
int seal_open_frame(const seal_keyring_t *kr, const char *name, uint64_t index, const void *frame,
                    size_t len, buf_t *out, bool *final, wv_err_t *err);

/* Incremental opener for a whole object fed in pieces of any size. Plaintext goes to sink,
 * in order, frame by frame; nothing is passed on before its frame authenticated. */
typedef int (*seal_sink_fn)(void *ctx, const void *plain, size_t len, wv_err_t *err);
typedef struct seal_reader seal_reader_t;
int seal_reader_new(const seal_keyring_t *kr, const char *name, seal_sink_fn sink, void *ctx,
                    seal_reader_t **out, wv_err_t *err);
int seal_reader_feed(seal_reader_t *r, const void *data, size_t len, wv_err_t *err);
/* Fails (WV_ECORRUPT) when the final frame was not seen: truncation. */
int seal_reader_finish(seal_reader_t *r, wv_err_t *err);
void seal_reader_free(seal_reader_t *r);

/* Streaming sealer: buffers plaintext into SEAL_CHUNK_MAX frames and hands sealed bytes to
 * sink. Finish emits the final frame (possibly empty). */
typedef struct seal_writer seal_writer_t;
int seal_writer_new(const seal_keyring_t *kr, const char *name, seal_sink_fn sink, void *ctx,
                    seal_writer_t **out, wv_err_t *err);
int seal_writer_write(seal_writer_t *w, const void *data, size_t len, wv_err_t *err);
int seal_writer_finish(seal_writer_t *w, wv_err_t *err);
void seal_writer_free(seal_writer_t *w);

/* One-shot helpers for small objects (manifests, node records). */
int seal_buffer(const seal_keyring_t *kr, const char *name, const void *plain, size_t len,
                buf_t *out, wv_err_t *err);
int seal_open_buffer(const seal_keyring_t *kr, const char *name, const void *sealed, size_t len,
                     buf_t *out, wv_err_t *err);

/* Keyed BLAKE2b (key derived from the current repository key) of data, for block change
 * detection that does not reveal page contents. */
void seal_block_hash(const seal_keyring_t *kr, const void *data, size_t len,
                     uint8_t out[SEAL_HASH_BYTES]);

#endif
