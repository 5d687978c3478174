/* test_kube_ns.c: Jobs and Pods keyed by namespace: the key "namespace/name" a parse makes, the
 * order that puts each (namespace, pool) together, which reflector a namespace's writes belong
 * to, and where the kube backend watches for each shape of kubernetes.watchNamespaces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "err.h"
#include "kube.h"
#include "kube_cache.h"

static void test_keys(void **state)
{
    (void)state;
    char k[KUBE_KEY_LEN];
    kube_key(k, sizeof k, "ns1", "a-x1");
    assert_string_equal(k, "ns1/a-x1");
    /* The longest namespace and Pod name fit: a cut key could stand for another object. */
    char ns[64], name[80];
    memset(ns, 'n', 63);
    ns[63] = '\0';
    memset(name, 'p', 79);
    name[79] = '\0';
    kube_key(k, sizeof k, ns, name);
    assert_int_equal(strlen(k), 63 + 1 + 79);

    cJSON *o = cJSON_Parse("{\"metadata\":{\"name\":\"a-x1\",\"namespace\":\"ns2\",\"labels\":"
                           "{\"jobpool.dev/pool\":\"a\"}}}");
    struct kube_job j;
    assert_int_equal(kube_job_parse(o, &j), 0);
    assert_string_equal(j.ns, "ns2");
    assert_string_equal(j.name, "a-x1");
    cJSON_Delete(o);
    /* A namespace cut to fit could stand for another in the key: refused, as a long name is. */
    char big[200];
    snprintf(big, sizeof big, "{\"metadata\":{\"name\":\"a\",\"namespace\":\"%s\"}}", ns);
    big[strlen(big) - 4] = 'n';   /* unchanged length: still fits */
    o = cJSON_Parse(big);
    assert_int_equal(kube_job_parse(o, &j), 0);
    cJSON_Delete(o);
    snprintf(big, sizeof big, "{\"metadata\":{\"name\":\"a\",\"namespace\":\"%sn\"}}", ns);
    o = cJSON_Parse(big);
    assert_int_equal(kube_job_parse(o, &j), JP_ESHAPE);
    cJSON_Delete(o);
    o = cJSON_Parse("{\"metadata\":{\"name\":\"a-x1-zz\",\"namespace\":\"ns1\",\"labels\":"
                    "{\"job-name\":\"a-x1\"}}}");
    struct kube_pod p;
    assert_int_equal(kube_pod_parse(o, &p), 0);
    assert_string_equal(p.ns, "ns1");
    assert_string_equal(p.name, "a-x1-zz");
    cJSON_Delete(o);
}

static void test_pool_order(void **state)
{
    (void)state;
    char arena[] = "ns1\0b"; /* a snapshot entry's strings: namespace at 0, pool at 4 */
    struct kube_snapshot s = {.arena = arena};
    struct kube_snap_job j = {.ns = 0, .pool = 4};
    assert_int_equal(kube_snap_cmp_pool(&s, &j, "ns1", "b"), 0);
    assert_true(kube_snap_cmp_pool(&s, &j, "ns2", "a") < 0);   /* namespace first */
    assert_true(kube_snap_cmp_pool(&s, &j, "ns1", "c") < 0);
    assert_true(kube_snap_cmp_pool(&s, &j, "ns0", "z") > 0);
    assert_true(kube_snap_cmp_pool(&s, &j, "ns1", "a") > 0);
}

static void test_ns_index(void **state)
{
    (void)state;
    const char *ns[] = {"home", "ns1", "ns2"};
    assert_int_equal(kube_cache_ns_index(ns, 3, "home"), 0);
    assert_int_equal(kube_cache_ns_index(ns, 3, "ns2"), 2);
    assert_int_equal(kube_cache_ns_index(ns, 3, "other"), 0);
    assert_int_equal(kube_cache_ns_index(ns, 3, NULL), 0);
    assert_int_equal(kube_cache_ns_index(NULL, 0, "ns1"), 0);   /* one reflector */
    const char *all[] = {""};
    assert_int_equal(kube_cache_ns_index(all, 1, "ns1"), 0);
}

static struct cfg *load(const char *yaml)
{
    struct cfg *c = NULL;
    char err[256];
    if (cfg_load_string(yaml, strlen(yaml), "c.yaml", &c, err, sizeof err))
        fail_msg("config: %s", err);
    return c;
}

static void test_cache_namespaces(void **state)
{
    (void)state;
    const char **v = NULL;
    size_t n = 9;
    /* No JobPools: the file's pools only, in the controller's namespace (the client's). */
    struct cfg *c = load("kubernetes: {jobPools: false}\npools:\n  - {name: f, queue: f, "
                         "maxActive: 1, jobTemplate: {template: {}}}\n");
    assert_int_equal(backend_kube_cache_namespaces(c, "home", &v, &n), 0);
    assert_null(v);
    assert_int_equal(n, 0);
    cfg_free(c);
    /* JobPools in every namespace: one cluster-wide reflector. */
    c = load("pools: []\n");
    assert_int_equal(backend_kube_cache_namespaces(c, "home", &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0], "");
    free(v);
    cfg_free(c);
    /* Listed: the controller's own first (the file's pools), then each other one once. */
    c = load("kubernetes: {watchNamespaces: [ns1, home, ns2]}\npools: []\n");
    assert_int_equal(backend_kube_cache_namespaces(c, "home", &v, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0], "home");
    assert_string_equal(v[1], "ns1");
    assert_string_equal(v[2], "ns2");
    free(v);
    cfg_free(c);
    /* The most the config allows, none of them the controller's: 256 reflectors, as many as a
     * store has sources (watch_new refuses more). */
    char yaml[8192] = "kubernetes: {watchNamespaces: [";
    size_t len = strlen(yaml);
    for (int i = 0; i < 255; i++)
        len += (size_t)snprintf(yaml + len, sizeof yaml - len, "%sn%d", i ? ", " : "", i);
    snprintf(yaml + len, sizeof yaml - len, "]}\npools: []\n");
    c = load(yaml);
    assert_int_equal(backend_kube_cache_namespaces(c, "home", &v, &n), 0);
    assert_int_equal(n, 256);
    assert_string_equal(v[255], "n254");
    free(v);
    cfg_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_pool_order),
        cmocka_unit_test(test_ns_index),
        cmocka_unit_test(test_cache_namespaces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
