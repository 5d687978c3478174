/* kube.h: Kubernetes REST client: auth, Jobs, Pods, Leases, Events, paged lists and streams. */
#ifndef JP_KUBE_H
#define JP_KUBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kubeconfig.h"

struct cJSON;

#define KUBE_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define KUBE_LABEL_POOL       "jobpool.dev/pool"
#define KUBE_LABEL_INSTANCE   "jobpool.dev/instance"
#define KUBE_ANNOT_HASH       "jobpool.dev/config-hash"
#define KUBE_ANNOT_QUEUE      "jobpool.dev/queue" /* an annotation: queue names exceed 63 */
#define KUBE_SELECTOR_MANAGED KUBE_LABEL_MANAGED_BY "=jobpool"
/* Where a worker finds the broker's CA when rabbitmq.caSecret is set. */
#define KUBE_CA_MOUNT         "/etc/jobpool/ca"
/* Where a worker finds its client certificate and key when rabbitmq.certSecret (or a JobPool
 * connection Secret's tls.crt and tls.key) is set. */
#define KUBE_CERT_MOUNT       "/etc/jobpool/cert"

/* ---- client ------------------------------------------------------------------------------ */

struct kube_opts {
    bool in_cluster;            /* use kube_auth_in_cluster (kubeconfig/context ignored) */
    const char *kubeconfig;     /* path, when not in cluster */
    const char *context;        /* NULL: current-context */
    const char *sa_dir;         /* in-cluster base dir override (tests); NULL: the standard one */
    const char *namespace_;     /* NULL: the context's / service account's namespace, "default" */
    double qps;                 /* client-side create rate limit, default 100 (<0: unlimited) */
    int burst;                  /* token bucket size, default 10 x qps */
    int concurrency;            /* parallel creates over keep-alive connections, default 8 */
    int page_size;              /* list page size (limit=), default 500 */
    long timeout_ms;            /* per request, default 10000 */
    size_t max_body;            /* response cap per request/page, default 16 MiB */
    const char *user_agent;     /* NULL: "jobpool/<version>"; copied. Naming the replica here
                                 * tells replicas apart in the API server's audit log */
};

/* Everything a client needs; it owns its connections and a copy of the auth settings.
 * A client is used by one thread at a time (each watch has its own: kube_client_dup). */
struct kube_client;

/* Build a client. Returns 0, JP_ECONFIG (bad/missing kubeconfig or not in a cluster; err
 * explains), JP_EIO, JP_ENOMEM; *out NULL on failure. err may be NULL. Logs a loud warning when
 * TLS verification is off. */
int kube_client_new(const struct kube_opts *o, struct kube_client **out, char *err,
                    size_t errlen);
/* Same from already-resolved settings (copied; the caller keeps auth). */
int kube_client_new_auth(const struct kube_auth *auth, const struct kube_opts *o,
                         struct kube_client **out);
void kube_client_free(struct kube_client *c);
/* A second client with c's settings and its own connections, for another thread (the Lease
 * renewer, each watch's reflector); page_size > 0 overrides the list page size. No fence is
 * copied. Returns 0 or JP_ENOMEM; *out NULL on failure. */
int kube_client_clone(const struct kube_client *c, int page_size, struct kube_client **out);
/* Fencing: before every write (POST, PUT, PATCH, DELETE, and each create of a batch) the client
 * asks allowed(ud); when it says no, the write is not sent and the call returns JP_ECANCELED
 * ("write withheld: ..." in kube_last_error). Reads are never fenced. NULL: no fence. */
void kube_client_set_fence(struct kube_client *c, bool (*allowed)(void *ud), void *ud);
/* The namespace every call works in. Owned by the client. */
const char *kube_namespace(const struct kube_client *c);

/* Detail of the last failed call on c: never contains the bearer token. Valid until the next
 * call on c. Examples: "create jobs.batch denied (403): jobs.batch is forbidden: User ...",
 * "create jobs.batch rejected (422): Job.batch \"p-x\" is invalid: spec.template...",
 * "list jobs.batch: connection refused: ...". "" when the last call succeeded. */
