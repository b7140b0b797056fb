# Sourced by the device-call scripts (bench/*.sh, scripts/device_*.sh): $OUT exists, the wheels carried in .whl/ are
# installed into /tmp/site once per machine where hydra/lerobot are missing (a warm machine keeps them between calls),
# and the environment is set.
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if [ -d .whl ] && [ ! -d /tmp/site/hydra ] && ! python3 -c "import hydra, lerobot" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
