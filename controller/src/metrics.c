/* metrics.c: Prometheus text on /metrics plus /healthz and /readyz, served by libmicrohttpd. */
#define _POSIX_C_SOURCE 200809L
#include "metrics.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <microhttpd.h>

#include "err.h"
#include "log.h"
#include "util.h"

#ifndef JP_VERSION
#define JP_VERSION "dev"
#endif

#define MAX_POOLS 512
#define MAX_ERRORS 1024
#define RENDER_CAP (4u << 20)
#define STALL_INTERVALS 3

/* A histogram's upper bounds, with their text as rendered in le="...". */
struct bucket_set {
    const double *le;
    const char *const *txt;
    size_t n;
};
#define MAX_BUCKETS 16

/* jobpool_reconcile_duration_seconds: a pass is a few HTTP calls, 1 ms .. 30 s. */
static const double pass_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const char *const pass_txt[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                       "0.5",   "1",    "2.5",   "5",    "10",  "30"};
/* jobpool_task_wait_seconds and jobpool_task_duration_seconds: tasks that wait or run from
 * about a second (the AMQP timestamp's resolution) to hours. */
static const double task_le[] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600,
                                 7200, 14400, 28800};
static const char *const task_txt[] = {"0.5", "1",   "2.5",  "5",    "10",   "30",
                                       "60",  "120", "300",  "600",  "1200", "1800",
                                       "3600", "7200", "14400", "28800"};
#define SET(a, t) {a, t, sizeof a / sizeof a[0]}
static const struct bucket_set pass_buckets = SET(pass_le, pass_txt);
static const struct bucket_set task_buckets = SET(task_le, task_txt);
_Static_assert(sizeof pass_le / sizeof pass_le[0] == sizeof pass_txt / sizeof pass_txt[0] &&
                   sizeof task_le / sizeof task_le[0] == sizeof task_txt / sizeof task_txt[0] &&
                   sizeof task_le / sizeof task_le[0] <= MAX_BUCKETS,
               "bucket bounds and their text must match");

static const char *const state_name[METRICS_NSTATES] = {"pending", "running", "succeeded",
                                                        "failed"};
static const char *const reason_name[METRICS_NREASONS] = {"succeeded_history", "failed_history",
                                                          "pending_timeout", "orphaned"};
static const char *const source_name[METRICS_NSOURCES] = {"rabbitmq", "kubernetes", "config",
                                                          "local"};

struct histo {
    uint64_t bucket[MAX_BUCKETS];  /* non-cumulative counts; summed when rendered */
    uint64_t count;
    double sum;
};

struct pool_entry {
    char *name;
    bool has_state;
    struct metrics_pool_state st;
    int64_t started, wasted, deleted[METRICS_NREASONS];
    bool has_histo;
    struct histo h;
    struct histo task_wait, task_duration; /* rendered for every pool, empty ones too */
};

struct err_entry {
    char *pool;                    /* NULL: no pool label */
    enum metrics_error_source src;
    int code;
    int64_t n;
};

/* One open HTTP connection, tracked so the reaper can close one that dawdles (slowloris). */
struct conn {
    struct conn *prev, *next;
    int fd;
    int64_t phase_start_ms;        /* opened, or previous response completed */
    bool reaped;
};

/* One watched kind's cache (jobpool_cache_*{kind}). */
#define METRICS_MAX_CACHES 8
struct cache_entry {
    char kind[32];
    double age_seconds;
    bool stale;
};

struct metrics {
    /* Figures, guarded by lock. */
    pthread_mutex_t lock;
    struct pool_entry *pools;
    size_t npools;
    struct err_entry *errs;
    size_t nerrs;
    bool has_global_histo;
    struct histo global_histo;
    bool leader, ready;
    struct cache_entry caches[METRICS_MAX_CACHES];
    size_t ncaches;
    int64_t last_tick_ms, poll_interval_ms;
    int64_t last_tick_wall_ms;
    char *version;
    int64_t (*clock_ms)(void *);
    int64_t (*wall_clock_ms)(void *);
    void *clock_arg;

    /* Listener. */
    struct MHD_Daemon *daemon;
    uint16_t port;
    int64_t request_timeout_ms;

    /* Reaper thread and the connection list, guarded by conn_lock. */
    pthread_mutex_t conn_lock;
    pthread_cond_t conn_cond;
    struct conn *conns;
    bool stopping, reaper_started;
    pthread_t reaper;
};

static int64_t default_clock(void *arg)
{
    (void)arg;
    return util_now_ms();
}

static int64_t default_wall_clock(void *arg)
{
    (void)arg;
    return util_wall_ms();
}

static int64_t now_ms(struct metrics *m)
{
    return m->clock_ms(m->clock_arg);
}

/* ---- figures ------------------------------------------------------------------------------ */

