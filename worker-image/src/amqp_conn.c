/* amqp_conn.c: the worker's only librabbitmq user: connect, take one message, ack or requeue it. */
#define _GNU_SOURCE
#include "amqp_conn.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h> /* only to say why librabbitmq's TLS socket failed */
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACONN_CHANNEL 1
#define ACONN_FRAME_MAX 131072
#define ACONN_ATTEMPT_HEADER "x-jobpool-attempt"
#define ACONN_REDELIVERED_HEADER "x-jobpool-redelivered"
#define ACONN_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

struct aconn {
    amqp_connection_state_t conn;
    char *queue;
    char *vhost;
    char *host;
    amqp_bytes_t consumer_tag; /* malloc'd; empty when no consumer is active */
    int64_t timeout_ms;
    bool alive;                /* the connection and channel are usable */
    bool channel_open;
    bool confirms;             /* confirm.select was done on the channel */
    bool revoked;              /* the broker closed the channel for a delivery timeout (406) */
    void (*on_consuming)(void *arg);
    void *on_consuming_arg;
};

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* Remember the password (decoded and as written in the URL) so no log line can show it. */
static void register_url_secrets(const char *url, const char *decoded_pass)
{
    log_add_secret(decoded_pass);
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t authlen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + authlen; p++)
        if (*p == '@') at = p;
    if (!at) return;
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (!colon || at - colon - 1 <= 0) return;
    char raw[512];
    size_t n = (size_t)(at - colon - 1);
    if (n >= sizeof raw) n = sizeof raw - 1;
    memcpy(raw, colon + 1, n);
    raw[n] = '\0';
    log_add_secret(raw);
}

int aconn_parse_url(const char *url, struct aconn_url *out)
{
    memset(out, 0, sizeof *out);
    amqp_default_connection_info(&out->info);
    if (!url) return JP_EINVAL;
    if (!(out->buf = strdup(url))) return JP_ENOMEM;
    bool scheme_ok = strncmp(url, "amqp://", 7) == 0 || strncmp(url, "amqps://", 8) == 0;
    int st = scheme_ok ? amqp_parse_url(out->buf, &out->info) : AMQP_STATUS_BAD_URL;
    register_url_secrets(url, st == AMQP_STATUS_OK ? out->info.password : NULL);
    if (st != AMQP_STATUS_OK || !out->info.host || !*out->info.host) {
        char red[512];
        log_error("bad broker url '%s': want amqp[s]://user:pass@host[:port]/vhost",
                  log_redact_url(url, red, sizeof red));
        return JP_ECONFIG;
    }
    return 0;
}

void aconn_url_free(struct aconn_url *u)
{
    if (!u) return;
    if (u->buf) explicit_bzero(u->buf, strlen(u->buf));
    free(u->buf);
    memset(u, 0, sizeof *u);
}

static void mark_lost(struct aconn *c)
{
    c->alive = false;
    c->channel_open = false;
}

