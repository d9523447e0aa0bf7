/* bench/s3xfer: one object through walvault's storage layer (storage/storage.h), for the S3
 * part of the benchmark. Nothing but the backend: no compression, no encryption, no pack
 * format, so that its transfer rate can be set beside `aws s3 cp` on the same server.
 *
 *   s3xfer [--endpoint URL] [--region R] [--uri-style path|host] put STORE KEY FILE
 *   s3xfer [--endpoint URL] [--region R] [--uri-style path|host] get STORE KEY
 *   s3xfer [--endpoint URL] [--region R] [--uri-style path|host] del STORE KEY
 *
 * STORE is a storage URL ("s3://bucket/prefix" or "file:///dir"). put streams FILE ("-":
 * standard input) into KEY with storage_put_begin / storage_put_write / storage_put_commit
 * (the streaming writer the backup's packs go through: a multipart upload with parts in
 * flight in parallel once the object passes one part) and prints the byte count. get streams
 * KEY to standard output with storage_get_stream (one GET, as walvault reads an object).
 * Credentials come from the backend's own fallbacks (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, ...), the region from --region or AWS_REGION.
 *
 * Built by bench/run.sh against the static libraries of the walvault build it measures
 * (libwv_storage.a, libwv_common.a). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "storage/storage.h"

#define CHUNK (1024 * 1024)

static void usage(void)
{
    fprintf(stderr, "usage: s3xfer [--endpoint URL] [--region R] [--uri-style path|host] "
                    "put STORE KEY FILE | get STORE KEY | del STORE KEY\n");
    exit(2);
}

static int to_stdout(void *ctx, const void *data, size_t len, wv_err_t *err)
{
    (void)ctx;
    if (fs_write_all(STDOUT_FILENO, data, len) != 0)
        return wv_err_errno(err, WV_EFAIL, "write to standard output");
    return 0;
}

static int do_put(storage_t *st, const char *key, const char *path, wv_err_t *err)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wv_err_errno(err, WV_EFAIL, "open %s", path);
    char *buf = malloc(CHUNK);
    if (!buf) {
        if (fd != STDIN_FILENO)
            close(fd);
        return wv_err_set(err, WV_EFAIL, "out of memory");
    }
    storage_writer_t *w = NULL;
    unsigned long long total = 0;
    int rc = storage_put_begin(st, key, false, &w, err);
    while (!rc) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = wv_err_errno(err, WV_EFAIL, "read %s", path);
            break;
        }
        if (n == 0)
            break;
        rc = storage_put_write(w, buf, (size_t)n, err);
        total += (unsigned long long)n;
    }
    if (w) {
        if (rc)
            storage_put_abort(w);
        else
            rc = storage_put_commit(w, err);
    }
    free(buf);
    if (fd != STDIN_FILENO)
        close(fd);
    if (!rc)
        printf("%llu\n", total);
    return rc;
}

int main(int argc, char **argv)
{
    struct storage_opts opts = {0};
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--endpoint") == 0)
            opts.s3_endpoint = argv[i + 1];
        else if (strcmp(argv[i], "--region") == 0)
            opts.s3_region = argv[i + 1];
        else if (strcmp(argv[i], "--uri-style") == 0)
            opts.s3_uri_style = argv[i + 1];
        else
            usage();
    }
    if (argc - i < 3)
        usage();
    const char *cmd = argv[i], *url = argv[i + 1], *key = argv[i + 2];
    bool put = strcmp(cmd, "put") == 0, get = strcmp(cmd, "get") == 0,
         del = strcmp(cmd, "del") == 0;
    if ((put && argc - i != 4) || ((get || del) && argc - i != 3) || !(put || get || del))
        usage();

    wv_err_t err = {0};
    storage_t *st = NULL;
    int rc = storage_open(url, &opts, &st, &err);
    if (!rc) {
        if (put) {
            rc = do_put(st, key, argv[i + 3], &err);
        } else if (get) {
            rc = storage_get_stream(st, key, to_stdout, NULL, &err);
        } else {
            rc = storage_delete(st, key, &err);
        }
        storage_close(st);
    }
    if (rc) {
        fprintf(stderr, "s3xfer %s %s %s: %s\n", cmd, url, key, err.msg);
        return 1;
    }
    return 0;
}