/* Find or create the entry of pool; NULL when the table is full or memory ran out. Locked. */
static struct pool_entry *pool_get(struct metrics *m, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < m->npools; i++)
        if (strcmp(m->pools[i].name, name) == 0) return &m->pools[i];
    if (m->npools >= MAX_POOLS) return NULL;
    char *copy = util_strdup(name);
    if (!copy) return NULL;
    struct pool_entry *p = &m->pools[m->npools++];
    memset(p, 0, sizeof *p);
    p->name = copy;
    return p;
}

void metrics_pool_publish(struct metrics *m, const char *pool, const struct metrics_pool_state *s)
{
    if (!m || !s) return;
    pthread_mutex_lock(&m->lock);
    struct pool_entry *p = pool_get(m, pool);
    if (p) {
        p->st = *s;
        p->has_state = true;
    }
    pthread_mutex_unlock(&m->lock);
}

void metrics_count_started(struct metrics *m, const char *pool, int64_t n)
{
    if (!m || n < 0) return;
    pthread_mutex_lock(&m->lock);
    struct pool_entry *p = pool_get(m, pool);
    if (p) p->started += n;
    pthread_mutex_unlock(&m->lock);
}

void metrics_count_deleted(struct metrics *m, const char *pool, enum metrics_delete_reason r,
                           int64_t n)
{
    if (!m || n < 0 || (unsigned)r >= METRICS_NREASONS) return;
    pthread_mutex_lock(&m->lock);
    struct pool_entry *p = pool_get(m, pool);
    if (p) p->deleted[r] += n;
    pthread_mutex_unlock(&m->lock);
}

void metrics_count_wasted(struct metrics *m, const char *pool, int64_t n)
{
    if (!m || n < 0) return;
    pthread_mutex_lock(&m->lock);
    struct pool_entry *p = pool_get(m, pool);
    if (p) p->wasted += n;
    pthread_mutex_unlock(&m->lock);
}