/* Answer a broker-initiated close (connection or channel) and log its reason. */
static void handle_close_method(struct aconn *c, const amqp_method_t *m, const char *what)
{
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *cc = m->decoded;
        log_error("%s: broker closed the connection: %d %.*s", what, cc->reply_code,
                  (int)cc->reply_text.len, (const char *)cc->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *cc = m->decoded;
        log_error("%s: broker closed the channel: %d %.*s", what, cc->reply_code,
                  (int)cc->reply_text.len, (const char *)cc->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(c->conn, ACONN_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    }
    mark_lost(c);
}

/* Check an RPC reply; on failure log one line naming `what`, classify it and return a code. */
static int reply_check(struct aconn *c, amqp_rpc_reply_t r, const char *what, enum aconn_fail *fail)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        log_error("%s: no reply from the broker", what);
        mark_lost(c);
        *fail = ACONN_FAIL_BROKER;
        return JP_EAMQP;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        log_error("%s: %s", what, amqp_error_string2(r.library_error));
        mark_lost(c);
        *fail = ACONN_FAIL_BROKER;
        return r.library_error == AMQP_STATUS_TIMEOUT ? JP_ETIMEOUT : JP_ENETWORK;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    int code = 0;
    amqp_bytes_t text = amqp_empty_bytes;
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *cc = r.reply.decoded;
        code = cc->reply_code;
        text = cc->reply_text;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *cc = r.reply.decoded;
        code = cc->reply_code;
        text = cc->reply_text;
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(c->conn, ACONN_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    }
    mark_lost(c);
    int rc = JP_EAMQP;
    *fail = ACONN_FAIL_BROKER;
    if (code == AMQP_NOT_FOUND) {
        *fail = ACONN_FAIL_INPUT;
        rc = JP_ENOTFOUND;
        log_error("%s: queue '%s' does not exist in vhost '%s' (%d %.*s)", what, c->queue, c->vhost,
                  code, (int)text.len, (const char *)text.bytes);
    } else if (code == AMQP_ACCESS_REFUSED || code == AMQP_NOT_ALLOWED) {
        *fail = ACONN_FAIL_INPUT;
        rc = JP_EACCESS;
        log_error("%s: access refused for vhost '%s' on %s (%d %.*s)", what, c->vhost, c->host, code,
                  (int)text.len, (const char *)text.bytes);
    } else {
        log_error("%s: broker error %d %.*s", what, code, (int)text.len, (const char *)text.bytes);
    }
    return rc;
}

/* OpenSSL's first reason for the TLS failure that librabbitmq just reported as one status
 * ("key values mismatch", "tlsv13 alert certificate required"); "" when it left none. */
static const char *tls_reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_error());
    return r ? r : "";
}

/* The TLS alert the broker ended the session with ("tlsv13 alert certificate required"), or
 * NULL when OpenSSL saw none. */
static const char *tls_alert(void)
{
    unsigned long e = ERR_peek_error();
    if (ERR_GET_LIB(e) != ERR_LIB_SSL || ERR_GET_REASON(e) < SSL_AD_REASON_OFFSET) return NULL;
    return tls_reason();
}

/* The broker refused this client at the TLS layer: it wants a client certificate, or does not
 * trust the one given. A retry meets the same refusal, so this is bad input. */
static void log_tls_refused(const struct amqp_connection_info *info,
                            const struct aconn_opts *opts, const char *why)
{
    if (opts->cert_file)
        log_error("tls: the broker at %s:%d refused the handshake: %s (client certificate %s)",
                  info->host, info->port, why, opts->cert_file);
    else
        log_error("tls: the broker at %s:%d refused the handshake: %s (no client certificate "
                  "given: see --cert-file and --key-file)", info->host, info->port, why);
}

/* Load the client certificate and key into sock. A readable file that will not load gets
 * librabbitmq's status and OpenSSL's reason, which says which part failed. */
static int load_client_cert(amqp_socket_t *sock, const struct aconn_opts *opts)
{
    const char *const files[] = {opts->cert_file, opts->key_file};
    const char *const names[] = {"client certificate", "client key"};
    for (int i = 0; i < 2; i++)
        if (access(files[i], R_OK) != 0) {
            log_error("cannot read %s %s: %s", names[i], files[i], strerror(errno));
            return JP_ECONFIG;
        }
    /* Without a password set, OpenSSL prompts on the terminal for an encrypted key; with an
     * empty one it fails at once ("bad decrypt"). */
    amqp_ssl_socket_set_key_passwd(sock, "");
    ERR_clear_error();
    int st = amqp_ssl_socket_set_key(sock, opts->cert_file, opts->key_file);
    if (st != AMQP_STATUS_OK) {
        log_error("cannot load client certificate %s with key %s: %s (%s); the key must be "
                  "unencrypted PEM and match the certificate", opts->cert_file, opts->key_file,
                  amqp_error_string2(st), tls_reason());
        return JP_ECONFIG;
    }
    return 0;
}

/* A TLS socket that verifies the broker's certificate and name, with the client certificate
 * when one is given. */
