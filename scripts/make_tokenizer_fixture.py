#!/usr/bin/env python3
"""Tokenizer and chat-template parity fixture, produced by llama.cpp (llama-cpp-python).

Loads the GGUF with `llama_cpp.Llama(model_path, vocab_only=True)` (llama.cpp's own tokenizer;
no weights are read) and records, for a fixed list of strings chosen to exercise the byte-level
BPE and the `smollm` pre-tokenizer:

  * `tokenize(text.encode(), add_bos=False, special=False)` and `special=True` ids,
  * `detokenize(ids, special=True)` bytes (hex) for both id lists,

the same ids for seeded random strings (mixtures of scripts, whitespace, digits, emoji parts,
contractions and special-token text), plus vocabulary facts (BOS/EOS ids, `add_bos`,
end-of-generation ids, a sample of token pieces) and chat-template renderings made by llama-cpp-python's `Jinja2ChatFormatter` (jinja2 with
`trim_blocks`/`lstrip_blocks`, as HF transformers renders chat templates).

Output (committed, used by crates/model/tests/tokenizer_parity.rs):
  crates/model/tests/fixtures/tokenizer_parity.json

Usage:
  pip install llama-cpp-python
  python3 scripts/make_tokenizer_fixture.py [--model PATH] [--out PATH]
"""

import argparse
import json
import os
import random
import sys
import unicodedata

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter


def default_model():
    """Where `espresso pull` stores the model ($ESPRESSO_HOME, $XDG_CACHE_HOME/espresso or
    ~/.cache/espresso, then models/)."""
    home = os.environ.get("ESPRESSO_HOME") or (
        os.path.join(os.environ["XDG_CACHE_HOME"], "espresso")
        if os.environ.get("XDG_CACHE_HOME")
        else os.path.expanduser("~/.cache/espresso")
    )
    return os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


# Chosen to cover: prose, code, numbers (long digit runs), whitespace runs, unicode (accents,
# CJK, RTL, combining marks), emoji (ZWJ sequences, flags, skin tones), special-token text,
# contractions, leading/trailing spaces, the empty string and byte-level corner cases.
STRINGS = [
    # prose
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a land far, far away, there lived a small dragon.",
    "It's a beautiful day; isn't it? We'll see, they've said, you'd know, I'm sure.",
    "IT'S LOUD. He SAID 'NO' and 'Yes'.",
    "Mr. O'Neill's dog—a terrier—barked… twice.",
    "\"Quoted text\" and 'single quotes' and `backticks`.",
    "A sentence.\n\nA new paragraph after a blank line.",
    # leading / trailing spaces
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    " ",
    "  ",
    # whitespace runs
    "a  b   c    d",
    "tab\tseparated\tvalues",
    "\t\tdouble tab",
    "line1\nline2\nline3",
    "\n",
    "\n\n\n",
    "windows\r\nline\r\nendings",
    "mixed \t \n \t\n  whitespace",
    "end with newline\n",
    "   \n   \n",
    "x" + " " * 17 + "y",
    "\u00a0non-breaking\u00a0space and\u2003em space",
    # numbers
    "0",
    "42",
    "3.14159265358979323846",
    "1234567890123456789012345678901234567890",
    "Call 555-0199 or +1 (800) 123-4567 before 12:30pm on 2024-03-15.",
    "Version 1.2.3-rc4, build #20240101, 99.9% uptime, $1,000,000.",
    "x1y22z333",
    "١٢٣ ٤٥٦ (Arabic-Indic digits) and ½ ⅓ ² ³ Ⅻ",
    # code
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i] * b[i]; }",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "    indented = {'key': [1, 2, 3], \"other\": None}  # comment",
    "#!/bin/bash\nset -euo pipefail\necho \"$HOME\" | tr a-z A-Z && exit 0",
    "x=>x**2 !== y?.z ?? w || a && b",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.org",
    # unicode
    "café naïve résumé façade jalapeño",
    "Ångström Øresund Straße Œuvre",
    "e\u0301 a\u0308 n\u0303 (combining marks)",
    "Z\u0351\u0360a\u0337l\u0334g\u0335o\u0336",
    "日本語のテキストです。",
    "中文字符和标点符号：你好，世界！",
    "한국어 텍스트",
    "Привет, мир! Ελληνικά κείμενα.",
    "שלום עולם",
    "مرحبا بالعالم",
    "हिन्दी पाठ",
    "ไทย ภาษา",
    "mixed English 和中文 and العربية text",
    "\u200bzero\u200bwidth\u200bspaces\ufeff",
    "math: ∀x∈ℝ, x²≥0 ⇒ √(x²)=|x|",
    # emoji
    "😀",
    "I love 🍕 and 🍣!",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 🏴‍☠️",
    "🇺🇸🇫🇷🇯🇵",
    "👍🏽 👋🏿",
    "❤️✨🔥💯",
    # special-token text
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text before<|endoftext|>text after",
    "<|im_start|><|im_end|>",
    "<|im_start |>not special<|im_end",
    "<repo_name>espresso<file_sep>main.rs",
    "a<|im_end|>b<|im_end|>c",
    " <|im_start|> spaced <|im_end|> ",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    # byte-level corner cases
    "\x00\x01\x02 control chars \x7f",
    "<s></s><unk>[INST]",
    "ĠĊ literal byte-level chars",
    "!!!???...,,,;;;",
    "a" * 64,
    "'s'S 't 're'",
    "  '  s",
    "",
]

