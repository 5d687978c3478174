/* test_kube.c: the pure parts of the Kubernetes client: Job manifests, status parsing, states. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "http.h"
#include "kube.h"
#include "log.h"

static const char *env_value(const cJSON *ctr, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ctr, "env"))
        if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name))
            return cJSON_GetObjectItem(e, "value")->valuestring;
    return NULL;
}

/* The namespace a client works in: the config's when it names one, else the pod's own (the
 * service account's), so an overlay that moves the controller moves its Jobs with it. */
static void test_namespace_default(void **state)
{
    (void)state;
    char dir[] = "/tmp/jp-kube-ns.XXXXXX", p[256], err[256];
    assert_non_null(mkdtemp(dir));
    const char *files[][2] = {{"token", "t\n"}, {"ca.crt", "-----BEGIN CERTIFICATE-----\n"},
                              {"namespace", "team-b\n"}};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs(files[i][1], f);
        fclose(f);
    }
    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
    struct kube_opts o = {.in_cluster = true, .sa_dir = dir};
    struct kube_client *c = NULL;
    assert_int_equal(kube_client_new(&o, &c, err, sizeof err), 0);
    assert_string_equal(kube_namespace(c), "team-b");
    kube_client_free(c);
    o.namespace_ = "jobs";
    assert_int_equal(kube_client_new(&o, &c, err, sizeof err), 0);
    assert_string_equal(kube_namespace(c), "jobs");
    kube_client_free(c);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_manifest(void **state)
{
    (void)state;
    cJSON *t = cJSON_Parse(
        "{\"backoffLimit\":0,\"ttlSecondsAfterFinished\":5,\"template\":{\"spec\":{"
        "\"restartPolicy\":\"Never\",\"initContainers\":[{\"name\":\"init\",\"image\":\"i\"}],"
        "\"containers\":[{\"name\":\"a\",\"image\":\"x\",\"env\":[{\"name\":\"JOBPOOL_VHOST\","
        "\"value\":\"mine\"}]},{\"name\":\"b\",\"image\":\"y\"}]}}}");
    assert_non_null(t);
    char *before = cJSON_PrintUnformatted(t);
    struct kube_job_spec s = {.pool = "thumbs", .queue = "thumbnails", .vhost = "/",
                              .config_hash = "abc", .job_template = t,
                              .ttl_seconds_after_finished = 600};
    cJSON *m = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    char *after = cJSON_PrintUnformatted(t);
    assert_string_equal(before, after); /* the template is not modified */
    free(before);
    free(after);
    cJSON *meta = cJSON_GetObjectItem(m, "metadata");
    assert_string_equal(cJSON_GetObjectItem(m, "kind")->valuestring, "Job");
    assert_string_equal(cJSON_GetObjectItem(meta, "generateName")->valuestring, "thumbs-");
    assert_null(cJSON_GetObjectItem(meta, "name"));
    cJSON *labels = cJSON_GetObjectItem(meta, "labels");
    assert_string_equal(cJSON_GetObjectItem(labels, KUBE_LABEL_MANAGED_BY)->valuestring,
                        "jobpool");
    assert_string_equal(cJSON_GetObjectItem(labels, KUBE_LABEL_POOL)->valuestring, "thumbs");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(meta, "annotations"), KUBE_ANNOT_HASH)->valuestring,
        "abc");
    cJSON *spec = cJSON_GetObjectItem(m, "spec");
    assert_int_equal(cJSON_GetObjectItem(spec, "ttlSecondsAfterFinished")->valueint, 600);
    assert_int_equal(cJSON_GetObjectItem(spec, "backoffLimit")->valueint, 0);
    cJSON *tmpl = cJSON_GetObjectItem(spec, "template");
    cJSON *plabels = cJSON_GetObjectItem(cJSON_GetObjectItem(tmpl, "metadata"), "labels");
    assert_string_equal(cJSON_GetObjectItem(plabels, KUBE_LABEL_POOL)->valuestring, "thumbs");
    cJSON *pspec = cJSON_GetObjectItem(tmpl, "spec");
    cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(pspec, "containers"), 0);
    cJSON *b = cJSON_GetArrayItem(cJSON_GetObjectItem(pspec, "containers"), 1);
    cJSON *init = cJSON_GetArrayItem(cJSON_GetObjectItem(pspec, "initContainers"), 0);
    assert_string_equal(env_value(a, "JOBPOOL_VHOST"), "mine"); /* set by the template */
    assert_string_equal(env_value(a, "JOBPOOL_POOL"), "thumbs");
    assert_string_equal(env_value(a, "JOBPOOL_QUEUE"), "thumbnails");
    assert_string_equal(env_value(b, "JOBPOOL_VHOST"), "/");
    assert_string_equal(env_value(init, "JOBPOOL_QUEUE"), "thumbnails");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(a, "env")), 3);
    cJSON_Delete(m);

    /* ttl < 0 keeps the template's value; no hash, no queue: nothing added for them. */
    s.ttl_seconds_after_finished = -1;
    s.config_hash = NULL;
    s.queue = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    spec = cJSON_GetObjectItem(m, "spec");
    assert_int_equal(cJSON_GetObjectItem(spec, "ttlSecondsAfterFinished")->valueint, 5);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "metadata"), "annotations"));
    pspec = cJSON_GetObjectItem(cJSON_GetObjectItem(spec, "template"), "spec");
    assert_null(env_value(cJSON_GetArrayItem(cJSON_GetObjectItem(pspec, "containers"), 1),
                          "JOBPOOL_QUEUE"));
    cJSON_Delete(m);

    /* Extra pairs go to every container unless the template sets them. */
    const char *const extra[] = {"JOBPOOL_IDLE_TIMEOUT", "30s", "JOBPOOL_VHOST", "other", NULL};
    s.env = extra;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    pspec = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "spec"), "template"),
                                "spec");
    a = cJSON_GetArrayItem(cJSON_GetObjectItem(pspec, "containers"), 0);
    b = cJSON_GetArrayItem(cJSON_GetObjectItem(pspec, "containers"), 1);
    assert_string_equal(env_value(a, "JOBPOOL_IDLE_TIMEOUT"), "30s");
    assert_string_equal(env_value(b, "JOBPOOL_IDLE_TIMEOUT"), "30s");
    assert_string_equal(env_value(a, "JOBPOOL_VHOST"), "mine");
    cJSON_Delete(m);
    s.env = NULL;

    s.pool = "";
    assert_int_equal(kube_job_manifest(&s, &m), JP_EINVAL);
    assert_null(m);
    cJSON_Delete(t);
}

