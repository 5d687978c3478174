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
 * stays a string of the record, not an interned pointer: a pool name that did not fit a full
 * intern table must not turn a pool's Jobs into orphans. The store's key is "namespace/name"
 * (kube_key): the cache may watch several namespaces, or all of them, and a name may recur
 * across them. A record's strings are packed one after another in its first field, which the
 * store keeps only up to the last of them (store.h): a Job's key, pool and uid take about 70
 * bytes of their 232, a pod's key and Job name about 60 of 192. */
#define KSZ(type, f) sizeof(((struct type *)0)->f)
#define CJOB_STRS (KSZ(kube_job, ns) + KSZ(kube_job, name) + KSZ(kube_job, pool) + KSZ(kube_job, uid))
#define CPOD_STRS (KSZ(kube_pod, ns) + KSZ(kube_pod, name) + KSZ(kube_pod, job))
struct cjob {
    char strs[CJOB_STRS];       /* "namespace/name" (the store's key), pool label, uid */
    const char *queue;          /* interned, never NULL */
    int64_t created_ms, completion_ms, finished_ms, deleting_ms;
    int succeeded, failed;      /* kube_job_ran */
    bool complete, failed_cond;
};

struct cpod {
    char strs[CPOD_STRS];       /* "namespace/name" (the store's key), label job-name: "" when
                                 * the name begins with it (job_len) */
    float task_wait_s, task_duration_s; /* a histogram's precision is enough */
    uint8_t job_len;            /* the label job-name is the name's first job_len bytes (the
                                 * Job controller names a pod "<job>-<suffix>"); 0: in strs */
    bool running, no_task, has_task;
};

/* The string after s in a record's packed strings. */
static const char *next_str(const char *s) { return s + strlen(s) + 1; }
static const char *cjob_pool(const struct cjob *c) { return next_str(c->strs); }
static const char *cjob_uid(const struct cjob *c) { return next_str(cjob_pool(c)); }
/* The pod's label job-name: *job and its length (not NUL-terminated when taken from the name). */
static size_t cpod_job(const struct cpod *p, const char **job)
{
    if (p->job_len) {
        const char *slash = strchr(p->strs, '/');
        *job = slash ? slash + 1 : p->strs;
        return p->job_len;
    }
    *job = next_str(p->strs);
    return strlen(*job);
}

/* The key "namespace/name" and then each string of more[] into strs, packed. Each fits: the
 * buffers are the sum of the fields they come from. */
static void pack(char *strs, size_t size, const char *ns, const char *name,
                 const char *const *more, size_t nmore)
{
    memset(strs, 0, size);
    kube_key(strs, size, ns, name);
    size_t at = strlen(strs) + 1;
    for (size_t i = 0; i < nmore && at < size; i++) {
        snprintf(strs + at, size - at, "%s", more[i]);
        at += strlen(strs + at) + 1;
    }
}

static void cjob_from(const struct kube_job *j, struct cjob *c)
{
    memset(c, 0, sizeof *c);
    const char *more[] = {j->pool, j->uid};
    pack(c->strs, sizeof c->strs, j->ns, j->name, more, 2);
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
    /* The job name is usually the pod name's beginning: kept once (about 35 bytes a pod). */
    size_t jl = strlen(p.job);
    _Static_assert(sizeof p.name <= UINT8_MAX, "a prefix's length must fit job_len");
    bool prefix = jl > 0 && jl < sizeof p.name && !strncmp(p.name, p.job, jl) && p.name[jl] == '-';
    const char *more[] = {prefix ? "" : p.job};
    pack(c->strs, sizeof c->strs, p.ns, p.name, more, 1);
    c->job_len = prefix ? (uint8_t)jl : 0;
    c->running = kube_pod_running(&p);
    c->no_task = p.no_task;
    c->has_task = p.has_task;
    c->task_wait_s = (float)p.task_wait_s;
    c->task_duration_s = (float)p.task_duration_s;
    return 0;
}