# Building blocks for the seeded random strings: ASCII classes, every whitespace kind, several
# scripts, combining marks, emoji parts (ZWJ, variation selector, skin tone), number characters
# outside ASCII, contractions in both cases, special-token text and byte-level look-alikes.
FUZZ_POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", " ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c",
    "\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "éèêëàâäôöûüçñÅØßŒ", "日本語中文字한국어",
    "Привет", "Ελληνικά", "שלום", "مرحبا", "हिन्दी", "ไทย", "\u0301\u0308\u0303\u0351\u0360",
    "😀🍕👍🏽🇺🇸❤️✨🔥", "\u200d", "\ufe0f", "\u200b", "\ufeff", "²³½⅓Ⅻ١٢٣𝟙𝟚", "'s", "'t", "'re",
    "'ve", "'m", "'ll", "'d", "'S", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>",
    "∀∈ℝ≥⇒√", "ĠĊ", "\x00\x01\x1f\x7f", "𝒜𝓑", "ｆｕｌｌｗｉｄｔｈ", "ǅǈ", "ⅰⅱ", "〇",
    "\u0600\u06dd", "\U000e0001",
]


def random_codepoint(rng):
    """A code point assigned in this Python's Unicode database (Python 3.11: Unicode 14).

    Letters first assigned in Unicode 16 are classified differently by llama.cpp's tables
    (older) and by Rust's regex crate (Unicode 16), so unassigned code points are skipped.
    """
    while True:
        c = rng.choice(
            [
                rng.randint(0x20, 0x2FFF),
                rng.randint(0x3000, 0xD7FF),
                rng.randint(0xE000, 0xFFFF),
                rng.randint(0x10000, 0x1FFFF),
            ]
        )
        if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn":
            return chr(c)


def random_strings(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.15:
                parts.append(random_codepoint(rng))
                continue
            pool = rng.choice(FUZZ_POOLS)
            if len(pool) <= 3 or rng.random() < 0.3:
                parts.append(pool)
            else:
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 5))))
        out.append("".join(parts))
    return out


