/* test_worker_task.c: the worker's task runner: environment, header names, spawn, stdin, signals. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "task.h"
#include "util.h"

static bool has_var(const struct task_env *e, const char *var)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->vars[i], var) == 0) return true;
    return false;
}

static bool has_prefix(const struct task_env *e, const char *prefix)
{
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->vars[i], prefix, strlen(prefix)) == 0) return true;
    return false;
}

static void test_env_strips_credentials(void **state)
{
    (void)state;
    char *inherited[] = {"PATH=/bin", "JOBPOOL_AMQP_URL=amqp://u:secret@h/", "JOBPOOL_QUEUE=q",
                         "JOBPOOL_AMQP_URL_FILE=/run/url", "JOBPOOL_HEADER_OLD=x",
                         "JOBPOOL_AMQP_USERNAME=u", "JOBPOOL_AMQP_PASSWORD=secret",
                         "JOBPOOL_RESULT_FILE=/tmp/w1", "JOBPOOL_ATTEMPT=9", "HOME=/root", NULL};
    struct task_env e;
    assert_int_equal(task_env_init(&e, inherited), 0);
    assert_true(has_var(&e, "PATH=/bin"));
    assert_true(has_var(&e, "JOBPOOL_QUEUE=q"));
    assert_true(has_var(&e, "HOME=/root"));
    assert_false(has_prefix(&e, "JOBPOOL_AMQP_"));
    assert_false(has_prefix(&e, "JOBPOOL_RESULT_FILE"));
    for (size_t i = 0; i < e.n; i++) assert_null(strstr(e.vars[i], "secret"));
    assert_false(has_prefix(&e, "JOBPOOL_HEADER_"));
    assert_false(has_prefix(&e, "JOBPOOL_ATTEMPT"));
    assert_int_equal(task_env_add(&e, "JOBPOOL_ATTEMPT", "2", 1), 0);
    assert_true(has_var(&e, "JOBPOOL_ATTEMPT=2"));
    assert_null(e.vars[e.n]);
    task_env_free(&e);
    task_env_free(NULL);
}

static void test_env_add_rules(void **state)
{
    (void)state;
    struct task_env e;
    assert_int_equal(task_env_init(&e, NULL), 0);
    assert_int_equal(e.n, 0);
    assert_non_null(e.vars);
    assert_null(e.vars[0]);
    assert_int_equal(task_env_add(&e, "JOBPOOL_HEADER_A_B", "first", 5), 0);
    /* "a-b" and "a_b" sanitize alike: the first one wins, no duplicate name. */
    assert_int_equal(task_env_add(&e, "JOBPOOL_HEADER_A_B", "second", 6), 0);
    assert_int_equal(e.n, 1);
    assert_true(has_var(&e, "JOBPOOL_HEADER_A_B=first"));
    assert_int_equal(task_env_add(&e, "X", "a\0b", 3), JP_EINVAL);
    assert_int_equal(task_env_add(&e, "", "v", 1), JP_EINVAL);
    assert_int_equal(task_env_add(&e, "EMPTY", "", 0), 0);
    assert_true(has_var(&e, "EMPTY="));
    /* Growth past the first allocation keeps the array NULL-terminated. */
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof name, "V%d", i);
        assert_int_equal(task_env_add(&e, name, "1", 1), 0);
    }
    assert_int_equal(e.n, 202);
    assert_null(e.vars[e.n]);
    task_env_free(&e);
}

static void test_header_var(void **state)
{
    (void)state;
    char out[64];
    task_header_var("X-Trace-Id", 10, out, sizeof out);
    assert_string_equal(out, "JOBPOOL_HEADER_X_TRACE_ID");
    task_header_var("a.b c\xc3\xa9" "9", 8, out, sizeof out);
    assert_string_equal(out, "JOBPOOL_HEADER_A_B_C__9");
    task_header_var("x\0y", 3, out, sizeof out);
    assert_string_equal(out, "JOBPOOL_HEADER_X_Y");
    char small[20];
    task_header_var("abcdefghij", 10, small, sizeof small);
    assert_string_equal(small, "JOBPOOL_HEADER_ABCD");
}

static void test_check_command(void **state)
{
    (void)state;
    assert_int_equal(task_check_command("sh"), 0);
    assert_int_equal(task_check_command("/bin/sh"), 0);
    assert_int_equal(task_check_command("no-such-command-for-jobpool"), ENOENT);
    assert_int_equal(task_check_command("/no/such/file"), ENOENT);
    assert_int_equal(task_check_command("/"), EACCES);
    assert_int_equal(task_check_command(""), ENOENT);
    char path[] = "/tmp/jobpool-test-notexec.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    chmod(path, 0644);
    /* root may run any file with an x bit, but never one without. */
    assert_int_equal(task_check_command(path), EACCES);
    unlink(path);
}

/* A signal self-pipe like the worker's. */
static int sigp[2];

