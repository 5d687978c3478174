/* fuzz_seam.h: the HTTP seam of the fuzz targets that drive a client (rmq, kube): linked with
 * -Wl,--wrap=http_request, every request is answered from the fuzzer's input instead of the
 * network. Include in exactly one file per target. */
#ifndef JP_FUZZ_SEAM_H
#define JP_FUZZ_SEAM_H

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http.h"

/* The answer to the next requests: status and body (borrowed), for the first `times` requests
 * of an input; later ones get the `after` body with status 200 (an end to any paging). */
static struct {
    long status;
    const char *body;
    size_t len;
    int times;
    const char *after;
    int calls;
} seam;

/* Statuses the first input byte picks from: the successes and every error the clients map. */
static const long seam_statuses[] = {200, 200, 200, 200, 201, 301, 400, 401, 403, 404,
                                     409, 410, 422, 429, 500, 503};

int __wrap_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp);

int __wrap_http_request(struct http_client *c, const char *method, const char *url,
                        const char *body, size_t body_len, struct http_response *resp)
{
    (void)c, (void)method, (void)url, (void)body, (void)body_len;
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = seam.calls % 3 == 2 ? 1 : -1;
    const char *b = seam.calls < seam.times ? seam.body : seam.after;
    size_t n = seam.calls < seam.times ? seam.len : strlen(seam.after);
    resp->status = seam.calls < seam.times ? seam.status : 200;
    seam.calls++;
    /* The body is NUL-terminated like http.c's, and the copy ends there: overreads show. */
    if (!(resp->body = malloc(n + 1))) return JP_ENOMEM;
    memcpy(resp->body, b, n);
    resp->body[n] = '\0';
    resp->len = n;
    return 0;
}

#endif
