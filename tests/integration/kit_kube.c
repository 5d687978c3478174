/* kit_kube.c: the Kubernetes client against a real kube-apiserver (tests/env/kube.sh). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "http.h"
#include "kube.h"
#include "kube_cache.h"
#include "log.h"
#include "util.h"

static const char *TEMPLATE =
    "{\"backoffLimit\":0,\"template\":{\"metadata\":{\"labels\":{\"team\":\"media\"}},"
    "\"spec\":{\"restartPolicy\":\"Never\",\"containers\":[{\"name\":\"worker\","
    "\"image\":\"registry.example/thumbs:1.4\",\"args\":[\"--\",\"/app/run\"],"
    "\"env\":[{\"name\":\"JOBPOOL_QUEUE\",\"value\":\"from-template\"}]}]}}}";

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static struct kube_client *admin(int concurrency, int page)
{
    const char *kc = getenv("KUBECONFIG");
    if (!kc) fail_msg("KUBECONFIG is not set: run under tests/integration/kube-run.sh");
    struct kube_opts o = {.kubeconfig = kc, .concurrency = concurrency, .page_size = page,
                          .qps = -1};
    struct kube_client *c = NULL;
    char err[256] = "";
    int rc = kube_client_new(&o, &c, err, sizeof err);
    if (rc) fail_msg("admin client: %s: %s", jp_strerror(rc), err);
    return c;
}

static cJSON *tmpl(const char *json)
{
    cJSON *t = cJSON_Parse(json);
    assert_non_null(t);
    return t;
}

static const char *path_str(cJSON *root, const char *const *path)
{
    cJSON *n = root;
    for (; *path; path++) n = cJSON_GetObjectItemCaseSensitive(n, *path);
    return cJSON_IsString(n) ? n->valuestring : NULL;
}

static void delete_pool(struct kube_client *c, const char *pool)
{
    char sel[128];
    snprintf(sel, sizeof sel, KUBE_LABEL_POOL "=%s", pool);
    struct kube_job_list l = {0};
    if (kube_jobs_list(c, sel, &l) != 0) fprintf(stderr, "cleanup: %s\n", kube_last_error(c));
    for (size_t i = 0; i < l.n; i++) kube_job_delete(c, l.items[i].name);
    kube_job_list_free(&l);
}

/* A Job made from a template reads back with our labels, annotation, env and the template. */
static void test_create_read_back(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = "readback", .queue = "q1", .vhost = "/",
                              .config_hash = "0123456789abcdef", .job_template = t,
                              .ttl_seconds_after_finished = 600};
    struct kube_job j;
    int rc = kube_job_create(c, &s, &j);
    if (rc) fail_msg("create: %s", kube_last_error(c));
    assert_true(strncmp(j.name, "readback-", 9) == 0);
    assert_string_equal(j.pool, "readback");
    assert_string_equal(j.config_hash, "0123456789abcdef");
    assert_true(j.created_ms > 0);

    cJSON *obj = NULL;
    assert_int_equal(kube_job_get_json(c, j.name, &obj), 0);
    const char *p1[] = {"metadata", "labels", KUBE_LABEL_MANAGED_BY, NULL};
    const char *p2[] = {"metadata", "labels", KUBE_LABEL_POOL, NULL};
    const char *p3[] = {"metadata", "annotations", KUBE_ANNOT_HASH, NULL};
    const char *p4[] = {"spec", "template", "metadata", "labels", "team", NULL};
    const char *p5[] = {"spec", "template", "metadata", "labels", KUBE_LABEL_POOL, NULL};
    assert_string_equal(path_str(obj, p1), "jobpool");
    assert_string_equal(path_str(obj, p2), "readback");
    assert_string_equal(path_str(obj, p3), "0123456789abcdef");
    assert_string_equal(path_str(obj, p4), "media");
    assert_string_equal(path_str(obj, p5), "readback");
    cJSON *spec = cJSON_GetObjectItem(obj, "spec");
    assert_int_equal(cJSON_GetObjectItem(spec, "backoffLimit")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(spec, "ttlSecondsAfterFinished")->valueint, 600);
    cJSON *ctr = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(spec, "template"), "spec"),
                            "containers"), 0);
    assert_string_equal(cJSON_GetObjectItem(ctr, "image")->valuestring,
                        "registry.example/thumbs:1.4");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(ctr, "args"), 1)->valuestring,
                        "/app/run");
    /* JOBPOOL_QUEUE from the template wins; POOL and VHOST were added. */
    cJSON *e;
    int seen = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ctr, "env")) {
        const char *n = cJSON_GetObjectItem(e, "name")->valuestring;
        const char *v = cJSON_GetObjectItem(e, "value")->valuestring;
        if (!strcmp(n, "JOBPOOL_QUEUE")) { assert_string_equal(v, "from-template"); seen |= 1; }
        if (!strcmp(n, "JOBPOOL_POOL")) { assert_string_equal(v, "readback"); seen |= 2; }
        if (!strcmp(n, "JOBPOOL_VHOST")) { assert_string_equal(v, "/"); seen |= 4; }
    }
    assert_int_equal(seen, 7);
    cJSON_Delete(obj);

    struct kube_job g;
    assert_int_equal(kube_job_get(c, j.name, &g), 0);
    assert_string_equal(g.uid, j.uid);
    assert_int_equal(kube_event_create(c, "Job", "batch/v1", j.name, j.uid, "Normal",
                                       "WorkerStarted", "started for 1 ready message"), 0);
    assert_int_equal(kube_job_delete(c, j.name), 0);
    assert_int_equal(kube_job_get(c, "no-such-job-xyz", &g), JP_ENOTFOUND);
    assert_int_equal(kube_job_delete(c, "no-such-job-xyz"), JP_ENOTFOUND);
    cJSON_Delete(t);
    kube_client_free(c);
}

