#!/usr/bin/env bash
# Real-client check of our compressed-tensors checkpoints (issue 12; BENCHMARKS.md
# "Checkpoints in real clients"): quantize SmolLM2-135M (W4 g64 act-order Qronos, 32 x 512
# calibration tokens) as compressed-tensors pack-quantized, symmetric and asymmetric, then
# measure each folder's perplexity with qronos eval and with transformers + compressed-tensors
# (the pinned venv of ../shared/fixtures/client-setup.sh) on the first 60,000 characters of
# eval.txt at seqlen 512. transformers 5.23 refuses asymmetric pack-quantized on its compressed
# path, so the asym folder is loaded with CompressedTensorsConfig(dequantize=True)
# (--ct-dequantize: compressed-tensors' own decompression of our packed tensors).
# Usage: bash scripts/clients/ct.sh [OUT_DIR]   (default target/clients)
source "$(dirname "$0")/common.sh"
OUT=${1:-target/clients}
mkdir -p "$OUT"
for v in "" "--asym"; do
  dir="$OUT/smollm2-w4-g64-ct${v:+-asym}"
  quantize_smollm2 "$dir" --format compressed-tensors --group-size 64 $v \
    --eval "$F/text/eval.txt" --eval-seqlen 512 --eval-max-chars 60000
  "$VENV/bin/python" "$CLIENT" "$dir" "$F/text/eval.txt" --seqlen 512 --max-chars 60000 \
    --threads 2 ${v:+--ct-dequantize}
done
