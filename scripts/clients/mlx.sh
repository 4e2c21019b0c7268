#!/usr/bin/env bash
# Real-client check of our MLX checkpoints (issue 12; BENCHMARKS.md "Checkpoints in real
# clients"): quantize SmolLM2-135M (W4 g64 act-order Qronos, 32 x 512 calibration tokens) as
# mlx, symmetric and asymmetric, then measure each folder's perplexity with qronos eval and
# with mlx-lm's own loader (mlx_lm.load on mlx's CPU build; the venv of
# ../shared/fixtures/requirements-mlx.txt) on the first $CHARS characters of eval.txt at
# seqlen 512, activations in float32 (mlx's CPU kernels are slow; see mlx_ppl.py).
# Usage: bash scripts/clients/mlx.sh [OUT_DIR]   (default target/clients; CHARS=20000)
source "$(dirname "$0")/common.sh"
CHARS=${CHARS:-20000}
OUT=${1:-target/clients}
mkdir -p "$OUT"
for v in "" "--asym"; do
  dir="$OUT/smollm2-w4-g64-mlx${v:+-asym}"
  quantize_smollm2 "$dir" --format mlx --group-size 64 $v
  ./target/release/qronos eval --model "$dir" --data "$F/text/eval.txt" --seqlen 512 \
    --max-chars "$CHARS"
  "$MLX_VENV/bin/python" "$MLX_CLIENT" "$dir" "$F/text/eval.txt" --seqlen 512 \
    --max-chars "$CHARS" --dtype float32 --jobs 2
done
