/* test_progress.c: the worker's progress line, both ways, and what old and odd lines parse to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "progress.h"

static void parse(const char *s, enum progress_word w, double wait, double dur)
{
    struct progress p;
    progress_parse(s, &p);
    assert_int_equal(p.word, w);
    assert_true(p.wait_s == wait);
    assert_true(p.duration_s == dur);
}

static void test_words(void **state)
{
    (void)state;
    parse("waiting", PROGRESS_WAITING, -1, -1);
    parse("no-task", PROGRESS_NO_TASK, -1, -1);
    parse("no-task\n", PROGRESS_NO_TASK, -1, -1);       /* a termination message's newline */
    parse("task", PROGRESS_TASK, -1, -1);               /* a worker before the figures */
    parse("task wait=3.250", PROGRESS_TASK, 3.25, -1);
    parse("task wait=unknown duration=12.004", PROGRESS_TASK, -1, 12.004);
    parse("task wait=0.000 duration=0.001\n", PROGRESS_TASK, 0, 0.001);
    parse("task duration=5 wait=7 later=field", PROGRESS_TASK, 7, 5); /* order, unknown keys */
}

/* Nothing odd is taken for a figure or a word: the old reader's "no-task" test stays exact. */
static void test_odd_lines(void **state)
{
    (void)state;
    parse(NULL, PROGRESS_NONE, -1, -1);
    parse("", PROGRESS_NONE, -1, -1);
    parse("no-task extra", PROGRESS_NONE, -1, -1);
    parse("no-tasks", PROGRESS_NONE, -1, -1);
    parse("tasks wait=3", PROGRESS_NONE, -1, -1);
    parse("waiting\ntask wait=1", PROGRESS_WAITING, -1, -1); /* the first line only */
    parse("task wait=-3 duration=nan", PROGRESS_TASK, -1, -1);
    parse("task wait=inf duration=1e999", PROGRESS_TASK, -1, -1);
    parse("task wait=3s duration=", PROGRESS_TASK, -1, -1);
    parse("task wait=123456789012345678901234567890123 duration=2", PROGRESS_TASK, -1, 2);
    parse("task\nwait=3", PROGRESS_TASK, -1, -1);       /* only the first line counts */
    parse("task  wait=1   duration=2  ", PROGRESS_TASK, 1, 2);
}

static void test_format_roundtrip(void **state)
{
    (void)state;
    char buf[128];
    struct progress p = {.word = PROGRESS_TASK, .wait_s = 3.25, .duration_s = -1};
    assert_int_equal(progress_format(&p, buf, sizeof buf), 15);
    assert_string_equal(buf, "task wait=3.250");
    p.duration_s = 7200.5;
    progress_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "task wait=3.250 duration=7200.500");
    parse(buf, PROGRESS_TASK, 3.25, 7200.5);
    p.wait_s = -1;
    progress_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "task wait=unknown duration=7200.500");
    parse(buf, PROGRESS_TASK, -1, 7200.5);
    p = (struct progress){.word = PROGRESS_NO_TASK, .wait_s = 9, .duration_s = 9};
    progress_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "no-task");
    p.word = PROGRESS_WAITING;
    progress_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "waiting");
    p = (struct progress){.word = PROGRESS_TASK, .wait_s = 1, .duration_s = 1};
    assert_int_equal(progress_format(&p, buf, 10), -1);  /* too small: an error, not a cut line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_odd_lines),
        cmocka_unit_test(test_format_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
