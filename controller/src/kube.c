/* kube.c: Kubernetes REST over http.c: Jobs, Pods, Leases, Events, lists, streams, typed errors. */
#define _GNU_SOURCE
#include "kube.h"
#include "podsec.h"
#include "err.h"
#include "http.h"
#include "intern.h"
#include "log.h"
#include "progress.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#define JOBS_API "/apis/batch/v1/namespaces/"
#define CORE_API "/api/v1/namespaces/"
#define LEASE_API "/apis/coordination.k8s.io/v1/namespaces/"

struct kube_client {
    struct kube_auth *auth;        /* owned copy */
    struct kube_opts o;            /* numbers only; the string fields are not kept */
    char *ns;
    struct http_opts hopts;        /* borrows from auth */
    struct http_client *http;
    struct http_multi *multi;      /* made on the first batch create */
    char *token;                   /* current bearer token */
    struct timespec token_mtime;
    off_t token_size;
    char last_error[1024];
    long retry_after;
    unsigned long requests;
    double bucket;                 /* create rate limiter: tokens available */
    int64_t bucket_ms;             /* when bucket was last refilled */
    char *user_agent;              /* owned; hopts borrows it */
    bool (*fence)(void *ud);       /* writes are sent only while it says yes; NULL: always */
    void *fence_ud;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static void copy_str(char *dst, size_t n, const char *s)
{
    if (!s) s = "";
    size_t l = strlen(s);
    if (l >= n) l = n - 1;
    memcpy(dst, s, l);
    dst[l] = '\0';
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jint(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valueint : 0;
}

static int64_t jtime(const cJSON *obj, const char *key)
{
    const char *s = jstr(obj, key);
    int64_t ms = 0;
    if (s && util_parse_rfc3339(s, &ms) != 0) ms = 0;
    return ms;
}

static const char *jlabel(const cJSON *meta, const char *map, const char *key)
{
    return jstr(cJSON_GetObjectItemCaseSensitive(meta, map), key);
}

/* "2026-11-28T01:02:03.123456Z" (a Kubernetes MicroTime) from unix ms. */
static void format_microtime(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%.19s.%06dZ", base, (int)(ms % 1000) * 1000);
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* ---- client ------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s, bool *fail)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *fail = true;
    return d;
}

static int auth_copy(const struct kube_auth *a, struct kube_auth **out)
{
    *out = NULL;
    struct kube_auth *c = calloc(1, sizeof *c);
    if (!c) return JP_ENOMEM;
    bool fail = false;
    c->server = dup_or_null(a->server, &fail);
    c->namespace_ = dup_or_null(a->namespace_, &fail);
    c->context = dup_or_null(a->context, &fail);
    c->ca_pem = dup_or_null(a->ca_pem, &fail);
    c->cert_pem = dup_or_null(a->cert_pem, &fail);
    c->key_pem = dup_or_null(a->key_pem, &fail);
    c->token = dup_or_null(a->token, &fail);
    c->token_file = dup_or_null(a->token_file, &fail);
    c->username = dup_or_null(a->username, &fail);
    c->password = dup_or_null(a->password, &fail);
    c->insecure = a->insecure;
    if (fail) {
        kube_auth_free(c);
        return JP_ENOMEM;
    }
    *out = c;
    return 0;
}

/* Take tok (already registered with the log) as the token; the previous one's registration is
 * dropped, so rotations never grow the log's secret list. */
static void set_token(struct kube_client *c, char *tok)
{
    if (c->token) {
        log_drop_secret(c->token);
        explicit_bzero(c->token, strlen(c->token));
        free(c->token);
    }
    c->token = tok;
}

/* Re-read the token file when its mtime or size changed (projected tokens rotate). */
static int refresh_token(struct kube_client *c)
{
    if (!c->auth->token_file) return 0;
    struct stat st;
    if (stat(c->auth->token_file, &st) != 0) {
        snprintf(c->last_error, sizeof c->last_error, "token file %s: %s", c->auth->token_file,
                 strerror(errno));
        return c->token ? 0 : JP_EIO; /* keep using the last token */
    }
    if (c->token && st.st_mtim.tv_sec == c->token_mtime.tv_sec &&
        st.st_mtim.tv_nsec == c->token_mtime.tv_nsec && st.st_size == c->token_size)
        return 0;
    char *tok = NULL;
    int rc = util_read_file(c->auth->token_file, 64 * 1024, true, &tok);
    if (rc) {
        snprintf(c->last_error, sizeof c->last_error, "token file %s: %s", c->auth->token_file,
                 jp_strerror(rc));
        return c->token ? 0 : rc;
    }
    log_add_secret(tok);
    if ((rc = http_client_set_bearer(c->http, tok)) == 0 && c->multi)
        rc = http_multi_set_bearer(c->multi, tok);
    if (rc) {
        log_drop_secret(tok);
        explicit_bzero(tok, strlen(tok));
        free(tok);
        return rc;
    }
    if (c->token) log_debug("kube: service-account token changed, re-read %s", c->auth->token_file);
    set_token(c, tok);
    c->token_mtime = st.st_mtim;
    c->token_size = st.st_size;
    return 0;
}

int kube_client_new_auth(const struct kube_auth *auth, const struct kube_opts *o,
                         struct kube_client **out)
{
    *out = NULL;
    struct kube_client *c = calloc(1, sizeof *c);
    int rc = JP_ENOMEM;
    if (!c) return rc;
    if ((rc = auth_copy(auth, &c->auth)) != 0) goto out;
    rc = JP_ENOMEM;
    c->o = *o;
    c->o.kubeconfig = c->o.context = c->o.sa_dir = c->o.namespace_ = c->o.user_agent = NULL;
    if (o->user_agent && !(c->user_agent = strdup(o->user_agent))) goto out;
    if (c->o.qps == 0) c->o.qps = 100;
    /* Ten seconds' worth at once: a burst of ready messages (1,000 at the default) gets its
     * Jobs at the API server's pace, while qps bounds the sustained rate (docs/performance.md). */
    if (c->o.burst <= 0) c->o.burst = c->o.qps > 0 && c->o.qps < 10000 ? (int)(c->o.qps * 10)
                                                                       : 100000;
    if (c->o.concurrency <= 0) c->o.concurrency = 8;
    if (c->o.page_size <= 0) c->o.page_size = 500;
    if (c->o.timeout_ms <= 0) c->o.timeout_ms = 10000;
    if (c->o.max_body == 0) c->o.max_body = (size_t)16 << 20;
    const char *ns = o->namespace_ ? o->namespace_ : auth->namespace_ ? auth->namespace_
                                                                       : "default";
    if (!(c->ns = strdup(ns))) goto out;
    c->hopts = (struct http_opts){
        .timeout_ms = c->o.timeout_ms,
        .connect_timeout_ms = 3000,
        .max_body = c->o.max_body,
        .ca_pem = c->auth->ca_pem,
        .cert_pem = c->auth->cert_pem,
        .key_pem = c->auth->key_pem,
        .insecure = c->auth->insecure,
        .username = c->auth->username,
        .password = c->auth->password,
        .bearer = c->auth->token,
        .user_agent = c->user_agent,
    };
    if (c->auth->insecure)
        log_warn("kube: insecure-skip-tls-verify is set: the API server's certificate is NOT "
                 "verified, anyone on the path can read and change every request");
    if ((rc = http_client_new(&c->hopts, &c->http)) != 0) goto out;
    if ((rc = refresh_token(c)) != 0) goto out;
    c->bucket = c->o.burst;
    c->bucket_ms = util_now_ms();
    c->retry_after = -1;
    rc = 0;
out:
    if (rc) kube_client_free(c);
    else *out = c;
    return rc;
}

int kube_client_new(const struct kube_opts *o, struct kube_client **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    struct kube_auth *a = NULL;
    int rc;
    if (o->in_cluster) rc = kube_auth_in_cluster(o->sa_dir, &a, err, errlen);
    else if (o->kubeconfig) rc = kubeconfig_load(o->kubeconfig, o->context, &a, err, errlen);
    else {
        if (err && errlen) snprintf(err, errlen, "kubernetes: neither inCluster nor kubeconfig");
        return JP_ECONFIG;
    }
    if (rc) return rc;
    rc = kube_client_new_auth(a, o, out);
    if (rc && err && errlen) snprintf(err, errlen, "kubernetes client: %s", jp_strerror(rc));
    kube_auth_free(a);
    return rc;
}

void kube_client_free(struct kube_client *c)
{
    if (!c) return;
    http_client_free(c->http);
    http_multi_free(c->multi);
    set_token(c, NULL);
    kube_auth_free(c->auth);
    free(c->ns);
    free(c->user_agent);
    free(c);
}

int kube_client_clone(const struct kube_client *c, int page_size, struct kube_client **out)
{
    struct kube_opts o = c->o;
    o.namespace_ = c->ns;
    o.user_agent = c->user_agent;
    if (page_size > 0) o.page_size = page_size;
    return kube_client_new_auth(c->auth, &o, out);
}

void kube_client_set_fence(struct kube_client *c, bool (*allowed)(void *ud), void *ud)
{
    c->fence = allowed;
    c->fence_ud = ud;
}

/* The fence's answer for a write about to be sent. */
static int fenced(struct kube_client *c, const char *verb, const char *resource)
{
    if (!c->fence || c->fence(c->fence_ud)) return 0;
    snprintf(c->last_error, sizeof c->last_error,
             "%s %s: write withheld: this replica no longer holds a valid lease", verb, resource);
    return JP_ECANCELED;
}

const char *kube_namespace(const struct kube_client *c) { return c->ns; }
const char *kube_last_error(const struct kube_client *c) { return c->last_error; }
long kube_last_retry_after(const struct kube_client *c) { return c->retry_after; }
unsigned long kube_request_count(const struct kube_client *c) { return c->requests; }

/* ---- requests and typed errors ------------------------------------------------------------ */

/* Record why a call failed: the verb and resource, the status, and the server's own message. */
static int fail(struct kube_client *c, int rc, const char *verb, const char *resource,
                const struct http_response *r)
{
    if (rc && r->status == 0) {
        snprintf(c->last_error, sizeof c->last_error, "%s %s: %s: %s", verb, resource,
                 jp_strerror(rc), r->error);
        return rc;
    }
    rc = http_status_err(r->status);
    if (!rc) return 0;
    const char *msg = NULL;
    cJSON *st = r->body ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    msg = jstr(st, "message");
    char body[200] = "";
    if (!msg && r->body) copy_str(body, sizeof body, r->body);
    if (!msg) msg = body;
    if (r->status == 401 || r->status == 403)
        snprintf(c->last_error, sizeof c->last_error, "%s %s denied (%ld): %s", verb, resource,
                 r->status, msg);
    else if (r->status == 422)
        snprintf(c->last_error, sizeof c->last_error, "%s %s rejected (422): %s", verb, resource,
                 msg);
    else if (r->status == 410)
        snprintf(c->last_error, sizeof c->last_error, "%s %s: gone (410): %s", verb, resource,
                 msg);
    else
        snprintf(c->last_error, sizeof c->last_error, "%s %s: http %ld: %s", verb, resource,
                 r->status, msg);
    if (r->status == 409 && st) {
        const char *reason = jstr(st, "reason");
        if (reason && strcmp(reason, "AlreadyExists") == 0) rc = JP_ECONFLICT;
    }
    if (r->status == 429 || r->status >= 500) c->retry_after = r->retry_after_s;
    cJSON_Delete(st);
    return rc;
}

static int make_url(const struct kube_client *c, const char *path, struct dbuf *url)
{
    dbuf_init(url, 64 * 1024);
    return dbuf_printf(url, "%s%s", c->auth->server, path);
}

/* One request: body may be NULL; on 2xx *out (when out) is the parsed answer. */
static int do_request(struct kube_client *c, const char *method, const char *path,
                      const char *body, const char *verb, const char *resource, cJSON **out)
{
    if (out) *out = NULL;
    struct dbuf url;
    struct http_response r = {0};
    c->last_error[0] = '\0';
    c->retry_after = -1;
    int rc = strcmp(method, "GET") != 0 ? fenced(c, verb, resource) : 0;
    if (!rc) rc = refresh_token(c);
    if (rc) return rc;
    if ((rc = make_url(c, path, &url)) != 0) goto out;
    rc = http_request(c->http, method, url.data, body, body ? strlen(body) : 0, &r);
    c->requests++;
    if ((rc = fail(c, rc, verb, resource, &r)) != 0) goto out;
    if (out) {
        *out = cJSON_ParseWithLength(r.body, r.len);
        if (!*out) {
            snprintf(c->last_error, sizeof c->last_error, "%s %s: answer is not JSON", verb,
                     resource);
            rc = JP_EPARSE;
        }
    }
out:
    http_response_free(&r);
    dbuf_free(&url);
    return rc;
}

int kube_request(struct kube_client *c, const char *method, const char *path, const char *body,
                 struct cJSON **out)
{
    return do_request(c, method, path, body, method, path, out);
}

int kube_stream(struct kube_client *c, const char *path, const char *resource, long timeout_ms,
                kube_line_fn on_line, int (*should_stop)(void *ud), void *ud)
{
    struct dbuf url;
    struct http_response r = {0};
    c->last_error[0] = '\0';
    c->retry_after = -1;
    int rc = refresh_token(c);
    if (rc) return rc;
    if ((rc = make_url(c, path, &url)) != 0) goto out;
    c->requests++;
    rc = http_stream(c->http, url.data, timeout_ms, on_line, should_stop, ud, &r);
    if (rc == JP_ECANCELED) goto out;
    if (rc > 0 || (rc < 0 && r.status == 0)) { /* the line callback's own value, or transport */
        if (rc < 0) fail(c, rc, "watch", resource, &r);
        goto out;
    }
    int frc = fail(c, rc, "watch", resource, &r);
    if (frc) rc = frc;
out:
    http_response_free(&r);
    dbuf_free(&url);
    return rc;
}

/* Path "<prefix><ns>/<kind>[/<name>]" with escaped segments; in_ns NULL or "": the client's. */
static int obj_path_in(const struct kube_client *c, const char *in_ns, const char *prefix,
                       const char *kind, const char *name, struct dbuf *p)
{
    dbuf_init(p, 8192);
    char *ns = http_escape(in_ns && *in_ns ? in_ns : c->ns), *nm = name ? http_escape(name) : NULL;
    int rc = JP_ENOMEM;
    if (ns && (!name || nm))
        rc = dbuf_printf(p, "%s%s/%s%s%s", prefix, ns, kind, name ? "/" : "", name ? nm : "");
    free(ns);
    free(nm);
    return rc;
}

static int obj_path(const struct kube_client *c, const char *prefix, const char *kind,
                    const char *name, struct dbuf *p)
{
    return obj_path_in(c, NULL, prefix, kind, name, p);
}

/* Token bucket for creates: ms until one token is available (0: taken now). */
static long bucket_take(struct kube_client *c)
{
    if (c->o.qps < 0) return 0;
    int64_t now = util_now_ms();
    c->bucket += (double)(now - c->bucket_ms) * c->o.qps / 1000.0;
    if (c->bucket > c->o.burst) c->bucket = c->o.burst;
    c->bucket_ms = now;
    if (c->bucket >= 1.0) {
        c->bucket -= 1.0;
        return 0;
    }
    long ms = (long)((1.0 - c->bucket) * 1000.0 / c->o.qps) + 1;
    return ms > 0 ? ms : 1;
}

/* ---- Jobs --------------------------------------------------------------------------------- */

const char *kube_job_state_name(enum kube_job_state s)
{
    switch (s) {
    case KUBE_JOB_PENDING: return "pending";
    case KUBE_JOB_RUNNING: return "running";
    case KUBE_JOB_SUCCEEDED: return "succeeded";
    case KUBE_JOB_FAILED: return "failed";
    }
    return "unknown";
}

void kube_job_list_free(struct kube_job_list *l)
{
    if (!l) return;
    free(l->items);
    memset(l, 0, sizeof *l);
}

void kube_pod_list_free(struct kube_pod_list *l)
{
    if (!l) return;
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int grow(void **items, size_t *alloc, size_t n, size_t size)
{
    if (n < *alloc) return 0;
    size_t na = *alloc ? *alloc * 2 : 64;
    void *p = realloc(*items, na * size);
    if (!p) return JP_ENOMEM;
    *items = p;
    *alloc = na;
    return 0;
}

enum kube_job_state kube_job_state_of(bool complete, bool failed_cond, int running_pods)
{
    if (complete) return KUBE_JOB_SUCCEEDED;
    if (failed_cond) return KUBE_JOB_FAILED;
    return running_pods > 0 ? KUBE_JOB_RUNNING : KUBE_JOB_PENDING;
}

void kube_job_set_state(struct kube_job *j)
{
    j->state = kube_job_state_of(j->complete, j->failed_cond, j->running_pods);
}

bool kube_job_ran_counts(int succeeded, int failed)
{
    return succeeded > 0 || failed > 0;
}

bool kube_job_ran(const struct kube_job *j)
{
    return kube_job_ran_counts(j->succeeded, j->failed);
}

bool kube_pod_running(const struct kube_pod *p)
{
    return strcmp(p->phase, "Running") == 0 || strcmp(p->phase, "Unknown") == 0;
}

void kube_key(char *out, size_t len, const char *ns, const char *name)
{
    snprintf(out, len, "%s/%s", ns ? ns : "", name ? name : "");
}

/* A namespace (absent: "") into its field; false when it does not fit, since a cut one could
 * stand for another in the cache's key. */
static bool copy_key_part(char *out, size_t len, const char *v)
{
    if (v && strlen(v) >= len) return false;
    copy_str(out, len, v);
    return true;
}

int kube_job_parse(const cJSON *obj, struct kube_job *out)
{
    memset(out, 0, sizeof *out);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const char *name = jstr(meta, "name");
    /* The name is the cache's key: an empty one, or one cut to fit, could stand for another. */
    if (!name || !*name || strlen(name) >= sizeof out->name) return JP_ESHAPE;
    copy_str(out->name, sizeof out->name, name);
    if (!copy_key_part(out->ns, sizeof out->ns, jstr(meta, "namespace"))) return JP_ESHAPE;
    copy_str(out->uid, sizeof out->uid, jstr(meta, "uid"));
    copy_str(out->resource_version, sizeof out->resource_version, jstr(meta, "resourceVersion"));
    copy_str(out->pool, sizeof out->pool, jlabel(meta, "labels", KUBE_LABEL_POOL));
    copy_str(out->config_hash, sizeof out->config_hash,
             jlabel(meta, "annotations", KUBE_ANNOT_HASH));
    const char *q = intern(jlabel(meta, "annotations", KUBE_ANNOT_QUEUE));
    out->queue = q ? q : "";
    out->created_ms = jtime(meta, "creationTimestamp");
    out->deleting_ms = jtime(meta, "deletionTimestamp");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(obj, "status"), *cond;
    out->active = jint(st, "active");
    out->succeeded = jint(st, "succeeded");
    out->failed = jint(st, "failed");
    out->start_ms = jtime(st, "startTime");
    out->completion_ms = jtime(st, "completionTime");
    cJSON_ArrayForEach(cond, cJSON_GetObjectItemCaseSensitive(st, "conditions")) {
        const char *type = jstr(cond, "type"), *status = jstr(cond, "status");
        if (!type || !status || strcmp(status, "True") != 0) continue;
        if (strcmp(type, "Complete") == 0) out->complete = true;
        else if (strcmp(type, "Failed") == 0) out->failed_cond = true;
        else continue;
        out->finished_ms = jtime(cond, "lastTransitionTime");
    }
    kube_job_set_state(out);
    return 0;
}

int kube_pod_parse(const cJSON *obj, struct kube_pod *out)
{
    memset(out, 0, sizeof *out);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const char *name = jstr(meta, "name");
    /* The name is the cache's key: an empty one, or one cut to fit, could stand for another. */
    if (!name || !*name || strlen(name) >= sizeof out->name) return JP_ESHAPE;
    copy_str(out->name, sizeof out->name, name);
    if (!copy_key_part(out->ns, sizeof out->ns, jstr(meta, "namespace"))) return JP_ESHAPE;
    copy_str(out->uid, sizeof out->uid, jstr(meta, "uid"));
    copy_str(out->job, sizeof out->job, jlabel(meta, "labels", "job-name"));
    copy_str(out->pool, sizeof out->pool, jlabel(meta, "labels", KUBE_LABEL_POOL));
    out->created_ms = jtime(meta, "creationTimestamp");
    copy_str(out->phase, sizeof out->phase,
             jstr(cJSON_GetObjectItemCaseSensitive(obj, "status"), "phase"));
    copy_str(out->node, sizeof out->node,
             jstr(cJSON_GetObjectItemCaseSensitive(obj, "spec"), "nodeName"));
    out->started = out->phase[0] && strcmp(out->phase, "Pending") != 0;
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItemCaseSensitive(
                               cJSON_GetObjectItemCaseSensitive(obj, "status"), "containerStatuses")) {
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(cs, "state");
        const cJSON *term = cJSON_GetObjectItemCaseSensitive(state, "terminated");
        if (term || cJSON_GetObjectItemCaseSensitive(state, "running")) out->started = true;
        struct progress prog;
        progress_parse(jstr(term, "message"), &prog);
        if (prog.word == PROGRESS_NO_TASK) out->no_task = true;
        if (prog.word == PROGRESS_TASK) {
            out->has_task = true;
            out->task_wait_s = prog.wait_s;
            out->task_duration_s = prog.duration_s;
        }
    }
    return 0;
}

/* Set key=value on obj[field] (an object, created when missing). */
static int ensure_kv(cJSON *obj, const char *field, const char *key, const char *value)
{
    cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!m) {
        if (!(m = cJSON_AddObjectToObject(obj, field))) return JP_ENOMEM;
    } else if (!cJSON_IsObject(m)) {
        return JP_EINVAL;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(m, key);
    return cJSON_AddStringToObject(m, key, value) ? 0 : JP_ENOMEM;
}

static cJSON *ensure_obj(cJSON *obj, const char *field)
{
    cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!m) m = cJSON_AddObjectToObject(obj, field);
    return cJSON_IsObject(m) ? m : NULL;
}

