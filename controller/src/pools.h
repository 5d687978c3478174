/* pools.h: where pools come from: the config file's pools[] and JobPool objects, as one set. */
#ifndef JP_POOLS_H
#define JP_POOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct cJSON;

/* The most JobPool objects served at once (besides the file's pools). */
#define POOLS_JOBPOOLS_MAX 1000

/* Why a JobPool is not served, or "" when it is. */
#define POOLS_REASON_LEN 32
#define POOLS_MESSAGE_LEN 512

/* One pool, from the file or from a JobPool. */
struct pool {
    const struct cfg_pool *cfg;  /* the settings; stable while the pool is unchanged */
    bool from_file;
    bool paused;                 /* annotation jobpool.dev/paused: "true" (JobPools only) */
    bool served;                 /* in the set reconcile works on */
    /* JobPools only: */
    char ns[64], name[64];       /* namespace and name; key "ns/name" */
    char uid[64];
    int64_t generation;          /* metadata.generation */
    char reason[POOLS_REASON_LEN];   /* not served: InvalidSpec, NameClash, ... */
    char *message;               /* with reason; NULL when none (owned: the file's pools, 1,000
                                  * of them, do not each carry a 512-byte buffer) */
    struct cJSON *status;        /* the status the object carried when last read (owned) */
};

struct pools;

/* The set of cfg (borrowed; must outlive it): the file's pools, served as they are. home_ns is
 * the controller's namespace (copied). 0 or JP_ENOMEM; *out NULL on failure. */
int pools_new(const struct cfg *cfg, const char *home_ns, struct pools **out);
void pools_free(struct pools *ps);

/* Replace the JobPools with those of list (a JobPoolList's "items": the objects as the API
 * server returns them). A JobPool whose uid, generation and pause annotation are unchanged keeps
 * its struct cfg_pool (so a pass in progress and the backend see the same pointer); a changed one
 * is validated again (cfg_pool_from_jobpool); one no longer listed is dropped: it gets no new
 * workers, and its running Jobs finish. On a name clash with the file, the file wins and the
 * JobPool is not served (reason NameClash); the file's pools live in the controller's namespace
 * (home_ns), so only a JobPool there can clash. A JobPool that names a connectionSecretRef is not
 * served until pools_set_conn gives it a usable connection. Each JobPool's workers are created in
 * its own namespace; one outside home_ns is known as "namespace/name" (cfg_pool_id). Returns 0
 * or JP_ENOMEM (the set is then unchanged). */
int pools_set_jobpools(struct pools *ps, const struct cJSON *items);

/* The connection of the i-th JobPool (pools_jobpool_at) that names a Secret
 * (cfg->connection_secret): use (borrowed from conns.h, valid until the next call) when the
 * Secret gives a usable one, else NULL with the reason and message its status shows. A JobPool
 * without spec.vhost takes the connection's vhost. Call pools_conns_done after the last one.
 * Returns 0 or JP_ENOMEM (the pool is then not served). */
struct conn_use;
int pools_set_conn(struct pools *ps, size_t i, const struct conn_use *use, const char *reason,
                   const char *message);
/* Decide again which JobPools are served, now that their connections are known. */
void pools_conns_done(struct pools *ps);

/* Served pools: the file's first, in file order, then JobPools by namespace/name. The pointers
 * are valid until the next pools_set_jobpools. */
size_t pools_count(const struct pools *ps);
const struct pool *pools_at(const struct pools *ps, size_t i);

/* Every JobPool known, served or not (for status). */
size_t pools_jobpool_count(const struct pools *ps);
const struct pool *pools_jobpool_at(const struct pools *ps, size_t i);

/* A stable small number for the pool's settings, unique among the pools served at once:
 * the file's pools are 0 .. npools-1, JobPools follow (at most POOLS_JOBPOOLS_MAX). Backends
 * keep per-pool state in arrays of pools_slots entries indexed by it. */
size_t pools_slot(const struct cfg *cfg, const struct cfg_pool *p);
size_t pools_slots(const struct cfg *cfg);

#endif
