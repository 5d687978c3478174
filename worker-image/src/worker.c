/* worker.c: jobpool-worker: take one task from RabbitMQ, run it, acknowledge it, exit. */
#define _GNU_SOURCE
#include "amqp_conn.h"
#include "err.h"
#include "log.h"
#include "message.h"
#include "progress.h"
#include "task.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef JP_VERSION
#define JP_VERSION "dev"
#endif

/* Exit codes (also in --help and docs/worker.md). A task's own code passes through. */
enum {
    EXIT_OK = 0,          /* task succeeded and was acked, or no task came, or stopped idle */
    EXIT_INPUT = 2,       /* bad flags, URL, queue, credentials or command */
    EXIT_UNAVAILABLE = 69,/* the broker could not be reached (or was lost) before a task */
    EXIT_SOFTWARE = 70,   /* internal error, such as out of memory */
    EXIT_UNSETTLED = 75,  /* the task ran but its ack/requeue could not be sent: redelivered */
    EXIT_TERMINATED = 143,/* SIGTERM/SIGINT: the task outlived --grace, or never started; requeued */
    EXIT_TASK_TIMEOUT = 124, /* a task stopped by --task-timeout that still exited 0 */
};


static const char usage_[] =
    "usage: jobpool-worker [options] [--] COMMAND [ARG...]\n"
    "\n"
    "Take one message from a RabbitMQ queue, run COMMAND with the message body on its stdin,\n"
    "acknowledge the message when COMMAND exits 0, and exit.\n"
    "\n"
    "options:\n"
    "  --idle-timeout D   exit 0 when no message comes within D (default 30s; 500ms, 2s, 5m, 1h)\n"
    "  --max-attempts N   run a failing message at most N times, then dead-letter it (default 3)\n"
    "  --grace D          after SIGTERM/SIGINT, give the task D to finish (default 25s)\n"
    "  --task-timeout D   stop a task that runs longer than D (SIGTERM, --grace, SIGKILL) and\n"
    "                     count it as a failed attempt (default 0: none). Keep D + --grace\n"
    "                     below the broker's consumer_timeout\n"
    "  --ca-file PATH     CA bundle for amqps:// (default $JOBPOOL_CA_FILE, then the system one)\n"
    "  --cert-file PATH   client certificate for amqps:// (PEM, may hold its chain; default\n"
    "                     $JOBPOOL_CERT_FILE); needs --key-file\n"
    "  --key-file PATH    its private key, unencrypted PEM (default $JOBPOOL_KEY_FILE)\n"
    "  --queue NAME       the queue (default $JOBPOOL_QUEUE)\n"
    "  --vhost NAME       the vhost; overrides the URL's (default $JOBPOOL_VHOST)\n"
    "  --help, --version\n"
    "\n"
    "environment:\n"
    "  JOBPOOL_AMQP_URL        amqp[s]://user:pass@host[:port]/vhost (or JOBPOOL_AMQP_URL_FILE)\n"
    "  JOBPOOL_AMQP_USERNAME, JOBPOOL_AMQP_PASSWORD (or _FILE)   the login, as it is (no\n"
    "                          percent-encoding); overrides the URL's user info\n"
    "  JOBPOOL_QUEUE, JOBPOOL_VHOST, JOBPOOL_CA_FILE, JOBPOOL_CERT_FILE, JOBPOOL_KEY_FILE\n"
    "  JOBPOOL_IDLE_TIMEOUT, JOBPOOL_MAX_ATTEMPTS, JOBPOOL_GRACE, JOBPOOL_TASK_TIMEOUT\n"
    "                          defaults for the flags\n"
    "  JOBPOOL_RESULT_FILE     where to report progress: waiting, task wait=S [duration=S], no-task\n"
    "  JOBPOOL_LOG_FORMAT      text (default) or json;  JOBPOOL_LOG_LEVEL  debug|info|warn|error\n"
    "\n"
    "the task gets: JOBPOOL_MESSAGE_ID, JOBPOOL_CORRELATION_ID, JOBPOOL_ATTEMPT (1-based),\n"
    "  JOBPOOL_REDELIVERED (true when an earlier attempt ended unsettled),\n"
    "  JOBPOOL_HEADER_<NAME> for each header (NAME uppercased,\n"
    "  other than A-Z 0-9 -> _), and the worker's environment without the connection's variables.\n"
    "\n"
    "exit codes:\n"
    "  0    the task exited 0 and was acked; or no message within --idle-timeout; or stopped\n"
    "       by SIGTERM/SIGINT while waiting; or the message came back redelivered (an earlier\n"
    "       attempt ended unsettled) and this worker counted that attempt: requeued with\n"
    "       x-jobpool-attempt + 1, or dead-lettered after the last, without running the task\n"
    "  N    the task exited N (128+S when killed by signal S); the message was requeued with\n"
    "       x-jobpool-attempt + 1, or rejected to the dead-letter exchange after the last attempt\n"
    "  2    bad input: flags, URL, missing queue, access refused, empty or unrunnable command;\n"
    "       a broker certificate that does not verify, or a TLS handshake the broker refused\n"
    "       (client certificate missing or not trusted)\n"
    "  69   the broker could not be reached, or was lost before a message arrived\n"
    "  70   internal error\n"
    "  75   the task ran but the broker connection was lost, so its result could not be\n"
    "       acknowledged; or the broker's consumer_timeout took the message back while the\n"
    "       task ran (the task was stopped); the broker redelivers the message\n"
    "  143  SIGTERM/SIGINT during the task and it outlived --grace (killed), or before it\n"
    "       started; the message was requeued with the same attempt number\n";

