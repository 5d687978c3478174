/* test_store.c: the watch store: newer-wins puts, relists merged not swapped, expectations. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "store.h"

/* A small record like the real ones: key first. */
struct rec {
    char name[32];
    int v;
};

static struct rec R(const char *name, int v)
{
    struct rec r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "%s", name);
    r.v = v;
    return r;
}

static int visit_collect(void *ud, const void *rec)
{
    char *out = ud;
    const struct rec *r = rec;
    char item[48];
    snprintf(item, sizeof item, "%s=%d ", r->name, r->v);
    strcat(out, item);
    return 0;
}

/* The visit in key order, e.g. "a=1 b=2 ". */
static const char *seen(struct store *s)
{
    static char buf[1024];
    char raw[1024] = "";
    assert_int_equal(store_visit(s, visit_collect, raw), 0);
    char *items[64];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(raw, " ", &save); t && n < 64;
         t = strtok_r(NULL, " ", &save))
        items[n++] = t;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char *x = items[j];
            items[j] = items[j - 1];
            items[j - 1] = x;
        }
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(buf, items[i]);
        strcat(buf, " ");
    }
    return buf;
}

static void test_rv(void **state)
{
    (void)state;
    assert_int_equal(store_rv("12345"), 12345);
    assert_int_equal(store_rv(""), 0);
    assert_int_equal(store_rv(NULL), 0);
    assert_int_equal(store_rv("12a"), 0);
    assert_int_equal(store_rv("99999999999999999999999"), 0);
}

/* Watch events and write answers: the newer resourceVersion wins either way round. */
static void test_newer_wins(void **state)
{
    (void)state;
    struct store *s;
    assert_int_equal(store_new(sizeof(struct rec), sizeof(((struct rec *)0)->name), &s), 0);
    struct rec a = R("a", 1);
    assert_int_equal(store_observe(s, &a, 10, 0), 0);
    a.v = 2;
    assert_int_equal(store_put(s, &a, 12, 0), 0); /* a write's answer, newer */
    a.v = 3;
    assert_int_equal(store_observe(s, &a, 11, 0), 0); /* an older event arriving late */
    assert_string_equal(seen(s), "a=2 ");
    a.v = 4;
    assert_int_equal(store_observe(s, &a, 13, 0), 0);
    assert_string_equal(seen(s), "a=4 ");
    a.v = 5;
    assert_int_equal(store_observe(s, &a, 0, 0), 0); /* unknown versions always replace */
    assert_string_equal(seen(s), "a=5 ");
    store_observe_deleted(s, "a");
    assert_string_equal(seen(s), "");
    assert_int_equal(store_count(s), 0);
    store_free(s);
}

/* A relist merges: what the controller created after the list was taken stays; what the list
 * no longer has (and is not newer) goes; another source's records are untouched. */
static void test_relist_merges(void **state)
{
    (void)state;
    struct store *s;
    assert_int_equal(store_new(sizeof(struct rec), sizeof(((struct rec *)0)->name), &s), 0);
    struct rec a = R("a", 1), b = R("b", 1), c = R("c", 1), other = R("x", 1);
    assert_int_equal(store_observe(s, &a, 10, 0), 0);
    assert_int_equal(store_observe(s, &b, 11, 0), 0);
    assert_int_equal(store_observe(s, &other, 5, 1), 0);
    store_list_begin(s, 0);
    /* While the list is in flight the controller creates c (rv 30, after the list's 20). */
    assert_int_equal(store_put(s, &c, 30, 0), 0);
    a.v = 2;
    assert_int_equal(store_list_item(s, &a, 15, 0), 0);
    /* b was deleted before the list was taken: it is not listed. */
    assert_int_equal(store_list_end(s, 0, 20), 1);
    assert_string_equal(seen(s), "a=2 c=1 x=1 ");
    /* The next relist, taken after c, no longer has c: c was deleted since. */
    store_list_begin(s, 0);
    assert_int_equal(store_list_item(s, &a, 15, 0), 0);
    assert_int_equal(store_list_end(s, 0, 40), 1);
    assert_string_equal(seen(s), "a=2 x=1 ");
    /* A list that fails half way (no store_list_end) drops nothing. */
    store_list_begin(s, 0);
    assert_string_equal(seen(s), "a=2 x=1 ");
    store_free(s);
}

/* Expected creates count as present until observed, survive a relist that missed them, and
 * are forgotten when refused; expected deletes count as gone until observed. */
