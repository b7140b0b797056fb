#!/usr/bin/env bash
# The main job on its embedded default, on CPU: ManiSkill's motion planners generate 4 PickCube demos, they become a
# LeRobot dataset, the tiny Pi0.5 trains on them, and eval.py rolls it out in ManiSkill for a few seeded episodes.
# (Success needs far more data, steps and a bigger model; this shows the whole pipeline running, in a few minutes.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f data/maniskill_pickcube/norm_stats.json ]; then
  python3 convert.py task=pickcube
fi
python3 train.py task=pickcube run_name=quickstart resume=true num_steps=300 batch_size=16 log_interval=25 \
  save_interval=300 optim.lr=1e-3 optim.warmup_steps=30 optim.decay_steps=300 optim.decay_lr=1e-4
python3 eval.py task=pickcube checkpoint=runs/quickstart num_episodes=4 videos=1 hydra.run.dir=runs/quickstart/eval
