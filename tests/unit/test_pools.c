/* test_pools.c: the pool set: the file's pools and JobPools together; an unchanged JobPool keeps
 * its settings (same pointer), a changed one is validated again and keeps its slot, a deleted one
 * leaves the set; invalid specs and name clashes with the file are not served and say why; other
 * namespaces are served, a name recurring there being another pool; the pause annotation. And the status written for a JobPool: figures, the three
 * conditions with stable transition times, wasted accumulating on the object's own total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "conns.h"
#include "err.h"
#include "jobpools.h"
#include "pools.h"

static struct cfg *load(const char *yaml)
{
    struct cfg *c = NULL;
    char err[256];
    if (cfg_load_string(yaml, strlen(yaml), "c.yaml", &c, err, sizeof err))
        fail_msg("config: %s", err);
    return c;
}

/* A JobPool object as the API server lists it. */
static cJSON *jobpool(const char *ns, const char *name, const char *uid, int gen, int max,
                      const char *extra_meta)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"metadata\":{\"namespace\":\"%s\",\"name\":\"%s\",\"uid\":\"%s\",\"generation\":%d%s},"
             "\"spec\":{\"queue\":\"%s\",\"maxActive\":%d,\"jobTemplate\":{\"template\":{}}}}",
             ns, name, uid, gen, extra_meta ? extra_meta : "", name, max);
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static const struct pool *find(const struct pools *ps, const char *name, bool served)
{
    size_t n = served ? pools_count(ps) : pools_jobpool_count(ps);
    for (size_t i = 0; i < n; i++) {
        const struct pool *p = served ? pools_at(ps, i) : pools_jobpool_at(ps, i);
        if (!strcmp(p->name, name)) return p;
    }
    return NULL;
}

