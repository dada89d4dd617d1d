#!/usr/bin/env python3
"""Drive a running `espresso serve` with the official `openai` Python client.

Usage: serve_openai_client.py BASE_URL [API_KEY]   (BASE_URL like http://127.0.0.1:8080)

Checks chat and text completions, streaming and not, usage (with cached tokens), greedy
determinism across the two modes, stop strings, model listing, and that errors surface as the
client's typed exceptions. Exits non-zero with a message on the first failure. Run by
crates/cli/tests/serve.rs; `scripts/test` installs the pinned client.
"""
import sys

import openai


def main() -> None:
    base = sys.argv[1].rstrip("/")
    key = sys.argv[2] if len(sys.argv) > 2 else "not-needed"
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)

    models = client.models.list()
    ids = [m.id for m in models.data]
    assert len(ids) == 1, ids
    assert client.models.retrieve(ids[0]).id == ids[0]

    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    r = client.chat.completions.create(model=ids[0], messages=messages, max_tokens=20, temperature=0)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and text, r
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    # Streaming gives the same greedy text, then a usage chunk.
    pieces, usage, finish = [], None, None
    stream = client.chat.completions.create(
        model=ids[0], messages=messages, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(pieces) == text, ("".join(pieces), text)
    assert finish == r.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
    # The same conversation again: its prompt comes from the cache.
    assert usage.prompt_tokens_details.cached_tokens > 0, usage

    # Text completions with a stop string.
    c = client.completions.create(model=ids[0], prompt="One, two, three,", max_tokens=16, temperature=0)
    full = c.choices[0].text
    assert full, c
    stop = full.strip().split()[0] if full.strip() else None
    if stop:
        s = client.completions.create(model=ids[0], prompt="One, two, three,", max_tokens=16,
                                      temperature=0, stop=[stop])
        assert s.choices[0].text == full[: full.find(stop)], (s.choices[0].text, full, stop)
        assert s.choices[0].finish_reason == "stop"
    streamed = "".join(
        ch.choices[0].text
        for ch in client.completions.create(model=ids[0], prompt="One, two, three,", max_tokens=16,
                                            temperature=0, stream=True)
        if ch.choices
    )
    assert streamed == full, (streamed, full)

    # Seeded sampling is reproducible.
    a = client.completions.create(model=ids[0], prompt="Once", max_tokens=12, temperature=0.9, seed=7)
    b = client.completions.create(model=ids[0], prompt="Once", max_tokens=12, temperature=0.9, seed=7)
    assert a.choices[0].text == b.choices[0].text

    # Errors arrive as the client's typed exceptions.
    try:
        client.chat.completions.create(model=ids[0], messages=messages, n=2)
        raise AssertionError("n=2 must be refused")
    except openai.BadRequestError as e:
        assert e.status_code == 400
    try:
        client.chat.completions.create(model=ids[0], messages=messages, temperature=-0.5)
        raise AssertionError("a negative temperature must be refused")
    except openai.BadRequestError:
        pass
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("an unknown model must be 404")
    except openai.NotFoundError:
        pass
    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
