# Sourced on the remote GPU host (after gpu_env.sh) by demos.sh and eval.sh: ManiSkill from the copied
# .msite/ms_site.tar.xz (build_maniskill.sh), unpacked once per host into /tmp/site_ms, the Vulkan loader from the
# copied .gl debs (README.md), and the NVIDIA Vulkan driver, so that SAPIEN renders on the GPU.
if [ ! -d /tmp/site_ms/mani_skill ]; then
  rm -rf /tmp/site_ms.tmp && mkdir -p /tmp/site_ms.tmp && xz -dc .msite/ms_site.tar.xz | tar -C /tmp/site_ms.tmp -xf - \
    && mv /tmp/site_ms.tmp /tmp/site_ms \
    || { echo "cannot unpack .msite/ms_site.tar.xz (copy .msite along with the working tree)" >&2; return 1; }
fi
if ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export PYTHONPATH=/tmp/site:/tmp/site_ms:$PWD
