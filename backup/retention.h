/* Retention: which backups `expire` keeps. Pure logic, so it is tested on its own. */
#ifndef WALVAULT_BACKUP_RETENTION_H
#define WALVAULT_BACKUP_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/manifest.h"

struct retention_policy {
    int retain_full; /* keep the newest N full backups and everything after the oldest; 0: off */
    int retain_days; /* keep what restores to any time in the last D days; 0: off */
    int64_t now_ms;
};

/* backups: oldest first (as catalog_backups returns them). Sets keep[i]. The newest full
 * backup is always kept, and every backup after it. WV_EUSAGE when no rule is given. */
int retention_decide(const struct manifest_summary *backups, size_t n,
                     const struct retention_policy *p, bool *keep, wv_err_t *err);

#endif
