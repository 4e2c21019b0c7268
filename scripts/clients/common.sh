# Sourced by the real-client checks in this folder: paths (override with the environment),
# the fixtures fetched once, and a release build. Python is a tool here: nothing in the crate
# or its tests needs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
F=${QRONOS_FIXTURES:-$HOME/.cache/qronos/fixtures}
VENV=${QRONOS_CLIENT_VENV:-$HOME/.cache/qronos/client-venv}
CLIENT=${QRONOS_CLIENT_PPL:-../shared/fixtures/client_ppl.py}
MLX_VENV=${QRONOS_MLX_VENV:-$HOME/.cache/qronos/mlx-venv}
MLX_CLIENT=${QRONOS_MLX_PPL:-../shared/fixtures/mlx_ppl.py}
bash scripts/fixtures/fetch.sh "$F"
cargo build --release --quiet
# quantize SmolLM2-135M with W4 Qronos (act-order, 32 x 512 calibration tokens) into $1,
# the rest of the arguments being qronos quantize flags
quantize_smollm2() {
  local dir=$1
  shift
  rm -rf "$dir"
  ./target/release/qronos quantize --model "$F/smollm2-135m-instruct" --calib "$F/text/calib.txt" \
    --nsamples 32 --seqlen 512 --out "$dir" --quiet "$@"
}
