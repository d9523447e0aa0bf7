/* The coordinator's commands (watermark, coordinator, plan) and what restore, verify, expire
 * and list do with watermarks. Inside agent/ only. */
#ifndef WALVAULT_AGENT_CMD_COORD_H
#define WALVAULT_AGENT_CMD_COORD_H

#include <jansson.h>

#include "agent/config.h"
#include "backup/backup.h"
#include "coord/coord.h"

/* From commands.c, shared with the commands here. */
struct repo_config commands_repo_config(const struct config *cfg);
int commands_fail(const wv_err_t *err);

int cmd_watermark(const struct config *cfg);
int cmd_coordinator(const struct config *cfg);
int cmd_plan(const struct config *cfg);

/* restore --watermark N|latest: sets opts' backup, target LSN and timeline for r's node. t
 * keeps the strings opts points to. */
struct watermark_target {
    struct coord_watermark w;
    struct coord_plan_node plan;
    char lsn[WAL_LSN_STR_MAX];
};
int cmd_coord_restore_target(const struct config *cfg, repo_t *r, struct restore_opts *opts,
                             struct watermark_target *t, wv_err_t *err);
void cmd_coord_restore_done(struct watermark_target *t);

/* verify: appends a problem for every watermark some node cannot be restored to, and sets
 * "watermarks_checked". */
int cmd_coord_verify(const struct config *cfg, json_t *report, wv_err_t *err);
/* expire --retain-watermarks N: *keep (caller decrefs) lists the backups r's node must keep,
 * NULL without the option; after expire_run, cmd_coord_expire_prune removes older
 * watermarks and adds them to the report as "watermarks". */
int cmd_coord_expire_keep(const struct config *cfg, repo_t *r, json_t **keep, wv_err_t *err);
int cmd_coord_expire_prune(const struct config *cfg, repo_t *r, json_t *report, wv_err_t *err);
/* list: the repository's newest watermarks into the JSON document ("watermarks",
 * "watermarks_total"), and printed from it. */
int cmd_coord_list(repo_t *r, json_t *doc, wv_err_t *err);
void cmd_coord_list_print(json_t *doc);

#endif
