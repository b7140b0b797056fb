#!/usr/bin/env bash
# Wait for detached training runs (scripts/device_train.sh DETACH=1) on the device machine, printing each run's newest
# metrics every minute, until all have exited or WAIT seconds have passed; with STOP=1 the runs still going are then
# stopped (SIGTERM; checkpoints are written to a temp dir and renamed, so the newest complete one is intact).
#   WAIT=540 STOP=1 bash scripts/device_wait.sh pushcube_small3 pickcube_small1
set -uo pipefail
end=$(( $(date +%s) + ${WAIT:-540} ))
running() { pgrep -f "run_name=$1( |$)" > /dev/null; }
report() {
  for run in "$@"; do
    last=$(tail -1 "runs/$run/metrics.jsonl" 2>/dev/null)
    python3 -c "import json,sys; r=json.loads(sys.argv[2]) if sys.argv[2] else {}; print(sys.argv[1], 'running' if sys.argv[3]=='1' else 'exited', {k: round(v, 4) for k, v in r.items() if k in ('step', 'train/loss', 'perf/step_time_s', 'train/lr')})" \
      "$run" "$last" "$(running "$run" && echo 1 || echo 0)"
  done
}
while [ "$(date +%s)" -lt "$end" ]; do
  alive=0; for run in "$@"; do running "$run" && alive=1; done
  [ $alive = 1 ] || break
  sleep $(( end - $(date +%s) < 60 ? (end - $(date +%s) > 0 ? end - $(date +%s) : 0) : 60 ))
  echo "--- $(date +%T)"; report "$@"
done
if [ -n "${STOP:-}" ]; then
  for run in "$@"; do pkill -TERM -f "run_name=$run( |$)"; done
  for _ in $(seq 60); do alive=0; for run in "$@"; do running "$run" && alive=1; done; [ $alive = 1 ] || break; sleep 1; done
  echo "--- stopped"; report "$@"
fi
