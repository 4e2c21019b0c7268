#!/usr/bin/env bash
# Real-client check of our GPTQ checkpoints (issue 12; BENCHMARKS.md "Checkpoints in real
# clients"): quantize SmolLM2-135M (W4 g128 act-order Qronos, 32 x 512 calibration tokens) as
# gptq (sym) and gptq_v2 (asym), then measure each folder's perplexity with qronos eval and with
# transformers + gptqmodel (the pinned venv of ../shared/fixtures/client-setup.sh) on the first
# 60,000 characters of eval.txt at seqlen 512.
# Usage: bash scripts/clients/gptq.sh [OUT_DIR]   (default target/clients)
source "$(dirname "$0")/common.sh"
OUT=${1:-target/clients}
mkdir -p "$OUT"
for v in "gptq" "gptq_v2 --asym"; do
  set -- $v
  dir="$OUT/smollm2-w4-$1${2:+-asym}"
  quantize_smollm2 "$dir" --format "$@" \
    --eval "$F/text/eval.txt" --eval-seqlen 512 --eval-max-chars 60000
  "$VENV/bin/python" "$CLIENT" "$dir" "$F/text/eval.txt" --seqlen 512 --max-chars 60000 --threads 2
done
