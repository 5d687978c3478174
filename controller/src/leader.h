/* leader.h: leader election on a coordination.k8s.io/v1 Lease, as client-go does it. */
#ifndef JP_LEADER_H
#define JP_LEADER_H

#include <stdbool.h>
#include <stdint.h>

struct kube_client;
struct leader;

struct leader_opts {
    const char *lease_name;     /* default "jobpool-leader" */
    const char *identity;       /* default "<hostname>_<pid>" */
    int64_t lease_duration_ms;  /* 15 s: how long a silent holder keeps the lease */
    int64_t renew_deadline_ms;  /* 10 s: the leader steps down if it cannot renew for this long */
    int64_t retry_period_ms;    /* 2 s: how often to try to acquire or renew */
};

/* kc is borrowed and must outlive the leader. Returns 0 or JP_ENOMEM; *out NULL on failure. */
int leader_new(struct kube_client *kc, const struct leader_opts *o, struct leader **out);
void leader_free(struct leader *l);

/* Try to acquire or renew when a retry period has passed since the last try (cheap otherwise).
 * Returns whether this replica leads now. Remote timestamps are not trusted: a lease counts as
 * expired when its record has not changed for lease_duration as observed on our own clock. */
bool leader_tick(struct leader *l);
bool leader_is_leader(const struct leader *l);
const char *leader_identity(const struct leader *l);

/* On clean shutdown: if leading, give the lease up (empty holder, 1 s duration) so another
 * replica takes over at its next retry instead of waiting out the lease. */
void leader_release(struct leader *l);

#endif