static int tls_socket(struct aconn *c, const struct aconn_opts *opts, amqp_socket_t **out,
                      enum aconn_fail *fail)
{
    *out = NULL;
    amqp_socket_t *sock = amqp_ssl_socket_new(c->conn);
    if (!sock) {
        log_error("cannot create a tls socket");
        *fail = ACONN_FAIL_BROKER;
        return JP_ENOMEM;
    }
    *fail = ACONN_FAIL_INPUT;
    const char *ca = opts->ca_file;
    if (!ca && access(ACONN_SYSTEM_CA, R_OK) == 0) ca = ACONN_SYSTEM_CA;
    if (!ca) {
        log_error("amqps needs a CA file: give --ca-file or JOBPOOL_CA_FILE");
        return JP_ECONFIG;
    }
    int st = amqp_ssl_socket_set_cacert(sock, ca);
    if (st != AMQP_STATUS_OK) {
        log_error("cannot load CA file %s: %s", ca, amqp_error_string2(st));
        return JP_ECONFIG;
    }
    int rc = opts->cert_file ? load_client_cert(sock, opts) : 0;
    if (rc) return rc;
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, 1);
    *out = sock;
    return 0;
}

static int connect_socket(struct aconn *c, const struct amqp_connection_info *info,
                          const struct aconn_opts *opts, enum aconn_fail *fail)
{
    amqp_socket_t *sock;
    if (info->ssl) {
        int rc = tls_socket(c, opts, &sock, fail);
        if (rc) return rc;
    } else if (opts->cert_file) {
        log_error("a client certificate needs amqps://: the broker url is amqp://");
        *fail = ACONN_FAIL_INPUT;
        return JP_ECONFIG;
    } else {
        sock = amqp_tcp_socket_new(c->conn);
        if (!sock) {
            log_error("cannot create a socket");
            *fail = ACONN_FAIL_BROKER;
            return JP_ENOMEM;
        }
    }
    struct timeval tv = ms_to_tv(opts->timeout_ms);
    ERR_clear_error();
    int st = amqp_socket_open_noblock(sock, info->host, info->port, &tv);
    if (st == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED || st == AMQP_STATUS_SSL_PEER_VERIFY_FAILED) {
        /* A certificate that does not verify will not verify on a retry either. */
        log_error("tls: the certificate of %s:%d does not verify against %s: %s", info->host,
                  info->port, opts->ca_file ? opts->ca_file : ACONN_SYSTEM_CA,
                  amqp_error_string2(st));
        *fail = ACONN_FAIL_INPUT;
        return JP_ETLS;
    }
    /* TLS 1.2 refuses a client certificate (or its lack) inside the handshake, with an alert. */
    const char *alert = st == AMQP_STATUS_SSL_CONNECTION_FAILED ? tls_alert() : NULL;
    if (alert) {
        log_tls_refused(info, opts, alert);
        *fail = ACONN_FAIL_INPUT;
        return JP_ETLS;
    }
    if (st != AMQP_STATUS_OK) {
        log_error("cannot connect to %s:%d: %s", info->host, info->port, amqp_error_string2(st));
        *fail = ACONN_FAIL_BROKER;
        return st == AMQP_STATUS_TIMEOUT ? JP_ETIMEOUT
             : (st <= AMQP_STATUS_SSL_ERROR && st >= AMQP_STATUS_SSL_SET_ENGINE_FAILED) ? JP_ETLS
             : JP_ECONNREFUSED;
    }
    /* The task must not inherit the broker socket. */
    int fd = amqp_get_sockfd(c->conn);
    if (fd >= 0) fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    return 0;
}

