#!/usr/bin/env python3
"""llama.cpp decode timing (llama-cpp-python): MODEL N_GEN THREADS. Used by bench_side_by_side.sh."""
import sys, time
from llama_cpp import Llama
path = sys.argv[1]; n_gen = int(sys.argv[2]); nt = int(sys.argv[3])
llm = Llama(model_path=path, n_threads=nt, n_threads_batch=nt, n_ctx=512, verbose=False)
prompt = [(i * 7919 + 13) % 49152 for i in range(32)]
llm.eval(prompt[:4]); llm.reset()
t0 = time.perf_counter(); llm.eval(prompt); pf = time.perf_counter() - t0
times = []
tok = 0
for i in range(n_gen):
    t = time.perf_counter(); llm.eval([tok]); times.append((time.perf_counter() - t) * 1e3)
    tok = int(llm.scores[llm.n_tokens - 1].argmax())
times.sort()
print(f"llama.cpp threads={nt}: prefill 32 tokens {32/pf:.1f} tok/s; decode ms/token median {times[len(times)//2]:.2f} min {times[0]:.2f} max {times[-1]:.2f}")
