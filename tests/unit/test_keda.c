/* test_keda.c: `convert`: ScaledJob fields to JobPool fields, the comments on what maps
 * differently or is dropped, FILE:LINE:COL errors for what cannot be mapped (with no output at
 * all), skipped documents, and credentials in a host URL never repeated. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "keda.h"
#include "util.h"
#include "yamljson.h"

struct result {
    int rc;
    struct dbuf out, notes, errs;
};

static void run(const char *yaml, struct result *r)
{
    dbuf_init(&r->out, 0);
    dbuf_init(&r->notes, 0);
    dbuf_init(&r->errs, 0);
    r->rc = keda_convert(yaml, strlen(yaml), "sj.yaml", &r->out, &r->notes, &r->errs);
}

static void done(struct result *r)
{
    dbuf_free(&r->out);
    dbuf_free(&r->notes);
    dbuf_free(&r->errs);
}

static const char *text(const struct dbuf *b)
{
    return b->data ? b->data : "";
}

/* The output's documents, parsed back. */
struct docs {
    int n;
    cJSON *d[4];
};

static int keep(void *ud, const cJSON *root, const struct yamljson_src *src, int line)
{
    struct docs *d = ud;
    (void)src;
    (void)line;
    d->d[d->n++] = cJSON_Duplicate(root, 1);
    return 0;
}

static void parse_out(const struct result *r, struct docs *d)
{
    memset(d, 0, sizeof *d);
    struct yamljson_error e;
    if (yamljson_parse_each(text(&r->out), r->out.len, NULL, keep, d, &e))
        fail_msg("output does not parse: %d:%d %s\n%s", e.line, e.col, e.msg, text(&r->out));
}

static void free_docs(struct docs *d)
{
    for (int i = 0; i < d->n; i++) cJSON_Delete(d->d[i]);
}

static const cJSON *at(const cJSON *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
        o = cJSON_GetObjectItemCaseSensitive(o, k);
    return o;
}

static void want_int(const cJSON *o, const char *path, int v)
{
    const cJSON *n = at(o, path);
    if (!cJSON_IsNumber(n) || n->valueint != v) fail_msg("%s: want %d", path, v);
}

static void want_str(const cJSON *o, const char *path, const char *v)
{
    const cJSON *n = at(o, path);
    if (!cJSON_IsString(n) || strcmp(n->valuestring, v)) fail_msg("%s: want '%s'", path, v);
}

static void want_in(const struct dbuf *b, const char *needle)
{
    if (!strstr(text(b), needle)) fail_msg("missing '%s' in:\n%s", needle, text(b));
}

#define SJ_HEAD "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\n"
#define TEMPLATE                                                                             \
    "  jobTargetRef:\n    backoffLimit: 0\n    parallelism: 1\n    template:\n      spec:\n"   \
    "        restartPolicy: Never\n        containers:\n          - name: worker\n"           \
    "            image: registry.example/w:1\n"

