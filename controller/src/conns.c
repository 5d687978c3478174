/* conns.c: JobPools' own broker connections: Secrets read by name, one client per connection. */
#define _GNU_SOURCE
#include "conns.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "err.h"
#include "kubeconfig.h"
#include "log.h"
#include "rmq.h"
#include "util.h"

#define URL_MAX 2048
#define VALUE_MAX (64 * 1024)

/* ---- the Secret's data ------------------------------------------------------------------- */

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The decoded value of key (trailing newlines dropped: `kubectl create secret --from-file`
 * keeps the file's), or *out NULL when the key is absent. */
static int value_of(const cJSON *data, const char *key, char **out, char *err, size_t errlen)
{
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, key);
    if (!v) return 0;
    if (!cJSON_IsString(v)) {
        fail(err, errlen, "key %s: not a string", key);
        return JP_ECONFIG;
    }
    size_t n = 0;
    int rc = kube_base64_decode(v->valuestring, out, &n);
    if (rc == JP_ENOMEM) return rc;
    if (rc) {
        fail(err, errlen, "key %s: not base64", key);
        return JP_ECONFIG;
    }
    if (n > VALUE_MAX || strlen(*out) != n) {
        free(*out);
        *out = NULL;
        fail(err, errlen, n > VALUE_MAX ? "key %s: longer than 64 KiB" : "key %s: holds a NUL "
             "byte", key);
        return JP_ECONFIG;
    }
    while (n && ((*out)[n - 1] == '\n' || (*out)[n - 1] == '\r')) (*out)[--n] = '\0';
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) into a new string; NULL with *bad set on a broken escape. */
static char *pct_decode(const char *s, size_t n, bool *bad)
{
    char *o = malloc(n + 1);
    size_t k = 0;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            o[k++] = s[i];
            continue;
        }
        if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
            free(o);
            *bad = true;
            return NULL;
        }
        o[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
        i += 2;
    }
    o[k] = '\0';
    if (strlen(o) != k) { /* %00 */
        free(o);
        *bad = true;
        return NULL;
    }
    return o;
}

/* A URL's parts, as far as the connection needs them. */
struct url_parts {
    char *clean;                /* without user info */
    char *user, *pass;          /* decoded user info, NULL when none */
    char *path;                 /* decoded path after the first '/', NULL when empty */
};

static void url_parts_free(struct url_parts *u)
{
    free(u->clean);
    free(u->user);
    if (u->pass) explicit_bzero(u->pass, strlen(u->pass));
    free(u->pass);
    free(u->path);
    memset(u, 0, sizeof *u);
}

static bool has_scheme(const char *url, const char *const *schemes)
{
    for (; *schemes; schemes++)
        if (!strncmp(url, *schemes, strlen(*schemes))) return true;
    return false;
}

/* Check url (the value of key) against schemes and split it. The value is never quoted in err:
 * it may hold a password. */
