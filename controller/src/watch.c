/* watch.c: reflectors (list, then watch, relist on 410) feeding a store that knows its age. */
#define _GNU_SOURCE
#include "watch.h"
#include "err.h"
#include "http.h"
#include "kube.h"
#include "log.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A server that asks for more than this (Retry-After: 3600 was seen from proxies) is retried
 * sooner anyway: sleeping longer would only keep the cache stale. */
#define RETRY_AFTER_MAX_MS 30000
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000     /* a server that is back is seen within this */
#define WATCH_GONE 1            /* line callback: the server said 410, relist */
#define WATCH_REC_MAX 1024      /* the largest record a kind may have */

struct reflector {
    struct watch *w;
    int src;
    char *path;                 /* the collection path */
    struct kube_client *c;      /* own connection, used by this thread only */
    pthread_t thread;
    bool started;
    char rv[32];                /* thread only */
    int64_t line_ms;            /* thread only: the last line (or the start) of this watch */
    bool silent;                /* thread only: the last watch was dropped for silence */
    bool lines;                 /* thread only: the last watch delivered something */
    /* under w->mu */
    bool synced;
    int64_t current_ms;         /* when the store was last known current for this source */
};

struct watch {
    const struct watch_kind *kind;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* CLOCK_MONOTONIC */
    int stop;                   /* atomic */
    struct store *store;
    char *selector;
    int64_t resync_ms, timeout_s, silence_ms, expect_ms;
    int64_t created_ms;
    struct reflector *r;
    size_t nr;
    struct watch_stats stats;
    unsigned long gen;
    bool stale;                 /* as last reported by watch_stale */
    int64_t stale_since_ms;
};

static int stopping(const struct watch *w) { return __atomic_load_n(&w->stop, __ATOMIC_RELAXED); }

/* Sleep up to ms on the monotonic clock, waking early when the watch stops. */
static void watch_sleep(struct watch *w, int64_t ms)
{
    int64_t until = util_now_ms() + ms, left;
    pthread_mutex_lock(&w->mu);
    while (!stopping(w) && (left = until - util_now_ms()) > 0) util_cond_wait_ms(&w->cv, &w->mu, left);
    pthread_mutex_unlock(&w->mu);
}

/* Mark the store current for r now (w->mu held). */
static void current_locked(struct reflector *r, int64_t at_ms)
{
    if (at_ms > r->current_ms) r->current_ms = at_ms;
}

/* ---- list ------------------------------------------------------------------------------- */

static int list_item(void *ud, const cJSON *obj)
{
    struct reflector *r = ud;
    struct watch *w = r->w;
    if (!obj) { /* the listing restarted from a fresh snapshot */
        pthread_mutex_lock(&w->mu);
        store_list_begin(w->store, r->src);
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    _Alignas(max_align_t) unsigned char rec[WATCH_REC_MAX];
    if (w->kind->parse(obj, rec) != 0) return 0;
    const char *rv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "resourceVersion"));
    pthread_mutex_lock(&w->mu);
    int rc = store_list_item(w->store, rec, store_rv(rv), r->src);
    w->gen++;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* List into the store, merged (store.h): nothing the controller wrote after the list was taken
 * disappears. */
static int relist(struct reflector *r)
{
    struct watch *w = r->w;
    int64_t t0 = util_now_ms();
    char rv[sizeof r->rv] = "";
    pthread_mutex_lock(&w->mu);
    store_list_begin(w->store, r->src);
    pthread_mutex_unlock(&w->mu);
    int rc = kube_list(r->c, r->path, w->kind->resource, w->selector, list_item, r, rv, sizeof rv);
    pthread_mutex_lock(&w->mu);
    if (!rc) {
        w->stats.dropped += store_list_end(w->store, r->src, store_rv(rv));
        w->stats.lists++;
        w->gen++;
        r->synced = true;
        current_locked(r, t0); /* as of when the list was taken */
        memcpy(r->rv, rv, sizeof r->rv);
    } else {
        w->stats.errors++;
    }
    pthread_mutex_unlock(&w->mu);
    /* A relist's pages are the largest thing this thread holds; give the peak back. */
    malloc_trim(0);
    return rc;
}

/* ---- watch ------------------------------------------------------------------------------ */

