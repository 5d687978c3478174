/* log.h: levelled logging as text for terminals or JSON lines for clusters, with redaction. */
#ifndef JP_LOG_H
#define JP_LOG_H

#include <stddef.h>
#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };
enum log_format { LOG_TEXT = 0, LOG_JSON };

extern enum log_level log_threshold;

/* Configure output (NULL keeps stderr). Safe to call again; not thread-safe against log_msg. */
void log_setup(enum log_format fmt, enum log_level level, FILE *out);
/* Parse "debug|info|warn|error" / "text|json"; return 0 or JP_EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
int log_parse_format(const char *s, enum log_format *out);
const char *log_level_name(enum log_level l);

/* Register a secret (password, token): any later log line that contains it prints "***" in its
 * place. The string is copied; strings shorter than 3 bytes are ignored. Registrations are
 * counted per string, and a secret is masked until every registration of it is dropped:
 * nothing is ever evicted, so a configured credential stays masked however many tokens rotate
 * through. All of these are safe to call from any thread at any time. */
void log_add_secret(const char *secret);
/* Undo one log_add_secret of the same string (a rotated token going out of use). NULL, or a
 * string never added, is ignored. */
void log_drop_secret(const char *secret);
/* A rotation: add next, then drop prev (either may be NULL), so no line is logged with
 * neither masked. */
void log_replace_secret(const char *prev, const char *next);
/* Forget every secret (at exit, and between tests). */
void log_clear_secrets(void);
/* Number of distinct secrets registered (for tests). */
size_t log_secret_count(void);

/* Longest message text of one line; longer ones are cut (after masking). */
#define LOG_LINE_MAX 2048

/* Copy url into out with the password of any "user:pass@" part replaced by "***"
 * (KEDA's anonymizeRabbitMQError does the same). Always NUL-terminates; returns out. */
char *log_redact_url(const char *url, char *out, size_t outlen);

/* Emit one line. pool may be NULL; err is 0 or a negative jp_err code. Formatting is skipped
 * entirely below the threshold. */
#define log_msg(level, pool, err, ...)                                    \
    do {                                                                  \
        if ((level) >= log_threshold)                                     \
            log_emit_((level), (pool), (err), __VA_ARGS__);               \
    } while (0)
#define log_debug(...) log_msg(LOG_DEBUG, NULL, 0, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, NULL, 0, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, NULL, 0, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, NULL, 0, __VA_ARGS__)

void log_emit_(enum log_level level, const char *pool, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
