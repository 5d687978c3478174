/* test_worker_message.c: the attempt header, redelivery and the task's environment from a
 * message's properties. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <string.h>

#include "err.h"
#include "message.h"

static amqp_table_entry_t entry(const char *key, amqp_field_value_t v)
{
    return (amqp_table_entry_t){.key = amqp_cstring_bytes(key), .value = v};
}

static amqp_field_value_t text(const char *s)
{
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(s)};
}

static const char *env_get(const struct task_env *e, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->vars[i], name, n) == 0 && e->vars[i][n] == '=') return e->vars[i] + n + 1;
    return NULL;
}

static void test_attempt(void **state)
{
    (void)state;
    amqp_basic_properties_t p = {0};
    assert_int_equal(msg_attempt(&p), 1); /* no headers */
    amqp_table_entry_t e[2];
    p._flags = AMQP_BASIC_HEADERS_FLAG;
    p.headers = (amqp_table_t){.num_entries = 2, .entries = e};
    e[0] = entry("other", text("9"));
    e[1] = entry(MSG_ATTEMPT_HEADER, (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I32,
                                                          .value.i32 = 3});
    assert_int_equal(msg_attempt(&p), 3);
    e[1].value = text("7");
    assert_int_equal(msg_attempt(&p), 7);
    const char *bad[] = {"0", "-2", "x", "", "2147483648", "99999999999999999999999999999999999999999999999999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e[1].value = text(bad[i]);
        assert_int_equal(msg_attempt(&p), 1);
    }
    e[1].value = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TABLE};
    assert_int_equal(msg_attempt(&p), 1);
}

static void test_task_env(void **state)
{
    (void)state;
    amqp_envelope_t m;
    memset(&m, 0, sizeof m);
    amqp_basic_properties_t *p = &m.message.properties;
    amqp_table_entry_t e[4];
    char nul[] = {'a', '\0', 'b'};
    e[0] = entry("Content-Lang.x", text("en"));
    e[1] = entry("n", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = -5});
    e[2] = entry("nested", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_ARRAY});
    e[3] = entry("bin", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_BYTES,
                                             .value.bytes = {sizeof nul, nul}});
    p->_flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    p->message_id = amqp_cstring_bytes("m-1");
    p->headers = (amqp_table_t){.num_entries = 4, .entries = e};
    char *inherited[] = {(char *)"PATH=/bin", NULL};
    struct task_env env;
    assert_int_equal(msg_task_env(&env, inherited, &m, 2), 0);
    assert_string_equal(env_get(&env, "PATH"), "/bin");
    assert_string_equal(env_get(&env, "JOBPOOL_MESSAGE_ID"), "m-1");
    assert_string_equal(env_get(&env, "JOBPOOL_CORRELATION_ID"), "");
    assert_string_equal(env_get(&env, "JOBPOOL_ATTEMPT"), "2");
    assert_string_equal(env_get(&env, "JOBPOOL_REDELIVERED"), "false");
    assert_string_equal(env_get(&env, "JOBPOOL_HEADER_CONTENT_LANG_X"), "en");
    assert_string_equal(env_get(&env, "JOBPOOL_HEADER_N"), "-5");
    assert_null(env_get(&env, "JOBPOOL_HEADER_NESTED")); /* no flat form */
    assert_null(env_get(&env, "JOBPOOL_HEADER_BIN"));    /* a NUL byte */
    task_env_free(&env);
    /* A requeued copy says it was redelivered in its header. */
    e[0] = entry(MSG_REDELIVERED_HEADER, (amqp_field_value_t){.kind = AMQP_FIELD_KIND_BOOLEAN,
                                                              .value.boolean = 1});
    assert_true(msg_redelivered(&m));
    e[0].value.value.boolean = 0;
    assert_false(msg_redelivered(&m));
    m.redelivered = 1;
    assert_true(msg_redelivered(&m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attempt),
        cmocka_unit_test(test_task_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
