/* test_metrics.c: /metrics content, probes and hostile clients, over real loopback sockets. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/* ---- a tiny blocking HTTP client for the tests ---------------------------------------------- */

static int connect_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 15};   /* a hung server fails the test instead of hanging it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read until EOF or error into buf (NUL-terminated); returns bytes read. */
static size_t recv_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return len;
}

/* Send raw bytes, read the whole answer; returns the status code (0 when none came back). */
static int raw_request(uint16_t port, const char *req, size_t reqlen, char *resp, size_t cap)
{
    int fd = connect_port(port);
    bool sent = send_all(fd, req, reqlen);
    size_t n = recv_all(fd, resp, cap);
    close(fd);
    int status = 0;
    (void)sent;
    if (n >= 12 && strncmp(resp, "HTTP/1.", 7) == 0) status = (int)strtol(resp + 9, NULL, 10);
    return status;
}

/* One request with Connection: close. *body points into resp, after the header. */
static int request(uint16_t port, const char *method, const char *path, char *resp, size_t cap,
                   const char **body)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method,
                     path);
    int status = raw_request(port, req, (size_t)n, resp, cap);
    if (body) {
        const char *b = strstr(resp, "\r\n\r\n");
        *body = b ? b + 4 : resp + strlen(resp);
    }
    return status;
}

static _Atomic int64_t fake_now;   /* written by the test, read by the listener thread */
static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* A fixed wall clock, so jobpool_last_tick_timestamp_seconds has a known value. */
static int64_t fake_wall(void *arg)
{
    (void)arg;
    return 1700000000250;
}

static struct metrics *start(unsigned timeout_s, int64_t poll_ms)
{
    struct metrics_opts o = {.poll_interval_ms = poll_ms, .version = "1.2.3",
                             .request_timeout_s = timeout_s, .clock_ms = fake_clock,
                             .wall_clock_ms = fake_wall,
                             .max_connections = 64};
    struct metrics *m = NULL;
    assert_int_equal(metrics_new_opts("127.0.0.1:0", &o, &m), 0);
    assert_non_null(m);
    assert_true(metrics_port(m) > 0);
    return m;
}

/* ---- content ------------------------------------------------------------------------------- */

/* A known sequence of events, and the exact text that must come out. */
static void feed_known_sequence(struct metrics *m)
{
    struct metrics_pool_state s = {.depth_ok = true, .messages_ready = 40,
                                   .messages_unacked = 17, .depth_age_seconds = 4.6,
                                   .workers_ok = true, .workers = {3, 17, 10, 2},
                                   .oldest_pending_seconds = 12.5, .max_active = 50,
                                   .pending_timeout_seconds = 300};
    metrics_pool_publish(m, "thumbs", &s);
    struct metrics_pool_state t = {.depth_ok = false, .workers_ok = true, .workers = {0, 0, 0, 1},
                                   .max_active = 5, .pending_timeout_seconds = 0.5};
    metrics_pool_publish(m, "mail", &t);
    metrics_count_started(m, "thumbs", 12);
    metrics_count_started(m, "thumbs", 8);
    metrics_count_started(m, "thumbs", -5);   /* ignored */
    metrics_count_deleted(m, "thumbs", METRICS_DEL_SUCCEEDED_HISTORY, 4);
    metrics_count_deleted(m, "thumbs", METRICS_DEL_PENDING_TIMEOUT, 1);
    metrics_count_deleted(m, "mail", METRICS_DEL_FAILED_HISTORY, 2);
    metrics_count_wasted(m, "thumbs", 3);
    metrics_count_error(m, "thumbs", METRICS_SRC_RABBITMQ, JP_ETIMEOUT);
    metrics_count_error(m, "thumbs", METRICS_SRC_RABBITMQ, JP_ETIMEOUT);
    metrics_count_error(m, "mail", METRICS_SRC_KUBERNETES, JP_EINVALID);
    metrics_count_error(m, NULL, METRICS_SRC_CONFIG, JP_ECONFIG);
    metrics_observe_reconcile(m, "thumbs", 0.004);
    metrics_observe_reconcile(m, "thumbs", 0.005);    /* on the bucket boundary: le="0.005" */
    metrics_observe_reconcile(m, "thumbs", 0.3);
    metrics_observe_reconcile(m, "thumbs", 45.0);     /* only in +Inf */
    metrics_observe_task(m, "thumbs", 3, 0.4);
    metrics_observe_task(m, "thumbs", -1, 7200);      /* wait unknown; duration on a boundary */
    metrics_observe_task(m, "thumbs", 40000, -1);     /* wait only in +Inf; duration unknown */
    metrics_set_leader(m, true);
}

