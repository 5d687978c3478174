/* jobpools.c: JobPool objects: listed into the pool set each pass, their status written back. */
#define _GNU_SOURCE
#include "jobpools.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conns.h"
#include "err.h"
#include "kube.h"
#include "log.h"
#include "pools.h"
#include "util.h"
#include "watch.h"

#define LIST_PAGE 500

/* What the watch keeps of a JobPool: enough to know that something changed. The objects
 * themselves (a jobTemplate has no size bound a record could hold) are listed when it did. */
struct jp_rec {
    char key[128];              /* namespace/name */
    char uid[40];
    int64_t generation;
};

static int parse_jp(const cJSON *obj, void *rec)
{
    struct jp_rec *r = rec;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(md, "namespace");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(md, "name");
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(md, "uid");
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(md, "generation");
    if (!cJSON_IsString(ns) || !cJSON_IsString(name)) return JP_ESHAPE;
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s/%s", ns->valuestring, name->valuestring);
    if (cJSON_IsString(uid)) snprintf(r->uid, sizeof r->uid, "%s", uid->valuestring);
    r->generation = cJSON_IsNumber(gen) ? (int64_t)gen->valuedouble : 0;
    return 0;
}

static const struct watch_kind jp_kind = {"jobpools", "jobpools.jobpool.dev", JOBPOOLS_API,
                                          "jobpools", sizeof(struct jp_rec),
                                          sizeof(((struct jp_rec *)0)->key), parse_jp};

struct jobpools {
    struct kube_client *kc;
    const struct cfg *cfg;
    struct pools *ps;
    struct watch *w;            /* NULL: list every pass */
    struct conns *conns;        /* the Secrets JobPools name (connectionSecretRef) */
    unsigned long listed_gen;   /* the watch's generation when the last list began */
    bool listed;                /* a list has succeeded since the watch synced */
    bool crd_missing_logged;
    int last_list_err;
    struct jobpools_stats stats;
};

int jobpools_new(struct kube_client *kc, const struct cfg *cfg, struct pools *ps,
                 struct jobpools **out)
{
    struct jobpools *J = calloc(1, sizeof *J);
    *out = NULL;
    if (!J) return JP_ENOMEM;
    J->kc = kc;
    J->cfg = cfg;
    J->ps = ps;
    /* One reflector across all namespaces, or one per listed namespace. */
    static const char *const all[] = {""};
    struct watch_opts wo = {
        .namespaces = cfg->kubernetes.nwatch_namespaces
                          ? (const char *const *)cfg->kubernetes.watch_namespaces : all,
        .nnamespaces = cfg->kubernetes.nwatch_namespaces ? cfg->kubernetes.nwatch_namespaces : 1,
    };
    int rc = conns_new(kc, &cfg->rabbitmq, &J->conns);
    if (!rc) rc = watch_new(kc, &jp_kind, &wo, &J->w);
    if (rc) {
        conns_free(J->conns);
        free(J);
        return rc;
    }
    *out = J;
    return 0;
}

void jobpools_free(struct jobpools *j)
{
    if (!j) return;
    watch_free(j->w);
    conns_free(j->conns);
    free(j);
}

void jobpools_get_stats(const struct jobpools *j, struct jobpools_stats *out)
{
    *out = j->stats;
}

/* Append the items of every page under path to items. */
static int list_into(struct jobpools *J, const char *path, cJSON *items)
{
    char *cont = NULL;
    int rc = 0;
    do {
        char *url = cont ? util_strprintf("%s?limit=%d&continue=%s", path, LIST_PAGE, cont)
                         : util_strprintf("%s?limit=%d", path, LIST_PAGE);
        free(cont);
        cont = NULL;
        if (!url) return JP_ENOMEM;
        cJSON *body = NULL;
        rc = kube_request(J->kc, "GET", url, NULL, &body);
        free(url);
        J->stats.lists++;
        if (rc) break;
        cJSON *list = cJSON_DetachItemFromObjectCaseSensitive(body, "items");
        cJSON *it;
        while (cJSON_IsArray(list) && (it = cJSON_DetachItemFromArray(list, 0)))
            cJSON_AddItemToArray(items, it);
        cJSON_Delete(list);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(body, "metadata"), "continue");
        if (cJSON_IsString(c) && *c->valuestring && !(cont = util_strdup(c->valuestring)))
            rc = JP_ENOMEM;
        cJSON_Delete(body);
    } while (!rc && cont);
    free(cont);
    return rc;
}

