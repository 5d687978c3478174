/* test_scale_sim.c: a deterministic simulation of a queue and its workers driving scale_decide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "scale.h"

/* Everything runs on simulated time (ms); nothing reads a clock. A tick is one controller pass.
 * Between passes the world advances in small steps: messages arrive, pods start, a running
 * worker that is idle takes the next ready message at once (the broker pushes it, prefetch 1),
 * runs it, acks and exits; a running worker that gets nothing within idle_timeout exits 0:
 * that is a wasted worker. The broker's management figures are snapshots taken every
 * stats_ms and seen by the controller only stats_delay_ms later, so every decision works on a
 * sample 2-7 s old (the management API lags by about 5 s). */

struct sim_cfg {
    const char *name;
    int ticks;                  /* controller passes */
    int arrivals_until;         /* no arrivals after this tick: the queue must drain */
    int64_t poll_ms, step_ms, stats_ms, stats_delay_ms;
    double p_burst;             /* per tick */
    int burst_min, burst_max;
    double p_trickle;           /* per tick: one message */
    double p_slow_start;        /* share of pods that pull an image */
    int64_t fast_min, fast_max, slow_min, slow_max; /* start latency ranges */
    int64_t task_min, task_max, idle_timeout_ms;
    double p_task_fail;         /* the task exits non-zero: the message is requeued */
    double p_read_fail;         /* the depth read fails this tick */
    uint64_t seed;
};

struct policy {
    const char *name;
    bool keda;
    struct scale_limits lim;
    struct scale_keda_params kp;
};

struct sim_result {
    int64_t published, acked, taken, started, idle_exits, task_failures, timeouts;
    int64_t peak_active, max_wait_ms, read_fails, drained_tick;
    double wait_sum_ms;
};

struct sim_worker {
    enum scale_state st;
    int64_t created, started, finished, start_at, idle_since, done_at, task_ms;
    bool busy, will_fail;
};

struct snap {
    int64_t at, ready, unacked, consumers;
};

#define QCAP (1 << 18)          /* ring of enqueue times; the test asserts it never fills */
#define WCAP 512                /* workers tracked: active + finished history */
#define NSNAP 16

struct sim {
    const struct sim_cfg *cfg;
    const struct policy *pol;
    uint64_t rng_arrivals, rng_workers; /* two streams: every policy sees the same arrivals */
    int64_t *q;
    size_t qhead, qcount;
    struct sim_worker w[WCAP];
    size_t nw;
    struct snap snaps[NSNAP];
    size_t nsnap;
    int64_t unacked;
    struct sim_result r;
};

/* splitmix64: small, seedable, and the same on every platform. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rnd_unit(uint64_t *s) { return (double)(rnd(s) >> 11) / 9007199254740992.0; }

static int64_t rnd_range(uint64_t *s, int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static void q_push_back(struct sim *s, int64_t t)
{
    assert_true(s->qcount < QCAP);
    s->q[(s->qhead + s->qcount) % QCAP] = t;
    s->qcount++;
}

static void q_push_front(struct sim *s, int64_t t) /* a requeued message goes back to the head */
{
    assert_true(s->qcount < QCAP);
    s->qhead = (s->qhead + QCAP - 1) % QCAP;
    s->q[s->qhead] = t;
    s->qcount++;
}

static int64_t q_pop(struct sim *s)
{
    int64_t t = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % QCAP;
    s->qcount--;
    return t;
}

static int64_t count_active(const struct sim *s)
{
    int64_t n = 0;
    for (size_t i = 0; i < s->nw; i++)
        n += s->w[i].st == SCALE_PENDING || s->w[i].st == SCALE_RUNNING;
    return n;
}