const char *kube_last_error(const struct kube_client *c);
/* Retry-After of the last 429/5xx answer in seconds, -1 when absent. */
long kube_last_retry_after(const struct kube_client *c);
/* Requests sent by this client (its connections; a cache counts its own) since it was made. */
unsigned long kube_request_count(const struct kube_client *c);

/* Errors of every call below: 0, or JP_EUNAUTHORIZED (401), JP_EFORBIDDEN (403), JP_ENOTFOUND,
 * JP_ECONFLICT (409; also "already exists"), JP_EGONE (410), JP_EINVALID (422, the server's
 * message in kube_last_error), JP_ETHROTTLED (429) / JP_ESERVER (5xx) with
 * kube_last_retry_after, JP_EHTTP (other status), JP_ETIMEOUT, JP_ECONNREFUSED, JP_EDNS,
 * JP_ETLS, JP_ENETWORK, JP_ETOOBIG, JP_EPARSE / JP_ESHAPE (bad JSON), JP_ENOMEM, JP_EINVAL. */

/* Raw call on a path such as "/api/v1/namespaces/default/secrets" (body may be NULL). On a 2xx
 * answer *out (when out is not NULL) is the parsed body, freed by the caller with cJSON_Delete;
 * otherwise *out is NULL. For tests and rarely used objects (RBAC, ServiceAccounts). */
int kube_request(struct kube_client *c, const char *method, const char *path, const char *body,
                 struct cJSON **out);

/* Paged GET of a collection path such as "/apis/batch/v1/namespaces/default/jobs" (limit=
 * the client's page size, continue tokens followed): item(ud, obj) for each item, and
 * item(ud, NULL) when an expired continue token restarts the listing (once). selector may be
 * NULL (everything). rv (may be NULL) receives the list's resourceVersion. A non-zero value
 * from item stops the listing and is returned. resource names the kind in error messages. */
#define KUBE_LIST_MAX_PAGES 10000 /* more is refused with JP_ERANGE: a runaway continue */
typedef int (*kube_item_fn)(void *ud, const struct cJSON *obj);
int kube_list(struct kube_client *c, const char *path, const char *resource,
              const char *selector, kube_item_fn item, void *ud, char *rv, size_t rvlen);

/* Streamed GET of path (its query included; a watch): each line of a 2xx answer goes to
 * on_line (NUL-terminated, valid during the call). timeout_ms bounds the stream; reaching it
 * ends the stream normally (0). should_stop (may be NULL) is polled about once a second and
 * aborts with JP_ECANCELED. A non-zero value from on_line stops the stream and is returned.
 * Else the typed errors above for a non-2xx answer or a transport failure. */
typedef int (*kube_line_fn)(void *ud, char *line, size_t len);
int kube_stream(struct kube_client *c, const char *path, const char *resource, long timeout_ms,
                kube_line_fn on_line, int (*should_stop)(void *ud), void *ud);

/* ---- Jobs -------------------------------------------------------------------------------- */

enum kube_job_state { KUBE_JOB_PENDING = 0, KUBE_JOB_RUNNING, KUBE_JOB_SUCCEEDED, KUBE_JOB_FAILED };
const char *kube_job_state_name(enum kube_job_state s);

/* "namespace/name" into out: the key of Jobs and Pods in the cache (store.h), which may watch
 * several namespaces, or all of them. */
#define KUBE_KEY_LEN 160
void kube_key(char *out, size_t len, const char *ns, const char *name);

/* A compact Job: what the controller needs, never the whole object. Times are unix ms, 0 when
 * absent. Other strings longer than their field are truncated; a name that does not fit (or is
 * empty) makes the object unparseable, since the name is part of its key (names we create fit);
 * so does a namespace that does not fit (the API server's fit). */
