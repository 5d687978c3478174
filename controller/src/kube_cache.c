/* kube_cache.c: the Jobs and Pods watches, joined into the controller's view of its workers. */
#define _GNU_SOURCE
#include "kube_cache.h"
#include "err.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { K_JOBS = 0, K_PODS = 1 };
const char *const kube_cache_kinds[2] = {"jobs", "pods"};

static int parse_job(const struct cJSON *obj, void *rec) { return kube_job_parse(obj, rec); }
static int parse_pod(const struct cJSON *obj, void *rec) { return kube_pod_parse(obj, rec); }

static const struct watch_kind kinds[2] = {
    {"jobs", "jobs.batch", "/apis/batch/v1", "jobs", sizeof(struct kube_job), parse_job},
    {"pods", "pods", "/api/v1", "pods", sizeof(struct kube_pod), parse_pod},
};

struct kube_cache {
    struct watch *w[2];
};

void kube_cache_free(struct kube_cache *k)
{
    if (!k) return;
    for (int i = 0; i < 2; i++) watch_free(k->w[i]);
    free(k);
}

int kube_cache_new(const struct kube_client *c, const struct kube_cache_opts *o,
                   struct kube_cache **out)
{
    *out = NULL;
    struct kube_cache *k = calloc(1, sizeof *k);
    if (!k) return JP_ENOMEM;
    struct watch_opts wo = {
        .label_selector = o && o->label_selector ? o->label_selector : KUBE_SELECTOR_MANAGED,
        .resync_ms = o ? o->resync_ms : 0,
        .watch_timeout_s = o ? o->watch_timeout_s : 0,
    };
    int rc = 0;
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
};

static int add_job(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct kube_job *j = rec;
    struct kube_job_list *l = s->out;
    if (s->pool && strcmp(j->pool, s->pool) != 0) return 0;
    if (l->n == l->alloc) {
        size_t na = l->alloc ? l->alloc * 2 : 64;
        struct kube_job *p = realloc(l->items, na * sizeof *p);
        if (!p) return JP_ENOMEM;
        l->items = p;
        l->alloc = na;
    }
    l->items[l->n] = *j;
    l->items[l->n].running_pods = 0;
    l->items[l->n].no_task = false;
    l->items[l->n].task_wait_s = l->items[l->n].task_duration_s = -1;
    l->items[l->n].reported = false;
    l->n++;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct kube_job *)a)->name, ((const struct kube_job *)b)->name);
}

static int cmp_created(const void *a, const void *b)
{
    const struct kube_job *x = a, *y = b;
    if (x->created_ms != y->created_ms) return x->created_ms < y->created_ms ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Every pool's Jobs together (the backend then finds a pool by binary search), each pool's
 * oldest first: one sort serves both, where a sort by time and a second by pool cost twice. */
static int cmp_pool_created(const void *a, const void *b)
{
    const struct kube_job *x = a, *y = b;
    int c = strcmp(x->pool, y->pool);
    return c ? c : cmp_created(a, b);
}

/* A Running pod, or a finished one with the worker's last word (no message found, or a task's
 * wait and duration), marks its Job, found by name. */
static int add_pod(void *ud, const void *rec)
{
    struct snap *s = ud;
    const struct kube_pod *p = rec;
    bool running = kube_pod_running(p);
    if (!p->job[0] || (!running && !p->no_task && !p->has_task)) return 0;
    if (s->pool && strcmp(p->pool, s->pool) != 0) return 0;
    struct kube_job key = {0};
    memcpy(key.name, p->job, sizeof key.name);
    struct kube_job *j = bsearch(&key, s->out->items, s->out->n, sizeof key, cmp_name);
    if (!j) return 0;
    if (running) j->running_pods++;
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
    struct snap s = {pool, out};
    int rc = watch_visit(k->w[K_JOBS], add_job, &s);
    if (rc) goto out;
    if (out->n > 1) qsort(out->items, out->n, sizeof *out->items, cmp_name);
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
    return watch_expect_create(k->w[K_JOBS], placeholder);
}

void kube_cache_note_created(struct kube_cache *k, const struct kube_job *j)
{
    watch_put(k->w[K_JOBS], j, j->resource_version, 0);
}

void kube_cache_forget_created(struct kube_cache *k, const char *name)
{
    watch_expect_forget(k->w[K_JOBS], name);
}

void kube_cache_note_deleted(struct kube_cache *k, const char *name)
{
    watch_expect_delete(k->w[K_JOBS], name);
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
