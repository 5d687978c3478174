/* watch.h: one kind of Kubernetes object, listed then watched into a store that knows its age. */
#ifndef JP_WATCH_H
#define JP_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct cJSON;
struct kube_client;

/* Layered like client-go's tools/cache: a reflector thread per namespace lists, then watches,
 * into one store (store.h); it alone knows resourceVersions and bookmarks, relists on 410 Gone,
 * after a failed or silent watch and every resync period, and merges each relist into the store.
 * Readers visit the store under the watch's lock and never touch the network.
 *
 * The age: a reflector knows its store is current when a list completes, when a watch event or
 * bookmark arrives, and when the server ends a watch at its timeoutSeconds (nothing was left to
 * send). Each watch asks for bookmarks and a short timeoutSeconds, and a watch that sends nothing
 * for longer than silence_ms is dropped as half-open, so a healthy watch is never older than
 * about watch_timeout_s. Every time here is CLOCK_MONOTONIC. */

/* A kind, described rather than coded: the Jobs, Pods and JobPools watches differ only here. */
struct watch_kind {
    const char *name;           /* "jobs": logs and metric labels */
    const char *resource;       /* "jobs.batch": error messages */
    const char *api;            /* "/apis/batch/v1", "/api/v1", "/apis/jobpool.dev/v1alpha1" */
    const char *plural;         /* "jobs" */
    size_t rec_size;            /* its compact record; the record begins with its key */
    size_t key_size;            /* the key's buffer at the record's start (store_new) */
    /* Fill rec from one object: 0, or non-zero to skip the object. For a kind watched across
     * namespaces the key must be "namespace/name". */
    int (*parse)(const struct cJSON *obj, void *rec);
};

struct watch_opts {
    /* Namespaces to watch, one reflector each; NULL: the client's namespace only. "" watches
     * every namespace with one reflector. At most 256 (a store has 256 sources):
     * kubernetes.watchNamespaces (255) and the controller's own. */
    const char *const *namespaces;
    size_t nnamespaces;
    const char *label_selector; /* NULL: every object */
    int64_t resync_ms;          /* relist period, default 5 min */
    int64_t watch_timeout_s;    /* timeoutSeconds of one watch, default 10 */
    int64_t silence_ms;         /* a watch silent this long is half-open; default timeout + 5 s */
    int64_t expect_timeout_ms;  /* expectations last this long of current time, default 30 s */
    int page_size;              /* list page size, default 50 */
};

struct watch;

/* Start the reflectors, each with its own connection made from c's settings (c may be freed
 * afterwards); kind must outlive the watch. Returns 0 or JP_ENOMEM/JP_EINVAL; network errors
 * never fail this call (they are retried in the background and logged). *out NULL on failure. */
int watch_new(const struct kube_client *c, const struct watch_kind *kind,
              const struct watch_opts *o, struct watch **out);
/* Stop the threads (within about a second) and free everything. NULL is fine. */
void watch_free(struct watch *w);

const struct watch_kind *watch_kind_of(const struct watch *w);
/* True once every reflector has listed at least once. */
bool watch_synced(struct watch *w);
/* Milliseconds since the store was last known to be current (the oldest reflector's); before the
 * first list, since the watch was made. */
int64_t watch_age_ms(struct watch *w);
/* True when the age is over max_age_ms. Logs one line when the watch turns stale and one when
 * it is current again (call it once per tick). */
bool watch_stale(struct watch *w, int64_t max_age_ms);
/* Changes whenever the store changes (a cheap "anything new?" for pollers). */
unsigned long watch_generation(struct watch *w);

/* Visit the store as the controller should see it (store_visit: expectations applied), under the
 * watch's lock: fn must be quick and must not call back into w. Expired expectations are dropped
 * first. Returns fn's non-zero value, or 0. */
int watch_visit(struct watch *w, store_visit_fn fn, void *ud);

/* Writes made by the controller (rec's key identifies the object; namespace index ns_idx of
 * the options, 0 for a single namespace). */
void watch_put(struct watch *w, const void *rec, const char *rv, int ns_idx);
int watch_expect_create(struct watch *w, const void *placeholder);
int watch_expect_delete(struct watch *w, const char *key);
void watch_expect_forget(struct watch *w, const char *key);

struct watch_stats {
    unsigned long lists;        /* completed relists */
    unsigned long watches;      /* watch requests started */
    unsigned long events;       /* watch events applied (bookmarks not counted) */
    unsigned long bookmarks;
    unsigned long relists_gone; /* relists caused by 410 Gone */
    unsigned long silent;       /* watches dropped for silence (half-open) */
    unsigned long errors;       /* failed requests */
    unsigned long dropped;      /* records a relist found gone */
    size_t objects;             /* records held */
    size_t expect_creates, expect_deletes;
    int64_t age_ms;             /* as watch_age_ms */
};
void watch_get_stats(struct watch *w, struct watch_stats *out);

#endif