struct kube_job {
    char name[64];
    char ns[64];                /* metadata.namespace (with the name, the cache's key: kube_key) */
    char pool[64];              /* label jobpool.dev/pool, "" when absent */
    char uid[40];
    char resource_version[24];
    char config_hash[24];       /* annotation jobpool.dev/config-hash, "" when absent */
    const char *queue;          /* annotation jobpool.dev/queue, "" when absent or unknown;
                                   interned (intern.h): never NULL, never freed */
    int64_t created_ms;         /* metadata.creationTimestamp */
    int64_t start_ms;           /* status.startTime */
    int64_t completion_ms;      /* status.completionTime */
    int64_t finished_ms;        /* lastTransitionTime of the true Complete/Failed condition */
    int64_t deleting_ms;        /* metadata.deletionTimestamp */
    int active, succeeded, failed;
    bool complete;              /* condition Complete=True */
    bool failed_cond;           /* condition Failed=True */
    int running_pods;           /* pods in phase Running (filled by the cache / kube_job_states) */
    bool no_task;               /* a pod's container ended with the message "no-task": the
                                   worker found no message (filled like running_pods) */
    double task_wait_s;         /* from a terminated container's message "task wait=S
                                   duration=S" (progress.h), filled like no_task; < 0 unknown */
    double task_duration_s;
    bool reported;              /* a terminated container of it carried the worker's last word
                                   ("task ..." or "no-task"), filled like no_task */
    enum kube_job_state state;  /* see kube_job_states; from conditions and running_pods */
};

/* A growable array of jobs. Zero-initialise; kube_job_list_free releases items. */
struct kube_job_list {
    struct kube_job *items;
    size_t n, alloc;
};
void kube_job_list_free(struct kube_job_list *l);

/* How workers reach the broker with no password in the Job: the user name and password come
 * from a Secret through secretKeyRef. Borrowed pointers. */
struct kube_worker_conn {
    const char *amqp_url;              /* env JOBPOOL_AMQP_URL; must hold no user info */
    const char *secret;                /* env JOBPOOL_AMQP_USERNAME/PASSWORD from this Secret */
    const char *username_key, *password_key;
    /* Set: JOBPOOL_AMQP_URL comes from this key of secret instead (a URL with the login in its
     * user info), and amqp_url, username_key and password_key are not used. */
    const char *amqp_url_key;
    const char *ca_secret;             /* NULL: none; else a volume at KUBE_CA_MOUNT and env
                                        * JOBPOOL_CA_FILE=KUBE_CA_MOUNT/<ca_key> */
    const char *ca_key;
    const char *cert_secret;           /* NULL: none; else a volume at KUBE_CERT_MOUNT and env
                                        * JOBPOOL_CERT_FILE and JOBPOOL_KEY_FILE into it */
    const char *cert_key, *key_key;
};

/* What to create. All pointers are borrowed for the duration of the call. */
struct kube_job_spec {
    const char *namespace_;            /* where it is created; NULL: the client's namespace */
    const char *pool;                  /* generateName "<pool>-", label jobpool.dev/pool */
    const char *instance;              /* label jobpool.dev/instance (NULL: none) */
    const char *queue;                 /* env JOBPOOL_QUEUE and annotation jobpool.dev/queue
                                        * (NULL: neither) */
    const char *vhost;                 /* env JOBPOOL_VHOST (NULL: not added) */
    const char *config_hash;           /* annotation jobpool.dev/config-hash (NULL: none) */
    const struct cJSON *job_template;  /* a batch/v1 JobSpec; not modified */
    int ttl_seconds_after_finished;    /* < 0: not set (the template's own value stays);
                                        * 0 deletes the Job as soon as it finishes */
    const char *const *env;            /* more name, value pairs added like JOBPOOL_POOL,
                                        * NULL-terminated; NULL: none */
    const struct kube_worker_conn *conn; /* NULL: the template provides the connection */
    /* Names chosen by the caller (kube_job_name), so that a create whose answer is lost can be
     * recognised when it shows up: name for kube_job_create and kube_job_manifest, names (n of
     * them) for kube_jobs_create. NULL: the server picks one (generateName "<pool>-"). */
    const char *name;
    const char *const *names;
};

