#!/usr/bin/env python3
"""Check `espresso perplexity` against llama.cpp (through llama-cpp-python) on the same text.

Computes exactly the metric of `espresso perplexity` (crates/engine/src/perplexity.rs) with
llama.cpp's forward pass, runs `espresso perplexity --json` on the same text, prints both and
their relative difference, and exits non-zero if the perplexities differ by more than 1%
(--tolerance) or the two tokenizations differ in length.

The metric: the text (a UTF-8 file, or a folder's .txt files concatenated in sorted name order)
is tokenized as plain text with no BOS and no special-token parsing, cut into non-overlapping
windows of --ctx tokens (a last partial window is kept if it has >= 2 tokens; --max-windows N
keeps the first N), each window is evaluated from an empty cache, and positions 1..len of each
window are scored (token j predicted from the window's tokens before it), log-softmax in float64.
When the model adds BOS (tokenizer.ggml.add_bos_token), the first token of each window is
replaced by BOS, as llama.cpp's own perplexity tool does (SmolLM2 does not add BOS).
loss = mean negative log-likelihood in nats; perplexity = exp(loss).

Needs llama-cpp-python:
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF \
    -DGGML_AMX_INT8=OFF" python3 -m pip install llama-cpp-python

Usage:
  scripts/perplexity_llamacpp.py -m MODEL.gguf --data PATH [--ctx 512] [--max-windows N]
      [--threads 2] [--espresso target/debug/espresso] [--tolerance 0.01]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time


def read_text(path):
    """The same text `espresso perplexity --data PATH` reads."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path)
                       if n.endswith(".txt") and os.path.isfile(os.path.join(path, n)))
        if not names:
            sys.exit(f"error: {path} has no .txt files")
        # Same order as Rust's sort of the paths: code point order = UTF-8 byte order.
        parts = []
        for n in names:
            with open(os.path.join(path, n), "rb") as f:
                parts.append(f.read().decode("utf-8"))
        return "".join(parts)
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def windows(n, ctx):
    return [(s, min(ctx, n - s)) for s in range(0, n, ctx) if min(ctx, n - s) >= 2]


def llamacpp_perplexity(model, text, ctx, max_windows, threads):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    input_tokens = len(tokens)
    if max_windows is not None:
        tokens = tokens[: max_windows * ctx]
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    bos = llm.token_bos() if add_bos else None
    wins = windows(len(tokens), ctx)
    nll, scored = 0.0, 0
    t0 = time.perf_counter()
    for i, (start, n) in enumerate(wins):
        window = list(tokens[start:start + n])
        if bos is not None:
            window[0] = bos
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[:n], dtype=np.float64)  # [n, vocab]
        rows = logits[:-1]
        targets = np.asarray(window[1:])
        m = rows.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(rows - m).sum(axis=1))
        nll -= float((rows[np.arange(n - 1), targets] - lse).sum())
        scored += n - 1
        print(f"\rllama.cpp: window {i + 1}/{len(wins)} ({time.perf_counter() - t0:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    loss = nll / scored
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": scored,
            "windows": len(wins), "input_tokens": input_tokens, "bos": add_bos}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--espresso", default=None,
                    help="the espresso binary (default: target/debug/espresso, else cargo run)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--tolerance", type=float, default=0.01,
                    help="largest allowed relative difference of the perplexities")
    a = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if a.espresso:
        exe = [a.espresso]
    elif os.path.exists(os.path.join(root, "target/debug/espresso")):
        exe = [os.path.join(root, "target/debug/espresso")]
    else:
        exe = ["cargo", "run", "--quiet", "-p", "espresso", "--"]
    cmd = exe + ["perplexity", "-m", a.model, "--data", a.data, "--ctx", str(a.ctx),
                 "--threads", str(a.threads), "--backend", a.backend, "--json"]
    if a.max_windows is not None:
        cmd += ["--max-windows", str(a.max_windows)]

    text = read_text(a.data)
    t0 = time.perf_counter()
    ref = llamacpp_perplexity(a.model, text, a.ctx, a.max_windows, a.threads)
    t_ref = time.perf_counter() - t0

    print("running:", " ".join(cmd), file=sys.stderr)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE)
    t_ours = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"error: espresso perplexity failed (exit {p.returncode})")
    ours = json.loads(p.stdout)

    print(f"llama.cpp: loss {ref['loss']:.6f}  perplexity {ref['perplexity']:.4f}  "
          f"({ref['tokens']} tokens, {ref['windows']} windows, {ref['input_tokens']} input "
          f"tokens, bos {ref['bos']}, {t_ref:.0f} s)")
    print(f"espresso:  loss {ours['loss']:.6f}  perplexity {ours['perplexity']:.4f}  "
          f"({ours['tokens']} tokens, {ours['windows']} windows, {ours['input_tokens']} input "
          f"tokens, backend {ours['backend']}, {t_ours:.0f} s)")
    if ours["input_tokens"] != ref["input_tokens"] or ours["tokens"] != ref["tokens"]:
        sys.exit(f"error: the tokenizations differ: espresso has {ours['input_tokens']} tokens "
                 f"({ours['tokens']} scored), llama.cpp {ref['input_tokens']} "
                 f"({ref['tokens']} scored)")
    rel = abs(ours["perplexity"] - ref["perplexity"]) / ref["perplexity"]
    print(f"relative difference of perplexity: {rel * 100:.3f}% "
          f"(loss difference {ours['loss'] - ref['loss']:+.6f} nats); tolerance "
          f"{a.tolerance * 100:.1f}%")
    if rel > a.tolerance:
        sys.exit("error: espresso and llama.cpp disagree by more than the tolerance")


if __name__ == "__main__":
    main()