int aconn_open(const struct aconn_opts *opts, struct aconn **out, enum aconn_fail *fail)
{
    int rc = JP_ENOMEM;
    *out = NULL;
    *fail = ACONN_FAIL_INPUT;
    struct aconn_url url = {0};
    struct aconn *c = calloc(1, sizeof *c);
    if (!c) goto out;
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
    c->on_consuming = opts->on_consuming;
    c->on_consuming_arg = opts->on_consuming_arg;
    c->consumer_tag = amqp_empty_bytes;
    if (!opts->url || !*opts->url) {
        log_error("no broker url: set JOBPOOL_AMQP_URL or JOBPOOL_AMQP_URL_FILE");
        rc = JP_ECONFIG;
        goto out;
    }
    if (opts->password) log_add_secret(opts->password);
    if ((rc = aconn_parse_url(opts->url, &url)) != 0) goto out;
    struct amqp_connection_info info = url.info;
    if (opts->username) info.user = (char *)opts->username;
    if (opts->password) info.password = (char *)opts->password;
    rc = JP_ENOMEM;
    /* "amqp://host/" parses to the empty vhost; mean the default "/" as most clients do. */
    const char *vhost = (opts->vhost && *opts->vhost) ? opts->vhost
                      : (info.vhost && *info.vhost) ? info.vhost : "/";
    c->queue = strdup(opts->queue ? opts->queue : "");
    c->vhost = strdup(vhost);
    c->host = strdup(info.host);
    if (!c->queue || !c->vhost || !c->host) goto out;
    if (!*c->queue) {
        log_error("no queue: set JOBPOOL_QUEUE");
        rc = JP_ECONFIG;
        goto out;
    }
    c->conn = amqp_new_connection();
    if (!c->conn) goto out;
    if ((rc = connect_socket(c, &info, opts, fail)) != 0) goto out;
    struct timeval tv = ms_to_tv(c->timeout_ms);
    amqp_set_handshake_timeout(c->conn, &tv);
    amqp_set_rpc_timeout(c->conn, &tv);
    c->alive = true;

    /* Name the connection so operators (and tests) can tell workers apart in the broker UI. */
    char cname[300];
    snprintf(cname, sizeof cname, "jobpool-worker queue=%s pid=%ld", c->queue, (long)getpid());
    amqp_table_entry_t prop = {.key = amqp_cstring_bytes("connection_name"),
                               .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                         .value.bytes = amqp_cstring_bytes(cname)}};
    amqp_table_t props = {.num_entries = 1, .entries = &prop};
    ERR_clear_error();
    amqp_rpc_reply_t r = amqp_login_with_properties(c->conn, c->vhost, 0, ACONN_FRAME_MAX,
                                                    opts->heartbeat_s, &props,
                                                    AMQP_SASL_METHOD_PLAIN, info.user,
                                                    info.password);
    /* TLS 1.3 takes the client certificate after the handshake is done as far as the client can
     * tell, so a refusal fails the first read instead, before the broker's connection.start.
     * The alert comes with it unless the broker's reset to our protocol header overtook it. */
    if (info.ssl && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_SSL_ERROR &&
        amqp_get_server_properties(c->conn)->num_entries == 0) {
        const char *alert = tls_alert();
        log_tls_refused(&info, opts, alert ? alert : "it reset the connection before any AMQP");
        mark_lost(c);
        *fail = ACONN_FAIL_INPUT;
        rc = JP_ETLS;
        goto out;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        (r.library_error == AMQP_STATUS_CONNECTION_CLOSED ||
         r.library_error == AMQP_STATUS_SOCKET_CLOSED)) {
        /* Brokers without authentication_failure_close just drop the socket on bad logins. */
        log_error("login: access refused for user '%s' on vhost '%s' at %s (connection closed)",
                  info.user, c->vhost, c->host);
        mark_lost(c);
        *fail = ACONN_FAIL_INPUT;
        rc = JP_EACCESS;
        goto out;
    }
    if ((rc = reply_check(c, r, "login", fail)) != 0) goto out;
    amqp_channel_open(c->conn, ACONN_CHANNEL);
    if ((rc = reply_check(c, amqp_get_rpc_reply(c->conn), "channel open", fail)) != 0) goto out;
    c->channel_open = true;
    amqp_queue_declare(c->conn, ACONN_CHANNEL, amqp_cstring_bytes(c->queue), 1, 0, 0, 0,
                       amqp_empty_table);
    if ((rc = reply_check(c, amqp_get_rpc_reply(c->conn), "queue check", fail)) != 0) goto out;
    amqp_basic_qos(c->conn, ACONN_CHANNEL, 0, 1, 0);
    if ((rc = reply_check(c, amqp_get_rpc_reply(c->conn), "basic.qos", fail)) != 0) goto out;
    *fail = ACONN_FAIL_NONE;
    *out = c;
    c = NULL;
    rc = 0;
