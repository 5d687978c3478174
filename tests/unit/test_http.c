/* test_http.c: the pure parts of the HTTP wrapper: Retry-After and the watch-stream splitter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "http.h"
#include "util.h"

static bool ra(const char *line, long *secs)
{
    return http_parse_retry_after(line, strlen(line), secs);
}

static void test_retry_after(void **state)
{
    (void)state;
    long s = -1;
    assert_true(ra("Retry-After: 120\r\n", &s));
    assert_int_equal(s, 120);
    assert_true(ra("retry-after:\t0", &s));
    assert_int_equal(s, 0);
    assert_true(ra("RETRY-AFTER: 86400 \r\n", &s));
    assert_int_equal(s, 86400);
    /* Refused: over a day, signs (strtoll takes them; the fuzzer found "-0"), dates, junk. */
    const char *bad[] = {"Retry-After: 86401\r\n", "Retry-After: -0\r\n", "Retry-After: +5\r\n",
                         "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", "Retry-After: 5s",
                         "Retry-After:\r\n", "Retry-After: 99999999999999999999999999999999",
                         "Content-Type: application/json\r\n", "Retry-After"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = -7;
        assert_false(ra(bad[i], &s));
        assert_int_equal(s, -7);
    }
    /* The length bounds the read: curl's header lines are not NUL-terminated. */
    assert_true(http_parse_retry_after("Retry-After: 12345", 15, &s));
    assert_int_equal(s, 12);
}

struct lines {
    char got[8][32];
    int n, stop_at;
};

static int on_line(void *ud, char *line, size_t len)
{
    struct lines *l = ud;
    assert_int_equal(strlen(line), len);
    if (l->n < 8) snprintf(l->got[l->n], sizeof l->got[0], "%s", line);
    return l->n++ == l->stop_at ? 99 : 0;
}

static int feed(struct dbuf *b, const char *s, size_t step, struct lines *l)
{
    int rc = 0;
    for (size_t at = 0, n = strlen(s); at < n && !rc; at += step)
        rc = http_split_lines(b, s + at, n - at < step ? n - at : step, on_line, l);
    return rc;
}

static void test_split_lines(void **state)
{
    (void)state;
    const char *stream = "{\"a\":1}\n\nsecond line\nunfinished";
    for (size_t step = 1; step <= strlen(stream); step++) {
        struct dbuf b;
        dbuf_init(&b, 64);
        struct lines l = {.stop_at = -1};
        assert_int_equal(feed(&b, stream, step, &l), 0);
        assert_int_equal(l.n, 3);
        assert_string_equal(l.got[0], "{\"a\":1}");
        assert_string_equal(l.got[1], "");
        assert_string_equal(l.got[2], "second line");
        assert_string_equal(b.data, "unfinished"); /* kept for the next chunk */
        dbuf_free(&b);
    }
    /* The cap bounds one line, not a chunk of many short lines. */
    struct dbuf b;
    dbuf_init(&b, 8);
    struct lines l = {.stop_at = -1};
    assert_int_equal(http_split_lines(&b, "a\nbb\nccc\ndddd\n", 14, on_line, &l), 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(http_split_lines(&b, "123456789\n", 10, on_line, &l), JP_ETOOBIG);
    dbuf_free(&b);
    /* A callback's non-zero value stops the lines after it. */
    dbuf_init(&b, 64);
    struct lines st = {.stop_at = 1};
    assert_int_equal(http_split_lines(&b, "x\ny\nz\n", 6, on_line, &st), 99);
    assert_int_equal(st.n, 2);
    dbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_split_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