/* List the JobPools into the pool set when the watch saw a change. */
static int list_jobpools(struct jobpools *J)
{
    const struct cfg_kubernetes *k = &J->cfg->kubernetes;
    /* The watch says whether anything changed since the last list; until it has synced, and
     * after a failed list, every pass lists. */
    bool synced = J->w && watch_synced(J->w);
    unsigned long gen = J->w ? watch_generation(J->w) : 0;
    if (synced && J->listed && gen == J->listed_gen) {
        J->stats.skipped++;
        return 0;
    }
    J->listed = false;
    cJSON *items = cJSON_CreateArray();
    if (!items) return JP_ENOMEM;
    int rc = 0;
    if (!k->nwatch_namespaces) {
        rc = list_into(J, JOBPOOLS_API "/jobpools", items);
    } else {
        for (size_t i = 0; !rc && i < k->nwatch_namespaces; i++) {
            char *path = util_strprintf(JOBPOOLS_API "/namespaces/%s/jobpools",
                                        k->watch_namespaces[i]);
            rc = path ? list_into(J, path, items) : JP_ENOMEM;
            free(path);
        }
    }
    if (rc == JP_ENOTFOUND) {
        /* No CRD: the file's pools go on; say it once. */
        if (!J->crd_missing_logged)
            log_warn("JobPool objects are not served: the jobpools.jobpool.dev CRD is not "
                     "installed (kubectl apply -f charts/jobpool/crds/)");
        J->crd_missing_logged = true;
        cJSON_Delete(items);
        if (!(items = cJSON_CreateArray())) return JP_ENOMEM;
        rc = 0;
    } else if (rc) {
        J->stats.list_errors++;
        if (rc != J->last_list_err)
            log_msg(LOG_WARN, NULL, rc, "listing JobPools failed; keeping the pools as they "
                    "were: %s", kube_last_error(J->kc));
        J->last_list_err = rc;
        cJSON_Delete(items);
        return rc;
    } else if (J->crd_missing_logged) {
        log_info("JobPool objects are served: the CRD is installed");
        J->crd_missing_logged = false;
    }
    J->last_list_err = 0;
    J->listed = synced;
    J->listed_gen = gen;
    rc = pools_set_jobpools(J->ps, items);
    cJSON_Delete(items);
    return rc;
}

/* Give every JobPool that names a Secret its connection (conns.h), or the reason it has none.
 * The Secrets are read here, by name, when due; clients no pool uses any more are freed. */
static int connect_pools(struct jobpools *J)
{
    int first = 0;
    int64_t now = util_now_ms();
    conns_begin(J->conns);
    for (size_t i = 0; i < pools_jobpool_count(J->ps); i++) {
        const struct pool *p = pools_jobpool_at(J->ps, i);
        if (!p->cfg || !p->cfg->connection_secret) continue;
        struct conn_use use;
        char reason[POOLS_REASON_LEN] = "", msg[POOLS_MESSAGE_LEN] = "";
        int rc = conns_get(J->conns, p->ns, p->cfg->connection_secret, now, &use, reason,
                           sizeof reason, msg, sizeof msg);
        if (rc == JP_ENOMEM) snprintf(reason, sizeof reason, "ConnectionSecretUnavailable");
        if ((rc = pools_set_conn(J->ps, i, rc ? NULL : &use, reason, msg)) && !first) first = rc;
    }
    pools_conns_done(J->ps);
    conns_end(J->conns);
    return first;
}

int jobpools_refresh(void *ud)
{
    struct jobpools *J = ud;
    int rc = list_jobpools(J);
    int crc = connect_pools(J);
    /* Reconcile never sees the pools it does not serve: their status is written here (only
     * when it changed). */
    for (size_t i = 0; i < pools_jobpool_count(J->ps); i++) {
        const struct pool *p = pools_jobpool_at(J->ps, i);
        if (!p->served) jobpools_report(J, p, NULL);
    }
    return rc ? rc : crc;
}

static void rfc3339(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const cJSON *old_condition(const struct pool *p, const char *type)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(p->status, "conditions")) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "type");
        if (cJSON_IsString(t) && !strcmp(t->valuestring, type)) return c;
    }
    return NULL;
}

/* One condition; its lastTransitionTime is the old one while the status stays the same. */
static int add_condition(cJSON *conds, const struct pool *p, const char *type, bool status,
                         const char *reason, const char *message, const char *now)
{
    const char *st = status ? "True" : "False";
    const cJSON *old = old_condition(p, type);
    const cJSON *ost = cJSON_GetObjectItemCaseSensitive(old, "status");
    const cJSON *olt = cJSON_GetObjectItemCaseSensitive(old, "lastTransitionTime");
    const char *when = cJSON_IsString(ost) && !strcmp(ost->valuestring, st) && cJSON_IsString(olt)
                           ? olt->valuestring : now;
    cJSON *c = cJSON_CreateObject();
    if (!c || !cJSON_AddStringToObject(c, "type", type) || !cJSON_AddStringToObject(c, "status", st) ||
        !cJSON_AddNumberToObject(c, "observedGeneration", (double)p->generation) ||
        !cJSON_AddStringToObject(c, "lastTransitionTime", when) ||
        !cJSON_AddStringToObject(c, "reason", reason) ||
        !cJSON_AddStringToObject(c, "message", message)) {
        cJSON_Delete(c);
        return JP_ENOMEM;
    }
    cJSON_AddItemToArray(conds, c);
    return 0;
}

static double old_number(const struct pool *p, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(p->status, key);
    return cJSON_IsNumber(v) && v->valuedouble > 0 ? v->valuedouble : 0;
}

