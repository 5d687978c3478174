/* test_scale.c: table-driven tests of scale_decide, scale_share and the KEDA baseline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "scale.h"

#define NOW 1000000000LL
#define SAMPLE (NOW - 5000)   /* the depth sample is 5 s old */
#define MAXW 80
#define NDEL 32

/* Worker shorthands. Busy/idle is not a worker attribute: it comes from the broker's figures. */
#define PEND(c) {SCALE_PENDING, (c), 0, 0, 0, false}
#define RUN_OLD {SCALE_RUNNING, NOW - 60000, NOW - 50000, 0, 0, false}      /* seen by the sample */
#define RUN_NEW {SCALE_RUNNING, NOW - 20000, NOW - 2000, 0, 0, false}       /* started after it */
#define DONE(f) {SCALE_SUCCEEDED, (f) - 10000, (f) - 5000, (f), 0, false}
#define FAIL(f) {SCALE_FAILED, (f) - 10000, (f) - 5000, (f), 0, false}

static const struct scale_limits base_limits = {
    .max_active = 50, .min_active = 0, .spare_workers = 0, .max_start_per_tick = 20,
    .messages_per_worker = 1, .successful_history = 10, .failed_history = 10,
    .pending_timeout_ms = 300000, .room = -1,
};

struct start_case {
    const char *name;
    bool fail_read;             /* depth_ok = false */
    int64_t ready, unacked, consumers;
    /* limit overrides; 0 keeps the base value (use -1 for an explicit 0 where allowed) */
    int max_active, min_active, spare, max_per_tick, mpw;
    int room;                   /* 0: none (-1); otherwise room - 1, so 1 means room 0 */
    int npend, nrun_old, nrun_new;
    int ndone_new, ndone_old;   /* finished; started after / before the sample */
    bool exact;                 /* the sample was read after the workers were listed */
    /* expectations */
    int start;
    const char *reason;
    int pending, running, waiting;
    int64_t want;               /* -1: do not check */
    int unseen;
};

