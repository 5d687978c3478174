#!/usr/bin/env bash
# The chart and the controller agree on every limit (issue 12, item 7). The limits live in one
# table, controller/src/config_limits.h; charts/limits.py writes the chart's side of it.
#   1. no drift: values.schema.json and templates/_limits.tpl are what the table gives, and the
#      JobPool CRD's pool limits are the table's (a changed table or CRD is noticed: the negative
#      controls);
#   2. tests/integration/chart_limits.py renders every limit's boundary values on both sides through
#      helm template and jobpool-controller --check-config, plus the cases seen to disagree.
# Run by `make integration` (tests/integration/run.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ctrl=${JOBPOOL_BUILD:-${B:-$root/build}}/jobpool-controller
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
bin=$("$root/tests/env/tools.sh") || { echo "FAIL - tests/env/tools.sh could not install helm"; exit 1; }
[ -x "$ctrl" ] || { echo "FAIL - $ctrl is not built (make all)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

if out=$(python3 "$root/charts/limits.py" --check 2>&1); then
  ok "values.schema.json and templates/_limits.tpl match controller/src/config_limits.h"
else bad "$out"; fi
mkdir -p "$tmp/copy/controller/src"
cp -r "$root/charts" "$tmp/copy/"
sed 's/X(MAX_ATTEMPTS, "pools.maxAttempts", INT, 1, 1000)/X(MAX_ATTEMPTS, "pools.maxAttempts", INT, 1, 999)/' \
  "$root/controller/src/config_limits.h" > "$tmp/copy/controller/src/config_limits.h"
if cmp -s "$root/controller/src/config_limits.h" "$tmp/copy/controller/src/config_limits.h"; then
  bad "negative control: the table edit did not apply (the test is blind)"
elif python3 "$tmp/copy/charts/limits.py" --check >/dev/null 2>&1; then
  bad "negative control: a changed limit went unnoticed"
else ok "negative control: a changed limit in the table is reported as drift"; fi
cp "$root/controller/src/config_limits.h" "$tmp/copy/controller/src/config_limits.h"
sed -i '0,/maximum: 1000$/s//maximum: 999/' "$tmp/copy/charts/jobpool/crds/jobpools.jobpool.dev.yaml"
out=$(python3 "$tmp/copy/charts/limits.py" --check 2>&1)
if grep -q 'pools.maxAttempts: .*crds' <<<"$out"; then
  ok "negative control: a JobPool CRD limit that differs from the table is reported"
else bad "negative control: a changed limit in the JobPool CRD went unnoticed"; fi

if python3 "$here/chart_limits.py" "$bin/helm" "$root/charts/jobpool" "$ctrl" > "$tmp/out" 2>&1; then
  ok "$(tail -n1 "$tmp/out")"
else bad "the chart and the controller disagree:"; grep -v '^ok' "$tmp/out" | sed 's/^/    /'; fi
echo "chart-limits: $pass passed, $fail failed"
[ "$fail" = 0 ]
