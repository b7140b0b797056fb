#!/usr/bin/env bash
# Evaluate trained runs on the remote GPU host, where 64 cores step the CPU physics of many env workers while the GPU
# renders and runs the policy: one eval.py per run, side by side, each on its own GPU, over each seed set.
#   SEEDS="100000 300000" ENVS=14 DETACH=1 bash tools/remote_gpu/eval.sh pushcube_pi05:0 pushcube_pi0:1
# Each evaluation follows the run's recorded recipe (task, episodes, replan steps, ...); SEEDS gives the first episode
# seeds (default: the recipe's), EPISODES=N and REPLAN=N change its episode count and eval.replan_steps. The policy
# runs compiled and CUDA-graphed (eval.py compile=true: 89/100 PushCube as eager, docs/results.md); COMPILE=false
# runs it eager; VIDEOS=N records the first N episodes of each evaluation (eval.py videos=N); TAG=x names the result
# dirs runs/eval/<run>_<seed>_x, so that two settings of one run and seed set can run side by side; ARGS="k=v ..." adds
# eval.py overrides (e.g. ARGS="latency.delay_steps=4 latency.rtc=true" TAG=d4_rtc).
# Each spec is run:gpu: the run's newest checkpoint in runs/<run>, or a checkpoint directory given by its path (a
# shipped policy: policies/pushcube_pi05:0), named by its last component. Each evaluation writes runs/eval/<run>_<seed>/
# (summary.json, episodes.json, ...), its log next to it and a .done or .failed marker. DETACH=1 starts them in their
# own process session, which outlives the calling shell; WAIT=N (with no specs) then waits up to N seconds for every
# eval.py to end, prints each summary, and with STOP=1 ends those still running ("[p]" in the patterns keeps them from
# matching a calling shell whose command line holds them). Env construction, control mode and sim backend are those of
# the CPU evaluation (physx_cpu); only rendering moves to the GPU (mean pixel difference 0.32/255 against lavapipe,
# docs/results.md) and the policy runs on it.
# LIBERO=1 evaluates on LIBERO instead (libero_env.sh: the copied .libsite parts, MuJoCo on the NVIDIA EGL driver); the
# suite and model come in ARGS, e.g. ARGS="task=libero_spatial model=pi05_tiny model.discrete_state_input=false"
# for the checkpoint of synthetic_libero_checkpoint.py (README.md, LIBERO).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-device_out}; source tools/remote_gpu/gpu_env.sh
if [ -n "${LIBERO:-}" ]; then source tools/remote_gpu/libero_env.sh || exit 1
else source tools/remote_gpu/maniskill_env.sh || exit 1; fi
mkdir -p runs/eval
if [ $# -eq 0 ]; then  # wait for the detached evaluations
  end=$(( $(date +%s) + ${WAIT:-300} ))
  while pgrep -f "[p]ython3 eval.py" > /dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  if pgrep -f "[p]ython3 eval.py" > /dev/null; then
    echo "eval.sh: still running after ${WAIT:-300} s${STOP:+: stopped}"
    [ -n "${STOP:-}" ] && pkill -f "[p]ython3 eval.py"
  fi
  python3 -m tools.remote_gpu.jobs summaries runs/eval
  exit 0
fi
if [ -n "${DETACH:-}" ]; then
  DETACH= setsid nohup bash "$0" "$@" > "runs/eval/device_eval.$$.log" 2>&1 < /dev/null &
  echo "evaluations started in the background (pid $!), log runs/eval/device_eval.$$.log"
  exit 0
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per env worker: 50+ workers share the cores
for spec in "$@"; do
  IFS=: read -r run gpu <<< "$spec"
  ckpt=runs/$run; case $run in */*) ckpt=$run; run=$(basename "$run");; esac
  ( for seed in ${SEEDS:-recipe}; do
      dir=runs/eval/${run}_$seed${TAG:+_$TAG}
      CUDA_VISIBLE_DEVICES=$gpu python3 eval.py checkpoint="$ckpt" num_envs="${ENVS:-14}" device=cuda \
        compile="${COMPILE:-true}" videos="${VIDEOS:-0}" progress=false hydra.run.dir="$dir" \
        $([ "$seed" != recipe ] && echo "eval.seed=$seed") ${EPISODES:+eval.num_episodes=$EPISODES} \
        ${REPLAN:+eval.replan_steps=$REPLAN} ${ARGS:-} > "$dir.log" 2>&1 && touch "$dir.done" || { touch "$dir.failed"; tail -3 "$dir.log"; }
    done ) &
done
wait
