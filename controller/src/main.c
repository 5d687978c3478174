/* main.c: flags, signals and wiring of config, rmq, backend, metrics and the reconcile loop. */
#define _GNU_SOURCE
#include "backend.h"
#include "config.h"
#include "err.h"
#include "jobpools.h"
#include "keda.h"
#include "kube.h"
#include "leader.h"
#include "log.h"
#include "metrics.h"
#include "pools.h"
#include "reconcile.h"
#include "rmq.h"
#include "status.h"
#include "util.h"

#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exit codes (documented in --help and docs/operations.md). */
enum {
    EXIT_OK = 0,        /* clean shutdown, or --once/--check-config succeeded */
    EXIT_RUNTIME = 1,   /* a pass failed under --once, or a start-up dependency failed */
    EXIT_USAGE = 2,     /* bad flags or an invalid config file */
    EXIT_FORCED = 130,  /* a second SIGTERM/SIGINT: exit at once */
};

/* The namespace to work in: the config's, else the downward API's POD_NAMESPACE; NULL leaves
 * it to the client (the service account's namespace file, the context's, else "default"). */
static const char *kube_namespace_choice(const struct cfg *cfg)
{
    const char *pod_ns = getenv("POD_NAMESPACE");
    if (cfg->kubernetes.namespace_) return cfg->kubernetes.namespace_;
    return pod_ns && *pod_ns ? pod_ns : NULL;
}

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t wake_flag;

static void on_stop(int sig)
{
    (void)sig;
    if (stop_flag) _exit(EXIT_FORCED); /* the second signal exits at once */
    stop_flag = 1;
}

static bool gate_leader(void *ud)
{
    return leader_tick(ud);
}

static void on_child(int sig)
{
    (void)sig;
    wake_flag = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop; /* no SA_RESTART: sleeps return early */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: jobpool-controller --config FILE [options]\n"
            "       jobpool-controller --check-config FILE\n"
            "       jobpool-controller convert FILE   (KEDA ScaledJobs to JobPools)\n"
            "       jobpool-controller status [--address HOST:PORT] [-o table|json]\n"
            "\n"
            "Runs one short-lived worker for each message waiting in a RabbitMQ queue, as\n"
            "Kubernetes Jobs (backend kube) or local processes (backend local).\n"
            "\n"
            "  -c, --config FILE         configuration file (YAML; see docs/config.md)\n"
            "  -b, --backend kube|local  override the config's backend\n"
            "      --once                run one reconcile pass, then exit\n"
            "  -n, --dry-run             decide and log, change nothing\n"
            "      --check-config FILE   validate FILE and exit\n"
            "      --log-format text|json\n"
            "      --log-level debug|info|warn|error\n"
            "      --metrics-address A   override metrics.address (\"\" disables)\n"
            "      --worker PATH         jobpool-worker binary for the local backend\n"
            "      --scale-policy P      benchmarks only: jobpool (default), keda-default,\n"
            "                            keda-accurate or keda-eager (KEDA ScaledJob's formula)\n"
            "  -V, --version             print the version\n"
            "  -h, --help                this text\n"
            "\n"
            "Exit codes: 0 clean exit; 1 runtime failure (or a failed --once pass);\n"
            "2 bad flags or invalid config; 130 a second SIGTERM/SIGINT forced the exit.\n");
}

/* POD_NAME (the downward API) when set, else <hostname>_<pid>: unique per replica. */
static void replica_identity(char *out, size_t n)
{
    const char *pod = getenv("POD_NAME");
    if (pod && *pod) {
        snprintf(out, n, "%s", pod);
        return;
    }
    char host[64] = "jobpool";
    gethostname(host, sizeof host - 1);
    snprintf(out, n, "%s_%ld", host, (long)getpid());
}

/* jobpool-worker next to our own binary, if there is one; else from PATH. */
/* The worker's default --grace; a task timeout must leave it room below the broker's limit. */
#define WORKER_GRACE_MS 25000

/* Once at start: a pool whose taskTimeout plus the worker's grace reaches the broker's
 * consumer_timeout lets the broker take a message back while its task is still being stopped
 * (docs/worker.md, "Long tasks and the broker's delivery timeout"). */
