/* test_backend_local.c: real child processes: start, reap, outcomes, waste, env, shutdown. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "err.h"
#include "util.h"

static char tmpdir[64];

static void make_cfg(struct cfg *c, struct cfg_pool *p, char **argv, size_t argc)
{
    memset(c, 0, sizeof *c);
    memset(p, 0, sizeof *p);
    p->name = "p1";
    p->queue = "q1";
    p->vhost = "/";
    p->max_active = 10;
    p->max_attempts = 3;
    p->idle_timeout_ms = 2000;
    p->worker_command = argv;
    p->worker_argc = argc;
    c->pools = p;
    c->npools = 1;
    c->rabbitmq.amqp_url = "amqp://127.0.0.1:5672";
    c->rabbitmq.username.env = "JP_TEST_USER";
    c->rabbitmq.password.env = "JP_TEST_PASS";
}

/* Observe until no worker of pool is active, at most ~10 s. */
static void wait_idle(struct backend *b, const struct cfg_pool *p, struct backend_list *l)
{
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(b->observe(b), 0);
        assert_int_equal(b->list(b, p, l), 0);
        size_t active = 0;
        for (size_t k = 0; k < l->n; k++)
            if (l->v[k].w.state == SCALE_RUNNING || l->v[k].w.state == SCALE_PENDING) active++;
        if (!active) return;
        usleep(10000);
    }
    fail_msg("workers still running after 10 s");
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/jp-test-bl.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    setenv("JP_TEST_USER", "alice", 1);
    setenv("JP_TEST_PASS", "s3cr3t/pw", 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_outcomes(void **state)
{
    (void)state;
    char *argv[] = {"sh", "-c", "exit ${CODE:-0}", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started = 0;
    assert_int_equal(b->start(b, &p, NULL, 3, 3, &started), 0);
    assert_int_equal(started, 3);
    struct cfg_env_var code = {.name = "CODE", .value = "3"};
    p.worker_env = &code;
    p.worker_nenv = 1;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    struct backend_list l = {0};
    wait_idle(b, &p, &l);
    assert_int_equal(l.n, 4);
    int ok = 0, failed = 0;
    for (size_t k = 0; k < l.n; k++) {
        assert_true(l.v[k].w.finished_ms >= l.v[k].w.created_ms);
        if (l.v[k].w.state == SCALE_SUCCEEDED) ok++;
        if (l.v[k].w.state == SCALE_FAILED) {
            failed++;
            assert_int_equal(l.v[k].exit_code, 3);
        }
    }
    assert_int_equal(ok, 3);
    assert_int_equal(failed, 1);
    struct backend_stats st;
    b->stats(b, &p, &st);
    assert_int_equal(st.started, 4);
    assert_int_equal(st.succeeded, 3);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.wasted, 0);
    /* Removing a finished worker drops it from the list. A listed worker's id is borrowed:
     * it stays valid, and keeps naming its worker, until the next observe, though removes
     * move the backend's own table under it (ASan and valgrind watch this). */
    char first[32];
    snprintf(first, sizeof first, "%s", l.v[0].id);
    assert_int_equal(b->remove(b, &p, &l.v[0]), 0);
    struct backend_list l2 = {0};
    assert_int_equal(b->list(b, &p, &l2), 0);
    assert_int_equal(l2.n, 3);
    for (size_t k = 1; k < l.n; k++) assert_int_equal(b->remove(b, &p, &l.v[k]), 0);
    assert_string_equal(l.v[0].id, first);
    assert_int_equal(b->remove(b, &p, &l.v[0]), JP_ENOTFOUND);
    assert_int_equal(b->observe(b), 0);
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.n, 0);
    backend_list_free(&l2);
    backend_list_free(&l);
    backend_free(b);
}