static int watch_line(void *ud, char *line, size_t len)
{
    struct reflector *r = ud;
    struct watch *w = r->w;
    int64_t now = util_now_ms();
    r->line_ms = now;
    if (len == 0) return 0;
    r->lines = true;
    cJSON *ev = cJSON_ParseWithLength(line, len);
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "type"));
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
    const char *rv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "resourceVersion"));
    _Alignas(max_align_t) unsigned char rec[WATCH_REC_MAX];
    int rc = 0;
    if (!type || !obj) {
        log_warn("kube: watch %s: skipping a malformed event", w->kind->name);
        goto out;
    }
    if (strcmp(type, "ERROR") == 0) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "message"));
        int c = cJSON_IsNumber(code) ? code->valueint : 0;
        log_info("kube: watch %s ended with %d: %s", w->kind->name, c, msg ? msg : "");
        rc = c == 410 ? WATCH_GONE : JP_ESERVER;
        goto out;
    }
    bool bookmark = strcmp(type, "BOOKMARK") == 0;
    bool deleted = strcmp(type, "DELETED") == 0;
    if (!bookmark && w->kind->parse(obj, rec) != 0) goto out;
    pthread_mutex_lock(&w->mu);
    if (bookmark) {
        w->stats.bookmarks++;
    } else {
        if (deleted) store_observe_deleted(w->store, (const char *)rec);
        else rc = store_observe(w->store, rec, store_rv(rv), r->src);
        w->stats.events++;
        w->gen++;
    }
    current_locked(r, now);
    pthread_mutex_unlock(&w->mu);
    if (rv) snprintf(r->rv, sizeof r->rv, "%s", rv);
out:
    cJSON_Delete(ev);
    return rc;
}

/* Polled about once a second during a watch: stop, or give up on a silent connection. */
static int watch_should_stop(void *ud)
{
    struct reflector *r = ud;
    if (stopping(r->w)) return 1;
    if (util_now_ms() - r->line_ms > r->w->silence_ms) {
        r->silent = true;
        return 1;
    }
    return 0;
}

static int watch_once(struct reflector *r)
{
    struct watch *w = r->w;
    struct dbuf url;
    char *rv = http_escape(r->rv), *sel = w->selector ? http_escape(w->selector) : NULL;
    int rc = JP_ENOMEM;
    dbuf_init(&url, 64 * 1024);
    if (!rv || (w->selector && !sel)) goto out;
    if ((rc = dbuf_printf(&url, "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%lld"
                          "&resourceVersion=%s", r->path, (long long)w->timeout_s, rv)) != 0)
        goto out;
    if (sel && (rc = dbuf_printf(&url, "&labelSelector=%s", sel)) != 0) goto out;
    pthread_mutex_lock(&w->mu);
    w->stats.watches++;
    pthread_mutex_unlock(&w->mu);
    r->line_ms = util_now_ms();
    r->silent = r->lines = false;
    rc = kube_stream(r->c, url.data, w->kind->resource, (long)(w->timeout_s * 1000 + w->silence_ms),
                     watch_line, watch_should_stop, r);
    if (rc == 0) {
        /* The server ended the watch at its timeout: it had nothing more to send. */
        pthread_mutex_lock(&w->mu);
        current_locked(r, util_now_ms());
        pthread_mutex_unlock(&w->mu);
    }
out:
    free(rv);
    free(sel);
    dbuf_free(&url);
    return rc;
}

static int64_t retry_delay(struct reflector *r, int64_t *backoff)
{
    long ra = kube_last_retry_after(r->c);
    int64_t d = ra > 0 ? (int64_t)ra * 1000 : *backoff;
    if (d > RETRY_AFTER_MAX_MS) d = RETRY_AFTER_MAX_MS;
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
    return d;
}

static void count_error(struct watch *w)
{
    pthread_mutex_lock(&w->mu);
    w->stats.errors++;
    pthread_mutex_unlock(&w->mu);
}

