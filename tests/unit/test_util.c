/* test_util.c: durations, integer parsing, RFC 3339 times, the capped buffer, floor and ceil. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "util.h"

static void test_duration_ok(void **state)
{
    (void)state;
    struct { const char *in; int64_t ms; } ok[] = {
        {"500ms", 500}, {"2s", 2000}, {"5m", 300000}, {"1h", 3600000}, {"1m30s", 90000},
        {"0", 0}, {"1h2m3s4ms", 3723004}, {"0s", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        assert_int_equal(util_parse_duration(ok[i].in, &v), 0);
        assert_int_equal(v, ok[i].ms);
    }
}

static void test_duration_bad(void **state)
{
    (void)state;
    const char *bad[] = {"", "5", "s", "-1s", "1.5s", "2 s", "2sec", "10d", "ms", " 2s", "2s "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 0;
        assert_int_equal(util_parse_duration(bad[i], &v), JP_EINVAL);
    }
    int64_t v;
    assert_int_equal(util_parse_duration(NULL, &v), JP_EINVAL);
    assert_int_equal(util_parse_duration("99999999999999999999h", &v), JP_ERANGE);
    assert_int_equal(util_parse_duration("9223372036854775807h", &v), JP_ERANGE);
}

static void test_duration_format(void **state)
{
    (void)state;
    char b[32];
    util_format_duration(500, b, sizeof b);
    assert_string_equal(b, "500ms");
    util_format_duration(2000, b, sizeof b);
    assert_string_equal(b, "2s");
    util_format_duration(300000, b, sizeof b);
    assert_string_equal(b, "5m");
    util_format_duration(7200000, b, sizeof b);
    assert_string_equal(b, "2h");
    util_format_duration(0, b, sizeof b);
    assert_string_equal(b, "0ms");
}

static void test_int64(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(util_parse_int64("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(util_parse_int64("-3", -5, 5, &v), 0);
    assert_int_equal(v, -3);
    assert_int_equal(util_parse_int64("101", 0, 100, &v), JP_ERANGE);
    assert_int_equal(util_parse_int64("4x", 0, 100, &v), JP_EINVAL);
    assert_int_equal(util_parse_int64("", 0, 100, &v), JP_EINVAL);
    assert_int_equal(util_parse_int64(" 4", 0, 100, &v), JP_EINVAL);
    assert_int_equal(util_parse_int64("99999999999999999999", INT64_MIN, INT64_MAX, &v), JP_ERANGE);
}

static void test_rfc3339(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(util_parse_rfc3339("1970-01-01T00:00:01Z", &ms), 0);
    assert_int_equal(ms, 1000);
    assert_int_equal(util_parse_rfc3339("2026-11-28T01:02:03.250Z", &ms), 0);
    assert_int_equal(ms, 1795827723250LL);
    assert_int_equal(util_parse_rfc3339("1970-01-01T01:00:00+01:00", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(util_parse_rfc3339("yesterday", &ms), JP_EINVAL);
    assert_int_equal(util_parse_rfc3339("2026-11-28T01:02:03", &ms), JP_EINVAL);
    assert_int_equal(util_parse_rfc3339("1970-01-01T00:00:00-01:30", &ms), 0);
    assert_int_equal(ms, 5400000);
    /* Short or malformed offsets are refused without reading past the string: each is copied
     * to the heap with nothing after its NUL, so ASan (make asan) sees any overread. */
    const char *bad[] = {"1970-01-01T00:00:00+1:1", "1970-01-01T00:00:00+01:1",
                         "1970-01-01T00:00:00+01", "1970-01-01T00:00:00+", "1970-01-01T00:00:00-0100",
                         "1970-01-01T00:00:00+24:00", "1970-01-01T00:00:00+01:60",
                         "1970-01-01T00:00:00+01:00x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *s = strdup(bad[i]);
        assert_int_equal(util_parse_rfc3339(s, &ms), JP_EINVAL);
        free(s);
    }
}