static void on_sigchld(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sigp[1], &b, 1) < 0) { /* full pipe: a wake-up is pending anyway */ }
    errno = saved;
}

static int setup_pipe(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (pipe2(sigp, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld; /* as the worker does: a child's exit wakes the loop */
    sa.sa_flags = SA_RESTART;
    return sigaction(SIGCHLD, &sa, NULL);
}

static int teardown_pipe(void **state)
{
    (void)state;
    close(sigp[0]);
    close(sigp[1]);
    return 0;
}

static int run_sh(const char *script, const void *body, size_t len, int64_t grace_ms,
                  struct task_result *res)
{
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    extern char **environ;
    struct task_io io = {.sig_fd = sigp[0], .grace_ms = grace_ms};
    return task_run(argv, environ, body, len, &io, res);
}

static void test_run_exit_codes(void **state)
{
    (void)state;
    struct task_result res;
    assert_int_equal(run_sh("exit 0", NULL, 0, 1000, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(run_sh("exit 42", NULL, 0, 1000, &res), 0);
    assert_int_equal(res.exit_code, 42);
    assert_int_equal(res.term_signal, 0);
    assert_int_equal(run_sh("kill -KILL $$", NULL, 0, 1000, &res), 0);
    assert_int_equal(res.term_signal, SIGKILL);
    assert_int_equal(res.exit_code, 128 + SIGKILL);
    assert_false(res.grace_expired);
}

static void test_run_body_on_stdin(void **state)
{
    (void)state;
    /* 3 MiB: many times the pipe buffer, so the writes must interleave with the reading. */
    size_t len = 3u << 20;
    char *body = malloc(len);
    assert_non_null(body);
    for (size_t i = 0; i < len; i++) body[i] = (char)('a' + i % 26);
    struct task_result res;
    char script[128];
    snprintf(script, sizeof script, "test \"$(wc -c)\" -eq %zu", len);
    assert_int_equal(run_sh(script, body, len, 1000, &res), 0);
    assert_int_equal(res.exit_code, 0);
    /* A task that never reads its stdin: the worker must neither hang nor die of SIGPIPE. */
    assert_int_equal(run_sh("exit 7", body, len, 1000, &res), 0);
    assert_int_equal(res.exit_code, 7);
    /* A task whose stdin is empty sees EOF at once. */
    assert_int_equal(run_sh("test \"$(wc -c)\" -eq 0", NULL, 0, 1000, &res), 0);
    assert_int_equal(res.exit_code, 0);
    free(body);
}

/* The task gets stdin, stdout and stderr, and no other descriptor: not the broker socket, not
 * one opened without O_CLOEXEC by a library. */
static void test_run_closes_descriptors(void **state)
{
    (void)state;
    char out[] = "/tmp/jobpool-test-fds.XXXXXX";
    int ofd = mkstemp(out);
    assert_true(ofd >= 0);
    close(ofd);
    int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC */
    assert_true(leak > 2);
    char script[256];
    /* ls lists the shell's descriptors from outside, so its own directory handle is not one. */
    snprintf(script, sizeof script, "exec > %s; ls /proc/$$/fd", out);
    struct task_result res;
    assert_int_equal(run_sh(script, "body", 4, 1000, &res), 0);
    close(leak);
    assert_int_equal(res.exit_code, 0);
    char *fds = NULL;
    assert_int_equal(util_read_file(out, 4096, false, &fds), 0);
    assert_string_equal(fds, "0\n1\n2\n");
    free(fds);
    unlink(out);
}

/* --task-timeout: SIGTERM at the deadline, SIGKILL after the grace; marked timed out. */
static void test_run_task_timeout(void **state)
{
    (void)state;
    extern char **environ;
    char *quick[] = {"sh", "-c", "sleep 5", NULL};
    struct task_io io = {.sig_fd = sigp[0], .grace_ms = 2000, .timeout_ms = 200};
    struct task_result res;
    assert_int_equal(task_run(quick, environ, NULL, 0, &io, &res), 0);
    assert_true(res.timed_out);
    assert_false(res.grace_expired);
    assert_false(res.revoked);
    assert_int_equal(res.term_signal, SIGTERM);
    char *stubborn[] = {"sh", "-c", "trap '' TERM; sleep 5", NULL};
    io.grace_ms = 200;
    assert_int_equal(task_run(stubborn, environ, NULL, 0, &io, &res), 0);
    assert_true(res.timed_out);
    assert_true(res.grace_expired);
    assert_int_equal(res.exit_code, 128 + SIGKILL);
    /* No timeout: a task that ends by itself is not marked. */
    char *fine[] = {"sh", "-c", "exit 3", NULL};
    io.timeout_ms = 0;
    assert_int_equal(task_run(fine, environ, NULL, 0, &io, &res), 0);
    assert_false(res.timed_out);
    assert_int_equal(res.exit_code, 3);
}

static int services_;
static bool revoke_on_second(void *ctx)
{
    (void)ctx;
    return ++services_ < 2;
}

/* The service says the delivery was taken back (the broker's consumer_timeout): the task is
 * stopped at once, not left to run while the broker hands its message to someone else. */
static void test_run_revoked(void **state)
{
    (void)state;
    extern char **environ;
    char *argv[] = {"sh", "-c", "sleep 5", NULL};
    struct task_io io = {.sig_fd = sigp[0], .grace_ms = 2000, .service = revoke_on_second};
    struct task_result res;
    services_ = 0;
    assert_int_equal(task_run(argv, environ, NULL, 0, &io, &res), 0);
    assert_true(res.revoked);
    assert_false(res.timed_out);
    assert_int_equal(res.term_signal, SIGTERM);
    assert_true(services_ >= 2);
}

static void test_run_spawn_failure(void **state)
{
    (void)state;
    char *argv[] = {"/no/such/task", NULL};
    extern char **environ;
    struct task_io io = {.sig_fd = sigp[0], .grace_ms = 1000};
    struct task_result res;
    int rc = task_run(argv, environ, "x", 1, &io, &res);
    if (rc == 0) {
        /* Under valgrind posix_spawn cannot report exec errors; the child exits 127 instead
         * (as sh does for a missing command), which the worker treats as a failed task. */
        assert_int_equal(res.exit_code, 127);
        return;
    }
    assert_int_equal(rc, JP_ESPAWN);
    assert_int_equal(res.spawn_errno, ENOENT);
}

/* Readiness: the task writes to a FIFO once its trap is set; the service hook (polled on the
 * FIFO like the worker polls the broker socket) then "delivers" the signal through the pipe. */
struct ready_ctx {
    int fd;
    unsigned char sig;
    int calls;
};

static int ready_fd(void *ctx) { return ((struct ready_ctx *)ctx)->fd; }

static bool ready_service(void *ctx)
{
    struct ready_ctx *r = ctx;
    char buf[16];
    r->calls++;
    if (r->sig && read(r->fd, buf, sizeof buf) > 0) {
        assert_int_equal(write(sigp[1], &r->sig, 1), 1);
        r->sig = 0;
    }
    return true;
}

static int run_until_ready_then_signal(const char *trap, int sig, int64_t grace_ms,
                                       struct task_result *res)
{
    char dir[] = "/tmp/jobpool-test-fifo.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[64], script[256];
    snprintf(fifo, sizeof fifo, "%s/ready", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    struct ready_ctx r = {.fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC),
                          .sig = (unsigned char)sig};
    assert_true(r.fd >= 0);
    snprintf(script, sizeof script, "%s; echo ready > %s; while :; do sleep 0.05; done", trap,
             fifo);
    char *argv[] = {"sh", "-c", script, NULL};
    extern char **environ;
    struct task_io io = {.sig_fd = sigp[0], .grace_ms = grace_ms, .service_fd = ready_fd,
                         .service = ready_service, .ctx = &r};
    int rc = task_run(argv, environ, NULL, 0, &io, res);
    assert_true(r.calls >= 1);
    close(r.fd);
    unlink(fifo);
    rmdir(dir);
    return rc;
}

static void test_run_forwards_sigterm(void **state)
{
    (void)state;
    struct task_result res;
    assert_int_equal(run_until_ready_then_signal("trap 'exit 0' TERM", SIGTERM, 60000, &res), 0);
    assert_int_equal(res.forwarded, SIGTERM);
    assert_false(res.grace_expired);
    assert_int_equal(res.exit_code, 0);
}

static void test_run_grace_expires(void **state)
{
    (void)state;
    struct task_result res;
    /* Ignores the signal; a zero grace means SIGKILL right after forwarding. */
    assert_int_equal(run_until_ready_then_signal("trap '' INT TERM", SIGINT, 0, &res), 0);
    assert_int_equal(res.forwarded, SIGINT);
    assert_true(res.grace_expired);
    assert_int_equal(res.term_signal, SIGKILL);
    assert_int_equal(res.exit_code, 128 + SIGKILL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_strips_credentials),
        cmocka_unit_test(test_env_add_rules),
        cmocka_unit_test(test_header_var),
        cmocka_unit_test(test_check_command),
        cmocka_unit_test(test_run_exit_codes),
        cmocka_unit_test(test_run_body_on_stdin),
        cmocka_unit_test(test_run_closes_descriptors),
        cmocka_unit_test(test_run_task_timeout),
        cmocka_unit_test(test_run_revoked),
        cmocka_unit_test(test_run_spawn_failure),
        cmocka_unit_test(test_run_forwards_sigterm),
        cmocka_unit_test(test_run_grace_expires),
    };
    return cmocka_run_group_tests(tests, setup_pipe, teardown_pipe);
}
