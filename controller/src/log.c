/* log.c: one line per call, text or JSON, with registered secrets masked before output. */
#define _GNU_SOURCE
#include "log.h"
#include "err.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum log_level log_threshold = LOG_INFO;
static enum log_format log_format_ = LOG_TEXT;
static FILE *log_out_;

#define LOG_MAX_SECRETS 16
static char *secrets_[LOG_MAX_SECRETS];
static size_t nsecrets_;

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

void log_add_secret(const char *secret)
{
    if (!secret || strlen(secret) < 3) /* masking "a" everywhere would garble every line */
        return;
    for (size_t i = 0; i < nsecrets_; i++)
        if (strcmp(secrets_[i], secret) == 0) return;
    char *copy = strdup(secret);
    if (!copy) return;
    if (nsecrets_ == LOG_MAX_SECRETS) {
        free(secrets_[0]);
        memmove(secrets_, secrets_ + 1, (LOG_MAX_SECRETS - 1) * sizeof *secrets_);
        nsecrets_--;
    }
    secrets_[nsecrets_++] = copy;
}

void log_clear_secrets(void)
{
    for (size_t i = 0; i < nsecrets_; i++) free(secrets_[i]);
    nsecrets_ = 0;
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

/* Replace every registered secret in buf (in place, bounded by cap). */
static void mask_secrets(char *buf, size_t cap)
{
    for (size_t i = 0; i < nsecrets_; i++) {
        size_t slen = strlen(secrets_[i]);
        char *p = buf;
        while ((p = strstr(p, secrets_[i])) != NULL) {
            size_t tail = strlen(p + slen);
            if ((size_t)(p - buf) + 3 + tail + 1 > cap) break;
            memmove(p + 3, p + slen, tail + 1);
            memcpy(p, "***", 3);
            p += 3;
        }
    }
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

void log_emit_(enum log_level level, const char *pool, int err, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mask_secrets(msg, sizeof msg);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[40];
    size_t n = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof tbuf - n, ".%03ldZ", ts.tv_nsec / 1000000);

    FILE *f = log_out_ ? log_out_ : stderr;
    flockfile(f);
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
        fputs(msg, f);
        if (err) fprintf(f, " err=\"%s\"", jp_strerror(err));
        fputc('\n', f);
    }
    fflush(f);
    funlockfile(f);
}
