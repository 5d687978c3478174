/* log.c: one line per call, text or JSON, with registered secrets masked before output. */
#define _GNU_SOURCE
#include "log.h"
#include "err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum log_level log_threshold = LOG_INFO;
static enum log_format log_format_ = LOG_TEXT;
static FILE *log_out_;

/* The secrets to mask, longest first (so that a secret holding another is masked whole), each
 * with the number of registrations still in force. Watcher threads rotate tokens while any
 * thread logs, so every access holds secrets_mu_. Nothing is evicted: a configured credential
 * stays until log_clear_secrets, a rotated token leaves when its last holder drops it. */
struct secret {
    char *s;
    size_t len;
    size_t refs;
};
static pthread_mutex_t secrets_mu_ = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t out_mu_ = PTHREAD_MUTEX_INITIALIZER; /* one line at a time */
static struct secret *secrets_;
static size_t nsecrets_, secrets_alloc_;

void log_setup(enum log_format fmt, enum log_level level, FILE *out)
{
    log_format_ = fmt;
    log_threshold = level;
    log_out_ = out;
}

static const char *level_names_[] = {"debug", "info", "warn", "error", "off"};

const char *log_level_name(enum log_level l)
{
    return (l >= LOG_DEBUG && l <= LOG_OFF) ? level_names_[l] : "?";
}

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++)
        if (s && strcmp(s, level_names_[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    return JP_EINVAL;
}

int log_parse_format(const char *s, enum log_format *out)
{
    if (s && strcmp(s, "text") == 0) *out = LOG_TEXT;
    else if (s && strcmp(s, "json") == 0) *out = LOG_JSON;
    else return JP_EINVAL;
    return 0;
}

/* Index of secret in the list, or nsecrets_. Called with secrets_mu_ held. */
static size_t secret_find(const char *secret)
{
    size_t i = 0;
    while (i < nsecrets_ && strcmp(secrets_[i].s, secret) != 0) i++;
    return i;
}

/* Insert a copy, keeping the list longest first. Called with secrets_mu_ held. */
static void secret_insert(const char *secret, size_t len)
{
    if (nsecrets_ == secrets_alloc_) {
        size_t na = secrets_alloc_ ? secrets_alloc_ * 2 : 8;
        struct secret *v = realloc(secrets_, na * sizeof *v);
        if (!v) return;
        secrets_ = v;
        secrets_alloc_ = na;
    }
    char *copy = strdup(secret);
    if (!copy) return;
    size_t at = 0;
    while (at < nsecrets_ && secrets_[at].len >= len) at++;
    memmove(secrets_ + at + 1, secrets_ + at, (nsecrets_ - at) * sizeof *secrets_);
    secrets_[at] = (struct secret){copy, len, 1};
    nsecrets_++;
}

void log_add_secret(const char *secret)
{
    size_t len = secret ? strlen(secret) : 0;
    if (len < 3) /* masking "a" everywhere would garble every line */
        return;
    pthread_mutex_lock(&secrets_mu_);
    size_t i = secret_find(secret);
    if (i < nsecrets_) secrets_[i].refs++;
    else secret_insert(secret, len);
    pthread_mutex_unlock(&secrets_mu_);
}

static void secret_free(struct secret *e)
{
    explicit_bzero(e->s, e->len);
    free(e->s);
}

void log_drop_secret(const char *secret)
{
    if (!secret) return;
    pthread_mutex_lock(&secrets_mu_);
    size_t i = secret_find(secret);
    if (i < nsecrets_ && --secrets_[i].refs == 0) {
        secret_free(&secrets_[i]);
        memmove(secrets_ + i, secrets_ + i + 1, (nsecrets_ - i - 1) * sizeof *secrets_);
        nsecrets_--;
    }
    pthread_mutex_unlock(&secrets_mu_);
}

void log_replace_secret(const char *prev, const char *next)
{
    log_add_secret(next); /* first: a line logged in between masks both */
    log_drop_secret(prev);
}

void log_clear_secrets(void)
{
    pthread_mutex_lock(&secrets_mu_);
    for (size_t i = 0; i < nsecrets_; i++) secret_free(&secrets_[i]);
    free(secrets_);
    secrets_ = NULL;
    nsecrets_ = secrets_alloc_ = 0;
    pthread_mutex_unlock(&secrets_mu_);
}

size_t log_secret_count(void)
{
    pthread_mutex_lock(&secrets_mu_);
    size_t n = nsecrets_;
    pthread_mutex_unlock(&secrets_mu_);
    return n;
}

char *log_redact_url(const char *url, char *out, size_t outlen)
{
    if (!outlen) return out;
    out[0] = '\0';
    if (!url) return out;
    const char *scheme = strstr(url, "://");
    const char *auth = scheme ? scheme + 3 : url;
    const char *end = auth + strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@') at = p; /* the last '@' ends the userinfo */
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon) {
        snprintf(out, outlen, "%s", url);
        return out;
    }
    snprintf(out, outlen, "%.*s***%s", (int)(colon + 1 - url), url, at);
    return out;
}

/* Replace every registered secret in buf with "***" (in place: never longer). */
static void mask_secrets(char *buf)
{
    pthread_mutex_lock(&secrets_mu_);
    for (size_t i = 0; i < nsecrets_; i++) {
        const struct secret *e = &secrets_[i];
        char *p = buf;
        while ((p = strstr(p, e->s)) != NULL) {
            memmove(p + 3, p + e->len, strlen(p + e->len) + 1);
            memcpy(p, "***", 3);
            p += 3;
        }
    }
    pthread_mutex_unlock(&secrets_mu_);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* A text record is one line: a newline from another program's words (an API server's plain
 * "404 page not found\n") would start a line that is not a record. A backslash is doubled, so a
 * record reads back to exactly its message: a program's literal "\x0e" stays distinct from an
 * escaped control byte (the fuzz targets decode a record before they look for a secret in it). */
static void text_string(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20 && c != '\t') fprintf(f, "\\x%02x", c);
        else fputc(c, f);
    }
}