static void test_pool_set(void **state)
{
    (void)state;
    struct cfg *c = load("pools:\n  - {name: files, queue: f, maxActive: 2, jobTemplate: "
                         "{template: {}}}\n");
    struct pools *ps = NULL;
    assert_int_equal(pools_new(c, "home", &ps), 0);
    assert_int_equal(pools_count(ps), 1);
    assert_true(pools_at(ps, 0)->from_file);
    assert_int_equal(pools_slot(c, pools_at(ps, 0)->cfg), 0);

    cJSON *items = cJSON_CreateArray();
    cJSON_AddItemToArray(items, jobpool("home", "thumbs", "u1", 1, 5, NULL));
    cJSON_AddItemToArray(items, jobpool("home", "files", "u2", 1, 5, NULL));       /* clash */
    cJSON_AddItemToArray(items, jobpool("elsewhere", "other", "u3", 1, 5, NULL));  /* ns */
    cJSON *bad = jobpool("home", "bad", "u4", 1, 5, NULL);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(bad, "spec"), "minActive", 9);
    cJSON_AddItemToArray(items, bad);
    cJSON_AddItemToArray(items, jobpool("home", "quiet", "u5", 1, 5,
                                        ",\"annotations\":{\"jobpool.dev/paused\":\"true\"}"));
    cJSON *own = jobpool("home", "own", "u6", 1, 5, NULL);
    cJSON_AddItemToObject(cJSON_GetObjectItem(own, "spec"), "connectionSecretRef",
                          cJSON_Parse("{\"name\":\"conn\"}"));
    cJSON_AddItemToArray(items, own);
    assert_int_equal(pools_set_jobpools(ps, items), 0);
    assert_int_equal(pools_jobpool_count(ps), 6);
    assert_int_equal(pools_count(ps), 4);          /* files, quiet, thumbs, elsewhere/other */
    assert_true(pools_at(ps, 0)->from_file);
    const struct pool *t = find(ps, "thumbs", true);
    assert_non_null(t);
    assert_int_equal(t->cfg->max_active, 5);
    assert_string_equal(t->cfg->namespace_, "home");
    assert_true(pools_slot(c, t->cfg) >= 1);
    assert_true(find(ps, "quiet", true)->paused);
    assert_false(t->paused);
    const struct pool *p = find(ps, "files", false);
    assert_false(p->served);
    assert_string_equal(p->reason, "NameClash");
    assert_non_null(strstr(p->message, "config file defines a pool named files"));
    p = find(ps, "other", true);
    assert_non_null(p);
    assert_string_equal(p->cfg->namespace_, "elsewhere");
    assert_string_equal(cfg_pool_id(p->cfg), "elsewhere/other");
    assert_string_equal(cfg_pool_id(t->cfg), "thumbs");   /* the controller's namespace */
    /* Its Secret not read yet: not served, and not on the controller's broker either. */
    assert_string_equal(find(ps, "own", false)->reason, "ConnectionSecretPending");
    assert_false(find(ps, "own", false)->served);
    p = find(ps, "bad", false);
    assert_string_equal(p->reason, "InvalidSpec");
    assert_string_equal(p->message, "spec.minActive: must be <= maxActive (5), got 9");
    cJSON_Delete(items);

    /* Same generation: same settings. A new generation: new settings in the same slot. */
    const struct cfg_pool *before = t->cfg;
    size_t slot = pools_slot(c, before);
    items = cJSON_CreateArray();
    cJSON_AddItemToArray(items, jobpool("home", "thumbs", "u1", 1, 5, NULL));
    cJSON_AddItemToArray(items, jobpool("home", "quiet", "u5", 2, 7, NULL));
    assert_int_equal(pools_set_jobpools(ps, items), 0);
    cJSON_Delete(items);
    assert_ptr_equal(find(ps, "thumbs", true)->cfg, before);
    size_t qslot = pools_slot(c, find(ps, "quiet", true)->cfg);
    items = cJSON_CreateArray();
    cJSON_AddItemToArray(items, jobpool("home", "thumbs", "u1", 2, 8, NULL));
    cJSON_AddItemToArray(items, jobpool("home", "quiet", "u5", 2, 7, NULL));
    assert_int_equal(pools_set_jobpools(ps, items), 0);
    cJSON_Delete(items);
    t = find(ps, "thumbs", true);
    assert_int_equal(t->cfg->max_active, 8);
    assert_int_equal(pools_slot(c, t->cfg), slot);
    assert_false(find(ps, "quiet", true)->paused);  /* the annotation went */
    assert_int_equal(pools_slot(c, find(ps, "quiet", true)->cfg), qslot);
    assert_int_not_equal(slot, qslot);

    /* Deleted: gone from the set; the file's pool stays. */
    items = cJSON_CreateArray();
    assert_int_equal(pools_set_jobpools(ps, items), 0);
    cJSON_Delete(items);
    assert_int_equal(pools_count(ps), 1);
    assert_int_equal(pools_jobpool_count(ps), 0);
    pools_free(ps);
    cfg_free(c);
}

static const cJSON *cond(const cJSON *s, const char *type)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(s, "conditions"))
        if (!strcmp(cJSON_GetObjectItem(c, "type")->valuestring, type)) return c;
    fail_msg("no condition %s", type);
    return NULL;
}

static const char *cstr(const cJSON *c, const char *k)
{
    return cJSON_GetObjectItem(c, k)->valuestring;
}

/* Pool identity is namespace/name: the same name in two namespaces is two pools (two slots, two
 * ids), and only a JobPool in the controller's namespace clashes with the file. */
