/* kube_cache.c: the Jobs and Pods watches, joined into the controller's view of its workers. */
#define _GNU_SOURCE
#include "kube_cache.h"
#include "err.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { K_JOBS = 0, K_PODS = 1 };
const char *const kube_cache_kinds[2] = {"jobs", "pods"};

/* What the cache keeps of a Job and of a Pod: only what a snapshot hands out, with the queue
 * interned. At 20,000 Jobs and their pods the full structs (struct kube_job ~310 bytes, struct
 * kube_pod ~360) held twice the memory for fields no snapshot reads (a pod's node, phase,
 * uid and pool; a Job's resourceVersion, config hash, start time and active count). The pool
 * stays a buffer, not an interned pointer: a pool name that did not fit a full intern table
 * must not turn a pool's Jobs into orphans. The store's key is "namespace/name" (kube_key): the
 * cache may watch several namespaces, or all of them, and a name may recur across them. */
#define CJOB_KEY (sizeof((struct kube_job *)0)->ns + sizeof((struct kube_job *)0)->name)
#define CPOD_KEY (sizeof((struct kube_pod *)0)->ns + sizeof((struct kube_pod *)0)->name)
struct cjob {
    char key[CJOB_KEY];         /* namespace/name: the store's key */
    char pool[sizeof((struct kube_job *)0)->pool];
    char uid[sizeof((struct kube_job *)0)->uid];
    const char *queue;          /* interned, never NULL */
    int64_t created_ms, completion_ms, finished_ms, deleting_ms;
    int succeeded, failed;      /* kube_job_ran */
    bool complete, failed_cond;
};

struct cpod {
    char key[CPOD_KEY];         /* namespace/name: the store's key */
    char job[sizeof((struct kube_pod *)0)->job];   /* label job-name */
    double task_wait_s, task_duration_s;
    bool running, no_task, has_task;
};

static void cjob_from(const struct kube_job *j, struct cjob *c)
{
    memset(c, 0, sizeof *c);
    kube_key(c->key, sizeof c->key, j->ns, j->name);
    memcpy(c->pool, j->pool, sizeof c->pool);
    memcpy(c->uid, j->uid, sizeof c->uid);
    c->queue = j->queue ? j->queue : "";
    c->created_ms = j->created_ms;
    c->completion_ms = j->completion_ms;
    c->finished_ms = j->finished_ms;
    c->deleting_ms = j->deleting_ms;
    c->succeeded = j->succeeded;
    c->failed = j->failed;
    c->complete = j->complete;
    c->failed_cond = j->failed_cond;
}

/* key "namespace/name" into its parts (each fits: kube_job_parse and kube_pod_parse refuse
 * longer ones; a namespace holds no '/'). */
static void split_key(const char *key, char *ns, size_t nslen, char *name, size_t namelen)
{
    const char *slash = strchr(key, '/');
    size_t n = slash ? (size_t)(slash - key) : 0;
    snprintf(ns, nslen, "%.*s", (int)n, key);
    snprintf(name, namelen, "%s", slash ? slash + 1 : key);
}

/* The snapshot's Job: what the cache keeps, the rest zero (see kube_cache_pool_jobs). */
static void cjob_to(const struct cjob *c, struct kube_job *j)
{
    memset(j, 0, sizeof *j);
    split_key(c->key, j->ns, sizeof j->ns, j->name, sizeof j->name);
    memcpy(j->pool, c->pool, sizeof c->pool);
    memcpy(j->uid, c->uid, sizeof c->uid);
    j->queue = c->queue;
    j->created_ms = c->created_ms;
    j->completion_ms = c->completion_ms;
    j->finished_ms = c->finished_ms;
    j->deleting_ms = c->deleting_ms;
    j->succeeded = c->succeeded;
    j->failed = c->failed;
    j->complete = c->complete;
    j->failed_cond = c->failed_cond;
    j->task_wait_s = j->task_duration_s = -1;
}

static int parse_job(const struct cJSON *obj, void *rec)
{
    struct kube_job j;
    int rc = kube_job_parse(obj, &j);
    if (!rc) cjob_from(&j, rec);
    return rc;
}

static int parse_pod(const struct cJSON *obj, void *rec)
{
    struct kube_pod p;
    int rc = kube_pod_parse(obj, &p);
    if (rc) return rc;
    struct cpod *c = rec;
    memset(c, 0, sizeof *c);
    kube_key(c->key, sizeof c->key, p.ns, p.name);
    memcpy(c->job, p.job, sizeof c->job);
    c->running = kube_pod_running(&p);
    c->no_task = p.no_task;
    c->has_task = p.has_task;
    c->task_wait_s = p.task_wait_s;
    c->task_duration_s = p.task_duration_s;
    return 0;
}

