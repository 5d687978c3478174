/* reconcile.c: observe, decide, act and back off, one pass per pool per tick. */
#define _GNU_SOURCE
#include "reconcile.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "pools.h"
#include "scale.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The management API publishes queue figures every collect_statistics_interval (5 s by default),
 * and was measured here lagging 3.6-9.7 s behind a publish: a sample may describe the queue as
 * it was seconds ago. Workers started in that window count as pending: the sample cannot have
 * seen them take a message. An AMQP passive declare is exact; then only the backend's own lag
 * between "running" and "consuming" matters (struct backend.start_lag_ms). */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000

struct pool_state {
    const struct pool *pool;    /* this pass's pool (pools_at); its settings in pool->cfg */
    char key[192];              /* "name" for the file's pools, "ns/name" for JobPools */
    struct reconcile_pool_status st;
    bool missing;               /* queue was 404 on the last read: warn once per transition */
    int failures;               /* consecutive failed passes */
    int64_t retry_at_ms;        /* monotonic: skip the pool until then */
    bool skipped;
    struct rmq_depth depth;
    struct backend_list workers; /* scale_decide reads their scale_workers in place */
    struct scale_queue *sq;     /* a regex pool's queues, as scale_decide counts them */
    size_t sq_cap;
    struct scale_decision d;
    int start;                  /* after the global cap */
    unsigned long wasted_seen;  /* backend's wasted counter already reported */
};

struct reconcile {
    const struct cfg *cfg;
    struct rmq_client *rmq;
    struct backend *be;
    struct metrics *m;
    enum metrics_error_source be_src; /* errors_total{source} of the backend's failures */
    struct reconcile_opts o;
    struct pools *pools;        /* o.pools, or own_pools */
    struct pools *own_pools;
    struct pool_state *p;       /* one per pool of the current pass, in pools_at order */
    size_t np;
    unsigned int seed;
    bool ready_reported;
    bool waiting_logged;
    struct backend_list orphans; /* workers of pools no longer configured, this pass */
    size_t orphans_logged;       /* active orphans last said in the log */
    int64_t act_delay_ms;        /* tests only (JOBPOOL_TEST_ACT_DELAY_MS): see reconcile_new */
    bool fenced;                 /* the gate said no mid-pass: act no more this pass */
    int64_t probe_every_ms;      /* between-tick queue probe period (reconcile_run) */
    int64_t recheck_at_ms;       /* monotonic: a pass is due then (0: none); see decide_pool */
};

static void state_free(struct pool_state *ps)
{
    backend_list_free(&ps->workers);
    free(ps->sq);
    scale_decision_free(&ps->d);
}

static void pool_key(const struct pool *p, char *out, size_t len)
{
    if (p->from_file) snprintf(out, len, "%s", p->cfg->name);
    else snprintf(out, len, "%s/%s", p->ns, p->name);
}

/* Line the per-pool state up with the current pool set: a pool keeps its state (backoff,
 * counters) by key across passes and changes of its settings; the state of a pool that left
 * the set is dropped. */
static int sync_pools(struct reconcile *r)
{
    size_t n = pools_count(r->pools);
    struct pool_state *np = calloc(n ? n : 1, sizeof *np);
    if (!np) return JP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct pool *p = pools_at(r->pools, i);
        char key[sizeof np->key];
        pool_key(p, key, sizeof key);
        size_t j;
        for (j = 0; j < r->np && (!r->p[j].pool || strcmp(r->p[j].key, key)); j++) {
        }
        if (j < r->np) {
            np[i] = r->p[j];
            memset(&r->p[j], 0, sizeof r->p[j]);  /* moved */
        } else {
            np[i].st.reason = "none";
            memcpy(np[i].key, key, sizeof key);
            /* So that its first tick already reads its vhost's queues together (best effort). */
            struct rmq_client *rmq = p->cfg->rmq ? p->cfg->rmq : r->rmq;
            if (p->cfg->queue && rmq) rmq_watch_queue(rmq, p->cfg->vhost, p->cfg->queue);
        }
        np[i].pool = p;
        np[i].st.name = cfg_pool_id(p->cfg);
    }
    for (size_t j = 0; j < r->np; j++) state_free(&r->p[j]);
    free(r->p);
    r->p = np;
    r->np = n;
    return 0;
}

