/* metrics.c: Prometheus text on /metrics plus /healthz and /readyz, and the small HTTP/1.1
 * listener that serves them. */
#define _GNU_SOURCE                /* accept4, SOCK_CLOEXEC */
#include "metrics.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

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

/* One open HTTP connection of the listener (see "HTTP" below). */
enum conn_state { C_READ, C_WRITE, C_LINGER };
struct conn {
    int fd;                        /* -1: slot closed, compacted away after the poll round */
    enum conn_state state;
    int64_t deadline_ms;           /* the whole request (or answer, or linger) by then */
    char *in;                      /* request bytes; grown up to memory_limit */
    size_t in_len, in_cap, scanned;
    char head[256];                /* the answer's status line and header */
    size_t head_len, sent;
    const char *body;              /* points at body_buf or a static string */
    char *body_buf;                /* owned */
    size_t body_len;
    bool close_after;
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

    /* Listener: everything below is the listener thread's alone once it runs. */
    int lfd, wakefd;               /* listening socket, eventfd of metrics_free; -1: none */
    uint16_t port;
    int64_t request_timeout_ms;
    size_t memory_limit;
    struct conn *conns;            /* max_conns slots, nconns in use */
    struct pollfd *pfds;           /* 2 + max_conns */
    size_t nconns, max_conns;
    int64_t accept_pause_until;    /* out of fds: stop accepting until then */
    bool thread_started;
    pthread_t thread;
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

/*
 * A small HTTP/1.1 server, enough for Prometheus and kubelet probes: GET and HEAD without a
 * body, keep-alive, pipelining (answered in order). One thread polls the listening socket, the
 * connections and an eventfd that metrics_free writes to. Each connection reads into a buffer
 * of at most memory_limit bytes, and a request must arrive whole within request_timeout of the
 * connection's opening or of its previous answer: a deadline per request, not an idle timer
 * that every trickled byte would reset (slowloris). The parser is strict: CRLF line ends only,
 * no NUL, no obs-fold, no whitespace before a header's colon.
 */

#define TEXT "text/plain; charset=utf-8"
#define IN_FIRST 1024              /* a scrape's request is ~200 bytes */
#define LINGER_MS 2000             /* reading what a refused client still sends, at most */

struct request {
    const char *method, *path;     /* NUL-terminated inside the connection's buffer */
    bool head, close;
};

static const char *reason_phrase(unsigned status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Queue an answer on c. owned: body is malloc'd and c frees it. The header is short and fixed,
 * so it always fits head[]. */
static void answer(struct conn *c, unsigned status, const char *ctype, const char *body,
                   size_t len, bool owned, bool head_only, const char *allow)
{
    int n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s%s%s\r\n",
                     status, reason_phrase(status), ctype, len, allow ? "Allow: " : "",
                     allow ? allow : "", allow ? "\r\n" : "",
                     c->close_after ? "Connection: close\r\n" : "");
    c->head_len = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
    c->body_buf = owned ? (char *)body : NULL;
    c->body = head_only ? NULL : body;
    c->body_len = head_only ? 0 : len;
    c->sent = 0;
    c->state = C_WRITE;
}

static void answer_text(struct conn *c, unsigned status, const char *msg, bool head_only)
{
    answer(c, status, TEXT, msg, strlen(msg), false, head_only, NULL);
}

/* Refuse what cannot be parsed: answer, then close. */
static void refuse(struct conn *c, unsigned status, const char *msg)
{
    log_debug("metrics: refused a request with %u: %.*s", status, (int)strcspn(msg, "\n"), msg);
    c->close_after = true;
    answer_text(c, status, msg, false);
}

static void on_healthz(struct metrics *m, struct conn *c, bool head_only)
{
    int64_t now = now_ms(m);
    pthread_mutex_lock(&m->lock);
    int64_t since = now - m->last_tick_ms, window = STALL_INTERVALS * m->poll_interval_ms;
    pthread_mutex_unlock(&m->lock);
    if (since <= window) {
        answer_text(c, 200, "ok\n", head_only);
        return;
    }
    char *body = util_strprintf("stalled: no reconcile tick for %lld ms (limit %lld ms)\n",
                                (long long)since, (long long)window);
    if (!body) answer_text(c, 500, "stalled\n", head_only);
    else answer(c, 500, TEXT, body, strlen(body), true, head_only, NULL);
}

static void route(struct metrics *m, struct conn *c, const struct request *r)
{
    enum { P_METRICS, P_HEALTHZ, P_READYZ, P_POOLS, P_NONE } path = P_NONE;
    if (strcmp(r->path, "/metrics") == 0) path = P_METRICS;
    else if (strcmp(r->path, "/debug/pools") == 0) path = P_POOLS;
    else if (strcmp(r->path, "/healthz") == 0) path = P_HEALTHZ;
    else if (strcmp(r->path, "/readyz") == 0) path = P_READYZ;
    if (path == P_NONE) {
        answer_text(c, 404, "not found\n", r->head);
        return;
    }
    if (strcmp(r->method, "GET") != 0 && !r->head) {
        answer(c, 405, TEXT, "method not allowed\n", 19, false, false, "GET, HEAD");
        return;
    }
    if (path == P_HEALTHZ) {
        on_healthz(m, c, r->head);
        return;
    }
    if (path == P_READYZ) {
        pthread_mutex_lock(&m->lock);
        bool ready = m->ready;
        pthread_mutex_unlock(&m->lock);
        answer_text(c, ready ? 200 : 503, ready ? "ready\n" : "not ready\n", r->head);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = path == P_POOLS ? metrics_render_pools(m, &text, &len)
                             : metrics_render(m, &text, &len);
    if (rc) {
        log_msg(LOG_WARN, NULL, rc, "metrics: could not render %s", r->path);
        answer_text(c, 500, "could not render metrics\n", r->head);
        return;
    }
    answer(c, 200,
           path == P_POOLS ? "application/json" : "text/plain; version=0.0.4; charset=utf-8",
           text, len, true, r->head, NULL);
}

/* ---- parsing ---- */

/* A token's characters (RFC 9110 5.6.2), in ASCII whatever the locale. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Header values: visible ASCII, obs-text, space and tab. */
static bool is_value_char(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static bool token_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Does the comma-separated list p[0..n) name token? */
static bool list_has(const char *p, size_t n, const char *token)
{
    const char *end = p + n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if (token_eq(s, (size_t)(t - s), token)) return true;
        p = e + (comma ? 1 : 0);
    }
    return false;
}

/* Drop the empty lines a client may send before a request (RFC 9112 2.2). */
static void skip_empty_lines(struct conn *c)
{
    size_t skip = 0;
    while (c->in_len - skip >= 2 && c->in[skip] == '\r' && c->in[skip + 1] == '\n') skip += 2;
    if (skip == 0) return;
    memmove(c->in, c->in + skip, c->in_len - skip);
    c->in_len -= skip;
}

/* Look for the end of the header in the bytes not scanned yet. Returns its length (with the
 * empty line), 0 when more bytes are needed, or -1 on a NUL, a bare LF or a bare CR. */
static long header_end(struct conn *c)
{
    if (c->scanned == 0) skip_empty_lines(c);
    if (c->in_len == 1 && c->in[0] == '\r') return 0;   /* maybe one more empty line */
    for (size_t i = c->scanned; i < c->in_len; i++) {
        char ch = c->in[i], prev = i > 0 ? c->in[i - 1] : '\0';
        if (ch == '\0' || (prev == '\r' && ch != '\n') || (ch == '\n' && prev != '\r'))
            return -1;
        if (ch == '\n' && i >= 3 && c->in[i - 2] == '\n') return (long)(i + 1);
    }
    c->scanned = c->in_len;
    return 0;
}

/* "METHOD SP TARGET SP HTTP/x.y", line without its CRLF. Returns 0 or the status to refuse
 * with. */
static unsigned parse_request_line(char *line, size_t n, struct request *r, bool *http10)
{
    char *sp1 = memchr(line, ' ', n);
    if (!sp1 || sp1 == line) return 400;
    char *target = sp1 + 1, *end = line + n;
    char *sp2 = memchr(target, ' ', (size_t)(end - target));
    if (!sp2 || sp2 == target) return 400;
    for (const char *p = line; p < sp1; p++)
        if (!is_tchar((unsigned char)*p)) return 400;
    for (const char *p = target; p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return 400;
    const char *v = sp2 + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || !isdigit((unsigned char)v[5]) ||
        v[6] != '.' || !isdigit((unsigned char)v[7]))
        return 400;
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) return 505;
    *http10 = v[7] == '0';
    *sp1 = '\0';
    *sp2 = '\0';
    char *query = strchr(target, '?');  /* the query string does not change the path */
    if (query) *query = '\0';
    r->method = line;
    r->path = target;
    r->head = strcmp(line, "HEAD") == 0;
    return 0;
}

struct seen {
    int hosts;
    bool body, close;
    const char *cl;                /* the first Content-Length value, and its length */
    size_t cl_len;
};

/* One "Name: value" line. Returns 0 or the status to refuse with. */
static unsigned parse_field(const char *line, size_t n, struct seen *s)
{
    const char *colon = memchr(line, ':', n);
    if (!colon || colon == line) return 400;    /* also obs-fold: a line opening with SP */
    for (const char *p = line; p < colon; p++)
        if (!is_tchar((unsigned char)*p)) return 400;
    const char *v = colon + 1, *end = line + n;
    for (const char *p = v; p < end; p++)
        if (!is_value_char((unsigned char)*p)) return 400;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    size_t name_len = (size_t)(colon - line), vlen = (size_t)(end - v);
    if (token_eq(line, name_len, "host")) {
        s->hosts++;
    } else if (token_eq(line, name_len, "transfer-encoding")) {
        s->body = true;
    } else if (token_eq(line, name_len, "connection")) {
        s->close = s->close || list_has(v, vlen, "close");
    } else if (token_eq(line, name_len, "content-length")) {
        if (vlen == 0) return 400;
        for (size_t i = 0; i < vlen; i++) {
            if (!isdigit((unsigned char)v[i])) return 400;
            if (v[i] != '0') s->body = true;
        }
        if (s->cl && (s->cl_len != vlen || memcmp(s->cl, v, vlen) != 0)) return 400;
        s->cl = v;
        s->cl_len = vlen;
    }
    return 0;
}

/* Parse the header in[0..len) (CRLF line ends, checked by header_end). Returns 0 or the status
 * to refuse with; *why says what for the log and the body. */
static unsigned parse_request(char *in, size_t len, struct request *r, const char **why)
{
    char *line = in, *end = in + len;
    char *crlf = memchr(line, '\r', (size_t)(end - line));
    bool http10 = false;
    *why = "malformed request line\n";
    unsigned st = parse_request_line(line, (size_t)(crlf - line), r, &http10);
    if (st == 505) *why = "http version not supported\n";
    if (st) return st;
    struct seen s = {0};
    *why = "malformed header field\n";
    for (line = crlf + 2; line < end && *line != '\r'; line = crlf + 2) {
        crlf = memchr(line, '\r', (size_t)(end - line));
        if ((st = parse_field(line, (size_t)(crlf - line), &s)) != 0) return st;
    }
    *why = "missing or repeated host header\n";
    if ((!http10 && s.hosts != 1) || s.hosts > 1) return 400;
    *why = "request body not allowed\n";
    if (s.body) return 413;
    r->close = s.close || http10;
    return 0;
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    free(c->in);
    free(c->body_buf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* The answer went out: close, or make ready for the next request. */
static void conn_answered(struct metrics *m, struct conn *c, int64_t now)
{
    free(c->body_buf);
    c->body_buf = NULL;
    c->body = NULL;
    if (c->close_after) {
        /* Half-close and read what the client still sends until it closes: closing with
         * unread bytes would reset the connection and could destroy the answer in flight. */
        shutdown(c->fd, SHUT_WR);
        c->state = C_LINGER;
        c->deadline_ms = now + (m->request_timeout_ms < LINGER_MS ? m->request_timeout_ms
                                                                 : LINGER_MS);
        return;
    }
    c->state = C_READ;
    c->deadline_ms = now + m->request_timeout_ms;
}

/* Send what is left of the answer. false: the connection is gone. */
static bool conn_write(struct metrics *m, struct conn *c, int64_t now)
{
    while (c->state == C_WRITE) {
        struct iovec iov[2];
        int n = 0;
        if (c->sent < c->head_len)
            iov[n++] = (struct iovec){c->head + c->sent, c->head_len - c->sent};
        size_t body_off = c->sent > c->head_len ? c->sent - c->head_len : 0;
        if (body_off < c->body_len)
            iov[n++] = (struct iovec){(char *)c->body + body_off, c->body_len - body_off};
        if (n == 0) {
            conn_answered(m, c, now);
            break;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);   /* a gone peer: EPIPE, no signal */
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (w < 0) {
            log_debug("metrics: closed a connection: send: %s", strerror(errno));
            return false;
        }
        c->sent += (size_t)w;
    }
    return true;
}

/* Answer the request whose header is in[0..len), and keep what follows (pipelined). */
static void conn_handle(struct metrics *m, struct conn *c, size_t len)
{
    struct request r = {0};
    const char *why;
    unsigned st = parse_request(c->in, len, &r, &why);
    if (st) {
        refuse(c, st, why);
    } else {
        c->close_after = r.close;
        route(m, c, &r);
    }
    memmove(c->in, c->in + len, c->in_len - len);
    c->in_len -= len;
    c->scanned = 0;
}

/* Parse what was read; answer a whole request. */
static void conn_parse(struct metrics *m, struct conn *c)
{
    long end = header_end(c);
    if (end < 0) {
        refuse(c, 400, "malformed request: NUL, bare CR or bare LF\n");
        c->in_len = 0;
    } else if (end > 0) {
        conn_handle(m, c, (size_t)end);
    } else if (c->in_len >= m->memory_limit) {
        refuse(c, 431, "request header too large\n");
        c->in_len = 0;
    }
}

/* Read what the client sent, within the buffer's cap. false: the connection is gone. */
static bool conn_read(struct metrics *m, struct conn *c)
{
    if (c->in_len >= m->memory_limit) return true;       /* conn_parse refuses it */
    if (c->in_len == c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap * 2 : IN_FIRST;
        if (cap > m->memory_limit) cap = m->memory_limit;
        char *p = realloc(c->in, cap);
        if (!p) {
            log_debug("metrics: closed a connection: out of memory");
            return false;
        }
        c->in = p;
        c->in_cap = cap;
    }
    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
    if (r <= 0) {
        if (r < 0) log_debug("metrics: closed a connection: recv: %s", strerror(errno));
        return false;
    }
    c->in_len += (size_t)r;
    return true;
}

/* Discard what a refused client still sends. false: it closed, so may we. */
static bool conn_drain(struct conn *c)
{
    char junk[4096];
    ssize_t r = recv(c->fd, junk, sizeof junk, 0);
    return r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

/* Answer every whole request in the buffer, in order, as far as the socket takes the answers.
 * false: the connection is gone. */
static bool conn_serve(struct metrics *m, struct conn *c, int64_t now)
{
    while (c->state == C_READ) {
        conn_parse(m, c);
        if (c->state != C_WRITE) break;
        c->deadline_ms = now + m->request_timeout_ms;   /* the answer's own time to go out */
        if (!conn_write(m, c, now)) return false;
    }
    return true;
}

/* One poll round's events on c. false: close it. */
static bool conn_step(struct metrics *m, struct conn *c, short revents, int64_t now)
{
    if (c->state == C_LINGER) return !(revents & (POLLIN | POLLHUP | POLLERR)) || conn_drain(c);
    if (c->state == C_WRITE) {
        if (!(revents & (POLLOUT | POLLHUP | POLLERR))) return true;
        if (!conn_write(m, c, now)) return false;
    } else if (revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!conn_read(m, c)) return false;
    }
    return conn_serve(m, c, now);
}

/* ---- the listener thread ---- */

static void accept_all(struct metrics *m, int64_t now)
{
    while (m->nconns < m->max_conns && now >= m->accept_pause_until) {
        int fd = accept4(m->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_debug("metrics: accept: %s; pausing for 100 ms", strerror(errno));
                m->accept_pause_until = now + 100;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                log_debug("metrics: accept: %s", strerror(errno));
            }
            return;
        }
        struct conn *c = &m->conns[m->nconns++];
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->state = C_READ;
        c->deadline_ms = now + m->request_timeout_ms;
    }
}

/* Fill the poll set; returns the poll timeout (ms, -1: none) from the nearest deadline. */
static int poll_setup(struct metrics *m, int64_t now)
{
    int64_t next = -1;
    m->pfds[0] = (struct pollfd){.fd = m->wakefd, .events = POLLIN};
    bool accepting = m->nconns < m->max_conns;
    if (accepting && now < m->accept_pause_until) {
        accepting = false;
        next = m->accept_pause_until;
    }
    m->pfds[1] = (struct pollfd){.fd = accepting ? m->lfd : -1, .events = POLLIN};
    for (size_t i = 0; i < m->nconns; i++) {
        struct conn *c = &m->conns[i];
        m->pfds[2 + i] = (struct pollfd){.fd = c->fd,
                                         .events = c->state == C_WRITE ? POLLOUT : POLLIN};
        if (next < 0 || c->deadline_ms < next) next = c->deadline_ms;
    }
    if (next < 0) return -1;
    return next <= now ? 0 : next - now > 60000 ? 60000 : (int)(next - now);
}

/* Close the connections whose step failed or whose deadline passed; keep the rest packed. */
static void sweep(struct metrics *m, int64_t now)
{
    size_t keep = 0;
    for (size_t i = 0; i < m->nconns; i++) {
        struct conn *c = &m->conns[i];
        if (c->fd >= 0 && now >= c->deadline_ms) {
            if (c->state != C_LINGER)
                log_debug("metrics: closed a connection that did not complete a request in "
                          "%lld ms", (long long)m->request_timeout_ms);
            conn_close(c);
        }
        if (c->fd >= 0) m->conns[keep++] = *c;
    }
    m->nconns = keep;
}

static void *listener_main(void *arg)
{
    struct metrics *m = arg;
    for (;;) {
        int timeout = poll_setup(m, util_now_ms());
        int n = poll(m->pfds, 2 + m->nconns, timeout);
        if (n < 0 && errno != EINTR) {
            /* Not a client's doing (a bad fd set, no memory): say so, since /healthz and
             * /metrics now go unanswered and the kubelet's probes will restart the pod. */
            log_error("metrics: poll failed: %s; the listener has stopped", strerror(errno));
            break;
        }
        if (n > 0 && m->pfds[0].revents) break;          /* metrics_free */
        int64_t now = util_now_ms();
        for (size_t i = 0; n > 0 && i < m->nconns; i++) {
            short ev = m->pfds[2 + i].revents;
            if (ev && !conn_step(m, &m->conns[i], ev, now)) conn_close(&m->conns[i]);
        }
        sweep(m, now);
        if (n > 0 && m->pfds[1].revents) accept_all(m, now);
    }
    for (size_t i = 0; i < m->nconns; i++) conn_close(&m->conns[i]);
    m->nconns = 0;
    return NULL;
}

/* ---- listening ---- */

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

/* A listening socket on sa; v6only is used for AF_INET6 (0: dual stack). -1 with errno set. */
static int open_listener(const struct sockaddr *sa, socklen_t salen, int v6only)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0) ||
        bind(fd, sa, salen) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int listen_on(struct metrics *m, const char *address)
{
    int rc = JP_EINVAL;
    char host[256];
    uint16_t port;
    struct addrinfo *ai = NULL;

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
        m->lfd = open_listener((struct sockaddr *)&a6, sizeof a6, 0);
        if (m->lfd < 0) { /* no IPv6 on this host: all IPv4 interfaces */
            struct sockaddr_in a4;
            memset(&a4, 0, sizeof a4);
            a4.sin_family = AF_INET;
            a4.sin_addr.s_addr = htonl(INADDR_ANY);
            a4.sin_port = htons(port);
            m->lfd = open_listener((struct sockaddr *)&a4, sizeof a4, 0);
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
        m->lfd = open_listener(ai->ai_addr, ai->ai_addrlen, 1);
    }
    if (m->lfd < 0) {
        log_error("metrics: cannot listen on %s: %s", address, strerror(errno));
        rc = JP_EIO;
        goto out;
    }
    m->port = bound_port(m->lfd);
    rc = 0;
out:
    if (ai) freeaddrinfo(ai);
    return rc;
}

/* Listen on address and start the listener thread. */
static int serve(struct metrics *m, const char *address, const struct metrics_opts *o)
{
    m->max_conns = o->max_connections;
    m->memory_limit = o->memory_limit;
    m->conns = calloc(m->max_conns, sizeof *m->conns);
    m->pfds = calloc(m->max_conns + 2, sizeof *m->pfds);
    if (!m->conns || !m->pfds) return JP_ENOMEM;
    int rc = listen_on(m, address);
    if (rc) return rc;
    m->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->wakefd < 0) {
        log_error("metrics: eventfd: %s", strerror(errno));
        return JP_EIO;
    }
    if (pthread_create(&m->thread, NULL, listener_main, m) != 0) return JP_ENOMEM;
    m->thread_started = true;
    return 0;
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
    m->lfd = m->wakefd = -1;
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
        rc = serve(m, address, &o);
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
    if (m->thread_started) {
        uint64_t one = 1;
        if (write(m->wakefd, &one, sizeof one) != sizeof one)
            log_debug("metrics: could not wake the listener: %s", strerror(errno));
        pthread_join(m->thread, NULL);   /* it closes every connection on its way out */
    }
    if (m->lfd >= 0) close(m->lfd);
    if (m->wakefd >= 0) close(m->wakefd);
    free(m->conns);
    free(m->pfds);
    for (size_t i = 0; m->pools && i < m->npools; i++) free(m->pools[i].name);
    for (size_t i = 0; m->errs && i < m->nerrs; i++) free(m->errs[i].pool);
    free(m->pools);
    free(m->errs);
    free(m->version);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

uint16_t metrics_port(const struct metrics *m)
{
    return m ? m->port : 0;
}
