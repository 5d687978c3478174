/* it_rmq.c: rmq against the real broker started by tests/integration/run.sh. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
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

#define VHOST2 "jp-it/two"   /* a '/' inside the name proves the percent-encoding */
#define MON_USER "jp-it-monitor"
#define MON_PASS "monPw-8c1d2f"
#define WAIT_MS 30000        /* the management API lags by the stats interval (5 s) */

static const char *amqp_url, *mgmt_url, *user, *pass;
static struct http_client *admin;


static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Management API call as the test's administrator; fails the test on any non-2xx. */
static void api(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", mgmt_url, path);
    struct http_response r;
    int rc = http_request(admin, method, url, body, body ? strlen(body) : 0, &r);
    if (rc || r.status < 200 || r.status > 299)
        fail_msg("%s %s: %s status %ld %s", method, path, jp_errname(rc), r.status,
                 r.body ? r.body : r.error);
    http_response_free(&r);
}

/* ---- AMQP helpers (the test's own publisher and consumer) -------------------------------- */

/* Publisher confirms: publish() returns only once the broker has taken every message into the
 * queue, so a depth read on any other connection that starts afterwards must count them. A bare
 * basic.publish is asynchronous, and a read racing it may or may not see the message. */
static struct confirm_state {
    amqp_connection_state_t conn;
    uint64_t sent, acked;
} confirms[8];

static void confirm_forget(amqp_connection_state_t conn)
{
    for (size_t i = 0; i < sizeof confirms / sizeof confirms[0]; i++)
        if (confirms[i].conn == conn) confirms[i] = (struct confirm_state){0};
}

static struct confirm_state *confirm_of(amqp_connection_state_t conn)
{
    for (size_t i = 0; i < sizeof confirms / sizeof confirms[0]; i++)
        if (confirms[i].conn == conn) return &confirms[i];
    for (size_t i = 0; i < sizeof confirms / sizeof confirms[0]; i++)
        if (!confirms[i].conn) {
            confirms[i] = (struct confirm_state){.conn = conn};
            return &confirms[i];
        }
    fail_msg("more than %zu AMQP connections open", sizeof confirms / sizeof confirms[0]);
    return NULL;
}

static amqp_connection_state_t amqp_open(const char *vhost, const char *u, const char *p)
{
    char *copy = strdup(amqp_url);
    struct amqp_connection_info ci;
    assert_int_equal(amqp_parse_url(copy, &ci), AMQP_STATUS_OK);
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(conn);
    assert_non_null(s);
    assert_int_equal(amqp_socket_open(s, ci.host, ci.port), AMQP_STATUS_OK);
    amqp_rpc_reply_t r = amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, u, p);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_channel_open(conn, 1);
    assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_confirm_select(conn, 1);
    assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
    free(copy);
    return conn;
}

static void amqp_done(amqp_connection_state_t conn)
{
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    confirm_forget(conn);
    amqp_destroy_connection(conn);
}

static void declare(amqp_connection_state_t conn, const char *q)
{
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_queue_purge(conn, 1, amqp_cstring_bytes(q));
    assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
}

static void publish(amqp_connection_state_t conn, const char *q, int n)
{
    struct confirm_state *cs = confirm_of(conn);
    for (int i = 0; i < n; i++) {
        assert_int_equal(amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(q), 0,
                                            0, NULL, amqp_cstring_bytes("task")),
                         AMQP_STATUS_OK);
        cs->sent++;
    }
    while (cs->acked < cs->sent) {
        amqp_frame_t f;
        struct timeval tv = {.tv_sec = 30};
        int rc = amqp_simple_wait_frame_noblock(conn, &f, &tv);
        if (rc != AMQP_STATUS_OK)
            fail_msg("publish to %s: no confirm from the broker (%s)", q, amqp_error_string2(rc));
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD)
            fail_msg("publish to %s: the broker refused a message (basic.nack)", q);
        if (f.payload.method.id != AMQP_BASIC_ACK_METHOD)
            fail_msg("publish to %s: unexpected method 0x%08x while waiting for confirms", q,
                     (unsigned)f.payload.method.id);
        amqp_basic_ack_t *ack = f.payload.method.decoded;
        assert_true(ack->delivery_tag <= cs->sent);
        if (ack->multiple || ack->delivery_tag > cs->acked) cs->acked = ack->delivery_tag;
    }
}