/* Every field the issue lists, in the shapes KEDA documents; the pause annotation. */
static void test_full_mapping(void **state)
{
    (void)state;
    struct result r;
    run(SJ_HEAD "metadata:\n  name: orders\n  namespace: shop\n  labels: {app: orders}\n"
        "  annotations:\n    autoscaling.keda.sh/paused: \"true\"\n"
        "spec:\n" TEMPLATE "    ttlSecondsAfterFinished: 120\n"
        "  pollingInterval: 10\n  maxReplicaCount: 40\n  minReplicaCount: 2\n"
        "  successfulJobsHistoryLimit: 5\n  failedJobsHistoryLimit: 7\n"
        "  scalingStrategy:\n    strategy: eager\n"
        "  triggers:\n  - type: rabbitmq\n    metadata:\n      queueName: orders\n"
        "      mode: QueueLength\n      value: \"3\"\n      vhostName: shop\n"
        "      hostFromEnv: RABBITMQ_HOST\n", &r);
    assert_int_equal(r.rc, 0);
    struct docs d;
    parse_out(&r, &d);
    assert_int_equal(d.n, 1);
    const cJSON *jp = d.d[0];
    want_str(jp, "apiVersion", "jobpool.dev/v1alpha1");
    want_str(jp, "kind", "JobPool");
    want_str(jp, "metadata.name", "orders");
    want_str(jp, "metadata.namespace", "shop");
    want_str(jp, "metadata.labels.app", "orders");
    assert_null(at(jp, "metadata.annotations.autoscaling\\.keda\\.sh/paused"));
    const cJSON *ann = at(jp, "metadata.annotations");
    assert_non_null(ann);
    assert_string_equal(cJSON_GetObjectItem(ann, "jobpool.dev/paused")->valuestring, "true");
    assert_null(cJSON_GetObjectItem(ann, "autoscaling.keda.sh/paused"));
    want_str(jp, "spec.queue", "orders");
    want_str(jp, "spec.vhost", "shop");
    want_int(jp, "spec.maxActive", 40);
    want_int(jp, "spec.minActive", 2);
    want_int(jp, "spec.messagesPerWorker", 3);
    want_int(jp, "spec.successfulHistory", 5);
    want_int(jp, "spec.failedHistory", 7);
    want_int(jp, "spec.ttlSecondsAfterFinished", 120);
    want_str(jp, "spec.connectionSecretRef.name", "orders-rabbitmq");
    want_int(jp, "spec.jobTemplate.backoffLimit", 0);
    assert_null(at(jp, "spec.jobTemplate.ttlSecondsAfterFinished"));
    assert_null(at(jp, "spec.jobTemplate.parallelism"));
    const cJSON *c = cJSON_GetArrayItem(at(jp, "spec.jobTemplate.template.spec.containers"), 0);
    want_str(c, "image", "registry.example/w:1");
    /* What maps differently or is dropped says so. */
    want_in(&r.out, "# pollingInterval 10: dropped");
    want_in(&r.out, "# scalingStrategy.strategy eager: maps differently");
    want_in(&r.out, "spareWorkers gives eager's headroom");
    want_in(&r.out, "# hostFromEnv RABBITMQ_HOST: maps differently");
    assert_int_equal(r.errs.len, 0);
    free_docs(&d);
    done(&r);
}

/* KEDA's defaults are written out so behaviour does not change; regex, float value, vhost from
 * the host's path; the password in host never appears anywhere. */
static void test_defaults_regex_host(void **state)
{
    (void)state;
    struct result r;
    run(SJ_HEAD "metadata: {name: thumbs}\nspec:\n" TEMPLATE
        "  triggers:\n  - type: cpu\n    metadata: {value: \"50\"}\n"
        "  - type: rabbitmq\n    metadata:\n      queueName: '^thumbs\\.[0-9]+$'\n"
        "      useRegex: \"true\"\n      operation: max\n      mode: QueueLength\n"
        "      value: \"2.5\"\n      host: amqp://alice:s3cr%40t@broker:5672/media%2Fv\n"
        "      activationValue: \"4\"\n      unsafeSsl: \"true\"\n", &r);
    assert_int_equal(r.rc, 0);
    struct docs d;
    parse_out(&r, &d);
    const cJSON *jp = d.d[0];
    want_str(jp, "spec.queueRegex", "^thumbs\\.[0-9]+$");
    assert_null(at(jp, "spec.queue"));
    want_int(jp, "spec.maxActive", 100);
    want_int(jp, "spec.successfulHistory", 100);
    want_int(jp, "spec.failedHistory", 100);
    want_int(jp, "spec.messagesPerWorker", 3);
    want_str(jp, "spec.vhost", "media/v");
    assert_true(cJSON_IsNull(at(jp, "spec.ttlSecondsAfterFinished")));
    want_in(&r.out, "# operation max: maps differently");
    want_in(&r.out, "value 2.5: maps differently: rounded up");
    want_in(&r.out, "# activationValue: dropped");
    want_in(&r.out, "# unsafeSsl: dropped");
    want_in(&r.out, "# triggers[0] (type cpu): dropped");
    want_in(&r.out, "amqp://broker:5672/media%2Fv (credentials left out here)");
    assert_null(strstr(text(&r.out), "s3cr"));
    assert_null(strstr(text(&r.out), "alice"));
    free_docs(&d);
    done(&r);
}