static void test_namespaces(void **state)
{
    (void)state;
    struct cfg *c = load("pools:\n  - {name: files, queue: f, maxActive: 2, jobTemplate: "
                         "{template: {}}}\n");
    struct pools *ps = NULL;
    assert_int_equal(pools_new(c, "home", &ps), 0);
    cJSON *items = cJSON_CreateArray();
    cJSON_AddItemToArray(items, jobpool("ns2", "a", "u1", 1, 3, NULL));
    cJSON_AddItemToArray(items, jobpool("ns1", "a", "u2", 1, 4, NULL));
    cJSON_AddItemToArray(items, jobpool("home", "a", "u3", 1, 5, NULL));
    cJSON_AddItemToArray(items, jobpool("ns1", "files", "u4", 1, 6, NULL));
    assert_int_equal(pools_set_jobpools(ps, items), 0);
    cJSON_Delete(items);
    assert_int_equal(pools_count(ps), 5);
    /* Served in order: the file's, then JobPools by namespace/name. */
    const char *want[] = {"files", "a", "ns1/a", "ns1/files", "ns2/a"};
    const char *want_ns[] = {NULL, "home", "ns1", "ns1", "ns2"};
    const int want_max[] = {2, 5, 4, 6, 3};
    for (size_t i = 0; i < 5; i++) {
        const struct pool *p = pools_at(ps, i);
        assert_true(p->served);
        assert_string_equal(cfg_pool_id(p->cfg), want[i]);
        if (want_ns[i]) assert_string_equal(p->cfg->namespace_, want_ns[i]);
        else assert_null(p->cfg->namespace_);
        assert_int_equal(p->cfg->max_active, want_max[i]);
        for (size_t k = 0; k < i; k++)
            assert_int_not_equal(pools_slot(c, p->cfg), pools_slot(c, pools_at(ps, k)->cfg));
    }
    pools_free(ps);
    cfg_free(c);
}

static void test_status(void **state)
{
    (void)state;
    struct pool p;
    memset(&p, 0, sizeof p);
    snprintf(p.ns, sizeof p.ns, "home");
    snprintf(p.name, sizeof p.name, "thumbs");
    p.generation = 4;
    p.served = true;
    /* The object's status as the last writer left it. */
    p.status = cJSON_Parse("{\"wasted\":5,\"lastScaleTime\":\"2026-01-01T00:00:00Z\","
                           "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\","
                           "\"lastTransitionTime\":\"2026-01-01T00:00:01Z\"},"
                           "{\"type\":\"Active\",\"status\":\"True\","
                           "\"lastTransitionTime\":\"2026-01-01T00:00:02Z\"}]}");
    struct reconcile_pool_status st;
    memset(&st, 0, sizeof st);
    st.depth_ok = true;
    st.ready = 0;
    st.pending = 1;
    st.running = 2;
    st.succeeded = 3;
    st.failed = 1;
    st.wasted_new = 2;
    cJSON *s = NULL;
    assert_int_equal(jobpools_status(&p, &st, 1800000000000LL, &s), 0);
    assert_int_equal(cJSON_GetObjectItem(s, "observedGeneration")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItem(s, "active")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(s, "pending")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(s, "wasted")->valueint, 7);
    assert_string_equal(cstr(s, "lastScaleTime"), "2026-01-01T00:00:00Z");
    const cJSON *r = cond(s, "Ready");
    assert_string_equal(cstr(r, "status"), "True");
    assert_string_equal(cstr(r, "lastTransitionTime"), "2026-01-01T00:00:01Z");
    assert_int_equal(cJSON_GetObjectItem(r, "observedGeneration")->valueint, 4);
    assert_string_equal(cstr(cond(s, "Active"), "reason"), "Workers");
    assert_string_equal(cstr(cond(s, "Active"), "lastTransitionTime"), "2026-01-01T00:00:02Z");
    assert_string_equal(cstr(cond(s, "Paused"), "status"), "False");
    cJSON_Delete(s);

    /* The depth unreadable: Ready turns False now; a start: lastScaleTime moves. */
    st.depth_ok = false;
    st.last_err = JP_ETIMEOUT;
    st.last_start_wall_ms = 1800000000000LL;
    p.paused = true;
    assert_int_equal(jobpools_status(&p, &st, 1800000005000LL, &s), 0);
    r = cond(s, "Ready");
    assert_string_equal(cstr(r, "status"), "False");
    assert_string_equal(cstr(r, "reason"), "DepthUnavailable");
    assert_string_equal(cstr(r, "lastTransitionTime"), "2027-01-15T08:00:05Z");
    assert_string_equal(cstr(s, "lastScaleTime"), "2027-01-15T08:00:00Z");
    assert_string_equal(cstr(cond(s, "Paused"), "status"), "True");
    cJSON_Delete(s);

    /* Not served: Ready False with the pool set's reason and message, no figures. */
    p.served = false;
    snprintf(p.reason, sizeof p.reason, "NameClash");
    p.message = "the file wins"; /* not freed: a struct pool of the test's own */
    assert_int_equal(jobpools_status(&p, NULL, 1800000005000LL, &s), 0);
    assert_string_equal(cstr(cond(s, "Ready"), "reason"), "NameClash");
    assert_string_equal(cstr(cond(s, "Ready"), "message"), "the file wins");
    assert_null(cJSON_GetObjectItem(s, "ready"));
    cJSON_Delete(s);
    cJSON_Delete(p.status);
}

