#!/usr/bin/env python3
"""Write a Llama-family GGUF model (SmolLM2-135M by default, our pulled file) as a CoreML ML
Program `.mlpackage` for `espresso bench --backend ane --vs coreml MODEL.mlpackage`.

What the package computes (one token per prediction, KV cache in CoreML state):

* inputs  `input_ids` int32 [1, 1] (the token), `position` int32 [1] (its position);
* states  `k_cache_{i}`, `v_cache_{i}` fp16 [1, n_kv_heads, max_seq, head_dim] per layer
  (iOS 18 / macOS 15 stateful model: each prediction writes slot `position` with
  `slice_update` and attends over slots 0..=position, a causal mask built in the graph from
  `position`); a new `MLState` is an empty cache;
* output  `logits` fp32 [1, vocab].

So a prompt is fed one token per prediction (no batched prefill), and decoding is one
prediction per token: the comparison is decode against decode.

The math is the one `espresso` runs: RMSNorm (computed on x / max|x|, so SmolLM2's
~22,000-sized activations do not overflow fp16 squares — the same trick as our ANE kernels),
GQA attention with adjacent-pair RoPE (the GGUF layout: llama.cpp's converter already
permuted Q/K rows), SwiGLU, tied classifier when the file has no `output.weight`. Weights are
dequantized from the GGUF (Q4_1, Q4_K, Q8_0, F16, F32, ... via the `gguf` package) and stored
as fp16; compute precision fp16 (what the ANE runs).

Converting runs on any OS with coremltools (tested with coremltools 9.0 on Linux, where
predictions cannot run); the benchmark needs macOS 15+:

    python3 -m venv .venv && .venv/bin/pip install coremltools gguf numpy
    .venv/bin/python scripts/coreml_export.py --out smollm2.mlpackage
    espresso bench --backend ane --vs coreml smollm2.mlpackage
"""

import argparse
import os
import sys

import numpy as np


