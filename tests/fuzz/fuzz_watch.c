/* fuzz_watch.c: libFuzzer target: watch events through the real watch cache (watch.c): each
 * input is one watch answer, cut into lines by http.c's splitter and handed to the reflector
 * thread's line handler, which decodes the events, parses their objects and merges them into
 * the store. The reflector runs as in the controller, on its own thread; http_request (its
 * list) and http_stream (its watch) are answered through link-time seams. After each input the
 * store is read as the controller reads it. Inputs holding an ERROR event are skipped: the
 * reflector then backs off for up to 30 s, which would only slow the fuzzer down (a 410 is
 * covered by the kube target's Status seeds and the watch unit tests). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http.h"
#include "kube.h"
#include "log.h"
#include "util.h"
#include "watch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static const uint8_t *input;    /* the answer to hand the next watch, under mu */
static size_t input_len;
static bool posted, done;

int __wrap_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp);
int __wrap_http_stream(struct http_client *c, const char *url, long timeout_ms,
                       http_line_fn on_line, int (*should_stop)(void *ud), void *ud,
                       struct http_response *resp);

/* The list: one Job, so the store has something for events to change. */
int __wrap_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp)
{
    (void)c, (void)method, (void)url, (void)body, (void)body_len;
    static const char list[] =
        "{\"kind\":\"JobList\",\"metadata\":{\"resourceVersion\":\"5\"},\"items\":[{\"metadata\":"
        "{\"name\":\"p-a\",\"resourceVersion\":\"4\",\"labels\":{\"jobpool.dev/pool\":\"p\"}},"
        "\"status\":{\"active\":1}}]}";
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    resp->status = 200;
    if (!(resp->body = strdup(list))) return JP_ENOMEM;
    resp->len = strlen(list);
    return 0;
}

/* The watch: wait for the fuzzer's next input (or the watch's stop), then deliver it. */
int __wrap_http_stream(struct http_client *c, const char *url, long timeout_ms,
                       http_line_fn on_line, int (*should_stop)(void *ud), void *ud,
                       struct http_response *resp)
{
    (void)c, (void)url, (void)timeout_ms;
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    pthread_mutex_lock(&mu);
    while (!posted) {
        if (should_stop(ud)) {
            pthread_mutex_unlock(&mu);
            return JP_ECANCELED;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    posted = false;
    const uint8_t *p = input;
    size_t n = input_len;
    pthread_mutex_unlock(&mu);
    struct dbuf line;
    dbuf_init(&line, 64 * 1024);
    int rc = http_split_lines(&line, p, n, on_line, ud);
    dbuf_free(&line);
    resp->status = 200;
    resp->body = calloc(1, 1);
    pthread_mutex_lock(&mu);
    done = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return rc == JP_ETOOBIG ? 0 : rc;
}

static struct watch *w;
static int parse_job(const struct cJSON *obj, void *rec) { return kube_job_parse(obj, rec); }
static const struct watch_kind jobs = {"jobs", "jobs.batch", "/apis/batch/v1", "jobs",
                                       sizeof(struct kube_job),
                                       sizeof(((struct kube_job *)0)->name), parse_job};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    struct kube_auth a = {.server = (char *)"http://fuzz.invalid"};
    struct kube_opts o = {.namespace_ = "fuzz", .qps = -1};
    struct kube_client *kc;
    if (kube_client_new_auth(&a, &o, &kc) != 0) abort();
    if (watch_new(kc, &jobs, NULL, &w) != 0) abort();
    kube_client_free(kc);
    return 0;
}

static int visit(void *ud, const void *rec)
{
    const struct kube_job *j = rec;
    if (strnlen(j->name, sizeof j->name) == sizeof j->name || !j->name[0]) abort();
    ++*(size_t *)ud;
    return 0;
}

/* True when any line is an ERROR event (see the top). */
static bool has_error_event(const uint8_t *data, size_t size)
{
    bool found = false;
    for (size_t at = 0; at < size && !found;) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t n = nl ? (size_t)(nl - (data + at)) : size - at;
        cJSON *ev = cJSON_ParseWithLength((const char *)data + at, n);
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "type"));
        found = type && strcmp(type, "ERROR") == 0;
        cJSON_Delete(ev);
        at += n + 1;
    }
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A watch that delivers no line makes the reflector pause (it would spin otherwise). */
    bool line = false;
    for (size_t i = 1; i < size && !line; i++) line = data[i] == '\n' && data[i - 1] != '\n';
    if (!line || has_error_event(data, size)) return 0;
    pthread_mutex_lock(&mu);
    input = data;
    input_len = size;
    posted = true;
    done = false;
    pthread_cond_broadcast(&cv);
    while (!done) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    size_t n = 0;
    watch_visit(w, visit, &n);
    struct watch_stats st;
    watch_get_stats(w, &st);
    if (st.objects > 100000) abort();
    return 0;
}
