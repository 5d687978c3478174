/* test_reconcile.c: the loop over a scripted broker (link-time seams) and an in-memory backend. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "intern.h"
#include "err.h"
#include "metrics.h"
#include "reconcile.h"
#include "rmq.h"
#include "util.h"

/* ---- the broker, played through -Wl,--wrap ---------------------------------------------- */
#define NQ 4
static struct { const char *queue; int rc; int64_t ready, consumers; int reads; } q[NQ];
static bool q_exact;            /* the reads are passive declares (depthSource amqp) */

void __wrap_rmq_tick_begin(struct rmq_client *c) { (void)c; }
int __wrap_rmq_watch_queue(struct rmq_client *c, const char *vhost, const char *queue)
{
    (void)c;
    (void)vhost;
    (void)queue;
    return 0;
}
const char *__wrap_rmq_last_error(const struct rmq_client *c)
{
    (void)c;
    return "scripted";
}
int __wrap_rmq_queue_depth(struct rmq_client *c, const char *vhost, const char *queue,
                           struct rmq_depth *out)
{
    (void)c;
    (void)vhost;
    memset(out, 0, sizeof *out);
    for (int i = 0; i < NQ; i++)
        if (q[i].queue && strcmp(q[i].queue, queue) == 0) {
            q[i].reads++;
            if (q[i].rc) return q[i].rc;
            out->ready = q[i].ready;
            out->consumers = q[i].consumers;
            out->sampled_ms = util_now_ms();
            out->nqueues = 1;
            out->exact = q_exact;
            return 0;
        }
    return JP_ENOTFOUND;
}
/* Between ticks (depthSource amqp): probe_grow_at-th call says the queue grew (and puts one
 * more message in it); from the probe_stop_at-th call on the loop is asked to stop. */
static int probes, probe_grow_at, probe_stop_at;
static volatile sig_atomic_t loop_stop;
int __wrap_rmq_probe(struct rmq_client *c, bool *grew)
{
    (void)c;
    probes++;
    *grew = probes == probe_grow_at;
    if (*grew) q[0].ready++;
    if (probe_stop_at && probes >= probe_stop_at) loop_stop = 1;
    return 0;
}
/* A regex pool's matches, when a test sets them (rq_n > 0): sorted by name, as rmq gives them. */
static struct rmq_qdepth rq[4];
static size_t rq_n;
int __wrap_rmq_regex_depth(struct rmq_client *c, const char *vhost, const char *re,
                           struct rmq_depth *out)
{
    if (!rq_n) return __wrap_rmq_queue_depth(c, vhost, re, out);
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < rq_n; i++) {
        out->ready += rq[i].ready;
        out->consumers += rq[i].consumers;
    }
    out->nqueues = rq_n;
    out->queues = rq;
    out->sampled_ms = util_now_ms();
    return 0;
}

/* ---- an allocator that fails on request (-Wl,--wrap=calloc) ------------------------------- */
/* The next calloc of exactly this many elements of this size from the linked modules returns
 * NULL; 0: none. By size, so that the fake backend's own allocations are not hit. */
static size_t fail_calloc_n, fail_calloc_size;
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    if (fail_calloc_size && n == fail_calloc_n && size == fail_calloc_size) {
        fail_calloc_n = fail_calloc_size = 0;
        return NULL;
    }
    return __real_calloc(n, size);
}

/* ---- an in-memory backend --------------------------------------------------------------- */
/* Workers' ids (struct backend_worker borrows them): from a fixed table, so that making one
 * never calls malloc, which some tests make fail. */