static const struct start_case start_cases[] = {
    {.name = "empty queue, no workers", .start = 0, .reason = "idle", .want = 0},
    {.name = "empty queue, three idle consumers", .consumers = 3, .nrun_old = 3, .start = 0,
     .reason = "idle", .running = 3, .waiting = 3, .want = 0},
    {.name = "one message", .ready = 1, .start = 1, .reason = "scale_up", .want = 1},
    {.name = "burst above maxActive, per-tick limit binds", .ready = 1000, .start = 20,
     .reason = "max_per_tick", .want = 1000},
    {.name = "burst above maxActive, maxActive binds", .ready = 1000, .max_per_tick = 100,
     .start = 50, .reason = "at_max", .want = 1000},
    {.name = "burst with 45 busy workers", .ready = 1000, .unacked = 45, .consumers = 45,
     .nrun_old = 45, .start = 5, .reason = "at_max", .running = 45, .want = 1000},
    {.name = "pool full", .ready = 1000, .unacked = 50, .consumers = 50, .nrun_old = 50,
     .start = 0, .reason = "at_max", .running = 50, .want = 1000},
    {.name = "over maxActive after a config change", .ready = 10, .unacked = 60,
     .consumers = 60, .nrun_old = 60, .start = 0, .reason = "at_max", .running = 60,
     .want = 10},
    {.name = "pending cover the whole backlog", .ready = 5, .npend = 5, .start = 0,
     .reason = "covered", .pending = 5, .want = 0},
    {.name = "pending cover more than the backlog", .ready = 2, .npend = 5, .start = 0,
     .reason = "covered", .pending = 5, .want = 0},
    {.name = "pending cover part of the backlog", .ready = 7, .npend = 5, .start = 2,
     .reason = "scale_up", .pending = 5, .want = 2},
    {.name = "stale: workers started after the sample count as pending", .ready = 3,
     .nrun_new = 3, .start = 0, .reason = "covered", .pending = 3, .want = 0},
    {.name = "stale: same workers seen busy by the sample", .ready = 3, .unacked = 3,
     .consumers = 3, .nrun_old = 3, .start = 3, .reason = "scale_up", .running = 3, .want = 3},
    {.name = "stale: same workers seen idle by the sample", .ready = 3, .consumers = 3,
     .nrun_old = 3, .start = 0, .reason = "covered", .running = 3, .waiting = 3, .want = 0},
    {.name = "stale: sample counts consumers that have gone since", .ready = 5, .consumers = 5,
     .nrun_old = 2, .start = 3, .reason = "scale_up", .running = 2, .waiting = 2, .want = 3},
    {.name = "stale: new workers are not waiting consumers", .ready = 4, .consumers = 4,
     .nrun_new = 4, .start = 0, .reason = "covered", .pending = 4, .waiting = 0, .want = 0},
    {.name = "stale: started and finished since the sample", .ready = 3, .ndone_new = 1,
     .start = 2, .reason = "scale_up", .want = 2, .unseen = 1},
    {.name = "stale: started and finished since the sample, all covered", .ready = 2,
     .ndone_new = 1, .npend = 1, .start = 0, .reason = "covered", .pending = 1, .want = 0,
     .unseen = 1},
    {.name = "exact: finished before the read, so its message is not among the ready", .ready = 3,
     .ndone_new = 1, .exact = true, .start = 3, .reason = "scale_up", .want = 3},
    {.name = "exact: a running worker within its start lag still covers", .ready = 3,
     .nrun_new = 1, .ndone_new = 1, .exact = true, .start = 2, .reason = "scale_up",
     .pending = 1, .want = 2},
    {.name = "stale: seen busy, finished since", .ready = 3, .unacked = 1, .consumers = 1,
     .ndone_old = 1, .start = 3, .reason = "scale_up", .want = 3},
    {.name = "warm pool from zero", .min_active = 3, .start = 3, .reason = "min_active",
     .want = 0},
    {.name = "warm pool tops up", .min_active = 3, .consumers = 1, .nrun_old = 1, .start = 2,
     .reason = "min_active", .running = 1, .waiting = 1, .want = 0},
    {.name = "warm pool ignores the per-tick limit", .min_active = 5, .max_per_tick = 2,
     .start = 5, .reason = "min_active", .want = 0},
    {.name = "warm pool below a busy backlog", .min_active = 3, .ready = 10, .start = 10,
     .reason = "scale_up", .want = 10},
    {.name = "warm pool already full", .min_active = 3, .consumers = 3, .nrun_old = 3,
     .start = 0, .reason = "idle", .running = 3, .waiting = 3, .want = 0},
    {.name = "spare: trickle, nothing running", .ready = 1, .spare = 2, .start = 3,
     .reason = "scale_up", .want = 3},
    {.name = "spare: trickle, spares waiting", .ready = 1, .spare = 2, .consumers = 2,
     .nrun_old = 2, .start = 1, .reason = "scale_up", .running = 2, .waiting = 2, .want = 1},
    {.name = "spare: no message, spares waiting", .spare = 2, .consumers = 2, .nrun_old = 2,
     .start = 0, .reason = "covered", .running = 2, .waiting = 2, .want = 0},
    {.name = "spare: burst", .ready = 100, .spare = 2, .max_per_tick = 100, .start = 50,
     .reason = "at_max", .want = 102},
    {.name = "spare: burst within limits", .ready = 10, .spare = 2, .npend = 4, .start = 8,
     .reason = "scale_up", .pending = 4, .want = 8},
    {.name = "messagesPerWorker 3, 10 ready", .ready = 10, .mpw = 3, .start = 4,
     .reason = "scale_up", .want = 4},
    {.name = "messagesPerWorker 3, 9 ready", .ready = 9, .mpw = 3, .start = 3,
     .reason = "scale_up", .want = 3},
    {.name = "messagesPerWorker 3, 1 ready", .ready = 1, .mpw = 3, .start = 1,
     .reason = "scale_up", .want = 1},
    {.name = "messagesPerWorker 3, 9 ready, 2 pending", .ready = 9, .mpw = 3, .npend = 2,
     .start = 1, .reason = "scale_up", .pending = 2, .want = 1},
    {.name = "global cap binds", .ready = 30, .room = 6, .start = 5, .reason = "global_cap",
     .want = 30},
    {.name = "global cap full", .ready = 30, .room = 1, .start = 0, .reason = "global_cap",
     .want = 30},
    {.name = "global cap also limits the warm pool", .min_active = 5, .room = 3, .start = 2,
     .reason = "min_active", .want = 0},
    {.name = "depth read failed: no start", .fail_read = true, .ready = 100, .start = 0,
     .reason = "hold_no_data", .want = 0},
    {.name = "depth read failed: warm pool still kept", .fail_read = true, .min_active = 2,
     .start = 2, .reason = "hold_no_data", .want = 0},
    {.name = "depth read failed: new workers stay running", .fail_read = true, .nrun_new = 2,
     .ndone_new = 2, .start = 0, .reason = "hold_no_data", .running = 2, .want = 0},
    {.name = "limits: INT64_MAX ready", .ready = INT64_MAX, .start = 20,
     .reason = "max_per_tick", .want = INT64_MAX},
    {.name = "limits: INT64_MAX ready and INT_MAX spare saturate", .ready = INT64_MAX,
     .spare = INT_MAX, .npend = 3, .start = 20, .reason = "max_per_tick", .pending = 3,
     .want = INT64_MAX - 3},
    {.name = "limits: INT_MAX everything", .ready = INT64_MAX, .max_active = INT_MAX,
     .max_per_tick = INT_MAX, .start = INT_MAX, .reason = "at_max", .want = INT64_MAX},
    {.name = "limits: INT64_MAX ready, INT_MAX per worker", .ready = INT64_MAX,
     .mpw = INT_MAX, .max_active = INT_MAX, .max_per_tick = INT_MAX, .start = INT_MAX,
     .reason = "at_max", .want = INT64_MAX / INT_MAX + 1},
    {.name = "limits: INT64_MAX consumers", .ready = 5, .consumers = INT64_MAX, .nrun_old = 3,
     .start = 2, .reason = "scale_up", .running = 3, .waiting = 3, .want = 2},
    {.name = "limits: INT64_MAX unacked", .ready = 5, .unacked = INT64_MAX, .consumers = 3,
     .nrun_old = 3, .start = 5, .reason = "scale_up", .running = 3, .waiting = 0, .want = 5},
    {.name = "limits: INT64_MIN counts are 0", .ready = INT64_MIN, .unacked = INT64_MIN,
     .consumers = INT64_MIN, .nrun_old = 2, .start = 0, .reason = "idle", .running = 2,
     .want = 0},
    {.name = "limits: negative unacked is 0", .ready = 3, .unacked = -5, .consumers = 1,
     .nrun_old = 1, .start = 2, .reason = "scale_up", .running = 1, .waiting = 1, .want = 2},
    {.name = "limits: INT_MAX room", .ready = 7, .room = INT_MAX, .start = 7,
     .reason = "scale_up", .want = 7},
};

