/* scale.c: the pure scaling decision (start how many, delete which) and the global-cap share. */
#include "scale.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "util.h"

#if !defined(__SIZEOF_INT128__)
#error "scale.c needs unsigned __int128 (gcc or clang on a 64-bit target) for exact shares"
#endif
typedef unsigned __int128 u128;

/* ---- saturating helpers: every count here is >= 0 ---- */

static int64_t nonneg(int64_t v) { return v < 0 ? 0 : v; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int64_t sat_add(int64_t a, int64_t b) /* a, b >= 0 */
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int clamp_int(int64_t v) { return v > INT_MAX ? INT_MAX : (int)v; }

/* now - then without overflow, negative ages count as 0. */
static int64_t age_ms(int64_t now, int64_t then)
{
    if (then >= now)
        return 0;
    if (then < 0 && now > INT64_MAX + then)
        return INT64_MAX;
    return now - then;
}

static int limits_ok(const struct scale_limits *l)
{
    return l->max_active >= 1 && l->min_active >= 0 && l->min_active <= l->max_active &&
           l->spare_workers >= 0 && l->max_start_per_tick >= 1 && l->messages_per_worker >= 1 &&
           l->successful_history >= 0 && l->failed_history >= 0 && l->pending_timeout_ms >= 0;
}

/* ---- ordering of finished workers: oldest finished first, fully deterministic ---- */

static int older(const struct scale_input *in, size_t a, size_t b)
{
    const struct scale_worker *wa = scale_worker_at(in, a), *wb = scale_worker_at(in, b);
    if (wa->finished_ms != wb->finished_ms)
        return wa->finished_ms < wb->finished_ms;
    if (wa->created_ms != wb->created_ms)
        return wa->created_ms < wb->created_ms;
    return a < b;
}

static void sift_down(const struct scale_input *in, size_t *ix, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && older(in, ix[child], ix[child + 1]))
            child++;
        if (!older(in, ix[root], ix[child]))
            return;
        size_t t = ix[root];
        ix[root] = ix[child];
        ix[child] = t;
        root = child;
    }
}

/* Heapsort (no allocation, O(n log n)); keys are unique thanks to the index tie-break. */
static void sort_oldest_first(const struct scale_input *in, size_t *ix, size_t n)
{
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift_down(in, ix, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        size_t t = ix[0];
        ix[0] = ix[end];
        ix[end] = t;
        sift_down(in, ix, 0, end);
    }
}

/* Append the oldest (count - keep) workers of the given state to d->deletes. A finished worker
 * that started after the depth sample is kept for now: it is the only record that it took one
 * of the messages the sample still shows (the "unseen" term), and deleting it early would make
 * the next ticks start a worker for a message that is gone. It goes once a newer sample has
 * seen it, so history overshoots its limit by at most the workers of one stats interval. */
static void delete_history(const struct scale_input *in, enum scale_state state, size_t count,
                           int keep, enum scale_delete_reason why, size_t *scratch,
                           struct scale_decision *d)
{
    if (count <= (size_t)keep)
        return;
    size_t n = 0;
    for (size_t i = 0; i < in->nworkers; i++)
        if (scale_worker_at(in, i)->state == state &&
            !(in->depth_ok && scale_worker_at(in, i)->started_ms > in->sample_ms))
            scratch[n++] = i;
    size_t ndel = count - (size_t)keep;
    if (ndel > n)
        ndel = n;
    sort_oldest_first(in, scratch, n);
    for (size_t i = 0; i < ndel; i++) {
        d->deletes[d->ndeletes].idx = scratch[i];
        d->deletes[d->ndeletes].reason = why;
        d->ndeletes++;
    }
}

/* A per-queue pool's want (see scale.h): need[q] per queue, *want in all, *asked the backlog
 * plus spare (to tell "covered" from "idle"), *waiting summed over the queues. */
