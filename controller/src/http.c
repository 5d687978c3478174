/* http.c: the only file that includes curl: a reusable client with capped bodies. */
#define _GNU_SOURCE
#include "http.h"
#include "err.h"
#include "util.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct http_client {
    CURL *curl;
    struct http_opts o;         /* strings below are owned copies */
    char *userpwd;
    struct curl_slist *auth_hdr; /* Authorization: Bearer ... */
    struct dbuf body;
    long retry_after;
    struct curl_slist *req_hdrs; /* headers of the request in flight */
    char errbuf[CURL_ERROR_SIZE];
    /* streaming (http_stream): lines go to on_line while the status is 2xx */
    http_line_fn on_line;
    int (*should_stop)(void *ud);
    void *stream_ud;
    int stream_rc;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static unsigned long n_requests;
static unsigned long long n_bytes;

/* Without the strings, an OpenSSL error reads "error:0A00010B:lib(20)::reason(267)". The
 * reasons a misconfigured endpoint gives most often are spelled out here (the text is
 * OpenSSL's own, as `openssl errstr` prints it); others keep the code. */
const char *http_tls_reason(long r)
{
    switch (r) {
    case 134: return "certificate verify failed";
    case 267: return "wrong version number (is the server speaking plain HTTP?)";
    case 294: return "unexpected eof while reading";
    case 1040: return "sslv3 alert handshake failure";
    case 1042: return "sslv3 alert bad certificate";
    case 1045: return "sslv3 alert certificate expired";
    case 1046: return "sslv3 alert certificate unknown";
    case 1048: return "tlsv1 alert unknown ca";
    case 1070: return "tlsv1 alert protocol version";
    case 1080: return "tlsv1 alert internal error";
    case 1112: return "tlsv1 unrecognized name";
    case 1116: return "tlsv13 alert certificate required";
    default: return NULL;
    }
}

/* msg with the reason of an OpenSSL SSL error (library 20) spelled out after it, in place.
 * Returns true when the reason is an alert the peer sent (OpenSSL's reasons 1000 to 1255:
 * 1000 plus the alert's number), which is a TLS failure even when it arrives on the first read
 * after the handshake, as a TLS 1.3 server's refusal of the client's certificate does. */
static bool spell_tls_reason(char *msg, size_t size)
{
    const char *at = strstr(msg, ":lib(20)::reason(");
    if (!at) return false;
    long r = strtol(at + strlen(":lib(20)::reason("), NULL, 10);
    const char *text = http_tls_reason(r);
    size_t len = strlen(msg);
    if (text && len < size) snprintf(msg + len, size - len, ": %s", text);
    return r >= 1000 && r <= 1255;
}

/* libcurl's OpenSSL start would load every error string of libcrypto and libssl into a hash
 * and touch the pages they sit in: 0.7 MiB of the idle controller's resident memory (about
 * 0.1 MiB once TLS connections have touched most of the same pages), for text that only
 * decorates a rare TLS alert; curl's own messages ("SSL certificate problem: ...") do not use
 * it. Asked for first, "no strings" holds for the process. */
static void global_init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_SSL_STRINGS | OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

unsigned long http_request_count(void) { return __atomic_load_n(&n_requests, __ATOMIC_RELAXED); }
unsigned long long http_bytes_received(void) { return __atomic_load_n(&n_bytes, __ATOMIC_RELAXED); }

int http_split_lines(struct dbuf *buf, const void *p, size_t n, http_line_fn on_line, void *ud)
{
    const char *s = p, *end = s + n;
    while (s < end) {
        /* Line by line, so the cap bounds the longest line, not the chunk curl hands over. */
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        int rc = dbuf_append(buf, s, nl ? (size_t)(nl - s) : (size_t)(end - s));
        if (rc || !nl) return rc;
        rc = on_line(ud, buf->data, buf->len);
        dbuf_reset(buf);
        if (rc) return rc;
        s = nl + 1;
    }
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct http_client *c = ud;
    size_t len = size * n;
    long status = 0;
    if (c->on_line) curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (!c->on_line || status < 200 || status >= 300) /* an error body is kept whole */
        return dbuf_append(&c->body, p, len) == 0 ? len : 0; /* 0 aborts: CURLE_WRITE_ERROR */
    int rc = http_split_lines(&c->body, p, len, c->on_line, c->stream_ud);
    if (rc && !c->body.toobig) c->stream_rc = rc; /* a line over the cap: CURLE_WRITE_ERROR */
    return rc ? 0 : len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    struct http_client *c = ud;
    return c->should_stop && c->should_stop(c->stream_ud) ? 1 : 0;
}

