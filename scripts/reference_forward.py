#!/usr/bin/env python3
"""Independent f32 reference forward for the numerics tests of the CPU backend.

Reads a `llama` GGUF with llama.cpp's own reader (pip package `gguf`), dequantizes every
weight to f32, and runs a plain PyTorch implementation of the Llama decoder (RMSNorm, RoPE
on adjacent pairs as llama.cpp applies it to `llama` GGUFs, GQA attention, SwiGLU, tied
output head). Nothing here shares code with the Rust crates.

For each prompt it records the token ids, the logits of the last prompt token (full
vocabulary) and 32 greedy tokens (teacher-free: each step feeds the model's own argmax).

Token ids come from llama.cpp's tokenizer (llama-cpp-python, `vocab_only=True`); when
llama_cpp is not importable by this interpreter, it is run in `--tokenizer-python`.

Outputs (committed, used by crates/cpu/tests/reference.rs):
  crates/cpu/tests/fixtures/reference.json        prompts, ids, greedy tokens, metadata
  crates/cpu/tests/fixtures/reference_logits.bin  little-endian f32 [n_prompts][vocab]

Usage (Debian: python3-torch; `pip install gguf`):
  /usr/bin/python3 scripts/reference_forward.py [--model PATH] [--tokenizer-python python3]
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

import gguf

DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/espresso/models/SmolLM2-135M-Instruct.Q4_1.gguf"
)
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "crates", "cpu", "tests", "fixtures")
N_GREEDY = 32

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chat(user):
    """The model's chat template for one user message (default system prompt included)."""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


# (kind, text). Chat prompts are tokenized with special-token parsing.
PROMPTS = [
    ("raw", "The capital of France is"),
    ("raw", "Once upon a time, there was a little"),
    ("raw", "def fibonacci(n):\n    "),
    ("raw", "The three primary colors are red,"),
    ("raw", "1, 2, 3, 4, 5,"),
    ("chat", "What is the capital of Germany?"),
    ("chat", "Write a haiku about coffee."),
    ("chat", "How many legs does a spider have?"),
    ("chat", "Explain photosynthesis in one sentence."),
    ("chat", "Translate 'good morning' into French."),
]


def tokenize(model_path, texts, tokenizer_python):
    """Token ids from llama.cpp's tokenizer: no BOS added; special text parsed when asked."""
    snippet = (
        "import json, sys\n"
        "from llama_cpp import Llama\n"
        "req = json.load(sys.stdin)\n"
        "llm = Llama(model_path=req['model'], vocab_only=True, verbose=False)\n"
        "out = [llm.tokenize(t.encode('utf-8'), add_bos=False, special=s) for t, s in req['texts']]\n"
        "json.dump(out, sys.stdout)\n"
    )
    req = json.dumps({"model": model_path, "texts": texts})
    try:
        import llama_cpp  # noqa: F401

        python = sys.executable
    except ImportError:
        python = tokenizer_python
    res = subprocess.run(
        [python, "-c", snippet], input=req, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout)


class Gguf:
    """The tensors and hyper-parameters of a llama GGUF, dequantized with gguf-py."""

    def __init__(self, path):
        self.reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key):
        return self.reader.fields[key].contents()

    def weight(self, name):
        t = self.tensors[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type)  # shape [rows, cols] (numpy order)
        return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


class Llama:
    def __init__(self, g):
        self.n_layers = int(g.field("llama.block_count"))
        self.dim = int(g.field("llama.embedding_length"))
        self.n_heads = int(g.field("llama.attention.head_count"))
        self.n_kv_heads = int(g.field("llama.attention.head_count_kv"))
        self.head_dim = self.dim // self.n_heads
        self.eps = float(g.field("llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(g.field("llama.rope.freq_base"))
        self.tok = g.weight("token_embd.weight")  # [vocab, dim]
        self.out = g.weight("output.weight") if "output.weight" in g.tensors else self.tok
        self.out_norm = g.weight("output_norm.weight")
        self.layers = []
        for i in range(self.n_layers):
            w = lambda s: g.weight(f"blk.{i}.{s}.weight")  # noqa: E731
            self.layers.append(
                {k: w(k) for k in ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                   "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]}
            )

    def rms_norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x):
        """x: [T, heads, head_dim]; rotate pairs (2i, 2i+1) by pos * theta^(-2i/head_dim)."""
        t, h, d = x.shape
        inv = self.theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # [d/2]
        ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]  # [T, d/2]
        cos = torch.cos(ang).float()[:, None, :]
        sin = torch.sin(ang).float()[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids):
        """Logits [T, vocab] for the whole sequence `ids` (positions 0..T)."""
        t = len(ids)
        hd, nh, nkv = self.head_dim, self.n_heads, self.n_kv_heads
        x = self.tok[torch.tensor(ids)]  # [T, dim]
        mask = torch.full((t, t), float("-inf")).triu(1)
        for L in self.layers:
            h = self.rms_norm(x, L["attn_norm"])
            q = self.rope((h @ L["attn_q"].T).view(t, nh, hd))
            k = self.rope((h @ L["attn_k"].T).view(t, nkv, hd))
            v = (h @ L["attn_v"].T).view(t, nkv, hd)
            rep = nh // nkv  # query head j uses KV head j // rep
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = torch.einsum("qhd,khd->hqk", q, k) / (hd ** 0.5) + mask
            att = torch.softmax(att, dim=-1)
            o = torch.einsum("hqk,khd->qhd", att, v).reshape(t, nh * hd)
            x = x + o @ L["attn_output"].T
            h = self.rms_norm(x, L["ffn_norm"])
            g = torch.nn.functional.silu(h @ L["ffn_gate"].T) * (h @ L["ffn_up"].T)
            x = x + g @ L["ffn_down"].T
        return self.rms_norm(x, self.out_norm) @ self.out.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.environ.get("ESPRESSO_TEST_MODEL", DEFAULT_MODEL))
    ap.add_argument("--tokenizer-python", default="python3")
    ap.add_argument("--out-dir", default=OUT_DIR)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    texts = [[text if kind == "raw" else chat(text), kind == "chat"] for kind, text in PROMPTS]
    ids = tokenize(args.model, texts, args.tokenizer_python)
    model = Llama(Gguf(args.model))

    records, logits_out = [], []
    for (kind, text), full, pids in zip(PROMPTS, texts, ids):
        seq = list(pids)
        first = None
        for _ in range(N_GREEDY):
            logits = model.forward(seq)[-1]
            if first is None:
                first = logits.clone()
            seq.append(int(torch.argmax(logits)))
        top2 = torch.topk(first, 2).values
        records.append({
            "kind": kind,
            "text": full[0],
            "prompt_tokens": pids,
            "greedy_tokens": seq[len(pids):],
            "first_top1_margin": float(top2[0] - top2[1]),
        })
        logits_out.append(first.numpy().astype("<f4"))
        print(f"{kind:4} {len(pids):3} tokens, greedy {seq[len(pids):][:8]}...", flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    meta = {
        "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "generator": "scripts/reference_forward.py (PyTorch f32 over gguf-py dequantized weights)",
        "torch": torch.__version__,
        "vocab_size": int(first.shape[0]),
        "n_greedy": N_GREEDY,
        "logits_file": "reference_logits.bin",
        "prompts": records,
    }
    with open(os.path.join(args.out_dir, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    np.concatenate(logits_out).tofile(os.path.join(args.out_dir, "reference_logits.bin"))


if __name__ == "__main__":
    main()
