#!/usr/bin/env python3
"""Independent PyTorch-autograd reference for the CPU trainer (crates/cpu/tests/train_parity.rs).

A tiny GQA Llama (GGUF `llama` conventions: RoPE on adjacent pairs, RMSNorm, SwiGLU, tied or
untied classifier) is built in plain PyTorch from the same deterministic initialization as
`engine::train::Params::init` (SplitMix64 + Box-Muller, re-implemented here in numpy), trained for
10 AdamW steps (torch.optim.AdamW, clip_grad_norm_, a warmup+cosine learning rate) on one batch
of random tokens (the same every step, so the loss falls as the model memorizes it), and the fixture records:
  - the gradient of step 1 of every parameter (all of it, except for the [V, D] embedding,
    of which the rows of 192 fixed token ids are kept, plus its full L2 norm),
  - the loss of each of the 10 steps (from the forward before that step's update),
  - a few initial parameter values, so a diverging generator is reported as such.
Nothing here shares code with the Rust crates.

Outputs, per case:  crates/cpu/tests/fixtures/train_parity/<case>.json  and  <case>.f32
Usage (Debian: python3-torch, python3-numpy):  /usr/bin/python3 scripts/torch_train_parity.py
"""

import json
import math
import os

import numpy as np
import torch

torch.set_default_dtype(torch.float32)
M64 = (1 << 64) - 1
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "cpu", "tests", "fixtures", "train_parity")


def splitmix64(z):
    """Vectorized SplitMix64 on uint64 arrays (wrapping arithmetic)."""
    z = (z + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)).astype(np.uint64)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)).astype(np.uint64)
    return z ^ (z >> np.uint64(31))


