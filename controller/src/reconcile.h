/* reconcile.h: the loop: observe each pool's depth and workers, decide, act, back off. */
#ifndef JP_RECONCILE_H
#define JP_RECONCILE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "rmq.h"
#include "scale.h"

struct metrics;
struct pool;
struct pools;
struct reconcile;

/* What the loop last saw of one pool (for summaries and tests). */
struct reconcile_pool_status {
    const char *name;
    bool depth_ok;
    int64_t ready, unacked, consumers;
    int pending, running, succeeded, failed;
    int last_start;
    int64_t last_start_wall_ms; /* when workers were last started (0: never) */
    unsigned long wasted_new;   /* wasted workers seen in the last pass */
    const char *reason;         /* the last decision's reason, static */
    int last_err;               /* 0 or the last error code */
    unsigned long started, deleted, errors;
    int64_t backoff_ms;         /* the last back-off chosen after a failure (0: none yet) */
};

struct reconcile_opts {
    bool dry_run;               /* decide and log, change nothing */
    /* Benchmarks only: decide how many workers to start with KEDA ScaledJob's published
     * formula (scale_decide_keda, one message per Job, maxReplicaCount = maxActive) instead of
     * jobpool's, so both can be measured by the same harness. History cleanup stays ours. */
    bool keda;
    enum scale_keda_strategy keda_strategy;
    /* Called before every pass, and again before acting on each pool: false skips the pass,
     * or stops it where it is (a follower under leader election stays healthy and ready but
     * idle; a leader whose lease lapsed mid-pass writes nothing more). NULL: always act. */
    bool (*gate)(void *ud);
    void *gate_ud;
    /* The pool set (borrowed). NULL: the config file's pools, from an internal set. */
    struct pools *pools;
    /* Called at the start of every pass that acts, before the pools are read (JobPools are
     * listed there); an error is counted but the pass goes on with the set it has. */
    int (*refresh)(void *ud);
    /* Called once per pool at the end of every pass that acts (status is written there). */
    void (*report)(void *ud, const struct pool *p, const struct reconcile_pool_status *st);
    void *hook_ud;
};

/* Borrow cfg, rmq, backend and metrics (metrics may be NULL); they must outlive the loop. */
int reconcile_new(const struct cfg *cfg, struct rmq_client *rmq, struct backend *be,
                  struct metrics *m, const struct reconcile_opts *o, struct reconcile **out);
void reconcile_free(struct reconcile *r);

/* One pass over every pool. Returns 0 when every pool was observed and acted on, else the
 * first error (the other pools were still handled). */
int reconcile_pass(struct reconcile *r);

/* Run passes every pollInterval until *stop is set. *wake (may be NULL) set from a signal
 * handler (SIGCHLD) asks for an early pass. With depthSource amqp the named queues are probed
 * between passes (rmq_probe, every 100 ms or ten times the probe's cost) and a queue that grew
 * starts the next pass at once. Returns 0. The loop never sleeps past a signal. */
int reconcile_run(struct reconcile *r, volatile sig_atomic_t *stop, volatile sig_atomic_t *wake);

/* Status of the i-th pool of the last pass (the file's pools first, in file order). */
const struct reconcile_pool_status *reconcile_status(const struct reconcile *r, size_t i);

#endif
