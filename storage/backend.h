/* The table of functions each backend fills in. Private to storage/. */
#ifndef WALVAULT_STORAGE_BACKEND_H
#define WALVAULT_STORAGE_BACKEND_H

#include "storage/storage.h"

struct storage_ops {
    int (*put_begin)(storage_t *st, const char *key, bool if_absent, storage_writer_t **out,
                     wv_err_t *err);
    int (*put_write)(storage_writer_t *w, const void *data, size_t len, wv_err_t *err);
    int (*put_commit)(storage_writer_t *w, wv_err_t *err);
    void (*put_abort)(storage_writer_t *w);
    int (*get_stream)(storage_t *st, const char *key, storage_sink_fn sink, void *ctx,
                      wv_err_t *err);
    int (*get_range)(storage_t *st, const char *key, uint64_t off, size_t len, void *out,
                     wv_err_t *err);
    int (*head)(storage_t *st, const char *key, uint64_t *size, wv_err_t *err);
    int (*del)(storage_t *st, const char *key, wv_err_t *err);
    int (*list_open)(storage_t *st, const char *prefix, storage_iter_t **out, wv_err_t *err);
    int (*iter_next)(storage_iter_t *it, const char **key, uint64_t *size, wv_err_t *err);
    void (*iter_close)(storage_iter_t *it);
    /* Optional: deletes many keys, absent ones included; NULL makes storage.c loop on del. */
    int (*del_many)(storage_t *st, const char *const *keys, size_t count, wv_err_t *err);
    void (*close)(storage_t *st);
};

/* Backends embed these as the first member of their own writer and iterator structs. */
struct storage_writer {
    storage_t *st;
};
struct storage_iter {
    storage_t *st;
};

struct storage {
    const struct storage_ops *ops;
    char *url;
    void *impl;
};

int storage_file_open(const char *dir, storage_t *st, wv_err_t *err);
/* url: "s3://bucket[/prefix]"; fills st->ops, st->impl and st->url. */
int storage_s3_open(const char *url, const struct storage_opts *opts, storage_t *st, wv_err_t *err);
/* Rejects keys that could escape the store ("..", leading '/', empty parts). */
int storage_check_key(const char *key, wv_err_t *err);

#endif
