/* scale.h: the pure scaling decision: how many workers to start and which to delete. No I/O. */
#ifndef JP_SCALE_H
#define JP_SCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum scale_state { SCALE_PENDING = 0, SCALE_RUNNING, SCALE_SUCCEEDED, SCALE_FAILED };

/* All times are CLOCK_REALTIME milliseconds (Kubernetes timestamps are wall-clock too). */
struct scale_worker {
    enum scale_state state;
    int64_t created_ms;         /* when the worker (Job / process) was created */
    int64_t started_ms;         /* when it started running; 0 if it has not */
    int64_t finished_ms;        /* when it finished; 0 if active */
};

struct scale_input {
    bool depth_ok;              /* false: the depth read failed: hold, never scale down */
    int64_t ready;              /* messages ready */
    int64_t unacked;
    int64_t consumers;
    int64_t sample_ms;          /* when the depth sample was taken */
    const struct scale_worker *workers;
    size_t nworkers;
    int64_t now_ms;
};

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
    int64_t want;               /* workers the backlog asks for before caps */
    const char *reason;         /* static: "scale_up", "covered", "at_max", "max_per_tick",
                                   "global_cap", "min_active", "hold_no_data", "idle" */
};

/* Decide. Returns 0 or JP_EINVAL (bad limits) / JP_ENOMEM. out is always safe to free. */
int scale_decide(const struct scale_input *in, const struct scale_limits *lim,
                 struct scale_decision *out);
void scale_decision_free(struct scale_decision *d);

/* Share a global cap: want[i] workers asked by pool i, room the free slots in total. Writes
 * grant[i] <= want[i], sum(grant) <= room, in proportion to want, every pool with want > 0
 * getting at least 1 while room allows. */
void scale_share(const int64_t *want, size_t n, int64_t room, int64_t *grant);

#endif
