/* rmq.c: queue depth from RabbitMQ's management HTTP API, optionally the ready count over AMQP. */
#define _GNU_SOURCE
#include "rmq.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "util.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <openssl/err.h>
#include <amqp_tcp_socket.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define RMQ_MAX_COUNT 1e12          /* anything above is absurd for one queue or a sum */
#define RMQ_PAGE_SIZE 500           /* the management API's largest page */
#define RMQ_MAX_PAGES 10000         /* 5 million queues: beyond that the listing is refused */
#define RMQ_MAX_CACHE 100000        /* named-queue results kept per tick */
#define RMQ_LIST_MIN_POOLS 8        /* fewer named queues on a vhost: one GET each */
#define RMQ_LIST_ROWS_PER_POOL 4    /* a listing row costs about 1/5 of a per-queue GET */
#define RMQ_LIST_RECHECK 100        /* ticks before a vhost too big to list is tried again */
#define RMQ_PIPELINE 256            /* passive declares in flight on one channel */
#define RMQ_MAX_REGEX 256
#define RMQ_MAX_REGEX_QUEUES 10000  /* queues one regex pool may match */
#define RMQ_MAX_STATE 1024          /* error-transition memory for logging */
#define RMQ_MAX_AMQP 16             /* one AMQP connection per vhost */
#define RMQ_ERRLEN 512

/* A named queue's result within one tick. */
struct qcache {
    char *vhost, *queue;
    int rc;
    struct rmq_depth d;
    char *err;
};

/* A registered regex pool and its result for the tick in which it was last filled. */
struct rxent {
    char *vhost, *regex;
    regex_t re;
    uint64_t tick;              /* tick of d/rc; 0 never */
    int rc;
    struct rmq_depth d;
    char *err;
    struct rmq_qdepth *q;       /* the matched queues of d (d.queues points here) */
};

/* A named queue some pool reads. low: with depthSource amqp, the fewest ready messages seen
 * since the last tick's read (that read included), for rmq_probe; -1 before any read. */
struct nqent {
    char *vhost, *queue;
    int64_t low;
};

/* Per vhost: whether this tick's named queues were read in one batch, and the vhost's size. */
struct vstate {
    char *vhost;
    uint64_t tick;              /* tick of the last batch decision */
    int64_t queues;             /* queues the last listing counted; -1 unknown */
    uint64_t queues_tick;       /* tick of that listing */
};

/* Matches of one regex while a listing is read. */
struct qlist {
    struct rmq_qdepth *v;
    size_t n, cap;
};

/* Last error per key, so failures are logged once per transition. */
struct lstate {
    char *key;
    int rc;
};

struct amqp_vconn {
    char *vhost;
    amqp_connection_state_t conn;
    bool chan_open;
};

struct rmq_client {
    char *base;                 /* management URL without the trailing '/' */
    char *amqp_url;
    char *ca_file;
    char *cert_file, *key_file; /* client certificate (mutual TLS), or NULL */
    char *user, *pass;
    long timeout_ms, connect_timeout_ms;
    enum cfg_depth_source source;
    struct http_client *http;
    uint64_t tick;
    struct qcache *cache;
    size_t ncache, ccache, hint; /* hint: where the next lookup starts (pools read in order) */
    struct nqent *nq;           /* registered named queues */
    size_t nnq, cnq;
    struct vstate *vs;
    size_t nvs, cvs;
    struct rxent *rx;           /* grown as regexes come: a client per JobPool connection */
    size_t nrx, crx;            /* starts small (conns.h) */
    struct lstate *st;
    size_t nst, cst;
    struct amqp_vconn amqp[RMQ_MAX_AMQP];
    size_t namqp;
    char err[RMQ_ERRLEN];
};

/* ---- error detail ------------------------------------------------------------------------ */

/* Replace every occurrence of the password in s with "***" (a last line of defence: nothing
 * below is meant to put it there). */
static void scrub(const struct rmq_client *c, char *s, size_t cap)
{
    if (!c->pass || strlen(c->pass) < 1) return;
    size_t pl = strlen(c->pass);
    char *p = s;
    while ((p = strstr(p, c->pass)) != NULL) {
        size_t tail = strlen(p + pl);
        if ((size_t)(p - s) + 3 + tail + 1 > cap) {
            *p = '\0';
            break;
        }
        memmove(p + 3, p + pl, tail + 1);
        memcpy(p, "***", 3);
        p += 3;
    }
}