static char id_table[1024][24];
static size_t id_used;
static const char *fid(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *fid(const char *fmt, ...)
{
    assert_true(id_used < sizeof id_table / sizeof id_table[0]);
    char *id = id_table[id_used++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(id, sizeof id_table[0], fmt, ap);
    va_end(ap);
    return id;
}

struct fake {
    struct backend base;
    const struct cfg *cfg;
    struct backend_list w[NQ];  /* per pool */
    int starts[NQ], removes[NQ];
    int fail_start;             /* error to return from start, 0 none */
    unsigned long seq;
    struct backend_list orphans;
    int orphan_removes;
    bool stale;                 /* list answers JP_ESTALE: the backend's view is too old */
    int64_t hint_ms;            /* what retry_hint_ms answers (-1: the server said nothing) */
    bool views;                 /* list answers views of tables made for the pass, as the kube
                                 * backend does; release frees them */
    struct backend_worker *view[NQ];
    int observes, releases, lists_since_release;
};

static size_t pidx(struct fake *f, const struct cfg_pool *p) { return (size_t)(p - f->cfg->pools); }
static int f_observe(struct backend *b)
{
    ((struct fake *)b)->observes++;
    return 0;
}
static void f_release(struct backend *b)
{
    struct fake *f = (struct fake *)b;
    for (int i = 0; i < NQ; i++) {
        free(f->view[i]);
        f->view[i] = NULL;
    }
    f->releases++;
    f->lists_since_release = 0;
}
static int64_t f_hint(struct backend *b) { return ((struct fake *)b)->hint_ms; }
static int f_list(struct backend *b, const struct cfg_pool *p, struct backend_list *out)
{
    struct fake *f = (struct fake *)b;
    out->n = 0;
    if (f->stale) return JP_ESTALE;
    struct backend_list *l = &f->w[pidx(f, p)];
    f->lists_since_release++;
    if (f->views) {
        /* A table of the pass's own, gone at release: a read after it is a use after free
         * (the unit tests run under AddressSanitizer and valgrind too). */
        size_t i = pidx(f, p);
        free(f->view[i]);
        f->view[i] = l->n ? malloc(l->n * sizeof *l->v) : NULL;
        if (l->n) assert_non_null(f->view[i]);
        for (size_t k = 0; k < l->n; k++) {
            f->view[i][k] = l->v[k];
            l->v[k].outcome_new = false;
        }
        backend_list_view(out, f->view[i], l->n);
        return 0;
    }
    for (size_t i = 0; i < l->n; i++) {
        backend_list_push(out, &l->v[i]);
        l->v[i].outcome_new = false; /* as the real backends: its figures go out once */
    }
    return 0;
}
/* The queue of each start call, in order, with its count. */
static char start_queue[16][64];
static int start_n[16], nstart_calls;
static int f_start(struct backend *b, const struct cfg_pool *p, const char *queue, int n,
                   int64_t ready, int *started)
{
    if (nstart_calls < 16) {
        snprintf(start_queue[nstart_calls], sizeof start_queue[0], "%s", queue ? queue : "");
        start_n[nstart_calls++] = n;
    }
    struct fake *f = (struct fake *)b;
    (void)ready;
    *started = 0;
    if (f->fail_start) return f->fail_start;
    for (int i = 0; i < n; i++) {
        struct backend_worker w;
        memset(&w, 0, sizeof w);
        w.id = fid("w%lu", ++f->seq);
        w.queue = intern(queue ? queue : p->queue);
        w.w.state = SCALE_PENDING;
        w.w.created_ms = util_now_ms();
        backend_list_push(&f->w[pidx(f, p)], &w);
        (*started)++;
    }
    f->starts[pidx(f, p)] += n;
    return 0;
}
static int f_remove(struct backend *b, const struct cfg_pool *p, const struct backend_worker *w)
{
    struct fake *f = (struct fake *)b;
    struct backend_list *l = p ? &f->w[pidx(f, p)] : &f->orphans;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].id, w->id) == 0) {
            assert_int_not_equal(l->v[i].w.state, SCALE_RUNNING); /* never a running worker */
            if (!p) assert_int_not_equal(l->v[i].w.state, SCALE_PENDING); /* nor an orphan */
            l->v[i] = l->v[--l->n];
            if (p) f->removes[pidx(f, p)]++;
            else f->orphan_removes++;
            return 0;
        }
    return JP_ENOTFOUND;
}
static int f_list_orphans(struct backend *b, struct backend_list *out)
{
    struct fake *f = (struct fake *)b;
    out->n = 0;
    for (size_t i = 0; i < f->orphans.n; i++) backend_list_push(out, &f->orphans.v[i]);
    return 0;
}
static void f_stats(struct backend *b, const struct cfg_pool *p, struct backend_stats *o)
{
    (void)b;
    (void)p;
    memset(o, 0, sizeof *o);
}
static void f_shutdown(struct backend *b, long g) { (void)b; (void)g; }
static void f_destroy(struct backend *b)
{
    struct fake *f = (struct fake *)b;
    for (int i = 0; i < NQ; i++) {
        backend_list_free(&f->w[i]);
        free(f->view[i]);
    }
    backend_list_free(&f->orphans);
}

static struct cfg cfg;
static struct cfg_pool pools[3];
static struct fake fk;
static struct reconcile *rec;

