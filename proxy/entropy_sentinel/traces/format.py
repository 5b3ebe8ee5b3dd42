"""The trace format: one JSON object per line (gzipped or not), one labelled response each.

A row holds ids (``request_id``, ``benchmark``, ``item_id``, ``prompts``), the slice tags it was
sent with, the model and ``k``, the trajectory statistics (``features`` and
``features_by_variant``), the graded ``label`` and, when collected through a scoring proxy, its
``p_correct``. ``collect`` writes these rows; the evaluation reads them with :func:`read_traces`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PROMPTS", "Trace", "group_by_benchmark", "read_traces", "slice_name", "trace_features"]

Trace = Mapping[str, Any]


def read_traces(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Labelled traces from one or more JSONL files, gzipped or not (blank lines skipped)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    traces: list[dict[str, Any]] = []
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        traces.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{line_no}: not JSON: {exc}") from None
    return traces


#: the prompt set ``collect`` records for the packaged prompts (rows from before it recorded one
#: were collected with them too)
DEFAULT_PROMPTS = "default:v1"


def slice_name(trace: Trace) -> str:
    """A trace's slice: its benchmark, plus ``@<prompt set>`` when it was asked with other prompts
    than the packaged ones (the same items under another prompt are another slice)."""
    prompts = trace.get("prompts") or DEFAULT_PROMPTS
    bench = str(trace["benchmark"])
    return bench if prompts == DEFAULT_PROMPTS else f"{bench}@{str(prompts).split(':')[0]}"


def group_by_benchmark(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    """Traces keyed by :func:`slice_name` (benchmark, and prompt set when not the default), sorted."""
    grouped: dict[str, list[Trace]] = {}
    for trace in traces:
        grouped.setdefault(slice_name(trace), []).append(trace)
    return dict(sorted(grouped.items()))


def trace_features(trace: Trace, variant: str | None = None) -> dict[str, float]:
    """The features of one trace under an entropy variant (None: the trace's own ``features``).

    The entropy statistics come from ``features_by_variant[variant]``; names that do not depend on
    the variant (NLL baselines, length, top-k mass) fall back to ``features``.
    """
    merged = dict(trace.get("features") or {})
    if variant is not None and variant != trace.get("entropy_variant"):
        by_variant = trace.get("features_by_variant") or {}
        if variant not in by_variant:
            raise KeyError(f"trace {trace.get('request_id')!r} has no features for entropy variant {variant!r}")
        merged.update(by_variant[variant])
    return merged
