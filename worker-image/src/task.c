/* task.c: spawn the task, stream the body to its stdin, forward signals, enforce the grace. */
#define _GNU_SOURCE
#include "task.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TASK_WRITE_CHUNK 65536

/* Prefixes of what the task does not inherit: every broker connection setting (URL, URL file,
 * user, password, whichever form), the worker's progress channel to the controller (a task
 * writing to it would fake the worker's report), and stale per-message variables. */
static const char *const stripped_[] = {
    "JOBPOOL_AMQP_", "JOBPOOL_RESULT_FILE=", "JOBPOOL_MESSAGE_ID=", "JOBPOOL_CORRELATION_ID=",
    "JOBPOOL_ATTEMPT=", "JOBPOOL_REDELIVERED=", "JOBPOOL_HEADER_",
};

static bool is_stripped(const char *var)
{
    for (size_t i = 0; i < sizeof stripped_ / sizeof *stripped_; i++)
        if (strncmp(var, stripped_[i], strlen(stripped_[i])) == 0) return true;
    return false;
}

static int env_push(struct task_env *e, char *owned)
{
    if (e->n + 2 > e->alloc) {
        size_t want = e->alloc ? e->alloc * 2 : 64;
        char **v = realloc(e->vars, want * sizeof *v);
        if (!v) return JP_ENOMEM;
        e->vars = v;
        e->alloc = want;
    }
    e->vars[e->n++] = owned;
    e->vars[e->n] = NULL;
    return 0;
}

int task_env_init(struct task_env *e, char *const *inherited)
{
    memset(e, 0, sizeof *e);
    int rc = env_push(e, NULL); /* allocates the terminator */
    if (rc) return rc;
    e->n = 0;
    for (size_t i = 0; inherited && inherited[i]; i++) {
        if (is_stripped(inherited[i])) continue;
        char *copy = strdup(inherited[i]);
        if (!copy || env_push(e, copy) != 0) {
            free(copy);
            task_env_free(e);
            return JP_ENOMEM;
        }
    }
    return 0;
}

int task_env_add(struct task_env *e, const char *name, const char *value, size_t value_len)
{
    size_t nlen = strlen(name);
    if (!nlen || memchr(value, '\0', value_len)) return JP_EINVAL;
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->vars[i], name, nlen) == 0 && e->vars[i][nlen] == '=') return 0;
    char *v = malloc(nlen + 1 + value_len + 1);
    if (!v) return JP_ENOMEM;
    memcpy(v, name, nlen);
    v[nlen] = '=';
    memcpy(v + nlen + 1, value, value_len);
    v[nlen + 1 + value_len] = '\0';
    int rc = env_push(e, v);
    if (rc) free(v);
    return rc;
}

void task_env_free(struct task_env *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->n; i++) free(e->vars[i]);
    free(e->vars);
    memset(e, 0, sizeof *e);
}

void task_header_var(const void *name, size_t len, char *out, size_t outlen)
{
    static const char prefix[] = "JOBPOOL_HEADER_";
    if (!outlen) return;
    size_t o = 0;
    for (size_t i = 0; prefix[i] && o + 1 < outlen; i++) out[o++] = prefix[i];
    const unsigned char *p = name;
    for (size_t i = 0; i < len && o + 1 < outlen; i++) {
        unsigned char ch = p[i];
        if (ch >= 'a' && ch <= 'z') ch = (unsigned char)(ch - 'a' + 'A');
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))) ch = '_';
        out[o++] = (char)ch;
    }
    out[o] = '\0';
}

