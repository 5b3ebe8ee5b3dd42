"""The fast path (decode only what is read, cut ``logprobs`` out of the upstream's bytes) against the
general path (parse, ChoiceExtractor, dump), which is the reference: wherever the fast path answers,
the client gets the same JSON (same keys in the same order, same values) and every trajectory the same
tokens; where it declines, it has fed nothing. Every test runs twice: as shipped (only answers of
``ONE_PASS_MIN_BYTES`` or more are decoded in one pass) and with every answer tried in one pass first.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from entropy_sentinel.gateway import logprob_cut
from entropy_sentinel.gateway.logprob_cut import answer_meta, fast_process
from entropy_sentinel.gateway.sse import DONE, SSEDecoder, parse_event
from entropy_sentinel.gateway.wire import DIALECTS, ChoiceExtractor, LogprobPlan, plan_logprobs
from entropy_sentinel.monitor.records import RequestRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import assert_same, chat_chunk
from tests.paths import FIXTURES

TOP = [(f"t{i}", math.log(0.5 / (i + 1))) for i in range(20)]


@pytest.fixture(scope="module", autouse=True, params=["as shipped", "one pass for all"])
def one_pass_threshold(request: pytest.FixtureRequest):  # module scope: hypothesis refuses per-test fixtures
    shipped = logprob_cut.ONE_PASS_MIN_BYTES
    logprob_cut.ONE_PASS_MIN_BYTES = shipped if request.param == "as shipped" else 0
    yield
    logprob_cut.ONE_PASS_MIN_BYTES = shipped


def plan(client_n: int | None = None, drop_key: bool = False, endpoint: str = "chat") -> LogprobPlan:
    return LogprobPlan(endpoint=endpoint, client_n=client_n, forced_k=20, stream=True, drop_key=drop_key)  # type: ignore[arg-type]


def general(data: bytes, p: LogprobPlan) -> tuple[Any, ChoiceExtractor]:
    obj = orjson.loads(data)
    ext = ChoiceExtractor(p)
    ext.process_body(obj)
    return obj, ext


def same_trajectories(a: ChoiceExtractor, b: ChoiceExtractor) -> None:
    assert sorted(a.trajectories) == sorted(b.trajectories)
    assert a.unscored == b.unscored
    for i, ta in a.trajectories.items():
        tb = b.trajectories[i]
        assert len(ta) == len(tb)
        assert (ta.min_candidates, ta.missing) == (tb.min_candidates, tb.missing)
        for name in ("entropy", "mass", "chosen_logprob"):
            np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name))


def check(data: bytes, p: LogprobPlan, expect_fast: bool | None = True) -> bytes | None:
    """The fast path agrees with the general one (or declines having fed nothing); its payload."""
    want, want_ext = general(data, copy.copy(p))
    ext = ChoiceExtractor(p)
    got = fast_process(data, ext)
    if got is None:
        assert not ext.trajectories and ext.unscored is None, "declined after feeding tokens"
        assert expect_fast is not True, "the fast path declined"
        return None
    assert expect_fast is not False, "the fast path should have declined"
    assert_same(orjson.loads(got.payload), want, 0.0)
    same_trajectories(ext, want_ext)
    assert got.model == (want.get("model") if isinstance(want.get("model"), str) else None)
    assert answer_meta(got.id, got.usage) == (want.get("id"), want.get("usage"))  # the span's id and usage
    return got.payload


def chunk_bytes(obj: Any, **dumps: Any) -> bytes:
    return json.dumps(obj, **dumps).encode() if dumps else orjson.dumps(obj)


# ----------------------------------------------------------------------------- real captures


def fixture_payloads() -> list[tuple[str, bytes, bool]]:
    out = []
    for path in sorted(FIXTURES.glob("*/*.forced.json")):
        fixture = json.loads(path.read_text())
        if fixture["status"] != 200:
            continue
        llama = path.parent.name == "llama"
        if fixture["request"].get("stream"):
            for raw in SSEDecoder().feed(fixture["body"].encode()):
                data = parse_event(raw).data
                if data is not None and data != DONE:
                    out.append((f"{path.parent.name}/{path.stem}", data, llama))
        else:
            out.append((f"{path.parent.name}/{path.stem}", fixture["body"].encode(), llama))
    return out


@pytest.mark.parametrize("name, data, llama", fixture_payloads(), ids=[n for n, _, _ in fixture_payloads()])
@pytest.mark.parametrize("client_n", [None, 20])
def test_real_upstream_answers(name: str, data: bytes, llama: bool, client_n: int | None):
    endpoint = "chat" if "chat" in name else "completions"
    check(data, plan(client_n, drop_key=llama and endpoint == "chat", endpoint=endpoint))


def test_rewritten_fixture_stream_equals_the_direct_one():
    """vLLM's captured forced stream, cut for a client that asked for nothing, is what vLLM sent that client."""
    forced = json.loads((FIXTURES / "vllm" / "chat_stream.forced.json").read_text())
    direct = json.loads((FIXTURES / "vllm" / "chat_stream.plain.json").read_text())
    p = plan_logprobs(copy.deepcopy(direct["request"]), "chat", dialect=DIALECTS["vllm"])
    assert p is not None
    ext = ChoiceExtractor(p)
    got = []
    for raw in SSEDecoder().feed(forced["body"].encode()):
        data = parse_event(raw).data
        if data is not None and data != DONE:
            result = fast_process(data, ext)
            assert result is not None
            got.append(orjson.loads(result.payload))
    want = [orjson.loads(parse_event(r).data) for r in SSEDecoder().feed(direct["body"].encode())
            if parse_event(r).data not in (None, DONE)]
    volatile = {"id", "created", "system_fingerprint"}
    assert [{k: v for k, v in e.items() if k not in volatile} for e in got] == [
        {k: v for k, v in e.items() if k not in volatile} for e in want
    ]
    assert len(ext.trajectories[0]) == len(got) - 1  # the role event carries no token