static void test_expectations(void **state)
{
    (void)state;
    struct store *s;
    assert_int_equal(store_new(sizeof(struct rec), sizeof(((struct rec *)0)->name), &s), 0);
    struct rec p = R("new", 7), old = R("old", 1);
    assert_int_equal(store_observe(s, &old, 5, 0), 0);
    assert_int_equal(store_expect_create(s, &p, 1000), 0);
    assert_int_equal(store_expect_delete(s, "old", 1000), 0);
    assert_string_equal(seen(s), "new=7 ");
    size_t c, d;
    store_expect_count(s, &c, &d);
    assert_int_equal(c, 1);
    assert_int_equal(d, 1);

    /* A relist taken before the create (and still listing old) changes nothing. */
    store_list_begin(s, 0);
    assert_int_equal(store_list_item(s, &old, 5, 0), 0);
    store_list_end(s, 0, 6);
    assert_string_equal(seen(s), "new=7 ");

    /* The watch shows the create: the placeholder gives way to the object. */
    struct rec real = R("new", 8);
    assert_int_equal(store_observe(s, &real, 9, 0), 0);
    assert_string_equal(seen(s), "new=8 ");
    store_expect_count(s, &c, &d);
    assert_int_equal(c, 0);
    /* An update of the deleted object before its DELETED event keeps it hidden. */
    old.v = 2;
    assert_int_equal(store_observe(s, &old, 10, 0), 0);
    assert_string_equal(seen(s), "new=8 ");
    store_observe_deleted(s, "old");
    store_expect_count(s, &c, &d);
    assert_int_equal(d, 0);
    assert_string_equal(seen(s), "new=8 ");

    /* A refused create is forgotten at once; a delete is met by a list without the object. */
    struct rec q = R("refused", 1);
    assert_int_equal(store_expect_create(s, &q, 2000), 0);
    assert_string_equal(seen(s), "new=8 refused=1 ");
    store_expect_forget(s, "refused");
    assert_string_equal(seen(s), "new=8 ");
    assert_int_equal(store_expect_delete(s, "new", 2000), 0);
    assert_string_equal(seen(s), "");
    store_list_begin(s, 0);
    store_list_end(s, 0, 50);
    store_expect_count(s, &c, &d);
    assert_int_equal(d, 0);
    store_free(s);
}

/* A create whose answer was lost and that never shows up is given up only after the store has
 * been current for the timeout past it: a store that is not current keeps it. */
static void test_expire_on_store_clock(void **state)
{
    (void)state;
    struct store *s;
    assert_int_equal(store_new(sizeof(struct rec), sizeof(((struct rec *)0)->name), &s), 0);
    struct rec p = R("lost", 1);
    assert_int_equal(store_expect_create(s, &p, 10000), 0);
    assert_int_equal(store_expect_expire(s, 5000, 30000), 0);   /* last current before it */
    assert_int_equal(store_expect_expire(s, 39000, 30000), 0);  /* current 29 s past it */
    assert_string_equal(seen(s), "lost=1 ");
    assert_int_equal(store_expect_expire(s, 40001, 30000), 1);
    assert_string_equal(seen(s), "");
    store_free(s);
}

/* Many keys: the map grows and still finds, replaces and deletes every one. */
static void test_many(void **state)
{
    (void)state;
    struct store *s;
    assert_int_equal(store_new(sizeof(struct rec), sizeof(((struct rec *)0)->name), &s), 0);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "job-%d", i);
        struct rec r = R(k, i);
        assert_int_equal(store_observe(s, &r, (uint64_t)i + 1, 0), 0);
    }
    assert_int_equal(store_count(s), 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(k, sizeof k, "job-%d", i);
        store_observe_deleted(s, k);
    }
    assert_int_equal(store_count(s), 2500);
    snprintf(k, sizeof k, "job-%d", 4999);
    const struct rec *r = store_get(s, k);
    assert_non_null(r);
    assert_int_equal(r->v, 4999);
    assert_null(store_get(s, "job-4998"));
    store_free(s);
    store_free(NULL);
    assert_int_equal(store_new(1, 1, &s), JP_EINVAL);
    assert_int_equal(store_new(8, 9, &s), JP_EINVAL);
    assert_null(s);
}

/* The store keeps a record's strings region (here the name buffer: the key, then any packed
 * strings) only up to its last string; what it hands out is the record whole again: the strings
 * and fields as written, the region's bytes after the last string zero (a record, one replaced
 * with longer strings, and a create's placeholder). */
static int check_whole(void *ud, const void *rec)
{
    const struct rec *r = rec;
    size_t end = strlen(r->name) + 1;
    if (!strcmp(r->name, "a")) {
        assert_string_equal(r->name + 2, "second string");
        end += strlen(r->name + 2) + 1;
    }
    for (size_t i = end; i < sizeof r->name; i++) assert_int_equal(r->name[i], 0);
    if (!strcmp(r->name, "a")) assert_int_equal(r->v, 7);
    else if (!strcmp(r->name, "placeholder-with-a-longer-key")) assert_int_equal(r->v, -3);
    else fail_msg("unexpected record %s", r->name);
    (*(int *)ud)++;
    return 0;
}

