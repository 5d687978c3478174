/* util.h: small shared helpers: durations, checked integer parsing, a capped buffer, clocks. */
#ifndef JP_UTIL_H
#define JP_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse "500ms", "2s", "5m", "1h", "1m30s" into milliseconds (> 0 unless allow_zero and "0").
 * Returns 0, JP_EINVAL (malformed) or JP_ERANGE (overflow). */
int util_parse_duration(const char *s, int64_t *out_ms);
/* Format ms as the shortest of "500ms", "2s", "5m", "1h" that is exact. */
void util_format_duration(int64_t ms, char *out, size_t outlen);
/* Parse a whole decimal integer in [min, max]; JP_EINVAL when not a number, JP_ERANGE outside. */
int util_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Milliseconds on CLOCK_MONOTONIC and CLOCK_REALTIME. */
int64_t util_now_ms(void);
/* Wait on cv (made with a CLOCK_MONOTONIC condattr), mu held, until it is signalled or ms
 * have passed; mu is held again on return. Callers loop on their own condition. A timed wait
 * that returns before its time without a signal (libfaketime, which the clock-skew tests
 * preload, rewrites every pthread_cond_timedwait as if on its faked wall clock) is finished
 * as a plain nap of at most 50 ms with mu released, so that no caller spins. */
void util_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
int64_t util_wall_ms(void);
/* Parse RFC 3339 "2026-11-28T01:02:03Z" (fraction and offset allowed) to unix ms; 0 or JP_EINVAL. */
int util_parse_rfc3339(const char *s, int64_t *out_ms);

/* A growable byte buffer with a hard cap: going over the cap is an error, never a crash. Always
 * NUL-terminated after a successful append. */
struct dbuf {
    char *data;
    size_t len;
    size_t alloc;
    size_t cap;      /* maximum len; 0 means 8 MiB */
    bool toobig;     /* set when an append was refused for the cap */
};
void dbuf_init(struct dbuf *b, size_t cap);
/* Append n bytes: 0, JP_ETOOBIG (sets toobig, leaves contents) or JP_ENOMEM. */
int dbuf_append(struct dbuf *b, const void *p, size_t n);
int dbuf_printf(struct dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dbuf_reset(struct dbuf *b);
/* Hand the data to the caller (who frees it) and reset b. Never NULL unless out of memory. */
char *dbuf_take(struct dbuf *b);
void dbuf_free(struct dbuf *b);

/* A malloc'd formatted string (any length), or NULL when out of memory. */
char *util_strprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A malloc'd copy of url without any "user[:password]@" in its authority, so that it can be
 * shown and handed out; NULL when out of memory. A string with no "://" is copied as it is. */
char *util_url_strip_userinfo(const char *url);
/* strdup that accepts NULL (returns NULL). */
char *util_strdup(const char *s);
/* FNV-1a 64 bit, for config hashes. */
uint64_t util_fnv1a(const void *p, size_t n, uint64_t seed);
/* Read a whole small file (<= cap bytes) into a NUL-terminated string, trailing newlines
 * trimmed when trim is set. Returns 0, JP_EIO or JP_ETOOBIG; *out is NULL on failure. */
int util_read_file(const char *path, size_t cap, bool trim, char **out);
/* floor() and ceil() without libm, which the controller does not link: loading it costs
 * 0.3-0.4 MiB of resident pages (its IFUNC resolvers run at load) for these two functions.
 * NaN and the infinities come back as they are. */
double util_floor(double d);
double util_ceil(double d);

#endif
