#!/usr/bin/env bash
# The main job on its embedded default, on CPU: ManiSkill's motion planners generate 4 PickCube demos, they become a
# LeRobot dataset, the tiny Pi0.5 trains on them, and eval.py rolls it out in ManiSkill for a few seeded episodes
# (too little data and model to succeed: this shows the pipeline running). Then the shipped PushCube policy
# (policies/pushcube_pi05, `python train.py +experiment=pushcube_pi05` on one GPU) for a few episodes: a policy that
# succeeds. A few minutes on a 2-core CPU; results in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f data/maniskill_pickcube/norm_stats.json ]; then
  python3 convert.py task=pickcube
fi
python3 train.py task=pickcube run_name=quickstart resume=true num_steps=300 batch_size=16 log_interval=25 \
  save_interval=300 optim.lr=1e-3 optim.warmup_steps=30 optim.decay_steps=300 optim.decay_lr=1e-4
python3 eval.py checkpoint=runs/quickstart eval.num_episodes=4 videos=1 hydra.run.dir=runs/quickstart/eval
python3 eval.py checkpoint=policies/pushcube_pi05 eval.num_episodes=4 videos=2 \
  hydra.run.dir=runs/quickstart/eval_pushcube_pi05
