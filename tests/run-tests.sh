#!/usr/bin/env bash
# Run test binaries in order and print one closing line: "N passed, N failed".
#   tests/run-tests.sh KIND BIN...     ($VALGRIND, when set, prefixes each binary)
set -u
kind=$1; shift
pass=0; fail=0; failed=()
for t in "$@"; do
  [ -x "$t" ] || continue
  echo "== $kind: $(basename "$t")"
  if ${VALGRIND:-} "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); failed+=("$(basename "$t")"); fi
done
echo
[ $fail -eq 0 ] || echo "$kind: failed: ${failed[*]}"
echo "$kind: $pass passed, $fail failed"
# make test collects every stage's counts for one closing line.
[ -z "${JOBPOOL_SUMMARY:-}" ] || echo "$kind $pass $fail" >> "$JOBPOOL_SUMMARY"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
