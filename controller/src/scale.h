/* scale.h: the pure scaling decision: how many workers to start and which to delete. No I/O. */
#ifndef JP_SCALE_H
#define JP_SCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum scale_state { SCALE_PENDING = 0, SCALE_RUNNING, SCALE_SUCCEEDED, SCALE_FAILED };

/* All times are milliseconds on one clock, the controller's monotonic one (util_now_ms):
 * ages are differences taken on that clock, so neither a skewed API server nor a stepped wall
 * clock changes them. finished_ms only orders finished workers among themselves. */
struct scale_worker {
    enum scale_state state;
    int64_t created_ms;         /* when the controller first saw (or made) the worker */
    int64_t started_ms;         /* when it was first seen running (for one first seen finished:
                                   when it was seen so; the latest it can have started); 0 if
                                   it has not */
    int64_t finished_ms;        /* when it finished; 0 if active */
    int queue;                  /* per-queue pools: index into scale_input.queues, -1 when it
                                 * serves none of them (a queue that stopped matching) */
    bool ran;                   /* SCALE_PENDING only: it has run before and waits to run again
                                   (a Job between pod retries). It will take a message, so it
                                   counts as pending, but it is never deleted as timed out */
};

/* One queue of a pool that serves several (a queueRegex pool), from the same sample. */
struct scale_queue {
    int64_t ready, unacked, consumers;
};

struct scale_input {
    bool depth_ok;              /* false: the depth read failed: hold, never scale down */
    int64_t ready;              /* messages ready */
    int64_t unacked;
    int64_t consumers;
    int64_t sample_ms;          /* when the depth sample was taken */
    /* The ready count is exact as of a read made after the workers were listed (depthSource
     * amqp): a worker listed as finished had taken its message (acked: gone; not acked:
     * delivered, so not ready) before the read, so it covers none of the ready messages. Only
     * a running worker's start lag remains (sample_ms). */
    bool exact;
    const struct scale_worker *workers;
    size_t nworkers;
    /* Bytes from one worker to the next: 0 for an array of struct scale_worker; the size of
     * the caller's element when each worker is a member of a larger record (the controller's
     * struct backend_worker), so the list is read where it is instead of copied. */
    size_t worker_stride;
    int64_t now_ms;
    /* A regex pool: its queues, counted one by one (ready/unacked/consumers above are then
     * ignored). per_queue with nqueues 0: no queue matches, nothing can be started. */
    bool per_queue;
    const struct scale_queue *queues;
    size_t nqueues;
};

/* Worker i of in (worker_stride). */
static inline const struct scale_worker *scale_worker_at(const struct scale_input *in, size_t i)
{
    size_t stride = in->worker_stride ? in->worker_stride : sizeof *in->workers;
    return (const struct scale_worker *)(const void *)((const char *)in->workers + i * stride);
}

struct scale_limits {
    int max_active;
    int min_active;
    int spare_workers;
    int max_start_per_tick;
    int messages_per_worker;
    int successful_history;
    int failed_history;
    int64_t pending_timeout_ms;
    int room;                   /* extra cap from maxActiveTotal for this pool; < 0: none */
};

enum scale_delete_reason { SCALE_DEL_SUCCEEDED_HISTORY = 0, SCALE_DEL_FAILED_HISTORY,
                           SCALE_DEL_PENDING_TIMEOUT };

struct scale_delete {
    size_t idx;                 /* index into scale_input.workers */
    enum scale_delete_reason reason;
};

struct scale_decision {
    int start;
    struct scale_delete *deletes; /* owned; free with scale_decision_free */
    size_t ndeletes;
    /* The numbers behind the decision, for the one-line log and metrics. */
    int active, pending, running, waiting, succeeded, failed;
    int unseen;                 /* finished workers that started after the sample */
    int64_t want;               /* workers the backlog asks for before caps */
    const char *reason;         /* static: "scale_up", "covered", "at_max", "max_per_tick",
                                   "global_cap", "min_active", "hold_no_data", "idle" */
    int64_t *queue_start;       /* per_queue: workers to start on each queue, summing to
                                   start; owned (scale_decision_free); NULL otherwise */
};

