/* leader.c: acquire, renew and release a Lease; only the holder reconciles. */
#define _GNU_SOURCE
#include "leader.h"
#include "err.h"
#include "kube.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct leader {
    struct kube_client *kc;
    char name[64];
    char id[128];
    int64_t duration_ms, deadline_ms, retry_ms;
    bool leading;
    int64_t last_try;           /* monotonic ms of the last attempt, 0 never */
    int64_t last_renew;         /* monotonic ms of our last successful acquire/renew */
    char seen_rv[24];           /* the record we last observed, and when it changed */
    int64_t seen_at;
};

int leader_new(struct kube_client *kc, const struct leader_opts *o, struct leader **out)
{
    *out = NULL;
    struct leader *l = calloc(1, sizeof *l);
    if (!l) return JP_ENOMEM;
    l->kc = kc;
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
    *out = l;
    return 0;
}

void leader_free(struct leader *l) { free(l); }
bool leader_is_leader(const struct leader *l) { return l->leading; }
const char *leader_identity(const struct leader *l) { return l->id; }

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

bool leader_tick(struct leader *l)
{
    int64_t now = util_now_ms();
    if (l->last_try && now - l->last_try < l->retry_ms) {
        /* Between tries, a leader that has not renewed within the deadline steps down. */
        if (l->leading && now - l->last_renew > l->deadline_ms) set_leading(l, false);
        return l->leading;
    }
    l->last_try = now;
    int rc = attempt(l, now);
    if (rc == 0) {
        l->last_renew = now;
        set_leading(l, true);
    } else if (rc == JP_EEXISTS || rc == JP_ECONFLICT) {
        set_leading(l, false);
    } else {
        log_msg(LOG_WARN, NULL, rc, "lease %s: %s", l->name, kube_last_error(l->kc));
        if (l->leading && now - l->last_renew > l->deadline_ms) set_leading(l, false);
    }
    return l->leading;
}

void leader_release(struct leader *l)
{
    if (!l || !l->leading) return;
    struct kube_lease cur;
    memset(&cur, 0, sizeof cur);
    if (kube_lease_get(l->kc, l->name, &cur) == 0 && strcmp(cur.holder, l->id) == 0) {
        cur.holder[0] = '\0';
        cur.duration_s = 1;
        cur.renew_ms = util_wall_ms();
        if (kube_lease_update(l->kc, &cur, NULL) == 0)
            log_msg(LOG_INFO, NULL, 0, "released lease %s", l->name);
    }
    l->leading = false;
}
