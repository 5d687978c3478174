/* yamljson.c: YAML nodes to cJSON by the YAML 1.2 core schema, keeping node positions. */
#include "yamljson.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "err.h"
#include "util.h"

/* Largest integer kept as a number: cJSON prints numbers with 15 significant digits, so anything
 * longer would come out rounded (and a double stops being exact at 2^53 anyway). */
#define JSON_INT_MAX 999999999999999LL

struct src_ent {
    char *path;
    int line;
    int col;
};

struct yamljson_src {
    struct src_ent *v;
    size_t n;
    size_t alloc;
};

struct conv {
    yaml_document_t *doc;
    size_t nodes, bytes;
    size_t max_nodes, max_bytes;
    int max_depth;
    struct yamljson_budget *budget;  /* may be NULL */
    struct yamljson_src *src;     /* NULL: positions not wanted */
    struct yamljson_error *err;   /* may be NULL */
    char path[YAMLJSON_PATH_MAX];
    size_t plen;
};

static int conv_fail(struct conv *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conv_fail(struct conv *c, const yaml_node_t *n, const char *fmt, ...)
{
    if (!c->err) return JP_EPARSE;
    c->err->line = n ? (int)n->start_mark.line + 1 : 1;
    c->err->col = n ? (int)n->start_mark.column + 1 : 1;
    snprintf(c->err->path, sizeof c->err->path, "%s", c->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->msg, sizeof c->err->msg, fmt, ap);
    va_end(ap);
    return JP_EPARSE;
}

/* Count one node and its text against the conversion's limits and the shared budget; the
 * error names n, where the expansion crossed the limit. */
static int charge(struct conv *c, const yaml_node_t *n, size_t nodes, size_t bytes)
{
    c->nodes += nodes;
    c->bytes += bytes;
    if (c->nodes > c->max_nodes)
        return conv_fail(c, n, "expands to more than %zu nodes (too many aliases?)",
                         c->max_nodes);
    if (c->bytes > c->max_bytes)
        return conv_fail(c, n, "expands to more than %zu bytes of text (too many aliases?)",
                         c->max_bytes);
    struct yamljson_budget *b = c->budget;
    if (!b) return 0;
    b->nodes += nodes;
    b->bytes += bytes;
    if (b->nodes > b->max_nodes)
        return conv_fail(c, n, "the file expands to more than %zu nodes in all (too many "
                         "aliases?)", b->max_nodes);
    if (b->bytes > b->max_bytes)
        return conv_fail(c, n, "the file expands to more than %zu bytes of text in all (too "
                         "many aliases?)", b->max_bytes);
    return 0;
}

static int src_add(struct yamljson_src *s, const char *path, const yaml_node_t *n)
{
    if (s->n == s->alloc) {
        size_t na = s->alloc ? s->alloc * 2 : 32;
        struct src_ent *v = realloc(s->v, na * sizeof *v);
        if (!v) return JP_ENOMEM;
        s->v = v;
        s->alloc = na;
    }
    char *p = util_strdup(path);
    if (!p) return JP_ENOMEM;
    s->v[s->n].path = p;
    s->v[s->n].line = (int)n->start_mark.line + 1;
    s->v[s->n].col = (int)n->start_mark.column + 1;
    s->n++;
    return 0;
}

void yamljson_src_free(struct yamljson_src *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->v[i].path);
    free(s->v);
    free(s);
}

size_t yamljson_src_count(const struct yamljson_src *s) { return s ? s->n : 0; }

int yamljson_src_find(const struct yamljson_src *s, const char *path, int *line, int *col)
{
    if (!s || !s->n || !path) return JP_ENOTFOUND;
    const struct src_ent *best = NULL;
    size_t bestlen = 0;
    size_t plen = strlen(path);
    for (size_t i = 0; i < s->n; i++) {
        const struct src_ent *e = &s->v[i];
        size_t el = strlen(e->path);
        if (el == plen && memcmp(e->path, path, el) == 0) {
            *line = e->line;
            *col = e->col;
            return 0;
        }
        /* An ancestor: a prefix that ends where a path component ends. */
        bool ancestor = el < plen && memcmp(e->path, path, el) == 0 &&
                        (el == 0 || path[el] == '.' || path[el] == '[');
        if (ancestor && (!best || el > bestlen)) {
            best = e;
            bestlen = el;
        }
    }
    if (!best) best = &s->v[0];   /* the converted root encloses everything */
    *line = best->line;
    *col = best->col;
    return 1;
}