static void run_start_case(const struct start_case *c)
{
    struct scale_worker ws[MAXW];
    size_t n = 0;
    for (int i = 0; i < c->npend; i++)
        ws[n++] = (struct scale_worker)PEND(NOW - 1000);
    for (int i = 0; i < c->nrun_old; i++)
        ws[n++] = (struct scale_worker)RUN_OLD;
    for (int i = 0; i < c->nrun_new; i++)
        ws[n++] = (struct scale_worker)RUN_NEW;
    for (int i = 0; i < c->ndone_new; i++)
        ws[n++] = (struct scale_worker){SCALE_SUCCEEDED, NOW - 4000, NOW - 3000, NOW - 1000, 0, false};
    for (int i = 0; i < c->ndone_old; i++)
        ws[n++] = (struct scale_worker){SCALE_SUCCEEDED, NOW - 40000, NOW - 30000, NOW - 1000, 0, false};
    struct scale_input in = {
        .depth_ok = !c->fail_read, .ready = c->ready, .unacked = c->unacked,
        .consumers = c->consumers, .sample_ms = SAMPLE, .workers = ws, .nworkers = n,
        .now_ms = NOW, .exact = c->exact,
    };
    struct scale_limits lim = base_limits;
    if (c->max_active)
        lim.max_active = c->max_active;
    if (c->min_active)
        lim.min_active = c->min_active;
    if (c->spare)
        lim.spare_workers = c->spare;
    if (c->max_per_tick)
        lim.max_start_per_tick = c->max_per_tick;
    if (c->mpw)
        lim.messages_per_worker = c->mpw;
    if (c->room)
        lim.room = c->room - 1;

    struct scale_decision d;
    int rc = scale_decide(&in, &lim, &d);
    if (rc != 0 || d.start != c->start || strcmp(d.reason, c->reason) != 0 ||
        d.pending != c->pending || d.running != c->running || d.waiting != c->waiting ||
        (c->want >= 0 && d.want != c->want) || d.ndeletes != 0 || d.unseen != c->unseen)
        print_error("case \"%s\": rc %d start %d (want %d) reason %s (want %s) pending %d "
                    "running %d waiting %d unseen %d want %lld ndeletes %zu\n",
                    c->name, rc, d.start, c->start, d.reason, c->reason, d.pending, d.running,
                    d.waiting, d.unseen, (long long)d.want, d.ndeletes);
    assert_int_equal(rc, 0);
    assert_int_equal(d.start, c->start);
    assert_string_equal(d.reason, c->reason);
    assert_int_equal(d.pending, c->pending);
    assert_int_equal(d.running, c->running);
    assert_int_equal(d.waiting, c->waiting);
    assert_int_equal(d.unseen, c->unseen);
    assert_int_equal(d.succeeded, c->ndone_new + c->ndone_old);
    assert_int_equal(d.active, c->pending + c->running);
    if (c->want >= 0)
        assert_int_equal(d.want, c->want);
    assert_int_equal(d.ndeletes, 0);
    /* Invariants of every decision. */
    assert_true(d.start >= 0);
    assert_true((int64_t)d.active + d.start <= (int64_t)lim.max_active ||
                d.start == 0);
    if (!c->fail_read && lim.min_active == 0)
        assert_true(d.start <= lim.max_start_per_tick);
    if (lim.room >= 0)
        assert_true(d.start <= lim.room);
    scale_decision_free(&d);
}

static void test_start_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof start_cases / sizeof start_cases[0]; i++)
        run_start_case(&start_cases[i]);
}

/* ---- deletes ---- */

struct del_case {
    const char *name;
    bool fail_read;
    int succ_hist, fail_hist;
    int64_t pending_timeout_ms;
    struct scale_worker w[16];
    size_t n;
    /* expected deletes in order: index and reason */
    size_t ndel;
    size_t idx[NDEL];
    enum scale_delete_reason why[NDEL];
};

#define S_ SCALE_DEL_SUCCEEDED_HISTORY
#define F_ SCALE_DEL_FAILED_HISTORY
#define T_ SCALE_DEL_PENDING_TIMEOUT

static const struct del_case del_cases[] = {
    {.name = "within history: nothing", .succ_hist = 2, .fail_hist = 2,
     .pending_timeout_ms = 300000, .w = {DONE(NOW - 10), DONE(NOW - 20), FAIL(NOW - 5)},
     .n = 3, .ndel = 0},
    {.name = "succeeded beyond history, oldest first", .succ_hist = 2, .fail_hist = 10,
     .pending_timeout_ms = 300000,
     .w = {DONE(NOW - 300), DONE(NOW - 100), DONE(NOW - 500), DONE(NOW - 200), DONE(NOW - 400)},
     .n = 5, .ndel = 3, .idx = {2, 4, 0}, .why = {S_, S_, S_}},
    {.name = "per outcome: each history on its own", .succ_hist = 1, .fail_hist = 1,
     .pending_timeout_ms = 300000,
     .w = {FAIL(NOW - 100), DONE(NOW - 300), FAIL(NOW - 900), DONE(NOW - 50), RUN_OLD,
           FAIL(NOW - 500), DONE(NOW - 700), PEND(NOW - 1000)},
     .n = 8, .ndel = 4, .idx = {6, 1, 2, 5}, .why = {S_, S_, F_, F_}},
    {.name = "history 0 deletes every finished one", .succ_hist = 0, .fail_hist = 0,
     .pending_timeout_ms = 0, .w = {DONE(NOW - 1), RUN_OLD, FAIL(NOW - 2), RUN_NEW},
     .n = 4, .ndel = 2, .idx = {0, 2}, .why = {S_, F_}},
    {.name = "same finish time: older created first, then lower index", .succ_hist = 1,
     .fail_hist = 1, .pending_timeout_ms = 0,
     .w = {{SCALE_SUCCEEDED, 500, 600, 900, 0, false}, {SCALE_SUCCEEDED, 400, 600, 900, 0, false},
           {SCALE_SUCCEEDED, 400, 600, 900, 0, false}, {SCALE_SUCCEEDED, 400, 600, 1000, 0, false}},
     .n = 4, .ndel = 3, .idx = {1, 2, 0}, .why = {S_, S_, S_}},
    {.name = "pending timeout", .succ_hist = 10, .fail_hist = 10, .pending_timeout_ms = 300000,
     .w = {PEND(NOW - 400000), PEND(NOW - 100000), PEND(NOW - 300000), PEND(NOW - 300001),
           {SCALE_RUNNING, NOW - 900000, NOW - 1000, 0, 0, false}},
     .n = 5, .ndel = 2, .idx = {0, 3}, .why = {T_, T_}},
    {.name = "a Job between pod retries is pending but never timed out", .succ_hist = 10,
     .fail_hist = 10, .pending_timeout_ms = 1000,
     .w = {{SCALE_PENDING, NOW - 400000, 0, 0, 0, .ran = true}, PEND(NOW - 5000)},
     .n = 2, .ndel = 1, .idx = {1}, .why = {T_}},
    {.name = "pending timeout 0 disables", .succ_hist = 10, .fail_hist = 10,
     .pending_timeout_ms = 0, .w = {PEND(0), PEND(NOW - 400000)}, .n = 2, .ndel = 0},
    {.name = "history before timeouts", .succ_hist = 0, .fail_hist = 10,
     .pending_timeout_ms = 1000, .w = {PEND(NOW - 5000), DONE(NOW - 1)}, .n = 2, .ndel = 2,
     .idx = {1, 0}, .why = {S_, T_}},
    {.name = "running never deleted", .succ_hist = 0, .fail_hist = 0, .pending_timeout_ms = 1,
     .w = {{SCALE_RUNNING, 0, 1, 0, 0, false}, {SCALE_RUNNING, INT64_MIN, INT64_MIN, 0, 0, false},
           RUN_OLD, RUN_NEW, {SCALE_RUNNING, NOW - 900000, NOW - 1, 0, 0, false}},
     .n = 5, .ndel = 0},
    {.name = "depth read failed: history only", .fail_read = true, .succ_hist = 1,
     .fail_hist = 0, .pending_timeout_ms = 1000,
     .w = {PEND(NOW - 900000), DONE(NOW - 10), DONE(NOW - 20), FAIL(NOW - 30), RUN_OLD},
     .n = 5, .ndel = 2, .idx = {2, 3}, .why = {S_, F_}},
    {.name = "limits: INT64_MIN created and huge timeout", .succ_hist = 10, .fail_hist = 10,
     .pending_timeout_ms = INT64_MAX - 1,
     .w = {PEND(INT64_MIN), PEND(INT64_MAX), PEND(NOW)}, .n = 3, .ndel = 1, .idx = {0},
     .why = {T_}},
};

