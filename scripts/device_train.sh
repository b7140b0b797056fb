#!/usr/bin/env bash
# One device-tool call: train the small Pi0.5 (model=pi05_small) on a carried dataset for as many steps as fit in
# BUDGET seconds (a 100-step probe measures the step time first; STEPS=N skips it), then pack the EMA weights for the trip back
# (bf16 shards <= 15 MiB, see scripts/pack_checkpoint.py) and tar the config, norm stats, tokenizer, metrics,
# TensorBoard file and log (the device tool returns at most 8 files). Usage (extra args go to train.py):
#   TASK=pushcube DATA=data/pushcube200 BUDGET=420 bash scripts/device_train.sh [key=value ...]
set -uo pipefail
OUT=${OUT:-device_out}; source "$(dirname "$0")/../bench/gpu_env.sh"
RUN=${RUN:-${TASK}_small}
args=(task=$TASK model=pi05_small optim=adamw_scratch hardware=1xgpu hardware.activation_checkpointing=false
      task.image_size=128 task.dataset_root=$DATA cache_images=true batch_size=${BATCH:-128} progress=false "$@")
mkdir -p runs; t0=$(date +%s)
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
  keep_period=null run_name=$RUN > "runs/$RUN.train.log" 2>&1
echo "train.py exit $?"; grep -v -i warn "runs/$RUN.train.log" | tail -2
CKPT=$(ls -d runs/$RUN/checkpoints/* 2>/dev/null | sort -t/ -k4 -n | tail -1)
echo "last checkpoint: $CKPT"
mkdir -p /tmp/pack && [ -n "$CKPT" ] && python3 scripts/pack_checkpoint.py pack "$CKPT" /tmp/pack/$RUN --shard-mib 15
mv /tmp/pack/$RUN/*-of-*.safetensors "$OUT/"
cp runs/$RUN/metrics.jsonl runs/$RUN/events.out.tfevents.* runs/$RUN.train.log runs/${RUN}_probe.log /tmp/pack/$RUN/ 2>/dev/null
tar -C /tmp/pack -cf "$OUT/$RUN.tar" $RUN && ls -la "$OUT"