/* Advance the world to time t. */
static void step_workers(struct sim *s, int64_t t)
{
    const struct sim_cfg *c = s->cfg;
    for (size_t i = 0; i < s->nw; i++) {
        struct sim_worker *w = &s->w[i];
        if (w->st == SCALE_RUNNING && w->busy && w->done_at <= t) {
            w->busy = false;
            s->unacked--;
            w->finished = t;
            if (w->will_fail) {
                w->st = SCALE_FAILED;
                s->r.task_failures++;
                q_push_front(s, t);
            } else {
                w->st = SCALE_SUCCEEDED;
                s->r.acked++;
            }
        }
    }
    for (size_t i = 0; i < s->nw; i++) {
        struct sim_worker *w = &s->w[i];
        if (w->st == SCALE_PENDING && w->start_at <= t) {
            w->st = SCALE_RUNNING;
            w->started = t;
            w->idle_since = t;
        }
    }
    for (size_t i = 0; i < s->nw && s->qcount > 0; i++) {
        struct sim_worker *w = &s->w[i];
        if (w->st == SCALE_RUNNING && !w->busy) {
            int64_t wait = t - q_pop(s);
            s->r.taken++;
            s->r.wait_sum_ms += (double)wait;
            if (wait > s->r.max_wait_ms)
                s->r.max_wait_ms = wait;
            w->busy = true;
            s->unacked++;
            w->done_at = t + w->task_ms;
        }
    }
    for (size_t i = 0; i < s->nw; i++) {
        struct sim_worker *w = &s->w[i];
        if (w->st == SCALE_RUNNING && !w->busy && t - w->idle_since >= c->idle_timeout_ms) {
            w->st = SCALE_SUCCEEDED;
            w->finished = t;
            s->r.idle_exits++;
        }
    }
    if (t % c->stats_ms == 0) {
        struct snap *sn = &s->snaps[s->nsnap % NSNAP];
        int64_t consumers = 0;
        for (size_t i = 0; i < s->nw; i++)
            consumers += s->w[i].st == SCALE_RUNNING;
        *sn = (struct snap){t, (int64_t)s->qcount, s->unacked, consumers};
        s->nsnap++;
    }
    int64_t a = count_active(s);
    if (a > s->r.peak_active)
        s->r.peak_active = a;
}

/* The newest snapshot the management API would show at time t, or NULL. */
static const struct snap *visible_snapshot(const struct sim *s, int64_t t)
{
    for (size_t k = 0; k < NSNAP && k < s->nsnap; k++) {
        const struct snap *sn = &s->snaps[(s->nsnap - 1 - k) % NSNAP];
        if (sn->at <= t - s->cfg->stats_delay_ms)
            return sn;
    }
    return NULL;
}

static void remove_workers(struct sim *s, const bool *gone)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nw; i++)
        if (!gone[i])
            s->w[k++] = s->w[i];
    s->nw = k;
}