static bool fence_answer;
static bool fence_fn(void *ud)
{
    (void)ud;
    return fence_answer;
}

/* A delete with preconditions is refused (409) once the Job changed after it was read, and
 * goes through while it is the same object; a fenced client sends no write at all. */
static void test_delete_preconditions_and_fence(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = "precond", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    struct kube_job j, now;
    if (kube_job_create(c, &s, &j)) fail_msg("create: %s", kube_last_error(c));
    /* Any change bumps the resourceVersion: here a label, as a pod start changes status. */
    char path[256];
    snprintf(path, sizeof path, "/apis/batch/v1/namespaces/%s/jobs/%s", kube_namespace(c),
             j.name);
    /* The Job controller writes the Job's status at the same time (its pod appears), so a PUT
     * of what was read may meet a 409: read again and retry, as any client would. */
    int put = JP_ECONFLICT;
    for (int i = 0; i < 10 && put == JP_ECONFLICT; i++) {
        cJSON *obj = NULL;
        assert_int_equal(kube_job_get_json(c, j.name, &obj), 0);
        cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "metadata"), "labels");
        cJSON_AddStringToObject(labels, "touched", "yes");
        char *body = cJSON_PrintUnformatted(obj);
        put = kube_request(c, "PUT", path, body, NULL);
        free(body);
        cJSON_Delete(obj);
    }
    assert_int_equal(put, 0);
    assert_int_equal(kube_job_get(c, j.name, &now), 0);
    assert_string_not_equal(now.resource_version, j.resource_version);

    assert_int_equal(kube_job_delete_if(c, j.name, j.uid, j.resource_version), JP_ECONFLICT);
    assert_int_equal(kube_job_delete_if(c, j.name, "00000000-0000-0000-0000-000000000000",
                                        now.resource_version), JP_ECONFLICT);
    assert_int_equal(kube_job_get(c, j.name, &now), 0); /* still there */

    kube_client_set_fence(c, fence_fn, NULL);
    fence_answer = false;
    unsigned long sent = kube_request_count(c);
    assert_int_equal(kube_job_delete_if(c, j.name, now.uid, now.resource_version), JP_ECANCELED);
    assert_non_null(strstr(kube_last_error(c), "write withheld"));
    int created = -1;
    assert_int_equal(kube_jobs_create(c, &s, 3, &created, NULL, NULL), JP_ECANCELED);
    assert_int_equal(created, 0);
    assert_int_equal(kube_request_count(c), sent); /* nothing went out */
    assert_int_equal(kube_job_get(c, j.name, &now), 0); /* reads are not fenced */

    fence_answer = true;
    /* The same race: a status write between the read and the delete is a 409 by design (that
     * is what the precondition is for); the delete of a fresh read goes through. */
    int del = JP_ECONFLICT;
    for (int i = 0; i < 10 && del == JP_ECONFLICT; i++) {
        assert_int_equal(kube_job_get(c, j.name, &now), 0);
        del = kube_job_delete_if(c, j.name, now.uid, now.resource_version);
    }
    assert_int_equal(del, 0);
    assert_int_equal(kube_job_delete_if(c, j.name, now.uid, now.resource_version), JP_ENOTFOUND);
    delete_pool(c, "precond");
    cJSON_Delete(t);
    kube_client_free(c);
}

