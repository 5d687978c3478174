/* test_podsec.c: what a worker template asks for beyond Pod Security "restricted". */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "podsec.h"

struct esc_case {
    const char *name;
    const char *pod;   /* the PodSpec inside {"template":{"spec": ...}} */
    int n;
    const char *why;
};

static const struct esc_case cases[] = {
    {"plain", "{\"containers\":[{\"name\":\"a\",\"image\":\"x\"}]}", 0, ""},
    {"restricted_as_written",
     "{\"automountServiceAccountToken\":false,\"securityContext\":{\"runAsNonRoot\":true,"
     "\"runAsUser\":1000,\"seccompProfile\":{\"type\":\"RuntimeDefault\"}},\"containers\":[{"
     "\"name\":\"a\",\"securityContext\":{\"allowPrivilegeEscalation\":false,\"capabilities\":"
     "{\"drop\":[\"ALL\"],\"add\":[\"NET_BIND_SERVICE\"]}}}]}", 0, ""},
    {"privileged",
     "{\"containers\":[{\"name\":\"a\",\"securityContext\":{\"privileged\":true}}]}", 1,
     "template.spec.containers[0].securityContext.privileged=true"},
    {"root_pod",
     "{\"securityContext\":{\"runAsNonRoot\":false,\"runAsUser\":0},\"containers\":[]}", 2,
     "template.spec.securityContext.runAsNonRoot=false; template.spec.securityContext.runAsUser=0"},
    {"caps_init",
     "{\"containers\":[{\"name\":\"a\"}],\"initContainers\":[{\"name\":\"i\",\"securityContext\":"
     "{\"capabilities\":{\"add\":[\"NET_BIND_SERVICE\",\"NET_ADMIN\"]},"
     "\"allowPrivilegeEscalation\":true}}]}", 2,
     "template.spec.initContainers[0].securityContext.allowPrivilegeEscalation=true; "
     "template.spec.initContainers[0].securityContext.capabilities.add has more than "
     "NET_BIND_SERVICE"},
    {"host",
     "{\"hostNetwork\":true,\"hostPID\":false,\"hostIPC\":true,\"automountServiceAccountToken\":"
     "true,\"volumes\":[{\"name\":\"v\",\"hostPath\":{\"path\":\"/\"}}],\"containers\":[{"
     "\"name\":\"a\",\"ports\":[{\"containerPort\":80,\"hostPort\":80}],\"securityContext\":"
     "{\"seccompProfile\":{\"type\":\"Unconfined\"}}}]}", 6,
     "template.spec.hostNetwork=true; template.spec.hostIPC=true; "
     "template.spec.automountServiceAccountToken=true; template.spec.volumes[].hostPath is set; "
     "template.spec.containers[0].securityContext.seccompProfile.type=Unconfined; "
     "template.spec.containers[0].ports[].hostPort is set"},
};

static void test_escalations(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[2048], why[1024];
        snprintf(json, sizeof json, "{\"template\":{\"spec\":%s}}", cases[i].pod);
        cJSON *t = cJSON_Parse(json);
        if (!t) fail_msg("%s: bad JSON", cases[i].name);
        int n = podsec_escalations(t, why, sizeof why);
        if (n != cases[i].n || strcmp(why, cases[i].why) != 0)
            fail_msg("%s: got %d \"%s\", want %d \"%s\"", cases[i].name, n, why, cases[i].n,
                     cases[i].why);
        cJSON_Delete(t);
    }
}

/* A short buffer is cut, still terminated, and the count stays exact. */
static void test_escalations_short_buffer(void **state)
{
    (void)state;
    cJSON *t = cJSON_Parse("{\"template\":{\"spec\":{\"hostNetwork\":true,\"hostIPC\":true,"
                           "\"hostPID\":true}}}");
    char why[20];
    assert_int_equal(podsec_escalations(t, why, sizeof why), 3);
    assert_int_equal(strlen(why), sizeof why - 1);
    assert_int_equal(podsec_escalations(t, why, 0), 3);
    assert_int_equal(podsec_escalations(NULL, why, sizeof why), 0);
    assert_string_equal(why, "");
    cJSON_Delete(t);
}

/* Fill never overrides, and leaves what it cannot fill (a non-object securityContext) to the
 * API server's validation. */
static void test_fill(void **state)
{
    (void)state;
    cJSON *ps = cJSON_Parse("{\"securityContext\":\"bad\",\"containers\":[{\"name\":\"a\","
                            "\"securityContext\":{\"capabilities\":{\"add\":[\"CAP_SYS_ADMIN\"]}}},"
                            "{\"name\":\"b\",\"securityContext\":{\"allowPrivilegeEscalation\":"
                            "true}}]}");
    assert_int_equal(podsec_fill(ps), 0);
    assert_string_equal(cJSON_GetObjectItem(ps, "securityContext")->valuestring, "bad");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(ps, "automountServiceAccountToken")));
    cJSON *a = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ps, "containers"), 0),
                                   "securityContext");
    cJSON *b = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ps, "containers"), 1),
                                   "securityContext");
    assert_null(cJSON_GetObjectItem(a, "allowPrivilegeEscalation")); /* adds SYS_ADMIN */
    assert_string_equal(
        cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "capabilities"), "drop"), 0)
            ->valuestring, "ALL");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(b, "allowPrivilegeEscalation")));
    cJSON_Delete(ps);
    assert_int_equal(podsec_fill(NULL), JP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escalations),
        cmocka_unit_test(test_escalations_short_buffer),
        cmocka_unit_test(test_fill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
