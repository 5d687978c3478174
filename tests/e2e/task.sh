#!/bin/sh
# task.sh OUTDIR: the e2e scenarios' task. The message body on stdin is "ID SLEEP FAIL".
# Appends "ID START_MS ATTEMPT PID" to OUTDIR/started, sleeps SLEEP seconds, then appends
# "ID START_MS END_MS ATTEMPT" to OUTDIR/done and exits 0, or (FAIL=1) to OUTDIR/failed and
# exits 1. Each line is one short O_APPEND write, so concurrent tasks never interleave.
out=$1
read -r id sl fail _rest || [ -n "${id:-}" ] || exit 2  # the body has no final newline
t0=$(date +%s%3N)
echo "$id $t0 ${JOBPOOL_ATTEMPT:-0} $$" >> "$out/started"
[ "$sl" = 0 ] || sleep "$sl"
t1=$(date +%s%3N)
if [ "$fail" = 1 ]; then
  echo "$id $t0 $t1 ${JOBPOOL_ATTEMPT:-0}" >> "$out/failed"
  exit 1
fi
echo "$id $t0 $t1 ${JOBPOOL_ATTEMPT:-0}" >> "$out/done"
