"""OpenAI wire rewriting: force top-k logprobs upstream, give the client what it asked for.

Three shapes of per-token logprobs exist on the wire (docs/architecture.md, "Wire facts"):

* chat (and llama.cpp's completions): ``logprobs.content[] = {token, logprob, bytes,
  top_logprobs: [{token, logprob, bytes}, ...]}``
* legacy completions (vLLM, OpenAI): ``logprobs = {tokens, token_logprobs, top_logprobs:
  [{token: logprob, ...} | null], text_offset}``

Each choice's block of tokens is flattened in one pass (a list comprehension over the parsed JSON)
and handed to the pure :mod:`entropy_sentinel.signal` core, which batches the numpy work.

Monitoring never hurts the client: a block that is not of these shapes (a string ``logprob``, a
candidate without one, ``top_logprobs`` as a dict) is relayed as the upstream sent it and marks the
response unscored (``malformed_logprobs``); so do choice indexes past ``max_choices`` (relayed, not
tracked: ``too_many_choices``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from entropy_sentinel.signal import Trajectory
from entropy_sentinel.types import UnscoredReason

Endpoint = Literal["chat", "completions"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How an upstream family answers logprob requests, so the client gets *its* answer back."""

    name: str
    #: top-n a chat request gets with ``logprobs: true`` and no ``top_logprobs``
    chat_default_top: int = 0
    #: a top-n of 0 returns no logprobs at all (rather than the chosen tokens only)
    zero_means_none: bool = False
    #: chat choices asked for no logprobs carry no ``logprobs`` key (rather than ``null``)
    chat_key_absent: bool = False
    #: the upstream closes its connection after a streamed answer without saying so (llama-server): a
    #: stream is sent with ``Connection: close``, or the pool hands the dead connection to the next request
    closes_after_stream: bool = False


DIALECTS = {
    "openai": Dialect("openai"),
    "vllm": Dialect("vllm"),
    # llama.cpp: `logprobs: true` alone means n_probs = 20; n_probs = 0 means no logprobs
    "llamacpp": Dialect(
        "llamacpp", chat_default_top=20, zero_means_none=True, chat_key_absent=True, closes_after_stream=True
    ),
}


def detect_dialect(models_listing: Any) -> str:
    """The dialect of an upstream from its ``GET /v1/models`` answer."""
    if isinstance(models_listing, dict):
        if "models" in models_listing:  # llama.cpp adds an Ollama-style listing
            return "llamacpp"
        data = models_listing.get("data")
        owners = {m.get("owned_by") for m in data if isinstance(m, dict)} if isinstance(data, list) else set()
        if "llamacpp" in owners:
            return "llamacpp"
        if "vllm" in owners:
            return "vllm"
    return "openai"


@dataclass(slots=True)
class LogprobPlan:
    """What the client asked for, and what the upstream is asked for instead."""

    endpoint: Endpoint
    client_n: int | None  # None: no logprobs wanted; otherwise its top-n (0 allowed)
    forced_k: int  # top-k requested upstream
    stream: bool
    #: when the client wants no logprobs: delete the key (llama.cpp chat) rather than set it null
    drop_key: bool = False
    original_body: bytes = b""
    #: choices the request asks for (``n``; 1 when absent); None when ``n`` is not an integer
    choices: int | None = 1
    #: the model the request names: picks the estimator when the response names none
    model: str | None = None

    @property
    def passthrough(self) -> bool:
        """True when the upstream's logprobs are exactly what the client asked for."""
        return self.client_n is not None and self.client_n >= self.forced_k


def plan_logprobs(
    body: dict[str, Any], endpoint: Endpoint, k: int = 20, dialect: Dialect = DIALECTS["openai"]
) -> LogprobPlan | None:
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
            client_n = dialect.chat_default_top
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
    if client_n == 0 and dialect.zero_means_none:
        client_n = None
    n = body.get("n")
    return LogprobPlan(
        endpoint=endpoint,
        client_n=client_n,
        forced_k=forced,
        stream=stream,
        drop_key=endpoint == "chat" and dialect.chat_key_absent,
        choices=1 if n is None else n if _is_int(n) else None,
        model=model if isinstance(model := body.get("model"), str) else None,
    )


class MalformedLogprobs(ValueError):
    """A logprobs block not of the OpenAI shapes; never carries the upstream's values."""


def _number(value: Any) -> float:
    """A JSON number as a float; null (or an integer beyond float range) is missing: nan."""
    if type(value) is float:
        return value
    if value is None:
        return math.nan
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return math.nan
    raise MalformedLogprobs("a logprob is not a number")


def _numbers(values: list[Any]) -> list[float]:
    if all(type(v) is float for v in values):  # the wire's common case: no copy
        return values
    return [_number(v) for v in values]


def _rank(value: Any) -> float:
    """Sort key of a validated legacy logprob: missing ranks last."""
    x = _number(value)
    return x if x == x else -math.inf