static bool same_pool(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

void metrics_count_error(struct metrics *m, const char *pool, enum metrics_error_source src,
                         int code)
{
    if (!m || (unsigned)src >= METRICS_NSOURCES) return;
    pthread_mutex_lock(&m->lock);
    struct err_entry *e = NULL;
    for (size_t i = 0; i < m->nerrs && !e; i++)
        if (m->errs[i].src == src && m->errs[i].code == code && same_pool(m->errs[i].pool, pool))
            e = &m->errs[i];
    if (!e && m->nerrs < MAX_ERRORS) {
        char *copy = util_strdup(pool);
        if (copy || !pool) {
            e = &m->errs[m->nerrs++];
            e->pool = copy;
            e->src = src;
            e->code = code;
            e->n = 0;
        }
    }
    if (e) e->n++;
    pthread_mutex_unlock(&m->lock);
}

static void histo_observe(struct histo *h, const struct bucket_set *bs, double v)
{
    for (size_t i = 0; i < bs->n; i++) {
        if (v <= bs->le[i]) {
            h->bucket[i]++;
            break;
        }
    }
    h->count++;
    h->sum += v;
}

void metrics_observe_reconcile(struct metrics *m, const char *pool, double seconds)
{
    if (!m || isnan(seconds)) return;
    if (seconds < 0) seconds = 0;
    pthread_mutex_lock(&m->lock);
    if (!pool) {
        m->has_global_histo = true;
        histo_observe(&m->global_histo, &pass_buckets, seconds);
    } else {
        struct pool_entry *p = pool_get(m, pool);
        if (p) {
            p->has_histo = true;
            histo_observe(&p->h, &pass_buckets, seconds);
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void metrics_observe_task(struct metrics *m, const char *pool, double wait_s, double duration_s)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    struct pool_entry *p = pool_get(m, pool);
    if (p && wait_s >= 0 && isfinite(wait_s)) histo_observe(&p->task_wait, &task_buckets, wait_s);
    if (p && duration_s >= 0 && isfinite(duration_s))
        histo_observe(&p->task_duration, &task_buckets, duration_s);
    pthread_mutex_unlock(&m->lock);
}

void metrics_set_leader(struct metrics *m, bool leader)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->leader = leader;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set_cache(struct metrics *m, const char *kind, double age_seconds, bool stale)
{
    if (!m || !kind) return;
    pthread_mutex_lock(&m->lock);
    size_t i;
    for (i = 0; i < m->ncaches && strcmp(m->caches[i].kind, kind) != 0; i++) {
    }
    if (i == m->ncaches && i < METRICS_MAX_CACHES) {
        snprintf(m->caches[i].kind, sizeof m->caches[i].kind, "%s", kind);
        m->ncaches++;
    }
    if (i < m->ncaches) {
        m->caches[i].age_seconds = age_seconds;
        m->caches[i].stale = stale;
    }
    pthread_mutex_unlock(&m->lock);
}

void metrics_tick(struct metrics *m)
{
    if (!m) return;
    int64_t now = now_ms(m), wall = m->wall_clock_ms(m->clock_arg);
    pthread_mutex_lock(&m->lock);
    m->last_tick_ms = now;
    m->last_tick_wall_ms = wall;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set_poll_interval(struct metrics *m, int64_t poll_interval_ms)
{
    if (!m || poll_interval_ms <= 0) return;
    pthread_mutex_lock(&m->lock);
    m->poll_interval_ms = poll_interval_ms;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set_ready(struct metrics *m, bool ready)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->ready = ready;
    pthread_mutex_unlock(&m->lock);
}

/* ---- rendering ---------------------------------------------------------------------------- */

/* A label value with \, " and newline escaped, as the 0.0.4 text format requires. */
static int put_label(struct dbuf *b, const char *name, const char *value)
{
    int rc = dbuf_printf(b, "%s=\"", name);
    for (const char *s = value; rc == 0 && *s; s++) {
        if (*s == '\\') rc = dbuf_append(b, "\\\\", 2);
        else if (*s == '"') rc = dbuf_append(b, "\\\"", 2);
        else if (*s == '\n') rc = dbuf_append(b, "\\n", 2);
        else rc = dbuf_append(b, s, 1);
    }
    return rc ? rc : dbuf_append(b, "\"", 1);
}

/* The shortest decimal that reads back as v, or NaN/+Inf/-Inf. */
static void fmt_double(double v, char *out, size_t outlen)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == util_floor(v) && fabs(v) < 1e15) { /* whole numbers without an exponent: 50, not 5e+01 */
        snprintf(out, outlen, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, outlen, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static int put_family(struct dbuf *b, const char *name, const char *type, const char *help)
{
    return dbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{pool="p",extra...} value. pool may be NULL. */
static int put_int(struct dbuf *b, const char *name, const char *pool, const char *l1,
                   const char *v1, int64_t value)
{
    int rc = dbuf_append(b, name, strlen(name));
    if (rc == 0 && (pool || l1)) rc = dbuf_append(b, "{", 1);
    if (rc == 0 && pool) rc = put_label(b, "pool", pool);
    if (rc == 0 && l1) {
        if (pool) rc = dbuf_append(b, ",", 1);
        if (rc == 0) rc = put_label(b, l1, v1);
    }
    if (rc == 0 && (pool || l1)) rc = dbuf_append(b, "}", 1);
    if (rc == 0) rc = dbuf_printf(b, " %lld\n", (long long)value);
    return rc;
}

static int put_histo(struct dbuf *b, const char *name, const char *pool, const struct histo *h,
                     const struct bucket_set *bs)
{
    int rc = 0;
    uint64_t cum = 0;
    char num[40];
    for (size_t i = 0; rc == 0 && i <= bs->n; i++) {
        if (i < bs->n) cum += h->bucket[i];
        rc = dbuf_printf(b, "%s_bucket{", name);
        if (rc == 0 && pool) rc = put_label(b, "pool", pool);
        if (rc == 0 && pool) rc = dbuf_append(b, ",", 1);
        if (rc == 0)
            rc = dbuf_printf(b, "le=\"%s\"} %llu\n", i < bs->n ? bs->txt[i] : "+Inf",
                             (unsigned long long)(i < bs->n ? cum : h->count));
    }
    fmt_double(h->sum, num, sizeof num);
    const char *suffix[2] = {"_sum", "_count"};
    for (int k = 0; rc == 0 && k < 2; k++) {
        rc = dbuf_printf(b, "%s%s", name, suffix[k]);
        if (rc == 0 && pool) {
            rc = dbuf_append(b, "{", 1);
            if (rc == 0) rc = put_label(b, "pool", pool);
            if (rc == 0) rc = dbuf_append(b, "}", 1);
        }
        if (rc == 0 && k == 0) rc = dbuf_printf(b, " %s\n", num);
        if (rc == 0 && k == 1) rc = dbuf_printf(b, " %llu\n", (unsigned long long)h->count);
    }
    return rc;
}

/* name{pool="p"} value, value a double. */
static int put_double(struct dbuf *b, const char *name, const char *pool, double v)
{
    char num[40];
    fmt_double(v, num, sizeof num);
    int rc = dbuf_printf(b, "%s{", name);
    if (rc == 0) rc = put_label(b, "pool", pool);
    if (rc == 0) rc = dbuf_printf(b, "} %s\n", num);
    return rc;
}

/* Per-pool gauges kept for alerting: whether the depth could be read, the oldest pending
 * worker, and the two settings alerts compare against. */
static int render_pool_gauges(struct metrics *m, struct dbuf *b)
{
    static const struct {
        const char *name, *help;
    } fam[] = {
        {"jobpool_queue_depth_ok", "1 when the last read of the pool's queue depth succeeded, "
                                   "else 0 (the pool then holds: no starts, no deletes)."},
        {"jobpool_workers_oldest_pending_seconds",
         "Age of the pool's oldest pending worker (created, not running yet); 0 when none."},
        {"jobpool_pool_max_active", "The pool's maxActive setting."},
        {"jobpool_pool_pending_timeout_seconds", "The pool's pendingTimeout setting."},
    };
    int rc = 0;
    for (size_t f = 0; rc == 0 && f < sizeof fam / sizeof fam[0]; f++) {
        rc = put_family(b, fam[f].name, "gauge", fam[f].help);
        for (size_t i = 0; rc == 0 && i < m->npools; i++) {
            const struct pool_entry *p = &m->pools[i];
            if (!p->has_state || (f == 1 && !p->st.workers_ok)) continue;
            double v = f == 0 ? (p->st.depth_ok ? 1 : 0)
                       : f == 1 ? p->st.oldest_pending_seconds
                       : f == 2 ? (double)p->st.max_active
                                : p->st.pending_timeout_seconds;
            rc = put_double(b, fam[f].name, p->name, v);
        }
    }
    return rc;
}

/* Everything, in a fixed order: families as below, pools in order of first appearance. */
static int render_locked(struct metrics *m, struct dbuf *b)
{
    int rc;
    char num[40];
    const char *rm = "jobpool_queue_messages_ready", *um = "jobpool_queue_messages_unacked",
               *am = "jobpool_queue_depth_age_seconds", *wm = "jobpool_workers";

    rc = put_family(b, "jobpool_build_info", "gauge", "Build information; the value is always 1.");
    if (rc == 0) rc = put_int(b, "jobpool_build_info", NULL, "version", m->version, 1);
    if (rc == 0)
        rc = put_family(b, "jobpool_leader", "gauge",
                        "1 while this replica is the leader (or leader election is off), else 0.");
    if (rc == 0) rc = put_int(b, "jobpool_leader", NULL, NULL, NULL, m->leader ? 1 : 0);
    if (rc == 0)
        rc = put_family(b, "jobpool_last_tick_timestamp_seconds", "gauge",
                        "Unix time of the reconcile loop's last tick (followers tick too).");
    if (rc == 0) {
        fmt_double((double)m->last_tick_wall_ms / 1000.0, num, sizeof num);
        rc = dbuf_printf(b, "jobpool_last_tick_timestamp_seconds %s\n", num);
    }
    if (rc == 0 && m->ncaches)
        rc = put_family(b, "jobpool_cache_age_seconds", "gauge",
                        "Seconds since the watch cache of this kind was last known to be current.");
    for (size_t i = 0; rc == 0 && i < m->ncaches; i++) {
        fmt_double(m->caches[i].age_seconds, num, sizeof num);
        rc = dbuf_printf(b, "jobpool_cache_age_seconds{");
        if (rc == 0) rc = put_label(b, "kind", m->caches[i].kind);
        if (rc == 0) rc = dbuf_printf(b, "} %s\n", num);
    }
    if (rc == 0 && m->ncaches)
        rc = put_family(b, "jobpool_cache_stale", "gauge",
                        "1 while the cache is older than its bound: its pools hold (no starts, "
                        "no deletes).");
    for (size_t i = 0; rc == 0 && i < m->ncaches; i++)
        rc = put_int(b, "jobpool_cache_stale", NULL, "kind", m->caches[i].kind,
                     m->caches[i].stale ? 1 : 0);

    if (rc == 0) rc = put_family(b, rm, "gauge", "Messages ready for delivery in the pool's queues.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        if (m->pools[i].has_state && m->pools[i].st.depth_ok)
            rc = put_int(b, rm, m->pools[i].name, NULL, NULL, m->pools[i].st.messages_ready);
    if (rc == 0)
        rc = put_family(b, um, "gauge", "Messages delivered but not yet acknowledged.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        if (m->pools[i].has_state && m->pools[i].st.depth_ok)
            rc = put_int(b, um, m->pools[i].name, NULL, NULL, m->pools[i].st.messages_unacked);
    if (rc == 0)
        rc = put_family(b, am, "gauge", "Age of the queue depth sample the last decision used.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++) {
        if (!m->pools[i].has_state || !m->pools[i].st.depth_ok) continue;
        fmt_double(m->pools[i].st.depth_age_seconds, num, sizeof num);
        rc = dbuf_printf(b, "%s{", am);
        if (rc == 0) rc = put_label(b, "pool", m->pools[i].name);
        if (rc == 0) rc = dbuf_printf(b, "} %s\n", num);
    }

    if (rc == 0) rc = put_family(b, wm, "gauge", "Workers of the pool that exist now, by state.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        for (int s = 0; rc == 0 && s < METRICS_NSTATES; s++)
            if (m->pools[i].has_state && m->pools[i].st.workers_ok)
                rc = put_int(b, wm, m->pools[i].name, "state", state_name[s],
                             m->pools[i].st.workers[s]);
    if (rc == 0) rc = render_pool_gauges(m, b);

    if (rc == 0)
        rc = put_family(b, "jobpool_workers_started_total", "counter", "Workers started.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        rc = put_int(b, "jobpool_workers_started_total", m->pools[i].name, NULL, NULL,
                     m->pools[i].started);
    if (rc == 0)
        rc = put_family(b, "jobpool_workers_deleted_total", "counter",
                        "Workers deleted by the controller, by reason.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        for (int r = 0; rc == 0 && r < METRICS_NREASONS; r++)
            rc = put_int(b, "jobpool_workers_deleted_total", m->pools[i].name, "reason",
                         reason_name[r], m->pools[i].deleted[r]);
    if (rc == 0)
        rc = put_family(b, "jobpool_workers_wasted_total", "counter",
                        "Workers that exited after finding no message within idleTimeout.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        rc = put_int(b, "jobpool_workers_wasted_total", m->pools[i].name, NULL, NULL,
                     m->pools[i].wasted);

    if (rc == 0)
        rc = put_family(b, "jobpool_errors_total", "counter",
                        "Errors by the system that reported them and the error code.");
    for (size_t i = 0; rc == 0 && i < m->nerrs; i++) {
        const struct err_entry *e = &m->errs[i];
        char code[32];
        const char *n = jp_errname(e->code);
        size_t k = 0;
        for (; n[k] && k + 1 < sizeof code; k++) code[k] = (char)tolower((unsigned char)n[k]);
        code[k] = '\0';
        rc = dbuf_append(b, "jobpool_errors_total{", 21);
        if (rc == 0 && e->pool) rc = put_label(b, "pool", e->pool);
        if (rc == 0 && e->pool) rc = dbuf_append(b, ",", 1);
        if (rc == 0) rc = put_label(b, "source", source_name[e->src]);
        if (rc == 0) rc = dbuf_append(b, ",", 1);
        if (rc == 0) rc = put_label(b, "code", code);
        if (rc == 0) rc = dbuf_printf(b, "} %lld\n", (long long)e->n);
    }

    if (rc == 0)
        rc = put_family(b, "jobpool_reconcile_duration_seconds", "histogram",
                        "Time one reconcile pass over a pool took.");
    if (rc == 0 && m->has_global_histo)
        rc = put_histo(b, "jobpool_reconcile_duration_seconds", NULL, &m->global_histo,
                       &pass_buckets);
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        if (m->pools[i].has_histo)
            rc = put_histo(b, "jobpool_reconcile_duration_seconds", m->pools[i].name,
                           &m->pools[i].h, &pass_buckets);
    if (rc == 0)
        rc = put_family(b, "jobpool_task_wait_seconds", "histogram",
                        "Time a task's message waited in the queue, from its AMQP timestamp "
                        "(whole seconds) to its delivery to a worker.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        rc = put_histo(b, "jobpool_task_wait_seconds", m->pools[i].name, &m->pools[i].task_wait,
                       &task_buckets);
    if (rc == 0)
        rc = put_family(b, "jobpool_task_duration_seconds", "histogram",
                        "Time a task ran, as its worker measured it.");
    for (size_t i = 0; rc == 0 && i < m->npools; i++)
        rc = put_histo(b, "jobpool_task_duration_seconds", m->pools[i].name,
                       &m->pools[i].task_duration, &task_buckets);
    return rc;
}

/* A JSON string: quotes, backslashes and control characters escaped. NULL is null. */
static int put_json_str(struct dbuf *b, const char *v)
{
    if (!v) return dbuf_append(b, "null", 4);
    int rc = dbuf_append(b, "\"", 1);
    for (const unsigned char *s = (const unsigned char *)v; rc == 0 && *s; s++) {
        if (*s == '"' || *s == '\\') rc = dbuf_printf(b, "\\%c", *s);
        else if (*s < 0x20) rc = dbuf_printf(b, "\\u%04x", *s);
        else rc = dbuf_append(b, s, 1);
    }
    return rc ? rc : dbuf_append(b, "\"", 1);
}

static int put_json_pool(struct dbuf *b, const struct pool_entry *p)
{
    const struct metrics_pool_state *st = &p->st;
    char age[40], decided[40], oldest[40], pto[40];
    fmt_double(st->depth_age_seconds, age, sizeof age);
    fmt_double((double)st->decided_wall_ms / 1000.0, decided, sizeof decided);
    fmt_double(st->oldest_pending_seconds, oldest, sizeof oldest);
    fmt_double(st->pending_timeout_seconds, pto, sizeof pto);
    char err[32] = "";
    if (st->last_err) {
        const char *n = jp_errname(st->last_err);
        size_t k = 0;
        for (; n[k] && k + 1 < sizeof err; k++) err[k] = (char)tolower((unsigned char)n[k]);
        err[k] = '\0';
    }
    int rc = dbuf_append(b, "{\"name\":", 8);
    if (rc == 0) rc = put_json_str(b, p->name);
    if (rc == 0)
        rc = dbuf_printf(b, ",\"decided_at\":%s,\"depth_ok\":%s", decided,
                         st->depth_ok ? "true" : "false");
    if (rc == 0 && st->depth_ok)
        rc = dbuf_printf(b, ",\"ready\":%lld,\"unacked\":%lld,\"consumers\":%lld"
                            ",\"sample_age_seconds\":%s",
                         (long long)st->messages_ready, (long long)st->messages_unacked,
                         (long long)st->consumers, age);
    if (rc == 0)
        rc = dbuf_printf(b, ",\"active\":%lld,\"pending\":%lld,\"waiting\":%lld,\"running\":%lld"
                            ",\"succeeded\":%lld,\"failed\":%lld,\"max_active\":%lld"
                            ",\"start\":%lld,\"deletes\":%lld,\"reason\":",
                         (long long)st->active, (long long)st->workers[METRICS_PENDING],
                         (long long)st->waiting, (long long)st->workers[METRICS_RUNNING],
                         (long long)st->workers[METRICS_SUCCEEDED],
                         (long long)st->workers[METRICS_FAILED], (long long)st->max_active,
                         (long long)st->start, (long long)st->deletes);
    if (rc == 0) rc = put_json_str(b, st->reason);
    if (rc == 0) rc = dbuf_append(b, ",\"last_error\":", 14);
    if (rc == 0) rc = put_json_str(b, st->last_err ? err : NULL);
    if (rc == 0)
        rc = dbuf_printf(b, ",\"oldest_pending_seconds\":%s,\"pending_timeout_seconds\":%s"
                            ",\"started_total\":%lld,\"wasted_total\":%lld"
                            ",\"tasks_total\":%llu}",
                         oldest, pto, (long long)p->started, (long long)p->wasted,
                         (unsigned long long)p->task_duration.count);
    return rc;
}

/* The /debug/pools body: every pool with a decision. Called with m->lock held. */
static int render_pools_locked(struct metrics *m, struct dbuf *b)
{
    char tick[40];
    fmt_double((double)m->last_tick_wall_ms / 1000.0, tick, sizeof tick);
    int rc = dbuf_append(b, "{\"version\":", 11);
    if (rc == 0) rc = put_json_str(b, m->version);
    if (rc == 0)
        rc = dbuf_printf(b, ",\"leader\":%s,\"ready\":%s,\"last_tick\":%s,\"pools\":[",
                         m->leader ? "true" : "false", m->ready ? "true" : "false", tick);
    bool first = true;
    for (size_t i = 0; rc == 0 && i < m->npools; i++) {
        if (!m->pools[i].has_state) continue;
        if (!first) rc = dbuf_append(b, ",", 1);
        first = false;
        if (rc == 0) rc = put_json_pool(b, &m->pools[i]);
    }
    if (rc == 0) rc = dbuf_append(b, "]}\n", 3);
    return rc;
}

/* Render one body under the lock into a fresh buffer the caller frees. */
static int render_with(struct metrics *m, int (*body)(struct metrics *, struct dbuf *),
                       char **out, size_t *len)
{
    int rc = JP_EINVAL;
    struct dbuf b;
    dbuf_init(&b, RENDER_CAP);
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!m || !out) goto out;
    pthread_mutex_lock(&m->lock);
    rc = body(m, &b);
    pthread_mutex_unlock(&m->lock);
    if (rc) goto out;
    if (len) *len = b.len;
    *out = dbuf_take(&b);
    if (!*out) rc = JP_ENOMEM;
out:
    dbuf_free(&b);
    return rc;
}

int metrics_render_pools(struct metrics *m, char **out, size_t *len)
{
    return render_with(m, render_pools_locked, out, len);
}

int metrics_render(struct metrics *m, char **out, size_t *len)
{
    return render_with(m, render_locked, out, len);
}

/* ---- HTTP --------------------------------------------------------------------------------- */

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *ctype,
                              char *body, size_t len, bool owned, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (owned) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

#define TEXT "text/plain; charset=utf-8"

static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return answer(c, status, TEXT, (char *)msg, strlen(msg), false, NULL);
}

static enum MHD_Result on_healthz(struct metrics *m, struct MHD_Connection *c)
{
    int64_t now = now_ms(m);
    pthread_mutex_lock(&m->lock);
    int64_t since = now - m->last_tick_ms, window = STALL_INTERVALS * m->poll_interval_ms;
    pthread_mutex_unlock(&m->lock);
    if (since <= window) return answer_text(c, MHD_HTTP_OK, "ok\n");
    char msg[128];
    int n = snprintf(msg, sizeof msg, "stalled: no reconcile tick for %lld ms (limit %lld ms)\n",
                     (long long)since, (long long)window);
    char *body = util_strdup(msg);
    if (!body || n < 0) {
        free(body);
        return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "stalled\n");
    }
    return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, TEXT, body, strlen(body), true, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    static int seen;
    struct metrics *m = cls;
    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = &seen;
        /* Requests here have no body: refuse one before reading it. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_TRANSFER_ENCODING);
        if (te || (cl && strcmp(cl, "0") != 0))
            return answer_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not allowed\n");
        /* Answer on the next call: a response queued on this first call makes libmicrohttpd
         * close the connection, which would defeat Prometheus's keep-alive. */
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        return answer_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not allowed\n");
    }

    enum { P_METRICS, P_HEALTHZ, P_READYZ, P_POOLS, P_NONE } path = P_NONE;
    if (strcmp(url, "/metrics") == 0) path = P_METRICS;
    else if (strcmp(url, "/debug/pools") == 0) path = P_POOLS;
    else if (strcmp(url, "/healthz") == 0) path = P_HEALTHZ;
    else if (strcmp(url, "/readyz") == 0) path = P_READYZ;
    if (path == P_NONE) return answer_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT, (char *)"method not allowed\n", 19,
                      false, "GET, HEAD");

    if (path == P_HEALTHZ) return on_healthz(m, c);
    if (path == P_READYZ) {
        pthread_mutex_lock(&m->lock);
        bool ready = m->ready;
        pthread_mutex_unlock(&m->lock);
        return ready ? answer_text(c, MHD_HTTP_OK, "ready\n")
                     : answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n");
    }
    char *text = NULL;
    size_t len = 0;
    int rc = path == P_POOLS ? metrics_render_pools(m, &text, &len)
                             : metrics_render(m, &text, &len);
    if (rc) {
        log_msg(LOG_WARN, NULL, rc, "metrics: could not render %s", url);
        return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "could not render metrics\n");
    }
    return answer(c, MHD_HTTP_OK,
                  path == P_POOLS ? "application/json" : "text/plain; version=0.0.4; charset=utf-8",
                  text, len, true, NULL);
}

/* Connection bookkeeping for the reaper. MHD calls CLOSED before it closes the socket, so under
 * conn_lock every listed fd is still the connection's own. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct metrics *m = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn *k = calloc(1, sizeof *k);
        if (!k || !ci) {
            free(k);      /* untracked: MHD's idle timeout still applies */
            *socket_context = NULL;
            return;
        }
        k->fd = ci->connect_fd;
        k->phase_start_ms = util_now_ms();
        pthread_mutex_lock(&m->conn_lock);
        k->next = m->conns;
        if (m->conns) m->conns->prev = k;
        m->conns = k;
        pthread_mutex_unlock(&m->conn_lock);
        *socket_context = k;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn *k = *socket_context;
        if (!k) return;
        pthread_mutex_lock(&m->conn_lock);
        if (k->prev) k->prev->next = k->next;
        else m->conns = k->next;
        if (k->next) k->next->prev = k->prev;
        pthread_mutex_unlock(&m->conn_lock);
        free(k);
        *socket_context = NULL;
    }
}

/* A response went out: the next request on this keep-alive connection gets a fresh deadline. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct metrics *m = cls;
    (void)req_cls;
    (void)toe;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (!ci || !ci->socket_context) return;
    struct conn *k = ci->socket_context;
    pthread_mutex_lock(&m->conn_lock);
    k->phase_start_ms = util_now_ms();
    pthread_mutex_unlock(&m->conn_lock);
}

/* MHD's idle timeout resets on every byte, so a client that trickles a header never hits it.
 * The reaper enforces a deadline per request instead: shutting the socket down makes MHD see
 * end-of-stream and close the connection itself, on its own thread. */
static void *reaper_main(void *arg)
{
    struct metrics *m = arg;
    int64_t step = m->request_timeout_ms / 4;
    if (step > 250) step = 250;
    pthread_mutex_lock(&m->conn_lock);
    while (!m->stopping) {
        util_cond_wait_ms(&m->conn_cond, &m->conn_lock, step);
        int64_t now = util_now_ms();
        for (struct conn *k = m->conns; k && !m->stopping; k = k->next) {
            if (k->reaped || now - k->phase_start_ms <= m->request_timeout_ms) continue;
            k->reaped = true;
            shutdown(k->fd, SHUT_RDWR);
            log_debug("metrics: closed a connection that sent no complete request in %lld ms",
                      (long long)m->request_timeout_ms);
        }
    }
    pthread_mutex_unlock(&m->conn_lock);
    return NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    log_debug("metrics: libmicrohttpd: %s", line);
}

/* Split "HOST:PORT", "[V6]:PORT" or ":PORT". host is "" for all interfaces. */
static int parse_address(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon, *hs = addr, *he;
    if (addr[0] == '[') {
        he = strchr(addr, ']');
        if (!he || he[1] != ':') return JP_EINVAL;
        hs = addr + 1;
        colon = he + 1;
        if (he == hs) return JP_EINVAL;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || memchr(addr, ':', (size_t)(colon - addr))) return JP_EINVAL;
        he = colon;
    }
    size_t n = (size_t)(he - hs);
    if (n >= hostlen) return JP_EINVAL;
    memcpy(host, hs, n);
    host[n] = '\0';
    int64_t p;
    if (util_parse_int64(colon + 1, 0, 65535, &p) != 0) return JP_EINVAL;
    *port = (uint16_t)p;
    return 0;
}

