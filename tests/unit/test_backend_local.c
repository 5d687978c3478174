/* test_backend_local.c: real child processes: start, reap, outcomes, waste, env, shutdown. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    assert_int_equal(b->start(b, &p, 3, 3, &started), 0);
    assert_int_equal(started, 3);
    setenv("CODE", "3", 1);
    assert_int_equal(b->start(b, &p, 1, 1, &started), 0);
    unsetenv("CODE");
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
    /* Removing a finished worker drops it from the list. */
    assert_int_equal(b->remove(b, &p, &l.v[0]), 0);
    assert_int_equal(b->list(b, &p, &l), 0);
    assert_int_equal(l.n, 3);
    backend_list_free(&l);
    backend_free(b);
}

static void test_env_and_waste(void **state)
{
    (void)state;
    char out[128], script[512];
    snprintf(out, sizeof out, "%s/env.txt", tmpdir);
    snprintf(script, sizeof script,
             "env | grep '^JOBPOOL_' | sort > %s; printf no-task > \"$JOBPOOL_RESULT_FILE\"", out);
    char *argv[] = {"sh", "-c", script, NULL};
    struct cfg c;
    struct cfg_pool p;
    make_cfg(&c, &p, argv, 3);
    struct backend *b;
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    int started;
    assert_int_equal(b->start(b, &p, 1, 1, &started), 0);
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
    free(env);
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
    assert_int_equal(b->start(b, &p, 1, 1, &started), 0);
    struct backend_list l = {0};
    wait_idle(b, &p, &l);
    char *args = NULL;
    assert_int_equal(util_read_file(out, 4096, true, &args), 0);
    assert_string_equal(args, "--idle-timeout=2s --max-attempts=3 -- true");
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
    assert_int_equal(b->start(b, &p, 1, 1, &started), 0);
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
    assert_int_equal(b->start(b, &p, 2, 2, &started), JP_ESPAWN);
    assert_int_equal(started, 0);
    backend_free(b);

    char *slow[] = {"sleep", "30", NULL};
    make_cfg(&c, &p, slow, 2);
    assert_int_equal(backend_local_new(&c, NULL, &b), 0);
    assert_int_equal(b->start(b, &p, 2, 2, &started), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes),
        cmocka_unit_test(test_env_and_waste),
        cmocka_unit_test(test_worker_flags),
        cmocka_unit_test(test_pending_until_consuming),
        cmocka_unit_test(test_spawn_failure_and_running_not_removed),
        cmocka_unit_test(test_missing_credentials),
    };
    return cmocka_run_group_tests_name("backend_local", tests, setup, teardown);
}
