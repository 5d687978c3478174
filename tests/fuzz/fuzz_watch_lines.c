/* fuzz_watch_lines.c: libFuzzer target: the watch stream's line splitter (http_split_lines)
 * must hand over the same lines wherever the network cuts the stream.
 * Input: one byte n (cuts, n % 16), n two-byte cut offsets, one byte naming the line whose
 * callback stops the stream (255: none), then the stream. The stream is fed whole, then cut at
 * the offsets; both runs must give the same lines and the same result. A third run, cut the
 * same way with a 64-byte cap, must give a prefix of those lines, none longer than the cap, and
 * all of them unless it ended in JP_ETOOBIG. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_LINES 4096
struct seen {
    size_t n;
    size_t len[MAX_LINES];
    uint64_t hash[MAX_LINES];
    int stop_at;
};

static int on_line(void *ud, char *line, size_t len)
{
    struct seen *s = ud;
    if (strlen(line) > len || line[len] != '\0') abort(); /* NUL-terminated where it says */
    if (s->n < MAX_LINES) {
        s->len[s->n] = len;
        s->hash[s->n] = util_fnv1a(line, len, 0);
    }
    s->n++;
    return (int)s->n - 1 == s->stop_at ? 7 : 0;
}

static int feed(const uint8_t *p, size_t n, const size_t *cuts, size_t ncuts, size_t cap,
                struct seen *s)
{
    struct dbuf b;
    dbuf_init(&b, cap);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && !rc; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        if (end < at) continue;
        rc = http_split_lines(&b, p + at, end - at, on_line, s);
        at = end;
    }
    dbuf_free(&b);
    return rc;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t ncuts = data[0] % 16, hdr = 1 + 2 * ncuts + 1;
    if (size < hdr) return 0;
    const uint8_t *stream = data + hdr;
    size_t n = size - hdr;
    size_t cuts[16];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = n ? ((size_t)data[1 + 2 * i] << 8 | data[2 + 2 * i]) % (n + 1) : 0;
    qsort(cuts, ncuts, sizeof *cuts, cmp_size);
    int stop_at = data[hdr - 1] == 255 ? -1 : data[hdr - 1];

    static struct seen whole, cut, small;
    memset(&whole, 0, sizeof whole);
    memset(&cut, 0, sizeof cut);
    memset(&small, 0, sizeof small);
    whole.stop_at = cut.stop_at = small.stop_at = stop_at;
    int rw = feed(stream, n, NULL, 0, 1 << 20, &whole);
    int rc = feed(stream, n, cuts, ncuts, 1 << 20, &cut);
    if (rw != rc || whole.n != cut.n) abort();
    for (size_t i = 0; i < whole.n && i < MAX_LINES; i++)
        if (whole.len[i] != cut.len[i] || whole.hash[i] != cut.hash[i]) abort();
    if (rw != 0 && rw != 7) abort();

    const size_t cap = 64;
    int rs = feed(stream, n, cuts, ncuts, cap, &small);
    if (small.n > whole.n) abort();
    for (size_t i = 0; i < small.n && i < MAX_LINES; i++)
        if (small.len[i] > cap || small.len[i] != whole.len[i] || small.hash[i] != whole.hash[i])
            abort();
    if (rs == 0 && small.n != whole.n) abort();
    if (rs != 0 && rs != 7 && rs != JP_ETOOBIG) abort();
    return 0;
}