/* Invalid templates come back as 422 with the API server's own reason. */
static void test_invalid_template(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    cJSON *t = tmpl("{\"template\":{\"spec\":{\"restartPolicy\":\"Never\",\"containers\":[]}}}");
    struct kube_job_spec s = {.pool = "invalid", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    assert_int_equal(kube_job_create(c, &s, NULL), JP_EINVALID);
    print_message("422 detail: %s\n", kube_last_error(c));
    assert_non_null(strstr(kube_last_error(c), "rejected (422)"));
    assert_non_null(strstr(kube_last_error(c), "spec.template.spec.containers: Required value"));
    cJSON_Delete(t);

    t = tmpl("{\"template\":{\"spec\":{\"restartPolicy\":\"Always\",\"containers\":"
             "[{\"name\":\"w\",\"image\":\"x\"}]}}}");
    s.job_template = t;
    int created = -1;
    assert_int_equal(kube_jobs_create(c, &s, 3, &created, NULL, NULL), JP_EINVALID);
    assert_int_equal(created, 0);
    print_message("422 detail: %s\n", kube_last_error(c));
    assert_non_null(strstr(kube_last_error(c), "spec.template.spec.restartPolicy"));
    assert_non_null(strstr(kube_last_error(c), "valid values: \"OnFailure\", \"Never\""));
    cJSON_Delete(t);
    kube_client_free(c);
}

/* 500 Jobs are listed in pages; deleting them removes them and (via the GC) their pods. */
static void test_list_500_paged_and_delete(void **state)
{
    (void)state;
    struct kube_client *c = admin(8, 100);
    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = "paging", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    int created = 0;
    int rc = kube_jobs_create(c, &s, 500, &created, NULL, NULL);
    if (rc) fail_msg("create 500: %s (%d created)", kube_last_error(c), created);
    assert_int_equal(created, 500);

    struct kube_job_list l = {0};
    unsigned long before = kube_request_count(c);
    assert_int_equal(kube_jobs_list(c, KUBE_LABEL_POOL "=paging", &l), 0);
    assert_int_equal(l.n, 500);
    /* 100 per page: 5 pages, and a sixth, empty one when the server still gave a continue. */
    unsigned long pages = kube_request_count(c) - before;
    print_message("listed 500 jobs in %lu requests\n", pages);
    assert_in_range(pages, 5, 6);
    for (size_t i = 0; i < l.n; i++) {
        assert_string_equal(l.items[i].pool, "paging");
        assert_true(strncmp(l.items[i].name, "paging-", 7) == 0);
    }
    /* Names are unique. */
    for (size_t i = 1; i < l.n; i++) assert_string_not_equal(l.items[i].name, l.items[0].name);

    /* Wait until the Job controller made pods for them, so the deletion must remove pods. */
    struct kube_pod_list pl = {0};
    for (int i = 0; i < 600; i++) {
        pl.n = 0;
        assert_int_equal(kube_pods_list(c, KUBE_LABEL_POOL "=paging", &pl), 0);
        if (pl.n >= 500) break;
        msleep(200);
    }
    print_message("pods made by the job controller: %zu\n", pl.n);
    assert_true(pl.n >= 500);
    for (size_t i = 0; i < l.n; i++) assert_int_equal(kube_job_delete(c, l.items[i].name), 0);
    size_t jobs_left = 1, pods_left = 1;
    for (int i = 0; i < 900 && (jobs_left || pods_left); i++) {
        l.n = 0;
        pl.n = 0;
        assert_int_equal(kube_jobs_list(c, KUBE_LABEL_POOL "=paging", &l), 0);
        assert_int_equal(kube_pods_list(c, KUBE_LABEL_POOL "=paging", &pl), 0);
        jobs_left = l.n;
        pods_left = pl.n;
        if (jobs_left || pods_left) msleep(200);
    }
    print_message("left after delete: %zu jobs, %zu pods\n", jobs_left, pods_left);
    assert_int_equal(jobs_left, 0);
    assert_int_equal(pods_left, 0);
    kube_pod_list_free(&pl);
    kube_job_list_free(&l);
    cJSON_Delete(t);
    kube_client_free(c);
}

/* The kube-controller-manager's Job controller creates a Pod for a created Job. */
static void test_controller_makes_pod(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = "podmade", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    struct kube_job j;
    assert_int_equal(kube_job_create(c, &s, &j), 0);
    char sel[128];
    snprintf(sel, sizeof sel, "job-name=%s", j.name);
    struct kube_pod_list pl = {0};
    for (int i = 0; i < 150 && pl.n == 0; i++) {
        assert_int_equal(kube_pods_list(c, sel, &pl), 0);
        if (!pl.n) msleep(200);
    }
    assert_int_equal(pl.n, 1);
    assert_string_equal(pl.items[0].job, j.name);
    assert_string_equal(pl.items[0].pool, "podmade");
    assert_string_equal(pl.items[0].phase, "Pending"); /* no kubelet runs it */
    struct kube_job jobs[1] = {j};
    kube_job_states(jobs, 1, pl.items, pl.n);
    assert_int_equal(jobs[0].state, KUBE_JOB_PENDING);
    {
        struct kube_pod p = pl.items[0];
        memcpy(p.phase, "Running", 8);
        kube_job_states(jobs, 1, &p, 1);
        assert_int_equal(jobs[0].state, KUBE_JOB_RUNNING);
        assert_int_equal(jobs[0].running_pods, 1);
    }
    kube_pod_list_free(&pl);
    assert_int_equal(kube_job_delete(c, j.name), 0);
    cJSON_Delete(t);
    kube_client_free(c);
}

/* Two clients contend for one Lease: create and stale updates conflict. */
static void test_lease_conflict(void **state)
{
    (void)state;
    struct kube_client *a = admin(1, 0), *b = admin(1, 0);
    struct kube_lease l = {.name = "jobpool-kit-lease", .holder = "a", .duration_s = 15,
                           .acquire_ms = util_wall_ms(), .renew_ms = util_wall_ms()};
    struct kube_lease la, lb, tmp;
    assert_int_equal(kube_lease_get(a, l.name, &tmp), JP_ENOTFOUND);
    assert_int_equal(kube_lease_create(a, &l, &la), 0);
    assert_string_equal(la.holder, "a");
    assert_int_equal(la.duration_s, 15);
    assert_true(la.resource_version[0]);
    assert_true(llabs(la.renew_ms - l.renew_ms) < 1000);
    struct kube_lease lb_try = l;
    memcpy(lb_try.holder, "b", 2);
    assert_int_equal(kube_lease_create(b, &lb_try, NULL), JP_ECONFLICT);
    assert_int_equal(kube_lease_get(b, l.name, &lb), 0);
    assert_string_equal(lb.resource_version, la.resource_version);
    /* a renews first; b's update with the old resourceVersion must conflict. */
    la.renew_ms = util_wall_ms();
    assert_int_equal(kube_lease_update(a, &la, &la), 0);
    memcpy(lb.holder, "b", 2);
    lb.transitions++;
    assert_int_equal(kube_lease_update(b, &lb, NULL), JP_ECONFLICT);
    print_message("409 detail: %s\n", kube_last_error(b));
    /* After re-reading, b can take it over. */
    assert_int_equal(kube_lease_get(b, l.name, &tmp), 0);
    memcpy(tmp.holder, "b", 2);
    tmp.transitions++;
    assert_int_equal(kube_lease_update(b, &tmp, &lb), 0);
    assert_string_equal(lb.holder, "b");
    assert_int_equal(lb.transitions, 1);
    assert_int_equal(kube_lease_update(a, &la, NULL), JP_ECONFLICT);
    assert_int_equal(kube_request(a, "DELETE",
                                  "/apis/coordination.k8s.io/v1/namespaces/default/leases/"
                                  "jobpool-kit-lease", NULL, NULL), 0);
    kube_client_free(a);
    kube_client_free(b);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A ServiceAccount token bound to a narrow Role, used in-cluster style: allowed verbs work,
 * listing secrets is a typed 403 that names the verb and resource; a rotated token is used. */
static void test_narrow_role_in_cluster(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    cJSON *obj = NULL;
    int rc = kube_request(c, "POST", "/api/v1/namespaces/default/serviceaccounts",
                          "{\"metadata\":{\"name\":\"jobpool-narrow\"}}", NULL);
    assert_true(rc == 0 || rc == JP_ECONFLICT);
    rc = kube_request(c, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                      "{\"metadata\":{\"name\":\"jobpool-narrow\"},\"rules\":["
                      "{\"apiGroups\":[\"batch\"],\"resources\":[\"jobs\"],"
                      "\"verbs\":[\"create\",\"get\",\"list\",\"watch\",\"delete\"]},"
                      "{\"apiGroups\":[\"\"],\"resources\":[\"pods\"],"
                      "\"verbs\":[\"get\",\"list\",\"watch\"]}]}", NULL);
    assert_true(rc == 0 || rc == JP_ECONFLICT);
    rc = kube_request(c, "POST",
                      "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
                      "{\"metadata\":{\"name\":\"jobpool-narrow\"},\"roleRef\":{\"apiGroup\":"
                      "\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":"
                      "\"jobpool-narrow\"},\"subjects\":[{\"kind\":\"ServiceAccount\","
                      "\"name\":\"jobpool-narrow\",\"namespace\":\"default\"}]}", NULL);
    assert_true(rc == 0 || rc == JP_ECONFLICT);
    /* The token controller writes the account's token into a Secret. */
    char *token = NULL;
    for (int i = 0; i < 100 && !token; i++) {
        assert_int_equal(kube_request(c, "GET",
                                      "/api/v1/namespaces/default/serviceaccounts/jobpool-narrow",
                                      NULL, &obj), 0);
        cJSON *sec = cJSON_GetArrayItem(cJSON_GetObjectItem(obj, "secrets"), 0);
        if (sec) {
            char path[256];
            snprintf(path, sizeof path, "/api/v1/namespaces/default/secrets/%s",
                     cJSON_GetObjectItem(sec, "name")->valuestring);
            cJSON *s = NULL;
            assert_int_equal(kube_request(c, "GET", path, NULL, &s), 0);
            cJSON *tok = cJSON_GetObjectItem(cJSON_GetObjectItem(s, "data"), "token");
            if (cJSON_IsString(tok))
                assert_int_equal(kube_base64_decode(tok->valuestring, &token, NULL), 0);
            cJSON_Delete(s);
        }
        cJSON_Delete(obj);
        obj = NULL;
        if (!token) msleep(100);
    }
    assert_non_null(token);

    /* In-cluster layout in a temp dir. */
    char dir[] = "/tmp/jobpool-kit-sa.XXXXXX", p[300];
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/token", dir);
    write_file(p, token);
    char *ca = NULL;
    assert_int_equal(util_read_file(getenv("JOBPOOL_TEST_KUBE_CA"), 1 << 20, false, &ca), 0);
    snprintf(p, sizeof p, "%s/ca.crt", dir);
    write_file(p, ca);
    snprintf(p, sizeof p, "%s/namespace", dir);
    write_file(p, "default\n");
    const char *server = getenv("JOBPOOL_TEST_KUBE_SERVER"); /* https://127.0.0.1:PORT */
    const char *port = strrchr(server, ':') + 1;
    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", port, 1);
    struct kube_opts o = {.in_cluster = true, .sa_dir = dir, .qps = -1};
    struct kube_client *sa = NULL;
    char err[256] = "";
    rc = kube_client_new(&o, &sa, err, sizeof err);
    if (rc) fail_msg("in-cluster client: %s", err);
    assert_string_equal(kube_namespace(sa), "default");

    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = "narrow", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    struct kube_job j;
    rc = kube_job_create(sa, &s, &j);
    if (rc) fail_msg("create as the narrow account: %s", kube_last_error(sa));
    struct kube_job_list l = {0};
    assert_int_equal(kube_jobs_list(sa, KUBE_LABEL_POOL "=narrow", &l), 0);
    assert_int_equal(l.n, 1);
    kube_job_list_free(&l);
    struct kube_pod_list pl = {0};
    assert_int_equal(kube_pods_list(sa, NULL, &pl), 0);
    kube_pod_list_free(&pl);

    rc = kube_request(sa, "GET", "/api/v1/namespaces/default/secrets", NULL, NULL);
    assert_int_equal(rc, JP_EFORBIDDEN);
    print_message("403 detail: %s\n", kube_last_error(sa));
    assert_non_null(strstr(kube_last_error(sa), "GET /api/v1/namespaces/default/secrets denied (403)"));
    assert_non_null(strstr(kube_last_error(sa), "cannot list resource \"secrets\""));
    assert_null(strstr(kube_last_error(sa), token));
    struct kube_lease tmp;
    assert_int_equal(kube_lease_get(sa, "any", &tmp), JP_EFORBIDDEN);
    assert_non_null(strstr(kube_last_error(sa), "get leases.coordination.k8s.io denied (403)"));

    /* Rotate the token file to the admin's token: the next call uses it. */
    msleep(20);
    snprintf(p, sizeof p, "%s/token", dir);
    write_file(p, getenv("JOBPOOL_TEST_KUBE_TOKEN"));
    rc = kube_request(sa, "GET", "/api/v1/namespaces/default/secrets", NULL, NULL);
    assert_int_equal(rc, 0);

    assert_int_equal(kube_job_delete(c, j.name), 0);
    kube_client_free(sa);
    const char *files[] = {"token", "ca.crt", "namespace"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    explicit_bzero(token, strlen(token));
    free(token);
    free(ca);
    cJSON_Delete(t);
    kube_client_free(c);
}

static int find_job(const struct kube_snapshot *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(kube_snap_str(l, l->v[i].name), name)) return (int)i;
    return -1;
}

/* The watch cache sees creates, updates (a pod turning Running) and deletes, without requests
 * per read. */
static void test_watch_cache(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    struct kube_cache *k = NULL;
    struct kube_cache_opts ko = {.watch_timeout_s = 5};
    assert_int_equal(kube_cache_new(c, &ko, &k), 0);
    assert_int_equal(kube_cache_wait_synced(k, 20000), 0);
    struct kube_snapshot l = {0};
    assert_int_equal(kube_cache_snapshot(k, "cached", &l), 0);
    assert_int_equal(l.n, 0);

    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = "cached", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    struct kube_job j;
    assert_int_equal(kube_job_create(c, &s, &j), 0);
    int idx = -1;
    for (int i = 0; i < 200 && idx < 0; i++) {
        assert_int_equal(kube_cache_snapshot(k, "cached", &l), 0);
        idx = find_job(&l, j.name);
        if (idx < 0) msleep(50);
    }
    assert_true(idx >= 0);
    assert_int_equal(l.v[idx].state, KUBE_JOB_PENDING);

    /* Wait for the pod, then play kubelet: mark it Running through the status subresource. */
    char sel[128], pod[100] = "";
    snprintf(sel, sizeof sel, "job-name=%s", j.name);
    for (int i = 0; i < 150 && !pod[0]; i++) {
        struct kube_pod_list pl = {0};
        assert_int_equal(kube_pods_list(c, sel, &pl), 0);
        if (pl.n) memcpy(pod, pl.items[0].name, sizeof pl.items[0].name);
        kube_pod_list_free(&pl);
        if (!pod[0]) msleep(100);
    }
    assert_true(pod[0]);
    char path[256];
    snprintf(path, sizeof path, "/api/v1/namespaces/default/pods/%s/status", pod);
    assert_int_equal(kube_request(c, "PATCH", path, "{\"status\":{\"phase\":\"Running\"}}", NULL),
                     0);
    unsigned long reqs = kube_request_count(c);
    bool running = false;
    for (int i = 0; i < 200 && !running; i++) {
        assert_int_equal(kube_cache_snapshot(k, "cached", &l), 0);
        idx = find_job(&l, j.name);
        running = idx >= 0 && l.v[idx].state == KUBE_JOB_RUNNING;
        if (!running) msleep(50);
    }
    assert_true(running);
    assert_int_equal(kube_request_count(c), reqs); /* reads cost no requests */
    assert_int_equal(l.v[idx].running_pods, 1);

    /* A pod whose name does not begin with its Job's (made by hand, not by the Job
     * controller, which names its pods "<job>-<suffix>") counts for the Job by its label
     * job-name all the same: the cache keeps that label whole only for such a pod. */
    char body[512];
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"byhand-%s\","
             "\"labels\":{\"job-name\":\"%s\",\"" KUBE_LABEL_MANAGED_BY "\":\"jobpool\"}},"
             "\"spec\":{\"containers\":[{\"name\":\"w\",\"image\":\"example/w:1\"}]}}",
             j.name, j.name);
    assert_int_equal(kube_request(c, "POST", "/api/v1/namespaces/default/pods", body, NULL), 0);
    snprintf(path, sizeof path, "/api/v1/namespaces/default/pods/byhand-%s/status", j.name);
    assert_int_equal(kube_request(c, "PATCH", path, "{\"status\":{\"phase\":\"Running\"}}", NULL),
                     0);
    int pods = 0;
    for (int i = 0; i < 200 && pods < 2; i++) {
        assert_int_equal(kube_cache_snapshot(k, "cached", &l), 0);
        idx = find_job(&l, j.name);
        pods = idx >= 0 ? l.v[idx].running_pods : 0;
        if (pods < 2) msleep(50);
    }
    assert_int_equal(pods, 2);
    snprintf(path, sizeof path, "/api/v1/namespaces/default/pods/byhand-%s", j.name);
    assert_int_equal(kube_request(c, "DELETE", path, NULL, NULL), 0);

    assert_int_equal(kube_job_delete(c, j.name), 0);
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        assert_int_equal(kube_cache_snapshot(k, "cached", &l), 0);
        gone = find_job(&l, j.name) < 0;
        if (!gone) msleep(50);
    }
    assert_true(gone);
    struct kube_cache_stats st;
    kube_cache_get_stats(k, &st);
    print_message("cache: %lu lists, %lu watches, %lu events, %lu errors\n", st.lists,
                  st.watches, st.events, st.errors);
    assert_true(st.events >= 3);
    kube_snapshot_free(&l);
    kube_cache_free(k);
    cJSON_Delete(t);
    kube_client_free(c);
}

