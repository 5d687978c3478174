/* metrics.h: Prometheus text on /metrics plus the /healthz and /readyz probes, over HTTP. */
#ifndef JP_METRICS_H
#define JP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Ownership and threads. The metrics object keeps its OWN copy of every figure: the reconcile
 * loop reports through the functions below, each of which copies its arguments under one mutex,
 * and the HTTP listener (one thread of its own, in metrics.c) renders only that copy. The
 * listener never reads live reconcile state, and a scrape never blocks the loop for longer than
 * it takes to format the text (microseconds). Every function accepts m == NULL and does nothing,
 * so callers need not check whether metrics are enabled. Strings are copied; the caller keeps
 * ownership of what it passes in.
 *
 * Counters (…_total) and the histogram live here, so the loop reports increments, not totals.
 * Gauges are replaced as a whole per pool with metrics_pool_publish().
 */

struct metrics;

enum metrics_worker_state {
    METRICS_PENDING = 0,
    METRICS_RUNNING,
    METRICS_SUCCEEDED,
    METRICS_FAILED,
    METRICS_NSTATES
};

/* reason label of jobpool_workers_deleted_total. */
enum metrics_delete_reason {
    METRICS_DEL_SUCCEEDED_HISTORY = 0, /* "succeeded_history": beyond successfulHistory */
    METRICS_DEL_FAILED_HISTORY,        /* "failed_history": beyond failedHistory */
    METRICS_DEL_PENDING_TIMEOUT,       /* "pending_timeout": pending longer than pendingTimeout */
    METRICS_DEL_ORPHANED,              /* "orphaned": its pool is no longer configured */
    METRICS_NREASONS
};

/* source label of jobpool_errors_total. */
enum metrics_error_source {
    METRICS_SRC_RABBITMQ = 0,          /* "rabbitmq" */
    METRICS_SRC_KUBERNETES,            /* "kubernetes" */
    METRICS_SRC_CONFIG,                /* "config" */
    METRICS_SRC_LOCAL,                 /* "local": the local process backend */
    METRICS_NSOURCES
};

/* The gauges of one pool, as last observed by the loop. */
struct metrics_pool_state {
    bool depth_ok;                     /* false: the queue gauges are left out of /metrics */
    int64_t messages_ready;            /* jobpool_queue_messages_ready */
    int64_t messages_unacked;          /* jobpool_queue_messages_unacked */
    double depth_age_seconds;          /* jobpool_queue_depth_age_seconds: age of that sample */
    bool workers_ok;                   /* false: jobpool_workers is left out for this pool */
    int64_t workers[METRICS_NSTATES];  /* jobpool_workers{state} */
    double oldest_pending_seconds;     /* jobpool_workers_oldest_pending_seconds; 0: none */
    int64_t max_active;                /* jobpool_pool_max_active (the pool's maxActive) */
    double pending_timeout_seconds;    /* jobpool_pool_pending_timeout_seconds */
    /* The last decision, for /debug/pools only (not in /metrics). */
    int64_t consumers, waiting, active, start, deletes;
    const char *reason;                /* static string (scale.h's reasons); NULL: none yet */
    int last_err;                      /* 0 or the pool's last jp_err code */
    int64_t decided_wall_ms;           /* when the decision was made (unix ms); 0: never */
};

struct metrics_opts {
    int64_t poll_interval_ms;          /* /healthz fails after 3 of these without a tick; 2000 */
    const char *version;               /* jobpool_build_info{version}; default JP_VERSION */
    unsigned max_connections;          /* concurrent connections; default 32 */
    unsigned request_timeout_s;        /* a connection must deliver a whole request header within
                                        * this long of opening (or of its previous response), or
                                        * it is closed (slowloris); also the idle timeout,
                                        * and the time a client has to take an answer;
                                        * default 10 */
    size_t memory_limit;               /* per-connection input buffer; caps the request header
                                        * (a bigger one gets 431); 16 KiB */
    /* Monotonic clock for /healthz, in ms; NULL: util_now_ms. Tests inject a fake one. */
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
    /* Wall clock (unix ms) for jobpool_last_tick_timestamp_seconds; NULL: util_wall_ms. It gets
     * clock_arg as well. */
    int64_t (*wall_clock_ms)(void *arg);
};