static void test_env_and_waste(void **state)
{
    (void)state;
    char out[128], script[512];
    snprintf(out, sizeof out, "%s/env.txt", tmpdir);
    snprintf(script, sizeof script,
             "env | sort > %s; printf no-task > \"$JOBPOOL_RESULT_FILE\"", out);
    char *argv[] = {"sh", "-c", script, NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    /* The controller's own environment holds secrets: only the allow-list reaches a worker. */
    setenv("JP_TEST_CTL_SECRET", "hush", 1);
    setenv("LC_TIME", "C", 1);
    setenv("JOBPOOL_LOG_LEVEL", "debug", 1);
    setenv("JP_TEST_REF", "from-ref", 1);
    struct cfg_env_var wenv[] = {{.name = "TASK_OUT", .value = "/tmp/x y"},
                                 {.name = "FROM_REF", .ref = {.env = "JP_TEST_REF"}},
                                 {.name = "LC_TIME", .value = "pool-wins"}};
    p.worker_env = wenv;
    p.worker_nenv = 3;
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    struct backend_list l = {0};
    wait_idle(b, &p, &l);
    assert_int_equal(l.n, 1);
    assert_true(l.v[0].wasted);
    struct backend_stats st;
    b->stats(b, &p, &st);
    assert_int_equal(st.wasted, 1);
    char *env = NULL;
    assert_int_equal(util_read_file(out, 65536, false, &env), 0);
    assert_non_null(strstr(env, "JOBPOOL_POOL=p1\n"));
    assert_non_null(strstr(env, "JOBPOOL_QUEUE=q1\n"));
    assert_non_null(strstr(env, "JOBPOOL_VHOST=/\n"));
    /* credentials are percent-encoded into the URL handed to the worker */
    assert_non_null(strstr(env, "JOBPOOL_AMQP_URL=amqp://alice:s3cr3t%2Fpw@127.0.0.1:5672\n"));
    assert_non_null(strstr(env, "\nPATH="));
    assert_non_null(strstr(env, "TASK_OUT=/tmp/x y\n"));
    assert_non_null(strstr(env, "FROM_REF=from-ref\n"));
    assert_non_null(strstr(env, "LC_TIME=pool-wins\n"));
    assert_null(strstr(env, "LC_TIME=C\n"));
    assert_null(strstr(env, "hush"));
    assert_null(strstr(env, "JP_TEST_"));
    assert_null(strstr(env, "JOBPOOL_LOG_LEVEL"));
    free(env);
    unsetenv("JP_TEST_CTL_SECRET");
    unsetenv("LC_TIME");
    unsetenv("JOBPOOL_LOG_LEVEL");
    backend_list_free(&l);
    backend_free(b);
}

static void test_worker_flags(void **state)
{
    (void)state;
    char out[128];
    snprintf(out, sizeof out, "%s/args.txt", tmpdir);
    /* A stand-in "jobpool-worker" that records its arguments. */
    char fake[128], body[256];
    snprintf(fake, sizeof fake, "%s/fake-worker", tmpdir);
    snprintf(body, sizeof body, "#!/bin/sh\necho \"$@\" > %s\n", out);
    FILE *f = fopen(fake, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    assert_int_equal(chmod(fake, 0755), 0);
    char *argv[] = {"jobpool-worker", "--", "true", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, fake, &b), 0);
    int started;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    struct backend_list l = {0};
    wait_idle(b, &p, &l);
    char *args = NULL;
    assert_int_equal(util_read_file(out, 4096, true, &args), 0);
    assert_string_equal(args, "--idle-timeout=2s --max-attempts=3 -- true");
    free(args);
    /* A pool's taskTimeout goes along when set. */
    p.task_timeout_ms = 90000;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    wait_idle(b, &p, &l);
    assert_int_equal(util_read_file(out, 4096, true, &args), 0);
    assert_string_equal(args, "--idle-timeout=2s --max-attempts=3 --task-timeout=90s -- true");
    free(args);
    backend_list_free(&l);
    backend_free(b);
}

/* A jobpool-worker is pending until it reports that the broker counts it as a consumer. */
static void test_pending_until_consuming(void **state)
{
    (void)state;
    char fake[128], gate[128], body[512];
    snprintf(fake, sizeof fake, "%s/fake-consumer", tmpdir);
    snprintf(gate, sizeof gate, "%s/gate", tmpdir);
    snprintf(body, sizeof body,
             "#!/bin/sh\nwhile [ ! -e %s ]; do sleep 0.01; done\n"
             "printf waiting > \"$JOBPOOL_RESULT_FILE\"\nsleep 0.3\n", gate);
    FILE *f = fopen(fake, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    assert_int_equal(chmod(fake, 0755), 0);
    char *argv[] = {"jobpool-worker", "--", "true", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, fake, &b), 0);
    assert_int_equal(b->start_lag_ms, 0);
    int started;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    struct backend_list l = {0};
    assert_int_equal(b->observe(b), 0);
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.v[0].w.state, SCALE_PENDING);
    assert_int_equal(l.v[0].w.started_ms, 0);
    f = fopen(gate, "w");
    assert_non_null(f);
    fclose(f);
    for (int i = 0; i < 500 && l.v[0].w.state == SCALE_PENDING; i++) {
        usleep(10000);
        assert_int_equal(b->observe(b), 0);
        assert_int_equal(b->list(b, &p, &l), 0);
    }
    assert_int_equal(l.v[0].w.state, SCALE_RUNNING);
    assert_true(l.v[0].w.started_ms >= l.v[0].w.created_ms);
    wait_idle(b, &p, &l);
    assert_int_equal(l.v[0].w.state, SCALE_SUCCEEDED);
    assert_false(l.v[0].wasted);
    backend_list_free(&l);
    backend_free(b);
}