/* The Ready condition's reason and message for a served pool. */
static void ready_of(const struct reconcile_pool_status *st, bool *ok, const char **reason,
                     char *msg, size_t len)
{
    *ok = false;
    if (!st->depth_ok) {
        *reason = "DepthUnavailable";
        snprintf(msg, len, "the queue depth cannot be read: %s", jp_strerror(st->last_err));
    } else if (st->last_err) {
        *reason = "WorkersFailed";
        snprintf(msg, len, "listing or starting workers failed: %s", jp_strerror(st->last_err));
    } else {
        *ok = true;
        *reason = "Serving";
        snprintf(msg, len, "the queue depth is read and workers start");
    }
}

int jobpools_status(const struct pool *p, const struct reconcile_pool_status *st, int64_t now_ms,
                    cJSON **out)
{
    char now[32], when[32], msg[POOLS_MESSAGE_LEN + 64];
    rfc3339(now_ms, now, sizeof now);
    *out = NULL;
    cJSON *s = cJSON_CreateObject();
    cJSON *conds = cJSON_CreateArray();
    if (!s || !conds) goto nomem;
    cJSON_AddNumberToObject(s, "observedGeneration", (double)p->generation);
    bool ready_ok = false, active = false;
    const char *reason = p->reason;
    if (st) {
        int active_n = st->pending + st->running;
        cJSON_AddNumberToObject(s, "ready", (double)st->ready);
        cJSON_AddNumberToObject(s, "active", active_n);
        cJSON_AddNumberToObject(s, "pending", st->pending);
        cJSON_AddNumberToObject(s, "running", st->running);
        cJSON_AddNumberToObject(s, "succeeded", st->succeeded);
        cJSON_AddNumberToObject(s, "failed", st->failed);
        cJSON_AddNumberToObject(s, "wasted", old_number(p, "wasted") + (double)st->wasted_new);
        const cJSON *last = cJSON_GetObjectItemCaseSensitive(p->status, "lastScaleTime");
        if (st->last_start_wall_ms) {
            rfc3339(st->last_start_wall_ms, when, sizeof when);
            cJSON_AddStringToObject(s, "lastScaleTime", when);
        } else if (cJSON_IsString(last)) {
            cJSON_AddStringToObject(s, "lastScaleTime", last->valuestring);
        }
        ready_of(st, &ready_ok, &reason, msg, sizeof msg);
        active = st->ready > 0 || active_n > 0;
        if (add_condition(conds, p, "Ready", ready_ok, reason, msg, now) ||
            add_condition(conds, p, "Active", active, active ? (st->ready > 0 ? "Backlog"
                          : "Workers") : "Idle", active ? "messages wait or workers run"
                          : "no backlog and no workers", now))
            goto nomem;
    } else {
        if (add_condition(conds, p, "Ready", false, reason[0] ? reason : "NotServed",
                          p->message && p->message[0] ? p->message : "not served", now) ||
            add_condition(conds, p, "Active", false, "NotServed", "the pool is not served", now))
            goto nomem;
    }
    if (add_condition(conds, p, "Paused", p->paused, p->paused ? "Annotation" : "NotPaused",
                      p->paused ? "jobpool.dev/paused is \"true\": no new workers; running "
                      "ones finish" : "workers start as messages wait", now))
        goto nomem;
    cJSON_AddItemToObject(s, "conditions", conds);
    *out = s;
    return 0;
nomem:
    cJSON_Delete(s);
    cJSON_Delete(conds);
    return JP_ENOMEM;
}

/* True when every field of want equals the object's own status. */
static bool status_same(const cJSON *have, const cJSON *want)
{
    const cJSON *w;
    cJSON_ArrayForEach(w, want) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(have, w->string);
        if (!h || !cJSON_Compare(h, w, 1)) return false;
    }
    return true;
}

void jobpools_report(void *ud, const struct pool *p, const struct reconcile_pool_status *st)
{
    struct jobpools *J = ud;
    if (!J || p->from_file) return;
    cJSON *s = NULL;
    if (jobpools_status(p, st, util_wall_ms(), &s)) return;
    if (status_same(p->status, s)) {
        J->stats.unchanged++;
        cJSON_Delete(s);
        return;
    }
    cJSON *body = cJSON_CreateObject();
    char *text = NULL, *path = NULL;
    if (body) cJSON_AddItemToObject(body, "status", s);
    else cJSON_Delete(s);
    if (body && (text = cJSON_PrintUnformatted(body)) &&
        (path = util_strprintf(JOBPOOLS_API "/namespaces/%s/jobpools/%s/status", p->ns, p->name))) {
        int rc = kube_request(J->kc, "PATCH", path, text, NULL);
        if (rc) {
            J->stats.write_errors++;
            log_msg(rc == JP_ENOTFOUND ? LOG_DEBUG : LOG_WARN, p->name, rc,
                    "writing the status of JobPool %s/%s failed: %s", p->ns, p->name,
                    kube_last_error(J->kc));
        } else {
            J->stats.writes++;
        }
    }
    free(path);
    cJSON_free(text);
    cJSON_Delete(body);
}