/* Decide one tick for one pool.
 *
 * Counting (see docs/scaling.md): active = SCALE_PENDING + SCALE_RUNNING workers. pending = the
 * SCALE_PENDING ones plus the running ones whose started_ms > sample_ms (the sample cannot have
 * seen them take a message); running = the other active ones. waiting = consumers - unacked,
 * never below 0, at most `running`. unseen = finished workers that started after the sample:
 * each took a message the sample still counts as ready, or found the queue empty (so those
 * were all taken); it only counts the finished workers still listed (history), and refines the
 * design's formula. With `exact` it is 0: the sample was read after they finished. backlog = ceil(ready / messages_per_worker).
 *   start = min(max(backlog + spare - pending - waiting - unseen, 0), max_active - active,
 *               max_start_per_tick, room (when room >= 0))
 * then topped up to min_active (within max_active and room). Negative counts count as 0; sums
 * saturate, so INT64_MAX ready is safe.
 *
 * Deletes: succeeded workers beyond successful_history and failed ones beyond failed_history,
 * oldest finished_ms first (ties: older created_ms, then lower index), listed in that order;
 * then SCALE_PENDING workers older than pending_timeout_ms (now_ms - created_ms; 0 disables)
 * that have not run before (ran false),
 * which are still counted as active this tick. A SCALE_RUNNING worker is never deleted.
 * depth_ok false: no start beyond the min_active top-up, no pending-timeout deletes, history
 * cleanup still runs, reason "hold_no_data".
 *
 * Returns 0, JP_EINVAL (NULL arguments, workers NULL with nworkers > 0, an unknown state, or bad
 * limits: max_active < 1, min_active outside [0, max_active], spare_workers < 0,
 * max_start_per_tick < 1, messages_per_worker < 1, a history < 0, pending_timeout_ms < 0) or
 * JP_ENOMEM. *out is zeroed first, so it is always safe to free, also on failure. */
int scale_decide(const struct scale_input *in, const struct scale_limits *lim,
                 struct scale_decision *out);
/* Per-queue pools (in->per_queue), each queue q counted on its own from the workers whose
 * .queue is q: backlog_q = ceil(ready_q / messages_per_worker), waiting_q = min(consumers_q -
 * unacked_q, running_q), need_q = max(backlog_q - pending_q - waiting_q - unseen_q, 0), so a
 * queue's own workers never cover another queue's messages. Workers of no queue (-1) still
 * count as active. Coverage beyond a queue's backlog (and every pending/waiting worker of no
 * queue) uses up spare_workers as it does for one queue:
 *   want = sum(need_q) + max(spare - excess, 0)
 * then the same caps and min_active top-up as above give start. With one queue this is exactly
 * the single-queue formula. start is split into queue_start: first min(start, sum need) in
 * proportion to need_q (scale_share: largest remainders, every needing queue at least one
 * while they last), the rest (spare, min_active) evenly over all queues, lower indices first.
 * per_queue with no queue: start 0 (nothing to serve), reason "idle". */

/* Frees d->deletes and d->queue_start and zeroes *d; NULL is fine. */
void scale_decision_free(struct scale_decision *d);

/* Share a global cap: want[i] workers asked by pool i, room the free slots in total. Writes
 * grant[i] <= want[i], sum(grant) <= room, in proportion to want, every pool with want > 0
 * getting at least 1 while room allows (when room is smaller than the number of such pools, the
 * largest wants get the 1s, ties to the lower index). Leftover slots after the proportional
 * floors go by largest remainder, ties to the larger want, then the lower index: the result is
 * deterministic. Negative want or room count as 0. grant must hold n entries.
 *
 * To apply maxActiveTotal: decide every pool with room = -1, pass each decision's start as
 * want[i] and maxActiveTotal - (sum of active over all pools) as room, then decide each pool
 * again with lim.room = grant[i]. */
void scale_share(const int64_t *want, size_t n, int64_t room, int64_t *grant);

/* ---- Baseline for comparison benchmarks and the simulation only; the controller never uses it.
 * KEDA ScaledJob's published decision (pkg/scaling/executor/scale_jobs.go and
 * pkg/scaling/scaledjob/metrics.go) with the rabbitmq scaler in QueueLength mode over HTTP:
 * queue length = messages (ready + unacked), maxScale = ceil(min(length / target_value,
 * max_replica_count)), runningJobCount = every unfinished worker, pendingJobCount = the
 * SCALE_PENDING ones (no pod Running or Succeeded). KEDA has no notion of sample staleness, so
 * sample_ms is ignored. depth_ok false behaves like a failed scaler: no metrics, so only the
 * minReplicaCount path can create jobs. Described in docs/scaling.md. */
enum scale_keda_strategy { SCALE_KEDA_DEFAULT = 0, SCALE_KEDA_ACCURATE, SCALE_KEDA_EAGER };

struct scale_keda_params {
    enum scale_keda_strategy strategy;
    double target_value;        /* the trigger's value: messages per job (KEDA's default is 20) */
    int64_t max_replica_count;  /* maxReplicaCount (KEDA's default is 100) */
    int64_t min_replica_count;  /* minReplicaCount (default 0) */
    double activation_value;    /* activationValue (default 0): active when length > it */
};

/* Jobs KEDA would create this tick. Returns 0 and *out_start >= 0, or JP_EINVAL (NULL
 * arguments, target_value <= 0 or not finite, max_replica_count < 1, min_replica_count < 0,
 * an unknown worker state); *out_start is 0 on failure. */
int scale_decide_keda(const struct scale_input *in, const struct scale_keda_params *p,
                      int64_t *out_start);

#endif
