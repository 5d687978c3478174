/* config.c: load the YAML configuration into struct cfg and validate it, one error line with
 * file:line:col and key path for anything wrong. */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config_limits.h"
#include "err.h"
#include "util.h"
#include "yamljson.h"

#define CFG_FILE_MAX ((size_t)1 << 20)
/* What one file may expand to through aliases, over all its pools: strings read and template
 * text (yamljson's budget). 16 times the largest file: no honest config comes near it. */
#define CFG_EXPANDED_MAX (16 * CFG_FILE_MAX)
#define CFG_NODES_MAX 200000      /* template nodes over all pools */
#define SECRET_FILE_MAX ((size_t)64 << 10)
#define KEYPATH_MAX 320
#define ARGV_MAX 256
#define ENV_MAX 256
#define MERGE_DEPTH_MAX 8
#define DURATION_MAX_MS CFG_DURATION_MAX_MS
#define LIM(id) CFG_LIM_MIN(id), CFG_LIM_MAX(id)

const struct cfg_limit cfg_limits[CFG_LIM_COUNT] = {
#define CFG_LIMIT_ROW(id, key, kind, min, max) [CFG_LIM_##id] = {key, min, max},
    CFG_LIMITS(CFG_LIMIT_ROW)
#undef CFG_LIMIT_ROW
};

/* Loader state: the document being read and where the first error goes. */
struct ld {
    const char *name;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
    struct yamljson_budget budget; /* what the file has expanded to so far */
    bool jobpool;   /* a JobPool: errors name "spec.KEY", without a file position */
};

/* ---- error lines ---------------------------------------------------------------------------- */

/* Keep the message one line, whatever a key or value held. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

static int vfail_at(struct ld *l, int line, int col, const char *path, const char *fmt,
                    va_list ap)
{
    if (l->err && l->errlen && l->jobpool) {
        /* The pool is a JobPool's spec, so "pools[0].minActive" is "spec.minActive" there. */
        const char *rest = path && !strncmp(path, "pools[0]", 8) ? path + 8 : NULL;
        int n = !rest ? snprintf(l->err, l->errlen, "%s: ", path && *path ? path : "spec")
                : !strcmp(rest, ".name") ? snprintf(l->err, l->errlen, "metadata.name: ")
                : snprintf(l->err, l->errlen, "spec%s: ", rest);
        if (n >= 0 && (size_t)n < l->errlen) vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
        one_line(l->err);
    } else if (l->err && l->errlen) {
        int n = snprintf(l->err, l->errlen, "%s:%d:%d: %s: ", l->name, line, col,
                         path && *path ? path : "(root)");
        if (n >= 0 && (size_t)n < l->errlen) vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
        one_line(l->err);
    }
    return JP_ECONFIG;
}

static int fail_at(struct ld *l, int line, int col, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail_at(struct ld *l, int line, int col, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_at(l, line, col, path, fmt, ap);
    va_end(ap);
    return rc;
}

static int fail(struct ld *l, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct ld *l, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_at(l, n ? (int)n->start_mark.line + 1 : 1,
                      n ? (int)n->start_mark.column + 1 : 1, path, fmt, ap);
    va_end(ap);
    return rc;
}

/* Append src to buf (holding used bytes) as far as it fits; a cut path still reads well. */
static size_t cat(char *buf, size_t len, size_t used, const char *src)
{
    size_t n = strlen(src);
    if (used + 1 >= len) return used;
    if (n > len - used - 1) n = len - used - 1;
    memcpy(buf + used, src, n);
    buf[used + n] = '\0';
    return used + n;
}

static const char *pjoin(char *buf, size_t len, const char *base, const char *key)
{
    size_t used = 0;
    if (!len) return buf;
    buf[0] = '\0';
    used = cat(buf, len, used, base);
    if (*base) used = cat(buf, len, used, ".");
    cat(buf, len, used, key);
    return buf;
}

static const char *pindex(char *buf, size_t len, const char *base, size_t i)
{
    char ix[32];
    int n = snprintf(ix, sizeof ix, "[%zu]", i);
    if (!len || n < 0) return buf;
    buf[0] = '\0';
    cat(buf, len, cat(buf, len, 0, base), ix);
    return buf;
}

/* ---- scalars -------------------------------------------------------------------------------- */

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool is_null(const yaml_node_t *n)
{
    if (!is_plain(n)) return false;
    const char *s = sval(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* How a node reads in a message: "'ten'", "a mapping", "null". */
static const char *show(const yaml_node_t *n, char *buf, size_t len)
{
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE) return "a sequence";
    if (is_null(n)) return "null";
    size_t sl = n->data.scalar.length;
    snprintf(buf, len, "'%.40s%s'", sval(n), sl > 40 ? "..." : "");
    return buf;
}

static int want(struct ld *l, const yaml_node_t *n, const char *path, const char *what)
{
    char b[64];
    return fail(l, n, path, "expected %s, got %s", what, show(n, b, sizeof b));
}

/* A scalar that is not null and holds no NUL byte. */
static int get_text(struct ld *l, const yaml_node_t *n, const char *path, const char *what,
                    const char **out)
{
    if (n->type != YAML_SCALAR_NODE || is_null(n)) return want(l, n, path, what);
    if (memchr(sval(n), '\0', n->data.scalar.length))
        return fail(l, n, path, "contains a NUL character");
    /* Every string read may be copied: an alias used many times counts each time. */
    if ((l->budget.bytes += n->data.scalar.length) > l->budget.max_bytes)
        return fail(l, n, path, "the file expands to more than %zu bytes of text in all (too "
                    "many aliases?)", l->budget.max_bytes);
    *out = sval(n);
    return 0;
}

/* Replace *out (which may hold a default) with a copy of the scalar. */
static int get_str(struct ld *l, const yaml_node_t *n, const char *path, bool allow_empty,
                   char **out)
{
    const char *s;
    int rc = get_text(l, n, path, "a string", &s);
    if (rc) return rc;
    if (!allow_empty && !*s) return fail(l, n, path, "must not be empty");
    char *d = util_strdup(s);
    if (!d) return JP_ENOMEM;
    free(*out);
    *out = d;
    return 0;
}

static int get_int(struct ld *l, const yaml_node_t *n, const char *path, int64_t min,
                   int64_t max, int64_t *out)
{
    char b[64];
    if (n->type != YAML_SCALAR_NODE || is_null(n)) return want(l, n, path, "an integer");
    if (!is_plain(n))
        return fail(l, n, path, "expected an integer, got the quoted string %s (remove the quotes)",
                    show(n, b, sizeof b));
    int64_t v;
    int rc = util_parse_int64(sval(n), INT64_MIN, INT64_MAX, &v);
    if (rc == JP_ERANGE) return fail(l, n, path, "integer out of range, got %s", show(n, b, sizeof b));
    if (rc) return want(l, n, path, "an integer");
    if (v < min) return fail(l, n, path, "must be >= %" PRId64 ", got %" PRId64, min, v);
    if (v > max) return fail(l, n, path, "must be <= %" PRId64 ", got %" PRId64, max, v);
    *out = v;
    return 0;
}

static int get_int32(struct ld *l, const yaml_node_t *n, const char *path, int64_t min,
                     int64_t max, int *out)
{
    int64_t v;
    int rc = get_int(l, n, path, min, max, &v);
    if (!rc) *out = (int)v;
    return rc;
}

static int get_duration(struct ld *l, const yaml_node_t *n, const char *path, int64_t min_ms,
                        int64_t *out)
{
    char b[64];
    const char *s;
    int rc = get_text(l, n, path, "a duration such as 500ms, 2s, 5m or 1h", &s);
    if (rc) return rc;
    int64_t v;
    rc = util_parse_duration(s, &v);
    if (rc == JP_EINVAL && util_parse_int64(s, INT64_MIN, INT64_MAX, &v) == 0)
        return fail(l, n, path, "a duration needs a unit, such as %ss or %sms; got %s", s, s,
                    show(n, b, sizeof b));
    if (rc == JP_EINVAL)
        return fail(l, n, path, "expected a duration such as 500ms, 2s, 5m or 1h, got %s",
                    show(n, b, sizeof b));
    if (rc || v > DURATION_MAX_MS)
        return fail(l, n, path, "duration out of range (at most 8760h), got %s",
                    show(n, b, sizeof b));
    if (v < min_ms) {
        char m[32];
        util_format_duration(min_ms, m, sizeof m);
        return fail(l, n, path, "must be at least %s, got %s", m, s);
    }
    *out = v;
    return 0;
}

static int get_bool(struct ld *l, const yaml_node_t *n, const char *path, bool *out)
{
    if (is_plain(n)) {
        const char *s = sval(n);
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
            *out = true;
            return 0;
        }
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
            *out = false;
            return 0;
        }
    }
    return want(l, n, path, "true or false");
}