static void set_err(struct rmq_client *c, const char *url, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(struct rmq_client *c, const char *url, const char *fmt, ...)
{
    char red[256] = "";
    size_t n = 0;
    if (url) {
        log_redact_url(url, red, sizeof red);
        n = (size_t)snprintf(c->err, sizeof c->err, "GET %s: ", red);
        if (n >= sizeof c->err) n = sizeof c->err - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, sizeof c->err - n, fmt, ap);
    va_end(ap);
    scrub(c, c->err, sizeof c->err);
}

/* Log a failure once per transition of key's error code. */
/* Room for one more of n elements of size sz in *v (capacity *cap, at most max). */
static bool grow_array(void **v, size_t n, size_t *cap, size_t sz, size_t max)
{
    if (n < *cap) return true;
    size_t nc = *cap ? *cap * 2 : 4;
    if (nc > max) nc = max;
    void *t = realloc(*v, nc * sz);
    if (!t) return false;
    *v = t;
    *cap = nc;
    return true;
}

static void note_result(struct rmq_client *c, const char *key, int rc)
{
    struct lstate *s = NULL;
    for (size_t i = 0; i < c->nst; i++)
        if (strcmp(c->st[i].key, key) == 0) s = &c->st[i];
    int prev = s ? s->rc : 0;
    if (!s && rc != 0 && c->nst < RMQ_MAX_STATE &&
        grow_array((void **)&c->st, c->nst, &c->cst, sizeof *c->st, RMQ_MAX_STATE)) {
        char *k = strdup(key);
        if (k) {
            s = &c->st[c->nst++];
            s->key = k;
        }
    }
    if (s) s->rc = rc;
    if (rc == prev) {
        if (rc) log_msg(LOG_DEBUG, NULL, rc, "rmq: %s still failing: %s", key, c->err);
        return;
    }
    if (rc == JP_ENOTFOUND)
        log_msg(LOG_WARN, NULL, rc, "rmq: %s not found, reporting depth 0: %s", key, c->err);
    else if (rc)
        log_msg(LOG_WARN, NULL, rc, "rmq: depth read of %s failed: %s", key, c->err);
    else
        log_msg(LOG_INFO, NULL, 0, "rmq: depth read of %s recovered", key);
}

static void depth_zero(struct rmq_depth *d)
{
    memset(d, 0, sizeof *d);
    d->publish_rate = -1;
    d->deliver_rate = -1;
}

/* ---- client ------------------------------------------------------------------------------ */

static void amqp_vconn_close(struct amqp_vconn *v)
{
    if (v->conn) {
        /* Best effort: the peer may already be gone. */
        amqp_connection_close(v->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(v->conn);
    }
    v->conn = NULL;
    v->chan_open = false;
}

static void cache_clear(struct rmq_client *c)
{
    for (size_t i = 0; i < c->ncache; i++) {
        free(c->cache[i].vhost);
        free(c->cache[i].queue);
        free(c->cache[i].err);
    }
    c->ncache = 0;
    c->hint = 0;
}

void rmq_client_free(struct rmq_client *c)
{
    if (!c) return;
    http_client_free(c->http);
    cache_clear(c);
    free(c->cache);
    for (size_t i = 0; i < c->nnq; i++) {
        free(c->nq[i].vhost);
        free(c->nq[i].queue);
    }
    free(c->nq);
    for (size_t i = 0; i < c->nvs; i++) free(c->vs[i].vhost);
    free(c->vs);
    for (size_t i = 0; i < c->nrx; i++) {
        regfree(&c->rx[i].re);
        free(c->rx[i].vhost);
        free(c->rx[i].regex);
        free(c->rx[i].err);
        free(c->rx[i].q);
    }
    free(c->rx);
    for (size_t i = 0; i < c->nst; i++) free(c->st[i].key);
    free(c->st);
    for (size_t i = 0; i < c->namqp; i++) {
        amqp_vconn_close(&c->amqp[i]);
        free(c->amqp[i].vhost);
    }
    free(c->base);
    free(c->amqp_url);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->user);
    if (c->pass) {
        log_drop_secret(c->pass);
        explicit_bzero(c->pass, strlen(c->pass));
        free(c->pass);
    }
    free(c);
}

static int read_secret(const struct cfg_secret *s, bool secret, char **out)
{
    *out = NULL;
    if (!s->env && !s->file) return 0; /* no credential configured */
    return cfg_ref_read(s, secret, out); /* a user name is not masked: errors name the user */
}

/* The client for cfg with the login user and pass (taken over: freed with the client). */
static int client_new(const struct cfg_rabbitmq *cfg, char *user, char *pass,
                      struct rmq_client **out)
{
    *out = NULL;
    int rc = JP_ENOMEM;
    struct rmq_client *c = calloc(1, sizeof *c);
    if (!c) {
        free(user);
        if (pass) explicit_bzero(pass, strlen(pass));
        free(pass);
        return rc;
    }
    c->user = user;
    c->pass = pass;
    log_add_secret(c->pass); /* dropped again by rmq_client_free */
    const char *mu = cfg->management_url ? cfg->management_url : "http://rabbitmq:15672";
    if (strncmp(mu, "http://", 7) != 0 && strncmp(mu, "https://", 8) != 0) {
        rc = JP_EINVAL;
        goto out;
    }
    if (!(c->base = strdup(mu))) goto out;
    size_t bl = strlen(c->base);
    while (bl > 0 && c->base[bl - 1] == '/') c->base[--bl] = '\0';
    if (!(c->amqp_url = strdup(cfg->amqp_url ? cfg->amqp_url : "amqp://rabbitmq:5672")))
        goto out;
    if (cfg->ca_file && !(c->ca_file = strdup(cfg->ca_file))) goto out;
    if (cfg->cert_file && cfg->key_file &&
        (!(c->cert_file = strdup(cfg->cert_file)) || !(c->key_file = strdup(cfg->key_file))))
        goto out;
    c->source = cfg->depth_source;
    c->timeout_ms = cfg->timeout_ms > 0 ? (long)cfg->timeout_ms : 3000;
    c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? (long)cfg->connect_timeout_ms : 1000;
    if (c->connect_timeout_ms > c->timeout_ms) c->connect_timeout_ms = c->timeout_ms;

    struct http_opts o = {
        .timeout_ms = c->timeout_ms,
        .connect_timeout_ms = c->connect_timeout_ms,
        .max_body = cfg->max_body ? cfg->max_body : (size_t)8 << 20,
        .ca_file = cfg->ca_file,
        .cert_file = c->cert_file,
        .key_file = c->key_file,
        .username = c->user,
        .password = c->pass,
    };
    if (c->user && !c->pass) o.password = "";
    rc = http_client_new(&o, &c->http);
out:
    if (rc) rmq_client_free(c);
    else *out = c;
    return rc;
}

int rmq_client_new(const struct cfg_rabbitmq *cfg, struct rmq_client **out)
{
    *out = NULL;
    char *user = NULL, *pass = NULL;
    int rc = read_secret(&cfg->username, false, &user);
    if (!rc && (rc = read_secret(&cfg->password, true, &pass)) != 0) {
        free(user);
        return rc;
    }
    return rc ? rc : client_new(cfg, user, pass, out);
}

int rmq_client_new_login(const struct cfg_rabbitmq *cfg, const char *user, const char *pass,
                         struct rmq_client **out)
{
    *out = NULL;
    char *u = util_strdup(user), *p = util_strdup(pass);
    if ((user && !u) || (pass && !p)) {
        free(u);
        free(p);
        return JP_ENOMEM;
    }
    return client_new(cfg, u, p, out);
}

void rmq_tick_begin(struct rmq_client *c)
{
    cache_clear(c);
    c->tick++;
}

const char *rmq_last_error(const struct rmq_client *c) { return c->err; }

/* ---- JSON checks ------------------------------------------------------------------------- */

/* Read a non-negative integral count. Missing: *out untouched, returns 1. */
static int get_count(const cJSON *o, const char *name, int64_t *out, char *why, size_t whylen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) return 1;
    if (!cJSON_IsNumber(v)) {
        snprintf(why, whylen, "field %s is not a number", name);
        return JP_ESHAPE;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > RMQ_MAX_COUNT || d != util_floor(d)) {
        snprintf(why, whylen, "field %s out of range: %.17g", name, d);
        return JP_ERANGE;
    }
    *out = (int64_t)d;
    return 0;
}

static double get_rate(const cJSON *o, const char *details)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "message_stats");
    const cJSON *dd = st ? cJSON_GetObjectItemCaseSensitive(st, details) : NULL;
    const cJSON *r = dd ? cJSON_GetObjectItemCaseSensitive(dd, "rate") : NULL;
    if (!cJSON_IsNumber(r) || !isfinite(r->valuedouble) || r->valuedouble < 0 ||
        r->valuedouble > RMQ_MAX_COUNT)
        return -1;
    return r->valuedouble;
}

/* Short printable excerpt of a body for error messages. */
static void excerpt(const char *body, size_t len, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < outlen && i < 80; i++) {
        unsigned char ch = (unsigned char)body[i];
        out[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '.';
    }
    out[j] = '\0';
}

/* Turn a non-2xx answer into a typed error with the broker's reason. */
static int status_error(struct rmq_client *c, const char *url, const struct http_response *r)
{
    int rc = http_status_err(r->status);
    if (rc == 0) rc = JP_EHTTP; /* 1xx/3xx: curl follows nothing, so these are unexpected */
    char reason[128] = "";
    cJSON *j = r->body ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    const cJSON *rs = j ? cJSON_GetObjectItemCaseSensitive(j, "reason") : NULL;
    if (cJSON_IsString(rs)) excerpt(rs->valuestring, strlen(rs->valuestring), reason, sizeof reason);
    cJSON_Delete(j);
    if (rc == JP_EUNAUTHORIZED || rc == JP_EFORBIDDEN)
        set_err(c, url, "http %ld: user \"%s\" %s (password not shown)%s%s", r->status,
                c->user ? c->user : "", rc == JP_EUNAUTHORIZED ? "was not authenticated"
                                                               : "lacks permission",
                reason[0] ? ": " : "", reason);
    else
        set_err(c, url, "http %ld (%s)%s%s", r->status, jp_strerror(rc), reason[0] ? ": " : "",
                reason);
    return rc;
}

