#!/usr/bin/env bash
# Decode speed of Espresso's CPU backend and llama.cpp (llama-cpp-python) on the same model,
# alternating, on the same number of threads. Usage: scripts/bench_side_by_side.sh [THREADS] [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
M=${2:-$(cargo run --quiet --release -p espresso -- pull)}
cargo build --quiet --release -p espresso
python3 -c "import llama_cpp" 2>/dev/null || { echo "pip install llama-cpp-python first" >&2; exit 1; }
for r in 1 2 3; do
  ./target/release/espresso bench -m "$M" --threads "$T" --prompt-tokens 32 --gen-tokens 128 --repeats 1 --warmup 1 \
    | grep -E 'decode|prefill'
  python3 scripts/bench_llamacpp.py "$M" 128 "$T"
done
