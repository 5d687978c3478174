/* test_rmq.c: rmq against a loopback fault server playing canned management API answers. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "rmq.h"
#include "util.h"

#define USER "jobpool-user"
#define PASS "pw7Zq3SecretXy"

struct fsrv {
    pid_t pid;
    int port;
};

static struct fsrv plain, tls;
static char tmpdir[64];
static char cert[128], key[128];

/* Start tests/fixtures/faultserver.py and read its port. Returns 0 or -1 with a message. */
static int fs_start(struct fsrv *s, const char *c, const char *k)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    s->pid = fork();
    if (s->pid < 0) return -1;
    if (s->pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        if (c)
            execlp("python3", "python3", "tests/fixtures/faultserver.py", "tests/fixtures/rmq",
                   "--tls", c, k, (char *)NULL);
        else
            execlp("python3", "python3", "tests/fixtures/faultserver.py", "tests/fixtures/rmq",
                   (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    char line[32] = "";
    size_t n = 0;
    while (n < sizeof line - 1 && poll(&pf, 1, 10000) == 1) {
        ssize_t r = read(p[0], line + n, 1);
        if (r <= 0 || line[n] == '\n') break;
        n++;
    }
    line[n] = '\0';
    close(p[0]);
    int64_t port = 0;
    if (util_parse_int64(line, 1, 65535, &port) != 0) {
        fprintf(stderr, "test_rmq: the fault server did not start (cwd must be the repo root, "
                        "python3 needed); it printed \"%s\"\n", line);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
        return -1;
    }
    s->port = (int)port;
    return 0;
}

static void fs_stop(struct fsrv *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    s->pid = 0;
}

static int setup_all(void **state)
{
    (void)state;
    setenv("RMQ_TEST_USER", USER, 1);
    setenv("RMQ_TEST_PASS", PASS, 1);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_rmq.XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
    snprintf(key, sizeof key, "%s/key.pem", tmpdir);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s >/dev/null 2>&1",
             key, cert);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_rmq: openssl could not make a self-signed certificate\n");
        return -1;
    }
    if (fs_start(&plain, NULL, NULL) != 0) return -1;
    if (fs_start(&tls, cert, key) != 0) return -1;
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    fs_stop(&plain);
    fs_stop(&tls);
    unlink(cert);
    unlink(key);
    rmdir(tmpdir);
    log_clear_secrets();
    return 0;
}

/* Timeouts are short only where a test needs them (the drip); TLS handshakes under valgrind are
 * slow, so the transport tests get a long one. */
static long timeout_ms = 1500;

static struct rmq_client *client_opts(const char *url, const char *ca, const char *amqp_url)
{
    struct cfg_rabbitmq cfg = {
        .management_url = (char *)url,
        .amqp_url = (char *)amqp_url,
        .vhost = "/",
        .username = {.env = "RMQ_TEST_USER"},
        .password = {.env = "RMQ_TEST_PASS"},
        .ca_file = (char *)ca,
        .timeout_ms = timeout_ms,
        .connect_timeout_ms = timeout_ms,
        .max_body = 1024,
        .depth_source = amqp_url ? CFG_DEPTH_AMQP : CFG_DEPTH_MANAGEMENT,
    };
    struct rmq_client *c = NULL;
    assert_int_equal(rmq_client_new(&cfg, &c), 0);
    assert_non_null(c);
    return c;
}

static struct rmq_client *client(void)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", plain.port);
    return client_opts(url, NULL, NULL);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s); /* nothing listens there now: connecting is refused */
    return ntohs(a.sin_port);
}

static void test_ok(void **state)
{
    (void)state;
    struct rmq_client *c = client();
    struct rmq_depth d;
    int64_t before = util_now_ms();
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), 0);
    assert_int_equal(d.ready, 12);
    assert_int_equal(d.unacked, 3);
    assert_int_equal(d.total, 15);
    assert_int_equal(d.consumers, 2);
    assert_true(d.publish_rate == 4.5);
    assert_true(d.deliver_rate == 3.25);
    assert_int_equal(d.nqueues, 1);
    assert_true(d.sampled_ms >= before);
    assert_string_equal(rmq_last_error(c), "");
    rmq_client_free(c);
}

