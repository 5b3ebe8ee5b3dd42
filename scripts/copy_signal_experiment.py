#!/usr/bin/env python3
"""Does a copy signal ("the answer repeats the question") fix the confident-copy misses? (issue 9)

An offline experiment on the committed traces whose questions PyPI can still give (the study's 10
non-BIG-bench slices and the 14 out-of-sample ones; BIG-bench's are not loadable any more): each
trace's question is re-read from its benchmark by item id, and ``answer_copies_question`` is 1 when
the extracted answer has a word (not only numbers) and every word of it occurs in the question
(multiple choice, whose answers are letters, and numeric answers, whose numbers a math question
often holds, are 0). The shipped estimator's model (``monotone_boost``) with and
without that feature (and a rule instead of a feature: P(correct) set to 0 for a copy), under
leave-one-slice-out and leave-one-family-out over the 24 default-prompt
slices, then the 4 ``@alt-qa`` slices each estimated by a model trained on every default slice but
its own benchmark. Prints the tables; changes nothing that ships.

    .venv/bin/python scripts/copy_signal_experiment.py
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from entropy_sentinel.benchmarks.loader import load_benchmark
from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.estimator.transfer import MONOTONE_BOOST_FEATURES, MonotoneBoost
from entropy_sentinel.evaluation.protocol import BenchmarkData, fit_on, read_traces, trace_features
from entropy_sentinel.evaluation.study_shift import holdout_estimates, holdout_predictions
from entropy_sentinel.traces.format import slice_name

ROOT = Path(__file__).resolve().parents[1]
TRACES = [ROOT / "data/traces/gemma-3-270m.jsonl.gz", ROOT / "data/traces/gemma-3-270m-holdout.jsonl.gz"]
COPY = "answer_copies_question"
WORD = re.compile(r"[a-z0-9]+")


def copies(question: str, answer: str | None, kind: str) -> float:
    words = WORD.findall((answer or "").lower())
    if kind == "choice" or not any(w.isalpha() for w in words):  # letters of choices, bare numbers
        return 0.0
    asked = set(WORD.findall(question.lower()))
    return float(all(w in asked for w in words))


def main() -> int:
    rows: dict[str, list[tuple[dict, float, int]]] = defaultdict(list)
    items: dict[str, dict] = {}
    skipped = set()
    for trace in read_traces(TRACES):
        bench = trace["benchmark"]
        if trace.get("label") is None or bench in skipped:
            continue
        if bench not in items:
            try:
                items[bench] = {i.item_id: i for i in load_benchmark(bench)}
            except Exception as exc:  # BIG-bench: not loadable here
                skipped.add(bench)
                print(f"skip {bench}: {str(exc).splitlines()[0][:80]}", file=sys.stderr)
                continue
        item = items[bench][trace["item_id"]]
        features = trace_features(trace, "topk")
        rows[slice_name(trace)].append((features, copies(item.question, trace.get("predicted"), item.kind),
                                        int(trace["label"])))

    def data(names: list[str]) -> dict[str, BenchmarkData]:
        out = {}
        for name in names:
            cols = {f: np.array([r[0][f] for r in rows[name]], dtype=float) for f in MONOTONE_BOOST_FEATURES}
            cols[COPY] = np.array([r[1] for r in rows[name]])
            out[name] = BenchmarkData(name, np.array([r[2] for r in rows[name]]), cols)
        return out

    default = sorted(n for n in rows if "@" not in n)
    shifted = sorted(n for n in rows if "@" in n)
    d = data(default + shifted)
    base = MonotoneBoost()
    with_copy = MonotoneBoost(features=(*MONOTONE_BOOST_FEATURES, COPY))
    print(f"{len(default)} default-prompt slices, {len(shifted)} under another prompt set")
    print("copy rate / accuracy when copied / when not, per slice:")
    for name in default + shifted:
        c, y = d[name].columns[COPY], d[name].y
        print(f"  {name:26s} copy {c.mean():.3f}  acc|copy {y[c == 1].mean() if c.any() else float('nan'):.3f}"
              f"  acc|no copy {y[c == 0].mean() if (c == 0).any() else float('nan'):.3f}  true {y.mean():.3f}")
    only = {n: d[n] for n in default}
    for holdout in ("slice", "family"):
        print(f"\nleave one {holdout} out, {len(default)} slices")
        print(f"{'model':12s} {'median AEE':>10s} {'mean AEE':>9s} {'AEE>=0.5':>9s} {'Spearman':>9s}")
        plain = holdout_predictions(base, only, family_of, holdout)
        zeroed = {n: p * (1.0 - only[n].columns[COPY]) for n, p in plain.items()}  # a rule, not learned
        for label, preds in (("entropy", plain), ("+copy", holdout_predictions(with_copy, only, family_of, holdout)),
                             ("rule", zeroed)):
            s = holdout_estimates(preds, only)
            if "-v" in sys.argv:
                for name, v in s["per_slice"].items():
                    print(f"    {name:24s} true {v['true_acc']:.3f} estimate {v['estimate']:.3f}")
            print(f"{label:12s} {s['median_aee']:10.3f} {s['mean_aee']:9.3f} {s['median_aee_acc_ge_0.5']:9.3f}"
                  f" {s['spearman']:9.3f}")
    print("\nanother prompt set: trained on every default slice but the same benchmark")
    for name in shifted:
        own = name.split("@")[0]
        train = [n for n in default if n != own]
        out = []
        for template in (base, with_copy):
            model = fit_on(template, d, train)
            out.append(model.predict_proba(d[name].matrix(template.features))[:, 1])
        rule = (out[0] * (1.0 - d[name].columns[COPY])).mean()
        print(f"  {name:26s} true {d[name].y.mean():.3f}  entropy {out[0].mean():.3f}  +copy {out[1].mean():.3f}"
              f"  rule {rule:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