static const char expected_text[] =
    "# HELP jobpool_build_info Build information; the value is always 1.\n"
    "# TYPE jobpool_build_info gauge\n"
    "jobpool_build_info{version=\"1.2.3\"} 1\n"
    "# HELP jobpool_leader 1 while this replica is the leader (or leader election is off), else 0.\n"
    "# TYPE jobpool_leader gauge\n"
    "jobpool_leader 1\n"
    "# HELP jobpool_last_tick_timestamp_seconds Unix time of the reconcile loop's last tick (followers tick too).\n"
    "# TYPE jobpool_last_tick_timestamp_seconds gauge\n"
    "jobpool_last_tick_timestamp_seconds 1700000000.25\n"
    "# HELP jobpool_queue_messages_ready Messages ready for delivery in the pool's queues.\n"
    "# TYPE jobpool_queue_messages_ready gauge\n"
    "jobpool_queue_messages_ready{pool=\"thumbs\"} 40\n"
    "# HELP jobpool_queue_messages_unacked Messages delivered but not yet acknowledged.\n"
    "# TYPE jobpool_queue_messages_unacked gauge\n"
    "jobpool_queue_messages_unacked{pool=\"thumbs\"} 17\n"
    "# HELP jobpool_queue_depth_age_seconds Age of the queue depth sample the last decision used.\n"
    "# TYPE jobpool_queue_depth_age_seconds gauge\n"
    "jobpool_queue_depth_age_seconds{pool=\"thumbs\"} 4.6\n"
    "# HELP jobpool_workers Workers of the pool that exist now, by state.\n"
    "# TYPE jobpool_workers gauge\n"
    "jobpool_workers{pool=\"thumbs\",state=\"pending\"} 3\n"
    "jobpool_workers{pool=\"thumbs\",state=\"running\"} 17\n"
    "jobpool_workers{pool=\"thumbs\",state=\"succeeded\"} 10\n"
    "jobpool_workers{pool=\"thumbs\",state=\"failed\"} 2\n"
    "jobpool_workers{pool=\"mail\",state=\"pending\"} 0\n"
    "jobpool_workers{pool=\"mail\",state=\"running\"} 0\n"
    "jobpool_workers{pool=\"mail\",state=\"succeeded\"} 0\n"
    "jobpool_workers{pool=\"mail\",state=\"failed\"} 1\n"
    "# HELP jobpool_queue_depth_ok 1 when the last read of the pool's queue depth succeeded, else 0 (the pool then holds: no starts, no deletes).\n"
    "# TYPE jobpool_queue_depth_ok gauge\n"
    "jobpool_queue_depth_ok{pool=\"thumbs\"} 1\n"
    "jobpool_queue_depth_ok{pool=\"mail\"} 0\n"
    "# HELP jobpool_workers_oldest_pending_seconds Age of the pool's oldest pending worker (created, not running yet); 0 when none.\n"
    "# TYPE jobpool_workers_oldest_pending_seconds gauge\n"
    "jobpool_workers_oldest_pending_seconds{pool=\"thumbs\"} 12.5\n"
    "jobpool_workers_oldest_pending_seconds{pool=\"mail\"} 0\n"
    "# HELP jobpool_pool_max_active The pool's maxActive setting.\n"
    "# TYPE jobpool_pool_max_active gauge\n"
    "jobpool_pool_max_active{pool=\"thumbs\"} 50\n"
    "jobpool_pool_max_active{pool=\"mail\"} 5\n"
    "# HELP jobpool_pool_pending_timeout_seconds The pool's pendingTimeout setting.\n"
    "# TYPE jobpool_pool_pending_timeout_seconds gauge\n"
    "jobpool_pool_pending_timeout_seconds{pool=\"thumbs\"} 300\n"
    "jobpool_pool_pending_timeout_seconds{pool=\"mail\"} 0.5\n"
    "# HELP jobpool_workers_started_total Workers started.\n"
    "# TYPE jobpool_workers_started_total counter\n"
    "jobpool_workers_started_total{pool=\"thumbs\"} 20\n"
    "jobpool_workers_started_total{pool=\"mail\"} 0\n"
    "# HELP jobpool_workers_deleted_total Workers deleted by the controller, by reason.\n"
    "# TYPE jobpool_workers_deleted_total counter\n"
    "jobpool_workers_deleted_total{pool=\"thumbs\",reason=\"succeeded_history\"} 4\n"
    "jobpool_workers_deleted_total{pool=\"thumbs\",reason=\"failed_history\"} 0\n"
    "jobpool_workers_deleted_total{pool=\"thumbs\",reason=\"pending_timeout\"} 1\n"
    "jobpool_workers_deleted_total{pool=\"thumbs\",reason=\"orphaned\"} 0\n"
    "jobpool_workers_deleted_total{pool=\"mail\",reason=\"succeeded_history\"} 0\n"
    "jobpool_workers_deleted_total{pool=\"mail\",reason=\"failed_history\"} 2\n"
    "jobpool_workers_deleted_total{pool=\"mail\",reason=\"pending_timeout\"} 0\n"
    "jobpool_workers_deleted_total{pool=\"mail\",reason=\"orphaned\"} 0\n"
    "# HELP jobpool_workers_wasted_total Workers that exited after finding no message within idleTimeout.\n"
    "# TYPE jobpool_workers_wasted_total counter\n"
    "jobpool_workers_wasted_total{pool=\"thumbs\"} 3\n"
    "jobpool_workers_wasted_total{pool=\"mail\"} 0\n"
    "# HELP jobpool_errors_total Errors by the system that reported them and the error code.\n"
    "# TYPE jobpool_errors_total counter\n"
    "jobpool_errors_total{pool=\"thumbs\",source=\"rabbitmq\",code=\"timeout\"} 2\n"
    "jobpool_errors_total{pool=\"mail\",source=\"kubernetes\",code=\"invalid\"} 1\n"
    "jobpool_errors_total{source=\"config\",code=\"config\"} 1\n"
    "# HELP jobpool_reconcile_duration_seconds Time one reconcile pass over a pool took.\n"
    "# TYPE jobpool_reconcile_duration_seconds histogram\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.005\"} 2\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.01\"} 2\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.025\"} 2\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.05\"} 2\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.1\"} 2\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.25\"} 2\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"0.5\"} 3\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"1\"} 3\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"2.5\"} 3\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"5\"} 3\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"10\"} 3\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"30\"} 3\n"
    "jobpool_reconcile_duration_seconds_bucket{pool=\"thumbs\",le=\"+Inf\"} 4\n"
    "jobpool_reconcile_duration_seconds_sum{pool=\"thumbs\"} 45.309\n"
    "jobpool_reconcile_duration_seconds_count{pool=\"thumbs\"} 4\n"
    "# HELP jobpool_task_wait_seconds Time a task's message waited in the queue, from its AMQP timestamp (whole seconds) to its delivery to a worker.\n"
    "# TYPE jobpool_task_wait_seconds histogram\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"0.5\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"1\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"2.5\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"5\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"10\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"30\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"60\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"120\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"300\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"600\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"1200\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"1800\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"3600\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"7200\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"14400\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"28800\"} 1\n"
    "jobpool_task_wait_seconds_bucket{pool=\"thumbs\",le=\"+Inf\"} 2\n"
    "jobpool_task_wait_seconds_sum{pool=\"thumbs\"} 40003\n"
    "jobpool_task_wait_seconds_count{pool=\"thumbs\"} 2\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"0.5\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"1\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"2.5\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"5\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"10\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"30\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"60\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"120\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"300\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"600\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"1200\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"1800\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"3600\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"7200\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"14400\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"28800\"} 0\n"
    "jobpool_task_wait_seconds_bucket{pool=\"mail\",le=\"+Inf\"} 0\n"
    "jobpool_task_wait_seconds_sum{pool=\"mail\"} 0\n"
    "jobpool_task_wait_seconds_count{pool=\"mail\"} 0\n"
    "# HELP jobpool_task_duration_seconds Time a task ran, as its worker measured it.\n"
    "# TYPE jobpool_task_duration_seconds histogram\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"0.5\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"1\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"2.5\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"5\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"10\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"30\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"60\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"120\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"300\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"600\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"1200\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"1800\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"3600\"} 1\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"7200\"} 2\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"14400\"} 2\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"28800\"} 2\n"
    "jobpool_task_duration_seconds_bucket{pool=\"thumbs\",le=\"+Inf\"} 2\n"
    "jobpool_task_duration_seconds_sum{pool=\"thumbs\"} 7200.4\n"
    "jobpool_task_duration_seconds_count{pool=\"thumbs\"} 2\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"0.5\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"1\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"2.5\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"5\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"10\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"30\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"60\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"120\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"300\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"600\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"1200\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"1800\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"3600\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"7200\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"14400\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"28800\"} 0\n"
    "jobpool_task_duration_seconds_bucket{pool=\"mail\",le=\"+Inf\"} 0\n"
    "jobpool_task_duration_seconds_sum{pool=\"mail\"} 0\n"
    "jobpool_task_duration_seconds_count{pool=\"mail\"} 0\n";

