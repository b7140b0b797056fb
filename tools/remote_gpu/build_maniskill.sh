#!/usr/bin/env bash
# Pack ManiSkill 3 (+ SAPIEN and the pure-Python packages it imports) for a remote GPU host with Python 3.12 and no
# package index, reached only by a copy of the working tree of at most 64 MiB, into .msite/ms_site.tar.xz, which
# maniskill_env.sh unpacks there (for demos.sh and eval.sh). Run it where ManiSkill is installed (scripts/setup.sh).
#
# The mani_skill wheel is 102 MB, almost all of it assets of robots and scenes the six vla tasks never load; what they
# load (panda, its d415 camera mesh, the table scene) is kept, the rest removed: about 54 MB compressed in all.
# mplib is left out on purpose: only the trajectory *replay* runs there (motion planning runs on any CPU, see
# task.demos.replay), and mplib 0.1.1 segfaults on the numpy 2 that host has. Versions are the ones installed locally.
set -euo pipefail
cd "$(dirname "$0")/../.."
PKGS="mani-skill sapien gymnasium farama-notifications dacite transforms3d trimesh tyro docstring-parser typeguard
      GitPython gitdb smmap ipython asttokens backcall decorator executing jedi parso pexpect pickleshare prompt-toolkit
      ptyprocess pure-eval stack-data traitlets wcwidth pytorch-kinematics arm-pytorch-utilities pytorch-seed defusedxml"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/wheel_env.sh"
# shellcheck disable=SC2086
pinned_requirements build_maniskill.sh $PKGS > "$work/reqs.txt" || exit 1
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/wheels" -r "$work/reqs.txt"
python3 -m pip install -q --no-deps --no-index "${plat[@]}" --target "$work/site" "$work"/wheels/*.whl
site=$work/site
ms=$site/mani_skill
find "$ms/assets/robots" -mindepth 1 -maxdepth 1 ! -name panda -exec rm -rf {} +
keep_d415=$ms/assets/robots/panda/realsense2_description/meshes/d415.stl  # panda_v3.urdf (PegInsertionSide) needs it
mv "$keep_d415" "$work/d415.stl"
rm -rf "$ms/assets/robots/panda/realsense2_description" "$ms/assets/robots/panda/sciurus17_description" \
       "$ms/assets/environment_maps" "$ms/assets/maniskill2-scene-2.glb" "$site/sapien/include" \
       "$site/jedi/third_party/typeshed"
mkdir -p "$(dirname "$keep_d415")" && mv "$work/d415.stl" "$keep_d415"
for scene in replicacad ai2thor robocasa kitchen_counter; do
  find "$ms/utils/scene_builder/$scene" -type f ! -name '*.py' -delete
done
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
mkdir -p .msite
tar -C "$site" -cf - . | xz -T0 -6 > .msite/ms_site.tar.xz.tmp
mv .msite/ms_site.tar.xz.tmp .msite/ms_site.tar.xz
echo "wrote .msite/ms_site.tar.xz ($(du -h .msite/ms_site.tar.xz | cut -f1))"