/* Append a path component; returns the previous length to restore, or (size_t)-1 when the path
 * would be too long. */
static size_t path_push_key(struct conv *c, const char *key, size_t klen)
{
    size_t old = c->plen;
    bool bracket = klen == 0 || memchr(key, '.', klen) || memchr(key, '[', klen) ||
                   memchr(key, ']', klen);
    size_t need = klen + (bracket ? 2 : (old ? 1 : 0));
    if (old + need + 1 > sizeof c->path) return (size_t)-1;
    char *p = c->path + old;
    if (bracket) *p++ = '[';
    else if (old) *p++ = '.';
    memcpy(p, key, klen);
    p += klen;
    if (bracket) *p++ = ']';
    *p = '\0';
    c->plen = (size_t)(p - c->path);
    return old;
}

static size_t path_push_index(struct conv *c, size_t i)
{
    size_t old = c->plen;
    int n = snprintf(c->path + old, sizeof c->path - old, "[%zu]", i);
    if (n < 0 || (size_t)n >= sizeof c->path - old) {
        c->path[old] = '\0';
        return (size_t)-1;
    }
    c->plen += (size_t)n;
    return old;
}

static void path_pop(struct conv *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

static bool is_digits(const char *s, size_t n, const char *set)
{
    if (!n) return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr(set, s[i]) || !s[i]) return false;
    return true;
}

static bool match_any(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcmp(s, *words) == 0) return true;
    return false;
}

/* The core schema's float pattern. */
static bool is_float(const char *s, size_t n)
{
    size_t i = 0, d1 = 0, d2 = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') { i++; d1++; }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') { i++; d2++; }
    } else if (d1 == 0) {
        return false;
    }
    if (d1 == 0 && d2 == 0) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        size_t d3 = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') { i++; d3++; }
        if (!d3) return false;
    }
    return i == n;
}

/* Unsigned value of digits in base 8 or 16, refusing anything above JSON_INT_MAX. */
static int parse_radix(const char *s, size_t n, int base, int64_t *out)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d;
        char ch = s[i];
        if (ch >= '0' && ch <= '9') d = ch - '0';
        else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
        else d = ch - 'A' + 10;
        if (v > (JSON_INT_MAX - d) / base) return JP_ERANGE;
        v = v * base + d;
    }
    *out = v;
    return 0;
}

enum kind { K_NULL, K_BOOL, K_INT, K_FLOAT, K_STR };

/* Resolve a plain scalar by the core schema. Sets *k and creates *out; returns 0, JP_EPARSE
 * (via conv_fail) or JP_ENOMEM. */
static int resolve_plain(struct conv *c, const yaml_node_t *n, const char *s, size_t len,
                         enum kind *k, cJSON **out)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const infs[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
                                       "-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
    *out = NULL;
    if (match_any(s, nulls)) {
        *k = K_NULL;
        *out = cJSON_CreateNull();
    } else if (match_any(s, trues) || match_any(s, falses)) {
        *k = K_BOOL;
        *out = cJSON_CreateBool(match_any(s, trues));
    } else if (match_any(s, infs) || match_any(s, nans)) {
        return conv_fail(c, n, "'%s' cannot be represented in JSON; quote it to make a string",
                         s);
    } else if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        bool hex = s[1] == 'x';
        if (!is_digits(s + 2, len - 2, hex ? "0123456789abcdefABCDEF" : "01234567"))
            goto string;
        int64_t v;
        if (parse_radix(s + 2, len - 2, hex ? 16 : 8, &v))
            return conv_fail(c, n, "integer %s has more than 15 digits and would lose precision "
                             "in JSON; quote it to make a string", s);
        *k = K_INT;
        *out = cJSON_CreateNumber((double)v);
    } else if (is_digits(s + (s[0] == '-' || s[0] == '+'), len - (s[0] == '-' || s[0] == '+'),
                         "0123456789")) {
        int64_t v;
        if (util_parse_int64(s, -JSON_INT_MAX, JSON_INT_MAX, &v))
            return conv_fail(c, n, "integer %s has more than 15 digits and would lose precision "
                             "in JSON; quote it to make a string", s);
        *k = K_INT;
        *out = cJSON_CreateNumber((double)v);
    } else if (is_float(s, len)) {
        errno = 0;
        char *end;
        double d = strtod(s, &end);
        if (*end || !isfinite(d))
            return conv_fail(c, n, "float %s is out of range; quote it to make a string", s);
        *k = K_FLOAT;
        *out = cJSON_CreateNumber(d);
    } else {
    string:
        *k = K_STR;
        *out = cJSON_CreateString(s);
    }
    return *out ? 0 : JP_ENOMEM;
}

