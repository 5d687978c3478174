/* test_err.c: the error table has a distinct name and message for every code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "err.h"

static void test_every_code_has_text(void **state)
{
    (void)state;
    for (int c = JP_EFIRST_ + 1; c < JP_ELAST_; c++) {
        assert_string_not_equal(jp_strerror(c), "unknown error");
        assert_string_not_equal(jp_errname(c), "UNKNOWN");
        for (int d = JP_EFIRST_ + 1; d < c; d++)
            assert_string_not_equal(jp_errname(c), jp_errname(d));
    }
    assert_true(JP_ELAST_ < 0);
}

static void test_known_values(void **state)
{
    (void)state;
    assert_string_equal(jp_strerror(0), "success");
    assert_string_equal(jp_errname(JP_ENOTFOUND), "NOTFOUND");
    assert_string_equal(jp_strerror(JP_ETOOBIG), "response larger than the size cap");
    assert_string_equal(jp_strerror(12345), "unknown error");
    assert_string_equal(jp_errname(-1), "UNKNOWN");
}

static void test_transient(void **state)
{
    (void)state;
    assert_true(jp_err_transient(JP_ETIMEOUT));
    assert_true(jp_err_transient(JP_ESERVER));
    assert_true(jp_err_transient(JP_ETHROTTLED));
    assert_false(jp_err_transient(JP_EFORBIDDEN));
    assert_false(jp_err_transient(JP_EINVALID));
    assert_false(jp_err_transient(JP_ECONFIG));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_text),
        cmocka_unit_test(test_known_values),
        cmocka_unit_test(test_transient),
    };
    return cmocka_run_group_tests_name("err", tests, NULL, NULL);
}
