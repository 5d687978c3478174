/* test_yamljson.c: YAML to cJSON by the core schema: every scalar type, quoting, block strings,
 * anchors, aliases and merge keys, alias bombs, and the source position of each node. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "util.h"
#include "yamljson.h"

/* Parse text; returns the tree (caller deletes) and fails the test on an error. */
static cJSON *parse_ok(const char *text, struct yamljson_src **src)
{
    cJSON *j = NULL;
    struct yamljson_error e;
    memset(&e, 0, sizeof e);
    int rc = yamljson_parse(text, strlen(text), NULL, &j, src, &e);
    if (rc) fail_msg("parse failed: %d:%d: %s: %s", e.line, e.col, e.path, e.msg);
    assert_non_null(j);
    return j;
}

static void parse_bad(const char *text, int line, int col, const char *path, const char *msg)
{
    cJSON *j = (cJSON *)1;
    struct yamljson_src *src = (struct yamljson_src *)1;
    struct yamljson_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(yamljson_parse(text, strlen(text), NULL, &j, &src, &e), JP_EPARSE);
    assert_null(j);
    assert_null(src);
    assert_string_equal(e.msg, msg);
    assert_string_equal(e.path, path);
    assert_int_equal(e.line, line);
    assert_int_equal(e.col, col);
}

/* The JSON rendering of "v" in the document "v: <scalar>". */
static void scalar_is(const char *yaml_value, const char *json)
{
    char doc[256];
    snprintf(doc, sizeof doc, "v: %s\n", yaml_value);
    cJSON *j = parse_ok(doc, NULL);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "v"));
    if (strcmp(s, json) != 0) fail_msg("v: %s gave %s, want %s", yaml_value, s, json);
    cJSON_free(s);
    cJSON_Delete(j);
}

static void test_core_schema_scalars(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        /* ints, in every core-schema base */
        {"8080", "8080"}, {"-12", "-12"}, {"+12", "12"}, {"0", "0"}, {"017", "17"},
        {"0x1F", "31"}, {"0xff", "255"}, {"0o17", "15"}, {"999999999999999", "999999999999999"},
        {"-999999999999999", "-999999999999999"}, {"0x38D7EA4C67FFF", "999999999999999"},
        {"2147483648", "2147483648"},
        /* floats */
        {"1.5", "1.5"}, {".5", "0.5"}, {"-.5", "-0.5"}, {"1.", "1"}, {"1e3", "1000"},
        {"-2.5E-1", "-0.25"}, {"+3.25", "3.25"},
        /* bools */
        {"true", "true"}, {"True", "true"}, {"TRUE", "true"}, {"false", "false"},
        {"False", "false"}, {"FALSE", "false"},
        /* nulls */
        {"null", "null"}, {"Null", "null"}, {"NULL", "null"}, {"~", "null"}, {"", "null"},
        /* YAML 1.1 words and near misses are plain strings under 1.2 core */
        {"yes", "\"yes\""}, {"on", "\"on\""}, {"nULL", "\"nULL\""}, {"tRUE", "\"tRUE\""},
        {"1_000", "\"1_000\""}, {"0x", "\"0x\""}, {"0xZZ", "\"0xZZ\""}, {"0o8", "\"0o8\""},
        {"-0x1F", "\"-0x1F\""}, {"12abc", "\"12abc\""}, {"1e", "\"1e\""}, {".", "\".\""},
        {"a-", "\"a-\""}, {"1.2.3", "\"1.2.3\""}, {"inf", "\"inf\""}, {"250m", "\"250m\""},
        {"registry.example/thumbs:1.4", "\"registry.example/thumbs:1.4\""},
        /* quoted scalars always stay strings */
        {"\"8080\"", "\"8080\""}, {"'8080'", "\"8080\""}, {"\"true\"", "\"true\""},
        {"'null'", "\"null\""}, {"\"\"", "\"\""}, {"''", "\"\""}, {"\"0x1F\"", "\"0x1F\""},
        {"\"a\\tb\"", "\"a\\tb\""}, {"'it''s'", "\"it's\""},
        /* explicit core tags */
        {"!!int \"42\"", "42"}, {"!!float 3", "3"}, {"!!bool 'true'", "true"},
        {"!!null ''", "null"}, {"!!str 5", "5"} /* libyaml cannot tell !!str from plain */,
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) scalar_is(cases[i][0], cases[i][1]);
}