def default_gguf():
    base = os.environ.get("ESPRESSO_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "espresso"
    )
    return os.path.join(base, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


class Gguf:
    """Hyperparameters and dequantized tensors of a llama GGUF file."""

    def __init__(self, path):
        import gguf

        self._gguf = gguf
        self.reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        arch = self.string("general.architecture")
        if arch != "llama":
            sys.exit(f"error: {path}: architecture {arch!r}, only llama is supported")
        self.n_layers = self.int("llama.block_count")
        self.dim = self.int("llama.embedding_length")
        self.ffn_dim = self.int("llama.feed_forward_length")
        self.n_heads = self.int("llama.attention.head_count")
        self.n_kv_heads = self.int("llama.attention.head_count_kv", self.n_heads)
        self.head_dim = self.dim // self.n_heads
        self.rope_theta = self.float("llama.rope.freq_base", 10000.0)
        self.rms_eps = self.float("llama.attention.layer_norm_rms_epsilon", 1e-5)
        self.context = self.int("llama.context_length")
        self.vocab = self.tensor("token_embd.weight").shape[0]

    def _field(self, key):
        f = self.reader.fields.get(key)
        return None if f is None else f.parts[f.data[0]]

    def string(self, key):
        v = self._field(key)
        return None if v is None else bytes(v).decode()

    def int(self, key, default=None):
        v = self._field(key)
        if v is None:
            if default is None:
                sys.exit(f"error: the GGUF file has no {key}")
            return default
        return int(v[0])

    def float(self, key, default):
        v = self._field(key)
        return default if v is None else float(v[0])

    def has(self, name):
        return name in self.tensors

    def tensor(self, name):
        """The tensor `name` as float32, row-major [rows][cols] (1-D for norms)."""
        t = self.tensors.get(name)
        if t is None:
            sys.exit(f"error: the GGUF file has no tensor {name}")
        d = self._gguf.quants.dequantize(t.data, t.tensor_type)
        shape = [int(x) for x in reversed(t.shape)]
        return np.asarray(d, dtype=np.float32).reshape(shape)


def rope_tables(max_seq, head_dim, theta):
    """cos, sin [max_seq, head_dim/2]: angle of pair i at position p = p * theta^(-2i/hd)."""
    i = np.arange(head_dim // 2, dtype=np.float64)
    freq = theta ** (-2.0 * i / head_dim)
    ang = np.arange(max_seq, dtype=np.float64)[:, None] * freq[None, :]
    return np.cos(ang).astype(np.float16), np.sin(ang).astype(np.float16)


def build(m, max_seq, n_layers):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    f16 = np.float16
    d, hd, nh, nkv = m.dim, m.head_dim, m.n_heads, m.n_kv_heads
    grp = nh // nkv
    half = hd // 2
    print(
        f"model: {n_layers} layers, dim {d}, {nh}/{nkv} heads of {hd}, ffn {m.ffn_dim}, "
        f"vocab {m.vocab}, {max_seq} cache slots",
        file=sys.stderr,
    )
    embd = m.tensor("token_embd.weight").astype(f16)
    out_w = m.tensor("output.weight").astype(f16) if m.has("output.weight") else embd
    cos_t, sin_t = rope_tables(max_seq, hd, m.rope_theta)
    layers = []
    for i in range(n_layers):
        g = lambda n: m.tensor(f"blk.{i}.{n}.weight").astype(f16)  # noqa: E731
        layers.append({n: g(n) for n in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
            "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")})
        print(f"  layer {i} dequantized", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    out_norm = m.tensor("output_norm.weight").astype(f16)

    states = []
    for i in range(n_layers):
        for kind in ("k", "v"):
            states.append(
                mb.StateTensorSpec((1, nkv, max_seq, hd), dtype=types.fp16)
            )
    specs = [
        mb.TensorSpec((1, 1), dtype=types.int32),
        mb.TensorSpec((1,), dtype=types.int32),
    ] + states

    def rms_norm(x, gain):
        # x [1, d]: scale by max|x| first so squares stay ≤ 1 in fp16.
        m_abs = mb.reduce_max(x=mb.abs(x=x), axes=[-1], keep_dims=True)
        m_safe = mb.add(x=m_abs, y=f16(2.0**-14))
        inv = mb.inverse(x=m_safe)
        xs = mb.mul(x=x, y=inv)
        ms = mb.reduce_mean(x=mb.mul(x=xs, y=xs), axes=[-1], keep_dims=True)
        eps = mb.mul(x=mb.mul(x=inv, y=inv), y=f16(m.rms_eps))
        r = mb.rsqrt(x=mb.add(x=ms, y=eps))
        return mb.mul(x=mb.mul(x=xs, y=r), y=gain)

    def rope(x, heads, cos, sin):
        # x [1, heads*hd] → pairs (x[2i], x[2i+1]) rotated by the position's angle i.
        p = mb.reshape(x=x, shape=[heads, half, 2])
        e = mb.slice_by_index(x=p, begin=[0, 0, 0], end=[heads, half, 1])
        o = mb.slice_by_index(x=p, begin=[0, 0, 1], end=[heads, half, 2])
        re = mb.sub(x=mb.mul(x=e, y=cos), y=mb.mul(x=o, y=sin))
        ro = mb.add(x=mb.mul(x=e, y=sin), y=mb.mul(x=o, y=cos))
        return mb.concat(values=[re, ro], axis=2)  # [heads, half, 2]

    def body(input_ids, position, *caches):
        tok = mb.reshape(x=input_ids, shape=[1])
        x = mb.gather(x=embd, indices=tok, axis=0)  # [1, d]
        cos = mb.reshape(x=mb.gather(x=cos_t, indices=position, axis=0), shape=[1, half, 1])
        sin = mb.reshape(x=mb.gather(x=sin_t, indices=position, axis=0), shape=[1, half, 1])
        # Causal mask over the cache slots: 0 for slot ≤ position, −1e4 after it.
        slots = np.arange(max_seq, dtype=np.int32)
        visible = mb.less_equal(x=slots, y=position)
        hidden = np.full(max_seq, -1e4, dtype=f16)
        mask = mb.select(cond=visible, a=np.zeros(max_seq, dtype=f16), b=hidden)  # [S]
        mask = mb.reshape(x=mask, shape=[1, 1, max_seq])
        zero = np.zeros(1, dtype=np.int32)
        begin = mb.concat(values=[zero, zero, position, zero], axis=0)
        end = mb.concat(
            values=[
                np.array([1, nkv], dtype=np.int32),
                mb.add(x=position, y=np.int32(1)),
                np.array([hd], dtype=np.int32),
            ],
            axis=0,
        )
        scale = f16(1.0 / np.sqrt(hd))
        for i, w in enumerate(layers):
            k_state, v_state = caches[2 * i], caches[2 * i + 1]
            xn = rms_norm(x, w["attn_norm"])
            q = mb.linear(x=xn, weight=w["attn_q"])
            k = mb.linear(x=xn, weight=w["attn_k"])
            v = mb.linear(x=xn, weight=w["attn_v"])
            q = mb.reshape(x=rope(q, nh, cos, sin), shape=[nkv, grp, hd])
            k = mb.reshape(x=rope(k, nkv, cos, sin), shape=[1, nkv, 1, hd])
            v = mb.reshape(x=v, shape=[1, nkv, 1, hd])
            kc = mb.slice_update(x=mb.read_state(input=k_state), update=k, begin=begin, end=end)
            mb.coreml_update_state(state=k_state, value=kc)
            vc = mb.slice_update(x=mb.read_state(input=v_state), update=v, begin=begin, end=end)
            mb.coreml_update_state(state=v_state, value=vc)
            kc = mb.reshape(x=kc, shape=[nkv, max_seq, hd])
            vc = mb.reshape(x=vc, shape=[nkv, max_seq, hd])
            scores = mb.matmul(x=q, y=kc, transpose_y=True)  # [nkv, grp, S]
            scores = mb.add(x=mb.mul(x=scores, y=scale), y=mask)
            probs = mb.softmax(x=scores, axis=-1)
            ctx = mb.reshape(x=mb.matmul(x=probs, y=vc), shape=[1, d])  # [nkv, grp, hd]
            x = mb.add(x=x, y=mb.linear(x=ctx, weight=w["attn_output"]))
            xn = rms_norm(x, w["ffn_norm"])
            gate = mb.linear(x=xn, weight=w["ffn_gate"])
            up = mb.linear(x=xn, weight=w["ffn_up"])
            h = mb.mul(x=mb.mul(x=gate, y=mb.sigmoid(x=gate)), y=up)
            x = mb.add(x=x, y=mb.linear(x=h, weight=w["ffn_down"]))
        xn = rms_norm(x, out_norm)
        logits = mb.linear(x=xn, weight=out_w)
        return mb.cast(x=logits, dtype="fp32", name="logits")

    # The program's input names come from the function signature: name every state.
    names = ["input_ids", "position"] + [
        f"{kind}_cache_{i}" for i in range(n_layers) for kind in ("k", "v")
    ]

    from coremltools.converters.mil import mil

    with mil.Function(dict(zip(names, specs)), ct.target.iOS18) as func:
        func.set_outputs([body(*(func.inputs[n] for n in names))])
    program = mil.Program()
    program.add_function("main", func)
    return program


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=default_gguf(), help="llama GGUF file (default: the pulled SmolLM2)")
    ap.add_argument("--out", required=True, help="output .mlpackage")
    ap.add_argument("--max-seq", type=int, default=512, help="KV-cache slots (default 512, as espresso's ANE backend)")
    ap.add_argument("--layers", type=int, default=None, help="export only the first N layers (quick checks)")
    a = ap.parse_args()
    if not a.out.endswith(".mlpackage"):
        sys.exit("error: --out must end in .mlpackage")
    try:
        import coremltools as ct
    except ImportError:
        sys.exit("error: coremltools is not installed (pip install coremltools gguf numpy)")
    m = Gguf(a.gguf)
    if a.max_seq < 2 or a.max_seq > m.context:
        sys.exit(f"error: --max-seq {a.max_seq} outside 2..={m.context}")
    n_layers = m.n_layers if a.layers is None else max(1, min(a.layers, m.n_layers))
    prog = build(m, a.max_seq, n_layers)
    model = ct.convert(
        prog,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        compute_units=ct.ComputeUnit.CPU_AND_NE,
        minimum_deployment_target=ct.target.iOS18,
    )
    model.short_description = (
        f"{os.path.basename(a.gguf)}: {n_layers} layers, one token per prediction, "
        f"KV cache in state ({a.max_seq} slots), fp16"
    )
    model.user_defined_metadata["espresso.max_seq"] = str(a.max_seq)
    model.user_defined_metadata["espresso.vocab"] = str(m.vocab)
    model.user_defined_metadata["espresso.layers"] = str(n_layers)
    model.save(a.out)
    print(f"wrote {a.out} ({n_layers} layers, KV cache in state, {a.max_seq} slots)")


if __name__ == "__main__":
    main()