static void test_delete_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof del_cases / sizeof del_cases[0]; i++) {
        const struct del_case *c = &del_cases[i];
        struct scale_input in = {
            .depth_ok = !c->fail_read, .ready = 0, .sample_ms = SAMPLE, .workers = c->w,
            .nworkers = c->n, .now_ms = NOW,
        };
        struct scale_limits lim = base_limits;
        lim.successful_history = c->succ_hist;
        lim.failed_history = c->fail_hist;
        lim.pending_timeout_ms = c->pending_timeout_ms;
        struct scale_decision d;
        assert_int_equal(scale_decide(&in, &lim, &d), 0);
        if (d.ndeletes != c->ndel)
            print_error("case \"%s\": %zu deletes, want %zu\n", c->name, d.ndeletes, c->ndel);
        assert_int_equal(d.ndeletes, c->ndel);
        for (size_t k = 0; k < c->ndel; k++) {
            if (d.deletes[k].idx != c->idx[k] || d.deletes[k].reason != c->why[k])
                print_error("case \"%s\": delete %zu is %zu/%d, want %zu/%d\n", c->name, k,
                            d.deletes[k].idx, (int)d.deletes[k].reason, c->idx[k],
                            (int)c->why[k]);
            assert_int_equal(d.deletes[k].idx, c->idx[k]);
            assert_int_equal(d.deletes[k].reason, c->why[k]);
            /* A running worker is never deleted, whatever the case. */
            assert_int_not_equal(c->w[d.deletes[k].idx].state, SCALE_RUNNING);
        }
        scale_decision_free(&d);
    }
}

/* Many finished workers in a scrambled order: the deletes are exactly the oldest ones. */
static void test_history_large(void **state)
{
    (void)state;
    enum { N = 1000, KEEP = 37 };
    struct scale_worker *w = calloc(N, sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < N; i++) {
        int64_t f = (int64_t)((i * 7919) % N); /* a permutation of 0..N-1 */
        w[i] = (struct scale_worker){i % 3 ? SCALE_SUCCEEDED : SCALE_FAILED, f, f, 1000 + f, 0, false};
    }
    struct scale_input in = {.depth_ok = true, .workers = w, .nworkers = N, .now_ms = NOW,
                             .sample_ms = SAMPLE};
    struct scale_limits lim = base_limits;
    lim.successful_history = KEEP;
    lim.failed_history = KEEP;
    struct scale_decision d;
    assert_int_equal(scale_decide(&in, &lim, &d), 0);
    size_t nsucc = 0, nfail = 0;
    for (size_t i = 0; i < N; i++) {
        if (w[i].state == SCALE_SUCCEEDED)
            nsucc++;
        else
            nfail++;
    }
    assert_int_equal(d.ndeletes, nsucc - KEEP + nfail - KEEP);
    assert_int_equal(d.succeeded, (int)nsucc);
    assert_int_equal(d.failed, (int)nfail);
    int64_t prev = -1;
    enum scale_delete_reason prev_why = SCALE_DEL_SUCCEEDED_HISTORY;
    int64_t max_deleted[2] = {-1, -1};
    for (size_t k = 0; k < d.ndeletes; k++) {
        const struct scale_worker *x = &w[d.deletes[k].idx];
        if (d.deletes[k].reason != prev_why) {
            prev = -1;
            prev_why = d.deletes[k].reason;
        }
        assert_true(x->finished_ms > prev); /* strictly oldest first */
        prev = x->finished_ms;
        max_deleted[x->state == SCALE_FAILED] = x->finished_ms;
    }
    /* Every kept worker finished after every deleted one of the same outcome. */
    size_t kept[2] = {0, 0};
    for (size_t i = 0; i < N; i++) {
        bool deleted = false;
        for (size_t k = 0; k < d.ndeletes && !deleted; k++)
            deleted = d.deletes[k].idx == i;
        if (!deleted) {
            int o = w[i].state == SCALE_FAILED;
            assert_true(w[i].finished_ms > max_deleted[o]);
            kept[o]++;
        }
    }
    assert_int_equal(kept[0], KEEP);
    assert_int_equal(kept[1], KEEP);
    scale_decision_free(&d);
    free(w);
}