/* GET url and parse a JSON body. Returns 0 with *out owned by the caller, or a typed error. */
static int get_json(struct rmq_client *c, const char *url, cJSON **out)
{
    *out = NULL;
    struct http_response r;
    int rc = http_request(c->http, "GET", url, NULL, 0, &r);
    if (rc) {
        set_err(c, url, "%s: %s", jp_strerror(rc), r.error);
        goto out;
    }
    if (r.status < 200 || r.status > 299) {
        rc = status_error(c, url, &r);
        goto out;
    }
    *out = cJSON_ParseWithLength(r.body, r.len);
    if (!*out) {
        char ex[96];
        excerpt(r.body, r.len, ex, sizeof ex);
        rc = JP_EPARSE;
        set_err(c, url, "http %ld but the body is not JSON (%zu bytes, starts \"%s\")", r.status,
                r.len, ex);
    }
out:
    http_response_free(&r);
    return rc;
}

/* ---- named queues ------------------------------------------------------------------------ */

static char *queue_url(const struct rmq_client *c, const char *vhost, const char *queue)
{
    char *ev = http_escape(vhost), *eq = http_escape(queue), *url = NULL;
    if (ev && eq) {
        struct dbuf b;
        dbuf_init(&b, 64 * 1024);
        if (dbuf_printf(&b, "%s/api/queues/%s/%s", c->base, ev, eq) == 0) url = dbuf_take(&b);
        dbuf_free(&b);
    }
    free(ev);
    free(eq);
    return url;
}

static int mgmt_queue(struct rmq_client *c, const char *vhost, const char *queue,
                      struct rmq_depth *d)
{
    cJSON *j = NULL;
    char *url = queue_url(c, vhost, queue);
    int rc = JP_ENOMEM;
    if (!url) {
        set_err(c, NULL, "out of memory");
        goto out;
    }
    if ((rc = get_json(c, url, &j)) != 0) goto out;
    char why[160] = "";
    rc = JP_ESHAPE;
    if (!cJSON_IsObject(j)) {
        set_err(c, url, "expected a JSON object for one queue, got %s",
                cJSON_IsArray(j) ? "an array" : "another JSON value");
        goto out;
    }
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (!cJSON_IsString(nm)) {
        set_err(c, url, "the queue object has no \"name\" string");
        goto out;
    }
    int r1 = get_count(j, "messages_ready", &d->ready, why, sizeof why);
    int r2 = r1 < 0 ? r1 : get_count(j, "messages_unacknowledged", &d->unacked, why, sizeof why);
    int r3 = r2 < 0 ? r2 : get_count(j, "messages", &d->total, why, sizeof why);
    int r4 = r3 < 0 ? r3 : get_count(j, "consumers", &d->consumers, why, sizeof why);
    if (r4 < 0) {
        rc = r4;
        set_err(c, url, "%s", why);
        goto out;
    }
    if (r1 || r2 || r3) {
        /* A queue declared moments ago has no statistics until the next stats emission. */
        rc = JP_ESTALE;
        set_err(c, url, "the broker has no message counts for this queue yet");
        goto out;
    }
    if (r4) d->consumers = 0;
    d->publish_rate = get_rate(j, "publish_details");
    d->deliver_rate = get_rate(j, "deliver_get_details");
    d->nqueues = 1;
    rc = 0;
out:
    cJSON_Delete(j);
    free(url);
    return rc;
}

/* ---- AMQP passive declare ---------------------------------------------------------------- */

static int amqp_status_err(int st)
{
    switch (st) {
    case AMQP_STATUS_NO_MEMORY: return JP_ENOMEM;
    case AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED: return JP_EDNS;
    case AMQP_STATUS_TIMEOUT: return JP_ETIMEOUT;
    case AMQP_STATUS_SOCKET_ERROR: case AMQP_STATUS_TCP_ERROR: return JP_ECONNREFUSED;
    case AMQP_STATUS_SSL_ERROR: case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED: case AMQP_STATUS_SSL_CONNECTION_FAILED:
        return JP_ETLS;
    default: return JP_EAMQP;
    }
}

/* What OpenSSL says of the last TLS failure on this thread, as ": reason(N): text" (librabbitmq
 * only says "a SSL error occurred"); "" when it has nothing. Clears its queue. */
static const char *tls_detail(char *buf, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    buf[0] = '\0';
    if (e && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        long r = (long)ERR_GET_REASON(e);
        const char *text = http_tls_reason(r);
        snprintf(buf, n, ": reason(%ld)%s%s", r, text ? ": " : "", text ? text : "");
    }
    ERR_clear_error();
    return buf;
}

/* Map a failed RPC reply to a typed error and detail. */
static int amqp_reply_err(struct rmq_client *c, amqp_rpc_reply_t r, const char *what,
                          bool *chan_closed)
{
    *chan_closed = false;
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return 0;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: {
        char tls[96] = "";
        if (amqp_status_err(r.library_error) == JP_ETLS && !tls_detail(tls, sizeof tls)[0] &&
            !strcmp(what, "login"))
            /* A TLS 1.3 server refuses a client certificate after the handshake, and its reset
             * can overtake the alert that says so. */
            snprintf(tls, sizeof tls, " before the broker's first AMQP frame (a refused client "
                                      "certificate?)");
        set_err(c, NULL, "amqp %s: %s%s", what, amqp_error_string2(r.library_error), tls);
        return amqp_status_err(r.library_error);
    }
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *m = r.reply.decoded;
            *chan_closed = true;
            set_err(c, NULL, "amqp %s: channel closed by the broker: %u %.*s", what,
                    m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
            return m->reply_code == AMQP_NOT_FOUND ? JP_ENOTFOUND
                   : m->reply_code == AMQP_ACCESS_REFUSED ? JP_EFORBIDDEN : JP_EAMQP;
        }
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *m = r.reply.decoded;
            set_err(c, NULL, "amqp %s: connection closed by the broker (user \"%s\"): %u %.*s",
                    what, c->user ? c->user : "", m->reply_code, (int)m->reply_text.len,
                    (const char *)m->reply_text.bytes);
            return m->reply_code == AMQP_ACCESS_REFUSED ? JP_EUNAUTHORIZED
                   : m->reply_code == AMQP_NOT_ALLOWED ? JP_EFORBIDDEN : JP_EAMQP;
        }
        set_err(c, NULL, "amqp %s: unexpected broker method 0x%08x", what, r.reply.id);
        return JP_EAMQP;
    default:
        set_err(c, NULL, "amqp %s: no reply", what);
        return JP_EAMQP;
    }
}