static int conv_scalar(struct conv *c, yaml_node_t *n, cJSON **out)
{
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    const char *tag = (const char *)n->tag;
    *out = NULL;
    if (memchr(s, '\0', len)) return conv_fail(c, n, "string contains a NUL character");
    bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    bool strtag = !tag || strcmp(tag, YAML_STR_TAG) == 0;
    if (strtag) {
        if (!plain) {
            *out = cJSON_CreateString(s);
            return *out ? 0 : JP_ENOMEM;
        }
        enum kind k;
        return resolve_plain(c, n, s, len, &k, out);
    }
    enum kind want;
    if (strcmp(tag, YAML_NULL_TAG) == 0) want = K_NULL;
    else if (strcmp(tag, YAML_BOOL_TAG) == 0) want = K_BOOL;
    else if (strcmp(tag, YAML_INT_TAG) == 0) want = K_INT;
    else if (strcmp(tag, YAML_FLOAT_TAG) == 0) want = K_FLOAT;
    else return conv_fail(c, n, "unsupported tag '%.64s'", tag);
    enum kind k;
    int rc = resolve_plain(c, n, s, len, &k, out);
    if (rc) return rc;
    if (k != want && !(want == K_FLOAT && k == K_INT)) {
        cJSON_Delete(*out);
        *out = NULL;
        return conv_fail(c, n, "'%.64s' does not match its tag '%.64s'", s, tag);
    }
    return 0;
}

static int conv_node(struct conv *c, yaml_node_t *n, int depth, cJSON **out);

static bool is_merge_key(const yaml_node_t *k)
{
    return k->type == YAML_SCALAR_NODE && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           k->data.scalar.length == 2 && memcmp(k->data.scalar.value, "<<", 2) == 0;
}

/* Merge one source mapping (node) into obj: only keys obj does not have yet. */
static int merge_from(struct conv *c, cJSON *obj, yaml_node_t *src, int depth)
{
    if (src->type != YAML_MAPPING_NODE)
        return conv_fail(c, src, "a merge key '<<' takes a mapping or a sequence of mappings");
    cJSON *tmp = NULL;
    int rc = conv_node(c, src, depth + 1, &tmp);
    if (rc) return rc;
    while (tmp->child) {
        cJSON *it = cJSON_DetachItemViaPointer(tmp, tmp->child);
        if (cJSON_GetObjectItemCaseSensitive(obj, it->string)) {
            cJSON_Delete(it);
            continue;
        }
        /* cJSON copies the key before freeing the item's old one. */
        if (!cJSON_AddItemToObject(obj, it->string, it)) {
            cJSON_Delete(it);
            cJSON_Delete(tmp);
            return JP_ENOMEM;
        }
    }
    cJSON_Delete(tmp);
    return 0;
}