def _chat_shape_block(content: list[Any]) -> tuple[list[int], list[float], list[float]]:
    try:
        tops = [tok.get("top_logprobs") or [] for tok in content]
        if not all(type(t) is list for t in tops):
            raise MalformedLogprobs("top_logprobs is not a list")
        flat = [cand["logprob"] for t in tops for cand in t]
        chosen = [tok.get("logprob") for tok in content]
    except (AttributeError, KeyError, TypeError):
        raise MalformedLogprobs("a token or candidate is not an object with a logprob") from None
    return [len(t) for t in tops], _numbers(flat), _numbers(chosen)


def _legacy_block(logprobs: dict[str, Any]) -> tuple[list[int], list[float], list[float]]:
    tops = logprobs["top_logprobs"]
    if not all(d is None or type(d) is dict for d in tops):
        raise MalformedLogprobs("a top_logprobs entry is not an object")
    tokens = logprobs.get("tokens")
    if tokens is not None and not (type(tokens) is list and all(type(t) is str for t in tokens)):
        raise MalformedLogprobs("tokens is not a list of strings")
    counts = [len(d) if d else 0 for d in tops]
    flat = _numbers([v for d in tops if d for v in d.values()])
    chosen = logprobs.get("token_logprobs") or []
    if type(chosen) is not list:
        raise MalformedLogprobs("token_logprobs is not a list")
    chosen = _numbers(chosen) if len(chosen) == len(counts) else [math.nan] * len(counts)
    return counts, flat, chosen


def _truncate_legacy(tops: list[dict[str, float] | None], chosen: list[str], n: int) -> list[Any]:
    """Each legacy ``{token: logprob}`` dict cut to what ``logprobs: n`` returns: vLLM puts the
    sampled token first, then the top n in rank order without repeating it (n + 1 entries when the
    sampled token ranks below n)."""
    out: list[Any] = []
    for i, d in enumerate(tops):
        if not d:
            out.append(d)
            continue
        token = chosen[i] if i < len(chosen) else None
        kept: dict[str, float] = {token: d[token]} if token in d else {}
        for tok, value in sorted(d.items(), key=lambda kv: _rank(kv[1]), reverse=True)[:n]:
            kept.setdefault(tok, value)
        out.append(kept)
    return out


@dataclass(slots=True)
class ChoiceExtractor:
    """Extracts each choice's tokens into its trajectory and rewrites it for the client.

    At most ``max_choices`` choice indexes are tracked; ``unscored`` says why the response cannot be
    scored although every choice was relayed (malformed logprobs, more choices than tracked).
    """

    plan: LogprobPlan
    k: int = 20
    max_choices: int = 16
    trajectories: dict[int, Trajectory] = field(default_factory=dict)
    unscored: UnscoredReason | None = None

    def trajectory(self, index: int) -> Trajectory | None:
        """The choice's trajectory; None past ``max_choices`` (relayed, not tracked)."""
        traj = self.trajectories.get(index)
        if traj is None:
            if len(self.trajectories) >= self.max_choices:
                self.unscored = self.unscored or UnscoredReason.TOO_MANY_CHOICES
                return None
            traj = self.trajectories[index] = Trajectory(k=self.k)
        return traj

    def process_choice(self, choice: dict[str, Any]) -> bool:
        """Feed one choice's logprobs to its trajectory; rewrite it. Returns whether it changed."""
        index = choice.get("index", 0)
        traj = self.trajectory(index if _is_int(index) else 0)
        logprobs = choice.get("logprobs")
        if logprobs is None:
            return False
        try:
            if not isinstance(logprobs, dict):
                raise MalformedLogprobs("logprobs is not an object")
            content, tops = logprobs.get("content"), logprobs.get("top_logprobs")
            if isinstance(content, list):
                block = _chat_shape_block(content)
            elif isinstance(tops, list):
                block = _legacy_block(logprobs)
            elif content is None and tops is None:
                return False
            else:
                raise MalformedLogprobs("neither content nor top_logprobs is a list")
        except MalformedLogprobs:
            self.unscored = self.unscored or UnscoredReason.MALFORMED_LOGPROBS
            return self._strip(choice)
        if traj is not None:
            traj.add(*block)
        return self._rewrite(choice, logprobs, content)

    def _strip(self, choice: dict[str, Any]) -> bool:
        """A malformed block: removed when the client asked for no logprobs, else relayed as sent."""
        if self.plan.client_n is not None or self.plan.passthrough:
            return False
        if self.plan.drop_key:
            del choice["logprobs"]
        else:
            choice["logprobs"] = None
        return True

    def _rewrite(self, choice: dict[str, Any], logprobs: dict[str, Any], content: Any) -> bool:
        n = self.plan.client_n
        if self.plan.passthrough:
            return False
        if n is None:
            return self._strip(choice)
        if isinstance(content, list):
            for tok in content:
                tops = tok.get("top_logprobs")
                if type(tops) is list:
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
