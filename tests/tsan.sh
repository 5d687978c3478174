#!/usr/bin/env bash
# Run the ThreadSanitizer build (make tsan): the unit tests, then (unless TSAN_KUBE=0) kit_kube
# and the controller scripts on a private control plane. Every process, the controllers the
# scripts start included, writes its reports to BUILD_DIR/tsan-reports/; any report fails.
#   tests/tsan.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
bdir=$(cd "$1" && pwd)
rep=$bdir/tsan-reports
rm -rf "$rep" && mkdir -p "$rep"
sym=$(command -v llvm-symbolizer || ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | tail -n 1)
export TSAN_OPTIONS="log_path=$rep/tsan second_deadlock_stack=1${sym:+ external_symbolizer_path=$sym} ${TSAN_OPTIONS:-}"
# clang 14's TSan cannot place its shadow memory when the kernel randomises mmap with more
# than 28 bits (newer kernels' default); without ASLR, which every child inherits, it always can.
noaslr=()
if setarch "$(uname -m)" -R true 2>/dev/null; then noaslr=(setarch "$(uname -m)" -R); fi
st=0
"${noaslr[@]}" "$here/run-tests.sh" tsan-unit "$bdir"/tests/test_* || st=1
if [ "${TSAN_KUBE:-1}" != 0 ]; then
  B=$bdir KUBE_SCRIPTS=${TSAN_KUBE_SCRIPTS:-"leader controller_kube cache"} \
    "${noaslr[@]}" "$here/integration/kube-run.sh" "$bdir"/tests/kit_* || st=1
fi
n=$(find "$rep" -type f | wc -l)
if [ "$n" -gt 0 ]; then
  for f in "$rep"/*; do echo "---- $f"; cat "$f"; done
  echo "tsan: $n processes reported data races or other thread errors (see above)"
  st=1
else
  echo "tsan: no reports"
fi
[ -z "${JOBPOOL_SUMMARY:-}" ] || echo "tsan $((1 - st)) $st" >> "$JOBPOOL_SUMMARY"
exit $st
