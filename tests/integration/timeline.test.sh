#!/usr/bin/env bash
# bench/e2e.sh's timeline plots on recorded data (tests/fixtures/timeline, from a real tasktime
# e2e run): bench/timeline.py's backlog, workers and waits match the events counted by hand, a
# Job of another pool is left out, and bench/plot_timeline.sh draws a PNG with gnuplot, with and
# without a baseline run. Needs gnuplot and python3 (tests/env/deps.sh test), no service.
set -u
root=${JOBPOOL_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
fx=$root/tests/fixtures/timeline
T=$(mktemp -d /tmp/jobpool-timeline-test.XXXXXX); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
command -v gnuplot >/dev/null || { echo "timeline.test: FAILED: gnuplot is not installed (tests/env/deps.sh test)"; exit 1; }
sum=$(python3 "$root/bench/timeline.py" --pub "$fx/pub" --started "$fx/started" --jobs "$fx/jobs.events" \
  --pool tasktime --out "$T/jp")
echo "  $sum"
row() { sed -n "$(( $1 + 2 ))p" "$T/jp/timeline.csv"; }
# By hand from the fixture (the 12 waits sorted: 6.918 ... 7.292 [the 6th, p50 by nearest rank]
# ... 8.563): 8 publishes at 0-0.1 s and 4 at 1.2-1.3 s; the first starts at
# 6.9 s; 6 Jobs created at 6.7 s, done 8.1-8.5 s; 6 more at 8.5 s, done 9.7-10.4 s. A row's
# workers figure is the most Jobs alive at once during the second before it.
check "t=2: 12 published, none started, no Job ($(row 2))" [ "$(row 2)" = "2,12,0" ]
check "t=7: 3 started, 6 Jobs ($(row 7))" [ "$(row 7)" = "7,9,6" ]
check "t=8: 6 started, 6 Jobs; the other pool's Job (at 7.1 s) left out ($(row 8))" [ "$(row 8)" = "8,6,6" ]
check "t=9: all started, 6 Jobs running ($(row 9))" [ "$(row 9)" = "9,0,6" ]
check "t=10: 6 Jobs at most during the second before, 2 left at its end ($(row 10))" [ "$(row 10)" = "10,0,6" ]
check "t=11: the last 2 finish ($(row 11))" [ "$(row 11)" = "11,0,2" ]
check "t=12: nothing left ($(row 12))" [ "$(row 12)" = "12,0,0" ]
check "one wait per message, first publish at 0" bash -c "[ \$(tail -n +2 '$T/jp/waits.csv' | wc -l) = 12 ] && sed -n 2p '$T/jp/waits.csv' | grep -qx '0.000,6.963'"
check "the longest wait: message 7, 8.563 s" grep -qx '0.077,8.563' "$T/jp/waits.csv"
check "summary line" grep -q '12 messages, 12 started, wait p50 7.3 s, p99 8.6 s, max 8.6 s' <<<"$sum"
png_ok() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && [ "$(stat -c %s "$1")" -gt 10000 ]; }
"$root/bench/plot_timeline.sh" "recorded" "$T/one.png" "$T/jp" 2>"$T/err"
check "a PNG of one run" png_ok "$T/one.png"
cp -r "$T/jp" "$T/base"
"$root/bench/plot_timeline.sh" "recorded, twice" "$T/two.png" "$T/jp" "$T/base" 2>"$T/err"
check "a PNG of a run against a baseline, larger than one run's" bash -c "png_ok() { [ \"\$(head -c 8 \"\$1\" | od -An -tx1 | tr -d ' \n')\" = 89504e470d0a1a0a ]; }; png_ok '$T/two.png' && [ \$(stat -c %s '$T/two.png') -gt \$(stat -c %s '$T/one.png') ]"
if "$root/bench/plot_timeline.sh" "missing" "$T/none.png" "$T/nowhere" 2>"$T/err"; then bad "a missing CSV was accepted"
else check "a missing CSV is an error naming it" grep -q 'nowhere/timeline.csv is missing' "$T/err"; fi
echo "timeline.test: $pass passed, $fail failed"
[ "$fail" = 0 ]