static int conv_mapping(struct conv *c, yaml_node_t *n, int depth, cJSON **out)
{
    int rc = JP_ENOMEM;
    cJSON *obj = cJSON_CreateObject();
    if (!obj) goto out;
    bool has_merge = false;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (!k || !v) {
            rc = conv_fail(c, n, "malformed document");
            goto out;
        }
        if (k->type != YAML_SCALAR_NODE) {
            rc = conv_fail(c, k, "mapping keys must be scalars, not a %s",
                           k->type == YAML_MAPPING_NODE ? "mapping" : "sequence");
            goto out;
        }
        if (is_merge_key(k)) {
            if (has_merge) {
                rc = conv_fail(c, k, "duplicate merge key '<<'");
                goto out;
            }
            has_merge = true;
            continue;
        }
        const char *ks = (const char *)k->data.scalar.value;
        size_t kl = k->data.scalar.length;
        if ((rc = charge(c, k, 0, kl))) goto out;
        if (memchr(ks, '\0', kl)) {
            rc = conv_fail(c, k, "key contains a NUL character");
            goto out;
        }
        if (cJSON_GetObjectItemCaseSensitive(obj, ks)) {
            size_t old = path_push_key(c, ks, kl);
            rc = conv_fail(c, k, "duplicate key '%.64s'", ks);
            if (old != (size_t)-1) path_pop(c, old);
            goto out;
        }
        size_t old = path_push_key(c, ks, kl);
        if (old == (size_t)-1) {
            rc = conv_fail(c, k, "key path longer than %d characters", YAMLJSON_PATH_MAX - 1);
            goto out;
        }
        cJSON *child = NULL;
        rc = conv_node(c, v, depth + 1, &child);
        if (!rc) {
            /* Add through the key copy cJSON makes; a failed copy leaves the child ours. */
            if (!cJSON_AddItemToObject(obj, ks, child)) {
                cJSON_Delete(child);
                rc = JP_ENOMEM;
            }
        }
        if (rc) goto out;
        path_pop(c, old);
    }
    /* Merges last, so that the mapping's own keys win over merged ones. */
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; has_merge && p < n->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        if (!is_merge_key(k)) continue;
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (v->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                yaml_node_t *m = yaml_document_get_node(c->doc, *it);
                if (!m) {
                    rc = conv_fail(c, v, "malformed document");
                    goto out;
                }
                if ((rc = merge_from(c, obj, m, depth))) goto out;
            }
        } else if ((rc = merge_from(c, obj, v, depth))) {
            goto out;
        }
    }
    rc = 0;
out:
    if (rc) {
        cJSON_Delete(obj);
        obj = NULL;
    }
    *out = obj;
    return rc;
}

static int conv_sequence(struct conv *c, yaml_node_t *n, int depth, cJSON **out)
{
    int rc = JP_ENOMEM;
    cJSON *arr = cJSON_CreateArray();
    if (!arr) goto out;
    size_t i = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *v = yaml_document_get_node(c->doc, *it);
        if (!v) {
            rc = conv_fail(c, n, "malformed document");
            goto out;
        }
        size_t old = path_push_index(c, i);
        if (old == (size_t)-1) {
            rc = conv_fail(c, v, "key path longer than %d characters", YAMLJSON_PATH_MAX - 1);
            goto out;
        }
        cJSON *child = NULL;
        if ((rc = conv_node(c, v, depth + 1, &child))) goto out;
        if (!cJSON_AddItemToArray(arr, child)) {
            cJSON_Delete(child);
            rc = JP_ENOMEM;
            goto out;
        }
        path_pop(c, old);
    }
    rc = 0;
out:
    if (rc) {
        cJSON_Delete(arr);
        arr = NULL;
    }
    *out = arr;
    return rc;
}

static int conv_node(struct conv *c, yaml_node_t *n, int depth, cJSON **out)
{
    *out = NULL;
    if (depth > c->max_depth)
        return conv_fail(c, n, "nested deeper than %d levels (a self-referencing alias?)",
                         c->max_depth);
    int rc = charge(c, n, 1, n->type == YAML_SCALAR_NODE ? n->data.scalar.length : 0);
    if (rc) return rc;
    if (c->src) {
        rc = src_add(c->src, c->path, n);
        if (rc) return rc;
    }
    switch (n->type) {
    case YAML_SCALAR_NODE: return conv_scalar(c, n, out);
    case YAML_SEQUENCE_NODE: return conv_sequence(c, n, depth, out);
    case YAML_MAPPING_NODE: return conv_mapping(c, n, depth, out);
    default: return conv_fail(c, n, "malformed document");
    }
}

