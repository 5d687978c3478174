/* test_conns.c: a JobPool's own broker connection. The Secret's data: the keys, KEDA's host,
 * the login from URL user info, every malformed value named by its key and never quoted. And
 * the set: Secrets read by name only, when due; one client per distinct connection, shared and
 * freed when no pool names it; not found, forbidden and invalid give their reasons and recover;
 * a transient failure keeps the good connection; no password reaches the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conns.h"
#include "err.h"
#include "kube.h"
#include "log.h"

static void b64(const char *in, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), k = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[k++] = t[(v >> 18) & 63];
        out[k++] = t[(v >> 12) & 63];
        out[k++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[k] = '\0';
}

/* A Secret object from key, value pairs (NULL-terminated); values are encoded here. */
static cJSON *secret_v(const char *rv, va_list ap)
{
    cJSON *s = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(s, "metadata");
    cJSON_AddStringToObject(md, "resourceVersion", rv);
    cJSON *data = cJSON_AddObjectToObject(s, "data");
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        char enc[4096];
        b64(v, enc);
        cJSON_AddStringToObject(data, k, enc);
    }
    return s;
}

static cJSON *secret(const char *rv, ...)
{
    va_list ap;
    va_start(ap, rv);
    cJSON *s = secret_v(rv, ap);
    va_end(ap);
    return s;
}

static int parse(cJSON *s, struct conn_spec *out, char *err, size_t len)
{
    int rc = conn_parse_secret(s, out, err, len);
    cJSON_Delete(s);
    return rc;
}

#define PEM_CERT "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
#define PEM_KEY "-----BEGIN PRIVATE KEY-----\nhunter2\n-----END PRIVATE KEY-----\n"

static void test_parse_keys(void **state)
{
    (void)state;
    struct conn_spec c;
    char err[256];
    /* The documented keys. */
    assert_int_equal(parse(secret("1", "managementUrl", "http://rmq.media:15672",
                                  "amqpUrl", "amqp://rmq.media:5672/media", "username", "thumbs",
                                  "password", "s3cret\n", NULL), &c, err, sizeof err), 0);
    assert_string_equal(c.management_url, "http://rmq.media:15672");
    assert_string_equal(c.amqp_url, "amqp://rmq.media:5672/media");
    assert_string_equal(c.vhost, "media");
    assert_string_equal(c.username, "thumbs");
    assert_string_equal(c.password, "s3cret");   /* the file's newline is not the password */
    assert_string_equal(c.amqp_key, "amqpUrl");
    assert_false(c.login_in_url);
    assert_null(c.ca_pem);
    conn_spec_free(&c);

    /* KEDA's host with the login inside, next to a managementUrl: the login comes from the URL,
     * and neither URL keeps it; %2f is the default vhost "/". */
    assert_int_equal(parse(secret("1", "host", "amqps://us%40r:p%3Ass@rmq:5671/%2f",
                                  "managementUrl", "https://rmq:15671/", NULL), &c, err,
                           sizeof err), 0);
    assert_string_equal(c.amqp_url, "amqps://rmq:5671/%2f");
    assert_string_equal(c.management_url, "https://rmq:15671/");
    assert_string_equal(c.vhost, "/");
    assert_string_equal(c.username, "us@r");
    assert_string_equal(c.password, "p:ss");
    assert_string_equal(c.amqp_key, "host");
    assert_true(c.login_in_url);
    conn_spec_free(&c);

    /* host as the management URL; no AMQP URL (workers get theirs from the template). */
    assert_int_equal(parse(secret("1", "host", "http://u:p@[::1]:15672", NULL), &c, err,
                           sizeof err), 0);
    assert_string_equal(c.management_url, "http://[::1]:15672");
    assert_null(c.amqp_url);
    assert_null(c.vhost);
    assert_null(c.amqp_key);
    assert_string_equal(c.username, "u");
    conn_spec_free(&c);

    /* A CA. */
    assert_int_equal(parse(secret("1", "managementUrl", "https://r", "username", "u", "password",
                                  "p", "ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n"
                                  "-----END CERTIFICATE-----\n", NULL), &c, err, sizeof err), 0);
    assert_non_null(strstr(c.ca_pem, "BEGIN CERTIFICATE"));
    assert_null(c.cert_pem);
    assert_null(c.key_pem);
    conn_spec_free(&c);

    /* A client certificate (mutual TLS): tls.crt and tls.key, as a kubernetes.io/tls Secret. */
    assert_int_equal(parse(secret("1", "managementUrl", "https://r", "amqpUrl", "amqps://r",
                                  "username", "u", "password", "p", "tls.crt", PEM_CERT,
                                  "tls.key", PEM_KEY, NULL), &c, err, sizeof err), 0);
    assert_non_null(strstr(c.cert_pem, "BEGIN CERTIFICATE"));
    assert_non_null(strstr(c.key_pem, "BEGIN PRIVATE KEY"));
    conn_spec_free(&c);
    /* An EC or RSA key in its own PEM form is a private key too; amqps:// alone is TLS enough. */
    assert_int_equal(parse(secret("1", "managementUrl", "http://r", "amqpUrl", "amqps://r",
                                  "username", "u", "password", "p", "tls.crt", PEM_CERT,
                                  "tls.key", "-----BEGIN EC PRIVATE KEY-----\nx\n"
                                  "-----END EC PRIVATE KEY-----\n", NULL), &c, err, sizeof err), 0);
    conn_spec_free(&c);
}

