"""How wrong is top-20 entropy? Measure it against a near-full distribution from llama-server.

The proxy sees only the top-20 candidates per token. llama.cpp can return far more (up to the whole
262,144-token Gemma vocabulary), so for a fixed sample of the study's prompts this script asks the
embedded llama-server directly for the top ``--candidates`` (default 20,000) logprobs per token and
stores, per generated token, the near-full entropy, the top-20 entropy H_20, the top-20 mass m_20,
and the near-full mass. `entropy-sentinel study` turns the file into the truncation table of
docs/results.md (error of each entropy variant against the near-full entropy).

    .venv/bin/python scripts/measure_truncation.py --per-slice 8 --out data/traces/truncation-gemma-3-270m.json

Talks to llama-server directly (not through the proxy, which would force top-20). Prompts are the
same fixed few-shot completion prompts as the study's traces; the file holds no text.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from pathlib import Path

import numpy as np
import orjson
from entropy_sentinel.benchmarks.loader import load_benchmark
from entropy_sentinel.benchmarks.prompts import build_prompt
from entropy_sentinel.config import SentinelConfig
from entropy_sentinel.embedded import LocalLlamaServer
from tqdm import tqdm

SLICES = [
    "arith_1d", "arith_2d", "arith_3d", "arith_4d", "svamp", "mawps", "asdiv_a", "gsm8k", "gsm_symbolic", "math_l1",
    "math_l2", "arc_easy", "sciq", "mmlu_stem",
]


def token_rows(content: list[dict], k: int = 20) -> list[list[float]]:
    """Per token: [near-full entropy, near-full mass, H_k, m_k] from one choice's logprobs."""
    rows = []
    for token in content:
        lp = np.sort(np.array([c["logprob"] for c in token["top_logprobs"]], dtype=np.float64))[::-1]
        p = np.exp(np.minimum(lp, 0.0))
        mass = float(p.sum())
        q = p / mass  # float32 softmax sums can exceed 1 by ~1e-4
        full = float(-(q[q > 0] * np.log(q[q > 0])).sum())
        top = p[:k]
        h_k = float(-(top[top > 0] * np.log(top[top > 0])).sum())
        rows.append([round(full, 6), round(mass, 6), round(h_k, 6), round(min(float(top.sum()), 1.0), 6)])
    return rows


def measure(url: str, per_slice: int, candidates: int, slices: list[str]) -> list[dict]:
    out = []
    items = [(name, item) for name in slices for item in load_benchmark(name, limit=per_slice)]
    for name, item in tqdm(items, desc="near-full logprobs", unit="response", file=sys.stderr):
        prompt, extras = build_prompt(item, "completion")
        body = {"prompt": prompt, "temperature": 0, "logprobs": candidates, **extras}
        req = urllib.request.Request(
            url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=600) as resp:
            choice = orjson.loads(resp.read())["choices"][0]
        content = (choice.get("logprobs") or {}).get("content") or []
        out.append({"benchmark": name, "item_id": item.item_id, "tokens": token_rows(content)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-slice", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=20_000)
    ap.add_argument("--upstream", default="local", help="llama-server URL, or 'local' to start the embedded one")
    ap.add_argument("--slices", nargs="*", default=list(SLICES))
    ap.add_argument("--out", type=Path, default=Path("data/traces/truncation-gemma-3-270m.json"))
    args = ap.parse_args(argv)
    server = None
    url = args.upstream.rstrip("/")
    if url == "local":
        server = LocalLlamaServer(SentinelConfig().local)
        url = server.start()
    try:
        responses = measure(url, args.per_slice, args.candidates, args.slices)
    finally:
        if server is not None:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"model": "gemma-3-270m", "k": 20, "candidates": args.candidates, "responses": responses}
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    n = sum(len(r["tokens"]) for r in responses)
    mass = [t[1] for r in responses for t in r["tokens"]]
    print(f"{len(responses)} responses, {n} tokens; top-{args.candidates} mass: min {min(mass, default=math.nan):.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