/* Fetch the server's record of the previous request's target. */
static void last_target(char *out, size_t outlen)
{
    struct http_opts o = {0};
    struct http_client *h;
    assert_int_equal(http_client_new(&o, &h), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_last", plain.port);
    struct http_response r;
    assert_int_equal(http_request(h, "GET", url, NULL, 0, &r), 0);
    snprintf(out, outlen, "%s", r.body);
    http_response_free(&r);
    http_client_free(h);
}

static void test_escape(void **state)
{
    (void)state;
    struct rmq_client *c = client();
    struct rmq_depth d;
    char t[256];
    assert_int_equal(rmq_queue_depth(c, "/", "a/b c", &d), JP_ENOTFOUND);
    last_target(t, sizeof t);
    assert_string_equal(t, "/api/queues/%2F/a%2Fb%20c");
    assert_int_equal(rmq_queue_depth(c, "my vhost", "q.1", &d), JP_ENOTFOUND);
    last_target(t, sizeof t);
    assert_string_equal(t, "/api/queues/my%20vhost/q.1");
    rmq_client_free(c);
}

struct fault {
    const char *queue;
    int rc;
    const char *detail; /* must appear in rmq_last_error */
};

static const struct fault faults[] = {
    {"html", JP_EPARSE, "not JSON"},
    {"truncated", JP_EPARSE, "not JSON"},
    {"shape_array", JP_ESHAPE, "array"},
    {"shape_string", JP_ESHAPE, "messages_ready is not a number"},
    {"shape_noname", JP_ESHAPE, "name"},
    {"negative", JP_ERANGE, "messages_ready out of range: -5"},
    {"absurd", JP_ERANGE, "out of range"},
    {"fraction", JP_ERANGE, "out of range"},
    {"nostats", JP_ESTALE, "no message counts"},
    {"huge", JP_ETOOBIG, "cap"},
    {"e401", JP_EUNAUTHORIZED, "user \"" USER "\" was not authenticated"},
    {"e403", JP_EFORBIDDEN, "user \"" USER "\" lacks permission"},
    {"missing", JP_ENOTFOUND, "404"},
    {"e500", JP_ESERVER, "http 500"},
    {"e503", JP_ESERVER, "http 503"},
};

static void run_faults(struct rmq_client *c)
{
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        struct rmq_depth d;
        d.ready = 99;
        int rc = rmq_queue_depth(c, "/", faults[i].queue, &d);
        if (rc != faults[i].rc || !strstr(rmq_last_error(c), faults[i].detail))
            fail_msg("%s: got %s \"%s\", want %s \"%s\"", faults[i].queue, jp_errname(rc),
                     rmq_last_error(c), jp_errname(faults[i].rc), faults[i].detail);
        assert_int_equal(d.ready, 0);
        assert_int_equal(d.total, 0);
        assert_non_null(strstr(rmq_last_error(c), "127.0.0.1"));
    }
}

static void test_faults(void **state)
{
    (void)state;
    struct rmq_client *c = client();
    run_faults(c);
    rmq_client_free(c);
}

static void test_drip_times_out(void **state)
{
    (void)state;
    struct rmq_client *c = client(); /* 1.5 s total timeout; the server sends 1 byte a second */
    struct rmq_depth d;
    assert_int_equal(rmq_queue_depth(c, "/", "drip", &d), JP_ETIMEOUT);
    assert_non_null(strstr(rmq_last_error(c), "timed out"));
    rmq_client_free(c);
}

static void test_transport(void **state)
{
    (void)state;
    char url[128];
    struct rmq_depth d;
    struct rmq_client *c;
    timeout_ms = 30000;

    snprintf(url, sizeof url, "http://127.0.0.1:%d", free_port());
    c = client_opts(url, NULL, NULL);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_ECONNREFUSED);
    rmq_client_free(c);

    c = client_opts("http://nonexistent.invalid:15672", NULL, NULL);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_EDNS);
    assert_non_null(strstr(rmq_last_error(c), "nonexistent.invalid"));
    rmq_client_free(c);

    /* https to a plain HTTP port */
    snprintf(url, sizeof url, "https://127.0.0.1:%d", plain.port);
    c = client_opts(url, NULL, NULL);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_ETLS);
    /* OpenSSL's error strings are not loaded (0.6 MiB); the common reasons are spelled out */
    assert_non_null(strstr(rmq_last_error(c), "wrong version number"));
    rmq_client_free(c);

    /* a self-signed certificate is refused by default ... */
    snprintf(url, sizeof url, "https://127.0.0.1:%d", tls.port);
    c = client_opts(url, NULL, NULL);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_ETLS);
    rmq_client_free(c);

    /* ... and accepted when it is the configured CA */
    c = client_opts(url, cert, NULL);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), 0);
    assert_int_equal(d.ready, 12);
    rmq_client_free(c);
    timeout_ms = 1500;
}