static void want_err(cJSON *s, const char *want)
{
    struct conn_spec c;
    char err[256];
    assert_int_equal(parse(s, &c, err, sizeof err), JP_ECONFIG);
    if (!strstr(err, want)) fail_msg("error \"%s\" does not say \"%s\"", err, want);
    assert_null(strstr(err, "hunter2"));        /* a value is never quoted */
    assert_null(c.management_url);
    assert_null(c.password);
}

static void test_parse_errors(void **state)
{
    (void)state;
    cJSON *nodata = cJSON_Parse("{\"metadata\":{}}");
    want_err(nodata, "it has no data");
    want_err(secret("1", "amqpUrl", "amqp://r", "username", "u", "password", "hunter2", NULL),
             "key managementUrl: required");
    want_err(secret("1", "managementUrl", "ftp://hunter2@r", "username", "u", "password", "p",
                    NULL), "key managementUrl: not an http:// or https:// URL");
    want_err(secret("1", "managementUrl", "http://r", "amqpUrl", "http://hunter2@r",
                    "username", "u", "password", "p", NULL),
             "key amqpUrl: not an amqp:// or amqps:// URL");
    want_err(secret("1", "host", "redis://hunter2@r", NULL),
             "key host: not an amqp[s]:// or http[s]:// URL");
    want_err(secret("1", "managementUrl", "http://:15672", "username", "u", "password",
                    "hunter2", NULL), "key managementUrl: no host");
    want_err(secret("1", "managementUrl", "http://r:99999", "username", "u", "password", "p",
                    NULL), "bad port");
    want_err(secret("1", "managementUrl", "http://r:1x", "username", "u", "password", "p",
                    NULL), "bad port");
    want_err(secret("1", "managementUrl", "http://[::1]x:1", "username", "u", "password", "p",
                    NULL), "key managementUrl: no host");
    want_err(secret("1", "managementUrl", "http://[]:1", "username", "u", "password", "p",
                    NULL), "key managementUrl: no host");
    want_err(secret("1", "managementUrl", "http://[::1", "username", "u", "password", "p",
                    NULL), "key managementUrl: no host");
    want_err(secret("1", "managementUrl", "http://[::1]:", "username", "u", "password", "p",
                    NULL), "bad port");
    want_err(secret("1", "managementUrl", "http://r:0", "username", "u", "password", "p",
                    NULL), "bad port");
    want_err(secret("1", "managementUrl", "http://r hunter2", "username", "u", NULL),
             "key managementUrl: holds a space");
    want_err(secret("1", "managementUrl", "http://r", "amqpUrl", "amqp://u:hunter2%zz@r",
                    NULL), "key amqpUrl: a broken %-escape");
    want_err(secret("1", "managementUrl", "http://r", "amqpUrl", "amqp://r/%00", "username",
                    "u", "password", "p", NULL), "key amqpUrl: a broken %-escape");
    want_err(secret("1", "managementUrl", "http://r", NULL), "key username: required");
    /* The login in the management URL does not reach workers that get the AMQP URL. */
    want_err(secret("1", "managementUrl", "http://u:hunter2@r", "amqpUrl", "amqp://r", NULL),
             "key username: required (or the login as user info in the amqpUrl URL)");
    want_err(secret("1", "managementUrl", "http://r", "username", "u", NULL),
             "key password: required with key username");
    want_err(secret("1", "managementUrl", "http://r", "password", "hunter2", NULL),
             "key username: required with key password");
    want_err(secret("1", "managementUrl", "http://r", "username", "", "password", "p", NULL),
             "key username: empty");
    want_err(secret("1", "managementUrl", "http://r", "username", "u", "password", "p",
                    "ca.crt", "hunter2", NULL), "key ca.crt: not a PEM certificate");
    want_err(secret("1", "managementUrl", "https://r", "username", "u", "password", "p",
                    "tls.crt", PEM_CERT, NULL), "key tls.key: required with key tls.crt");
    want_err(secret("1", "managementUrl", "https://r", "username", "u", "password", "p",
                    "tls.key", PEM_KEY, NULL), "key tls.crt: required with key tls.key");
    want_err(secret("1", "managementUrl", "https://r", "username", "u", "password", "p",
                    "tls.crt", "hunter2", "tls.key", PEM_KEY, NULL),
             "key tls.crt: not a PEM certificate");
    want_err(secret("1", "managementUrl", "https://r", "username", "u", "password", "p",
                    "tls.crt", PEM_CERT, "tls.key", "hunter2", NULL),
             "key tls.key: not a PEM private key");
    want_err(secret("1", "managementUrl", "https://r", "username", "u", "password", "p",
                    "tls.crt", PEM_CERT, "tls.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
                    "hunter2\n-----END ENCRYPTED PRIVATE KEY-----\n", NULL),
             "key tls.key: an encrypted private key; store it unencrypted");
    want_err(secret("1", "managementUrl", "http://r", "amqpUrl", "amqp://r", "username", "u",
                    "password", "p", "tls.crt", PEM_CERT, "tls.key", PEM_KEY, NULL),
             "key tls.crt: a client certificate needs an amqps:// or https:// URL");
    want_err(cJSON_Parse("{\"data\":{\"managementUrl\":\"!!!\"}}"), "key managementUrl: not base64");
    want_err(cJSON_Parse("{\"data\":{\"managementUrl\":5}}"), "key managementUrl: not a string");
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "http://", 7);
    want_err(secret("1", "managementUrl", big, NULL), "key managementUrl: longer than 2048");
}