/* A fresh Job name for pool, as generateName would make it: "<pool>-" (cut to 58 characters)
 * and 5 random characters. */
void kube_job_name(const char *pool, char out[64]);

/* Build the Job object that kube_job_create sends: the template with labels on the Job and its
 * pod template, the annotations, env JOBPOOL_POOL/QUEUE/VHOST (and the connection, with conn)
 * added to every container (and init container) unless already set, ttlSecondsAfterFinished,
 * and the restricted Pod Security fields the template leaves unset (podsec_fill). *out is freed
 * with cJSON_Delete. */
int kube_job_manifest(const struct kube_job_spec *s, struct cJSON **out);

/* Create one Job; out (may be NULL) receives the created Job. */
int kube_job_create(struct kube_client *c, const struct kube_job_spec *s, struct kube_job *out);

/* Create n Jobs at once: up to opts.concurrency in flight over keep-alive connections, paced by
 * the client's token bucket (opts.qps). *created (may be NULL) counts the successes; out (NULL or
 * an array of n) receives each created Job (name "" for a failed one); rcs (NULL or an array of
 * n) each request's result (JP_ECANCELED for one never sent). Returns 0 when all were created,
 * else the first error (details in kube_last_error); no more are started after a 401/403/404/422
 * or when the server throttles or fails (429/5xx: kube_last_retry_after). */
int kube_jobs_create(struct kube_client *c, const struct kube_job_spec *s, int n, int *created,
                     struct kube_job *out, int *rcs);

/* All Jobs of the namespace matching label_selector (NULL: managed-by=jobpool), paged with
 * limit/continue; a stale continue (410) restarts the listing once. Appends to out (zeroed or
 * reused); on error out holds what was appended so far and must still be freed. States are
 * from conditions only (running_pods = 0): see kube_job_states. */
int kube_jobs_list(struct kube_client *c, const char *label_selector, struct kube_job_list *out);

int kube_job_get(struct kube_client *c, const char *name, struct kube_job *out);
/* The whole Job object, for tests and debugging; freed with cJSON_Delete. */
int kube_job_get_json(struct kube_client *c, const char *name, struct cJSON **out);
/* The same in namespace ns (NULL: the client's), as the _in variants below. */
int kube_job_get_in(struct kube_client *c, const char *ns, const char *name, struct kube_job *out);
int kube_job_get_json_in(struct kube_client *c, const char *ns, const char *name,
                         struct cJSON **out);
/* Delete with propagationPolicy=Background (the garbage collector deletes its pods). */
int kube_job_delete(struct kube_client *c, const char *name);
/* The same, only if the Job is still the object the caller saw: DeleteOptions preconditions on
 * uid and resourceVersion (either NULL or "": not checked). JP_ECONFLICT when it changed (or
 * was replaced by another Job of the same name) since; JP_ENOTFOUND when it is gone. */
int kube_job_delete_if(struct kube_client *c, const char *name, const char *uid,
                       const char *resource_version);
int kube_job_delete_if_in(struct kube_client *c, const char *ns, const char *name,
                          const char *uid, const char *resource_version);

/* Parse one Job object into *out (for the cache and tests). Returns 0 or JP_ESHAPE (no name,
 * an empty one, or one longer than the field). */
int kube_job_parse(const struct cJSON *obj, struct kube_job *out);

/* ---- Pods -------------------------------------------------------------------------------- */

