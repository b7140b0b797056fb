#!/usr/bin/env bash
# Train the small Pi0.5 (model=pi05_small; MODEL=pi0_small for the continuous-state diagnosis) on a copied dataset on
# the remote GPU host. Extra args go to train.py.
#
# Foreground: a 100-step probe measures the step time and sizes the run to BUDGET seconds, start-up included, at most
# MAX_STEPS (STEPS=N skips it), then the EMA weights are packed for the trip back (pack.sh):
#   TASK=pushcube DATA=data/pushcube200 BUDGET=420 bash tools/remote_gpu/train.sh [key=value ...]
# Detached (DETACH=1): train.py starts in its own process session (setsid), which outlives the calling shell. Later
# calls start other runs beside it on the same GPU, wait for them (wait.sh) and pack each (pack.sh); runs/ persists
# between the calls. A run lives only as long as the host: if the host may be released soon after a call returns,
# send the chain as one batch of calls.
# TRAIN_TIMEOUT ends a run with SIGTERM, on which train.py saves the step in progress. WAIT_DATA=1 (with DETACH) waits
# for the dataset that demos.sh is still making on the same host.
#   DETACH=1 TASK=pushcube DATA=data/pushcube200 STEPS=30000 bash tools/remote_gpu/train.sh optim.decay_steps=6000
set -uo pipefail
OUT=${OUT:-device_out}; source "$(dirname "$0")/gpu_env.sh"
RUN=${RUN:-${TASK}_small}
args=(task=$TASK model=${MODEL:-pi05_small} optim=adamw_scratch hardware=1xgpu hardware.activation_checkpointing=false
      task.image_size=128 task.dataset_root=$DATA cache_images=true batch_size=${BATCH:-128} progress=false "$@")
mkdir -p runs; t0=$(date +%s)
if [ -n "${DETACH:-}" ]; then
  # WAIT_DATA=1: the background session first waits for $DATA.done (demos.sh DETACH=1 is still making the dataset),
  # and gives up on $DATA.failed
  setsid nohup bash -c 'if [ -n "$WAIT_DATA" ]; then
      until [ -e "$DATA.done" ]; do [ -e "$DATA.failed" ] && { echo "$DATA.failed: no dataset"; exit 1; }; sleep 5; done
    fi; exec "$@"' _ timeout ${TRAIN_TIMEOUT:-1700} python3 train.py "${args[@]}" num_steps=${STEPS:?DETACH needs STEPS} \
    log_interval=50 save_interval=${SAVE:-500} keep_last=2 keep_period=null run_name=$RUN \
    > "runs/$RUN.train.log" 2>&1 < /dev/null &
  echo "$RUN: train.py started in the background (pid $!)${WAIT_DATA:+ once $DATA.done exists}, log runs/$RUN.train.log"
  exit 0
fi
if [ -z "${STEPS:-}" ]; then  # no STEPS given: a short probe sizes the run to BUDGET
  probe_steps=100
  python3 train.py "${args[@]}" num_steps=$probe_steps log_interval=50 save_interval=null run_name=${RUN}_probe \
    > "runs/${RUN}_probe.log" 2>&1 || { grep -v -i warn "runs/${RUN}_probe.log" | tail -5; exit 1; }
  STEPS=$(python3 -m tools.remote_gpu.jobs size-run "runs/${RUN}_probe/metrics.jsonl" --started "$t0" \
    --probe-steps $probe_steps --budget "${BUDGET:-420}" --max-steps "${MAX_STEPS:-20000}") || exit 1
fi
echo "steps: $STEPS"
timeout ${TRAIN_TIMEOUT:-520} python3 train.py "${args[@]}" num_steps=$STEPS log_interval=50 save_interval=${SAVE:-1000} \
  keep_last=2 keep_period=null run_name=$RUN > "runs/$RUN.train.log" 2>&1
echo "train.py exit $?"
RUN=$RUN OUT=$OUT bash "$(dirname "$0")/pack.sh"