/* ---- the set, against an API server answered from here ----------------------------------- */

static cJSON *g_secrets[4];     /* what GET answers for names s0..s3; NULL: 404 */
static int g_forbid;            /* answer 403 */
static int g_fail;              /* answer a timeout */
static int g_gets;
static char g_path[256];

int __wrap_kube_request(struct kube_client *c, const char *method, const char *path,
                        const char *body, cJSON **out);
int __wrap_kube_request(struct kube_client *c, const char *method, const char *path,
                        const char *body, cJSON **out)
{
    (void)c;
    (void)body;
    *out = NULL;
    assert_string_equal(method, "GET");
    snprintf(g_path, sizeof g_path, "%s", path);
    g_gets++;
    if (g_forbid) return JP_EFORBIDDEN;
    if (g_fail) return JP_ETIMEOUT;
    const char *p = strstr(path, "/secrets/s");
    if (!p || p[10] < '0' || p[10] > '3' || !g_secrets[p[10] - '0']) return JP_ENOTFOUND;
    *out = cJSON_Duplicate(g_secrets[p[10] - '0'], 1);
    return 0;
}

const char *__wrap_kube_last_error(const struct kube_client *c);
const char *__wrap_kube_last_error(const struct kube_client *c)
{
    (void)c;
    return "GET: timed out";
}

