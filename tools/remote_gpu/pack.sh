#!/usr/bin/env bash
# Pack run RUN's newest checkpoint into $OUT for the trip back from the remote GPU host: the EMA weights as bf16 shards
# of at most SHARD_MIB (15) MiB (pack_checkpoint.py) and one tar of the config, norm stats, tokenizer, metrics,
# TensorBoard file and logs. Unpack on the other side, with the shards and RUN.tar in one folder:
#   tar xf RUN.tar && mv *-of-*.safetensors RUN/ && \
#   python tools/remote_gpu/pack_checkpoint.py unpack RUN runs/RUN/checkpoints/$(cat RUN/STEP)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-device_out}; source "$(dirname "$0")/gpu_env.sh"
grep -v -i warn "runs/$RUN.train.log" | tail -2
# the checkpoint evaluation would load (vla.runs.resolve_checkpoint): the newest step that holds weights
CKPT=$(PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO" python3 -m tools.remote_gpu.jobs newest-checkpoint "runs/$RUN")
echo "last checkpoint: ${CKPT:-none}"
[ -n "$CKPT" ] || exit 1
rm -rf /tmp/pack/$RUN && mkdir -p /tmp/pack
python3 "$(dirname "$0")/pack_checkpoint.py" pack "$CKPT" /tmp/pack/$RUN --shard-mib "${SHARD_MIB:-15}" || exit 1
mv /tmp/pack/$RUN/*-of-*.safetensors "$OUT/"
echo "${CKPT##*/}" > /tmp/pack/$RUN/STEP
cp runs/$RUN/metrics.jsonl runs/$RUN/events.out.tfevents.* runs/$RUN.train.log /tmp/pack/$RUN/ 2>/dev/null
cp runs/${RUN}_probe.log /tmp/pack/$RUN/ 2>/dev/null
tar -C /tmp/pack -cf "$OUT/$RUN.tar" $RUN && ls -la "$OUT"