static cJSON *at(cJSON *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
        o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(k)) : cJSON_GetObjectItem(o, k);
    return o;
}

static cJSON *env_item(cJSON *ctr, const char *name)
{
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ctr, "env"))
        if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name)) return e;
    return NULL;
}

/* With a worker Secret every container gets the URL and a secretKeyRef login, never a literal
 * password; the CA comes as a read-only secret volume; the instance labels the Job and its pods
 * and the queue is an annotation. What the template sets wins. */
static void test_manifest_conn(void **state)
{
    (void)state;
    cJSON *t = cJSON_Parse(
        "{\"template\":{\"spec\":{\"restartPolicy\":\"Never\","
        "\"initContainers\":[{\"name\":\"init\",\"image\":\"i\"}],"
        "\"containers\":[{\"name\":\"a\",\"image\":\"x\"},"
        "{\"name\":\"b\",\"image\":\"y\",\"env\":[{\"name\":\"JOBPOOL_AMQP_URL\","
        "\"value\":\"amqp://mine:5672\"}],\"volumeMounts\":[{\"name\":\"own\","
        "\"mountPath\":\"/etc/jobpool/ca\"}]}]}}}");
    assert_non_null(t);
    struct kube_worker_conn w = {.amqp_url = "amqps://mq.example:5671", .secret = "mq-worker",
                                 .username_key = "user", .password_key = "pass",
                                 .ca_secret = "mq-ca", .ca_key = "root.pem"};
    const char *q = "orders.eu-west-1.priority.high.this-name-is-longer-than-a-label-may-be";
    struct kube_job_spec s = {.pool = "p", .instance = "blue", .queue = q, .vhost = "/",
                              .job_template = t, .ttl_seconds_after_finished = -1, .conn = &w};
    cJSON *m = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    assert_string_equal(at(m, "metadata.labels")->child->string, KUBE_LABEL_MANAGED_BY);
    assert_string_equal(cJSON_GetObjectItem(at(m, "metadata.labels"), KUBE_LABEL_INSTANCE)
                            ->valuestring, "blue");
    assert_string_equal(cJSON_GetObjectItem(at(m, "spec.template.metadata.labels"),
                                            KUBE_LABEL_INSTANCE)->valuestring, "blue");
    assert_string_equal(cJSON_GetObjectItem(at(m, "metadata.annotations"), KUBE_ANNOT_QUEUE)
                            ->valuestring, q);
    cJSON *a = at(m, "spec.template.spec.containers.0");
    cJSON *b = at(m, "spec.template.spec.containers.1");
    cJSON *init = at(m, "spec.template.spec.initContainers.0");
    cJSON *ctrs[] = {a, b, init};
    for (int i = 0; i < 3; i++) {
        cJSON *u = env_item(ctrs[i], "JOBPOOL_AMQP_USERNAME");
        cJSON *pw = env_item(ctrs[i], "JOBPOOL_AMQP_PASSWORD");
        assert_non_null(u);
        assert_non_null(pw);
        assert_null(cJSON_GetObjectItem(pw, "value"));
        assert_string_equal(at(u, "valueFrom.secretKeyRef.name")->valuestring, "mq-worker");
        assert_string_equal(at(u, "valueFrom.secretKeyRef.key")->valuestring, "user");
        assert_string_equal(at(pw, "valueFrom.secretKeyRef.name")->valuestring, "mq-worker");
        assert_string_equal(at(pw, "valueFrom.secretKeyRef.key")->valuestring, "pass");
        assert_string_equal(env_value(ctrs[i], "JOBPOOL_CA_FILE"), "/etc/jobpool/ca/root.pem");
    }
    assert_string_equal(env_value(a, "JOBPOOL_AMQP_URL"), "amqps://mq.example:5671");
    assert_string_equal(env_value(b, "JOBPOOL_AMQP_URL"), "amqp://mine:5672"); /* template's */
    cJSON *vols = at(m, "spec.template.spec.volumes");
    assert_int_equal(cJSON_GetArraySize(vols), 1);
    assert_string_equal(at(vols, "0.name")->valuestring, "jobpool-ca");
    assert_string_equal(at(vols, "0.secret.secretName")->valuestring, "mq-ca");
    assert_string_equal(at(a, "volumeMounts.0.mountPath")->valuestring, "/etc/jobpool/ca");
    assert_string_equal(at(a, "volumeMounts.0.name")->valuestring, "jobpool-ca");
    assert_true(cJSON_IsTrue(at(a, "volumeMounts.0.readOnly")));
    assert_int_equal(cJSON_GetArraySize(at(b, "volumeMounts")), 1); /* its own mount stays */
    assert_string_equal(at(b, "volumeMounts.0.name")->valuestring, "own");
    cJSON_Delete(m);

    /* A JobPool's Secret with the login in its URL: the URL itself by reference, nothing else
     * (no USERNAME/PASSWORD keys to point at). */
    struct kube_worker_conn wu = {.secret = "own", .amqp_url_key = "host",
                                  .username_key = "username", .password_key = "password"};
    s.conn = &wu;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    a = at(m, "spec.template.spec.containers.0");
    assert_null(cJSON_GetObjectItem(env_item(a, "JOBPOOL_AMQP_URL"), "value"));
    assert_string_equal(at(env_item(a, "JOBPOOL_AMQP_URL"), "valueFrom.secretKeyRef.name")
                            ->valuestring, "own");
    assert_string_equal(at(env_item(a, "JOBPOOL_AMQP_URL"), "valueFrom.secretKeyRef.key")
                            ->valuestring, "host");
    assert_null(env_item(a, "JOBPOOL_AMQP_USERNAME"));
    assert_null(env_item(a, "JOBPOOL_AMQP_PASSWORD"));
    b = at(m, "spec.template.spec.containers.1");
    assert_string_equal(env_value(b, "JOBPOOL_AMQP_URL"), "amqp://mine:5672"); /* template's */
    cJSON_Delete(m);

    /* No worker Secret: no connection is added at all. */
    s.conn = NULL;
    s.instance = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    a = at(m, "spec.template.spec.containers.0");
    assert_null(env_item(a, "JOBPOOL_AMQP_URL"));
    assert_null(env_item(a, "JOBPOOL_AMQP_PASSWORD"));
    assert_null(at(m, "spec.template.spec.volumes"));
    assert_null(cJSON_GetObjectItem(at(m, "metadata.labels"), KUBE_LABEL_INSTANCE));
    cJSON_Delete(m);
    cJSON_Delete(t);
}

