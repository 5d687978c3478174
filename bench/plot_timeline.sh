#!/usr/bin/env bash
# plot_timeline.sh TITLE OUT.png JOBPOOL_DIR [KEDA_DIR]: draws one scenario's timeline with
# gnuplot from the CSVs bench/timeline.py wrote into each DIR: the backlog (published, not yet
# started) and the workers (Jobs not finished) over time on top, each message's publish-to-start
# wait below; jobpool in solid lines, the KEDA-policy baseline (when given) dashed.
set -euo pipefail
title=$1 out=$2 jp=$3 keda=${4:-}
command -v gnuplot >/dev/null || { echo "plot_timeline: gnuplot is not installed (tests/env/deps.sh test)" >&2; exit 1; }
for f in "$jp/timeline.csv" "$jp/waits.csv" ${keda:+"$keda/timeline.csv" "$keda/waits.csv"}; do
  [ -s "$f" ] || { echo "plot_timeline: $f is missing or empty" >&2; exit 1; }
done
top="\"$jp/timeline.csv\" using 1:2 with lines lw 2 lc rgb '#1f77b4' title 'jobpool backlog', \
  '' using 1:3 with lines lw 2 lc rgb '#2ca02c' title 'jobpool workers'"
bottom="\"$jp/waits.csv\" using 1:2 with points pt 7 ps 0.5 lc rgb '#1f77b4' title 'jobpool'"
if [ -n "$keda" ]; then
  top="$top, \"$keda/timeline.csv\" using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'KEDA policy backlog', \
  '' using 1:3 with lines lw 2 dt 2 lc rgb '#ff7f0e' title 'KEDA policy workers'"
  bottom="$bottom, \"$keda/waits.csv\" using 1:2 with points pt 6 ps 0.5 lc rgb '#d62728' title 'KEDA policy'"
fi
gnuplot <<EOG
set terminal pngcairo size 1000,700 noenhanced
set output "$out"
set datafile separator ","
set key autotitle columnhead
set multiplot layout 2,1 title "$title"
set xlabel "seconds since the first publish"
set ylabel "count"
set key top right
plot $top
set ylabel "publish to task start, s"
set yrange [0:*]
set key top left
plot $bottom
unset multiplot
EOG
