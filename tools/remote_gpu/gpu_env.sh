# Sourced, from the repository root, by the scripts that run on the remote GPU host (tools/remote_gpu/*.sh,
# bench/gpu_smoke.sh, bench/multi_gpu.sh): $OUT exists, the wheels copied in .whl/ are installed into /tmp/site once
# per host where hydra/lerobot are missing (a host kept between calls keeps them), and the environment is set: no hub
# access, unbuffered output, NVLink multicast off (NCCL's NVLS and torch's symmetric-memory multicast).
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if [ -d .whl ] && [ ! -d /tmp/site/hydra ] && ! python3 -c "import hydra, lerobot" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
# the configs are the package vla.conf (conf/, mapped by setup.cfg): an editable install, offline and without
# dependencies, makes it importable
python3 -c "import vla.conf" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
  > /tmp/vla_install.log 2>&1 || { cat /tmp/vla_install.log; exit 1; }