/* A client certificate Secret: a second volume at KUBE_CERT_MOUNT beside the CA's, in every
 * container and init container, JOBPOOL_CERT_FILE and JOBPOOL_KEY_FILE pointing at its keys; a
 * container that mounts something there itself keeps its own. */
static void test_manifest_client_cert(void **state)
{
    (void)state;
    cJSON *t = cJSON_Parse(
        "{\"template\":{\"spec\":{\"restartPolicy\":\"Never\","
        "\"initContainers\":[{\"name\":\"init\",\"image\":\"i\"}],"
        "\"containers\":[{\"name\":\"a\",\"image\":\"x\"},"
        "{\"name\":\"b\",\"image\":\"y\",\"volumeMounts\":[{\"name\":\"own\","
        "\"mountPath\":\"/etc/jobpool/cert\"}]}]}}}");
    assert_non_null(t);
    struct kube_worker_conn w = {.amqp_url = "amqps://mq.example:5671", .secret = "mq-worker",
                                 .ca_secret = "mq-ca", .ca_key = "ca.crt",
                                 .cert_secret = "mq-client", .cert_key = "tls.crt",
                                 .key_key = "tls.key"};
    struct kube_job_spec s = {.pool = "p", .queue = "q", .job_template = t,
                              .ttl_seconds_after_finished = -1, .conn = &w};
    cJSON *m = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    cJSON *vols = at(m, "spec.template.spec.volumes");
    assert_int_equal(cJSON_GetArraySize(vols), 2);
    assert_string_equal(at(vols, "0.name")->valuestring, "jobpool-ca");
    assert_string_equal(at(vols, "1.name")->valuestring, "jobpool-cert");
    assert_string_equal(at(vols, "1.secret.secretName")->valuestring, "mq-client");
    cJSON *a = at(m, "spec.template.spec.containers.0");
    cJSON *b = at(m, "spec.template.spec.containers.1");
    cJSON *init = at(m, "spec.template.spec.initContainers.0");
    cJSON *ctrs[] = {a, b, init};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(env_value(ctrs[i], "JOBPOOL_CERT_FILE"), KUBE_CERT_MOUNT "/tls.crt");
        assert_string_equal(env_value(ctrs[i], "JOBPOOL_KEY_FILE"), KUBE_CERT_MOUNT "/tls.key");
        assert_string_equal(env_value(ctrs[i], "JOBPOOL_CA_FILE"), KUBE_CA_MOUNT "/ca.crt");
    }
    assert_int_equal(cJSON_GetArraySize(at(a, "volumeMounts")), 2);
    assert_string_equal(at(a, "volumeMounts.1.name")->valuestring, "jobpool-cert");
    assert_string_equal(at(a, "volumeMounts.1.mountPath")->valuestring, KUBE_CERT_MOUNT);
    assert_true(cJSON_IsTrue(at(a, "volumeMounts.1.readOnly")));
    /* b mounts its own volume at the cert path: it keeps it, and gets the CA's beside it. */
    assert_int_equal(cJSON_GetArraySize(at(b, "volumeMounts")), 2);
    assert_string_equal(at(b, "volumeMounts.0.name")->valuestring, "own");
    assert_string_equal(at(b, "volumeMounts.1.name")->valuestring, "jobpool-ca");
    assert_string_equal(at(init, "volumeMounts.1.name")->valuestring, "jobpool-cert");
    cJSON_Delete(m);

    /* Own key names; no CA Secret. */
    w.ca_secret = NULL;
    w.cert_key = "client.pem";
    w.key_key = "client.key";
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    vols = at(m, "spec.template.spec.volumes");
    assert_int_equal(cJSON_GetArraySize(vols), 1);
    assert_string_equal(at(vols, "0.name")->valuestring, "jobpool-cert");
    a = at(m, "spec.template.spec.containers.0");
    assert_string_equal(env_value(a, "JOBPOOL_CERT_FILE"), KUBE_CERT_MOUNT "/client.pem");
    assert_string_equal(env_value(a, "JOBPOOL_KEY_FILE"), KUBE_CERT_MOUNT "/client.key");
    assert_null(env_item(a, "JOBPOOL_CA_FILE"));
    cJSON_Delete(m);

    /* No certificate Secret: neither volume nor variables. */
    w.cert_secret = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    a = at(m, "spec.template.spec.containers.0");
    assert_null(at(m, "spec.template.spec.volumes"));
    assert_null(env_item(a, "JOBPOOL_CERT_FILE"));
    assert_null(env_item(a, "JOBPOOL_KEY_FILE"));
    cJSON_Delete(m);
    cJSON_Delete(t);
}