static void *reflector_main(void *arg)
{
    struct reflector *r = arg;
    struct watch *w = r->w;
    const char *what = w->kind->name;
    bool need_list = true;
    int64_t listed_at = 0, backoff = BACKOFF_MIN_MS;
    while (!stopping(w)) {
        int rc;
        if (need_list || util_now_ms() - listed_at >= w->resync_ms) {
            if ((rc = relist(r)) != 0) {
                if (stopping(w)) break;
                log_msg(LOG_WARN, NULL, rc, "kube: list %s failed: %s", what,
                        kube_last_error(r->c));
                watch_sleep(w, retry_delay(r, &backoff));
                continue;
            }
            need_list = false;
            listed_at = util_now_ms();
            backoff = BACKOFF_MIN_MS; /* the server answers again */
        }
        int64_t t0 = util_now_ms();
        rc = watch_once(r);
        if (stopping(w)) break;
        if (rc == JP_ECANCELED && r->silent) {
            log_warn("kube: watch %s sent nothing for %lld s: dropped as half-open, relisting",
                     what, (long long)(w->silence_ms / 1000));
            pthread_mutex_lock(&w->mu);
            w->stats.silent++;
            pthread_mutex_unlock(&w->mu);
            need_list = true;
            continue;
        }
        if (rc == WATCH_GONE || rc == JP_EGONE) {
            pthread_mutex_lock(&w->mu);
            w->stats.relists_gone++;
            pthread_mutex_unlock(&w->mu);
            need_list = true;
            continue;
        }
        if (rc) {
            /* The watch may have missed events: relist once the server answers again. */
            count_error(w);
            log_msg(LOG_WARN, NULL, rc, "kube: watch %s failed: %s", what, kube_last_error(r->c));
            watch_sleep(w, retry_delay(r, &backoff));
            need_list = true;
            continue;
        }
        /* A watch that ends at once without a word is not the server's timeout: do not spin. */
        if (!r->lines && util_now_ms() - t0 < 1000) watch_sleep(w, retry_delay(r, &backoff));
        else backoff = BACKOFF_MIN_MS;
    }
    return NULL;
}

/* ---- the watch -------------------------------------------------------------------------- */

void watch_free(struct watch *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->nr; i++) {
        if (w->r[i].started) pthread_join(w->r[i].thread, NULL);
        kube_client_free(w->r[i].c);
        free(w->r[i].path);
    }
    free(w->r);
    store_free(w->store);
    free(w->selector);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* "<api>/namespaces/<ns>/<plural>", or "<api>/<plural>" for every namespace. */
static char *collection_path(const struct watch_kind *k, const char *ns)
{
    if (!*ns) return util_strprintf("%s/%s", k->api, k->plural);
    char *e = http_escape(ns);
    char *p = e ? util_strprintf("%s/namespaces/%s/%s", k->api, e, k->plural) : NULL;
    free(e);
    return p;
}

static int start_threads(struct watch *w)
{
    for (size_t i = 0; i < w->nr; i++) {
        if (pthread_create(&w->r[i].thread, NULL, reflector_main, &w->r[i]) != 0)
            return JP_ENOMEM;
        w->r[i].started = true;
    }
    return 0;
}

int watch_new(const struct kube_client *c, const struct watch_kind *kind,
              const struct watch_opts *o, struct watch **out)
{
    *out = NULL;
    static const struct watch_opts none = {0};
    if (!o) o = &none;
    if (kind->rec_size > WATCH_REC_MAX || o->nnamespaces > 256) return JP_EINVAL;
    struct watch *w = calloc(1, sizeof *w);
    if (!w) return JP_ENOMEM;
    int rc = JP_ENOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* sleeps ignore wall-clock steps */
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->kind = kind;
    w->resync_ms = o->resync_ms > 0 ? o->resync_ms : 5 * 60 * 1000;
    w->timeout_s = o->watch_timeout_s > 0 ? o->watch_timeout_s : 10;
    w->silence_ms = o->silence_ms > 0 ? o->silence_ms : w->timeout_s * 1000 + 5000;
    w->expect_ms = o->expect_timeout_ms > 0 ? o->expect_timeout_ms : 30000;
    w->created_ms = util_now_ms();
    w->nr = o->namespaces ? o->nnamespaces : 1;
    if (o->label_selector && !(w->selector = strdup(o->label_selector))) goto out;
    if ((rc = store_new(kind->rec_size, kind->key_size, &w->store)) != 0) goto out;
    rc = JP_ENOMEM;
    if (!(w->r = calloc(w->nr ? w->nr : 1, sizeof *w->r))) goto out;
    for (size_t i = 0; i < w->nr; i++) {
        struct reflector *r = &w->r[i];
        r->w = w;
        r->src = (int)i;
        const char *ns = o->namespaces ? o->namespaces[i] : kube_namespace(c);
        if (!(r->path = collection_path(kind, ns))) goto out;
        /* Small pages: a page's JSON tree is the largest thing the controller ever holds
         * (about 20 KB an object, most of it managedFields). At 50 a relist of 20,000 pods
         * and 20,000 Jobs is 800 requests, and it lifts the steady state by 1.7 MiB instead
         * of 3.0 (measured): the periodic relist made the peak at that scale. */
        if ((rc = kube_client_clone(c, o->page_size > 0 ? o->page_size : 50, &r->c)) != 0)
            goto out;
    }
    rc = start_threads(w);
out:
    if (rc) watch_free(w);
    else *out = w;
    return rc;
}

