#!/usr/bin/env bash
# The chart's alerts under promtool: renders the PrometheusRule (charts/jobpool, values from
# tests/alerts/values.yaml), takes its spec as a Prometheus rules file, then
# `promtool check rules` and `promtool test rules` (tests/alerts/jobpool.test.yaml: series that
# must fire and series that must not). Also checks the rule is off by default.
# Run by tests/integration/alerts.test.sh (make integration, make test, .ci/run).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL: $*"; }
command -v promtool >/dev/null || { echo "alerts: FAILED: promtool is not installed (tests/env/deps.sh test: prometheus)"; exit 1; }
bin=$("$root/tests/env/tools.sh") || { echo "alerts: FAILED: tests/env/tools.sh could not install helm"; exit 1; }
T=$(mktemp -d /tmp/jobpool-alerts.XXXXXX); trap 'rm -rf "$T"' EXIT
if "$bin/helm" template jobpool "$root/charts/jobpool" | grep -q '^kind: PrometheusRule$'; then
  bad "the PrometheusRule is rendered at default values (it must be off by default)"
else ok "no PrometheusRule at default values"; fi
if ! "$bin/helm" template jobpool "$root/charts/jobpool" -f "$here/values.yaml" \
     --show-only templates/prometheusrule.yaml > "$T/rule.yaml" 2> "$T/err"; then
  bad "rendering the PrometheusRule"; cat "$T/err"
else
  python3 - "$T/rule.yaml" "$T/rules.yaml" <<'EOP'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
assert doc["kind"] == "PrometheusRule", doc["kind"]
yaml.safe_dump(doc["spec"], open(sys.argv[2], "w"), sort_keys=False)
EOP
  cp "$here/jobpool.test.yaml" "$T/"
  if out=$(promtool check rules --lint=all --lint-fatal "$T/rules.yaml" 2>&1); then ok "promtool check rules: $(echo "$out" | grep -o '[0-9]* rules found')"
  else bad "promtool check rules:"; echo "$out" | sed 's/^/    /'; fi
  if out=$(cd "$T" && promtool test rules jobpool.test.yaml 2>&1); then ok "promtool test rules: every case fires where it must and nowhere else"
  else bad "promtool test rules:"; echo "$out" | sed 's/^/    /'; fi
fi
echo "alerts: $pass passed, $fail failed"
[ "$fail" = 0 ]
