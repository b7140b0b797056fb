#!/usr/bin/env bash
# Q-learning for one trained policy on the remote GPU host: record its episodes with ManiSkill's rewards
# (python -m vla.rl.collect: ENVS env workers on the cores, the policy on the GPU), then train the chunk critic on them
# offline (train.py algo=qchunk); extra args go to train.py. Then evaluate best-of-N under the critic with eval.sh:
# (README, "Q-learning": the policy, ManiSkill and the wheels reach the host in three calls)
#   POLICY=/tmp/pol/pushcube_pi05 RUN=pushcube_q DETACH=1 bash tools/remote_gpu/qchunk.sh
#   for n in 4 16; do ARGS="critic=runs/pushcube_q best_of_n=$n" TAG=bon$n SEEDS="100000 300000" ENVS=4 DETACH=1 \
#     bash tools/remote_gpu/eval.sh /tmp/pol/pushcube_pi05:0; done
# The one-step actor (FQL) on the same rollouts (reused), then acting with it alone and best-of-N of its samples:
#   POLICY=/tmp/pol/pushcube_pi05 ROLLOUTS_OF=pushcube_q RUN=pushcube_fql DETACH=1 bash tools/remote_gpu/qchunk.sh \
#     algo.actor.enabled=true algo.actor.method=distill algo.actor.start_step=0 algo.actor.alpha=0.03
#   ARGS="actor=runs/pushcube_fql" TAG=fql ... eval.sh ...; ARGS="actor=runs/pushcube_fql critic=runs/pushcube_fql \
#     best_of_n=4" TAG=fqlbon4 ... eval.sh ...
# EPISODES (200) episodes from seed SEED (200000): away from the demo seeds (10000-) and the held-out evaluation seeds
# (100000-). The rollouts go to data/rollouts/${ROLLOUTS_OF:-$RUN} (kept: a second call reuses them), the critic to
# runs/$RUN.
# DETACH=1 runs it in its own process session and leaves runs/$RUN.done or runs/$RUN.failed, the log in runs/$RUN.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${POLICY:?}" "${RUN:?}"
OUT=${OUT:-device_out}; source tools/remote_gpu/gpu_env.sh
mkdir -p runs data/rollouts
if [ -n "${DETACH:-}" ]; then
  rm -f "runs/$RUN.done" "runs/$RUN.failed"
  DETACH= setsid nohup bash "$0" "$@" > "runs/$RUN.log" 2>&1 < /dev/null &
  echo "$RUN: rollouts + critic started in the background (pid $!), log runs/$RUN.log"
  exit 0
fi
fail() { echo "qchunk.sh: $*" >&2; touch "runs/$RUN.failed"; exit 1; }
source tools/remote_gpu/maniskill_env.sh || fail "no ManiSkill"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per env worker
ROLLOUTS=data/rollouts/${ROLLOUTS_OF:-$RUN}
t0=$(date +%s)
if [ ! -f "$ROLLOUTS/rollouts.json" ]; then
  python3 -m vla.rl.collect --out "$ROLLOUTS" --episodes "${EPISODES:-200}" --seed "${SEED:-200000}" --overwrite \
    checkpoint="$POLICY" num_envs="${ENVS:-14}" device=cuda compile="${COMPILE:-false}" progress=false \
    || fail "collect failed"
fi
t1=$(date +%s); echo "rollouts: $((t1 - t0)) s"
python3 train.py algo=qchunk checkpoint="$POLICY" "algo.data=[$ROLLOUTS]" hardware=1xgpu run_name="$RUN" \
  progress=false "$@" || fail "train.py failed"
echo "critic: $(( $(date +%s) - t1 )) s"
touch "runs/$RUN.done"
