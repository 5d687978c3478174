/* test_intern.c: one shared copy per string, "" for nothing, and a cap that holds. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "intern.h"

static void test_same_pointer(void **state)
{
    (void)state;
    char a[] = "queue-a", b[] = "queue-a";
    const char *x = intern(a), *y = intern(b);
    assert_non_null(x);
    assert_ptr_equal(x, y);
    assert_ptr_not_equal(x, a); /* a copy: the caller's buffer may change */
    a[0] = 'Q';
    assert_string_equal(x, "queue-a");
    assert_ptr_not_equal(intern("queue-b"), x);
    assert_ptr_equal(intern_n("queue-ab", 7), x); /* n bytes, no NUL needed */
    assert_string_equal(intern(NULL), "");
    assert_string_equal(intern(""), "");
}

static void test_long_string(void **state)
{
    (void)state;
    char big[40000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *x = intern(big);
    assert_non_null(x);
    assert_string_equal(x, big);
    assert_ptr_equal(intern(big), x);
    assert_string_equal(intern("after-big"), "after-big"); /* chunks still fill after it */
}

/* Names come from objects anyone with create rights can make: the table stops growing. */
static void test_cap(void **state)
{
    (void)state;
    size_t n0, b0;
    intern_stats(&n0, &b0);
    char s[32];
    const char *kept = intern("kept-before-the-cap");
    for (size_t i = n0; i < INTERN_MAX_STRINGS + 10; i++) {
        snprintf(s, sizeof s, "name-%zu", i);
        const char *p = intern(s);
        if (i + 1 < INTERN_MAX_STRINGS) assert_non_null(p);
    }
    size_t n, b;
    intern_stats(&n, &b);
    assert_int_equal(n, INTERN_MAX_STRINGS);
    assert_true(b <= INTERN_MAX_BYTES);
    assert_null(intern("one-more-after-the-cap"));
    assert_ptr_equal(intern("kept-before-the-cap"), kept); /* known names still resolve */
    assert_string_equal(intern(""), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_pointer),
        cmocka_unit_test(test_long_string),
        cmocka_unit_test(test_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
