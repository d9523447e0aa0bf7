/* The agent lease in a file:// repository, with the clock passed in: a live lease refuses a
 * second holder and names the first; an expired one is taken over only after the grace; the
 * old holder then learns it lost the lease; a released lease is free at once; generations
 * only grow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repo/repo.h"

#define LEASE_MS 30000
#define T0 1700000000000LL

struct fixture {
    char tmp[64];
    repo_t *r;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char url[128], key[128];
    wv_err_t err = {0};
    bool created;
    snprintf(f->tmp, sizeof f->tmp, "/tmp/wv-lease-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(url, sizeof url, "file://%s/repo", f->tmp);
    snprintf(key, sizeof key, "%s/key", f->tmp);
    assert_int_equal(seal_init(&err), 0);
    assert_int_equal(seal_keygen(key, &err), 0);
    struct repo_config cfg = {.url = url, .key_file = key, .node = "db1"};
    assert_int_equal(repo_init(&cfg, &created, &err), 0);
    assert_int_equal(repo_open(&cfg, &f->r, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    repo_close(f->r);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->tmp);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void test_second_holder_refused(void **state)
{
    struct fixture *f = *state;
    struct repo_lease a, b;
    wv_err_t err = {0};
    assert_int_equal(repo_lease_acquire(f->r, "host1:10:aa", LEASE_MS, T0, &a, &err), 0);
    assert_int_equal(a.generation, 1);
    assert_int_equal(a.expires_ms, T0 + LEASE_MS);
    /* Expired, but within the grace for clocks that differ: still refused. */
    int64_t late = T0 + LEASE_MS + REPO_LEASE_GRACE_MS;
    assert_int_equal(repo_lease_acquire(f->r, "host2:20:bb", LEASE_MS, late, &b, &err), WV_EEXISTS);
    assert_non_null(strstr(err.msg, "host1:10:aa"));
    assert_non_null(strstr(err.msg, "db1"));
    /* A renewal pushes the expiry on. */
    assert_int_equal(repo_lease_renew(f->r, &a, T0 + 10000, &err), 0);
    assert_int_equal(a.expires_ms, T0 + 10000 + LEASE_MS);
    assert_int_equal(repo_lease_acquire(f->r, "host2:20:bb", LEASE_MS, late + 1, &b, &err),
                     WV_EEXISTS);
}

static void test_takeover_after_expiry(void **state)
{
    struct fixture *f = *state;
    struct repo_lease a, b, c;
    wv_err_t err = {0};
    assert_int_equal(repo_lease_acquire(f->r, "host1:10:aa", LEASE_MS, T0, &a, &err), 0);
    int64_t gone = T0 + LEASE_MS + REPO_LEASE_GRACE_MS + 1;
    assert_int_equal(repo_lease_acquire(f->r, "host2:20:bb", LEASE_MS, gone, &b, &err), 0);
    assert_int_equal(b.generation, a.generation + 1);
    /* The old holder, back, learns that it lost the lease and who has it. */
    assert_int_equal(repo_lease_renew(f->r, &a, gone + 1, &err), WV_EMISMATCH);
    assert_non_null(strstr(err.msg, "host2:20:bb"));
    /* Its renewal wrote nothing that matters: the new holder keeps the lease. */
    assert_int_equal(repo_lease_renew(f->r, &b, gone + 2, &err), 0);
    assert_int_equal(repo_lease_acquire(f->r, "host3:30:cc", LEASE_MS, gone + 3, &c, &err),
                     WV_EEXISTS);
    assert_non_null(strstr(err.msg, "host2:20:bb"));
}

static void test_release(void **state)
{
    struct fixture *f = *state;
    struct repo_lease a, b, stale;
    wv_err_t err = {0};
    assert_int_equal(repo_lease_acquire(f->r, "host1:10:aa", LEASE_MS, T0, &a, &err), 0);
    stale = a;
    assert_int_equal(repo_lease_release(f->r, &a, &err), 0);
    assert_int_equal(repo_lease_acquire(f->r, "host2:20:bb", LEASE_MS, T0 + 1, &b, &err), 0);
    /* Generations only grow, so a holder of an old generation never mistakes the new
     * lease for its own. */
    assert_true(b.generation > stale.generation);
    assert_int_equal(repo_lease_renew(f->r, &stale, T0 + 2, &err), WV_EMISMATCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_second_holder_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover_after_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
