#include <stdio.h>
#include <string.h>

#include "agent/commands.h"

static const struct {
    const char *name;
    const char *synopsis;
} commands[] = {
    {"keygen", "keygen --out FILE            write a new repository key (mode 0600)"},
    {"init", "init                         create the repository (idempotent)"},
    {"backup", "backup [--full|--incremental [--parent ID]] [--source local|stream|auto]\n"
               "                               base backup; prints the backup id"},
    {"wal-push", "wal-push PATH                archive one WAL file (archive_command)"},
    {"wal-fetch", "wal-fetch NAME DEST          fetch one WAL file (restore_command); exit 1 "
                  "when absent"},
    {"wal-stream", "wal-stream [--slot S] [--application-name A] [--sync-interval T]\n"
                   "                               stream WAL over a replication slot into the\n"
                   "                               repository until SIGTERM"},
    {"agent", "agent [--full-every S] [--incremental-every S] [--listen ADDR:PORT]\n"
              "        [--archive-mode stream|command] [--retain-full N] [--retain-days D]\n"
              "                               daemon: WAL stream, scheduled backups (S: 6h, 1d\n"
              "                               or cron \"m h dom mon dow\"), retention after\n"
              "                               each, /healthz /readyz /metrics; SIGHUP reloads"},
    {"restore", "restore --to DIR [--backup ID] [--target-time T | --target-lsn L]\n"
                "        [--watermark N|latest]\n"
                "                               restore a backup and set up recovery"},
    {"list", "list [--json]                backups, WAL ranges and watermarks"},
    {"verify", "verify [--backup ID]         read and check every object, WAL continuity,\n"
               "                               every watermark restorable for every node"},
    {"expire", "expire [--retain-full N] [--retain-days D] [--retain-watermarks N] [--dry-run]\n"
               "                               apply retention, collect WAL and packs"},
    {"watermark", "watermark [--json]           take one consistent cut of the cluster now\n"
                  "                               (nodes: [node NAME] sections of --config)"},
    {"coordinator", "coordinator [--watermark-every T] [--backup-every T] [--once]\n"
                    "        [--listen ADDR:PORT]\n"
                    "                               watermarks and ordered group backups on a "
                    "schedule;\n"
                    "                               /healthz /readyz /metrics (default port 9188)"},
    {"plan", "plan (--watermark N|latest | --target-time T) [--json]\n"
             "                               restore plan for every node of a watermark"},
};

bool usage_known_command(const char *command)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(commands[i].name, command) == 0)
            return true;
    return false;
}

/* command NULL: the options common to every command. */
static bool applies(const struct opt_def *o, const char *command)
{
    if (!command)
        return !o->commands;
    if (!o->commands)
        return false; /* common options get their own section */
    char padded[128], want[64];
    snprintf(padded, sizeof padded, " %s ", o->commands);
    snprintf(want, sizeof want, " %s ", command);
    return strstr(padded, want) != NULL;
}

static void print_options(const char *command)
{
    const struct opt_def *opts = config_options();
    for (int i = 0; i < OPT_COUNT; i++) {
        if (!applies(&opts[i], command))
            continue;
        char flag[64], env[64];
        snprintf(flag, sizeof flag, "--%s%s", opts[i].name, opts[i].has_arg ? " V" : "");
        int n = snprintf(env, sizeof env, "WALVAULT_");
        for (const char *p = opts[i].name; *p && n < 62; p++)
            env[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        env[n] = '\0';
        const char *def = opts[i].def;
        if (i == OPT_LISTEN && command && strcmp(command, "coordinator") == 0)
            def = COORDINATOR_LISTEN_DEFAULT;
        printf("  %-22s %s\n  %-22s env %s%s%s\n", flag, opts[i].help, "", env,
               def ? ", default " : "", def ? def : "");
    }
}

void usage_print(const char *command)
{
    if (command && usage_known_command(command)) {
        for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
            if (strcmp(commands[i].name, command) == 0)
                printf("usage: walvault [options] %s\n\noptions of %s:\n", commands[i].synopsis,
                       command);
        print_options(command);
        printf("\ncommon options:\n");
        print_options(NULL);
        return;
    }
    printf("usage: walvault [options] COMMAND [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        printf("  %s\n", commands[i].synopsis);
    printf("\ncommon options (each also WALVAULT_<NAME> and a key in the config file;\n"
           "a flag beats the environment, which beats the file):\n");
    print_options(NULL);
    printf("\nwalvault COMMAND --help lists the options of one command.\n"
           "Exit status: 0 success, 1 failure, 2 usage error.\n");
}