static int url_split(const char *key, const char *url, const char *const *schemes,
                     const char *want, struct url_parts *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    size_t len = strlen(url);
    if (!len) {
        fail(err, errlen, "key %s: empty", key);
        return JP_ECONFIG;
    }
    if (len > URL_MAX) {
        fail(err, errlen, "key %s: longer than %d bytes", key, URL_MAX);
        return JP_ECONFIG;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f) {
            fail(err, errlen, "key %s: holds a space or control character", key);
            return JP_ECONFIG;
        }
    }
    if (!has_scheme(url, schemes)) {
        fail(err, errlen, "key %s: not %s URL", key, want);
        return JP_ECONFIG;
    }
    const char *auth = strstr(url, "://") + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *c = auth; c < auth + alen; c++)
        if (*c == '@') at = c;
    const char *host = at ? at + 1 : auth;
    size_t hlen = (size_t)(auth + alen - host);
    /* host, [v6], optional :port of 1 to 65535 */
    const char *colon = NULL;
    if (hlen && host[0] == '[') {
        const char *rb = memchr(host, ']', hlen);
        if (!rb || rb == host + 1 || (rb + 1 < host + hlen && rb[1] != ':')) hlen = 0;
        else if (rb + 1 < host + hlen) colon = rb + 1;
    } else {
        colon = memchr(host, ':', hlen);
    }
    size_t name_len = colon ? (size_t)(colon - host) : hlen;
    bool ok = hlen && name_len;
    if (ok && colon && colon < host + hlen) {
        long port = 0;
        const char *p = colon + 1;
        ok = p < host + hlen;
        for (; ok && p < host + hlen; p++) {
            ok = isdigit((unsigned char)*p) && (port = port * 10 + (*p - '0')) <= 65535;
        }
        ok = ok && port >= 1;
    }
    if (!ok) {
        fail(err, errlen, "key %s: no host, or a bad port (want %s URL)", key, want);
        return JP_ECONFIG;
    }
    bool bad = false;
    if (at) {
        const char *sep = memchr(auth, ':', (size_t)(at - auth));
        size_t ulen = sep ? (size_t)(sep - auth) : (size_t)(at - auth);
        if (!(u->user = pct_decode(auth, ulen, &bad)) && !bad) goto nomem;
        if (!bad && sep && !(u->pass = pct_decode(sep + 1, (size_t)(at - sep - 1), &bad)) && !bad)
            goto nomem;
    }
    const char *path = auth + alen;
    if (!bad && *path == '/' && path[1] && path[1] != '?' && path[1] != '#') {
        if (!(u->path = pct_decode(path + 1, strcspn(path + 1, "?#"), &bad)) && !bad) goto nomem;
    }
    if (bad) {
        url_parts_free(u);
        fail(err, errlen, "key %s: a broken %%-escape", key);
        return JP_ECONFIG;
    }
    if (!(u->clean = util_url_strip_userinfo(url))) goto nomem;
    return 0;
nomem:
    url_parts_free(u);
    return JP_ENOMEM;
}

void conn_spec_free(struct conn_spec *s)
{
    if (!s) return;
    free(s->management_url);
    free(s->amqp_url);
    free(s->vhost);
    free(s->username);
    if (s->password) explicit_bzero(s->password, strlen(s->password));
    free(s->password);
    free(s->ca_pem);
    free(s->cert_pem);
    if (s->key_pem) explicit_bzero(s->key_pem, strlen(s->key_pem));
    free(s->key_pem);
    memset(s, 0, sizeof *s);
}

static const char *const http_schemes[] = {"http://", "https://", NULL};
static const char *const amqp_schemes[] = {"amqp://", "amqps://", NULL};

/* Which key gives the management URL and which the AMQP URL: the named keys first, else host
 * by its scheme. */
static int pick_urls(const cJSON *data, char **mgmt, const char **mkey, char **amqp,
                     const char **akey, char *err, size_t errlen)
{
    char *host = NULL;
    int rc;
    if ((rc = value_of(data, CONN_KEY_MANAGEMENT, mgmt, err, errlen)) ||
        (rc = value_of(data, CONN_KEY_AMQP, amqp, err, errlen)) ||
        (rc = value_of(data, CONN_KEY_HOST, &host, err, errlen)))
        return rc;
    *mkey = CONN_KEY_MANAGEMENT;
    *akey = *amqp ? CONN_KEY_AMQP : NULL;
    if (host && has_scheme(host, http_schemes) && !*mgmt) {
        *mgmt = host;
        *mkey = CONN_KEY_HOST;
        host = NULL;
    } else if (host && has_scheme(host, amqp_schemes) && !*amqp) {
        *amqp = host;
        *akey = CONN_KEY_HOST;
        host = NULL;
    } else if (host && !has_scheme(host, http_schemes) && !has_scheme(host, amqp_schemes)) {
        fail(err, errlen, "key %s: not an amqp[s]:// or http[s]:// URL", CONN_KEY_HOST);
        rc = JP_ECONFIG;
    }
    free(host);
    if (!rc && !*mgmt) {
        fail(err, errlen, "key %s: required (the queue depth is read from the management API; "
             "or give host an http[s]:// URL)", CONN_KEY_MANAGEMENT);
        rc = JP_ECONFIG;
    }
    return rc;
}