static int amqp_connect(struct rmq_client *c, struct amqp_vconn *v)
{
    int rc = JP_ENOMEM;
    char *u = strdup(c->amqp_url);
    if (!u) return rc;
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
        rc = JP_EINVAL;
        set_err(c, NULL, "amqpUrl is not a valid amqp:// or amqps:// URL");
        goto out;
    }
    if (!(v->conn = amqp_new_connection())) goto out;
    amqp_socket_t *s = ci.ssl ? amqp_ssl_socket_new(v->conn) : amqp_tcp_socket_new(v->conn);
    if (!s) goto out;
    if (ci.ssl) {
        amqp_ssl_socket_set_verify_peer(s, 1);
        amqp_ssl_socket_set_verify_hostname(s, 1);
        if (c->ca_file && amqp_ssl_socket_set_cacert(s, c->ca_file) != AMQP_STATUS_OK) {
            rc = JP_ETLS;
            set_err(c, NULL, "amqp: cannot load the CA file %s", c->ca_file);
            goto out;
        }
        int kst;
        if (c->cert_file &&
            (kst = amqp_ssl_socket_set_key(s, c->cert_file, c->key_file)) != AMQP_STATUS_OK) {
            rc = JP_ETLS;
            set_err(c, NULL, "amqp: cannot load the client certificate %s with its key %s: %s",
                    c->cert_file, c->key_file, amqp_error_string2(kst));
            goto out;
        }
    }
    struct timeval tv = {.tv_sec = c->connect_timeout_ms / 1000,
                         .tv_usec = (c->connect_timeout_ms % 1000) * 1000};
    int st = amqp_socket_open_noblock(s, ci.host, ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        rc = amqp_status_err(st);
        char tls[96] = "";
        if (rc == JP_ETLS) tls_detail(tls, sizeof tls);
        set_err(c, NULL, "amqp connect to %s:%d: %s%s", ci.host, ci.port, amqp_error_string2(st),
                tls);
        goto out;
    }
    struct timeval rpc = {.tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000};
    amqp_set_rpc_timeout(v->conn, &rpc);
    amqp_set_handshake_timeout(v->conn, &rpc);
    const char *user = c->user ? c->user : ci.user;
    const char *pass = c->user ? (c->pass ? c->pass : "") : ci.password;
    bool closed;
    rc = amqp_reply_err(c, amqp_login(v->conn, v->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                      user, pass), "login", &closed);
out:
    if (rc) amqp_vconn_close(v);
    if (u) {
        explicit_bzero(u, strlen(u));
        free(u);
    }
    return rc;
}

static int amqp_ready_once(struct rmq_client *c, struct amqp_vconn *v, const char *queue,
                           int64_t *ready, int64_t *consumers)
{
    int rc;
    bool closed = false;
    if (!v->conn && (rc = amqp_connect(c, v)) != 0) return rc;
    if (!v->chan_open) {
        amqp_channel_open(v->conn, 1);
        if ((rc = amqp_reply_err(c, amqp_get_rpc_reply(v->conn), "channel.open", &closed)))
            goto fail;
        v->chan_open = true;
    }
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(v->conn, 1, amqp_cstring_bytes(queue), 1, 0,
                                                     0, 0, amqp_empty_table);
    rc = amqp_reply_err(c, amqp_get_rpc_reply(v->conn), "queue.declare(passive)", &closed);
    if (!rc && !ok) rc = JP_EAMQP;
    if (rc) goto fail;
    *ready = (int64_t)ok->message_count;
    *consumers = (int64_t)ok->consumer_count;
    amqp_maybe_release_buffers(v->conn);
    return 0;
fail:
    if (closed) {
        /* Channel-level error (missing queue): acknowledge and keep the connection. */
        amqp_channel_close_ok_t cok = {0};
        v->chan_open = false;
        if (amqp_send_method(v->conn, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &cok) != AMQP_STATUS_OK)
            amqp_vconn_close(v);
        else amqp_maybe_release_buffers(v->conn);
    } else {
        amqp_vconn_close(v); /* connection-level failure: reconnect next time */
    }
    return rc;
}

/* The vhost's long-lived AMQP connection slot (opened lazily by the callers). */
static int vconn_get(struct rmq_client *c, const char *vhost, struct amqp_vconn **out)
{
    *out = NULL;
    for (size_t i = 0; i < c->namqp; i++)
        if (strcmp(c->amqp[i].vhost, vhost) == 0) *out = &c->amqp[i];
    if (*out) return 0;
    if (c->namqp == RMQ_MAX_AMQP) {
        set_err(c, NULL, "more than %d vhosts with depthSource amqp", RMQ_MAX_AMQP);
        return JP_ERANGE;
    }
    struct amqp_vconn *v = &c->amqp[c->namqp];
    if (!(v->vhost = strdup(vhost))) return JP_ENOMEM;
    c->namqp++;
    *out = v;
    return 0;
}

static int amqp_ready(struct rmq_client *c, const char *vhost, const char *queue, int64_t *ready,
                      int64_t *consumers)
{
    struct amqp_vconn *v = NULL;
    if (strlen(queue) > 255) {
        set_err(c, NULL, "queue name longer than 255 bytes");
        return JP_EINVAL;
    }
    int rc = vconn_get(c, vhost, &v);
    if (rc) return rc;
    bool was_open = v->conn != NULL;
    rc = amqp_ready_once(c, v, queue, ready, consumers);
    /* A long-lived connection may have died since the last tick: reconnect once at once. */
    if (rc && was_open && !v->conn) rc = amqp_ready_once(c, v, queue, ready, consumers);
    return rc;
}

/* One queue's result while a vhost is read in one batch. */
struct qres {
    const char *queue;          /* borrowed from the registration */
    int rc;
    struct rmq_depth d;
    char *err;                  /* owned; NULL when rc is 0 */
};

static void qres_fail(struct rmq_client *c, struct qres *q, int rc)
{
    q->rc = rc;
    free(q->err);
    q->err = strdup(c->err);
}

/* The channel was closed by the broker for queue q (404 for a missing one): record it and
 * acknowledge, so that the channel can be opened again. Returns a connection-level error. */
