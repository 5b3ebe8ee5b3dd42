"""``entropy-sentinel collect``: labelled traces from benchmark traffic sent through a running proxy.

Each benchmark item is sent with the async ``openai`` client (as a real application would), its
answer graded, and one JSON line written per response: request id, benchmark, item id, slice, the
entropy statistics the proxy recorded (every entropy variant), the label and the model id. No
prompt or completion text is kept, only the short extracted answer. Interrupted runs resume: items
already in the output file are skipped.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from entropy_sentinel.estimator.benchmarks import Item, load_benchmark
from entropy_sentinel.estimator.graders import grade
from entropy_sentinel.estimator.prompts import build_prompt


@dataclass
class CollectStats:
    written: int = 0
    skipped_done: int = 0
    unscored: int = 0
    failed: int = 0
    correct: int = 0


def completed_ids(path: Path, benchmark: str) -> set[str]:
    """Item ids of ``benchmark`` already in ``path``; a torn last line (interrupt) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    done = set()
    for line in data.splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if row.get("benchmark") == benchmark:
            done.add(str(row.get("item_id")))
    return done


def parse_slice(pairs: Iterable[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--slice expects key=value, got {pair!r}")
        out[key] = value
    return out


async def _record(session: aiohttp.ClientSession, root: str, request_id: str) -> dict[str, Any]:
    token = os.environ.get("SENTINEL_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with session.get(f"{root}/sentinel/v1/requests/{request_id}", headers=headers) as resp:
        resp.raise_for_status()
        return await resp.json()


async def collect(
    proxy_url: str,
    benchmark: str,
    out: Path,
    slice_tags: dict[str, str] | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    style: str = "completion",
    model: str | None = None,
    api_key: str | None = None,
    progress: bool = True,
) -> CollectStats:
    import openai
    from tqdm import tqdm

    base = proxy_url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    root = base[: -len("/v1")]
    items = load_benchmark(benchmark, limit=limit)
    name = items[0].benchmark if items else benchmark
    out.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(out, name)
    todo = [item for item in items if item.item_id not in done]
    stats = CollectStats(skipped_done=len(items) - len(todo))
    client = openai.AsyncOpenAI(
        base_url=base, api_key=api_key or os.environ.get("OPENAI_API_KEY", "unused"), max_retries=2, timeout=600
    )
    if model is None:
        model = (await client.models.list()).data[0].id
    tags = {**(slice_tags or {}), "benchmark": name}
    bar = tqdm(total=len(items), initial=stats.skipped_done, desc=name, unit="item", file=sys.stderr, disable=not progress)
    semaphore = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(item: Item, session: aiohttp.ClientSession, sink: Any) -> None:
        async with semaphore:
            prompt, extras = build_prompt(item, style)
            try:
                if style == "chat":
                    raw = await client.chat.completions.with_raw_response.create(
                        model=model, messages=prompt, temperature=0, **extras
                    )
                    text = raw.parse().choices[0].message.content or ""
                else:
                    raw = await client.completions.with_raw_response.create(
                        model=model, prompt=prompt, temperature=0, **extras
                    )
                    text = raw.parse().choices[0].text
                record = await _record(session, root, raw.headers["X-Sentinel-Request-Id"])
            except (openai.APIError, aiohttp.ClientError, KeyError) as exc:
                stats.failed += 1
                bar.write(f"{name}/{item.item_id}: {type(exc).__name__}: {exc}"[:300])
                bar.update()
                return
        if not record.get("scored") or not record.get("choices"):
            stats.unscored += 1
            bar.update()
            return
        result = grade(item, text)
        choice = record["choices"][0]
        row = {
            "request_id": record["request_id"],
            "benchmark": name,
            "item_id": item.item_id,
            "slice": tags,
            "meta": item.meta,
            "model": record.get("model") or model,
            "k": choice.get("upstream_top_k"),
            "tokens": choice.get("tokens"),
            "features": choice["features"],
            "features_by_variant": choice.get("features_by_variant", {}),
            "predicted": result.predicted,
            "label": int(result.correct),
        }
        async with lock:
            sink.write(orjson.dumps(row) + b"\n")
            sink.flush()
        stats.written += 1
        stats.correct += row["label"]
        bar.update()
        bar.set_postfix(acc=f"{stats.correct / max(stats.written, 1):.3f}")

    async with aiohttp.ClientSession() as session:
        with open(out, "ab") as sink:
            await asyncio.gather(*(one(item, session, sink) for item in todo))
    bar.close()
    await client.close()
    return stats