static struct MHD_Daemon *start_daemon(struct metrics *m, unsigned flags,
                                       const struct sockaddr *sa, uint16_t port,
                                       const struct metrics_opts *o)
{
    return MHD_start_daemon(
        flags, port, NULL, NULL, on_request, m,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, o->request_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->memory_limit,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)64,
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, m,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, m,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, m,
        MHD_OPTION_END);
}

static int listen_on(struct metrics *m, const char *address, const struct metrics_opts *o)
{
    int rc = JP_EINVAL;
    char host[256];
    uint16_t port;
    struct addrinfo *ai = NULL;
    unsigned base = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;

    if (parse_address(address, host, sizeof host, &port) != 0) {
        log_error("metrics: address \"%s\" is not HOST:PORT, [IPv6]:PORT or :PORT", address);
        goto out;
    }
    if (host[0] == '\0') {
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_addr = in6addr_any;
        a6.sin6_port = htons(port);
        m->daemon = start_daemon(m, base | MHD_USE_DUAL_STACK, (struct sockaddr *)&a6, port, o);
        if (!m->daemon) { /* no IPv6 on this host: all IPv4 interfaces */
            struct sockaddr_in a4;
            memset(&a4, 0, sizeof a4);
            a4.sin_family = AF_INET;
            a4.sin_addr.s_addr = htonl(INADDR_ANY);
            a4.sin_port = htons(port);
            m->daemon = start_daemon(m, base, (struct sockaddr *)&a4, port, o);
        }
    } else {
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai) {
            log_error("metrics: cannot resolve listen host \"%s\"", host);
            rc = JP_EDNS;
            goto out;
        }
        if (ai->ai_family == AF_INET6)
            ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = htons(port);
        else
            ((struct sockaddr_in *)ai->ai_addr)->sin_port = htons(port);
        m->daemon = start_daemon(m, base | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                                 ai->ai_addr, port, o);
    }
    if (!m->daemon) {
        log_error("metrics: cannot listen on %s: %s", address, strerror(errno));
        rc = JP_EIO;
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = di ? di->port : port;
    rc = 0;
out:
    if (ai) freeaddrinfo(ai);
    return rc;
}