static void test_render_exact(void **state)
{
    (void)state;
    struct metrics_opts o = {.version = "1.2.3", .wall_clock_ms = fake_wall};
    struct metrics *m = NULL;
    assert_int_equal(metrics_new_opts("", &o, &m), 0);   /* disabled: figures still kept */
    assert_int_equal(metrics_port(m), 0);
    feed_known_sequence(m);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, &text, &len), 0);
    assert_string_equal(text, expected_text);
    assert_int_equal(len, strlen(expected_text));
    free(text);
    metrics_free(m);
}

/* The same text over HTTP, with the exposition format's content type; HEAD has no body. */
static void test_http_metrics(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    feed_known_sequence(m);
    static char resp[65536];
    const char *body;
    assert_int_equal(request(metrics_port(m), "GET", "/metrics", resp, sizeof resp, &body), 200);
    assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_string_equal(body, expected_text);
    /* A query string does not change the path. */
    assert_int_equal(request(metrics_port(m), "GET", "/metrics?x=1", resp, sizeof resp, &body),
                     200);
    assert_int_equal(request(metrics_port(m), "HEAD", "/metrics", resp, sizeof resp, &body), 200);
    assert_string_equal(body, "");
    metrics_free(m);
}

static void test_label_escaping(void **state)
{
    (void)state;
    struct metrics *m = NULL;
    assert_int_equal(metrics_new("", &m), 0);
    metrics_count_started(m, "a\"b\\c\nd", 1);
    char *text = NULL;
    assert_int_equal(metrics_render(m, &text, NULL), 0);
    assert_non_null(strstr(text, "\njobpool_workers_started_total{pool=\"a\\\"b\\\\c\\nd\"} 1\n"));
    free(text);
    metrics_free(m);
}