bool http_parse_retry_after(const char *line, size_t len, long *secs)
{
    static const char name[] = "retry-after:";
    if (len < sizeof name - 1 || strncasecmp(line, name, sizeof name - 1) != 0) return false;
    char v[32];
    size_t i = sizeof name - 1, vl = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    while (i < len && line[i] != '\r' && line[i] != '\n' && line[i] != ' ' && line[i] != '\t') {
        /* delta-seconds is digits only (strtoll would also take "-0" and "+5") */
        if (line[i] < '0' || line[i] > '9' || vl + 1 >= sizeof v) return false;
        v[vl++] = line[i++];
    }
    v[vl] = '\0';
    int64_t s;
    if (util_parse_int64(v, 0, HTTP_RETRY_AFTER_MAX, &s) != 0) return false;
    *secs = (long)s;
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_client *c = ud;
    size_t len = size * n;
    long secs;
    if (http_parse_retry_after(p, len, &secs)) c->retry_after = secs;
    return len;
}

static void opts_free(struct http_opts *o)
{
    free((char *)o->ca_file);
    free((char *)o->ca_pem);
    free((char *)o->cert_pem);
    free((char *)o->key_pem);
    free((char *)o->cert_file);
    free((char *)o->key_file);
    free((char *)o->username);
    free((char *)o->password);
    free((char *)o->bearer);
    free((char *)o->user_agent);
}

void http_client_free(struct http_client *c)
{
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->auth_hdr);
    curl_slist_free_all(c->req_hdrs);
    if (c->userpwd) {
        explicit_bzero(c->userpwd, strlen(c->userpwd));
        free(c->userpwd);
    }
    if (c->o.password) explicit_bzero((char *)c->o.password, strlen(c->o.password));
    opts_free(&c->o);
    dbuf_free(&c->body);
    free(c);
}

int http_client_set_bearer(struct http_client *c, const char *token)
{
    curl_slist_free_all(c->auth_hdr);
    c->auth_hdr = NULL;
    free((char *)c->o.bearer);
    c->o.bearer = NULL;
    if (!token) return 0;
    c->o.bearer = strdup(token);
    struct dbuf h;
    dbuf_init(&h, 64 * 1024);
    int rc = dbuf_printf(&h, "Authorization: Bearer %s", token);
    if (!rc && !c->o.bearer) rc = JP_ENOMEM;
    if (!rc) {
        c->auth_hdr = curl_slist_append(NULL, h.data);
        if (!c->auth_hdr) rc = JP_ENOMEM;
    }
    if (h.data) explicit_bzero(h.data, h.len);
    dbuf_free(&h);
    return rc;
}

static void set_blob(CURL *curl, CURLoption opt, const char *pem)
{
    struct curl_blob blob = {.data = (void *)pem, .len = strlen(pem), .flags = CURL_BLOB_COPY};
    curl_easy_setopt(curl, opt, &blob);
}

int http_client_new(const struct http_opts *opts, struct http_client **out)
{
    *out = NULL;
    pthread_once(&global_once, global_init);
    struct http_client *c = calloc(1, sizeof *c);
    int rc = JP_ENOMEM;
    if (!c) return rc;
    c->o.timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 3000;
    c->o.connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 1000;
    c->o.max_body = opts->max_body ? opts->max_body : (size_t)8 << 20;
    c->o.insecure = opts->insecure;
#define COPY_(f)                                                            \
    if (opts->f && !(c->o.f = strdup(opts->f))) goto out;
    COPY_(ca_file) COPY_(ca_pem) COPY_(cert_pem) COPY_(key_pem) COPY_(cert_file)
    COPY_(key_file) COPY_(username) COPY_(password) COPY_(user_agent)
#undef COPY_
    dbuf_init(&c->body, c->o.max_body);
    if (!(c->curl = curl_easy_init())) goto out;
    if (opts->bearer && (rc = http_client_set_bearer(c, opts->bearer)) != 0) goto out;
    rc = JP_ENOMEM;

    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->o.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->o.max_body);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_USERAGENT,
                     c->o.user_agent ? c->o.user_agent : "jobpool/" JP_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_PRIVATE, c);
    if (c->o.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (c->o.ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, c->o.ca_file);
    if (c->o.ca_pem) set_blob(h, CURLOPT_CAINFO_BLOB, c->o.ca_pem);
    if (c->o.cert_pem) set_blob(h, CURLOPT_SSLCERT_BLOB, c->o.cert_pem);
    if (c->o.key_pem) set_blob(h, CURLOPT_SSLKEY_BLOB, c->o.key_pem);
    if (c->o.cert_file) curl_easy_setopt(h, CURLOPT_SSLCERT, c->o.cert_file);
    if (c->o.key_file) curl_easy_setopt(h, CURLOPT_SSLKEY, c->o.key_file);
    if (c->o.username) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, c->o.username);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->o.password ? c->o.password : "");
    }
    rc = 0;