const struct watch_kind *watch_kind_of(const struct watch *w) { return w->kind; }

bool watch_synced(struct watch *w)
{
    bool s = true;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nr; i++) s = s && w->r[i].synced;
    pthread_mutex_unlock(&w->mu);
    return s;
}

/* The oldest reflector's "current" time (w->mu held). */
static int64_t current_locked_min(const struct watch *w)
{
    int64_t cur = INT64_MAX;
    for (size_t i = 0; i < w->nr; i++) {
        int64_t c = w->r[i].synced ? w->r[i].current_ms : w->created_ms;
        if (c < cur) cur = c;
    }
    return cur == INT64_MAX ? w->created_ms : cur;
}

int64_t watch_age_ms(struct watch *w)
{
    pthread_mutex_lock(&w->mu);
    int64_t age = util_now_ms() - current_locked_min(w);
    pthread_mutex_unlock(&w->mu);
    return age;
}

bool watch_stale(struct watch *w, int64_t max_age_ms)
{
    pthread_mutex_lock(&w->mu);
    int64_t now = util_now_ms(), age = now - current_locked_min(w);
    bool stale = age > max_age_ms, was = w->stale;
    if (stale && !was) w->stale_since_ms = now;
    int64_t since = w->stale_since_ms;
    w->stale = stale;
    pthread_mutex_unlock(&w->mu);
    if (stale && !was)
        log_warn("kube: the %s cache is %.1f s old (bound %.0f s): its pools hold, no starts "
                 "and no deletes, until it is current again", w->kind->name, (double)age / 1e3,
                 (double)max_age_ms / 1e3);
    else if (!stale && was)
        log_info("kube: the %s cache is current again after %.1f s stale: its pools resume",
                 w->kind->name, (double)(now - since) / 1e3);
    return stale;
}

unsigned long watch_generation(struct watch *w)
{
    pthread_mutex_lock(&w->mu);
    unsigned long g = w->gen;
    pthread_mutex_unlock(&w->mu);
    return g;
}

int watch_visit(struct watch *w, store_visit_fn fn, void *ud)
{
    pthread_mutex_lock(&w->mu);
    /* Expectations run on the store's own clock: a stale store never forgets a write. */
    store_expect_expire(w->store, current_locked_min(w), w->expect_ms);
    int rc = store_visit(w->store, fn, ud);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void watch_put(struct watch *w, const void *rec, const char *rv, int ns_idx)
{
    pthread_mutex_lock(&w->mu);
    if (store_put(w->store, rec, store_rv(rv), ns_idx) == 0) w->gen++;
    pthread_mutex_unlock(&w->mu);
}

int watch_expect_create(struct watch *w, const void *placeholder)
{
    pthread_mutex_lock(&w->mu);
    int rc = store_expect_create(w->store, placeholder, util_now_ms());
    w->gen++;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int watch_expect_delete(struct watch *w, const char *key)
{
    pthread_mutex_lock(&w->mu);
    int rc = store_expect_delete(w->store, key, util_now_ms());
    w->gen++;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void watch_expect_forget(struct watch *w, const char *key)
{
    pthread_mutex_lock(&w->mu);
    store_expect_forget(w->store, key);
    w->gen++;
    pthread_mutex_unlock(&w->mu);
}

void watch_get_stats(struct watch *w, struct watch_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    out->objects = store_count(w->store);
    store_expect_count(w->store, &out->expect_creates, &out->expect_deletes);
    out->age_ms = util_now_ms() - current_locked_min(w);
    pthread_mutex_unlock(&w->mu);
}
