/* test_log.c: secret masking: counted registrations, nothing evicted, longest first, cut lines,
 * and the list used from several threads at once. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static char *out_buf;
static size_t out_len;
static FILE *out;

static int setup(void **state)
{
    (void)state;
    out = open_memstream(&out_buf, &out_len);
    log_setup(LOG_TEXT, LOG_INFO, out);
    return out ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    log_setup(LOG_TEXT, LOG_INFO, stderr);
    fclose(out);
    free(out_buf);
    out_buf = NULL;
    log_clear_secrets();
    return 0;
}

/* What was logged since setup. */
static const char *logged(void)
{
    fflush(out);
    return out_buf ? out_buf : "";
}

static void test_mask_and_count(void **state)
{
    (void)state;
    log_add_secret("broker-pass");
    log_add_secret("broker-pass"); /* read again: still one entry */
    log_add_secret("ab");          /* too short to mask */
    log_add_secret(NULL);
    assert_int_equal(log_secret_count(), 1);
    log_info("auth broker-pass and broker-pass, ab");
    assert_non_null(strstr(logged(), "auth *** and ***, ab"));
    assert_null(strstr(logged(), "broker-pass"));
    /* Two registrations need two drops. */
    log_drop_secret("broker-pass");
    assert_int_equal(log_secret_count(), 1);
    log_drop_secret("broker-pass");
    assert_int_equal(log_secret_count(), 0);
    log_drop_secret("never-added");
    log_info("now broker-pass");
    assert_non_null(strstr(logged(), "now broker-pass"));
}

/* A text record is one line, whatever the message holds: an API server's plain-text "404 page
 * not found\n" once made the next line of the log start with ` err=...` and no time. */
static void test_one_line_per_record(void **state)
{
    (void)state;
    log_msg(LOG_WARN, "p", 0, "list failed: 404 page not found\nsecond\rthird\001 tab\tkept");
    const char *l = logged();
    const char *nl = strchr(l, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0'); /* exactly one line */
    assert_non_null(strstr(l, "404 page not found\\nsecond\\rthird\\x01 tab\tkept"));
}

/* A record reads back to exactly its message: a program's own backslash is doubled, so its
 * literal "\x01" is not read as the escape of a control byte. */
static void test_backslash_doubled(void **state)
{
    (void)state;
    log_msg(LOG_WARN, "p", 0, "regex ^a\\.b literal \\x01 byte \001");
    assert_non_null(strstr(logged(), "regex ^a\\\\.b literal \\\\x01 byte \\x01"));
}

/* The old list held 16 entries and dropped the oldest: the first secret, typically the broker
 * password, was printed after 16 more. Nothing is evicted now, and rotations do not grow it. */
static void test_no_eviction(void **state)
{
    (void)state;
    log_add_secret("the-broker-password");
    char prev[32] = "";
    for (int i = 0; i < 100; i++) {
        char tok[32];
        snprintf(tok, sizeof tok, "rotated-token-%03d", i);
        log_replace_secret(prev[0] ? prev : NULL, tok);
        memcpy(prev, tok, sizeof tok);
    }
    assert_int_equal(log_secret_count(), 2);
    for (int i = 0; i < 40; i++) {
        char s[32];
        snprintf(s, sizeof s, "configured-%02d", i);
        log_add_secret(s);
    }
    log_info("pw=the-broker-password tok=rotated-token-099 old=rotated-token-000");
    assert_non_null(strstr(logged(), "pw=*** tok=*** old=rotated-token-000"));
}

/* A secret that holds another is masked whole, whatever the order of registration. */
static void test_longest_first(void **state)
{
    (void)state;
    log_add_secret("pass");
    log_add_secret("xpassword");
    log_info("a=xpassword b=pass");
    assert_non_null(strstr(logged(), "a=*** b=***"));
}

/* A message longer than a line is masked before it is cut, so a secret across the cut does not
 * leave its first half behind. */
static void test_cut_after_mask(void **state)
{
    (void)state;
    char pad[LOG_LINE_MAX];
    memset(pad, 'x', sizeof pad);
    pad[LOG_LINE_MAX - 10] = '\0';
    log_add_secret("SECRETSECRETSECRET");
    log_info("%sSECRETSECRETSECRET%s", pad, pad);
    assert_null(strstr(logged(), "SECRET"));
    assert_non_null(strstr(logged(), "xx***xx"));
}

/* Threads that register, rotate and log at once: run under ThreadSanitizer by `make tsan`. */
enum { ROTATORS = 3, LOGGERS = 3, ROUNDS = 200 };
static int stop_logging;

static void *rotator(void *arg)
{
    int id = (int)(long)arg;
    char prev[48] = "";
    for (int i = 0; i < ROUNDS; i++) {
        char tok[48];
        snprintf(tok, sizeof tok, "thread-%d-token-%04d", id, i);
        log_replace_secret(prev[0] ? prev : NULL, tok);
        memcpy(prev, tok, sizeof tok);
    }
    log_drop_secret(prev);
    return NULL;
}

static void *logger(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop_logging, __ATOMIC_ACQUIRE))
        log_info("connecting as guest:the-broker-password@rabbitmq");
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    log_add_secret("the-broker-password");
    pthread_t r[ROTATORS], l[LOGGERS];
    __atomic_store_n(&stop_logging, 0, __ATOMIC_RELEASE);
    for (long i = 0; i < LOGGERS; i++) assert_int_equal(pthread_create(&l[i], NULL, logger, NULL), 0);
    for (long i = 0; i < ROTATORS; i++)
        assert_int_equal(pthread_create(&r[i], NULL, rotator, (void *)i), 0);
    for (int i = 0; i < ROTATORS; i++) pthread_join(r[i], NULL);
    __atomic_store_n(&stop_logging, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < LOGGERS; i++) pthread_join(l[i], NULL);
    assert_int_equal(log_secret_count(), 1);
    const char *s = logged();
    assert_null(strstr(s, "the-broker-password"));
    assert_non_null(strstr(s, "guest:***@rabbitmq"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mask_and_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_longest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_after_mask, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_line_per_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backslash_doubled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
