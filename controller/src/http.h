/* http.h: the one libcurl wrapper: timeouts, TLS, auth, a response size cap, keep-alive. */
#ifndef JP_HTTP_H
#define JP_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct http_opts {
    long timeout_ms;            /* total, default 3000 */
    long connect_timeout_ms;    /* default 1000 */
    size_t max_body;            /* response cap, default 8 MiB */
    const char *ca_file;        /* PEM file, or NULL */
    const char *ca_pem;         /* PEM in memory (curl blob), or NULL */
    const char *cert_pem;       /* client certificate in memory, or NULL */
    const char *key_pem;        /* client key in memory, or NULL */
    const char *cert_file;      /* client certificate file, or NULL */
    const char *key_file;
    bool insecure;              /* skip TLS verification: logged loudly by the caller */
    const char *username;       /* basic auth, or NULL */
    const char *password;
    const char *bearer;         /* "Authorization: Bearer" token, or NULL */
    const char *user_agent;     /* NULL: "jobpool/<version>" */
};

/* One reusable connection (curl easy handle): keep it across ticks for keep-alive. */
struct http_client;

struct http_response {
    long status;                /* 0 when no HTTP answer arrived */
    char *body;                 /* NUL-terminated, owned; freed by http_response_free */
    size_t len;
    long retry_after_s;         /* Retry-After in seconds, -1 when absent */
    char error[256];            /* transport error detail (no credentials), "" when none */
};

/* OpenSSL's text for the reason r of an SSL-library error (the process runs without OpenSSL's
 * error strings: see http.c), for the reasons a misconfigured TLS endpoint gives most often;
 * NULL for others. */
const char *http_tls_reason(long r);

/* Copies every string in opts. Returns 0 or JP_ENOMEM/JP_EINVAL; *out NULL on failure. */
int http_client_new(const struct http_opts *opts, struct http_client **out);
void http_client_free(struct http_client *c);
/* Replace the bearer token (rotated service-account tokens). */
int http_client_set_bearer(struct http_client *c, const char *token);

/* Perform one request. body may be NULL. Content-Type is application/json when body is set.
 * Returns 0 when an HTTP answer arrived (any status: check resp->status), or a transport error:
 * JP_ETIMEOUT, JP_ECONNREFUSED, JP_EDNS, JP_ETLS, JP_ENETWORK, JP_ETOOBIG. resp is reset first
 * and must be freed with http_response_free either way. */
int http_request(struct http_client *c, const char *method, const char *url, const char *body,
                 size_t body_len, struct http_response *resp);
void http_response_free(struct http_response *resp);

/* A streamed GET (watches): each complete line of a 2xx body is passed to on_line (the line is
 * NUL-terminated, without its newline, and only valid during the call); a non-2xx body is kept
 * whole in resp->body. Lines are capped by max_body. timeout_ms bounds the whole stream (0:
 * none); a client-side timeout ends the stream normally (returns 0). should_stop (may be NULL)
 * is polled about once a second and aborts the stream with JP_ECANCELED. A non-zero value from
 * on_line stops the stream and is returned. resp is freed by the caller either way. */
typedef int (*http_line_fn)(void *ud, char *line, size_t len);
int http_stream(struct http_client *c, const char *url, long timeout_ms, http_line_fn on_line,
                int (*should_stop)(void *ud), void *ud, struct http_response *resp);

/* The stream's line splitter (http_stream uses it; exposed for the fuzzer): buf holds the
 * unfinished line of the previous calls; hand every line that the n bytes of p complete to
 * on_line as http_stream describes, and keep the new unfinished line in buf. Returns 0,
 * JP_ETOOBIG (a line longer than buf's cap), JP_ENOMEM, or on_line's non-zero value (the lines
 * after it are not handed over). Where the stream is cut into chunks does not change the lines
 * or the result. */
struct dbuf;
int http_split_lines(struct dbuf *buf, const void *p, size_t n, http_line_fn on_line, void *ud);

/* Longest Retry-After honoured, in seconds. */
#define HTTP_RETRY_AFTER_MAX 86400
/* Parse one raw header line (as received, with or without its CRLF): true, with *secs set, when
 * it is a Retry-After header holding delta-seconds in [0, HTTP_RETRY_AFTER_MAX]. The HTTP-date
 * form is not understood (false). Used by http.c; exposed for the fuzzer. */
bool http_parse_retry_after(const char *line, size_t len, long *secs);

/* Parallel requests over a small pool of keep-alive connections (curl multi). */
struct http_multi;
/* concurrency connections sharing opts (copied). 0, JP_ENOMEM or JP_EINVAL; *out NULL on error. */
int http_multi_new(const struct http_opts *opts, int concurrency, struct http_multi **out);
void http_multi_free(struct http_multi *m);
int http_multi_set_bearer(struct http_multi *m, const char *token);

/* One request of a batch: the caller fills method/url/body (borrowed during the call);
 * http_multi_perform fills rc (as http_request returns, JP_ECANCELED when never started) and
 * resp (freed by the caller with http_response_free). */
struct http_req {
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    int rc;
    struct http_response resp;
};
struct http_multi_cb {
    /* Before each start: 0 to start now, > 0 ms to wait first (rate limits), < 0 to start no
     * more. NULL: always start. */
    long (*pace)(void *ud);
    /* After each completion; non-zero starts no more (those in flight finish). May be NULL. */
    int (*done)(void *ud, size_t index, struct http_req *r);
    void *ud;
};
/* Perform reqs[0..n) in order of start with at most `concurrency` in flight. Returns 0 (each
 * request's outcome is in its rc) or an error that stopped the batch (JP_ENOMEM). */
int http_multi_perform(struct http_multi *m, struct http_req *reqs, size_t n,
                       const struct http_multi_cb *cb);

/* Map an HTTP status to a jp_err code: 2xx -> 0, 401 UNAUTHORIZED, 403 FORBIDDEN, 404 NOTFOUND,
 * 409 CONFLICT, 410 GONE, 422 INVALID, 429 THROTTLED, 5xx SERVER, other -> HTTP. */
int http_status_err(long status);

/* Percent-encode s for one URL path segment or query value (RFC 3986 unreserved kept).
 * Returns malloc'd string or NULL. "/" becomes "%2F". */
char *http_escape(const char *s);

/* Number of requests performed by all clients since start (for metrics and benchmarks). */
unsigned long http_request_count(void);
unsigned long long http_bytes_received(void);

#endif