static int get_enum(struct ld *l, const yaml_node_t *n, const char *path,
                    const char *const *names, int *out)
{
    char b[64], list[128] = "";
    const char *s = NULL;
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        s = sval(n);
        for (int i = 0; names[i]; i++)
            if (!strcmp(s, names[i])) {
                *out = i;
                return 0;
            }
    }
    size_t used = 0;
    for (int i = 0; names[i]; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
        if (w < 0 || (size_t)w >= sizeof list - used) break;
        used += (size_t)w;
    }
    return fail(l, n, path, "must be one of %s; got %s", list, show(n, b, sizeof b));
}

/* lowercase letters, digits and '-', starting and ending with a letter or digit. */
static bool dns_label(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && !(ch == '-' && i > 0 && i + 1 < n)) return false;
    }
    return true;
}

/* A DNS-1123 subdomain (the name of a Secret): dot-separated labels, at most 253 in all. */
static bool dns_subdomain(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 253) return false;
    for (size_t i = 0; i < n;) {
        size_t j = strcspn(s + i, ".");
        char lab[254];
        memcpy(lab, s + i, j);
        lab[j] = '\0';
        if (!dns_label(lab, 63)) return false;
        i += j;
        if (s[i] == '.' && !s[++i]) return false;
    }
    return true;
}

/* A key of a Secret's data: letters, digits, '-', '_' and '.', at most 253. */
static bool secret_key(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 253 || !strcmp(s, ".") || !strcmp(s, "..")) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '_' || ch == '.';
        if (!ok) return false;
    }
    return true;
}

/* ---- mappings: known keys, unknown-key hints, merge keys ------------------------------------ */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return (size_t)-1;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* a and b equal once case, '_' and '-' are ignored ("max_active" ~ "maxActive"). */
static bool loose_equal(const char *a, const char *b)
{
    for (;;) {
        while (*a == '_' || *a == '-') a++;
        while (*b == '_' || *b == '-') b++;
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        char cb = (*b >= 'A' && *b <= 'Z') ? (char)(*b + 32) : *b;
        if (ca != cb) return false;
        if (!ca) return true;
        a++;
        b++;
    }
}

/* The closest valid key to an unknown one, or NULL. KEDA ScaledJob names map to ours. */
static const char *suggest(const char *key, const char *const *keys, size_t nkeys)
{
    static const char *const keda[][2] = {
        {"pollingInterval", "pollInterval"},
        {"maxReplicaCount", "maxActive"},
        {"minReplicaCount", "minActive"},
        {"successfulJobsHistoryLimit", "successfulHistory"},
        {"failedJobsHistoryLimit", "failedHistory"},
        {"jobTargetRef", "jobTemplate"},
        {"queueName", "queue"},
        {"host", "managementUrl"},
        {"vhostName", "vhost"},
    };
    for (size_t i = 0; i < sizeof keda / sizeof keda[0]; i++)
        if (!strcmp(key, keda[i][0]))
            for (size_t j = 0; j < nkeys; j++)
                if (!strcmp(keys[j], keda[i][1])) return keys[j];
    for (size_t j = 0; j < nkeys; j++)
        if (loose_equal(key, keys[j])) return keys[j];
    const char *best = NULL;
    size_t bestd = 3;   /* at most two edits, and one per three characters */
    size_t klen = strlen(key);
    for (size_t j = 0; j < nkeys; j++) {
        size_t d = edit_distance(key, keys[j]);
        if (d < bestd && d * 3 <= klen) {   /* "foo" is no typo of "log" */
            best = keys[j];
            bestd = d;
        }
    }
    return best;
}

static int unknown_key(struct ld *l, const yaml_node_t *k, const char *path, const char *key,
                       const char *const *keys, size_t nkeys)
{
    char p[KEYPATH_MAX];
    pjoin(p, sizeof p, path, key);
    const char *s = suggest(key, keys, nkeys);
    if (s) return fail(l, k, p, "unknown key; did you mean '%s'?", s);
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < nkeys; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", keys[i]);
        if (w < 0 || (size_t)w >= sizeof list - used) break;
        used += (size_t)w;
    }
    return fail(l, k, p, "unknown key; expected one of: %s", list);
}

static bool is_merge_key(const yaml_node_t *k)
{
    return is_plain(k) && !strcmp(sval(k), "<<");
}

/* Sort map's pairs into vals[]/knodes[] by keys[]. A key the mapping sets twice is an error; keys
 * from a merge ("<<: *defaults") fill only what is still unset. */
static int collect_pairs(struct ld *l, yaml_node_t *map, const char *path,
                         const char *const *keys, size_t nkeys, yaml_node_t **vals,
                         yaml_node_t **knodes, bool merged, int depth)
{
    char b[64];
    yaml_node_t *merge = NULL;
    if (depth > MERGE_DEPTH_MAX)
        return fail(l, map, path, "merge keys nested more than %d deep", MERGE_DEPTH_MAX);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(l->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(l->doc, p->value);
        if (!k || !v) return fail(l, map, path, "malformed document");
        if (k->type != YAML_SCALAR_NODE)
            return fail(l, k, path, "keys must be strings, got %s", show(k, b, sizeof b));
        if (is_merge_key(k)) {
            if (merge) return fail(l, k, path, "duplicate merge key '<<'");
            merge = v;
            continue;
        }
        const char *key = sval(k);
        if (memchr(key, '\0', k->data.scalar.length))
            return fail(l, k, path, "key contains a NUL character");
        /* "x-" keys are ignored, as in compose files: a place to hold anchors. */
        if (!strncmp(key, "x-", 2)) continue;
        size_t i;
        for (i = 0; i < nkeys && strcmp(keys[i], key); i++) {}
        if (i == nkeys) return unknown_key(l, k, path, key, keys, nkeys);
        if (vals[i]) {
            if (merged) continue;
            char kp[KEYPATH_MAX];
            return fail(l, k, pjoin(kp, sizeof kp, path, key), "duplicate key (first at line %d)",
                        (int)knodes[i]->start_mark.line + 1);
        }
        vals[i] = v;
        knodes[i] = k;
    }
    if (!merge) return 0;
    if (merge->type == YAML_MAPPING_NODE)
        return collect_pairs(l, merge, path, keys, nkeys, vals, knodes, true, depth + 1);
    if (merge->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = merge->data.sequence.items.start;
             it < merge->data.sequence.items.top; it++) {
            yaml_node_t *m = yaml_document_get_node(l->doc, *it);
            if (!m || m->type != YAML_MAPPING_NODE) break;
            int rc = collect_pairs(l, m, path, keys, nkeys, vals, knodes, true, depth + 1);
            if (rc) return rc;
        }
        if (merge->data.sequence.items.top == merge->data.sequence.items.start) return 0;
        bool all = true;
        for (yaml_node_item_t *it = merge->data.sequence.items.start;
             it < merge->data.sequence.items.top; it++) {
            yaml_node_t *m = yaml_document_get_node(l->doc, *it);
            if (!m || m->type != YAML_MAPPING_NODE) all = false;
        }
        if (all) return 0;
    }
    return fail(l, merge, path, "a merge key '<<' takes a mapping or a sequence of mappings");
}

static int collect(struct ld *l, yaml_node_t *map, const char *path, const char *const *keys,
                   size_t nkeys, yaml_node_t **vals, yaml_node_t **knodes)
{
    for (size_t i = 0; i < nkeys; i++) vals[i] = knodes[i] = NULL;
    if (map->type != YAML_MAPPING_NODE) return want(l, map, path, "a mapping");
    return collect_pairs(l, map, path, keys, nkeys, vals, knodes, false, 0);
}

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- sections ------------------------------------------------------------------------------- */

