#!/usr/bin/env bash
# Full-size Pi0.5 through train.py with FSDP2 on N GPUs vs 1 GPU at the same global batch and micro-batch (synthetic
# batches of the real shapes: 2 cameras + a masked third, 200 prompt tokens, H=50): per-step losses, samples/s per GPU,
# scaling efficiency, peak memory per GPU. One call on an N-GPU host:
#   NGPU=2 STEPS=200 STEPS1=80 BATCH=32 bash bench/multi_gpu.sh      (results in $OUT, or ./bench_out)
set -uo pipefail
OUT=${OUT:-bench_out}; source "$(dirname "$0")/../tools/remote_gpu/gpu_env.sh"
N=${NGPU:-2}; STEPS=${STEPS:-200}; STEPS1=${STEPS1:-80}; BATCH=${BATCH:-32}; HW=${HW:-${N}xh100}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version())" | tee -a "$OUT/gpu.txt"
nvidia-smi --query-gpu=timestamp,index,memory.used,utilization.gpu --format=csv,noheader -lms 5000 > "$OUT/smi.csv" &
SMI=$!
common="model=pi05 synthetic_data.enabled=true batch_size=$BATCH log_interval=1 save_interval=null progress=false seed=0"
timeout ${TIMEOUT_N:-330} python3 train.py $common hardware=$HW num_steps=$STEPS run_name=fsdp$N > "$OUT/fsdp$N.log" 2>&1
echo "N=$N exit $?"; grep -v -i warn "$OUT/fsdp$N.log" | tail -3
# one GPU, the same micro-batch per forward (BATCH/N), N accumulation steps: the same global batch and draws
timeout ${TIMEOUT_1:-220} python3 train.py $common hardware=1xgpu hardware.micro_batch_size=$((BATCH / N)) \
  num_steps=$STEPS1 run_name=fsdp1 > "$OUT/fsdp1.log" 2>&1
echo "N=1 exit $?"; grep -v -i warn "$OUT/fsdp1.log" | tail -3
kill $SMI
for r in fsdp$N fsdp1; do cp runs/$r/metrics.jsonl "$OUT/$r.metrics.jsonl" 2>/dev/null; done
python3 bench/compare_runs.py runs/fsdp$N runs/fsdp1 --gpus $N 1 --json "$OUT/compare.json"
