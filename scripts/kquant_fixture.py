#!/usr/bin/env python3
"""K-quant fixtures, from gguf-py's decoder and llama.cpp's own quantizer and forward pass.

Usage: python3 scripts/kquant_fixture.py [model|blocks|generate|all]   (default: all)

- model:    writes SmolLM2-135M-Instruct.Q4_K_M.gguf next to the pulled Q4_1 model
            (`$ESPRESSO_HOME/models`, else `$XDG_CACHE_HOME/espresso/models`, else
            `~/.cache/espresso/models`) with llama.cpp's quantizer (`llama_model_quantize`,
            LLAMA_FTYPE_MOSTLY_Q4_K_M). No F16/F32 SmolLM2 can be fetched here, so it REQUANTIZES
            the Q4_1 file (`allow_requantize`); llama.cpp falls back to Q5_0/Q8_0 for the
            576-wide rows (not a multiple of 256), so the file holds Q4_K, Q6_K, Q5_0, Q8_0 and F32.
            Deterministic: the fixture below records its sha256. scripts/test runs this step
            when the file is missing. Not committed (~100 MB).
- blocks:   crates/model/tests/fixtures/kquant_blocks.json: deterministic random blocks of each
            K type (and Q5_0/Q5_1) plus a few real rows of the Q4_K_M file, with gguf-py's
            `gguf.quants.dequantize` output as f32 bit patterns (checked bitwise by
            crates/model/tests/kquant.rs).
- generate: crates/cpu/tests/fixtures/q4km_llamacpp.json: llama.cpp's greedy first 8 tokens for
            3 prompts on the Q4_K_M file (the 3 of CANDIDATES with the clearest margins, judged
            on llama.cpp's numbers alone), with the top-1 margin (logit gap to the runner-up) at
            each step (checked by crates/cpu/tests/kquant_model.rs).
"""
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DST_NAME = "SmolLM2-135M-Instruct.Q4_K_M.gguf"
# Candidate prompts; the fixture keeps the 3 whose smallest top-1 margin over the 8 greedy steps
# (per llama.cpp alone) is largest, so that "all 8 tokens equal" is a fair bar: at a near-tie
# (margin < 0.5) llama.cpp's 8-bit activations and our f32 ones may legitimately pick differently.
CANDIDATES = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, there was a",
    "The quick brown fox",
    "1, 2, 3, 4, 5,",
    "Water boils at a temperature of",
    "Monday, Tuesday, Wednesday,",
    "import numpy as np",
]
N_KEEP = 3
# Exit status of `model` when llama-cpp-python is missing (scripts/test then installs it).
NO_LLAMA_CPP = 3
N_GEN = 8


def models_dir():
    """Same rule as model::cache::espresso_home."""
    if os.environ.get("ESPRESSO_HOME"):
        home = os.environ["ESPRESSO_HOME"]
    elif os.environ.get("XDG_CACHE_HOME"):
        home = os.path.join(os.environ["XDG_CACHE_HOME"], "espresso")
    else:
        home = os.path.join(os.path.expanduser("~"), ".cache", "espresso")
    return os.path.join(home, "models")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_model():
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed (pip install 'llama-cpp-python==0.3.36')",
              file=sys.stderr)
        sys.exit(NO_LLAMA_CPP)

    src = os.path.join(models_dir(), SRC_NAME)
    dst = os.path.join(models_dir(), DST_NAME)
    if not os.path.isfile(src):
        sys.exit(f"{src} is missing: run `cargo run -p espresso -- pull` first")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    params.nthread = 2
    tmp = dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc})")
    os.replace(tmp, dst)
    print(f"wrote {dst} (sha256 {sha256(dst)})")
    return dst


def model_path():
    dst = os.path.join(models_dir(), DST_NAME)
    return dst if os.path.isfile(dst) else make_model()


def f32_hex(a):
    import numpy as np

    return np.asarray(a, dtype="<f4").tobytes().hex()


