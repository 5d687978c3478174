/* kube_bench.c: time and count the requests to create and list Jobs on a real API server. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "http.h"
#include "kube.h"
#include "kube_cache.h"
#include "log.h"
#include "util.h"

/* parallelism 0: the Job controller makes no pods, so only the API server is measured. */
static const char *TEMPLATE =
    "{\"parallelism\":0,\"backoffLimit\":0,\"template\":{\"spec\":{\"restartPolicy\":\"Never\","
    "\"containers\":[{\"name\":\"w\",\"image\":\"registry.example/w:1\"}]}}}";

static struct kube_client *client_b(int concurrency, double qps, int burst, int page)
{
    struct kube_opts o = {.kubeconfig = getenv("KUBECONFIG"), .concurrency = concurrency,
                          .qps = qps, .burst = burst, .page_size = page};
    struct kube_client *c = NULL;
    char err[256] = "";
    if (!o.kubeconfig || kube_client_new(&o, &c, err, sizeof err) != 0) {
        fprintf(stderr, "kube_bench: no client: %s\n", o.kubeconfig ? err : "KUBECONFIG unset");
        exit(1);
    }
    return c;
}

static struct kube_client *client(int concurrency, double qps, int page)
{
    return client_b(concurrency, qps, 10, page);
}

/* A burst as the controller makes it: n creates for n ready messages through one client
 * (concurrency 8, the default), with qps and burst as given (0: the client's defaults). A batch
 * stops at the first 429; the rest are sent again after the server's Retry-After (the controller
 * would retry on a later tick). Prints the time until all n exist, and the 429s. */
static void burst_run(const char *pool, int n, double qps, int burst, const cJSON *t)
{
    struct kube_client *c = client_b(8, qps, burst, 500);
    struct kube_job_spec s = {.pool = pool, .job_template = t, .ttl_seconds_after_finished = -1};
    int *rcs = calloc((size_t)n, sizeof *rcs);
    unsigned long r0 = http_request_count();
    int64_t t0 = util_now_ms(), waited = 0;
    int total = 0, throttled = 0, rounds = 0;
    while (total < n && rounds < 1000) {
        int created = 0, want = n - total;
        rounds++;
        kube_jobs_create(c, &s, want, &created, NULL, rcs);
        for (int i = 0; i < want; i++) throttled += rcs[i] == JP_ETHROTTLED;
        total += created;
        if (total < n) {
            long ra = kube_last_retry_after(c);
            long ms = ra > 0 ? ra * 1000 : 1000;
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            waited += ms;
        }
    }
    int64_t ms = util_now_ms() - t0;
    char q[64];
    if (qps < 0) snprintf(q, sizeof q, "none");
    else if (qps == 0) snprintf(q, sizeof q, "default");
    else snprintf(q, sizeof q, "%.0f/s, burst %d", qps, burst);
    printf("| %d Jobs | %s | %.2f s | %.0f Jobs/s | %lu | %d | %d | %.1f s |\n", total, q,
           (double)ms / 1000.0, ms ? total * 1000.0 / (double)ms : 0.0,
           http_request_count() - r0, throttled, rounds, (double)waited / 1000.0);
    free(rcs);
    kube_client_free(c);
}

static void wipe(const char *pool)
{
    struct kube_client *c = client(1, -1, 500);
    char path[256];
    snprintf(path, sizeof path,
             "/apis/batch/v1/namespaces/default/jobs?labelSelector=" KUBE_LABEL_POOL "%%3D%s"
             "&propagationPolicy=Background", pool);
    if (kube_request(c, "DELETE", path, NULL, NULL) != 0)
        fprintf(stderr, "kube_bench: cleanup: %s\n", kube_last_error(c));
    /* Collection deletes are asynchronous: wait until the listing is empty. */
    char sel[128];
    snprintf(sel, sizeof sel, KUBE_LABEL_POOL "=%s", pool);
    for (int i = 0; i < 600; i++) {
        struct kube_job_list l = {0};
        int rc = kube_jobs_list(c, sel, &l);
        size_t n = l.n;
        kube_job_list_free(&l);
        if (rc || n == 0) break;
        struct timespec ts = {0, 200000000L};
        nanosleep(&ts, NULL);
    }
    kube_client_free(c);
}

static void create_run(const char *pool, int n, int concurrency, double qps, const cJSON *t)
{
    struct kube_client *c = client(concurrency, qps, 500);
    struct kube_job_spec s = {.pool = pool, .job_template = t, .ttl_seconds_after_finished = -1};
    unsigned long r0 = http_request_count();
    int64_t t0 = util_now_ms();
    int created = 0;
    int rc = kube_jobs_create(c, &s, n, &created, NULL, NULL);
    int64_t ms = util_now_ms() - t0;
    unsigned long reqs = http_request_count() - r0;
    if (rc) fprintf(stderr, "kube_bench: create: %s\n", kube_last_error(c));
    char q[32];
    if (qps < 0) snprintf(q, sizeof q, "none");
    else snprintf(q, sizeof q, "%.0f/s", qps);
    printf("| create %d Jobs | %d | %s | %.2f s | %.0f Jobs/s | %lu |\n", created, concurrency, q,
           (double)ms / 1000.0, ms ? created * 1000.0 / (double)ms : 0.0, reqs);
    kube_client_free(c);
}