/* [A-Za-z_][A-Za-z0-9_]*: what a shell can name, so no variable is silently unusable. */
static bool env_name_ok(const char *s)
{
    if (!*s) return false;
    for (const char *c = s; *c; c++) {
        bool ok = *c == '_' || (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                  (c != s && *c >= '0' && *c <= '9');
        if (!ok) return false;
    }
    return true;
}

static int parse_secret(struct ld *l, yaml_node_t *n, const char *path, struct cfg_secret *s)
{
    static const char *const keys[] = {"env", "file"};
    yaml_node_t *v[2], *k[2];
    char p[KEYPATH_MAX];
    if (n->type == YAML_SCALAR_NODE && !is_null(n))
        return fail(l, n, path, "credentials must not be written inline; use {env: NAME} or "
                    "{file: PATH}");
    if (n->type != YAML_MAPPING_NODE) return want(l, n, path, "{env: NAME} or {file: PATH}");
    int rc = collect(l, n, path, keys, 2, v, k);
    if (rc) return rc;
    if (v[0] && v[1])
        return fail(l, k[1], pjoin(p, sizeof p, path, "file"),
                    "'env' and 'file' are mutually exclusive; set one");
    if (!v[0] && !v[1]) return fail(l, n, path, "one of 'env' or 'file' is required");
    if (v[0]) {
        if ((rc = get_str(l, v[0], pjoin(p, sizeof p, path, "env"), false, &s->env))) return rc;
        if (!env_name_ok(s->env))
            return fail(l, v[0], p, "'%.64s' is not a valid environment variable name", s->env);
        return 0;
    }
    return get_str(l, v[1], pjoin(p, sizeof p, path, "file"), false, &s->file);
}

/* A URL with one of the schemes, and no "user:pass@" (credentials are never inline). */
static bool starts_with(const char *s, const char *prefix)
{
    return s && !strncmp(s, prefix, strlen(prefix));
}

static int check_url(struct ld *l, const yaml_node_t *n, const char *path, const char *url,
                     const char *s1, const char *s2)
{
    char b[64];
    const char *rest = NULL;
    if (!strncmp(url, s1, strlen(s1))) rest = url + strlen(s1);
    else if (!strncmp(url, s2, strlen(s2))) rest = url + strlen(s2);
    if (!rest || !*rest)
        return fail(l, n, path, "expected a URL starting with %s or %s, got %s", s1, s2,
                    strchr(url, '@') ? "a URL with credentials" : show(n, b, sizeof b));
    size_t hostlen = strcspn(rest, "/?#");
    if (memchr(rest, '@', hostlen))
        return fail(l, n, path, "must not contain credentials; use rabbitmq.username and "
                    "rabbitmq.password");
    return 0;
}

/* One string field that must pass ok(); what names the expected form in the error. */
static int get_checked(struct ld *l, yaml_node_t *n, const char *path, bool (*ok)(const char *),
                       const char *what, char **out)
{
    char b[64];
    int rc = get_str(l, n, path, false, out);
    if (rc) return rc;
    if (!ok(*out)) return fail(l, n, path, "must be %s, got %s", what, show(n, b, sizeof b));
    return 0;
}

#define SECRET_NAME_FORM "a Secret name (lowercase letters, digits, '-' and '.', at most 253)"
#define SECRET_KEY_FORM "a Secret key (letters, digits, '-', '_' and '.', at most 253)"

/* A Secret named at path with two keys of it: {name, keys[1], keys[2]}, the keys defaulting to
 * defaults[0] and defaults[1] and never the same. rabbitmq.workerSecret and certSecret. */
static int parse_secret_pair(struct ld *l, yaml_node_t *n, const char *path,
                             const char *const keys[3], const char *const defaults[2],
                             char **name, char **key1, char **key2)
{
    enum { NAME, K1, K2, N };
    yaml_node_t *v[N], *k[N];
    char p[KEYPATH_MAX];
    int rc = collect(l, n, path, keys, N, v, k);
    if (rc) return rc;
    if (!v[NAME]) return fail(l, n, pjoin(p, sizeof p, path, "name"), "required key is missing");
    if ((rc = get_checked(l, v[NAME], pjoin(p, sizeof p, path, "name"), dns_subdomain,
                          SECRET_NAME_FORM, name)))
        return rc;
    if (v[K1] && (rc = get_checked(l, v[K1], pjoin(p, sizeof p, path, keys[K1]), secret_key,
                                   SECRET_KEY_FORM, key1)))
        return rc;
    if (v[K2] && (rc = get_checked(l, v[K2], pjoin(p, sizeof p, path, keys[K2]), secret_key,
                                   SECRET_KEY_FORM, key2)))
        return rc;
    if (!*key1 && !(*key1 = util_strdup(defaults[0]))) return JP_ENOMEM;
    if (!*key2 && !(*key2 = util_strdup(defaults[1]))) return JP_ENOMEM;
    if (!strcmp(*key1, *key2))
        return fail(l, v[K2] ? v[K2] : n, pjoin(p, sizeof p, path, keys[K2]),
                    "must differ from %s ('%.64s')", keys[K1], *key1);
    return 0;
}

/* rabbitmq.workerSecret: {name, usernameKey, passwordKey}. */
static int parse_worker_secret(struct ld *l, yaml_node_t *n, struct cfg_worker_secret *ws)
{
    static const char *const keys[] = {"name", "usernameKey", "passwordKey"};
    static const char *const defaults[] = {"username", "password"};
    return parse_secret_pair(l, n, "rabbitmq.workerSecret", keys, defaults, &ws->name,
                             &ws->username_key, &ws->password_key);
}

/* rabbitmq.caSecret: {name, key}. */
static int parse_ca_secret(struct ld *l, yaml_node_t *n, struct cfg_ca_secret *cs)
{
    static const char *const keys[] = {"name", "key"};
    static const char *const path = "rabbitmq.caSecret";
    yaml_node_t *v[2], *k[2];
    char p[KEYPATH_MAX];
    int rc = collect(l, n, path, keys, 2, v, k);
    if (rc) return rc;
    if (!v[0]) return fail(l, n, pjoin(p, sizeof p, path, "name"), "required key is missing");
    if ((rc = get_checked(l, v[0], pjoin(p, sizeof p, path, "name"), dns_subdomain,
                          SECRET_NAME_FORM, &cs->name)))
        return rc;
    if (v[1] && (rc = get_checked(l, v[1], pjoin(p, sizeof p, path, "key"), secret_key,
                                  SECRET_KEY_FORM, &cs->key)))
        return rc;
    if (!cs->key && !(cs->key = util_strdup("ca.crt"))) return JP_ENOMEM;
    return 0;
}

/* rabbitmq.certSecret: {name, certKey, keyKey}. */
static int parse_cert_secret(struct ld *l, yaml_node_t *n, struct cfg_cert_secret *cs)
{
    static const char *const keys[] = {"name", "certKey", "keyKey"};
    static const char *const defaults[] = {"tls.crt", "tls.key"};
    return parse_secret_pair(l, n, "rabbitmq.certSecret", keys, defaults, &cs->name,
                             &cs->cert_key, &cs->key_key);
}

static int parse_rabbitmq(struct ld *l, yaml_node_t *n, struct cfg_rabbitmq *r)
{
    enum { MGMT, AMQP, VHOST, USER, PASS, CA, TIMEOUT, CTIMEOUT, MAXBODY, DEPTH, WSECRET, CASECRET,
           CONSUMER, MLAG, CERT, KEY, CERTSECRET, N };
    static const char *const keys[N] = {"managementUrl", "amqpUrl", "vhost", "username",
                                        "password", "caFile", "timeout", "connectTimeout",
                                        "maxBodyBytes", "depthSource", "workerSecret",
                                        "caSecret", "consumerTimeout", "managementLag",
                                        "certFile", "keyFile", "certSecret"};
    static const char *const depths[] = {"management", "amqp", NULL};
    yaml_node_t *v[N], *k[N];
    char p[KEYPATH_MAX];
    int rc = collect(l, n, "rabbitmq", keys, N, v, k);
    if (rc) return rc;
#define RP(i) pjoin(p, sizeof p, "rabbitmq", keys[i])
    if (v[MGMT]) {
        if ((rc = get_str(l, v[MGMT], RP(MGMT), false, &r->management_url))) return rc;
        if ((rc = check_url(l, v[MGMT], p, r->management_url, "http://", "https://"))) return rc;
    }
    if (v[AMQP]) {
        if ((rc = get_str(l, v[AMQP], RP(AMQP), false, &r->amqp_url))) return rc;
        if ((rc = check_url(l, v[AMQP], p, r->amqp_url, "amqp://", "amqps://"))) return rc;
    }
    if (v[VHOST] && (rc = get_str(l, v[VHOST], RP(VHOST), false, &r->vhost))) return rc;
    if (v[USER] && (rc = parse_secret(l, v[USER], RP(USER), &r->username))) return rc;
    if (v[PASS] && (rc = parse_secret(l, v[PASS], RP(PASS), &r->password))) return rc;
    if (v[USER] && !v[PASS])
        return fail(l, n, RP(PASS), "required when 'username' is set");
    if (v[PASS] && !v[USER])
        return fail(l, n, RP(USER), "required when 'password' is set");
    if (v[CA] && (rc = get_str(l, v[CA], RP(CA), false, &r->ca_file))) return rc;
    if (v[CERT] && (rc = get_str(l, v[CERT], RP(CERT), false, &r->cert_file))) return rc;
    if (v[KEY] && (rc = get_str(l, v[KEY], RP(KEY), false, &r->key_file))) return rc;
    if (v[CERT] && !v[KEY]) return fail(l, n, RP(KEY), "required when 'certFile' is set");
    if (v[KEY] && !v[CERT]) return fail(l, n, RP(CERT), "required when 'keyFile' is set");
    if (v[TIMEOUT] && (rc = get_duration(l, v[TIMEOUT], RP(TIMEOUT), CFG_LIM_MIN(RMQ_TIMEOUT), &r->timeout_ms)))
        return rc;
    if (v[CTIMEOUT] &&
        (rc = get_duration(l, v[CTIMEOUT], RP(CTIMEOUT), CFG_LIM_MIN(RMQ_CONNECT_TIMEOUT),
                          &r->connect_timeout_ms)))
        return rc;
    if (v[CONSUMER] &&
        (rc = get_duration(l, v[CONSUMER], RP(CONSUMER), CFG_LIM_MIN(RMQ_CONSUMER_TIMEOUT),
                           &r->consumer_timeout_ms)))
        return rc;
    if (v[MLAG] && (rc = get_duration(l, v[MLAG], RP(MLAG), CFG_LIM_MIN(RMQ_MANAGEMENT_LAG),
                                      &r->management_lag_ms)))
        return rc;
    if (v[MAXBODY]) {
        int64_t mb;
        if ((rc = get_int(l, v[MAXBODY], RP(MAXBODY), 4096, (int64_t)1 << 30, &mb))) return rc;
        r->max_body = (size_t)mb;
    }
    if (v[DEPTH]) {
        int d;
        if ((rc = get_enum(l, v[DEPTH], RP(DEPTH), depths, &d))) return rc;
        r->depth_source = (enum cfg_depth_source)d;
    }
    if (v[WSECRET] && !is_null(v[WSECRET]) &&
        (rc = parse_worker_secret(l, v[WSECRET], &r->worker_secret)))
        return rc;
    if (v[CASECRET] && !is_null(v[CASECRET]) &&
        (rc = parse_ca_secret(l, v[CASECRET], &r->ca_secret)))
        return rc;
    if (v[CERTSECRET] && !is_null(v[CERTSECRET]) &&
        (rc = parse_cert_secret(l, v[CERTSECRET], &r->cert_secret)))
        return rc;
    /* A client certificate is only ever presented in a TLS handshake: one set for a broker
     * reached without TLS is a mistake the user should hear about now, not as a refused login. */
    if (v[CERT] && !starts_with(r->amqp_url, "amqps://") &&
        !starts_with(r->management_url, "https://"))
        return fail(l, v[CERT], RP(CERT), "a client certificate needs an amqps:// amqpUrl or an "
                    "https:// managementUrl");
    if (r->cert_secret.name && !r->worker_secret.name)
        return fail(l, v[CERTSECRET], RP(CERTSECRET), "needs rabbitmq.workerSecret: Jobs get "
                    "their connection from the controller only then");
    if (r->cert_secret.name && !starts_with(r->amqp_url, "amqps://"))
        return fail(l, v[CERTSECRET], RP(CERTSECRET), "workers present it on amqpUrl, which must "
                    "then be amqps://");
#undef RP
    return 0;
}

/* kubernetes.watchNamespaces: distinct DNS-1123 labels; an empty list means every namespace. */
static int parse_watch_namespaces(struct ld *l, yaml_node_t *seq, const char *path,
                                  struct cfg_kubernetes *kc)
{
    char p[KEYPATH_MAX], b[64];
    if (seq->type != YAML_SEQUENCE_NODE) return want(l, seq, path, "a sequence of namespaces");
    size_t cnt = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (cnt > 255) return fail(l, seq, path, "at most 255 namespaces, got %zu", cnt);
    if (!cnt) return 0;
    if (!(kc->watch_namespaces = calloc(cnt, sizeof *kc->watch_namespaces))) return JP_ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *a = yaml_document_get_node(l->doc, seq->data.sequence.items.start[i]);
        if (!a) return fail(l, seq, path, "malformed document");
        int rc = get_str(l, a, pindex(p, sizeof p, path, i), false, &kc->watch_namespaces[i]);
        kc->nwatch_namespaces = i + 1;
        if (rc) return rc;
        if (!dns_label(kc->watch_namespaces[i], 63))
            return fail(l, a, p, "must be a DNS-1123 label (lowercase letters, digits and '-', "
                        "at most 63), got %s", show(a, b, sizeof b));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(kc->watch_namespaces[j], kc->watch_namespaces[i]))
                return fail(l, a, p, "'%s' is listed twice", kc->watch_namespaces[i]);
    }
    return 0;
}