def random_blocks(rng, qtype, n_blocks):
    """Random bytes with every f16 scale overwritten by a finite, moderate value."""
    import numpy as np

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

    _, type_size = GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # Byte offsets of the f16 fields of each layout.
    f16_at = {T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.Q5_0: [0], T.Q5_1: [0, 2]}[qtype]
    for off in f16_at:
        v = rng.uniform(-0.1, 0.1, size=n_blocks).astype(np.float16)
        b[:, off:off + 2] = v.view(np.uint8).reshape(n_blocks, 2)
    # One extreme block: every quant/scale byte 0xFF, scales 1.0.
    b[0, :] = 0xFF
    for off in f16_at:
        b[0, off:off + 2] = np.array([1.0], dtype=np.float16).view(np.uint8)
    return b


def blocks(model):
    import numpy as np

    from gguf import GGUFReader, GGMLQuantizationType as T
    from gguf.quants import dequantize

    rng = np.random.default_rng(20250212)
    cases = []
    for qtype, n in [(T.Q4_K, 4), (T.Q5_K, 4), (T.Q6_K, 4), (T.Q5_0, 8), (T.Q5_1, 8)]:
        b = random_blocks(rng, qtype, n)
        y = dequantize(b.reshape(-1), qtype).reshape(-1)
        cases.append({"name": f"random {qtype.name}", "type": qtype.name, "code": int(qtype),
                      "bytes": b.tobytes().hex(), "f32_le": f32_hex(y)})
    reader = GGUFReader(model)
    for name, rows in [("blk.3.ffn_down.weight", [0, 575]), ("blk.0.ffn_down.weight", [0, 300]),
                       ("blk.0.attn_q.weight", [7])]:
        t = next(t for t in reader.tensors if t.name == name)
        data = np.asarray(t.data)  # [rows][row_bytes] uint8 for quantized types
        for r in rows:
            row = data[r]
            y = dequantize(row, t.tensor_type).reshape(-1)
            cases.append({"name": f"{name} row {r}", "type": t.tensor_type.name,
                          "code": int(t.tensor_type), "bytes": row.tobytes().hex(),
                          "f32_le": f32_hex(y)})
    out = {"generator": "scripts/kquant_fixture.py blocks (gguf-py gguf.quants.dequantize)",
           "model_sha256": sha256(model), "cases": cases}
    path = os.path.join(ROOT, "crates/model/tests/fixtures/kquant_blocks.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


def generate(model):
    import numpy as np

    from llama_cpp import Llama, __version__

    llm = Llama(model_path=model, n_threads=2, n_ctx=128, logits_all=True, verbose=False)
    runs = []
    for text in CANDIDATES:
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(ids)
        tokens, margins = [], []
        for _ in range(N_GEN):
            logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            top2 = np.argsort(-logits, kind="stable")[:2]
            tokens.append(int(top2[0]))
            margins.append(float(logits[top2[0]] - logits[top2[1]]))
            llm.eval([int(top2[0])])
        runs.append({"text": text, "prompt_tokens": [int(t) for t in ids],
                     "greedy_tokens": tokens, "top1_margins": margins})
        print(f"{text!r} -> {llm.detokenize(tokens).decode(errors='replace')!r}",
              f"min margin {min(margins):.2f}")
    keep = sorted(range(len(runs)), key=lambda i: -min(runs[i]["top1_margins"]))[:N_KEEP]
    prompts = [runs[i] for i in sorted(keep)]
    out = {"generator": "scripts/kquant_fixture.py generate",
           "llama_cpp_python_version": __version__, "model_file": DST_NAME,
           "model_sha256": sha256(model),
           "selection": f"the {N_KEEP} of {len(CANDIDATES)} candidate prompts with the largest "
                        "minimum top-1 margin over the greedy steps",
           "prompts": prompts}
    path = os.path.join(ROOT, "crates/cpu/tests/fixtures/q4km_llamacpp.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")


def main():
    step = sys.argv[1] if len(sys.argv) > 1 else "all"
    if step == "model":
        dst = os.path.join(models_dir(), DST_NAME)
        if os.path.isfile(dst):
            print(f"{dst} exists")
        else:
            make_model()
    elif step == "blocks":
        blocks(model_path())
    elif step == "generate":
        generate(model_path())
    elif step == "all":
        m = model_path()
        blocks(m)
        generate(m)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
