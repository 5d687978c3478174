/* fuzz_rfc3339.c: libFuzzer target: any bytes through util_parse_rfc3339 (every timestamp the
 * API server sends goes through it). The input is copied to the heap with nothing after its NUL,
 * so any read past the end is an ASan report. A time that parses must format back and parse to
 * the same millisecond. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t ms;
    if (util_parse_rfc3339(s, &ms) == 0) {
        /* Round trip through the canonical form, within the years it can spell. */
        int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
        time_t t = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&t, &tm) && tm.tm_year >= -1900 && tm.tm_year <= 9999 - 1900) {
            char buf[64], ts[32];
            strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(buf, sizeof buf, "%s.%03dZ", ts, (int)(ms - sec * 1000));
            int64_t again;
            if (tm.tm_year >= 0 && (util_parse_rfc3339(buf, &again) != 0 || again != ms)) abort();
        }
    }
    free(s);
    return 0;
}
