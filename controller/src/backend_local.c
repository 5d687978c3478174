/* backend_local.c: workers as local child processes, spawned with posix_spawn and reaped. */
#define _GNU_SOURCE
#include "backend.h"
#include "err.h"
#include "http.h"
#include "intern.h"
#include "log.h"
#include "progress.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct lworker {
    pid_t pid;
    size_t pool;                /* index into cfg->pools */
    unsigned long seq;          /* its JOBPOOL_RESULT_FILE is <dir>/w<seq> (result_path) */
    char *id;                   /* "pid-<n>", bw.id: its own allocation, so that a listed
                                 * worker's id stays put when the array below moves */
    struct backend_worker bw;
};

#define LOCAL_ID_LEN 24         /* "pid-" and any pid_t */
#define LOCAL_DIR_MAX 256       /* $TMPDIR "/jobpool-local.XXXXXX" */

struct local {
    struct backend base;
    const struct cfg *cfg;
    char *worker_path;
    char *amqp_url;             /* with credentials: handed to workers only, never logged */
    char dir[LOCAL_DIR_MAX];    /* per-controller temp dir for worker result files, in $TMPDIR
                                 * (else /tmp) */
    struct lworker *w;
    size_t n, cap;
    /* Ids of workers removed in this pass: a list the caller holds may still point at them
     * until the next observe (struct backend_worker), which frees them. */
    char **dead;
    size_t ndead, dead_cap;
    struct backend_stats *stats; /* per pool */
    unsigned long seq;          /* names result files */
};

#define LOCAL_RESULT_MAX (LOCAL_DIR_MAX + 24)

/* The result file of the worker numbered seq (see spawn_one). */
static const char *result_path(const struct local *L, unsigned long seq, char *buf)
{
    snprintf(buf, LOCAL_RESULT_MAX, "%s/w%lu", L->dir, seq);
    return buf;
}

static size_t pool_index(const struct local *L, const struct cfg_pool *p)
{
    return (size_t)(p - L->cfg->pools);
}

/* A worker writes its progress to JOBPOOL_RESULT_FILE (progress.h): "waiting" once the broker
 * counts it as a consumer, "task wait=S" when a message arrived, "task wait=S duration=S" when
 * the task ended, "no-task" when it exits idle. Read once, when the worker has exited. */
static void read_progress(const char *path, struct progress *p)
{
    char *s = NULL;
    if (util_read_file(path, 256, true, &s) == 0) progress_parse(s, p);
    else progress_parse(NULL, p);
    free(s);
}

/* When did a worker that finished between two observes start? It reported progress (it was a
 * consumer) before it wrote its last word, so that word's time (the result file's mtime) is no
 * earlier than its start as a consumer; its spawn time is no later. The word's time is used: for
 * "task" it is the moment its message left the queue, which is what the sample's age is
 * compared with (scale.h's "unseen"). The task's last word is written when it ended, so its
 * duration (duration_s, < 0 unknown) is taken off to get back to that moment. 0 when it never
 * reported, so it took no message. */
static int64_t unobserved_start_ms(const char *result, const struct lworker *lw,
                                   double duration_s)
{
    struct stat st;
    if (stat(result, &st) != 0) return 0;
    /* The file's time is on the wall clock; the decision's on our monotonic one. */
    int64_t wall = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    if (duration_s > 0) wall -= (int64_t)(duration_s * 1000.0);
    int64_t now = util_now_ms();
    int64_t t = now - (util_wall_ms() - wall);
    if (t > now) t = now;
    return t > lw->bw.w.created_ms ? t : lw->bw.w.created_ms;
}

