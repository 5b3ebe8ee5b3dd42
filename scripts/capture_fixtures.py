#!/usr/bin/env python3
"""Capture real upstream responses as test fixtures for the wire-rewriting unit tests.

Each case is sent straight to the upstream (no proxy) three ways -- forced top-20, without
logprobs, with the client's own top-n -- so a test can check that rewriting the forced response
gives what the upstream itself answers to the client's request.

    python scripts/capture_fixtures.py --upstream http://127.0.0.1:8081 --out tests/fixtures/llama
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

CHAT = {"messages": [{"role": "user", "content": "Question: What is 17 + 25?\nAnswer:"}]}
COMPLETION = {"prompt": "Question: What is 17 + 25?\nAnswer:"}

# vLLM refuses n > 1 with greedy sampling; a fixed seed keeps the sample reproducible
SAMPLED_N2 = {"n": 2, "temperature": 0.8, "seed": 1234}

# (case name, endpoint, extra body); every case is captured as forced / plain / client-n variants
CASES = [
    ("chat", "chat/completions", CHAT),
    ("chat_stream", "chat/completions", {**CHAT, "stream": True}),
    ("chat_stream_usage", "chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
    ("chat_n2", "chat/completions", {**CHAT, **SAMPLED_N2}),
    ("completions", "completions", COMPLETION),
    ("completions_stream", "completions", {**COMPLETION, "stream": True}),
    ("completions_n2", "completions", {**COMPLETION, **SAMPLED_N2}),
]


def variants(endpoint: str) -> dict[str, dict]:
    if endpoint == "chat/completions":
        return {
            "forced": {"logprobs": True, "top_logprobs": 20},
            "plain": {},
            "top2": {"logprobs": True, "top_logprobs": 2},
            "top0": {"logprobs": True},
        }
    return {"forced": {"logprobs": 20}, "plain": {}, "top2": {"logprobs": 2}, "top0": {"logprobs": 0}}


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            content_type = resp.headers.get("Content-Type")
            return {"status": resp.status, "content_type": content_type, "body": resp.read().decode()}
    except urllib.error.HTTPError as err:
        return {"status": err.code, "content_type": err.headers.get("Content-Type"), "body": err.read().decode()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="base URL of the server, without /v1")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--max-tokens", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(f"{args.upstream.rstrip('/')}/v1/models", timeout=30) as resp:
        (args.out / "models.json").write_text(json.dumps(json.loads(resp.read()), indent=1) + "\n")
    base = {"model": args.model, "temperature": 0, "max_tokens": args.max_tokens, "cache_prompt": False}
    for name, endpoint, extra in CASES:
        for variant, fields in variants(endpoint).items():
            body = {**base, **extra, **fields}
            result = post(f"{args.upstream.rstrip('/')}/v1/{endpoint}", body)
            record = {"endpoint": endpoint, "request": body, **result}
            path = args.out / f"{name}.{variant}.json"
            path.write_text(json.dumps(record, indent=1) + "\n")
            print(f"{path}: HTTP {result['status']}, {len(result['body'])} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