/* What cannot be mapped: every problem reported with its position, and nothing printed, even
 * for the ScaledJobs that converted. */
static void test_errors(void **state)
{
    (void)state;
    struct result r;
    run(SJ_HEAD "metadata: {name: good}\nspec:\n" TEMPLATE
        "  triggers: [{type: rabbitmq, metadata: {queueName: q, mode: QueueLength, value: '1'}}]\n"
        "---\n" SJ_HEAD "metadata: {name: rate}\nspec:\n" TEMPLATE
        "  triggers:\n  - type: rabbitmq\n    metadata:\n      queueName: q\n"
        "      mode: MessageRate\n      value: \"100\"\n"
        "---\n" SJ_HEAD "metadata: {name: two}\nspec:\n" TEMPLATE
        "  maxReplicaCount: 0\n"
        "  triggers:\n  - type: rabbitmq\n    metadata: {queueName: a}\n"
        "  - type: rabbitmq\n    metadata: {queueName: b}\n"
        "---\n" SJ_HEAD "metadata: {name: Bad_Name}\nspec: {}\n"
        "---\n" SJ_HEAD "metadata: {name: pcre}\nspec:\n" TEMPLATE
        "  minReplicaCount: 200\n"
        "  triggers: [{type: rabbitmq, metadata: {queueName: 'jobs\\d+', useRegex: 'true', "
        "value: '-1', host: 'amqp://u:hunter2@h/'}}]\n", &r);
    assert_int_equal(r.rc, JP_ECONFIG);
    assert_int_equal(r.out.len, 0);
    want_in(&r.errs, "sj.yaml:33:13: ScaledJob rate: spec.triggers[0].metadata.mode: "
                     "MessageRate cannot be mapped");
    want_in(&r.errs, "sj.yaml:49:20: ScaledJob two: spec.maxReplicaCount: 0 is outside");
    want_in(&r.errs, "sj.yaml:53:5: ScaledJob two: spec.triggers[1]: a second rabbitmq trigger");
    want_in(&r.errs, "sj.yaml:58:18: ScaledJob Bad_Name: metadata.name: a JobPool's name");
    want_in(&r.errs, "ScaledJob pcre: spec.triggers[0].metadata.queueName: '\\d' is PCRE");
    want_in(&r.errs, "ScaledJob pcre: spec.triggers[0].metadata.value: expected a number > 0");
    want_in(&r.errs, "ScaledJob pcre: spec.minReplicaCount: 200 is more than maxReplicaCount");
    assert_null(strstr(text(&r.errs), "hunter2"));
    assert_null(strstr(text(&r.notes), "hunter2"));
    done(&r);

    run("a: [b\n", &r);
    assert_int_equal(r.rc, JP_EPARSE);
    want_in(&r.errs, "sj.yaml:2:1: yaml: ");
    done(&r);
}

/* Other kinds and ScaledJobs without a rabbitmq trigger are listed as skipped. */
static void test_skipped(void **state)
{
    (void)state;
    struct result r;
    run("apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\n---\n" SJ_HEAD
        "metadata: {name: cpu-only}\nspec:\n" TEMPLATE
        "  triggers: [{type: cpu, metadata: {value: '50'}}]\n---\n"
        "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: ta}\n", &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.out.len, 0);
    want_in(&r.notes, "sj.yaml:1: skipped Secret creds: not a KEDA ScaledJob");
    want_in(&r.notes, "sj.yaml:5: skipped ScaledJob cpu-only: it has no rabbitmq trigger");
    want_in(&r.notes, "skipped TriggerAuthentication ta");
    done(&r);
}