out:
    if (rc) http_client_free(c);
    else *out = c;
    return rc;
}

void http_response_free(struct http_response *resp)
{
    if (!resp) return;
    free(resp->body);
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
}

static int map_curl(CURLcode cc, bool toobig)
{
    switch (cc) {
    case CURLE_OK: return 0;
    case CURLE_WRITE_ERROR: return toobig ? JP_ETOOBIG : JP_ENETWORK;
    case CURLE_FILESIZE_EXCEEDED: return JP_ETOOBIG;
    case CURLE_OPERATION_TIMEDOUT: return JP_ETIMEOUT;
    case CURLE_COULDNT_CONNECT: return JP_ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: return JP_EDNS;
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_INVALIDCERTSTATUS:
        return JP_ETLS;
    case CURLE_OUT_OF_MEMORY: return JP_ENOMEM;
    case CURLE_URL_MALFORMAT: case CURLE_UNSUPPORTED_PROTOCOL: return JP_EINVAL;
    default: return JP_ENETWORK;
    }
}

/* Set up c's easy handle for one request; the headers live in c->req_hdrs until finish. */
static int req_prepare(struct http_client *c, const char *method, const char *url,
                       const char *body, size_t body_len)
{
    CURL *h = c->curl;
    struct curl_slist *hdrs = NULL, *tail;
    int rc = JP_ENOMEM;

    curl_slist_free_all(c->req_hdrs);
    c->req_hdrs = NULL;
    for (struct curl_slist *a = c->auth_hdr; a; a = a->next)
        if (!(tail = curl_slist_append(hdrs, a->data))) goto out;
        else hdrs = tail;
    if (!(tail = curl_slist_append(hdrs, "Accept: application/json"))) goto out;
    hdrs = tail;
    if (body) {
        const char *ct = strcmp(method, "PATCH") == 0 ? "Content-Type: application/merge-patch+json"
                                                      : "Content-Type: application/json";
        if (!(tail = curl_slist_append(hdrs, ct))) goto out;
        hdrs = tail;
    }
    dbuf_reset(&c->body);
    c->retry_after = -1;
    c->errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
        if (strcmp(method, "DELETE") == 0 && !body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    }
    c->req_hdrs = hdrs;
    hdrs = NULL;
    rc = 0;
out:
    curl_slist_free_all(hdrs);
    return rc;
}

/* Turn the outcome of c's transfer into resp (see http_request). */
static int req_finish(struct http_client *c, CURLcode cc, struct http_response *resp)
{
    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(c->req_hdrs);
    c->req_hdrs = NULL;
    __atomic_add_fetch(&n_requests, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&n_bytes, (unsigned long long)c->body.len, __ATOMIC_RELAXED);

    int rc = map_curl(cc, c->body.toobig);
    if (rc) {
        if (rc == JP_ETOOBIG)
            snprintf(resp->error, sizeof resp->error, "response over the %zu byte cap",
                     c->o.max_body);
        else
            snprintf(resp->error, sizeof resp->error, "%s", c->errbuf[0] ? c->errbuf
                                                                        : curl_easy_strerror(cc));
        if (spell_tls_reason(resp->error, sizeof resp->error)) rc = JP_ETLS;
        return rc;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->retry_after_s = c->retry_after;
    resp->len = c->body.len;
    resp->body = dbuf_take(&c->body);
    return resp->body ? 0 : JP_ENOMEM;
}

int http_request(struct http_client *c, const char *method, const char *url, const char *body,
                 size_t body_len, struct http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    int rc = req_prepare(c, method, url, body, body_len);
    if (rc) return rc;
    return req_finish(c, curl_easy_perform(c->curl), resp);
}

int http_stream(struct http_client *c, const char *url, long timeout_ms, http_line_fn on_line,
                int (*should_stop)(void *ud), void *ud, struct http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    int rc = req_prepare(c, "GET", url, NULL, 0);
    if (rc) return rc;
    CURL *h = c->curl;
    c->on_line = on_line;
    c->should_stop = should_stop;
    c->stream_ud = ud;
    c->stream_rc = 0;
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)0);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->o.timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->o.max_body);
    c->on_line = NULL;
    c->should_stop = NULL;
    if (c->stream_rc) cc = CURLE_OK;                /* stopped by the line callback */
    else if (cc == CURLE_OPERATION_TIMEDOUT) cc = CURLE_OK; /* a watch that ran its course */
    rc = req_finish(c, cc == CURLE_ABORTED_BY_CALLBACK ? CURLE_OK : cc, resp);
    if (!rc && cc == CURLE_ABORTED_BY_CALLBACK) rc = JP_ECANCELED;
    if (!rc && c->stream_rc) rc = c->stream_rc;
    return rc;
}