/* The login: username and password keys, else the user info of the AMQP URL (the workers' URL
 * must carry it then), else of the management URL when there is no AMQP URL. */
static int pick_login(const cJSON *data, struct conn_spec *s, struct url_parts *m,
                      struct url_parts *a, const char *mkey, char *err, size_t errlen)
{
    int rc;
    if ((rc = value_of(data, CONN_KEY_USERNAME, &s->username, err, errlen)) ||
        (rc = value_of(data, CONN_KEY_PASSWORD, &s->password, err, errlen)))
        return rc;
    if (s->username) {
        if (!*s->username) {
            fail(err, errlen, "key %s: empty", CONN_KEY_USERNAME);
            return JP_ECONFIG;
        }
        if (!s->password) {
            fail(err, errlen, "key %s: required with key %s (workers read both)",
                 CONN_KEY_PASSWORD, CONN_KEY_USERNAME);
            return JP_ECONFIG;
        }
        return 0;
    }
    if (s->password) {
        fail(err, errlen, "key %s: required with key %s", CONN_KEY_USERNAME, CONN_KEY_PASSWORD);
        return JP_ECONFIG;
    }
    struct url_parts *from = s->amqp_url ? a : m;
    if (!from->user || !*from->user) {
        fail(err, errlen, "key %s: required (or the login as user info in the %s URL)",
             CONN_KEY_USERNAME, s->amqp_url ? s->amqp_key : mkey);
        return JP_ECONFIG;
    }
    s->username = from->user;
    s->password = from->pass ? from->pass : strdup("");
    from->user = from->pass = NULL;
    s->login_in_url = true;
    return s->password ? 0 : JP_ENOMEM;
}

/* tls.crt and tls.key: both or neither, PEM, and a TLS URL to present them on. */
static int parse_client_cert(const cJSON *data, struct conn_spec *out, char *err, size_t errlen)
{
    int rc;
    if ((rc = value_of(data, CONN_KEY_CERT, &out->cert_pem, err, errlen)) ||
        (rc = value_of(data, CONN_KEY_KEY, &out->key_pem, err, errlen)))
        return rc;
    if (!out->cert_pem && !out->key_pem) return 0;
    if (!out->cert_pem || !out->key_pem) {
        fail(err, errlen, "key %s: required with key %s",
             out->cert_pem ? CONN_KEY_KEY : CONN_KEY_CERT,
             out->cert_pem ? CONN_KEY_CERT : CONN_KEY_KEY);
        return JP_ECONFIG;
    }
    if (!strstr(out->cert_pem, "-----BEGIN CERTIFICATE-----")) {
        fail(err, errlen, "key %s: not a PEM certificate", CONN_KEY_CERT);
        return JP_ECONFIG;
    }
    if (!strstr(out->key_pem, "-----BEGIN ") || !strstr(out->key_pem, "PRIVATE KEY-----")) {
        fail(err, errlen, "key %s: not a PEM private key", CONN_KEY_KEY);
        return JP_ECONFIG;
    }
    if (strstr(out->key_pem, "ENCRYPTED")) {
        fail(err, errlen, "key %s: an encrypted private key; store it unencrypted", CONN_KEY_KEY);
        return JP_ECONFIG;
    }
    bool amqps = out->amqp_url && !strncmp(out->amqp_url, "amqps://", 8);
    if (!amqps && strncmp(out->management_url, "https://", 8) != 0) {
        fail(err, errlen, "key %s: a client certificate needs an amqps:// or https:// URL",
             CONN_KEY_CERT);
        return JP_ECONFIG;
    }
    return 0;
}