struct worker_opts {
    int64_t idle_ms;
    int64_t max_attempts;
    int64_t grace_ms;
    int64_t task_timeout_ms;   /* 0: none */
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *queue;
    const char *vhost;
    char *url;         /* owned */
    char *username;    /* owned; NULL: the URL's */
    char *password;    /* owned; NULL: the URL's */
    char **cmd;        /* points into argv */
};

static int sig_pipe_[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(sig_pipe_[1], &b, 1);
    (void)w; /* a full pipe already holds enough wake-ups */
    errno = saved;
}

static int setup_signals(void)
{
    if (pipe2(sig_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return JP_EIO;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ||
        sigaction(SIGCHLD, &sa, NULL))
        return JP_EIO;
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    if (sigaction(SIGPIPE, &sa, NULL)) return JP_EIO;
    return 0;
}

/* A stop signal (SIGTERM/SIGINT) waiting in the self-pipe? Drains it. */
static int pending_stop_signal(void)
{
    unsigned char b[32];
    ssize_t n;
    int stop = 0;
    while ((n = read(sig_pipe_[0], b, sizeof b)) > 0)
        for (ssize_t i = 0; i < n; i++)
            if (b[i] == SIGTERM || b[i] == SIGINT) stop = b[i];
    return stop;
}

/* fds 0-2 must be open, or the task's stdin pipe could land on one of them. */
static void ensure_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0) {
            int n = open("/dev/null", O_RDWR);
            if (n >= 0 && n != fd) close(n);
        }
}

