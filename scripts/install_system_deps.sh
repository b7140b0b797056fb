#!/usr/bin/env bash
# System libraries the data pipeline needs on Debian 12 (bookworm), run as root. Idempotent and non-interactive.
#  * FFmpeg shared libraries: torchcodec (lerobot's video decoder) dlopens them; without them it fails to load.
#  * Mesa 25 lavapipe (CPU Vulkan) from bookworm-backports: SAPIEN needs Vulkan even for state-only envs, and
#    bookworm's own Mesa 22.3 lacks descriptorBindingPartiallyBound ("Failed to find a supported physical device").
#  * Mesa's EGL (libegl1 + libegl-mesa0, the backports build beside that Mesa): MuJoCo renders LIBERO headless with
#    MUJOCO_GL=egl, on the CPU.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
  echo "install_system_deps.sh: run as root" >&2
  exit 1
fi

# Enable bookworm-backports by adding the suite to the existing Debian entry (no mirror is named here).
deb822=/etc/apt/sources.list.d/debian.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [ -f "$deb822" ] && grep -q '^Suites: bookworm bookworm-updates$' "$deb822"; then
    sed -i 's/^Suites: bookworm bookworm-updates$/& bookworm-backports/' "$deb822"
  elif [ -f /etc/apt/sources.list ] && grep -qE '^deb [^ ]+ bookworm main' /etc/apt/sources.list; then
    # One-line format: reuse the URI of the existing bookworm line.
    grep -E '^deb [^ ]+ bookworm main' /etc/apt/sources.list | head -n1 |
      sed 's/ bookworm main/ bookworm-backports main/' >/etc/apt/sources.list.d/bookworm-backports.list
  else
    echo "install_system_deps.sh: no Debian bookworm apt source found to add bookworm-backports to" >&2
    exit 1
  fi
fi

apt-get update -q
apt-get install -y -q --no-install-recommends \
  libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4
apt-get install -y -q --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0

# Fail here, not later inside SAPIEN, if the backports driver did not land.
mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)
case "$mesa_version" in
  2[5-9].*) echo "mesa-vulkan-drivers $mesa_version (lavapipe) installed" ;;
  *) echo "install_system_deps.sh: mesa-vulkan-drivers $mesa_version is too old (need >= 25)" >&2; exit 1 ;;
esac