int yamljson_convert(struct yaml_document_s *doc, struct yaml_node_s *node,
                     const struct yamljson_opts *opts, struct cJSON **out,
                     struct yamljson_src **src, struct yamljson_error *err)
{
    int rc = JP_ENOMEM;
    struct conv c;
    memset(&c, 0, sizeof c);
    c.doc = doc;
    c.max_nodes = opts && opts->max_nodes ? opts->max_nodes : YAMLJSON_MAX_NODES;
    c.max_bytes = opts && opts->max_bytes ? opts->max_bytes : YAMLJSON_MAX_BYTES;
    c.budget = opts ? opts->budget : NULL;
    c.max_depth = opts && opts->max_depth ? opts->max_depth : YAMLJSON_MAX_DEPTH;
    c.err = err;
    *out = NULL;
    if (src) {
        *src = NULL;
        if (!(c.src = calloc(1, sizeof *c.src))) goto out;
    }
    if (!doc || !node) {
        rc = conv_fail(&c, NULL, "no document");
        goto out;
    }
    rc = conv_node(&c, node, 0, out);
out:
    if (rc) {
        yamljson_src_free(c.src);
        c.src = NULL;
    }
    if (src) *src = c.src;
    return rc;
}

/* libyaml's message for a failed parse: "problem (context)". */
static void yaml_problem(const yaml_parser_t *p, const char *text, size_t len,
                         struct yamljson_error *err)
{
    if (!err) return;
    err->line = (int)p->problem_mark.line + 1;
    err->col = (int)p->problem_mark.column + 1;
    err->path[0] = '\0';
    if (p->error == YAML_READER_ERROR) {
        /* Encoding errors carry a byte offset, not a mark. */
        err->line = err->col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                err->line++;
                err->col = 1;
            } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
                err->col++;
            }
        }
    }
    if (p->error == YAML_MEMORY_ERROR)
        snprintf(err->msg, sizeof err->msg, "out of memory");
    else if (p->context)
        snprintf(err->msg, sizeof err->msg, "%s %s at line %d column %d",
                 p->problem ? p->problem : "syntax error", p->context,
                 (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    else
        snprintf(err->msg, sizeof err->msg, "%s", p->problem ? p->problem : "syntax error");
}

int yamljson_parse(const char *yaml, size_t len, const struct yamljson_opts *opts,
                   struct cJSON **out, struct yamljson_src **src, struct yamljson_error *err)
{
    int rc = JP_EPARSE;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_parser = false, have_doc = false;
    *out = NULL;
    if (src) *src = NULL;
    if (!yaml_parser_initialize(&parser)) {
        rc = JP_ENOMEM;
        goto out;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_problem(&parser, yaml, len, err);
        rc = parser.error == YAML_MEMORY_ERROR ? JP_ENOMEM : JP_EPARSE;
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        if (!yaml_parser_load(&parser, &extra)) {
            yaml_problem(&parser, yaml, len, err);
            rc = JP_EPARSE;
            goto out;
        }
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2 && err) {
            err->line = (int)r2->start_mark.line + 1;
            err->col = (int)r2->start_mark.column + 1;
            err->path[0] = '\0';
            snprintf(err->msg, sizeof err->msg, "more than one YAML document");
        }
        yaml_document_delete(&extra);
        if (r2) goto out;
        rc = yamljson_convert(&doc, root, opts, out, src, err);
    } else {
        rc = (*out = cJSON_CreateNull()) ? 0 : JP_ENOMEM;
        if (!rc && src && !(*src = calloc(1, sizeof **src))) {
            cJSON_Delete(*out);
            *out = NULL;
            rc = JP_ENOMEM;
        }
    }
out:
    if (have_doc) yaml_document_delete(&doc);
    if (have_parser) yaml_parser_delete(&parser);
    return rc;
}

int yamljson_parse_each(const char *yaml, size_t len, const struct yamljson_opts *opts,
                        yamljson_doc_fn fn, void *ud, struct yamljson_error *err)
{
    int rc = JP_ENOMEM;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return JP_ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            yaml_problem(&parser, yaml, len, err);
            rc = parser.error == YAML_MEMORY_ERROR ? JP_ENOMEM : JP_EPARSE;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) {   /* the end of the stream */
            yaml_document_delete(&doc);
            rc = 0;
            break;
        }
        if (root->type == YAML_SCALAR_NODE && !root->data.scalar.length &&
            root->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            /* A "---" with nothing after it: an empty document, as kubectl skips them. */
            yaml_document_delete(&doc);
            continue;
        }
        cJSON *json = NULL;
        struct yamljson_src *src = NULL;
        rc = yamljson_convert(&doc, root, opts, &json, &src, err);
        int line = (int)root->start_mark.line + 1;
        yaml_document_delete(&doc);
        if (!rc) rc = fn(ud, json, src, line);
        cJSON_Delete(json);
        yamljson_src_free(src);
        if (rc) break;
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* True when s, written plain, reads back as the same string in YAML 1.1 and 1.2: it starts with
 * a letter or '/', holds only [A-Za-z0-9_./-], and is none of the words either version types. */