int task_check_command(const char *cmd)
{
    if (!cmd || !*cmd) return ENOENT;
    if (strchr(cmd, '/')) {
        struct stat st;
        if (stat(cmd, &st) != 0) return errno;
        if (S_ISDIR(st.st_mode)) return EACCES;
        return access(cmd, X_OK) == 0 ? 0 : errno;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    int best = ENOENT;
    while (*path) {
        size_t n = strcspn(path, ":");
        char full[PATH_MAX];
        int w = snprintf(full, sizeof full, "%.*s%s%s", (int)n, n ? path : ".",
                         n && path[n - 1] == '/' ? "" : "/", cmd);
        path += n + (path[n] == ':');
        if (w < 0 || (size_t)w >= sizeof full) continue;
        struct stat st;
        if (stat(full, &st) != 0 || S_ISDIR(st.st_mode)) continue;
        if (access(full, X_OK) == 0) return 0;
        best = EACCES;
    }
    return best;
}

static int spawn_task(char *const *argv, char *const *envp, int stdin_fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int err = posix_spawn_file_actions_init(&fa);
    if (err) return err;
    err = posix_spawnattr_init(&attr);
    if (err) {
        posix_spawn_file_actions_destroy(&fa);
        return err;
    }
    sigset_t dfl, none;
    sigemptyset(&dfl);
    sigemptyset(&none);
    /* The worker ignores SIGPIPE; the task must get the default back. */
    int sigs[] = {SIGPIPE, SIGTERM, SIGINT, SIGCHLD, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&dfl, sigs[i]);
    if (!err) err = posix_spawn_file_actions_adddup2(&fa, stdin_fd, STDIN_FILENO);
    /* Then close everything above stderr, whoever opened it: the broker socket, the signal
     * pipe, and whatever librabbitmq or OpenSSL opened without O_CLOEXEC. */
    if (!err) err = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    if (!err) err = posix_spawnattr_setsigdefault(&attr, &dfl);
    if (!err) err = posix_spawnattr_setsigmask(&attr, &none);
    /* Its own process group, so forwarding a signal or SIGKILL reaches its children too. */
    if (!err) err = posix_spawnattr_setpgroup(&attr, 0);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETPGROUP);
    if (!err) err = posix_spawnp(pid, argv[0], &fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

/* Begin stopping the task: sig to its process group, SIGKILL at the returned time. */
static int64_t stop_task(pid_t pid, int sig, int64_t grace_ms)
{
    if (kill(-pid, sig) != 0) kill(pid, sig);
    return util_now_ms() + grace_ms;
}

static void fill_status(int status, struct task_result *res)
{
    if (WIFEXITED(status)) {
        res->exit_code = WEXITSTATUS(status);
        res->term_signal = 0;
    } else if (WIFSIGNALED(status)) {
        res->term_signal = WTERMSIG(status);
        res->exit_code = 128 + res->term_signal;
    }
}

int task_run(char *const *argv, char *const *envp, const void *body, size_t body_len,
             const struct task_io *io, struct task_result *res)
{
    memset(res, 0, sizeof *res);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        res->spawn_errno = errno;
        return JP_ESPAWN;
    }
    pid_t pid;
    int err = spawn_task(argv, envp, p[0], &pid);
    close(p[0]);
    if (err) {
        close(p[1]);
        res->spawn_errno = err;
        return JP_ESPAWN;
    }
    log_info("task started: pid %d, %zu byte body", (int)pid, body_len);
    int wfd = p[1];
    fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
    size_t off = 0;
    if (body_len == 0) {
        close(wfd);
        wfd = -1;
    }

    int64_t kill_at = -1; /* monotonic ms at which the grace ends; >= 0 once stopping */
    int64_t next_service = 0;
    int64_t deadline = io->timeout_ms > 0 ? util_now_ms() + io->timeout_ms : -1;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) {
            /* ECHILD: nothing left to wait for; never report an unset status as a result. */
            log_error("task: waitpid: %s", strerror(errno));
            status = 255 << 8;
            break;
        }
        int64_t now = util_now_ms();
        if (deadline >= 0 && kill_at < 0 && now >= deadline) {
            log_warn("task ran past its timeout (%lld ms): sending SIGTERM, grace %lld ms",
                     (long long)io->timeout_ms, (long long)io->grace_ms);
            res->timed_out = true;
            kill_at = stop_task(pid, SIGTERM, io->grace_ms);
        }
        if (kill_at >= 0 && now >= kill_at) {
            log_warn("task did not end within the grace period: sending SIGKILL");
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            res->grace_expired = true;
            pid_t r;
            while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
            if (r != pid) status = SIGKILL; /* reaped elsewhere: it was killed all the same */
            break;
        }
        struct pollfd pf[3];
        int npf = 0;
        pf[npf++] = (struct pollfd){.fd = io->sig_fd, .events = POLLIN};
        int wi = -1, si = -1;
        if (wfd >= 0) {
            wi = npf;
            pf[npf++] = (struct pollfd){.fd = wfd, .events = POLLOUT};
        }
        int sfd = io->service_fd ? io->service_fd(io->ctx) : -1;
        if (sfd >= 0) {
            si = npf;
            pf[npf++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        }
        int timeout = 1000;
        if (kill_at >= 0 && kill_at - now < timeout) timeout = (int)(kill_at - now);
        if (kill_at < 0 && deadline >= 0 && deadline - now < timeout) timeout = (int)(deadline - now);
        if (timeout < 0) timeout = 0;
        int n = poll(pf, (nfds_t)npf, timeout);
        if (n < 0 && errno != EINTR) {
            log_error("task: poll: %s", strerror(errno));
            n = 0;
        }
        if (n > 0 && (pf[0].revents & POLLIN)) {
            unsigned char sigs[32];
            ssize_t got = read(io->sig_fd, sigs, sizeof sigs);
            for (ssize_t i = 0; i < got; i++) {
                int sig = sigs[i];
                if (sig != SIGTERM && sig != SIGINT) continue;
                if (!res->forwarded) {
                    res->forwarded = sig;
                    log_info("got %s: passing it to the task, grace %lld ms",
                             sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)io->grace_ms);
                    int64_t at = stop_task(pid, sig, io->grace_ms);
                    if (kill_at < 0) kill_at = at; /* a grace already running is not renewed */
                } else {
                    log_warn("second signal: ending the grace period now");
                    kill_at = util_now_ms();
                }
            }
        }
        if (wi >= 0 && n > 0 && (pf[wi].revents & (POLLOUT | POLLERR | POLLHUP))) {
            size_t want = body_len - off < TASK_WRITE_CHUNK ? body_len - off : TASK_WRITE_CHUNK;
            ssize_t wr = write(wfd, (const char *)body + off, want);
            if (wr > 0) off += (size_t)wr;
            else if (wr < 0 && errno != EAGAIN && errno != EINTR) {
                /* EPIPE: the task closed its stdin without reading it all, which is its call. */
                log_debug("task stdin closed after %zu of %zu bytes: %s", off, body_len,
                          strerror(errno));
                off = body_len;
            }
            if (off >= body_len) {
                close(wfd);
                wfd = -1;
            }
        }
        now = util_now_ms();
        if (io->service && ((si >= 0 && n > 0 && pf[si].revents) || now >= next_service)) {
            if (!io->service(io->ctx) && !res->revoked) {
                res->revoked = true;
                log_warn("the message was taken back by the broker: stopping the task (SIGTERM, "
                         "grace %lld ms)", (long long)io->grace_ms);
                int64_t at = stop_task(pid, SIGTERM, io->grace_ms);
                if (kill_at < 0) kill_at = at;
            }
            next_service = now + 1000;
        }
    }
    if (wfd >= 0) close(wfd);
    fill_status(status, res);
    return 0;
}
