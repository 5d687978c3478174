/* leader.c: acquire, renew and release a Lease from a thread of its own; only the holder acts. */
#define _GNU_SOURCE
#include "leader.h"
#include "err.h"
#include "kube.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct leader {
    struct kube_client *kc;     /* owned: the renewer's own connections */
    char name[64];
    char id[128];
    int64_t duration_ms, deadline_ms, retry_ms;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;         /* guards the fields below */
    pthread_cond_t cv;
    bool stop;
    bool leading;
    int64_t last_renew;         /* monotonic ms of our last successful acquire/renew */
    /* Renewer thread only: */
    char seen_rv[24];           /* the record we last observed, and when it changed */
    int64_t seen_at;
};

static void fill(struct leader *l, struct kube_lease *lease, int transitions)
{
    int64_t now = util_wall_ms();
    snprintf(lease->name, sizeof lease->name, "%s", l->name);
    snprintf(lease->holder, sizeof lease->holder, "%s", l->id);
    lease->duration_s = (int)((l->duration_ms + 999) / 1000);
    lease->renew_ms = now;
    if (!lease->acquire_ms || transitions != lease->transitions) lease->acquire_ms = now;
    lease->transitions = transitions;
}

/* Under mu. */
static void set_leading(struct leader *l, bool leading)
{
    if (leading != l->leading)
        log_msg(leading ? LOG_INFO : LOG_WARN, NULL, 0, "%s lease %s as %s",
                leading ? "acquired" : "lost", l->name, l->id);
    l->leading = leading;
}

/* One attempt: 0 when we hold the lease afterwards, else an error or JP_EEXISTS (held by
 * someone else and not expired). */
static int attempt(struct leader *l, int64_t now)
{
    struct kube_lease cur;
    memset(&cur, 0, sizeof cur);
    int rc = kube_lease_get(l->kc, l->name, &cur);
    if (rc == JP_ENOTFOUND) {
        struct kube_lease nl;
        memset(&nl, 0, sizeof nl);
        fill(l, &nl, 0);
        return kube_lease_create(l->kc, &nl, NULL);
    }
    if (rc) return rc;
    if (strcmp(cur.resource_version, l->seen_rv) != 0) {
        snprintf(l->seen_rv, sizeof l->seen_rv, "%s", cur.resource_version);
        l->seen_at = now;
    }
    bool mine = strcmp(cur.holder, l->id) == 0;
    int64_t dur = cur.duration_s > 0 ? (int64_t)cur.duration_s * 1000 : l->duration_ms;
    bool expired = cur.holder[0] == '\0' || now - l->seen_at >= dur;
    if (!mine && !expired) return JP_EEXISTS;
    struct kube_lease nl = cur;
    fill(l, &nl, mine ? cur.transitions : cur.transitions + 1);
    rc = kube_lease_update(l->kc, &nl, &cur);
    if (rc == 0) {
        snprintf(l->seen_rv, sizeof l->seen_rv, "%s", cur.resource_version);
        l->seen_at = now;
    }
    return rc;
}

/* The renewer: one attempt every retry period, whatever the reconcile loop is doing, so a
 * long pass never lets the lease lapse. The attempt is timed from its start: a renewal that
 * took long counts from when it was sent, not from when it returned. */
static void *renewer(void *arg)
{
    struct leader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        pthread_mutex_unlock(&l->mu);
        int64_t t0 = util_now_ms();
        int rc = attempt(l, t0);
        pthread_mutex_lock(&l->mu);
        if (rc == 0) {
            l->last_renew = t0;
            set_leading(l, true);
        } else if (rc == JP_EEXISTS || rc == JP_ECONFLICT) {
            set_leading(l, false);
        } else {
            log_msg(LOG_WARN, NULL, rc, "lease %s: %s", l->name, kube_last_error(l->kc));
        }
        int64_t wake = t0 + l->retry_ms;
        while (!l->stop && util_now_ms() < wake) {
            /* The condition variable runs on CLOCK_MONOTONIC (leader_new). */
            int64_t left = wake - util_now_ms();
            util_cond_wait_ms(&l->cv, &l->mu, left > 100 ? 100 : left);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int leader_new(struct kube_client *kc, const struct leader_opts *o, struct leader **out)
{
    *out = NULL;
    struct leader *l = calloc(1, sizeof *l);
    if (!l) return JP_ENOMEM;
    int rc = JP_ENOMEM;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(l->name, sizeof l->name, "%s", o && o->lease_name ? o->lease_name : "jobpool-leader");
    if (o && o->identity) {
        snprintf(l->id, sizeof l->id, "%s", o->identity);
    } else {
        char host[64] = "jobpool";
        gethostname(host, sizeof host - 1);
        snprintf(l->id, sizeof l->id, "%s_%ld", host, (long)getpid());
    }
    l->duration_ms = o && o->lease_duration_ms > 0 ? o->lease_duration_ms : 15000;
    l->deadline_ms = o && o->renew_deadline_ms > 0 ? o->renew_deadline_ms : 10000;
    l->retry_ms = o && o->retry_period_ms > 0 ? o->retry_period_ms : 2000;
    if ((rc = kube_client_clone(kc, 0, &l->kc)) != 0) goto out;
    if (pthread_create(&l->thread, NULL, renewer, l) != 0) {
        rc = JP_ENOMEM;
        goto out;
    }
    l->started = true;
    rc = 0;
out:
    if (rc) leader_free(l);
    else *out = l;
    return rc;
}

static void stop_renewer(struct leader *l)
{
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = false;
}

void leader_free(struct leader *l)
{
    if (!l) return;
    stop_renewer(l);
    kube_client_free(l->kc);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

const char *leader_identity(const struct leader *l) { return l->id; }

bool leader_is_leader(struct leader *l)
{
    pthread_mutex_lock(&l->mu);
    /* Fencing: the lease is ours only until renewDeadline after its last renewal, as seen on
     * our own monotonic clock; past that we act no more, even before the renewer says so. */
    if (l->leading && util_now_ms() - l->last_renew >= l->deadline_ms) set_leading(l, false);
    bool v = l->leading;
    pthread_mutex_unlock(&l->mu);
    return v;
}

bool leader_tick(struct leader *l) { return leader_is_leader(l); }

bool leader_fence(void *ud) { return leader_is_leader(ud); }

void leader_release(struct leader *l)
{
    if (!l) return;
    stop_renewer(l);
    if (!l->leading) return;
    l->leading = false;
    struct kube_lease cur;
    memset(&cur, 0, sizeof cur);
    if (kube_lease_get(l->kc, l->name, &cur) == 0 && strcmp(cur.holder, l->id) == 0) {
        cur.holder[0] = '\0';
        cur.duration_s = 1;
        cur.renew_ms = util_wall_ms();
        if (kube_lease_update(l->kc, &cur, NULL) == 0)
            log_msg(LOG_INFO, NULL, 0, "released lease %s", l->name);
    }
}