int reconcile_new(const struct cfg *cfg, struct rmq_client *rmq, struct backend *be,
                  struct metrics *m, const struct reconcile_opts *o, struct reconcile **out)
{
    *out = NULL;
    struct reconcile *r = calloc(1, sizeof *r);
    if (!r) return JP_ENOMEM;
    if (o) r->o = *o;
    r->pools = r->o.pools;
    if (!r->pools && pools_new(cfg, NULL, &r->own_pools)) {
        free(r);
        return JP_ENOMEM;
    }
    if (!r->pools) r->pools = r->own_pools;
    r->cfg = cfg;
    r->rmq = rmq;
    r->be = be;
    r->m = m;
    r->be_src = strcmp(be->name, "kube") == 0 ? METRICS_SRC_KUBERNETES : METRICS_SRC_LOCAL;
    r->seed = (unsigned int)util_wall_ms();
    /* Tests only: a delay between deciding a pending-timeout delete and acting on it, so that
     * a test can start the pod in between. It only inserts a delay, never changes a decision. */
    const char *d = getenv("JOBPOOL_TEST_ACT_DELAY_MS");
    if (d && *d) {
        r->act_delay_ms = strtoll(d, NULL, 10);
        log_warn("JOBPOOL_TEST_ACT_DELAY_MS=%lld: pending-timeout deletes are delayed (tests "
                 "only)", (long long)r->act_delay_ms);
    }
    if (sync_pools(r)) {
        reconcile_free(r);
        return JP_ENOMEM;
    }
    *out = r;
    return 0;
}

void reconcile_free(struct reconcile *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->np; i++) state_free(&r->p[i]);
    backend_list_free(&r->orphans);
    free(r->p);
    pools_free(r->own_pools);
    free(r);
}

const struct reconcile_pool_status *reconcile_status(const struct reconcile *r, size_t i)
{
    return i < r->np ? &r->p[i].st : NULL;
}

/* Skip the pool for a while after a failure. hint_ms is how long the server asked to wait
 * (Retry-After), or -1: a throttled pool comes back when the server said, not after a doubling
 * that soon exceeds it; without a hint, 1 s doubling to 60 s. */
static void backoff(struct reconcile *r, struct pool_state *ps, int64_t hint_ms)
{
    ps->failures++;
    int64_t d = BACKOFF_MIN_MS;
    for (int i = 1; i < ps->failures && d < BACKOFF_MAX_MS; i++) d *= 2;
    if (d > BACKOFF_MAX_MS) d = BACKOFF_MAX_MS;
    if (hint_ms >= 0) {
        /* Never before the server's time; up to 20% after, so that pools do not all return
         * at once. */
        d = hint_ms < BACKOFF_MIN_MS ? BACKOFF_MIN_MS : hint_ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                                                 : hint_ms;
        d = d * (100 + rand_r(&r->seed) % 21) / 100;
    } else {
        /* +-20% jitter so that pools failing together do not retry together */
        d = d * (80 + rand_r(&r->seed) % 41) / 100;
    }
    ps->st.backoff_ms = d;
    ps->retry_at_ms = util_now_ms() + d;
}

static int64_t retry_hint(struct reconcile *r, enum metrics_error_source src)
{
    if (src != r->be_src || !r->be->retry_hint_ms) return -1;
    return r->be->retry_hint_ms(r->be);
}

/* Count an error of pool, back off, and log it at level. */
static void pool_error(struct reconcile *r, const struct cfg_pool *pool, struct pool_state *ps,
                       enum metrics_error_source src, int err, enum log_level level,
                       const char *what)
{
    ps->st.last_err = err;
    ps->st.errors++;
    metrics_count_error(r->m, cfg_pool_id(pool), src, err);
    backoff(r, ps, jp_err_transient(err) ? retry_hint(r, src) : -1);
    log_msg(level, cfg_pool_id(pool), err, "%s (retry in %lld ms)", what,
            (long long)(ps->retry_at_ms - util_now_ms()));
}

/* Decide one pool from what observe_pool read (ps->depth, ps->workers). Replaces ps->d only
 * on success: on failure (out of memory) ps->d is left as it was. */
static int cmp_qname(const void *key, const void *q)
{
    return strcmp(key, ((const struct rmq_qdepth *)q)->name);
}

/* A regex pool's queues for scale_decide, and each worker's queue as an index into them (the
 * sample's list, sorted by name): -1 for a queue that no longer matches. */