static int pipe_chan_closed(struct rmq_client *c, struct amqp_vconn *v, struct qres *q,
                            const amqp_channel_close_t *m)
{
    set_err(c, NULL, "amqp queue.declare(passive): channel closed by the broker: %u %.*s",
            m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    qres_fail(c, q, m->reply_code == AMQP_NOT_FOUND ? JP_ENOTFOUND
                    : m->reply_code == AMQP_ACCESS_REFUSED ? JP_EFORBIDDEN : JP_EAMQP);
    amqp_channel_close_ok_t cok = {0};
    v->chan_open = false;
    if (amqp_send_method(v->conn, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &cok) == AMQP_STATUS_OK)
        return 0;
    set_err(c, NULL, "amqp channel.close-ok: could not be sent");
    return JP_EAMQP;
}

/* Passive-declare q[*done..n) on one channel: up to RMQ_PIPELINE declares are sent before the
 * first reply is read, so n queues cost about one round trip, not n. The broker answers in
 * order; a missing queue closes the channel and the broker drops what was sent after it, so
 * the channel is reopened and those are sent again. Advances *done past every queue answered;
 * returns 0 or a connection-level error (the connection is then closed). */
static int amqp_pipe_once(struct rmq_client *c, struct amqp_vconn *v, struct qres *q, size_t n,
                          size_t *done)
{
    int rc = 0;
    bool closed;
    size_t next = *done;
    struct timeval tv = {.tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000};
    if (!v->conn && (rc = amqp_connect(c, v)) != 0) return rc;
    while (*done < n) {
        if (!v->chan_open) {
            amqp_channel_open(v->conn, 1);
            rc = amqp_reply_err(c, amqp_get_rpc_reply(v->conn), "channel.open", &closed);
            if (rc) goto out;
            v->chan_open = true;
            next = *done; /* anything sent on the closed channel was dropped */
        }
        for (; next < n && next - *done < RMQ_PIPELINE; next++) {
            amqp_queue_declare_t m = {.queue = amqp_cstring_bytes(q[next].queue), .passive = 1,
                                      .arguments = amqp_empty_table};
            int st = amqp_send_method(v->conn, 1, AMQP_QUEUE_DECLARE_METHOD, &m);
            if (st != AMQP_STATUS_OK) {
                set_err(c, NULL, "amqp queue.declare(passive): %s", amqp_error_string2(st));
                rc = amqp_status_err(st);
                goto out;
            }
        }
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(v->conn, &f, &tv);
        if (st != AMQP_STATUS_OK) {
            set_err(c, NULL, "amqp queue.declare(passive): %s", amqp_error_string2(st));
            rc = amqp_status_err(st);
            goto out;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        amqp_method_number_t id = f.payload.method.id;
        if (f.channel == 1 && id == AMQP_QUEUE_DECLARE_OK_METHOD) {
            const amqp_queue_declare_ok_t *ok = f.payload.method.decoded;
            q[*done].rc = 0;
            q[*done].d.ready = (int64_t)ok->message_count;
            q[*done].d.consumers = (int64_t)ok->consumer_count;
            (*done)++;
        } else if (f.channel == 1 && id == AMQP_CHANNEL_CLOSE_METHOD) {
            if ((rc = pipe_chan_closed(c, v, &q[*done], f.payload.method.decoded))) goto out;
            (*done)++;
        } else {
            amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                                  .reply = f.payload.method};
            rc = amqp_reply_err(c, r, "queue.declare(passive)", &closed);
            goto out;
        }
    }
    amqp_maybe_release_buffers(v->conn);
out:
    if (rc) amqp_vconn_close(v);
    return rc;
}

/* Passive declares for every queue the listing could read (rc 0, no statistics yet, or not
 * listed: the declare, not the listing, is the truth for ready and for existence). */
static void amqp_pipe(struct rmq_client *c, const char *vhost, struct qres *q, size_t n)
{
    struct qres **w = calloc(n ? n : 1, sizeof *w);
    struct qres *sub = calloc(n ? n : 1, sizeof *sub);
    struct amqp_vconn *v = NULL;
    size_t m = 0, done = 0;
    int rc = w && sub ? vconn_get(c, vhost, &v) : JP_ENOMEM;
    if (rc == JP_ENOMEM) set_err(c, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (q[i].rc != 0 && q[i].rc != JP_ESTALE && q[i].rc != JP_ENOTFOUND) continue;
        if (rc) qres_fail(c, &q[i], rc);
        else {
            w[m] = &q[i];
            sub[m++] = (struct qres){.queue = q[i].queue, .rc = JP_EAMQP};
        }
    }
    if (!rc && m) {
        bool was_open = v->conn != NULL;
        rc = amqp_pipe_once(c, v, sub, m, &done);
        /* A long-lived connection may have died since the last tick: reconnect once. */
        if (rc && was_open && done == 0) rc = amqp_pipe_once(c, v, sub, m, &done);
    }
    for (size_t i = 0; i < m; i++) {
        struct qres *t = w[i];
        if (i >= done) {
            qres_fail(c, t, rc);
            depth_zero(&t->d);
        } else if (sub[i].rc) {
            t->rc = sub[i].rc;
            free(t->err);
            t->err = sub[i].err;
            sub[i].err = NULL;
            depth_zero(&t->d);
        } else {
            if (t->rc) depth_zero(&t->d); /* the declare alone is enough */
            t->rc = 0;
            free(t->err);
            t->err = NULL;
            t->d.ready = sub[i].d.ready;
            t->d.consumers = sub[i].d.consumers;
            t->d.exact = true;
            t->d.total = t->d.ready + t->d.unacked;
            t->d.nqueues = 1;
            t->d.sampled_ms = util_now_ms();
        }
    }
    for (size_t i = 0; sub && i < m; i++) free(sub[i].err);
    free(w);
    free(sub);
}

/* ---- public: one queue ------------------------------------------------------------------- */

static void note_queue(struct rmq_client *c, const char *vhost, const char *queue, int rc)
{
    struct dbuf key;
    dbuf_init(&key, 4096);
    if (dbuf_printf(&key, "queue \"%s\" in vhost \"%s\"", queue, vhost) == 0)
        note_result(c, key.data, rc);
    dbuf_free(&key);
}

/* Keep a result for the rest of the tick (best effort: a full cache only costs a re-read). */
static void cache_put(struct rmq_client *c, const char *vhost, const char *queue, int rc,
                      const struct rmq_depth *d, const char *err)
{
    if (c->ncache == c->ccache) {
        size_t cap = c->ccache ? c->ccache * 2 : 64;
        struct qcache *nc = cap <= RMQ_MAX_CACHE ? realloc(c->cache, cap * sizeof *nc) : NULL;
        if (!nc) return;
        c->cache = nc;
        c->ccache = cap;
    }
    struct qcache *q = &c->cache[c->ncache];
    q->vhost = strdup(vhost);
    q->queue = strdup(queue);
    q->err = err && err[0] ? strdup(err) : NULL;
    q->rc = rc;
    q->d = *d;
    if (q->vhost && q->queue && (q->err || !err || !err[0])) c->ncache++;
    else {
        free(q->vhost);
        free(q->queue);
        free(q->err);
    }
}

static struct qcache *cache_find(struct rmq_client *c, const char *vhost, const char *queue)
{
    for (size_t k = 0; k < c->ncache; k++) {
        size_t i = (c->hint + k) % c->ncache;
        struct qcache *q = &c->cache[i];
        if (strcmp(q->queue, queue) == 0 && strcmp(q->vhost, vhost) == 0) {
            c->hint = i + 1;
            return q;
        }
    }
    return NULL;
}

int rmq_watch_queue(struct rmq_client *c, const char *vhost, const char *queue)
{
    for (size_t i = 0; i < c->nnq; i++)
        if (strcmp(c->nq[i].queue, queue) == 0 && strcmp(c->nq[i].vhost, vhost) == 0) return 0;
    if (c->nnq == c->cnq) {
        size_t cap = c->cnq ? c->cnq * 2 : 64;
        struct nqent *n = realloc(c->nq, cap * sizeof *n);
        if (!n) return JP_ENOMEM;
        c->nq = n;
        c->cnq = cap;
    }
    char *v = strdup(vhost), *q = strdup(queue);
    if (!v || !q) {
        free(v);
        free(q);
        return JP_ENOMEM;
    }
    c->nq[c->nnq++] = (struct nqent){.vhost = v, .queue = q, .low = -1};
    return 0;
}

/* A tick's read of a registered queue: the probe's reference from now on (-1: unknown). */
static void nq_read(struct rmq_client *c, const char *vhost, const char *queue, int rc,
                    int64_t ready)
{
    if (c->source != CFG_DEPTH_AMQP) return;
    for (size_t i = 0; i < c->nnq; i++)
        if (strcmp(c->nq[i].queue, queue) == 0 && strcmp(c->nq[i].vhost, vhost) == 0) {
            c->nq[i].low = rc ? -1 : ready;
            return;
        }
}

static struct vstate *vstate_get(struct rmq_client *c, const char *vhost)
{
    for (size_t i = 0; i < c->nvs; i++)
        if (strcmp(c->vs[i].vhost, vhost) == 0) return &c->vs[i];
    if (c->nvs == c->cvs) {
        size_t cap = c->cvs ? c->cvs * 2 : 8;
        struct vstate *n = realloc(c->vs, cap * sizeof *n);
        if (!n) return NULL;
        c->vs = n;
        c->cvs = cap;
    }
    char *v = strdup(vhost);
    if (!v) return NULL;
    c->vs[c->nvs] = (struct vstate){.vhost = v, .queues = -1};
    return &c->vs[c->nvs++];
}

/* The rule: one GET per queue costs about five listing rows (docs/performance.md), so a vhost
 * is listed when at least RMQ_LIST_MIN_POOLS of its queues are read and it holds at most
 * RMQ_LIST_ROWS_PER_POOL queues per queue read. Its size comes from the last listing (unknown:
 * list, and learn it); a vhost found too big is tried again after RMQ_LIST_RECHECK ticks. */
static bool list_worth(const struct rmq_client *c, const struct vstate *v, size_t pools)
{
    if (pools < RMQ_LIST_MIN_POOLS) return false;
    if (v->queues < 0 || c->tick - v->queues_tick >= RMQ_LIST_RECHECK) return true;
    return v->queues <= (int64_t)(RMQ_LIST_ROWS_PER_POOL * pools);
}

static int cmp_qres(const void *a, const void *b)
{
    return strcmp(((const struct qres *)a)->queue, ((const struct qres *)b)->queue);
}

/* One listing page: fill the results of the queues it names. */
static int batch_page(struct rmq_client *c, const char *url, const cJSON *j, struct qres *q,
                      size_t n, int64_t *page_count, int64_t *total)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(j, "page_count");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, "total_count");
    if (!cJSON_IsObject(j) || !cJSON_IsArray(items) || !cJSON_IsNumber(pc)) {
        set_err(c, url, "the listing is not an object with an \"items\" array and a "
                        "\"page_count\" number");
        return JP_ESHAPE;
    }
    if (pc->valuedouble < 0 || pc->valuedouble > RMQ_MAX_PAGES) {
        set_err(c, url, "page_count out of range: %.17g", pc->valuedouble);
        return JP_ERANGE;
    }
    *page_count = (int64_t)pc->valuedouble;
    if (cJSON_IsNumber(tc) && tc->valuedouble >= 0 && tc->valuedouble < 1e9)
        *total = (int64_t)tc->valuedouble;
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!cJSON_IsObject(it) || !cJSON_IsString(nm)) {
            set_err(c, url, "a listing item has no \"name\" string");
            return JP_ESHAPE;
        }
        struct qres key = {.queue = nm->valuestring};
        struct qres *r = bsearch(&key, q, n, sizeof *q, cmp_qres);
        if (!r) continue; /* a queue no pool reads */
        char why[160] = "";
        struct rmq_depth *d = &r->d;
        int r1 = get_count(it, "messages_ready", &d->ready, why, sizeof why);
        int r2 = r1 < 0 ? r1
                        : get_count(it, "messages_unacknowledged", &d->unacked, why, sizeof why);
        int r3 = r2 < 0 ? r2 : get_count(it, "messages", &d->total, why, sizeof why);
        int r4 = r3 < 0 ? r3 : get_count(it, "consumers", &d->consumers, why, sizeof why);
        if (r4 < 0) {
            set_err(c, url, "queue \"%s\": %s", r->queue, why);
            qres_fail(c, r, r4);
        } else if (r1 || r2 || r3) {
            set_err(c, url, "the broker has no message counts for this queue yet");
            qres_fail(c, r, JP_ESTALE);
        } else {
            r->rc = 0;
            if (r4) d->consumers = 0;
            d->nqueues = 1;
        }
        d->sampled_ms = util_now_ms();
    }
    return 0;
}

