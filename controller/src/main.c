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

int main(int argc, char **argv)
{
    /* One malloc arena for every thread: the cache threads' short peaks (a list page) are then
     * reused by the loop instead of each thread keeping its own high-water mark. */
    mallopt(M_ARENA_MAX, 1);
    if (argc >= 2 && strcmp(argv[1], "convert") == 0) return keda_convert_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "status") == 0) return status_main(argc - 1, argv + 1, stdout);
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
    const char *config_path = NULL, *check_path = NULL, *backend_name = NULL;
    const char *log_fmt = NULL, *log_lvl = NULL, *metrics_addr = NULL, *worker_flag = NULL;
    const char *policy = NULL;
    bool once = false, dry_run = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:b:nVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'b': backend_name = optarg; break;
        case OPT_ONCE: once = true; break;
        case 'n': dry_run = true; break;
        case OPT_CHECK: check_path = optarg; break;
        case OPT_LOGFMT: log_fmt = optarg; break;
        case OPT_LOGLVL: log_lvl = optarg; break;
        case OPT_METRICS: metrics_addr = optarg; break;
        case OPT_WORKER: worker_flag = optarg; break;
        case OPT_POLICY: policy = optarg; break;
        case 'V': printf("jobpool-controller %s\n", JP_VERSION); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "jobpool-controller: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }

    char err[1024];
    struct cfg *cfg = NULL;
    if (check_path) {
        if (cfg_load(check_path, &cfg, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return EXIT_USAGE;
        }
        printf("%s: ok (%zu pool%s)\n", check_path, cfg->npools, cfg->npools == 1 ? "" : "s");
        cfg_free(cfg);
        return EXIT_OK;
    }
    if (!config_path) {
        fprintf(stderr, "jobpool-controller: --config FILE is required (see --help)\n");
        return EXIT_USAGE;
    }
    if (cfg_load(config_path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return EXIT_USAGE;
    }

    enum log_format lf = cfg->log_format;
    enum log_level ll = cfg->log_level;
    if (log_fmt && log_parse_format(log_fmt, &lf) != 0) {
        fprintf(stderr, "jobpool-controller: --log-format: must be text or json, got '%s'\n",
                log_fmt);
        cfg_free(cfg);
        return EXIT_USAGE;
    }
    if (log_lvl && log_parse_level(log_lvl, &ll) != 0) {
        fprintf(stderr, "jobpool-controller: --log-level: must be debug, info, warn or error, "
                        "got '%s'\n", log_lvl);
        cfg_free(cfg);
        return EXIT_USAGE;
    }
    if (backend_name) {
        if (strcmp(backend_name, "kube") == 0) cfg->backend = CFG_BACKEND_KUBE;
        else if (strcmp(backend_name, "local") == 0) cfg->backend = CFG_BACKEND_LOCAL;
        else {
            fprintf(stderr, "jobpool-controller: --backend: must be kube or local, got '%s'\n",
                    backend_name);
            cfg_free(cfg);
            return EXIT_USAGE;
        }
    }
    log_setup(lf, ll, NULL);
    install_signals();

    int exit_code = EXIT_RUNTIME, rc;
    struct rmq_client *rmq = NULL;
    struct kube_client *kc = NULL;
    struct backend *be = NULL;
    struct metrics *m = NULL;
    struct reconcile *r = NULL;
    struct leader *lead = NULL;
    struct pools *pools = NULL;
    struct jobpools *jps = NULL;
    char *worker = NULL;
    char ident[128] = "", ua[200];

    if ((rc = rmq_client_new(&cfg->rabbitmq, &rmq)) != 0) {
        log_msg(LOG_ERROR, NULL, rc, "rabbitmq: cannot set up the client (check "
                "rabbitmq.managementUrl and the credentials' env/file)");
        goto out;
    }
    if (cfg->backend == CFG_BACKEND_LOCAL) {
        worker = worker_flag ? strdup(worker_flag) : default_worker();
        if ((rc = backend_local_new(cfg, worker, &be)) != 0) goto out;
    } else {
        /* The replica's identity (also its Lease holder name) travels in the user agent, so
         * the API server's audit log tells which replica sent each write. */
        replica_identity(ident, sizeof ident);
        snprintf(ua, sizeof ua, "jobpool/%s (%s)", JP_VERSION, ident);
        struct kube_opts ko = {
            .user_agent = ua,
            .in_cluster = cfg->kubernetes.in_cluster,
            .kubeconfig = cfg->kubernetes.kubeconfig,
            .context = cfg->kubernetes.context,
            .namespace_ = kube_namespace_choice(cfg),
            .qps = cfg->kubernetes.qps,
            .concurrency = cfg->kubernetes.concurrency,
        };
        if ((rc = kube_client_new(&ko, &kc, err, sizeof err)) != 0) {
            log_msg(LOG_ERROR, NULL, rc, "kubernetes: %s", err);
            goto out;
        }
        if ((rc = backend_kube_new(cfg, kc, &be)) != 0) {
            log_msg(LOG_ERROR, NULL, rc, "kubernetes: cannot start the job cache");
            goto out;
        }
    }
    const char *addr = metrics_addr ? metrics_addr : cfg->metrics_address;
    struct metrics_opts mo = {.poll_interval_ms = cfg->poll_interval_ms, .version = JP_VERSION};
    if ((rc = metrics_new_opts(addr ? addr : "", &mo, &m)) != 0) {
        log_msg(LOG_ERROR, NULL, rc, "metrics: cannot listen on '%s'", addr ? addr : "");
        goto out;
    }
    struct reconcile_opts ro = {.dry_run = dry_run};
    if (policy && strcmp(policy, "jobpool") != 0) {
        static const char *const names[] = {"keda-default", "keda-accurate", "keda-eager"};
        ro.keda = true;
        ro.keda_strategy = SCALE_KEDA_DEFAULT;
        size_t i;
        for (i = 0; i < 3 && strcmp(policy, names[i]) != 0; i++) {
        }
        if (i == 3) {
            log_error("--scale-policy: must be jobpool, keda-default, keda-accurate or "
                      "keda-eager, got '%s'", policy);
            exit_code = EXIT_USAGE;
            goto out;
        }
        ro.keda_strategy = (enum scale_keda_strategy)i;
        log_warn("scale policy %s: KEDA's formula, for comparison benchmarks only", policy);
    }
    if (cfg->leader.enabled && kc && !once) {
        struct leader_opts lo = {
            .lease_name = cfg->leader.lease_name,
            .lease_duration_ms = cfg->leader.lease_duration_ms,
            .renew_deadline_ms = cfg->leader.renew_deadline_ms,
            .retry_period_ms = cfg->leader.retry_period_ms,
            .identity = ident,
        };
        if ((rc = leader_new(kc, &lo, &lead)) != 0) goto out;
        /* Fencing: no write of the loop's client leaves once the lease is no longer valid. */
        kube_client_set_fence(kc, leader_fence, lead);
        ro.gate = gate_leader;
        ro.gate_ud = lead;
        log_info("leader election on lease %s as %s", cfg->leader.lease_name,
                 leader_identity(lead));
    }
    metrics_set_leader(m, lead == NULL);
    if (kc && cfg->kubernetes.jobpools && (rc = serve_jobpools(cfg, kc, &ro, &pools, &jps)) != 0)
        goto out;
    if (pools) backend_kube_serve(be, pools);
    if ((rc = reconcile_new(cfg, rmq, be, m, &ro, &r)) != 0) goto out;

    log_info("jobpool %s started: backend=%s pools=%zu poll=%lldms%s", JP_VERSION, be->name,
             cfg->npools, (long long)cfg->poll_interval_ms, dry_run ? " dry-run" : "");
    warn_task_timeouts(cfg);
    if (once) {
        if (kc) {
            /* --once needs the first list of Jobs before it can decide anything. */
            for (int i = 0; i < 100 && be->observe(be) == JP_ESTALE && !stop_flag; i++)
                usleep(100 * 1000);
        }
        rc = reconcile_pass(r);
        exit_code = rc ? EXIT_RUNTIME : EXIT_OK;
        if (rc) log_msg(LOG_ERROR, NULL, rc, "the reconcile pass did not complete");
    } else {
        reconcile_run(r, &stop_flag, cfg->backend == CFG_BACKEND_LOCAL ? &wake_flag : NULL);
        log_info("shutting down: no new workers");
        exit_code = EXIT_OK;
    }
    if (cfg->backend == CFG_BACKEND_LOCAL && !once) be->shutdown(be, 25000);
    leader_release(lead);

out:
    leader_free(lead);
    reconcile_free(r);
    jobpools_free(jps);
    pools_free(pools);
    metrics_free(m);
    backend_free(be);
    kube_client_free(kc);
    rmq_client_free(rmq);
    free(worker);
    cfg_free(cfg);
    log_clear_secrets();
    return exit_code;
}