static void warn_task_timeouts(const struct cfg *cfg)
{
    int64_t limit = cfg->rabbitmq.consumer_timeout_ms;
    char ct[32], tt[32];
    util_format_duration(limit, ct, sizeof ct);
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct cfg_pool *p = &cfg->pools[i];
        if (p->task_timeout_ms <= 0 || p->task_timeout_ms + WORKER_GRACE_MS < limit) continue;
        util_format_duration(p->task_timeout_ms, tt, sizeof tt);
        log_msg(LOG_WARN, p->name, 0, "taskTimeout %s plus the worker's 25s grace reaches the "
                "broker's consumer_timeout (rabbitmq.consumerTimeout %s): the broker may take a "
                "message back before its task is stopped; lower taskTimeout or raise "
                "consumer_timeout", tt, ct);
    }
}

static char *default_worker(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            char cand[PATH_MAX + 32];
            snprintf(cand, sizeof cand, "%.*s/jobpool-worker", (int)(slash - self), self);
            if (access(cand, X_OK) == 0) return strdup(cand);
        }
    }
    return strdup("jobpool-worker");
}

/* The pool set of the file and the JobPool objects, read at the start of every pass, with
 * status written at its end. */
static int serve_jobpools(const struct cfg *cfg, struct kube_client *kc, struct reconcile_opts *ro,
                          struct pools **pools, struct jobpools **jps)
{
    int rc = pools_new(cfg, kube_namespace(kc), pools);
    if (!rc) rc = jobpools_new(kc, cfg, *pools, jps);
    if (rc) return rc;
    ro->pools = *pools;
    ro->refresh = jobpools_refresh;
    ro->report = jobpools_report;
    ro->hook_ud = *jps;
    return 0;
}

/* What the flags ask for; the config file's values stand where a flag is not given. */
struct flags {
    const char *config_path, *check_path, *backend_name, *log_fmt, *log_lvl, *metrics_addr;
    const char *worker, *policy;
    bool once, dry_run;
};

/* The running controller's parts; app_free releases them in the reverse order of start. */
struct app {
    struct cfg *cfg;
    struct rmq_client *rmq;
    struct kube_client *kc;
    struct backend *be;
    struct metrics *m;
    struct leader *lead;
    struct pools *pools;
    struct jobpools *jps;
    struct reconcile *r;
    struct reconcile_opts ro;
    char *worker;
    char ident[128], ua[200];
};