/* A snapshot's Job of namespace ns and name, or NULL. */
static const struct kube_snap_job *find_ns_job(const struct kube_snapshot *l, const char *ns,
                                               const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(kube_snap_str(l, l->v[i].ns), ns) &&
            !strcmp(kube_snap_str(l, l->v[i].name), name))
            return &l->v[i];
    return NULL;
}

/* Jobs of one name in two namespaces are two Jobs, in either shape of watch (one reflector per
 * listed namespace, or one cluster-wide): a pod marks only its own namespace's Job, a create's
 * answer and an expected create count in their own namespace, and a delete leaves the other
 * namespace's Job alone. */
static void cache_two_namespaces(const char *const *nss, size_t n)
{
    struct kube_client *c = admin(1, 0);
    struct kube_cache *k = NULL;
    struct kube_cache_opts ko = {.watch_timeout_s = 5, .namespaces = nss, .nnamespaces = n};
    assert_int_equal(kube_cache_new(c, &ko, &k), 0);
    assert_int_equal(kube_cache_wait_synced(k, 20000), 0);
    cJSON *t = tmpl(TEMPLATE);
    const char *ns[2] = {"kit-ns1", "kit-ns2"};
    struct kube_job made[2];
    for (int i = 0; i < 2; i++) {
        struct kube_job_spec s = {.namespace_ = ns[i], .pool = "nsc", .job_template = t,
                                  .ttl_seconds_after_finished = -1, .name = "nsc-same"};
        assert_int_equal(kube_job_create(c, &s, &made[i]), 0);
        assert_string_equal(made[i].ns, ns[i]);
    }
    kube_cache_note_created(k, &made[1]);   /* its answer: counted before the watch shows it */
    struct kube_job ph;
    memset(&ph, 0, sizeof ph);
    snprintf(ph.name, sizeof ph.name, "nsc-expected");
    snprintf(ph.ns, sizeof ph.ns, "kit-ns2");
    snprintf(ph.pool, sizeof ph.pool, "nsc");
    ph.queue = "";
    assert_int_equal(kube_cache_expect_created(k, &ph), 0);
    struct kube_snapshot l = {0};
    assert_int_equal(kube_cache_snapshot(k, "nsc", &l), 0);
    assert_non_null(find_ns_job(&l, "kit-ns2", "nsc-same"));
    assert_non_null(find_ns_job(&l, "kit-ns2", "nsc-expected"));
    assert_null(find_ns_job(&l, "kit-ns1", "nsc-expected"));
    kube_cache_forget_created(k, "kit-ns2/nsc-expected");
    bool both = false;
    for (int i = 0; i < 200 && !both; i++) {
        assert_int_equal(kube_cache_snapshot(k, "nsc", &l), 0);
        both = l.n == 2 && find_ns_job(&l, "kit-ns1", "nsc-same") && find_ns_job(&l, "kit-ns2", "nsc-same");
        if (!both) msleep(50);
    }
    assert_true(both);
    /* The pod of ns2's Job runs: only that Job is running. */
    char pod[100] = "", path[256];
    for (int i = 0; i < 150 && !pod[0]; i++) {
        struct kube_pod_list pl = {0};
        assert_int_equal(kube_pods_list_in(c, "kit-ns2", "job-name=nsc-same", &pl), 0);
        if (pl.n) memcpy(pod, pl.items[0].name, sizeof pl.items[0].name);
        kube_pod_list_free(&pl);
        if (!pod[0]) msleep(100);
    }
    assert_true(pod[0]);
    snprintf(path, sizeof path, "/api/v1/namespaces/kit-ns2/pods/%s/status", pod);
    assert_int_equal(kube_request(c, "PATCH", path, "{\"status\":{\"phase\":\"Running\"}}", NULL), 0);
    bool running = false;
    for (int i = 0; i < 200 && !running; i++) {
        assert_int_equal(kube_cache_snapshot(k, "nsc", &l), 0);
        const struct kube_snap_job *j2 = find_ns_job(&l, "kit-ns2", "nsc-same");
        running = j2 && j2->state == KUBE_JOB_RUNNING;
        if (!running) msleep(50);
    }
    assert_true(running);
    assert_int_equal(find_ns_job(&l, "kit-ns1", "nsc-same")->state, KUBE_JOB_PENDING);
    /* Deleting ns1's: gone from the snapshot at once; ns2's stays. */
    assert_int_equal(kube_job_delete_if_in(c, "kit-ns1", "nsc-same", made[0].uid, NULL), 0);
    kube_cache_note_deleted(k, "kit-ns1/nsc-same");
    assert_int_equal(kube_cache_snapshot(k, "nsc", &l), 0);
    assert_null(find_ns_job(&l, "kit-ns1", "nsc-same"));
    assert_non_null(find_ns_job(&l, "kit-ns2", "nsc-same"));
    assert_int_equal(kube_job_delete_if_in(c, "kit-ns2", "nsc-same", made[1].uid, NULL), 0);
    /* Both gone for the watch too before the next shape reuses the names. */
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        assert_int_equal(kube_cache_snapshot(k, "nsc", &l), 0);
        gone = l.n == 0;
        if (!gone) msleep(50);
    }
    kube_snapshot_free(&l);
    kube_cache_free(k);
    cJSON_Delete(t);
    /* The name is free again only when the Job object is gone (its finalizers done). */
    for (int i = 0; i < 2; i++)
        for (int tries = 0; tries < 200; tries++) {
            struct kube_job j;
            if (kube_job_get_in(c, ns[i], "nsc-same", &j) == JP_ENOTFOUND) break;
            msleep(50);
        }
    kube_client_free(c);
}

