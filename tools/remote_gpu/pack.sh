#!/usr/bin/env bash
# Pack run RUN's newest checkpoint into $OUT for the device tool's trip back: the EMA weights as bf16 shards of at most
# 15 MiB (tools/remote_gpu/pack_checkpoint.py) and one tar of the config, norm stats, tokenizer, metrics, TensorBoard file and
# logs. Unpack here with: tar xf RUN.tar && python tools/remote_gpu/pack_checkpoint.py unpack RUN runs/RUN/checkpoints/STEP
set -uo pipefail
OUT=${OUT:-device_out}; source "$(dirname "$0")/gpu_env.sh"
grep -v -i warn "runs/$RUN.train.log" | tail -2
CKPT=$(ls -d runs/$RUN/checkpoints/[0-9]* 2>/dev/null | grep -E '/[0-9]+$' | sort -t/ -k4 -n | tail -1)
echo "last checkpoint: ${CKPT:-none}"
[ -n "$CKPT" ] || exit 1
rm -rf /tmp/pack/$RUN && mkdir -p /tmp/pack
python3 "$(dirname "$0")/pack_checkpoint.py" pack "$CKPT" /tmp/pack/$RUN --shard-mib 15 || exit 1
mv /tmp/pack/$RUN/*-of-*.safetensors "$OUT/"
echo "${CKPT##*/}" > /tmp/pack/$RUN/STEP
cp runs/$RUN/metrics.jsonl runs/$RUN/events.out.tfevents.* runs/$RUN.train.log /tmp/pack/$RUN/ 2>/dev/null
cp runs/${RUN}_probe.log /tmp/pack/$RUN/ 2>/dev/null
tar -C /tmp/pack -cf "$OUT/$RUN.tar" $RUN && ls -la "$OUT"
