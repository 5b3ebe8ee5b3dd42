"""``entropy-sentinel collect``: labelled traces from benchmark traffic sent through a running proxy.

Each benchmark item is sent with the async ``openai`` client (as a real application would), tagged
with the ``X-Sentinel-Slice`` header (the ``--slice`` pairs plus ``benchmark=<name>``, so the
proxy's own per-slice estimate at ``GET /sentinel/v1/slices`` can be read back), its answer graded,
and one JSON line written per response: request id, benchmark, item id, slice, prompt set, the
entropy statistics the proxy recorded (every entropy variant), the proxy's P(correct), the label and
the model id. No prompt or completion text is kept, only the short extracted answer. Interrupted
runs resume: items of the same benchmark and prompt set already in the output file are skipped.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from entropy_sentinel.benchmarks.graders import grade
from entropy_sentinel.benchmarks.loader import Item, load_benchmark
from entropy_sentinel.benchmarks.prompts import build_prompt, load_prompts
from entropy_sentinel.monitor.slices import _TOKEN, MAX_PAIRS, canonical

SLICE_HEADER = "X-Sentinel-Slice"
#: the tag ``collect`` itself adds to every request and row
BENCHMARK_TAG = "benchmark"


class CollectError(ValueError):
    """A bad ``collect`` argument (slice tags, prompts file); the message says what to fix."""


@dataclass
class CollectStats:
    written: int = 0
    skipped_done: int = 0
    unscored: int = 0
    failed: int = 0
    correct: int = 0
    #: the benchmark's name and prompt set as written in the rows
    benchmark: str = ""
    prompts: str = ""


@dataclass
class BenchmarkSummary:
    """A benchmark's rows in the output file (this run's and earlier runs' alike)."""

    n: int
    accuracy: float
    #: rows carrying a P(correct) (the proxy had an estimator), and their mean
    n_scored: int
    mean_p_correct: float

    def line(self, name: str) -> str:
        p = f"{self.mean_p_correct:.3f}" if self.n_scored else "n/a (no estimator)"
        scored = "" if self.n_scored in (0, self.n) else f" over {self.n_scored} scored"
        return f"{name}: n={self.n}, observed accuracy {self.accuracy:.3f}, mean P(correct) {p}{scored}"


