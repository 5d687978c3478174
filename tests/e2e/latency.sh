#!/usr/bin/env bash
# latency: issue 16's target 3 on the real API server. A trickle of E2E_LAT_N messages (60) at
# random gaps of 0.5-3 s (seeded, so both runs see the same gaps), once per depth source
# (E2E_LAT_SOURCES, default "amqp management"), each with a fresh controller at the default
# pollInterval (2 s). Each message carries its publish time (header x-published-ms; the
# publisher's log keeps it too). Figures: publish -> Job created (the recorder's watch, ms
# resolution, not creationTimestamp's whole seconds), publish -> pod running (the node
# simulator's start), publish -> task start (exact per message); and, beside the management
# run, the management API's own lag: every message also goes to a queue nobody consumes, whose
# `messages` is polled every 50 ms. Checks: every message runs once, waste below 5%. Asserts
# no timing: bench/latency.sh prints the figures. E2E_LAT_MGMT_LAG sets rabbitmq.managementLag for
# the management run (below).
. "$(dirname "$0")/lib.sh"
N=${E2E_LAT_N:-60}
GAPS=${E2E_LAT_GAPS:-0.5,3}
SEED=${E2E_LAT_SEED:-16}
for src in ${E2E_LAT_SOURCES:-amqp management}; do
  pool=lat-$src q=e2e.lat.$src
  out=$(scenario_dir "latency-$src")
  declare_queue "$q"; declare_queue "$q.stats"
  mgmt PUT "/api/exchanges/%2F/$q" '{"type":"fanout","durable":true}' >/dev/null
  mgmt POST "/api/bindings/%2F/e/$q/q/$q" '{"routing_key":""}' >/dev/null
  mgmt POST "/api/bindings/%2F/e/$q/q/$q.stats" '{"routing_key":""}' >/dev/null
  cfg="$E2E_WORK/latency-$src.yaml"
  config_header "$cfg" 2s
  sed -i "s/^  timeout: 3s$/  timeout: 3s\n  depthSource: $src/" "$cfg"
  # E2E_LAT_MGMT_LAG: rabbitmq.managementLag for the management run, for a broker started with
  # lower statistics intervals (JOBPOOL_RMQ_CONF, docs/rabbitmq.md); unset: the default 10s.
  [ "$src" != management ] || [ -z "${E2E_LAT_MGMT_LAG:-}" ] ||
    sed -i "s/^  depthSource: management$/  depthSource: management\n  managementLag: $E2E_LAT_MGMT_LAG/" "$cfg"
  pool_yaml "$pool" "$q" "$out" "    maxActive: 20
    idleTimeout: 10s
    successfulHistory: 10
    failedHistory: 5" >> "$cfg"
  ctrl_start "$cfg"
  sleep 3
  ctrl_window_begin
  $TOOL mgmtwatch --queue "$q.stats" --out "$out/stats" --interval 0.05 &
  watcher=$!
  # A queue declared moments ago has no statistics yet: the lag is measured from the first.
  stats_up() { [ -s "$out/stats" ]; }
  wait_until 30 stats_up || bad "$src: no statistics for $q.stats within 30 s"
  say "$src: publishing $N messages at random gaps of $GAPS s"
  $TOOL publish --queue "$q" --exchange "$q" --count "$N" --gaps "$GAPS" --seed "$SEED" \
    --log "$out/pub" || bad "publish"
  done_all() { [ "$(lines "$out/done")" -ge "$N" ]; }
  wait_until 120 done_all
  figs=$(ctrl_figures)
  # Let late over-starts show up: they wait out idleTimeout and exit.
  settled() { set -- $(job_counts "$pool"); [ "$4" = 0 ] && [ "$(sim_running "$pool")" = 0 ]; }
  wait_until 60 settled
  # The statistics trail the queue by up to ~10 s: keep watching until they show every message.
  stats_all() { [ "$(tail -n 1 "$out/stats" | cut -d' ' -f2)" -ge "$N" ] 2>/dev/null; }
  wait_until 30 stats_all
  kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null
  rep=$($TOOL report --pub "$out/pub" --jobs "$E2E_WORK/jobs.events" --started "$out/started" \
    --sim "$E2E_WORK/sim.events" --pool "$pool")
  lag=$($TOOL lag --pub "$out/pub" --seen "$out/stats")
  check "$src: all $N messages processed once" [ "$(cut -d' ' -f1 "$out/done" | sort -un | wc -l)" = "$N" ]
  check "$src: no duplicate runs" [ "$(lines "$out/done")" = "$N" ]
  w=$(jq .workers_started <<< "$rep"); t=$(jq .tasks_started <<< "$rep")
  check "$src: waste below 5% ($((w - t)) of $w workers found no message)" [ $(( (w - t) * 100 )) -lt $(( 5 * w )) ]
  check "$src: the management lag was sampled for every message" [ "$(jq .samples <<< "$lag")" = "$N" ]
  check_drained "$q"
  figures "latency-$src" "$rep" "$figs" "$lag" "{\"source\": \"$src${E2E_LAT_MGMT_LAG:+ (managementLag $E2E_LAT_MGMT_LAG)}\", \"poll\": \"${E2E_POLL:-2s}\", \"gaps\": \"$GAPS\", \"seed\": $SEED}"
  ctrl_stop
  delete_jobs "$pool"
  mgmt DELETE "/api/queues/%2F/$q.stats" >/dev/null 2>&1 || true
done
finish
