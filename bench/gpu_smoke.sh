#!/usr/bin/env bash
# One call on a GPU host: full-size Pi0.5 through train.py on one GPU, on a converted dataset (DATA, default
# data/gpu_pickcube; STEPS, BATCH; extra args go to train.py). The GPU's name, the log and metrics.jsonl go to $OUT (or
# ./bench_out); bench/train_step.py is the training-step benchmark. On a remote GPU host without hydra/lerobot, needs
# the wheels listed in tools/remote_gpu/README.md in .whl/.
set -uo pipefail
OUT=${OUT:-bench_out}; source "$(dirname "$0")/../tools/remote_gpu/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, lerobot; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
DATA=${DATA:-data/gpu_pickcube}
timeout 300 python3 train.py model=pi05 hardware=1xgpu task.dataset_root=$DATA num_steps=${STEPS:-16} \
  log_interval=8 save_interval=null batch_size=${BATCH:-16} run_name=gpu_pi05 progress=false "$@" > "$OUT/train.log" 2>&1
echo "train.py exit $?"; grep -v -i warn "$OUT/train.log" | tail -4; cp runs/gpu_pi05/metrics.jsonl "$OUT/" 2>/dev/null