/* Append env {name, value}, or {name, valueFrom: {secretKeyRef: {name: secret, key}}} when
 * secret is set, to every container unless the name is already there: the template wins. */
static int add_env_to(cJSON *containers, const char *name, const char *value, const char *secret,
                      const char *key)
{
    cJSON *ctr;
    if (!value && !secret) return 0;
    cJSON_ArrayForEach(ctr, containers) {
        if (!cJSON_IsObject(ctr)) continue;
        cJSON *env = cJSON_GetObjectItemCaseSensitive(ctr, "env"), *e;
        if (!env && !(env = cJSON_AddArrayToObject(ctr, "env"))) return JP_ENOMEM;
        if (!cJSON_IsArray(env)) continue; /* the server will say what is wrong */
        bool found = false;
        cJSON_ArrayForEach(e, env) {
            const char *n = jstr(e, "name");
            if (n && strcmp(n, name) == 0) found = true;
        }
        if (found) continue;
        cJSON *item = cJSON_CreateObject(), *from, *ref;
        if (!item || !cJSON_AddStringToObject(item, "name", name)) goto nomem;
        if (secret) {
            if (!(from = cJSON_AddObjectToObject(item, "valueFrom")) ||
                !(ref = cJSON_AddObjectToObject(from, "secretKeyRef")) ||
                !cJSON_AddStringToObject(ref, "name", secret) ||
                !cJSON_AddStringToObject(ref, "key", key))
                goto nomem;
        } else if (!cJSON_AddStringToObject(item, "value", value)) {
            goto nomem;
        }
        cJSON_AddItemToArray(env, item);
        continue;
nomem:
        cJSON_Delete(item);
        return JP_ENOMEM;
    }
    return 0;
}

