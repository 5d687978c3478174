/* backend_kube.c: workers as Kubernetes Jobs, observed through the watch cache. */
#define _GNU_SOURCE
#include "backend.h"
#include "err.h"
#include "kube.h"
#include "kube_cache.h"
#include "intern.h"
#include "log.h"
#include "podsec.h"
#include "pools.h"
#include "metrics.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* What the controller itself saw of each Job, on its own monotonic clock: ages and start times
 * are measured from these, never from the API server's timestamps (another machine's clock:
 * a skew of minutes would turn every pending Job into a timed-out one, or hide a start). Kept
 * in memory only: after a restart every Job is first seen anew, which errs towards deleting
 * later and starting fewer workers for one stats interval, never towards more. */
struct seen {
    uint64_t id[2];             /* the Job's key (namespace/name) digested (seen_digest); {0, 0}
                                 * marks a free slot */
    int64_t first_ms;           /* first seen, in any state */
    int64_t running_ms;         /* first seen running, or first seen finished; 0 not yet */
    int64_t finished_seen_ms;   /* first seen finished (monotonic ms); 0 not yet */
    uint32_t gen;               /* pass in which it was last seen; older entries are pruned */
    uint32_t first_gen;         /* pass in which it was first seen */
    bool was_active;            /* seen pending or running */
    bool counted;               /* its outcome is in the stats */
};

/* A Job's Complete condition and its pod's termination message come through two watches, so
 * the Job may be seen finished a moment before the worker's last word. Its outcome is counted
 * once that word is there, or after this long without it (an old worker, a pod already gone). */
#define REPORT_GRACE_MS 10000

/* Events are rate-limited per pool and reason: a burst of 5, then one per 30 s, so that a
 * failing pool cannot flood the API server. */
enum { EV_SCALED_UP, EV_PENDING_TIMEOUT, EV_TEMPLATE_REJECTED, EV_N };
#define EV_BURST 5.0
#define EV_REFILL_MS 30000.0
struct ev_bucket {
    double tokens;
    int64_t at_ms;
};

struct pool_env {
    char idle[32], attempts[16], task_timeout[32];
    const char *kv[9];          /* name, value pairs, NULL-terminated */
};

/* When the cache of Jobs or Pods has not been current for this long, the pools hold: no starts
 * and no deletes on a view that may be wrong (docs/operations.md). A healthy watch is at most
 * about one watch timeout (10 s) old. */
#define CACHE_MAX_AGE_MS 30000

/* What the backend keeps per pool, in the pool's slot (pools_slot). A slot taken over by
 * another pool starts afresh. */
struct kslot {
    char key[192];              /* namespace/name of the pool that holds it */
    struct ev_bucket ev[EV_N];
    struct backend_stats stats;
};

struct kb {
    struct backend base;
    const struct cfg *cfg;
    struct kube_client *kc;
    struct kube_cache *cache;
    struct kslot *slots;        /* pools_slots(cfg) of them */
    const struct pools *pools;  /* JobPools served besides the file's (backend_kube_serve) */
    struct kube_snapshot snap;  /* this tick's snapshot of every Job, sorted by pool; once
                                 * observed, only its strings and its entries' memory remain */
    struct backend_worker *w;   /* this tick's workers, the snapshot's order, in the place of
                                 * its entries (kb_observe); lists are views of it */
    size_t nw;
    int snap_rc;                /* the snapshot's result: JP_ESTALE before the first sync */
    bool stale;                 /* the cache is older than CACHE_MAX_AGE_MS: every pool holds */
    struct seen *seen;          /* open addressing, power-of-two size */
    size_t nseen, seen_cap;
    uint32_t gen;
    char *amqp_url;             /* rabbitmq.amqpUrl without user info, for the workers */
    struct kube_worker_conn conn; /* with rabbitmq.workerSecret: what every Job is given */
    char selector[160];         /* this instance's Jobs and Pods */
    bool event_warned;          /* said once why pool-level Events have no object */
    uint32_t first_snap_gen;    /* Jobs already finished in the first snapshot are history from
                                   before this controller: not counted in the stats */
    const char **pool_names;    /* the configured pools' names, sorted: orphans are the rest */
};

static struct kslot *slot_of(struct kb *K, const struct cfg_pool *p)
{
    struct kslot *s = &K->slots[pools_slot(K->cfg, p)];
    char key[sizeof s->key];
    snprintf(key, sizeof key, "%s/%s", p->namespace_ ? p->namespace_ : "", p->name);
    if (strcmp(s->key, key)) {
        memset(s, 0, sizeof *s);
        memcpy(s->key, key, sizeof key);
    }
    return s;
}

