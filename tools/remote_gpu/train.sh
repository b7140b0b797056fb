#!/usr/bin/env bash
# Train the small Pi0.5 (model=pi05_small; MODEL=pi0_small for the continuous-state diagnosis) on a carried dataset on
# the device tool's GPU. Extra args go to train.py.
#
# Foreground (one call): a 100-step probe measures the step time and sizes the run to BUDGET seconds (STEPS=N skips
# it), then the EMA weights are packed for the trip back (tools/remote_gpu/pack.sh):
#   TASK=pushcube DATA=data/pushcube200 BUDGET=420 bash tools/remote_gpu/train.sh [key=value ...]
# Detached (DETACH=1): train.py starts in its own process session (setsid), which the device tool leaves running after
# the call returns, for as long as the machine stays warm. Later calls start other runs beside it on the same GPU,
# wait for them (tools/remote_gpu/wait.sh) and pack each (tools/remote_gpu/pack.sh); runs/ persists between the calls.
# The machine goes back 30 s after a call returns, and the run with it: send the chain as one batch of calls.
# TRAIN_TIMEOUT ends a run with SIGTERM, on which train.py saves the step in progress. WAIT_DATA=1 (with DETACH) waits
# for the dataset that tools/remote_gpu/demos.sh is still making on the same machine.
#   DETACH=1 TASK=pushcube DATA=data/pushcube200 STEPS=30000 bash tools/remote_gpu/train.sh optim.decay_steps=6000
set -uo pipefail
OUT=${OUT:-device_out}; source "$(dirname "$0")/gpu_env.sh"
RUN=${RUN:-${TASK}_small}
args=(task=$TASK model=${MODEL:-pi05_small} optim=adamw_scratch hardware=1xgpu hardware.activation_checkpointing=false
      task.image_size=128 task.dataset_root=$DATA cache_images=true batch_size=${BATCH:-128} progress=false "$@")
mkdir -p runs; t0=$(date +%s)
if [ -n "${DETACH:-}" ]; then
  # WAIT_DATA=1: the background session first waits for $DATA.done (tools/remote_gpu/demos.sh DETACH=1 is still making
  # the dataset), and gives up on $DATA.failed
  setsid nohup bash -c 'if [ -n "$WAIT_DATA" ]; then
      until [ -e "$DATA.done" ]; do [ -e "$DATA.failed" ] && { echo "$DATA.failed: no dataset"; exit 1; }; sleep 5; done
    fi; exec "$@"' _ timeout ${TRAIN_TIMEOUT:-1700} python3 train.py "${args[@]}" num_steps=${STEPS:?DETACH needs STEPS} \
    log_interval=50 save_interval=${SAVE:-500} keep_last=2 keep_period=null run_name=$RUN \
    > "runs/$RUN.train.log" 2>&1 < /dev/null &
  echo "$RUN: train.py started in the background (pid $!)${WAIT_DATA:+ once $DATA.done exists}, log runs/$RUN.train.log"
  exit 0
fi
if [ -z "${STEPS:-}" ]; then  # no STEPS given: a 100-step probe sizes the run to BUDGET
  python3 train.py "${args[@]}" num_steps=100 log_interval=50 save_interval=null run_name=${RUN}_probe \
    > "runs/${RUN}_probe.log" 2>&1 || { grep -v -i warn "runs/${RUN}_probe.log" | tail -5; exit 1; }
  STEPS=$(python3 - "$t0" <<PY
import json, sys, time
recs = [json.loads(l) for l in open("runs/${RUN}_probe/metrics.jsonl")]
step_s = recs[-1]["perf/step_time_s"]
startup = time.time() - float(sys.argv[1]) - 100 * step_s
steps = int((${BUDGET:-420} - startup) / step_s) // 100 * 100
print(max(100, min(steps, ${MAX_STEPS:-20000})))
print(f"probe: {step_s*1000:.1f} ms/step, start-up {startup:.0f} s -> {steps} steps", file=sys.stderr)
PY
  )
fi
echo "steps: $STEPS"
timeout ${TRAIN_TIMEOUT:-520} python3 train.py "${args[@]}" num_steps=$STEPS log_interval=50 save_interval=${SAVE:-1000} \
  keep_last=2 keep_period=null run_name=$RUN > "runs/$RUN.train.log" 2>&1
echo "train.py exit $?"
RUN=$RUN OUT=$OUT bash "$(dirname "$0")/pack.sh"
