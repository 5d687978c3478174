/* backend.h: one interface, two implementations: workers as Kubernetes Jobs or local processes. */
#ifndef JP_BACKEND_H
#define JP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "scale.h"

struct metrics;

struct backend_worker {
    /* The Job's name ("pid-<n>" locally), namespace and uid ("" locally; deletes are
     * conditional on the uid). Borrowed from the backend: valid until its next observe, which
     * is as long as a pass uses a list (a worker removed in the pass included). Pointers, not
     * copies: a worker is 112 bytes (160 with the name in a 64-byte buffer, 248 with the
     * namespace and uid in theirs too), times 20,000 workers. */
    const char *id;
    const char *ns;
    const char *uid;
    const char *pool;           /* the pool label; for orphans the only trace of their pool;
                                 * interned (intern.h), "" when unknown */
    const char *queue;          /* the queue it was given (JOBPOOL_QUEUE; the Job annotation
                                 * jobpool.dev/queue), "" when unknown; interned (intern.h) */
    struct scale_worker w;      /* state and times, as scale_decide wants them */
    /* The worker's own figures (progress.h), seconds; < 0 unknown. Set on finished workers.
     * Floats (a histogram's precision) keep a worker within a kube snapshot entry's 96 bytes,
     * whose place it takes (backend_kube.c). */
    float task_wait_s;          /* the message's publish (AMQP timestamp) to its delivery */
    float task_duration_s;      /* how long the task ran */
    int exit_code;              /* finished workers: the task's exit code; -1 unknown */
    bool wasted;                /* finished having found no task (idle exit) */
    /* True in exactly one listing of a finished worker (the first after it finished, since
     * the backend was created): the caller records its figures then, and only then. */
    bool outcome_new;
};

/* A list of workers, reused across ticks by the caller: a growable array of the caller's own
 * (cap > 0 once it holds any), or a view of the backend's table (backend_list_view, cap 0),
 * valid until the pass ends (release) or the backend's next observe, in which the caller may
 * set the scale fields that are its own (w.queue) but nothing else. Push and reserve on a view start an array of the
 * caller's own; free gives back only that. */
struct backend_list {
    struct backend_worker *v;
    size_t n, cap;
};
int backend_list_push(struct backend_list *l, const struct backend_worker *w);
/* Room for exactly n workers when there is less (0 or JP_ENOMEM); given back when the list
 * holds more than four times n. */
int backend_list_reserve(struct backend_list *l, size_t n);
/* l becomes a view of n workers at v (what it owned is freed). */
void backend_list_view(struct backend_list *l, struct backend_worker *v, size_t n);
void backend_list_free(struct backend_list *l);

/* Counters a backend reports since it was created (for metrics and the demo summary). */
struct backend_stats {
    unsigned long started;
    unsigned long wasted;       /* workers that exited having found no task */
    unsigned long succeeded;
    unsigned long failed;
};

struct backend {
    const char *name;           /* "kube" or "local" */
    /* How long after a worker turns SCALE_RUNNING it may still not be a consumer. The local
     * backend reports RUNNING only once the worker said it consumes (0); a Kubernetes pod is
     * Running before its container has connected (about a second). */
    int64_t start_lag_ms;
    /* Refresh what is known: reap children, drain watch events. Called once per tick. */
    int (*observe)(struct backend *b);
    /* Fill out (reset first) with pool's workers, active and finished: copies, or a view of
     * the backend's own table (struct backend_list). JP_ESTALE: what the backend knows of
     * them is too old to act on; the pool holds (no starts, no deletes). */
    int (*list)(struct backend *b, const struct cfg_pool *pool, struct backend_list *out);
    /* Fill out (reset first) with the workers whose pool is not in the config (removed or
     * renamed): they still count against maxActiveTotal, and only finished ones are removed
     * (with pool NULL). NULL when the backend cannot have any (local: its workers die with it). */
    int (*list_orphans)(struct backend *b, struct backend_list *out);
    /* Start up to n workers on queue (pool->queue, or one of a regex pool's matches) for ready
     * waiting messages; *started tells how many did. Returns the first error. */
    int (*start)(struct backend *b, const struct cfg_pool *pool, const char *queue, int n,
                 int64_t ready, int *started);
    /* Delete a finished worker's record, or a pending one that timed out. Never a running one:
     * before a pending worker is deleted the backend confirms live that it has not started,
     * and returns JP_ECANCELED (nothing deleted) when it has or when it changed meanwhile.
     * pool is NULL for an orphan. */
    int (*remove)(struct backend *b, const struct cfg_pool *pool, const struct backend_worker *w);
    /* After a failed call: how long the server asked to wait (a 429's or 503's Retry-After),
     * in ms, or -1 when it did not say. The pool backs off that long instead of doubling. May
     * be NULL. */
    int64_t (*retry_hint_ms)(struct backend *b);
    /* The pass is over: no list made since observe is read again before the next observe,
     * so the backend may give back what its lists point into (the kube backend's snapshot:
     * about 200 bytes a Job, held for the length of a pass instead of all the time). May be
     * NULL. */
    void (*release)(struct backend *b);
    /* Report the backend's own gauges (the kube cache's age) once per pass; may be NULL. */
    void (*report)(struct backend *b, struct metrics *m);
    /* Per-pool counters. */
    void (*stats)(struct backend *b, const struct cfg_pool *pool, struct backend_stats *out);
    /* Stop: local workers get SIGTERM and up to grace_ms to finish or requeue; Jobs are left. */
    void (*shutdown)(struct backend *b, long grace_ms);
    void (*destroy)(struct backend *b);
};

/* The times in struct scale_worker are on the controller's monotonic clock (util_now_ms): a
 * backend takes them from what it observed itself, never from another machine's clock. */

/* Local processes. worker_path is the jobpool-worker binary used when a pool has no
 * worker.command (NULL: "jobpool-worker" from PATH). The backend reads credentials through
 * cfg_secret_read to hand JOBPOOL_AMQP_URL to workers. */
int backend_local_new(const struct cfg *cfg, const char *worker_path, struct backend **out);

struct kube_client;
/* Kubernetes Jobs through kc (not owned). Each pool's Jobs live in its JobPool's namespace, the
 * file's pools' in kc's (the controller's). */
int backend_kube_new(const struct cfg *cfg, struct kube_client *kc, struct backend **out);
/* Where the kube backend watches Jobs and Pods (kube_cache_opts.namespaces), for the controller's
 * namespace home: NULL (home only) without JobPools; {""} (one cluster-wide watch per kind,
 * narrowed by the instance label) when JobPools are served in every namespace; else home and
 * each of kubernetes.watchNamespaces once (a watch per namespace: the RBAC is Roles there).
 * *out (its strings borrowed from cfg and home) is freed with free. 0 or JP_ENOMEM. */
int backend_kube_cache_namespaces(const struct cfg *cfg, const char *home, const char ***out,
                                  size_t *n);

struct pools;
/* The pool set the kube backend serves besides the config file's (borrowed): Jobs of its pools
 * are not orphans. */
void backend_kube_serve(struct backend *b, const struct pools *ps);

static inline void backend_free(struct backend *b)
{
    if (b) b->destroy(b);
}

#endif
