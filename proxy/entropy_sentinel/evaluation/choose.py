"""``entropy-sentinel select``: use a model's feedback labels to pick its estimator, and switch to it.

Orchestration only, over :mod:`~entropy_sentinel.evaluation.selection` (the comparison),
:func:`~entropy_sentinel.evaluation.training.train` and
:func:`~entropy_sentinel.evaluation.calibrate.load_into_proxy`:

1. the labelled, scored requests of ``model`` are read from the running proxy's store
   (``GET /sentinel/v1/export``, page by page; every replica's rows when the store is shared);
2. every candidate (the registered estimators, or those named) is fitted on the same ``traces``
   (the study's, or the ones ``calibrate`` collected for this model) and predicts those requests
   from their stored features; what the proxy served is compared as ``current``;
3. the comparison says which would have been best on the labels, with its bootstrap share;
4. with ``switch``, when the recommendation is to switch, the winner is trained (with ``train``'s
   validation and metadata) into ``out`` and loaded into the proxy without a restart, as
   ``calibrate`` does.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from entropy_sentinel.estimator.estimators import make_estimator
from entropy_sentinel.estimator.registry import estimator_names
from entropy_sentinel.evaluation.calibrate import load_into_proxy
from entropy_sentinel.evaluation.protocol import benchmark_data, fit_on, group_by_benchmark, read_traces
from entropy_sentinel.evaluation.selection import CURRENT, Comparison, LabelledRows, compare_on_labels, labelled_rows
from entropy_sentinel.evaluation.training import train

__all__ = ["Choice", "ChooseError", "choose", "fetch_records", "fit_candidates"]

#: rows per export page (the endpoint's maximum)
PAGE = 100_000


class ChooseError(RuntimeError):
    """Nothing to choose on (no labels for the model, no traces, a proxy that refuses the export)."""


@dataclass
class Choice:
    comparison: Comparison
    #: the artifact written and loaded (None when nothing was switched)
    artifact: Path | None = None
    loaded: bool = False
    note: str = ""


async def fetch_records(root: str, token: str | None, page: int = PAGE) -> list[dict[str, Any]]:
    """Every stored row, oldest first (``since`` is inclusive: rows at a page's last second are
    read again and kept once)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    rows: dict[str, dict[str, Any]] = {}
    since = 0.0
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(
                f"{root}/sentinel/v1/export", params={"since": repr(since), "limit": str(page)}, headers=headers
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    message = (body.get("error") or {}).get("message", body) if isinstance(body, dict) else body
                    raise ChooseError(f"GET /sentinel/v1/export answered {resp.status}: {message}")
            batch = body["records"]
            before = len(rows)
            for row in batch:
                rows[row["request_id"]] = row
            if len(batch) < page or len(rows) == before:
                return sorted(rows.values(), key=lambda r: (r["ts"], r["request_id"]))
            since = float(batch[-1]["ts"])


def fit_candidates(
    traces: Sequence[str | Path], names: Sequence[str], variant: str = "topk"
) -> dict[str, Any]:
    """Each named estimator fitted on every labelled trace of ``traces`` (as ``train`` fits it)."""
    grouped = group_by_benchmark(t for t in read_traces(traces) if t.get("label") is not None)
    if not grouped:
        raise ChooseError("no labelled traces in " + ", ".join(map(str, traces)))
    templates = {name: make_estimator(name) for name in names}
    data = benchmark_data(grouped, {f for t in templates.values() for f in t.features}, variant)
    return {name: fit_on(t, data, list(data)) for name, t in templates.items()}


def predictions(fitted: dict[str, Any], rows: LabelledRows) -> dict[str, np.ndarray]:
    """Each fitted candidate's P(correct) of the labelled requests, and the served one as ``current``."""
    out = {CURRENT: rows.served}
    for name, est in fitted.items():
        out[name] = est.predict_proba(rows.matrix(tuple(est.features)))[:, 1]
    return out


async def choose(
    proxy_url: str,
    model: str,
    traces: Sequence[str | Path],
    out: str | Path,
    estimators: Sequence[str] | None = None,
    variant: str = "topk",
    admin_token: str | None = None,
    switch: bool = False,
    min_labels: int = 20,
    min_share: float = 0.8,
    n_boot: int = 1000,
    progress: bool = True,
    note: Callable[[str], None] = lambda _: None,
) -> Choice:
    """Compare the estimators on ``model``'s labelled requests; with ``switch``, serve the winner."""
    root = proxy_url.rstrip("/").removesuffix("/v1")
    names = list(estimators or estimator_names())
    unknown = sorted(set(names) - set(estimator_names()))
    if unknown:
        raise ChooseError(f"unknown estimator(s) {', '.join(unknown)}; choose from {', '.join(estimator_names())}")
    records = await fetch_records(root, admin_token)
    mine = [r for r in records if r.get("model") and fnmatch.fnmatchcase(str(r["model"]), model)]
    rows = labelled_rows(mine)
    if not len(rows):
        raise ChooseError(
            f"no labelled, scored request of {model} in the proxy's store ({len(mine)} request(s) of it, "
            f"{len(records)} in all): post labels to /sentinel/v1/feedback first"
        )
    note(f"{len(rows)} labelled requests of {model}; fitting {len(names)} estimators on {', '.join(map(str, traces))}")
    fitted = await asyncio.to_thread(fit_candidates, traces, names, variant)
    comparison = compare_on_labels(
        predictions(fitted, rows), rows.y, rows.slices, min_labels=min_labels, min_share=min_share, n_boot=n_boot
    )
    choice = Choice(comparison)
    if not switch:
        if comparison.recommended != CURRENT:
            choice.note = f"to switch: rerun with --switch (trains {comparison.recommended} into {out} and loads it)"
        return choice
    if comparison.recommended == CURRENT:
        choice.note = "nothing switched: " + comparison.reason
        return choice
    out = Path(out)
    await asyncio.to_thread(
        train, list(traces), out, method=comparison.recommended, variant=variant, progress=progress,
        extra_metadata={"chosen_on_labels": {
            "model": model, "n_labels": comparison.n_labels,
            "slice_aee": comparison.slice_aee, "win_share": comparison.win_share,
        }},
    )
    choice.artifact = out
    # each model the labelled requests name (``model`` may be a glob) must be scored by ``out`` now
    outcomes = [await load_into_proxy(root, name, out, admin_token) for name in sorted(set(rows.models))]
    choice.loaded = all(ok for ok, _ in outcomes)
    choice.note = "\n".join(dict.fromkeys(note for _, note in outcomes))
    return choice