/* The controller hands scale_decide its workers where they are, inside larger records
 * (worker_stride): every case of the delete table, and a large scrambled history, decide the
 * same as from a plain array, with the bytes around each worker set to garbage. */
struct rec_around {
    char before[40];
    struct scale_worker w;
    char after[24];
};

static void assert_same_strided(const struct scale_input *in, const struct scale_limits *lim)
{
    struct rec_around *r = calloc(in->nworkers ? in->nworkers : 1, sizeof *r);
    assert_non_null(r);
    memset(r, 0xa5, (in->nworkers ? in->nworkers : 1) * sizeof *r);
    for (size_t i = 0; i < in->nworkers; i++) r[i].w = in->workers[i];
    struct scale_input sin = *in;
    sin.workers = &r[0].w;
    sin.worker_stride = sizeof *r;
    struct scale_decision a, b;
    assert_int_equal(scale_decide(in, lim, &a), 0);
    assert_int_equal(scale_decide(&sin, lim, &b), 0);
    assert_int_equal(a.start, b.start);
    assert_int_equal(a.ndeletes, b.ndeletes);
    for (size_t k = 0; k < a.ndeletes; k++) {
        assert_int_equal(a.deletes[k].idx, b.deletes[k].idx);
        assert_int_equal(a.deletes[k].reason, b.deletes[k].reason);
    }
    assert_int_equal(a.pending, b.pending);
    assert_int_equal(a.running, b.running);
    assert_int_equal(a.succeeded, b.succeeded);
    assert_int_equal(a.failed, b.failed);
    assert_int_equal(a.unseen, b.unseen);
    assert_string_equal(a.reason, b.reason);
    scale_decision_free(&a);
    scale_decision_free(&b);
    /* A stride shorter than a worker is refused. */
    sin.worker_stride = sizeof(struct scale_worker) - 1;
    assert_int_equal(scale_decide(&sin, lim, &b), JP_EINVAL);
    scale_decision_free(&b);
    free(r);
}

static void test_worker_stride(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof del_cases / sizeof del_cases[0]; i++) {
        const struct del_case *c = &del_cases[i];
        struct scale_input in = {.depth_ok = !c->fail_read, .ready = 3, .sample_ms = SAMPLE,
                                 .workers = c->w, .nworkers = c->n, .now_ms = NOW};
        struct scale_limits lim = base_limits;
        lim.successful_history = c->succ_hist;
        lim.failed_history = c->fail_hist;
        lim.pending_timeout_ms = c->pending_timeout_ms;
        assert_same_strided(&in, &lim);
    }
    enum { N = 500 };
    struct scale_worker *w = calloc(N, sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < N; i++) {
        int64_t f = (int64_t)((i * 7919) % N);
        w[i] = (struct scale_worker){(enum scale_state)(i % 4), NOW - 100000 + f, f ? NOW - f : 0,
                                     i % 4 >= 2 ? NOW - 90000 + f : 0, 0, false};
    }
    struct scale_input in = {.depth_ok = true, .ready = 40, .sample_ms = SAMPLE, .workers = w,
                             .nworkers = N, .now_ms = NOW};
    struct scale_limits lim = base_limits;
    lim.successful_history = 7;
    lim.failed_history = 3;
    lim.pending_timeout_ms = 50000;
    assert_same_strided(&in, &lim);
    free(w);
}

static void test_invalid(void **state)
{
    (void)state;
    struct scale_worker ws[1] = {RUN_OLD};
    struct scale_input in = {.depth_ok = true, .ready = 3, .workers = ws, .nworkers = 1,
                             .now_ms = NOW, .sample_ms = SAMPLE};
    struct scale_decision d;
    struct scale_limits bad[] = {base_limits, base_limits, base_limits, base_limits,
                                 base_limits, base_limits, base_limits, base_limits,
                                 base_limits};
    bad[0].max_active = 0;
    bad[1].min_active = -1;
    bad[2].min_active = 51;
    bad[3].spare_workers = -1;
    bad[4].max_start_per_tick = 0;
    bad[5].messages_per_worker = 0;
    bad[6].successful_history = -1;
    bad[7].failed_history = -1;
    bad[8].pending_timeout_ms = -1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&d, 0x5a, sizeof d);
        assert_int_equal(scale_decide(&in, &bad[i], &d), JP_EINVAL);
        assert_int_equal(d.start, 0);
        assert_null(d.deletes);
        assert_int_equal(d.ndeletes, 0);
        scale_decision_free(&d);
    }
    assert_int_equal(scale_decide(NULL, &base_limits, &d), JP_EINVAL);
    scale_decision_free(&d);
    assert_int_equal(scale_decide(&in, NULL, &d), JP_EINVAL);
    scale_decision_free(&d);
    assert_int_equal(scale_decide(&in, &base_limits, NULL), JP_EINVAL);
    in.workers = NULL;
    assert_int_equal(scale_decide(&in, &base_limits, &d), JP_EINVAL);
    scale_decision_free(&d);
    in.nworkers = 0;
    assert_int_equal(scale_decide(&in, &base_limits, &d), 0);
    scale_decision_free(&d);
    /* Unknown state: refused, nothing leaks (the deletes buffer is not yet allocated). */
    struct scale_worker odd[2] = {DONE(NOW - 1), {(enum scale_state)9, 0, 0, 0, 0, false}};
    in.workers = odd;
    in.nworkers = 2;
    struct scale_limits l0 = base_limits;
    l0.successful_history = 0;
    assert_int_equal(scale_decide(&in, &l0, &d), JP_EINVAL);
    assert_null(d.deletes);
    scale_decision_free(&d);
    scale_decision_free(NULL);
}

/* ---- the global cap ---- */

