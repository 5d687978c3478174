/* pools.c: the one owner of the pool set: the config file's pools and the JobPool objects. */
#define _GNU_SOURCE
#include "pools.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conns.h"
#include "err.h"
#include "log.h"
#include "podsec.h"
#include "util.h"

#define PAUSE_ANNOTATION "jobpool.dev/paused"

struct jp {                      /* one JobPool and what was made of it */
    struct pool p;
    struct cfg_pool *owned;      /* valid spec: the settings, slot assigned */
    /* connectionSecretRef not usable (pools_set_conn): why; "" when usable or not asked yet */
    char conn_reason[POOLS_REASON_LEN], conn_message[POOLS_MESSAGE_LEN];
};

struct pools {
    const struct cfg *cfg;
    char *home_ns;
    struct pool *file;           /* one per cfg->pools */
    struct jp *jps;              /* sorted by namespace/name */
    size_t njps;
    const struct pool **served;  /* file pools, then served JobPools */
    size_t nserved;
    bool used_slots[POOLS_JOBPOOLS_MAX];
};

size_t pools_slots(const struct cfg *cfg)
{
    return cfg->npools + POOLS_JOBPOOLS_MAX;
}

size_t pools_slot(const struct cfg *cfg, const struct cfg_pool *p)
{
    if (cfg->npools && p >= cfg->pools && p < cfg->pools + cfg->npools)
        return (size_t)(p - cfg->pools);
    return cfg->npools + p->slot;
}

int pools_new(const struct cfg *cfg, const char *home_ns, struct pools **out)
{
    *out = NULL;
    struct pools *ps = calloc(1, sizeof *ps);
    if (!ps) return JP_ENOMEM;
    ps->cfg = cfg;
    ps->home_ns = util_strdup(home_ns ? home_ns : "default");
    ps->file = calloc(cfg->npools ? cfg->npools : 1, sizeof *ps->file);
    ps->served = calloc(cfg->npools ? cfg->npools : 1, sizeof *ps->served);
    if (!ps->home_ns || !ps->file || !ps->served) {
        pools_free(ps);
        return JP_ENOMEM;
    }
    for (size_t i = 0; i < cfg->npools; i++) {
        ps->file[i].cfg = &cfg->pools[i];
        ps->file[i].from_file = true;
        ps->file[i].served = true;
        snprintf(ps->file[i].name, sizeof ps->file[i].name, "%s", cfg->pools[i].name);
        ps->served[i] = &ps->file[i];
    }
    ps->nserved = cfg->npools;
    *out = ps;
    return 0;
}

static void jp_clear(struct pools *ps, struct jp *j)
{
    if (j->owned) {
        ps->used_slots[j->owned->slot] = false;
        cfg_pool_free(j->owned);
        free(j->owned);
    }
    cJSON_Delete(j->p.status);
    free(j->p.message);
    memset(j, 0, sizeof *j);
}

void pools_free(struct pools *ps)
{
    if (!ps) return;
    for (size_t i = 0; i < ps->njps; i++) jp_clear(ps, &ps->jps[i]);
    free(ps->jps);
    free(ps->file);
    free(ps->served);
    free(ps->home_ns);
    free(ps);
}

size_t pools_count(const struct pools *ps) { return ps->nserved; }
const struct pool *pools_at(const struct pools *ps, size_t i)
{
    return i < ps->nserved ? ps->served[i] : NULL;
}
size_t pools_jobpool_count(const struct pools *ps) { return ps->njps; }
const struct pool *pools_jobpool_at(const struct pools *ps, size_t i)
{
    return i < ps->njps ? &ps->jps[i].p : NULL;
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool paused_of(const cJSON *obj)
{
    const cJSON *ann = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "annotations");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ann, PAUSE_ANNOTATION);
    return cJSON_IsString(v) && !strcmp(v->valuestring, "true");
}

static int64_t generation_of(const cJSON *obj)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "generation");
    return cJSON_IsNumber(g) ? (int64_t)g->valuedouble : 0;
}

static struct jp *find_old(struct jp *old, size_t n, const char *uid)
{
    for (size_t i = 0; i < n; i++)
        if (old[i].p.uid[0] && !strcmp(old[i].p.uid, uid)) return &old[i];
    return NULL;
}

