/* Repository keys: the key file, key ids and the derived block-hash key. */
#include "crypto/seal.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "crypto/internal.h"

enum { KEY_HEX_CHARS = SEAL_KEY_BYTES * 2 };
/* A key line is 65 bytes: this allows about a thousand keys and bounds what we read. */
#define KEY_FILE_MAX 65536

/* Distinct contexts make the id and the hash key independent functions of the key, and
 * neither reveals anything about the key used for encryption. */
static const char key_id_context[] = "walvault key id v1";
static const char hash_key_context[] = "walvault block hash key v1";

/* Keyed BLAKE2b with the repository key as its key: a PRF of the key per context. */
static void key_derive(const uint8_t key[SEAL_KEY_BYTES], const char *context,
                       uint8_t out[crypto_generichash_BYTES])
{
    crypto_generichash(out, crypto_generichash_BYTES, (const unsigned char *)context,
                       strlen(context), key, SEAL_KEY_BYTES);
}

static void key_set(struct seal_key *k, const uint8_t raw[SEAL_KEY_BYTES])
{
    uint8_t digest[crypto_generichash_BYTES];
    memcpy(k->key, raw, SEAL_KEY_BYTES);
    key_derive(raw, key_id_context, digest);
    memcpy(k->id, digest, SEAL_KEY_ID_BYTES);
    sodium_bin2hex(k->id_hex, sizeof k->id_hex, k->id, SEAL_KEY_ID_BYTES);
}

static size_t keyring_size(size_t count)
{
    return sizeof(struct seal_keyring) + count * sizeof(struct seal_key);
}

static seal_keyring_t *keyring_alloc(size_t max_keys)
{
    return calloc(1, keyring_size(max_keys));
}

static void keyring_finish(seal_keyring_t *kr)
{
    uint8_t digest[crypto_generichash_BYTES];
    key_derive(kr->keys[0].key, hash_key_context, digest);
    memcpy(kr->hash_key, digest, SEAL_KEY_BYTES);
    sodium_memzero(digest, sizeof digest);
}

int seal_keyring_from_bytes(const uint8_t *keys, size_t count, seal_keyring_t **out, wv_err_t *err)
{
    *out = NULL;
    if (count == 0 || count > KEY_FILE_MAX)
        return wv_err_set(err, WV_EUSAGE, "a keyring needs between 1 and %d keys, not %zu",
                          KEY_FILE_MAX, count);
    seal_keyring_t *kr = keyring_alloc(count);
    if (!kr)
        return wv_err_set(err, WV_EFAIL, "out of memory allocating a keyring");
    for (size_t i = 0; i < count; i++)
        key_set(&kr->keys[i], keys + i * SEAL_KEY_BYTES);
    kr->count = count;
    keyring_finish(kr);
    *out = kr;
    return 0;
}

void seal_keyring_free(seal_keyring_t *kr)
{
    if (!kr)
        return;
    sodium_memzero(kr, keyring_size(kr->count));
    free(kr);
}

const char *seal_keyring_current_id(const seal_keyring_t *kr)
{
    return kr->keys[0].id_hex;
}

bool seal_keyring_has_id(const seal_keyring_t *kr, const char *hex_id)
{
    if (!hex_id)
        return false;
    for (size_t i = 0; i < kr->count; i++)
        if (strcasecmp(kr->keys[i].id_hex, hex_id) == 0)
            return true;
    return false;
}

const struct seal_key *seal_keyring_find(const seal_keyring_t *kr,
                                         const uint8_t id[SEAL_KEY_ID_BYTES])
{
    for (size_t i = 0; i < kr->count; i++)
        if (memcmp(kr->keys[i].id, id, SEAL_KEY_ID_BYTES) == 0)
            return &kr->keys[i];
    return NULL;
}

void seal_block_hash(const seal_keyring_t *kr, const void *data, size_t len,
                     uint8_t out[SEAL_HASH_BYTES])
{
    crypto_generichash(out, SEAL_HASH_BYTES, data, len, kr->hash_key, sizeof kr->hash_key);
}

/* ---- the key file ---- */

static int key_file_open(const char *path, wv_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        return fd;
    if (errno == ENOENT)
        return wv_err_set(err, WV_ENOTFOUND,
                          "key file %s does not exist (create one with walvault keygen --out %s)",
                          path, path);
    return wv_err_errno(err, WV_EFAIL, "cannot open key file %s", path);
}

/* Reads the whole file into text (KEY_FILE_MAX + 1 bytes, so an oversized file shows). */
static int key_file_read(const char *path, char *text, size_t *len, wv_err_t *err)
{
    int fd = key_file_open(path, err);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        log_warn("key file %s can be read by group or others (mode %04o); chmod 600 it", path,
                 (unsigned)(st.st_mode & 07777));
    ssize_t n = fs_read_full(fd, text, KEY_FILE_MAX + 1);
    int saved = errno;
    close(fd);
    if (n < 0) {
        errno = saved;
        return wv_err_errno(err, WV_EFAIL, "cannot read key file %s", path);
    }
    if ((size_t)n > KEY_FILE_MAX)
        return wv_err_set(err, WV_EUSAGE, "key file %s is larger than %d bytes; not a key file",
                          path, KEY_FILE_MAX);
    *len = (size_t)n;
    return 0;
}

