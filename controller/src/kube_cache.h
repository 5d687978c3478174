/* kube_cache.h: the controller's view of its workers: Jobs with their Pods' states, watched. */
#ifndef JP_KUBE_CACHE_H
#define JP_KUBE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "kube.h"
#include "watch.h"

/* Two watches (watch.h) of the objects labelled managed-by=jobpool, in the client's namespace,
 * in a list of namespaces (one reflector each) or in all of them (one reflector): Jobs and Pods.
 * Both are keyed "namespace/name" (kube_key), so a name may recur across namespaces. Snapshots join them; reads never block on the network and cost no requests.
 * Creates and deletes the controller sends are expectations (store.h) until the watch shows
 * them, so neither a relist nor a lost answer makes the controller start a Job twice. */
struct kube_cache;

struct kube_cache_opts {
    int64_t resync_ms;          /* full relist period, default 5 min */
    int64_t watch_timeout_s;    /* timeoutSeconds of one watch, default 10 */
    const char *label_selector; /* NULL: managed-by=jobpool */
    /* NULL: the client's namespace only; {""}: every namespace, one cluster-wide watch each
     * for Jobs and Pods; else these namespaces, a watch of each kind per namespace. Copied. */
    const char *const *namespaces;
    size_t nnamespaces;
};

/* The reflector (watch source) of namespace ns among namespaces (as kube_cache_opts): its
 * index, or 0 when there is one reflector or ns is not listed. Pure; for tests too. */
size_t kube_cache_ns_index(const char *const *namespaces, size_t n, const char *ns);

/* Start the cache with its own connections and a copy of c's settings (c may be freed
 * afterwards). Returns 0 or JP_ENOMEM; network errors never fail this call, they are retried
 * in the background with backoff and logged. *out NULL on failure. */
int kube_cache_new(const struct kube_client *c, const struct kube_cache_opts *o,
                   struct kube_cache **out);
/* Stop the threads (within about a second) and free everything. NULL is fine. */
void kube_cache_free(struct kube_cache *k);

/* True once Jobs and Pods have both been listed at least once. */
bool kube_cache_synced(struct kube_cache *k);
/* Wait up to timeout_ms for the first sync; 0 or JP_ETIMEOUT. */
int kube_cache_wait_synced(struct kube_cache *k, int64_t timeout_ms);

/* One Job of a snapshot: what the cache keeps of it, joined with its pods. Its strings are in
 * the snapshot's arena (kube_snap_str), so an entry is 96 bytes where a struct kube_job is 376
 * (a snapshot of 20,000 Jobs: 7.5 MB as kube_jobs, about 3.5 MB so). */
struct kube_snap_job {
    uint32_t ns, name, pool, uid;   /* offsets into the arena: namespace, name, pool label (""
                                     * when absent), uid ("" for a create not yet seen) */
    const char *queue;              /* annotation jobpool.dev/queue, interned; "" unknown */
    int64_t created_ms, completion_ms, finished_ms, deleting_ms; /* as struct kube_job */
    int succeeded, failed;          /* status counts (a Job between pod retries has run) */
    int running_pods;               /* its pods in phase Running (or Unknown) */
    bool complete, failed_cond;     /* conditions Complete=True, Failed=True */
    bool no_task, reported;         /* as struct kube_job: the worker's last word */
    double task_wait_s, task_duration_s; /* < 0 unknown */
    enum kube_job_state state;      /* kube_job_state_of */
};

struct kube_snapshot {
    struct kube_snap_job *v;
    size_t n, cap;
    char *arena;                    /* every entry's strings, NUL-terminated */
    size_t alen, acap;
};
static inline const char *kube_snap_str(const struct kube_snapshot *s, uint32_t off)
{
    return s->arena + off;
}
/* Zero-initialise a snapshot; this frees it (and zeroes it again). NULL is fine. */
void kube_snapshot_free(struct kube_snapshot *s);

/* Replace out's contents with a snapshot of the Jobs of pool (NULL: every Job), states
 * computed, sorted by creation time, oldest first (NULL: by namespace and pool label
 * (kube_snap_cmp_pool), then by creation time). A pool name matches in every namespace.
 * Creates the controller sent and the watch has not shown yet are included (as pending Jobs);
 * deletes it sent and the watch has not shown are left out. Returns 0, JP_ESTALE when the cache
 * has not synced yet (out emptied) or JP_ENOMEM. out's arrays are sized to the snapshot
 * (reused, and given back when it shrinks to a quarter); entries and strings stay valid until
 * the next call with out. */
int kube_cache_snapshot(struct kube_cache *k, const char *pool, struct kube_snapshot *out);

/* Order of snapshot entry j against pool (ns, pool): by namespace, then pool label. The
 * all-pools snapshot is sorted by it, so a pool's Jobs are found by binary search. */
int kube_snap_cmp_pool(const struct kube_snapshot *s, const struct kube_snap_job *j,
                       const char *ns, const char *pool);

/* The age of the older of the two watches (watch_age_ms), and whether it is over max_age_ms;
 * each watch logs one line when it turns stale and one when it recovers (call once per tick). */
int64_t kube_cache_age_ms(struct kube_cache *k);
bool kube_cache_stale(struct kube_cache *k, int64_t max_age_ms);

/* The controller is about to create placeholder->name (a pending Job of placeholder->pool). */
int kube_cache_expect_created(struct kube_cache *k, const struct kube_job *placeholder);
/* The server created j: snapshots include it until the watch shows it (even across a relist
 * that was taken before it). */
void kube_cache_note_created(struct kube_cache *k, const struct kube_job *j);
/* The create of key ("namespace/name") certainly failed (the server refused it). */
void kube_cache_forget_created(struct kube_cache *k, const char *key);
/* The server deleted key (or had no such Job): snapshots leave it out from now on. */
void kube_cache_note_deleted(struct kube_cache *k, const char *key);

struct kube_cache_stats {
    unsigned long lists;        /* completed lists (jobs + pods each count one) */
    unsigned long watches;      /* watch requests started */
    unsigned long events;       /* watch events applied */
    unsigned long relists_gone; /* relists caused by 410 Gone */
    unsigned long errors;       /* failed requests */
    size_t jobs, pods;          /* objects held */
    struct watch_stats kind[2]; /* each watch's own: jobs, pods */
};
void kube_cache_get_stats(struct kube_cache *k, struct kube_cache_stats *out);
/* The names of the watches in kube_cache_stats.kind: "jobs", "pods". */
extern const char *const kube_cache_kinds[2];

#endif