/* One controller pass at time t. */
static void control(struct sim *s, int64_t t)
{
    const struct sim_cfg *c = s->cfg;
    const struct policy *p = s->pol;
    bool gone[WCAP] = {false};

    if (p->keda) { /* KEDA's own history cleanup never matters to its decision: drop them */
        for (size_t i = 0; i < s->nw; i++)
            gone[i] = s->w[i].st == SCALE_SUCCEEDED || s->w[i].st == SCALE_FAILED;
        remove_workers(s, gone);
        memset(gone, 0, sizeof gone);
    }

    struct scale_worker sw[WCAP];
    for (size_t i = 0; i < s->nw; i++)
        sw[i] = (struct scale_worker){s->w[i].st, s->w[i].created, s->w[i].started,
                                      s->w[i].finished, 0, false};
    const struct snap *sn = visible_snapshot(s, t);
    bool read_ok = sn && rnd_unit(&s->rng_workers) >= c->p_read_fail;
    if (!read_ok)
        s->r.read_fails++;
    struct scale_input in = {
        .depth_ok = read_ok, .ready = read_ok ? sn->ready : 0,
        .unacked = read_ok ? sn->unacked : 0, .consumers = read_ok ? sn->consumers : 0,
        .sample_ms = read_ok ? sn->at : 0, .workers = sw, .nworkers = s->nw, .now_ms = t,
    };

    int64_t start = 0;
    if (p->keda) {
        assert_int_equal(scale_decide_keda(&in, &p->kp, &start), 0);
    } else {
        struct scale_decision d;
        assert_int_equal(scale_decide(&in, &p->lim, &d), 0);
        start = d.start;
        for (size_t k = 0; k < d.ndeletes; k++) {
            size_t i = d.deletes[k].idx;
            assert_true(i < s->nw);
            assert_int_not_equal(s->w[i].st, SCALE_RUNNING); /* never a running worker */
            if (d.deletes[k].reason == SCALE_DEL_PENDING_TIMEOUT) {
                assert_int_equal(s->w[i].st, SCALE_PENDING);
                s->r.timeouts++;
            }
            gone[i] = true;
        }
        scale_decision_free(&d);
        remove_workers(s, gone);
    }

    int64_t max_active = p->keda ? p->kp.max_replica_count : p->lim.max_active;
    for (int64_t k = 0; k < start; k++) {
        assert_true(s->nw < WCAP);
        struct sim_worker *w = &s->w[s->nw++];
        bool slow = rnd_unit(&s->rng_workers) < c->p_slow_start;
        int64_t lat = slow ? rnd_range(&s->rng_workers, c->slow_min, c->slow_max)
                           : rnd_range(&s->rng_workers, c->fast_min, c->fast_max);
        *w = (struct sim_worker){.st = SCALE_PENDING, .created = t, .start_at = t + lat,
                                 .task_ms = rnd_range(&s->rng_workers, c->task_min, c->task_max),
                                 .will_fail = rnd_unit(&s->rng_workers) < c->p_task_fail};
        s->r.started++;
    }
    int64_t a = count_active(s);
    assert_true(a <= max_active); /* never more than maxActive active */
    if (a > s->r.peak_active)
        s->r.peak_active = a;
}

static struct sim_result run(const struct sim_cfg *c, const struct policy *p)
{
    struct sim *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->q = calloc(QCAP, sizeof *s->q);
    assert_non_null(s->q);
    s->cfg = c;
    s->pol = p;
    s->rng_arrivals = c->seed;
    s->rng_workers = c->seed ^ 0x5bd1e995ULL;
    s->r.drained_tick = -1;

    for (int tick = 1; tick <= c->ticks; tick++) {
        int64_t t0 = (int64_t)(tick - 1) * c->poll_ms, t1 = (int64_t)tick * c->poll_ms;
        int64_t narr = 0, arr_at = t0 + c->step_ms;
        if (tick <= c->arrivals_until) {
            if (rnd_unit(&s->rng_arrivals) < c->p_burst)
                narr += rnd_range(&s->rng_arrivals, c->burst_min, c->burst_max);
            if (rnd_unit(&s->rng_arrivals) < c->p_trickle)
                narr++;
            arr_at = t0 + c->step_ms * rnd_range(&s->rng_arrivals, 1, c->poll_ms / c->step_ms);
        }
        for (int64_t t = t0 + c->step_ms; t <= t1; t += c->step_ms) {
            if (t == arr_at)
                for (int64_t k = 0; k < narr; k++)
                    q_push_back(s, t);
            step_workers(s, t);
        }
        s->r.published += narr;
        control(s, t1);
        if (tick > c->arrivals_until && s->r.drained_tick < 0 && s->qcount == 0 &&
            s->unacked == 0 && s->r.acked == s->r.published)
            s->r.drained_tick = tick;
    }
    struct sim_result r = s->r;
    free(s->q);
    free(s);
    return r;
}

static double waste(const struct sim_result *r)
{
    return r->started ? (double)r->idle_exits / (double)r->started : 0.0;
}

