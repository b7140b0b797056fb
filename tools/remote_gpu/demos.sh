#!/usr/bin/env bash
# Render and convert a recipe's demos on the remote GPU host, where SAPIEN renders with the GPU (Vulkan) and many cores
# replay in parallel. Input: the recipe's motion plans, made on any CPU (no images, ~30 KB a demo):
#   python convert.py +experiment=pushcube_pi05 task.demos.replay=false task.demos.out_dir=data/planned/push
# Copied along with the working tree: .whl (gpu_env.sh), .msite/ms_site.tar.xz (build_maniskill.sh), .gl (the Vulkan
# loader debs, README.md) and the planned .h5/.json. Then, on the host:
#   EXPERIMENT=pushcube_pi05 PLANNED=data/planned/push/PushCube-v1.planned.h5 PROCS=16 CONVERT=14 \
#       bash tools/remote_gpu/demos.sh [convert.py overrides]
# 1. ManiSkill's replay_trajectory, PROCS processes: pd_joint_pos -> the task's control mode, with RGB observations
#    (COUNT=N: only the file's first N plans, e.g. to fit a measured replay rate into the time the host is held);
# 2. convert.py +experiment=EXPERIMENT with num_workers=CONVERT: the LeRobot dataset + norm stats at the recipe's
#    task.dataset_root (DATA=<dir> puts it elsewhere).
# DETACH=1 runs it in its own process session (it outlives the calling shell) and leaves DATA.done or DATA.failed
# behind, with the log in DATA.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${EXPERIMENT:?}" "${PLANNED:?}"
OUT=${OUT:-device_out}; source tools/remote_gpu/gpu_env.sh
RECIPE=$(python3 -m tools.remote_gpu.jobs recipe "$EXPERIMENT") || { echo "demos.sh: no recipe $EXPERIMENT" >&2; exit 1; }
read -r RECIPE_DATA ENV_ID CONTROL BACKEND <<< "$RECIPE"
DATA=${DATA:-$RECIPE_DATA}
mkdir -p "$(dirname "$DATA")"
if [ -n "${DETACH:-}" ]; then
  rm -f "$DATA.done" "$DATA.failed"
  DETACH= setsid nohup bash "$0" "$@" > "$DATA.log" 2>&1 < /dev/null &
  echo "$DATA: replay + convert started in the background (pid $!), log $DATA.log"
  exit 0
fi
fail() { echo "demos.sh: $*" >&2; [ -n "${DATA:-}" ] && touch "$DATA.failed"; exit 1; }
source tools/remote_gpu/maniskill_env.sh || fail "no ManiSkill"
[ -f "$PLANNED" ] || fail "$PLANNED: no such file"
REPLAYED=$(dirname "$PLANNED")/$ENV_ID.rgb.$CONTROL.$BACKEND.h5
# one thread per process: every replay process (and convert shard) works on one episode at a time, and torch/OpenMP
# pools of a thread per core in each of 60 processes oversubscribe the host (loads of 84-156 were measured on 64 cores)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
t0=$(date +%s)
quiet() { tr '\r' '\n' < "$1" | grep -v -i "warn\|^Remove\|Merging\|step/s\]$\|svt\[" | tail -n "${2:-20}"; }
python3 -m mani_skill.trajectory.replay_trajectory --traj-path "$PLANNED" -o rgb -c "$CONTROL" -b "$BACKEND" \
  --save-traj -n "${PROCS:-16}" ${COUNT:+--count "$COUNT"} > "$DATA.replay.log" 2>&1 \
  || { quiet "$DATA.replay.log"; fail "replay failed"; }
quiet "$DATA.replay.log" 3
[ -f "$REPLAYED" ] || fail "replay wrote no $REPLAYED"
t1=$(date +%s); echo "replay: $((t1 - t0)) s"
python3 convert.py +experiment="$EXPERIMENT" input="$REPLAYED" output="$DATA" num_workers="${CONVERT:-8}" overwrite=true \
  "$@" > "$DATA.convert.log" 2>&1 \
  || { quiet "$DATA.convert.log"; fail "convert failed"; }
quiet "$DATA.convert.log" 2
[ -f "$DATA/norm_stats.json" ] || fail "convert wrote no $DATA/norm_stats.json"
echo "convert: $(( $(date +%s) - t1 )) s"
touch "$DATA.done"