/* The whole vhost in pages of RMQ_PAGE_SIZE, trimmed to the columns a depth needs. */
static int batch_list(struct rmq_client *c, const char *vhost, struct qres *q, size_t n,
                      int64_t *total)
{
    struct dbuf url;
    dbuf_init(&url, 64 * 1024);
    char *ev = http_escape(vhost);
    int rc = JP_ENOMEM;
    if (!ev) goto out;
    int64_t page_count = 1;
    for (int64_t page = 1; page <= page_count; page++) {
        dbuf_reset(&url);
        if (dbuf_printf(&url, "%s/api/queues/%s?page=%lld&page_size=%d&columns=name,"
                              "messages_ready,messages_unacknowledged,messages,consumers",
                        c->base, ev, (long long)page, RMQ_PAGE_SIZE))
            goto out;
        cJSON *j = NULL;
        if ((rc = get_json(c, url.data, &j)) != 0) goto out;
        rc = batch_page(c, url.data, j, q, n, &page_count, total);
        cJSON_Delete(j);
        if (rc) goto out;
    }
    /* Not listed: no such queue (the per-queue GET's 404). */
    for (size_t i = 0; i < n; i++)
        if (q[i].rc == JP_ENOTFOUND && !q[i].err) {
            set_err(c, url.data, "queue \"%s\" is not in the listing of vhost \"%s\"",
                    q[i].queue, vhost);
            qres_fail(c, &q[i], JP_ENOTFOUND);
        }
    rc = 0;
out:
    if (rc == JP_ENOMEM && !c->err[0]) set_err(c, NULL, "out of memory");
    free(ev);
    dbuf_free(&url);
    return rc;
}

/* Read every registered named queue of vhost in one go when list_worth says so: one paged
 * listing and, with depthSource amqp, one pipelined run of passive declares. The results go
 * into the tick's cache, so each pool's rmq_queue_depth finds its own. */