out:
    if (rc == JP_ENOMEM) {
        log_error("out of memory while connecting");
        *fail = ACONN_FAIL_BROKER;
    }
    aconn_free(c);
    aconn_url_free(&url);
    return rc;
}

void aconn_free(struct aconn *c)
{
    if (!c) return;
    if (c->conn) amqp_destroy_connection(c->conn);
    amqp_bytes_free(c->consumer_tag);
    free(c->queue);
    free(c->vhost);
    free(c->host);
    free(c);
}

int aconn_close(struct aconn *c)
{
    int rc = 0;
    if (!c) return 0;
    if (c->alive) {
        enum aconn_fail fail;
        if (c->channel_open) {
            /* channel.close-ok comes only after the broker processed every earlier frame on
             * the channel, so success here proves an ack or reject sent before it arrived. */
            rc = reply_check(c, amqp_channel_close(c->conn, ACONN_CHANNEL, AMQP_REPLY_SUCCESS),
                             "channel close", &fail);
            c->channel_open = false;
        }
        if (c->alive && amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS).reply_type !=
                            AMQP_RESPONSE_NORMAL && !rc)
            rc = JP_ENETWORK;
        c->alive = false;
    }
    aconn_free(c);
    return rc ? JP_ENETWORK : 0;
}

int aconn_fd(const struct aconn *c) { return c && c->alive ? amqp_get_sockfd(c->conn) : -1; }
bool aconn_revoked(const struct aconn *c) { return c && c->revoked; }
bool aconn_alive(const struct aconn *c) { return c && c->alive; }

/* Read one frame that librabbitmq would not hand to amqp_consume_message (a close or a broker
 * cancel) and act on it. Returns 0 to keep waiting or a negative code. */
static int handle_stray_frame(struct aconn *c, enum aconn_fail *fail)
{
    amqp_frame_t f;
    struct timeval tv = ms_to_tv(c->timeout_ms);
    int st = amqp_simple_wait_frame_noblock(c->conn, &f, &tv);
    if (st != AMQP_STATUS_OK) {
        log_error("waiting for a message: %s", amqp_error_string2(st));
        mark_lost(c);
        *fail = ACONN_FAIL_BROKER;
        return JP_ENETWORK;
    }
    if (f.frame_type != AMQP_FRAME_METHOD) return 0;
    switch (f.payload.method.id) {
    case AMQP_CONNECTION_CLOSE_METHOD:
    case AMQP_CHANNEL_CLOSE_METHOD:
        handle_close_method(c, &f.payload.method, "waiting for a message");
        *fail = ACONN_FAIL_BROKER;
        return JP_ENETWORK;
    case AMQP_BASIC_CANCEL_METHOD:
        log_error("waiting for a message: the broker cancelled the consumer (queue '%s' deleted?)",
                  c->queue);
        *fail = ACONN_FAIL_BROKER;
        return JP_ECANCELED;
    default:
        return 0;
    }
}

int aconn_wait_one(struct aconn *c, int64_t timeout_ms, int stop_fd, amqp_envelope_t *env,
                   enum aconn_fail *fail)
{
    int rc;
    *fail = ACONN_FAIL_NONE;
    memset(env, 0, sizeof *env);
    amqp_basic_consume_ok_t *ok = amqp_basic_consume(c->conn, ACONN_CHANNEL,
                                                     amqp_cstring_bytes(c->queue), amqp_empty_bytes,
                                                     0, 0, 0, amqp_empty_table);
    if ((rc = reply_check(c, amqp_get_rpc_reply(c->conn), "basic.consume", fail)) != 0) return rc;
    c->consumer_tag = amqp_bytes_malloc_dup(ok->consumer_tag);
    if (!c->consumer_tag.bytes) return JP_ENOMEM;
    if (c->on_consuming) c->on_consuming(c->on_consuming_arg);