static void setup_pools(int npools, int max_total)
{
    memset(q, 0, sizeof q);
    q_exact = false;
    memset(rq, 0, sizeof rq);
    rq_n = 0;
    nstart_calls = 0;
    memset(&cfg, 0, sizeof cfg);
    memset(pools, 0, sizeof pools);
    static const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < npools; i++) {
        pools[i].name = (char *)names[i];
        pools[i].queue = (char *)names[i];
        pools[i].vhost = "/";
        pools[i].max_active = 10;
        pools[i].max_start_per_tick = 20;
        pools[i].messages_per_worker = 1;
        pools[i].successful_history = 2;
        pools[i].failed_history = 1;
        q[i].queue = names[i];
    }
    cfg.pools = pools;
    cfg.npools = (size_t)npools;
    cfg.poll_interval_ms = 1000;
    cfg.rabbitmq.management_lag_ms = 10000; /* the default */
    cfg.max_active_total = max_total;
    memset(&fk, 0, sizeof fk);
    id_used = 0;
    fk.cfg = &cfg;
    fk.base = (struct backend){.name = "fake", .observe = f_observe, .release = f_release,
                               .list = f_list,
                               .list_orphans = f_list_orphans,
                               .start = f_start, .remove = f_remove, .stats = f_stats,
                               .retry_hint_ms = f_hint,
                               .shutdown = f_shutdown, .destroy = f_destroy};
    fk.hint_ms = -1;
}

static void make(bool dry)
{
    struct reconcile_opts o = {.dry_run = dry};
    assert_int_equal(reconcile_new(&cfg, NULL, &fk.base, NULL, &o, &rec), 0);
}

static int teardown(void **state)
{
    (void)state;
    reconcile_free(rec);
    rec = NULL;
    f_destroy(&fk.base);
    return 0;
}

static void test_one_worker_per_message_no_duplicates(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].ready = 7;
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 7);
    /* The broker still reports 7 (its figures lag); the 7 pending workers cover them. */
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 7);
    const struct reconcile_pool_status *st = reconcile_status(rec, 0);
    assert_int_equal(st->pending, 7);
    assert_int_equal(st->started, 7);
}

static void test_burst_capped_at_max_active(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].ready = 500;
    make(false);
    reconcile_pass(rec);
    reconcile_pass(rec);
    assert_int_equal(fk.starts[0], 10);
    assert_string_equal(reconcile_status(rec, 0)->reason, "at_max");
}

static void test_failed_read_holds_and_backs_off(void **state)
{
    (void)state;
    setup_pools(2, 0);
    q[0].rc = JP_ETIMEOUT;
    q[1].ready = 3;
    make(false);
    int rc = reconcile_pass(rec);
    assert_int_equal(rc, JP_ETIMEOUT);
    assert_int_equal(fk.starts[0], 0);  /* a failed read is never "empty", never "start" */
    assert_int_equal(fk.starts[1], 3);  /* the other pool goes on */
    assert_false(reconcile_status(rec, 0)->depth_ok);
    /* Backing off: the next pass does not read pool a again right away. */
    int reads = q[0].reads;
    reconcile_pass(rec);
    assert_int_equal(q[0].reads, reads);
    assert_int_equal(q[1].reads, 2);
}

/* A backend whose view of the workers is too old: the pool holds (no start although messages
 * wait, no delete although history is over its limit), backs off nothing, and resumes at once
 * when the view is current again. Its last known workers keep counting for maxActiveTotal. */
/* n succeeded workers of pool, named prefix0.., finished 1, 2, .. n s ago. */
static void push_succeeded(int pool, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        struct backend_worker w;
        memset(&w, 0, sizeof w);
        w.id = fid("%s%d", prefix, i);
        w.w.state = SCALE_SUCCEEDED;
        w.w.finished_ms = util_now_ms() - 1000 * (i + 1);
        backend_list_push(&fk.w[pool], &w);
    }
}

static void test_stale_backend_holds(void **state)
{
    (void)state;
    setup_pools(2, 12);
    q[0].ready = 5;
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 5);
    push_succeeded(0, "old", 4);
    q[0].ready = 20;
    q[1].ready = 20;
    fk.stale = true;
    assert_int_equal(reconcile_pass(rec), JP_ESTALE);
    assert_int_equal(fk.starts[0], 5);
    assert_int_equal(fk.removes[0], 0);
    assert_int_equal(fk.starts[1], 0);
    assert_string_equal(reconcile_status(rec, 0)->reason, "cache_stale");
    fk.stale = false;
    assert_int_equal(reconcile_pass(rec), 0); /* no back-off: the very next pass acts */
    assert_int_equal(fk.removes[0], 4 - 2);   /* successfulHistory 2 */
    assert_int_equal(fk.starts[0] + fk.starts[1], 12); /* maxActiveTotal 12 */
}