struct kube_pod {
    char name[80];
    char ns[64];                /* metadata.namespace */
    char job[64];               /* label job-name ("" when absent) */
    char pool[64];              /* label jobpool.dev/pool */
    char uid[40];
    char phase[16];             /* Pending, Running, Succeeded, Failed, Unknown */
    char node[64];              /* spec.nodeName, "" when unscheduled */
    bool started;               /* it ran, or may be running: phase Running, Succeeded, Failed
                                   or Unknown, or a container running or terminated */
    bool no_task;               /* a container terminated with message "no-task" (the worker
                                   writes it to its termination log when it found no message) */
    bool has_task;              /* a container terminated with a "task ..." message */
    double task_wait_s;         /* its figures (progress.h); < 0 unknown */
    double task_duration_s;
    int64_t created_ms;
};
struct kube_pod_list {
    struct kube_pod *items;
    size_t n, alloc;
};
void kube_pod_list_free(struct kube_pod_list *l);
/* Parse one Pod object into *out. Returns 0 or JP_ESHAPE (as kube_job_parse). */
int kube_pod_parse(const struct cJSON *obj, struct kube_pod *out);

/* Pods matching label_selector ("job-name=<job>", or NULL: managed-by=jobpool), paged.
 * Appends to out like kube_jobs_list. */
int kube_pods_list(struct kube_client *c, const char *label_selector, struct kube_pod_list *out);
int kube_pods_list_in(struct kube_client *c, const char *ns, const char *label_selector,
                      struct kube_pod_list *out);

/* Whether a pod counts as a running worker: phase Running, or Unknown (its node stopped
 * reporting; the container may well be running, so it is never treated as pending). */
bool kube_pod_running(const struct kube_pod *p);
/* Whether a pod of the Job has already finished (status.succeeded or failed > 0): a Job with no
 * final condition is then between pod retries, and its worker has run. */
bool kube_job_ran(const struct kube_job *j);
/* The same from the counts alone (for a record that is not a struct kube_job). */
bool kube_job_ran_counts(int succeeded, int failed);

/* Fill running_pods and state of every job from pods (kube_pod_running, matched by job-name):
 * SUCCEEDED/FAILED from the conditions, RUNNING with a running pod, PENDING otherwise. A
 * PENDING Job with status.succeeded/failed > 0 is between pod retries: kube_job_ran. */
void kube_job_states(struct kube_job *jobs, size_t n, const struct kube_pod *pods, size_t npods);
/* The state of one job from its conditions and running_pods (as kube_job_states). */
void kube_job_set_state(struct kube_job *j);
/* That rule on the parts it reads (for a record that is not a struct kube_job). */
enum kube_job_state kube_job_state_of(bool complete, bool failed_cond, int running_pods);

/* ---- Leases (coordination.k8s.io/v1) ------------------------------------------------------ */

struct kube_lease {
    char name[64];
    char holder[128];           /* spec.holderIdentity, "" when none */
    char resource_version[24];  /* required by kube_lease_update */
    int duration_s;             /* spec.leaseDurationSeconds */
    int64_t acquire_ms;         /* spec.acquireTime, unix ms */
    int64_t renew_ms;           /* spec.renewTime, unix ms */
    int transitions;            /* spec.leaseTransitions */
};

/* JP_ENOTFOUND when the lease does not exist. */
int kube_lease_get(struct kube_client *c, const char *name, struct kube_lease *out);
/* JP_ECONFLICT when it already exists. out (may be NULL, may equal l) gets the stored lease. */
int kube_lease_create(struct kube_client *c, const struct kube_lease *l, struct kube_lease *out);
/* PUT with l->resource_version: JP_ECONFLICT when someone else updated it first. */
int kube_lease_update(struct kube_client *c, const struct kube_lease *l, struct kube_lease *out);

/* ---- Events ------------------------------------------------------------------------------ */

/* Create a core/v1 Event about an object of this namespace. kind e.g. "Job"; uid may be NULL;
 * type "Normal" or "Warning"; reason CamelCase; message free text (truncated to 1 KiB). */
int kube_event_create(struct kube_client *c, const char *kind, const char *api_version,
                      const char *name, const char *uid, const char *type, const char *reason,
                      const char *message);
/* The same about an object of namespace ns (NULL: the client's); the Event is created there. */
int kube_event_create_in(struct kube_client *c, const char *ns, const char *kind,
                         const char *api_version, const char *name, const char *uid,
                         const char *type, const char *reason, const char *message);

#endif
