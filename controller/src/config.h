/* config.h: the controller's configuration as plain structs, loaded from YAML and validated. */
#ifndef JP_CONFIG_H
#define JP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct cJSON;
struct kube_worker_conn;
struct rmq_client;
struct yamljson_src;

enum cfg_backend { CFG_BACKEND_KUBE = 0, CFG_BACKEND_LOCAL };
enum cfg_depth_source { CFG_DEPTH_MANAGEMENT = 0, CFG_DEPTH_AMQP };

/* A credential reference: exactly one of env or file is set. Never an inline value. */
struct cfg_secret {
    char *env;
    char *file;
};

/* The Secret workers read their broker login from (kube backend). name NULL: not set, and Jobs
 * get no broker connection from the controller (the template must provide one). */
struct cfg_worker_secret {
    char *name;                    /* required when workerSecret is set */
    char *username_key;            /* default "username" */
    char *password_key;            /* default "password" */
};

/* A Secret holding the workers' client certificate and key for an amqps:// broker that asks for
 * one (mutual TLS), mounted into workers. name NULL: not set. */
struct cfg_cert_secret {
    char *name;
    char *cert_key;                /* default "tls.crt" (a kubernetes.io/tls Secret) */
    char *key_key;                 /* default "tls.key" */
};

/* A Secret holding the CA of an amqps:// broker, mounted into workers. name NULL: not set. */
struct cfg_ca_secret {
    char *name;
    char *key;                     /* default "ca.crt" */
};

struct cfg_rabbitmq {
    char *management_url;          /* default http://rabbitmq:15672 */
    char *amqp_url;                /* default amqp://rabbitmq:5672 */
    char *vhost;                   /* default "/" */
    struct cfg_secret username;
    struct cfg_secret password;
    char *ca_file;                 /* NULL: system CAs; TLS is always verified */
    char *cert_file;               /* client certificate (PEM) the controller presents on
                                    * amqps:// and https://, with key_file; NULL: none */
    char *key_file;
    int64_t timeout_ms;            /* total request timeout, default 3s */
    int64_t connect_timeout_ms;    /* default 1s */
    size_t max_body;               /* response size cap, default 8 MiB */
    enum cfg_depth_source depth_source;
    int64_t consumer_timeout_ms;   /* the broker's consumer_timeout as the operator states it
                                    * (default 30m, RabbitMQ's); checked against taskTimeout */
    int64_t management_lag_ms;     /* how old a management API sample can be: the broker's
                                    * collect_statistics_interval plus its smallest sample
                                    * increment (default 10s: 5 s + 5 s, RabbitMQ's defaults) */
    struct cfg_worker_secret worker_secret;
    struct cfg_ca_secret ca_secret;
    struct cfg_cert_secret cert_secret;
};

/* One variable of a pool's worker.env: a literal value, or a reference read at each spawn. */
struct cfg_env_var {
    char *name;                    /* [A-Za-z_][A-Za-z0-9_]* */
    char *value;                   /* literal value; NULL when ref is used */
    struct cfg_secret ref;         /* {env: NAME} or {file: PATH}; read with cfg_secret_read */
};

struct cfg_kubernetes {
    bool in_cluster;               /* default true unless kubeconfig is given */
    char *kubeconfig;
    char *context;
    char *namespace_;              /* NULL: POD_NAMESPACE, the service account's or the
                                    * context's namespace, else "default" */
    char *instance;                /* label jobpool.dev/instance on every Job, default "jobpool" */
    bool jobpools;                 /* serve JobPool objects too, default true (backend kube) */
    char **watch_namespaces;       /* JobPools are watched here; NULL: in every namespace */
    size_t nwatch_namespaces;
    double qps;                    /* client-side create rate limit, default 50 */
    int concurrency;               /* parallel creates, default 8 */
};

struct cfg_leader {
    bool enabled;                  /* default false */
    char *lease_name;              /* default "<kubernetes.instance>-leader" */
    int64_t lease_duration_ms;     /* 15s */
    int64_t renew_deadline_ms;     /* 10s */
    int64_t retry_period_ms;       /* 2s */
};

