/* walvault agent: the long-running process beside one PostgreSQL node. */
#ifndef WALVAULT_AGENT_DAEMON_H
#define WALVAULT_AGENT_DAEMON_H

#include "agent/config.h"

/* Streams WAL (unless --archive-mode command), takes scheduled backups, applies retention
 * after each and serves /healthz, /readyz and /metrics until SIGTERM or SIGINT (exit 0) or
 * a failure retrying cannot mend (exit 1). SIGHUP reloads the configuration. */
int cmd_agent(const struct config *cfg);

#endif
