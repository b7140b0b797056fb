#!/usr/bin/env bash
# Wait for detached training runs (tools/remote_gpu/train.sh DETACH=1) on the device machine, printing each run's newest
# metrics every minute, until all have exited or WAIT seconds have passed; with STOP=1 the runs still going are then
# stopped (SIGTERM: train.py saves the step in progress; checkpoints are written to a temp dir and renamed).
# PACK=<run> then packs that run's newest checkpoint into $OUT (tools/remote_gpu/pack.sh), so that the call brings weights
# back even if the machine is lost before the next call (session 11 lost two trained runs that way); one pi05_small
# run's pack (~55 MB) is about what one call can return (64 MiB).
#   WAIT=540 STOP=1 PACK=pushcube_small3 bash tools/remote_gpu/wait.sh pushcube_small3 pickcube_small1
set -uo pipefail
end=$(( $(date +%s) + ${WAIT:-540} ))
running() { pgrep -f "run_name=$1( |$)" > /dev/null; }
any_running() { for run in "$@"; do running "$run" && return 0; done; return 1; }
report() {
  for run in "$@"; do
    last=$(tail -1 "runs/$run/metrics.jsonl" 2>/dev/null)
    state=$(running "$run" && echo running || echo exited)
    python3 - "$run" "$state" "$last" <<'PY'
import json, sys
run, state, last = sys.argv[1:]
keys = ("step", "train/loss", "perf/step_time_s", "train/lr")
print(run, state, {k: round(v, 4) for k, v in (json.loads(last) if last else {}).items() if k in keys})
PY
  done
}
while any_running "$@"; do
  left=$(( end - $(date +%s) ))
  [ $left -gt 0 ] || break
  sleep $(( left < 60 ? left : 60 ))
  echo "--- $(date +%T)"; report "$@"
done
if [ -n "${STOP:-}" ]; then
  for run in "$@"; do pkill -TERM -f "run_name=$run( |$)"; done
  for _ in $(seq 60); do any_running "$@" || break; sleep 1; done
  echo "--- stopped"; report "$@"
fi
if [ -n "${PACK:-}" ]; then
  RUN=$PACK bash "$(dirname "$0")/pack.sh"
fi
