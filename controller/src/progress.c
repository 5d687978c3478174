/* progress.c: the worker's progress line (see progress.h), written by the worker and read by
 * the controller's backends. */
#define _POSIX_C_SOURCE 200809L
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Seconds as written by progress_format: a finite, non-negative decimal. */
static double parse_seconds(const char *s, size_t n)
{
    char tmp[32];
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (tmp[0] < '0' || tmp[0] > '9') return -1; /* no sign, no "inf", no "nan" */
    char *end;
    double v = strtod(tmp, &end);
    return *end == '\0' && isfinite(v) && v >= 0 ? v : -1;
}

void progress_parse(const char *s, struct progress *out)
{
    out->word = PROGRESS_NONE;
    out->wait_s = -1;
    out->duration_s = -1;
    if (!s) return;
    size_t line = strcspn(s, "\n");
    size_t w = strcspn(s, " \n");
    if (w == 7 && strncmp(s, "waiting", 7) == 0 && line == 7) out->word = PROGRESS_WAITING;
    else if (w == 7 && strncmp(s, "no-task", 7) == 0 && line == 7) out->word = PROGRESS_NO_TASK;
    else if (w == 4 && strncmp(s, "task", 4) == 0) out->word = PROGRESS_TASK;
    if (out->word != PROGRESS_TASK) return;
    for (size_t i = w; i < line;) {
        while (i < line && s[i] == ' ') i++;
        size_t n = strcspn(s + i, " \n");
        if (n > line - i) n = line - i;
        const char *eq = memchr(s + i, '=', n);
        if (eq) {
            size_t k = (size_t)(eq - (s + i)), vn = n - k - 1;
            if (k == 4 && strncmp(s + i, "wait", 4) == 0) out->wait_s = parse_seconds(eq + 1, vn);
            else if (k == 8 && strncmp(s + i, "duration", 8) == 0)
                out->duration_s = parse_seconds(eq + 1, vn);
        }
        i += n;
    }
}

int progress_format(const struct progress *p, char *buf, size_t len)
{
    int n;
    switch (p->word) {
    case PROGRESS_WAITING: n = snprintf(buf, len, "waiting"); break;
    case PROGRESS_NO_TASK: n = snprintf(buf, len, "no-task"); break;
    case PROGRESS_TASK: {
        char wait[32] = "unknown", dur[48] = "";
        if (p->wait_s >= 0 && isfinite(p->wait_s)) snprintf(wait, sizeof wait, "%.3f", p->wait_s);
        if (p->duration_s >= 0 && isfinite(p->duration_s))
            snprintf(dur, sizeof dur, " duration=%.3f", p->duration_s);
        n = snprintf(buf, len, "task wait=%s%s", wait, dur);
        break;
    }
    default: n = snprintf(buf, len, "%s", ""); break;
    }
    return n >= 0 && (size_t)n < len ? n : -1;
}