/* A key as the table of Jobs seen holds it: two unrelated 64-bit hashes (FNV-1a, and a
 * rotate-xor-multiply with a final mix), 16 bytes instead of the key's 128-byte buffer. At
 * 20,000 Jobs the table held 6.5 MB with the keys, 1.8 MB without. Two keys that share both
 * hashes would share their first-seen times; for names the API server accepts that is a chance
 * of about n^2 / 2^129, nothing an operator will meet. */
static void seen_digest(const char *key, uint64_t id[2])
{
    size_t n = strlen(key);
    uint64_t h = 0x243f6a8885a308d3ULL;
    for (size_t i = 0; i < n; i++) {
        h = (h << 5 | h >> 59) ^ (unsigned char)key[i];
        h *= 0x9e3779b97f4a7c15ULL;
    }
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    id[0] = util_fnv1a(key, n, 0);
    id[1] = h | 1; /* never {0, 0}: that is a free slot */
}

static size_t seen_home(const uint64_t id[2], size_t cap)
{
    return (size_t)(id[0] ^ id[1] >> 7) & (cap - 1);
}

/* The entry of id, added when it has none (NULL only when out of memory). */
static struct seen *seen_find(struct kb *K, const uint64_t id[2])
{
    /* At most three quarters full: linear probing stays short. */
    if ((K->nseen + 1) * 4 > K->seen_cap * 3) {
        size_t cap = K->seen_cap ? K->seen_cap * 2 : 256;
        struct seen *t = calloc(cap, sizeof *t);
        if (!t) return NULL;
        for (size_t i = 0; i < K->seen_cap; i++) {
            if (!K->seen[i].id[1]) continue;
            size_t h = seen_home(K->seen[i].id, cap);
            while (t[h].id[1]) h = (h + 1) & (cap - 1);
            t[h] = K->seen[i];
        }
        free(K->seen);
        K->seen = t;
        K->seen_cap = cap;
    }
    if (!K->seen_cap) return NULL;
    size_t h = seen_home(id, K->seen_cap);
    while (K->seen[h].id[1]) {
        if (K->seen[h].id[0] == id[0] && K->seen[h].id[1] == id[1]) return &K->seen[h];
        h = (h + 1) & (K->seen_cap - 1);
    }
    K->seen[h].id[0] = id[0];
    K->seen[h].id[1] = id[1];
    K->nseen++;
    return &K->seen[h];
}

static struct seen *seen_slot(struct kb *K, const char *key)
{
    uint64_t id[2];
    seen_digest(key, id);
    return seen_find(K, id);
}

/* The entry of key, or NULL: never adds one. */
static struct seen *seen_lookup(const struct kb *K, const char *key)
{
    uint64_t id[2];
    seen_digest(key, id);
    if (!K->seen_cap) return NULL;
    for (size_t h = seen_home(id, K->seen_cap); K->seen[h].id[1]; h = (h + 1) & (K->seen_cap - 1))
        if (K->seen[h].id[0] == id[0] && K->seen[h].id[1] == id[1]) return &K->seen[h];
    return NULL;
}

/* Drop entries not seen for a while, by rebuilding the table. */
static void seen_prune(struct kb *K)
{
    if (K->nseen < 64 || K->gen % 64) return;
    struct seen *old = K->seen;
    size_t cap = K->seen_cap;
    K->seen = NULL;
    K->seen_cap = K->nseen = 0;
    for (size_t i = 0; i < cap; i++)
        if (old[i].id[1] && K->gen - old[i].gen < 64) {
            struct seen *s = seen_find(K, old[i].id);
            if (s) *s = old[i];
        }
    free(old);
}

/* One Job of the snapshot as a worker, with times from what this controller saw; pool is its
 * pool label, interned. j is a copy: w may take its entry's place. A finished worker whose
 * outcome is due to be counted comes out with outcome_new set; kb_list counts it (count_due). */