static void set_secret(int i, cJSON *s)
{
    cJSON_Delete(g_secrets[i]);
    g_secrets[i] = s;
}

static int get(struct conns *C, const char *ns, const char *name, int64_t now,
               struct conn_use *u, char *reason)
{
    char msg[512];
    reason[0] = '\0';
    int rc = conns_get(C, ns, name, now, u, reason, 40, msg, sizeof msg);
    if (rc) assert_non_null(strstr(msg, name));
    return rc;
}

static void test_set(void **state)
{
    (void)state;
    struct cfg_rabbitmq base = {.timeout_ms = 1000};
    struct conns *C = NULL;
    assert_int_equal(conns_new(NULL, &base, &C), 0);
    set_secret(0, secret("1", "managementUrl", "http://127.0.0.1:1", "amqpUrl",
                         "amqp://127.0.0.1:1/v", "username", "u", "password", "pw-one", NULL));
    set_secret(1, cJSON_Duplicate(g_secrets[0], 1));    /* the same login, another Secret */
    set_secret(2, secret("1", "host", "amqp://k:pw-two@127.0.0.1:1", "managementUrl",
                         "http://127.0.0.1:1", NULL));
    struct conn_use a, b, c;
    char reason[40];
    conns_begin(C);
    assert_int_equal(get(C, "ns1", "s0", 0, &a, reason), 0);
    assert_string_equal(g_path, "/api/v1/namespaces/ns1/secrets/s0"); /* by name, nothing else */
    assert_int_equal(get(C, "ns2", "s1", 0, &b, reason), 0);
    assert_int_equal(get(C, "ns2", "s2", 0, &c, reason), 0);
    conns_end(C);
    struct conns_stats st;
    conns_get_stats(C, &st);
    assert_int_equal(st.secrets, 3);
    assert_int_equal(st.clients, 2);                   /* s0 and s1 share one */
    assert_ptr_equal(a.rmq, b.rmq);
    assert_ptr_not_equal(a.rmq, c.rmq);
    assert_string_equal(a.vhost, "v");
    /* Workers: the URL as a value and the login by reference, or the URL by reference when
     * the login is inside it. */
    assert_string_equal(a.worker->amqp_url, "amqp://127.0.0.1:1/v");
    assert_string_equal(a.worker->secret, "s0");
    assert_string_equal(a.worker->username_key, "username");
    assert_null(a.worker->amqp_url_key);
    assert_string_equal(b.worker->secret, "s1");
    assert_string_equal(c.worker->amqp_url_key, "host");
    assert_string_equal(c.worker->secret, "s2");
    assert_int_equal(g_gets, 3);

    /* Within four fifths of CONNS_REREAD_MS nothing is read again; a pool asking again gets
     * the same. */
    int64_t early = CONNS_REREAD_MS * 4 / 5 - 1;
    conns_begin(C);
    assert_int_equal(get(C, "ns1", "s0", early, &a, reason), 0);
    assert_int_equal(get(C, "ns2", "s1", early, &b, reason), 0);
    assert_int_equal(get(C, "ns2", "s2", early, &c, reason), 0);
    conns_end(C);
    assert_int_equal(g_gets, 3);

    /* s1 no longer named by any pool: forgotten; its client stays for s0. s2's Secret is
     * deleted: not found at the next read, and its client is freed. */
    set_secret(2, NULL);
    conns_begin(C);
    assert_int_equal(get(C, "ns1", "s0", CONNS_REREAD_MS, &a, reason), 0);
    assert_int_equal(get(C, "ns2", "s2", CONNS_REREAD_MS, &c, reason), JP_ENOTFOUND);
    assert_string_equal(reason, "ConnectionSecretNotFound");
    assert_null(c.rmq);
    conns_end(C);
    conns_get_stats(C, &st);
    assert_int_equal(st.secrets, 2);
    assert_int_equal(st.clients, 1);

    /* Invalid, then fixed: tried again after CONNS_RETRY_MS, and served again. */
    set_secret(2, secret("2", "amqpUrl", "amqp://127.0.0.1:1", "username", "u", "password",
                         "pw-three", NULL));
    int64_t t = CONNS_REREAD_MS + CONNS_RETRY_MS;
    conns_begin(C);
    assert_int_equal(get(C, "ns2", "s2", t, &c, reason), JP_ECONFIG);
    assert_string_equal(reason, "ConnectionSecretInvalid");
    assert_int_equal(get(C, "ns1", "s0", t, &a, reason), 0);
    conns_end(C);
    set_secret(2, secret("3", "managementUrl", "http://127.0.0.1:1", "amqpUrl",
                         "amqp://127.0.0.1:1", "username", "u", "password", "pw-three", NULL));
    conns_begin(C);
    assert_int_equal(get(C, "ns2", "s2", t + CONNS_RETRY_MS - 1, &c, reason), JP_ECONFIG);
    assert_int_equal(get(C, "ns2", "s2", t + CONNS_RETRY_MS, &c, reason), 0);
    assert_non_null(c.rmq);
    assert_null(c.vhost);
    assert_int_equal(get(C, "ns1", "s0", t, &a, reason), 0);
    conns_end(C);

    /* A timeout keeps the good connection; 403 drops it, with a reason that says RBAC. */
    t += 2 * CONNS_REREAD_MS;
    g_fail = 1;
    conns_begin(C);
    assert_int_equal(get(C, "ns1", "s0", t, &a, reason), 0);
    assert_non_null(a.rmq);
    g_fail = 0;
    g_forbid = 1;
    assert_int_equal(get(C, "ns2", "s2", t, &c, reason), JP_EFORBIDDEN);
    assert_string_equal(reason, "ConnectionSecretForbidden");
    conns_end(C);
    g_forbid = 0;

    /* Nothing asks any more: everything is freed. */
    conns_begin(C);
    conns_end(C);
    conns_get_stats(C, &st);
    assert_int_equal(st.secrets, 0);
    assert_int_equal(st.clients, 0);
    conns_free(C);
    for (int i = 0; i < 4; i++) set_secret(i, NULL);
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) != -1) n++;
    return n;
}