int conn_parse_secret(const cJSON *secret, struct conn_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(secret, "data");
    if (!cJSON_IsObject(data)) {
        fail(err, errlen, "it has no data");
        return JP_ECONFIG;
    }
    char *mgmt = NULL, *amqp = NULL;
    const char *mkey = NULL;
    struct url_parts m = {0}, a = {0};
    int rc = pick_urls(data, &mgmt, &mkey, &amqp, &out->amqp_key, err, errlen);
    if (rc) goto out;
    if ((rc = url_split(mkey, mgmt, http_schemes, "an http:// or https://", &m, err, errlen)))
        goto out;
    if (amqp && (rc = url_split(out->amqp_key, amqp, amqp_schemes, "an amqp:// or amqps://",
                                &a, err, errlen)))
        goto out;
    out->management_url = m.clean;
    m.clean = NULL;
    if (amqp) {
        out->amqp_url = a.clean;
        out->vhost = a.path;
        a.clean = a.path = NULL;
    }
    if ((rc = pick_login(data, out, &m, &a, mkey, err, errlen))) goto out;
    if ((rc = value_of(data, CONN_KEY_CA, &out->ca_pem, err, errlen))) goto out;
    if (out->ca_pem && !strstr(out->ca_pem, "-----BEGIN CERTIFICATE-----")) {
        fail(err, errlen, "key %s: not a PEM certificate", CONN_KEY_CA);
        rc = JP_ECONFIG;
        goto out;
    }
    if ((rc = parse_client_cert(data, out, err, errlen))) goto out;
out:
    if (mgmt) explicit_bzero(mgmt, strlen(mgmt));
    if (amqp) explicit_bzero(amqp, strlen(amqp));
    free(mgmt);
    free(amqp);
    url_parts_free(&m);
    url_parts_free(&a);
    if (rc) conn_spec_free(out);
    return rc;
}

/* ---- the set of connections -------------------------------------------------------------- */

/* One broker login, shared by every Secret that gives the same one. */
struct cclient {
    char *id;                   /* what makes it distinct (holds the password: zeroed on free) */
    size_t idlen;
    struct rmq_client *rmq;
    int ca_fd;                  /* memfd holding ca.crt (read as /proc/self/fd/N), or -1 */
    int cert_fd, key_fd;        /* memfds holding tls.crt and tls.key, or -1 */
    int refs;                   /* Secrets using it */
};

/* One Secret some JobPool names. */
struct csecret {
    char *ns, *name;
    bool used;                  /* asked for in this pass */
    bool have;                  /* a usable connection */
    int64_t next_ms;            /* monotonic: read again from then on */
    char *rv;                   /* resourceVersion of the last good read */
    struct cclient *cl;
    struct conn_spec spec;
    struct kube_worker_conn wc;
    int err;
    char reason[40], msg[512];
};

struct conns {
    struct kube_client *kc;
    const struct cfg_rabbitmq *base;
    struct csecret **s;
    size_t ns, scap;
    struct cclient **cl;
    size_t ncl, clcap;
    struct conns_stats stats;
};

/* Room for one more pointer in *v (n used of *cap). */
static bool grow(void *v, size_t n, size_t *cap)
{
    void ***arr = v;
    if (n < *cap) return true;
    size_t nc = *cap ? *cap * 2 : 8;
    void **t = realloc(*arr, nc * sizeof *t);
    if (!t) return false;
    *arr = t;
    *cap = nc;
    return true;
}

int conns_new(struct kube_client *kc, const struct cfg_rabbitmq *base, struct conns **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return JP_ENOMEM;
    (*out)->kc = kc;
    (*out)->base = base;
    return 0;
}

static void client_unref(struct conns *C, struct cclient *cl)
{
    if (!cl || --cl->refs > 0) return;
    for (size_t i = 0; i < C->ncl; i++) {
        if (C->cl[i] != cl) continue;
        C->cl[i] = C->cl[--C->ncl];
        break;
    }
    rmq_client_free(cl->rmq);
    if (cl->ca_fd >= 0) close(cl->ca_fd);
    if (cl->cert_fd >= 0) close(cl->cert_fd);
    if (cl->key_fd >= 0) close(cl->key_fd);
    explicit_bzero(cl->id, cl->idlen);
    free(cl->id);
    free(cl);
}

