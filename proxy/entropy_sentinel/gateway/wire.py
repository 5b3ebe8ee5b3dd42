"""OpenAI wire rewriting: force top-k logprobs upstream, give the client what it asked for.

Three shapes of per-token logprobs exist on the wire (DESIGN.md section 4):

* chat (and llama.cpp's completions): ``logprobs.content[] = {token, logprob, bytes,
  top_logprobs: [{token, logprob, bytes}, ...]}``
* legacy completions (vLLM, OpenAI): ``logprobs = {tokens, token_logprobs, top_logprobs:
  [{token: logprob, ...} | null], text_offset}``

Each choice's block of tokens is turned into numpy arrays in one pass (a flat list comprehension,
then a reshape) and handed to the pure :mod:`entropy_sentinel.signal` core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from entropy_sentinel.signal import Trajectory, token_signals

Endpoint = Literal["chat", "completions"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(slots=True)
class LogprobPlan:
    """What the client asked for, and what the upstream is asked for instead."""

    endpoint: Endpoint
    client_n: int | None  # None: no logprobs wanted; otherwise its top-n (0 allowed)
    forced_k: int  # top-k requested upstream
    stream: bool
    original_body: bytes = b""

    @property
    def passthrough(self) -> bool:
        """True when the upstream's logprobs are exactly what the client asked for."""
        return self.client_n is not None and self.client_n >= self.forced_k


def plan_logprobs(body: dict[str, Any], endpoint: Endpoint, k: int = 20) -> LogprobPlan | None:
    """Rewrite ``body`` in place to force top-k logprobs; ``None`` when the request is not understood.

    A request whose logprob fields are malformed (wrong types, ``top_logprobs`` without
    ``logprobs: true``) is left untouched, so the upstream answers it with its own error.
    A client asking for more than k gets its n forwarded; the entropy still uses the top k.
    """
    stream = body.get("stream") is True
    if endpoint == "chat":
        wants, top = body.get("logprobs"), body.get("top_logprobs")
        if wants in (None, False) and top is None:
            client_n = None
        elif wants is True and top is None:
            client_n = 0
        elif wants is True and _is_int(top) and top >= 0:
            client_n = top
        else:
            return None
        forced = max(k, client_n or 0)
        body["logprobs"] = True
        body["top_logprobs"] = forced
    else:
        wants = body.get("logprobs")
        if wants is None:
            client_n = None
        elif _is_int(wants) and wants >= 0:
            client_n = wants
        else:
            return None
        forced = max(k, client_n or 0)
        body["logprobs"] = forced
    return LogprobPlan(endpoint=endpoint, client_n=client_n, forced_k=forced, stream=stream)


def _chat_shape_block(content: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, int]:
    counts = [len(tok.get("top_logprobs") or ()) for tok in content]
    flat = [cand["logprob"] for tok in content for cand in (tok.get("top_logprobs") or ())]
    chosen = np.array([tok.get("logprob") for tok in content], dtype=np.float64)
    return _matrix(counts, flat), chosen, min(counts, default=0)


def _legacy_block(logprobs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    tops = logprobs.get("top_logprobs") or []
    counts = [len(d) if d else 0 for d in tops]
    flat = [v for d in tops if d for v in d.values()]
    chosen = np.array(logprobs.get("token_logprobs") or [], dtype=np.float64)
    if chosen.size != len(counts):
        chosen = np.full(len(counts), np.nan)
    return _matrix(counts, flat), chosen, min(counts, default=0)


def _matrix(counts: list[int], flat: list[Any]) -> np.ndarray:
    """(tokens, max candidates) array of logprobs; short rows padded with -inf."""
    t, width = len(counts), max(counts, default=0)
    values = np.array(flat, dtype=np.float64)
    if t and all(c == width for c in counts):
        return values.reshape(t, width)
    out = np.full((t, width), -np.inf)
    out[np.arange(width) < np.array(counts)[:, None]] = values
    return out


def _truncate_legacy(tops: list[dict[str, float] | None], chosen: list[str], n: int) -> list[Any]:
    """Top-n of each legacy dict, plus the sampled token when it ranks below n (vLLM's rule)."""
    out: list[Any] = []
    for i, d in enumerate(tops):
        if not d:
            out.append(d)
            continue
        ranked = sorted(d.items(), key=lambda kv: kv[1], reverse=True)[:n]
        kept = dict(ranked)
        token = chosen[i] if i < len(chosen) else None
        if token is not None and token in d and token not in kept:
            kept[token] = d[token]
        out.append(kept)
    return out


@dataclass(slots=True)
class ChoiceExtractor:
    """Extracts each choice's tokens into its trajectory and rewrites it for the client."""

    plan: LogprobPlan
    k: int = 20
    trajectories: dict[int, Trajectory] = field(default_factory=dict)

    def trajectory(self, index: int) -> Trajectory:
        traj = self.trajectories.get(index)
        if traj is None:
            traj = self.trajectories[index] = Trajectory()
        return traj

    def process_choice(self, choice: dict[str, Any]) -> bool:
        """Feed one choice's logprobs to its trajectory; rewrite it. Returns whether it changed."""
        index = choice.get("index", 0)
        traj = self.trajectory(index if _is_int(index) else 0)
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict):
            return False
        content = logprobs.get("content")
        if isinstance(content, list):
            matrix, chosen, fewest = _chat_shape_block(content)
        elif isinstance(logprobs.get("top_logprobs"), list):
            matrix, chosen, fewest = _legacy_block(logprobs)
        else:
            return False
        if matrix.shape[0]:
            traj.extend(token_signals(matrix, chosen, self.k), candidates=fewest)
        return self._rewrite(choice, logprobs, content)

    def _rewrite(self, choice: dict[str, Any], logprobs: dict[str, Any], content: Any) -> bool:
        n = self.plan.client_n
        if self.plan.passthrough:
            return False
        if n is None:
            choice["logprobs"] = None
            return True
        if isinstance(content, list):
            for tok in content:
                tops = tok.get("top_logprobs")
                if tops is not None:
                    tok["top_logprobs"] = tops[:n]
        else:
            logprobs["top_logprobs"] = _truncate_legacy(logprobs["top_logprobs"], logprobs.get("tokens") or [], n)
        return True

    def process_body(self, obj: Any) -> bool:
        """Process every choice of a response object or stream chunk."""
        changed = False
        if isinstance(obj, dict):
            choices = obj.get("choices")
            if isinstance(choices, list):
                for choice in choices:
                    if isinstance(choice, dict) and self.process_choice(choice):
                        changed = True
        return changed