static int parse_kubernetes(struct ld *l, yaml_node_t *n, struct cfg_kubernetes *kc)
{
    enum { INCLUSTER, KUBECONFIG, CONTEXT, NS, QPS, CONC, INSTANCE, JOBPOOLS, WATCHNS, N };
    static const char *const keys[N] = {"inCluster", "kubeconfig", "context", "namespace", "qps",
                                        "concurrency", "instance", "jobPools",
                                        "watchNamespaces"};
    yaml_node_t *v[N], *k[N];
    char p[KEYPATH_MAX], b[64];
    int rc = collect(l, n, "kubernetes", keys, N, v, k);
    if (rc) return rc;
#define KP(i) pjoin(p, sizeof p, "kubernetes", keys[i])
    bool in_cluster = true;
    if (v[INCLUSTER] && (rc = get_bool(l, v[INCLUSTER], KP(INCLUSTER), &in_cluster))) return rc;
    if (v[KUBECONFIG]) {
        if ((rc = get_str(l, v[KUBECONFIG], KP(KUBECONFIG), false, &kc->kubeconfig))) return rc;
        if (v[INCLUSTER] && in_cluster)
            return fail(l, k[KUBECONFIG], p, "'kubeconfig' and 'inCluster: true' are mutually "
                        "exclusive");
        in_cluster = false;
    }
    kc->in_cluster = in_cluster;
    if (v[CONTEXT]) {
        if ((rc = get_str(l, v[CONTEXT], KP(CONTEXT), false, &kc->context))) return rc;
        if (!kc->kubeconfig) return fail(l, k[CONTEXT], p, "needs 'kubeconfig'");
    }
    if (v[NS]) {
        if ((rc = get_str(l, v[NS], KP(NS), false, &kc->namespace_))) return rc;
        if (!dns_label(kc->namespace_, 63))
            return fail(l, v[NS], p, "must be a DNS-1123 label (lowercase letters, digits and "
                        "'-', at most 63), got %s", show(v[NS], b, sizeof b));
    }
    if (v[QPS]) {
        const yaml_node_t *q = v[QPS];
        char *end = NULL;
        double d = 0;
        if (is_plain(q) && !is_null(q)) d = strtod(sval(q), &end);
        if (!end || end == sval(q) || *end || !isfinite(d))
            return want(l, q, KP(QPS), "a number");
        if (d <= 0 || d > 100000)
            return fail(l, q, KP(QPS), "must be > 0 and <= 100000, got %s", sval(q));
        kc->qps = d;
    }
    if (v[CONC] && (rc = get_int32(l, v[CONC], KP(CONC), LIM(KUBE_CONCURRENCY), &kc->concurrency)))
        return rc;
    if (v[INSTANCE]) {
        /* A label value (<= 63); <= 56 so that the default Lease "<instance>-leader" fits too. */
        if ((rc = get_str(l, v[INSTANCE], KP(INSTANCE), false, &kc->instance))) return rc;
        if (!dns_label(kc->instance, (size_t)CFG_LIM_MAX(INSTANCE)))
            return fail(l, v[INSTANCE], p, "must be a DNS-1123 label (lowercase letters, digits "
                        "and '-', at most %d), got %s", (int)CFG_LIM_MAX(INSTANCE),
                        show(v[INSTANCE], b, sizeof b));
    }
    if (v[JOBPOOLS] && (rc = get_bool(l, v[JOBPOOLS], KP(JOBPOOLS), &kc->jobpools))) return rc;
    if (v[WATCHNS] && !is_null(v[WATCHNS]) &&
        (rc = parse_watch_namespaces(l, v[WATCHNS], KP(WATCHNS), kc)))
        return rc;
#undef KP
    return 0;
}

static int parse_leader(struct ld *l, yaml_node_t *n, struct cfg_leader *le)
{
    enum { ENABLED, NAME, LEASE, RENEW, RETRY, N };
    static const char *const keys[N] = {"enabled", "leaseName", "leaseDuration", "renewDeadline",
                                        "retryPeriod"};
    yaml_node_t *v[N], *k[N];
    char p[KEYPATH_MAX], b[64];
    int rc = collect(l, n, "leaderElection", keys, N, v, k);
    if (rc) return rc;
#define LP(i) pjoin(p, sizeof p, "leaderElection", keys[i])
    if (v[ENABLED] && (rc = get_bool(l, v[ENABLED], LP(ENABLED), &le->enabled))) return rc;
    if (v[NAME]) {
        if ((rc = get_str(l, v[NAME], LP(NAME), false, &le->lease_name))) return rc;
        if (!dns_label(le->lease_name, 63))
            return fail(l, v[NAME], p, "must be a DNS-1123 label (lowercase letters, digits and "
                        "'-', at most 63), got %s", show(v[NAME], b, sizeof b));
    }
    if (v[LEASE] && (rc = get_duration(l, v[LEASE], LP(LEASE), CFG_LIM_MIN(LEASE_DURATION),
                                     &le->lease_duration_ms)))
        return rc;
    if (v[RENEW] && (rc = get_duration(l, v[RENEW], LP(RENEW), CFG_LIM_MIN(RENEW_DEADLINE),
                                     &le->renew_deadline_ms)))
        return rc;
    if (v[RETRY] && (rc = get_duration(l, v[RETRY], LP(RETRY), CFG_LIM_MIN(RETRY_PERIOD),
                                     &le->retry_period_ms)))
        return rc;
    char d1[32], d2[32];
    if (le->renew_deadline_ms >= le->lease_duration_ms) {
        util_format_duration(le->lease_duration_ms, d1, sizeof d1);
        util_format_duration(le->renew_deadline_ms, d2, sizeof d2);
        return fail(l, v[RENEW] ? v[RENEW] : v[LEASE] ? v[LEASE] : n, LP(RENEW),
                    "must be shorter than leaseDuration (%s), got %s", d1, d2);
    }
    if (le->retry_period_ms >= le->renew_deadline_ms) {
        util_format_duration(le->renew_deadline_ms, d1, sizeof d1);
        util_format_duration(le->retry_period_ms, d2, sizeof d2);
        return fail(l, v[RETRY] ? v[RETRY] : v[RENEW] ? v[RENEW] : n, LP(RETRY),
                    "must be shorter than renewDeadline (%s), got %s", d1, d2);
    }
#undef LP
    return 0;
}

