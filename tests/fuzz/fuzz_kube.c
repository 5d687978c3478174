/* fuzz_kube.c: libFuzzer target: API-server answers through the Kubernetes client's decoders:
 * a Job (get), a Job list and a Pod list (paged), a Lease, a delete's Status, and a watch event
 * whose object is decoded as the watch cache does. Every request is answered from the input
 * (fuzz_seam.h). Input: byte 0 picks the call, byte 1 the HTTP status, the rest is the body. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_seam.h"
#include "kube.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct kube_client *kc;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    struct kube_auth a = {.server = (char *)"http://fuzz.invalid"};
    struct kube_opts o = {.namespace_ = "fuzz", .qps = -1};
    if (kube_client_new_auth(&a, &o, &kc) != 0) abort();
    return 0;
}

/* Strings the decoders copy must come out NUL-terminated within their fields. */
static void check_job(const struct kube_job *j)
{
    if (strnlen(j->name, sizeof j->name) == sizeof j->name ||
        strnlen(j->pool, sizeof j->pool) == sizeof j->pool ||
        strnlen(j->uid, sizeof j->uid) == sizeof j->uid)
        abort();
    if (j->state < KUBE_JOB_PENDING || j->state > KUBE_JOB_FAILED) abort();
}

static void check_pod(const struct kube_pod *p)
{
    if (strnlen(p->name, sizeof p->name) == sizeof p->name ||
        strnlen(p->job, sizeof p->job) == sizeof p->job ||
        strnlen(p->phase, sizeof p->phase) == sizeof p->phase)
        abort();
}

/* A watch event line: {"type": ..., "object": {...}}, decoded as the watch cache does. */
static void watch_event(const char *line, size_t len)
{
    cJSON *ev = cJSON_ParseWithLength(line, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
    if (cJSON_IsString(type) && obj) {
        struct kube_job j;
        struct kube_pod p;
        if (kube_job_parse(obj, &j) == 0) check_job(&j);
        if (kube_pod_parse(obj, &p) == 0) check_pod(&p);
    }
    cJSON_Delete(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int call = data[0] % 7;
    seam.status = seam_statuses[data[1] % (sizeof seam_statuses / sizeof *seam_statuses)];
    seam.body = (const char *)data + 2;
    seam.len = size - 2;
    seam.times = 3; /* a list that keeps saying "continue" gets a last page after three */
    seam.after = "{\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"9\"},\"items\":[]}";
    seam.calls = 0;
    int rc = 0;
    switch (call) {
    case 0: {
        struct kube_job j;
        if ((rc = kube_job_get(kc, "fuzz", &j)) == 0) check_job(&j);
        break;
    }
    case 1: {
        struct kube_job_list l = {0};
        rc = kube_jobs_list(kc, NULL, &l);
        for (size_t i = 0; !rc && i < l.n; i++) check_job(&l.items[i]);
        kube_job_list_free(&l);
        break;
    }
    case 2: {
        struct kube_pod_list l = {0};
        rc = kube_pods_list(kc, NULL, &l);
        for (size_t i = 0; !rc && i < l.n; i++) check_pod(&l.items[i]);
        kube_pod_list_free(&l);
        break;
    }
    case 3: {
        struct kube_lease l;
        rc = kube_lease_get(kc, "fuzz", &l);
        break;
    }
    case 4: rc = kube_job_delete(kc, "fuzz"); break;
    case 5: {
        /* A watch stream's body, one event per line. */
        const char *p = seam.body, *end = p + seam.len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
            watch_event(p, n);
            p += n + 1;
        }
        break;
    }
    default: {
        cJSON *out = NULL;
        rc = kube_request(kc, "GET", "/api/v1/namespaces/fuzz/configmaps", NULL, &out);
        if (!rc != !!out) abort();
        cJSON_Delete(out);
    }
    }
    /* An error always says why, on one line, and never grows past its buffer. */
    const char *e = kube_last_error(kc);
    if (rc && rc != JP_ENOTFOUND && call != 5 && !e[0]) abort();
    (void)strlen(e);
    return 0;
}