static void test_watch_cache_namespaces(void **state)
{
    (void)state;
    struct kube_client *c = admin(1, 0);
    const char *ns[2] = {"kit-ns1", "kit-ns2"};
    for (int i = 0; i < 2; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"metadata\":{\"name\":\"%s\"}}", ns[i]);
        int rc = kube_request(c, "POST", "/api/v1/namespaces", body, NULL);
        assert_true(rc == 0 || rc == JP_ECONFLICT);
    }
    kube_client_free(c);
    cache_two_namespaces(ns, 2);                       /* a reflector per namespace */
    const char *all[1] = {""};
    cache_two_namespaces(all, 1);                      /* one cluster-wide */
}

static struct kube_client *from_kubeconfig(const char *path, int *rc_out)
{
    struct kube_opts o = {.kubeconfig = path, .qps = -1};
    struct kube_client *c = NULL;
    char err[256] = "";
    *rc_out = kube_client_new(&o, &c, err, sizeof err);
    if (*rc_out) print_message("client from %s: %s\n", path, err);
    return c;
}

/* Client certificates as -data blobs, insecure-skip-tls-verify, a wrong CA (typed TLS error)
 * and a closed port (typed network error), all against the real server. */
static void test_tls_forms(void **state)
{
    (void)state;
    const char *kdir = getenv("JOBPOOL_KUBE_DIR"), *server = getenv("JOBPOOL_TEST_KUBE_SERVER");
    assert_non_null(kdir);
    char dir[] = "/tmp/jobpool-kit-tls.XXXXXX", cmd[4096], kc[300];
    assert_non_null(mkdtemp(dir));
    /* A client certificate in group system:masters, signed by the cluster's client CA. */
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; openssl req -newkey rsa:2048 -nodes -subj '/O=system:masters/CN=kit'"
             " -keyout c.key -out c.csr 2>/dev/null;"
             " openssl x509 -req -in c.csr -CA %s/pki/ca.crt -CAkey %s/pki/ca.key -CAcreateserial"
             " -days 1 -out c.crt 2>/dev/null;"
             " openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=other-ca -days 1"
             " -keyout o.key -out o.crt 2>/dev/null;"
             " printf 'apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n"
             "- name: k\n  cluster:\n    server: %s\n    certificate-authority-data: %%s\n"
             "- name: insecure\n  cluster:\n    server: %s\n    insecure-skip-tls-verify: true\n"
             "- name: wrongca\n  cluster:\n    server: %s\n    certificate-authority: o.crt\n"
             "- name: closed\n  cluster:\n    server: https://127.0.0.1:1\n"
             "users:\n- name: c\n  user:\n    client-certificate-data: %%s\n"
             "    client-key-data: %%s\n"
             "contexts:\n- name: c\n  context: {cluster: k, user: c}\n"
             "- name: insecure\n  context: {cluster: insecure, user: c}\n"
             "- name: wrongca\n  context: {cluster: wrongca, user: c}\n"
             "- name: closed\n  context: {cluster: closed, user: c}\n'"
             " \"$(base64 -w0 %s/pki/ca.crt)\" \"$(base64 -w0 c.crt)\" \"$(base64 -w0 c.key)\""
             " > kubeconfig",
             dir, kdir, kdir, server, server, server, kdir);
    assert_int_equal(system(cmd), 0);
    snprintf(kc, sizeof kc, "%s/kubeconfig", dir);
    int rc;
    struct kube_client *c = from_kubeconfig(kc, &rc);
    assert_int_equal(rc, 0);
    struct kube_job_list l = {0};
    rc = kube_jobs_list(c, NULL, &l);
    if (rc) fail_msg("list with a client certificate: %s", kube_last_error(c));
    kube_job_list_free(&l);
    cJSON *secrets = NULL; /* system:masters may list secrets */
    assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces/default/secrets", NULL, &secrets),
                     0);
    cJSON_Delete(secrets);
    kube_client_free(c);

    struct kube_opts o = {.kubeconfig = kc, .context = "insecure", .qps = -1};
    char err[256];
    assert_int_equal(kube_client_new(&o, &c, err, sizeof err), 0);
    assert_int_equal(kube_jobs_list(c, NULL, &l), 0);
    kube_job_list_free(&l);
    kube_client_free(c);

    o.context = "wrongca";
    assert_int_equal(kube_client_new(&o, &c, err, sizeof err), 0);
    assert_int_equal(kube_jobs_list(c, NULL, &l), JP_ETLS);
    print_message("tls detail: %s\n", kube_last_error(c));
    assert_non_null(strstr(kube_last_error(c), "list jobs.batch"));
    kube_job_list_free(&l);
    kube_client_free(c);

    o.context = "closed";
    assert_int_equal(kube_client_new(&o, &c, err, sizeof err), 0);
    assert_int_equal(kube_jobs_list(c, NULL, &l), JP_ECONNREFUSED);
    kube_job_list_free(&l);
    kube_client_free(c);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Create Jobs through both create paths (one, and a parallel batch of 3) with the client of
 * kubeconfig context ctx, then read them back as the admin: each form must really create. */