/* Variables the local backend sets for every worker itself; worker.env may not replace them. */
static const char *const worker_env_reserved_[] = {
    "JOBPOOL_POOL", "JOBPOOL_QUEUE", "JOBPOOL_VHOST", "JOBPOOL_RESULT_FILE",
};

/* worker.env: NAME: value, where value is a string (numbers and booleans as written) or
 * {env: NAME} / {file: PATH}, read when each worker starts. */
static int parse_worker_env(struct ld *l, yaml_node_t *n, const char *path, struct cfg_pool *pl)
{
    char p[KEYPATH_MAX], b[64];
    if (n->type != YAML_MAPPING_NODE) return want(l, n, path, "a mapping of NAME: value");
    size_t cnt = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (cnt > ENV_MAX) return fail(l, n, path, "at most %d variables, got %zu", ENV_MAX, cnt);
    pl->worker_env = calloc(cnt ? cnt : 1, sizeof *pl->worker_env);
    if (!pl->worker_env) return JP_ENOMEM;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(l->doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(l->doc, pr->value);
        if (!k || !v) return fail(l, n, path, "malformed document");
        if (k->type != YAML_SCALAR_NODE || is_merge_key(k))
            return fail(l, k, path, "keys must be variable names, got %s", show(k, b, sizeof b));
        const char *name = sval(k);
        pjoin(p, sizeof p, path, name);
        if (memchr(name, '\0', k->data.scalar.length) || !env_name_ok(name))
            return fail(l, k, p, "'%.64s' is not a valid environment variable name (letters, "
                        "digits and '_', not starting with a digit)", name);
        if (!strncmp(name, "JOBPOOL_AMQP_", 13))
            return fail(l, k, p, "the broker connection is set by the controller from the "
                        "rabbitmq section");
        for (size_t i = 0; i < NKEYS(worker_env_reserved_); i++)
            if (!strcmp(name, worker_env_reserved_[i]))
                return fail(l, k, p, "%s is set by the controller", name);
        for (size_t i = 0; i < pl->worker_nenv; i++)
            if (!strcmp(pl->worker_env[i].name, name))
                return fail(l, k, p, "duplicate variable");
        struct cfg_env_var *e = &pl->worker_env[pl->worker_nenv++];
        if (!(e->name = util_strdup(name))) return JP_ENOMEM;
        int rc = v->type == YAML_MAPPING_NODE ? parse_secret(l, v, p, &e->ref)
               : v->type == YAML_SCALAR_NODE && !is_null(v) ? get_str(l, v, p, true, &e->value)
               : want(l, v, p, "a string, {env: NAME} or {file: PATH}");
        if (rc) return rc;
    }
    return 0;
}

static int parse_worker(struct ld *l, yaml_node_t *n, const char *path, struct cfg_pool *pl)
{
    static const char *const keys[] = {"command", "env"};
    yaml_node_t *v[2], *k[2];
    char p[KEYPATH_MAX], ip[KEYPATH_MAX];
    int rc = collect(l, n, path, keys, 2, v, k);
    if (rc) return rc;
    if (v[1] && (rc = parse_worker_env(l, v[1], pjoin(p, sizeof p, path, "env"), pl))) return rc;
    if (!v[0]) return fail(l, n, pjoin(p, sizeof p, path, "command"), "required key is missing");
    yaml_node_t *seq = v[0];
    pjoin(p, sizeof p, path, "command");
    if (seq->type != YAML_SEQUENCE_NODE)
        return want(l, seq, p, "a sequence such as [jobpool-worker, --, ./task.sh]");
    size_t cnt = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (!cnt) return fail(l, seq, p, "must not be empty");
    if (cnt > ARGV_MAX) return fail(l, seq, p, "at most %d arguments, got %zu", ARGV_MAX, cnt);
    pl->worker_command = calloc(cnt + 1, sizeof *pl->worker_command);
    if (!pl->worker_command) return JP_ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *a = yaml_document_get_node(l->doc, seq->data.sequence.items.start[i]);
        if (!a) return fail(l, seq, p, "malformed document");
        if ((rc = get_str(l, a, pindex(ip, sizeof ip, p, i), true, &pl->worker_command[i])))
            return rc;
        pl->worker_argc = i + 1;
    }
    if (!*pl->worker_command[0]) return fail(l, seq, pindex(ip, sizeof ip, p, 0), "must not be empty");
    return 0;
}

static int parse_template(struct ld *l, yaml_node_t *n, const char *path, struct cfg_pool *pl)
{
    char p[KEYPATH_MAX + YAMLJSON_PATH_MAX];
    if (n->type != YAML_MAPPING_NODE) return want(l, n, path, "a mapping (a batch/v1 JobSpec)");
    struct yamljson_error e;
    memset(&e, 0, sizeof e);
    struct yamljson_opts yo = {.budget = &l->budget};
    int rc = yamljson_convert(l->doc, n, &yo, &pl->job_template, &pl->template_src, &e);
    if (rc == JP_EPARSE) {
        snprintf(p, sizeof p, "%s%s%s", path, e.path[0] && e.path[0] != '[' ? "." : "", e.path);
        return fail_at(l, e.line, e.col, p, "%s", e.msg);
    }
    if (rc) return rc;
    /* A whole Job pasted in place of its spec is the likely mistake. */
    static const char *const job_keys[] = {"apiVersion", "kind", "metadata", "spec"};
    for (size_t i = 0; i < NKEYS(job_keys); i++) {
        if (!cJSON_GetObjectItemCaseSensitive(pl->job_template, job_keys[i])) continue;
        int line = 0, col = 0;
        yamljson_src_find(pl->template_src, job_keys[i], &line, &col);
        snprintf(p, sizeof p, "%s.%s", path, job_keys[i]);
        return fail_at(l, line, col, p, "jobTemplate is a JobSpec (backoffLimit, template, ...), "
                       "not a whole Job; use the content of the Job's 'spec'");
    }
    cJSON *t = cJSON_GetObjectItemCaseSensitive(pl->job_template, "template");
    if (!t) {
        snprintf(p, sizeof p, "%s.template", path);
        return fail(l, n, p, "required key is missing (the pod template)");
    }
    if (!cJSON_IsObject(t)) {
        int line = 0, col = 0;
        yamljson_src_find(pl->template_src, "template", &line, &col);
        snprintf(p, sizeof p, "%s.template", path);
        return fail_at(l, line, col, p, "expected a mapping (a pod template)");
    }
    return 0;
}