# ----------------------------------------------------------------------------- hand-made cases


def event(**choice: Any) -> dict[str, Any]:
    base = chat_chunk("tok", TOP)
    base["choices"][0].update(choice)
    return base


@pytest.mark.parametrize("drop_key", [False, True])
def test_logprobs_first_middle_last_and_alone(drop_key: bool):
    lp = chat_chunk("tok", TOP)["choices"][0]["logprobs"]
    for choice in (
        {"logprobs": lp, "index": 0, "delta": {"content": "a"}},
        {"index": 0, "logprobs": lp, "delta": {"content": "a"}},
        {"index": 0, "delta": {"content": "a"}, "logprobs": lp},
        {"logprobs": lp},
    ):
        data = orjson.dumps({"id": "x", "choices": [choice], "model": "m"})
        out = check(data, plan(drop_key=drop_key))
        assert out is not None and b"top_logprobs" not in out
        if drop_key:
            assert b'"logprobs"' not in out
        else:
            assert b'"logprobs":null' in out


@pytest.mark.parametrize("drop_key", [False, True])
def test_pretty_printed_with_whitespace_everywhere(drop_key: bool):
    data = chunk_bytes(event(), indent=3, separators=(" ,\n", " :  "))
    out = check(data, plan(drop_key=drop_key))
    assert out is not None and b"top_logprobs" not in out


def test_the_rest_of_the_event_is_the_upstreams_own_bytes():
    data = chunk_bytes(event(delta={"content": "caf\u00e9 \u2603"}), ensure_ascii=True, indent=1)
    out = check(data, plan())
    assert out is not None
    head, tail = data.split(b'"logprobs": ', 1)
    assert out.startswith(head + b'"logprobs": null')
    assert out.endswith(tail[tail.index(b'"finish_reason"'):])
    assert b"\\u00e9" in out  # escapes kept as sent, not re-encoded


@pytest.mark.parametrize(
    "token",
    ['}{"', '"logprobs":{', '\\"logprobs\\":', "{[}]", '\\', "\u00e9\u2603\U0001f600", "\ufffd",
     '","logprobs":null,"x":"'],
)
@pytest.mark.parametrize("ascii_only", [False, True])
def test_token_strings_with_braces_quotes_escapes_and_unicode(token: str, ascii_only: bool):
    top = [(token + str(i), lp) for i, (_, lp) in enumerate(TOP)]
    obj = chat_chunk(token, top)
    obj["choices"][0]["delta"]["content"] = token
    for data in (chunk_bytes(obj, ensure_ascii=ascii_only), orjson.dumps(obj)):
        check(data, plan(), expect_fast=None)  # declining is allowed (a stray key); a wrong cut is not
        check(data, plan(drop_key=True), expect_fast=None)
    assert check(chunk_bytes(obj, ensure_ascii=True), plan()) is not None  # escaped quotes never match


