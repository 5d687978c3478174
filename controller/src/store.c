/* store.c: objects of one kind keyed by name, merged on relists, with expected writes. */
#define _GNU_SOURCE
#include "store.h"
#include "err.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* One chained hash map node: a record, or an expectation (rec then holds the placeholder, or
 * only the key for a delete). 24 bytes of header per record. rec holds the record without its
 * strings region, then the region up to its last string's NUL (slen bytes): a Job's region is
 * 232 bytes (the key "namespace/name", the pool label and the uid at their longest), its strings
 * typically 70, and 40,000 records at 20,000 Jobs paid the difference. A record goes out whole
 * again (materialize) into a buffer of the store's. */
struct node {
    struct node *next;
    uint64_t rv;                /* records: resourceVersion; expectations: when made (ms) */
    uint32_t mark;              /* records: the list generation that last saw it */
    uint8_t src;                /* records: the source that listed or watched it */
    uint8_t kind;               /* expectations: EXP_CREATE or EXP_DELETE */
    uint16_t slen;              /* bytes of the strings region kept */
    _Alignas(8) unsigned char rec[];
};

enum { EXP_CREATE = 1, EXP_DELETE = 2 };

/* Nodes come from blocks of their own (mappings of 128 KiB) carved into slots of 16-byte
 * classes, not from malloc one by one. A record lives as long as its object, while the parse
 * trees of a creation burst are freed a moment after they were made: from one heap, the
 * records ended up scattered among the holes the trees left, and at 20,000 Jobs 2.8-4 MiB of
 * the heap was free yet held by the records on the same pages (malloc_trim gave back
 * nothing). A freed slot goes on its class's list and is used again; the blocks go with the
 * store. Under AddressSanitizer every node is its own malloc, so that it sees their bounds. */
#if defined(__SANITIZE_ADDRESS__)
#define SLAB_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_MALLOC 1
#endif
#endif
#define SLAB_BLOCK (128 * 1024)
#define SLAB_STEP 16
#define SLAB_CLASSES 64         /* slots up to 1,024 bytes; a bigger node is a malloc */
#define SLAB_HEAD 16            /* a block begins with the link to the next block */

struct slab {
    void *free[SLAB_CLASSES];   /* per class, free slots linked through their first word */
    unsigned char *cur;         /* the newest block's unused rest */
    size_t left;
    void *blocks;               /* every block, linked through its head */
};

static size_t slab_class(size_t size)
{
    return (size + SLAB_STEP - 1) / SLAB_STEP - 1;
}

/* size bytes rounded up to their class (a node whose size stays in its class keeps its
 * place: map_set), zeroed; NULL when out of memory. */