static void setup_logging(void)
{
    enum log_format fmt = LOG_TEXT;
    enum log_level lvl = LOG_INFO;
    const char *f = getenv("JOBPOOL_LOG_FORMAT");
    const char *l = getenv("JOBPOOL_LOG_LEVEL");
    if (f && *f && log_parse_format(f, &fmt) != 0) fmt = LOG_TEXT;
    if (l && *l && log_parse_level(l, &lvl) != 0) lvl = LOG_INFO;
    log_setup(fmt, lvl, NULL);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* NAME's value, else the content of the file NAME_FILE names (trailing newlines trimmed), else
 * NULL. A Kubernetes secretKeyRef or a mounted Secret gives the raw value: no URL encoding. */
static int env_or_file(const char *name, bool secret, char **out)
{
    char fname[64];
    const char *v = getenv(name);
    *out = NULL;
    snprintf(fname, sizeof fname, "%s_FILE", name);
    const char *file = env_nonempty(fname);
    if (v && *v) {
        *out = strdup(v);
    } else if (file) {
        int rc = util_read_file(file, 8192, true, out);
        if (rc) {
            fprintf(stderr, "jobpool-worker: cannot read %s %s: %s\n", fname, file,
                    jp_strerror(rc));
            return rc;
        }
    } else {
        return 0;
    }
    if (!*out) {
        fprintf(stderr, "jobpool-worker: out of memory\n");
        return JP_ENOMEM;
    }
    if (secret) log_add_secret(*out); /* a user name stays readable in errors */
    return 0;
}

/* Progress for the controller (the format is in progress.h): JOBPOOL_RESULT_FILE (set by the
 * local backend; /dev/termination-log in a Job) gets "waiting" once the broker counts this
 * worker as a consumer, "task wait=S" when a message arrives, "task wait=S duration=S" when the
 * task ended, and "no-task" when the worker exits idle, which is how the controller counts
 * wasted workers. Best effort: a failed write changes nothing about the message. */
static void report(const struct progress *p)
{
    const char *path = env_nonempty("JOBPOOL_RESULT_FILE");
    char line[128];
    if (!path || progress_format(p, line, sizeof line) < 0) return;
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return;
    /* Write beside it and rename, so a reader never sees half a word. Where the directory is
     * not ours (Kubernetes' /dev/termination-log is a single mounted file), write in place. */
    FILE *f = fopen(tmp, "w");
    bool in_place = !f;
    if (in_place && !(f = fopen(path, "w"))) return;
    int ok = fputs(line, f) >= 0;
    if (fclose(f) != 0) ok = 0;
    if (!in_place && (!ok || rename(tmp, path) != 0)) unlink(tmp);
}

static void report_word(enum progress_word w)
{
    report(&(struct progress){.word = w, .wait_s = -1, .duration_s = -1});
}

/* How long the message waited in the queue, from its AMQP timestamp property (whole seconds
 * since the epoch in AMQP 0-9-1, so the figure is up to a second long); -1 when the publisher
 * set none, or set one more than a day ahead of this clock (not seconds, or a broken clock).
 * A timestamp slightly ahead (clock skew) counts as no wait. */
static double message_wait_s(const amqp_basic_properties_t *props, int64_t now_wall_ms)
{
    if (!(props->_flags & AMQP_BASIC_TIMESTAMP_FLAG)) return -1;
    double wait = (double)now_wall_ms / 1000.0 - (double)props->timestamp;
    if (wait < -86400.0) return -1;
    return wait < 0 ? 0 : wait;
}

static void on_consuming(void *arg)
{
    (void)arg;
    report_word(PROGRESS_WAITING);
}

/* Defaults from the environment (the controller sets these for Kubernetes workers), then
 * flags override them. Returns 0 or EXIT_INPUT after one line. */
static int env_defaults(struct worker_opts *o)
{
    static const char *const names[] = {"JOBPOOL_IDLE_TIMEOUT", "JOBPOOL_MAX_ATTEMPTS",
                                        "JOBPOOL_GRACE", "JOBPOOL_TASK_TIMEOUT"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const char *v = env_nonempty(names[k]);
        if (!v) continue;
        int rc = k == 0 ? util_parse_duration(v, &o->idle_ms)
                 : k == 1 ? util_parse_int64(v, 1, 1000000, &o->max_attempts)
                 : k == 2 ? util_parse_duration(v, &o->grace_ms)
                          : util_parse_duration(v, &o->task_timeout_ms);
        if (rc) {
            fprintf(stderr, "jobpool-worker: bad value '%s' for %s: %s\n", v, names[k],
                    k == 1 ? "want an integer from 1" : "want a duration such as 500ms, 30s, 5m");
            return EXIT_INPUT;
        }
    }
    return 0;
}

/* Returns 0, or EXIT_INPUT after printing one line; -1 for --help/--version (exit 0). */
static int parse_args(int argc, char **argv, struct worker_opts *o)
{
    o->idle_ms = 30000;
    o->max_attempts = 3;
    o->grace_ms = 25000;
    if (env_defaults(o)) return EXIT_INPUT;
    o->ca_file = env_nonempty("JOBPOOL_CA_FILE");
    o->cert_file = env_nonempty("JOBPOOL_CERT_FILE");
    o->key_file = env_nonempty("JOBPOOL_KEY_FILE");
    o->queue = env_nonempty("JOBPOOL_QUEUE");
    o->vhost = env_nonempty("JOBPOOL_VHOST");
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_, stdout);
            return -1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("jobpool-worker %s\n", JP_VERSION);
            return -1;
        }
        if (strncmp(a, "--", 2) != 0) break; /* the command starts here */
        static const char *const with_value[] = {"--idle-timeout", "--max-attempts", "--grace",
                                                 "--ca-file", "--queue", "--vhost",
                                                 "--task-timeout", "--cert-file", "--key-file"};
        const char *val = NULL;
        size_t k;
        for (k = 0; k < sizeof with_value / sizeof *with_value; k++) {
            size_t n = strlen(with_value[k]);
            if (strncmp(a, with_value[k], n) != 0) continue;
            if (a[n] == '=') val = a + n + 1;
            else if (a[n] == '\0' && i + 1 < argc) val = argv[++i];
            else if (a[n] != '\0') continue;
            break;
        }
        if (k == sizeof with_value / sizeof *with_value) {
            fprintf(stderr, "jobpool-worker: unknown option '%s' (see --help)\n", a);
            return EXIT_INPUT;
        }
        if (!val) {
            fprintf(stderr, "jobpool-worker: %s needs a value\n", a);
            return EXIT_INPUT;
        }
        int rc = 0;
        switch (k) {
        case 0: rc = util_parse_duration(val, &o->idle_ms); break;
        case 1: rc = util_parse_int64(val, 1, 1000000, &o->max_attempts); break;
        case 2: rc = util_parse_duration(val, &o->grace_ms); break;
        case 3: o->ca_file = val; break;
        case 4: o->queue = val; break;
        case 5: o->vhost = val; break;
        case 6: rc = util_parse_duration(val, &o->task_timeout_ms); break;
        case 7: o->cert_file = val; break;
        case 8: o->key_file = val; break;
        }
        if (rc) {
            fprintf(stderr, "jobpool-worker: bad value '%s' for %s: %s\n", val, with_value[k],
                    k == 1 ? "want an integer from 1" : "want a duration such as 500ms, 30s, 5m");
            return EXIT_INPUT;
        }
    }
    o->cmd = argv + i;
    if (i >= argc || !argv[i][0]) {
        fprintf(stderr, "jobpool-worker: no task command: give it after -- (see --help)\n");
        return EXIT_INPUT;
    }
    if (!o->cert_file != !o->key_file) {
        const char *missing = o->cert_file ? "--key-file (or JOBPOOL_KEY_FILE)"
                                           : "--cert-file (or JOBPOOL_CERT_FILE)";
        fprintf(stderr, "jobpool-worker: a client certificate needs both files: %s is missing\n",
                missing);
        return EXIT_INPUT;
    }
    const char *url = getenv("JOBPOOL_AMQP_URL");
    const char *file = env_nonempty("JOBPOOL_AMQP_URL_FILE");
    if (url && *url) {
        o->url = strdup(url);
    } else if (file) {
        int rc = util_read_file(file, 8192, true, &o->url);
        if (rc) {
            fprintf(stderr, "jobpool-worker: cannot read JOBPOOL_AMQP_URL_FILE %s: %s\n", file,
                    jp_strerror(rc));
            return EXIT_INPUT;
        }
    } else {
        fprintf(stderr, "jobpool-worker: no broker url: set JOBPOOL_AMQP_URL or "
                        "JOBPOOL_AMQP_URL_FILE\n");
        return EXIT_INPUT;
    }
    if (!o->url) {
        fprintf(stderr, "jobpool-worker: out of memory\n");
        return EXIT_INPUT;
    }
    if (env_or_file("JOBPOOL_AMQP_USERNAME", false, &o->username) ||
        env_or_file("JOBPOOL_AMQP_PASSWORD", true, &o->password))
        return EXIT_INPUT;
    if (!o->queue) {
        fprintf(stderr, "jobpool-worker: no queue: set JOBPOOL_QUEUE or --queue\n");
        return EXIT_INPUT;
    }
    return 0;
}