static void batch_vhost(struct rmq_client *c, const char *vhost)
{
    struct vstate *v = vstate_get(c, vhost);
    if (!v || v->tick == c->tick) return;
    v->tick = c->tick;
    size_t n = 0;
    for (size_t i = 0; i < c->nnq; i++) n += strcmp(c->nq[i].vhost, vhost) == 0;
    if (!list_worth(c, v, n)) return;
    struct qres *q = calloc(n, sizeof *q);
    if (!q) return; /* the per-queue path still works */
    for (size_t i = 0, k = 0; i < c->nnq; i++)
        if (strcmp(c->nq[i].vhost, vhost) == 0) {
            q[k].queue = c->nq[i].queue;
            q[k].rc = JP_ENOTFOUND;
            depth_zero(&q[k++].d);
        }
    qsort(q, n, sizeof *q, cmp_qres);
    int64_t total = -1;
    c->err[0] = '\0';
    int rc = batch_list(c, vhost, q, n, &total);
    if (!rc) {
        v->queues = total >= 0 ? total : (int64_t)n;
        v->queues_tick = c->tick;
    }
    for (size_t i = 0; rc && i < n; i++) {
        qres_fail(c, &q[i], rc);
        depth_zero(&q[i].d);
    }
    if (!rc && c->source == CFG_DEPTH_AMQP) amqp_pipe(c, vhost, q, n);
    int64_t now = util_now_ms();
    /* Cached in registration order, the order the pools read them in (see cache_find). */
    for (size_t i = 0; i < c->nnq; i++) {
        if (strcmp(c->nq[i].vhost, vhost) != 0) continue;
        struct qres key = {.queue = c->nq[i].queue};
        struct qres *r = bsearch(&key, q, n, sizeof *q, cmp_qres);
        if (r->rc) {
            depth_zero(&r->d);
            r->d.sampled_ms = now;
        }
        snprintf(c->err, sizeof c->err, "%s", r->err ? r->err : "");
        note_queue(c, vhost, r->queue, r->rc);
        cache_put(c, vhost, r->queue, r->rc, &r->d, r->err);
        if (c->source == CFG_DEPTH_AMQP) c->nq[i].low = r->rc ? -1 : r->d.ready;
    }
    for (size_t i = 0; i < n; i++) free(q[i].err);
    free(q);
}

int rmq_queue_depth(struct rmq_client *c, const char *vhost, const char *queue,
                    struct rmq_depth *out)
{
    depth_zero(out);
    struct qcache *hit = cache_find(c, vhost, queue);
    if (!hit && rmq_watch_queue(c, vhost, queue) == 0) {
        batch_vhost(c, vhost);
        hit = cache_find(c, vhost, queue);
    }
    if (hit) {
        *out = hit->d;
        snprintf(c->err, sizeof c->err, "%s", hit->err ? hit->err : "");
        return hit->rc;
    }
    c->err[0] = '\0';
    struct rmq_depth d;
    depth_zero(&d);
    int rc = mgmt_queue(c, vhost, queue, &d);
    d.sampled_ms = util_now_ms();
    /* With depthSource amqp the passive declare is the truth for ready and consumers, in real
     * time; the management API only adds unacked and the rates. A queue declared moments ago
     * has no management statistics yet (JP_ESTALE): the AMQP figures are enough then. */
    if ((!rc || rc == JP_ESTALE) && c->source == CFG_DEPTH_AMQP) {
        if (rc == JP_ESTALE) {
            depth_zero(&d);
            d.nqueues = 1;
        }
        int64_t ready = 0, consumers = 0;
        rc = amqp_ready(c, vhost, queue, &ready, &consumers);
        if (!rc) {
            d.sampled_ms = util_now_ms();
            d.ready = ready;
            d.consumers = consumers;
            d.total = ready + d.unacked;
            d.exact = true;
        }
    }
    if (rc) {
        depth_zero(&d);
        d.sampled_ms = util_now_ms();
    }
    note_queue(c, vhost, queue, rc);
    cache_put(c, vhost, queue, rc, &d, c->err);
    nq_read(c, vhost, queue, rc, d.ready);
    *out = d;
    return rc;
}

/* ---- public: between ticks --------------------------------------------------------------- */

/* Passive-declare the registered queues of one vhost (those at nq[from..] on it) and compare. */
static int probe_vhost(struct rmq_client *c, size_t from, struct qres *q, size_t *idx, bool *grew)
{
    const char *vhost = c->nq[from].vhost;
    size_t n = 0;
    for (size_t i = from; i < c->nnq; i++)
        if (strcmp(c->nq[i].vhost, vhost) == 0) {
            q[n] = (struct qres){.queue = c->nq[i].queue, .rc = JP_ENOTFOUND};
            idx[n++] = i;
        }
    amqp_pipe(c, vhost, q, n);
    int first = 0;
    for (size_t k = 0; k < n; k++) {
        struct nqent *e = &c->nq[idx[k]];
        if (q[k].rc) {
            if (!first && q[k].rc != JP_ENOTFOUND) first = q[k].rc; /* missing: the tick says */
        } else if (e->low >= 0) {
            if (q[k].d.ready > e->low) *grew = true;
            else e->low = q[k].d.ready;
        }
        free(q[k].err);
    }
    return first;
}

int rmq_probe(struct rmq_client *c, bool *grew)
{
    *grew = false;
    if (!c || c->source != CFG_DEPTH_AMQP || !c->nnq) return 0;
    struct qres *q = calloc(c->nnq, sizeof *q);
    size_t *idx = calloc(c->nnq, sizeof *idx);
    int rc = q && idx ? 0 : JP_ENOMEM;
    for (size_t i = 0; !rc && i < c->nnq; i++) {
        size_t j;
        for (j = 0; j < i && strcmp(c->nq[j].vhost, c->nq[i].vhost) != 0; j++) {
        }
        if (j == i) rc = probe_vhost(c, i, q, idx, grew); /* the vhost's first queue */
    }
    free(q);
    free(idx);
    return rc;
}

/* ---- public: regex pools ----------------------------------------------------------------- */

static int rx_find(struct rmq_client *c, const char *vhost, const char *regex, struct rxent **out)
{
    *out = NULL;
    for (size_t i = 0; i < c->nrx; i++)
        if (strcmp(c->rx[i].vhost, vhost) == 0 && strcmp(c->rx[i].regex, regex) == 0) {
            *out = &c->rx[i];
            return 0;
        }
    if (c->nrx == RMQ_MAX_REGEX) {
        set_err(c, NULL, "more than %d queue regexes", RMQ_MAX_REGEX);
        return JP_ERANGE;
    }
    if (!grow_array((void **)&c->rx, c->nrx, &c->crx, sizeof *c->rx, RMQ_MAX_REGEX))
        return JP_ENOMEM;
    struct rxent *e = &c->rx[c->nrx];
    memset(e, 0, sizeof *e);
    int rr = regcomp(&e->re, regex, REG_EXTENDED | REG_NOSUB);
    if (rr != 0) {
        char m[128];
        regerror(rr, &e->re, m, sizeof m);
        set_err(c, NULL, "queue regex \"%s\" is not a POSIX extended regex: %s", regex, m);
        return JP_EINVAL;
    }
    e->vhost = strdup(vhost);
    e->regex = strdup(regex);
    if (!e->vhost || !e->regex) {
        regfree(&e->re);
        free(e->vhost);
        free(e->regex);
        return JP_ENOMEM;
    }
    c->nrx++;
    *out = e;
    return 0;
}

int rmq_watch_regex(struct rmq_client *c, const char *vhost, const char *regex)
{
    struct rxent *e;
    return rx_find(c, vhost, regex, &e);
}