static int queues_of(struct pool_state *ps)
{
    size_t nq = ps->depth.queues ? ps->depth.nqueues : 0;
    if (nq > ps->sq_cap) {
        struct scale_queue *sq = realloc(ps->sq, nq * sizeof *sq);
        if (!sq) return JP_ENOMEM;
        ps->sq = sq;
        ps->sq_cap = nq;
    }
    for (size_t q = 0; q < nq; q++)
        ps->sq[q] = (struct scale_queue){.ready = ps->depth.queues[q].ready,
                                         /* as for one queue: see decide_pool */
                                         .unacked = 0,
                                         .consumers = ps->depth.queues[q].consumers};
    for (size_t k = 0; k < ps->workers.n; k++) {
        const struct rmq_qdepth *m = nq ? bsearch(ps->workers.v[k].queue, ps->depth.queues, nq,
                                                  sizeof *m, cmp_qname)
                                        : NULL;
        ps->workers.v[k].w.queue = m ? (int)(m - ps->depth.queues) : -1;
    }
    return 0;
}

/* Ready messages may be held back by workers that started after the sample (running ones
 * within their start lag; with a lagging source, finished ones too): ask for a pass the moment
 * the first of them is older than the lag, rather than up to pollInterval later
 * (reconcile_run). */
static void recheck_after_lag(struct reconcile *r, const struct scale_input *in, int64_t lag)
{
    for (size_t k = 0; k < in->nworkers; k++) {
        const struct scale_worker *w = scale_worker_at(in, k);
        bool finished = w->state == SCALE_SUCCEEDED || w->state == SCALE_FAILED;
        if (!(w->state == SCALE_RUNNING || (finished && !in->exact)) ||
            w->started_ms <= in->sample_ms)
            continue;
        int64_t at = w->started_ms + lag + 1;
        if (!r->recheck_at_ms || at < r->recheck_at_ms) r->recheck_at_ms = at;
    }
}

static int decide_pool(struct reconcile *r, size_t i, bool depth_ok)
{
    struct pool_state *ps = &r->p[i];
    const struct cfg_pool *pool = ps->pool->cfg;
    if (pool->queue_regex && queues_of(ps) != 0) return JP_ENOMEM;

    /* Exact: a passive declare of the pool's own client (a JobPool's broker may have no AMQP
     * URL, so the global depthSource does not say). */
    bool exact = depth_ok && ps->depth.exact && !pool->queue_regex;
    /* A management sample is as old as the broker's statistics can be (rabbitmq.managementLag:
     * collect_statistics_interval plus the smallest sample increment, docs/scaling.md). */
    int64_t lag = exact ? r->be->start_lag_ms : r->cfg->rabbitmq.management_lag_ms;
    if (ps->depth.age_ms > lag) lag = ps->depth.age_ms;
    /* Every time below is on the monotonic clock, as the backend's are. */
    int64_t now = util_now_ms();
    int64_t sample_age = now - ps->depth.sampled_ms;
    if (sample_age < 0) sample_age = 0;
    struct scale_input in = {
        .depth_ok = depth_ok,
        .ready = ps->depth.ready,
        /* Workers cancel their consumer as soon as a message arrives, so every consumer the
         * broker counts is a worker still waiting; the messages they hold are not theirs to
         * subtract. See docs/scaling.md. */
        .unacked = 0,
        .consumers = ps->depth.consumers,
        .sample_ms = now - sample_age - lag,
        /* The passive declare is read after the backend's observe of this pass. */
        .exact = exact && ps->depth.age_ms == 0,
        .workers = ps->workers.n ? &ps->workers.v[0].w : NULL,
        .nworkers = ps->workers.n,
        .worker_stride = sizeof *ps->workers.v,
        .now_ms = now,
        /* A regex pool counts each queue on its own: one queue's workers never cover another
         * queue's messages, and each worker is started on one queue. */
        .per_queue = pool->queue_regex != NULL,
        .queues = ps->sq,
        .nqueues = pool->queue_regex && depth_ok ? ps->depth.nqueues : 0,
    };
    struct scale_limits lim = {
        .max_active = pool->max_active,
        .min_active = pool->min_active,
        .spare_workers = pool->spare_workers,
        .max_start_per_tick = pool->max_start_per_tick,
        .messages_per_worker = pool->messages_per_worker,
        .successful_history = pool->successful_history,
        .failed_history = pool->failed_history,
        .pending_timeout_ms = pool->pending_timeout_ms,
        .room = -1,
    };
    if (depth_ok && ps->depth.ready > 0) recheck_after_lag(r, &in, lag);
    struct scale_decision d = {0};
    int rc = scale_decide(&in, &lim, &d);
    if (r->o.keda) {
        /* KEDA sees the management API's `messages` (ready + unacked) and no sample age. */
        struct scale_input kin = in;
        kin.unacked = ps->depth.unacked;
        struct scale_keda_params kp = {.strategy = r->o.keda_strategy, .target_value = 1,
                                       .max_replica_count = pool->max_active};
        int64_t kstart = 0;
        if (!rc && (rc = scale_decide_keda(&kin, &kp, &kstart)) == 0) {
            d.start = (int)kstart;
            d.reason = kstart ? "keda" : "keda_idle";
        }
    }
    if (rc) {
        scale_decision_free(&d);
        return rc;
    }
    scale_decision_free(&ps->d);
    ps->d = d;
    return 0;
}

