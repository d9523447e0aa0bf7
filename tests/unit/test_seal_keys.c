/* Repository keys: keygen (mode 0600, never overwrites, a fresh key each time), loading a key
 * file (comments, CRLF, the first key current, a clear error for each malformed line, never
 * a key in an error), key rotation (objects sealed under an older key still open, new ones
 * carry the new key id) and the keyed block hash. Opening with a wrong key is in
 * test_seal_tamper.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "crypto/internal.h"
#include "crypto/seal.h"
#include "seal_fixtures.h"

static void frame_key_id(const buf_t *sealed, char hex[SEAL_KEY_ID_HEX])
{
    sodium_bin2hex(hex, SEAL_KEY_ID_HEX, sealed->data + SEAL_HEADER_BYTES + 9, SEAL_KEY_ID_BYTES);
}

static void test_key_rotation(void **state)
{
    (void)state;
    seal_keyring_t *a = ring_of("A"), *b = ring_of("B"), *ba = ring_of("BA");
    uint8_t *data = compressible_data(3 * MIB);
    buf_t old_obj, new_obj, plain;
    wv_err_t err;
    seal_stream(a, NAME, data, 3 * MIB, 3 * MIB, &old_obj);
    seal_stream(ba, NAME, data, 3 * MIB, 3 * MIB, &new_obj);

    assert_int_equal(open_stream(ba, NAME, old_obj.data, old_obj.len, 4096, &plain, &err), 0);
    assert_int_equal(plain.len, 3 * MIB);
    assert_memory_equal(plain.data, data, 3 * MIB);
    buf_free(&plain);

    char hex[SEAL_KEY_ID_HEX];
    assert_string_equal(seal_keyring_current_id(ba), seal_keyring_current_id(b));
    frame_key_id(&new_obj, hex);
    assert_string_equal(hex, seal_keyring_current_id(b));
    frame_key_id(&old_obj, hex);
    assert_string_equal(hex, seal_keyring_current_id(a));
    assert_true(seal_keyring_has_id(ba, seal_keyring_current_id(a)));
    assert_false(seal_keyring_has_id(a, seal_keyring_current_id(b)));

    assert_int_equal(open_stream(a, NAME, new_obj.data, new_obj.len, 4096, &plain, &err),
                     WV_ECORRUPT);
    assert_msg_has(&err, "not in the key file");
    buf_free(&plain);

    buf_free(&old_obj);
    buf_free(&new_obj);
    free(data);
    seal_keyring_free(a);
    seal_keyring_free(b);
    seal_keyring_free(ba);
}

/* ---- keys ---- */

static char *temp_dir(void)
{
    char *dir = strdup("/tmp/test_seal.XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0); /* as a key file should be: no warning */
}

static void test_keygen(void **state)
{
    (void)state;
    char *dir = temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/repo.key", dir);
    wv_err_t err;
    mode_t old_mask = umask(0277); /* would strip the owner's read bit if not forced */
    assert_int_equal(seal_keygen(path, &err), 0);
    umask(old_mask);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, SEAL_KEY_BYTES * 2 + 1);

    char before[256];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(before, sizeof before, f));
    fclose(f);
    assert_int_equal(seal_keygen(path, &err), WV_EEXISTS);
    assert_msg_has(&err, path);
    assert_msg_has(&err, "refusing to overwrite");
    f = fopen(path, "r");
    char after[256];
    assert_non_null(f);
    assert_non_null(fgets(after, sizeof after, f));
    fclose(f);
    assert_string_equal(before, after);

    seal_keyring_t *kr = NULL;
    assert_int_equal(seal_keyring_load(path, &kr, &err), 0);
    assert_int_equal(kr->count, 1);
    assert_int_equal(strlen(seal_keyring_current_id(kr)), SEAL_KEY_ID_BYTES * 2);

    /* The key it loads is the key in the file. */
    uint8_t raw[SEAL_KEY_BYTES];
    assert_int_equal(sodium_hex2bin(raw, sizeof raw, before, 64, NULL, NULL, NULL), 0);
    seal_keyring_t *same = NULL;
    assert_int_equal(seal_keyring_from_bytes(raw, 1, &same, &err), 0);
    assert_string_equal(seal_keyring_current_id(kr), seal_keyring_current_id(same));
    seal_keyring_free(same);
    seal_keyring_free(kr);

    /* A second keygen makes a different key. */
    char path2[512];
    snprintf(path2, sizeof path2, "%s/second.key", dir);
    assert_int_equal(seal_keygen(path2, &err), 0);
    assert_int_equal(seal_keyring_load(path2, &kr, &err), 0);
    assert_int_equal(seal_keyring_load(path, &same, &err), 0);
    assert_string_not_equal(seal_keyring_current_id(kr), seal_keyring_current_id(same));
    seal_keyring_free(same);
    seal_keyring_free(kr);

    unlink(path);
    unlink(path2);
    rmdir(dir);
    free(dir);
}