/* The workers a pass listed are let go when it ends: the backend is told (release) after the
 * pass's last list, once per pass, the early return of a stale backend included, and the
 * pass never reads a view after that (the views are freed then: ASan and valgrind see it). */
static void test_release_after_pass(void **state)
{
    (void)state;
    setup_pools(2, 0);
    fk.views = true;
    q[0].ready = 3;
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 3);
    assert_int_equal(fk.releases, 1);
    assert_int_equal(fk.lists_since_release, 0);
    push_succeeded(1, "done", 4);
    q[0].ready = 0;
    assert_int_equal(reconcile_pass(rec), 0); /* history trimmed through the views */
    assert_int_equal(fk.removes[1], 4 - 2);
    assert_int_equal(fk.releases, 2);
    assert_int_equal(fk.lists_since_release, 0);
    assert_null(fk.view[0]);
    assert_null(fk.view[1]);
    fk.stale = true;
    assert_int_equal(reconcile_pass(rec), JP_ESTALE);
    assert_int_equal(fk.releases, 3);
    fk.stale = false;
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.observes, 4);
    assert_int_equal(fk.releases, 4);
}

static void test_missing_queue_is_zero(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].queue = "other"; /* pool a's queue is not there: 404 */
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 0);
    assert_true(reconcile_status(rec, 0)->depth_ok);
    assert_int_equal(reconcile_status(rec, 0)->ready, 0);
}

static void test_history_cleanup(void **state)
{
    (void)state;
    setup_pools(1, 0);
    make(false);
    int64_t now = util_now_ms();
    for (int i = 0; i < 6; i++) {
        struct backend_worker w;
        memset(&w, 0, sizeof w);
        w.id = fid("done%d", i);
        w.w.state = i < 4 ? SCALE_SUCCEEDED : SCALE_FAILED;
        /* older than the depth sample's horizon: the sample has seen them */
        w.w.created_ms = now - 60000;
        w.w.started_ms = now - 59000;
        w.w.finished_ms = now - 50000 + i;
        backend_list_push(&fk.w[0], &w);
    }
    struct backend_worker run;
    memset(&run, 0, sizeof run);
    run.id = fid("running");
    run.w.state = SCALE_RUNNING;
    run.w.created_ms = now - 60000;
    run.w.started_ms = now - 60000;
    backend_list_push(&fk.w[0], &run);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.removes[0], 3); /* 2 of 4 succeeded, 1 of 2 failed */
    assert_int_equal(fk.w[0].n, 4);
    bool have_run = false, have_newest = false, have_oldest = false;
    for (size_t i = 0; i < fk.w[0].n; i++) {
        if (!strcmp(fk.w[0].v[i].id, "running")) have_run = true;
        if (!strcmp(fk.w[0].v[i].id, "done3")) have_newest = true;
        if (!strcmp(fk.w[0].v[i].id, "done0")) have_oldest = true;
    }
    assert_true(have_run);
    assert_true(have_newest);
    assert_false(have_oldest);
}

/* A finished worker the sample has not seen yet is kept: it accounts for a message the sample
 * still shows, so deleting it would start a second worker for that message. */
static void test_recent_history_kept_until_seen(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].ready = 3; /* stale: the three workers below already took these */
    make(false);
    int64_t now = util_now_ms();
    for (int i = 0; i < 3; i++) {
        struct backend_worker w;
        memset(&w, 0, sizeof w);
        w.id = fid("fresh%d", i);
        w.w.state = SCALE_SUCCEEDED;
        w.w.created_ms = w.w.started_ms = now - 1000;
        w.w.finished_ms = now - 500;
        backend_list_push(&fk.w[0], &w);
    }
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 0);   /* no duplicate workers for taken messages */
    assert_int_equal(fk.removes[0], 0);  /* over successfulHistory (2), but not yet seen */
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 0);
}

/* reconcile_run with depthSource amqp and an hour's poll, over a dummy client (the seams
 * above ignore it): the loop stops on its own (probe_stop_at, or a 10 s alarm should the loop
 * never probe), so a missing early pass shows as a missing start, never as a hang. */
static void on_alarm(int sig)
{
    (void)sig;
    loop_stop = 1;
}

static void run_amqp_loop(void)
{
    static char dummy;
    cfg.poll_interval_ms = 3600 * 1000;
    cfg.rabbitmq.depth_source = CFG_DEPTH_AMQP;
    q_exact = true;
    struct reconcile_opts o = {0};
    assert_int_equal(reconcile_new(&cfg, (struct rmq_client *)&dummy, &fk.base, NULL, &o, &rec), 0);
    loop_stop = 0;
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    alarm(10);
    assert_int_equal(reconcile_run(rec, &loop_stop, NULL), 0);
    alarm(0);
}