static void to_worker(struct kb *K, const struct kube_snap_job *j, const char *pool,
                      struct backend_worker *w)
{
    int64_t now = util_now_ms();
    memset(w, 0, sizeof *w);
    const char *ns = kube_snap_str(&K->snap, j->ns), *name = kube_snap_str(&K->snap, j->name);
    w->id = name; /* the snapshot's strings live until the next kb_observe */
    w->ns = ns;
    w->uid = kube_snap_str(&K->snap, j->uid);
    w->pool = pool;
    w->queue = j->queue ? j->queue : "";
    w->exit_code = -1;
    w->task_wait_s = w->task_duration_s = -1;
    char key[KUBE_KEY_LEN];
    kube_key(key, sizeof key, ns, name);
    struct seen *s = seen_slot(K, key);
    if (s) {
        if (!s->first_ms) {
            s->first_ms = now;
            s->first_gen = K->gen;
        }
        s->gen = K->gen;
        if (j->state == KUBE_JOB_PENDING || j->state == KUBE_JOB_RUNNING) s->was_active = true;
    }
    w->w.created_ms = s ? s->first_ms : now;
    switch (j->state) {
    case KUBE_JOB_SUCCEEDED:
    case KUBE_JOB_FAILED:
        w->w.state = j->state == KUBE_JOB_SUCCEEDED ? SCALE_SUCCEEDED : SCALE_FAILED;
        /* Finished workers are ordered among themselves by the API server's own times. */
        w->w.finished_ms = j->finished_ms ? j->finished_ms
                           : j->completion_ms ? j->completion_ms : util_wall_ms();
        if (s && !s->running_ms) s->running_ms = now;
        w->w.started_ms = s ? s->running_ms : now;
        w->wasted = j->no_task;
        w->task_wait_s = (float)j->task_wait_s;
        w->task_duration_s = (float)j->task_duration_s;
        if (s && !s->finished_seen_ms) s->finished_seen_ms = now;
        /* Each outcome is counted once, as the worker's own report says it, and only for a
         * worker this controller saw active or did not find finished at its start. */
        w->outcome_new = s && !s->counted && (s->was_active || s->first_gen != K->first_snap_gen) &&
                         (j->reported || now - s->finished_seen_ms >= REPORT_GRACE_MS);
        break;
    case KUBE_JOB_RUNNING:
        w->w.state = SCALE_RUNNING;
        if (s && !s->running_ms) s->running_ms = now;
        w->w.started_ms = s ? s->running_ms : now;
        break;
    default:
        /* Between pod retries: it will take a message again, but it is not "pending" in the
         * sense of pendingTimeout: its worker has run. */
        w->w.state = SCALE_PENDING;
        w->w.ran = kube_job_ran_counts(j->succeeded, j->failed);
        break;
    }
}

/* A worker is no bigger than a snapshot entry, so the tick's workers are written over the
 * snapshot's entries, in place: the snapshot and the workers never take memory at once (at
 * 20,000 Jobs, 1.9 MB of entries and 1.9 MB of workers). Entry i is read (copied) before worker
 * k <= i is written, and worker k covers no byte of an entry after k. */
_Static_assert(sizeof(struct backend_worker) <= sizeof(struct kube_snap_job),
               "a worker must fit in a snapshot entry's place");
_Static_assert(_Alignof(struct backend_worker) <= _Alignof(struct kube_snap_job),
               "a worker must be aligned in a snapshot entry's place");

/* The tick's table and its strings go until the next observe builds them again: at 20,000
 * Jobs they are 3-4 MiB that would otherwise stay resident between ticks. */
static void kb_release(struct backend *b)
{
    struct kb *K = (struct kb *)b;
    K->w = NULL;
    K->nw = 0;
    kube_snapshot_free(&K->snap);
}

/* One snapshot of every Job per tick, sorted by pool (kube_cache_snapshot with no pool), turned
 * into workers once for every pool: each pool's list is then a binary search away and a view
 * of this table, so a tick costs O(jobs log jobs), not O(pools x jobs), and no list copies a
 * worker. Jobs on their way out (deleting) are neither active nor history: left out. */
static int kb_observe(struct backend *b)
{
    struct kb *K = (struct kb *)b;
    K->gen++;
    seen_prune(K);
    K->w = NULL;
    K->nw = 0;
    K->snap_rc = kube_cache_snapshot(K->cache, NULL, &K->snap);
    if (!K->snap_rc && !K->first_snap_gen) K->first_snap_gen = K->gen;
    K->stale = !K->snap_rc && kube_cache_stale(K->cache, CACHE_MAX_AGE_MS);
    if (K->snap_rc) return K->snap_rc;
    struct backend_worker *w = (struct backend_worker *)(void *)K->snap.v;
    const char *label = NULL; /* the current run's pool label, interned once per run */
    size_t k = 0;
    for (size_t i = 0; i < K->snap.n; i++) {
        struct kube_snap_job j;
        memcpy(&j, &K->snap.v[i], sizeof j);
        /* The copy is made before the worker is written over the entry: without this the
         * compiler may read the entry's fields later, since a store through one type is
         * taken not to change an object of another (the aliasing rule). */
        __asm__ volatile("" : : : "memory");
        if (j.deleting_ms) continue;
        const char *pool = kube_snap_str(&K->snap, j.pool);
        if ((!label || strcmp(label, pool)) && !(label = intern(pool))) {
            /* Out of memory: no pool can be listed (the table's order needs every label). */
            K->snap.n = 0;
            return K->snap_rc = JP_ENOMEM;
        }
        to_worker(K, &j, label, &w[k++]);
    }
    K->snap.n = 0; /* its entries are gone: the workers took their place */
    K->w = w;
    K->nw = k;
    return 0;
}

