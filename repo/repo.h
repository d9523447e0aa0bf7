/* The repository: one store (storage/) holding many nodes, every object but repo.json
 * sealed (crypto/). Opening a repository checks that the configured key is one of its keys,
 * so every command refuses a wrong key the same way. */
#ifndef WALVAULT_REPO_REPO_H
#define WALVAULT_REPO_REPO_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "crypto/seal.h"
#include "storage/storage.h"

#define REPO_FORMAT_VERSION 1
#define REPO_KEY_MAX 512
/* Largest JSON document (manifests included) read into memory at once. */
#define REPO_JSON_MAX (512u * 1024 * 1024)

struct repo_config {
    const char *url;
    const char *key_file;
    const char *node;
    struct storage_opts storage;
};

typedef struct repo repo_t;

/* Creates repo.json if absent (put-if-absent, so two inits cannot race); succeeds when the
 * repository exists and already knows this key. *created tells which happened. */
int repo_init(const struct repo_config *cfg, bool *created, wv_err_t *err);
int repo_open(const struct repo_config *cfg, repo_t **out, wv_err_t *err);
void repo_close(repo_t *r);

storage_t *repo_storage(repo_t *r);
const seal_keyring_t *repo_keys(const repo_t *r);
const char *repo_node(const repo_t *r);

/* Sealed objects. The object's key is authenticated with its content. */
int repo_put_sealed(repo_t *r, const char *key, const void *data, size_t len, bool if_absent,
                    wv_err_t *err);
int repo_get_sealed(repo_t *r, const char *key, buf_t *out, size_t max, wv_err_t *err);
int repo_get_sealed_stream(repo_t *r, const char *key, seal_sink_fn sink, void *ctx, wv_err_t *err);
int repo_put_json(repo_t *r, const char *key, json_t *doc, bool if_absent, wv_err_t *err);
int repo_get_json(repo_t *r, const char *key, json_t **out, wv_err_t *err);

/* Seals the whole file open at fd as object key, up to `jobs` frames sealed at once (WAL
 * segments: the archive_command's latency is mostly compression and encryption). Memory:
 * about 2 x jobs x 2 frames. */
int repo_put_sealed_fd(repo_t *r, const char *key, int fd, bool if_absent, int jobs, wv_err_t *err);

/* Streaming sealed put: plaintext in, sealed frames out to the store; nothing visible under
 * key before commit. */
typedef struct repo_sealed_writer repo_sealed_writer_t;
int repo_sealed_begin(repo_t *r, const char *key, bool if_absent, repo_sealed_writer_t **out,
                      wv_err_t *err);
int repo_sealed_write(repo_sealed_writer_t *w, const void *data, size_t len, wv_err_t *err);
int repo_sealed_commit(repo_sealed_writer_t *w, wv_err_t *err); /* frees w */
void repo_sealed_abort(repo_sealed_writer_t *w);                /* frees w */

/* Object names (relative to the repository root). */
int repo_key_node_record(const repo_t *r, char *out, size_t len);
int repo_key_wal_dir(const repo_t *r, uint32_t tli, char *out, size_t len);
int repo_key_wal(const repo_t *r, uint32_t tli, const char *file, char *out, size_t len);
int repo_key_backups_dir(const repo_t *r, char *out, size_t len);
int repo_key_backup(const repo_t *r, const char *backup_id, char *out, size_t len);
int repo_key_pack(const repo_t *r, const char *pack_id, char *out, size_t len);
/* Node names: letters, digits, '-', '_', '.', 1..63 characters, not starting with '.'. */
int repo_check_node_name(const char *node, wv_err_t *err);

/* The node record binds a node name to one PostgreSQL cluster. */
struct repo_node_info {
    uint64_t system_identifier;
    int pg_version; /* e.g. 150020, 0 when unknown */
    uint32_t wal_seg_size;
};
/* Creates the node record on first use; afterwards refuses another system identifier with
 * WV_EMISMATCH and a message naming both identifiers. Fields left 0 are not compared. */
int repo_node_bind(repo_t *r, const struct repo_node_info *info, wv_err_t *err);
int repo_node_get(repo_t *r, struct repo_node_info *out, wv_err_t *err);

/* The agent lease (repo/lock.c): one agent per node. Expiry times are the holder's wall
 * clock; another agent takes an expired lease over only REPO_LEASE_GRACE_MS after its
 * expiry, which assumes the hosts' clocks differ by less than that (NTP keeps them within
 * milliseconds). */
#define REPO_LEASE_GRACE_MS 5000
struct repo_lease {
    char holder[128]; /* "host:pid:random" */
    uint64_t generation;
    int64_t renewed_ms, expires_ms; /* epoch milliseconds, the holder's clock */
    int64_t lease_ms;
    bool released; /* given up at a clean stop: the next agent need not wait */
};
/* Takes the node's lease when no live one stands (absent, released, or expired more than
 * the grace ago). WV_EEXISTS with a message naming the holder and its expiry otherwise.
 * The lease is nodes/<node>/agent/lease-<generation>: see repo/lock.c. */
int repo_lease_acquire(repo_t *r, const char *holder, int64_t lease_ms, int64_t now_ms,
                       struct repo_lease *out, wv_err_t *err);
/* Pushes the expiry to now + lease. WV_EMISMATCH, naming the new holder, when another agent
 * took the lease over; other codes are store failures worth retrying. */
int repo_lease_renew(repo_t *r, struct repo_lease *l, int64_t now_ms, wv_err_t *err);
/* Marks the lease released (a clean shutdown), so that a successor need not wait. */
int repo_lease_release(repo_t *r, const struct repo_lease *l, wv_err_t *err);

#endif