static void test_tick_cache(void **state)
{
    (void)state;
    struct rmq_client *c = client();
    struct rmq_depth d;
    rmq_tick_begin(c);
    unsigned long n0 = http_request_count();
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), 0);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), 0);
    assert_int_equal(d.ready, 12);
    assert_int_equal(rmq_queue_depth(c, "/", "e500", &d), JP_ESERVER);
    assert_int_equal(rmq_queue_depth(c, "/", "e500", &d), JP_ESERVER); /* cached error too */
    assert_non_null(strstr(rmq_last_error(c), "http 500"));
    assert_int_equal(http_request_count() - n0, 2);
    rmq_tick_begin(c);
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), 0);
    assert_string_equal(rmq_last_error(c), "");
    assert_int_equal(http_request_count() - n0, 3);
    rmq_client_free(c);
}

static void test_regex(void **state)
{
    (void)state;
    struct rmq_client *c = client();
    struct rmq_depth d;
    assert_int_equal(rmq_watch_regex(c, "paged", "^thumbs\\."), 0);
    assert_int_equal(rmq_watch_regex(c, "paged", "^docs\\."), 0);
    assert_int_equal(rmq_watch_regex(c, "paged", "("), JP_EINVAL);
    rmq_tick_begin(c);
    unsigned long n0 = http_request_count();
    /* The server "ignores" the filter and also sends "other": the client-side check drops it. */
    assert_int_equal(rmq_regex_depth(c, "paged", "^thumbs\\.", &d), 0);
    assert_int_equal(d.ready, 10);
    assert_int_equal(d.unacked, 3);
    assert_int_equal(d.total, 13);
    assert_int_equal(d.consumers, 4);
    assert_int_equal(d.nqueues, 2);
    assert_true(d.publish_rate == -1);
    /* Each match on its own, across pages, sorted by name: the per-queue decision's input. */
    assert_non_null(d.queues);
    assert_string_equal(d.queues[0].name, "thumbs.a");
    assert_int_equal(d.queues[0].ready, 4);
    assert_int_equal(d.queues[0].unacked, 1);
    assert_int_equal(d.queues[0].consumers, 1);
    assert_string_equal(d.queues[1].name, "thumbs.b");
    assert_int_equal(d.queues[1].ready, 6);
    assert_int_equal(d.queues[1].consumers, 3);
    assert_int_equal(rmq_regex_depth(c, "paged", "^docs\\.", &d), 0);
    assert_int_equal(d.ready, 7);
    assert_int_equal(d.nqueues, 1);
    assert_int_equal(http_request_count() - n0, 2); /* two pages, shared by both pools */
    char t[512];
    last_target(t, sizeof t);
    assert_string_equal(t, "/api/queues/paged?page=2&page_size=500&name=%28%5Ethumbs%5C.%29%7C"
                           "%28%5Edocs%5C.%29&use_regex=true&columns=name,messages_ready,"
                           "messages_unacknowledged,messages,consumers");
    rmq_tick_begin(c);
    assert_int_equal(rmq_regex_depth(c, "paged", "^docs\\.", &d), 0);
    assert_int_equal(http_request_count() - n0, 5); /* 2 pages, /_last, 2 pages */

    /* An unannounced regex is registered on first use. */
    assert_int_equal(rmq_regex_depth(c, "paged", "^(thumbs|docs)\\.", &d), 0);
    assert_int_equal(d.ready, 17);
    assert_int_equal(rmq_regex_depth(c, "paged", "[", &d), JP_EINVAL);
    assert_non_null(strstr(rmq_last_error(c), "not a POSIX extended regex"));

    assert_int_equal(rmq_regex_depth(c, "shape", "^thumbs\\.", &d), JP_ESHAPE);
    assert_int_equal(rmq_regex_depth(c, "negative", "^thumbs\\.", &d), JP_ERANGE);
    assert_int_equal(d.ready, 0);
    assert_null(d.queues);
    assert_int_equal(rmq_regex_depth(c, "novhost", "^thumbs\\.", &d), JP_ENOTFOUND);
    assert_int_equal(d.ready, 0);
    rmq_client_free(c);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void test_404_logged_once(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    log_setup(LOG_TEXT, LOG_INFO, f);
    struct rmq_client *c = client();
    struct rmq_depth d;
    for (int i = 0; i < 3; i++) {
        rmq_tick_begin(c);
        assert_int_equal(rmq_queue_depth(c, "/", "missing", &d), JP_ENOTFOUND);
        assert_int_equal(rmq_queue_depth(c, "/", "e500", &d), JP_ESERVER);
    }
    rmq_client_free(c);
    log_setup(LOG_TEXT, LOG_INFO, NULL);
    fclose(f);
    assert_int_equal(count(buf, "not found, reporting depth 0"), 1);
    assert_int_equal(count(buf, "\"e500\" in vhost \"/\" failed"), 1);
    free(buf);
}

static void test_amqp_faults(void **state)
{
    (void)state;
    char url[64], aurl[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", plain.port);
    snprintf(aurl, sizeof aurl, "amqp://127.0.0.1:%d/", free_port());
    struct rmq_client *c = client_opts(url, NULL, aurl);
    struct rmq_depth d;
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_ECONNREFUSED);
    assert_int_equal(d.ready, 0);
    rmq_client_free(c);
    c = client_opts(url, NULL, "amqp://nonexistent.invalid:5672/");
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_EDNS);
    rmq_client_free(c);
    c = client_opts(url, NULL, "http://not-amqp/");
    assert_int_equal(rmq_queue_depth(c, "/", "ok", &d), JP_EINVAL);
    rmq_client_free(c);
}

