/* Listing a file:// repository: a depth-first walk that holds one sorted directory per
 * level, so memory is bounded by depth x entries of one directory, never the whole tree.
 * Names starting with '.' (temporary files being written) are skipped. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/file_internal.h"

struct list_entry {
    char *name;
    size_t len;
    bool is_dir;
};

struct list_level {
    struct list_entry *ents;
    size_t n, cap, next;
    size_t key_len; /* bytes of it->key naming this directory, with its trailing '/' */
};

struct file_iter {
    struct storage_iter base;
    const struct file_store *fs;
    char *prefix;
    size_t prefix_len;
    struct list_level *levels;
    size_t depth, cap;
    char key[PATH_MAX];
};

/* A directory sorts as its name followed by '/', which is where its keys sort: "b-c" and
 * "b.x" come before the keys of directory "b", "bb" after them. */
static int entry_char(const struct list_entry *e, size_t i)
{
    if (i < e->len)
        return (unsigned char)e->name[i];
    return (i == e->len && e->is_dir) ? '/' : -1;
}

static int compare_entries(const void *a, const void *b)
{
    const struct list_entry *x = a, *y = b;
    for (size_t i = 0;; i++) {
        int cx = entry_char(x, i), cy = entry_char(y, i);
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (cx < 0)
            return 0;
    }
}

/* Whether key_prefix + name (+ '/' for a directory) can lead to keys starting with the
 * list prefix; key_prefix is known to be compatible already. */
static bool entry_matches(const struct file_iter *it, size_t key_len, const char *name, bool is_dir)
{
    if (key_len >= it->prefix_len)
        return true;
    const char *rest = it->prefix + key_len;
    size_t rest_len = it->prefix_len - key_len;
    size_t len = strlen(name);
    if (!is_dir)
        return len >= rest_len && memcmp(name, rest, rest_len) == 0;
    if (len >= rest_len)
        return memcmp(name, rest, rest_len) == 0;
    return memcmp(name, rest, len) == 0 && rest[len] == '/';
}

/* 1 when the entry is a directory, 0 a regular file, -1 to skip (other kinds, vanished). */
static int entry_kind(DIR *d, const struct dirent *de)
{
    if (de->d_type == DT_DIR)
        return 1;
    if (de->d_type == DT_REG)
        return 0;
    struct stat sb;
    if (fstatat(dirfd(d), de->d_name, &sb, 0) != 0)
        return -1;
    return S_ISDIR(sb.st_mode) ? 1 : S_ISREG(sb.st_mode) ? 0 : -1;
}

static int add_entry(struct list_level *lv, const char *name, bool is_dir)
{
    if (lv->n == lv->cap) {
        size_t cap = lv->cap ? lv->cap * 2 : 16;
        struct list_entry *p = realloc(lv->ents, cap * sizeof *p);
        if (!p)
            return -1;
        lv->ents = p;
        lv->cap = cap;
    }
    struct list_entry *e = &lv->ents[lv->n];
    e->name = strdup(name);
    if (!e->name)
        return -1;
    e->len = strlen(name);
    e->is_dir = is_dir;
    lv->n++;
    return 0;
}

static void free_level(struct list_level *lv)
{
    for (size_t i = 0; i < lv->n; i++)
        free(lv->ents[i].name);
    free(lv->ents);
}

static int list_error(const struct file_iter *it, size_t key_len, const char *path, wv_err_t *err)
{
    return wv_err_errno(err, WV_EFAIL, "cannot list objects under %.*s (%s)", (int)key_len, it->key,
                        path);
}

static int read_entries(struct file_iter *it, DIR *d, struct list_level *lv, const char *path,
                        wv_err_t *err)
{
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de)
            return errno ? list_error(it, lv->key_len, path, err) : 0;
        if (de->d_name[0] == '.') /* ".", "..", temporary files */
            continue;
        if (!entry_matches(it, lv->key_len, de->d_name, false) &&
            !entry_matches(it, lv->key_len, de->d_name, true))
            continue;
        int kind = entry_kind(d, de);
        if (kind < 0 || !entry_matches(it, lv->key_len, de->d_name, kind == 1))
            continue;
        if (add_entry(lv, de->d_name, kind == 1) != 0)
            return wv_err_set(err, WV_EFAIL, "out of memory listing %s", path);
    }
}

static int push_level(struct file_iter *it, const struct list_level *lv, wv_err_t *err)
{
    if (it->depth == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 8;
        struct list_level *p = realloc(it->levels, cap * sizeof *p);
        if (!p)
            return wv_err_set(err, WV_EFAIL, "out of memory listing objects");
        it->levels = p;
        it->cap = cap;
    }
    it->levels[it->depth++] = *lv;
    return 0;
}