/* The restricted Pod Security fields are filled where the template is silent; a value the
 * template sets, even a weaker one, is kept. */
static void test_manifest_restricted(void **state)
{
    (void)state;
    cJSON *t = cJSON_Parse(
        "{\"template\":{\"spec\":{\"restartPolicy\":\"Never\","
        "\"initContainers\":[{\"name\":\"init\",\"image\":\"i\"}],"
        "\"containers\":[{\"name\":\"a\",\"image\":\"x\"}]}}}");
    struct kube_job_spec s = {.pool = "p", .job_template = t, .ttl_seconds_after_finished = -1};
    cJSON *m = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    cJSON *ps = at(m, "spec.template.spec");
    assert_true(cJSON_IsFalse(at(ps, "automountServiceAccountToken")));
    assert_true(cJSON_IsTrue(at(ps, "securityContext.runAsNonRoot")));
    assert_string_equal(at(ps, "securityContext.seccompProfile.type")->valuestring,
                        "RuntimeDefault");
    const char *lists[] = {"containers.0", "initContainers.0"};
    for (int i = 0; i < 2; i++) {
        cJSON *c = at(ps, lists[i]);
        assert_true(cJSON_IsFalse(at(c, "securityContext.allowPrivilegeEscalation")));
        assert_string_equal(at(c, "securityContext.capabilities.drop.0")->valuestring, "ALL");
        assert_int_equal(cJSON_GetArraySize(at(c, "securityContext.capabilities.drop")), 1);
    }
    cJSON_Delete(m);
    cJSON_Delete(t);

    t = cJSON_Parse(
        "{\"template\":{\"spec\":{\"automountServiceAccountToken\":true,"
        "\"securityContext\":{\"runAsNonRoot\":false,\"seccompProfile\":{\"type\":"
        "\"Unconfined\"}},\"containers\":[{\"name\":\"a\",\"image\":\"x\","
        "\"securityContext\":{\"privileged\":true,\"capabilities\":{\"drop\":[\"NET_RAW\"],"
        "\"add\":[\"SYS_ADMIN\"]}}}]}}}");
    s.job_template = t;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    ps = at(m, "spec.template.spec");
    assert_true(cJSON_IsTrue(at(ps, "automountServiceAccountToken")));
    assert_true(cJSON_IsFalse(at(ps, "securityContext.runAsNonRoot")));
    assert_string_equal(at(ps, "securityContext.seccompProfile.type")->valuestring, "Unconfined");
    cJSON *c = at(ps, "containers.0");
    assert_true(cJSON_IsTrue(at(c, "securityContext.privileged")));
    /* privileged: allowPrivilegeEscalation false would be refused by the API server */
    assert_null(at(c, "securityContext.allowPrivilegeEscalation"));
    assert_string_equal(at(c, "securityContext.capabilities.drop.0")->valuestring, "NET_RAW");
    assert_int_equal(cJSON_GetArraySize(at(c, "securityContext.capabilities.drop")), 1);
    cJSON_Delete(m);
    cJSON_Delete(t);
}