/* Every fault again, with the password also inside the URL, logging everything at debug with
 * the logger's own masking switched off: neither a log line nor an error string may hold it. */
static void test_password_never_shown(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    struct dbuf errs;
    dbuf_init(&errs, 1 << 20);
    log_setup(LOG_TEXT, LOG_DEBUG, f);
    char url[128];
    snprintf(url, sizeof url, "http://%s:%s@127.0.0.1:%d", USER, PASS, plain.port);
    struct rmq_client *c;
    struct rmq_depth d;
    /* Round 0 and 1 read each queue with its own GET (a fresh client has registered too few
     * queues for a listing); round 2 has them all registered, so one vhost listing is tried
     * (the fake server answers it 404) and its error must hide the password too. */
    for (int round = 0; round < 3; round++) {
        c = client_opts(url, NULL, NULL);
        log_clear_secrets();
        for (size_t i = 0; round == 2 && i < sizeof faults / sizeof faults[0]; i++)
            assert_int_equal(rmq_watch_queue(c, "/", faults[i].queue), 0);
        rmq_tick_begin(c);
        if (round < 2) run_faults(c);
        for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
            rmq_queue_depth(c, "/", faults[i].queue, &d);
            assert_int_equal(dbuf_printf(&errs, "%s\n", rmq_last_error(c)), 0);
        }
        if (round == 2) assert_non_null(strstr(rmq_last_error(c), "page_size=500&columns="));
        rmq_regex_depth(c, "negative", "^thumbs\\.", &d);
        assert_int_equal(dbuf_printf(&errs, "%s\n", rmq_last_error(c)), 0);
        rmq_client_free(c);
    }
    char aurl[128];
    snprintf(aurl, sizeof aurl, "amqp://%s:%s@127.0.0.1:%d/", USER, PASS, free_port());
    snprintf(url, sizeof url, "http://127.0.0.1:%d", plain.port);
    c = client_opts(url, NULL, aurl);
    log_clear_secrets();
    rmq_queue_depth(c, "/", "ok", &d);
    assert_int_equal(dbuf_printf(&errs, "%s\n", rmq_last_error(c)), 0);
    rmq_client_free(c);
    log_setup(LOG_TEXT, LOG_INFO, NULL);
    fclose(f);
    assert_true(len > 0);
    assert_non_null(strstr(buf, USER));            /* the user is named ... */
    assert_non_null(strstr(errs.data, "***@127.0.0.1")); /* ... the URL's password masked */
    if (strstr(buf, PASS)) fail_msg("password in a log line:\n%s", buf);
    if (strstr(errs.data, PASS)) fail_msg("password in an error string:\n%s", errs.data);
    free(buf);
    dbuf_free(&errs);
}

static void test_client_new_errors(void **state)
{
    (void)state;
    struct cfg_rabbitmq cfg = {.management_url = "ftp://x", .username = {.env = "RMQ_TEST_USER"}};
    struct rmq_client *c = (struct rmq_client *)&cfg;
    assert_int_equal(rmq_client_new(&cfg, &c), JP_EINVAL);
    assert_null(c);
    cfg.management_url = "http://127.0.0.1:1";
    cfg.password.env = "RMQ_TEST_NO_SUCH_VARIABLE";
    assert_int_equal(rmq_client_new(&cfg, &c), JP_ENOTFOUND);
    assert_null(c);
    rmq_client_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_drip_times_out),
        cmocka_unit_test(test_transport),
        cmocka_unit_test(test_tick_cache),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_404_logged_once),
        cmocka_unit_test(test_amqp_faults),
        cmocka_unit_test(test_password_never_shown),
        cmocka_unit_test(test_client_new_errors),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