struct http_multi {
    CURLM *multi;
    struct http_client **conns;
    int n;
};

void http_multi_free(struct http_multi *m)
{
    if (!m) return;
    for (int i = 0; i < m->n; i++) http_client_free(m->conns[i]);
    free(m->conns);
    if (m->multi) curl_multi_cleanup(m->multi);
    free(m);
}

int http_multi_new(const struct http_opts *opts, int concurrency, struct http_multi **out)
{
    *out = NULL;
    int rc = JP_ENOMEM;
    if (concurrency < 1) concurrency = 1;
    struct http_multi *m = calloc(1, sizeof *m);
    if (!m) return rc;
    m->conns = calloc((size_t)concurrency, sizeof *m->conns);
    pthread_once(&global_once, global_init);
    if (!m->conns || !(m->multi = curl_multi_init())) goto out;
    for (; m->n < concurrency; m->n++)
        if ((rc = http_client_new(opts, &m->conns[m->n])) != 0) goto out;
    curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)concurrency);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)concurrency);
    rc = 0;
out:
    if (rc) http_multi_free(m);
    else *out = m;
    return rc;
}

int http_multi_set_bearer(struct http_multi *m, const char *token)
{
    for (int i = 0; i < m->n; i++) {
        int rc = http_client_set_bearer(m->conns[i], token);
        if (rc) return rc;
    }
    return 0;
}

int http_multi_perform(struct http_multi *m, struct http_req *reqs, size_t n,
                       const struct http_multi_cb *cb)
{
    struct http_client *idle[m->n];
    size_t slot_req[m->n];
    int nidle = 0, running = 0, rc = 0;
    size_t next = 0;
    bool stop = false;
    for (int i = 0; i < m->n; i++) idle[nidle++] = m->conns[i];
    for (size_t i = 0; i < n; i++) {
        memset(&reqs[i].resp, 0, sizeof reqs[i].resp);
        reqs[i].resp.retry_after_s = -1;
        reqs[i].rc = JP_ECANCELED;
    }
    while ((next < n && !stop) || running > 0) {
        long wait_ms = 1000;
        while (!stop && next < n && nidle > 0) {
            long d = cb && cb->pace ? cb->pace(cb->ud) : 0;
            if (d < 0) { stop = true; break; }
            if (d > 0) { if (d < wait_ms) wait_ms = d; break; }
            struct http_client *c = idle[--nidle];
            struct http_req *r = &reqs[next];
            int prc = req_prepare(c, r->method, r->url, r->body, r->body_len);
            if (prc == 0 && curl_multi_add_handle(m->multi, c->curl) != CURLM_OK) prc = JP_ENOMEM;
            if (prc) {
                r->rc = prc;
                idle[nidle++] = c;
                if (!rc) rc = prc;
                stop = true;
                break;
            }
            for (int i = 0; i < m->n; i++)
                if (m->conns[i] == c) slot_req[i] = next;
            next++;
            running++;
        }
        if (running == 0) {
            if (stop || next >= n) break;
            struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        int still = 0;
        if (curl_multi_perform(m->multi, &still) != CURLM_OK) { rc = JP_ENETWORK; break; }
        CURLMsg *msg;
        int left;
        bool progressed = false;
        while ((msg = curl_multi_info_read(m->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            struct http_client *c = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            CURLcode cc = msg->data.result;
            curl_multi_remove_handle(m->multi, msg->easy_handle);
            size_t ri = 0;
            for (int i = 0; i < m->n; i++)
                if (m->conns[i] == c) ri = slot_req[i];
            struct http_req *r = &reqs[ri];
            r->rc = req_finish(c, cc, &r->resp);
            idle[nidle++] = c;
            running--;
            progressed = true;
            if (cb && cb->done && cb->done(cb->ud, ri, r)) stop = true;
        }
        if (!progressed && running > 0)
            curl_multi_poll(m->multi, NULL, 0, (int)wait_ms, NULL);
    }
    return rc;
}

int http_status_err(long status)
{
    if (status >= 200 && status < 300) return 0;
    switch (status) {
    case 401: return JP_EUNAUTHORIZED;
    case 403: return JP_EFORBIDDEN;
    case 404: return JP_ENOTFOUND;
    case 409: return JP_ECONFLICT;
    case 410: return JP_EGONE;
    case 422: return JP_EINVALID;
    case 429: return JP_ETHROTTLED;
    default: return status >= 500 && status < 600 ? JP_ESERVER : JP_EHTTP;
    }
}

char *http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out) return NULL;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}
