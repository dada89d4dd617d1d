#!/usr/bin/env python3
"""PyTorch CPU fp32 side of scripts/bench_train.sh: the same Llama as the trainer (the model code of
torch_train_parity.py), AdamW, `--steps` steps of `--batch` x `--seq-len` windows cut from a
little-endian u16 token file exactly as `espresso train --shuffle none` cuts them.
Prints one JSON line: {"tokens_per_s": median over the steps after the first, "steps": N}.
Usage: /usr/bin/python3 scripts/torch_train_bench.py --shape SHAPE.json --vocab V --data TOKENS.bin
       --batch B --seq-len S --steps N --threads T
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_train_parity import forward, layout  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = json.load(open(a.shape))
    c = {"n_layers": s["n_layers"], "dim": s["dim"], "n_heads": s["n_heads"], "n_kv_heads": s["n_kv_heads"],
         "head_dim": s["dim"] // s["n_heads"], "ffn_dim": s["ffn_dim"], "context_length": s["context_length"],
         "rope_theta": s.get("rope_base", 10000.0), "rms_eps": s.get("norm_eps", 1e-5), "vocab_size": a.vocab}
    tied = s.get("tied", True)
    torch.manual_seed(0)
    p = {}
    for name, r, k in layout(c, tied):
        shape = (k,) if r == 1 else (r, k)
        w = torch.ones(shape) if name.endswith("norm.weight") else torch.randn(shape) * 0.02
        p[name] = w.requires_grad_(True)
    opt = torch.optim.AdamW(list(p.values()), lr=1e-3)
    toks = np.fromfile(a.data, dtype="<u2").astype(np.int64)
    bsz, sl = a.batch, a.seq_len
    times = []
    for k in range(1, a.steps + 1):
        rows = []
        for b in range(bsz):
            o = (((k - 1) * bsz) + b) * sl % (len(toks) - sl)
            rows.append(toks[o:o + sl + 1])
        w = torch.tensor(np.stack(rows))
        t0 = time.perf_counter()
        logits = forward(p, c, tied, w[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, a.vocab), w[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    tps = sorted(bsz * sl / t for t in times[1:]) if len(times) > 1 else [bsz * sl / times[0]]
    print(json.dumps({"tokens_per_s": tps[len(tps) // 2], "steps": a.steps, "loss": loss.item()}))


if __name__ == "__main__":
    main()