static void secret_free(struct conns *C, struct csecret *s)
{
    client_unref(C, s->cl);
    conn_spec_free(&s->spec);
    free(s->ns);
    free(s->name);
    free(s->rv);
    free(s);
}

void conns_free(struct conns *C)
{
    if (!C) return;
    for (size_t i = 0; i < C->ns; i++) secret_free(C, C->s[i]);
    free(C->s);
    free(C->cl); /* every client went with its last Secret */
    free(C);
}

void conns_get_stats(const struct conns *C, struct conns_stats *out)
{
    *out = C->stats;
    out->secrets = C->ns;
    out->clients = C->ncl;
}

void conns_begin(struct conns *C)
{
    for (size_t i = 0; i < C->ns; i++) C->s[i]->used = false;
}

void conns_end(struct conns *C)
{
    size_t k = 0;
    for (size_t i = 0; i < C->ns; i++) {
        if (C->s[i]->used) C->s[k++] = C->s[i];
        else secret_free(C, C->s[i]);
    }
    C->ns = k;
    for (size_t i = 0; i < C->ncl; i++) rmq_tick_begin(C->cl[i]->rmq);
}

/* ca.crt as a file both libcurl and OpenSSL can open, with nothing written to a disk (the
 * controller's root filesystem is read-only). */
static int pem_memfd(const char *pem, int *fd)
{
    *fd = memfd_create("jobpool-pem", MFD_CLOEXEC);
    if (*fd < 0) return JP_EIO;
    size_t n = strlen(pem), off = 0;
    while (off < n) {
        ssize_t w = write(*fd, pem + off, n - off);
        if (w <= 0) {
            close(*fd);
            *fd = -1;
            return JP_EIO;
        }
        off += (size_t)w;
    }
    return 0;
}

/* The client for spec's login: an existing one when another Secret gives the same, else new. */
static int client_for(struct conns *C, const struct conn_spec *sp, struct cclient **out)
{
    *out = NULL;
    char *id = NULL;
    int len = asprintf(&id, "%s%c%s%c%s%c%s%c%s%c%s%c%s", sp->management_url, 0,
                       sp->amqp_url ? sp->amqp_url : "", 0, sp->username, 0, sp->password, 0,
                       sp->ca_pem ? sp->ca_pem : "", 0, sp->cert_pem ? sp->cert_pem : "", 0,
                       sp->key_pem ? sp->key_pem : "");
    if (len < 0) return JP_ENOMEM;
    for (size_t i = 0; i < C->ncl; i++) {
        struct cclient *cl = C->cl[i];
        if (cl->idlen == (size_t)len && !memcmp(cl->id, id, (size_t)len)) {
            explicit_bzero(id, (size_t)len);
            free(id);
            cl->refs++;
            *out = cl;
            return 0;
        }
    }
    int rc = JP_ENOMEM;
    struct cclient *cl = calloc(1, sizeof *cl);
    if (!cl || !grow(&C->cl, C->ncl, &C->clcap))
        goto out;
    cl->id = id;
    cl->idlen = (size_t)len;
    id = NULL;
    cl->ca_fd = cl->cert_fd = cl->key_fd = -1;
    struct cfg_rabbitmq r = *C->base;
    char ca[64], cert[64], key[64];
    r.management_url = sp->management_url;
    r.amqp_url = sp->amqp_url;
    r.ca_file = NULL;           /* the controller's CA is its own broker's */
    if (!sp->amqp_url) r.depth_source = CFG_DEPTH_MANAGEMENT;
    r.cert_file = r.key_file = NULL; /* and so is its client certificate */
    if (sp->ca_pem) {
        if ((rc = pem_memfd(sp->ca_pem, &cl->ca_fd))) goto out;
        snprintf(ca, sizeof ca, "/proc/self/fd/%d", cl->ca_fd);
        r.ca_file = ca;
    }
    if (sp->cert_pem && sp->key_pem) {
        if ((rc = pem_memfd(sp->cert_pem, &cl->cert_fd)) ||
            (rc = pem_memfd(sp->key_pem, &cl->key_fd)))
            goto out;
        snprintf(cert, sizeof cert, "/proc/self/fd/%d", cl->cert_fd);
        snprintf(key, sizeof key, "/proc/self/fd/%d", cl->key_fd);
        r.cert_file = cert;
        r.key_file = key;
    }
    if ((rc = rmq_client_new_login(&r, sp->username, sp->password, &cl->rmq))) goto out;
    cl->refs = 1;
    C->cl[C->ncl++] = cl;
    *out = cl;
    cl = NULL;
out:
    if (cl) {
        cl->refs = 1;
        client_unref(C, cl);
    }
    if (id) {
        explicit_bzero(id, (size_t)len);
        free(id);
    }
    return rc;
}