/* Before any event: every family is announced, counters of no pool, leader 0. */
static void test_render_empty(void **state)
{
    (void)state;
    struct metrics *m = NULL;
    assert_int_equal(metrics_new("", &m), 0);
    char *text = NULL;
    assert_int_equal(metrics_render(m, &text, NULL), 0);
    assert_non_null(strstr(text, "\njobpool_leader 0\n"));
    assert_non_null(strstr(text, "# TYPE jobpool_reconcile_duration_seconds histogram\n"));
    assert_null(strstr(text, "{pool="));
    free(text);
    metrics_free(m);
}

/* The watch caches' age and stale flag, one series per kind, updated in place. */
static void test_render_cache(void **state)
{
    (void)state;
    struct metrics *m = NULL;
    assert_int_equal(metrics_new("", &m), 0);
    metrics_set_cache(m, "jobs", 2.5, false);
    metrics_set_cache(m, "pods", 31.25, true);
    metrics_set_cache(m, "jobs", 3, false);
    char *text = NULL;
    assert_int_equal(metrics_render(m, &text, NULL), 0);
    assert_non_null(strstr(text, "# TYPE jobpool_cache_age_seconds gauge\n"));
    assert_non_null(strstr(text, "\njobpool_cache_age_seconds{kind=\"jobs\"} 3\n"));
    assert_non_null(strstr(text, "\njobpool_cache_age_seconds{kind=\"pods\"} 31.25\n"));
    assert_non_null(strstr(text, "\njobpool_cache_stale{kind=\"jobs\"} 0\n"));
    assert_non_null(strstr(text, "\njobpool_cache_stale{kind=\"pods\"} 1\n"));
    /* The later value replaced the first: no second series for "jobs" (other samples, such as
     * the process CPU time, may contain "2.5" by chance). */
    assert_null(strstr(text, "kind=\"jobs\"} 2.5"));
    free(text);
    metrics_free(m);
}

static void test_null_object(void **state)
{
    (void)state;
    struct metrics_pool_state s = {0};
    metrics_pool_publish(NULL, "p", &s);
    metrics_count_started(NULL, "p", 1);
    metrics_count_deleted(NULL, "p", METRICS_DEL_ORPHANED, 1);
    metrics_count_wasted(NULL, "p", 1);
    metrics_count_error(NULL, "p", METRICS_SRC_CONFIG, JP_EIO);
    metrics_observe_reconcile(NULL, "p", 1);
    metrics_set_leader(NULL, true);
    metrics_set_cache(NULL, "jobs", 1, false);
    metrics_tick(NULL);
    metrics_set_ready(NULL, true);
    metrics_set_poll_interval(NULL, 5);
    metrics_free(NULL);
    assert_int_equal(metrics_port(NULL), 0);
    char *t = (char *)"x";
    assert_int_equal(metrics_render(NULL, &t, NULL), JP_EINVAL);
    assert_null(t);
}

static void test_bad_addresses(void **state)
{
    (void)state;
    const char *bad[] = {"9090", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "[::1",
                         "[::1]9090", "a:b:9090", "127.0.0.1:90x", "[]:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct metrics *m = (struct metrics *)&m;
        assert_int_equal(metrics_new(bad[i], &m), JP_EINVAL);
        assert_null(m);
    }
    /* ":PORT" listens on every interface, loopback included. */
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(":0", &m), 0);
    static char resp[4096];
    assert_int_equal(request(metrics_port(m), "GET", "/readyz", resp, sizeof resp, NULL), 503);
    /* A taken port is an I/O error, not a crash. */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)metrics_port(m));
    struct metrics *m2 = (struct metrics *)&m2;
    assert_int_equal(metrics_new(addr, &m2), JP_EIO);
    assert_null(m2);
    metrics_free(m);
    assert_int_equal(metrics_new("localhost:0", &m), 0);
    assert_true(metrics_port(m) > 0);
    metrics_free(m);
}

/* ---- paths, methods, probes ---------------------------------------------------------------- */