static void print_result(const struct sim_cfg *c, const char *name, const struct sim_result *r)
{
    printf("  %-24s %-22s msgs %6lld  started %6lld  idle-exit %5lld  waste %5.1f%%  "
           "peak %3lld  wait mean %5.1fs max %5.1fs  drained %s\n",
           c->name, name, (long long)r->published, (long long)r->started,
           (long long)r->idle_exits, 100.0 * waste(r), (long long)r->peak_active,
           r->taken ? r->wait_sum_ms / (double)r->taken / 1000.0 : 0.0,
           (double)r->max_wait_ms / 1000.0, r->drained_tick > 0 ? "yes" : "NO");
}

/* ---- scenarios ---- */

/* Random bursts of 10-200 messages on top of a trickle; a quarter of the pods pull an image.
 * 10,000 ticks of 2 s; arrivals stop at tick 9,000, leaving 2,000 s to drain. */
static const struct sim_cfg bursty = {
    .name = "bursts+trickle", .ticks = 10000, .arrivals_until = 9000,
    .poll_ms = 2000, .step_ms = 250, .stats_ms = 5000, .stats_delay_ms = 2000,
    .p_burst = 0.01, .burst_min = 10, .burst_max = 200, .p_trickle = 0.2,
    .p_slow_start = 0.25, .fast_min = 1000, .fast_max = 6000, .slow_min = 20000,
    .slow_max = 60000, .task_min = 500, .task_max = 15000, .idle_timeout_ms = 30000,
    .p_task_fail = 0.02, .p_read_fail = 0.01, .seed = 0x6a6f62706f6f6cULL,
};

/* The same, with the depth sample 10-15 s old. */
static const struct sim_cfg very_stale = {
    .name = "bursts, 10-15s stale", .ticks = 10000, .arrivals_until = 9000,
    .poll_ms = 2000, .step_ms = 250, .stats_ms = 5000, .stats_delay_ms = 10000,
    .p_burst = 0.01, .burst_min = 10, .burst_max = 200, .p_trickle = 0.2,
    .p_slow_start = 0.25, .fast_min = 1000, .fast_max = 6000, .slow_min = 20000,
    .slow_max = 60000, .task_min = 500, .task_max = 15000, .idle_timeout_ms = 30000,
    .p_task_fail = 0.02, .p_read_fail = 0.01, .seed = 0x6a6f62706f6f6cULL,
};

/* A trickle (one message every ~20 s) with slow pod starts (20-60 s): where eager over-creates. */
static const struct sim_cfg trickle = {
    .name = "trickle, slow starts", .ticks = 10000, .arrivals_until = 9000,
    .poll_ms = 2000, .step_ms = 250, .stats_ms = 5000, .stats_delay_ms = 2000,
    .p_burst = 0, .burst_min = 0, .burst_max = 0, .p_trickle = 0.1,
    .p_slow_start = 1.0, .fast_min = 1000, .fast_max = 6000, .slow_min = 20000,
    .slow_max = 60000, .task_min = 500, .task_max = 15000, .idle_timeout_ms = 30000,
    .p_task_fail = 0.02, .p_read_fail = 0.01, .seed = 0x747269636b6c65ULL,
};

#define JP_LIMITS(spare_) {.max_active = 50, .min_active = 0, .spare_workers = (spare_), \
    .max_start_per_tick = 20, .messages_per_worker = 1, .successful_history = 10,        \
    .failed_history = 10, .pending_timeout_ms = 300000, .room = -1}
#define KEDA(strat_) {.strategy = (strat_), .target_value = 1, .max_replica_count = 50, \
    .min_replica_count = 0, .activation_value = 0}

static const struct policy jobpool0 = {"jobpool", false, JP_LIMITS(0), {0}};
static const struct policy jobpool2 = {"jobpool spare=2", false, JP_LIMITS(2), {0}};
static const struct policy keda_pol[3] = {
    {"keda default", true, {0}, KEDA(SCALE_KEDA_DEFAULT)},
    {"keda accurate", true, {0}, KEDA(SCALE_KEDA_ACCURATE)},
    {"keda eager", true, {0}, KEDA(SCALE_KEDA_EAGER)},
};

