/* wal-stream: WAL received over a physical replication slot and archived as it arrives.
 *
 * Bytes gather per segment in one segment-sized buffer. Whatever is not yet archived is
 * sealed and stored as a fragment (wal/archive.h) at each sync interval, whenever the server
 * asks for a reply, and, when synchronous_standby_names names this stream, as soon as the
 * socket is drained; a finished segment is stored whole, as wal-push would, and its
 * fragments are deleted. Stores run on a second thread while bytes keep arriving, so
 * everything received during one store goes into the next: one store per batch of commits,
 * not per commit. The server hears as written, flushed and applied exactly the LSN durable
 * in the repository, so its slot keeps every byte not yet archived and a synchronous commit
 * returns only once its WAL is in the repository. */
#ifndef WALVAULT_WAL_STREAM_H
#define WALVAULT_WAL_STREAM_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repo/repo.h"
#include "wal/walname.h"

/* What the stream is doing, for a health endpoint or metrics (read from any thread). */
struct wal_stream_stats {
    atomic_uint_fast64_t received_lsn; /* end of the WAL received */
    atomic_uint_fast64_t archived_lsn; /* end of the WAL durable in the repository */
    atomic_uint_fast32_t timeline;
    atomic_bool streaming;             /* connected and in START_REPLICATION */
    atomic_bool synchronous;           /* synchronous_standby_names names us */
    atomic_uint_fast64_t fragments;    /* fragments stored */
    atomic_uint_fast64_t segments;     /* whole segments stored */
    atomic_uint_fast64_t bytes_stored; /* plaintext bytes stored, fragments and segments */
    atomic_uint_fast64_t store_errors; /* failed stores (each is retried) */
    atomic_uint_fast64_t reconnects;
    atomic_int_fast64_t last_fragment_ms; /* wall clock, epoch milliseconds; 0: never */
    atomic_int_fast64_t last_segment_ms;
};

struct wal_stream_opts {
    const char *conninfo;         /* libpq connection string; NULL: libpq's environment */
    const char *slot;             /* NULL: "walvault_<node>", made a valid slot name */
    const char *application_name; /* NULL: the node name */
    double sync_interval_s;       /* <= 0: 1 s */
    /* Set (from a signal handler) to stop: what was received is stored and reported first. */
    volatile sig_atomic_t *stop;
    struct wal_stream_stats *stats; /* optional */
};

/* Streams until *stop, then returns 0. PostgreSQL restarts, network drops and store
 * failures are retried with backoff for as long as it runs; it fails only on what retrying
 * cannot mend: a server of another cluster or segment size than the node's, or WAL that
 * differs from what the repository holds under the same name. */
int wal_stream_run(repo_t *r, const struct wal_stream_opts *o, wv_err_t *err);

/* "walvault_<node>" as a replication slot name: lowercase letters, digits and '_', at most
 * 63 characters. */
void wal_stream_slot_name(const char *node, char *out, size_t len);

/* Whether synchronous_standby_names ("a, b", "FIRST 1 (a, \"B\")", "ANY 2 (*)", ...)
 * names application_name (compared as PostgreSQL does: case-insensitively). */
bool wal_stream_is_named(const char *standby_names, const char *application_name);

#endif