/* Observe one pool: depth and workers. Fills ps->d (uncapped by the global cap). */
static int observe_pool(struct reconcile *r, size_t i)
{
    struct pool_state *ps = &r->p[i];
    const struct cfg_pool *pool = ps->pool->cfg;
    /* A JobPool with its own broker (connectionSecretRef) reads it there. */
    struct rmq_client *rmq = pool->rmq ? pool->rmq : r->rmq;
    int rc;

    if (pool->queue_regex)
        rc = rmq_regex_depth(rmq, pool->vhost, pool->queue_regex, &ps->depth);
    else
        rc = rmq_queue_depth(rmq, pool->vhost, pool->queue, &ps->depth);
    bool depth_ok = rc == 0;
    if (rc == JP_ENOTFOUND) {
        /* A missing queue has no backlog; say so once, not every tick. */
        if (!ps->missing)
            log_msg(LOG_WARN, cfg_pool_id(pool), rc, "queue %s in vhost %s not found: depth 0 (%s)",
                    pool->queue ? pool->queue : pool->queue_regex, pool->vhost,
                    rmq_last_error(rmq));
        ps->missing = true;
        memset(&ps->depth, 0, sizeof ps->depth);
        ps->depth.sampled_ms = util_now_ms();
        depth_ok = true;
    } else if (rc == 0 && ps->missing) {
        log_msg(LOG_INFO, cfg_pool_id(pool), 0, "queue found again");
        ps->missing = false;
    }
    int depth_err = depth_ok ? 0 : rc;
    /* rmq logs the failure when it starts and when it changes; repeating it every retry
     * would only add noise, so this line is debug. */
    if (depth_err)
        pool_error(r, pool, ps, METRICS_SRC_RABBITMQ, rc, LOG_DEBUG,
                   "queue depth read failed; holding");

    rc = r->be->list(r->be, pool, &ps->workers);
    if (rc == JP_ESTALE) {
        /* The backend's view of the workers is too old to act on (its cache said so, once):
         * hold, starting and deleting nothing, until it is current again. Not an error. */
        ps->skipped = true;
        ps->st.reason = "cache_stale";
        return rc;
    }
    if (rc) {
        pool_error(r, pool, ps, r->be_src, rc, LOG_WARN, "listing workers failed");
        ps->skipped = true; /* no decision without knowing the workers */
        return rc;
    }
    for (size_t k = 0; k < ps->workers.n; k++) {
        const struct backend_worker *w = &ps->workers.v[k];
        if (w->outcome_new)
            metrics_observe_task(r->m, cfg_pool_id(pool), w->task_wait_s, w->task_duration_s);
    }
    if ((rc = decide_pool(r, i, depth_ok)) != 0) {
        /* ps->d is still the previous tick's decision, its indexes into the previous list:
         * the pool must not act on it this tick. It keeps counting for the global cap. */
        ps->skipped = true;
        ps->st.last_err = rc;
        ps->st.errors++;
        backoff(r, ps, -1);
        log_msg(LOG_WARN, cfg_pool_id(pool), rc, "deciding failed; holding (retry in %lld ms)",
                (long long)(ps->retry_at_ms - util_now_ms()));
        return rc;
    }
    ps->start = ps->d.start;
    if (ps->pool->paused) {
        /* jobpool.dev/paused: no new workers; running ones finish, history is still kept. */
        ps->start = 0;
        ps->d.reason = "paused";
    }

    ps->st.depth_ok = depth_ok;
    if (depth_ok) {
        ps->st.ready = ps->depth.ready;
        ps->st.unacked = ps->depth.unacked;
        ps->st.consumers = ps->depth.consumers;
    }
    ps->st.pending = ps->d.pending;
    ps->st.running = ps->d.running;
    ps->st.succeeded = ps->d.succeeded;
    ps->st.failed = ps->d.failed;
    ps->st.reason = ps->d.reason;
    return depth_err;
}