/* Take one message without acknowledging it (it stays unacked while the channel lives). */
static void get_noack(amqp_connection_state_t conn, const char *q)
{
    amqp_rpc_reply_t r = amqp_basic_get(conn, 1, amqp_cstring_bytes(q), 0);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t msg;
    assert_int_equal(amqp_read_message(conn, 1, &msg, 0).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_destroy_message(&msg);
}

/* ---- rmq clients --------------------------------------------------------------------------- */

static struct rmq_client *client_as(const char *uenv, const char *penv, enum cfg_depth_source src)
{
    struct cfg_rabbitmq cfg = {
        .management_url = (char *)mgmt_url,
        .amqp_url = (char *)amqp_url,
        .vhost = "/",
        .username = {.env = (char *)uenv},
        .password = {.env = (char *)penv},
        .timeout_ms = 3000,
        .connect_timeout_ms = 1000,
        .depth_source = src,
    };
    struct rmq_client *c = NULL;
    int rc = rmq_client_new(&cfg, &c);
    if (rc) fail_msg("rmq_client_new: %s", jp_strerror(rc));
    return c;
}

static struct rmq_client *client(enum cfg_depth_source src)
{
    return client_as("JOBPOOL_TEST_RMQ_USER", "JOBPOOL_TEST_RMQ_PASS", src);
}

/* Poll a named queue (a new tick each time) until the figures match; -1 means "any". */
static void wait_depth(struct rmq_client *c, const char *vhost, const char *q, int64_t ready,
                       int64_t unacked, int64_t consumers)
{
    struct rmq_depth d = {0};
    int rc = 0;
    int64_t end = util_now_ms() + WAIT_MS;
    while (util_now_ms() < end) {
        rmq_tick_begin(c);
        rc = rmq_queue_depth(c, vhost, q, &d);
        if (rc == 0 && d.ready == ready && (unacked < 0 || d.unacked == unacked) &&
            (consumers < 0 || d.consumers == consumers))
            return;
        if (rc != 0 && rc != JP_ESTALE) break; /* STALE: no statistics yet for a new queue */
        sleep_ms(200);
    }
    fail_msg("%s/%s: rc %s (%s), ready %lld unacked %lld consumers %lld; want %lld %lld %lld",
             vhost, q, jp_errname(rc), rmq_last_error(c), (long long)d.ready,
             (long long)d.unacked, (long long)d.consumers, (long long)ready, (long long)unacked,
             (long long)consumers);
}

static int setup_all(void **state)
{
    (void)state;
    amqp_url = getenv("JOBPOOL_TEST_AMQP_URL");
    mgmt_url = getenv("JOBPOOL_TEST_MGMT_URL");
    user = getenv("JOBPOOL_TEST_RMQ_USER");
    pass = getenv("JOBPOOL_TEST_RMQ_PASS");
    if (!amqp_url || !mgmt_url || !user || !pass) {
        fprintf(stderr, "it_rmq: FAILED: JOBPOOL_TEST_AMQP_URL, JOBPOOL_TEST_MGMT_URL, "
                        "JOBPOOL_TEST_RMQ_USER and JOBPOOL_TEST_RMQ_PASS must be set: run it "
                        "through tests/integration/run.sh (make integration), which starts "
                        "the broker\n");
        return -1;
    }
    struct http_opts o = {.username = user, .password = pass, .timeout_ms = 10000};
    if (http_client_new(&o, &admin) != 0) return -1;
    setenv("JP_IT_MON_USER", MON_USER, 1);
    setenv("JP_IT_MON_PASS", MON_PASS, 1);
    setenv("JP_IT_BAD_PASS", "wrong-Pw-4f9e", 1);
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    http_client_free(admin);
    log_clear_secrets();
    return 0;
}

static void test_two_vhosts_ready_unacked(void **state)
{
    (void)state;
    api("PUT", "/api/vhosts/jp-it%2Ftwo", NULL);
    char path[256];
    snprintf(path, sizeof path, "/api/permissions/jp-it%%2Ftwo/%s", user);
    api("PUT", path, "{\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}");

    amqp_connection_state_t a = amqp_open("/", user, pass);
    amqp_connection_state_t b = amqp_open(VHOST2, user, pass);
    declare(a, "it.q1");
    declare(b, "it.q1");
    publish(a, "it.q1", 7);
    publish(b, "it.q1", 2);

    struct rmq_client *c = client(CFG_DEPTH_MANAGEMENT);
    wait_depth(c, "/", "it.q1", 7, 0, 0);
    wait_depth(c, VHOST2, "it.q1", 2, 0, 0);

    /* Three taken without ack, then one consumer with prefetch 1 holding a fourth. */
    for (int i = 0; i < 3; i++) get_noack(a, "it.q1");
    wait_depth(c, "/", "it.q1", 4, 3, 0);
    amqp_basic_qos(a, 1, 0, 1, 0);
    amqp_basic_consume(a, 1, amqp_cstring_bytes("it.q1"), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(a).reply_type, AMQP_RESPONSE_NORMAL);
    wait_depth(c, "/", "it.q1", 3, 4, 1);
    struct rmq_depth d;
    assert_int_equal(rmq_queue_depth(c, "/", "it.q1", &d), 0);
    assert_int_equal(d.total, 7);
    assert_int_equal(d.nqueues, 1);
    assert_true(d.sampled_ms > 0);

    /* Missing queue and missing vhost: typed, zeroed. */
    assert_int_equal(rmq_queue_depth(c, "/", "it.no-such-queue", &d), JP_ENOTFOUND);
    assert_int_equal(d.ready, 0);
    assert_int_equal(rmq_queue_depth(c, "no-such-vhost", "it.q1", &d), JP_ENOTFOUND);
    rmq_client_free(c);
    amqp_done(a); /* closing the channel requeues the unacked messages */
    amqp_done(b);
}

static void test_regex_sums(void **state)
{
    (void)state;
    amqp_connection_state_t b = amqp_open(VHOST2, user, pass);
    const char *names[] = {"thumbs.a", "thumbs.b", "thumbsX", "other.thumbs.c"};
    const int counts[] = {3, 4, 5, 6};
    for (int i = 0; i < 4; i++) {
        declare(b, names[i]);
        publish(b, names[i], counts[i]);
    }
    struct rmq_client *c = client(CFG_DEPTH_MANAGEMENT);
    assert_int_equal(rmq_watch_regex(c, VHOST2, "^thumbs\\."), 0);
    assert_int_equal(rmq_watch_regex(c, VHOST2, "thumbs"), 0);
    struct rmq_depth d = {0}, all = {0};
    int rc = 0;
    int64_t end = util_now_ms() + WAIT_MS;
    unsigned long n0 = 0, n1 = 0;
    while (util_now_ms() < end) {
        rmq_tick_begin(c);
        n0 = http_request_count();
        rc = rmq_regex_depth(c, VHOST2, "^thumbs\\.", &d);
        int rc2 = rmq_regex_depth(c, VHOST2, "thumbs", &all);
        n1 = http_request_count();
        if (!rc && !rc2 && d.ready == 7 && all.ready == 18) break;
        sleep_ms(200);
    }
    if (rc || d.ready != 7 || all.ready != 18)
        fail_msg("regex sums: rc %s (%s), ready %lld and %lld; want 7 and 18", jp_errname(rc),
                 rmq_last_error(c), (long long)d.ready, (long long)all.ready);
    assert_int_equal(d.nqueues, 2);
    assert_int_equal(all.nqueues, 4);
    assert_int_equal(d.total, 7);
    assert_int_equal(n1 - n0, 1); /* one listing page shared by both regex pools */
    rmq_client_free(c);
    amqp_done(b);
}

/* Publishes one confirmed message and reads the depth once with the passive-declare client: that
 * first read must count it, with no wait for statistics. Returns the ms from the publish to the
 * read's answer (printed, not asserted), and whether a management read at that moment still
 * showed the old count. */
static int64_t amqp_sees_publish(struct rmq_client *rt, struct rmq_client *mg,
                                 amqp_connection_state_t a, int64_t before, bool *mgmt_lagged)
{
    struct rmq_depth d;
    int64_t t0 = util_now_ms();
    publish(a, "it.rt", 1);
    rmq_tick_begin(rt);
    int rc = rmq_queue_depth(rt, "/", "it.rt", &d);
    if (rc) fail_msg("amqp depth: %s (%s)", jp_errname(rc), rmq_last_error(rt));
    int64_t seen = d.ready == before + 1 ? util_now_ms() - t0 : -1;
    rmq_tick_begin(mg);
    assert_int_equal(rmq_queue_depth(mg, "/", "it.rt", &d), 0);
    *mgmt_lagged = d.ready == before;
    return seen;
}

static void test_amqp_source_is_real_time(void **state)
{
    (void)state;
    amqp_connection_state_t a = amqp_open("/", user, pass);
    declare(a, "it.rt");
    struct rmq_client *rt = client(CFG_DEPTH_AMQP);
    struct rmq_client *mg = client(CFG_DEPTH_MANAGEMENT);
    wait_depth(mg, "/", "it.rt", 0, 0, 0); /* statistics exist */
    wait_depth(rt, "/", "it.rt", 0, 0, 0);
    int lagged = 0;
    for (int i = 0; i < 3; i++) {
        bool lag;
        int64_t ms = amqp_sees_publish(rt, mg, a, i, &lag);
        if (ms < 0)
            fail_msg("depthSource amqp: the first read after confirmed publish %d missed it", i + 1);
        lagged += lag;
        int64_t t0 = util_now_ms();
        wait_depth(mg, "/", "it.rt", i + 1, -1, -1);
        printf("it_rmq: publish %d: amqp saw it after %lld ms; management after %lld ms more "
               "(lagging at the amqp sample: %s)\n",
               i + 1, (long long)ms, (long long)(util_now_ms() - t0), lag ? "yes" : "no");
    }
    assert_true(lagged >= 1);

    /* The long-lived connection is reopened after the broker drops it. */
    char path[256];
    struct http_response r;
    char url[512];
    int64_t end = util_now_ms() + WAIT_MS;
    int closed = 0;
    while (!closed && util_now_ms() < end) {
        snprintf(url, sizeof url, "%s/api/connections?columns=name,user", mgmt_url);
        assert_int_equal(http_request(admin, "GET", url, NULL, 0, &r), 0);
        /* Close every AMQP connection: the test's own publisher is reopened below. */
        for (const char *p = r.body; (p = strstr(p, "\"name\":\"")) != NULL;) {
            p += 8;
            size_t n = strcspn(p, "\"");
            char nm[256];
            snprintf(nm, sizeof nm, "%.*s", (int)n, p);
            char *enc = http_escape(nm);
            snprintf(path, sizeof path, "/api/connections/%s", enc);
            free(enc);
            api("DELETE", path, NULL);
            closed++;
            p += n;
        }
        http_response_free(&r);
        if (!closed) sleep_ms(500);
    }
    assert_true(closed >= 1);
    confirm_forget(a);
    amqp_destroy_connection(a);
    struct rmq_depth d;
    rmq_tick_begin(rt);
    int rc = rmq_queue_depth(rt, "/", "it.rt", &d);
    if (rc) fail_msg("after the broker closed the connection: %s (%s)", jp_errname(rc),
                     rmq_last_error(rt));
    assert_int_equal(d.ready, 3);
    rmq_client_free(rt);
    rmq_client_free(mg);
}

static void test_least_privilege_and_bad_password(void **state)
{
    (void)state;
    /* The monitoring tag plus vhost access with empty permission patterns suffices. */
    api("PUT", "/api/users/" MON_USER, "{\"password\":\"" MON_PASS "\",\"tags\":\"monitoring\"}");
    api("PUT", "/api/permissions/%2F/" MON_USER,
        "{\"configure\":\"\",\"write\":\"\",\"read\":\"\"}");
    struct rmq_client *c = client_as("JP_IT_MON_USER", "JP_IT_MON_PASS", CFG_DEPTH_AMQP);
    struct rmq_depth d;
    rmq_tick_begin(c);
    int rc = rmq_queue_depth(c, "/", "it.rt", &d);
    if (rc) fail_msg("monitoring user: %s (%s)", jp_errname(rc), rmq_last_error(c));
    assert_int_equal(d.ready, 3);
    assert_int_equal(rmq_regex_depth(c, "/", "^it\\.", &d), 0);
    assert_true(d.nqueues >= 2);
    rmq_client_free(c);

    c = client_as("JOBPOOL_TEST_RMQ_USER", "JP_IT_BAD_PASS", CFG_DEPTH_MANAGEMENT);
    assert_int_equal(rmq_queue_depth(c, "/", "it.rt", &d), JP_EUNAUTHORIZED);
    assert_non_null(strstr(rmq_last_error(c), user));
    assert_null(strstr(rmq_last_error(c), "wrong-Pw-4f9e"));
    assert_null(strstr(rmq_last_error(c), pass));
    rmq_client_free(c);
}

/* Many pools on one vhost: one listing serves them all (1 request for 20 queues, where one GET
 * each took 20), and with depthSource amqp the passive declares go out pipelined on one
 * channel; the two missing queues close that channel (404) mid-run and every queue after them
 * is still read right. On the old main this took one request per queue. */
static void test_vhost_batch(void **state)
{
    (void)state;
    enum { NQ = 20 };
    char names[NQ][32];
    amqp_connection_state_t a = amqp_open("/", user, pass);
    for (int i = 0; i < NQ; i++) {
        snprintf(names[i], sizeof names[i], "it.batch.%02d", i);
        if (i == 5 || i == 13) continue; /* missing */
        declare(a, names[i]);
        publish(a, names[i], i);
    }
    struct rmq_client *mg = client(CFG_DEPTH_MANAGEMENT), *rt = client(CFG_DEPTH_AMQP);
    for (int i = 0; i < NQ; i++) {
        assert_int_equal(rmq_watch_queue(mg, "/", names[i]), 0);
        assert_int_equal(rmq_watch_queue(rt, "/", names[i]), 0);
    }
    wait_depth(mg, "/", names[NQ - 1], NQ - 1, 0, 0); /* statistics exist */
    struct rmq_depth d;
    for (int src = 0; src < 2; src++) {
        struct rmq_client *c = src ? rt : mg;
        int64_t end = util_now_ms() + WAIT_MS;
        for (int settled = 0; !settled;) {
            /* The management figures lag; a tick where all are right must come. */
            rmq_tick_begin(c);
            unsigned long r0 = http_request_count();
            settled = 1;
            for (int i = 0; i < NQ; i++) {
                int rc = rmq_queue_depth(c, "/", names[i], &d);
                if (i == 5 || i == 13) {
                    if (rc != JP_ENOTFOUND)
                        fail_msg("%s: %s (%s)", names[i], jp_errname(rc), rmq_last_error(c));
                    assert_int_equal(d.ready, 0);
                    if (src) assert_non_null(strstr(rmq_last_error(c), "404"));
                    continue;
                }
                if (rc) fail_msg("%s: %s (%s)", names[i], jp_errname(rc), rmq_last_error(c));
                if (d.ready != i) settled = 0;
                if (src) assert_int_equal(d.ready, i); /* the declare is exact at once */
            }
            printf("it_rmq: %s source, %d queues on one vhost: %lu management requests\n",
                   src ? "amqp" : "management", NQ, http_request_count() - r0);
            assert_int_equal(http_request_count() - r0, 1);
            if (!settled && util_now_ms() > end) fail_msg("depths never matched");
            if (!settled) sleep_ms(500);
        }
    }
    /* A publish is seen by the next tick's pipelined declares, with no wait for statistics. */
    publish(a, names[19], 3);
    rmq_tick_begin(rt);
    assert_int_equal(rmq_queue_depth(rt, "/", names[0], &d), 0);
    assert_int_equal(rmq_queue_depth(rt, "/", names[19], &d), 0);
    assert_int_equal(d.ready, NQ - 1 + 3);
    for (int i = 0; i < NQ; i++) {
        if (i == 5 || i == 13) continue;
        amqp_queue_delete(a, 1, amqp_cstring_bytes(names[i]), 0, 0);
        amqp_get_rpc_reply(a);
    }
    rmq_client_free(mg);
    rmq_client_free(rt);
    amqp_done(a);
}

/* The between-tick probe (depthSource amqp): silent while the queue holds what the tick read
 * or less, "grew" once a message arrives after the tick's read, silent again after the next
 * tick's read; a missing queue among the watched ones is not an error; the management source
 * is never probed. */
static void test_probe_sees_growth(void **state)
{
    (void)state;
    amqp_connection_state_t a = amqp_open("/", user, pass);
    declare(a, "it.probe");
    publish(a, "it.probe", 2);
    struct rmq_client *rt = client(CFG_DEPTH_AMQP), *mg = client(CFG_DEPTH_MANAGEMENT);
    assert_int_equal(rmq_watch_queue(rt, "/", "it.probe.missing"), 0);
    struct rmq_depth d;
    bool grew = true;
    rmq_tick_begin(rt);
    assert_int_equal(rmq_queue_depth(rt, "/", "it.probe", &d), 0);
    assert_int_equal(d.ready, 2);
    assert_true(d.exact);                /* a passive declare: the decision may trust it */
    assert_int_equal(rmq_probe(rt, &grew), 0);
    assert_false(grew);
    get_noack(a, "it.probe");            /* 1 ready: fewer than the tick read */
    assert_int_equal(rmq_probe(rt, &grew), 0);
    assert_false(grew);
    publish(a, "it.probe", 1);           /* 2 ready again: more than the fewest since the tick */
    assert_int_equal(rmq_probe(rt, &grew), 0);
    assert_true(grew);
    rmq_tick_begin(rt);
    assert_int_equal(rmq_queue_depth(rt, "/", "it.probe", &d), 0);
    assert_int_equal(d.ready, 2);
    assert_int_equal(rmq_probe(rt, &grew), 0);
    assert_false(grew);
    wait_depth(mg, "/", "it.probe", 2, -1, -1);
    rmq_tick_begin(mg);
    assert_int_equal(rmq_queue_depth(mg, "/", "it.probe", &d), 0);
    assert_false(d.exact);               /* a statistic, however fresh it looks */
    assert_int_equal(rmq_probe(mg, &grew), 0);
    assert_false(grew);
    amqp_queue_delete(a, 1, amqp_cstring_bytes("it.probe"), 0, 0);
    amqp_get_rpc_reply(a);
    rmq_client_free(rt);
    rmq_client_free(mg);
    amqp_done(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_vhosts_ready_unacked),
        cmocka_unit_test(test_regex_sums),
        cmocka_unit_test(test_amqp_source_is_real_time),
        cmocka_unit_test(test_least_privilege_and_bad_password),
        cmocka_unit_test(test_vhost_batch),
        cmocka_unit_test(test_probe_sees_growth),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
