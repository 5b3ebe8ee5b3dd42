"""Generated hostile input (hypothesis) against the proxy, with the invariants that must always hold.

The proxy and a scripted upstream run on their own event loop in a background thread; every
generated case is one real HTTP exchange (``http.client``, so bodies and headers go out byte for
byte, not as a client library would clean them up). Invariants, whatever the client or the
upstream sends:

* the proxy never answers 500 of its own making;
* every error the proxy itself gives is OpenAI's error JSON with ``X-Sentinel-Request-Id``;
* the client's answer is intact whenever the upstream gave one (content, and ``[DONE]`` on streams),
  and a score, when one is given, is a finite probability;
* nothing hostile reaches a metric label, and no API key, prompt or completion reaches a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import running_proxy, scripted_upstream

pytestmark = pytest.mark.timeout(600)

SECRET_KEY = "sk-HOSTILE-SECRET-KEY-7f3a"
PROMPT_MARK = "PROMPT-MARK-91c2"
ANSWER_TOKENS = ["AN", "SWER", "-MARK", "-5d7e"]
ANSWER = "".join(ANSWER_TOKENS)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
#: what a slice label may look like in the metrics: canonical "k=v" pairs, or the overflow/unset keys
_LABEL_PAIR = r"[A-Za-z0-9_.:-]{1,64}=[A-Za-z0-9_.:-]{1,64}"
SAFE_SLICE = re.compile(rf"^(|other|{_LABEL_PAIR}(,{_LABEL_PAIR}){{0,3}})$")


@dataclass
class Script:
    """What the scripted upstream answers next: per-token logprob entries (any shape)."""

    entries: list[Any] = field(default_factory=list)
    raw_json: bool = True


@dataclass
class LiveProxy:
    port: int
    script: Script
    logs: list[str] = field(repr=False)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            if body:
                conn.send(body)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


def _logprob_entry(token: str, entry: Any) -> Any:
    return entry if entry is not None else {"token": token, "logprob": -0.1, "top_logprobs": []}


def _unary_body(obj: dict[str, Any], script: Script) -> dict[str, Any]:
    content = [_logprob_entry(t, e) for t, e in zip(ANSWER_TOKENS, script.entries + [None] * 4, strict=False)]
    if "messages" in obj:
        choice = {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop",
                  "logprobs": {"content": content}}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": ANSWER, "finish_reason": "stop", "logprobs": {"content": content}}
        kind = "text_completion"
    return {"id": "x-1", "object": kind, "created": 1, "model": "scripted", "choices": [choice]}


def _stream_events(obj: dict[str, Any], script: Script) -> Iterator[dict[str, Any]]:
    entries = script.entries + [None] * len(ANSWER_TOKENS)
    for i, token in enumerate(ANSWER_TOKENS):
        logprobs = {"content": [_logprob_entry(token, entries[i])]}
        if "messages" in obj:
            choice = {"index": 0, "delta": {"content": token}, "logprobs": logprobs, "finish_reason": None}
        else:
            choice = {"index": 0, "text": token, "logprobs": logprobs, "finish_reason": None}
        yield {"id": "x-1", "object": "chunk", "created": 1, "model": "scripted", "choices": [choice]}


def _dumps(obj: Any) -> bytes:
    # the stdlib writes NaN / Infinity, as some servers do; the proxy must cope with both
    return json.dumps(obj, allow_nan=True).encode()


async def _upstream(request: web.Request, up: Any, script: Script) -> web.StreamResponse:
    try:
        obj = json.loads(await request.read())
    except ValueError:
        obj = {}
    if not isinstance(obj, dict):
        obj = {}
    if obj.get("stream") is True:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in _stream_events(obj, script):
            await resp.write(b"data: " + _dumps(event) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp
    return web.Response(body=_dumps(_unary_body(obj, script)), content_type="application/json")


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.sink.append(text)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveProxy]:
    script, logs = Script(), []
    handler = _Capture(logs)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            up = await stack.enter_async_context(scripted_upstream(lambda r, u: _upstream(r, u, script)))
            proxy = await stack.enter_async_context(running_proxy(up.url, dialect="openai"))
            ready["port"] = int(proxy.url.split(":")[-1].split("/")[0])
            started.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert started.wait(30), "the proxy did not start"
    try:
        yield LiveProxy(ready["port"], script, logs)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        root.removeHandler(handler)
        root.setLevel(old_level)


def _assert_openai_error(status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
    assert status != 500, body[:300]
    assert headers.get("X-Sentinel-Request-Id"), (status, body[:300])
    err = json.loads(body)["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert {"type", "code"} <= set(err), err


def _assert_no_secrets(logs: list[str]) -> None:
    joined = "\n".join(logs)
    assert SECRET_KEY not in joined
    assert PROMPT_MARK not in joined
    assert ANSWER not in joined


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
#: request fields the proxy interprets, with hostile values
request_fields = st.fixed_dictionaries(
    {},
    optional={
        "stream": json_values,
        "logprobs": json_values,
        "top_logprobs": json_values,
        "n": st.one_of(st.integers(-5, 5), json_values),
        "stream_options": json_values,
        "messages": st.one_of(json_values, st.just([{"role": "user", "content": PROMPT_MARK}])),
        "prompt": st.one_of(json_values, st.just(PROMPT_MARK)),
        "model": json_values,
        "max_tokens": json_values,
    },
)
raw_bodies = st.one_of(
    request_fields.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.sampled_from([b'{"prompt": "\\ud800"}', b"[" * 300 + b"]" * 300, b'{"a": 1e999}', b"\xff\xfe{}", b"{"]),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@SETTINGS
@given(
    route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
    body=raw_bodies,
    slice_header=st.one_of(st.none(), header_text, st.just("tenant=acme,domain=a-b.c")),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_client_input_never_breaks_the_proxy(live, route, body, slice_header, content_type):
    live.script.entries = []
    headers = {"Authorization": f"Bearer {SECRET_KEY}", "Content-Type": content_type}
    if slice_header is not None:
        headers["X-Sentinel-Slice"] = slice_header
    status, resp_headers, payload = live.request("POST", route, body, headers)
    if status >= 400:
        _assert_openai_error(status, resp_headers, payload)
    else:
        assert status == 200
        assert resp_headers.get("X-Sentinel-Request-Id")
        assert ANSWER.encode() in payload or all(t.encode() in payload for t in ANSWER_TOKENS)


finite_or_not = st.one_of(
    st.floats(max_value=0.0), st.just(float("nan")), st.just(float("-inf")), st.just(-9999.0), st.just(1e308)
)
junk = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=3), st.booleans())
candidate = st.one_of(
    st.fixed_dictionaries({"token": st.text(max_size=3), "logprob": finite_or_not}),
    st.fixed_dictionaries({"token": st.text(max_size=3)}),  # no logprob
    st.fixed_dictionaries({"token": st.text(max_size=3), "logprob": st.one_of(junk, st.just("-0.5"))}),
    junk,
)
entry = st.one_of(
    st.none(),  # a well-formed entry
    st.fixed_dictionaries(
        {
            "token": st.one_of(st.text(max_size=4), junk),
            "logprob": st.one_of(finite_or_not, junk),
            "top_logprobs": st.one_of(
                st.lists(candidate, max_size=25), st.dictionaries(st.text(max_size=3), junk), junk
            ),
        }
    ),
    junk,
)


@SETTINGS
@given(
    route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
    stream=st.booleans(),
    entries=st.lists(entry, max_size=4),
)
def test_malformed_upstream_logprobs_never_hurt_the_answer(live, route, stream, entries):
    live.script.entries = entries
    body = {"model": "m", "stream": stream, "max_tokens": 4}
    if "chat" in route:
        body["messages"] = [{"role": "user", "content": PROMPT_MARK}]
    else:
        body["prompt"] = PROMPT_MARK
    headers = {"Authorization": f"Bearer {SECRET_KEY}", "Content-Type": "application/json"}
    status, resp_headers, payload = live.request("POST", route, json.dumps(body).encode(), headers)
    assert status == 200, payload[:300]
    assert resp_headers.get("X-Sentinel-Request-Id")
    if stream:
        text = payload.decode()
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
        parts, comment = [], None
        for block in text.split("\n\n"):
            if block.startswith(": sentinel "):
                comment = json.loads(block[len(": sentinel ") :])
            elif block.startswith("data: {"):
                choice = json.loads(block[len("data: ") :])["choices"][0]
                parts.append(choice["delta"]["content"] if "delta" in choice else choice["text"])
        assert "".join(parts) == ANSWER
        assert comment is not None
        scores = comment["p_correct"] or []
    else:
        choice = json.loads(payload)["choices"][0]
        assert (choice["message"]["content"] if "message" in choice else choice["text"]) == ANSWER
        assert choice.get("logprobs") is None  # the client asked for none
        header = resp_headers.get("X-Sentinel-P-Correct")
        scores = [float(p) for p in header.split(",")] if header else []
    for p in scores:
        assert p is not None and math.isfinite(p) and 0.0 <= p <= 1.0


def test_no_hostile_metric_label_and_no_secret_in_logs(live):
    """Runs last in this module (pytest keeps file order): every case above has gone through."""
    status, _, payload = live.request("GET", "/sentinel/metrics")
    assert status == 200
    labels = re.findall(rb'slice="((?:[^"\\]|\\.)*)"', payload)
    assert labels, "the metrics name no slice at all"
    for label in labels:
        assert SAFE_SLICE.match(label.decode()), label
    _assert_no_secrets(live.logs)