static void *slab_alloc(struct slab *sl, size_t size)
{
    size_t c = slab_class(size), slot = (c + 1) * SLAB_STEP;
#ifdef SLAB_MALLOC
    (void)sl;
    return calloc(1, slot);
#else
    if (c >= SLAB_CLASSES) return calloc(1, slot);
    void *p = sl->free[c];
    if (p) {
        memcpy(&sl->free[c], p, sizeof(void *));
    } else {
        if (sl->left < slot) {
            /* The old block's rest (under 1 KiB) is left unused. */
            void *b = mmap(NULL, SLAB_BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
            if (b == MAP_FAILED) return NULL;
            memcpy(b, &sl->blocks, sizeof(void *));
            sl->blocks = b;
            sl->cur = (unsigned char *)b + SLAB_HEAD;
            sl->left = SLAB_BLOCK - SLAB_HEAD;
        }
        p = sl->cur;
        sl->cur += slot;
        sl->left -= slot;
    }
    return memset(p, 0, slot);
#endif
}

static void slab_free(struct slab *sl, void *p, size_t size)
{
    if (!p) return;
    size_t c = slab_class(size);
#ifdef SLAB_MALLOC
    (void)sl;
    (void)c;
    free(p);
#else
    if (c >= SLAB_CLASSES) {
        free(p);
        return;
    }
    memcpy(p, &sl->free[c], sizeof(void *));
    sl->free[c] = p;
#endif
}

static void slab_release(struct slab *sl)
{
    for (void *b = sl->blocks, *nx; b; b = nx) {
        memcpy(&nx, b, sizeof nx);
        munmap(b, SLAB_BLOCK);
    }
    memset(sl, 0, sizeof *sl);
}

struct map {
    struct node **b;
    size_t nb, n;
    size_t key_at;              /* where a node's strings (the key first) begin in rec: the
                                 * record's size less its strings region */
    struct slab *slab;          /* where its nodes come from (the store's) */
};

static size_t node_size(const struct map *m, size_t slen)
{
    return sizeof(struct node) + m->key_at + slen;
}

static void node_free(struct map *m, struct node *e)
{
    slab_free(m->slab, e, node_size(m, e->slen));
}

struct store {
    size_t rec_size, key_size;
    struct slab slab;           /* both maps' nodes */
    unsigned char *get_buf;     /* store_get's record */
    unsigned char *visit_buf;   /* store_visit's record */
    struct map recs;
    struct map exp;             /* expectations, keyed like records */
    uint32_t mark[256];         /* per source: the generation of its list in progress */
    uint32_t gen;
};

static const char *key_of(const struct map *m, const struct node *e)
{
    return (const char *)e->rec + m->key_at;
}

static size_t bucket(const struct map *m, const char *key)
{
    return (size_t)(util_fnv1a(key, strlen(key), 0) % m->nb);
}

static void map_clear(struct map *m)
{
    for (size_t i = 0; i < m->nb; i++)
        for (struct node *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            node_free(m, e);
        }
    free(m->b);
    m->b = NULL;
    m->nb = m->n = 0;
}

static struct node *map_find(const struct map *m, const char *key)
{
    if (!m->nb) return NULL;
    for (struct node *e = m->b[bucket(m, key)]; e; e = e->next)
        if (strcmp(key_of(m, e), key) == 0) return e;
    return NULL;
}

static int map_grow(struct map *m)
{
    if (m->nb && m->n < m->nb) return 0;
    size_t nb = m->nb ? m->nb * 2 : 64;
    struct node **b = calloc(nb, sizeof *b);
    if (!b) return JP_ENOMEM;
    struct map nm = {b, nb, m->n, m->key_at, m->slab};
    for (size_t i = 0; i < m->nb; i++)
        for (struct node *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            size_t h = bucket(&nm, key_of(m, e));
            e->next = b[h];
            b[h] = e;
        }
    free(m->b);
    *m = nm;
    return 0;
}

/* The node whose key is strs's first string, holding strs (slen bytes, the last a NUL) as its
 * strings: created (zeroed) when missing, moved when its strings' size changes. NULL when out
 * of memory (the node, if any, unchanged). */
static struct node *map_set(struct map *m, const char *strs, size_t slen, bool *added)
{
    struct node **pp = NULL, *e = NULL;
    *added = false;
    if (m->nb)
        for (pp = &m->b[bucket(m, strs)]; *pp; pp = &(*pp)->next)
            if (strcmp(key_of(m, *pp), strs) == 0) {
                e = *pp;
                break;
            }
    if (e && slab_class(node_size(m, e->slen)) != slab_class(node_size(m, slen))) {
        /* Another slot class: moved, with its header and fields (the strings follow). */
        struct node *g = slab_alloc(m->slab, node_size(m, slen));
        if (!g) return NULL;
        memcpy(g, e, sizeof *e + m->key_at);
        node_free(m, e);
        *pp = g; /* the link that held e: its predecessor's or the bucket's */
        e = g;
    } else if (!e) {
        if (map_grow(m) != 0 || !(e = slab_alloc(m->slab, node_size(m, slen)))) return NULL;
        size_t h = bucket(m, strs);
        e->next = m->b[h];
        m->b[h] = e;
        m->n++;
        *added = true;
    }
    e->slen = (uint16_t)slen;
    memcpy(e->rec + m->key_at, strs, slen);
    return e;
}

static void map_del(struct map *m, const char *key)
{
    if (!m->nb) return;
    for (struct node **pp = &m->b[bucket(m, key)]; *pp; pp = &(*pp)->next)
        if (strcmp(key_of(m, *pp), key) == 0) {
            struct node *e = *pp;
            *pp = e->next;
            node_free(m, e);
            m->n--;
            return;
        }
}

int store_new(size_t rec_size, size_t key_size, struct store **out)
{
    *out = NULL;
    if (key_size < 2 || key_size > rec_size || key_size > STORE_STRS_MAX) return JP_EINVAL;
    struct store *s = calloc(1, sizeof *s);
    if (!s || !(s->get_buf = malloc(rec_size)) || !(s->visit_buf = malloc(rec_size))) {
        store_free(s);
        return JP_ENOMEM;
    }
    s->rec_size = rec_size;
    s->key_size = key_size;
    s->recs.key_at = s->exp.key_at = rec_size - key_size;
    s->recs.slab = s->exp.slab = &s->slab;
    *out = s;
    return 0;
}

void store_free(struct store *s)
{
    if (!s) return;
    map_clear(&s->recs);
    map_clear(&s->exp);
    slab_release(&s->slab);
    free(s->get_buf);
    free(s->visit_buf);
    free(s);
}

uint64_t store_rv(const char *rv)
{
    uint64_t v = 0;
    if (!rv || !*rv) return 0;
    for (const char *p = rv; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return v;
}

/* How much of rec's strings region to keep: up to the NUL of its last string; a region with
 * no NUL at its end is cut to end in one (as a key longer than its buffer always was). */
static size_t strs_len(const struct store *s, const void *rec)
{
    const unsigned char *r = rec;
    size_t n = s->key_size;
    while (n > 0 && !r[n - 1]) n--;
    return n < s->key_size ? n + 1 : s->key_size;
}

/* map_set of rec's strings region, cut to slen (the last byte made a NUL). */
static struct node *set_strs(struct store *s, struct map *m, const void *rec, bool *added)
{
    char strs[STORE_STRS_MAX];
    size_t slen = strs_len(s, rec);
    memcpy(strs, rec, slen);
    strs[slen - 1] = '\0';
    return map_set(m, strs, slen, added);
}

/* Insert or replace rec unless the stored copy is newer. Returns its node, NULL on ENOMEM. */
static struct node *put(struct store *s, const void *rec, uint64_t rv, int src)
{
    bool added;
    struct node *e = map_find(&s->recs, (const char *)rec);
    if (e && e->rv && rv && e->rv > rv)
        return e; /* a write's answer newer than this event or list: keep it */
    if (!(e = set_strs(s, &s->recs, rec, &added))) return NULL;
    memcpy(e->rec, (const unsigned char *)rec + s->key_size, s->recs.key_at);
    e->rv = rv;
    e->src = (uint8_t)src;
    return e;
}

int store_put(struct store *s, const void *rec, uint64_t rv, int src)
{
    struct node *e = put(s, rec, rv, src);
    return e ? 0 : JP_ENOMEM;
}

/* The store saw key (listed or watched): a create expectation is met. */
static void fulfil_create(struct store *s, const char *key)
{
    struct node *x = map_find(&s->exp, key);
    if (x && x->kind == EXP_CREATE) map_del(&s->exp, key);
}

int store_observe(struct store *s, const void *rec, uint64_t rv, int src)
{
    struct node *e = put(s, rec, rv, src);
    if (!e) return JP_ENOMEM;
    e->mark = s->mark[(uint8_t)src]; /* seen since its source's list began */
    fulfil_create(s, (const char *)rec);
    return 0;
}

void store_observe_deleted(struct store *s, const char *key)
{
    map_del(&s->recs, key);
    struct node *x = map_find(&s->exp, key);
    if (x) map_del(&s->exp, key); /* a delete is met; a create was made and is gone again */
}

void store_list_begin(struct store *s, int src)
{
    s->mark[(uint8_t)src] = ++s->gen;
    if (!s->gen) s->mark[(uint8_t)src] = s->gen = 1; /* 0 means "never listed" */
}

int store_list_item(struct store *s, const void *rec, uint64_t rv, int src)
{
    return store_observe(s, rec, rv, src);
}

size_t store_list_end(struct store *s, int src, uint64_t list_rv)
{
    size_t dropped = 0;
    uint32_t mark = s->mark[(uint8_t)src];
    for (size_t i = 0; i < s->recs.nb; i++)
        for (struct node **pp = &s->recs.b[i]; *pp;) {
            struct node *e = *pp;
            bool mine = e->src == (uint8_t)src;
            bool newer = e->rv && list_rv && e->rv > list_rv;
            if (!mine || e->mark == mark || newer) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            s->recs.n--;
            dropped++;
            node_free(&s->recs, e);
        }
    /* A delete whose object the list no longer holds has happened. */
    for (size_t i = 0; i < s->exp.nb; i++)
        for (struct node **pp = &s->exp.b[i]; *pp;) {
            struct node *x = *pp;
            if (x->kind == EXP_DELETE && !map_find(&s->recs, key_of(&s->exp, x))) {
                *pp = x->next;
                s->exp.n--;
                node_free(&s->exp, x);
            } else {
                pp = &x->next;
            }
        }
    return dropped;
}

/* The whole record of node e (of map m) in buf: its key, the key buffer's rest zero, the rest. */
static const void *materialize(const struct store *s, const struct map *m, const struct node *e,
                               unsigned char *buf)
{
    memcpy(buf, key_of(m, e), e->slen);
    memset(buf + e->slen, 0, s->key_size - e->slen);
    memcpy(buf + s->key_size, e->rec, m->key_at);
    return buf;
}

const void *store_get(const struct store *s, const char *key)
{
    const struct node *e = map_find(&s->recs, key);
    return e ? materialize(s, &s->recs, e, s->get_buf) : NULL;
}

size_t store_count(const struct store *s) { return s->recs.n; }

int store_visit(const struct store *s, store_visit_fn fn, void *ud)
{
    int rc;
    for (size_t i = 0; i < s->recs.nb; i++)
        for (const struct node *e = s->recs.b[i]; e; e = e->next) {
            if (s->exp.n) {
                const struct node *x = map_find(&s->exp, key_of(&s->recs, e));
                if (x && x->kind == EXP_DELETE) continue;
            }
            if ((rc = fn(ud, materialize(s, &s->recs, e, s->visit_buf))) != 0) return rc;
        }
    for (size_t i = 0; i < s->exp.nb; i++)
        for (const struct node *x = s->exp.b[i]; x; x = x->next) {
            if (x->kind != EXP_CREATE || map_find(&s->recs, key_of(&s->exp, x))) continue;
            if ((rc = fn(ud, materialize(s, &s->exp, x, s->visit_buf))) != 0) return rc;
        }
    return 0;
}

int store_expect_create(struct store *s, const void *placeholder, int64_t now_ms)
{
    bool added;
    struct node *x = set_strs(s, &s->exp, placeholder, &added);
    if (!x) return JP_ENOMEM;
    memcpy(x->rec, (const unsigned char *)placeholder + s->key_size, s->exp.key_at);
    x->kind = EXP_CREATE;
    x->rv = (uint64_t)now_ms;
    return 0;
}

int store_expect_delete(struct store *s, const char *key, int64_t now_ms)
{
    bool added;
    struct node *x = map_find(&s->exp, key);
    if (!x) {
        size_t kl = strnlen(key, s->key_size - 1);
        char strs[STORE_STRS_MAX];
        memcpy(strs, key, kl);
        strs[kl] = '\0';
        if (!(x = map_set(&s->exp, strs, kl + 1, &added))) return JP_ENOMEM;
    }
    x->kind = EXP_DELETE;
    x->rv = (uint64_t)now_ms;
    return 0;
}

void store_expect_forget(struct store *s, const char *key)
{
    struct node *x = map_find(&s->exp, key);
    if (x && x->kind == EXP_CREATE) map_del(&s->exp, key);
}

size_t store_expect_expire(struct store *s, int64_t current_ms, int64_t timeout_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < s->exp.nb; i++)
        for (struct node **pp = &s->exp.b[i]; *pp;) {
            struct node *x = *pp;
            if (current_ms - (int64_t)x->rv > timeout_ms) {
                *pp = x->next;
                s->exp.n--;
                node_free(&s->exp, x);
                n++;
            } else {
                pp = &x->next;
            }
        }
    return n;
}

void store_expect_count(const struct store *s, size_t *creates, size_t *deletes)
{
    size_t c = 0, d = 0;
    for (size_t i = 0; i < s->exp.nb; i++)
        for (const struct node *x = s->exp.b[i]; x; x = x->next) {
            if (x->kind == EXP_CREATE) c++;
            else d++;
        }
    if (creates) *creates = c;
    if (deletes) *deletes = d;
}
