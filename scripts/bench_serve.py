#!/usr/bin/env python3
"""Throughput and latency of `espresso serve` (a benchmark, not a test).

Starts the server (CPU backend, --parallel 8, 2 threads by default), then alternates, for
several rounds in one run: one greedy stream alone, and 8 concurrent greedy streams. Prints
aggregate tokens/s of each, their ratio (continuous batching: target >= 3x), the time to first
token, and the time to first token of a second chat turn that reuses the first from the KV
cache against the same prompt computed from scratch.

Usage: scripts/bench_serve.py [--bin target/release/espresso] [--rounds 3] [--streams 8]
                              [--tokens 64] [--threads 2] [-m MODEL]
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

PROMPTS = [
    "Once upon a time, in a small village,",
    "The history of the printing press",
    "A recipe for bread: first,",
    "The rules of chess are simple:",
    "In the year 2100, cities",
    "Dear diary, today I",
    "The best way to learn a language is",
    "Photosynthesis is the process",
]


def start(args):
    cmd = [args.bin, "serve", "--port", "0", "--parallel", str(args.streams), "--threads", str(args.threads)]
    if args.model:
        cmd += ["-m", args.model]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    base = None
    for line in proc.stderr:
        m = re.search(r"on (http://\S+)", line)
        if m:
            base = m.group(1)
            break
    if base is None:
        sys.exit("the server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    while True:
        try:
            urllib.request.urlopen(base + "/health")
            return proc, base
        except Exception:
            time.sleep(0.1)


def stream(base, path, body):
    """One streaming request: (completion tokens, seconds to first text, total seconds)."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    t0 = time.perf_counter()
    first = None
    tokens = 0
    with urllib.request.urlopen(req) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"]:
                c = chunk["choices"][0]
                if c.get("text") or c.get("delta", {}).get("content"):
                    first = time.perf_counter() - t0
    return tokens, first or 0.0, time.perf_counter() - t0


def concurrent(base, n, max_tokens):
    results = [None] * n

    def run(i):
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0}
        results[i] = stream(base, "/v1/completions", body)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[0] for r in results)
    return tokens / wall, statistics.mean(r[1] for r in results)


def chat_ttft(base, system, question, reply=None):
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if reply is not None:
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And why?"}]
    return stream(base, "/v1/chat/completions", {"messages": messages, "max_tokens": 8, "temperature": 0})[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/espresso")
    ap.add_argument("-m", "--model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    proc, base = start(args)
    try:
        concurrent(base, 2, 8)  # warm up
        one, many, ttft_one, ttft_many = [], [], [], []
        for r in range(args.rounds):
            tps, ttft = concurrent(base, 1, args.tokens)
            one.append(tps)
            ttft_one.append(ttft)
            tps, ttft = concurrent(base, args.streams, args.tokens)
            many.append(tps)
            ttft_many.append(ttft)
            print(f"round {r + 1}: 1 stream {one[-1]:6.1f} tok/s | {args.streams} streams "
                  f"{many[-1]:6.1f} tok/s | ratio {many[-1] / one[-1]:.2f}x")
        ratios = [m / o for m, o in zip(many, one)]
        print(f"\n1 stream:   {statistics.median(one):6.1f} tok/s, time to first token "
              f"{1e3 * statistics.median(ttft_one):6.1f} ms")
        print(f"{args.streams} streams:  {statistics.median(many):6.1f} tok/s aggregate, mean time to "
              f"first token {1e3 * statistics.median(ttft_many):6.1f} ms")
        print(f"ratio:      {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 3x)")

        # Prefix reuse: turn 2 after turn 1 (cached) vs the same turn-2 prompt from scratch.
        cached, fresh = [], []
        for r in range(args.rounds):
            system = f"Session {r}. You are a careful assistant who answers briefly. " * 12
            chat_ttft(base, system, "Name a colour.")
            cached.append(chat_ttft(base, system, "Name a colour.", reply="Blue."))
            fresh.append(chat_ttft(base, "X" + system, "Name a colour.", reply="Blue."))
        print(f"chat turn 2 time to first token: {1e3 * statistics.median(cached):.1f} ms with the "
              f"cached turn 1, {1e3 * statistics.median(fresh):.1f} ms computed from scratch")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