static void create_as(const char *kc, const char *ctx, const char *pool)
{
    struct kube_opts o = {.kubeconfig = kc, .context = ctx, .qps = -1, .concurrency = 3};
    struct kube_client *c = NULL;
    char err[256] = "";
    int rc = kube_client_new(&o, &c, err, sizeof err);
    if (rc) fail_msg("%s: client: %s", ctx, err);
    cJSON *t = tmpl(TEMPLATE);
    struct kube_job_spec s = {.pool = pool, .job_template = t, .ttl_seconds_after_finished = -1};
    struct kube_job one, batch[3];
    if ((rc = kube_job_create(c, &s, &one)) != 0)
        fail_msg("%s: create: %s", ctx, kube_last_error(c));
    int created = 0;
    if ((rc = kube_jobs_create(c, &s, 3, &created, batch, NULL)) != 0)
        fail_msg("%s: batch create (%d of 3): %s", ctx, created, kube_last_error(c));
    assert_int_equal(created, 3);
    kube_client_free(c);
    struct kube_client *a = admin(1, 0);
    char sel[128];
    snprintf(sel, sizeof sel, KUBE_LABEL_POOL "=%s", pool);
    struct kube_job_list l = {0};
    assert_int_equal(kube_jobs_list(a, sel, &l), 0);
    if (l.n != 4) fail_msg("%s: %zu jobs of pool %s, want 4", ctx, l.n, pool);
    kube_job_list_free(&l);
    delete_pool(a, pool);
    kube_client_free(a);
    cJSON_Delete(t);
}