/* Canonical rendering of everything that shapes a pool's workers, hashed for annotations. */
static int pool_hash(struct cfg_pool *pl)
{
    struct dbuf b;
    int rc = 0;
    dbuf_init(&b, 0);
    const char *strs[][2] = {{"name", pl->name}, {"queue", pl->queue},
                             {"queueRegex", pl->queue_regex}, {"vhost", pl->vhost}};
    for (size_t i = 0; !rc && i < NKEYS(strs); i++)
        rc = strs[i][1] ? dbuf_printf(&b, "%s=%zu:%s\n", strs[i][0], strlen(strs[i][1]), strs[i][1])
                        : dbuf_printf(&b, "%s=~\n", strs[i][0]);
    if (!rc)
        rc = dbuf_printf(&b, "maxActive=%d\nminActive=%d\nspareWorkers=%d\nmaxStartPerTick=%d\n"
                         "messagesPerWorker=%d\nmaxAttempts=%d\npendingTimeout=%" PRId64 "\n"
                         "idleTimeout=%" PRId64 "\nsuccessfulHistory=%d\nfailedHistory=%d\n"
                         "ttlSecondsAfterFinished=%d\ntaskTimeout=%" PRId64 "\n",
                         pl->max_active, pl->min_active, pl->spare_workers,
                         pl->max_start_per_tick, pl->messages_per_worker, pl->max_attempts,
                         pl->pending_timeout_ms, pl->idle_timeout_ms, pl->successful_history,
                         pl->failed_history, pl->ttl_seconds_after_finished, pl->task_timeout_ms);
    for (size_t i = 0; !rc && i < pl->worker_argc; i++)
        rc = dbuf_printf(&b, "arg=%zu:%s\n", strlen(pl->worker_command[i]), pl->worker_command[i]);
    for (size_t i = 0; !rc && i < pl->worker_nenv; i++) {
        const struct cfg_env_var *e = &pl->worker_env[i];
        const char *kind = e->value ? "=" : e->ref.env ? "env=" : "file=";
        const char *val = e->value ? e->value : e->ref.env ? e->ref.env : e->ref.file;
        rc = dbuf_printf(&b, "env=%zu:%s%s%zu:%s\n", strlen(e->name), e->name, kind, strlen(val),
                         val);
    }
    if (!rc && pl->job_template) {
        char *js = cJSON_PrintUnformatted(pl->job_template);
        rc = js ? dbuf_printf(&b, "template=%s\n", js) : JP_ENOMEM;
        cJSON_free(js);
    }
    if (!rc)
        snprintf(pl->hash, sizeof pl->hash, "%016" PRIx64, util_fnv1a(b.data, b.len, 0));
    dbuf_free(&b);
    return rc;
}

static int parse_pool(struct ld *l, yaml_node_t *n, size_t idx, struct cfg *c)
{
    enum { NAME, QUEUE, QREGEX, VHOST, MAXACTIVE, MINACTIVE, SPARE, MAXSTART, MPW, MAXATT,
           PENDING, IDLE, SUCC, FAILED, TTL, WORKER, TEMPLATE, TASKTO, N };
    static const char *const keys[N] = {
        "name", "queue", "queueRegex", "vhost", "maxActive", "minActive", "spareWorkers",
        "maxStartPerTick", "messagesPerWorker", "maxAttempts", "pendingTimeout", "idleTimeout",
        "successfulHistory", "failedHistory", "ttlSecondsAfterFinished", "worker", "jobTemplate",
        "taskTimeout"};
    yaml_node_t *v[N], *k[N];
    char base[KEYPATH_MAX], p[KEYPATH_MAX], b[64];
    struct cfg_pool *pl = &c->pools[idx];
    pl->line = (int)n->start_mark.line + 1;
    pl->min_active = 0;
    pl->spare_workers = 0;
    pl->max_start_per_tick = 20;
    pl->messages_per_worker = 1;
    pl->max_attempts = 3;
    pl->pending_timeout_ms = 5 * 60 * 1000;
    pl->idle_timeout_ms = 30 * 1000;
    pl->successful_history = 10;
    pl->failed_history = 10;
    pl->ttl_seconds_after_finished = 600;
    pindex(base, sizeof base, "pools", idx);
    int rc = collect(l, n, base, keys, N, v, k);
    if (rc) return rc;
#define PP(i) pjoin(p, sizeof p, base, keys[i])
    if (!v[NAME]) return fail(l, n, PP(NAME), "required key is missing");
    if ((rc = get_str(l, v[NAME], PP(NAME), false, &pl->name))) return rc;
    if (strlen(pl->name) > (size_t)CFG_LIM_MAX(POOL_NAME))
        return fail(l, v[NAME], p, "must be at most %d characters (it prefixes generated Job "
                    "names), got %zu", (int)CFG_LIM_MAX(POOL_NAME), strlen(pl->name));
    if (!dns_label(pl->name, (size_t)CFG_LIM_MAX(POOL_NAME)))
        return fail(l, v[NAME], p, "must be a DNS-1123 label (lowercase letters, digits and '-', "
                    "starting and ending with a letter or digit), got %s",
                    show(v[NAME], b, sizeof b));
    for (size_t j = 0; j < idx; j++)
        if (!strcmp(c->pools[j].name, pl->name))
            return fail(l, v[NAME], p, "duplicate pool name '%s' (first at line %d)", pl->name,
                        c->pools[j].line);

    if (v[QUEUE] && v[QREGEX])
        return fail(l, k[QREGEX], PP(QREGEX), "'queue' and 'queueRegex' are mutually exclusive; "
                    "set one");
    if (!v[QUEUE] && !v[QREGEX])
        return fail(l, n, base, "one of 'queue' or 'queueRegex' is required");
    if (v[QUEUE]) {
        if ((rc = get_str(l, v[QUEUE], PP(QUEUE), false, &pl->queue))) return rc;
        if (strlen(pl->queue) > (size_t)CFG_LIM_MAX(POOL_QUEUE))
            return fail(l, v[QUEUE], p, "queue names are at most %d bytes, got %zu",
                        (int)CFG_LIM_MAX(POOL_QUEUE), strlen(pl->queue));
    } else {
        if ((rc = get_str(l, v[QREGEX], PP(QREGEX), false, &pl->queue_regex))) return rc;
        regex_t re;
        int e = regcomp(&re, pl->queue_regex, REG_EXTENDED | REG_NOSUB);
        if (e) {
            char msg[128];
            regerror(e, &re, msg, sizeof msg);
            regfree(&re);
            return fail(l, v[QREGEX], p, "invalid regular expression: %s", msg);
        }
        regfree(&re);
    }
    if (v[VHOST]) {
        if ((rc = get_str(l, v[VHOST], PP(VHOST), false, &pl->vhost))) return rc;
    } else if (!(pl->vhost = util_strdup(c->rabbitmq.vhost))) {
        return JP_ENOMEM;
    }
    if (pl->queue)
        for (size_t j = 0; j < idx; j++)
            if (c->pools[j].queue && !strcmp(c->pools[j].queue, pl->queue) &&
                !strcmp(c->pools[j].vhost, pl->vhost))
                return fail(l, v[QUEUE], PP(QUEUE), "queue '%.64s' in vhost '%.64s' is already "
                            "used by pool '%s'", pl->queue, pl->vhost, c->pools[j].name);

    if (!v[MAXACTIVE]) return fail(l, n, PP(MAXACTIVE), "required key is missing");
    if ((rc = get_int32(l, v[MAXACTIVE], PP(MAXACTIVE), LIM(MAX_ACTIVE), &pl->max_active)))
        return rc;
    if (v[MINACTIVE]) {
        if ((rc = get_int32(l, v[MINACTIVE], PP(MINACTIVE), LIM(MIN_ACTIVE), &pl->min_active)))
            return rc;
        if (pl->min_active > pl->max_active)
            return fail(l, v[MINACTIVE], p, "must be <= maxActive (%d), got %d", pl->max_active,
                        pl->min_active);
    }
    if (v[SPARE] && (rc = get_int32(l, v[SPARE], PP(SPARE), LIM(SPARE_WORKERS), &pl->spare_workers)))
        return rc;
    if (v[MAXSTART] &&
        (rc = get_int32(l, v[MAXSTART], PP(MAXSTART), LIM(MAX_START_PER_TICK), &pl->max_start_per_tick)))
        return rc;
    if (v[MPW] && (rc = get_int32(l, v[MPW], PP(MPW), LIM(MESSAGES_PER_WORKER), &pl->messages_per_worker)))
        return rc;
    if (v[MAXATT] && (rc = get_int32(l, v[MAXATT], PP(MAXATT), LIM(MAX_ATTEMPTS), &pl->max_attempts)))
        return rc;
    if (v[PENDING] &&
        (rc = get_duration(l, v[PENDING], PP(PENDING), CFG_LIM_MIN(PENDING_TIMEOUT), &pl->pending_timeout_ms)))
        return rc;
    if (v[IDLE] && (rc = get_duration(l, v[IDLE], PP(IDLE), CFG_LIM_MIN(IDLE_TIMEOUT), &pl->idle_timeout_ms)))
        return rc;
    if (v[TASKTO] &&
        (rc = get_duration(l, v[TASKTO], PP(TASKTO), CFG_LIM_MIN(TASK_TIMEOUT), &pl->task_timeout_ms)))
        return rc;
    if (v[SUCC] && (rc = get_int32(l, v[SUCC], PP(SUCC), LIM(SUCCESSFUL_HISTORY), &pl->successful_history)))
        return rc;
    if (v[FAILED] &&
        (rc = get_int32(l, v[FAILED], PP(FAILED), LIM(FAILED_HISTORY), &pl->failed_history)))
        return rc;
    if (v[TTL]) {
        if (is_null(v[TTL])) pl->ttl_seconds_after_finished = -1;
        else if ((rc = get_int32(l, v[TTL], PP(TTL), LIM(TTL_AFTER_FINISHED),
                                 &pl->ttl_seconds_after_finished)))
            return rc;
    }
    if (v[WORKER] && (rc = parse_worker(l, v[WORKER], PP(WORKER), pl))) return rc;
    if (v[TEMPLATE] && (rc = parse_template(l, v[TEMPLATE], PP(TEMPLATE), pl))) return rc;
    if (!v[TEMPLATE] && c->backend == CFG_BACKEND_KUBE)
        return fail(l, n, PP(TEMPLATE), "required with backend kube (a batch/v1 JobSpec)");
    if (!v[WORKER] && c->backend == CFG_BACKEND_LOCAL)
        return fail(l, n, pjoin(p, sizeof p, base, "worker.command"),
                    "required with backend local (e.g. [jobpool-worker, --, ./task.sh])");
#undef PP
    return pool_hash(pl);
}