/* A message that arrives between ticks is started by an early pass, not an hour later. */
static void test_amqp_probe_wakes_a_pass(void **state)
{
    (void)state;
    setup_pools(1, 0);
    probes = 0;
    probe_grow_at = 1;
    probe_stop_at = 3;
    run_amqp_loop();
    assert_int_equal(q[0].reads, 2);     /* the first tick, and the one the probe asked for */
    assert_int_equal(fk.starts[0], 1);
    assert_int_equal(probes, 3);
}

/* A message held back only by a worker within its start lag is started as soon as the lag
 * is over: the loop does not wait for the next poll (or for the queue to grow). */
static void test_recheck_after_start_lag(void **state)
{
    (void)state;
    setup_pools(1, 0);
    fk.base.start_lag_ms = 300;
    q[0].ready = 1;
    struct backend_worker w;
    memset(&w, 0, sizeof w);
    w.id = fid("connecting");
    w.w.state = SCALE_RUNNING;
    w.w.created_ms = w.w.started_ms = util_now_ms(); /* just seen running: maybe not a consumer */
    backend_list_push(&fk.w[0], &w);
    probes = 0;
    probe_grow_at = 0;
    probe_stop_at = 30;                  /* 3 s: far beyond the 300 ms lag */
    run_amqp_loop();
    assert_int_equal(fk.starts[0], 1);   /* it was running, not consuming: the message needs one */
    assert_true(q[0].reads >= 2);
}

/* A management sample counts as rabbitmq.managementLag old: a worker that started within that
 * window may have taken a message the sample still shows as ready, so it covers one; a worker
 * that started before it was running when the sample was taken, and the ready message is
 * another. The same worker, 3 s after its start, against the default 10 s and against 2 s. */
static void test_management_lag_config(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++) {
        setup_pools(1, 0);
        if (k == 1) cfg.rabbitmq.management_lag_ms = 2000;
        q[0].ready = 1;
        struct backend_worker w;
        memset(&w, 0, sizeof w);
        w.id = fid("busy");
        w.w.state = SCALE_RUNNING;
        w.w.created_ms = w.w.started_ms = util_now_ms() - 3000;
        backend_list_push(&fk.w[0], &w);
        make(false);
        assert_int_equal(reconcile_pass(rec), 0);
        assert_int_equal(fk.starts[0], k == 0 ? 0 : 1);
        teardown(NULL);
    }
}

static void test_global_cap_shared(void **state)
{
    (void)state;
    setup_pools(3, 12);
    q[0].ready = 100;
    q[1].ready = 20;
    q[2].ready = 1;
    make(false);
    reconcile_pass(rec);
    int total = fk.starts[0] + fk.starts[1] + fk.starts[2];
    assert_true(total <= 12);
    assert_true(fk.starts[2] >= 1); /* no pool with a backlog is starved */
    assert_true(fk.starts[1] >= 1);
    assert_true(fk.starts[0] >= fk.starts[1]);
    /* the cap holds across passes */
    reconcile_pass(rec);
    total = fk.starts[0] + fk.starts[1] + fk.starts[2];
    assert_true(total <= 12);
}

static void test_keda_policy_routes(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].ready = 4;
    struct reconcile_opts o = {.keda = true, .keda_strategy = SCALE_KEDA_DEFAULT};
    assert_int_equal(reconcile_new(&cfg, NULL, &fk.base, NULL, &o, &rec), 0);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 4);
    assert_string_equal(reconcile_status(rec, 0)->reason, "keda");
}

static void test_dry_run_changes_nothing(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].ready = 5;
    make(true);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 0);
}

static void test_start_error_is_reported(void **state)
{
    (void)state;
    setup_pools(2, 0);
    q[0].ready = 2;
    q[1].ready = 2;
    fk.fail_start = JP_EINVALID;
    make(false);
    assert_int_equal(reconcile_pass(rec), JP_EINVALID);
    assert_int_equal(reconcile_status(rec, 0)->last_err, JP_EINVALID);
    assert_int_equal(reconcile_status(rec, 1)->last_err, JP_EINVALID);
    assert_int_equal(reconcile_status(rec, 0)->errors, 1);
}

/* A throttled start (429) waits what the server's Retry-After said, up to 20% more, and not
 * the 1 s first back-off; without a hint the back-off doubles from 1 s; a hint over the 60 s
 * ceiling is held to it. A rejected template (not transient) ignores any hint. */