/* Every kubeconfig user form creates Jobs against the real API server, through the single and
 * the parallel create paths (an inline token once reached only the first): an inline token, a
 * token file, a client certificate as -data and as files. An exec plugin is refused with a
 * message that says what to use instead. */
static void test_kubeconfig_forms_create(void **state)
{
    (void)state;
    const char *kdir = getenv("JOBPOOL_KUBE_DIR"), *server = getenv("JOBPOOL_TEST_KUBE_SERVER");
    const char *token = getenv("JOBPOOL_TEST_KUBE_TOKEN");
    assert_non_null(kdir);
    assert_non_null(token);
    char dir[] = "/tmp/jobpool-kit-forms.XXXXXX", cmd[6144], kc[300];
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; openssl req -newkey rsa:2048 -nodes -subj '/O=system:masters/CN=forms'"
             " -keyout c.key -out c.csr 2>/dev/null;"
             " openssl x509 -req -in c.csr -CA %s/pki/ca.crt -CAkey %s/pki/ca.key -CAcreateserial"
             " -days 1 -out c.crt 2>/dev/null; printf '%%s\\n' '%s' > tok; chmod 600 tok c.key;"
             " printf 'apiVersion: v1\\nkind: Config\\ncurrent-context: inline\\nclusters:\\n"
             "- name: k\\n  cluster:\\n    server: %s\\n    certificate-authority: %s/pki/ca.crt\\n"
             "users:\\n- name: inline\\n  user:\\n    token: %s\\n"
             "- name: tokfile\\n  user:\\n    tokenFile: tok\\n"
             "- name: certdata\\n  user:\\n    client-certificate-data: %%s\\n"
             "    client-key-data: %%s\\n"
             "- name: certfiles\\n  user:\\n    client-certificate: c.crt\\n    client-key: c.key\\n"
             "- name: exec\\n  user:\\n    exec:\\n      apiVersion: client.authentication.k8s.io/v1beta1\\n"
             "      command: aws\\n      args: [eks, get-token]\\n"
             "contexts:\\n- name: inline\\n  context: {cluster: k, user: inline}\\n"
             "- name: tokfile\\n  context: {cluster: k, user: tokfile}\\n"
             "- name: certdata\\n  context: {cluster: k, user: certdata}\\n"
             "- name: certfiles\\n  context: {cluster: k, user: certfiles}\\n"
             "- name: exec\\n  context: {cluster: k, user: exec}\\n'"
             " \"$(base64 -w0 c.crt)\" \"$(base64 -w0 c.key)\" > kubeconfig",
             dir, kdir, kdir, token, server, kdir, token);
    assert_int_equal(system(cmd), 0);
    snprintf(kc, sizeof kc, "%s/kubeconfig", dir);
    create_as(kc, "inline", "form-inline");
    create_as(kc, "tokfile", "form-tokfile");
    create_as(kc, "certdata", "form-certdata");
    create_as(kc, "certfiles", "form-certfiles");

    struct kube_opts o = {.kubeconfig = kc, .context = "exec", .qps = -1};
    struct kube_client *c = NULL;
    char err[256] = "";
    assert_int_equal(kube_client_new(&o, &c, err, sizeof err), JP_ECONFIG);
    assert_null(c);
    print_message("exec refused: %s\n", err);
    assert_non_null(strstr(err, "user \"exec\": exec and auth-provider credentials are not "
                                "supported; use a token or a client certificate"));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    log_setup(LOG_TEXT, LOG_WARN, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_read_back),
        cmocka_unit_test(test_delete_preconditions_and_fence),
        cmocka_unit_test(test_invalid_template),
        cmocka_unit_test(test_controller_makes_pod),
        cmocka_unit_test(test_lease_conflict),
        cmocka_unit_test(test_narrow_role_in_cluster),
        cmocka_unit_test(test_watch_cache),
        cmocka_unit_test(test_watch_cache_namespaces),
        cmocka_unit_test(test_tls_forms),
        cmocka_unit_test(test_kubeconfig_forms_create),
        cmocka_unit_test(test_list_500_paged_and_delete),
    };
    /* KIT_FILTER=test_watch* runs a subset (e.g. under valgrind). */
    if (getenv("KIT_FILTER")) cmocka_set_test_filter(getenv("KIT_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (getenv("KUBECONFIG")) {
        struct kube_client *c = admin(1, 0);
        const char *pools[] = {"readback", "podmade", "narrow", "cached", "paging",
                               "form-inline", "form-tokfile", "form-certdata",
                               "form-certfiles"};
        for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++) delete_pool(c, pools[i]);
        kube_client_free(c);
    }
    return rc;
}