static void test_unrepresentable_scalars(void **state)
{
    (void)state;
    parse_bad("a:\n  v: .inf\n", 2, 6, "a.v", "'.inf' cannot be represented in JSON; quote it to make a string");
    parse_bad("v: -.Inf\n", 1, 4, "v", "'-.Inf' cannot be represented in JSON; quote it to make a string");
    parse_bad("v: .NaN\n", 1, 4, "v", "'.NaN' cannot be represented in JSON; quote it to make a string");
    parse_bad("v: 1e999\n", 1, 4, "v", "float 1e999 is out of range; quote it to make a string");
    parse_bad("v: 1000000000000000\n", 1, 4, "v",
              "integer 1000000000000000 has more than 15 digits and would lose precision in JSON; quote it to make a string");
    parse_bad("v: -99999999999999999999999\n", 1, 4, "v",
              "integer -99999999999999999999999 has more than 15 digits and would lose precision in JSON; quote it to make a string");
    parse_bad("v: 0x38D7EA4C68000\n", 1, 4, "v",
              "integer 0x38D7EA4C68000 has more than 15 digits and would lose precision in JSON; quote it to make a string");
    parse_bad("v: !!int abc\n", 1, 4, "v", "'abc' does not match its tag 'tag:yaml.org,2002:int'");
    parse_bad("v: !!bool yes\n", 1, 4, "v", "'yes' does not match its tag 'tag:yaml.org,2002:bool'");
    parse_bad("v: !custom x\n", 1, 4, "v", "unsupported tag '!custom'");
    parse_bad("v: \"a\\0b\"\n", 1, 4, "v", "string contains a NUL character");
    /* Quoted forms of the same values are fine. */
    scalar_is("'.inf'", "\".inf\"");
    scalar_is("\"1000000000000000\"", "\"1000000000000000\"");
}

static void test_block_strings(void **state)
{
    (void)state;
    const char *doc =
        "literal: |\n"
        "  line one\n"
        "    indented\n"
        "  line three\n"
        "strip: |-\n"
        "  no newline\n"
        "keep: |+\n"
        "  kept\n"
        "\n"
        "folded: >\n"
        "  folded\n"
        "  together\n"
        "\n"
        "  new para\n"
        "plain: this is\n"
        "  one line\n"
        "quoted: \"two\n"
        "  words\"\n"
        "number_looking: |\n"
        "  8080\n";
    cJSON *j = parse_ok(doc, NULL);
    assert_string_equal(cJSON_GetObjectItem(j, "literal")->valuestring, "line one\n  indented\nline three\n");
    assert_string_equal(cJSON_GetObjectItem(j, "strip")->valuestring, "no newline");
    assert_string_equal(cJSON_GetObjectItem(j, "keep")->valuestring, "kept\n\n");
    assert_string_equal(cJSON_GetObjectItem(j, "folded")->valuestring, "folded together\nnew para\n");
    assert_string_equal(cJSON_GetObjectItem(j, "plain")->valuestring, "this is one line");
    assert_string_equal(cJSON_GetObjectItem(j, "quoted")->valuestring, "two words");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "number_looking")));
    assert_string_equal(cJSON_GetObjectItem(j, "number_looking")->valuestring, "8080\n");
    cJSON_Delete(j);
}

