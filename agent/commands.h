#ifndef WALVAULT_AGENT_COMMANDS_H
#define WALVAULT_AGENT_COMMANDS_H

#include "agent/config.h"

enum exit_code { EXIT_OK = 0, EXIT_FAILURE_ = 1, EXIT_USAGE = 2 };

/* Runs cfg->command; returns the process exit status. */
int commands_run(const struct config *cfg);
/* Prepares a process that runs for days (the agent, the coordinator). */
void commands_long_running(void);
/* --help: the commands, or one command's options with their environment variables and
 * defaults. */
void usage_print(const char *command);
bool usage_known_command(const char *command);

#endif