static const char *JOB_DONE =
    "{\"metadata\":{\"name\":\"thumbs-abcde\",\"uid\":\"u-1\",\"resourceVersion\":\"42\","
    "\"creationTimestamp\":\"2026-11-28T01:00:00Z\",\"labels\":{\"jobpool.dev/pool\":\"thumbs\"},"
    "\"annotations\":{\"jobpool.dev/config-hash\":\"h1\"}},"
    "\"status\":{\"startTime\":\"2026-11-28T01:00:01Z\",\"completionTime\":"
    "\"2026-11-28T01:00:09Z\",\"succeeded\":1,\"conditions\":[{\"type\":\"Complete\","
    "\"status\":\"True\",\"lastTransitionTime\":\"2026-11-28T01:00:09Z\"}]}}";

static void test_parse(void **state)
{
    (void)state;
    cJSON *o = cJSON_Parse(JOB_DONE);
    struct kube_job j;
    assert_int_equal(kube_job_parse(o, &j), 0);
    assert_string_equal(j.name, "thumbs-abcde");
    assert_string_equal(j.pool, "thumbs");
    assert_string_equal(j.uid, "u-1");
    assert_string_equal(j.resource_version, "42");
    assert_string_equal(j.config_hash, "h1");
    assert_int_equal(j.created_ms, 1795827600000LL);
    assert_int_equal(j.start_ms - j.created_ms, 1000);
    assert_int_equal(j.completion_ms - j.created_ms, 9000);
    assert_int_equal(j.finished_ms, j.completion_ms);
    assert_int_equal(j.succeeded, 1);
    assert_true(j.complete);
    assert_false(j.failed_cond);
    assert_int_equal(j.state, KUBE_JOB_SUCCEEDED);
    cJSON_Delete(o);

    o = cJSON_Parse("{\"metadata\":{\"name\":\"x\"},\"status\":{\"failed\":1,\"conditions\":"
                    "[{\"type\":\"Failed\",\"status\":\"True\"},{\"type\":\"Complete\","
                    "\"status\":\"False\"}]}}");
    assert_int_equal(kube_job_parse(o, &j), 0);
    assert_int_equal(j.state, KUBE_JOB_FAILED);
    assert_string_equal(j.pool, "");
    cJSON_Delete(o);
    o = cJSON_Parse("{\"metadata\":{}}");
    assert_int_equal(kube_job_parse(o, &j), JP_ESHAPE);
    cJSON_Delete(o);
    /* The name is the cache's key: empty, or cut to fit, it could stand for another object
     * (the watch fuzzer found the empty one). 63 characters is the longest Job name. */
    char doc[256];
    const char *names[] = {"", "a23456789012345678901234567890123456789012345678901234567890123"
                               "4"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(doc, sizeof doc, "{\"metadata\":{\"name\":\"%s\"}}", names[i]);
        o = cJSON_Parse(doc);
        assert_int_equal(kube_job_parse(o, &j), JP_ESHAPE);
        struct kube_pod pd;
        assert_int_equal(kube_pod_parse(o, &pd), i == 0 ? JP_ESHAPE : 0); /* pods: 79 fit */
        cJSON_Delete(o);
    }
    snprintf(doc, sizeof doc, "{\"metadata\":{\"name\":\"%.63s\"}}", names[1]);
    o = cJSON_Parse(doc);
    assert_int_equal(kube_job_parse(o, &j), 0);
    assert_int_equal(strlen(j.name), 63);
    cJSON_Delete(o);
    assert_string_equal(kube_job_state_name(KUBE_JOB_RUNNING), "running");
}