    int64_t deadline = util_now_ms() + timeout_ms;
    for (;;) {
        amqp_maybe_release_buffers(c->conn);
        if (!amqp_data_in_buffer(c->conn) && !amqp_frames_enqueued(c->conn)) {
            int64_t left = deadline - util_now_ms();
            if (left <= 0) return JP_ETIMEOUT;
            /* Wake at least once a second so librabbitmq can send its heartbeats. */
            struct pollfd p[2] = {{.fd = amqp_get_sockfd(c->conn), .events = POLLIN},
                                  {.fd = stop_fd, .events = POLLIN}};
            int n = poll(p, 2, (int)(left < 1000 ? left : 1000));
            if (n < 0 && errno != EINTR) {
                log_error("waiting for a message: poll: %s", strerror(errno));
                *fail = ACONN_FAIL_BROKER;
                return JP_EIO;
            }
            if (n > 0 && (p[1].revents & POLLIN)) return JP_ECANCELED;
        }
        struct timeval zero = {0, 0};
        amqp_rpc_reply_t r = amqp_consume_message(c->conn, env, &zero, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) break;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
            if (r.library_error == AMQP_STATUS_TIMEOUT) continue;
            if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
                if ((rc = handle_stray_frame(c, fail)) != 0) return rc;
                continue;
            }
        }
        return reply_check(c, r, "waiting for a message", fail);
    }

    /* Exactly one message per worker: stop the broker from offering us more at once. */
    amqp_basic_cancel(c->conn, ACONN_CHANNEL, c->consumer_tag);
    rc = reply_check(c, amqp_get_rpc_reply(c->conn), "basic.cancel", fail);
    amqp_bytes_free(c->consumer_tag);
    c->consumer_tag = amqp_empty_bytes;
    if (rc) {
        amqp_destroy_envelope(env);
        memset(env, 0, sizeof *env);
    }
    return rc;
}

bool aconn_service(struct aconn *c)
{
    if (!c || !c->alive) return false;
    for (;;) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        amqp_maybe_release_buffers(c->conn);
        int st = amqp_simple_wait_frame_noblock(c->conn, &f, &zero);
        if (st == AMQP_STATUS_TIMEOUT) return true;
        if (st != AMQP_STATUS_OK) {
            log_warn("broker connection lost while the task runs: %s", amqp_error_string2(st));
            mark_lost(c);
            return false;
        }
        if (f.frame_type == AMQP_FRAME_METHOD &&
            (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
             f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD)) {
            /* While the task runs we send nothing on the channel, so a 406 channel.close is the
             * broker's consumer_timeout: it has requeued the message already. */
            if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD &&
                ((const amqp_channel_close_t *)f.payload.method.decoded)->reply_code ==
                    AMQP_PRECONDITION_FAILED)
                c->revoked = true;
            handle_close_method(c, &f.payload.method, "while the task runs");
            return false;
        }
    }
}

static int settle_status(struct aconn *c, int st, const char *what)
{
    if (st == AMQP_STATUS_OK) return 0;
    log_error("%s: %s", what, amqp_error_string2(st));
    mark_lost(c);
    return JP_ENETWORK;
}

int aconn_ack(struct aconn *c, uint64_t tag)
{
    if (!c->alive) return JP_ENETWORK;
    return settle_status(c, amqp_basic_ack(c->conn, ACONN_CHANNEL, tag, 0), "basic.ack");
}

int aconn_nack_requeue(struct aconn *c, uint64_t tag)
{
    if (!c->alive) return JP_ENETWORK;
    return settle_status(c, amqp_basic_nack(c->conn, ACONN_CHANNEL, tag, 0, 1), "basic.nack");
}

int aconn_reject_dead_letter(struct aconn *c, uint64_t tag)
{
    if (!c->alive) return JP_ENETWORK;
    return settle_status(c, amqp_basic_reject(c->conn, ACONN_CHANNEL, tag, 0), "basic.reject");
}