static void test_spawn_failure_and_running_not_removed(void **state)
{
    (void)state;
    char *bad[] = {"/nonexistent/jobpool-task", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, bad, 1);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started = -1;
    assert_int_equal(b->start(b, &p, NULL, 2, 2, &started), JP_ESPAWN);
    assert_int_equal(started, 0);
    backend_free(b);

    char *slow[] = {"sleep", "30", NULL};
    make_cfg(&c, &p, slow, 2);
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    assert_int_equal(b->start(b, &p, NULL, 2, 2, &started), 0);
    struct backend_list l = {0};
    assert_int_equal(b->observe(b), 0);
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].w.state, SCALE_RUNNING);
    assert_int_equal(b->remove(b, &p, &l.v[0]), JP_EINVAL);
    /* Shutdown sends SIGTERM and reaps: nothing is left running. */
    b->shutdown(b, 5000);
    assert_int_equal(b->list(b, &p, &l), 0);
    for (size_t k = 0; k < l.n; k++) {
        assert_int_equal(l.v[k].w.state, SCALE_FAILED);
        assert_int_equal(l.v[k].exit_code, 128 + 15);
    }
    backend_list_free(&l);
    backend_free(b);
}

static void test_missing_credentials(void **state)
{
    (void)state;
    char *argv[] = {"true", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 1);
    c.rabbitmq.password.env = "JP_TEST_UNSET_VARIABLE";
    struct backend *b = (struct backend *)1;
    assert_int_not_equal(backend_local_new(&c, NULL, &b), 0);
    assert_null(b);
}

/* The result files live in $TMPDIR/jobpool-local.XXXXXX (a trailing '/' or not), removed at
 * destroy; a relative TMPDIR is ignored for /tmp; a TMPDIR that cannot hold the directory
 * fails the backend's creation. */