/* Caller-chosen names look like the server's generateName ones and fit a label value. */
static void test_job_names(void **state)
{
    (void)state;
    char a[64], b[64];
    kube_job_name("thumbs", a);
    kube_job_name("thumbs", b);
    assert_int_equal(strlen(a), 12);
    assert_memory_equal(a, "thumbs-", 7);
    assert_int_equal(strspn(a + 7, "bcdfghjklmnpqrstvwxz2456789"), 5);
    assert_string_not_equal(a, b);
    const char *longp = "p123456789012345678901234567890123456789012345678901234567890ab";
    kube_job_name(longp, a);
    assert_int_equal(strlen(a), 63);
    assert_memory_equal(a, longp, 57);
    assert_int_equal(a[57], '-');
    struct kube_job_spec s = {.pool = "thumbs", .name = b, .ttl_seconds_after_finished = -1};
    cJSON *m = NULL;
    assert_int_equal(kube_job_manifest(&s, &m), 0);
    cJSON *meta = cJSON_GetObjectItem(m, "metadata");
    assert_string_equal(cJSON_GetObjectItem(meta, "name")->valuestring, b);
    assert_null(cJSON_GetObjectItem(meta, "generateName"));
    cJSON_Delete(m);
}

static void test_states(void **state)
{
    (void)state;
    struct kube_job jobs[3] = {{.name = "p-a", .active = 1}, {.name = "p-b", .active = 1},
                               {.name = "p-c", .complete = true}};
    struct kube_pod pods[4] = {{.name = "p-a-1", .job = "p-a", .phase = "Running"},
                               {.name = "p-b-1", .job = "p-b", .phase = "Pending"},
                               {.name = "p-c-1", .job = "p-c", .phase = "Running"},
                               {.name = "q-1", .job = "other", .phase = "Running"}};
    kube_job_states(jobs, 3, pods, 4);
    assert_int_equal(jobs[0].state, KUBE_JOB_RUNNING);
    assert_int_equal(jobs[0].running_pods, 1);
    assert_int_equal(jobs[1].state, KUBE_JOB_PENDING);
    assert_int_equal(jobs[2].state, KUBE_JOB_SUCCEEDED); /* finished wins over a pod */
    assert_false(jobs[2].no_task);
    kube_job_states(jobs, 3, NULL, 0);
    assert_int_equal(jobs[0].state, KUBE_JOB_PENDING);
    /* A finished pod whose worker found no message marks its Job as wasted. */
    struct kube_pod idle[1] = {{.name = "p-c-1", .job = "p-c", .phase = "Succeeded",
                                .no_task = true}};
    kube_job_states(jobs, 3, idle, 1);
    assert_true(jobs[2].no_task);
    assert_false(jobs[0].no_task);
    assert_int_equal(jobs[2].running_pods, 0);
    /* A finished pod's "task wait=S duration=S" figures reach its Job; others stay unknown. */
    struct kube_pod ran[1] = {{.name = "p-c-1", .job = "p-c", .phase = "Succeeded",
                               .has_task = true, .task_wait_s = 42.5, .task_duration_s = 3}};
    kube_job_states(jobs, 3, ran, 1);
    assert_true(jobs[2].task_wait_s == 42.5);
    assert_true(jobs[2].task_duration_s == 3);
    assert_true(jobs[0].task_wait_s < 0 && jobs[0].task_duration_s < 0);
    assert_false(jobs[2].no_task);
}

/* Service-account token rotation (issue 14): clients on their own threads, as the watch cache's
 * are, re-read a rotating token file 32 times while other threads log the broker password. The
 * old 16-entry list evicted the password after 16 rotations, and raced (make tsan). */
enum { ROT_CLIENTS = 3, ROT_LOGGERS = 2, ROTATIONS = 32 };
static pthread_barrier_t rot_written, rot_read;
static int rot_stop;

static void *rot_client(void *arg)
{
    struct kube_client *c = arg;
    for (int i = 0; i < ROTATIONS; i++) {
        pthread_barrier_wait(&rot_written);
        /* Nothing listens on the port: the request fails, after re-reading the token. */
        assert_int_not_equal(kube_request(c, "GET", "/api", NULL, NULL), 0);
        pthread_barrier_wait(&rot_read);
    }
    return NULL;
}

static void *rot_logger(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&rot_stop, __ATOMIC_ACQUIRE))
        log_error("amqp://worker:broker-password-1@rabbitmq:5672/");
    return NULL;
}

