#!/usr/bin/env python3
"""Top-1 acceptance of drafters on the held-out prompts (crates/cli/tests/data/draft_prompts.json).

For each prompt (chat prompts in the chat template, raw ones as text), runs
`espresso generate --json -n N --draft-max K --draft D` and sums the proposed and accepted tokens,
per prompt kind and drafter; also checks that every drafter's greedy tokens equal --draft none's.
Tokens per pass is what a verify pass of K rows gains where extra rows are free (the ANE).
Usage: python3 scripts/draft_acceptance.py [--bin target/release/espresso] [-n 64] [--draft head ngram]
       [--draft-max K] [--min-p P] [--head HEAD.gguf]
"""
import argparse, json, pathlib, subprocess, sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=str(ROOT / "target/release/espresso"))
ap.add_argument("-n", type=int, default=64)
ap.add_argument("--draft", nargs="+", default=["head", "ngram"])
ap.add_argument("--draft-max", type=int, default=2)
ap.add_argument("--min-p", type=float, default=None, help="--draft-min-p (default: the CPU's)")
ap.add_argument("--head", default=None, help="--draft-head file (default: the shipped head)")
ap.add_argument("--prompts", default=str(ROOT / "crates/cli/tests/data/draft_prompts.json"))
a = ap.parse_args()
prompts = json.loads(pathlib.Path(a.prompts).read_text())

def run(text, chat, draft):
    cmd = [a.bin, "generate", "--json", "-n", str(a.n), "--draft-max", str(a.draft_max), "--draft", draft]
    if draft == "head" and a.min_p is not None:
        cmd += ["--draft-min-p", str(a.min_p)]
    if draft == "head" and a.head:
        cmd += ["--draft-head", a.head]
    cmd += (["--chat"] if chat else []) + [text]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

ok = True
for kind in ("chat", "raw"):
    totals = {d: [0, 0, 0, 0.0] for d in a.draft}  # proposed, accepted, passes, decode ms/token sum
    for text in prompts[kind]:
        ref = run(text, kind == "chat", "none")
        for d in a.draft:
            r = run(text, kind == "chat", d)
            if r["tokens"] != ref["tokens"]:
                ok = False
                print(f"MISMATCH {d} {kind}: {text!r}", file=sys.stderr)
            t = totals[d]
            t[0] += r["draft"]["proposed"]; t[1] += r["draft"]["accepted"]; t[2] += r["draft"]["passes"]
    for d, (p, acc, passes, _) in totals.items():
        print(f"{kind:4} {d:6} acceptance {acc / max(p, 1) * 100:5.1f}% ({acc}/{p}), "
              f"{(passes + acc) / max(passes, 1):.2f} tokens/pass over {len(prompts[kind])} prompts")
print("greedy output identical to --draft none" if ok else "OUTPUT DIFFERS", file=sys.stderr)
sys.exit(0 if ok else 1)
