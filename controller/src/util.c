/* util.c: durations, checked integer parsing, the capped buffer, clocks and file reading. */
#define _GNU_SOURCE
#include "util.h"
#include "err.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int util_parse_duration(const char *s, int64_t *out_ms)
{
    if (!s || !*s) return JP_EINVAL;
    if (strcmp(s, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    int64_t total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p)) return JP_EINVAL;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno == ERANGE || v > (unsigned long long)INT64_MAX) return JP_ERANGE;
        int64_t unit;
        if (strncmp(end, "ms", 2) == 0) { unit = 1; end += 2; }
        else if (*end == 's') { unit = 1000; end++; }
        else if (*end == 'm') { unit = 60000; end++; }
        else if (*end == 'h') { unit = 3600000; end++; }
        else return JP_EINVAL;
        if ((int64_t)v > (INT64_MAX - total) / unit) return JP_ERANGE;
        total += (int64_t)v * unit;
        p = end;
    }
    *out_ms = total;
    return 0;
}

void util_format_duration(int64_t ms, char *out, size_t outlen)
{
    if (ms != 0 && ms % 3600000 == 0) snprintf(out, outlen, "%lldh", (long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0) snprintf(out, outlen, "%lldm", (long long)(ms / 60000));
    else if (ms != 0 && ms % 1000 == 0) snprintf(out, outlen, "%llds", (long long)(ms / 1000));
    else snprintf(out, outlen, "%lldms", (long long)ms);
}

int util_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s) return JP_EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || end == s || isspace((unsigned char)*s)) return JP_EINVAL;
    if (errno == ERANGE || v < min || v > max) return JP_ERANGE;
    *out = v;
    return 0;
}

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

void util_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    if (ms <= 0) return;
    int64_t until = util_now_ms() + ms;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    if (pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT) return;
    int64_t left = until - util_now_ms();
    if (left <= 0) return;
    if (left > 50) left = 50;
    struct timespec nap = {0, (long)left * 1000000L};
    pthread_mutex_unlock(mu);
    nanosleep(&nap, NULL);
    pthread_mutex_lock(mu);
}
int64_t util_wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

int util_parse_rfc3339(const char *s, int64_t *out_ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!s) return JP_EINVAL;
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) return JP_EINVAL;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 3) frac = frac * 10 + (*p - '0');
        for (; digits < 3; digits++) frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') p++;
    else if (*p == '+' || *p == '-') {
        /* Exactly "+HH:MM": each byte is checked before the next is read, so a short offset
         * such as "+1:1" cannot walk past the end of the string. */
        for (int i = 1; i <= 5; i++)
            if (i == 3 ? p[i] != ':' : !isdigit((unsigned char)p[i])) return JP_EINVAL;
        int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
        if (hh > 23 || mm > 59) return JP_EINVAL;
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else return JP_EINVAL;
    if (*p) return JP_EINVAL;
    time_t t = timegm(&tm);
    *out_ms = ((int64_t)t - off) * 1000 + frac;
    return 0;
}

void dbuf_init(struct dbuf *b, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->cap = cap ? cap : (size_t)8 << 20;
}

int dbuf_append(struct dbuf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len) {
        b->toobig = true;
        return JP_ETOOBIG;
    }
    if (b->len + n + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 1024;
        while (want < b->len + n + 1) want *= 2;
        if (want > b->cap + 1) want = b->cap + 1;
        char *d = realloc(b->data, want);
        if (!d) return JP_ENOMEM;
        b->data = d;
        b->alloc = want;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int dbuf_printf(struct dbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return JP_EINVAL;
    if ((size_t)n < sizeof small) return dbuf_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return JP_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = dbuf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

void dbuf_reset(struct dbuf *b)
{
    b->len = 0;
    b->toobig = false;
    if (b->data) b->data[0] = '\0';
}

char *dbuf_take(struct dbuf *b)
{
    char *d = b->data;
    if (!d) d = calloc(1, 1);
    b->data = NULL;
    b->len = b->alloc = 0;
    b->toobig = false;
    return d;
}

void dbuf_free(struct dbuf *b)
{
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}

char *util_strprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *util_url_strip_userinfo(const char *url)
{
    const char *sep = strstr(url, "://");
    if (!sep) return util_strdup(url);
    const char *host = sep + 3;
    size_t authority = strcspn(host, "/?#");
    const char *at = NULL;
    for (const char *c = host; c < host + authority; c++)
        if (*c == '@') at = c; /* the last one: a raw '@' may sit in a password */
    if (!at) return util_strdup(url);
    return util_strprintf("%.*s%s", (int)(host - url), url, at + 1);
}

char *util_strdup(const char *s) { return s ? strdup(s) : NULL; }

uint64_t util_fnv1a(const void *p, size_t n, uint64_t seed)
{
    uint64_t h = seed ? seed : 0xcbf29ce484222325ULL;
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int util_read_file(const char *path, size_t cap, bool trim, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return JP_EIO;
    struct dbuf b;
    dbuf_init(&b, cap);
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if ((rc = dbuf_append(&b, chunk, n)) != 0) break;
    if (!rc && ferror(f)) rc = JP_EIO;
    fclose(f);
    if (rc) {
        dbuf_free(&b);
        return rc;
    }
    if (trim)
        while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
            b.data[--b.len] = '\0';
    *out = dbuf_take(&b);
    return *out ? 0 : JP_ENOMEM;
}

/* A double of magnitude 2^52 or more has no fraction bits, so it is its own floor and ceiling;
 * below that, the conversion to int64_t truncates towards zero and is exact. */
#define NO_FRACTION 4503599627370496.0 /* 2^52 */

double util_floor(double d)
{
    if (!((d < 0 ? -d : d) < NO_FRACTION)) /* also NaN */
        return d;
    double t = (double)(int64_t)d;
    return t > d ? t - 1 : t;
}

double util_ceil(double d)
{
    if (!((d < 0 ? -d : d) < NO_FRACTION))
        return d;
    double t = (double)(int64_t)d;
    return t < d ? t + 1 : t;
}