static int conn_fd_cb(void *ctx) { return aconn_fd(ctx); }
/* Keep the task running unless the broker took its delivery back (consumer_timeout). A lost
 * connection alone does not stop it: see docs/worker.md. */
static bool conn_service_cb(void *ctx)
{
    aconn_service(ctx);
    return !aconn_revoked(ctx);
}

/* Close the connection; a failed close means an ack sent just before may be lost. */
static int finish(struct aconn *c, int code)
{
    if (aconn_close(c) != 0 && code != EXIT_TERMINATED) {
        log_error("the broker connection failed while closing: the result may not have been "
                  "recorded; the broker will redeliver the message if so");
        return EXIT_UNSETTLED;
    }
    return code;
}

/* Put the message back with the same attempt number, as a confirmed copy (then ack the
 * original) rather than a nack: a nacked message comes back redelivered, and a redelivered
 * message counts as a spent attempt (count_unsettled). Falls back to the nack when the copy is
 * not confirmed. Returns 0 when the message is back in the queue one way or the other. */
static int requeue_same(struct aconn *c, const amqp_envelope_t *m, int64_t attempt,
                        bool redelivered)
{
    if (aconn_republish(c, m, attempt, redelivered) == 0 && aconn_ack(c, m->delivery_tag) == 0)
        return 0;
    return aconn_alive(c) ? aconn_nack_requeue(c, m->delivery_tag) : JP_ENETWORK;
}