def test_null_missing_and_empty_logprobs():
    check(orjson.dumps(event(logprobs=None)), plan())
    no_key = event()
    del no_key["choices"][0]["logprobs"]
    check(orjson.dumps(no_key), plan())
    check(orjson.dumps(event(logprobs={})), plan())  # nothing to read: left as sent, as the general path does
    check(orjson.dumps(event(logprobs={"content": None})), plan())
    check(orjson.dumps(event(logprobs={"content": []})), plan())
    check(orjson.dumps({"id": "x", "choices": []}), plan())
    check(orjson.dumps({"id": "x"}), plan())
    check(orjson.dumps({"id": "x", "choices": None}), plan())


@pytest.mark.parametrize("drop_key", [False, True])
def test_multiple_choices(drop_key: bool):
    lp = chat_chunk("tok", TOP)["choices"][0]["logprobs"]
    lp2 = chat_chunk("other", TOP[:5])["choices"][0]["logprobs"]
    obj = {"id": "x", "choices": [
        {"index": 0, "delta": {"content": "a"}, "logprobs": lp, "finish_reason": None},
        {"index": 1, "delta": {"content": "b"}, "logprobs": None, "finish_reason": None},
        {"index": 2, "logprobs": lp2, "delta": {"content": "c"}},
        {"index": 3, "delta": {"content": "d"}},
        {"index": 4, "delta": {"content": "e"}, "logprobs": lp},  # the same bytes as choice 0's
    ]}
    out = check(orjson.dumps(obj), plan(drop_key=drop_key))
    assert out is not None and b"top_logprobs" not in out
    reordered = {"choices": list(reversed(obj["choices"])), "model": "m"}
    check(orjson.dumps(reordered), plan(drop_key=drop_key))


def test_choices_past_max_choices_are_relayed_cut_not_tracked():
    lp = chat_chunk("tok", TOP)["choices"][0]["logprobs"]
    obj = {"choices": [{"index": i, "logprobs": lp} for i in range(4)]}
    data = orjson.dumps(obj)
    want, want_ext = general(data, plan())
    want_ext = ChoiceExtractor(plan(), max_choices=2)
    want_ext.process_body(copy.deepcopy(obj))
    ext = ChoiceExtractor(plan(), max_choices=2)
    got = fast_process(data, ext)
    assert got is not None and b"top_logprobs" not in got.payload
    same_trajectories(ext, want_ext)
    assert ext.unscored is not None


def test_legacy_completions_shape():
    lp = {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2], "text_offset": [0, 1],
          "top_logprobs": [{"a": -0.1, "c": -2.0, "d": -3.0}, {"b": -0.2, "a": -1.5}]}
    for lp_case in (lp, {**lp, "token_logprobs": [-0.1]}, {**lp, "tokens": None}, {**lp, "top_logprobs": [None, {}]}):
        obj = {"id": "cmpl", "object": "text_completion", "choices": [
            {"index": 0, "text": "ab", "logprobs": lp_case, "finish_reason": "length"}]}
        check(orjson.dumps(obj), plan(endpoint="completions"))


def test_declines_without_feeding_anything():
    lp = chat_chunk("tok", TOP)["choices"][0]["logprobs"]
    for obj, why in (
        (event(), "client top-n: a rewrite, not a cut"),
        ({"error": {"message": "boom"}, "choices": []}, "an error event"),
        ({"choices": [{"index": 0, "delta": {"logprobs": lp}, "logprobs": lp}]}, "a nested logprobs key"),
        ({"x": {"logprobs": 1}, "choices": [{"index": 0, "logprobs": lp}]}, "a stray logprobs key"),
        ({"choices": [{"index": 0, "logprobs": lp}], "y": {"logprobs": lp}}, "a stray key after the choices"),
        ({"choices": [{"index": 0, "logprobs": "nope"}]}, "malformed: the general path marks it"),
        ({"choices": [{"index": 0, "logprobs": {"content": [{"top_logprobs": [{"token": "a"}]}]}}]}, "no logprob"),
        ({"choices": [{"index": True, "logprobs": lp}]}, "an index that is not an integer"),
        ({"choices": "nope"}, "choices not a list"),
        ([1, 2], "not an object"),
    ):
        p = plan(client_n=2) if why.startswith("client") else plan()
        data = orjson.dumps(obj)
        ext = ChoiceExtractor(p)
        assert fast_process(data, ext) is None, why
        assert not ext.trajectories and ext.unscored is None
    ext = ChoiceExtractor(plan())
    dup = b'{"choices":[{"index":0,"logprobs":null,"logprobs":' + orjson.dumps(lp) + b'}]}'
    assert fast_process(dup, ext) is None and not ext.trajectories  # a duplicate key: the last one counts
    assert fast_process(b'{"choices":[],"x":"\xff"}', ext) is None  # not UTF-8: orjson refuses it
    assert fast_process(b'{"choices":[],"x":NaN}', ext) is None
    assert fast_process(b'{"choices":[' * 3000, ext) is None
    assert fast_process(b'[' * 100000 + b']' * 100000, ext) is None