def prompts_tag(path: str | os.PathLike[str] | None) -> str:
    """``"<file stem or 'default'>:v<version>"`` of the prompt set ``build_prompt`` uses."""
    try:
        ps = load_prompts(str(path) if path is not None else None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CollectError(f"--prompts {path}: not a usable prompts file ({type(exc).__name__}: {exc})") from None
    return f"{Path(path).stem if path is not None else 'default'}:v{ps.version}"


def _rows(path: Path) -> Iterable[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_bytes().splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict):
            yield row


def _same_prompts(row: dict[str, Any], prompts: str | None) -> bool:
    """Whether ``row`` was sent with prompt set ``prompts`` (None: any); rows from before prompt
    sets were recorded count as the default set."""
    if prompts is None:
        return True
    recorded = row.get("prompts")
    return recorded == prompts if recorded is not None else prompts.startswith("default:")


def completed_ids(path: Path, benchmark: str, prompts: str | None = None) -> set[str]:
    """Item ids of ``benchmark`` already in ``path`` (sent with prompt set ``prompts`` when given);
    a torn last line (interrupt) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
    done = set()
    for row in _rows(path):
        if row.get("benchmark") == benchmark and _same_prompts(row, prompts):
            done.add(str(row.get("item_id")))
    return done


def summarize(path: Path, benchmark: str, prompts: str | None = None) -> BenchmarkSummary:
    """n, observed accuracy and mean P(correct) of ``benchmark``'s rows in ``path``."""
    labels, ps = [], []
    for row in _rows(path):
        if row.get("benchmark") != benchmark or not _same_prompts(row, prompts) or row.get("label") is None:
            continue
        labels.append(int(row["label"]))
        if row.get("p_correct") is not None:
            ps.append(float(row["p_correct"]))
    return BenchmarkSummary(
        n=len(labels),
        accuracy=sum(labels) / len(labels) if labels else math.nan,
        n_scored=len(ps),
        mean_p_correct=sum(ps) / len(ps) if ps else math.nan,
    )


def _check_tag(key: str, value: str, what: str) -> None:
    for side, text in (("key", key), ("value", value)):
        if not _TOKEN.match(text):
            raise CollectError(
                f"{what}: the {side} {text!r} is not 1-64 characters of [A-Za-z0-9_.:-] "
                f"(the proxy's {SLICE_HEADER} rule)"
            )


def parse_slice(pairs: Iterable[str]) -> dict[str, str]:
    """``["domain=algebra", ...]`` -> tags, validated by the proxy's ``X-Sentinel-Slice`` rules.

    ``benchmark`` is reserved (collect adds it), so at most ``MAX_PAIRS - 1`` pairs are left."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CollectError(f"--slice expects key=value, got {pair!r}")
        _check_tag(key, value, f"--slice {pair!r}")
        if key == BENCHMARK_TAG:
            raise CollectError(f"--slice {pair!r}: {BENCHMARK_TAG!r} is set by collect itself (the benchmark's name)")
        if key in out:
            raise CollectError(f"--slice repeats the key {key!r}")
        out[key] = value
    if len(out) > MAX_PAIRS - 1:
        raise CollectError(
            f"--slice: at most {MAX_PAIRS - 1} pairs ({SLICE_HEADER} carries {MAX_PAIRS}, one of them "
            f"{BENCHMARK_TAG}=<name>), got {len(out)}"
        )
    return out


def slice_header(tags: dict[str, str], benchmark: str) -> tuple[dict[str, str], str]:
    """(tags, ``X-Sentinel-Slice`` value) of a run: ``tags`` (already through :func:`parse_slice`)
    plus ``benchmark=<name>``."""
    tags = dict(tags)
    if not _TOKEN.match(benchmark):
        raise CollectError(
            f"benchmark name {benchmark!r} cannot be a slice tag value (1-64 characters of [A-Za-z0-9_.:-]); "
            "rename the benchmark file"
        )
    tags[BENCHMARK_TAG] = benchmark
    return tags, canonical(tags)


async def _record(
    session: aiohttp.ClientSession, root: str, request_id: str, admin_token: str | None = None
) -> dict[str, Any]:
    token = admin_token or os.environ.get("SENTINEL_ADMIN_TOKEN")
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
    prompts: str | os.PathLike[str] | None = None,
    admin_token: str | None = None,
) -> CollectStats:
    """Send ``benchmark`` through the proxy at ``proxy_url``; append labelled rows to ``out``.
    The proxy's records are read with ``admin_token`` (default: ``$SENTINEL_ADMIN_TOKEN``).

    Raises :class:`CollectError` for bad slice tags or prompts file, before anything is sent."""
    import openai
    from tqdm import tqdm

    checked = parse_slice(f"{k}={v}" for k, v in (slice_tags or {}).items())  # fail before loading the benchmark
    prompt_set = prompts_tag(prompts)
    base = proxy_url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    root = base[: -len("/v1")]
    items = load_benchmark(benchmark, limit=limit)
    name = items[0].benchmark if items else benchmark
    tags, header = slice_header(checked, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(out, name, prompt_set)
    todo = [item for item in items if item.item_id not in done]
    stats = CollectStats(skipped_done=len(items) - len(todo), benchmark=name, prompts=prompt_set)
    client = openai.AsyncOpenAI(
        base_url=base, api_key=api_key or os.environ.get("OPENAI_API_KEY", "unused"), max_retries=2, timeout=600
    )
    headers = {SLICE_HEADER: header}
    if model is None and todo:
        model = (await client.models.list()).data[0].id
    bar = tqdm(
        total=len(items), initial=stats.skipped_done, desc=name, unit="item", file=sys.stderr, disable=not progress
    )
    semaphore = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(item: Item, session: aiohttp.ClientSession, sink: Any) -> None:
        async with semaphore:
            prompt, extras = build_prompt(item, style, path=prompts)
            try:
                if style == "chat":
                    raw = await client.chat.completions.with_raw_response.create(
                        model=model, messages=prompt, temperature=0, extra_headers=headers, **extras
                    )
                    text = raw.parse().choices[0].message.content or ""
                else:
                    raw = await client.completions.with_raw_response.create(
                        model=model, prompt=prompt, temperature=0, extra_headers=headers, **extras
                    )
                    text = raw.parse().choices[0].text
                record = await _record(session, root, raw.headers["X-Sentinel-Request-Id"], admin_token)
            except (openai.APIError, aiohttp.ClientError, KeyError) as exc:
                stats.failed += 1
                bar.write(f"{name}/{item.item_id}: {type(exc).__name__}: {exc}"[:300])
                bar.update()
                return
        # a model the proxy has no estimator for still gives features to train one: kept, p_correct null
        usable = record.get("scored") or record.get("unscored_reason") == "no_estimator_for_model"
        if not usable or not record.get("choices"):
            stats.unscored += 1
            bar.update()
            return
        result = grade(item, text)
        choice = record["choices"][0]
        p_correct = (record.get("p_correct") or [None])[0]
        row = {
            "request_id": record["request_id"],
            "benchmark": name,
            "item_id": item.item_id,
            "slice": tags,
            "prompts": prompt_set,
            "meta": item.meta,
            "model": record.get("model") or model,
            "k": choice.get("upstream_top_k"),
            "tokens": choice.get("tokens"),
            "features": choice["features"],
            "features_by_variant": choice.get("features_by_variant", {}),
            "p_correct": None if p_correct is None else float(p_correct),
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

    try:
        async with aiohttp.ClientSession() as session:
            # one local append-only file for the whole run: opening it does not stall the loop
            with open(out, "ab") as sink:  # noqa: ASYNC230
                await asyncio.gather(*(one(item, session, sink) for item in todo))
    finally:
        bar.close()
        await client.close()
    return stats