static void test_nested(void **state)
{
    (void)state;
    const char *doc =
        "- [1, [2, [3]]]\n"
        "- {a: [b, {c: d}], e: {}}\n"
        "- []\n"
        "- - x\n"
        "  - y: [z]\n";
    cJSON *j = parse_ok(doc, NULL);
    char *s = cJSON_PrintUnformatted(j);
    assert_string_equal(s, "[[1,[2,[3]]],{\"a\":[\"b\",{\"c\":\"d\"}],\"e\":{}},[],[\"x\",{\"y\":[\"z\"]}]]");
    cJSON_free(s);
    cJSON_Delete(j);
}

static void test_anchors_aliases(void **state)
{
    (void)state;
    const char *doc =
        "base: &b {image: app:1, ports: [80, 443]}\n"
        "copy: *b\n"
        "name: &n worker\n"
        "names: [*n, *n]\n"
        "list: &l [1, 2]\n"
        "again: *l\n";
    cJSON *j = parse_ok(doc, NULL);
    char *s = cJSON_PrintUnformatted(j);
    assert_string_equal(s, "{\"base\":{\"image\":\"app:1\",\"ports\":[80,443]},"
                           "\"copy\":{\"image\":\"app:1\",\"ports\":[80,443]},"
                           "\"name\":\"worker\",\"names\":[\"worker\",\"worker\"],"
                           "\"list\":[1,2],\"again\":[1,2]}");
    cJSON_free(s);
    cJSON_Delete(j);
}

static void test_merge_keys(void **state)
{
    (void)state;
    const char *doc =
        "a: &a {x: 1, y: 1}\n"
        "b: &b {y: 2, z: 2}\n"
        "one:\n"
        "  <<: *a\n"
        "  x: 9\n"
        "two:\n"
        "  <<: [*b, *a]\n"
        "  w: 0\n";
    cJSON *j = parse_ok(doc, NULL);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "one"));
    assert_string_equal(s, "{\"x\":9,\"y\":1}");   /* own keys win */
    cJSON_free(s);
    s = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "two"));
    assert_string_equal(s, "{\"w\":0,\"y\":2,\"z\":2,\"x\":1}");   /* earlier source wins */
    cJSON_free(s);
    cJSON_Delete(j);
    parse_bad("a:\n  <<: 5\n", 2, 7, "a", "a merge key '<<' takes a mapping or a sequence of mappings");
    /* A quoted "<<" is an ordinary key. */
    cJSON *q = parse_ok("'<<': 1\n", NULL);
    assert_int_equal(cJSON_GetObjectItem(q, "<<")->valueint, 1);
    cJSON_Delete(q);
}

static void test_alias_bomb(void **state)
{
    (void)state;
    /* Nine levels of ten: 10^9 nodes if expanded. */
    const char *doc =
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
        "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
        "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    cJSON *j = (cJSON *)1;
    struct yamljson_error e;
    assert_int_equal(yamljson_parse(doc, strlen(doc), NULL, &j, NULL, &e), JP_EPARSE);
    assert_null(j);
    assert_string_equal(e.msg, "expands to more than 20000 nodes (too many aliases?)");
    /* A lower cap from the caller applies too. */
    struct yamljson_opts o = {.max_nodes = 5, .max_depth = 0};
    const char *small = "[1, 2, 3, 4, 5]\n";
    assert_int_equal(yamljson_parse(small, strlen(small), &o, &j, NULL, &e), JP_EPARSE);
    assert_string_equal(e.path, "[4]");
    assert_int_equal(e.col, 14);
    o.max_nodes = 6;
    assert_int_equal(yamljson_parse(small, strlen(small), &o, &j, NULL, &e), 0);
    cJSON_Delete(j);
}

/* A long string used through many aliases: few nodes, but gigabytes of text if expanded. The
 * node cap alone let this through (100 KiB times 20000 aliases is 2 GB). */
