/* Error records stay one line whatever they quote (found by fuzz_tar: a tar entry named
 * with a newline made a two-line error). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"

static void test_quoted_control_characters_are_replaced(void **state)
{
    (void)state;
    wv_err_t err;
    assert_int_equal(wv_err_set(&err, WV_ECORRUPT, "tar entry '%s' is absolute", "/a\nb\rc\td"),
                     WV_ECORRUPT);
    assert_string_equal(err.msg, "tar entry '/a?b?c?d' is absolute");
    wv_err_prefix(&err, "reading %s", "x\ny");
    assert_null(strchr(err.msg, '\n'));
    assert_string_equal(err.msg, "reading x?y: tar entry '/a?b?c?d' is absolute");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoted_control_characters_are_replaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