static const char key_a_hex[] = "4141414141414141414141414141414141414141414141414141414141414141";
static const char key_b_hex[] = "4242424242424242424242424242424242424242424242424242424242424242";

static void assert_load_fails(const char *dir, const char *text, int code, const char *why)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad.key", dir);
    write_text(path, text);
    seal_keyring_t *kr = (seal_keyring_t *)1;
    wv_err_t err;
    assert_int_equal(seal_keyring_load(path, &kr, &err), code);
    assert_null(kr);
    assert_msg_has(&err, path);
    assert_msg_has(&err, why);
    assert_null(strchr(err.msg, '\n'));
    assert_null(strstr(err.msg, "4141414141")); /* a key never shows in an error */
    unlink(path);
}

static void test_keyring_load(void **state)
{
    (void)state;
    char *dir = temp_dir();
    char path[512];
    wv_err_t err;
    seal_keyring_t *kr = NULL;

    snprintf(path, sizeof path, "%s/missing.key", dir);
    assert_int_equal(seal_keyring_load(path, &kr, &err), WV_ENOTFOUND);
    assert_msg_has(&err, path);

    assert_load_fails(dir, "", WV_EUSAGE, "holds no key");
    assert_load_fails(dir, "# only a comment\n\n", WV_EUSAGE, "holds no key");
    char text[512];
    snprintf(text, sizeof text, "%.62s\n", key_a_hex);
    assert_load_fails(dir, text, WV_EUSAGE, "line 1: expected 64 hex digits, found 62");
    snprintf(text, sizeof text, "%.63sg\n", key_a_hex);
    assert_load_fails(dir, text, WV_EUSAGE, "line 1: not a key");
    snprintf(text, sizeof text, "%s\n%s41\n", key_a_hex, key_a_hex);
    assert_load_fails(dir, text, WV_EUSAGE, "line 2");

    /* Comments, blank lines, CRLF and surrounding spaces are fine; the first key is current. */
    snprintf(text, sizeof text, "# rotated 2024-05-01\r\n\r\n  %s \r\n%s\n", key_b_hex, key_a_hex);
    snprintf(path, sizeof path, "%s/good.key", dir);
    write_text(path, text);
    assert_int_equal(seal_keyring_load(path, &kr, &err), 0);
    assert_int_equal(kr->count, 2);
    seal_keyring_t *b = ring_of("B"), *a = ring_of("A");
    assert_string_equal(seal_keyring_current_id(kr), seal_keyring_current_id(b));
    assert_true(seal_keyring_has_id(kr, seal_keyring_current_id(a)));
    seal_keyring_free(a);
    seal_keyring_free(b);
    seal_keyring_free(kr);

    /* Loose permissions are worth a warning, not a refusal. */
    assert_int_equal(chmod(path, 0644), 0);
    log_set_level(LOG_ERROR);
    assert_int_equal(seal_keyring_load(path, &kr, &err), 0);
    log_set_level(LOG_INFO);
    seal_keyring_free(kr);
    unlink(path);

    rmdir(dir);
    free(dir);
}

static void test_block_hash(void **state)
{
    (void)state;
    seal_keyring_t *a = ring_of("A"), *a2 = ring_of("A"), *b = ring_of("B"), *ab = ring_of("AB");
    uint8_t page[8192];
    memset(page, 0x33, sizeof page);
    uint8_t h1[SEAL_HASH_BYTES], h2[SEAL_HASH_BYTES], h3[SEAL_HASH_BYTES];

    seal_block_hash(a, page, sizeof page, h1);
    seal_block_hash(a2, page, sizeof page, h2);
    assert_memory_equal(h1, h2, SEAL_HASH_BYTES); /* stable for one key */
    seal_block_hash(ab, page, sizeof page, h2);
    assert_memory_equal(h1, h2, SEAL_HASH_BYTES); /* follows the current key only */
    seal_block_hash(b, page, sizeof page, h3);
    assert_memory_not_equal(h1, h3, SEAL_HASH_BYTES); /* differs between keys */

    uint8_t plain_hash[SEAL_HASH_BYTES];
    crypto_generichash(plain_hash, sizeof plain_hash, page, sizeof page, NULL, 0);
    assert_memory_not_equal(h1, plain_hash, SEAL_HASH_BYTES); /* keyed */
    page[4000] ^= 1;
    seal_block_hash(a, page, sizeof page, h3);
    assert_memory_not_equal(h1, h3, SEAL_HASH_BYTES);

    seal_keyring_free(a);
    seal_keyring_free(a2);
    seal_keyring_free(b);
    seal_keyring_free(ab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_keyring_load),
        cmocka_unit_test(test_block_hash),
    };
    return cmocka_run_group_tests(tests, seal_group_setup, NULL);
}
