/* config_limits.h: the one table of the config's limits. config.c enforces it; the chart's
 * values.schema.json (integers, lengths, counts) and templates/_limits.tpl (durations, which a
 * JSON schema cannot compare) are generated from it by charts/jobpool/limits.py (make
 * chart-limits). tests/integration/chart-limits.test.sh fails when they drift, and renders each
 * boundary on both sides of it through helm template and jobpool-controller --check-config. */
#ifndef JP_CONFIG_LIMITS_H
#define JP_CONFIG_LIMITS_H

#include <stdint.h>

#define CFG_DURATION_MAX_MS ((int64_t)365 * 24 * 3600 * 1000) /* 8760h, for every duration */

/* X(ID, key path in the config and the chart values ("pools." = each pool), kind, min, max).
 * kind: INT (an integer), DURATION (milliseconds; max is CFG_DURATION_MAX_MS), LENGTH (of a
 * string), ITEMS (of a list). One row per line: limits.py reads this file. */
#define CFG_LIMITS(X)                                                                         \
    X(POLL_INTERVAL, "pollInterval", DURATION, 100, CFG_DURATION_MAX_MS)                      \
    X(MAX_ACTIVE_TOTAL, "maxActiveTotal", INT, 0, 100000)                                     \
    X(RMQ_TIMEOUT, "rabbitmq.timeout", DURATION, 100, CFG_DURATION_MAX_MS)                    \
    X(RMQ_CONNECT_TIMEOUT, "rabbitmq.connectTimeout", DURATION, 100, CFG_DURATION_MAX_MS)     \
    X(RMQ_CONSUMER_TIMEOUT, "rabbitmq.consumerTimeout", DURATION, 1000, CFG_DURATION_MAX_MS) \
    X(RMQ_MANAGEMENT_LAG, "rabbitmq.managementLag", DURATION, 100, CFG_DURATION_MAX_MS)       \
    X(KUBE_CONCURRENCY, "kubernetes.concurrency", INT, 1, 256)                                \
    /* a label value; <= 56 so that the default Lease "<instance>-leader" fits 63 */         \
    X(INSTANCE, "kubernetes.instance", LENGTH, 1, 56)                                         \
    X(LEASE_DURATION, "leaderElection.leaseDuration", DURATION, 1000, CFG_DURATION_MAX_MS)    \
    X(RENEW_DEADLINE, "leaderElection.renewDeadline", DURATION, 500, CFG_DURATION_MAX_MS)     \
    X(RETRY_PERIOD, "leaderElection.retryPeriod", DURATION, 100, CFG_DURATION_MAX_MS)         \
    X(POOLS, "pools", ITEMS, 0, 1000)  /* 0: JobPool objects only (backend kube) */          \
    /* a pool name + generateName's 5 random characters and '-' + the pod's suffix fit 63 */ \
    X(POOL_NAME, "pools.name", LENGTH, 1, 52)                                                 \
    X(POOL_QUEUE, "pools.queue", LENGTH, 1, 255)                                              \
    X(MAX_ACTIVE, "pools.maxActive", INT, 1, 100000)                                          \
    X(MIN_ACTIVE, "pools.minActive", INT, 0, 100000)                                          \
    X(SPARE_WORKERS, "pools.spareWorkers", INT, 0, 100000)                                    \
    X(MAX_START_PER_TICK, "pools.maxStartPerTick", INT, 1, 100000)                            \
    X(MESSAGES_PER_WORKER, "pools.messagesPerWorker", INT, 1, 100000)                         \
    X(MAX_ATTEMPTS, "pools.maxAttempts", INT, 1, 1000)                                        \
    X(PENDING_TIMEOUT, "pools.pendingTimeout", DURATION, 1000, CFG_DURATION_MAX_MS)           \
    X(IDLE_TIMEOUT, "pools.idleTimeout", DURATION, 100, CFG_DURATION_MAX_MS)                  \
    /* 0: none */                                                                              \
    X(TASK_TIMEOUT, "pools.taskTimeout", DURATION, 0, CFG_DURATION_MAX_MS)                    \
    X(SUCCESSFUL_HISTORY, "pools.successfulHistory", INT, 0, 100000)                          \
    X(FAILED_HISTORY, "pools.failedHistory", INT, 0, 100000)                                  \
    X(TTL_AFTER_FINISHED, "pools.ttlSecondsAfterFinished", INT, 0, 2147483647)

enum cfg_limit_id {
#define CFG_LIMIT_ID(id, key, kind, min, max) CFG_LIM_##id,
    CFG_LIMITS(CFG_LIMIT_ID)
#undef CFG_LIMIT_ID
    CFG_LIM_COUNT
};

struct cfg_limit {
    const char *key;
    int64_t min, max;
};

/* The table, indexed by enum cfg_limit_id (defined in config.c). */
extern const struct cfg_limit cfg_limits[CFG_LIM_COUNT];

#define CFG_LIM_MIN(id) (cfg_limits[CFG_LIM_##id].min)
#define CFG_LIM_MAX(id) (cfg_limits[CFG_LIM_##id].max)

#endif