static void test_throttled_start_waits_retry_after(void **state)
{
    (void)state;
    setup_pools(1, 0);
    q[0].ready = 2;
    fk.fail_start = JP_ETHROTTLED;
    fk.hint_ms = 7000;
    make(false);
    assert_int_equal(reconcile_pass(rec), JP_ETHROTTLED);
    int64_t d = reconcile_status(rec, 0)->backoff_ms;
    print_message("backoff with Retry-After 7 s: %lld ms\n", (long long)d);
    assert_true(d >= 7000 && d <= 8400);
    reconcile_free(rec);
    fk.hint_ms = -1;
    make(false);
    reconcile_pass(rec);
    d = reconcile_status(rec, 0)->backoff_ms;
    assert_true(d >= 800 && d <= 1200);
    reconcile_free(rec);
    fk.hint_ms = 3600 * 1000;
    make(false);
    reconcile_pass(rec);
    d = reconcile_status(rec, 0)->backoff_ms;
    assert_true(d >= 60000 && d <= 72000);
    reconcile_free(rec);
    fk.fail_start = JP_EINVALID;
    fk.hint_ms = 30000;
    make(false);
    reconcile_pass(rec);
    d = reconcile_status(rec, 0)->backoff_ms;
    assert_true(d >= 800 && d <= 1200);
}

static struct backend_worker orphan(const char *id, enum scale_state st)
{
    struct backend_worker w;
    memset(&w, 0, sizeof w);
    w.id = fid("%s", id);
    w.pool = "renamed";
    w.w.state = st;
    w.w.created_ms = w.w.started_ms = util_now_ms() - 60000;
    if (st == SCALE_SUCCEEDED || st == SCALE_FAILED) w.w.finished_ms = util_now_ms() - 50000;
    return w;
}

/* Workers of a pool no longer configured hold slots of maxActiveTotal while active, are never
 * deleted then, and are deleted once finished. */
static void test_orphans_count_and_are_trimmed(void **state)
{
    (void)state;
    setup_pools(1, 5);
    q[0].ready = 10;
    struct backend_worker o[4] = {orphan("o-run1", SCALE_RUNNING), orphan("o-run2", SCALE_RUNNING),
                                  orphan("o-pend", SCALE_PENDING),
                                  orphan("o-done", SCALE_SUCCEEDED)};
    for (int i = 0; i < 4; i++) backend_list_push(&fk.orphans, &o[i]);
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 2);        /* 5 - 3 active orphans */
    assert_int_equal(fk.orphan_removes, 1);   /* only the finished one */
    assert_int_equal(fk.orphans.n, 3);
    /* They finish: trimmed, and their slots come back. */
    for (size_t i = 0; i < fk.orphans.n; i++) fk.orphans.v[i].w.state = SCALE_FAILED;
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.orphan_removes, 4);
    assert_int_equal(fk.orphans.n, 0);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(fk.starts[0], 5);
}

static int gate_calls, gate_open_for;
static bool gate_counting(void *ud)
{
    (void)ud;
    return ++gate_calls <= gate_open_for;
}

/* A gate that closes in the middle of a pass (the lease lapsed) stops every write after it. */
static void test_gate_closing_mid_pass_stops_writes(void **state)
{
    (void)state;
    setup_pools(3, 0);
    q[0].ready = q[1].ready = q[2].ready = 2;
    gate_calls = 0;
    gate_open_for = 2; /* open before the pass and for the first pool, closed after */
    struct reconcile_opts o = {.gate = gate_counting};
    assert_int_equal(reconcile_new(&cfg, NULL, &fk.base, NULL, &o, &rec), 0);
    assert_true(gate_counting(NULL));     /* what reconcile_run asks before a pass */
    reconcile_pass(rec);
    assert_int_equal(fk.starts[0], 2);
    assert_int_equal(fk.starts[1], 0);
    assert_int_equal(fk.starts[2], 0);
}

/* A failed allocation while deciding: the pool holds for this tick. It must not act on the
 * previous tick's decision, whose delete indexes point into the previous list: on main they
 * picked a running worker of the new list. */