static void finish(struct local *L, struct lworker *lw, int status)
{
    struct progress prog;
    char result[LOCAL_RESULT_MAX];
    result_path(L, lw->seq, result);
    lw->bw.w.finished_ms = util_now_ms();
    /* Finished before any observe saw it running: without a start it would not count as
     * "unseen", and a lagging depth sample would get its message a second worker. */
    read_progress(result, &prog);
    if (!lw->bw.w.started_ms)
        lw->bw.w.started_ms = unobserved_start_ms(result, lw, prog.duration_s);
    unlink(result);
    lw->bw.wasted = prog.word == PROGRESS_NO_TASK;
    lw->bw.task_wait_s = prog.wait_s;
    lw->bw.task_duration_s = prog.duration_s;
    lw->bw.outcome_new = true;
    if (WIFEXITED(status)) lw->bw.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) lw->bw.exit_code = 128 + WTERMSIG(status);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    lw->bw.w.state = ok ? SCALE_SUCCEEDED : SCALE_FAILED;
    struct backend_stats *st = &L->stats[lw->pool];
    if (ok) st->succeeded++;
    else st->failed++;
    if (lw->bw.wasted) st->wasted++;
    log_msg(ok ? LOG_DEBUG : LOG_INFO, L->cfg->pools[lw->pool].name, 0,
            "worker %s exited code=%d%s", lw->bw.id, lw->bw.exit_code,
            lw->bw.wasted ? " (no task)" : "");
}

/* The status of a child that is gone for sure (after SIGKILL). A signal may interrupt the wait;
 * a child that cannot be waited for (already reaped elsewhere) counts as exit 255, never as
 * whatever an unset status would say. */
static int reap(pid_t pid)
{
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
    return r == pid ? status : 255 << 8;
}

static void free_dead(struct local *L)
{
    for (size_t i = 0; i < L->ndead; i++) free(L->dead[i]);
    L->ndead = 0;
}

static int local_observe(struct backend *b)
{
    struct local *L = (struct local *)b;
    free_dead(L);
    char result[LOCAL_RESULT_MAX];
    for (size_t i = 0; i < L->n; i++) {
        struct lworker *lw = &L->w[i];
        if (lw->bw.w.finished_ms) continue;
        int status = 0;
        pid_t r;
        while ((r = waitpid(lw->pid, &status, WNOHANG)) < 0 && errno == EINTR) {}
        if (r == lw->pid) finish(L, lw, status);
        else if (r < 0) finish(L, lw, 255 << 8); /* ECHILD: not ours to wait for any more */
        else if (lw->bw.w.state == SCALE_PENDING &&
                 !access(result_path(L, lw->seq, result), F_OK)) {
            /* Any progress word means the worker has registered as a consumer. A command that
             * is not jobpool-worker never writes one: it counts as running from its spawn. */
            lw->bw.w.state = SCALE_RUNNING;
            lw->bw.w.started_ms = util_now_ms();
        }
    }
    return 0;
}

static int local_list(struct backend *b, const struct cfg_pool *pool, struct backend_list *out)
{
    struct local *L = (struct local *)b;
    size_t pi = pool_index(L, pool);
    out->n = 0;
    for (size_t i = 0; i < L->n; i++)
        if (L->w[i].pool == pi) {
            int rc = backend_list_push(out, &L->w[i].bw);
            if (rc) return rc;
            L->w[i].bw.outcome_new = false; /* its figures go out in this listing only */
        }
    return 0;
}

/* What a worker inherits from the controller: the locale, the clock's zone, where programs and
 * home are. Nothing else: the controller's environment holds its own secrets (the broker
 * password, API tokens) and the worker, and the task after it, must not see them. */
static bool env_allowed(const char *var)
{
    static const char *const names[] = {"PATH=", "HOME=", "LANG=", "LANGUAGE=", "TZ=", "LC_"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(var, names[i], strlen(names[i])) == 0) return true;
    return false;
}

static bool env_has(char *const *env, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], name, len) == 0 && env[i][len] == '=') return true;
    return false;
}

