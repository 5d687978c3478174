/* fuzz_conns.c: libFuzzer target: a JobPool's connection Secret (conn_parse_secret). The input
 * is the Secret's data as lines "key=value" (the raw values; the target base64-encodes them, as
 * the API server's answer carries them). What must hold: a Secret that parses has an http[s]://
 * management URL and an amqp[s]:// AMQP URL (or none), neither with user info, and a login; a
 * client certificate and its key together, or neither, and only with a TLS URL; an
 * error never quotes a value (checked for values holding '|', which no message does). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conns.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *b64(const char *in, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * (n / 3 + 1) + 1);
    size_t k = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[k++] = t[(v >> 18) & 63];
        out[k++] = t[(v >> 12) & 63];
        out[k++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[k] = '\0';
    return out;
}

static bool no_userinfo(const char *url)
{
    const char *a = strstr(url, "://");
    if (!a) return false;
    a += 3;
    size_t n = strcspn(a, "/?#");
    return !memchr(a, '@', n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    cJSON *secret = cJSON_CreateObject();
    cJSON *d = cJSON_AddObjectToObject(secret, "data");
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *eq = memchr(p, '=', (size_t)(le - p));
        if (eq) {
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
            char *v = b64(eq + 1, (size_t)(le - eq - 1));
            if (v && !cJSON_GetObjectItemCaseSensitive(d, key)) cJSON_AddStringToObject(d, key, v);
            free(v);
        }
        p = le + 1;
    }
    struct conn_spec s;
    char err[256];
    int rc = conn_parse_secret(secret, &s, err, sizeof err);
    if (rc == 0) {
        if (!s.management_url || (strncmp(s.management_url, "http://", 7) &&
                                  strncmp(s.management_url, "https://", 8)))
            abort();
        if (!no_userinfo(s.management_url)) abort();
        if (s.amqp_url && ((strncmp(s.amqp_url, "amqp://", 7) && strncmp(s.amqp_url, "amqps://", 8))
                           || !no_userinfo(s.amqp_url)))
            abort();
        if (!s.username || !*s.username || !s.password) abort();
        /* A client certificate comes with its key, and only with a URL to present it on. */
        if (!s.cert_pem != !s.key_pem) abort();
        if (s.cert_pem && strncmp(s.management_url, "https://", 8) &&
            (!s.amqp_url || strncmp(s.amqp_url, "amqps://", 8)))
            abort();
        conn_spec_free(&s);
    } else if (rc == JP_ECONFIG) {
        p = (const char *)data;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;
            const char *eq = memchr(p, '=', (size_t)(le - p));
            if (eq && le - eq - 1 >= 3 && memchr(eq + 1, '|', (size_t)(le - eq - 1)) &&
                memmem(err, strlen(err), eq + 1, (size_t)(le - eq - 1)))
                abort();
            p = le + 1;
        }
    } else if (rc != JP_ENOMEM) {
        abort();
    }
    cJSON_Delete(secret);
    return 0;
}