static void test_decide_oom_holds(void **state)
{
    (void)state;
    setup_pools(1, 0);
    pools[0].successful_history = 0;
    make(false);
    int64_t now = util_now_ms();
    struct backend_worker w;
    memset(&w, 0, sizeof w);
    w.id = fid("done");
    w.w.state = SCALE_SUCCEEDED;
    w.w.created_ms = now - 60000; /* the sample has seen it: history, deleted at once */
    w.w.started_ms = now - 59000;
    w.w.finished_ms = now - 50000;
    backend_list_push(&fk.w[0], &w);
    assert_int_equal(reconcile_pass(rec), 0); /* decides: delete index 0 */
    assert_int_equal(fk.removes[0], 1);
    assert_int_equal(fk.w[0].n, 0);
    /* Two running workers appear, then a finished one: the decision's table of deletes is
     * needed again, and that allocation fails. The old decision's index 0 is now run0. */
    for (int i = 0; i < 2; i++) {
        memset(&w, 0, sizeof w);
        w.id = fid("run%d", i);
        w.w.state = SCALE_RUNNING;
        w.w.created_ms = w.w.started_ms = now - 60000;
        backend_list_push(&fk.w[0], &w);
    }
    memset(&w, 0, sizeof w);
    w.id = fid("done2");
    w.w.state = SCALE_SUCCEEDED;
    w.w.created_ms = now - 60000;
    w.w.started_ms = now - 59000;
    w.w.finished_ms = now - 50000;
    backend_list_push(&fk.w[0], &w);
    q[0].ready = 3;
    fail_calloc_n = 1;
    fail_calloc_size = sizeof(struct scale_delete);
    assert_int_equal(reconcile_pass(rec), JP_ENOMEM);
    assert_int_equal(fail_calloc_size, 0);  /* the seam fired */
    assert_int_equal(fk.removes[0], 1);     /* nothing deleted (f_remove refuses running ones) */
    assert_int_equal(fk.starts[0], 0);      /* nothing started */
    assert_int_equal(fk.w[0].n, 3);
    const struct reconcile_pool_status *st = reconcile_status(rec, 0);
    assert_int_equal(st->last_err, JP_ENOMEM);
    assert_int_equal(st->errors, 1);
}

/* A finished worker's task figures reach the histograms once, however many passes list it;
 * unknown figures are left out; the decision and the alerting gauges are published. */
static void test_task_figures_and_decision_published(void **state)
{
    (void)state;
    setup_pools(1, 0);
    pools[0].pending_timeout_ms = 300000;
    q[0].ready = 2;
    struct metrics *m = NULL;
    assert_int_equal(metrics_new("", &m), 0);
    assert_int_equal(reconcile_new(&cfg, NULL, &fk.base, m, NULL, &rec), 0);
    int64_t now = util_now_ms();
    const double figs[2][2] = {{42.5, 3.25}, {-1, 7}};
    for (int i = 0; i < 2; i++) {
        struct backend_worker w;
        memset(&w, 0, sizeof w);
        w.id = fid("done%d", i);
        w.w.state = SCALE_SUCCEEDED;
        w.w.created_ms = now - 60000;
        w.w.started_ms = now - 59000;
        w.w.finished_ms = now - 50000;
        w.task_wait_s = figs[i][0];
        w.task_duration_s = figs[i][1];
        w.outcome_new = true;
        backend_list_push(&fk.w[0], &w);
    }
    for (int pass = 0; pass < 3; pass++) reconcile_pass(rec);
    char *text = NULL;
    assert_int_equal(metrics_render(m, &text, NULL), 0);
    assert_non_null(strstr(text, "\njobpool_task_wait_seconds_count{pool=\"a\"} 1\n"));
    assert_non_null(strstr(text, "\njobpool_task_wait_seconds_sum{pool=\"a\"} 42.5\n"));
    assert_non_null(strstr(text, "\njobpool_task_duration_seconds_count{pool=\"a\"} 2\n"));
    assert_non_null(strstr(text, "\njobpool_task_duration_seconds_sum{pool=\"a\"} 10.25\n"));
    assert_non_null(strstr(text, "\njobpool_pool_max_active{pool=\"a\"} 10\n"));
    assert_non_null(strstr(text, "\njobpool_pool_pending_timeout_seconds{pool=\"a\"} 300\n"));
    assert_non_null(strstr(text, "\njobpool_queue_depth_ok{pool=\"a\"} 1\n"));
    free(text);
    assert_int_equal(metrics_render_pools(m, &text, NULL), 0);
    assert_non_null(strstr(text, "\"name\":\"a\""));
    assert_non_null(strstr(text, "\"ready\":2,"));
    assert_non_null(strstr(text, "\"pending\":2,"));      /* the two started on the first pass */
    assert_non_null(strstr(text, "\"reason\":\"covered\""));
    assert_non_null(strstr(text, "\"tasks_total\":2}"));
    /* decided_at is unix time (status prints "N s ago" from it), not the loop's clock. */
    const char *at = strstr(text, "\"decided_at\":");
    assert_non_null(at);
    double decided = strtod(at + 13, NULL);
    assert_true(decided > (double)util_wall_ms() / 1000.0 - 60 &&
                decided <= (double)util_wall_ms() / 1000.0 + 1);
    free(text);
    reconcile_free(rec);
    rec = NULL;
    metrics_free(m);
}

