#!/usr/bin/env bash
# Run libFuzzer targets for a bounded time each and print one closing line.
#   tests/fuzz/run.sh BUILD_DIR TARGET...     (FUZZ_SECONDS per target, default 30)
# Each target starts from its committed seeds (tests/fuzz/corpus/<t>/, plus extra seed folders
# for config) and keeps what it finds in BUILD_DIR/corpus/<t>/ for the next run. A crash, leak,
# sanitizer report or timeout fails the target; its input is kept as BUILD_DIR/artifacts/<t>-*.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bdir=$1; shift
secs=${FUZZ_SECONDS:-30}
pass=0; fail=0; failed=()
mkdir -p "$bdir/artifacts"
for t in "$@"; do
  bin=$bdir/fuzz_$t
  echo "== fuzz: $t (${secs}s)"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin was not built"; fail=$((fail + 1)); failed+=("$t"); continue
  fi
  seeds=("$here/corpus/$t")
  [ "$t" = config ] && seeds+=("$root/docs/examples" "$root/tests/fixtures/config")
  dict=()
  [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  mkdir -p "$bdir/corpus/$t"
  if "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=1024 \
       -print_final_stats=1 -artifact_prefix="$bdir/artifacts/$t-" "${dict[@]}" \
       "$bdir/corpus/$t" "${seeds[@]}" > "$bdir/$t.log" 2>&1; then
    pass=$((pass + 1))
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$bdir/$t.log" | tr '\n' ' '; echo
  else
    fail=$((fail + 1)); failed+=("$t")
    tail -n 60 "$bdir/$t.log"
  fi
done
echo
[ $fail -eq 0 ] || echo "fuzz: failed: ${failed[*]}"
echo "fuzz: $pass passed, $fail failed"
[ -z "${JOBPOOL_SUMMARY:-}" ] || echo "fuzz $pass $fail" >> "$JOBPOOL_SUMMARY"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
