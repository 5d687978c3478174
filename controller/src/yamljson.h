/* yamljson.h: YAML nodes (libyaml's document API) to cJSON by the YAML 1.2 core schema, with
 * the source position of every node kept for error messages. */
#ifndef JP_YAMLJSON_H
#define JP_YAMLJSON_H

#include <stddef.h>

/* Forward declarations, so that only config.c and yamljson.c include yaml.h. */
struct cJSON;
struct yaml_document_s;
struct yaml_node_s;

/* Aliases can make a small file expand into a huge tree ("billion laughs"); a conversion that
 * would produce more nodes, more text, or nest deeper, than these is refused. A batch/v1
 * JobSpec needs a few hundred nodes at most, and the API server refuses any object over about
 * 1.5 MiB. Text is counted as the bytes of every scalar and mapping key in the expanded tree,
 * so an alias of a long string counts the string again each time it is used. */
#define YAMLJSON_MAX_NODES 20000
#define YAMLJSON_MAX_BYTES ((size_t)1 << 20)
#define YAMLJSON_MAX_DEPTH 64
/* Longest path kept for a node, e.g. "template.spec.containers[0].env[3].valueFrom". */
#define YAMLJSON_PATH_MAX 512

/* Where and why a conversion failed. line and col are 1-based; path is relative to the converted
 * root ("" for the root itself), in the form described for yamljson_src_find. */
struct yamljson_error {
    int line;
    int col;
    char path[YAMLJSON_PATH_MAX];
    char msg[256];
};

/* One allowance shared by several conversions and their caller (every template of one config
 * file and the config's own strings): what has been spent so far, and the limits of the total. */
struct yamljson_budget {
    size_t nodes, bytes;           /* spent; each conversion adds to them */
    size_t max_nodes, max_bytes;   /* limits of the totals */
};

struct yamljson_opts {
    size_t max_nodes;   /* 0: YAMLJSON_MAX_NODES */
    size_t max_bytes;   /* 0: YAMLJSON_MAX_BYTES */
    int max_depth;      /* 0: YAMLJSON_MAX_DEPTH */
    struct yamljson_budget *budget; /* NULL: none; else also drawn from (even on failure) */
};

/* The source positions of the nodes of one converted tree, by path. */
struct yamljson_src;

/* Convert node (a node of doc, which stays owned by the caller) and everything below it.
 *
 * Typing follows the YAML 1.2 core schema for plain (unquoted) scalars:
 *   null  ""(empty) ~ null Null NULL                    -> JSON null
 *   bool  true True TRUE false False FALSE              -> JSON true/false
 *   int   [-+]?[0-9]+  0o[0-7]+  0x[0-9a-fA-F]+          -> JSON number
 *   float [-+]?(.[0-9]+|[0-9]+(.[0-9]*)?)([eE][-+]?[0-9]+)? -> JSON number
 *   anything else                                        -> JSON string
 * Quoted, literal (|) and folded (>) scalars are always strings: "8080" stays a string and 8080
 * becomes a number. Explicit core tags (!!int, !!float, !!bool, !!null) are checked against the
 * value; other tags are refused. (libyaml cannot tell "!!str 5" from "5": quote it instead.)
 *
 * Refused, with an error naming the node: .inf/.nan and floats that overflow (JSON cannot hold
 * them; quote them to make strings), integers of more than 15 digits (cJSON prints 15
 * significant digits, so they would come out rounded), strings with a NUL byte, non-scalar or duplicate mapping keys, trees with more than
 * max_nodes nodes or max_bytes of text, or deeper than max_depth (which also stops
 * self-referencing aliases), and conversions that overdraw opts->budget.
 * Anchors and aliases are expanded; the merge key "<<" (a mapping or a sequence of mappings)
 * adds the keys the mapping does not set itself, earlier sources winning.
 *
 * Returns 0 with *out a new cJSON tree (the caller frees it with cJSON_Delete) and, when src is
 * not NULL, *src the positions of its nodes (freed with yamljson_src_free). On failure returns
 * JP_EPARSE (err filled in when not NULL) or JP_ENOMEM; *out and *src are NULL. */
int yamljson_convert(struct yaml_document_s *doc, struct yaml_node_s *node,
                     const struct yamljson_opts *opts, struct cJSON **out,
                     struct yamljson_src **src, struct yamljson_error *err);

/* Parse a whole YAML text holding one document (a kubeconfig, a test fixture) and convert it.
 * An empty document gives JSON null; more than one document is an error. Syntax errors give
 * JP_EPARSE with libyaml's problem and position in err. Ownership as for yamljson_convert. */
int yamljson_parse(const char *yaml, size_t len, const struct yamljson_opts *opts,
                   struct cJSON **out, struct yamljson_src **src, struct yamljson_error *err);

/* Called by yamljson_parse_each for each non-empty document of a stream. root and src are
 * borrowed (freed when the call returns); src's positions are those of the whole text; line is
 * where the document's root node starts (1-based). A non-zero return stops the stream. */
typedef int (*yamljson_doc_fn)(void *ud, const struct cJSON *root, const struct yamljson_src *src,
                               int line);

/* Parse a YAML stream of any number of documents ("---" separated, as kubectl manifests are)
 * and hand each non-empty one, converted as by yamljson_convert, to fn. Returns 0, fn's first
 * non-zero return, or JP_EPARSE (err filled in) / JP_ENOMEM for the first document that cannot
 * be read; documents before it have been handed over. */
int yamljson_parse_each(const char *yaml, size_t len, const struct yamljson_opts *opts,
                        yamljson_doc_fn fn, void *ud, struct yamljson_error *err);

struct dbuf;
/* Append v to b as block-style YAML whose lines are indented by indent spaces: a mapping as
 * "key: value" lines, a sequence as "- item" lines, empty ones as {} and []. Strings are written
 * plain only when they read back as the same string under both YAML 1.1 and 1.2 (no numbers,
 * booleans or null words, no indicator characters), else JSON-quoted; so yamljson_parse of the
 * output gives v again. A scalar v is written alone followed by a newline. Returns 0 or
 * JP_ENOMEM/JP_ETOOBIG (b's own cap). */
int yamljson_emit(struct dbuf *b, const struct cJSON *v, int indent);
/* Append the scalar v (string, number, bool or null) in the form yamljson_emit uses. */
int yamljson_emit_scalar(struct dbuf *b, const struct cJSON *v);

/* Look up where path came from. Paths join mapping keys with '.' and sequence indexes with
 * "[i]", as in "template.spec.containers[0].image"; a key that is empty or holds '.', '[' or ']'
 * is written "[key]" (as Kubernetes does for labels: "metadata.labels[app.kubernetes.io/name]").
 * Returns 0 for an exact match, 1 when only an ancestor of path was found (its position is
 * given: the nearest enclosing node), JP_ENOTFOUND when s is NULL or empty. */
int yamljson_src_find(const struct yamljson_src *s, const char *path, int *line, int *col);
/* Number of recorded nodes. */
size_t yamljson_src_count(const struct yamljson_src *s);
void yamljson_src_free(struct yamljson_src *s);

#endif