struct cfg_pool {
    char *name;                    /* DNS-1123 label */
    char *queue;                   /* exactly one of queue, queue_regex */
    char *queue_regex;
    char *vhost;                   /* default rabbitmq.vhost (filled in by cfg_load) */
    int max_active;                /* required, >= 1 */
    int min_active;                /* default 0 */
    int spare_workers;             /* default 0 */
    int max_start_per_tick;        /* default 20 */
    int messages_per_worker;       /* default 1 */
    int max_attempts;              /* handed to workers, default 3 */
    int64_t pending_timeout_ms;    /* default 5m */
    int64_t idle_timeout_ms;       /* default 30s */
    int64_t task_timeout_ms;       /* handed to workers as --task-timeout; default 0: none */
    int successful_history;        /* default 10 */
    int failed_history;            /* default 10 */
    int ttl_seconds_after_finished; /* default 600; -1 means unset */
    char **worker_command;         /* local backend argv, NULL-terminated; set whenever backend is
                                    * local (required there), else may be NULL */
    size_t worker_argc;
    struct cfg_env_var *worker_env; /* local backend: worker.env, in file order; owned */
    size_t worker_nenv;
    struct cJSON *job_template;    /* kube backend: a batch/v1 JobSpec; owned; may be NULL */
    struct yamljson_src *template_src; /* source positions of job_template's nodes; owned */
    char hash[17];                 /* hex FNV-1a of the pool's settings, for annotations */
    int line;                      /* source line of the pool entry */
    /* Set for a pool that comes from a JobPool (cfg_pool_from_jobpool); NULL for the file's. */
    char *namespace_;              /* the JobPool's namespace: its Jobs are created there */
    char *connection_secret;       /* spec.connectionSecretRef.name, or NULL */
    bool vhost_default;            /* spec.vhost unset: the connection's vhost applies */
    /* With connection_secret, while the Secret gives a usable connection (set by pools.c,
     * borrowed from conns.h; NULL otherwise): where its depth is read, what its Jobs get. */
    struct rmq_client *rmq;
    const struct kube_worker_conn *worker_conn;
    char *id;                      /* set by pools.c for a JobPool outside the controller's
                                    * namespace: "namespace/name"; NULL: name (cfg_pool_id) */
    size_t slot;                   /* set by pools.c (pools_slot) */
};

struct cfg {
    char *path;
    int64_t poll_interval_ms;      /* default 2s */
    int max_active_total;          /* 0 = no global cap */
    enum cfg_backend backend;      /* default kube */
    enum log_format log_format;    /* default text */
    enum log_level log_level;      /* default info */
    char *metrics_address;         /* default 127.0.0.1:9090; "" disables */
    struct cfg_rabbitmq rabbitmq;
    struct cfg_kubernetes kubernetes;
    struct cfg_leader leader;
    struct cfg_pool *pools;
    size_t npools;
};

/* Load and validate path. On failure returns JP_ECONFIG (or JP_EIO/JP_ENOMEM), *out is NULL and
 * err holds one line such as "config.yaml:14:5: pools[1].maxActive: must be >= 1, got -3".
 * The caller frees *out with cfg_free. */
int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen);
/* Same, from a string; name is used in messages in place of the file name. */
int cfg_load_string(const char *yaml, size_t len, const char *name, struct cfg **out, char *err,
                    size_t errlen);
void cfg_free(struct cfg *c);

/* Validate a JobPool (the object as the API server returns it: metadata.name and .namespace,
 * spec) as one pool of c, with the same rules and messages as a pools[] entry, and fill *out
 * (freed with cfg_pool_free; zeroed first). The pool's name is metadata.name, its vhost
 * defaults to c's, namespace_ and connection_secret are set. Returns 0, or JP_ECONFIG with err
 * one line naming the field as the object has it: "spec.minActive: must be <= maxActive (2),
 * got 5"; or JP_ENOMEM. */
int cfg_pool_from_jobpool(const struct cfg *c, const struct cJSON *jobpool, struct cfg_pool *out,
                          char *err, size_t errlen);
void cfg_pool_free(struct cfg_pool *p);

/* The pool's identity among the pools served at once, as metrics labels, logs and the status
 * page show it: its name, or "namespace/name" for a JobPool outside the controller's namespace
 * (pool "a" of namespaces ns1 and ns2 are two pools). */
const char *cfg_pool_id(const struct cfg_pool *p);

/* Format one error line about a node of pool p's jobTemplate, e.g. for an API server rejection:
 * path is relative to the JobSpec ("template.spec.containers[0].image"), and the line names the
 * node's source position, or its nearest enclosing node's:
 * "config.yaml:31:22: pools[0].jobTemplate.template.spec.containers[0].image: MSG".
 * p must be one of c->pools. Always NUL-terminates out. */
void cfg_template_error(const struct cfg *c, const struct cfg_pool *p, const char *path,
                        const char *msg, char *out, size_t outlen);

/* Resolve a credential reference: the env variable's value or the file's content (trailing
 * newline trimmed). Returns 0 and a malloc'd *out, or JP_ENOTFOUND/JP_EIO with *out NULL. The
 * value is registered with log_add_secret so it can never be logged. */
int cfg_secret_read(const struct cfg_secret *s, char **out);
/* The same for a reference that is not secret (a user name, which errors must be able to
 * name: "401 for user alice"): when secret is false the value is not registered for masking. */
int cfg_ref_read(const struct cfg_secret *s, bool secret, char **out);

#endif
