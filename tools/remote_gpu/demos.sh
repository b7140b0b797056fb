#!/usr/bin/env bash
# Render and convert demos on the remote GPU host, where SAPIEN renders with the GPU (Vulkan) and 32-64 cores replay in
# parallel. Input: motion plans made on any CPU with task.demos.replay=false (no images, ~30 KB a demo):
#   python convert.py task=pickcube task.image_size=128 task.demos.replay=false task.demos.num_demos=3000 \
#       task.demos.max_attempts=3600 task.demos.seed=10000 task.demos.out_dir=data/planned/pick
# Copied along with the working tree: .whl (gpu_env.sh), .msite/ms_site.tar.xz (build_maniskill.sh), .gl (the Vulkan
# loader debs, README.md) and the planned .h5/.json. Then, on the host:
#   TASK=pickcube PLANNED=data/planned/pick/PickCube-v1.planned.h5 DATA=data/pick3000 SIZE=128 PROCS=48 CONVERT=24 \
#       bash tools/remote_gpu/demos.sh [convert.py overrides]
# 1. ManiSkill's replay_trajectory, PROCS processes: pd_joint_pos -> the task's control mode, with RGB observations
#    (COUNT=N: only the file's first N plans, e.g. to fit a measured replay rate into the time the host is held);
# 2. convert.py with num_workers=CONVERT: the LeRobot dataset (videos) + norm stats in DATA (over MODEL's action
#    horizon: pi05_small by default, 16 steps; MODEL=pi05 for the full model's 50).
# DETACH=1 runs it in its own process session (it outlives the calling shell) and leaves DATA.done or DATA.failed
# behind, with the log in DATA.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${TASK:?}" "${PLANNED:?}" "${DATA:?}"
if [ -n "${DETACH:-}" ]; then
  rm -f "$DATA.done" "$DATA.failed"
  DETACH= setsid nohup bash "$0" "$@" > "$DATA.log" 2>&1 < /dev/null &
  echo "$DATA: replay + convert started in the background (pid $!), log $DATA.log"
  exit 0
fi
fail() { echo "demos.sh: $*" >&2; [ -n "${DATA:-}" ] && touch "$DATA.failed"; exit 1; }
OUT=${OUT:-device_out}; source tools/remote_gpu/gpu_env.sh
source tools/remote_gpu/maniskill_env.sh || fail "no ManiSkill"
TASK_ENV=$(python3 -m tools.remote_gpu.jobs task-env "$TASK") || fail "cannot load task $TASK"
read -r ENV_ID CONTROL BACKEND <<< "$TASK_ENV"
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
python3 convert.py task="$TASK" model="${MODEL:-pi05_small}" task.image_size="${SIZE:-128}" input="$REPLAYED" output="$DATA" \
  use_videos=true num_workers="${CONVERT:-8}" overwrite=true "$@" > "$DATA.convert.log" 2>&1 \
  || { quiet "$DATA.convert.log"; fail "convert failed"; }
quiet "$DATA.convert.log" 2
[ -f "$DATA/norm_stats.json" ] || fail "convert wrote no $DATA/norm_stats.json"
echo "convert: $(( $(date +%s) - t1 )) s"
touch "$DATA.done"
