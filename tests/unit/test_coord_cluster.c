/* The cluster's [node NAME] sections: roles, connection strings, archive modes, exactly one
 * sequencer, and errors that name the node and the key at fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "coord/coord.h"

static const char *const good =
    "repo = file:///var/backups/walvault\n"
    "key-file = /etc/walvault/key\n"
    "[walvault]\n"
    "jobs = 4\n"
    "[node seq]\n"
    "role = sequencer\n"
    "pg = host=10.0.0.1 port=5432 user=walvault dbname=postgres\n"
    "archive = stream\n"
    "[node med-1]\n"
    "role = mediator\n"
    "pg = postgresql://walvault@10.0.0.2:5432/postgres?sslmode=require\n"
    "[node p1]\n"
    "role = participant\n"
    "pg = host=10.0.0.3\n"
    "archive = command\n"
    "pgdata = /srv/pg/p1\n"
    "[other]\n"
    "whatever = ignored\n";

static void test_parses_nodes_in_order(void **state)
{
    (void)state;
    struct coord_cluster c;
    wv_err_t err = {0};
    assert_int_equal(coord_cluster_parse(good, "test.conf", &c, &err), 0);
    assert_int_equal(c.count, 3);
    assert_int_equal(c.sequencer, 0);
    assert_string_equal(c.nodes[0].name, "seq");
    assert_int_equal(c.nodes[0].role, COORD_SEQUENCER);
    assert_int_equal(c.nodes[0].archive, COORD_ARCHIVE_STREAM);
    assert_string_equal(c.nodes[0].pg, "host=10.0.0.1 port=5432 user=walvault dbname=postgres");
    assert_string_equal(c.nodes[1].name, "med-1");
    assert_int_equal(c.nodes[1].role, COORD_MEDIATOR);
    assert_int_equal(c.nodes[1].archive, COORD_ARCHIVE_COMMAND); /* the default */
    assert_string_equal(c.nodes[1].pg,
                        "postgresql://walvault@10.0.0.2:5432/postgres?sslmode=require");
    assert_null(c.nodes[1].pgdata);
    assert_int_equal(c.nodes[2].role, COORD_PARTICIPANT);
    assert_string_equal(c.nodes[2].pgdata, "/srv/pg/p1");
    assert_ptr_equal(coord_cluster_find(&c, "p1"), &c.nodes[2]);
    assert_null(coord_cluster_find(&c, "p2"));
    coord_cluster_free(&c);
    assert_int_equal(c.count, 0);
}

/* Parses text that must fail with WV_EUSAGE and a message containing each of the words. */
static void expect_error(const char *text, const char *word1, const char *word2)
{
    struct coord_cluster c;
    wv_err_t err = {0};
    assert_int_equal(coord_cluster_parse(text, "bad.conf", &c, &err), WV_EUSAGE);
    if (!strstr(err.msg, word1) || (word2 && !strstr(err.msg, word2)))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", err.msg, word1, word2 ? word2 : "");
    assert_non_null(strstr(err.msg, "bad.conf"));
    assert_null(c.nodes); /* nothing left allocated */
}

static void test_exactly_one_sequencer(void **state)
{
    (void)state;
    expect_error("[node p1]\nrole = participant\npg = host=a\n", "exactly one sequencer",
                 "found 0");
    expect_error("[node s1]\nrole = sequencer\npg = host=a\n"
                 "[node s2]\nrole = sequencer\npg = host=b\n",
                 "exactly one sequencer", "found 2");
}

static void test_unknown_role(void **state)
{
    (void)state;
    expect_error("[node s]\nrole = sequencer\npg = x=1\n[node p]\nrole = observer\npg = x=1\n",
                 "unknown role \"observer\"", "node p");
}

static void test_missing_pg_and_role(void **state)
{
    (void)state;
    expect_error("[node s]\nrole = sequencer\npg = x=1\n[node p]\nrole = participant\n",
                 "node p has no pg", NULL);
    expect_error("[node s]\nrole = sequencer\npg = x=1\n[node p]\npg = x=1\n", "node p has no role",
                 NULL);
    expect_error("[node s]\nrole = sequencer\npg =\n", "node s has no pg", NULL);
}

static void test_other_mistakes(void **state)
{
    (void)state;
    expect_error("repo = file:///x\n", "no [node NAME] sections", NULL);
    expect_error("[node s]\nrole = sequencer\npg = x=1\narchive = rsync\n", "archive wants",
                 "rsync");
    expect_error("[node s]\nrole = sequencer\npg = x=1\nport = 5432\n", "unknown key \"port\"",
                 "node s");
    expect_error("[node bad/name]\nrole = sequencer\npg = x=1\n", "invalid node name", "bad/name");
    expect_error("[node s]\nrole = sequencer\npg = x=1\nthis line has no equals sign\n",
                 "syntax error on line 4", NULL);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct coord_cluster c;
    wv_err_t err = {0};
    assert_int_equal(coord_cluster_load("/nonexistent/walvault.conf", &c, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "cannot open config file /nonexistent/walvault.conf"));
    assert_int_equal(coord_cluster_load(NULL, &c, &err), WV_EUSAGE);
    assert_non_null(strstr(err.msg, "--config"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_nodes_in_order), cmocka_unit_test(test_exactly_one_sequencer),
        cmocka_unit_test(test_unknown_role),          cmocka_unit_test(test_missing_pg_and_role),
        cmocka_unit_test(test_other_mistakes),        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