/* Does worker.env set var's name? It then replaces our value. */
static bool pool_sets(const struct cfg_pool *pool, const char *var)
{
    size_t len = strcspn(var, "=");
    for (size_t i = 0; i < pool->worker_nenv; i++)
        if (strlen(pool->worker_env[i].name) == len &&
            strncmp(pool->worker_env[i].name, var, len) == 0)
            return true;
    return false;
}

/* Environment for a worker: the allow-listed part of ours, the pool's worker.env (references
 * read now, so a rotated file is picked up by the next worker), then what we set ourselves.
 * Returns NULL with *rc set (JP_ENOMEM, or the reference's error after one log line). */
static char **build_env(const struct local *L, const struct cfg_pool *pool, const char *queue,
                        const char *result, int *rc)
{
    size_t n = 0;
    for (char **e = environ; *e; e++) n++;
    char **env = calloc(n + pool->worker_nenv + 10, sizeof *env);
    size_t k = 0;
    *rc = JP_ENOMEM;
    if (!env) return NULL;
    for (char **e = environ; *e; e++)
        if (env_allowed(*e) && !pool_sets(pool, *e) && !(env[k++] = strdup(*e))) goto fail;
    for (size_t i = 0; i < pool->worker_nenv; i++) {
        const struct cfg_env_var *v = &pool->worker_env[i];
        char *val = NULL;
        if (!v->value && (*rc = cfg_secret_read(&v->ref, &val)) != 0) {
            log_msg(LOG_ERROR, pool->name, *rc, "worker.env.%s: cannot read %s %s", v->name,
                    v->ref.env ? "environment variable" : "file",
                    v->ref.env ? v->ref.env : v->ref.file);
            goto fail;
        }
        env[k] = util_strprintf("%s=%s", v->name, v->value ? v->value : val);
        if (val) explicit_bzero(val, strlen(val));
        free(val);
        *rc = JP_ENOMEM;
        if (!env[k++]) goto fail;
    }
    /* Set last and only once: a name in worker.env is never also one of these (config.c). */
    const char *kv[][2] = {{"JOBPOOL_POOL", pool->name},
                           {"JOBPOOL_QUEUE", queue},
                           {"JOBPOOL_VHOST", pool->vhost ? pool->vhost : "/"},
                           {"JOBPOOL_AMQP_URL", L->amqp_url},
                           {"JOBPOOL_RESULT_FILE", result},
                           {"JOBPOOL_CA_FILE", L->cfg->rabbitmq.ca_file},
                           {"JOBPOOL_CERT_FILE", L->cfg->rabbitmq.cert_file},
                           {"JOBPOOL_KEY_FILE", L->cfg->rabbitmq.key_file}};
    /* The certificate and its key go together: worker.env setting either replaces both. */
    bool own_cert = env_has(env, k, "JOBPOOL_CERT_FILE") || env_has(env, k, "JOBPOOL_KEY_FILE");
    for (size_t j = 0; j < sizeof kv / sizeof kv[0]; j++) {
        if (!kv[j][1] || env_has(env, k, kv[j][0])) continue; /* worker.env's CA file wins */
        if (own_cert && (!strcmp(kv[j][0], "JOBPOOL_CERT_FILE") ||
                         !strcmp(kv[j][0], "JOBPOOL_KEY_FILE")))
            continue;
        if (!(env[k++] = util_strprintf("%s=%s", kv[j][0], kv[j][1]))) goto fail;
    }
    *rc = 0;
    return env;
fail:
    for (size_t j = 0; j < k; j++) free(env[j]);
    free(env);
    return NULL;
}