static void test_paths_and_methods(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    uint16_t port = metrics_port(m);
    static char resp[65536];
    const char *body;
    assert_int_equal(request(port, "GET", "/", resp, sizeof resp, &body), 404);
    assert_int_equal(request(port, "GET", "/metricsx", resp, sizeof resp, &body), 404);
    assert_int_equal(request(port, "GET", "/metrics/", resp, sizeof resp, &body), 404);
    assert_int_equal(request(port, "POST", "/metrics", resp, sizeof resp, &body), 405);
    assert_non_null(strstr(resp, "Allow: GET, HEAD\r\n"));
    assert_int_equal(request(port, "PUT", "/healthz", resp, sizeof resp, &body), 405);
    assert_int_equal(request(port, "DELETE", "/readyz", resp, sizeof resp, &body), 405);
    assert_int_equal(request(port, "OPTIONS", "/metrics", resp, sizeof resp, &body), 405);
    /* A body is refused before it is read. */
    const char with_body[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             "Connection: close\r\n\r\nhello";
    assert_int_equal(raw_request(port, with_body, sizeof with_body - 1, resp, sizeof resp), 413);
    metrics_free(m);
}

static void test_probe_transitions(void **state)
{
    (void)state;
    fake_now = 1000000;
    struct metrics *m = start(5, 2000);
    uint16_t port = metrics_port(m);
    static char resp[4096];
    const char *body;

    /* The stall window starts at metrics_new. */
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 200);
    assert_string_equal(body, "ok\n");
    assert_int_equal(request(port, "GET", "/readyz", resp, sizeof resp, &body), 503);
    assert_string_equal(body, "not ready\n");

    fake_now += 6000;    /* exactly 3 intervals: still healthy */
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 200);
    fake_now += 1;       /* past 3 intervals without a tick */
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 500);
    assert_string_equal(body, "stalled: no reconcile tick for 6001 ms (limit 6000 ms)\n");
    assert_int_equal(request(port, "HEAD", "/healthz", resp, sizeof resp, &body), 500);

    metrics_tick(m);     /* the loop came back */
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 200);
    fake_now += 5000;
    metrics_tick(m);
    fake_now += 5000;
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 200);

    /* A longer poll interval widens the window. */
    fake_now += 2000;    /* 7 s since the tick */
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 500);
    metrics_set_poll_interval(m, 10000);
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, &body), 200);

    metrics_set_ready(m, true);
    assert_int_equal(request(port, "GET", "/readyz", resp, sizeof resp, &body), 200);
    assert_string_equal(body, "ready\n");
    metrics_set_ready(m, false);
    assert_int_equal(request(port, "GET", "/readyz", resp, sizeof resp, &body), 503);
    metrics_free(m);
}

/* ---- hostile clients ----------------------------------------------------------------------- */

static void test_malformed_request_line(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    uint16_t port = metrics_port(m);
    static char resp[4096];
    /* An unparsable request line: 400, or closed without an answer. */
    const char *garbage[] = {"GARBAGE\r\n\r\n", "GET\r\n\r\n", "\r\n\r\n\r\nGET /x\r\n\r\n"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        int st = raw_request(port, garbage[i], strlen(garbage[i]), resp, sizeof resp);
        assert_true(st == 0 || st == 400);
        assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, NULL), 200);
    }
    const char *bad[] = {
        "GET /metrics HTTP/1.1\r\n\r\n",                  /* HTTP/1.1 without Host */
        "GET /metrics HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(raw_request(port, bad[i], strlen(bad[i]), resp, sizeof resp), 400);
    const char badver[] = "GET /metrics HTTP/2.7\r\nHost: x\r\n\r\n";
    assert_int_equal(raw_request(port, badver, sizeof badver - 1, resp, sizeof resp), 505);
    /* Binary junk gets no 200, and the server is still there afterwards. */
    char junk[300];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 37 + 1);
    assert_int_not_equal(raw_request(port, junk, sizeof junk, resp, sizeof resp), 200);
    assert_int_equal(request(port, "GET", "/metrics", resp, sizeof resp, NULL), 200);
    metrics_free(m);
}