static bool plain_safe(const char *s)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "y", "n",
                                        "null", NULL};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '/')) return false;
    for (const char *p = s; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '/' || *p == '-';
        if (!ok) return false;
    }
    char low[8];
    size_t n = strlen(s);
    if (n >= sizeof low) return true;
    for (size_t i = 0; i <= n; i++) low[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
    for (size_t i = 0; words[i]; i++)
        if (strcmp(low, words[i]) == 0) return false;
    return true;
}

static int emit_string(struct dbuf *b, const char *s)
{
    if (plain_safe(s)) return dbuf_append(b, s, strlen(s));
    /* A JSON string is a YAML double-quoted scalar with the same meaning. */
    cJSON *tmp = cJSON_CreateString(s);
    char *q = tmp ? cJSON_PrintUnformatted(tmp) : NULL;
    int rc = q ? dbuf_append(b, q, strlen(q)) : JP_ENOMEM;
    cJSON_free(q);
    cJSON_Delete(tmp);
    return rc;
}

int yamljson_emit_scalar(struct dbuf *b, const cJSON *v)
{
    if (cJSON_IsString(v)) return emit_string(b, v->valuestring ? v->valuestring : "");
    if (cJSON_IsBool(v)) return dbuf_printf(b, "%s", cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == util_floor(d) && fabs(d) <= (double)JSON_INT_MAX) return dbuf_printf(b, "%.0f", d);
        return dbuf_printf(b, "%.17g", d);
    }
    return dbuf_printf(b, "null");
}

static bool is_empty_collection(const cJSON *v)
{
    return (cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child;
}

static int emit_node(struct dbuf *b, const cJSON *v, int indent, int depth);

/* The value after "key:" or "- ": a scalar or empty collection on the same line, a mapping or
 * sequence on the following lines. */
static int emit_value(struct dbuf *b, const cJSON *v, int indent, int depth)
{
    if (is_empty_collection(v)) return dbuf_printf(b, " %s\n", cJSON_IsObject(v) ? "{}" : "[]");
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) {
        int rc = dbuf_append(b, " ", 1);
        if (!rc) rc = yamljson_emit_scalar(b, v);
        return rc ? rc : dbuf_append(b, "\n", 1);
    }
    int rc = dbuf_append(b, "\n", 1);
    return rc ? rc : emit_node(b, v, indent, depth + 1);
}

static int emit_node(struct dbuf *b, const cJSON *v, int indent, int depth)
{
    int rc = 0;
    if (depth > YAMLJSON_MAX_DEPTH) return JP_ETOOBIG;
    if (cJSON_IsObject(v)) {
        for (const cJSON *e = v->child; e && !rc; e = e->next) {
            rc = dbuf_printf(b, "%*s", indent, "");
            if (!rc) rc = emit_string(b, e->string ? e->string : "");
            if (!rc) rc = dbuf_append(b, ":", 1);
            if (!rc) rc = emit_value(b, e, indent + 2, depth);
        }
    } else if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e && !rc; e = e->next) {
            rc = dbuf_printf(b, "%*s-", indent, "");
            if (rc) break;
            if (cJSON_IsObject(e) && e->child) {
                /* "- key: value" with the mapping's other keys under the first. */
                size_t at = b->len;
                rc = emit_node(b, e, indent + 2, depth + 1);
                if (!rc) {
                    size_t drop = (size_t)indent + 1;
                    memmove(b->data + at, b->data + at + drop, b->len - at - drop + 1);
                    b->len -= drop;
                }
            } else {
                rc = emit_value(b, e, indent + 2, depth);
            }
        }
    } else {
        rc = dbuf_printf(b, "%*s", indent, "");
        if (!rc) rc = yamljson_emit_scalar(b, v);
        if (!rc) rc = dbuf_append(b, "\n", 1);
    }
    return rc;
}

int yamljson_emit(struct dbuf *b, const cJSON *v, int indent)
{
    return emit_node(b, v, indent < 0 ? 0 : indent, 0);
}
