#!/usr/bin/env python3
"""Espresso's CPU backend against llama.cpp (llama-cpp-python), side by side, alternating.

For each model and round: espresso `bench --json` (prefill of P tokens, then G decode steps)
and the same work in llama.cpp in this process (same thread count, same prompt ids, greedy),
one after the other. Prints per-round figures and the median ratios the [cpu-speed] targets
are stated in: decode ms/token ours / llama.cpp (lower is better; targets <= 0.85 for SmolLM2
Q4_1, <= 1.0 for the seed shape and Q4_K_M) and prefill tokens/s ours / llama.cpp (higher is
better; targets >= 1.2 for SmolLM2 Q4_1 pp128 and pp512, >= 1.0 for the seed shape).

Usage: scripts/bench_cpu_vs_llamacpp.py [--threads 2] [--rounds 3] [--pp 128,512] [--gen 128]
                                        [--bin target/release/espresso] [MODEL.gguf ...]
       (default model: the pulled SmolLM2 Q4_1; the seed shape: `espresso export-synthetic 1
       --dtype f16 seed_f16.gguf`, then `--pp 64 seed_f16.gguf`)
Needs: pip install llama-cpp-python (on AVX-512 machines without AMX support, build it with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF").
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def prompt_ids(n, vocab):
    # The same ids as espresso's bench_prompt.
    return [1 + (i * 2654435761) % (vocab - 1) for i in range(n)]


def ours(binary, model, threads, p, g):
    out = subprocess.run(
        [binary, "bench", "-m", model, "--threads", str(threads), "--prompt-tokens", str(p),
         "--gen-tokens", str(g), "--warmup", "1", "--repeats", "1", "--json"],
        check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return r["prefill_tokens_per_s"], r["decode_ms_per_token"]


def last_argmax(llm):
    logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return int(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).argmax())


def theirs(llm, p, g):
    ids = prompt_ids(p, llm.n_vocab())
    best = None
    for _ in range(2):  # the first run warms up, as espresso's --warmup 1
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        pf = p / (time.perf_counter() - t0)
        tok = last_argmax(llm)
        t0 = time.perf_counter()
        for _ in range(g):
            llm.eval([tok])
            tok = last_argmax(llm)
        best = (pf, (time.perf_counter() - t0) * 1e3 / g)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", default="target/release/espresso")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--pp", default="128,512", help="prompt sizes, comma-separated (the seed "
                    "shape's context of 256 takes 64: --pp 64)")
    args = ap.parse_args()
    models = args.models or [os.path.expanduser("~/.cache/espresso/models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    for model in models:
        llm = Llama(model_path=model, n_threads=args.threads, n_threads_batch=args.threads,
                    n_ctx=1024, n_batch=512, logits_all=False, verbose=False)
        print(f"== {os.path.basename(model)}, {args.threads} threads")
        for p in [int(x) for x in args.pp.split(",")]:
            pf_r, dec_r = [], []
            for r in range(args.rounds):
                a_pf, a_dec = ours(args.bin, model, args.threads, p, args.gen)
                b_pf, b_dec = theirs(llm, p, args.gen)
                pf_r.append(a_pf / b_pf)
                dec_r.append(a_dec / b_dec)
                print(f"  pp{p} round {r + 1}: espresso {a_pf:7.1f} tok/s, llama.cpp {b_pf:7.1f} tok/s | "
                      f"tg{args.gen} after pp{p}: espresso {a_dec:5.2f} ms/tok, llama.cpp {b_dec:5.2f} ms/tok")
            print(f"  pp{p}: prefill ratio (ours/llama.cpp tok/s) {statistics.median(pf_r):.2f}; "
                  f"decode ratio (ours/llama.cpp ms/token) {statistics.median(dec_r):.2f}")
        del llm


if __name__ == "__main__":
    main()