static int64_t sum64(const int64_t *v, size_t n)
{
    int64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

struct share_case {
    const char *name;
    int64_t want[4];
    size_t n;
    int64_t room;
    int64_t grant[4];
};

static const struct share_case share_cases[] = {
    {"three pools, uneven backlogs", {100, 10, 1}, 3, 20, {17, 2, 1}},
    {"three pools, uneven backlogs, more room", {300, 60, 5}, 3, 100, {82, 17, 1}},
    {"everyone fits", {5, 3, 2}, 3, 100, {5, 3, 2}},
    {"exactly fits", {5, 3, 2}, 3, 10, {5, 3, 2}},
    {"room below the number of pools: largest first", {1, 50, 7}, 3, 2, {0, 1, 1}},
    {"room of one goes to the largest, ties to the lower index", {7, 9, 9}, 3, 1, {0, 1, 0}},
    {"equal wants: largest remainder ties to the lower index", {10, 10, 10}, 3, 10,
     {4, 3, 3}},
    {"no room", {10, 10, 10}, 3, 0, {0, 0, 0}},
    {"negative room", {10, 10, 10}, 3, -5, {0, 0, 0}},
    {"idle pools get nothing", {0, 40, 0, 10}, 4, 10, {0, 8, 0, 2}},
    {"negative want counts as 0", {-3, 40, 10}, 3, 10, {0, 8, 2}},
    {"one pool", {1000}, 1, 50, {50}},
};

static void test_share_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof share_cases / sizeof share_cases[0]; i++) {
        const struct share_case *c = &share_cases[i];
        int64_t g[4] = {-1, -1, -1, -1};
        scale_share(c->want, c->n, c->room, g);
        for (size_t k = 0; k < c->n; k++) {
            if (g[k] != c->grant[k])
                print_error("case \"%s\": grant[%zu] = %lld, want %lld\n", c->name, k,
                            (long long)g[k], (long long)c->grant[k]);
            assert_int_equal(g[k], c->grant[k]);
        }
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The promises of scale_share on random inputs, including values at the type limits. */
static void test_share_properties(void **state)
{
    (void)state;
    enum { N = 7 };
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 1 + rng() % N;
        int64_t want[N], grant[N];
        int scale = (int)(rng() % 4);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rng();
            want[i] = scale == 0 ? (int64_t)(r % 5) : scale == 1 ? (int64_t)(r % 1000)
                      : scale == 2 ? (int64_t)(r >> 1) : INT64_MAX - (int64_t)(r % 3);
            if (rng() % 5 == 0)
                want[i] = 0;
        }
        int64_t room = (rng() % 8 == 0) ? INT64_MAX : (int64_t)(rng() % 200);
        scale_share(want, n, room, grant);
        size_t k = 0;
        int64_t total = 0, sum = 0;
        bool total_over = false;
        for (size_t i = 0; i < n; i++) {
            assert_true(grant[i] >= 0 && grant[i] <= want[i]);
            if (want[i] > 0)
                k++;
            if (total > INT64_MAX - want[i])
                total_over = true;
            else
                total += want[i];
            sum += grant[i]; /* grants are bounded by room in total, no overflow */
            assert_true(sum >= 0);
        }
        assert_true(sum <= room);
        /* Work-conserving: either everyone got what they asked, or the room is used up. */
        if (!total_over && total <= room)
            assert_int_equal(sum, total);
        else
            assert_int_equal(sum, room);
        /* No pool with a backlog is starved while room allows one each. */
        if ((int64_t)k <= room)
            for (size_t i = 0; i < n; i++)
                if (want[i] > 0)
                    assert_true(grant[i] >= 1);
        /* Proportional: a larger want never gets less than a smaller one. */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++)
                if (want[i] > want[j])
                    assert_true(grant[i] >= grant[j]);
        /* Deterministic. */
        int64_t again[N];
        scale_share(want, n, room, again);
        assert_memory_equal(grant, again, n * sizeof *grant);
    }
    scale_share(NULL, 3, 10, NULL);
    int64_t g[2] = {9, 9};
    scale_share(NULL, 2, 10, g);
    assert_int_equal(sum64(g, 2), 0);
}

/* The global cap end to end: three pools decide, share, decide again. */
static void test_share_three_pools(void **state)
{
    (void)state;
    const int64_t ready[3] = {400, 40, 3};
    int64_t want[3], grant[3];
    struct scale_limits lim = base_limits;
    lim.max_start_per_tick = 500;
    lim.max_active = 500;
    for (int p = 0; p < 3; p++) {
        struct scale_input in = {.depth_ok = true, .ready = ready[p], .now_ms = NOW,
                                 .sample_ms = SAMPLE};
        struct scale_decision d;
        assert_int_equal(scale_decide(&in, &lim, &d), 0);
        want[p] = d.start;
        scale_decision_free(&d);
    }
    scale_share(want, 3, 30, grant); /* maxActiveTotal 30, nothing active yet */
    assert_int_equal(sum64(grant, 3), 30);
    assert_int_equal(grant[0], 26);
    assert_int_equal(grant[1], 3);
    assert_int_equal(grant[2], 1);
    for (int p = 0; p < 3; p++) {
        struct scale_input in = {.depth_ok = true, .ready = ready[p], .now_ms = NOW,
                                 .sample_ms = SAMPLE};
        lim.room = (int)grant[p];
        struct scale_decision d;
        assert_int_equal(scale_decide(&in, &lim, &d), 0);
        assert_int_equal(d.start, grant[p]);
        assert_string_equal(d.reason, "global_cap");
        scale_decision_free(&d);
    }
}

/* ---- the KEDA baseline: hand-computed from the published formulas ---- */

struct keda_case {
    const char *name;
    enum scale_keda_strategy strategy;
    bool fail_read;
    int64_t ready, unacked;
    int npend, nrun;
    double target;
    int64_t max_rep, min_rep;
    int64_t start;
};