/* Reads and sorts the directory named by it->key[0..key_len) and makes it the current
 * level. A directory that does not exist (or vanished meanwhile) has no keys. */
static int open_level(struct file_iter *it, size_t key_len, wv_err_t *err)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%.*s", it->fs->root, (int)key_len, it->key);
    if (n < 0 || (size_t)n >= sizeof path)
        return wv_err_set(err, WV_EFAIL, "path too long listing %.100s...", it->key);
    DIR *d = opendir(path);
    if (!d)
        return file_is_absent_errno(errno) ? 0 : list_error(it, key_len, path, err);
    struct list_level lv = {.key_len = key_len};
    int rc = read_entries(it, d, &lv, path, err);
    closedir(d);
    if (!rc) {
        if (lv.n > 1)
            qsort(lv.ents, lv.n, sizeof *lv.ents, compare_entries);
        rc = push_level(it, &lv, err);
    }
    if (rc)
        free_level(&lv);
    return rc;
}

static void pop_level(struct file_iter *it)
{
    free_level(&it->levels[--it->depth]);
}

/* 1 with *size when it->key is still a regular file, 0 when it vanished since readdir. */
static int stat_listed(struct file_iter *it, uint64_t *size, wv_err_t *err)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", it->fs->root, it->key);
    if (n < 0 || (size_t)n >= sizeof path)
        return wv_err_set(err, WV_EFAIL, "path too long listing %.100s...", it->key);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (file_is_absent_errno(errno))
            return 0;
        return wv_err_errno(err, WV_EFAIL, "cannot stat object %s (%s)", it->key, path);
    }
    if (!S_ISREG(sb.st_mode))
        return 0;
    *size = (uint64_t)sb.st_size;
    return 1;
}

int file_list_open(storage_t *st, const char *prefix, storage_iter_t **out, wv_err_t *err)
{
    struct file_iter *it = calloc(1, sizeof *it);
    if (!it || !(it->prefix = strdup(prefix))) {
        free(it);
        return wv_err_set(err, WV_EFAIL, "out of memory listing %s", prefix);
    }
    it->base.st = st;
    it->fs = file_store_of(st);
    it->prefix_len = strlen(prefix);
    /* Start in the deepest directory the prefix names whole, not at the root. */
    const char *slash = strrchr(prefix, '/');
    size_t start = slash ? (size_t)(slash - prefix) + 1 : 0;
    if (start >= sizeof it->key) {
        free(it->prefix);
        free(it);
        return wv_err_set(err, WV_EFAIL, "list prefix too long: %.100s...", prefix);
    }
    memcpy(it->key, prefix, start);
    int rc = open_level(it, start, err);
    if (rc) {
        free(it->prefix);
        free(it);
        return rc;
    }
    *out = &it->base;
    return 0;
}

/* Fills it->key with the entry's key; a directory's ends in '/'. Returns its length. */
static int set_entry_key(struct file_iter *it, size_t key_len, const struct list_entry *e,
                         size_t *len, wv_err_t *err)
{
    *len = key_len + e->len + (e->is_dir ? 1 : 0);
    if (*len >= sizeof it->key)
        return wv_err_set(err, WV_EFAIL, "key too long while listing %.100s...", it->key);
    memcpy(it->key + key_len, e->name, e->len);
    if (e->is_dir)
        it->key[key_len + e->len] = '/';
    it->key[*len] = '\0';
    return 0;
}

int file_iter_next(storage_iter_t *base, const char **key, uint64_t *size, wv_err_t *err)
{
    struct file_iter *it = (struct file_iter *)base;
    while (it->depth > 0) {
        struct list_level *lv = &it->levels[it->depth - 1];
        if (lv->next == lv->n) {
            pop_level(it);
            continue;
        }
        const struct list_entry *e = &lv->ents[lv->next++];
        size_t len;
        int rc = set_entry_key(it, lv->key_len, e, &len, err);
        if (!rc && e->is_dir)
            rc = open_level(it, len, err); /* may move it->levels: e and lv are stale */
        else if (!rc)
            rc = stat_listed(it, size, err);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            *key = it->key;
            return 1;
        }
    }
    return 0;
}

void file_iter_close(storage_iter_t *base)
{
    struct file_iter *it = (struct file_iter *)base;
    while (it->depth > 0)
        pop_level(it);
    free(it->levels);
    free(it->prefix);
    free(it);
}
