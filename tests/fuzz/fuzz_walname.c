/* libFuzzer target for the WAL parsers that see outside bytes: archived file names, LSN text,
 * timeline history files and segment page headers. Inputs are copied into buffers of exactly
 * their size so AddressSanitizer catches any read past the end. Besides not crashing, what
 * parses must print back the same way.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_walname.c \
 *       wal/walname.c common/err.c -o fuzz_walname && ./fuzz_walname -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wal/walname.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_NAME 256
#define MAX_HISTORY 16

static uint32_t pick_seg_size(uint8_t b)
{
    /* Mostly valid sizes, sometimes an invalid one. */
    if (b >= 0xF0)
        return (uint32_t)b * 12345u;
    return (1u << 20) << (b % 11);
}

static void check_name(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    uint32_t seg_size = pick_seg_size(data[0]);
    size_t n = size - 1 < MAX_NAME ? size - 1 : MAX_NAME;
    char *name = malloc(n + 1);
    if (!name)
        return;
    memcpy(name, data + 1, n);
    name[n] = '\0';

    struct wal_file f;
    wv_err_t err;
    if (wal_file_parse(name, seg_size, &f, &err) == 0) {
        char again[WAL_NAME_MAX];
        if (f.kind == WAL_KIND_HISTORY) {
            wal_history_name(f.tli, again);
            if (strcmp(again, name) != 0)
                abort();
        } else {
            wal_segment_name(f.tli, f.segno, seg_size, again);
            if (strncmp(again, name, WAL_NAME_LEN) != 0)
                abort();
        }
    }

    wal_lsn_t lsn;
    if (wal_lsn_parse(name, &lsn, &err) == 0) {
        char text[WAL_LSN_STR_MAX];
        wal_lsn_t back;
        wal_lsn_format(lsn, text);
        if (wal_lsn_parse(text, &back, &err) != 0 || back != lsn)
            abort();
    }
    free(name);
}

static void check_history(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        return;
    memcpy(text, data, size);
    struct wal_history_entry entries[MAX_HISTORY];
    wv_err_t err;
    int n = wal_history_parse(text, size, entries, MAX_HISTORY, &err);
    if (n > MAX_HISTORY)
        abort();
    for (int i = 1; i < n; i++)
        if (entries[i].tli <= entries[i - 1].tli)
            abort();
    free(text);
}

static void check_header(const uint8_t *data, size_t size)
{
    uint8_t *page = malloc(size ? size : 1);
    if (!page)
        return;
    memcpy(page, data, size);
    struct wal_segment_header h;
    wv_err_t err;
    if (wal_segment_header_parse(page, size, &h, &err) == 0) {
        if (!wal_seg_size_valid(h.seg_size) || h.pageaddr % h.seg_size != 0)
            abort();
    }
    free(page);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_name(data, size);
    check_history(data, size);
    check_header(data, size);
    return 0;
}