void log_emit_(enum log_level level, const char *pool, int err, const char *fmt, ...)
{
    /* Format whole, mask, then cut: a secret straddling the cut is masked, not half printed. */
    char small[LOG_LINE_MAX], *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof small) {
        msg = malloc((size_t)n + 1);
        if (msg) {
            va_start(ap, fmt);
            vsnprintf(msg, (size_t)n + 1, fmt, ap);
            va_end(ap);
        } else {
            msg = small;
            snprintf(small, sizeof small, "(a log line was dropped: out of memory)");
        }
    }
    mask_secrets(msg);
    if (strlen(msg) >= LOG_LINE_MAX) msg[LOG_LINE_MAX - 1] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[40];
    size_t tn = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tn, sizeof tbuf - tn, ".%03ldZ", ts.tv_nsec / 1000000);

    FILE *f = log_out_ ? log_out_ : stderr;
    /* One lock of our own rather than flockfile: ThreadSanitizer cannot see glibc's stream lock,
     * so make tsan would report every concurrent line. */
    pthread_mutex_lock(&out_mu_);
    if (log_format_ == LOG_JSON) {
        fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", tbuf, log_level_name(level));
        json_string(f, msg);
        if (pool) {
            fputs(",\"pool\":", f);
            json_string(f, pool);
        }
        if (err) {
            fputs(",\"err\":", f);
            json_string(f, jp_strerror(err));
        }
        fputs("}\n", f);
    } else {
        fprintf(f, "%s %-5s ", tbuf, log_level_name(level));
        if (pool) fprintf(f, "pool=%s ", pool);
        text_string(f, msg);
        if (err) fprintf(f, " err=\"%s\"", jp_strerror(err));
        fputc('\n', f);
    }
    fflush(f);
    pthread_mutex_unlock(&out_mu_);
    if (msg != small) free(msg);
}