static void free_strv(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

static bool is_worker_binary(const char *arg0)
{
    const char *base = strrchr(arg0, '/');
    return strcmp(base ? base + 1 : arg0, "jobpool-worker") == 0;
}

/* argv for a worker: the pool's command; a leading jobpool-worker gets our binary and the
 * pool's --idle-timeout and --max-attempts. */
static char **build_argv(const struct local *L, const struct cfg_pool *pool)
{
    size_t n = pool->worker_argc;
    char **argv = calloc(n + 4, sizeof *argv);
    if (!argv) return NULL;
    size_t k = 0;
    bool worker = is_worker_binary(pool->worker_command[0]);
    if (!(argv[k++] = strdup(worker && L->worker_path ? L->worker_path : pool->worker_command[0])))
        goto fail;
    if (worker) {
        char dur[32];
        util_format_duration(pool->idle_timeout_ms, dur, sizeof dur);
        if (!(argv[k++] = util_strprintf("--idle-timeout=%s", dur)) ||
            !(argv[k++] = util_strprintf("--max-attempts=%d", pool->max_attempts)))
            goto fail;
        if (pool->task_timeout_ms > 0) {
            util_format_duration(pool->task_timeout_ms, dur, sizeof dur);
            if (!(argv[k++] = util_strprintf("--task-timeout=%s", dur))) goto fail;
        }
    }
    for (size_t i = 1; i < n; i++)
        if (!(argv[k++] = strdup(pool->worker_command[i]))) goto fail;
    return argv;
fail:
    free_strv(argv);
    return NULL;
}

/* 0 when cmd names an executable file (directly, or through PATH), else an errno. Checked
 * before spawning so that a typo in worker.command is one clear error, on every platform:
 * some posix_spawn implementations only report a failed exec as the child's exit 127. */
static int check_exec(const char *cmd)
{
    if (strchr(cmd, '/')) return access(cmd, X_OK) == 0 ? 0 : errno;
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    int err = ENOENT;
    while (*path) {
        size_t n = strcspn(path, ":");
        char cand[4096];
        if (snprintf(cand, sizeof cand, "%.*s/%s", (int)(n ? n : 1), n ? path : ".", cmd) <
                (int)sizeof cand &&
            access(cand, X_OK) == 0)
            return 0;
        path += n;
        if (*path == ':') path++;
    }
    return err;
}

static int spawn_one(struct local *L, const struct cfg_pool *pool, const char *queue)
{
    int rc = JP_ENOMEM;
    char **argv = build_argv(L, pool), **env = NULL;
    char *id = NULL;
    char result[LOCAL_RESULT_MAX];
    result_path(L, ++L->seq, result);
    if (!argv || !(env = build_env(L, pool, queue, result, &rc))) goto out;
    rc = JP_ENOMEM;
    if (!(id = malloc(LOCAL_ID_LEN))) goto out;
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        struct lworker *w = realloc(L->w, cap * sizeof *w);
        if (!w) goto out;
        L->w = w;
        L->cap = cap;
    }
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGCHLD);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    /* Own process group: a terminal's Ctrl-C reaches only the controller, which then drains
     * the workers with SIGTERM so that their messages are requeued, not lost. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    /* Close every descriptor above stderr in the child, whoever opened it: libcurl's keep-alive
     * sockets and anything a library opened without O_CLOEXEC must not reach a worker. */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    pid_t pid;
    int e = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    if (!e) e = check_exec(argv[0]);
    if (!e) e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (e != 0) {
        log_msg(LOG_ERROR, pool->name, JP_ESPAWN, "cannot start worker %s: %s", argv[0],
                strerror(e));
        rc = JP_ESPAWN;
        goto out;
    }
    struct lworker *lw = &L->w[L->n++];
    memset(lw, 0, sizeof *lw);
    lw->pid = pid;
    lw->pool = pool_index(L, pool);
    lw->seq = L->seq;
    snprintf(id, LOCAL_ID_LEN, "pid-%ld", (long)pid);
    lw->id = id;
    lw->bw.id = id;
    id = NULL;
    const char *q = intern(queue); /* a regex pool's one queue */
    lw->bw.queue = q ? q : "";
    lw->bw.pool = ""; /* local workers are never orphans: they end with their controller */
    lw->bw.ns = lw->bw.uid = "";
    lw->bw.w.created_ms = util_now_ms();
    if (is_worker_binary(pool->worker_command[0])) {
        lw->bw.w.state = SCALE_PENDING; /* until it reports that it consumes */
    } else {
        lw->bw.w.state = SCALE_RUNNING;
        lw->bw.w.started_ms = lw->bw.w.created_ms;
    }
    lw->bw.exit_code = -1;
    L->stats[lw->pool].started++;
    rc = 0;