static void test_alias_text_bomb(void **state)
{
    (void)state;
    size_t big = 100 * 1024;
    struct dbuf d;
    dbuf_init(&d, 4 << 20);
    assert_int_equal(dbuf_append(&d, "s: &s \"", 7), 0);
    for (size_t i = 0; i < big; i++) assert_int_equal(dbuf_append(&d, "x", 1), 0);
    assert_int_equal(dbuf_append(&d, "\"\nl:\n", 5), 0);
    for (int i = 0; i < 2000; i++) assert_int_equal(dbuf_printf(&d, "  - *s\n"), 0);
    assert_true(d.len < (1 << 20)); /* the file is under a MiB */
    cJSON *j = (cJSON *)1;
    struct yamljson_error e;
    assert_int_equal(yamljson_parse(d.data, d.len, NULL, &j, NULL, &e), JP_EPARSE);
    assert_null(j);
    assert_string_equal(e.msg, "expands to more than 1048576 bytes of text (too many aliases?)");
    /* The 11th use crosses 1 MiB; the path says which use, the position is the anchored
     * string's (libyaml resolves an alias to the node it names). */
    assert_string_equal(e.path, "l[9]");
    assert_int_equal(e.line, 1);
    assert_int_equal(e.col, 4);
    /* Keys count too. */
    struct yamljson_opts o = {.max_bytes = 10}; /* 4 + 1 + 4 + 1 */
    const char *keys = "abcd: 1\nefgh: 2\n";
    assert_int_equal(yamljson_parse(keys, strlen(keys), &o, &j, NULL, &e), 0);
    cJSON_Delete(j);
    o.max_bytes = 9;
    assert_int_equal(yamljson_parse(keys, strlen(keys), &o, &j, NULL, &e), JP_EPARSE);
    assert_int_equal(e.line, 2);
    /* A shared budget adds up over conversions, and is charged even when one fails. */
    struct yamljson_budget b = {.max_nodes = 100, .max_bytes = 10};
    o = (struct yamljson_opts){.budget = &b};
    const char *six = "[abc, def]\n";
    assert_int_equal(yamljson_parse(six, strlen(six), &o, &j, NULL, &e), 0);
    cJSON_Delete(j);
    assert_int_equal(b.bytes, 6);
    assert_int_equal(b.nodes, 3);
    assert_int_equal(yamljson_parse(six, strlen(six), &o, &j, NULL, &e), JP_EPARSE);
    assert_string_equal(e.msg, "the file expands to more than 10 bytes of text in all (too many "
                               "aliases?)");
    assert_string_equal(e.path, "[1]");
    dbuf_free(&d);
}

static void test_self_reference_and_depth(void **state)
{
    (void)state;
    cJSON *j = (cJSON *)1;
    struct yamljson_error e;
    const char *loop = "a: &a [*a]\n";
    assert_int_equal(yamljson_parse(loop, strlen(loop), NULL, &j, NULL, &e), JP_EPARSE);
    assert_null(j);
    assert_string_equal(e.msg, "nested deeper than 64 levels (a self-referencing alias?)");
    const char *mloop = "a: &a {<<: *a}\n";
    assert_int_equal(yamljson_parse(mloop, strlen(mloop), NULL, &j, NULL, &e), JP_EPARSE);
    assert_string_equal(e.msg, "nested deeper than 64 levels (a self-referencing alias?)");
    char deep[200];
    memset(deep, '[', 70);
    memset(deep + 70, ']', 70);
    deep[140] = '\0';
    assert_int_equal(yamljson_parse(deep, strlen(deep), NULL, &j, NULL, &e), JP_EPARSE);
    assert_int_equal(e.line, 1);
    assert_int_equal(e.col, 66);
}

static void test_bad_documents(void **state)
{
    (void)state;
    parse_bad("a: 1\nb: 2\na: 3\n", 3, 1, "a", "duplicate key 'a'");
    parse_bad("? [x]\n: 1\n", 1, 3, "", "mapping keys must be scalars, not a sequence");
    parse_bad("a: [1, 2\n", 2, 1, "",
              "did not find expected ',' or ']' while parsing a flow sequence at line 1 column 4");
    parse_bad("a: 1\n---\nb: 2\n", 3, 1, "", "more than one YAML document");
    parse_bad("a:\n\tb: 1\n", 2, 1, "",
              "found character that cannot start any token while scanning for the next token at line 2 column 1");
    parse_bad("a: 1\nb: \"x\xc3\"\n", 2, 7, "", "invalid trailing UTF-8 octet");
    /* An empty document is null. */
    cJSON *j = parse_ok("# only a comment\n", NULL);
    assert_true(cJSON_IsNull(j));
    cJSON_Delete(j);
}

