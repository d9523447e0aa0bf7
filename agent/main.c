#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent/commands.h"
#include "common/log.h"

#define WALVAULT_VERSION "0.1.0"

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct config cfg;
    wv_err_t err = {0};
    if (config_load(argc, argv, NULL, &cfg, &err) != 0) {
        fprintf(stderr, "walvault: error: %s\n", err.msg);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    const char *format = config_get(&cfg, OPT_LOG_FORMAT);
    if (strcmp(format, "json") == 0)
        log_set_format(LOG_FORMAT_JSON);
    else if (strcmp(format, "text") != 0) {
        fprintf(stderr, "walvault: error: --log-format wants text or json, got \"%s\"\n", format);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    int status = EXIT_OK;
    if (config_flag(&cfg, OPT_VERSION))
        printf("walvault %s\n", WALVAULT_VERSION);
    else if (config_flag(&cfg, OPT_HELP) && cfg.command && !usage_known_command(cfg.command)) {
        fprintf(stderr, "walvault: error: unknown command \"%s\" (see walvault --help)\n",
                cfg.command);
        status = EXIT_USAGE;
    } else if (config_flag(&cfg, OPT_HELP) || !cfg.command)
        usage_print(cfg.command);
    else
        status = commands_run(&cfg);
    if (!cfg.command && !config_flag(&cfg, OPT_HELP) && !config_flag(&cfg, OPT_VERSION))
        status = EXIT_USAGE;
    config_free(&cfg);
    return status;
}
