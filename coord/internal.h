/* What the files of coord/ share: the few libpq calls a watermark makes on each node. */
#ifndef WALVAULT_COORD_INTERNAL_H
#define WALVAULT_COORD_INTERNAL_H

#include <libpq-fe.h>

#include "coord/coord.h"

/* Connects with a bounded wait (connect_timeout, unless the node's conninfo sets its own).
 * Errors name the node and its role. */
int coord_pg_connect(const struct coord_node *n, int timeout_s, PGconn **out, wv_err_t *err);

struct coord_pg_info {
    uint64_t system_identifier;
    uint32_t seg_size;
};
/* The node's identity; a standby (in recovery) is refused: the cut is taken on primaries. */
int coord_pg_info(PGconn *conn, const struct coord_node *n, struct coord_pg_info *out,
                  wv_err_t *err);
/* The node's position for a cut (flush LSN, or insert LSN for the sequencer) and the
 * timeline it is written on. */
int coord_pg_position(PGconn *conn, const struct coord_node *n, wal_lsn_t *lsn, uint32_t *tli,
                      wv_err_t *err);
/* Makes sure the archive will come to hold the WAL just past lsn: recovery to lsn stops at
 * the first record that starts at or after it, so such a record must exist and be archived.
 * One small WAL record is written (a logical message), so that there is one even on a node
 * idle since the cut; with archive_command the current segment is then switched, once, when
 * it is still the one holding lsn. Called only while the archive does not hold lsn yet. */
int coord_pg_nudge(PGconn *conn, const struct coord_node *n, wal_lsn_t lsn, uint32_t seg_size,
                   wv_err_t *err);

#endif