/* Start serving on address: "HOST:PORT" (HOST a name, IPv4 or [IPv6]), ":PORT" (all interfaces,
 * dual stack where available) or "" (disabled: a valid object that serves nothing). Port 0 picks
 * a free port (see metrics_port). opts may be NULL for defaults. Returns 0, JP_EINVAL (malformed
 * address), JP_EDNS (host unresolvable), JP_EIO (could not bind/listen) or JP_ENOMEM; *out NULL
 * on failure. Free with metrics_free. */
int metrics_new_opts(const char *address, const struct metrics_opts *opts, struct metrics **out);
/* metrics_new_opts with default options. */
int metrics_new(const char *address, struct metrics **out);
/* Stop the listener (waits for its thread) and free everything. NULL is fine. */
void metrics_free(struct metrics *m);

/* The bound TCP port, or 0 when disabled. */
uint16_t metrics_port(const struct metrics *m);

/* Replace the gauges of pool (created on first use; at most 512 pools, later ones ignored). */
void metrics_pool_publish(struct metrics *m, const char *pool, const struct metrics_pool_state *s);
/* Counter increments (n >= 0; negative n is ignored). */
void metrics_count_started(struct metrics *m, const char *pool, int64_t n);
void metrics_count_deleted(struct metrics *m, const char *pool, enum metrics_delete_reason r,
                           int64_t n);
void metrics_count_wasted(struct metrics *m, const char *pool, int64_t n);
/* One error: code is a negative jp_err code, shown lowercased as code="timeout". pool may be
 * NULL (the series then has no pool label). At most 1024 distinct series are kept. */
void metrics_count_error(struct metrics *m, const char *pool, enum metrics_error_source src,
                         int code);
/* One finished task of pool, as its worker reported it: seconds its message waited in the queue
 * and seconds it ran; a figure < 0 (unknown) is not observed. */
void metrics_observe_task(struct metrics *m, const char *pool, double wait_s, double duration_s);
/* Observe one reconcile pass of pool (NULL: a series without the pool label), in seconds. */
void metrics_observe_reconcile(struct metrics *m, const char *pool, double seconds);

/* jobpool_leader: 1 while this replica leads (or leader election is off), else 0. Initially 0. */
void metrics_set_leader(struct metrics *m, bool leader);
/* jobpool_cache_age_seconds{kind} and jobpool_cache_stale{kind} of one watched kind (at most 8
 * kinds; later ones are ignored). */
void metrics_set_cache(struct metrics *m, const char *kind, double age_seconds, bool stale);
/* The loop is alive: call once per tick. /healthz is 500 once 3 poll intervals pass without a
 * call (the window starts at metrics_new); jobpool_last_tick_timestamp_seconds shows the wall
 * time of the last call (of metrics_new before the first), so Prometheus can alert on it. */
void metrics_tick(struct metrics *m);
/* Change the poll interval that /healthz measures against (e.g. after a config reload). */
void metrics_set_poll_interval(struct metrics *m, int64_t poll_interval_ms);
/* /readyz is 200 once this was called with true (after the first full successful pass), 503
 * before. */
void metrics_set_ready(struct metrics *m, bool ready);

/* Render the /debug/pools JSON (each pool's last decision and figures, see docs/operations.md)
 * into a malloc'd string the caller frees. Returns 0, JP_ENOMEM or JP_ETOOBIG. */
int metrics_render_pools(struct metrics *m, char **out, size_t *len);

/* Render the /metrics text (exposition format 0.0.4) into a malloc'd string the caller frees.
 * Returns 0, JP_ENOMEM or JP_ETOOBIG. Used by the listener; exposed for tests and tools. */
int metrics_render(struct metrics *m, char **out, size_t *len);

#endif