static const struct keda_case keda_cases[] = {
    {"default: fresh queue", SCALE_KEDA_DEFAULT, false, 10, 0, 0, 0, 1, 50, 0, 10},
    {"default: busy jobs cancel their unacked", SCALE_KEDA_DEFAULT, false, 10, 4, 0, 4, 1, 50,
     0, 10},
    {"default: pending jobs cancel ready", SCALE_KEDA_DEFAULT, false, 3, 0, 3, 0, 1, 50, 0, 0},
    {"default: capped by maxReplicaCount", SCALE_KEDA_DEFAULT, false, 1000, 0, 0, 0, 1, 50, 0,
     50},
    {"default: target 20 (KEDA's default value)", SCALE_KEDA_DEFAULT, false, 45, 0, 0, 0, 20,
     100, 0, 3},
    {"accurate: unacked counted again", SCALE_KEDA_ACCURATE, false, 10, 4, 0, 4, 1, 50, 0, 14},
    {"accurate: pending subtracted", SCALE_KEDA_ACCURATE, false, 3, 0, 3, 0, 1, 50, 0, 0},
    {"accurate: near maxReplicaCount", SCALE_KEDA_ACCURATE, false, 40, 10, 0, 10, 1, 50, 0,
     40},
    {"eager: unacked counted again", SCALE_KEDA_EAGER, false, 10, 4, 0, 4, 1, 50, 0, 14},
    {"eager: pending counted as covering nothing", SCALE_KEDA_EAGER, false, 3, 0, 3, 0, 1, 50,
     0, 3},
    {"eager: bounded by maxReplicaCount - running - pending", SCALE_KEDA_EAGER, false, 30, 0,
     10, 0, 1, 50, 0, 30},
    {"eager: bounded, tight", SCALE_KEDA_EAGER, false, 30, 0, 20, 0, 1, 50, 0, 10},
    {"minReplicaCount from zero", SCALE_KEDA_DEFAULT, false, 0, 0, 0, 0, 1, 50, 2, 2},
    {"inactive queue", SCALE_KEDA_EAGER, false, 0, 0, 0, 0, 1, 50, 0, 0},
    {"failed read", SCALE_KEDA_EAGER, true, 100, 0, 0, 0, 1, 50, 0, 0},
    {"INT64_MAX counts", SCALE_KEDA_ACCURATE, false, INT64_MAX, INT64_MAX, 0, 0, 1, INT64_MAX,
     0, INT64_MAX},
};

static void test_keda_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof keda_cases / sizeof keda_cases[0]; i++) {
        const struct keda_case *c = &keda_cases[i];
        struct scale_worker ws[MAXW];
        size_t n = 0;
        for (int k = 0; k < c->npend; k++)
            ws[n++] = (struct scale_worker)PEND(NOW - 1000);
        for (int k = 0; k < c->nrun; k++)
            ws[n++] = (struct scale_worker)RUN_OLD;
        ws[n++] = (struct scale_worker)DONE(NOW - 1); /* finished jobs never count */
        struct scale_input in = {.depth_ok = !c->fail_read, .ready = c->ready,
                                 .unacked = c->unacked, .workers = ws, .nworkers = n,
                                 .now_ms = NOW, .sample_ms = SAMPLE};
        struct scale_keda_params p = {.strategy = c->strategy, .target_value = c->target,
                                      .max_replica_count = c->max_rep,
                                      .min_replica_count = c->min_rep};
        int64_t start = -1;
        assert_int_equal(scale_decide_keda(&in, &p, &start), 0);
        if (start != c->start)
            print_error("keda case \"%s\": %lld, want %lld\n", c->name, (long long)start,
                        (long long)c->start);
        assert_int_equal(start, c->start);
    }
    struct scale_input in = {.depth_ok = true};
    struct scale_keda_params p = {.target_value = 0, .max_replica_count = 1};
    int64_t s = 7;
    assert_int_equal(scale_decide_keda(&in, &p, &s), JP_EINVAL);
    assert_int_equal(s, 0);
    p.target_value = 1;
    p.max_replica_count = 0;
    assert_int_equal(scale_decide_keda(&in, &p, &s), JP_EINVAL);
    assert_int_equal(scale_decide_keda(NULL, &p, &s), JP_EINVAL);
}

/* ---- per-queue pools (queueRegex) ---- */

#define MAXQ 4
struct queue_case {
    const char *name;
    int nq;
    struct scale_queue q[MAXQ];
    /* workers: count of pending / running-seen / finished-after-sample per queue index + 1
     * (index 0: workers of no queue) */
    int pend[MAXQ + 1], run[MAXQ + 1], unseen[MAXQ + 1];
    int max_active, min_active, spare, max_per_tick;
    int start;
    int64_t split[MAXQ];
    const char *reason;
};

static const struct queue_case queue_cases[] = {
    {"each queue its backlog", 3, {{10, 0, 0}, {5, 0, 0}, {1, 0, 0}}, {0}, {0}, {0},
     100, 0, 0, 100, 16, {10, 5, 1}, "scale_up"},
    {"maxActive shared in proportion, none starves", 3, {{10, 0, 0}, {5, 0, 0}, {1, 0, 0}},
     {0}, {0}, {0}, 8, 0, 0, 100, 8, {4, 3, 1}, "at_max"},
    {"one queue's pending workers never cover another's messages", 2, {{0, 0, 0}, {5, 0, 0}},
     {0, 5, 0}, {0}, {0}, 50, 0, 0, 20, 5, {0, 5}, "scale_up"},
    {"pending counted per queue", 2, {{6, 0, 0}, {4, 0, 0}}, {0, 2, 4}, {0}, {0},
     50, 0, 0, 20, 4, {4, 0}, "scale_up"},
    {"waiting counted per queue", 2, {{0, 0, 3}, {3, 0, 0}}, {0}, {0, 3, 0}, {0},
     50, 0, 0, 20, 3, {0, 3}, "scale_up"},
    {"finished after the sample covers its own queue only", 2, {{2, 0, 0}, {2, 0, 0}}, {0},
     {0}, {0, 2, 0}, 50, 0, 0, 20, 2, {0, 2}, "scale_up"},
    {"spare after the needs, evenly", 2, {{3, 0, 0}, {0, 0, 0}}, {0}, {0}, {0},
     50, 0, 2, 20, 5, {4, 1}, "scale_up"},
    {"excess coverage uses up spare", 2, {{0, 0, 0}, {1, 0, 0}}, {0, 2, 0}, {0}, {0},
     50, 0, 2, 20, 1, {0, 1}, "scale_up"},
    {"workers of no queue are active and use up spare", 2, {{0, 0, 0}, {0, 0, 0}},
     {3, 0, 0}, {0}, {0}, 4, 0, 2, 20, 0, {0, 0}, "covered"},
    {"min_active top-up spread over the queues", 3, {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}}, {0},
     {0}, {0}, 50, 4, 0, 20, 4, {2, 1, 1}, "min_active"},
    {"maxStartPerTick caps the split too", 2, {{30, 0, 0}, {10, 0, 0}}, {0}, {0}, {0},
     100, 0, 0, 20, 20, {15, 5}, "max_per_tick"},
    {"no queue matches: nothing to start, not even min_active", 0, {{0}}, {0}, {0}, {0},
     50, 3, 1, 20, 0, {0}, "idle"},
};