static void set_state(struct csecret *s, int err, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_state(struct csecret *s, int err, const char *reason, const char *fmt, ...)
{
    char msg[sizeof s->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Said once per change, not every retry. */
    if (err != s->err || strcmp(msg, s->msg))
        log_msg(LOG_WARN, NULL, err, "JobPool connection: %s", msg);
    s->err = err;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
    memcpy(s->msg, msg, sizeof msg);
}

/* A good read: use spec (taken over) from now on. */
static int use_spec(struct conns *C, struct csecret *s, struct conn_spec *spec, const char *rv)
{
    struct cclient *cl = NULL;
    int rc = client_for(C, spec, &cl);
    if (rc) {
        conn_spec_free(spec);
        return rc;
    }
    bool was = s->have;
    client_unref(C, s->cl);
    conn_spec_free(&s->spec);
    s->cl = cl;
    s->spec = *spec;
    memset(spec, 0, sizeof *spec);
    free(s->rv);
    s->rv = util_strdup(rv);
    const struct conn_spec *p = &s->spec;
    s->wc = (struct kube_worker_conn){
        .amqp_url = p->amqp_url,
        .secret = s->name,
        .username_key = CONN_KEY_USERNAME,
        .password_key = CONN_KEY_PASSWORD,
        .amqp_url_key = p->login_in_url ? p->amqp_key : NULL,
        .ca_secret = p->ca_pem ? s->name : NULL,
        .ca_key = CONN_KEY_CA,
        /* Workers present it on the AMQP URL only: over amqp:// they would refuse it. */
        .cert_secret = p->cert_pem && p->amqp_url && !strncmp(p->amqp_url, "amqps://", 8)
                           ? s->name : NULL,
        .cert_key = CONN_KEY_CERT,
        .key_key = CONN_KEY_KEY,
    };
    s->have = true;
    if (!was || s->err)
        log_info("JobPool connection: Secret %s/%s read: management %s, amqp %s, user %s%s%s",
                 s->ns, s->name, p->management_url, p->amqp_url ? p->amqp_url : "(none)",
                 p->username, p->ca_pem ? ", own CA" : "",
                 p->cert_pem ? ", client certificate" : "");
    s->err = 0;
    s->reason[0] = s->msg[0] = '\0';
    return 0;
}

static void drop_conn(struct conns *C, struct csecret *s)
{
    client_unref(C, s->cl);
    s->cl = NULL;
    conn_spec_free(&s->spec);
    free(s->rv);
    s->rv = NULL;
    s->have = false;
}

/* CONNS_REREAD_MS less up to a fifth, fixed per Secret: Secrets first read in the same pass
 * (all of them, at start) are not all read again in one later pass. */
static int64_t reread_ms(const struct csecret *s)
{
    uint64_t h = util_fnv1a(s->ns, strlen(s->ns), 0);
    h = util_fnv1a(s->name, strlen(s->name), h);
    return CONNS_REREAD_MS - (int64_t)(h % (CONNS_REREAD_MS / 5));
}

/* GET the Secret and act on the answer. */
static void read_secret(struct conns *C, struct csecret *s, int64_t now_ms)
{
    char *path = util_strprintf("/api/v1/namespaces/%s/secrets/%s", s->ns, s->name);
    cJSON *body = NULL;
    int rc = path ? kube_request(C->kc, "GET", path, NULL, &body) : JP_ENOMEM;
    free(path);
    C->stats.reads++;
    s->next_ms = now_ms + CONNS_RETRY_MS;
    if (rc) C->stats.read_errors++;
    if (rc == JP_ENOTFOUND) {
        drop_conn(C, s);
        set_state(s, rc, "ConnectionSecretNotFound", "Secret %s/%s (spec.connectionSecretRef) "
                  "not found", s->ns, s->name);
    } else if (rc == JP_EFORBIDDEN || rc == JP_EUNAUTHORIZED) {
        drop_conn(C, s);
        set_state(s, rc, "ConnectionSecretForbidden", "the controller may not get Secret %s/%s "
                  "(spec.connectionSecretRef): its RBAC needs get on secrets in namespace %s",
                  s->ns, s->name, s->ns);
    } else if (rc) {
        /* Not the Secret's answer: a good connection stays in use. */
        if (!s->have)
            set_state(s, rc, "ConnectionSecretUnavailable", "Secret %s/%s could not be read: %s",
                      s->ns, s->name, kube_last_error(C->kc));
    } else {
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(body, "metadata"), "resourceVersion");
        const char *v = cJSON_IsString(rv) ? rv->valuestring : NULL;
        struct conn_spec spec;
        char why[256];
        if (s->have && v && s->rv && !strcmp(v, s->rv)) {
            s->next_ms = now_ms + reread_ms(s); /* unchanged */
        } else if ((rc = conn_parse_secret(body, &spec, why, sizeof why)) != 0) {
            drop_conn(C, s);
            set_state(s, rc, "ConnectionSecretInvalid", "Secret %s/%s: %s", s->ns, s->name,
                      rc == JP_ENOMEM ? "out of memory" : why);
        } else if ((rc = use_spec(C, s, &spec, v)) != 0) {
            drop_conn(C, s);
            set_state(s, rc, "ConnectionSecretInvalid", "Secret %s/%s: no client for it: %s",
                      s->ns, s->name, jp_strerror(rc));
        } else {
            s->next_ms = now_ms + reread_ms(s);
        }
    }
    /* The body held the Secret's values in the clear. */
    cJSON *d = cJSON_GetObjectItemCaseSensitive(body, "data"), *e;
    cJSON_ArrayForEach(e, d)
        if (cJSON_IsString(e)) explicit_bzero(e->valuestring, strlen(e->valuestring));
    cJSON_Delete(body);
}

int conns_get(struct conns *C, const char *ns, const char *name, int64_t now_ms,
              struct conn_use *use, char *reason, size_t reasonlen, char *msg, size_t msglen)
{
    memset(use, 0, sizeof *use);
    struct csecret *s = NULL;
    for (size_t i = 0; i < C->ns && !s; i++)
        if (!strcmp(C->s[i]->ns, ns) && !strcmp(C->s[i]->name, name)) s = C->s[i];
    if (!s) {
        if (!grow(&C->s, C->ns, &C->scap) || !(s = calloc(1, sizeof *s))) return JP_ENOMEM;
        if (!(s->ns = strdup(ns)) || !(s->name = strdup(name))) {
            secret_free(C, s);
            return JP_ENOMEM;
        }
        C->s[C->ns++] = s;
        s->next_ms = now_ms;
    }
    s->used = true;
    if (now_ms >= s->next_ms) read_secret(C, s, now_ms);
    if (s->have) {
        use->rmq = s->cl->rmq;
        use->worker = s->spec.amqp_url ? &s->wc : NULL;
        use->vhost = s->spec.vhost;
        return 0;
    }
    snprintf(reason, reasonlen, "%s", s->reason);
    snprintf(msg, msglen, "%s", s->msg);
    return s->err ? s->err : JP_ESTALE;
}
