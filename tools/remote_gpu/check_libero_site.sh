#!/usr/bin/env bash
# Check, locally, that the pruned LIBERO site of build_libero.sh is enough for its suite: the parts in .libsite are
# joined and unpacked into a temp folder, and every task of the suite is built, reset and stepped (STEPS, default 3)
# by a Python that sees that site in place of the local LIBERO. The local site-packages are offered minus every package
# the pruned site holds (links to the rest, `python3 -S`), as the host offers its own packages: a file pruned by
# mistake fails the check instead of being found in the local installation. The site's MuJoCo is built for the host's
# Python 3.12, so the local MuJoCo (same version, no assets) takes its place here.
#   bash tools/remote_gpu/check_libero_site.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-3}
suite=$(awk '/^suite /{print $2}' .libsite/SUITE)
(cd .libsite && sha256sum --quiet -c MANIFEST)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/site" "$work/host"
cat $(awk '{print ".libsite/"$2}' .libsite/MANIFEST) | xz -dc | tar -C "$work/site" -xf -
local_site=$(python3 -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('robosuite').origin).parents[1])")
rm -rf "$work/site/mujoco" && ln -s "$local_site/mujoco" "$work/site/mujoco"
for entry in "$local_site"/*; do  # the local packages, minus those of the pruned site (dist-info names differ by -/_)
  name=$(basename "$entry"); key=$(echo "${name%%-[0-9]*}" | tr 'A-Z-' 'a-z_')
  ls "$work/site" | sed 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | grep -qx "$key" || ln -s "$entry" "$work/host/$name"
done
echo "$suite: $(du -sm "$work/site" | cut -f1) MB unpacked; checking with $STEPS steps per task"
HOME=$work PYTHONPATH=$work/site:$work/host:$PWD MUJOCO_GL=${MUJOCO_GL:-egl} \
  python3 -S -m tools.remote_gpu.libero_files "$suite" --check "$STEPS" 2>&1 | grep -v -E 'WARNING|^\[info\]'