out:
    free(id);
    free_strv(argv);
    free_strv(env);
    return rc;
}

static int local_start(struct backend *b, const struct cfg_pool *pool, const char *queue, int n,
                       int64_t ready, int *started)
{
    struct local *L = (struct local *)b;
    (void)ready;
    *started = 0;
    if (!queue) queue = pool->queue ? pool->queue : "";
    if (!pool->worker_command || !pool->worker_argc) {
        log_msg(LOG_ERROR, pool->name, JP_ECONFIG,
                "worker.command is required for the local backend");
        return JP_ECONFIG;
    }
    for (int i = 0; i < n; i++) {
        int rc = spawn_one(L, pool, queue);
        if (rc) return rc;
        (*started)++;
    }
    return 0;
}

static int local_remove(struct backend *b, const struct cfg_pool *pool,
                        const struct backend_worker *w)
{
    struct local *L = (struct local *)b;
    (void)pool;
    for (size_t i = 0; i < L->n; i++) {
        if (strcmp(L->w[i].bw.id, w->id) != 0) continue;
        if (!L->w[i].bw.w.finished_ms) return JP_EINVAL; /* never a running worker */
        if (L->ndead == L->dead_cap) {
            size_t cap = L->dead_cap ? L->dead_cap * 2 : 16;
            char **d = realloc(L->dead, cap * sizeof *d);
            if (!d) return JP_ENOMEM;
            L->dead = d;
            L->dead_cap = cap;
        }
        L->dead[L->ndead++] = L->w[i].id;
        char result[LOCAL_RESULT_MAX];
        unlink(result_path(L, L->w[i].seq, result));
        L->w[i] = L->w[--L->n];
        return 0;
    }
    return JP_ENOTFOUND;
}

static void local_stats(struct backend *b, const struct cfg_pool *pool, struct backend_stats *out)
{
    struct local *L = (struct local *)b;
    *out = L->stats[pool_index(L, pool)];
}

static size_t count_active(const struct local *L)
{
    size_t n = 0;
    for (size_t i = 0; i < L->n; i++)
        if (!L->w[i].bw.w.finished_ms) n++;
    return n;
}

static void local_shutdown(struct backend *b, long grace_ms)
{
    struct local *L = (struct local *)b;
    local_observe(b);
    if (!count_active(L)) return;
    log_info("stopping %zu local workers (grace %ld ms)", count_active(L), grace_ms);
    for (size_t i = 0; i < L->n; i++)
        if (!L->w[i].bw.w.finished_ms) kill(L->w[i].pid, SIGTERM);
    int64_t deadline = util_now_ms() + grace_ms;
    while (count_active(L) && util_now_ms() < deadline) {
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
        local_observe(b);
    }
    for (size_t i = 0; i < L->n; i++)
        if (!L->w[i].bw.w.finished_ms) {
            kill(L->w[i].pid, SIGKILL);
            finish(L, &L->w[i], reap(L->w[i].pid));
        }
}

static void local_destroy(struct backend *b)
{
    struct local *L = (struct local *)b;
    if (!L) return;
    char result[LOCAL_RESULT_MAX];
    for (size_t i = 0; i < L->n; i++) {
        unlink(result_path(L, L->w[i].seq, result));
        free(L->w[i].id);
    }
    free_dead(L);
    free(L->dead);
    if (L->dir[0]) rmdir(L->dir);
    if (L->amqp_url) explicit_bzero(L->amqp_url, strlen(L->amqp_url));
    free(L->amqp_url);
    free(L->worker_path);
    free(L->w);
    free(L->stats);
    free(L);
}