/* Process one listing page: add every item to the sums of the vhost's regexes it matches. */
static int qlist_add(struct qlist *l, const char *name, const int64_t *v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct rmq_qdepth *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return JP_ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    struct rmq_qdepth *q = &l->v[l->n++];
    snprintf(q->name, sizeof q->name, "%s", name);
    q->ready = v[0];
    q->unacked = v[1];
    q->consumers = v[3];
    return 0;
}

static int cmp_qdepth(const void *a, const void *b)
{
    return strcmp(((const struct rmq_qdepth *)a)->name, ((const struct rmq_qdepth *)b)->name);
}

static int list_page(struct rmq_client *c, const char *url, const cJSON *j, const char *vhost,
                     struct rmq_depth *sums, struct qlist *lists, int64_t *page_count)
{
    if (!cJSON_IsObject(j)) {
        set_err(c, url, "expected a paged listing object, got %s",
                cJSON_IsArray(j) ? "an array" : "another JSON value");
        return JP_ESHAPE;
    }
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(j, "page_count");
    if (!cJSON_IsArray(items) || !cJSON_IsNumber(pc)) {
        set_err(c, url, "the listing has no \"items\" array or \"page_count\" number");
        return JP_ESHAPE;
    }
    if (pc->valuedouble < 0 || pc->valuedouble > RMQ_MAX_PAGES) {
        set_err(c, url, "page_count out of range: %.17g", pc->valuedouble);
        return JP_ERANGE;
    }
    *page_count = (int64_t)pc->valuedouble;
    const cJSON *it;
    char why[160];
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!cJSON_IsObject(it) || !cJSON_IsString(nm)) {
            set_err(c, url, "a listing item has no \"name\" string");
            return JP_ESHAPE;
        }
        /* A queue the broker has no statistics for yet counts as 0. */
        int64_t v[4] = {0, 0, 0, 0};
        static const char *f[4] = {"messages_ready", "messages_unacknowledged", "messages",
                                   "consumers"};
        for (int k = 0; k < 4; k++) {
            int r = get_count(it, f[k], &v[k], why, sizeof why);
            if (r < 0) {
                set_err(c, url, "queue \"%s\": %s", nm->valuestring, why);
                return r;
            }
        }
        for (size_t i = 0; i < c->nrx; i++) {
            if (strcmp(c->rx[i].vhost, vhost) != 0) continue;
            if (regexec(&c->rx[i].re, nm->valuestring, 0, NULL, 0) != 0) continue;
            struct rmq_depth *s = &sums[i];
            s->ready += v[0];
            s->unacked += v[1];
            s->total += v[2];
            s->consumers += v[3];
            s->nqueues++;
            if (s->nqueues > RMQ_MAX_REGEX_QUEUES) {
                set_err(c, url, "regex \"%s\" matches more than %d queues", c->rx[i].regex,
                        RMQ_MAX_REGEX_QUEUES);
                return JP_ERANGE;
            }
            if (qlist_add(&lists[i], nm->valuestring, v)) return JP_ENOMEM;
            if (s->ready > RMQ_MAX_COUNT || s->total > RMQ_MAX_COUNT ||
                s->unacked > RMQ_MAX_COUNT || s->consumers > RMQ_MAX_COUNT) {
                set_err(c, url, "the sum over regex \"%s\" is absurdly large", c->rx[i].regex);
                return JP_ERANGE;
            }
        }
    }
    return 0;
}

/* Fetch one listing for vhost filtered by the union of its regexes, and fill every one. */
static int list_vhost(struct rmq_client *c, const char *vhost)
{
    struct dbuf uni, url;
    dbuf_init(&uni, 256 * 1024);
    dbuf_init(&url, 1024 * 1024);
    struct rmq_depth *sums = calloc(c->nrx, sizeof *sums);
    struct qlist *lists = calloc(c->nrx, sizeof *lists);
    char *ev = http_escape(vhost), *eu = NULL;
    int rc = JP_ENOMEM;
    if (!sums || !lists || !ev) goto out;
    for (size_t i = 0; i < c->nrx; i++) {
        if (strcmp(c->rx[i].vhost, vhost) != 0) continue;
        if (dbuf_printf(&uni, "%s(%s)", uni.len ? "|" : "", c->rx[i].regex)) goto out;
        depth_zero(&sums[i]);
    }
    if (!(eu = http_escape(uni.data ? uni.data : ""))) goto out;
    int64_t page_count = 1;
    for (int64_t page = 1; page <= page_count; page++) {
        dbuf_reset(&url);
        if (dbuf_printf(&url, "%s/api/queues/%s?page=%lld&page_size=%d&name=%s&use_regex=true"
                              "&columns=name,messages_ready,messages_unacknowledged,messages,"
                              "consumers",
                        c->base, ev, (long long)page, RMQ_PAGE_SIZE, eu))
            goto out;
        cJSON *j = NULL; /* only one page's tree is alive at a time */
        if ((rc = get_json(c, url.data, &j)) != 0) goto out;
        rc = list_page(c, url.data, j, vhost, sums, lists, &page_count);
        cJSON_Delete(j);
        if (rc) goto out;
    }
    rc = 0;
out:
    if (rc == JP_ENOMEM && !c->err[0]) set_err(c, NULL, "out of memory");
    int64_t now = util_now_ms();
    for (size_t i = 0; i < c->nrx; i++) {
        struct rxent *e = &c->rx[i];
        if (strcmp(e->vhost, vhost) != 0) continue;
        e->tick = c->tick;
        e->rc = rc;
        if (sums && !rc) e->d = sums[i];
        else depth_zero(&e->d);
        e->d.sampled_ms = now;
        free(e->q);
        e->q = NULL;
        if (!rc && lists) {
            /* The broker lists by name already; sorting makes the order ours, not its. */
            e->q = lists[i].v;
            lists[i].v = NULL;
            if (e->q) qsort(e->q, e->d.nqueues, sizeof *e->q, cmp_qdepth);
        }
        e->d.queues = e->q;
        free(e->err);
        e->err = rc && c->err[0] ? strdup(c->err) : NULL;
    }
    free(sums);
    for (size_t i = 0; lists && i < c->nrx; i++) free(lists[i].v);
    free(lists);
    free(ev);
    free(eu);
    dbuf_free(&uni);
    dbuf_free(&url);
    return rc;
}

int rmq_regex_depth(struct rmq_client *c, const char *vhost, const char *regex,
                    struct rmq_depth *out)
{
    depth_zero(out);
    c->err[0] = '\0';
    struct rxent *e;
    int rc = rx_find(c, vhost, regex, &e);
    if (rc) return rc;
    size_t idx = (size_t)(e - c->rx);
    bool fresh = e->tick == c->tick && c->tick != 0;
    if (!fresh) {
        list_vhost(c, vhost);
        e = &c->rx[idx];
    }
    snprintf(c->err, sizeof c->err, "%s", e->err ? e->err : "");
    struct dbuf key;
    dbuf_init(&key, 4096);
    if (dbuf_printf(&key, "queues matching \"%s\" in vhost \"%s\"", regex, vhost) == 0)
        note_result(c, key.data, e->rc);
    dbuf_free(&key);
    *out = e->d;
    return e->rc;
}
