/* intern.c: a process-wide, capped table of shared string copies. */
#define _GNU_SOURCE
#include "intern.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Strings live in chunks (no malloc header per string); the index is open addressing over
 * pointers into them, kept at most half full. */
#define CHUNK_BYTES 16384

struct chunk {
    struct chunk *next;
    size_t used;
    char data[];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const char **slots;
static size_t nslots, nstrings, nbytes;
static struct chunk *chunks;
static bool warned;

static size_t slot_of(const char *s, size_t n, size_t cap)
{
    size_t h = (size_t)util_fnv1a(s, n, 0) & (cap - 1);
    while (slots[h] && (strncmp(slots[h], s, n) != 0 || slots[h][n] != '\0')) h = (h + 1) & (cap - 1);
    return h;
}

static bool grow(void)
{
    if (nslots && (nstrings + 1) * 2 <= nslots) return true;
    size_t cap = nslots ? nslots * 2 : 256;
    const char **old = slots;
    size_t oldn = nslots;
    if (!(slots = calloc(cap, sizeof *slots))) {
        slots = old;
        return false;
    }
    nslots = cap;
    for (size_t i = 0; i < oldn; i++)
        if (old[i]) slots[slot_of(old[i], strlen(old[i]), cap)] = old[i];
    free(old);
    return true;
}

/* A copy of n bytes of s in a chunk, or NULL. */
static const char *store(const char *s, size_t n)
{
    if (!chunks || chunks->used + n + 1 > CHUNK_BYTES) {
        size_t sz = n + 1 > CHUNK_BYTES ? n + 1 : CHUNK_BYTES;
        struct chunk *c = malloc(sizeof *c + sz);
        if (!c) return NULL;
        c->next = chunks;
        c->used = 0;
        chunks = c;
        /* A long string gets a chunk of its own, which is full at once. */
        if (sz > CHUNK_BYTES) c->used = sz - n - 1;
    }
    char *p = chunks->data + chunks->used;
    memcpy(p, s, n);
    p[n] = '\0';
    chunks->used += n + 1;
    return p;
}

const char *intern_n(const char *s, size_t n)
{
    if (!s || !n) return "";
    const char *r = NULL;
    bool warn = false;
    pthread_mutex_lock(&mu);
    if (nslots) {
        size_t h = slot_of(s, n, nslots);
        if (slots[h]) {
            r = slots[h];
            goto out;
        }
    }
    if (nstrings >= INTERN_MAX_STRINGS || nbytes + n + 1 > INTERN_MAX_BYTES) {
        warn = !warned;
        warned = true;
        goto out;
    }
    if (!grow() || !(r = store(s, n))) goto out;
    slots[slot_of(s, n, nslots)] = r;
    nstrings++;
    nbytes += n + 1;
out:
    pthread_mutex_unlock(&mu);
    if (warn)
        log_warn("intern: %d names (or %u bytes) held: names not seen before now read as "
                 "unknown", INTERN_MAX_STRINGS, INTERN_MAX_BYTES);
    return r;
}

const char *intern(const char *s) { return s ? intern_n(s, strlen(s)) : ""; }

void intern_stats(size_t *strings, size_t *bytes)
{
    pthread_mutex_lock(&mu);
    if (strings) *strings = nstrings;
    if (bytes) *bytes = nbytes;
    pthread_mutex_unlock(&mu);
}
