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