static int per_queue_want(const struct scale_input *in, const struct scale_limits *lim,
                          int64_t *need, int64_t *want, int64_t *asked, int64_t *waiting)
{
    size_t nq = in->nqueues;
    int64_t *cover = calloc(nq + 1, sizeof *cover), *run = calloc(nq + 1, sizeof *run);
    if (!cover || !run) {
        free(cover);
        free(run);
        return JP_ENOMEM;
    }
    /* Index nq collects the workers of no queue. */
    for (size_t i = 0; i < in->nworkers; i++) {
        const struct scale_worker *w = scale_worker_at(in, i);
        size_t q = w->queue >= 0 && (size_t)w->queue < nq ? (size_t)w->queue : nq;
        bool after = in->depth_ok && w->started_ms > in->sample_ms;
        if (w->state == SCALE_PENDING || (w->state == SCALE_RUNNING && after) ||
            ((w->state == SCALE_SUCCEEDED || w->state == SCALE_FAILED) && after && !in->exact))
            cover[q]++;
        else if (w->state == SCALE_RUNNING)
            run[q]++;
    }
    int64_t mpw = lim->messages_per_worker, sum_need = 0, backlogs = 0, excess = cover[nq];
    *waiting = 0;
    for (size_t q = 0; q < nq; q++) {
        const struct scale_queue *sq = &in->queues[q];
        int64_t ready = nonneg(sq->ready);
        int64_t backlog = ready / mpw + (ready % mpw != 0);
        int64_t wq = min64(nonneg(nonneg(sq->consumers) - nonneg(sq->unacked)), run[q]);
        int64_t covered = cover[q] + wq;
        *waiting += wq;
        need[q] = nonneg(backlog - covered);
        excess = sat_add(excess, nonneg(covered - backlog));
        sum_need = sat_add(sum_need, need[q]);
        backlogs = sat_add(backlogs, backlog);
    }
    *want = sat_add(sum_need, nonneg((int64_t)lim->spare_workers - excess));
    *asked = sat_add(backlogs, lim->spare_workers);
    free(cover);
    free(run);
    return 0;
}

/* Split start over the queues: first what they need, in proportion, then the rest evenly. */
static int split_queues(const struct scale_input *in, const int64_t *need, int64_t start,
                        struct scale_decision *out)
{
    size_t nq = in->nqueues;
    if (!(out->queue_start = calloc(nq ? nq : 1, sizeof *out->queue_start)))
        return JP_ENOMEM;
    if (!nq || start <= 0)
        return 0;
    int64_t sum_need = 0;
    for (size_t q = 0; q < nq; q++)
        sum_need = sat_add(sum_need, need[q]);
    int64_t first = min64(start, sum_need), rest = start - first;
    scale_share(need, nq, first, out->queue_start);
    for (size_t q = 0; q < nq; q++)
        out->queue_start[q] += rest / (int64_t)nq + ((int64_t)q < rest % (int64_t)nq);
    return 0;
}

int scale_decide(const struct scale_input *in, const struct scale_limits *lim,
                 struct scale_decision *out)
{
    int rc = JP_EINVAL;
    size_t *scratch = NULL;

    if (!out)
        return JP_EINVAL;
    memset(out, 0, sizeof *out);
    out->reason = "idle";
    int64_t *need = NULL;
    if (!in || !lim || !limits_ok(lim) || (in->nworkers > 0 && !in->workers) ||
        (in->worker_stride && in->worker_stride < sizeof *in->workers) ||
        (in->per_queue && in->nqueues > 0 && !in->queues))
        goto out;

    /* Classify. Counts are bounded by nworkers, which is far below INT64_MAX. */
    int64_t pending = 0, running = 0, succeeded = 0, failed = 0, timed_out = 0, unseen = 0;
    for (size_t i = 0; i < in->nworkers; i++) {
        const struct scale_worker *w = scale_worker_at(in, i);
        switch (w->state) {
        case SCALE_PENDING:
            pending++;
            if (in->depth_ok && lim->pending_timeout_ms > 0 && !w->ran &&
                age_ms(in->now_ms, w->created_ms) > lim->pending_timeout_ms)
                timed_out++;
            break;
        case SCALE_RUNNING:
            /* Started after the sample: the sample cannot show it holding a message. */
            if (in->depth_ok && w->started_ms > in->sample_ms)
                pending++;
            else
                running++;
            break;
        case SCALE_SUCCEEDED:
        case SCALE_FAILED:
            if (w->state == SCALE_SUCCEEDED)
                succeeded++;
            else
                failed++;
            /* Started after the sample and already gone: it took one of the messages the
             * sample still shows as ready (FIFO), or found the queue empty, which means those
             * messages were all taken. Either way it covers one of them. */
            if (in->depth_ok && !in->exact && w->started_ms > in->sample_ms)
                unseen++;
            break;
        default:
            goto out;
        }
    }
    int64_t active = pending + running;

    /* Deletes. */
    size_t ndel_max = (size_t)timed_out;
    if (succeeded > lim->successful_history)
        ndel_max += (size_t)(succeeded - lim->successful_history);
    if (failed > lim->failed_history)
        ndel_max += (size_t)(failed - lim->failed_history);
    if (ndel_max > 0) {
        rc = JP_ENOMEM;
        out->deletes = calloc(ndel_max, sizeof *out->deletes);
        size_t nscratch = (size_t)(succeeded > failed ? succeeded : failed);
        scratch = calloc(nscratch ? nscratch : 1, sizeof *scratch);
        if (!out->deletes || !scratch)
            goto out;
        delete_history(in, SCALE_SUCCEEDED, (size_t)succeeded, lim->successful_history,
                       SCALE_DEL_SUCCEEDED_HISTORY, scratch, out);
        delete_history(in, SCALE_FAILED, (size_t)failed, lim->failed_history,
                       SCALE_DEL_FAILED_HISTORY, scratch, out);
        for (size_t i = 0; timed_out > 0 && i < in->nworkers; i++) {
            const struct scale_worker *w = scale_worker_at(in, i);
            if (w->state == SCALE_PENDING && !w->ran &&
                age_ms(in->now_ms, w->created_ms) > lim->pending_timeout_ms) {
                out->deletes[out->ndeletes].idx = i;
                out->deletes[out->ndeletes].reason = SCALE_DEL_PENDING_TIMEOUT;
                out->ndeletes++;
            }
        }
    }