static const struct watch_kind kinds[2] = {
    {"jobs", "jobs.batch", "/apis/batch/v1", "jobs", sizeof(struct cjob), CJOB_STRS, parse_job},
    {"pods", "pods", "/api/v1", "pods", sizeof(struct cpod), CPOD_STRS, parse_pod},
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

/* Building a snapshot: the pool it is for (NULL: every pool) and the Jobs counted. */
struct snap {
    const char *pool;
    struct kube_snapshot *out;
    size_t count;               /* the counting visit's result */
    size_t bytes;               /* and the strings' */
};

static size_t job_bytes(const struct cjob *c)
{
    return strlen(c->strs) + 1 + strlen(cjob_pool(c)) + 1 + strlen(cjob_uid(c)) + 1; /* '/' becomes NUL */
}

static int count_job(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct cjob *c = rec;
    if (s->pool && strcmp(cjob_pool(c), s->pool) != 0) return 0;
    s->count++;
    s->bytes += job_bytes(c);
    return 0;
}

/* Room for n Jobs and a bytes of strings: exactly that (a doubling array held up to twice the
 * snapshot, every tick), given back when either shrinks to a quarter of it. */
static int reserve(struct kube_snapshot *s, size_t n, size_t a)
{
    if (n > s->cap || n < s->cap / 4) {
        struct kube_snap_job *v = n ? realloc(s->v, n * sizeof *v) : NULL;
        if (n && !v) return JP_ENOMEM;
        if (!n) free(s->v);
        s->v = v;
        s->cap = n;
    }
    if (a > s->acap || a < s->acap / 4) {
        char *p = a ? realloc(s->arena, a) : NULL;
        if (a && !p) return JP_ENOMEM;
        if (!a) free(s->arena);
        s->arena = p;
        s->acap = a;
    }
    return 0;
}

void kube_snapshot_free(struct kube_snapshot *s)
{
    if (!s) return;
    free(s->v);
    free(s->arena);
    memset(s, 0, sizeof *s);
}

/* str (n bytes) and a NUL into the arena: its offset. Room was reserved. */
static uint32_t put_str(struct kube_snapshot *s, const char *str, size_t n)
{
    uint32_t at = (uint32_t)s->alen;
    memcpy(s->arena + s->alen, str, n);
    s->arena[s->alen + n] = '\0';
    s->alen += n + 1;
    return at;
}

static int add_job(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct cjob *c = rec;
    struct kube_snapshot *o = s->out;
    if (s->pool && strcmp(cjob_pool(c), s->pool) != 0) return 0;
    /* The store may have grown between the counting visit and this one. */
    size_t need = job_bytes(c);
    if ((o->n == o->cap || o->alen + need > o->acap) &&
        reserve(o, o->cap + o->cap / 8 + 16, o->acap + o->acap / 8 + need + 256) != 0)
        return JP_ENOMEM;
    if (o->alen + need > UINT32_MAX) return JP_ENOMEM;
    struct kube_snap_job *j = &o->v[o->n++];
    memset(j, 0, sizeof *j);
    const char *slash = strchr(c->strs, '/');
    size_t nl = slash ? (size_t)(slash - c->strs) : 0;
    const char *name = slash ? slash + 1 : c->strs;
    j->ns = put_str(o, c->strs, nl);
    j->name = put_str(o, name, strlen(name));
    j->pool = put_str(o, cjob_pool(c), strlen(cjob_pool(c)));
    j->uid = put_str(o, cjob_uid(c), strlen(cjob_uid(c)));
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
    return 0;
}

/* By namespace, then name: the key's order. */
static int cmp_key(const void *a, const void *b, void *arena)
{
    const struct kube_snap_job *x = a, *y = b;
    const char *t = arena;
    int c = strcmp(t + x->ns, t + y->ns);
    return c ? c : strcmp(t + x->name, t + y->name);
}

static int cmp_created(const void *a, const void *b, void *arena)
{
    const struct kube_snap_job *x = a, *y = b;
    if (x->created_ms != y->created_ms) return x->created_ms < y->created_ms ? -1 : 1;
    return cmp_key(a, b, arena);
}

int kube_snap_cmp_pool(const struct kube_snapshot *s, const struct kube_snap_job *j,
                       const char *ns, const char *pool)
{
    int c = strcmp(s->arena + j->ns, ns);
    return c ? c : strcmp(s->arena + j->pool, pool);
}

/* Every pool's Jobs together (the backend then finds a pool by binary search), each pool's
 * oldest first: one sort serves both, where a sort by time and a second by pool cost twice.
 * A pool is its namespace and name: pool "a" of two namespaces is two pools. */
static int cmp_pool_created(const void *a, const void *b, void *arena)
{
    const struct kube_snap_job *x = a, *y = b;
    const char *t = arena;
    int c = strcmp(t + x->ns, t + y->ns);
    if (!c) c = strcmp(t + x->pool, t + y->pool);
    return c ? c : cmp_created(a, b, arena);
}

/* A NUL-terminated name against job's jl bytes, as strcmp would order name and that string. */
static int cmp_name(const char *name, const char *job, size_t jl)
{
    int c = strncmp(name, job, jl);
    return c ? c : (unsigned char)name[jl];
}

/* A Running pod, or a finished one with the worker's last word (no message found, or a task's
 * wait and duration), marks its Job, found by namespace and name (a pod of another pool finds no
 * Job). */
static int add_pod(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct kube_snapshot *o = s->out;
    const struct cpod *p = rec;
    const char *job;
    size_t jl = cpod_job(p, &job);
    if (!jl || (!p->running && !p->no_task && !p->has_task)) return 0;
    const char *slash = strchr(p->strs, '/');
    size_t nl = slash ? (size_t)(slash - p->strs) : 0;
    size_t lo = 0, hi = o->n;
    while (lo < hi) { /* the first Job whose (namespace, name) is not below the pod's */
        size_t mid = lo + (hi - lo) / 2;
        const char *ns = o->arena + o->v[mid].ns;
        int c = strncmp(ns, p->strs, nl);
        if (!c) c = ns[nl] ? 1 : 0;
        if (!c) c = cmp_name(o->arena + o->v[mid].name, job, jl);
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo == o->n) return 0;
    struct kube_snap_job *j = &o->v[lo];
    if (strncmp(o->arena + j->ns, p->strs, nl) || o->arena[j->ns + nl] ||
        cmp_name(o->arena + j->name, job, jl))
        return 0;
    if (p->running) j->running_pods++;
    if (p->no_task) j->no_task = true;
    if (p->no_task || p->has_task) j->reported = true;
    if (p->has_task) {
        j->task_wait_s = p->task_wait_s;
        j->task_duration_s = p->task_duration_s;
    }
    return 0;
}

int kube_cache_snapshot(struct kube_cache *k, const char *pool, struct kube_snapshot *out)
{
    out->n = out->alen = 0;
    if (!kube_cache_synced(k)) return JP_ESTALE;
    struct snap s = {pool, out, 0, 0};
    int rc = watch_visit(k->w[K_JOBS], count_job, &s);
    if (rc || (rc = reserve(out, s.count, s.bytes)) != 0) goto out;
    if ((rc = watch_visit(k->w[K_JOBS], add_job, &s)) != 0) goto out;
    if (out->n > 1) qsort_r(out->v, out->n, sizeof *out->v, cmp_key, out->arena);
    rc = watch_visit(k->w[K_PODS], add_pod, &s);
    if (rc) goto out;
    for (size_t i = 0; i < out->n; i++) {
        struct kube_snap_job *j = &out->v[i];
        j->state = kube_job_state_of(j->complete, j->failed_cond, j->running_pods);
    }
    if (out->n > 1)
        qsort_r(out->v, out->n, sizeof *out->v, pool ? cmp_created : cmp_pool_created,
                out->arena);
out:
    if (rc) out->n = out->alen = 0;
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