static int add_env(cJSON *containers, const char *name, const char *value)
{
    return add_env_to(containers, name, value, NULL, NULL);
}

/* The named item of an array of objects, or NULL. */
static cJSON *find_named(const cJSON *arr, const char *field, const char *value)
{
    cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const char *v = jstr(e, field);
        if (v && strcmp(v, value) == 0) return e;
    }
    return NULL;
}

/* A Secret as a volume named vol, mounted read-only at mount in every container and init
 * container (unless something is mounted there already), and env (NULL-terminated name/file
 * pairs, file relative to mount) pointing into it. */
static int mount_secret(cJSON *podspec, const char *vol, const char *secret, const char *mount,
                        const char *const *env)
{
    static const char *const lists[] = {"containers", "initContainers"};
    cJSON *vols = cJSON_GetObjectItemCaseSensitive(podspec, "volumes");
    if (!vols && !(vols = cJSON_AddArrayToObject(podspec, "volumes"))) return JP_ENOMEM;
    if (!cJSON_IsArray(vols)) return JP_EINVAL;
    if (!find_named(vols, "name", vol)) {
        cJSON *v = cJSON_CreateObject(), *sec;
        if (!v || !cJSON_AddStringToObject(v, "name", vol) ||
            !(sec = cJSON_AddObjectToObject(v, "secret")) ||
            !cJSON_AddStringToObject(sec, "secretName", secret)) {
            cJSON_Delete(v);
            return JP_ENOMEM;
        }
        cJSON_AddItemToArray(vols, v);
    }
    for (size_t i = 0; i < 2; i++) {
        cJSON *ctrs = cJSON_GetObjectItemCaseSensitive(podspec, lists[i]), *ctr;
        cJSON_ArrayForEach(ctr, ctrs) {
            if (!cJSON_IsObject(ctr)) continue;
            cJSON *mounts = cJSON_GetObjectItemCaseSensitive(ctr, "volumeMounts");
            if (!mounts && !(mounts = cJSON_AddArrayToObject(ctr, "volumeMounts")))
                return JP_ENOMEM;
            if (!cJSON_IsArray(mounts) || find_named(mounts, "mountPath", mount)) continue;
            cJSON *m = cJSON_CreateObject();
            if (!m || !cJSON_AddStringToObject(m, "name", vol) ||
                !cJSON_AddStringToObject(m, "mountPath", mount) ||
                !cJSON_AddBoolToObject(m, "readOnly", true)) {
                cJSON_Delete(m);
                return JP_ENOMEM;
            }
            cJSON_AddItemToArray(mounts, m);
        }
        for (const char *const *e = env; e[0]; e += 2) {
            char file[512];
            snprintf(file, sizeof file, "%s/%s", mount, e[1]);
            int rc = add_env(ctrs, e[0], file);
            if (rc) return rc;
        }
    }
    return 0;
}