static const struct watch_kind kinds[2] = {
    {"jobs", "jobs.batch", "/apis/batch/v1", "jobs", sizeof(struct cjob), CJOB_KEY, parse_job},
    {"pods", "pods", "/api/v1", "pods", sizeof(struct cpod), CPOD_KEY, parse_pod},
};

struct kube_cache {
    struct watch *w[2];
    char **ns;                  /* the namespaces watched, one reflector each; NULL: one */
    size_t nns;
};

void kube_cache_free(struct kube_cache *k)
{
    if (!k) return;
    for (int i = 0; i < 2; i++) watch_free(k->w[i]);
    for (size_t i = 0; i < k->nns; i++) free(k->ns[i]);
    free(k->ns);
    free(k);
}

size_t kube_cache_ns_index(const char *const *namespaces, size_t n, const char *ns)
{
    for (size_t i = 0; ns && i < n; i++)
        if (!strcmp(namespaces[i], ns)) return i;
    return 0; /* one reflector (the client's namespace, or every namespace) */
}

static int copy_namespaces(struct kube_cache *k, const struct kube_cache_opts *o)
{
    if (!o || !o->namespaces || !o->nnamespaces) return 0;
    if (!(k->ns = calloc(o->nnamespaces, sizeof *k->ns))) return JP_ENOMEM;
    for (size_t i = 0; i < o->nnamespaces; i++, k->nns++)
        if (!(k->ns[i] = util_strdup(o->namespaces[i]))) return JP_ENOMEM;
    return 0;
}

int kube_cache_new(const struct kube_client *c, const struct kube_cache_opts *o,
                   struct kube_cache **out)
{
    *out = NULL;
    struct kube_cache *k = calloc(1, sizeof *k);
    if (!k) return JP_ENOMEM;
    int rc = copy_namespaces(k, o);
    struct watch_opts wo = {
        .namespaces = (const char *const *)k->ns,
        .nnamespaces = k->nns,
        .label_selector = o && o->label_selector ? o->label_selector : KUBE_SELECTOR_MANAGED,
        .resync_ms = o ? o->resync_ms : 0,
        .watch_timeout_s = o ? o->watch_timeout_s : 0,
    };
    for (int i = 0; i < 2 && !rc; i++) rc = watch_new(c, &kinds[i], &wo, &k->w[i]);
    if (rc) kube_cache_free(k);
    else *out = k;
    return rc;
}

bool kube_cache_synced(struct kube_cache *k)
{
    return watch_synced(k->w[K_JOBS]) && watch_synced(k->w[K_PODS]);
}

