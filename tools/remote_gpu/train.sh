#!/usr/bin/env bash
# Train a recipe (conf/experiment) on its dataset on the remote GPU host; extra args go to train.py. The run is
# runs/$RUN (default: the experiment's name), on one GPU without recomputation (the small models fit easily), with every
# frame decoded once into memory (cache_images=true).
#
# Foreground: train.py runs to the recipe's num_steps (or STEPS=N), then the EMA weights are packed for the trip back
# (pack.sh):   EXPERIMENT=pushcube_pi05 bash tools/remote_gpu/train.sh [key=value ...]
# Detached (DETACH=1): train.py starts in its own process session (setsid), which outlives the calling shell. Later
# calls start other runs beside it on the same GPU, wait for them (wait.sh) and pack each (pack.sh); runs/ persists
# between the calls. A run lives only as long as the host: if the host may be released soon after a call returns,
# send the chain as one batch of calls.
# TRAIN_TIMEOUT ends a run with SIGTERM, on which train.py saves the step in progress. WAIT_DATA=1 (with DETACH) waits
# for the dataset that demos.sh is still making on the same host.
#   DETACH=1 WAIT_DATA=1 EXPERIMENT=pushcube_pi0 TRAIN_TIMEOUT=1200 bash tools/remote_gpu/train.sh
set -uo pipefail
OUT=${OUT:-device_out}; source "$(dirname "$0")/gpu_env.sh"
: "${EXPERIMENT:?}"
RUN=${RUN:-$EXPERIMENT}
RECIPE=$(python3 -m tools.remote_gpu.jobs recipe "$EXPERIMENT") || { echo "train.sh: no recipe $EXPERIMENT" >&2; exit 1; }
read -r RECIPE_DATA _ <<< "$RECIPE"
DATA=${DATA:-$RECIPE_DATA}
args=(+experiment=$EXPERIMENT hardware=1xgpu hardware.activation_checkpointing=false hardware.reshard_after_forward=false
      hardware.num_workers=${WORKERS:-6} task.dataset_root=$DATA cache_images=true progress=false log_interval=50
      save_interval=${SAVE:-500} keep_last=2 keep_period=null run_name=$RUN ${STEPS:+num_steps=$STEPS} "$@")
mkdir -p runs
if [ -n "${DETACH:-}" ]; then
  # WAIT_DATA=1: the background session first waits for $DATA.done (demos.sh DETACH=1 is still making the dataset),
  # and gives up on $DATA.failed
  WAIT_DATA=${WAIT_DATA:-} DATA=$DATA setsid nohup bash -c 'if [ -n "$WAIT_DATA" ]; then
      until [ -e "$DATA.done" ]; do [ -e "$DATA.failed" ] && { echo "$DATA.failed: no dataset"; exit 1; }; sleep 5; done
    fi; exec "$@"' _ timeout ${TRAIN_TIMEOUT:-1700} python3 train.py "${args[@]}" > "runs/$RUN.train.log" 2>&1 \
    < /dev/null &
  echo "$RUN: train.py started in the background (pid $!)${WAIT_DATA:+ once $DATA.done exists}, log runs/$RUN.train.log"
  exit 0
fi
timeout ${TRAIN_TIMEOUT:-1700} python3 train.py "${args[@]}" > "runs/$RUN.train.log" 2>&1
echo "train.py exit $?"
RUN=$RUN OUT=$OUT bash "$(dirname "$0")/pack.sh"