    /* Start. */
    int64_t headroom = nonneg((int64_t)lim->max_active - active);
    int64_t room = lim->room >= 0 ? (int64_t)lim->room : INT64_MAX;
    int64_t start = 0, waiting = 0;
    if (in->depth_ok) {
        int64_t ready = nonneg(in->ready);
        int64_t mpw = lim->messages_per_worker;
        int64_t backlog = ready / mpw + (ready % mpw != 0);
        waiting = min64(nonneg(nonneg(in->consumers) - nonneg(in->unacked)), running);
        int64_t asked = sat_add(backlog, lim->spare_workers);
        int64_t want = nonneg(asked - (pending + waiting + unseen));
        if (in->per_queue) {
            rc = JP_ENOMEM;
            if (!(need = calloc(in->nqueues ? in->nqueues : 1, sizeof *need)) ||
                per_queue_want(in, lim, need, &want, &asked, &waiting) != 0)
                goto out;
        }
        int64_t limit = min64(min64(headroom, (int64_t)lim->max_start_per_tick), room);
        out->want = want;
        if (want <= limit) {
            start = want;
            out->reason = want > 0 ? "scale_up" : asked > 0 ? "covered" : "idle";
        } else {
            start = limit;
            out->reason = limit == headroom ? "at_max" : limit == room ? "global_cap"
                                                                        : "max_per_tick";
        }
    } else {
        out->reason = "hold_no_data";
    }
    /* Warm pool: top up to min_active, still within max_active and room. A per-queue pool
     * with no queue has nothing to serve, so nothing to keep warm. */
    if (in->per_queue && in->nqueues == 0) {
        start = 0;
        out->reason = in->depth_ok ? "idle" : "hold_no_data";
    } else if (active + start < lim->min_active) {
        int64_t extra = min64(min64(lim->min_active - active - start, headroom - start),
                              room - start);
        if (extra > 0) {
            if (start == 0 && in->depth_ok)
                out->reason = "min_active";
            start += extra;
        }
    }

    out->start = clamp_int(start);
    if (in->per_queue && (rc = split_queues(in, need, out->start, out)) != 0)
        goto out;
    out->active = clamp_int(active);
    out->pending = clamp_int(pending);
    out->running = clamp_int(running);
    out->waiting = clamp_int(waiting);
    out->unseen = clamp_int(unseen);
    out->succeeded = clamp_int(succeeded);
    out->failed = clamp_int(failed);
    rc = 0;
out:
    free(scratch);
    free(need);
    if (rc != 0) {
        scale_decision_free(out);
        if (out)
            out->reason = "idle";
    }
    return rc;
}

void scale_decision_free(struct scale_decision *d)
{
    if (!d)
        return;
    free(d->deletes);
    free(d->queue_start);
    memset(d, 0, sizeof *d);
}

/* ---- the global cap ---- */

/* Index of the largest key[i] among pools with eligible[i], ties to the larger want, then the
 * lower index; n when none. */
static size_t pick_largest(const u128 *key, const int64_t *w, const unsigned char *eligible,
                           size_t n)
{
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
        if (!eligible[i])
            continue;
        if (best == n || key[i] > key[best] || (key[i] == key[best] && w[i] > w[best]))
            best = i;
    }
    return best;
}

