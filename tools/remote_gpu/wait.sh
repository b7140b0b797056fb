#!/usr/bin/env bash
# Wait for detached training runs (train.sh DETACH=1) on the remote GPU host, printing each run's newest metrics every
# minute, until all have exited or WAIT seconds have passed; with STOP=1 the runs still going are then stopped
# (SIGTERM: train.py saves the step in progress; checkpoints are written to a temp dir and renamed).
# PACK=<run> then packs that run's newest checkpoint into $OUT (pack.sh), so that this call brings weights back even if
# the host is lost before the next one. One pi05_small run's pack (~55 MB: four shards and a tar) fits one call's
# return when returns are limited to 8 files of 16 MiB; two do not, hence one run per call.
#   WAIT=540 STOP=1 PACK=pushcube_small3 bash tools/remote_gpu/wait.sh pushcube_small3 pickcube_small1
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
end=$(( $(date +%s) + ${WAIT:-540} ))
running() { pgrep -f "run_name=$1( |$)" > /dev/null; }
any_running() { for run in "$@"; do running "$run" && return 0; done; return 1; }
report() {
  for run in "$@"; do
    state=$(running "$run" && echo running || echo exited)
    PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO" python3 -m tools.remote_gpu.jobs report "$run" "$state"
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