/* The broker redelivered this message: an earlier delivery of it ended without being settled.
 * Its worker was killed (SIGKILL, OOM, node loss), lost its connection, or the broker's
 * consumer_timeout took the message back while the task ran. That delivery was attempt
 * `attempt`, and it is counted here, where the message is held: the worker that lost it cannot
 * (the broker already requeued it), and running it again under the same number would let a task
 * that always outlives the timeout, or always kills its worker, loop forever. So the message is
 * requeued as attempt + 1 (a confirmed copy, then the ack), or dead-lettered after the last
 * attempt, and this worker runs nothing. */
static int count_unsettled(struct aconn *c, const amqp_envelope_t *m, int64_t attempt,
                           int64_t max_attempts)
{
    if (attempt >= max_attempts) {
        if (aconn_reject_dead_letter(c, m->delivery_tag) != 0) {
            aconn_free(c);
            return EXIT_UNSETTLED;
        }
        log_error("message redelivered: its last attempt (%" PRId64 " of %" PRId64 ") ended "
                  "unsettled (worker killed, connection lost or delivery timeout): rejected to the "
                  "dead-letter exchange without running it again", attempt, max_attempts);
        return finish(c, EXIT_OK);
    }
    int rc = aconn_republish(c, m, attempt + 1, true);
    if (rc == 0) rc = aconn_ack(c, m->delivery_tag);
    if (rc != 0) {
        /* Back as it came; the next worker counts it (possibly once more than it happened). */
        if (aconn_alive(c)) aconn_nack_requeue(c, m->delivery_tag);
        log_error("message redelivered: attempt %" PRId64 " ended unsettled, but the requeued "
                  "copy was not confirmed; the broker will redeliver it", attempt);
        return finish(c, EXIT_UNSETTLED);
    }
    log_warn("message redelivered: attempt %" PRId64 " of %" PRId64 " ended unsettled (worker "
             "killed, connection lost or delivery timeout): requeued as attempt %" PRId64
             " without running it here", attempt, max_attempts, attempt + 1);
    return finish(c, EXIT_OK);
}