static void list_run(const char *pool, int page, int expect)
{
    struct kube_client *c = client(1, -1, page);
    char sel[128];
    snprintf(sel, sizeof sel, KUBE_LABEL_POOL "=%s", pool);
    struct kube_job_list l = {0};
    unsigned long r0 = http_request_count();
    unsigned long long b0 = http_bytes_received();
    int64_t t0 = util_now_ms();
    int rc = kube_jobs_list(c, sel, &l);
    int64_t ms = util_now_ms() - t0;
    if (rc) fprintf(stderr, "kube_bench: list: %s\n", kube_last_error(c));
    if ((int)l.n != expect) fprintf(stderr, "kube_bench: listed %zu, expected %d\n", l.n, expect);
    printf("| list %zu Jobs, pages of %d | 1 | - | %.2f s | %.0f Jobs/s | %lu (%.1f MB) |\n", l.n,
           page, (double)ms / 1000.0, ms ? (double)l.n * 1000.0 / (double)ms : 0.0,
           http_request_count() - r0, (double)(http_bytes_received() - b0) / 1e6);
    kube_job_list_free(&l);
    kube_client_free(c);
}

static void cache_run(int expect)
{
    struct kube_client *c = client(1, -1, 500);
    struct kube_cache *k = NULL;
    int64_t t0 = util_now_ms();
    if (kube_cache_new(c, NULL, &k) != 0 || kube_cache_wait_synced(k, 120000) != 0) {
        fprintf(stderr, "kube_bench: cache did not sync\n");
        exit(1);
    }
    int64_t ms = util_now_ms() - t0;
    struct kube_snapshot l = {0};
    int64_t t1 = util_now_ms();
    int reads = 100;
    for (int i = 0; i < reads; i++) kube_cache_snapshot(k, "bench-list", &l);
    int64_t rms = util_now_ms() - t1;
    struct kube_cache_stats st;
    kube_cache_get_stats(k, &st);
    if ((int)l.n != expect) fprintf(stderr, "kube_bench: cache has %zu, expected %d\n", l.n, expect);
    printf("| watch cache: first sync of %zu Jobs | 1 | - | %.2f s | - | jobs+pods lists |\n",
           st.jobs, (double)ms / 1000.0);
    printf("| watch cache: one pool snapshot of %zu Jobs | - | - | %.2f ms | - | 0 |\n", l.n,
           (double)rms / reads);
    kube_snapshot_free(&l);
    kube_cache_free(k);
    kube_client_free(c);
}

int main(int argc, char **argv)
{
    int ncreate = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 200;
    int nlist = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 5000;
    log_setup(LOG_TEXT, LOG_ERROR, NULL);
    cJSON *t = cJSON_Parse(TEMPLATE);
    if (argc > 1 && strcmp(argv[1], "burst") == 0) {
        /* kube_bench burst N QPS BURST [QPS BURST ...]; QPS 0: the client's defaults. */
        int n = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 1000;
        printf("| burst | client limit | time to create all | rate | requests | 429s | "
               "rounds | waited on Retry-After |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
        wipe("bench-burst");
        for (int i = 3; i + 1 < argc; i += 2) {
            burst_run("bench-burst", n, strtod(argv[i], NULL), (int)strtol(argv[i + 1], NULL, 10),
                      t);
            wipe("bench-burst");
        }
        cJSON_Delete(t);
        return 0;
    }
    wipe("bench-create");
    wipe("bench-list");
    printf("| operation | concurrency | rate limit | time | throughput | requests |\n");
    printf("|---|---|---|---|---|---|\n");
    int conc[] = {1, 8};
    for (int i = 0; i < 2; i++) {
        create_run("bench-create", ncreate, conc[i], -1, t);
        wipe("bench-create");
    }
    create_run("bench-create", ncreate, 8, 50, t);
    wipe("bench-create");
    /* Seed the listing set fast, then list it. */
    struct kube_client *c = client(8, -1, 500);
    struct kube_job_spec s = {.pool = "bench-list", .job_template = t,
                              .ttl_seconds_after_finished = -1};
    int total = 0, tries = 0;
    while (total < nlist) {
        int created = 0, want = nlist - total < 1000 ? nlist - total : 1000;
        if (kube_jobs_create(c, &s, want, &created, NULL, NULL) != 0) {
            fprintf(stderr, "kube_bench: seeding (retrying): %s\n", kube_last_error(c));
            if (++tries > 20) return 1;
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
        total += created;
    }
    kube_client_free(c);
    list_run("bench-list", 500, nlist);
    list_run("bench-list", 100, nlist);
    cache_run(nlist);
    wipe("bench-list");
    cJSON_Delete(t);
    return 0;
}