static enum metrics_delete_reason del_reason(enum scale_delete_reason r)
{
    switch (r) {
    case SCALE_DEL_SUCCEEDED_HISTORY: return METRICS_DEL_SUCCEEDED_HISTORY;
    case SCALE_DEL_FAILED_HISTORY: return METRICS_DEL_FAILED_HISTORY;
    default: return METRICS_DEL_PENDING_TIMEOUT;
    }
}

/* Ask the gate again in the middle of a pass: once it says no (the lease lapsed), nothing more
 * is written this pass. Logged once per pass. */
static bool gate_closed(struct reconcile *r)
{
    if (r->fenced) return true;
    if (!r->o.gate || r->o.gate(r->o.gate_ud)) return false;
    r->fenced = true;
    log_warn("lease no longer valid: stopped acting in the middle of a pass");
    return true;
}

/* A regex pool's starts, queue by queue as scale_decide split them (re-split in proportion
 * when the global cap granted fewer). Stops at the first error. */
static int start_per_queue(struct reconcile *r, const struct cfg_pool *pool,
                           struct pool_state *ps, int *started)
{
    size_t nq = ps->depth.queues ? ps->depth.nqueues : 0;
    const int64_t *qs = ps->d.queue_start;
    int64_t *capped = NULL;
    *started = 0;
    if (!qs || !nq) return 0;
    if (ps->start < ps->d.start) {
        if (!(capped = calloc(nq, sizeof *capped))) return JP_ENOMEM;
        scale_share(qs, nq, ps->start, capped);
        qs = capped;
    }
    int rc = 0;
    for (size_t q = 0; q < nq && !rc; q++) {
        if (qs[q] <= 0) continue;
        int n = 0;
        log_msg(LOG_DEBUG, cfg_pool_id(pool), 0, "queue %s: ready=%lld consumers=%lld start=%lld",
                ps->depth.queues[q].name, (long long)ps->depth.queues[q].ready,
                (long long)ps->depth.queues[q].consumers, (long long)qs[q]);
        rc = r->be->start(r->be, pool, ps->depth.queues[q].name, (int)qs[q],
                          ps->depth.queues[q].ready, &n);
        *started += n;
    }
    free(capped);
    return rc;
}

/* Act on one pool's decision: deletes first (they free slots and history), then starts. */
static int act_pool(struct reconcile *r, size_t i)
{
    struct pool_state *ps = &r->p[i];
    const struct cfg_pool *pool = ps->pool->cfg;
    int first = 0;
    enum metrics_error_source src = r->be_src;

    /* One line per decision; only those that change something are logged at info. */
    log_msg(ps->start > 0 || ps->d.ndeletes ? LOG_INFO : LOG_DEBUG, cfg_pool_id(pool), 0,
            "ready=%lld pending=%d running=%d waiting=%d max=%d start=%d delete=%zu "
            "reason=%s%s",
            (long long)ps->depth.ready, ps->d.pending, ps->d.running, ps->d.waiting,
            pool->max_active, ps->start, ps->d.ndeletes,
            ps->start < ps->d.start ? "global_cap" : ps->d.reason,
            r->o.dry_run ? " dry_run=1" : "");
    if (ps->start < ps->d.start) ps->st.reason = "global_cap";
    if (r->o.dry_run) return 0;

    bool delayed = false;
    for (size_t k = 0; k < ps->d.ndeletes && !r->fenced; k++) {
        const struct backend_worker *w = &ps->workers.v[ps->d.deletes[k].idx];
        bool timeout = ps->d.deletes[k].reason == SCALE_DEL_PENDING_TIMEOUT;
        if (timeout && r->act_delay_ms > 0 && !delayed) {
            struct timespec ts = {r->act_delay_ms / 1000, (r->act_delay_ms % 1000) * 1000000};
            nanosleep(&ts, NULL);
            delayed = true;
        }
        int rc = r->be->remove(r->be, pool, w);
        if (rc == JP_ECANCELED) {
            /* Not deleted: it started or changed since the snapshot, or the lease lapsed. */
            if (gate_closed(r)) break;
            continue;
        }
        if (rc && rc != JP_ENOTFOUND) {
            metrics_count_error(r->m, cfg_pool_id(pool), src, rc);
            if (!first) first = rc;
            continue;
        }
        ps->st.deleted++;
        metrics_count_deleted(r->m, cfg_pool_id(pool), del_reason(ps->d.deletes[k].reason), 1);
        if (timeout)
            log_msg(LOG_WARN, cfg_pool_id(pool), 0, "worker %s pending longer than pendingTimeout: "
                    "deleted", w->id);
    }
    int started = 0;
    if (ps->start > 0 && !r->fenced) {
        int rc = pool->queue_regex ? start_per_queue(r, pool, ps, &started)
                                   : r->be->start(r->be, pool, NULL, ps->start, ps->depth.ready,
                                                  &started);
        if (rc == JP_ECANCELED && gate_closed(r)) rc = 0; /* fenced: logged once by gate_closed */
        if (rc) {
            if (!first) first = rc;
            pool_error(r, pool, ps, src, rc, LOG_WARN, "starting workers failed");
        }
    }
    ps->st.last_start = started;
    ps->st.started += (unsigned long)started;
    if (started) ps->st.last_start_wall_ms = util_wall_ms();
    metrics_count_started(r->m, cfg_pool_id(pool), started);
    return first;
}