/* The broker's CA at KUBE_CA_MOUNT, and JOBPOOL_CA_FILE pointing into it. */
static int add_ca(cJSON *podspec, const struct kube_worker_conn *w)
{
    const char *const env[] = {"JOBPOOL_CA_FILE", w->ca_key ? w->ca_key : "ca.crt", NULL};
    return mount_secret(podspec, "jobpool-ca", w->ca_secret, KUBE_CA_MOUNT, env);
}

/* The workers' client certificate and key at KUBE_CERT_MOUNT, JOBPOOL_CERT_FILE and
 * JOBPOOL_KEY_FILE pointing into it. */
static int add_cert(cJSON *podspec, const struct kube_worker_conn *w)
{
    const char *const env[] = {"JOBPOOL_CERT_FILE", w->cert_key ? w->cert_key : "tls.crt",
                               "JOBPOOL_KEY_FILE", w->key_key ? w->key_key : "tls.key", NULL};
    return mount_secret(podspec, "jobpool-cert", w->cert_secret, KUBE_CERT_MOUNT, env);
}

/* The connection every container gets: the URL, and the login by reference to a Secret. */
static int add_conn(cJSON *ctrs, const struct kube_worker_conn *w)
{
    int rc;
    if (w->secret && w->amqp_url_key)
        return add_env_to(ctrs, "JOBPOOL_AMQP_URL", NULL, w->secret, w->amqp_url_key);
    if ((rc = add_env(ctrs, "JOBPOOL_AMQP_URL", w->amqp_url)) != 0) return rc;
    if (!w->secret) return 0;
    if ((rc = add_env_to(ctrs, "JOBPOOL_AMQP_USERNAME", NULL, w->secret,
                         w->username_key ? w->username_key : "username")) != 0)
        return rc;
    return add_env_to(ctrs, "JOBPOOL_AMQP_PASSWORD", NULL, w->secret,
                      w->password_key ? w->password_key : "password");
}

