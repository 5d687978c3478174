/* store.c: objects of one kind keyed by name, merged on relists, with expected writes. */
#define _GNU_SOURCE
#include "store.h"
#include "err.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* One chained hash map node: a record, or an expectation (rec then holds the placeholder, or
 * only the key for a delete). 24 bytes of header per record. */
struct node {
    struct node *next;
    uint64_t rv;                /* records: resourceVersion; expectations: when made (ms) */
    uint32_t mark;              /* records: the list generation that last saw it */
    uint8_t src;                /* records: the source that listed or watched it */
    uint8_t kind;               /* expectations: EXP_CREATE or EXP_DELETE */
    uint8_t pad[2];
    _Alignas(8) unsigned char rec[];
};

enum { EXP_CREATE = 1, EXP_DELETE = 2 };

struct map {
    struct node **b;
    size_t nb, n;
};

struct store {
    size_t rec_size;
    struct map recs;
    struct map exp;             /* expectations, keyed like records */
    uint32_t mark[256];         /* per source: the generation of its list in progress */
    uint32_t gen;
};

static const char *key_of(const struct node *e) { return (const char *)e->rec; }

static size_t bucket(const struct map *m, const char *key)
{
    return (size_t)(util_fnv1a(key, strlen(key), 0) % m->nb);
}

static void map_clear(struct map *m)
{
    for (size_t i = 0; i < m->nb; i++)
        for (struct node *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    free(m->b);
    memset(m, 0, sizeof *m);
}

static struct node *map_find(const struct map *m, const char *key)
{
    if (!m->nb) return NULL;
    for (struct node *e = m->b[bucket(m, key)]; e; e = e->next)
        if (strcmp(key_of(e), key) == 0) return e;
    return NULL;
}

static int map_grow(struct map *m)
{
    if (m->nb && m->n < m->nb) return 0;
    size_t nb = m->nb ? m->nb * 2 : 64;
    struct node **b = calloc(nb, sizeof *b);
    if (!b) return JP_ENOMEM;
    struct map nm = {b, nb, m->n};
    for (size_t i = 0; i < m->nb; i++)
        for (struct node *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            size_t h = bucket(&nm, key_of(e));
            e->next = b[h];
            b[h] = e;
        }
    free(m->b);
    *m = nm;
    return 0;
}

/* The node of key, created (zeroed, key copied) when missing; NULL when out of memory. */
static struct node *map_get_or_add(struct map *m, const char *key, size_t rec_size, bool *added)
{
    struct node *e = map_find(m, key);
    *added = false;
    if (e) return e;
    if (map_grow(m) != 0 || !(e = calloc(1, sizeof *e + rec_size))) return NULL;
    size_t kl = strnlen(key, rec_size - 1);
    memcpy(e->rec, key, kl);
    size_t h = bucket(m, key);
    e->next = m->b[h];
    m->b[h] = e;
    m->n++;
    *added = true;
    return e;
}

static void map_del(struct map *m, const char *key)
{
    if (!m->nb) return;
    for (struct node **pp = &m->b[bucket(m, key)]; *pp; pp = &(*pp)->next)
        if (strcmp(key_of(*pp), key) == 0) {
            struct node *e = *pp;
            *pp = e->next;
            free(e);
            m->n--;
            return;
        }
}

int store_new(size_t rec_size, struct store **out)
{
    *out = NULL;
    if (rec_size < 2) return JP_EINVAL;
    struct store *s = calloc(1, sizeof *s);
    if (!s) return JP_ENOMEM;
    s->rec_size = rec_size;
    *out = s;
    return 0;
}

void store_free(struct store *s)
{
    if (!s) return;
    map_clear(&s->recs);
    map_clear(&s->exp);
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

/* Insert or replace rec unless the stored copy is newer. Returns its node, NULL on ENOMEM. */
static struct node *put(struct store *s, const void *rec, uint64_t rv, int src)
{
    bool added;
    struct node *e = map_get_or_add(&s->recs, (const char *)rec, s->rec_size, &added);
    if (!e) return NULL;
    if (!added && e->rv && rv && e->rv > rv)
        return e; /* a write's answer newer than this event or list: keep it */
    memcpy(e->rec, rec, s->rec_size);
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
            free(e);
        }
    /* A delete whose object the list no longer holds has happened. */
    for (size_t i = 0; i < s->exp.nb; i++)
        for (struct node **pp = &s->exp.b[i]; *pp;) {
            struct node *x = *pp;
            if (x->kind == EXP_DELETE && !map_find(&s->recs, key_of(x))) {
                *pp = x->next;
                s->exp.n--;
                free(x);
            } else {
                pp = &x->next;
            }
        }
    return dropped;
}

const void *store_get(const struct store *s, const char *key)
{
    const struct node *e = map_find(&s->recs, key);
    return e ? e->rec : NULL;
}

size_t store_count(const struct store *s) { return s->recs.n; }

int store_visit(const struct store *s, store_visit_fn fn, void *ud)
{
    int rc;
    for (size_t i = 0; i < s->recs.nb; i++)
        for (const struct node *e = s->recs.b[i]; e; e = e->next) {
            if (s->exp.n) {
                const struct node *x = map_find(&s->exp, key_of(e));
                if (x && x->kind == EXP_DELETE) continue;
            }
            if ((rc = fn(ud, e->rec)) != 0) return rc;
        }
    for (size_t i = 0; i < s->exp.nb; i++)
        for (const struct node *x = s->exp.b[i]; x; x = x->next) {
            if (x->kind != EXP_CREATE || map_find(&s->recs, key_of(x))) continue;
            if ((rc = fn(ud, x->rec)) != 0) return rc;
        }
    return 0;
}

int store_expect_create(struct store *s, const void *placeholder, int64_t now_ms)
{
    bool added;
    struct node *x = map_get_or_add(&s->exp, (const char *)placeholder, s->rec_size, &added);
    if (!x) return JP_ENOMEM;
    memcpy(x->rec, placeholder, s->rec_size);
    x->kind = EXP_CREATE;
    x->rv = (uint64_t)now_ms;
    return 0;
}

int store_expect_delete(struct store *s, const char *key, int64_t now_ms)
{
    bool added;
    struct node *x = map_get_or_add(&s->exp, key, s->rec_size, &added);
    if (!x) return JP_ENOMEM;
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
                free(x);
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
