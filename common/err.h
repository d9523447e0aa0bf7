/* Error records: every fallible function returns 0 or a negative WV_E* code and fills a
 * caller-provided wv_err_t with one line that names the object, file or LSN involved. */
#ifndef WALVAULT_COMMON_ERR_H
#define WALVAULT_COMMON_ERR_H

#include <stddef.h>

#define WV_ERR_MSG_MAX 1024

enum wv_code {
    WV_OK = 0,
    WV_EFAIL = -1,     /* generic failure */
    WV_ENOTFOUND = -2, /* object or file absent */
    WV_EEXISTS = -3,   /* put-if-absent found the object */
    WV_ECORRUPT = -4,  /* authentication or format check failed */
    WV_EUSAGE = -5,    /* bad input from the operator */
    WV_ETIMEOUT = -6,  /* a bounded wait ran out */
    WV_EMISMATCH = -7, /* object exists with different content, or other cluster/key */
};

typedef struct wv_err {
    int code;
    char msg[WV_ERR_MSG_MAX];
} wv_err_t;

/* Sets the record and returns code, so callers can write `return wv_err_set(...)`. */
int wv_err_set(wv_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like wv_err_set, with ": strerror(errno)" appended. */
int wv_err_errno(wv_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with context ("while X: old message"). */
int wv_err_prefix(wv_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wv_err_clear(wv_err_t *err);

#endif