/* Where pool's Jobs live: its JobPool's namespace, or the controller's for the file's pools. */
static const char *pool_ns(const struct kb *K, const struct cfg_pool *p)
{
    return p->namespace_ ? p->namespace_ : kube_namespace(K->kc);
}

static int cmp_pool(const struct backend_worker *w, const char *ns, const char *pool)
{
    int c = strcmp(w->ns, ns);
    return c ? c : strcmp(w->pool, pool);
}

/* First index in the table whose (namespace, pool) is >= (ns, name). */
static size_t pool_lower_bound(const struct kb *K, const char *ns, const char *name)
{
    size_t lo = 0, hi = K->nw;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_pool(&K->w[mid], ns, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool pool_configured(const struct kb *K, const char *ns, const char *name)
{
    if (!strcmp(ns, kube_namespace(K->kc)) &&
        bsearch(&name, K->pool_names, K->cfg->npools, sizeof *K->pool_names, cmp_str))
        return true;
    /* A served JobPool (a paused one too); a deleted one's Jobs are orphans from now on. */
    for (size_t i = 0; K->pools && i < pools_count(K->pools); i++) {
        const struct cfg_pool *p = pools_at(K->pools, i)->cfg;
        if (!strcmp(p->name, name) && !strcmp(pool_ns(K, p), ns)) return true;
    }
    return false;
}

void backend_kube_serve(struct backend *b, const struct pools *ps)
{
    ((struct kb *)b)->pools = ps;
}

/* A listed worker whose outcome is due (to_worker): counted in the pool's stats now, once; in
 * a later listing of the same tick it is no longer new. */
static void count_due(struct kb *K, struct backend_worker *w, struct backend_stats *st)
{
    char key[KUBE_KEY_LEN];
    kube_key(key, sizeof key, w->ns, w->id);
    struct seen *s = seen_lookup(K, key);
    if (!s || s->counted) {
        w->outcome_new = false;
        return;
    }
    s->counted = true;
    if (w->w.state == SCALE_SUCCEEDED) st->succeeded++;
    else st->failed++;
    if (w->wasted) st->wasted++;
}

static int kb_list(struct backend *b, const struct cfg_pool *pool, struct backend_list *out)
{
    struct kb *K = (struct kb *)b;
    backend_list_view(out, NULL, 0);
    if (K->snap_rc) return K->snap_rc;
    if (K->stale) return JP_ESTALE;
    const char *ns = pool_ns(K, pool);
    size_t lo = pool_lower_bound(K, ns, pool->name), hi = lo;
    while (hi < K->nw && cmp_pool(&K->w[hi], ns, pool->name) == 0) hi++;
    struct backend_stats *st = &slot_of(K, pool)->stats;
    for (size_t i = lo; i < hi; i++)
        if (K->w[i].outcome_new) count_due(K, &K->w[i], st);
    backend_list_view(out, K->w + lo, hi - lo);
    return 0;
}

/* Jobs with our managed-by label whose pool is not configured (removed, renamed, or no pool
 * label at all) in their namespace. The table is sorted by namespace and pool, so this is one
 * walk. Copies: they are few, and their outcomes are not counted (no pool's stats). */
static int kb_list_orphans(struct backend *b, struct backend_list *out)
{
    struct kb *K = (struct kb *)b;
    out->n = 0;
    if (K->snap_rc) return K->snap_rc;
    if (K->stale) return JP_ESTALE; /* no trimming on a view that may be wrong */
    int rc;
    for (size_t i = 0; i < K->nw;) {
        const char *pool = K->w[i].pool, *ns = K->w[i].ns;
        size_t end = i;
        while (end < K->nw && cmp_pool(&K->w[end], ns, pool) == 0) end++;
        if (!pool_configured(K, ns, pool))
            for (size_t k = i; k < end; k++) {
                struct backend_worker w = K->w[k];
                w.outcome_new = false;
                if ((rc = backend_list_push(out, &w)) != 0) return rc;
            }
        i = end;
    }
    return 0;
}

static bool ev_allow(struct kb *K, const struct cfg_pool *pool, int kind)
{
    struct ev_bucket *e = &slot_of(K, pool)->ev[kind];
    int64_t now = util_now_ms();
    if (!e->at_ms) e->tokens = EV_BURST;
    else e->tokens += (double)(now - e->at_ms) / EV_REFILL_MS;
    if (e->tokens > EV_BURST) e->tokens = EV_BURST;
    e->at_ms = now;
    if (e->tokens < 1.0) return false;
    e->tokens -= 1.0;
    return true;
}

/* Record an Event about a Job (in the pool's namespace); when job is NULL, about the pool's
 * JobPool (in its namespace, where its owner looks), or for the file's pools about the
 * controller's own Pod (POD_NAME from the downward API). Without POD_NAME such an Event has no
 * object to name: that is said once, at warn, rather than dropped in silence. Failures are
 * logged at debug: events are best effort. */
static void event(struct kb *K, const struct cfg_pool *pool, int kind, const char *job,
                  const char *type, const char *reason, const char *msg)
{
    if (!ev_allow(K, pool, kind)) return;
    const char *pod = getenv("POD_NAME");
    int rc;
    if (job) {
        rc = kube_event_create_in(K->kc, pool_ns(K, pool), "Job", "batch/v1", job, NULL, type,
                                  reason, msg);
    } else if (pool->namespace_) {
        rc = kube_event_create_in(K->kc, pool->namespace_, "JobPool", "jobpool.dev/v1alpha1",
                                  pool->name, NULL, type, reason, msg);
    } else if (pod && *pod) {
        rc = kube_event_create(K->kc, "Pod", "v1", pod, NULL, type, reason, msg);
    } else {
        if (!K->event_warned)
            log_msg(LOG_WARN, cfg_pool_id(pool), 0, "event %s not recorded: POD_NAME is "
                    "not set (give the controller its pod name through the downward API); "
                    "such events are only logged", reason);
        K->event_warned = true;
        return;
    }
    if (rc) log_msg(LOG_DEBUG, cfg_pool_id(pool), rc, "event %s not recorded", reason);
}

static int64_t kb_retry_hint_ms(struct backend *b)
{
    long s = kube_last_retry_after(((struct kb *)b)->kc);
    return s < 0 ? -1 : (int64_t)s * 1000;
}

static void kb_report(struct backend *b, struct metrics *m)
{
    struct kb *K = (struct kb *)b;
    struct kube_cache_stats st;
    kube_cache_get_stats(K->cache, &st);
    for (int i = 0; i < 2; i++)
        metrics_set_cache(m, kube_cache_kinds[i], (double)st.kind[i].age_ms / 1e3,
                          st.kind[i].age_ms > CACHE_MAX_AGE_MS);
}

/* A create that failed this way may still have happened on the server (the answer was lost or
 * garbled): it stays expected, and counts as a pending worker, until the watch shows it. */
static bool outcome_unknown(int rc)
{
    return rc == JP_ETIMEOUT || rc == JP_ENETWORK || rc == JP_ESERVER || rc == JP_EHTTP ||
           rc == JP_ETOOBIG || rc == JP_EPARSE || rc == JP_ESHAPE;
}

/* Name each Job before sending it, and expect it (client-go's ControllerExpectations). */
static int expect_jobs(struct kb *K, const struct cfg_pool *pool, const char *queue, int n,
                       char (*names)[64], const char **np)
{
    for (int i = 0; i < n; i++) {
        kube_job_name(pool->name, names[i]);
        np[i] = names[i];
        struct kube_job ph;
        memset(&ph, 0, sizeof ph);
        snprintf(ph.name, sizeof ph.name, "%s", names[i]);
        snprintf(ph.ns, sizeof ph.ns, "%s", pool_ns(K, pool));
        snprintf(ph.pool, sizeof ph.pool, "%s", pool->name);
        snprintf(ph.config_hash, sizeof ph.config_hash, "%s", pool->hash);
        const char *q = intern(queue);
        ph.queue = q ? q : "";
        ph.created_ms = util_wall_ms();
        ph.state = KUBE_JOB_PENDING;
        int rc = kube_cache_expect_created(K->cache, &ph);
        if (rc) return rc;
    }
    return 0;
}

/* After a batch: the cache learns each answer; refused creates are no longer expected. */
static void settle_jobs(struct kb *K, const struct cfg_pool *pool, int n, char (*names)[64],
                        const struct kube_job *made, const int *rcs)
{
    for (int i = 0; i < n; i++) {
        if (rcs[i] == 0) {
            kube_cache_note_created(K->cache, &made[i]);
        } else if (rcs[i] == JP_ECONFLICT) {
            /* The name is ours and fresh: the create was sent again after its first answer was
             * lost (libcurl retries a request whose reused connection died). */
            log_msg(LOG_WARN, cfg_pool_id(pool), rcs[i], "job %s already exists: the create's answer "
                    "was lost and it was sent again; counted as pending until the watch shows "
                    "it", names[i]);
        } else if (outcome_unknown(rcs[i])) {
            log_msg(LOG_WARN, cfg_pool_id(pool), rcs[i], "job %s: the create's answer was lost; counted "
                    "as pending until the watch shows it (or does not, within 30 s)", names[i]);
        } else {
            char key[KUBE_KEY_LEN];
            kube_key(key, sizeof key, pool_ns(K, pool), names[i]);
            kube_cache_forget_created(K->cache, key);
        }
    }
}

static void pool_env(const struct cfg_pool *pool, struct pool_env *pe);

static int kb_start(struct backend *b, const struct cfg_pool *pool, const char *queue, int n,
                    int64_t ready, int *started)
{
    struct kb *K = (struct kb *)b;
    struct pool_env pe;
    *started = 0;
    if (!queue) queue = pool->queue;
    if (!pool->job_template) {
        log_msg(LOG_ERROR, cfg_pool_id(pool), JP_ECONFIG, "jobTemplate is required for the kube backend");
        return JP_ECONFIG;
    }
    char (*names)[64] = calloc((size_t)n, sizeof *names);
    const char **np = calloc((size_t)n, sizeof *np);
    int *rcs = calloc((size_t)n, sizeof *rcs);
    struct kube_job *made = calloc((size_t)n, sizeof *made);
    int rc = JP_ENOMEM;
    if (!names || !np || !rcs || !made || (rc = expect_jobs(K, pool, queue, n, names, np)) != 0) {
        char key[KUBE_KEY_LEN];
        for (int i = 0; names && np && i < n; i++) {
            if (!np[i]) continue;
            kube_key(key, sizeof key, pool_ns(K, pool), np[i]);
            kube_cache_forget_created(K->cache, key);
        }
        goto out;
    }
    pool_env(pool, &pe);
    struct kube_job_spec spec = {
        .namespace_ = pool_ns(K, pool),
        .pool = pool->name,
        .instance = K->cfg->kubernetes.instance,
        .queue = queue,
        .vhost = pool->vhost,
        .config_hash = pool->hash,
        .job_template = pool->job_template,
        .ttl_seconds_after_finished = pool->ttl_seconds_after_finished,
        .env = pe.kv,
        /* A JobPool with its own broker gives its Jobs that one (connectionSecretRef). */
        .conn = pool->connection_secret ? pool->worker_conn : K->conn.secret ? &K->conn : NULL,
        .names = np,
    };
    int created = 0;
    rc = kube_jobs_create(K->kc, &spec, n, &created, made, rcs);
    settle_jobs(K, pool, n, names, made, rcs);
    const char *first = NULL;
    for (int i = 0; i < n && !first; i++)
        if (made[i].name[0]) first = made[i].name;
    *started = created;
    slot_of(K, pool)->stats.started += (unsigned long)created;
    char msg[1280];
    if (rc) {
        snprintf(msg, sizeof msg, "%s", kube_last_error(K->kc));
        log_msg(LOG_ERROR, cfg_pool_id(pool), rc, "created %d of %d jobs: %s", created, n, msg);
        if (rc == JP_EINVALID)
            event(K, pool, EV_TEMPLATE_REJECTED, NULL, "Warning", "TemplateRejected", msg);
    }
    if (created && first) {
        snprintf(msg, sizeof msg, "Started %d worker%s for %lld ready message%s (pool %s)",
                 created, created == 1 ? "" : "s", (long long)ready, ready == 1 ? "" : "s",
                 pool->name);
        event(K, pool, EV_SCALED_UP, first, "Normal", "ScaledUp", msg);
    }
out:
    free(made);
    free(rcs);
    free(np);
    free(names);
    return rc;
}

/* Live, from the API server (the snapshot may be a pass old): is the Job still pending, and
 * with which resourceVersion? 0 when it is (*live filled), JP_ECANCELED when a pod of it has
 * started, it has finished or retried, or it is no longer the Job that was decided on. */
static int confirm_pending(struct kb *K, const struct backend_worker *w, struct kube_job *live)
{
    int rc = kube_job_get_in(K->kc, w->ns, w->id, live);
    if (rc) return rc;
    if ((w->uid[0] && strcmp(live->uid, w->uid) != 0) || live->deleting_ms || live->complete ||
        live->failed_cond || live->succeeded > 0 || live->failed > 0)
        return JP_ECANCELED;
    char sel[128];
    snprintf(sel, sizeof sel, "job-name=%s", w->id);
    struct kube_pod_list pods = {0};
    rc = kube_pods_list_in(K->kc, w->ns, sel, &pods);
    for (size_t i = 0; !rc && i < pods.n; i++)
        if (pods.items[i].started) rc = JP_ECANCELED;
    kube_pod_list_free(&pods);
    return rc;
}

static int kb_remove(struct backend *b, const struct cfg_pool *pool, const struct backend_worker *w)
{
    struct kb *K = (struct kb *)b;
    const char *pname = pool ? pool->name : w->pool;
    struct kube_job live;
    memset(&live, 0, sizeof live);
    int rc = 0;
    if (w->w.state == SCALE_PENDING) {
        /* Only a pending-timeout deletes an active worker; the decision was taken on a
         * snapshot, so confirm it live, and delete only that very version of the Job. */
        rc = confirm_pending(K, w, &live);
        if (rc == JP_ECANCELED) {
            log_msg(LOG_INFO, pname, 0, "job %s is no longer pending: not deleted", w->id);
            return rc;
        }
        if (rc) goto out;
    }
    rc = kube_job_delete_if_in(K->kc, w->ns, w->id, w->uid, live.resource_version);
    if (rc == JP_ECONFLICT) {
        /* It changed between the live check and the delete (a pod started, say). */
        log_msg(LOG_DEBUG, pname, rc, "job %s changed since it was read: not deleted", w->id);
        return JP_ECANCELED;
    }
    if (rc == 0 && w->w.state == SCALE_PENDING && pool)
        event(K, pool, EV_PENDING_TIMEOUT, w->id, "Warning", "PendingTimeout",
              "Deleted: no pod ran within the pool's pendingTimeout");
out:
    if (rc == 0 || rc == JP_ENOTFOUND) {
        char key[KUBE_KEY_LEN];
        kube_key(key, sizeof key, w->ns[0] ? w->ns : kube_namespace(K->kc), w->id);
        kube_cache_note_deleted(K->cache, key);
    }
    if (rc && rc != JP_ENOTFOUND && rc != JP_ECANCELED)
        log_msg(LOG_WARN, pname, rc, "deleting job %s failed: %s", w->id, kube_last_error(K->kc));
    return rc;
}

static void kb_stats(struct backend *b, const struct cfg_pool *pool, struct backend_stats *out)
{
    struct kb *K = (struct kb *)b;
    *out = slot_of(K, pool)->stats;
}

static void kb_shutdown(struct backend *b, long grace_ms)
{
    (void)b;
    (void)grace_ms; /* Jobs keep running: a restart never deletes a running worker. */
}

static void kb_destroy(struct backend *b)
{
    struct kb *K = (struct kb *)b;
    if (!K) return;
    kube_cache_free(K->cache);
    free(K->amqp_url);
    free(K->slots);
    kube_snapshot_free(&K->snap);
    free(K->seen);
    free(K->pool_names);
    free(K);
}

/* The worker settings the controller owns, added to every container's env unless the
 * template sets them. The last one makes the worker's final word ("no-task" when it found no
 * message) the container's termination message, which is how wasted workers are counted. */
static void pool_env(const struct cfg_pool *pool, struct pool_env *pe)
{
    util_format_duration(pool->idle_timeout_ms, pe->idle, sizeof pe->idle);
    snprintf(pe->attempts, sizeof pe->attempts, "%d", pool->max_attempts);
    util_format_duration(pool->task_timeout_ms, pe->task_timeout, sizeof pe->task_timeout);
    const char *kv[] = {"JOBPOOL_IDLE_TIMEOUT", pe->idle, "JOBPOOL_MAX_ATTEMPTS", pe->attempts,
                        "JOBPOOL_RESULT_FILE", "/dev/termination-log",
                        pool->task_timeout_ms > 0 ? "JOBPOOL_TASK_TIMEOUT" : NULL,
                        pe->task_timeout, NULL};
    memcpy(pe->kv, kv, sizeof kv);
}

/* Workers get the broker's address and a reference to the Secret holding their login, so the
 * password never appears in a Job. */
static int worker_conn(struct kb *K)
{
    const struct cfg_rabbitmq *r = &K->cfg->rabbitmq;
    if (!r->worker_secret.name) return 0;
    if (!(K->amqp_url = util_url_strip_userinfo(r->amqp_url))) return JP_ENOMEM;
    K->conn = (struct kube_worker_conn){
        .amqp_url = K->amqp_url,
        .secret = r->worker_secret.name,
        .username_key = r->worker_secret.username_key,
        .password_key = r->worker_secret.password_key,
        .ca_secret = r->ca_secret.name,
        .ca_key = r->ca_secret.key,
        .cert_secret = r->cert_secret.name,
        .cert_key = r->cert_secret.cert_key,
        .key_key = r->cert_secret.key_key,
    };
    return 0;
}

/* Once per pool at start: a template that asks for more than Pod Security "restricted" is
 * passed through as written, and said so. */
static void warn_escalations(const struct cfg *cfg)
{
    char why[512];
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct cfg_pool *p = &cfg->pools[i];
        int n = p->job_template ? podsec_escalations(p->job_template, why, sizeof why) : 0;
        if (n)
            log_msg(LOG_WARN, p->name, 0, "jobTemplate asks for more than Pod Security "
                    "\"restricted\" (%d setting%s, kept as written): %s", n, n == 1 ? "" : "s",
                    why);
    }
}

int backend_kube_cache_namespaces(const struct cfg *cfg, const char *home, const char ***out,
                                  size_t *n)
{
    static const char *const all = "";
    const struct cfg_kubernetes *k = &cfg->kubernetes;
    *out = NULL;
    *n = 0;
    if (!k->jobpools) return 0;     /* the file's pools only: the controller's namespace */
    size_t cap = k->nwatch_namespaces + 1;
    const char **v = calloc(cap, sizeof *v);
    if (!v) return JP_ENOMEM;
    if (!k->nwatch_namespaces) {
        v[(*n)++] = all;            /* JobPools anywhere: one cluster-wide watch per kind */
    } else {
        v[(*n)++] = home;           /* the file's pools */
        for (size_t i = 0; i < k->nwatch_namespaces; i++)
            if (strcmp(k->watch_namespaces[i], home)) v[(*n)++] = k->watch_namespaces[i];
    }
    *out = v;
    return 0;
}

int backend_kube_new(const struct cfg *cfg, struct kube_client *kc, struct backend **out)
{
    *out = NULL;
    struct kb *K = calloc(1, sizeof *K);
    if (!K) return JP_ENOMEM;
    int rc = JP_ENOMEM;
    K->cfg = cfg;
    K->kc = kc;
    K->base = (struct backend){.name = "kube", .start_lag_ms = 1000, .observe = kb_observe,
                               .release = kb_release, .list = kb_list,
                               .list_orphans = kb_list_orphans,
                               .start = kb_start, .remove = kb_remove, .stats = kb_stats, .report = kb_report,
                               .retry_hint_ms = kb_retry_hint_ms,
                               .shutdown = kb_shutdown, .destroy = kb_destroy};
    size_t np = cfg->npools ? cfg->npools : 1;
    if (!(K->slots = calloc(pools_slots(cfg), sizeof *K->slots))) goto out;
    if (!(K->pool_names = calloc(np, sizeof *K->pool_names))) goto out;
    for (size_t i = 0; i < cfg->npools; i++) K->pool_names[i] = cfg->pools[i].name;
    if (cfg->npools > 1) qsort(K->pool_names, cfg->npools, sizeof *K->pool_names, cmp_str);
    if ((rc = worker_conn(K)) != 0) goto out;
    if (!cfg->rabbitmq.worker_secret.name)
        log_warn("rabbitmq.workerSecret is not set: Jobs get no broker connection from the "
                 "controller, so each pool's jobTemplate must provide JOBPOOL_AMQP_URL");
    warn_escalations(cfg);
    /* Only this instance's Jobs: another release in the namespace is not ours to count. */
    snprintf(K->selector, sizeof K->selector, KUBE_SELECTOR_MANAGED ",%s=%s",
             KUBE_LABEL_INSTANCE, cfg->kubernetes.instance);
    const char **ns = NULL;
    struct kube_cache_opts co = {.label_selector = K->selector};
    if ((rc = backend_kube_cache_namespaces(cfg, kube_namespace(kc), &ns, &co.nnamespaces)) != 0) goto out;
    co.namespaces = ns;
    rc = kube_cache_new(kc, &co, &K->cache);
    free(ns);
    if (rc) goto out;
    rc = 0;
out:
    if (rc) kb_destroy(&K->base);
    else *out = &K->base;
    return rc;
}