static void set_reason(struct pool *p, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_reason(struct pool *p, const char *reason, const char *fmt, ...)
{
    snprintf(p->reason, sizeof p->reason, "%s", reason);
    char buf[POOLS_MESSAGE_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(p->message);
    p->message = util_strdup(buf); /* NULL when out of memory: the status says "not served" */
}

/* Make j from obj: reuse old's settings when the spec is the same generation, else validate. */
static int jp_make(struct pools *ps, struct jp *j, const cJSON *obj, struct jp *old)
{
    const char *ns = str_at(obj, "metadata", "namespace"), *name = str_at(obj, "metadata", "name");
    const char *uid = str_at(obj, "metadata", "uid");
    snprintf(j->p.ns, sizeof j->p.ns, "%s", ns ? ns : "");
    snprintf(j->p.name, sizeof j->p.name, "%s", name ? name : "");
    snprintf(j->p.uid, sizeof j->p.uid, "%s", uid ? uid : "");
    j->p.generation = generation_of(obj);
    j->p.paused = paused_of(obj);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(obj, "status");
    if (st && !(j->p.status = cJSON_Duplicate(st, 1))) return JP_ENOMEM;
    if (old && old->owned && old->p.generation == j->p.generation) {
        j->owned = old->owned;            /* same spec: same settings, same slot */
        old->owned = NULL;
        j->p.cfg = j->owned;
        return 0;
    }
    if (old && !old->owned && old->p.generation == j->p.generation) {
        memcpy(j->p.reason, old->p.reason, sizeof j->p.reason);
        j->p.message = old->p.message; /* old is cleared after the update */
        old->p.message = NULL;
        return 0;                         /* still invalid; said so already */
    }
    struct cfg_pool *cp = calloc(1, sizeof *cp);
    if (!cp) return JP_ENOMEM;
    char err[POOLS_MESSAGE_LEN];
    int rc = cfg_pool_from_jobpool(ps->cfg, obj, cp, err, sizeof err);
    if (rc == JP_ENOMEM) {
        free(cp);
        return rc;
    }
    if (rc) {
        free(cp);
        set_reason(&j->p, "InvalidSpec", "%s", err);
        log_msg(LOG_WARN, j->p.name, 0, "JobPool %s/%s is not served: %s", j->p.ns, j->p.name,
                err);
        return 0;
    }
    size_t s;
    if (old && old->owned) {
        /* A changed JobPool keeps its slot: the backend's counters of it go on. */
        s = old->owned->slot;
        cfg_pool_free(old->owned);
        free(old->owned);
        old->owned = NULL;
        old->p.cfg = NULL;
    } else {
        for (s = 0; s < POOLS_JOBPOOLS_MAX && ps->used_slots[s]; s++) {
        }
    }
    if (s == POOLS_JOBPOOLS_MAX) {
        cfg_pool_free(cp);
        free(cp);
        set_reason(&j->p, "TooManyPools", "more than %d JobPools", POOLS_JOBPOOLS_MAX);
        return 0;
    }
    /* Outside the controller's namespace the name alone may recur: metrics and logs say
     * namespace/name (cfg_pool_id). */
    if (strcmp(j->p.ns, ps->home_ns) && !(cp->id = util_strprintf("%s/%s", j->p.ns, j->p.name))) {
        cfg_pool_free(cp);
        free(cp);
        return JP_ENOMEM;
    }
    ps->used_slots[s] = true;
    cp->slot = s;
    j->owned = cp;
    j->p.cfg = cp;
    if (old) log_info("JobPool %s/%s changed (generation %lld)", j->p.ns, j->p.name,
                      (long long)j->p.generation);
    else log_info("JobPool %s/%s added", j->p.ns, j->p.name);
    /* As for the file's pools at start: a template asking for more than Pod Security
     * "restricted" is passed through as written, and said so once per spec. */
    char why[512];
    int n = cp->job_template ? podsec_escalations(cp->job_template, why, sizeof why) : 0;
    if (n)
        log_msg(LOG_WARN, cp->name, 0, "JobPool %s/%s: jobTemplate asks for more than Pod "
                "Security \"restricted\" (%d setting%s, kept as written): %s", j->p.ns, j->p.name,
                n, n == 1 ? "" : "s", why);
    return 0;
}

static int cmp_jp(const void *a, const void *b)
{
    const struct jp *x = a, *y = b;
    int c = strcmp(x->p.ns, y->p.ns);
    return c ? c : strcmp(x->p.name, y->p.name);
}

/* Which JobPools are served: valid ones whose name the file leaves free in the controller's
 * namespace (the file's pools live there; elsewhere the namespace tells pools apart). */
static void decide_served(struct pools *ps)
{
    ps->nserved = ps->cfg->npools;
    for (size_t i = 0; i < ps->njps; i++) {
        struct pool *p = &ps->jps[i].p;
        p->served = false;
        if (!p->cfg) continue;
        p->reason[0] = '\0';
        free(p->message);
        p->message = NULL;
        bool clash = false;
        for (size_t f = 0; f < ps->cfg->npools && !clash && !strcmp(p->ns, ps->home_ns); f++)
            clash = !strcmp(ps->cfg->pools[f].name, p->name);
        if (clash) {
            set_reason(p, "NameClash", "the controller's config file defines a pool named %s, "
                       "and the file wins; rename this JobPool or remove the file's pool",
                       p->name);
        } else if (p->cfg->connection_secret && !p->cfg->rmq) {
            /* Its own broker cannot be read: serving it on the controller's broker would count
             * the wrong queue, so it is not served. */
            const struct jp *j = &ps->jps[i];
            set_reason(p, j->conn_reason[0] ? j->conn_reason : "ConnectionSecretPending", "%s",
                       j->conn_reason[0] ? j->conn_message : "the Secret has not been read yet");
        } else {
            p->served = true;
            ps->served[ps->nserved++] = p;
        }
    }
}

int pools_set_jobpools(struct pools *ps, const cJSON *items)
{
    size_t n = (size_t)cJSON_GetArraySize(items);
    struct jp *nj = calloc(n ? n : 1, sizeof *nj);
    const struct pool **served = calloc(ps->cfg->npools + n + 1, sizeof *served);
    if (!nj || !served) {
        free(nj);
        free(served);
        return JP_ENOMEM;
    }
    size_t k = 0;
    int rc = 0;
    const cJSON *obj;
    cJSON_ArrayForEach(obj, items) {
        const char *uid = str_at(obj, "metadata", "uid");
        if (!uid || !str_at(obj, "metadata", "name") || !str_at(obj, "metadata", "namespace"))
            continue;
        if ((rc = jp_make(ps, &nj[k], obj, find_old(ps->jps, ps->njps, uid)))) break;
        k++;
    }
    if (rc) {
        /* Give back what was taken from the old set, then drop the new one, the one that
         * failed (nj[k], partly made) included. A JobPool whose settings were already
         * replaced is not served until the next try. */
        for (size_t i = 0; i <= k && i < (n ? n : 1); i++) {
            struct jp *old = find_old(ps->jps, ps->njps, nj[i].p.uid);
            if (old && !old->owned && nj[i].owned) {
                old->owned = nj[i].owned;
                old->p.cfg = old->owned;
                old->p.generation = nj[i].p.generation;
                nj[i].owned = NULL;
            }
            if (old && !old->p.message) {
                old->p.message = nj[i].p.message;
                nj[i].p.message = NULL;
            }
            jp_clear(ps, &nj[i]);
        }
        for (size_t i = 0; i < ps->njps; i++)
            if (!ps->jps[i].owned) ps->jps[i].p.cfg = NULL;
        free(nj);
        free(served);
        decide_served(ps);
        return rc;
    }
    for (size_t i = 0; i < ps->njps; i++) {
        if (ps->jps[i].owned || ps->jps[i].p.reason[0])
            if (!find_old(nj, k, ps->jps[i].p.uid))
                log_info("JobPool %s/%s deleted: no new workers; running ones finish",
                         ps->jps[i].p.ns, ps->jps[i].p.name);
        jp_clear(ps, &ps->jps[i]);
    }
    free(ps->jps);
    free(ps->served);
    qsort(nj, k, sizeof *nj, cmp_jp);
    ps->jps = nj;
    ps->njps = k;
    ps->served = served;
    for (size_t i = 0; i < ps->cfg->npools; i++) served[i] = &ps->file[i];
    decide_served(ps);
    return 0;
}

/* The vhost a JobPool without spec.vhost reads: its connection's, else the controller's. */
static int set_vhost(struct pools *ps, struct cfg_pool *cp, const char *conn_vhost)
{
    const char *want = conn_vhost ? conn_vhost : ps->cfg->rabbitmq.vhost;
    if (!cp->vhost_default || !want || (cp->vhost && !strcmp(cp->vhost, want))) return 0;
    char *v = strdup(want);
    if (!v) return JP_ENOMEM;
    free(cp->vhost);
    cp->vhost = v;
    return 0;
}

int pools_set_conn(struct pools *ps, size_t i, const struct conn_use *use, const char *reason,
                   const char *message)
{
    if (i >= ps->njps || !ps->jps[i].owned) return 0;
    struct jp *j = &ps->jps[i];
    struct cfg_pool *cp = j->owned;
    int rc = 0;
    if (use && use->rmq && (rc = set_vhost(ps, cp, use->vhost)) == 0) {
        cp->rmq = use->rmq;
        cp->worker_conn = use->worker;
        j->conn_reason[0] = j->conn_message[0] = '\0';
        return 0;
    }
    cp->rmq = NULL;
    cp->worker_conn = NULL;
    snprintf(j->conn_reason, sizeof j->conn_reason, "%s",
             rc ? "ConnectionSecretUnavailable" : reason ? reason : "");
    snprintf(j->conn_message, sizeof j->conn_message, "%s", rc ? "out of memory" : message ? message : "");
    return rc;
}

void pools_conns_done(struct pools *ps)
{
    decide_served(ps);
}