int kube_job_manifest(const struct kube_job_spec *s, struct cJSON **out)
{
    *out = NULL;
    if (!s->pool || !s->pool[0]) return JP_EINVAL;
    if (s->job_template && !cJSON_IsObject(s->job_template)) return JP_EINVAL;
    int rc = JP_ENOMEM;
    char gen[80];
    snprintf(gen, sizeof gen, "%s-", s->pool);
    cJSON *job = cJSON_CreateObject(), *meta, *spec, *tmpl, *podspec;
    if (!job || !cJSON_AddStringToObject(job, "apiVersion", "batch/v1") ||
        !cJSON_AddStringToObject(job, "kind", "Job") ||
        !(meta = cJSON_AddObjectToObject(job, "metadata")) ||
        !(s->name ? cJSON_AddStringToObject(meta, "name", s->name)
                  : cJSON_AddStringToObject(meta, "generateName", gen)))
        goto out;
    spec = s->job_template ? cJSON_Duplicate(s->job_template, true) : cJSON_CreateObject();
    if (!spec) goto out;
    cJSON_AddItemToObject(job, "spec", spec);
    if ((rc = ensure_kv(meta, "labels", KUBE_LABEL_MANAGED_BY, "jobpool")) != 0 ||
        (rc = ensure_kv(meta, "labels", KUBE_LABEL_POOL, s->pool)) != 0 ||
        (s->instance && (rc = ensure_kv(meta, "labels", KUBE_LABEL_INSTANCE, s->instance))))
        goto out;
    if (s->config_hash && (rc = ensure_kv(meta, "annotations", KUBE_ANNOT_HASH, s->config_hash)))
        goto out;
    if (s->queue && (rc = ensure_kv(meta, "annotations", KUBE_ANNOT_QUEUE, s->queue))) goto out;
    rc = JP_EINVAL;
    if (!(tmpl = ensure_obj(spec, "template"))) goto out;
    cJSON *tmeta = ensure_obj(tmpl, "metadata");
    if (!tmeta) goto out;
    /* The pods carry the labels too, so the cache can watch them by selector. */
    if ((rc = ensure_kv(tmeta, "labels", KUBE_LABEL_MANAGED_BY, "jobpool")) != 0 ||
        (rc = ensure_kv(tmeta, "labels", KUBE_LABEL_POOL, s->pool)) != 0 ||
        (s->instance && (rc = ensure_kv(tmeta, "labels", KUBE_LABEL_INSTANCE, s->instance))))
        goto out;
    podspec = cJSON_GetObjectItemCaseSensitive(tmpl, "spec");
    static const char *const lists[] = {"containers", "initContainers"};
    for (size_t i = 0; podspec && i < 2; i++) {
        cJSON *ctrs = cJSON_GetObjectItemCaseSensitive(podspec, lists[i]);
        if ((rc = add_env(ctrs, "JOBPOOL_POOL", s->pool)) != 0 ||
            (rc = add_env(ctrs, "JOBPOOL_QUEUE", s->queue)) != 0 ||
            (rc = add_env(ctrs, "JOBPOOL_VHOST", s->vhost)) != 0)
            goto out;
        for (const char *const *e = s->env; e && e[0] && e[1]; e += 2)
            if ((rc = add_env(ctrs, e[0], e[1])) != 0) goto out;
        if (s->conn && (rc = add_conn(ctrs, s->conn)) != 0) goto out;
    }
    if (podspec && cJSON_IsObject(podspec)) {
        if (s->conn && s->conn->ca_secret && (rc = add_ca(podspec, s->conn)) != 0) goto out;
        if (s->conn && s->conn->cert_secret && (rc = add_cert(podspec, s->conn)) != 0) goto out;
        if ((rc = podsec_fill(podspec)) != 0) goto out;
    }
    rc = JP_ENOMEM;
    if (s->ttl_seconds_after_finished >= 0) {
        cJSON_DeleteItemFromObjectCaseSensitive(spec, "ttlSecondsAfterFinished");
        if (!cJSON_AddNumberToObject(spec, "ttlSecondsAfterFinished",
                                     s->ttl_seconds_after_finished))
            goto out;
    }
    rc = 0;
out:
    if (rc) cJSON_Delete(job);
    else *out = job;
    return rc;
}

static int job_manifest_text(const struct kube_job_spec *s, char **out)
{
    cJSON *job = NULL;
    *out = NULL;
    int rc = kube_job_manifest(s, &job);
    if (rc) return rc;
    *out = cJSON_PrintUnformatted(job);
    cJSON_Delete(job);
    return *out ? 0 : JP_ENOMEM;
}

int kube_job_create(struct kube_client *c, const struct kube_job_spec *s, struct kube_job *out)
{
    char *body = NULL;
    struct dbuf path = {0};
    cJSON *ans = NULL;
    int rc = job_manifest_text(s, &body);
    if (rc) {
        snprintf(c->last_error, sizeof c->last_error, "create jobs.batch: bad template: %s",
                 jp_strerror(rc));
        goto out;
    }
    if ((rc = obj_path_in(c, s->namespace_, JOBS_API, "jobs", NULL, &path)) != 0) goto out;
    long wait;
    while ((wait = bucket_take(c)) > 0) sleep_ms(wait);
    rc = do_request(c, "POST", path.data, body, "create", "jobs.batch", out ? &ans : NULL);
    if (!rc && out) rc = kube_job_parse(ans, out);
out:
    free(body);
    dbuf_free(&path);
    cJSON_Delete(ans);
    return rc;
}

struct batch {
    struct kube_client *c;
    struct kube_job *out;
    int *rcs;
    int created;
    int first_err;
    size_t first_idx;
};

static long batch_pace(void *ud)
{
    struct batch *b = ud;
    if (fenced(b->c, "create", "jobs.batch")) {
        if (!b->first_err) b->first_err = JP_ECANCELED;
        return -1;
    }
    return bucket_take(b->c);
}

static int batch_done(void *ud, size_t i, struct http_req *r)
{
    struct batch *b = ud;
    struct kube_client *c = b->c;
    c->requests++;
    int rc = r->rc;
    char saved[sizeof c->last_error];
    memcpy(saved, c->last_error, sizeof saved);
    rc = fail(c, rc, "create", "jobs.batch", &r->resp);
    if (!rc && b->out) {
        cJSON *obj = cJSON_ParseWithLength(r->resp.body, r->resp.len);
        rc = obj ? kube_job_parse(obj, &b->out[i]) : JP_EPARSE;
        cJSON_Delete(obj);
    }
    if (b->rcs) b->rcs[i] = rc;
    if (!rc) {
        b->created++;
        memcpy(c->last_error, saved, sizeof saved);
        return 0;
    }
    if (b->first_err == 0 || i < b->first_idx) {
        b->first_err = rc;
        b->first_idx = i;
    } else {
        memcpy(c->last_error, saved, sizeof saved); /* keep the first failure's detail */
    }
    return rc == JP_EUNAUTHORIZED || rc == JP_EFORBIDDEN || rc == JP_EINVALID ||
           rc == JP_ETHROTTLED || rc == JP_ESERVER || rc == JP_ENOTFOUND;
}