/* Age of the pool's oldest worker that is not running yet, in seconds; 0 when none. now_ms is
 * on the monotonic clock, as the backends' worker times are. */
static double oldest_pending_s(const struct pool_state *ps, int64_t now_ms)
{
    int64_t oldest = 0;
    for (size_t k = 0; k < ps->workers.n; k++) {
        const struct scale_worker *w = &ps->workers.v[k].w;
        if (w->state == SCALE_PENDING && w->created_ms && (!oldest || w->created_ms < oldest))
            oldest = w->created_ms;
    }
    return oldest && now_ms > oldest ? (double)(now_ms - oldest) / 1000.0 : 0;
}

static void publish(struct reconcile *r, size_t i)
{
    struct pool_state *ps = &r->p[i];
    const struct cfg_pool *pool = ps->pool->cfg;
    int64_t now = util_now_ms();
    struct metrics_pool_state s = {
        .depth_ok = ps->st.depth_ok,
        .messages_ready = ps->st.ready,
        .messages_unacked = ps->st.unacked,
        .depth_age_seconds = (double)(now - ps->depth.sampled_ms +
                                      ps->depth.age_ms) / 1000.0,
        .workers_ok = true,
        .workers = {ps->d.pending, ps->d.running, ps->d.succeeded, ps->d.failed},
        .oldest_pending_seconds = oldest_pending_s(ps, util_now_ms()), /* workers' clock */
        .max_active = pool->max_active,
        .pending_timeout_seconds = (double)pool->pending_timeout_ms / 1000.0,
        .consumers = ps->st.consumers,
        .waiting = ps->d.waiting,
        .active = ps->d.active,
        .start = ps->start,
        .deletes = (int64_t)ps->d.ndeletes,
        .reason = ps->st.reason,
        .last_err = ps->st.last_err,
        .decided_wall_ms = util_wall_ms(), /* shown to people: unix time, not the loop clock */
    };
    metrics_pool_publish(r->m, cfg_pool_id(pool), &s);
    struct backend_stats bs;
    r->be->stats(r->be, pool, &bs);
    if (bs.wasted > ps->wasted_seen) {
        ps->st.wasted_new = bs.wasted - ps->wasted_seen;
        metrics_count_wasted(r->m, cfg_pool_id(pool), (int64_t)ps->st.wasted_new);
        ps->wasted_seen = bs.wasted;
    }
}

/* Workers of pools no longer in the config (removed or renamed). They are not forgotten:
 * the active ones hold slots of maxActiveTotal until they finish, and are never deleted; the
 * finished ones are deleted (reason "orphaned"), having no pool whose history they are.
 * Returns the number of active orphans (0 when the backend has none or the list failed). */
static int64_t observe_orphans(struct reconcile *r)
{
    r->orphans.n = 0;
    if (!r->be->list_orphans || r->be->list_orphans(r->be, &r->orphans) != 0) return 0;
    int64_t active = 0;
    for (size_t i = 0; i < r->orphans.n; i++)
        if (r->orphans.v[i].w.state == SCALE_PENDING || r->orphans.v[i].w.state == SCALE_RUNNING)
            active++;
    if ((size_t)active != r->orphans_logged)
        log_msg(active ? LOG_INFO : LOG_DEBUG, NULL, 0, "%lld active worker%s of pools no longer "
                "configured: counted against maxActiveTotal until they finish",
                (long long)active, active == 1 ? "" : "s");
    r->orphans_logged = (size_t)active;
    return active;
}