/* Wait for the confirm of our single publish (delivery tag 1 after confirm.select). */
static int wait_confirm(struct aconn *c)
{
    bool returned = false;
    int64_t deadline = util_now_ms() + c->timeout_ms;
    for (;;) {
        int64_t left = deadline - util_now_ms();
        if (left <= 0) {
            log_error("republish: no publisher confirm within %lld ms", (long long)c->timeout_ms);
            return JP_ETIMEOUT;
        }
        struct timeval tv = ms_to_tv(left);
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(c->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) continue;
        if (st != AMQP_STATUS_OK) return settle_status(c, st, "republish: waiting for the confirm");
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD:
            if (returned) {
                log_error("republish: the broker could not route the copy to queue '%s'", c->queue);
                return JP_EAMQP;
            }
            return 0;
        case AMQP_BASIC_NACK_METHOD:
            log_error("republish: the broker refused the copy (basic.nack)");
            return JP_EAMQP;
        case AMQP_BASIC_RETURN_METHOD: {
            returned = true;
            amqp_message_t m;
            amqp_rpc_reply_t r = amqp_read_message(c->conn, ACONN_CHANNEL, &m, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                enum aconn_fail fail;
                return reply_check(c, r, "republish: reading the returned copy", &fail);
            }
            amqp_destroy_message(&m);
            break;
        }
        case AMQP_CONNECTION_CLOSE_METHOD:
        case AMQP_CHANNEL_CLOSE_METHOD:
            handle_close_method(c, &f.payload.method, "republish");
            return JP_ENETWORK;
        default:
            break;
        }
    }
}

int aconn_republish(struct aconn *c, const amqp_envelope_t *env, int64_t attempt,
                    bool redelivered)
{
    int rc = JP_ENOMEM;
    enum aconn_fail fail;
    if (!c->alive) return JP_ENETWORK;
    if (!c->confirms) {
        amqp_confirm_select(c->conn, ACONN_CHANNEL);
        if ((rc = reply_check(c, amqp_get_rpc_reply(c->conn), "confirm.select", &fail)) != 0)
            return rc;
        c->confirms = true;
    }
    amqp_basic_properties_t props = env->message.properties;
    const amqp_table_t *old = (props._flags & AMQP_BASIC_HEADERS_FLAG) ? &props.headers : NULL;
    int n = old ? old->num_entries : 0;
    amqp_table_entry_t *entries = calloc((size_t)n + 2, sizeof *entries);
    if (!entries) goto out;
    int k = 0;
    for (int i = 0; i < n; i++) {
        const amqp_bytes_t key = old->entries[i].key;
        if ((key.len == strlen(ACONN_ATTEMPT_HEADER) &&
             memcmp(key.bytes, ACONN_ATTEMPT_HEADER, key.len) == 0) ||
            (key.len == strlen(ACONN_REDELIVERED_HEADER) &&
             memcmp(key.bytes, ACONN_REDELIVERED_HEADER, key.len) == 0))
            continue;
        entries[k++] = old->entries[i];
    }
    entries[k].key = amqp_cstring_bytes(ACONN_ATTEMPT_HEADER);
    entries[k].value.kind = AMQP_FIELD_KIND_I32;
    entries[k].value.value.i32 = attempt > INT32_MAX ? INT32_MAX : (int32_t)attempt;
    k++;
    if (redelivered) {
        entries[k].key = amqp_cstring_bytes(ACONN_REDELIVERED_HEADER);
        entries[k].value.kind = AMQP_FIELD_KIND_BOOLEAN;
        entries[k].value.value.boolean = 1;
        k++;
    }
    props.headers.num_entries = k;
    props.headers.entries = entries;
    props._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    int st = amqp_basic_publish(c->conn, ACONN_CHANNEL, amqp_empty_bytes,
                                amqp_cstring_bytes(c->queue), 1, 0, &props, env->message.body);
    if ((rc = settle_status(c, st, "republish")) != 0) goto out;
    rc = wait_confirm(c);
out:
    free(entries);
    return rc;
}