def test_a_duplicate_key_whose_last_value_is_null_is_left_as_sent():
    lp = chat_chunk("tok", TOP)["choices"][0]["logprobs"]
    dup = b'{"choices":[{"index":0,"logprobs":' + orjson.dumps(lp) + b',"logprobs":null}]}'
    assert check(dup, plan()) == dup  # both paths read the last value (null): nothing to cut


@pytest.mark.parametrize(
    "id_value, usage, want",
    [
        ("chatcmpl-7", {"prompt_tokens": 5, "completion_tokens": 2}, ("chatcmpl-7", 5, 2)),
        (12, {"prompt_tokens": "5", "completion_tokens": True}, (None, None, None)),  # wrong types: ignored
        ("x" * 300, {"prompt_tokens": -1, "completion_tokens": 2.0}, ("x" * 256, None, None)),
        (None, None, (None, None, None)),
        ({"nested": 1}, [1, 2], (None, None, None)),
    ],
)
def test_odd_ids_and_usage_stay_on_the_fast_path_and_only_sane_values_reach_the_record(id_value, usage, want):
    obj = {**event(), "id": id_value, "usage": usage}
    data = orjson.dumps(obj)
    check(data, plan())
    got = fast_process(data, ChoiceExtractor(plan()))
    assert got is not None
    record = RequestRecord("r", "chat")
    record.note_answer(*answer_meta(got.id, got.usage))
    assert (record.response_id, record.input_tokens, record.output_tokens) == want
    record.note_answer("later-id", None)  # a stream's first id is kept
    assert record.response_id == want[0] or (want[0] is None and record.response_id == "later-id")


def test_passthrough_extracts_and_changes_nothing():
    data = orjson.dumps(event())
    ext = ChoiceExtractor(plan(client_n=20))
    got = fast_process(data, ext)
    assert got is not None and got.payload is data and not got.changed
    assert len(ext.trajectories[0]) == 1


def test_non_finite_and_missing_values_as_the_general_path():
    cands = [{"token": "a", "logprob": -9999.0}, {"token": "b", "logprob": None}, {"token": "c", "logprob": 0},
             {"token": "d", "logprob": 18446744073709551616}, {"token": "e", "logprob": -0.5}]
    for tok in ({"token": "x", "top_logprobs": cands}, {"token": "x", "logprob": None, "top_logprobs": None},
                {"token": "x", "logprob": -1, "top_logprobs": []}):
        check(json.dumps(event(logprobs={"content": [tok, tok]})).encode(), plan())


# ----------------------------------------------------------------------------- generated


_token = st.text(alphabet=st.sampled_from('ab{}[]":,\\ \u00e9\u2603\n\tl'), max_size=6)
_value = st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False), st.none(), st.integers(-5, 0))
_candidate = st.fixed_dictionaries({"token": _token, "logprob": _value},
                                   optional={"bytes": st.one_of(st.none(), st.lists(st.integers(0, 255), max_size=3))})
_tops = st.one_of(st.none(), st.lists(_candidate, max_size=4))
_tok = st.fixed_dictionaries({}, optional={"token": _token, "logprob": _value, "top_logprobs": _tops})
_logprobs = st.one_of(st.none(), st.just({}), st.fixed_dictionaries({"content": st.lists(_tok, max_size=3)}))
_extra = st.dictionaries(st.sampled_from(["delta", "text", "finish_reason", "x", "token_ids"]),
                         st.one_of(st.none(), _token, st.fixed_dictionaries({"content": _token})), max_size=3)


@st.composite
def _choice(draw: st.DrawFn) -> dict[str, Any]:
    items = list(draw(_extra).items())
    if draw(st.booleans()):
        items.append(("logprobs", draw(_logprobs)))
    if draw(st.booleans()):
        items.append(("index", draw(st.integers(0, 3))))
    order = draw(st.permutations(range(len(items))))
    return {items[i][0]: items[i][1] for i in order}


