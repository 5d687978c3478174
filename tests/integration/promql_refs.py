#!/usr/bin/env python3
"""promql_refs.py: check that PromQL expressions refer only to series a live jobpool exports.

    promql_refs.py --scrape METRICS.txt [--scrape ...] [--dashboard JSON] [--rules YAML]
    promql_refs.py --scrape METRICS.txt --self-test

Reads the expressions of a Grafana dashboard (panel targets and the template variables'
label_values() queries) and of a PrometheusRule, parses enough PromQL to find every metric name,
every label matcher and every grouping label (by, without, on, ignoring, group_left/right), and
checks them against the scrape: each metric must have series; each matcher's label must be on
that metric's series, and an exact value (=, or a|b alternatives of =~) must occur there; each
grouping label must be on one of the expression's metrics. Grafana's variables are replaced
first ($__rate_interval by 5m, $pool by .*). Prints one line per problem; exit 1 if any.
"""
import argparse, json, re, sys

AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values", "group"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"}
TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|(?P<dur>\[[^\]]*\])'
                   r'|(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)'
                   r'|(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^(){},=<>]))')


def grafana_subst(expr):
    expr = re.sub(r"\$__rate_interval|\$__interval|\$__range", "5m", expr)
    return re.sub(r"\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*", ".*", expr)


def tokens(expr):
    out, i = [], 0
    while i < len(expr):
        m = TOKEN.match(expr, i)
        if not m or m.end() == i:
            if expr[i:].strip() == "":
                break
            raise ValueError("cannot parse at %r" % expr[i:i + 20])
        i = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def parse(expr):
    """(metrics, matchers [(metric or None, label, op, value)], grouping labels)."""
    t = tokens(grafana_subst(expr))
    metrics, matchers, grouping = set(), [], set()
    i = 0
    while i < len(t):
        kind, v = t[i]
        nxt = t[i + 1][1] if i + 1 < len(t) else None
        if kind == "id" and v in GROUPING:
            if nxt == "(":  # a label list
                j = i + 2
                while j < len(t) and t[j][1] != ")":
                    if t[j][0] == "id":
                        grouping.add(t[j][1])
                    j += 1
                i = j + 1
                continue
        elif kind == "id" and (nxt == "(" or v in KEYWORDS or v in AGGREGATIONS):
            pass  # a function, an aggregation or an operator word
        elif kind == "id" or (kind == "op" and v == "{"):
            metric = v if kind == "id" else None
            if metric:
                metrics.add(metric)
            j = i + 1 if kind == "id" else i
            if j < len(t) and t[j][1] == "{":
                j += 1
                while j < len(t) and t[j][1] != "}":
                    if t[j][0] == "id" and j + 2 < len(t) and t[j + 2][0] == "str":
                        matchers.append((metric, t[j][1], t[j + 1][1], t[j + 2][1][1:-1]))
                        j += 3
                    else:
                        j += 1
                i = j + 1
                continue
        i += 1
    return metrics, matchers, grouping


def load_scrape(paths):
    series = {}  # metric -> {label -> set of values}
    line_re = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+\S+')
    label_re = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for p in paths:
        for line in open(p):
            if line.startswith("#"):
                continue
            m = line_re.match(line)
            if not m:
                continue
            labels = series.setdefault(m.group(1), {})
            for k, v in label_re.findall(m.group(3) or ""):
                labels.setdefault(k, set()).add(v)
    return series


def exact_values(op, value):
    if op == "=":
        return [value]
    if op == "=~" and re.fullmatch(r"[A-Za-z0-9_.:-]+(\|[A-Za-z0-9_.:-]+)*", value) and ".*" not in value:
        return value.split("|")
    return []


def check(where, expr, series):
    problems = []
    try:
        metrics, matchers, grouping = parse(expr)
    except ValueError as e:
        return ["%s: %s: %s" % (where, e, expr)]
    if not metrics:
        problems.append("%s: no metric found in %r" % (where, expr))
    for m in sorted(metrics):
        if m not in series:
            problems.append("%s: metric %s is not exported" % (where, m))
    for metric, label, op, value in matchers:
        if metric is None:
            problems.append("%s: a selector without a metric name: {%s%s\"%s\"}" % (where, label, op, value))
            continue
        have = series.get(metric, {})
        if metric in series and label not in have:
            problems.append("%s: %s has no label %s" % (where, metric, label))
            continue
        for val in exact_values(op, value):
            if metric in series and val not in have[label]:
                problems.append("%s: %s{%s} never has the value %r" % (where, metric, label, val))
    for label in sorted(grouping):
        if not any(label in series.get(m, {}) for m in metrics):
            problems.append("%s: grouping label %s is on none of %s" % (where, label, sorted(metrics)))
    return problems


def dashboard_exprs(path):
    d = json.load(open(path))
    out = []
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            out.append(("panel %r target %s" % (p.get("title"), t.get("refId")), t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\(\s*([^,]+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q or "")
        if not m:
            out.append(("variable %s" % v["name"], q or ""))
        else:  # label_values(SELECTOR, LABEL): the label must be on the selector's series
            out.append(("variable %s" % v["name"], "count by (%s) (%s)" % (m.group(2), m.group(1))))
    return out


def rule_exprs(path):
    import yaml
    out = []
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        spec = doc.get("spec", doc)
        for g in spec.get("groups", []):
            for r in g.get("rules", []):
                out.append(("rule %s" % r.get("alert") or r.get("record"), r["expr"]))
    return out


SELF_TEST = [  # expression, the problem it must be reported for
    ("jobpool_no_such_metric", "not exported"),
    ('jobpool_workers{colour="red"}', "has no label colour"),
    ('jobpool_workers{state="sleeping"}', "never has the value 'sleeping'"),
    ('jobpool_workers{state=~"pending|sleeping"}', "never has the value 'sleeping'"),
    ("sum by (colour) (jobpool_workers)", "grouping label colour"),
    ('sum(rate(jobpool_errors_total{source="nowhere"}[$__rate_interval]))', "never has the value"),
    ('{__name__="jobpool_workers"}', "without a metric name"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrape", action="append", required=True)
    ap.add_argument("--dashboard")
    ap.add_argument("--rules")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    series = load_scrape(a.scrape)
    if a.self_test:
        bad = 0
        for expr, want in SELF_TEST:
            got = check("self-test", expr, series)
            if not any(want in g for g in got):
                print("self-test: %r was not reported for %r (got %s)" % (expr, want, got))
                bad += 1
        for expr in ['sum by (pool, state) (jobpool_workers{state=~"pending|running"})',
                     'histogram_quantile(0.9, sum by (pool, le) (rate(jobpool_reconcile_duration_seconds_bucket[5m])))']:
            if check("self-test", expr, series):
                print("self-test: a good expression was reported: %r" % expr)
                bad += 1
        print("promql_refs self-test: %d of %d cases right" % (len(SELF_TEST) + 2 - bad, len(SELF_TEST) + 2))
        return 1 if bad else 0
    exprs = []
    if a.dashboard:
        exprs += dashboard_exprs(a.dashboard)
    if a.rules:
        exprs += rule_exprs(a.rules)
    problems = []
    for where, expr in exprs:
        problems += check(where, expr, series)
    for p in problems:
        print(p)
    print("promql_refs: %d expressions, %d problems" % (len(exprs), len(problems)))
    return 1 if problems or not exprs else 0


if __name__ == "__main__":
    sys.exit(main())