/* The request bodies of a batch: one shared text, or one per caller-chosen name. */
static int batch_bodies(const struct kube_job_spec *s, int n, char **bodies)
{
    struct kube_job_spec one = *s;
    for (int i = 0; i < (s->names ? n : 1); i++) {
        if (s->names) one.name = s->names[i];
        int rc = job_manifest_text(&one, &bodies[i]);
        if (rc) return rc;
    }
    for (int i = 1; !s->names && i < n; i++) bodies[i] = bodies[0];
    return 0;
}

int kube_jobs_create(struct kube_client *c, const struct kube_job_spec *s, int n, int *created,
                     struct kube_job *out, int *rcs)
{
    char **bodies = NULL;
    struct dbuf path = {0}, url = {0};
    struct http_req *reqs = NULL;
    struct batch b = {.c = c, .out = out, .rcs = rcs};
    if (created) *created = 0;
    c->last_error[0] = '\0';
    c->retry_after = -1;
    if (n <= 0) return 0;
    if (out) memset(out, 0, (size_t)n * sizeof *out);
    for (int i = 0; rcs && i < n; i++) rcs[i] = JP_ECANCELED;
    int rc = JP_ENOMEM;
    if (!(bodies = calloc((size_t)n, sizeof *bodies))) goto out;
    if ((rc = batch_bodies(s, n, bodies)) != 0) {
        snprintf(c->last_error, sizeof c->last_error, "create jobs.batch: bad template: %s",
                 jp_strerror(rc));
        goto out;
    }
    if ((rc = refresh_token(c)) != 0) goto out;
    if (!c->multi) {
        /* A token file's current token, else the kubeconfig's inline token (hopts has it). */
        struct http_opts ho = c->hopts;
        if (c->token) ho.bearer = c->token;
        if ((rc = http_multi_new(&ho, c->o.concurrency, &c->multi)) != 0) goto out;
    }
    if ((rc = obj_path_in(c, s->namespace_, JOBS_API, "jobs", NULL, &path)) != 0) goto out;
    if ((rc = make_url(c, path.data, &url)) != 0) goto out;
    rc = JP_ENOMEM;
    if (!(reqs = calloc((size_t)n, sizeof *reqs))) goto out;
    for (int i = 0; i < n; i++)
        reqs[i] = (struct http_req){.method = "POST", .url = url.data, .body = bodies[i],
                                    .body_len = strlen(bodies[i])};
    struct http_multi_cb cb = {.pace = batch_pace, .done = batch_done, .ud = &b};
    rc = http_multi_perform(c->multi, reqs, (size_t)n, &cb);
    for (int i = 0; i < n; i++) http_response_free(&reqs[i].resp);
    if (!rc) rc = b.first_err;
    if (!rc && b.created < n) rc = JP_ECANCELED;
out:
    if (created) *created = b.created;
    free(reqs);
    for (int i = 0; bodies && i < (s->names ? n : 1); i++) free(bodies[i]);
    free(bodies);
    dbuf_free(&path);
    dbuf_free(&url);
    return rc;
}

void kube_job_name(const char *pool, char out[64])
{
    /* The alphabet and length of the API server's generateName suffix. */
    static const char alpha[] = "bcdfghjklmnpqrstvwxz2456789";
    unsigned char rnd[5];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t x = util_fnv1a(pool, strlen(pool), (uint64_t)util_now_ms() ^ (uint64_t)getpid());
        memcpy(rnd, &x, sizeof rnd);
    }
    int l = snprintf(out, 64, "%.57s-", pool);
    for (int i = 0; i < 5; i++) out[l + i] = alpha[rnd[i] % (sizeof alpha - 1)];
    out[l + 5] = '\0';
}

/* Paged listing of path: item(ud, obj) for each item, item(ud, NULL) when a stale continue
 * restarts the listing; rv (may be NULL) receives the list's resourceVersion. */
int kube_list(struct kube_client *c, const char *path, const char *resource,
              const char *selector, kube_item_fn item, void *ud, char *rv, size_t rvlen)
{
    struct dbuf page_path;
    char *sel = selector ? http_escape(selector) : NULL, *cont = NULL;
    bool restarted = false;
    int rc = JP_ENOMEM, pages = 0;
    dbuf_init(&page_path, 64 * 1024);
    if (selector && !sel) goto out;
    for (;;) {
        cJSON *page = NULL;
        /* A server that answers every page with another continue token would otherwise keep
         * this loop, and what item() collects, growing for ever. */
        if (++pages > KUBE_LIST_MAX_PAGES) {
            rc = JP_ERANGE;
            snprintf(c->last_error, sizeof c->last_error, "list %s: more than %d pages (the "
                     "server keeps answering with a continue token)", resource,
                     KUBE_LIST_MAX_PAGES);
            goto out;
        }
        dbuf_reset(&page_path);
        rc = dbuf_printf(&page_path, "%s?limit=%d", path, c->o.page_size);
        if (!rc && sel) rc = dbuf_printf(&page_path, "&labelSelector=%s", sel);
        if (!rc && cont) rc = dbuf_printf(&page_path, "&continue=%s", cont);
        if (rc) goto out;
        rc = do_request(c, "GET", page_path.data, NULL, "list", resource, &page);
        if (rc == JP_EGONE && cont && !restarted) {
            /* The continue token expired: start again from a fresh snapshot, once. */
            log_info("kube: list %s: continue token expired, listing again", resource);
            restarted = true;
            free(cont);
            cont = NULL;
            if ((rc = item(ud, NULL)) != 0) goto out;
            continue;
        }
        if (rc) goto out;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(page, "items"), *it;
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(page, "metadata");
        if (!cJSON_IsArray(items) && !cJSON_IsNull(items) && items) {
            rc = JP_ESHAPE;
        } else {
            cJSON_ArrayForEach(it, items)
                if ((rc = item(ud, it)) != 0) break;
        }
        if (!rc && rv) copy_str(rv, rvlen, jstr(meta, "resourceVersion"));
        const char *next = jstr(meta, "continue");
        free(cont);
        cont = NULL;
        if (!rc && next && next[0] && !(cont = http_escape(next))) rc = JP_ENOMEM;
        cJSON_Delete(page);
        if (rc || !cont) goto out;
    }
out:
    if (rc == JP_ESHAPE)
        snprintf(c->last_error, sizeof c->last_error, "list %s: items is not a list", resource);
    free(sel);
    free(cont);
    dbuf_free(&page_path);
    return rc;
}