@settings(max_examples=300, deadline=None)
@given(
    choices=st.lists(_choice(), max_size=3),
    style=st.sampled_from(
        [{}, {"ensure_ascii": True}, {"ensure_ascii": False}, {"indent": 2}, {"separators": (", ", " : ")}]
    ),
    drop_key=st.booleans(),
    client_n=st.sampled_from([None, 20]),
)
def test_generated_answers_agree_with_the_general_path(choices, style, drop_key, client_n):
    data = chunk_bytes({"id": "x", "model": "m", "choices": choices}, **style)
    check(data, plan(client_n, drop_key=drop_key), expect_fast=None)


# ----------------------------------------------------------------------------- one pass


def big_answer(tokens: int = 256) -> bytes:
    """vLLM's captured non-streamed forced answer grown to ``tokens`` tokens (as bench/replay_upstream.py)."""
    body = orjson.loads(json.loads((FIXTURES / "vllm" / "chat.forced.json").read_text())["body"])
    content = body["choices"][0]["logprobs"]["content"]
    body["choices"][0]["logprobs"]["content"] = [content[i % len(content)] for i in range(tokens)]
    return orjson.dumps(body)


def two_passes(data: bytes, p: LogprobPlan) -> tuple[Any, ChoiceExtractor]:
    shipped = logprob_cut.ONE_PASS_MIN_BYTES
    logprob_cut.ONE_PASS_MIN_BYTES = len(data) + 1
    try:
        ext = ChoiceExtractor(p)
        return fast_process(data, ext), ext
    finally:
        logprob_cut.ONE_PASS_MIN_BYTES = shipped


@pytest.mark.parametrize("drop_key", [False, True])
@pytest.mark.parametrize("client_n", [None, 20])
def test_one_pass_takes_a_large_answer_and_gives_the_two_passes_bytes(drop_key: bool, client_n: int | None):
    data = big_answer()
    assert len(data) >= logprob_cut.ONE_PASS_MIN_BYTES  # (as shipped too: it is a real non-streamed size)
    ext = ChoiceExtractor(plan(client_n, drop_key=drop_key))
    got = logprob_cut._one_pass(data, ext, client_n is None)
    assert got is not None, "the one pass declined a plain vLLM answer"
    want, want_ext = two_passes(data, plan(client_n, drop_key=drop_key))
    assert want is not None
    assert (got.payload, got.changed, got.model) == (want.payload, want.changed, want.model)
    assert (bytes(got.id), bytes(got.usage)) == (bytes(want.id), bytes(want.usage))  # type: ignore[arg-type]
    assert len(ext.trajectories[0]) == 256
    same_trajectories(ext, want_ext)
    check(data, plan(client_n, drop_key=drop_key))  # and both as the general path


def test_one_pass_declines_what_it_cannot_prove():
    data = big_answer(8)
    ext = ChoiceExtractor(plan())
    # the marker outside the span (in the message): not proven
    obj = orjson.loads(data)
    obj["choices"][0]["message"]["content"] = logprob_cut._MARK.decode()
    marked = orjson.dumps(obj)
    assert logprob_cut._one_pass(marked, ext, True) is None
    # inside the span (a token string) it is cut out with the span: proven all the same
    inside = data.replace(b'"token":"', b'"token":"' + logprob_cut._MARK, 1)
    assert logprob_cut._one_pass(inside, ChoiceExtractor(plan()), True) is not None
    # a second "logprobs" key (in the message): not one occurrence
    obj = orjson.loads(data)
    obj["choices"][0]["message"]["logprobs"] = None
    doubled = orjson.dumps(obj)
    assert logprob_cut._one_pass(doubled, ext, True) is None
    # more closing braces after the value than it tries: declined, not guessed
    obj = orjson.loads(data)
    obj["tail"] = [{"a": {}} for _ in range(logprob_cut._ONE_PASS_TRIES)]
    braced = orjson.dumps(obj)
    assert logprob_cut._one_pass(braced, ext, True) is None
    # an object after the value in the choice: the first decodable end is too late, proven wrong
    obj = orjson.loads(data)
    obj["choices"][0]["z"] = {"k": {"j": 1}}
    late = orjson.dumps(obj)
    assert logprob_cut._one_pass(late, ext, True) is None
    # the one "logprobs" is not the choice's (it sits in the message): the marker proves it
    obj = orjson.loads(data)
    obj["choices"][0]["message"]["logprobs"] = obj["choices"][0].pop("logprobs")
    nested = orjson.dumps(obj)
    assert logprob_cut._one_pass(nested, ext, True) is None
    assert not ext.trajectories, "a declined one pass fed tokens"
    for case in (marked, inside, braced, late, nested):
        check(case, plan())  # the two passes answer
    check(doubled, plan(), expect_fast=False)  # they decline too: the general path answers