# Conversations for the chat-template fixture.
CONVERSATIONS = [
    {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "system", "content": "You are a pirate. Answer in pirate speak."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Ahoy, matey!"},
            {"role": "user", "content": "Where is the treasure?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "user", "content": "Write a haiku.\nAbout the sea."},
            {"role": "assistant", "content": "Waves fold into foam —\nsalt wind carries gull voices\nthe tide keeps its time"},
        ],
        "add_generation_prompt": False,
    },
    {
        "messages": [
            {"role": "user", "content": "  Unicode: café 日本語 😀 {{ not a tag }} {% raw %}"},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [],
        "add_generation_prompt": True,
    },
]


def to_json_lines(obj):
    """JSON with one list element per line (small diffs when the fixture is regenerated)."""
    dump = lambda v: json.dumps(v, ensure_ascii=False)
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and isinstance(v[0], (dict, list)):
            body = ",\n".join("  " + dump(x) for x in v)
            lines.append(f" {dump(k)}: [\n{body}\n ]")
        else:
            lines.append(f" {dump(k)}: {dump(v)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--random-strings", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument(
        "--out",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)),
            "..",
            "crates",
            "model",
            "tests",
            "fixtures",
            "tokenizer_parity.json",
        ),
    )
    args = ap.parse_args()

    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()

    def tok(text, special):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def detok_hex(ids):
        return llm.detokenize(ids, special=True).hex()

    cases = []
    for text in STRINGS:
        ids_plain = tok(text, False)
        ids_special = tok(text, True)
        cases.append(
            {
                "text": text,
                "ids_plain": ids_plain,
                "ids_special": ids_special,
                "detok_plain_hex": detok_hex(ids_plain),
                "detok_special_hex": detok_hex(ids_special),
            }
        )

    random_cases = [
        {"text": t, "ids_plain": tok(t, False), "ids_special": tok(t, True)}
        for t in random_strings(args.random_strings, args.seed)
    ]

    meta = llm.metadata
    template = meta["tokenizer.chat_template"]
    bos_id = llama_cpp.llama_vocab_bos(vocab)
    eos_id = llama_cpp.llama_vocab_eos(vocab)
    bos_text = llama_cpp.llama_vocab_get_text(vocab, bos_id).decode("utf-8")
    eos_text = llama_cpp.llama_vocab_get_text(vocab, eos_id).decode("utf-8")
    chats = []
    for conv in CONVERSATIONS:
        fmt = Jinja2ChatFormatter(
            template=template,
            eos_token=eos_text,
            bos_token=bos_text,
            add_generation_prompt=conv["add_generation_prompt"],
        )
        prompt = fmt(messages=conv["messages"]).prompt
        chats.append(
            {
                "messages": conv["messages"],
                "add_generation_prompt": conv["add_generation_prompt"],
                "rendered": prompt,
                "ids_special": tok(prompt, True),
            }
        )

    # token_to_piece(special=True) for a spread of ids across the vocabulary.
    sample_ids = sorted(set(range(0, 600)) | set(range(0, n_vocab, 11)) | {n_vocab - 1})
    buf = (llama_cpp.ctypes.c_char * 256)()
    pieces = []
    for i in sample_ids:
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, True)
        if n < 0:
            sys.exit(f"token {i}: piece longer than {len(buf)} bytes")
        pieces.append([i, bytes(buf[:n]).hex()])

    eog_ids = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    control_ids = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_control(vocab, i)]

    out = {
        "generator": "scripts/make_tokenizer_fixture.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "model_file": os.path.basename(args.model),
        "n_vocab": n_vocab,
        "bos_id": bos_id,
        "eos_id": eos_id,
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog_ids": eog_ids,
        "control_ids": control_ids,
        "cases": cases,
        "random_seed": args.seed,
        "unicode_version": unicodedata.unidata_version,
        "random_cases": random_cases,
        "chats": chats,
        "pieces_hex": pieces,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(to_json_lines(out))
    print(f"wrote {len(cases)} strings, {len(random_cases)} random strings, {len(chats)} chats, {len(pieces)} pieces to {args.out}")


if __name__ == "__main__":
    main()