def uniform(seed, stream, idx):
    with np.errstate(over="ignore"):
        s = splitmix64(np.array([seed], dtype=np.uint64))
        s = splitmix64(s ^ np.uint64(stream))
        h = splitmix64(s ^ idx.astype(np.uint64))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def normal(seed, stream, n):
    i = np.arange(n, dtype=np.uint64)
    u1 = uniform(seed, stream, 2 * i)
    u2 = uniform(seed, stream, 2 * i + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def layout(c, tied):
    d, kv, h, v = c["dim"], c["n_kv_heads"] * c["head_dim"], c["ffn_dim"], c["vocab_size"]
    t = [("token_embd.weight", v, d)]
    for i in range(c["n_layers"]):
        for name, r, k in [("attn_norm", 1, d), ("attn_q", d, d), ("attn_k", kv, d), ("attn_v", kv, d),
                           ("attn_output", d, d), ("ffn_norm", 1, d), ("ffn_gate", h, d), ("ffn_up", h, d),
                           ("ffn_down", d, h)]:
            t.append((f"blk.{i}.{name}.weight", r, k))
    t.append(("output_norm.weight", 1, d))
    if not tied:
        t.append(("output.weight", v, d))
    return t


def init_params(c, tied, seed):
    out = {}
    resid = 0.02 / math.sqrt(2.0 * c["n_layers"])
    for ti, (name, r, k) in enumerate(layout(c, tied)):
        if name.endswith("norm.weight"):
            w = np.ones(r * k)
        else:
            std = resid if name.endswith("attn_output.weight") or name.endswith("ffn_down.weight") else 0.02
            w = std * normal(seed, ti, r * k)
        shape = (k,) if r == 1 else (r, k)
        out[name] = torch.tensor(w.astype(np.float32).reshape(shape), requires_grad=True)
    return out


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, base):
    # x: [B, T, n, hd]; adjacent pairs (2i, 2i+1) rotate by pos * base^(-2i/hd).
    b, t, n, hd = x.shape
    pos = torch.arange(t, dtype=torch.float64)[:, None]
    freq = base ** (-2.0 * torch.arange(hd // 2, dtype=torch.float64) / hd)
    ang = pos * freq[None, :]
    cos = torch.cos(ang).float()[None, :, None, :]
    sin = torch.sin(ang).float()[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack([y0, y1], dim=-1).reshape(b, t, n, hd)


def forward(p, c, tied, inputs):
    b, t = inputs.shape
    nh, nkv, hd, eps = c["n_heads"], c["n_kv_heads"], c["head_dim"], c["rms_eps"]
    x = p["token_embd.weight"][inputs]
    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(c["n_layers"]):
        g = lambda s: p[f"blk.{i}.{s}.weight"]
        xn = rms_norm(x, g("attn_norm"), eps)
        q = rope((xn @ g("attn_q").T).view(b, t, nh, hd), c["rope_theta"])
        k = rope((xn @ g("attn_k").T).view(b, t, nkv, hd), c["rope_theta"])
        v = (xn @ g("attn_v").T).view(b, t, nkv, hd)
        k = k.repeat_interleave(nh // nkv, dim=2)
        v = v.repeat_interleave(nh // nkv, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd) + mask
        o = torch.einsum("bhts,bshd->bthd", torch.softmax(s, dim=-1), v).reshape(b, t, nh * hd)
        x = x + o @ g("attn_output").T
        xn = rms_norm(x, g("ffn_norm"), eps)
        x = x + (torch.nn.functional.silu(xn @ g("ffn_gate").T) * (xn @ g("ffn_up").T)) @ g("ffn_down").T
    x = rms_norm(x, p["output_norm.weight"], eps)
    w_out = p["token_embd.weight"] if tied else p["output.weight"]
    return x @ w_out.T


def lr_at(step, lr, warmup, total):
    if step <= warmup:
        return lr * step / warmup
    done = min((step - warmup) / max(total - warmup, 1), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * done))


def run(case, c, tied, seed, batch, seq, steps, hp):
    p = init_params(c, tied, seed)
    names = [n for n, _, _ in layout(c, tied)]
    params = [p[n] for n in names]
    opt = torch.optim.AdamW(params, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                            weight_decay=hp["weight_decay"], foreach=False)
    # The same random batch every step: the model can memorize it, so the loss must fall.
    n_tok = batch * (seq + 1)
    toks = np.floor(uniform(seed + 1, 0, np.arange(n_tok, dtype=np.uint64)) * c["vocab_size"]).astype(np.int64)
    toks = toks.reshape(batch, seq + 1)
    losses, grads1, norm1 = [], None, None
    for k in range(1, steps + 1):
        w = torch.tensor(toks)
        logits = forward(p, c, tied, w[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["vocab_size"]), w[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        if k == 1:  # the raw gradient, before clipping
            grads1 = {n: p[n].grad.detach().clone().reshape(-1).numpy() for n in names}
        # clip = 0 means "off": only measure the norm.
        norm = torch.nn.utils.clip_grad_norm_(params, hp["clip"] if hp["clip"] > 0 else float("inf")).item()
        if k == 1:
            norm1 = norm
        for g in opt.param_groups:
            g["lr"] = lr_at(k, hp["lr"], hp["warmup"], steps)
        opt.step()
    d = c["dim"]
    rows = sorted(set(np.floor(uniform(seed + 2, 0, np.arange(192, dtype=np.uint64)) * c["vocab_size"]).astype(int).tolist()))
    blob, tensors = [], []
    off = 0
    for n in names:
        g = grads1[n]
        if n == "token_embd.weight":
            g = g.reshape(-1, d)[rows].reshape(-1)
        tensors.append({"name": n, "offset": off, "len": int(g.size),
                        "norm": float(np.linalg.norm(grads1[n].astype(np.float64)))})
        blob.append(g.astype("<f4"))
        off += int(g.size)
    init = init_params(c, tied, seed)
    probe = {n: [float(v) for v in init[n].detach().reshape(-1)[:4].tolist()] for n in names}
    meta = {"config": c, "tied": tied, "seed": seed, "batch": batch, "seq_len": seq, "steps": steps,
            "hyper": hp, "tokens": toks.reshape(-1).tolist(), "losses": losses, "grad_norm_step1": norm1,
            "embd_rows": rows, "tensors": tensors, "init_probe": probe,
            "torch": torch.__version__}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, case + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
    np.concatenate(blob).tofile(os.path.join(OUT, case + ".f32"))
    print(case, "losses", ["%.6f" % l for l in losses], "grad norm", norm1)


def main():
    torch.manual_seed(0)
    base = {"n_layers": 2, "dim": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "ffn_dim": 176,
            "context_length": 64, "rope_theta": 10000.0, "rms_eps": 1e-5}
    hp = {"lr": 3e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "clip": 1.0, "warmup": 2}
    run("tied_smollm2_vocab", dict(base, vocab_size=49152), True, 1234, 2, 24, 10, hp)
    run("untied_small_vocab", dict(base, vocab_size=512), False, 99, 2, 24, 10, dict(hp, clip=0.0, lr=1e-2))


if __name__ == "__main__":
    main()