static void test_records_whole(void **state)
{
    (void)state;
    struct store *s;
    assert_int_equal(store_new(sizeof(struct rec), sizeof(((struct rec *)0)->name), &s), 0);
    struct rec r = R("a", 1);
    assert_int_equal(store_observe(s, &r, 1, 0), 0);
    snprintf(r.name + 2, sizeof r.name - 2, "second string"); /* a packed second string */
    r.v = 7;
    assert_int_equal(store_observe(s, &r, 2, 0), 0);
    struct rec p = R("placeholder-with-a-longer-key", -3);
    assert_int_equal(store_expect_create(s, &p, 100), 0);
    const struct rec *g = store_get(s, "a");
    assert_non_null(g);
    assert_string_equal(g->name, "a");
    assert_string_equal(g->name + 2, "second string");
    assert_int_equal(g->v, 7);
    /* Shorter strings again: the node shrinks, and nothing of the longer ones comes back. */
    struct rec shorter = R("a", 7);
    assert_int_equal(store_observe(s, &shorter, 3, 0), 0);
    g = store_get(s, "a");
    for (size_t i = 2; i < sizeof g->name; i++) assert_int_equal(g->name[i], 0);
    assert_int_equal(store_observe(s, &r, 4, 0), 0);
    int n = 0;
    assert_int_equal(store_visit(s, check_whole, &n), 0);
    assert_int_equal(n, 2);
    store_free(s);
}

/* Churn against a model: records whose strings vary from a few bytes to over a kilobyte (so
 * nodes change slot class, and the largest are plain mallocs), replaced, deleted and added
 * again thousands of times over many blocks of slots; every record reads back whole, and none
 * reads back another's bytes (a slot handed out twice, or freed while in use, would). */
struct big {
    char strs[1000];            /* the key, then a second string of varying length */
    uint32_t v;
    unsigned char tail[200];    /* fields: the longest nodes pass 1 KiB */
};

static void big_make(struct big *b, int key, int len, uint32_t v)
{
    memset(b, 0, sizeof *b);
    int n = snprintf(b->strs, sizeof b->strs, "k%d", key);
    for (int i = 0; i < len; i++) b->strs[n + 1 + i] = (char)('a' + (v + (uint32_t)i) % 26);
    b->v = v;
    for (size_t i = 0; i < sizeof b->tail; i++) b->tail[i] = (unsigned char)(v * 7 + i);
}

static int count_visit(void *ud, const void *rec)
{
    (void)rec;
    (*(int *)ud)++;
    return 0;
}

static void test_churn(void **state)
{
    (void)state;
    enum { KEYS = 3000, OPS = 40000 };
    struct store *s;
    assert_int_equal(store_new(sizeof(struct big), sizeof(((struct big *)0)->strs), &s), 0);
    static int len[KEYS];
    static uint32_t val[KEYS];
    static bool present[KEYS];
    uint32_t x = 12345;
    struct big b, want;
    for (int op = 0; op < OPS; op++) {
        x = x * 1103515245u + 12345u;
        int k = (int)((x >> 8) % KEYS);
        if ((x >> 4) % 8 == 0) {
            char key[16];
            snprintf(key, sizeof key, "k%d", k);
            store_observe_deleted(s, key);
            present[k] = false;
            continue;
        }
        int l = (int)((x >> 12) % 8 == 0 ? (x >> 16) % 990 : (x >> 16) % 120);
        big_make(&b, k, l, (uint32_t)op);
        assert_int_equal(store_observe(s, &b, (uint64_t)op + 1, 0), 0);
        len[k] = l;
        val[k] = (uint32_t)op;
        present[k] = true;
    }
    int n = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        const struct big *g = store_get(s, key);
        if (!present[k]) {
            assert_null(g);
            continue;
        }
        assert_non_null(g);
        big_make(&want, k, len[k], val[k]);
        assert_memory_equal(g, &want, sizeof want);
        n++;
    }
    int visited = 0;
    assert_int_equal(store_visit(s, count_visit, &visited), 0);
    assert_int_equal(visited, n);
    assert_int_equal(store_count(s), (size_t)n);
    store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rv),
        cmocka_unit_test(test_newer_wins),
        cmocka_unit_test(test_relist_merges),
        cmocka_unit_test(test_expectations),
        cmocka_unit_test(test_expire_on_store_clock),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_records_whole),
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
