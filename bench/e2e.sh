#!/usr/bin/env bash
# bench/e2e.sh: runs the end-to-end scenarios (tests/e2e/run.sh: real RabbitMQ, kube-apiserver,
# Job controller, node simulator, jobpool-controller and jobpool-worker) and prints one table per
# scenario from the figures they measured. Asserts nothing about time; the scenarios' own checks
# still decide the exit code. Arguments: scenario names (default: all). B: the build dir.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
figs=$(mktemp -d /tmp/jobpool-bench-e2e.XXXXXX)
# KEEP=DIR keeps the figures and the recorded events there (to plot them again).
trap '[ -z "${KEEP:-}" ] || { mkdir -p "$KEEP" && cp -r "$figs"/. "$KEEP"/; }; rm -rf "$figs"' EXIT
E2E_FIGURES_OUT=$figs E2E_TIMELINE_OUT=$figs/timeline "$root/tests/e2e/run.sh" "$@"
rc=$?
# The baseline a user would otherwise pick: the same scenarios, the same harness, deciding with
# KEDA ScaledJob's published formula at its defaults (30 s poll, the management API's `messages`,
# the `default` strategy; --scale-policy keda-default). Its checks are jobpool's promises, so
# their outcome does not count; only its figures are shown. BASELINE=0 skips it.
keda_scen=()
for s in "${@:-burst trickle}"; do
  for w in $s; do case $w in burst|trickle) keda_scen+=("$w") ;; esac; done
done
if [ "${BASELINE:-1}" = 1 ] && [ ${#keda_scen[@]} -gt 0 ]; then
  mkdir -p "$figs/keda"
  E2E_FIGURES_OUT=$figs/keda E2E_TIMELINE_OUT=$figs/keda/timeline E2E_POLL=30s E2E_CTL_FLAGS="--scale-policy keda-default" \
    "$root/tests/e2e/run.sh" "${keda_scen[@]}" > "$figs/keda/run.log" 2>&1 ||
    echo "bench: the KEDA baseline run broke jobpool's promises, as expected; figures below"
fi

v() { jq -r "$2 // \"-\"" "$figs/$1.json" 2>/dev/null || echo -; }
ms_s() { awk -v x="$1" 'BEGIN { if (x == "-" || x == "null") print "-"; else printf "%.1f", x / 1000 }'; }
row() { # SCENARIO
  local f=$1
  printf '| %s | %s | %s / %s | %s / %s | %s | %s | %s | %s | %s | %s |\n' "$f" \
    "$(v "$f" .messages)" \
    "$(ms_s "$(v "$f" .pub_to_job_p50_ms)")" "$(ms_s "$(v "$f" .pub_to_job_p99_ms)")" \
    "$(ms_s "$(v "$f" .pub_to_task_p50_ms)")" "$(ms_s "$(v "$f" .pub_to_task_p99_ms)")" \
    "$(v "$f" .waste_ratio)" "$(awk -v k="$(v "$f" .peak_rss_kb)" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }')" \
    "$(v "$f" .cpu_ms_per_tick)" "$(v "$f" .api_requests_per_tick)" "$(v "$f" .jobs_per_s)" \
    "$(v "$f" .max_running)"
}
echo
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
for f in burst trickle failures scale; do
  [ -f "$figs/$f.json" ] || continue
  echo
  echo "### $f"
  echo
  echo "| scenario | messages | publish→Job created p50 / p99 s | publish→task start p50 / p99 s | waste | controller peak RSS MiB | CPU ms per tick | API requests per tick | Jobs created per s | max running |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  row "$f"
  if [ -f "$figs/keda/$f.json" ]; then
    row "keda/$f" | sed 's#^| keda/[a-z]* |#| KEDA defaults (30 s poll, `messages`, `default`) |#'
  fi
done
if [ -f "$figs/scale.json" ]; then
  echo
  echo "scale, API requests and CPU per tick by phase (the request rate should not grow with the Job count):"
  echo
  echo "| phase | ticks | API requests per tick | CPU ms per tick | peak RSS MiB | private dirty MiB | requests by verb |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for ph in early late idle; do
    jq -r --arg p "$ph" '.[$p] | "| \($p) | \(.ticks) | \(.api_requests_per_tick) | \(.cpu_ms_per_tick) | \(.peak_rss_kb / 1024 * 10 | round / 10) | \(.private_dirty_kb / 1024 * 10 | round / 10) | \(.api_by_verb | to_entries | map("\(.key) \(.value)") | join(", ")) |"' "$figs/scale.json"
  done
fi
if [ -f "$figs/faults.json" ]; then
  echo
  echo "### faults"
  echo
  echo "| messages | acked after their task ran | task runs (at least once) | dead-lettered | lost |"
  echo "|---:|---:|---:|---:|---:|"
  jq -r '"| \(.messages) | \(.acked) | \(.task_runs) | \(.dead_lettered) | \(.messages - .acked - .dead_lettered) |"' "$figs/faults.json"
fi
# The timelines as PNGs (PLOTS=0 skips them; PLOTS_OUT, default docs/): backlog, workers and
# each message's publish-to-start wait, jobpool against the KEDA-policy baseline.
if [ "${PLOTS:-1}" = 1 ]; then
  echo
  for s in burst trickle; do
    [ -f "$figs/timeline/$s/pub" ] || continue
    k=; [ -f "$figs/keda/timeline/$s/pub" ] && k=$figs/keda/timeline/$s
    python3 "$here/timeline.py" --pub "$figs/timeline/$s/pub" --started "$figs/timeline/$s/started" \
      --jobs "$figs/timeline/jobs.events" --pool "$s" --out "$figs/plot/$s/jobpool" || continue
    if [ -n "$k" ]; then
      python3 "$here/timeline.py" --pub "$k/pub" --started "$k/started" \
        --jobs "$figs/keda/timeline/jobs.events" --pool "$s" --out "$figs/plot/$s/keda" || k=
    fi
    png=${PLOTS_OUT:-$root/docs}/e2e-$s-timeline.png
    "$here/plot_timeline.sh" "$s: jobpool${k:+ vs the KEDA ScaledJob policy (30 s poll, messages, default strategy)}" \
      "$png" "$figs/plot/$s/jobpool" ${k:+"$figs/plot/$s/keda"} && echo "plot: $png"
  done
fi
exit $rc
