/* jobpools.h: JobPool objects on the API server: reading them into the pool set, and status. */
#ifndef JP_JOBPOOLS_H
#define JP_JOBPOOLS_H

#include <stdint.h>

#include "config.h"
#include "reconcile.h"

struct cJSON;
struct kube_client;
struct pool;
struct pools;

#define JOBPOOLS_API "/apis/jobpool.dev/v1alpha1"

struct jobpools;

/* Serve the JobPools of cfg->kubernetes.watchNamespaces (every namespace when unset) into ps.
 * A watch of them (watch.h) tells when something changed; only then are they listed again.
 * kc, cfg and ps are borrowed and must outlive it. 0 or JP_ENOMEM. */
int jobpools_new(struct kube_client *kc, const struct cfg *cfg, struct pools *ps,
                 struct jobpools **out);
void jobpools_free(struct jobpools *j);

/* When the watch saw a change since the last list (or has not synced yet), read the JobPools
 * (one list per namespace, or one across all) and hand them to the pool set
 * (pools_set_jobpools). Then write the status of each JobPool that is not served (invalid,
 * name clash), since reconcile never sees those. A missing CRD (404) is logged once and leaves
 * the set empty; any other failure keeps the set as it was. Returns 0 or the error. Meant as
 * reconcile_opts.refresh. */
int jobpools_refresh(void *j);

/* Write pool p's status from what reconcile saw in its last pass (st), when it differs from the
 * status the object carries: at most one write per pool per pass, none when nothing changed.
 * Does nothing for the file's pools. Meant as reconcile_opts.report. */
void jobpools_report(void *j, const struct pool *p, const struct reconcile_pool_status *st);

/* The status object for p and st at wall time now_ms, carrying over what the object's own
 * status (p->status) holds: lastTransitionTime of unchanged conditions, the wasted total and
 * lastScaleTime. st NULL: p is not served. *out is freed with cJSON_Delete. */
int jobpools_status(const struct pool *p, const struct reconcile_pool_status *st,
                    int64_t now_ms, struct cJSON **out);

struct jobpools_stats {
    unsigned long lists, list_errors, writes, write_errors, unchanged;
    unsigned long skipped;      /* passes that did not list: the watch saw no change */
};
void jobpools_get_stats(const struct jobpools *j, struct jobpools_stats *out);

#endif