/* authenticationRef: a TriggerAuthentication of the input (before or after the ScaledJob) whose
 * secretTargetRefs read one Secret under the JobPool Secret's own key names is named as it is;
 * any other shape gets <name>-rabbitmq and a comment saying which key of which Secret goes
 * where; one not in the input says what to check. */
#define TA(name, refs) "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\n" \
    "metadata: {name: " name ", namespace: shop}\nspec:\n  secretTargetRef:\n" refs
#define SJ_AUTH(name, auth) SJ_HEAD "metadata: {name: " name ", namespace: shop}\nspec:\n" \
    TEMPLATE "  triggers:\n  - type: rabbitmq\n    metadata: {queueName: q}\n" \
    "    authenticationRef: {name: " auth "}\n"
static void test_auth_ref(void **state)
{
    (void)state;
    struct result r;
    struct docs d;
    run(SJ_AUTH("same", "ta-same") "---\n"
        TA("ta-same", "  - {parameter: host, name: conn, key: host}\n"
                      "  - {parameter: username, name: conn, key: username}\n"
                      "  - {parameter: password, name: conn, key: password}\n"
                      "  - {parameter: ca, name: conn, key: ca.crt}\n") "---\n"
        TA("ta-other", "  - {parameter: host, name: conn, key: url}\n"
                       "  - {parameter: password, name: pw, key: password}\n"
                       "  - {parameter: cert, name: conn, key: tls.crt}\n") "---\n"
        SJ_AUTH("other", "ta-other") "---\n" SJ_AUTH("missing", "ta-nowhere"), &r);
    assert_int_equal(r.rc, 0);
    parse_out(&r, &d);
    assert_int_equal(d.n, 3);
    want_str(d.d[0], "spec.connectionSecretRef.name", "conn");
    want_in(&r.out, "connectionSecretRef names its Secret conn, whose keys (host from Secret conn "
            "key host; username from Secret conn key username; password from Secret conn key "
            "password; ca.crt from Secret conn key ca.crt) jobpool reads as they are; add key "
            "managementUrl");
    want_str(d.d[1], "spec.connectionSecretRef.name", "other-rabbitmq");
    want_in(&r.out, "# authenticationRef TriggerAuthentication ta-other: maps differently: put "
            "into the Secret named by connectionSecretRef: host from Secret conn key url; "
            "password from Secret pw key password; cert from Secret conn key tls.crt (parameter "
            "cert: not supported)");
    want_str(d.d[2], "spec.connectionSecretRef.name", "missing-rabbitmq");
    want_in(&r.out, "ta-nowhere: maps differently (not in this input)");
    free_docs(&d);
    done(&r);

    /* Same name in another namespace, or a ClusterTriggerAuthentication: not named as it is. */
    run(SJ_AUTH("ns", "ta") "---\n"
        "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\n"
        "metadata: {name: ta, namespace: elsewhere}\n"
        "spec: {secretTargetRef: [{parameter: host, name: conn, key: host}]}\n---\n"
        SJ_HEAD "metadata: {name: cl, namespace: shop}\nspec:\n" TEMPLATE
        "  triggers:\n  - type: rabbitmq\n    metadata: {queueName: q}\n"
        "    authenticationRef: {name: cta, kind: ClusterTriggerAuthentication}\n---\n"
        "apiVersion: keda.sh/v1alpha1\nkind: ClusterTriggerAuthentication\nmetadata: {name: cta}\n"
        "spec: {secretTargetRef: [{parameter: host, name: conn, key: host}]}\n", &r);
    assert_int_equal(r.rc, 0);
    parse_out(&r, &d);
    assert_int_equal(d.n, 2);
    want_str(d.d[0], "spec.connectionSecretRef.name", "ns-rabbitmq");
    want_str(d.d[1], "spec.connectionSecretRef.name", "cl-rabbitmq");
    want_in(&r.out, "jobpool reads the JobPool's namespace only");
    free_docs(&d);
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_mapping),
        cmocka_unit_test(test_defaults_regex_host),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_skipped),
        cmocka_unit_test(test_auth_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
