/* fuzz_retry_after.c: libFuzzer target: any header line through http_parse_retry_after, as
 * curl hands it over (not NUL-terminated: the copy ends exactly at its length). An accepted
 * value is within [0, HTTP_RETRY_AFTER_MAX] and is the decimal number the line spells. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size ? size : 1);
    if (!line) return 0;
    memcpy(line, data, size);
    long secs = -1;
    if (http_parse_retry_after(line, size, &secs)) {
        if (secs < 0 || secs > HTTP_RETRY_AFTER_MAX) abort();
        if (size < 12 || strncasecmp(line, "retry-after:", 12) != 0) abort();
        /* The digits after the name and blanks spell secs. */
        size_t i = 12;
        while (i < size && (line[i] == ' ' || line[i] == '\t')) i++;
        long v = 0;
        bool digit = false;
        for (; i < size && line[i] >= '0' && line[i] <= '9'; i++, digit = true)
            if (v <= HTTP_RETRY_AFTER_MAX) v = v * 10 + (line[i] - '0');
        if (!digit || v != secs) abort();
    }
    free(line);
    return 0;
}