static void test_positions(void **state)
{
    (void)state;
    const char *doc =
        "backoffLimit: 0\n"                          /* 1 */
        "template:\n"                                /* 2 */
        "  metadata:\n"                              /* 3 */
        "    labels: {app.kubernetes.io/name: x}\n"  /* 4 */
        "  spec:\n"                                  /* 5 */
        "    containers:\n"                          /* 6 */
        "      - name: worker\n"                     /* 7 */
        "        image: app:1\n"                     /* 8 */
        "        args: [a,\n"                        /* 9 */
        "               b]\n";                       /* 10 */
    struct yamljson_src *src = NULL;
    cJSON *j = parse_ok(doc, &src);
    assert_int_equal(yamljson_src_count(src), 14);
    int line = 0, col = 0;
    assert_int_equal(yamljson_src_find(src, "template.spec.containers[0].image", &line, &col), 0);
    assert_int_equal(line, 8);
    assert_int_equal(col, 16);
    assert_int_equal(yamljson_src_find(src, "template.spec.containers[0].args[1]", &line, &col), 0);
    assert_int_equal(line, 10);
    assert_int_equal(col, 16);
    assert_int_equal(yamljson_src_find(src, "template.metadata.labels[app.kubernetes.io/name]", &line, &col), 0);
    assert_int_equal(line, 4);
    assert_int_equal(col, 38);
    assert_int_equal(yamljson_src_find(src, "backoffLimit", &line, &col), 0);
    assert_int_equal(line, 1);
    assert_int_equal(col, 15);
    /* A path the file does not have gives its nearest ancestor. */
    assert_int_equal(yamljson_src_find(src, "template.spec.containers[0].resources.limits", &line, &col), 1);
    assert_int_equal(line, 7);
    assert_int_equal(col, 9);
    /* "template.spe" matches no node; its ancestor "template" (a block mapping, which starts at
     * its first key) does. "template.spec" is no ancestor of it, being a different key. */
    assert_int_equal(yamljson_src_find(src, "template.spe", &line, &col), 1);
    assert_int_equal(line, 3);
    assert_int_equal(col, 3);
    assert_int_equal(yamljson_src_find(src, "nothing", &line, &col), 1);
    assert_int_equal(line, 1);
    assert_int_equal(col, 1);
    assert_int_equal(yamljson_src_find(NULL, "x", &line, &col), JP_ENOTFOUND);
    yamljson_src_free(src);
    yamljson_src_free(NULL);
    cJSON_Delete(j);
}

/* Emitted YAML reads back as the same tree: strings that look like numbers, booleans, nulls
 * (in YAML 1.1 or 1.2) or hold indicators stay strings; nesting of sequences in mappings and
 * mappings in sequences survives; empty collections stay empty. */