static void test_dbuf_cap(void **state)
{
    (void)state;
    struct dbuf b;
    dbuf_init(&b, 10);
    assert_int_equal(dbuf_append(&b, "hello", 5), 0);
    assert_int_equal(dbuf_printf(&b, "%d", 1234), 0);
    assert_string_equal(b.data, "hello1234");
    assert_int_equal(dbuf_append(&b, "xy", 2), JP_ETOOBIG);
    assert_true(b.toobig);
    assert_string_equal(b.data, "hello1234");
    assert_int_equal(dbuf_append(&b, "x", 1), 0);
    assert_int_equal(b.len, 10);
    char *s = dbuf_take(&b);
    assert_string_equal(s, "hello1234x");
    assert_null(b.data);
    free(s);
    struct dbuf big;
    dbuf_init(&big, 4096);
    char line[1000];
    memset(line, 'a', sizeof line - 1);
    line[sizeof line - 1] = '\0';
    assert_int_equal(dbuf_printf(&big, "%s%s", line, line), 0);
    assert_int_equal(big.len, 1998);
    dbuf_free(&big);
}

static void test_strprintf(void **state)
{
    (void)state;
    char *s = util_strprintf("--max-attempts=%d %s", 3, "x");
    assert_string_equal(s, "--max-attempts=3 x");
    free(s);
    char big[2000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    s = util_strprintf("%s=%s", "K", big);
    assert_int_equal(strlen(s), 2 + sizeof big - 1);
    assert_memory_equal(s, "K=bbb", 5);
    free(s);
}

/* User info goes, whatever it holds (a raw '@' in a password too); the rest stays exact. */
/* util_floor and util_ceil against libm's, which the test links and the controller does not:
 * both signs, the halves, just around whole numbers, the 2^52 and 2^63 boundaries, the
 * infinities, and a spread of values from a fixed generator. */
static void test_floor_ceil(void **state)
{
    (void)state;
    const double edge[] = {0.0,     -0.0,        0.5,          -0.5,          1.0,
                           -1.0,    1.5,         -1.5,         2.999999999,   -2.999999999,
                           1e-300,  -1e-300,     4503599627370495.5,          -4503599627370495.5,
                           0x1p52,  -0x1p52,     0x1p52 + 1,   0x1p63,        -0x1p63,
                           1e300,   -1e300,      INFINITY,     -INFINITY,     9.2e18};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        assert_true(util_floor(edge[i]) == floor(edge[i]));
        assert_true(util_ceil(edge[i]) == ceil(edge[i]));
    }
    assert_true(isnan(util_floor(NAN)) && isnan(util_ceil(NAN)));
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d = ((double)(int64_t)x / 0x1p63) * ldexp(1.0, (int)(x % 70)); /* up to 2^70 */
        if (util_floor(d) != floor(d) || util_ceil(d) != ceil(d))
            fail_msg("%.17g: floor %.17g / %.17g, ceil %.17g / %.17g", d, util_floor(d), floor(d),
                     util_ceil(d), ceil(d));
    }
}

static void test_url_strip_userinfo(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"amqp://u:p@mq:5672/v", "amqp://mq:5672/v"},
        {"amqps://u:S3cr:t@x@mq.example:5671", "amqps://mq.example:5671"},
        {"amqp://mq:5672/%2f?heartbeat=5&x=a@b", "amqp://mq:5672/%2f?heartbeat=5&x=a@b"},
        {"amqp://mq", "amqp://mq"},
        {"no-scheme@host", "no-scheme@host"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *u = util_url_strip_userinfo(cases[i][0]);
        assert_non_null(u);
        assert_string_equal(u, cases[i][1]);
        free(u);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_ok),     cmocka_unit_test(test_duration_bad),
        cmocka_unit_test(test_duration_format), cmocka_unit_test(test_int64),
        cmocka_unit_test(test_rfc3339),         cmocka_unit_test(test_dbuf_cap),
        cmocka_unit_test(test_strprintf),       cmocka_unit_test(test_url_strip_userinfo),
        cmocka_unit_test(test_floor_ceil),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