/* A regex pool: each queue gets its own workers, one queue's pending workers never cover
 * another's messages, and the global cap re-splits in proportion. */
static void test_regex_pool_per_queue(void **state)
{
    (void)state;
    setup_pools(1, 0);
    pools[0].queue = NULL;
    pools[0].queue_regex = "^jobs[.]";
    pools[0].max_active = 20;
    rq_n = 3;
    snprintf(rq[0].name, sizeof rq[0].name, "jobs.a");
    snprintf(rq[1].name, sizeof rq[1].name, "jobs.b");
    snprintf(rq[2].name, sizeof rq[2].name, "jobs.c");
    rq[0].ready = 6;
    rq[1].ready = 3;
    rq[2].ready = 0;
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(nstart_calls, 2);
    assert_string_equal(start_queue[0], "jobs.a");
    assert_int_equal(start_n[0], 6);
    assert_string_equal(start_queue[1], "jobs.b");
    assert_int_equal(start_n[1], 3);
    /* Same (lagging) figures: every queue is covered by its own pending workers. */
    nstart_calls = 0;
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(nstart_calls, 0);
    /* jobs.c gets 4 messages: only it gets workers, though a and b hold 9 pending ones. */
    rq[2].ready = 4;
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(nstart_calls, 1);
    assert_string_equal(start_queue[0], "jobs.c");
    assert_int_equal(start_n[0], 4);
    assert_int_equal(fk.starts[0], 13);
    /* A queue that stops matching: its workers still count as active (maxActive 20: 7 left). */
    rq_n = 2;
    snprintf(rq[1].name, sizeof rq[1].name, "jobs.d");
    rq[1].ready = 30;
    nstart_calls = 0;
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(nstart_calls, 1);
    assert_string_equal(start_queue[0], "jobs.d");
    assert_int_equal(start_n[0], 7);
}

/* maxActiveTotal grants a regex pool fewer than it asked: the grant is split in proportion. */
static void test_regex_pool_global_cap(void **state)
{
    (void)state;
    setup_pools(1, 4);
    pools[0].queue = NULL;
    pools[0].queue_regex = "^jobs[.]";
    rq_n = 2;
    snprintf(rq[0].name, sizeof rq[0].name, "jobs.a");
    snprintf(rq[1].name, sizeof rq[1].name, "jobs.b");
    rq[0].ready = 6;
    rq[1].ready = 2;
    make(false);
    assert_int_equal(reconcile_pass(rec), 0);
    assert_int_equal(nstart_calls, 2);
    assert_int_equal(start_n[0], 3);
    assert_int_equal(start_n[1], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_regex_pool_per_queue, teardown),
        cmocka_unit_test_teardown(test_throttled_start_waits_retry_after, teardown),
        cmocka_unit_test_teardown(test_regex_pool_global_cap, teardown),
        cmocka_unit_test_teardown(test_one_worker_per_message_no_duplicates, teardown),
        cmocka_unit_test_teardown(test_burst_capped_at_max_active, teardown),
        cmocka_unit_test_teardown(test_failed_read_holds_and_backs_off, teardown),
        cmocka_unit_test_teardown(test_missing_queue_is_zero, teardown),
        cmocka_unit_test_teardown(test_stale_backend_holds, teardown),
        cmocka_unit_test_teardown(test_history_cleanup, teardown),
        cmocka_unit_test_teardown(test_recent_history_kept_until_seen, teardown),
        cmocka_unit_test_teardown(test_global_cap_shared, teardown),
        cmocka_unit_test_teardown(test_keda_policy_routes, teardown),
        cmocka_unit_test_teardown(test_dry_run_changes_nothing, teardown),
        cmocka_unit_test_teardown(test_start_error_is_reported, teardown),
        cmocka_unit_test_teardown(test_decide_oom_holds, teardown),
        cmocka_unit_test_teardown(test_orphans_count_and_are_trimmed, teardown),
        cmocka_unit_test_teardown(test_gate_closing_mid_pass_stops_writes, teardown),
        cmocka_unit_test_teardown(test_task_figures_and_decision_published, teardown),
        cmocka_unit_test_teardown(test_amqp_probe_wakes_a_pass, teardown),
        cmocka_unit_test_teardown(test_recheck_after_start_lag, teardown),
        cmocka_unit_test(test_management_lag_config),
        cmocka_unit_test_teardown(test_release_after_pass, teardown),
    };
    return cmocka_run_group_tests_name("reconcile", tests, NULL, NULL);
}