/* Settle the message after the task ended and pick the exit code. */
static int settle(struct aconn *c, const amqp_envelope_t *m, const struct task_result *res,
                  int64_t attempt, int64_t max_attempts)
{
    if (res->revoked) {
        log_error("the broker's delivery timeout (consumer_timeout) took the message back while "
                  "attempt %" PRId64 " ran, and the task was stopped; the broker requeued it and "
                  "the worker that gets it counts this attempt. Raise consumer_timeout above the "
                  "longest task, or set a task timeout below it (docs/worker.md)", attempt);
        aconn_free(c);
        return EXIT_UNSETTLED;
    }
    if (res->grace_expired && !res->timed_out) {
        /* Stopped from outside (shutdown, drain): not the task's fault, so not an attempt. */
        if (requeue_same(c, m, attempt, true) == 0)
            log_warn("task killed after the grace period: message requeued as attempt %" PRId64,
                     attempt);
        else
            log_error("task killed after the grace period; the requeue could not be sent, the "
                      "broker will redeliver the message");
        return finish(c, EXIT_TERMINATED);
    }
    struct task_result timed = *res;
    if (res->timed_out) {
        log_warn("task stopped after its timeout: attempt %" PRId64 " failed", attempt);
        if (timed.exit_code == 0) timed.exit_code = EXIT_TASK_TIMEOUT; /* it exited 0 on SIGTERM */
        res = &timed;
    }
    if (!aconn_alive(c)) {
        log_error("task exited %d but the broker connection was lost: the ack could not be "
                  "sent, the broker will redeliver the message", res->exit_code);
        aconn_free(c);
        return EXIT_UNSETTLED;
    }
    if (res->exit_code == 0) {
        if (aconn_ack(c, m->delivery_tag) != 0) {
            log_error("task succeeded but the ack could not be sent: the broker will redeliver");
            aconn_free(c);
            return EXIT_UNSETTLED;
        }
        int code = finish(c, EXIT_OK);
        if (code == EXIT_OK) log_info("task succeeded: message acked");
        return code;
    }
    int rc;
    if (attempt < max_attempts) {
        rc = aconn_republish(c, m, attempt + 1, false);
        if (rc == 0) rc = aconn_ack(c, m->delivery_tag);
        if (rc == 0) {
            log_warn("task failed with exit %d on attempt %" PRId64 " of %" PRId64
                     ": requeued as attempt %" PRId64, res->exit_code, attempt, max_attempts,
                     attempt + 1);
        } else if (aconn_alive(c) && aconn_nack_requeue(c, m->delivery_tag) == 0) {
            /* The copy was not confirmed: put the original back rather than lose it. */
            log_error("task failed with exit %d; the retry copy was not confirmed, the original "
                      "message was requeued unchanged", res->exit_code);
        } else {
            log_error("task failed with exit %d; the broker connection was lost before the "
                      "message was settled: the broker will redeliver it", res->exit_code);
            aconn_free(c);
            return EXIT_UNSETTLED;
        }
    } else {
        rc = aconn_reject_dead_letter(c, m->delivery_tag);
        if (rc) {
            aconn_free(c);
            return EXIT_UNSETTLED;
        }
        log_error("task failed with exit %d on its last attempt (%" PRId64 " of %" PRId64
                  "): message rejected to the dead-letter exchange", res->exit_code, attempt,
                  max_attempts);
    }
    return finish(c, res->exit_code);
}