static void write_token(const char *path, int i)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "sa-token-%02d-abcdefghijklmnop\n", i);
    fclose(f);
    /* A distinct mtime each time: the client re-reads on an mtime or size change. */
    struct timespec ts[2] = {{1000000 + i, 0}, {1000000 + i, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_token_rotation(void **state)
{
    (void)state;
    char path[] = "/tmp/jp-test-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_token(path, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    log_setup(LOG_TEXT, LOG_ERROR, f);
    log_add_secret("broker-password-1"); /* as cfg_secret_read registers it */
    struct kube_auth auth = {.server = (char *)"http://127.0.0.1:1", .token_file = path};
    struct kube_opts o = {.timeout_ms = 2000};
    struct kube_client *c[ROT_CLIENTS];
    for (int i = 0; i < ROT_CLIENTS; i++) assert_int_equal(kube_client_new_auth(&auth, &o, &c[i]), 0);
    pthread_barrier_init(&rot_written, NULL, ROT_CLIENTS + 1);
    pthread_barrier_init(&rot_read, NULL, ROT_CLIENTS + 1);
    pthread_t tc[ROT_CLIENTS], tl[ROT_LOGGERS];
    __atomic_store_n(&rot_stop, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < ROT_LOGGERS; i++)
        assert_int_equal(pthread_create(&tl[i], NULL, rot_logger, NULL), 0);
    for (int i = 0; i < ROT_CLIENTS; i++)
        assert_int_equal(pthread_create(&tc[i], NULL, rot_client, c[i]), 0);
    for (int i = 1; i <= ROTATIONS; i++) {
        write_token(path, i);
        pthread_barrier_wait(&rot_written);
        pthread_barrier_wait(&rot_read);
    }
    for (int i = 0; i < ROT_CLIENTS; i++) pthread_join(tc[i], NULL);
    __atomic_store_n(&rot_stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < ROT_LOGGERS; i++) pthread_join(tl[i], NULL);
    /* The password and the current token; the 32 rotated-out tokens are gone. */
    assert_int_equal(log_secret_count(), 2);
    log_error("now sa-token-32-abcdefghijklmnop, before sa-token-31-abcdefghijklmnop");
    fflush(f);
    assert_null(strstr(buf, "broker-password-1"));
    assert_non_null(strstr(buf, "amqp://worker:***@rabbitmq"));
    assert_non_null(strstr(buf, "now ***, before sa-token-31"));
    for (int i = 0; i < ROT_CLIENTS; i++) kube_client_free(c[i]);
    assert_int_equal(log_secret_count(), 1);
    log_setup(LOG_TEXT, LOG_ERROR, NULL);
    fclose(f);
    free(buf);
    pthread_barrier_destroy(&rot_written);
    pthread_barrier_destroy(&rot_read);
    log_clear_secrets();
    unlink(path);
}

/* Neither kind of Job below may be taken for pending (and deleted after pendingTimeout). */
static void test_states_not_pending(void **state)
{
    (void)state;
    /* A pod whose node stopped reporting (phase Unknown) may still run its container. */
    struct kube_job jobs[2] = {{.name = "p-a", .active = 1},
                               /* between retries: one pod failed, the next not made yet */
                               {.name = "p-b", .failed = 1}};
    struct kube_pod pods[1] = {{.name = "p-a-1", .job = "p-a", .phase = "Unknown"}};
    assert_true(kube_pod_running(&pods[0]));
    kube_job_states(jobs, 2, pods, 1);
    assert_int_equal(jobs[0].state, KUBE_JOB_RUNNING);
    assert_int_equal(jobs[1].state, KUBE_JOB_PENDING); /* it will take a message again... */
    assert_true(kube_job_ran(&jobs[1]));                /* ...but its worker has run */
    assert_false(kube_job_ran(&jobs[0]));
    /* Once the Job controller gives up, it is failed, not running. */
    jobs[1].failed_cond = true;
    kube_job_states(jobs, 2, pods, 1);
    assert_int_equal(jobs[1].state, KUBE_JOB_FAILED);
}

/* ---- an API server that never stops paging (-Wl,--wrap=http_request) --------------------- */
/* While fake_body is set, every request gets it with status 200; otherwise the real call. */
static const char *fake_body;
static int fake_calls;
static char fake_url[1024], fake_method[16];   /* the last request's */
static char *fake_sent;                         /* its body (owned) */
int __real_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp);
int __wrap_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp);
int __wrap_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp)
{
    if (!fake_body) return __real_http_request(c, method, url, body, body_len, resp);
    fake_calls++;
    snprintf(fake_url, sizeof fake_url, "%s", url);
    snprintf(fake_method, sizeof fake_method, "%s", method);
    free(fake_sent);
    fake_sent = body ? strndup(body, body_len) : NULL;
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    resp->status = 200;
    resp->body = strdup(fake_body);
    resp->len = strlen(fake_body);
    return resp->body ? 0 : JP_ENOMEM;
}

/* A server (or a proxy) answering every page with another continue token: the listing stops
 * at KUBE_LIST_MAX_PAGES with an error, instead of looping and collecting for ever. */