/* ca.crt: the client trusts it (held in memory: the root filesystem is read-only) and the
 * workers mount the JobPool's Secret for it; the copy goes with the client. */
static void test_ca(void **state)
{
    (void)state;
    struct cfg_rabbitmq base = {.timeout_ms = 1000};
    struct conns *C = NULL;
    assert_int_equal(conns_new(NULL, &base, &C), 0);
    set_secret(1, secret("1", "managementUrl", "https://127.0.0.1:1", "amqpUrl",
                         "amqps://127.0.0.1:1", "username", "u", "password", "p", "ca.crt",
                         "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                         NULL));
    int fds = open_fds();
    struct conn_use u;
    char reason[40];
    conns_begin(C);
    assert_int_equal(get(C, "ns", "s1", 0, &u, reason), 0);
    conns_end(C);
    assert_string_equal(u.worker->ca_secret, "s1");
    assert_string_equal(u.worker->ca_key, "ca.crt");
    assert_int_equal(open_fds(), fds + 1);                /* the in-memory copy */
    /* A Secret without one: no CA for the workers either. */
    set_secret(1, secret("2", "managementUrl", "https://127.0.0.1:1", "amqpUrl",
                         "amqps://127.0.0.1:1", "username", "u", "password", "p", NULL));
    conns_begin(C);
    assert_int_equal(get(C, "ns", "s1", CONNS_REREAD_MS, &u, reason), 0);
    conns_end(C);
    assert_null(u.worker->ca_secret);
    assert_int_equal(open_fds(), fds);                    /* the old client closed it */
    conns_begin(C);
    conns_end(C);
    conns_free(C);
    set_secret(1, NULL);
}

/* tls.crt and tls.key: the client presents them (in-memory copies, like the CA's) and workers
 * mount the Secret for them when they reach the broker over amqps://; a Secret that drops them
 * drops the copies with its old client. */
static void test_client_cert(void **state)
{
    (void)state;
    struct cfg_rabbitmq base = {.timeout_ms = 1000, .cert_file = "/controller/own.crt",
                                .key_file = "/controller/own.key"};
    struct conns *C = NULL;
    assert_int_equal(conns_new(NULL, &base, &C), 0);
    set_secret(1, secret("1", "managementUrl", "https://127.0.0.1:1", "amqpUrl",
                         "amqps://127.0.0.1:1", "username", "u", "password", "p", "tls.crt",
                         PEM_CERT, "tls.key", PEM_KEY, NULL));
    int fds = open_fds();
    struct conn_use u;
    char reason[40];
    conns_begin(C);
    assert_int_equal(get(C, "ns", "s1", 0, &u, reason), 0);
    conns_end(C);
    assert_string_equal(u.worker->cert_secret, "s1");
    assert_string_equal(u.worker->cert_key, "tls.crt");
    assert_string_equal(u.worker->key_key, "tls.key");
    assert_null(u.worker->ca_secret);
    assert_int_equal(open_fds(), fds + 2);                /* the certificate and the key */
    /* The management URL over TLS, the AMQP one not: the controller presents it on the first,
     * the workers get none (over amqp:// they would refuse it). */
    set_secret(1, secret("2", "managementUrl", "https://127.0.0.1:1", "amqpUrl",
                         "amqp://127.0.0.1:1", "username", "u", "password", "p", "tls.crt",
                         PEM_CERT, "tls.key", PEM_KEY, NULL));
    conns_begin(C);
    assert_int_equal(get(C, "ns", "s1", CONNS_REREAD_MS, &u, reason), 0);
    conns_end(C);
    assert_null(u.worker->cert_secret);
    assert_int_equal(open_fds(), fds + 2);
    /* Dropped from the Secret: gone for the workers, and the copies are closed. The
     * controller's own certificate (for its own broker) is never handed to a JobPool's. */
    set_secret(1, secret("3", "managementUrl", "https://127.0.0.1:1", "amqpUrl",
                         "amqps://127.0.0.1:1", "username", "u", "password", "p", NULL));
    conns_begin(C);
    assert_int_equal(get(C, "ns", "s1", 2 * CONNS_REREAD_MS, &u, reason), 0);
    conns_end(C);
    assert_null(u.worker->cert_secret);
    assert_int_equal(open_fds(), fds);
    conns_begin(C);
    conns_end(C);
    conns_free(C);
    set_secret(1, NULL);
}

/* A password read from a Secret is masked in the log while its client lives. */
static void test_password_masked(void **state)
{
    (void)state;
    log_clear_secrets();
    struct cfg_rabbitmq base = {.timeout_ms = 1000};
    struct conns *C = NULL;
    assert_int_equal(conns_new(NULL, &base, &C), 0);
    set_secret(3, secret("1", "managementUrl", "http://127.0.0.1:1", "username", "u",
                         "password", "masked-pw", NULL));
    struct conn_use u;
    char reason[40];
    conns_begin(C);
    assert_int_equal(get(C, "ns", "s3", 0, &u, reason), 0);
    conns_end(C);
    assert_int_equal(log_secret_count(), 1);
    conns_begin(C);
    conns_end(C);
    assert_int_equal(log_secret_count(), 0);
    conns_free(C);
    set_secret(3, NULL);
}

int main(void)
{
    log_setup(LOG_TEXT, LOG_DEBUG, stderr);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_keys),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_ca),
        cmocka_unit_test(test_client_cert),
        cmocka_unit_test(test_password_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