void scale_share(const int64_t *want, size_t n, int64_t room, int64_t *grant)
{
    int64_t *w = NULL;
    u128 *key = NULL;
    unsigned char *elig = NULL;

    if (!grant)
        return;
    for (size_t i = 0; i < n; i++)
        grant[i] = 0;
    if (!want || n == 0 || room <= 0)
        return;
    w = calloc(n, sizeof *w);
    key = calloc(n, sizeof *key);
    elig = calloc(n, 1);
    if (!w || !key || !elig) {
        /* No memory: fall back to a safe, starving-free answer: 1 each in index order. */
        for (size_t i = 0; i < n && room > 0; i++)
            if (want[i] > 0) {
                grant[i] = 1;
                room--;
            }
        goto out;
    }

    u128 total = 0;
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) {
        w[i] = nonneg(want[i]); /* exact: w * room < 2^126 and total < n * 2^63 */
        total += (u128)w[i];
        if (w[i] > 0)
            k++;
    }
    if (total <= (u128)room) {
        for (size_t i = 0; i < n; i++)
            grant[i] = w[i];
        goto out;
    }

    if (room < k) {
        /* Not even one each: the largest backlogs get the 1s. */
        for (size_t i = 0; i < n; i++) {
            key[i] = (u128)w[i];
            elig[i] = w[i] > 0;
        }
        for (int64_t g = 0; g < room; g++) {
            size_t b = pick_largest(key, w, elig, n);
            grant[b] = 1;
            elig[b] = 0;
        }
        goto out;
    }

    /* Largest remainder: floor(w * room / total) each, then one more to the largest remainders.
     * room < total, so no share exceeds its want. */
    u128 given = 0;
    for (size_t i = 0; i < n; i++) {
        u128 prod = (u128)w[i] * (u128)room;
        grant[i] = (int64_t)(prod / total);
        key[i] = prod % total;
        elig[i] = key[i] > 0;
        given += (u128)grant[i];
    }
    for (u128 left = (u128)room - given; left > 0; left--) {
        size_t b = pick_largest(key, w, elig, n);
        if (b == n)
            break; /* cannot happen: the remainders add up to exactly `left` */
        grant[b]++;
        elig[b] = 0;
    }
    /* No pool with a backlog starves: a pool left at 0 takes one from the largest grant (among
     * equal grants, the smallest want, then the higher index), which keeps larger wants at
     * larger-or-equal grants. room >= k guarantees such a grant >= 2 exists. */
    for (size_t z = 0; z < n; z++) {
        if (w[z] == 0 || grant[z] > 0)
            continue;
        size_t big = n;
        for (size_t i = 0; i < n; i++)
            if (grant[i] >= 2 && (big == n || grant[i] > grant[big] ||
                                  (grant[i] == grant[big] && w[i] <= w[big])))
                big = i;
        if (big == n)
            break;
        grant[big]--;
        grant[z] = 1;
    }
out:
    free(w);
    free(key);
    free(elig);
}

/* ---- KEDA ScaledJob baseline (benchmarks and simulation only) ---- */

/* KEDA's ceilToInt64 for x >= 0, saturating: (double)INT64_MAX rounds up to 2^63, which would
 * not convert back. */
static int64_t ceil_to_i64(double x)
{
    if (!(x > 0))
        return 0;
    if (x >= 9.2e18)
        return INT64_MAX;
    return (int64_t)util_ceil(x);
}

int scale_decide_keda(const struct scale_input *in, const struct scale_keda_params *p,
                      int64_t *out_start)
{
    if (out_start)
        *out_start = 0;
    if (!in || !p || !out_start || (in->nworkers > 0 && !in->workers) ||
        (in->worker_stride && in->worker_stride < sizeof *in->workers) ||
        !(p->target_value > 0) || !isfinite(p->target_value) || p->max_replica_count < 1 ||
        p->min_replica_count < 0)
        return JP_EINVAL;

    int64_t running = 0, pending = 0; /* KEDA: running = unfinished, pending = no pod up yet */
    for (size_t i = 0; i < in->nworkers; i++) {
        switch (scale_worker_at(in, i)->state) {
        case SCALE_PENDING:
            pending++;
            running++;
            break;
        case SCALE_RUNNING:
            running++;
            break;
        case SCALE_SUCCEEDED:
        case SCALE_FAILED:
            break;
        default:
            return JP_EINVAL;
        }
    }

    /* The scaler's metric and activity; a failed read yields no metric at all. */
    double length = 0;
    bool active = false;
    if (in->depth_ok) {
        length = (double)sat_add(nonneg(in->ready), nonneg(in->unacked));
        active = length > p->activation_value;
    }
    double maxrep = (double)p->max_replica_count;
    double mv = length / p->target_value;
    int64_t max_scale = ceil_to_i64(mv < maxrep ? mv : maxrep);
    int64_t scale_to = ceil_to_i64(length);
    if (p->min_replica_count > 0)
        active = true;

    int64_t eff;
    int64_t minrep = p->min_replica_count, mr = p->max_replica_count;
    if (running < minrep) {
        scale_to = eff = minrep - running;
    } else {
        int64_t r = running - minrep;
        switch (p->strategy) {
        case SCALE_KEDA_ACCURATE:
            eff = (sat_add(max_scale, r) - pending > mr) ? mr - r : max_scale - pending;
            break;
        case SCALE_KEDA_EAGER:
            eff = min64(mr - r - pending, max_scale);
            scale_to = mr;
            break;
        case SCALE_KEDA_DEFAULT:
        default:
            eff = max_scale - r;
            break;
        }
    }
    if (active && eff > 0)
        *out_start = min64(scale_to, eff);
    return 0;
}
