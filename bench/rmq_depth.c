/* rmq_depth.c: cost of one depth read (per-queue GET vs regex listing) and publish-to-visible lag.
 * Run by bench/rmq_depth.sh against a broker it starts; prints figures, asserts nothing. */
#define _GNU_SOURCE
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "rmq.h"
#include "util.h"

static const char *amqp_url, *mgmt_url, *user, *pass;
static struct http_client *admin;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "rmq_depth: %s: %s\n", what, detail ? detail : "");
    exit(1);
}

static void api(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", mgmt_url, path);
    struct http_response r;
    int rc = http_request(admin, method, url, body, body ? strlen(body) : 0, &r);
    if (rc || r.status < 200 || r.status > 299) die(path, rc ? r.error : r.body);
    http_response_free(&r);
}

static amqp_connection_state_t amqp_open(const char *vhost)
{
    char *copy = strdup(amqp_url);
    struct amqp_connection_info ci;
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) die("amqp url", NULL);
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(conn);
    if (!s || amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK) die("amqp connect", NULL);
    if (amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, user, pass).reply_type !=
        AMQP_RESPONSE_NORMAL)
        die("amqp login", vhost);
    amqp_channel_open(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("channel", NULL);
    free(copy);
    return conn;
}

static void amqp_done(amqp_connection_state_t conn)
{
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

static void declare_publish(amqp_connection_state_t conn, const char *q, int n)
{
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("declare", q);
    amqp_queue_purge(conn, 1, amqp_cstring_bytes(q));
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("purge", q);
    for (int i = 0; i < n; i++)
        amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(q), 0, 0, NULL,
                           amqp_cstring_bytes("x"));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v. */
static double pct(const int64_t *v, int n, double p)
{
    int k = (int)(p / 100.0 * n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return (double)v[k - 1];
}

static struct rmq_client *client(enum cfg_depth_source src)
{
    struct cfg_rabbitmq cfg = {
        .management_url = (char *)mgmt_url,
        .amqp_url = (char *)amqp_url,
        .username = {.env = "JOBPOOL_TEST_RMQ_USER"},
        .password = {.env = "JOBPOOL_TEST_RMQ_PASS"},
        .timeout_ms = 10000,
        .depth_source = src,
    };
    struct rmq_client *c;
    int rc = rmq_client_new(&cfg, &c);
    if (rc) die("rmq_client_new", jp_strerror(rc));
    return c;
}

enum kind { K_QUEUE, K_REGEX, K_RAW };

/* Time reps reads; print median, p99 and bytes per read. */
static void measure(struct rmq_client *c, const char *label, enum kind k, const char *vhost,
                    int nq, int reps)
{
    int64_t *t = calloc((size_t)reps, sizeof *t);
    unsigned long long b0 = http_bytes_received();
    unsigned long r0 = http_request_count();
    char url[512];
    char *ev = http_escape(vhost);
    snprintf(url, sizeof url, "%s/api/queues/%s", mgmt_url, ev);
    free(ev);
    for (int i = 0; i < reps; i++) {
        struct rmq_depth d;
        int rc = 0;
        rmq_tick_begin(c);
        int64_t s = now_us();
        if (k == K_QUEUE) rc = rmq_queue_depth(c, vhost, "bench.q0", &d);
        else if (k == K_REGEX) rc = rmq_regex_depth(c, vhost, "^bench\\.q", &d);
        else {
            struct http_response r;
            rc = http_request(admin, "GET", url, NULL, 0, &r);
            if (!rc && r.status != 200) rc = JP_EHTTP;
            http_response_free(&r);
        }
        t[i] = now_us() - s;
        if (rc) die(label, rmq_last_error(c));
        if (k == K_REGEX && (d.nqueues != (size_t)nq || d.ready != nq)) die(label, "wrong sum");
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_i64);
    unsigned long reqs = http_request_count() - r0;
    printf("| %5d | %-34s | %5d | %9.2f | %9.2f | %9.1f | %3lu |\n", nq, label, reps,
           pct(t, reps, 50) / 1000.0, pct(t, reps, 99) / 1000.0,
           (double)(http_bytes_received() - b0) / reps / 1024.0, reqs / (unsigned long)reps);
    free(t);
}

/* One tick's depth reads for npools pools, one per queue of vhost, as the controller makes
 * them. batched: the pools are registered (rmq_watch_queue, as reconcile does), so the vhost
 * is listed once and, with amqp, declared in one pipelined run. Not batched: a fresh client
 * every tick, which reads each queue with its own GET (and declare), as main did before. */
static void tick_cost(const char *label, enum cfg_depth_source src, bool batched,
                      const char *vhost, int npools, int ticks)
{
    int64_t *t = calloc((size_t)ticks, sizeof *t);
    unsigned long reqs = 0;
    char q[64];
    struct rmq_client *c = NULL;
    for (int k = 0; k < ticks; k++) {
        if (!c) c = client(src);
        for (int i = 0; batched && k == 0 && i < npools; i++) {
            snprintf(q, sizeof q, "bench.q%d", i);
            rmq_watch_queue(c, vhost, q);
        }
        rmq_tick_begin(c);
        unsigned long r0 = http_request_count();
        int64_t s = now_us();
        for (int i = 0; i < npools; i++) {
            struct rmq_depth d;
            snprintf(q, sizeof q, "bench.q%d", i);
            if (rmq_queue_depth(c, vhost, q, &d)) die(label, rmq_last_error(c));
            if (d.ready != 1) die(label, "wrong depth");
        }
        t[k] = now_us() - s;
        reqs += http_request_count() - r0;
        if (!batched) {
            rmq_client_free(c);
            c = NULL;
        }
    }
    rmq_client_free(c);
    qsort(t, (size_t)ticks, sizeof *t, cmp_i64);
    printf("| %5d | %-44s | %5d | %9.1f | %9.1f | %7.1f |\n", npools, label, ticks,
           pct(t, ticks, 50) / 1000.0, t[ticks - 1] / 1000.0, (double)reqs / ticks);
    free(t);
}

/* Publish one message and poll until the reading shows it; returns the lag in ms. */
static double lag_once(struct rmq_client *c, amqp_connection_state_t a, int64_t before,
                       int poll_ms)
{
    amqp_basic_publish(a, 1, amqp_empty_bytes, amqp_cstring_bytes("bench.lag"), 0, 0, NULL,
                       amqp_cstring_bytes("x"));
    int64_t s = now_us();
    for (;;) {
        struct rmq_depth d;
        rmq_tick_begin(c);
        int rc = rmq_queue_depth(c, "/", "bench.lag", &d);
        if (rc && rc != JP_ESTALE) die("lag read", rmq_last_error(c));
        if (!rc && d.ready > before) return (double)(now_us() - s) / 1000.0;
        if (now_us() - s > 60 * 1000000LL) die("lag", "not visible after 60 s");
        if (poll_ms) sleep_ms(poll_ms);
    }
}

static void lag(const char *label, enum cfg_depth_source src, int reps, int poll_ms)
{
    struct rmq_client *c = client(src);
    amqp_connection_state_t a = amqp_open("/");
    declare_publish(a, "bench.lag", 0);
    /* Let statistics exist and settle at 0 before the first publish. */
    for (;;) {
        struct rmq_depth d;
        rmq_tick_begin(c);
        if (rmq_queue_depth(c, "/", "bench.lag", &d) == 0 && d.ready == 0) break;
        sleep_ms(200);
    }
    int64_t *t = calloc((size_t)reps, sizeof *t);
    for (int i = 0; i < reps; i++) {
        t[i] = (int64_t)(lag_once(c, a, i, poll_ms) * 1000);
        if (src == CFG_DEPTH_MANAGEMENT) sleep_ms(rand() % 2000); /* spread over the interval */
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_i64);
    printf("| %-22s | %4d | %6d ms | %9.1f | %9.1f | %9.1f |\n", label, reps, poll_ms,
           t[0] / 1000.0, pct(t, reps, 50) / 1000.0, t[reps - 1] / 1000.0);
    free(t);
    amqp_done(a);
    rmq_client_free(c);
}

int main(void)
{
    amqp_url = getenv("JOBPOOL_TEST_AMQP_URL");
    mgmt_url = getenv("JOBPOOL_TEST_MGMT_URL");
    user = getenv("JOBPOOL_TEST_RMQ_USER");
    pass = getenv("JOBPOOL_TEST_RMQ_PASS");
    if (!amqp_url || !mgmt_url || !user || !pass) die("environment", "broker variables unset");
    log_setup(LOG_TEXT, LOG_ERROR, NULL);
    struct http_opts o = {.username = user, .password = pass, .timeout_ms = 30000};
    if (http_client_new(&o, &admin)) die("http", NULL);
    srand(1);

    const int sizes[] = {1, 100, 1000};
    char vhost[32], path[128], q[64];
    for (int s = 0; s < 3; s++) {
        snprintf(vhost, sizeof vhost, "bench%d", sizes[s]);
        snprintf(path, sizeof path, "/api/vhosts/%s", vhost);
        api("PUT", path, NULL);
        snprintf(path, sizeof path, "/api/permissions/%s/%s", vhost, user);
        api("PUT", path, "{\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}");
        amqp_connection_state_t a = amqp_open(vhost);
        for (int i = 0; i < sizes[s]; i++) {
            snprintf(q, sizeof q, "bench.q%d", i);
            declare_publish(a, q, 1);
        }
        amqp_done(a);
    }
    /* Wait until the management API reports every queue's message. */
    struct rmq_client *c = client(CFG_DEPTH_MANAGEMENT);
    for (int s = 0; s < 3; s++) {
        snprintf(vhost, sizeof vhost, "bench%d", sizes[s]);
        int64_t end = util_now_ms() + 60000;
        struct rmq_depth d = {0};
        while (util_now_ms() < end) {
            rmq_tick_begin(c);
            if (rmq_regex_depth(c, vhost, "^bench\\.q", &d) == 0 && d.ready == sizes[s] &&
                d.nqueues == (size_t)sizes[s])
                break;
            sleep_ms(500);
        }
        if (d.ready != sizes[s]) die("setup", "statistics did not appear within 60 s");
    }
    rmq_client_free(c);

    printf("\n### One depth read (management API)\n\n");
    printf("| queues in vhost | request | reads | median ms | p99 ms | KiB per read | "
           "requests per read |\n");
    printf("|---:|---|---:|---:|---:|---:|---:|\n");
    for (int s = 0; s < 3; s++) {
        snprintf(vhost, sizeof vhost, "bench%d", sizes[s]);
        c = client(CFG_DEPTH_MANAGEMENT);
        measure(c, "per-queue GET", K_QUEUE, vhost, sizes[s], 500);
        rmq_client_free(c);
        c = client(CFG_DEPTH_MANAGEMENT);
        rmq_watch_regex(c, vhost, "^bench\\.q");
        measure(c, "regex listing, columns, paged", K_REGEX, vhost, sizes[s],
                sizes[s] >= 1000 ? 100 : 300);
        rmq_client_free(c);
        c = client(CFG_DEPTH_MANAGEMENT);
        measure(c, "full listing, no columns (reference)", K_RAW, vhost, sizes[s],
                sizes[s] >= 1000 ? 30 : 100);
        rmq_client_free(c);
        c = client(CFG_DEPTH_AMQP);
        measure(c, "per-queue GET + passive declare", K_QUEUE, vhost, sizes[s], 500);
        rmq_client_free(c);
    }

    printf("\n### One tick at 1,000 pools on one vhost (one pool per queue)\n\n");
    printf("| pools | how | ticks | median ms per tick | max ms | management requests per "
           "tick |\n");
    printf("|---:|---|---:|---:|---:|---:|\n");
    tick_cost("management: one listing per vhost", CFG_DEPTH_MANAGEMENT, true, "bench1000",
              1000, 20);
    tick_cost("amqp: listing + pipelined passive declares", CFG_DEPTH_AMQP, true, "bench1000",
              1000, 20);
    tick_cost("management: one GET per pool (before)", CFG_DEPTH_MANAGEMENT, false,
              "bench1000", 1000, 3);
    tick_cost("amqp: one GET + one declare per pool (before)", CFG_DEPTH_AMQP, false,
              "bench1000", 1000, 3);

    printf("\n### Publish-to-visible lag\n\n");
    printf("| depth source | runs | poll every | min ms | median ms | max ms |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    lag("amqp (passive declare)", CFG_DEPTH_AMQP, 50, 0);
    lag("management API", CFG_DEPTH_MANAGEMENT, 10, 20);
    http_client_free(admin);
    return 0;
}