/* The bound on waste (idle-exit workers / workers started) with spareWorkers 0. Measured: 0.0%
 * on bursts+trickle and on the trickle, 0.1% with the 10-15 s stale sample (and at worst 0.26%
 * over 20 other seeds per scenario). What remains comes from a sample so old that a worker
 * started, ran and finished inside its lag and was already removed from the history, or from a
 * waiting consumer the sample counted that exited before taking the message. 1% is about four
 * times the worst seed, so a changed seed or model detail does not trip it, yet it still fails
 * on any systematic over-start: KEDA's strategies measure 1.2-77% on the same runs. */
#define WASTE_BOUND 0.01

static void check_jobpool(const struct sim_cfg *c, const struct sim_result *r)
{
    /* Every message got a worker: after arrivals stop, the queue drains completely. */
    assert_true(r->published > 0);
    assert_true(r->drained_tick > 0);
    assert_int_equal(r->acked, r->published);
    assert_int_equal(r->taken, r->published + r->task_failures);
    assert_true(r->peak_active <= 50);
    assert_int_equal(r->timeouts, 0); /* no start takes 5 min here */
    (void)c;
}

static void test_sim_jobpool(void **state)
{
    (void)state;
    const struct sim_cfg *cfgs[] = {&bursty, &very_stale, &trickle};
    printf("simulation (10,000 ticks of 2 s; maxActive 50, maxStartPerTick 20, idleTimeout "
           "30 s):\n");
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        struct sim_result r = run(cfgs[i], &jobpool0);
        print_result(cfgs[i], jobpool0.name, &r);
        check_jobpool(cfgs[i], &r);
        assert_true(waste(&r) < WASTE_BOUND);
        /* Determinism: the same seed gives the same run. */
        struct sim_result again = run(cfgs[i], &jobpool0);
        assert_int_equal(again.started, r.started);
        assert_int_equal(again.idle_exits, r.idle_exits);
        assert_int_equal(again.published, r.published);
    }
}

/* spareWorkers 2: the extra waste is bounded by 2 workers per idle timeout. */
static void test_sim_spare(void **state)
{
    (void)state;
    const struct sim_cfg *cfgs[] = {&bursty, &trickle};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        struct sim_result r0 = run(cfgs[i], &jobpool0);
        struct sim_result r = run(cfgs[i], &jobpool2);
        print_result(cfgs[i], jobpool2.name, &r);
        check_jobpool(cfgs[i], &r);
        int64_t sim_ms = (int64_t)cfgs[i]->ticks * cfgs[i]->poll_ms;
        int64_t bound = 2 * (sim_ms / cfgs[i]->idle_timeout_ms + 1);
        assert_true(r.idle_exits - r0.idle_exits <= bound);
        /* and the spares do their job: messages wait less on average */
        assert_true(r.wait_sum_ms / (double)r.taken < r0.wait_sum_ms / (double)r0.taken);
    }
}

/* KEDA's published strategies on the same arrivals: printed for docs/scaling.md, not asserted
 * (beyond sanity: the simulation itself holds maxReplicaCount). */
static void test_sim_keda(void **state)
{
    (void)state;
    const struct sim_cfg *cfgs[] = {&bursty, &very_stale, &trickle};
    printf("KEDA ScaledJob formulas on the same simulation (target 1, maxReplicaCount 50):\n");
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
        for (size_t k = 0; k < 3; k++) {
            struct sim_result r = run(cfgs[i], &keda_pol[k]);
            print_result(cfgs[i], keda_pol[k].name, &r);
            assert_true(r.peak_active <= 50);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_jobpool),
        cmocka_unit_test(test_sim_spare),
        cmocka_unit_test(test_sim_keda),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