static void test_list_endless_continue(void **state)
{
    (void)state;
    struct kube_auth auth = {.server = (char *)"http://127.0.0.1:1"};
    struct kube_opts o = {.namespace_ = "t"};
    struct kube_client *c;
    assert_int_equal(kube_client_new_auth(&auth, &o, &c), 0);
    fake_body = "{\"kind\":\"JobList\",\"metadata\":{\"continue\":\"again\"},"
                "\"items\":[{\"metadata\":{\"name\":\"j\"}}]}";
    fake_calls = 0;
    struct kube_job_list l = {0};
    assert_int_equal(kube_jobs_list(c, NULL, &l), JP_ERANGE);
    assert_int_equal(fake_calls, KUBE_LIST_MAX_PAGES);
    assert_non_null(strstr(kube_last_error(c), "continue token"));
    kube_job_list_free(&l);
    /* A last page ends it as usual. */
    fake_body = "{\"metadata\":{},\"items\":[{\"metadata\":{\"name\":\"j\"}}]}";
    assert_int_equal(kube_jobs_list(c, NULL, &l), 0);
    assert_int_equal(l.n, 1);
    kube_job_list_free(&l);
    fake_body = NULL;
    kube_client_free(c);
}

/* Each call that names a namespace works there, not in the client's: a JobPool's Jobs are
 * created, read, listed (their pods) and deleted in its namespace, and an Event about a JobPool
 * is created in the JobPool's namespace and names it there. NULL keeps the client's. */
static void test_namespaced_calls(void **state)
{
    (void)state;
    struct kube_auth auth = {.server = (char *)"http://127.0.0.1:1"};
    struct kube_opts o = {.namespace_ = "home", .qps = -1};
    struct kube_client *c;
    assert_int_equal(kube_client_new_auth(&auth, &o, &c), 0);
    fake_body = "{\"metadata\":{\"name\":\"a-x1\",\"namespace\":\"ns1\"},\"items\":[]}";
    cJSON *t = cJSON_Parse("{\"template\":{\"spec\":{\"containers\":[{\"name\":\"w\",\"image\":\"x\"}]}}}");
    struct kube_job_spec s = {.namespace_ = "ns1", .pool = "a", .job_template = t,
                              .ttl_seconds_after_finished = -1, .name = "a-x1"};
    struct kube_job j;
    assert_int_equal(kube_job_create(c, &s, &j), 0);
    assert_string_equal(fake_method, "POST");
    assert_non_null(strstr(fake_url, "/apis/batch/v1/namespaces/ns1/jobs"));
    assert_string_equal(j.ns, "ns1");
    assert_int_equal(kube_job_get_in(c, "ns1", "a-x1", &j), 0);
    assert_non_null(strstr(fake_url, "/apis/batch/v1/namespaces/ns1/jobs/a-x1"));
    struct kube_pod_list pods = {0};
    assert_int_equal(kube_pods_list_in(c, "ns2", "job-name=a-x1", &pods), 0);
    assert_non_null(strstr(fake_url, "/api/v1/namespaces/ns2/pods?"));
    kube_pod_list_free(&pods);
    assert_int_equal(kube_job_delete_if_in(c, "ns2", "a-x1", "u", NULL), 0);
    assert_string_equal(fake_method, "DELETE");
    assert_non_null(strstr(fake_url, "/apis/batch/v1/namespaces/ns2/jobs/a-x1"));
    assert_int_equal(kube_job_delete_if_in(c, NULL, "a-x1", "u", NULL), 0);
    assert_non_null(strstr(fake_url, "/apis/batch/v1/namespaces/home/jobs/a-x1"));
    assert_int_equal(kube_event_create_in(c, "ns3", "JobPool", "jobpool.dev/v1alpha1", "a", NULL,
                                          "Warning", "TemplateRejected", "no"), 0);
    assert_non_null(strstr(fake_url, "/api/v1/namespaces/ns3/events"));
    cJSON *ev = cJSON_Parse(fake_sent);
    assert_non_null(ev);
    cJSON *inv = cJSON_GetObjectItem(ev, "involvedObject");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "metadata"), "namespace")->valuestring, "ns3");
    assert_string_equal(cJSON_GetObjectItem(inv, "namespace")->valuestring, "ns3");
    assert_string_equal(cJSON_GetObjectItem(inv, "kind")->valuestring, "JobPool");
    assert_string_equal(cJSON_GetObjectItem(inv, "name")->valuestring, "a");
    cJSON_Delete(ev);
    cJSON_Delete(t);
    free(fake_sent);
    fake_sent = NULL;
    fake_body = NULL;
    kube_client_free(c);
}

int main(void)
{
    log_setup(LOG_TEXT, LOG_ERROR, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_namespace_default),
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_manifest_conn),
        cmocka_unit_test(test_manifest_client_cert),
        cmocka_unit_test(test_manifest_restricted),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_token_rotation),
        cmocka_unit_test(test_list_endless_continue),
        cmocka_unit_test(test_states_not_pending),
        cmocka_unit_test(test_job_names),
        cmocka_unit_test(test_namespaced_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