static int parse_root(struct ld *l, yaml_node_t *root, struct cfg *c)
{
    enum { POLL, MAXTOTAL, BACKEND, LOG, METRICS, RMQ, KUBE, LEADER, POOLS, N };
    static const char *const keys[N] = {"pollInterval", "maxActiveTotal", "backend", "log",
                                        "metrics", "rabbitmq", "kubernetes", "leaderElection",
                                        "pools"};
    static const char *const backends[] = {"kube", "local", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    yaml_node_t *v[N], *k[N];
    char p[KEYPATH_MAX], b[64];
    int rc = collect(l, root, "", keys, N, v, k);
    if (rc) return rc;
    if (v[POLL] && (rc = get_duration(l, v[POLL], "pollInterval", CFG_LIM_MIN(POLL_INTERVAL), &c->poll_interval_ms)))
        return rc;
    if (v[MAXTOTAL] &&
        (rc = get_int32(l, v[MAXTOTAL], "maxActiveTotal", LIM(MAX_ACTIVE_TOTAL), &c->max_active_total)))
        return rc;
    if (v[BACKEND]) {
        int e;
        if ((rc = get_enum(l, v[BACKEND], "backend", backends, &e))) return rc;
        c->backend = (enum cfg_backend)e;
    }
    if (v[LOG]) {
        static const char *const lk[] = {"format", "level"};
        yaml_node_t *lv[2], *lkn[2];
        int e;
        if ((rc = collect(l, v[LOG], "log", lk, 2, lv, lkn))) return rc;
        if (lv[0]) {
            if ((rc = get_enum(l, lv[0], "log.format", formats, &e))) return rc;
            c->log_format = (enum log_format)e;
        }
        if (lv[1]) {
            if ((rc = get_enum(l, lv[1], "log.level", levels, &e))) return rc;
            c->log_level = (enum log_level)e;
        }
    }
    if (v[METRICS]) {
        static const char *const mk[] = {"address"};
        yaml_node_t *mv[1], *mkn[1];
        if ((rc = collect(l, v[METRICS], "metrics", mk, 1, mv, mkn))) return rc;
        if (mv[0]) {
            if ((rc = get_str(l, mv[0], "metrics.address", true, &c->metrics_address))) return rc;
            const char *a = c->metrics_address;
            const char *colon = strrchr(a, ':');
            int64_t port;
            if (*a && (!colon || util_parse_int64(colon + 1, 0, 65535, &port)))
                return fail(l, mv[0], "metrics.address", "expected HOST:PORT (or \"\" to "
                            "disable), got %s", show(mv[0], b, sizeof b));
        }
    }
    if (v[RMQ] && (rc = parse_rabbitmq(l, v[RMQ], &c->rabbitmq))) return rc;
    if (v[KUBE] && (rc = parse_kubernetes(l, v[KUBE], &c->kubernetes))) return rc;
    if (v[LEADER] && (rc = parse_leader(l, v[LEADER], &c->leader))) return rc;
    /* Each instance elects its own leader unless the Lease is named. */
    if (!c->leader.lease_name &&
        !(c->leader.lease_name = util_strprintf("%s-leader", c->kubernetes.instance)))
        return JP_ENOMEM;

    yaml_node_t *pools = v[POOLS];
    /* On Kubernetes, pools may all be JobPool objects: "pools: []" says so explicitly. */
    bool jobpools = c->backend == CFG_BACKEND_KUBE && c->kubernetes.jobpools;
    if (!pools) return fail(l, root, "pools", jobpools ? "required; 'pools: []' serves JobPool "
                            "objects only" : "at least one pool is required");
    if (pools->type != YAML_SEQUENCE_NODE) return want(l, pools, "pools", "a sequence of pools");
    size_t np = (size_t)(pools->data.sequence.items.top - pools->data.sequence.items.start);
    if (!np && !jobpools)
        return fail(l, pools, "pools", "at least one pool is required%s",
                    c->backend == CFG_BACKEND_KUBE ? " (or kubernetes.jobPools: true, to serve "
                    "JobPool objects)" : "");
    if (np > (size_t)CFG_LIM_MAX(POOLS))
        return fail(l, pools, "pools", "at most %d pools, got %zu", (int)CFG_LIM_MAX(POOLS), np);
    if (!(c->pools = calloc(np, sizeof *c->pools))) return JP_ENOMEM;
    int64_t min_sum = 0;
    for (size_t i = 0; i < np; i++) {
        yaml_node_t *pn = yaml_document_get_node(l->doc, pools->data.sequence.items.start[i]);
        if (!pn) return fail(l, pools, "pools", "malformed document");
        c->npools = i + 1;
        if ((rc = parse_pool(l, pn, i, c))) return rc;
        min_sum += c->pools[i].min_active;
    }
    if (c->max_active_total > 0 && min_sum > c->max_active_total)
        return fail(l, v[MAXTOTAL], pjoin(p, sizeof p, "", "maxActiveTotal"),
                    "must be >= the sum of minActive over all pools (%" PRId64 "), got %d",
                    min_sum, c->max_active_total);
    return 0;
}

/* ---- public API ----------------------------------------------------------------------------- */

static int set_defaults(struct cfg *c, const char *name)
{
    c->poll_interval_ms = 2000;
    c->max_active_total = 0;
    c->backend = CFG_BACKEND_KUBE;
    c->log_format = LOG_TEXT;
    c->log_level = LOG_INFO;
    c->rabbitmq.timeout_ms = 3000;
    c->rabbitmq.connect_timeout_ms = 1000;
    c->rabbitmq.consumer_timeout_ms = 30 * 60 * 1000;
    c->rabbitmq.management_lag_ms = 10000;
    c->rabbitmq.max_body = (size_t)8 << 20;
    c->rabbitmq.depth_source = CFG_DEPTH_MANAGEMENT;
    c->kubernetes.in_cluster = true;
    c->kubernetes.qps = 100;
    c->kubernetes.concurrency = 8;
    c->kubernetes.jobpools = true;
    c->leader.enabled = false;
    c->leader.lease_duration_ms = 15000;
    c->leader.renew_deadline_ms = 10000;
    c->leader.retry_period_ms = 2000;
    if (!(c->path = util_strdup(name)) ||
        !(c->metrics_address = util_strdup("127.0.0.1:9090")) ||
        !(c->rabbitmq.management_url = util_strdup("http://rabbitmq:15672")) ||
        !(c->rabbitmq.amqp_url = util_strdup("amqp://rabbitmq:5672")) ||
        !(c->rabbitmq.vhost = util_strdup("/")) ||
        !(c->kubernetes.instance = util_strdup("jobpool")))
        return JP_ENOMEM;
    return 0;
}

/* libyaml's problem, as "problem (context at LINE:COL)". Encoding errors come with a byte
 * offset instead of a mark: count the lines up to it. */
static int yaml_syntax_error(struct ld *l, const yaml_parser_t *p, const char *text, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR) return JP_ENOMEM;
    int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    if (p->error == YAML_READER_ERROR) {
        line = col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
                col++;
            }
        }
        return fail_at(l, line, col, "yaml", "%s (byte 0x%02x)",
                       p->problem ? p->problem : "invalid encoding", (unsigned)p->problem_value & 0xff);
    }
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->context)
        return fail_at(l, line, col, "yaml", "%s (%s at %d:%d)", problem, p->context,
                       (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return fail_at(l, line, col, "yaml", "%s", problem);
}

int cfg_load_string(const char *yaml, size_t len, const char *name, struct cfg **out, char *err,
                    size_t errlen)
{
    int rc = JP_ENOMEM;
    struct cfg *c = NULL;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_parser = false, have_doc = false;
    struct ld l = {name ? name : "<string>", &doc, err, errlen,
                   {.max_nodes = CFG_NODES_MAX, .max_bytes = CFG_EXPANDED_MAX}, false};
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    if (!yaml) {
        rc = JP_EINVAL;
        goto out;
    }
    if (!(c = calloc(1, sizeof *c)) || set_defaults(c, l.name)) goto out;
    if (!yaml_parser_initialize(&parser)) goto out;
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_syntax_error(&l, &parser, yaml, len);
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = fail_at(&l, 1, 1, "", "the file is empty; it needs at least 'pools'");
        goto out;
    }
    if (!yaml_parser_load(&parser, &extra)) {
        rc = yaml_syntax_error(&l, &parser, yaml, len);
        goto out;
    }
    yaml_node_t *r2 = yaml_document_get_root_node(&extra);
    if (r2) rc = fail(&l, r2, "", "more than one YAML document; the config is one document");
    yaml_document_delete(&extra);
    if (r2) goto out;
    rc = parse_root(&l, root, c);
out:
    if (have_doc) yaml_document_delete(&doc);
    if (have_parser) yaml_parser_delete(&parser);
    if (rc == JP_ENOMEM && err && errlen)
        snprintf(err, errlen, "%s: out of memory while loading the config", l.name);
    if (rc) {
        cfg_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
{
    char *text = NULL;
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    if (!path) return JP_EINVAL;
    errno = 0;
    int rc = util_read_file(path, CFG_FILE_MAX, false, &text);
    if (rc) {
        int e = errno;
        if (err && errlen) {
            if (rc == JP_ETOOBIG)
                snprintf(err, errlen, "%s: the file is larger than %zu bytes", path, CFG_FILE_MAX);
            else
                snprintf(err, errlen, "%s: cannot read: %s", path, e ? strerror(e) : "i/o error");
            one_line(err);
        }
        return rc == JP_ENOMEM ? rc : JP_EIO;
    }
    rc = cfg_load_string(text, strlen(text), path, out, err, errlen);
    free(text);
    return rc;
}

const char *cfg_pool_id(const struct cfg_pool *p)
{
    return p->id ? p->id : p->name;
}

static void pool_free(struct cfg_pool *p)
{
    free(p->id);
    free(p->namespace_);
    free(p->connection_secret);
    free(p->name);
    free(p->queue);
    free(p->queue_regex);
    free(p->vhost);
    for (size_t i = 0; p->worker_command && p->worker_command[i]; i++) free(p->worker_command[i]);
    free(p->worker_command);
    for (size_t i = 0; i < p->worker_nenv; i++) {
        free(p->worker_env[i].name);
        free(p->worker_env[i].value);
        free(p->worker_env[i].ref.env);
        free(p->worker_env[i].ref.file);
    }
    free(p->worker_env);
    cJSON_Delete(p->job_template);
    yamljson_src_free(p->template_src);
}

void cfg_free(struct cfg *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->npools; i++) pool_free(&c->pools[i]);
    free(c->pools);
    free(c->path);
    free(c->metrics_address);
    free(c->rabbitmq.management_url);
    free(c->rabbitmq.amqp_url);
    free(c->rabbitmq.vhost);
    free(c->rabbitmq.username.env);
    free(c->rabbitmq.username.file);
    free(c->rabbitmq.password.env);
    free(c->rabbitmq.password.file);
    free(c->rabbitmq.ca_file);
    free(c->kubernetes.kubeconfig);
    free(c->kubernetes.context);
    free(c->kubernetes.namespace_);
    free(c->kubernetes.instance);
    for (size_t i = 0; i < c->kubernetes.nwatch_namespaces; i++)
        free(c->kubernetes.watch_namespaces[i]);
    free(c->kubernetes.watch_namespaces);
    free(c->rabbitmq.worker_secret.name);
    free(c->rabbitmq.worker_secret.username_key);
    free(c->rabbitmq.worker_secret.password_key);
    free(c->rabbitmq.ca_secret.name);
    free(c->rabbitmq.ca_secret.key);
    free(c->rabbitmq.cert_file);
    free(c->rabbitmq.key_file);
    free(c->rabbitmq.cert_secret.name);
    free(c->rabbitmq.cert_secret.cert_key);
    free(c->rabbitmq.cert_secret.key_key);
    free(c->leader.lease_name);
    free(c);
}

void cfg_template_error(const struct cfg *c, const struct cfg_pool *p, const char *path,
                        const char *msg, char *out, size_t outlen)
{
    if (!outlen) return;
    int line = p ? p->line : 1, col = 1;
    size_t idx = c && p && p >= c->pools && p < c->pools + c->npools ? (size_t)(p - c->pools) : 0;
    if (!path) path = "";
    if (p && p->template_src) yamljson_src_find(p->template_src, path, &line, &col);
    snprintf(out, outlen, "%s:%d:%d: pools[%zu].jobTemplate%s%s: %s", c && c->path ? c->path : "?",
             line, col, idx, *path && *path != '[' ? "." : "", path, msg ? msg : "");
    one_line(out);
}

int cfg_secret_read(const struct cfg_secret *s, char **out)
{
    return cfg_ref_read(s, true, out);
}

int cfg_ref_read(const struct cfg_secret *s, bool secret, char **out)
{
    char *v = NULL;
    int rc = JP_ENOTFOUND;
    *out = NULL;
    if (!s) return JP_EINVAL;
    if (s->env) {
        const char *e = getenv(s->env);
        if (!e) goto out;
        rc = (v = util_strdup(e)) ? 0 : JP_ENOMEM;
    } else if (s->file) {
        errno = 0;
        rc = util_read_file(s->file, SECRET_FILE_MAX, true, &v);
        if (rc == JP_EIO && errno == ENOENT) rc = JP_ENOTFOUND;
        else if (rc == JP_ETOOBIG) rc = JP_EIO;
    }
    if (rc) goto out;
    size_t n = strlen(v);
    while (n && (v[n - 1] == '\n' || v[n - 1] == '\r')) v[--n] = '\0';
    if (secret) log_add_secret(v);
out:
    if (rc) {
        free(v);
        v = NULL;
    }
    *out = v;
    return rc;
}

void cfg_pool_free(struct cfg_pool *p)
{
    if (!p) return;
    pool_free(p);
    memset(p, 0, sizeof *p);
}

/* The JobPool's spec with its name, as the JSON text of one pools[] entry: JSON is YAML, so the
 * config's own parser reads it with every rule and message of the file. */
static char *jobpool_as_pool(const cJSON *spec, const char *name)
{
    cJSON *pool = cJSON_CreateObject();
    if (!pool || !cJSON_AddStringToObject(pool, "name", name)) {
        cJSON_Delete(pool);
        return NULL;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, spec) {
        /* connectionSecretRef is the JobPool's own; a stray "name" would clash with ours. */
        if (!strcmp(e->string, "connectionSecretRef") || !strcmp(e->string, "name")) continue;
        cJSON *d = cJSON_Duplicate(e, 1);
        if (!d) {
            cJSON_Delete(pool);
            return NULL;
        }
        cJSON_AddItemToObject(pool, e->string, d);
    }
    char *text = cJSON_PrintUnformatted(pool);
    cJSON_Delete(pool);
    return text;
}

int cfg_pool_from_jobpool(const struct cfg *c, const cJSON *jobpool, struct cfg_pool *out,
                          char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(jobpool, "metadata");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(md, "name");
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(md, "namespace");
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(jobpool, "spec");
    if (!cJSON_IsString(name) || !cJSON_IsString(ns) || !cJSON_IsObject(spec)) {
        if (err && errlen) snprintf(err, errlen, "%s: required", !cJSON_IsObject(spec)
                                    ? "spec" : "metadata.name and metadata.namespace");
        return JP_ECONFIG;
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(spec, "connectionSecretRef");
    const cJSON *refname = cJSON_GetObjectItemCaseSensitive(ref, "name");
    if (ref && (!cJSON_IsString(refname) || !*refname->valuestring)) {
        if (err && errlen) snprintf(err, errlen, "spec.connectionSecretRef.name: required");
        return JP_ECONFIG;
    }
    int rc = JP_ENOMEM;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_parser = false, have_doc = false;
    char *text = jobpool_as_pool(spec, name->valuestring);
    if (!text || !yaml_parser_initialize(&parser)) goto out;
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&parser, &doc)) goto out;
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) goto out;
    /* A config of one pool: the controller's default vhost, the kube backend. */
    struct cfg tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.backend = CFG_BACKEND_KUBE;
    tmp.rabbitmq.vhost = c->rabbitmq.vhost;
    tmp.pools = out;
    tmp.npools = 1;
    struct ld l = {"JobPool", &doc, err, errlen,
                   {.max_nodes = CFG_NODES_MAX, .max_bytes = CFG_EXPANDED_MAX}, true};
    if ((rc = parse_pool(&l, root, 0, &tmp))) goto out;
    rc = JP_ENOMEM;
    if (!(out->namespace_ = util_strdup(ns->valuestring))) goto out;
    if (ref && !(out->connection_secret = util_strdup(refname->valuestring))) goto out;
    out->vhost_default = !cJSON_GetObjectItemCaseSensitive(spec, "vhost");
    rc = 0;
out:
    if (have_doc) yaml_document_delete(&doc);
    if (have_parser) yaml_parser_delete(&parser);
    free(text);
    if (rc) cfg_pool_free(out);
    if (rc == JP_ENOMEM && err && errlen) snprintf(err, errlen, "out of memory");
    return rc;
}
