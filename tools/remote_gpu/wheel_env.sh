# Sourced locally by build_maniskill.sh and build_libero.sh: the pip platform options of the host's Python 3.12, and
# the locally installed version of each package, pinned, so that the host gets what was tested here.
plat=(--python-version 3.12 --implementation cp --only-binary=:all:
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# pinned_requirements SCRIPT PKG...: one "name==version" line per package, or exit naming the one not installed
pinned_requirements() {
  local script=$1 p v; shift
  for p in "$@"; do
    v=$(python3 -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
    [ -n "$v" ] || { echo "$script: $p is not installed (run scripts/setup.sh first)" >&2; exit 1; }
    echo "$p==$v"
  done
}