static void test_emit_round_trip(void **state)
{
    (void)state;
    const char *json =
        "{\"a\":\"plain/path-1.2_x\",\"n\":8080,\"f\":1.5,\"neg\":-3,\"t\":true,"
        "\"z\":null,\"s\":[\"8080\",\"yes\",\"on\",\"No\",\"~\",\"null\",\"1e3\",\"0x1F\","
        "\"\",\"a: b\",\"- x\",\"#c\",\"x #c\",\"multi\\nline\",\"tab\\there\","
        "\"quote\\\"d\",\"caf\u00e9\",\".inf\",\"*alias\",\"&anchor\",\"!tag\",\"@at\","
        "\"{x}\",\"[y]\",\"%p\",\"|\",\">\",\"'q'\"],"
        "\"list\":[{\"name\":\"w\",\"env\":[{\"name\":\"A\",\"value\":\"1\"}],\"k\":{}},"
        "[1,[2]],[],{}],\"empty\":{},\"odd key: x\":1,\"8080\":\"k\",\"true\":2}";
    cJSON *want = cJSON_Parse(json);
    assert_non_null(want);
    for (int indent = 0; indent <= 4; indent += 4) {
        struct dbuf b;
        dbuf_init(&b, 0);
        assert_int_equal(yamljson_emit(&b, want, indent), 0);
        cJSON *got = parse_ok(b.data, NULL);
        if (!cJSON_Compare(want, got, 1)) fail_msg("round trip differs:\n%s", b.data);
        cJSON_Delete(got);
        dbuf_free(&b);
    }
    /* Plain where that is safe, so the output reads like a hand-written manifest. */
    struct dbuf b;
    dbuf_init(&b, 0);
    cJSON *o = cJSON_Parse("{\"image\":\"registry/thumbs\",\"args\":[\"--\",\"run\"]}");
    assert_int_equal(yamljson_emit(&b, o, 2), 0);
    assert_string_equal(b.data, "  image: registry/thumbs\n  args:\n    - \"--\"\n    - run\n");
    cJSON_Delete(o);
    dbuf_free(&b);
    cJSON_Delete(want);
}

struct each_log {
    int n;
    int lines[8];
    char names[8][16];
    int stop_at;
};

static int each_cb(void *ud, const cJSON *root, const struct yamljson_src *src, int line)
{
    struct each_log *l = ud;
    int ln = 0, col = 0;
    assert_non_null(src);
    assert_int_equal(yamljson_src_find(src, "name", &ln, &col), 0);
    l->lines[l->n] = ln;
    snprintf(l->names[l->n], sizeof l->names[0], "%s",
             cJSON_GetObjectItem(root, "name")->valuestring);
    (void)line;
    return ++l->n == l->stop_at ? JP_ECANCELED : 0;
}

/* A stream: every document in order, positions relative to the whole text, empty documents
 * skipped, a syntax error in the third reported after the first two were handed over, and a
 * callback's error stops the stream. */
static void test_parse_each(void **state)
{
    (void)state;
    const char *text = "name: a\n---\n---\n# only a comment\n---\nname: b\n...\n---\nname: c\n";
    struct each_log l;
    memset(&l, 0, sizeof l);
    struct yamljson_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(yamljson_parse_each(text, strlen(text), NULL, each_cb, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.names[2], "c");
    assert_int_equal(l.lines[0], 1);
    assert_int_equal(l.lines[1], 6);
    assert_int_equal(l.lines[2], 9);

    memset(&l, 0, sizeof l);
    const char *bad = "name: a\n---\nname: b\n---\nname: [c\n";
    assert_int_equal(yamljson_parse_each(bad, strlen(bad), NULL, each_cb, &l, &e), JP_EPARSE);
    assert_int_equal(l.n, 2);
    assert_int_equal(e.line, 6);

    memset(&l, 0, sizeof l);
    l.stop_at = 1;
    assert_int_equal(yamljson_parse_each(text, strlen(text), NULL, each_cb, &l, &e), JP_ECANCELED);
    assert_int_equal(l.n, 1);
    memset(&l, 0, sizeof l);
    assert_int_equal(yamljson_parse_each("", 0, NULL, each_cb, &l, &e), 0);
    assert_int_equal(l.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_schema_scalars),
        cmocka_unit_test(test_unrepresentable_scalars),
        cmocka_unit_test(test_block_strings),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_anchors_aliases),
        cmocka_unit_test(test_merge_keys),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_alias_text_bomb),
        cmocka_unit_test(test_self_reference_and_depth),
        cmocka_unit_test(test_bad_documents),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_emit_round_trip),
        cmocka_unit_test(test_parse_each),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
