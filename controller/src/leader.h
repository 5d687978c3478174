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

/* Starts a thread that acquires and renews the lease every retry period, independently of the
 * reconcile loop, over its own connections (a clone of kc; kc is only read here). Returns 0 or
 * JP_ENOMEM; *out NULL on failure. */
int leader_new(struct kube_client *kc, const struct leader_opts *o, struct leader **out);
/* Stops the thread and frees everything. NULL is fine. */
void leader_free(struct leader *l);

/* Whether this replica may act now: it holds the lease and renewed it less than renewDeadline
 * ago on its own monotonic clock. Cheap (no request); safe from any thread. Remote timestamps
 * are not trusted: the renewer counts another holder's lease as expired when its record has not
 * changed for leaseDuration as observed on our own clock. */
bool leader_is_leader(struct leader *l);
/* The same, as the reconcile gate. */
bool leader_tick(struct leader *l);
/* The same, as a kube_client_set_fence callback (ud is the leader): every write of the
 * reconcile loop's client is withheld once the lease is no longer valid. */
bool leader_fence(void *ud);
const char *leader_identity(const struct leader *l);

/* On clean shutdown: stop renewing and, if leading, give the lease up (empty holder, 1 s
 * duration) so another replica takes over at its next retry instead of waiting out the lease. */
void leader_release(struct leader *l);

#endif