static void test_huge_header(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    uint16_t port = metrics_port(m);
    static char resp[8192];
    /* 48 KiB of header against the 16 KiB per-connection limit. */
    size_t n = 48 * 1024;
    char *req = malloc(n + 128);
    assert_non_null(req);
    size_t off = (size_t)snprintf(req, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + off, 'a', n);
    off += n;
    memcpy(req + off, "\r\n\r\n", 4);
    off += 4;
    for (int round = 0; round < 3; round++) {
        int status = raw_request(port, req, off, resp, sizeof resp);
        /* Either a 4xx status (431) or a reset while we were still sending:
         * never the metrics. */
        assert_true(status == 0 || (status >= 400 && status < 500));
        assert_int_not_equal(status, 200);
    }
    free(req);
    /* One very long request line, too. */
    char *line = malloc(40000);
    assert_non_null(line);
    memcpy(line, "GET /", 5);
    memset(line + 5, 'b', 39900);
    memcpy(line + 39905, " HTTP/1.1\r\nHost: x\r\n\r\n", 23);
    int status = raw_request(port, line, 39905 + 23, resp, sizeof resp);
    assert_true(status == 0 || (status >= 400 && status < 500));
    free(line);
    assert_int_equal(request(port, "GET", "/metrics", resp, sizeof resp, NULL), 200);
    metrics_free(m);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* True once the peer has closed (EOF or reset) without answering. */
static bool peer_closed(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) return false;
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Slowloris: a client that trickles its request, one byte every 400 ms, faster than the 1 s
 * idle timeout would ever notice. The per-request deadline closes it long before the request
 * is complete, and other clients are served meanwhile. */
static void test_slow_client(void **state)
{
    (void)state;
    struct metrics *m = start(1, 1000);
    uint16_t port = metrics_port(m);
    static char resp[65536];
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n\r\n";
    int fd = connect_port(port);
    size_t sent = 0;
    bool closed = false;
    int64_t t0 = util_now_ms();
    while (sent < sizeof req - 1 && !closed) {
        if (peer_closed(fd)) {
            closed = true;
            break;
        }
        if (send(fd, req + sent, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        sent++;
        if (sent == 3)   /* others are served while the slow client dawdles */
            assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, NULL), 200);
        sleep_ms(400);
    }
    close(fd);
    assert_true(closed);
    assert_true(sent < sizeof req - 1);
    print_message("slow client: closed after %zu of %zu bytes (400 ms apart), %lld ms\n", sent,
                  sizeof req - 1, (long long)(util_now_ms() - t0));
    assert_int_equal(request(port, "GET", "/metrics", resp, sizeof resp, NULL), 200);

    /* A client that opens and says nothing is closed too. */
    fd = connect_port(port);
    char buf[16];
    assert_int_equal(recv(fd, buf, sizeof buf, 0), 0);
    close(fd);
    metrics_free(m);
}

/* Keep-alive: a second request on the same connection works; the deadline restarts. */
static void test_keep_alive(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    int fd = connect_port(metrics_port(m));
    const char req[] = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    static char buf[4096];
    for (int i = 0; i < 3; i++) {
        assert_true(send_all(fd, req, sizeof req - 1));
        size_t len = 0;
        while (!strstr(buf, "not ready\n")) {
            ssize_t r = recv(fd, buf + len, sizeof buf - 1 - len, 0);
            assert_true(r > 0);
            len += (size_t)r;
            buf[len] = '\0';
        }
        assert_int_equal(strncmp(buf, "HTTP/1.1 503", 12), 0);
        memset(buf, 0, sizeof buf);
    }
    close(fd);
    metrics_free(m);
}

/* ---- the parser's decisions ---------------------------------------------------------------- */

/* A request trickled in 3-byte pieces (split inside CRLF pairs, the empty lines the parser
 * skips included) is answered, since it completes within the deadline. */
static void test_split_request(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    const char req[] = "\r\n\r\nGET /readyz?probe=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int fd = connect_port(metrics_port(m));
    for (size_t i = 0; i < sizeof req - 1; i += 3) {
        size_t n = sizeof req - 1 - i < 3 ? sizeof req - 1 - i : 3;
        assert_true(send_all(fd, req + i, n));
        sleep_ms(10);
        if (i + n < sizeof req - 1) assert_false(peer_closed(fd));   /* no answer yet */
    }
    static char buf[4096];
    recv_all(fd, buf, sizeof buf);
    close(fd);
    assert_int_equal(strncmp(buf, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(buf, "\r\nContent-Length: 10\r\n"));
    assert_non_null(strstr(buf, "\r\nCache-Control: no-store\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nnot ready\n"));
    metrics_free(m);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* Pipelining: requests sent in one write are all answered, in order; the last one's
 * Connection: close ends the connection after its answer. */
static void test_pipelined(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";   /* after close: not read */
    static char buf[8192];
    raw_request(metrics_port(m), req, sizeof req - 1, buf, sizeof buf);
    const char *a = strstr(buf, "HTTP/1.1 200 OK\r\n");
    const char *b = strstr(buf, "\r\n\r\nok\nHTTP/1.1 200 OK\r\nContent-Type: text/plain; version");
    const char *c = strstr(buf, "HTTP/1.1 503 ");
    assert_true(a == buf && b && c && b < c);
    assert_int_equal(count_of(buf, "HTTP/1.1 "), 3);
    assert_non_null(strstr(c, "\r\n\r\nnot ready\n"));
    /* HEAD's answer has no body: the 503 follows its header directly. */
    assert_non_null(strstr(b, "charset=utf-8\r\nContent-Length: "));
    assert_null(strstr(b, "# HELP"));
    metrics_free(m);
}

/* Strict line ends and bytes: a bare LF or CR, or a NUL, is 400 and the connection closes. */
static void test_strict_parser(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    uint16_t port = metrics_port(m);
    static char resp[4096];
    static const struct { const char *req; size_t len; int status; } cases[] = {
#define C(s, st) {s, sizeof s - 1, st}
        C("GET /healthz HTTP/1.1\nHost: x\n\n", 400),                /* bare LF request line */
        C("GET /healthz HTTP/1.1\r\nHost: x\n\r\n", 400),            /* bare LF in a header */
        C("GET /healthz HTTP/1.1\rHost: x\r\n\r\n", 400),            /* bare CR */
        C("GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),   /* NUL in a value */
        C("GET /hea\0lthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),        /* NUL in the target */
        C("GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),   /* obs-fold */
        C("GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),         /* space before colon */
        C("GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),         /* two spaces */
        C("GET /healthz HTTP/1.1 \r\nHost: x\r\n\r\n", 400),         /* trailing space */
        C("GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),     /* two Hosts */
        C("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400),
        C("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
          400),
        C("GET /healthz HTTP/1.0\r\n\r\n", 200),                     /* 1.0 needs no Host */
        C("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 200),
        C("GET /healthz HTTP/1.1\r\nhOsT:x\r\nCONTENT-LENGTH:   00 \r\n\r\n", 200),
    };
#undef C
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Each answer closes (400, HTTP/1.0) or is followed by one that does. */
        char req[256];
        memcpy(req, cases[i].req, cases[i].len);
        size_t len = cases[i].len;
        if (cases[i].status == 200 && strstr(cases[i].req, "HTTP/1.1")) {
            const char tail[] = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            memcpy(req + len, tail, sizeof tail - 1);
            len += sizeof tail - 1;
        }
        int st = raw_request(port, req, len, resp, sizeof resp);
        if (st != cases[i].status) print_message("case %zu: %d\n", i, st);
        assert_int_equal(st, cases[i].status);
        if (st == 400) {
            assert_non_null(strstr(resp, "\r\nConnection: close\r\n"));
            assert_int_equal(count_of(resp, "HTTP/1.1 "), 1);
        }
    }
    metrics_free(m);
}

/* A body, announced either way, is refused with 413 before it is read, and the server closes
 * the connection itself: its request deadline here is an hour, so the end of stream that ends
 * recv_all can only be the refusal's close (otherwise the client's 15 s receive timeout ends
 * it, with the connection still open, and peer_closed says so). No clock is read. */
static void test_body_refused(void **state)
{
    (void)state;
    struct metrics *m = start(3600, 1000);
    uint16_t port = metrics_port(m);
    static char resp[4096];
    const char *reqs[] = {
        "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 12345678901234567890123\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        int fd = connect_port(port);
        send_all(fd, reqs[i], strlen(reqs[i]));   /* the server may close before the body */
        recv_all(fd, resp, sizeof resp);
        assert_true(peer_closed(fd));
        close(fd);
        assert_int_equal(strncmp(resp, "HTTP/1.1 413 ", 13), 0);
        assert_non_null(strstr(resp, "\r\nConnection: close\r\n"));
        assert_non_null(strstr(resp, "\r\n\r\nrequest body not allowed\n"));
    }
    metrics_free(m);
}

/* A client that goes away in the middle of a big answer, with a reset or a plain close, costs
 * the server nothing: no SIGPIPE (that would end this very process), and it keeps serving. */
static void test_client_gone_mid_answer(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    struct metrics_pool_state s = {.depth_ok = true, .workers_ok = true};
    char name[32];
    for (int i = 0; i < 500; i++) {          /* /metrics of about 1 MiB */
        snprintf(name, sizeof name, "pool-%03d", i);
        metrics_pool_publish(m, name, &s);
    }
    uint16_t port = metrics_port(m);
    static char req[20 * 40];
    size_t len = 0;
    for (int i = 0; i < 20; i++)
        len += (size_t)snprintf(req + len, sizeof req - len, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int round = 0; round < 20; round++) {
        int fd = connect_port(port);
        assert_true(send_all(fd, req, len));
        char some[1024];
        assert_true(recv(fd, some, sizeof some, 0) > 0);   /* the answer is flowing */
        if (round % 2 == 0) {   /* a reset */
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        } else {
            shutdown(fd, SHUT_RDWR);
        }
        close(fd);
    }
    static char resp[4096];
    assert_int_equal(request(port, "GET", "/healthz", resp, sizeof resp, NULL), 200);
    metrics_free(m);
}

/* ---- concurrency --------------------------------------------------------------------------- */

struct scraper {
    uint16_t port;
    int ok;
};

static void *scrape_loop(void *arg)
{
    struct scraper *s = arg;
    char *resp = malloc(65536);
    for (int i = 0; resp && i < 25; i++) {
        const char *body;
        int status = request(s->port, "GET", "/metrics", resp, 65536, &body);
        size_t n = strlen(body);
        /* Whole: from the first family to the last line of the last one ("other" may or may
         * not exist yet, so the last pool varies). */
        const char *last = n ? memrchr(body, '\n', n - 1) : NULL;
        if (status == 200 && last && body[n - 1] == '\n' &&
            strncmp(last + 1, "jobpool_task_duration_seconds_count{pool=", 41) == 0 &&
            strstr(body, "\njobpool_task_duration_seconds_count{pool=\"mail\"} 0\n") &&
            strncmp(body, "# HELP jobpool_build_info", 25) == 0)
            s->ok++;
    }
    free(resp);
    return NULL;
}

/* Eight scrapers at once, plus idle connections holding slots, while the loop keeps publishing:
 * every scrape gets a whole, well-formed answer and the publisher never waits on the network. */
static void test_concurrent_scrapes(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    feed_known_sequence(m);
    int idle[4];
    for (int i = 0; i < 4; i++) idle[i] = connect_port(metrics_port(m));
    enum { N = 8 };
    pthread_t th[N];
    struct scraper sc[N];
    for (int i = 0; i < N; i++) {
        sc[i] = (struct scraper){.port = metrics_port(m)};
        assert_int_equal(pthread_create(&th[i], NULL, scrape_loop, &sc[i]), 0);
    }
    struct metrics_pool_state s = {.depth_ok = true, .workers_ok = true};
    for (int i = 0; i < 2000; i++) {
        s.messages_ready = i;
        metrics_pool_publish(m, "thumbs", &s);
        metrics_count_started(m, "other", 1);
        metrics_tick(m);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(sc[i].ok, 25);
    }
    for (int i = 0; i < 4; i++) close(idle[i]);
    char *text = NULL;
    assert_int_equal(metrics_render(m, &text, NULL), 0);
    assert_non_null(strstr(text, "\njobpool_workers_started_total{pool=\"other\"} 2000\n"));
    assert_non_null(strstr(text, "\njobpool_queue_messages_ready{pool=\"thumbs\"} 1999\n"));
    free(text);
    metrics_free(m);
}

/* The connection limit holds: with every slot taken a new client waits (the kernel's backlog
 * keeps it); it is served once the deadline frees a slot held by an idle client. */
static void test_connection_limit(void **state)
{
    (void)state;
    struct metrics_opts o = {.max_connections = 4, .request_timeout_s = 3};
    struct metrics *m = NULL;
    assert_int_equal(metrics_new_opts("127.0.0.1:0", &o, &m), 0);
    uint16_t port = metrics_port(m);
    int fds[4];
    for (int i = 0; i < 3; i++) fds[i] = connect_port(port);
    /* The fourth holds its slot with keep-alive; its answer proves (FIFO accept) that the
     * three before it were accepted too. */
    fds[3] = connect_port(port);
    const char req[] = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    static char buf[4096];
    assert_true(send_all(fds[3], req, sizeof req - 1));
    size_t len = 0;
    while (!strstr(buf, "not ready\n")) {
        ssize_t r = recv(fds[3], buf + len, sizeof buf - 1 - len, 0);
        assert_true(r > 0);
        len += (size_t)r;
        buf[len] = '\0';
    }
    int extra = connect_port(port);
    const char req2[] = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_true(send_all(extra, req2, sizeof req2 - 1));
    struct pollfd p = {.fd = extra, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 300), 0);          /* no free slot: not served yet */
    size_t n = recv_all(extra, buf, sizeof buf);     /* served once a slot frees up */
    assert_true(n > 12);
    assert_int_equal(strncmp(buf, "HTTP/1.1 503", 12), 0);
    int reaped = 0;
    for (int i = 0; i < 4; i++) {
        reaped += peer_closed(fds[i]);
        close(fds[i]);
    }
    assert_true(reaped >= 1);
    close(extra);
    metrics_free(m);
}

/* /debug/pools: JSON over the same listener; names are escaped, a pool without a decision yet
 * is left out, the error code is named. */
static void test_debug_pools(void **state)
{
    (void)state;
    struct metrics *m = start(5, 1000);
    struct metrics_pool_state s = {.depth_ok = true, .messages_ready = 40, .workers_ok = true,
                                   .workers = {3, 17, 0, 0}, .waiting = 2, .active = 20,
                                   .start = 5, .reason = "scale_up", .last_err = JP_ETIMEOUT,
                                   .max_active = 50, .decided_wall_ms = 1700000000500};
    metrics_pool_publish(m, "we\"ird\n", &s);
    metrics_count_started(m, "counted-only", 1);   /* no decision published: not listed */
    static char resp[65536];
    const char *body;
    assert_int_equal(request(metrics_port(m), "GET", "/debug/pools", resp, sizeof resp, &body),
                     200);
    assert_non_null(strstr(resp, "Content-Type: application/json\r\n"));
    assert_string_equal(
        body, "{\"version\":\"1.2.3\",\"leader\":false,\"ready\":false,\"last_tick\":1700000000.25,"
              "\"pools\":[{\"name\":\"we\\\"ird\\u000a\",\"decided_at\":1700000000.5,\"depth_ok\":true,"
              "\"ready\":40,\"unacked\":0,\"consumers\":0,\"sample_age_seconds\":0,\"active\":20,"
              "\"pending\":3,\"waiting\":2,\"running\":17,\"succeeded\":0,\"failed\":0,"
              "\"max_active\":50,\"start\":5,\"deletes\":0,\"reason\":\"scale_up\","
              "\"last_error\":\"timeout\",\"oldest_pending_seconds\":0,"
              "\"pending_timeout_seconds\":0,\"started_total\":0,\"wasted_total\":0,"
              "\"tasks_total\":0}]}\n");
    assert_int_equal(request(metrics_port(m), "POST", "/debug/pools", resp, sizeof resp, NULL),
                     405);
    metrics_free(m);
}

int main(void)
{
    log_setup(LOG_TEXT, LOG_OFF, NULL);   /* the expected failures would only be noise */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_http_metrics),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_render_empty),
        cmocka_unit_test(test_render_cache),
        cmocka_unit_test(test_null_object),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_paths_and_methods),
        cmocka_unit_test(test_probe_transitions),
        cmocka_unit_test(test_malformed_request_line),
        cmocka_unit_test(test_huge_header),
        cmocka_unit_test(test_slow_client),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_split_request),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_strict_parser),
        cmocka_unit_test(test_body_refused),
        cmocka_unit_test(test_client_gone_mid_answer),
        cmocka_unit_test(test_concurrent_scrapes),
        cmocka_unit_test(test_debug_pools),
        cmocka_unit_test(test_connection_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