/* Fills f. Returns -1 to go on, else the exit code (--help, --version, a bad flag). */
static int parse_flags(int argc, char **argv, struct flags *f)
{
    enum { OPT_ONCE = 256, OPT_CHECK, OPT_LOGFMT, OPT_LOGLVL, OPT_METRICS, OPT_WORKER,
           OPT_POLICY };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"backend", required_argument, NULL, 'b'},
        {"once", no_argument, NULL, OPT_ONCE},
        {"dry-run", no_argument, NULL, 'n'},
        {"check-config", required_argument, NULL, OPT_CHECK},
        {"log-format", required_argument, NULL, OPT_LOGFMT},
        {"log-level", required_argument, NULL, OPT_LOGLVL},
        {"metrics-address", required_argument, NULL, OPT_METRICS},
        {"worker", required_argument, NULL, OPT_WORKER},
        {"scale-policy", required_argument, NULL, OPT_POLICY},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:b:nVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': f->config_path = optarg; break;
        case 'b': f->backend_name = optarg; break;
        case OPT_ONCE: f->once = true; break;
        case 'n': f->dry_run = true; break;
        case OPT_CHECK: f->check_path = optarg; break;
        case OPT_LOGFMT: f->log_fmt = optarg; break;
        case OPT_LOGLVL: f->log_lvl = optarg; break;
        case OPT_METRICS: f->metrics_addr = optarg; break;
        case OPT_WORKER: f->worker = optarg; break;
        case OPT_POLICY: f->policy = optarg; break;
        case 'V': printf("jobpool-controller %s\n", JP_VERSION); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "jobpool-controller: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!f->check_path && !f->config_path) {
        fprintf(stderr, "jobpool-controller: --config FILE is required (see --help)\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* --check-config FILE: validate and say so. */
static int check_config(const char *path)
{
    char err[1024];
    struct cfg *cfg = NULL;
    if (cfg_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return EXIT_USAGE;
    }
    printf("%s: ok (%zu pool%s)\n", path, cfg->npools, cfg->npools == 1 ? "" : "s");
    cfg_free(cfg);
    return EXIT_OK;
}

/* The config file with the flags' overrides, and the log set up from both. Returns EXIT_OK
 * with *out set, or EXIT_USAGE with the reason on stderr and *out NULL. */
static int load_config(const struct flags *f, struct cfg **out)
{
    char err[1024];
    struct cfg *cfg = NULL;
    *out = NULL;
    if (cfg_load(f->config_path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return EXIT_USAGE;
    }
    enum log_format lf = cfg->log_format;
    enum log_level ll = cfg->log_level;
    if (f->log_fmt && log_parse_format(f->log_fmt, &lf) != 0) {
        fprintf(stderr, "jobpool-controller: --log-format: must be text or json, got '%s'\n",
                f->log_fmt);
        goto bad;
    }
    if (f->log_lvl && log_parse_level(f->log_lvl, &ll) != 0) {
        fprintf(stderr, "jobpool-controller: --log-level: must be debug, info, warn or error, "
                        "got '%s'\n", f->log_lvl);
        goto bad;
    }
    if (f->backend_name) {
        if (strcmp(f->backend_name, "kube") == 0) cfg->backend = CFG_BACKEND_KUBE;
        else if (strcmp(f->backend_name, "local") == 0) cfg->backend = CFG_BACKEND_LOCAL;
        else {
            fprintf(stderr, "jobpool-controller: --backend: must be kube or local, got '%s'\n",
                    f->backend_name);
            goto bad;
        }
    }
    log_setup(lf, ll, NULL);
    *out = cfg;
    return EXIT_OK;
bad:
    cfg_free(cfg);
    return EXIT_USAGE;
}

/* --scale-policy: jobpool's own decision, or KEDA's formula for comparison benchmarks. */
static int parse_policy(const char *policy, struct reconcile_opts *ro)
{
    static const char *const names[] = {"keda-default", "keda-accurate", "keda-eager"};
    if (!policy || strcmp(policy, "jobpool") == 0) return 0;
    size_t i;
    for (i = 0; i < 3 && strcmp(policy, names[i]) != 0; i++) {
    }
    if (i == 3) {
        log_error("--scale-policy: must be jobpool, keda-default, keda-accurate or keda-eager, "
                  "got '%s'", policy);
        return JP_EINVAL;
    }
    ro->keda = true;
    ro->keda_strategy = (enum scale_keda_strategy)i;
    log_warn("scale policy %s: KEDA's formula, for comparison benchmarks only", policy);
    return 0;
}

/* The broker client and the backend: local processes, or Jobs through a Kubernetes client. */
static int start_backend(struct app *a, const struct flags *f)
{
    const struct cfg *cfg = a->cfg;
    char err[1024];
    int rc = rmq_client_new(&cfg->rabbitmq, &a->rmq);
    if (rc) {
        log_msg(LOG_ERROR, NULL, rc, "rabbitmq: cannot set up the client (check "
                "rabbitmq.managementUrl and the credentials' env/file)");
        return rc;
    }
    if (cfg->backend == CFG_BACKEND_LOCAL) {
        a->worker = f->worker ? strdup(f->worker) : default_worker();
        return backend_local_new(cfg, a->worker, &a->be);
    }
    /* The replica's identity (also its Lease holder name) travels in the user agent, so the
     * API server's audit log tells which replica sent each write. */
    replica_identity(a->ident, sizeof a->ident);
    snprintf(a->ua, sizeof a->ua, "jobpool/%s (%s)", JP_VERSION, a->ident);
    struct kube_opts ko = {
        .user_agent = a->ua,
        .in_cluster = cfg->kubernetes.in_cluster,
        .kubeconfig = cfg->kubernetes.kubeconfig,
        .context = cfg->kubernetes.context,
        .namespace_ = kube_namespace_choice(cfg),
        .qps = cfg->kubernetes.qps,
        .concurrency = cfg->kubernetes.concurrency,
    };
    if ((rc = kube_client_new(&ko, &a->kc, err, sizeof err)) != 0) {
        log_msg(LOG_ERROR, NULL, rc, "kubernetes: %s", err);
        return rc;
    }
    if ((rc = backend_kube_new(cfg, a->kc, &a->be)) != 0)
        log_msg(LOG_ERROR, NULL, rc, "kubernetes: cannot start the job cache");
    return rc;
}

/* Leader election: only the Lease holder acts, and no write leaves once the Lease lapsed. */
static int start_leader(struct app *a)
{
    const struct cfg_leader *l = &a->cfg->leader;
    struct leader_opts lo = {
        .lease_name = l->lease_name,
        .lease_duration_ms = l->lease_duration_ms,
        .renew_deadline_ms = l->renew_deadline_ms,
        .retry_period_ms = l->retry_period_ms,
        .identity = a->ident,
    };
    int rc = leader_new(a->kc, &lo, &a->lead);
    if (rc) return rc;
    /* Fencing: no write of the loop's client leaves once the lease is no longer valid. */
    kube_client_set_fence(a->kc, leader_fence, a->lead);
    a->ro.gate = gate_leader;
    a->ro.gate_ud = a->lead;
    log_info("leader election on lease %s as %s", l->lease_name, leader_identity(a->lead));
    return 0;
}

/* Everything the loop needs, in order: backend, metrics, policy, leader, JobPools, loop.
 * Returns EXIT_OK or the exit code to leave with. */
static int start(struct app *a, const struct flags *f)
{
    const struct cfg *cfg = a->cfg;
    if (start_backend(a, f)) return EXIT_RUNTIME;
    const char *addr = f->metrics_addr ? f->metrics_addr : cfg->metrics_address;
    struct metrics_opts mo = {.poll_interval_ms = cfg->poll_interval_ms, .version = JP_VERSION};
    int rc = metrics_new_opts(addr ? addr : "", &mo, &a->m);
    if (rc) {
        log_msg(LOG_ERROR, NULL, rc, "metrics: cannot listen on '%s'", addr ? addr : "");
        return EXIT_RUNTIME;
    }
    a->ro.dry_run = f->dry_run;
    if (parse_policy(f->policy, &a->ro)) return EXIT_USAGE;
    if (cfg->leader.enabled && a->kc && !f->once && start_leader(a)) return EXIT_RUNTIME;
    metrics_set_leader(a->m, a->lead == NULL);
    if (a->kc && cfg->kubernetes.jobpools &&
        serve_jobpools(cfg, a->kc, &a->ro, &a->pools, &a->jps) != 0)
        return EXIT_RUNTIME;
    if (a->pools) backend_kube_serve(a->be, a->pools);
    if (reconcile_new(cfg, a->rmq, a->be, a->m, &a->ro, &a->r)) return EXIT_RUNTIME;
    log_info("jobpool %s started: backend=%s pools=%zu poll=%lldms%s", JP_VERSION, a->be->name,
             cfg->npools, (long long)cfg->poll_interval_ms, f->dry_run ? " dry-run" : "");
    warn_task_timeouts(cfg);
    return EXIT_OK;
}

/* One pass (--once), or the loop until SIGTERM/SIGINT; then local workers drain and the Lease
 * is handed over. Returns the exit code. */
static int run(struct app *a, const struct flags *f)
{
    int code;
    if (f->once) {
        if (a->kc) {
            /* --once needs the first list of Jobs before it can decide anything. */
            for (int i = 0; i < 100 && a->be->observe(a->be) == JP_ESTALE && !stop_flag; i++)
                usleep(100 * 1000);
        }
        int rc = reconcile_pass(a->r);
        code = rc ? EXIT_RUNTIME : EXIT_OK;
        if (rc) log_msg(LOG_ERROR, NULL, rc, "the reconcile pass did not complete");
    } else {
        bool local = a->cfg->backend == CFG_BACKEND_LOCAL;
        reconcile_run(a->r, &stop_flag, local ? &wake_flag : NULL);
        log_info("shutting down: no new workers");
        code = EXIT_OK;
        if (local) a->be->shutdown(a->be, 25000);
    }
    leader_release(a->lead);
    return code;
}

static void app_free(struct app *a)
{
    leader_free(a->lead);
    reconcile_free(a->r);
    jobpools_free(a->jps);
    pools_free(a->pools);
    metrics_free(a->m);
    backend_free(a->be);
    kube_client_free(a->kc);
    rmq_client_free(a->rmq);
    free(a->worker);
    cfg_free(a->cfg);
    log_clear_secrets();
}

int main(int argc, char **argv)
{
    /* One malloc arena for every thread: the cache threads' short peaks (a list page) are then
     * reused by the loop instead of each thread keeping its own high-water mark. */
    mallopt(M_ARENA_MAX, 1);
    /* Fixed thresholds instead of glibc's sliding ones: a block of 128 KiB or more (the tick's
     * snapshot, a list page's buffer, the hash tables) is its own mapping, given back when
     * freed or moved, instead of raising the threshold to its size and leaving holes of that
     * size in the heap once it is freed; and free heap above 256 KiB goes back at once. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024);
    if (argc >= 2 && strcmp(argv[1], "convert") == 0) return keda_convert_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "status") == 0) return status_main(argc - 1, argv + 1, stdout);
    struct flags f = {0};
    int code = parse_flags(argc, argv, &f);
    if (code >= 0) return code;
    if (f.check_path) return check_config(f.check_path);
    struct app a = {0};
    if ((code = load_config(&f, &a.cfg)) != EXIT_OK) return code;
    install_signals();
    code = start(&a, &f);
    if (code == EXIT_OK) code = run(&a, &f);
    app_free(&a);
    return code;
}