static size_t count_lines(const char *text, size_t len)
{
    size_t n = 1;
    for (const char *p = text; (p = memchr(p, '\n', len - (size_t)(p - text))) != NULL; p++)
        n++;
    return n;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Decodes one non-blank line. Errors never echo the line: it may hold a key. */
static int key_line_decode(const char *path, size_t lineno, const char *line, size_t len,
                           uint8_t key[SEAL_KEY_BYTES], wv_err_t *err)
{
    if (len != KEY_HEX_CHARS)
        return wv_err_set(err, WV_EUSAGE,
                          "key file %s line %zu: expected %d hex digits, found %zu characters",
                          path, lineno, KEY_HEX_CHARS, len);
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_hex2bin(key, SEAL_KEY_BYTES, line, len, NULL, &bin_len, &end) != 0 ||
        bin_len != SEAL_KEY_BYTES || end != line + len)
        return wv_err_set(err, WV_EUSAGE,
                          "key file %s line %zu: not a key (expected %d hex digits)", path, lineno,
                          KEY_HEX_CHARS);
    return 0;
}

/* Adds the key on this line, if any: blank lines and "#" comments let operators annotate
 * rotations. */
static int keyring_add_line(seal_keyring_t *kr, const char *path, size_t lineno, const char *line,
                            size_t len, wv_err_t *err)
{
    while (len > 0 && is_blank(*line)) {
        line++;
        len--;
    }
    while (len > 0 && is_blank(line[len - 1]))
        len--;
    if (len == 0 || line[0] == '#')
        return 0;
    uint8_t raw[SEAL_KEY_BYTES];
    int rc = key_line_decode(path, lineno, line, len, raw, err);
    if (rc == 0)
        key_set(&kr->keys[kr->count++], raw);
    sodium_memzero(raw, sizeof raw);
    return rc;
}

static int keyring_parse(const char *path, const char *text, size_t len, seal_keyring_t **out,
                         wv_err_t *err)
{
    seal_keyring_t *kr = keyring_alloc(count_lines(text, len));
    if (!kr)
        return wv_err_set(err, WV_EFAIL, "out of memory loading key file %s", path);
    const char *p = text, *end = text + len;
    size_t lineno = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        int rc = keyring_add_line(kr, path, ++lineno, p, (size_t)(line_end - p), err);
        if (rc) {
            seal_keyring_free(kr);
            return rc;
        }
        p = nl ? nl + 1 : end;
    }
    if (kr->count == 0) {
        seal_keyring_free(kr);
        return wv_err_set(err, WV_EUSAGE,
                          "key file %s holds no key (one %d-hex-digit key per line)", path,
                          KEY_HEX_CHARS);
    }
    keyring_finish(kr);
    *out = kr;
    return 0;
}

int seal_keyring_load(const char *path, seal_keyring_t **out, wv_err_t *err)
{
    *out = NULL;
    char *text = malloc(KEY_FILE_MAX + 1);
    if (!text)
        return wv_err_set(err, WV_EFAIL, "out of memory loading key file %s", path);
    size_t len = 0;
    int rc = key_file_read(path, text, &len, err);
    if (rc == 0)
        rc = keyring_parse(path, text, len, out, err);
    sodium_memzero(text, KEY_FILE_MAX + 1);
    free(text);
    return rc;
}

/* Removes a key file we created but could not finish, so no half-written key remains under
 * the final name. */
static int key_file_abandon(const char *path, int fd, wv_err_t *err)
{
    int saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(path);
    errno = saved;
    return wv_err_errno(err, WV_EFAIL, "cannot write key file %s", path);
}

static int key_file_create(const char *path, const char *data, size_t len, wv_err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return wv_err_set(err, WV_EEXISTS,
                          "key file %s already exists; refusing to overwrite it (a lost key "
                          "makes its backups unreadable)",
                          path);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "cannot create key file %s", path);
    /* A restrictive umask could leave the owner unable to read the key back. */
    if (fchmod(fd, 0600) != 0 || fs_write_all(fd, data, len) != 0 || fsync(fd) != 0)
        return key_file_abandon(path, fd, err);
    if (close(fd) != 0)
        return key_file_abandon(path, -1, err);
    return fs_fsync_parent(path, err);
}

int seal_keygen(const char *path, wv_err_t *err)
{
    uint8_t key[SEAL_KEY_BYTES];
    char line[KEY_HEX_CHARS + 2];
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(line, KEY_HEX_CHARS + 1, key, sizeof key);
    line[KEY_HEX_CHARS] = '\n';
    int rc = key_file_create(path, line, KEY_HEX_CHARS + 1, err);
    sodium_memzero(key, sizeof key);
    sodium_memzero(line, sizeof line);
    return rc;
}
