#!/usr/bin/env bash
# Everything a fresh Debian 12 / Python 3.11 machine needs, as root: system libraries, then the Python packages.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

bash scripts/install_system_deps.sh
# lerobot 0.4.4 without its dependencies: its metadata pulls rerun-sdk (numpy>=2 only), which breaks ManiSkill's
# motion planner (mplib 0.1.1 segfaults on numpy 2). setup.cfg lists what lerobot's dataset code really imports.
"$PY" -m pip install -q --no-deps lerobot==0.4.4
"$PY" -m pip install -q -e '.[dev,jax,libero]'
# LIBERO's envs without their dependencies (setup.cfg's `libero` extra lists the ones they import), then LIBERO's
# config file and assets link, so that nothing asks or downloads later (vla.eval.libero_env.prepare)
"$PY" -m pip install -q --no-deps hf-libero==0.1.4
"$PY" -c "from vla.eval.libero_env import prepare; print('LIBERO config:', prepare())"
"$PY" -c "import torch, transformers, lerobot.datasets.lerobot_dataset, mani_skill, vla; print('vla set up: torch', torch.__version__, '| transformers', transformers.__version__)"
