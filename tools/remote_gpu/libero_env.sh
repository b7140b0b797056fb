# Sourced on the remote GPU host (after gpu_env.sh) by eval.sh with LIBERO=1: LIBERO from the copied
# .libsite/libero_site.partNN.tar.xz (build_libero.sh), one part per call, joined and unpacked once per host into
# $LIBERO_SITE (/tmp/site_libero) once every part listed in .libsite/MANIFEST has arrived intact; then MuJoCo renders through the
# NVIDIA EGL driver and vla.eval.libero_env.prepare() writes LIBERO's config (no prompt, no download).
LIBERO_SITE=${LIBERO_SITE:-/tmp/site_libero}
if [ ! -d "$LIBERO_SITE/libero" ]; then
  [ -f .libsite/MANIFEST ] || { echo "libero_env.sh: no .libsite/MANIFEST (copy it with the first part)" >&2; return 1; }
  missing=$(awk '{print $2}' .libsite/MANIFEST | while read -r part; do [ -f ".libsite/$part" ] || echo "$part"; done)
  [ -z "$missing" ] || { echo "libero_env.sh: parts not copied yet: $missing" >&2; return 1; }
  (cd .libsite && sha256sum --quiet -c MANIFEST) || { echo "libero_env.sh: a part is damaged: copy it again" >&2; return 1; }
  rm -rf "$LIBERO_SITE.tmp" && mkdir -p "$LIBERO_SITE.tmp" \
    && cat $(awk '{print ".libsite/"$2}' .libsite/MANIFEST) | xz -dc | tar -C "$LIBERO_SITE.tmp" -xf - \
    && mv "$LIBERO_SITE.tmp" "$LIBERO_SITE" \
    || { echo "libero_env.sh: cannot unpack .libsite into $LIBERO_SITE" >&2; return 1; }
fi
# the host has NVIDIA's EGL driver but not the GLVND loader (libEGL.so.1) PyOpenGL opens: the copied .gl debs
if ! ldconfig -p | grep -q libEGL.so.1; then
  [ -d .gl ] || { echo "libero_env.sh: no libEGL.so.1 and no .gl debs (copy .gl, README.md)" >&2; return 1; }
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
fi
if [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export PYTHONPATH=/tmp/site:$LIBERO_SITE:$PWD MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
python3 -c "from vla.eval.libero_env import prepare; print('LIBERO config:', prepare())" 2>&1 | grep -v WARNING \
  || { echo "libero_env.sh: vla.eval.libero_env.prepare() failed" >&2; return 1; }
