/* Option precedence: a flag beats WALVAULT_<NAME>, which beats the config file, which beats
 * the default; bad input is a usage error that names the option. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"

static char config_path[64];

static int write_config(void **state)
{
    (void)state;
    snprintf(config_path, sizeof config_path, "/tmp/wv-config-test-%ld.ini", (long)getpid());
    FILE *f = fopen(config_path, "w");
    fprintf(f, "# test\nrepo = file:///from/file\nnode = filenode\n[walvault]\njobs = 7\n"
               "key_file = /file/key\n[node other]\nrole = sequencer\n");
    fclose(f);
    return 0;
}

static int remove_config(void **state)
{
    (void)state;
    unlink(config_path);
    return 0;
}

static int load(struct config *cfg, int argc, char **argv, char **env)
{
    wv_err_t err = {0};
    return config_load(argc, argv, env, cfg, &err);
}

static void test_defaults(void **state)
{
    (void)state;
    char *argv[] = {"walvault", "list", NULL};
    char *env[] = {NULL};
    struct config cfg;
    assert_int_equal(load(&cfg, 2, argv, env), 0);
    assert_string_equal(cfg.command, "list");
    assert_string_equal(config_get(&cfg, OPT_NODE), "default");
    assert_string_equal(config_get(&cfg, OPT_JOBS), "2");
    assert_null(config_get(&cfg, OPT_REPO));
    config_free(&cfg);
}

static void test_file_beats_default(void **state)
{
    (void)state;
    char *argv[] = {"walvault", "--config", config_path, "list", NULL};
    char *env[] = {NULL};
    struct config cfg;
    assert_int_equal(load(&cfg, 4, argv, env), 0);
    assert_string_equal(config_get(&cfg, OPT_REPO), "file:///from/file");
    assert_string_equal(config_get(&cfg, OPT_NODE), "filenode");
    assert_string_equal(config_get(&cfg, OPT_JOBS), "7");
    assert_string_equal(config_get(&cfg, OPT_KEY_FILE), "/file/key");
    config_free(&cfg);
}

static void test_env_beats_file(void **state)
{
    (void)state;
    char *argv[] = {"walvault", "list", NULL};
    char cfgvar[128];
    snprintf(cfgvar, sizeof cfgvar, "WALVAULT_CONFIG=%s", config_path);
    char *env[] = {cfgvar, "WALVAULT_NODE=envnode", "WALVAULT_KEY_FILE=/env/key", NULL};
    struct config cfg;
    assert_int_equal(load(&cfg, 2, argv, env), 0);
    assert_string_equal(config_get(&cfg, OPT_NODE), "envnode");
    assert_string_equal(config_get(&cfg, OPT_KEY_FILE), "/env/key");
    assert_string_equal(config_get(&cfg, OPT_REPO), "file:///from/file");
    config_free(&cfg);
}

static void test_flag_beats_env(void **state)
{
    (void)state;
    char *argv[] = {"walvault", "--config", config_path, "--node", "flagnode",
                    "backup",   "--jobs",   "3",         NULL};
    char *env[] = {"WALVAULT_NODE=envnode", "WALVAULT_JOBS=5", NULL};
    struct config cfg;
    assert_int_equal(load(&cfg, 8, argv, env), 0);
    assert_string_equal(cfg.command, "backup");
    assert_string_equal(config_get(&cfg, OPT_NODE), "flagnode");
    assert_string_equal(config_get(&cfg, OPT_JOBS), "3");
    config_free(&cfg);
}

static void test_arguments_and_repeated_maps(void **state)
{
    (void)state;
    char *argv[] = {"walvault",
                    "wal-fetch",
                    "00000001000000000000000A",
                    "pg_wal/RECOVERYXLOG",
                    "--tablespace-map",
                    "16384=/a",
                    "--tablespace-map",
                    "/old=/b",
                    NULL};
    char *env[] = {NULL};
    struct config cfg;
    assert_int_equal(load(&cfg, 8, argv, env), 0);
    assert_int_equal(cfg.nargs, 2);
    assert_string_equal(cfg.args[1], "pg_wal/RECOVERYXLOG");
    assert_int_equal(cfg.nmaps, 2);
    assert_string_equal(cfg.maps[1], "/old=/b");
    config_free(&cfg);
}

static void test_bad_input_is_usage_error(void **state)
{
    (void)state;
    char *env[] = {NULL};
    struct config cfg;
    wv_err_t err = {0};
    char *unknown[] = {"walvault", "--no-such-option", "list", NULL};
    assert_int_equal(config_load(3, unknown, env, &cfg, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "--no-such-option"));
    config_free(&cfg);
    char *missing[] = {"walvault", "list", "--repo", NULL};
    assert_int_equal(config_load(3, missing, env, &cfg, &err), WV_EUSAGE);
    config_free(&cfg);
    char *jobs[] = {"walvault", "--jobs", "zero", "list", NULL};
    assert_int_equal(config_load(4, jobs, env, &cfg, &err), 0);
    int n;
    assert_int_equal(config_int(&cfg, OPT_JOBS, 1, 256, &n, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "--jobs"));
    config_free(&cfg);
    char *nofile[] = {"walvault", "--config", "/nonexistent/walvault.ini", "list", NULL};
    assert_int_equal(config_load(4, nofile, env, &cfg, &err), WV_EUSAGE);
    config_free(&cfg);
}

static void test_unknown_key_in_file(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/wv-config-bad-%ld.ini", (long)getpid());
    FILE *f = fopen(path, "w");
    fprintf(f, "repo = file:///x\nrepoo = typo\n");
    fclose(f);
    char *argv[] = {"walvault", "--config", path, "list", NULL};
    char *env[] = {NULL};
    struct config cfg;
    wv_err_t err = {0};
    assert_int_equal(config_load(4, argv, env, &cfg, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "repoo"));
    config_free(&cfg);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_beats_default),
        cmocka_unit_test(test_env_beats_file),
        cmocka_unit_test(test_flag_beats_env),
        cmocka_unit_test(test_arguments_and_repeated_maps),
        cmocka_unit_test(test_bad_input_is_usage_error),
        cmocka_unit_test(test_unknown_key_in_file),
    };
    return cmocka_run_group_tests(tests, write_config, remove_config);
}