static void test_queue_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof queue_cases / sizeof queue_cases[0]; c++) {
        const struct queue_case *qc = &queue_cases[c];
        struct scale_worker ws[64];
        size_t n = 0;
        for (int q = 0; q <= MAXQ; q++) {
            for (int i = 0; i < qc->pend[q]; i++)
                ws[n++] = (struct scale_worker){SCALE_PENDING, NOW - 1000, 0, 0, q - 1, false};
            for (int i = 0; i < qc->run[q]; i++)
                ws[n++] = (struct scale_worker){SCALE_RUNNING, NOW - 60000, NOW - 50000, 0, q - 1, false};
            for (int i = 0; i < qc->unseen[q]; i++)
                ws[n++] = (struct scale_worker){SCALE_SUCCEEDED, NOW - 4000, NOW - 3000,
                                                NOW - 1000, q - 1, false};
        }
        struct scale_input in = {.depth_ok = true, .sample_ms = NOW - 10000, .workers = ws,
                                 .nworkers = n, .now_ms = NOW, .per_queue = true,
                                 .queues = qc->q, .nqueues = (size_t)qc->nq,
                                 .ready = 999, .consumers = 0}; /* pool sums are ignored */
        struct scale_limits lim = base_limits;
        lim.max_active = qc->max_active;
        lim.min_active = qc->min_active;
        lim.spare_workers = qc->spare;
        lim.max_start_per_tick = qc->max_per_tick;
        struct scale_decision d;
        assert_int_equal(scale_decide(&in, &lim, &d), 0);
        if (d.start != qc->start || strcmp(d.reason, qc->reason) != 0)
            fail_msg("%s: start %d (%s), want %d (%s)", qc->name, d.start, d.reason, qc->start,
                     qc->reason);
        assert_non_null(d.queue_start);
        int64_t sum = 0;
        for (int q = 0; q < qc->nq; q++) {
            if (d.queue_start[q] != qc->split[q])
                fail_msg("%s: queue %d gets %lld, want %lld", qc->name, q,
                         (long long)d.queue_start[q], (long long)qc->split[q]);
            sum += d.queue_start[q];
        }
        assert_int_equal(sum, d.start);
        scale_decision_free(&d);
        assert_null(d.queue_start);
    }
}

static int lcg(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (int)((*s >> 16) & 0x7fff);
}

/* One queue counted per queue decides exactly as the pool's own sums do. */
static void test_queue_single_equals_pool(void **state)
{
    (void)state;
    unsigned seed = 7;
    for (int c = 0; c < 5000; c++) {
        struct scale_worker ws[40];
        size_t n = (size_t)(lcg(&seed) % 40);
        for (size_t i = 0; i < n; i++) {
            int kind = lcg(&seed) % 4;
            int64_t st = kind == 1 ? NOW - 50000 : NOW - 3000;
            ws[i] = (struct scale_worker){kind == 0 ? SCALE_PENDING : kind == 3 ? SCALE_SUCCEEDED
                                                                                : SCALE_RUNNING,
                                          NOW - 60000, kind == 0 ? 0 : st,
                                          kind == 3 ? NOW - 1000 : 0, 0, false};
        }
        struct scale_queue q = {lcg(&seed) % 60, lcg(&seed) % 3, lcg(&seed) % 20};
        struct scale_input pool = {.depth_ok = true, .ready = q.ready, .unacked = q.unacked,
                                   .consumers = q.consumers, .sample_ms = NOW - 10000,
                                   .workers = ws, .nworkers = n, .now_ms = NOW};
        struct scale_input per = pool;
        per.per_queue = true;
        per.queues = &q;
        per.nqueues = 1;
        struct scale_limits lim = base_limits;
        lim.max_active = 1 + lcg(&seed) % 60;
        lim.min_active = lcg(&seed) % (lim.max_active + 1);
        lim.spare_workers = lcg(&seed) % 5;
        lim.messages_per_worker = 1 + lcg(&seed) % 3;
        struct scale_decision a, b;
        assert_int_equal(scale_decide(&pool, &lim, &a), 0);
        assert_int_equal(scale_decide(&per, &lim, &b), 0);
        if (a.start != b.start || a.want != b.want || a.waiting != b.waiting ||
            strcmp(a.reason, b.reason) != 0 || b.queue_start[0] != b.start)
            fail_msg("case %d: pool %d/%lld/%s, per queue %d/%lld/%s", c, a.start,
                     (long long)a.want, a.reason, b.start, (long long)b.want, b.reason);
        scale_decision_free(&a);
        scale_decision_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_table),
        cmocka_unit_test(test_delete_table),
        cmocka_unit_test(test_history_large),
        cmocka_unit_test(test_worker_stride),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_share_table),
        cmocka_unit_test(test_share_properties),
        cmocka_unit_test(test_share_three_pools),
        cmocka_unit_test(test_keda_table),
        cmocka_unit_test(test_queue_table),
        cmocka_unit_test(test_queue_single_equals_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