/* A JobPool naming a Secret is served once its connection is usable, reads there, takes the
 * connection's vhost when its spec sets none, and says why when the Secret is not usable. */
static void test_pool_conn(void **state)
{
    (void)state;
    struct cfg *c = load("rabbitmq: {vhost: main}\npools: []\n");
    struct pools *ps = NULL;
    assert_int_equal(pools_new(c, "home", &ps), 0);
    cJSON *items = cJSON_CreateArray();
    cJSON *own = jobpool("home", "own", "u1", 1, 5, NULL);
    cJSON_AddItemToObject(cJSON_GetObjectItem(own, "spec"), "connectionSecretRef",
                          cJSON_Parse("{\"name\":\"conn\"}"));
    cJSON *fixed = jobpool("home", "fixed", "u2", 1, 5, NULL);
    cJSON_AddItemToObject(cJSON_GetObjectItem(fixed, "spec"), "connectionSecretRef",
                          cJSON_Parse("{\"name\":\"conn\"}"));
    cJSON_AddStringToObject(cJSON_GetObjectItem(fixed, "spec"), "vhost", "mine");
    cJSON_AddItemToArray(items, own);
    cJSON_AddItemToArray(items, fixed);
    assert_int_equal(pools_set_jobpools(ps, items), 0);
    cJSON_Delete(items);
    assert_int_equal(pools_count(ps), 0);
    assert_string_equal(find(ps, "own", false)->cfg->vhost, "main");

    struct kube_worker_conn wc = {.amqp_url = "amqp://b:5672", .secret = "conn"};
    struct conn_use use = {.rmq = (struct rmq_client *)&wc, .worker = &wc, .vhost = "theirs"};
    for (size_t i = 0; i < pools_jobpool_count(ps); i++)
        assert_int_equal(pools_set_conn(ps, i, &use, NULL, NULL), 0);
    pools_conns_done(ps);
    assert_int_equal(pools_count(ps), 2);
    const struct pool *p = find(ps, "own", true);
    assert_ptr_equal(p->cfg->rmq, use.rmq);
    assert_ptr_equal(p->cfg->worker_conn, &wc);
    assert_string_equal(p->cfg->vhost, "theirs");        /* the connection's */
    assert_string_equal(find(ps, "fixed", true)->cfg->vhost, "mine"); /* spec.vhost wins */

    /* The Secret broke: neither pool is served, both say why, nothing points at the client. */
    for (size_t i = 0; i < pools_jobpool_count(ps); i++)
        assert_int_equal(pools_set_conn(ps, i, NULL, "ConnectionSecretInvalid",
                                        "Secret home/conn: key managementUrl: required"), 0);
    pools_conns_done(ps);
    assert_int_equal(pools_count(ps), 0);
    p = find(ps, "own", false);
    assert_string_equal(p->reason, "ConnectionSecretInvalid");
    assert_string_equal(p->message, "Secret home/conn: key managementUrl: required");
    assert_null(p->cfg->rmq);
    assert_null(p->cfg->worker_conn);

    /* Fixed again, with no vhost of its own: back to the controller's. */
    use.vhost = NULL;
    for (size_t i = 0; i < pools_jobpool_count(ps); i++)
        assert_int_equal(pools_set_conn(ps, i, &use, NULL, NULL), 0);
    pools_conns_done(ps);
    assert_int_equal(pools_count(ps), 2);
    assert_string_equal(find(ps, "own", true)->cfg->vhost, "main");
    assert_string_equal(find(ps, "own", true)->reason, "");
    pools_free(ps);
    cfg_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_set),
        cmocka_unit_test(test_pool_conn),
        cmocka_unit_test(test_namespaces),
        cmocka_unit_test(test_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
