#!/usr/bin/env python3
"""llama.cpp's logits for the exported synthetic model (seed 1, f16) on a few tokens, as a fixture
for crates/cli/tests/synthetic_llamacpp.rs. Usage: python3 scripts/synthetic_llamacpp_fixture.py"""
import json, os, subprocess, tempfile
import numpy as np
from llama_cpp import Llama, __version__

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tokens = [5, 100, 2000, 31999, 7]
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "syn.gguf")
    subprocess.run(["cargo", "run", "--quiet", "-p", "espresso", "--", "export-synthetic", "1",
                    "--dtype", "f16", path], check=True, cwd=root)
    llm = Llama(model_path=path, n_threads=2, n_ctx=64, verbose=False, logits_all=True)
    llm.eval(tokens)
    last = np.array(llm.scores[len(tokens) - 1], dtype=np.float64)
out = {
    "generator": "scripts/synthetic_llamacpp_fixture.py",
    "llama_cpp_python_version": __version__,
    "seed": 1, "dtype": "f16", "tokens": tokens,
    "top10": np.argsort(-last, kind="stable")[:10].tolist(),
    "logits_head": last[:64].tolist(),
    "max_logit": float(last.max()),
}
with open(os.path.join(root, "crates/cli/tests/fixtures/synthetic_llamacpp.json"), "w") as f:
    json.dump(out, f, indent=1)
print(out["top10"], out["max_logit"])