/* The namespace's collection path of a kind, listed with the managed-by selector by default. */
static int list_ns(struct kube_client *c, const char *ns, const char *prefix, const char *kind,
                   const char *resource, const char *selector, kube_item_fn item, void *ud)
{
    struct dbuf base;
    int rc = obj_path_in(c, ns, prefix, kind, NULL, &base);
    if (!rc)
        rc = kube_list(c, base.data, resource, selector ? selector : KUBE_SELECTOR_MANAGED, item,
                       ud, NULL, 0);
    dbuf_free(&base);
    return rc;
}

/* Appends parsed items to a growable array (a kube_job_list or kube_pod_list); a NULL item
 * (the listing restarted) drops what this listing appended so far. */
struct collect {
    void **items;
    size_t *n, *alloc;
    size_t size, start;
    int (*parse)(const cJSON *obj, void *out);
};

static int collect_item(void *ud, const cJSON *obj)
{
    struct collect *co = ud;
    if (!obj) {
        *co->n = co->start;
        return 0;
    }
    int rc = grow(co->items, co->alloc, *co->n, co->size);
    if (rc) return rc;
    if (co->parse(obj, (char *)*co->items + *co->n * co->size) == 0) (*co->n)++;
    return 0;
}

static int parse_job(const cJSON *obj, void *out) { return kube_job_parse(obj, out); }
static int parse_pod(const cJSON *obj, void *out) { return kube_pod_parse(obj, out); }

int kube_jobs_list(struct kube_client *c, const char *label_selector, struct kube_job_list *out)
{
    struct collect co = {(void **)&out->items, &out->n, &out->alloc, sizeof *out->items, out->n,
                         parse_job};
    return list_ns(c, NULL, JOBS_API, "jobs", "jobs.batch", label_selector, collect_item, &co);
}

int kube_pods_list(struct kube_client *c, const char *label_selector, struct kube_pod_list *out)
{
    return kube_pods_list_in(c, NULL, label_selector, out);
}

int kube_pods_list_in(struct kube_client *c, const char *ns, const char *label_selector,
                      struct kube_pod_list *out)
{
    struct collect co = {(void **)&out->items, &out->n, &out->alloc, sizeof *out->items, out->n,
                         parse_pod};
    return list_ns(c, ns, CORE_API, "pods", "pods", label_selector, collect_item, &co);
}

int kube_job_get_json(struct kube_client *c, const char *name, struct cJSON **out)
{
    return kube_job_get_json_in(c, NULL, name, out);
}

int kube_job_get_json_in(struct kube_client *c, const char *ns, const char *name,
                         struct cJSON **out)
{
    struct dbuf path;
    *out = NULL;
    int rc = obj_path_in(c, ns, JOBS_API, "jobs", name, &path);
    if (!rc) rc = do_request(c, "GET", path.data, NULL, "get", "jobs.batch", out);
    dbuf_free(&path);
    return rc;
}

int kube_job_get(struct kube_client *c, const char *name, struct kube_job *out)
{
    return kube_job_get_in(c, NULL, name, out);
}

int kube_job_get_in(struct kube_client *c, const char *ns, const char *name, struct kube_job *out)
{
    cJSON *obj = NULL;
    memset(out, 0, sizeof *out);
    int rc = kube_job_get_json_in(c, ns, name, &obj);
    if (!rc && (rc = kube_job_parse(obj, out)) != 0)
        snprintf(c->last_error, sizeof c->last_error, "get jobs.batch: the answer has no "
                 "metadata.name");
    cJSON_Delete(obj);
    return rc;
}

int kube_job_delete(struct kube_client *c, const char *name)
{
    return kube_job_delete_if(c, name, NULL, NULL);
}

int kube_job_delete_if(struct kube_client *c, const char *name, const char *uid,
                       const char *resource_version)
{
    return kube_job_delete_if_in(c, NULL, name, uid, resource_version);
}

int kube_job_delete_if_in(struct kube_client *c, const char *ns, const char *name,
                          const char *uid, const char *resource_version)
{
    struct dbuf path;
    char *body = NULL;
    int rc = obj_path_in(c, ns, JOBS_API, "jobs", name, &path);
    cJSON *opts = cJSON_CreateObject(), *pre = NULL;
    if (!rc && (!opts || !cJSON_AddStringToObject(opts, "kind", "DeleteOptions") ||
                !cJSON_AddStringToObject(opts, "apiVersion", "v1") ||
                !cJSON_AddStringToObject(opts, "propagationPolicy", "Background")))
        rc = JP_ENOMEM;
    if (!rc && ((uid && *uid) || (resource_version && *resource_version))) {
        if (!(pre = cJSON_AddObjectToObject(opts, "preconditions")) ||
            (uid && *uid && !cJSON_AddStringToObject(pre, "uid", uid)) ||
            (resource_version && *resource_version &&
             !cJSON_AddStringToObject(pre, "resourceVersion", resource_version)))
            rc = JP_ENOMEM;
    }
    if (!rc && !(body = cJSON_PrintUnformatted(opts))) rc = JP_ENOMEM;
    if (!rc) rc = do_request(c, "DELETE", path.data, body, "delete", "jobs.batch", NULL);
    cJSON_Delete(opts);
    free(body);
    dbuf_free(&path);
    return rc;
}