static int trim_orphans(struct reconcile *r)
{
    int first = 0;
    for (size_t i = 0; i < r->orphans.n && !r->o.dry_run && !r->fenced; i++) {
        const struct backend_worker *w = &r->orphans.v[i];
        if (w->w.state != SCALE_SUCCEEDED && w->w.state != SCALE_FAILED) continue;
        int rc = r->be->remove(r->be, NULL, w);
        if (rc == JP_ECANCELED) {
            if (gate_closed(r)) break;
            continue;
        }
        if (rc && rc != JP_ENOTFOUND) {
            metrics_count_error(r->m, w->pool, r->be_src, rc);
            if (!first) first = rc;
            continue;
        }
        metrics_count_deleted(r->m, w->pool, METRICS_DEL_ORPHANED, 1);
        log_msg(LOG_INFO, w->pool, 0, "finished worker %s of a pool no longer configured: "
                "deleted", w->id);
    }
    return first;
}

static int pass(struct reconcile *r);

/* One pass, and then the workers listed in it are let go: the lists may be views into the
 * backend's table, which the backend may give back (release) until its next observe. */
int reconcile_pass(struct reconcile *r)
{
    int rc = pass(r);
    for (size_t i = 0; i < r->np; i++) backend_list_free(&r->p[i].workers);
    backend_list_free(&r->orphans);
    if (r->be->release) r->be->release(r->be);
    return rc;
}

static int pass(struct reconcile *r)
{
    const struct cfg *cfg = r->cfg;
    int first = 0;
    int64_t now = util_now_ms();

    rmq_tick_begin(r->rmq);
    r->recheck_at_ms = 0;
    int rc = r->be->observe(r->be);
    if (r->be->report) r->be->report(r->be, r->m); /* before the first list too */
    if (rc == JP_ESTALE) {
        /* The backend has not listed its workers yet (the Job cache's first list): nothing
         * can be decided, and nothing is wrong with any pool. */
        if (!r->waiting_logged) log_info("waiting for the first list of workers");
        r->waiting_logged = true;
        metrics_tick(r->m);
        return rc;
    }
    if (rc) first = rc;
    r->fenced = false;
    /* The pool set may change between passes (JobPools), never within one; the orphans are
     * the Jobs of pools not in it. */
    /* A failed read of the JobPools keeps the set as it was (logged there); it is no failure
     * of the pools that are served. */
    if (r->o.refresh) r->o.refresh(r->o.hook_ud);
    if ((rc = sync_pools(r)) != 0) return rc;

    int64_t total_active = observe_orphans(r);
    for (size_t i = 0; i < r->np; i++) {
        struct pool_state *ps = &r->p[i];
        ps->st.wasted_new = 0;
        ps->skipped = ps->retry_at_ms && now < ps->retry_at_ms;
        if (ps->skipped) {
            /* Backing off: the pool keeps what it has; its workers still count for the cap. */
            total_active += ps->d.active;
            if (!first) first = ps->st.last_err ? ps->st.last_err : JP_ESTALE;
            continue;
        }
        int64_t t0 = util_now_ms();
        rc = observe_pool(r, i);
        if (rc && !first) first = rc;
        if (ps->skipped) {
            total_active += ps->d.active; /* as last seen: they still count for the cap */
            continue;
        }
        metrics_observe_reconcile(r->m, cfg_pool_id(ps->pool->cfg), (double)(util_now_ms() - t0) / 1e3);
        total_active += ps->d.active;
        metrics_tick(r->m); /* alive: a long pass (a slow broker, many pools) is not a stall */
    }

    /* The global cap: pools share the free room in proportion to what they ask for. */
    if (cfg->max_active_total > 0 && r->np) {
        int64_t *want = calloc(r->np, sizeof *want);
        int64_t *grant = calloc(r->np, sizeof *grant);
        if (want && grant) {
            for (size_t i = 0; i < r->np; i++)
                want[i] = r->p[i].skipped ? 0 : r->p[i].start;
            int64_t room = cfg->max_active_total - total_active;
            scale_share(want, r->np, room > 0 ? room : 0, grant);
            for (size_t i = 0; i < r->np; i++)
                if (!r->p[i].skipped) r->p[i].start = (int)grant[i];
        } else {
            for (size_t i = 0; i < r->np; i++) r->p[i].start = 0;
            if (!first) first = JP_ENOMEM;
        }
        free(want);
        free(grant);
    }

    for (size_t i = 0; i < r->np; i++) {
        struct pool_state *ps = &r->p[i];
        if (ps->skipped) {
            if (r->o.report && !r->fenced) r->o.report(r->o.hook_ud, ps->pool, &ps->st);
            continue;
        }
        if (!r->o.dry_run && gate_closed(r)) break;
        rc = act_pool(r, i);
        if (rc && !first) first = rc;
        if (!rc && ps->st.depth_ok) {
            ps->failures = 0;
            ps->retry_at_ms = 0;
            ps->st.last_err = 0;
        }
        publish(r, i);
        if (r->o.report && !r->fenced && !r->o.dry_run) r->o.report(r->o.hook_ud, ps->pool, &ps->st);
        metrics_tick(r->m);
    }
    rc = trim_orphans(r);
    if (rc && !first) first = rc;
    metrics_tick(r->m);
    if (!first && !r->ready_reported) {
        metrics_set_ready(r->m, true);
        r->ready_reported = true;
    }
    return first;
}