int metrics_new_opts(const char *address, const struct metrics_opts *opts, struct metrics **out)
{
    int rc = JP_EINVAL;
    struct metrics *m = NULL;
    struct metrics_opts o = {0};
    if (out) *out = NULL;
    if (!address || !out) goto out;
    if (opts) o = *opts;
    if (o.poll_interval_ms <= 0) o.poll_interval_ms = 2000;
    if (!o.version) o.version = JP_VERSION;
    if (o.max_connections == 0) o.max_connections = 32;
    if (o.request_timeout_s == 0) o.request_timeout_s = 10;
    if (o.memory_limit == 0) o.memory_limit = 16 * 1024;

    rc = JP_ENOMEM;
    m = calloc(1, sizeof *m);
    if (!m) goto out;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->conn_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->conn_cond, &ca);
    pthread_condattr_destroy(&ca);
    m->clock_ms = o.clock_ms ? o.clock_ms : default_clock;
    m->clock_arg = o.clock_arg;
    m->wall_clock_ms = o.wall_clock_ms ? o.wall_clock_ms : default_wall_clock;
    m->poll_interval_ms = o.poll_interval_ms;
    m->last_tick_ms = now_ms(m);
    m->last_tick_wall_ms = m->wall_clock_ms(m->clock_arg);
    m->request_timeout_ms = (int64_t)o.request_timeout_s * 1000;
    m->version = util_strdup(o.version);
    m->pools = calloc(MAX_POOLS, sizeof *m->pools);
    m->errs = calloc(MAX_ERRORS, sizeof *m->errs);
    if (!m->version || !m->pools || !m->errs) goto out;

    if (address[0] != '\0') {
        if (pthread_create(&m->reaper, NULL, reaper_main, m) != 0) goto out;
        m->reaper_started = true;
        rc = listen_on(m, address, &o);
        if (rc) goto out;
        log_info("metrics: serving /metrics, /healthz, /readyz and /debug/pools on %s (port %u)", address,
                 (unsigned)m->port);
    }
    *out = m;
    m = NULL;
    rc = 0;
out:
    metrics_free(m);
    return rc;
}

int metrics_new(const char *address, struct metrics **out)
{
    return metrics_new_opts(address, NULL, out);
}

void metrics_free(struct metrics *m)
{
    if (!m) return;
    if (m->daemon) MHD_stop_daemon(m->daemon);   /* joins its thread; every conn is closed */
    if (m->reaper_started) {
        pthread_mutex_lock(&m->conn_lock);
        m->stopping = true;
        pthread_cond_signal(&m->conn_cond);
        pthread_mutex_unlock(&m->conn_lock);
        pthread_join(m->reaper, NULL);
    }
    for (size_t i = 0; m->pools && i < m->npools; i++) free(m->pools[i].name);
    for (size_t i = 0; m->errs && i < m->nerrs; i++) free(m->errs[i].pool);
    free(m->pools);
    free(m->errs);
    free(m->version);
    pthread_cond_destroy(&m->conn_cond);
    pthread_mutex_destroy(&m->conn_lock);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

uint16_t metrics_port(const struct metrics *m)
{
    return m ? m->port : 0;
}