static int cmp_job_name(const void *a, const void *b)
{
    const struct kube_job *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void kube_job_states(struct kube_job *jobs, size_t n, const struct kube_pod *pods, size_t npods)
{
    struct kube_job **idx = n ? malloc(n * sizeof *idx) : NULL;
    for (size_t i = 0; i < n; i++) {
        jobs[i].running_pods = 0;
        jobs[i].no_task = false;
        jobs[i].task_wait_s = jobs[i].task_duration_s = -1;
        jobs[i].reported = false;
    }
    if (idx) {
        for (size_t i = 0; i < n; i++) idx[i] = &jobs[i];
        qsort(idx, n, sizeof *idx, cmp_job_name);
        struct kube_job key;
        for (size_t p = 0; p < npods; p++) {
            bool running = kube_pod_running(&pods[p]);
            if ((!running && !pods[p].no_task && !pods[p].has_task) || !pods[p].job[0]) continue;
            copy_str(key.name, sizeof key.name, pods[p].job);
            const struct kube_job *kp = &key;
            struct kube_job **hit = bsearch(&kp, idx, n, sizeof *idx, cmp_job_name);
            if (hit && running) (*hit)->running_pods++;
            if (hit && pods[p].no_task) (*hit)->no_task = true;
            if (hit && (pods[p].no_task || pods[p].has_task)) (*hit)->reported = true;
            if (hit && pods[p].has_task) {
                (*hit)->task_wait_s = pods[p].task_wait_s;
                (*hit)->task_duration_s = pods[p].task_duration_s;
            }
        }
    }
    free(idx);
    for (size_t i = 0; i < n; i++) kube_job_set_state(&jobs[i]);
}

/* ---- Leases ------------------------------------------------------------------------------- */

static int lease_parse(const cJSON *obj, struct kube_lease *out)
{
    memset(out, 0, sizeof *out);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
    if (!jstr(meta, "name")) return JP_ESHAPE;
    copy_str(out->name, sizeof out->name, jstr(meta, "name"));
    copy_str(out->resource_version, sizeof out->resource_version, jstr(meta, "resourceVersion"));
    copy_str(out->holder, sizeof out->holder, jstr(spec, "holderIdentity"));
    out->duration_s = jint(spec, "leaseDurationSeconds");
    out->acquire_ms = jtime(spec, "acquireTime");
    out->renew_ms = jtime(spec, "renewTime");
    out->transitions = jint(spec, "leaseTransitions");
    return 0;
}

static char *lease_body(const struct kube_client *c, const struct kube_lease *l, bool with_rv)
{
    cJSON *o = cJSON_CreateObject(), *meta, *spec;
    char *text = NULL, t[40];
    if (!o || !cJSON_AddStringToObject(o, "apiVersion", "coordination.k8s.io/v1") ||
        !cJSON_AddStringToObject(o, "kind", "Lease") ||
        !(meta = cJSON_AddObjectToObject(o, "metadata")) ||
        !cJSON_AddStringToObject(meta, "name", l->name) ||
        !cJSON_AddStringToObject(meta, "namespace", c->ns) ||
        (with_rv && !cJSON_AddStringToObject(meta, "resourceVersion", l->resource_version)) ||
        !(spec = cJSON_AddObjectToObject(o, "spec")))
        goto out;
    if (l->holder[0] && !cJSON_AddStringToObject(spec, "holderIdentity", l->holder)) goto out;
    if (l->duration_s > 0 && !cJSON_AddNumberToObject(spec, "leaseDurationSeconds", l->duration_s))
        goto out;
    if (l->acquire_ms) {
        format_microtime(l->acquire_ms, t, sizeof t);
        if (!cJSON_AddStringToObject(spec, "acquireTime", t)) goto out;
    }
    if (l->renew_ms) {
        format_microtime(l->renew_ms, t, sizeof t);
        if (!cJSON_AddStringToObject(spec, "renewTime", t)) goto out;
    }
    if (!cJSON_AddNumberToObject(spec, "leaseTransitions", l->transitions)) goto out;
    text = cJSON_PrintUnformatted(o);
out:
    cJSON_Delete(o);
    return text;
}

static int lease_call(struct kube_client *c, const char *method, const struct kube_lease *l,
                      const char *name, struct kube_lease *out)
{
    struct dbuf path;
    cJSON *ans = NULL;
    char *body = NULL;
    const char *verb = strcmp(method, "GET") == 0 ? "get" : strcmp(method, "POST") == 0
                                                                ? "create" : "update";
    int rc = obj_path(c, LEASE_API, "leases", name, &path);
    if (rc) goto out;
    if (l && !(body = lease_body(c, l, strcmp(method, "PUT") == 0))) {
        rc = JP_ENOMEM;
        goto out;
    }
    rc = do_request(c, method, path.data, body, verb, "leases.coordination.k8s.io", &ans);
    if (!rc && out && (rc = lease_parse(ans, out)) != 0)
        snprintf(c->last_error, sizeof c->last_error, "%s leases.coordination.k8s.io: the answer "
                 "has no metadata.name", verb);
out:
    free(body);
    cJSON_Delete(ans);
    dbuf_free(&path);
    return rc;
}

int kube_lease_get(struct kube_client *c, const char *name, struct kube_lease *out)
{
    memset(out, 0, sizeof *out);
    return lease_call(c, "GET", NULL, name, out);
}

int kube_lease_create(struct kube_client *c, const struct kube_lease *l, struct kube_lease *out)
{
    struct kube_lease tmp;
    int rc = lease_call(c, "POST", l, NULL, out ? &tmp : NULL);
    if (!rc && out) *out = tmp;
    return rc;
}

int kube_lease_update(struct kube_client *c, const struct kube_lease *l, struct kube_lease *out)
{
    if (!l->resource_version[0]) return JP_EINVAL;
    struct kube_lease tmp;
    int rc = lease_call(c, "PUT", l, l->name, out ? &tmp : NULL);
    if (!rc && out) *out = tmp;
    return rc;
}

/* ---- Events ------------------------------------------------------------------------------- */

int kube_event_create(struct kube_client *c, const char *kind, const char *api_version,
                      const char *name, const char *uid, const char *type, const char *reason,
                      const char *message)
{
    return kube_event_create_in(c, NULL, kind, api_version, name, uid, type, reason, message);
}

int kube_event_create_in(struct kube_client *c, const char *in_ns, const char *kind,
                         const char *api_version, const char *name, const char *uid,
                         const char *type, const char *reason, const char *message)
{
    const char *ns = in_ns && *in_ns ? in_ns : c->ns;
    cJSON *o = cJSON_CreateObject(), *meta, *inv, *src;
    char *body = NULL, gen[96], now[64], msg[1025];
    struct dbuf path = {0};
    int rc = JP_ENOMEM;
    snprintf(gen, sizeof gen, "%.80s.", name);
    format_microtime(util_wall_ms() / 1000 * 1000, now, sizeof now);
    /* Event timestamps are whole seconds (metav1.Time). */
    char *dot = strchr(now, '.');
    if (dot) { dot[0] = 'Z'; dot[1] = '\0'; }
    copy_str(msg, sizeof msg, message);
    if (!o || !cJSON_AddStringToObject(o, "apiVersion", "v1") ||
        !cJSON_AddStringToObject(o, "kind", "Event") ||
        !(meta = cJSON_AddObjectToObject(o, "metadata")) ||
        !cJSON_AddStringToObject(meta, "generateName", gen) ||
        !cJSON_AddStringToObject(meta, "namespace", ns) ||
        !(inv = cJSON_AddObjectToObject(o, "involvedObject")) ||
        !cJSON_AddStringToObject(inv, "kind", kind) ||
        !cJSON_AddStringToObject(inv, "apiVersion", api_version ? api_version : "v1") ||
        !cJSON_AddStringToObject(inv, "name", name) ||
        !cJSON_AddStringToObject(inv, "namespace", ns) ||
        (uid && !cJSON_AddStringToObject(inv, "uid", uid)) ||
        !cJSON_AddStringToObject(o, "reason", reason) ||
        !cJSON_AddStringToObject(o, "message", msg) ||
        !cJSON_AddStringToObject(o, "type", type ? type : "Normal") ||
        !cJSON_AddStringToObject(o, "firstTimestamp", now) ||
        !cJSON_AddStringToObject(o, "lastTimestamp", now) ||
        !cJSON_AddNumberToObject(o, "count", 1) ||
        !(src = cJSON_AddObjectToObject(o, "source")) ||
        !cJSON_AddStringToObject(src, "component", "jobpool") ||
        !cJSON_AddStringToObject(o, "reportingComponent", "jobpool") ||
        !(body = cJSON_PrintUnformatted(o)))
        goto out;
    if ((rc = obj_path_in(c, ns, CORE_API, "events", NULL, &path)) != 0) goto out;
    rc = do_request(c, "POST", path.data, body, "create", "events", NULL);
out:
    cJSON_Delete(o);
    free(body);
    dbuf_free(&path);
    return rc;
}