/* Sleep until deadline (monotonic ms), returning early when *stop or *wake is set. Signals
 * interrupt nanosleep (handlers are installed without SA_RESTART). */
static void sleep_until(int64_t deadline, volatile sig_atomic_t *stop, volatile sig_atomic_t *wake)
{
    for (;;) {
        if (*stop || (wake && *wake)) return;
        int64_t left = deadline - util_now_ms();
        if (left <= 0) return;
        if (left > 100) left = 100; /* re-check the flags at least every 100 ms */
        struct timespec ts = {left / 1000, (left % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* With depthSource amqp the queues are probed between ticks (rmq_probe: one pipelined run of
 * passive declares), and a message that arrived since the last tick starts the next pass at
 * once instead of up to pollInterval later. The probe runs every PROBE_MIN_MS, or every
 * PROBE_COST_SHARE times its own last cost when that is longer (many pools), so it takes at
 * most a tenth of the loop's time; a failed probe waits for the next tick, which reads and
 * logs the failure. Returns true when the queues grew. */
#define PROBE_MIN_MS 100
#define PROBE_COST_SHARE 10
static bool wait_probing(struct reconcile *r, int64_t deadline, volatile sig_atomic_t *stop,
                         volatile sig_atomic_t *wake)
{
    int64_t at = util_now_ms() + r->probe_every_ms;
    for (;;) {
        sleep_until(at < deadline ? at : deadline, stop, wake);
        int64_t t0 = util_now_ms();
        if (*stop || (wake && *wake) || t0 >= deadline) return false;
        bool grew = false;
        int rc = rmq_probe(r->rmq, &grew);
        int64_t cost = util_now_ms() - t0;
        r->probe_every_ms = cost * PROBE_COST_SHARE > PROBE_MIN_MS ? cost * PROBE_COST_SHARE
                                                                   : PROBE_MIN_MS;
        if (rc) {
            log_debug("queue probe failed (%s): waiting for the next tick", jp_errname(rc));
            sleep_until(deadline, stop, wake);
            return false;
        }
        if (grew) {
            log_debug("a queue grew since the last tick: reconciling now");
            return true;
        }
        at = util_now_ms() + r->probe_every_ms;
    }
}

int reconcile_run(struct reconcile *r, volatile sig_atomic_t *stop, volatile sig_atomic_t *wake)
{
    /* A worker exiting frees a slot; a prompt extra pass refills it, but no sooner after the
     * last pass started than twice what that pass took, within [5 ms, 20 ms]: a storm of exits
     * keeps the loop at most half busy and never makes more than 200 passes a second, while a
     * cheap pass (a local pool: one passive declare) refills a slot within a few ms. */
    int64_t min_gap_ms = 20;
    bool probe = r->rmq && r->cfg->rabbitmq.depth_source == CFG_DEPTH_AMQP;
    int64_t next = util_now_ms();
    r->probe_every_ms = PROBE_MIN_MS;
    while (!*stop) {
        int64_t started = util_now_ms();
        if (wake) *wake = 0;
        bool act = !r->o.gate || r->o.gate(r->o.gate_ud);
        metrics_set_leader(r->m, act);
        if (act) {
            reconcile_pass(r);
            int64_t took = util_now_ms() - started;
            min_gap_ms = took * 2 < 5 ? 5 : took * 2 > 20 ? 20 : took * 2;
        } else {
            metrics_tick(r->m);
            metrics_set_ready(r->m, true);
        }
        next = started + r->cfg->poll_interval_ms;
        /* A recheck (decide_pool) comes early, but never sooner than 200 ms after this pass
         * began: many pools with workers of different ages cannot make the loop spin. */
        if (r->recheck_at_ms && r->recheck_at_ms < next)
            next = r->recheck_at_ms > started + 200 ? r->recheck_at_ms : started + 200;
        /* A follower does not act, so it has nothing to wake early for. */
        bool grew = act && probe ? wait_probing(r, next, stop, wake)
                                 : (sleep_until(next, stop, wake), false);
        if ((grew || (wake && *wake)) && !*stop) sleep_until(started + min_gap_ms, stop, NULL);
    }
    return 0;
}
