/* test_status.c: `jobpool-controller status` tables from /debug/pools JSON, and bad answers. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "status.h"

static char *table(const char *json, int want_rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(status_print_table(json, 1000.0, f), want_rc);
    fclose(f);
    return buf;
}

static void test_table(void **state)
{
    (void)state;
    char *t = table("{\"version\":\"9.9\",\"leader\":true,\"ready\":false,\"last_tick\":999.5,"
                    "\"pools\":[{\"name\":\"thumbs\",\"decided_at\":998,\"depth_ok\":true,"
                    "\"ready\":40,\"sample_age_seconds\":4.6,\"active\":20,\"pending\":3,"
                    "\"waiting\":2,\"running\":17,\"max_active\":50,\"start\":5,"
                    "\"reason\":\"scale_up\",\"last_error\":null,\"tasks_total\":7},"
                    "{\"name\":\"mail\",\"decided_at\":0,\"depth_ok\":false,\"active\":0,"
                    "\"pending\":0,\"waiting\":0,\"running\":0,\"max_active\":5,\"start\":0,"
                    "\"reason\":\"hold_no_data\",\"last_error\":\"timeout\",\"tasks_total\":0}]}",
                    0);
    assert_non_null(strstr(t, "controller 9.9: leader yes, ready no, last tick 500ms ago\n"));
    assert_non_null(strstr(t, "\nthumbs                         40      20       3       2      17"
                              "      50      5      7  scale_up            4.6s   2.0s ago  -\n"));
    /* No depth: ready and the sample age are "-", and the row says why. */
    assert_non_null(strstr(t, "\nmail                            -       0       0       0       0"
                              "       5      0      0  hold_no_data           -      never  "
                              "timeout (depth unreadable)\n"));
    free(t);
}

static void test_bad_answers(void **state)
{
    (void)state;
    free(table("not json", JP_EPARSE));
    free(table("[1,2]", JP_ESHAPE));
    free(table("{\"pools\":{}}", JP_ESHAPE));
    char *t = table("{\"pools\":[]}", 0);
    assert_non_null(strstr(t, "(no pool has been decided yet)"));
    free(t);
    /* Fields of the wrong type are shown as unknown, never crash. */
    t = table("{\"pools\":[{\"name\":7,\"ready\":\"x\",\"reason\":[]}]}", 0);
    assert_non_null(strstr(t, "\n?                               -"));
    free(t);
}

static void test_flags(void **state)
{
    (void)state;
    char *argv1[] = {"status", "-o", "yaml", NULL};
    assert_int_equal(status_main(3, argv1, stdout), 2);
    char *argv2[] = {"status", "extra", NULL};
    assert_int_equal(status_main(2, argv2, stdout), 2);
    char *argv3[] = {"status", "--address", "127.0.0.1:1", NULL}; /* nothing listens on port 1 */
    assert_int_equal(status_main(3, argv3, stdout), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_bad_answers),
        cmocka_unit_test(test_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