int main(int argc, char **argv)
{
    int code = EXIT_SOFTWARE;
    struct worker_opts o;
    struct aconn *c = NULL;
    amqp_envelope_t msg;
    bool have_msg = false;
    struct task_env env = {0};
    memset(&o, 0, sizeof o);
    memset(&msg, 0, sizeof msg);

    ensure_std_fds();
    setup_logging();
    int prc = parse_args(argc, argv, &o);
    if (prc) {
        code = prc < 0 ? EXIT_OK : prc;
        goto out;
    }
    int cerr = task_check_command(o.cmd[0]);
    if (cerr) {
        log_error("cannot run task command '%s': %s", o.cmd[0], strerror(cerr));
        code = EXIT_INPUT;
        goto out;
    }
    if (setup_signals() != 0) {
        log_error("cannot install signal handlers: %s", strerror(errno));
        goto out;
    }

    struct aconn_opts ao = {.url = o.url, .vhost = o.vhost, .queue = o.queue,
                            .username = o.username, .password = o.password,
                            .ca_file = o.ca_file, .cert_file = o.cert_file,
                            .key_file = o.key_file, .heartbeat_s = 60, .timeout_ms = 10000,
                            .on_consuming = on_consuming};
    enum aconn_fail fail;
    int rc = aconn_open(&ao, &c, &fail);
    if (rc) {
        code = fail == ACONN_FAIL_INPUT ? EXIT_INPUT : EXIT_UNAVAILABLE;
        goto out;
    }
    char red[512];
    log_info("waiting up to %lld ms for a message on queue '%s' at %s",
             (long long)o.idle_ms, o.queue, log_redact_url(o.url, red, sizeof red));

    rc = aconn_wait_one(c, o.idle_ms, sig_pipe_[0], &msg, &fail);
    if (rc == JP_ETIMEOUT) {
        log_info("no task: nothing arrived within %lld ms", (long long)o.idle_ms);
        report_word(PROGRESS_NO_TASK);
        finish(c, EXIT_OK); /* a failed close loses nothing: no message was taken */
        c = NULL;
        code = EXIT_OK;
        goto out;
    }
    if (rc == JP_ECANCELED && fail == ACONN_FAIL_NONE) {
        pending_stop_signal();
        log_info("stopped by a signal while waiting: no task taken");
        aconn_free(c); /* exit at once; the broker drops the consumer with the socket */
        c = NULL;
        code = EXIT_OK;
        goto out;
    }
    if (rc) {
        code = fail == ACONN_FAIL_INPUT ? EXIT_INPUT : rc == JP_ENOMEM ? EXIT_SOFTWARE
                                                                      : EXIT_UNAVAILABLE;
        goto out;
    }
    have_msg = true;
    struct progress prog = {.word = PROGRESS_TASK, .duration_s = -1,
                            .wait_s = message_wait_s(&msg.message.properties, util_wall_ms())};
    report(&prog);

    int64_t attempt = msg_attempt(&msg.message.properties);
    const amqp_basic_properties_t *pr = &msg.message.properties;
    log_info("took message id=%.*s attempt=%" PRId64 "/%" PRId64 " redelivered=%s bytes=%zu",
             (pr->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? (int)pr->message_id.len : 1,
             (pr->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? (const char *)pr->message_id.bytes : "-",
             attempt, o.max_attempts, msg.redelivered ? "true" : "false", msg.message.body.len);
    if (msg.redelivered) {
        code = count_unsettled(c, &msg, attempt, o.max_attempts);
        c = NULL;
        goto out;
    }
    if (msg_task_env(&env, environ, &msg, attempt) != 0) {
        log_error("out of memory building the task environment");
        aconn_nack_requeue(c, msg.delivery_tag);
        code = finish(c, EXIT_SOFTWARE);
        c = NULL;
        goto out;
    }
    /* Stopped between the message's arrival and the spawn: hand it back untouched. */
    if (pending_stop_signal()) {
        if (requeue_same(c, &msg, attempt, msg_redelivered(&msg)) == 0)
            log_info("stopped by a signal before the task started: message requeued");
        code = finish(c, EXIT_TERMINATED);
        c = NULL;
        goto out;
    }
    struct task_io io = {.sig_fd = sig_pipe_[0], .grace_ms = o.grace_ms,
                         .service_fd = conn_fd_cb, .service = conn_service_cb, .ctx = c,
                         .timeout_ms = o.task_timeout_ms};
    struct task_result res;
    int64_t t_run = util_now_ms();
    rc = task_run(o.cmd, env.vars, msg.message.body.bytes, msg.message.body.len, &io, &res);
    if (rc == JP_ESPAWN) {
        log_error("cannot run task command '%s': %s; message requeued", o.cmd[0],
                  strerror(res.spawn_errno));
        aconn_nack_requeue(c, msg.delivery_tag);
        finish(c, EXIT_INPUT);
        c = NULL;
        code = EXIT_INPUT;
        goto out;
    }
    prog.duration_s = (double)(util_now_ms() - t_run) / 1000.0;
    report(&prog);
    if (res.term_signal)
        log_info("task ended by signal %d (exit code %d)", res.term_signal, res.exit_code);
    else
        log_info("task exited %d", res.exit_code);
    code = settle(c, &msg, &res, attempt, o.max_attempts);
    c = NULL; /* settle closed or freed it */
out:
    aconn_free(c);
    if (have_msg) amqp_destroy_envelope(&msg);
    task_env_free(&env);
    free(o.url);
    free(o.username);
    if (o.password) explicit_bzero(o.password, strlen(o.password));
    free(o.password);
    log_clear_secrets();
    if (sig_pipe_[0] >= 0) close(sig_pipe_[0]);
    if (sig_pipe_[1] >= 0) close(sig_pipe_[1]);
    return code;
}