static void test_tmpdir(void **state)
{
    (void)state;
    char base[128], out[160], script[256], got[512] = "";
    snprintf(base, sizeof base, "%s/tmp with space/", tmpdir);
    assert_int_equal(mkdir(base, 0700), 0);
    snprintf(out, sizeof out, "%s/result-path.txt", tmpdir);
    snprintf(script, sizeof script, "printf %%s \"$JOBPOOL_RESULT_FILE\" > '%s'", out);
    char *argv[] = {"sh", "-c", script, NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    char *old = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
    setenv("TMPDIR", base, 1);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started = 0;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    assert_int_equal(started, 1);
    struct backend_list l = {0};
    wait_idle(b, &p, &l);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    assert_non_null(fgets(got, sizeof got, f));
    fclose(f);
    char want[192];
    snprintf(want, sizeof want, "%s/tmp with space/jobpool-local.", tmpdir);
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("JOBPOOL_RESULT_FILE %s is not under %s", got, want);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", got);
    *strrchr(dir, '/') = '\0';
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    backend_list_free(&l);
    backend_free(b);
    assert_int_not_equal(stat(dir, &st), 0); /* removed with the backend */
    assert_int_equal(rmdir(base), 0);        /* and nothing else was left in TMPDIR */

    setenv("TMPDIR", "relative/dir", 1);     /* ignored, as mktemp(1) would not use it */
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    backend_free(b);

    snprintf(base, sizeof base, "%s/missing", tmpdir);
    setenv("TMPDIR", base, 1);
    b = (struct backend *)1;
    assert_int_equal(backend_local_new(&c, NULL, &b), JP_EIO);
    assert_null(b);

    char longdir[400];
    memset(longdir, 'a', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = '\0';
    setenv("TMPDIR", longdir, 1);
    b = (struct backend *)1;
    assert_int_equal(backend_local_new(&c, NULL, &b), JP_EINVAL);
    assert_null(b);
    if (old) setenv("TMPDIR", old, 1);
    else unsetenv("TMPDIR");
    free(old);
}

/* TLS files reach a worker as JOBPOOL_CA_FILE, JOBPOOL_CERT_FILE and JOBPOOL_KEY_FILE; a pool
 * whose worker.env sets the certificate or the key replaces the pair (never one of each). */
static void test_env_tls(void **state)
{
    (void)state;
    char out[128], script[256];
    snprintf(out, sizeof out, "%s/env-tls.txt", tmpdir);
    snprintf(script, sizeof script, "env | grep -E '^JOBPOOL_(CA|CERT|KEY)_FILE=' | sort > %s", out);
    char *argv[] = {"sh", "-c", script, NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    c.rabbitmq.amqp_url = "amqps://localhost:5671";
    c.rabbitmq.ca_file = "/etc/mq/ca.pem";
    c.rabbitmq.cert_file = "/etc/mq/client.pem";
    c.rabbitmq.key_file = "/etc/mq/client.key";
    for (int round = 0; round < 2; round++) {
        struct cfg_env_var own = {.name = "JOBPOOL_KEY_FILE", .value = "/pool/key.pem"};
        p.worker_env = round ? &own : NULL;
        p.worker_nenv = round ? 1 : 0;
        struct backend *b;
        assert_int_equal(backend_local_new(&c, NULL, &b), 0);
        int started;
        assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
        struct backend_list l = {0};
        wait_idle(b, &p, &l);
        char *env = NULL;
        assert_int_equal(util_read_file(out, 65536, false, &env), 0);
        char *files = strstr(env, "JOBPOOL_CA_FILE=");
        assert_non_null(files);
        if (!round)
            assert_string_equal(files, "JOBPOOL_CA_FILE=/etc/mq/ca.pem\n"
                                       "JOBPOOL_CERT_FILE=/etc/mq/client.pem\n"
                                       "JOBPOOL_KEY_FILE=/etc/mq/client.key\n");
        else
            assert_string_equal(files, "JOBPOOL_CA_FILE=/etc/mq/ca.pem\n"
                                       "JOBPOOL_KEY_FILE=/pool/key.pem\n");
        free(env);
        backend_list_free(&l);
        backend_free(b);
    }
}

/* No descriptor of the controller reaches a worker: not one it opened without O_CLOEXEC. */
static void test_descriptors_closed(void **state)
{
    (void)state;
    char out[128], script[512];
    snprintf(out, sizeof out, "%s/fds.txt", tmpdir);
    int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC, like libcurl's sockets */
    assert_true(leak > 2);
    /* ls lists the shell's descriptors from outside, so its own directory handle is not one. */
    snprintf(script, sizeof script, "exec > %s; ls /proc/$$/fd", out);
    char *argv[] = {"sh", "-c", script, NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    struct backend_list l = {0};
    wait_idle(b, &p, &l);
    close(leak);
    char *fds = NULL;
    assert_int_equal(util_read_file(out, 4096, false, &fds), 0);
    assert_string_equal(fds, "0\n1\n2\n");
    free(fds);
    backend_list_free(&l);
    backend_free(b);
}

/* worker.env references are read at each spawn; a missing one fails that start, with no child. */
static void test_env_reference_missing(void **state)
{
    (void)state;
    char *argv[] = {"true", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 1);
    struct cfg_env_var wenv[] = {{.name = "TOKEN", .ref = {.env = "JP_TEST_UNSET_TOKEN"}}};
    p.worker_env = wenv;
    p.worker_nenv = 1;
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started = -1;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), JP_ENOTFOUND);
    assert_int_equal(started, 0);
    struct backend_stats st;
    b->stats(b, &p, &st);
    assert_int_equal(st.started, 0);
    backend_free(b);
}

/* A jobpool-worker that took its message and exited between two observes still has a start,
 * so the decision counts it as "unseen" (docs/scaling.md) instead of forgetting it. */
static void test_unobserved_worker_has_start(void **state)
{
    (void)state;
    char fake[128];
    snprintf(fake, sizeof fake, "%s/jobpool-worker", tmpdir);
    FILE *f = fopen(fake, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nprintf waiting > \"$JOBPOOL_RESULT_FILE\"\nsleep 0.05\n"
          "printf task > \"$JOBPOOL_RESULT_FILE\"\n", f);
    fclose(f);
    assert_int_equal(chmod(fake, 0755), 0);
    char *argv[] = {fake, "--", "true", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    struct backend_list l = {0};
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.v[0].w.state, SCALE_PENDING);
    /* Let it finish unobserved. */
    char flag[160];
    snprintf(flag, sizeof flag, "/proc/%s/status", l.v[0].id + 4);
    for (int i = 0; i < 1000; i++) {
        char *st = NULL;
        bool zombie = util_read_file(flag, 4096, false, &st) == 0 && strstr(st, "State:\tZ");
        free(st);
        if (zombie) break;
        usleep(10000);
    }
    assert_int_equal(b->observe(b), 0);
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.v[0].w.state, SCALE_SUCCEEDED);
    assert_true(l.v[0].w.started_ms >= l.v[0].w.created_ms);
    assert_true(l.v[0].w.started_ms <= l.v[0].w.finished_ms);
    assert_false(l.v[0].wasted);
    backend_list_free(&l);
    backend_free(b);

    /* One that exited before it ever reported took no message: no start. */
    char *early[] = {fake, NULL};
    f = fopen(fake, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nexit 2\n", f);
    fclose(f);
    make_cfg(&c, &p, early, 1);
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    wait_idle(b, &p, &l);
    assert_int_equal(l.v[0].w.state, SCALE_FAILED);
    assert_int_equal(l.v[0].w.started_ms, 0);
    backend_list_free(&l);
    backend_free(b);
}

/* waitpid interrupted by a signal (EINTR) must not hand finish() an unset status. The seam
 * makes the first blocking wait fail with EINTR after scribbling "exited 0" into the status, as
 * an unset variable might hold. */
static int eintr_left;
pid_t __real_waitpid(pid_t pid, int *status, int options);
pid_t __wrap_waitpid(pid_t pid, int *status, int options);
pid_t __wrap_waitpid(pid_t pid, int *status, int options)
{
    if (options == 0 && eintr_left > 0) {
        eintr_left--;
        *status = 0;
        errno = EINTR;
        return -1;
    }
    return __real_waitpid(pid, status, options);
}

static void test_shutdown_waitpid_eintr(void **state)
{
    (void)state;
    char *argv[] = {"sh", "-c", "trap '' TERM; sleep 30", NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started;
    assert_int_equal(b->start(b, &p, NULL, 1, 1, &started), 0);
    usleep(100000); /* let the shell install its trap */
    eintr_left = 1;
    b->shutdown(b, 200); /* SIGTERM is ignored: SIGKILL, then the interrupted wait */
    assert_int_equal(eintr_left, 0);
    struct backend_list l = {0};
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.v[0].w.state, SCALE_FAILED);
    assert_int_equal(l.v[0].exit_code, 128 + 9);
    backend_list_free(&l);
    backend_free(b);
}

/* A pool's list is sized to its workers, not to the next power of two, and given back when
 * the pool shrinks to a quarter of it: every pool's list lives through the whole pass. */
static void test_list_reserve(void **state)
{
    (void)state;
    struct backend_list l = {0};
    assert_int_equal(backend_list_reserve(&l, 50), 0);
    assert_int_equal(l.cap, 50);
    struct backend_worker w;
    memset(&w, 0, sizeof w);
    struct backend_worker *v = l.v;
    for (int i = 0; i < 50; i++) assert_int_equal(backend_list_push(&l, &w), 0);
    assert_ptr_equal(l.v, v); /* no growth: the room was there */
    assert_int_equal(l.cap, 50);
    l.n = 0;
    assert_int_equal(backend_list_reserve(&l, 20), 0);
    assert_int_equal(l.cap, 50); /* not worth moving */
    assert_int_equal(backend_list_reserve(&l, 100), 0);
    assert_int_equal(l.cap, 100);
    assert_int_equal(backend_list_reserve(&l, 10), 0);
    assert_int_equal(l.cap, 16); /* shrunk, but never below push's first step */
    assert_int_equal(backend_list_reserve(&l, 64), 0);
    assert_int_equal(l.cap, 64);
    backend_list_free(&l);
}

/* A list that is a view of a backend's table (the kube backend's lists) is never grown or
 * freed through the list: push and reserve start an array of the caller's own, and the table
 * is left as it was (ASan and valgrind would see a free or realloc of it). */
static void test_list_view(void **state)
{
    (void)state;
    struct backend_worker table[3];
    memset(table, 0, sizeof table);
    table[0].id = "a";
    table[1].id = "b";
    table[2].id = "c";
    struct backend_list l = {0};
    struct backend_worker x = {.id = "x"};
    assert_int_equal(backend_list_push(&l, &x), 0); /* owned first: the view frees it */
    backend_list_view(&l, table + 1, 2);
    assert_ptr_equal(l.v, table + 1);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[1].id, "c");
    assert_int_equal(backend_list_push(&l, &x), 0);
    assert_int_equal(l.n, 1);
    assert_ptr_not_equal(l.v, table + 1);
    assert_string_equal(l.v[0].id, "x");
    assert_string_equal(table[1].id, "b");
    backend_list_view(&l, table, 3);
    assert_int_equal(backend_list_reserve(&l, 4), 0);
    assert_int_equal(l.n, 0);
    assert_true(l.cap >= 4);
    backend_list_view(&l, table, 3);
    backend_list_free(&l);
    assert_null(l.v);
    assert_int_equal(l.n, 0);
    assert_string_equal(table[2].id, "c");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_view),
        cmocka_unit_test(test_outcomes),
        cmocka_unit_test(test_env_and_waste),
        cmocka_unit_test(test_worker_flags),
        cmocka_unit_test(test_pending_until_consuming),
        cmocka_unit_test(test_spawn_failure_and_running_not_removed),
        cmocka_unit_test(test_missing_credentials),
        cmocka_unit_test(test_descriptors_closed),
        cmocka_unit_test(test_tmpdir),
        cmocka_unit_test(test_env_tls),
        cmocka_unit_test(test_env_reference_missing),
        cmocka_unit_test(test_unobserved_worker_has_start),
        cmocka_unit_test(test_shutdown_waitpid_eintr),
        cmocka_unit_test(test_list_reserve),
    };
    return cmocka_run_group_tests_name("backend_local", tests, setup, teardown);
}