/* amqpUrl with the credentials and the vhost path filled in. */
static int worker_url(const struct cfg_rabbitmq *rc, char **out)
{
    *out = NULL;
    char *user = NULL, *pass = NULL, *euser = NULL, *epass = NULL;
    int rc_ = cfg_ref_read(&rc->username, false, &user);
    if (!rc_) rc_ = cfg_secret_read(&rc->password, &pass);
    if (rc_) goto out;
    rc_ = JP_ENOMEM;
    if (!(euser = http_escape(user)) || !(epass = http_escape(pass))) goto out;
    const char *url = rc->amqp_url;
    const char *rest = strstr(url, "://");
    if (!rest) {
        rc_ = JP_EINVAL;
        goto out;
    }
    rest += 3;
    const char *at = strchr(rest, '@');
    if (at && at < rest + strcspn(rest, "/")) rest = at + 1; /* drop inline userinfo */
    *out = util_strprintf("%.*s%s:%s@%s", (int)(strstr(url, "://") + 3 - url), url, euser,
                          epass, rest);
    rc_ = *out ? 0 : JP_ENOMEM;
out:
    free(user);
    free(pass);
    free(euser);
    free(epass);
    return rc_;
}

/* The directory for the workers' result files: $TMPDIR/jobpool-local.XXXXXX when TMPDIR is an
 * absolute path (as mktemp(1) does), else /tmp. A directory that cannot be made is logged with
 * its path and the reason; the caller fails. */
static int make_dir(char *dir, size_t len)
{
    const char *base = getenv("TMPDIR");
    if (!base || base[0] != '/') base = "/tmp";
    size_t bl = strlen(base);
    while (bl > 1 && base[bl - 1] == '/') bl--;
    if ((size_t)snprintf(dir, len, "%.*s/jobpool-local.XXXXXX", (int)bl, base) >= len) {
        log_msg(LOG_ERROR, NULL, JP_EINVAL, "TMPDIR is too long for the workers' result "
                                            "directory (at most %zu bytes)", len - 22);
        dir[0] = '\0';
        return JP_EINVAL;
    }
    if (!mkdtemp(dir)) {
        int e = errno;
        log_msg(LOG_ERROR, NULL, JP_EIO, "cannot make the workers' result directory %.*s/: %s "
                "(set TMPDIR to a writable directory)", (int)bl, base, strerror(e));
        dir[0] = '\0';
        return JP_EIO;
    }
    return 0;
}

int backend_local_new(const struct cfg *cfg, const char *worker_path, struct backend **out)
{
    *out = NULL;
    struct local *L = calloc(1, sizeof *L);
    if (!L) return JP_ENOMEM;
    int rc = JP_ENOMEM;
    L->cfg = cfg;
    L->base = (struct backend){.name = "local", .start_lag_ms = 0, .observe = local_observe, .list = local_list,
                               .start = local_start, .remove = local_remove,
                               .stats = local_stats, .shutdown = local_shutdown,
                               .destroy = local_destroy};
    if (worker_path && !(L->worker_path = strdup(worker_path))) goto out;
    if (!(L->stats = calloc(cfg->npools ? cfg->npools : 1, sizeof *L->stats))) goto out;
    if ((rc = worker_url(&cfg->rabbitmq, &L->amqp_url)) != 0) {
        log_msg(LOG_ERROR, NULL, rc, "cannot build the workers' AMQP URL from rabbitmq.amqpUrl "
                                     "and the credentials");
        goto out;
    }
    if ((rc = make_dir(L->dir, sizeof L->dir)) != 0) goto out;
    rc = 0;
out:
    if (rc) local_destroy(&L->base);
    else *out = &L->base;
    return rc;
}
