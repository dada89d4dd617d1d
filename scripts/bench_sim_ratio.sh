#!/usr/bin/env bash
# How much slower the ANE simulator decodes than the CPU backend, on the same model in the same
# run: cpu and ane-sim alternate, ROUNDS rounds, on the seed shape (synthetic, f32) and on the
# default model (SmolLM2-135M Q4_1). Prints decode ms/token of each and the ratio per round.
# Usage: scripts/bench_sim_ratio.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
cargo build --quiet --release -p espresso
B=./target/release/espresso
M=$($B pull)
ms() { python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["decode_ms_per_token"])'; }
for model in "--synthetic 1" "-m $M"; do
  for r in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086
    cpu=$($B bench $model --backend cpu --prompt-tokens 16 --gen-tokens 16 --repeats 2 --json | ms)
    # shellcheck disable=SC2086
    sim=$($B bench $model --backend ane-sim --prompt-tokens 16 --gen-tokens 16 --repeats 2 --json | ms)
    echo "$model round $r: cpu $cpu ms/token, ane-sim $sim ms/token, ratio $(python3 -c "print('%.1f' % ($sim / $cpu))")x"
  done
done