int kube_cache_wait_synced(struct kube_cache *k, int64_t timeout_ms)
{
    int64_t end = util_now_ms() + timeout_ms;
    while (!kube_cache_synced(k)) {
        if (util_now_ms() >= end) return JP_ETIMEOUT;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

struct snap {
    const char *pool;
    struct kube_job_list *out;
    size_t count;               /* the counting visit's result */
};

static int count_job(void *ud, const void *rec)
{
    struct snap *s = ud;
    if (!s->pool || strcmp(((const struct cjob *)rec)->pool, s->pool) == 0) s->count++;
    return 0;
}

/* Room for n Jobs: exactly that many (a doubling array held up to twice the snapshot, every
 * tick), given back when the Jobs shrink to a quarter of it. */
static int reserve(struct kube_job_list *l, size_t n)
{
    if (n <= l->alloc && n >= l->alloc / 4) return 0;
    if (!n) {
        free(l->items);
        l->items = NULL;
        l->alloc = 0;
        return 0;
    }
    struct kube_job *p = realloc(l->items, n * sizeof *p);
    if (!p) return JP_ENOMEM;
    l->items = p;
    l->alloc = n;
    return 0;
}

static int add_job(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct cjob *j = rec;
    struct kube_job_list *l = s->out;
    if (s->pool && strcmp(j->pool, s->pool) != 0) return 0;
    /* The store may have grown between the counting visit and this one. */
    if (l->n == l->alloc && reserve(l, l->alloc + l->alloc / 8 + 16) != 0) return JP_ENOMEM;
    cjob_to(j, &l->items[l->n++]);
    return 0;
}

/* By namespace, then name: the key's order. */
static int cmp_key(const void *a, const void *b)
{
    const struct kube_job *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_created(const void *a, const void *b)
{
    const struct kube_job *x = a, *y = b;
    if (x->created_ms != y->created_ms) return x->created_ms < y->created_ms ? -1 : 1;
    return cmp_key(a, b);
}

int kube_cache_cmp_pool(const struct kube_job *j, const char *ns, const char *pool)
{
    int c = strcmp(j->ns, ns);
    return c ? c : strcmp(j->pool, pool);
}

/* Every pool's Jobs together (the backend then finds a pool by binary search), each pool's
 * oldest first: one sort serves both, where a sort by time and a second by pool cost twice.
 * A pool is its namespace and name: pool "a" of two namespaces is two pools. */
static int cmp_pool_created(const void *a, const void *b)
{
    const struct kube_job *x = a, *y = b;
    int c = kube_cache_cmp_pool(x, y->ns, y->pool);
    return c ? c : cmp_created(a, b);
}

/* A Running pod, or a finished one with the worker's last word (no message found, or a task's
 * wait and duration), marks its Job, found by namespace and name (a pod of another pool finds no
 * Job). */
static int add_pod(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct cpod *p = rec;
    if (!p->job[0] || (!p->running && !p->no_task && !p->has_task)) return 0;
    struct kube_job key = {0};
    char pod[sizeof((struct kube_pod *)0)->name];
    split_key(p->key, key.ns, sizeof key.ns, pod, sizeof pod);
    memcpy(key.name, p->job, sizeof key.name);
    struct kube_job *j = bsearch(&key, s->out->items, s->out->n, sizeof key, cmp_key);
    if (!j) return 0;
    if (p->running) j->running_pods++;
    if (p->no_task) j->no_task = true;
    if (p->no_task || p->has_task) j->reported = true;
    if (p->has_task) {
        j->task_wait_s = p->task_wait_s;
        j->task_duration_s = p->task_duration_s;
    }
    return 0;
}

int kube_cache_pool_jobs(struct kube_cache *k, const char *pool, struct kube_job_list *out)
{
    out->n = 0;
    if (!kube_cache_synced(k)) return JP_ESTALE;
    struct snap s = {pool, out, 0};
    int rc = watch_visit(k->w[K_JOBS], count_job, &s);
    if (rc || (rc = reserve(out, s.count)) != 0) goto out;
    if ((rc = watch_visit(k->w[K_JOBS], add_job, &s)) != 0) goto out;
    if (out->n > 1) qsort(out->items, out->n, sizeof *out->items, cmp_key);
    rc = watch_visit(k->w[K_PODS], add_pod, &s);
    if (rc) goto out;
    for (size_t i = 0; i < out->n; i++) kube_job_set_state(&out->items[i]);
    if (out->n > 1)
        qsort(out->items, out->n, sizeof *out->items, pool ? cmp_created : cmp_pool_created);
out:
    if (rc) out->n = 0;
    return rc;
}

int64_t kube_cache_age_ms(struct kube_cache *k)
{
    int64_t a = watch_age_ms(k->w[K_JOBS]), b = watch_age_ms(k->w[K_PODS]);
    return a > b ? a : b;
}

bool kube_cache_stale(struct kube_cache *k, int64_t max_age_ms)
{
    bool a = watch_stale(k->w[K_JOBS], max_age_ms), b = watch_stale(k->w[K_PODS], max_age_ms);
    return a || b;
}

int kube_cache_expect_created(struct kube_cache *k, const struct kube_job *placeholder)
{
    struct cjob c;
    cjob_from(placeholder, &c);
    return watch_expect_create(k->w[K_JOBS], &c);
}

void kube_cache_note_created(struct kube_cache *k, const struct kube_job *j)
{
    struct cjob c;
    cjob_from(j, &c);
    /* Its own reflector's relists are the ones that may drop it later. */
    size_t src = kube_cache_ns_index((const char *const *)k->ns, k->nns, j->ns);
    watch_put(k->w[K_JOBS], &c, j->resource_version, (int)src);
}

void kube_cache_forget_created(struct kube_cache *k, const char *key)
{
    watch_expect_forget(k->w[K_JOBS], key);
}

void kube_cache_note_deleted(struct kube_cache *k, const char *key)
{
    watch_expect_delete(k->w[K_JOBS], key);
}

void kube_cache_get_stats(struct kube_cache *k, struct kube_cache_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 2; i++) {
        struct watch_stats *s = &out->kind[i];
        watch_get_stats(k->w[i], s);
        out->lists += s->lists;
        out->watches += s->watches;
        out->events += s->events;
        out->relists_gone += s->relists_gone;
        out->errors += s->errors;
    }
    out->jobs = out->kind[K_JOBS].objects;
    out->pods = out->kind[K_PODS].objects;
}
