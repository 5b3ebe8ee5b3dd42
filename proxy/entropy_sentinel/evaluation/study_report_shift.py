"""Tables and plots of the study's shift sections (held-out slices and families, intervals, nested
selection, bootstrap, prompt shift): pure functions of results.json, used by
:mod:`~entropy_sentinel.evaluation.study_report`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from entropy_sentinel.evaluation.report_eval import _colors, _md_table

#: accuracy bands of the "AEE by accuracy band" table and plot
BANDS = ((0.0, 0.1), (0.1, 0.5), (0.5, 1.01))


def _f(value: Any, digits: int = 3) -> str:
    """A table cell: 3 decimals, "–" for missing, yes/no for flags."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110)


def _target(value: Any, ok: bool) -> list[str]:
    return [_f(value), "yes" if ok else "**no**"]


def verdict_table(res: Mapping[str, Any]) -> list[str]:
    v = res["verdict"]
    refs = ", ".join(f"{n} {_f(a)}" for n, a in v["reference_median_aee"].items())
    fam_refs = ", ".join(f"{n} {_f(a)}" for n, a in v["reference_median_aee_family_holdout"].items())
    ge01 = v["median_aee_acc_ge_0.1_vs_constant"]
    rows = [
        [f"median AEE below {', '.join(v['reference_median_aee'])} (all compositions, k = 1..4)",
         f"{_f(v['median_aee'])} vs {refs}", "yes" if v["beats_references_on_median_aee"] else "**no**"],
        ["the same, leave one *family* out (a new task)", f"{_f(v['median_aee_family_holdout'])} vs {fam_refs}",
         "yes" if v["beats_references_family_holdout"] else "**no**"],
        ["median AEE on slices with accuracy ≥ 0.1 below the constant's (leave one slice out)",
         f"{_f(ge01.get(v['estimator']))} vs {_f(ge01.get('constant'))}",
         "yes" if (ge01.get(v["estimator"]) or 1) < (ge01.get("constant") or 0) else "**no**"],
        ["median AEE on slices ≥ 0.5 ≤ 0.05, leave one slice out",
         *_target(v["median_aee_acc_ge_0.5_leave_one_out"], (v["median_aee_acc_ge_0.5_leave_one_out"] or 1) <= 0.05)],
        ["median AEE on slices ≥ 0.5 ≤ 0.05, leave one family out",
         *_target(v["median_aee_acc_ge_0.5_family_holdout"], (v["median_aee_acc_ge_0.5_family_holdout"] or 1) <= 0.05)],
        ["Spearman ρ ≥ 0.95, median over compositions",
         *_target(v["median_spearman_protocol"], (v["median_spearman_protocol"] or 0) >= 0.95)],
        ["Spearman ρ ≥ 0.95, leave one slice out",
         *_target(v["spearman_leave_one_out"], (v["spearman_leave_one_out"] or 0) >= 0.95)],
        ["Spearman ρ ≥ 0.95, leave one family out",
         *_target(v["spearman_family_holdout"], (v["spearman_family_holdout"] or 0) >= 0.95)],
        ["(ceiling: ρ of a perfect estimator, from the slices' sampling noise alone)",
         _f(v["spearman_noise_ceiling"]), ""],
        ["share of slice-bootstrap resamples where it has the lowest median AEE (family out)",
         _f(v["win_share_family_holdout"]), ""],
        ["nested: winner chosen on the other families, scored on the held-out one: median AEE / ρ",
         f"{_f(v['nested_median_aee'])} / {_f(v['nested_spearman'])}", ""],
        ["90 % interval coverage ≥ 0.90, leave one slice out, sub-slices "
         f"(τ: {v['tau']['recipe']} out, {v['tau']['shape']})",
         *_target(v["interval_coverage"], (v["interval_coverage"] or 0) >= 0.9)],
        ["90 % interval coverage, leave one slice out, whole slices", _f(v["interval_coverage_whole_slices"]), ""],
        ["90 % interval coverage ≥ 0.90, leave one family out, whole slices",
         *_target(v["interval_coverage_family_holdout"], (v["interval_coverage_family_holdout"] or 0) >= 0.9)],
        ["… of those, slices whose interval is not clipped at 0 or 1",
         _f(v["interval_coverage_family_holdout_unclipped"]), ""],
        ["mean interval width, leave one family out", _f(v["interval_width_family_holdout"]), ""],
    ]
    return [
        "### Verdict (default estimator: `" + v["estimator"] + "`)",
        "",
        _md_table(["target", "measured", "met"], rows),
    ]


def slices_table(res: Mapping[str, Any]) -> list[str]:
    d = res["verdict"]["estimator"]
    ho = res["holdout"]
    rows = []
    for b, s in sorted(res["slices"].items(), key=lambda kv: -kv[1]["accuracy"]):
        loso, lofo = ho["slice"][d]["per_slice"][b], ho["family"][d]["per_slice"][b]
        rows.append([b, s["family"], str(s["n"]), _f(s["accuracy"]), _f(loso["estimate"]), _f(lofo["estimate"]),
                     _f(ho["family"]["constant"]["per_slice"][b]["estimate"]) if "constant" in ho["family"] else "–",
                     _f(loso["auroc"])])
    return ["### Slices: true accuracy and the default's estimates", "",
            _md_table(["slice", "family", "n", "true", "estimate, slice out", "estimate, family out",
                       "constant, family out", "AUROC (slice out)"], rows)]


def holdout_tables(res: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for h, title in (("slice", "Leave one slice out"), ("family", "Leave one family out (a new task)")):
        boot = res["bootstrap"][h]
        rows = [[n, _f(o["median_aee"]), f"{_f(boot['median_aee_5_95'][n][0])}–{_f(boot['median_aee_5_95'][n][1])}",
                 _f(o["mean_aee"]), _f(o["median_aee_acc_ge_0.1"]), _f(o["median_aee_acc_ge_0.5"]),
                 _f(o["spearman"]) if n != "constant" else "– (no information)", _f(boot["win_share"][n])]
                for n, o in res["holdout"][h].items()]
        out += ["", f"### {title}: every estimator", "",
                _md_table(["estimator", "median AEE", "5–95 % (slice bootstrap)", "mean AEE", "median AEE, acc ≥ 0.1",
                           "median AEE, acc ≥ 0.5", "Spearman ρ",
                           f"lowest median AEE in (of {boot['draws']} resamples)"], rows)]
    names = list(res["holdout"]["family"])
    band_rows = []
    for lo, hi in BANDS:
        sl = [b for b, s in res["slices"].items() if lo <= s["accuracy"] < hi]
        if not sl:
            continue
        cells = []
        for n in names:
            per = res["holdout"]["family"][n]["per_slice"]
            cells.append(_f(statistics.median(abs(per[b]["error"]) for b in sl)))
        band_rows.append([f"{lo:.1f}–{min(hi, 1.0):.1f}", str(len(sl)), *cells])
    out += ["", "### Median AEE by accuracy band (leave one family out)", "",
            _md_table(["true accuracy", "slices", *names], band_rows)]
    per_rows = []
    fam = res["holdout"]["family"]
    for b, s in sorted(res["slices"].items(), key=lambda kv: -kv[1]["accuracy"]):
        per_rows.append([b, _f(s["accuracy"]), *(_f(fam[n]["per_slice"][b]["estimate"]) for n in names)])
    out += ["", "### Leave one family out: estimated vs true, every estimator", "",
            _md_table(["slice", "true", *names], per_rows)]
    return out


def coverage_tables(res: Mapping[str, Any]) -> list[str]:
    rows = []
    for key, c in res["coverage"].items():
        name = key.split("/")[0]
        for shape in ("constant", "binomial"):
            s = c[shape]
            rows.append([name, c["holdout"], c["tau_recipe"], shape, _f(s["whole_slice"]),
                         f"{_f(s['whole_slice_unclipped'])} ({s['unclipped_slices']})", _f(s["subslices"]),
                         _f(s["mean_width"]), _f(s["median_tau0"])])
    v = res["verdict"]
    shipped = res["coverage"][f"{v['estimator']}/family/{v['tau']['recipe']}"][v["tau"]["shape"]]
    per = [[b, _f(c["true_acc"]), _f(c["estimate"]), f"[{_f(c['lower'])}, {_f(c['upper'])}]", _f(c["tau0"]),
            _f(c["covered"]), "yes" if c["clipped"] else ""] for b, c in shipped["per_slice"].items()]
    return ["", "### 90 % label-free interval: coverage and width by hold-out, τ recipe and τ shape", "",
            _md_table(["estimator", "held out", "τ from", "τ shape", "covers (whole slices)",
                       "covers, unclipped (slices)", "covers (100-response sub-slices)", "mean width", "median τ₀"],
                      rows),
            "",
            f"### The shipped interval (τ: {v['tau']['recipe']} out, {v['tau']['shape']}), leave one family out",
            "",
            _md_table(["slice", "true", "estimate", "interval", "τ₀", "covers", "clipped"], per)]


def nested_table(res: Mapping[str, Any]) -> list[str]:
    n = res["nested"]
    rows = [[f, c] for f, c in n["chosen_by_family"].items()]
    return ["", "### Nested selection: the winner picked on the other families only", "",
            _md_table(["held-out family", "candidate chosen on the others"], rows), "",
            (f"Scored on the held-out families: median AEE {_f(n['median_aee'])}, mean {_f(n['mean_aee'])}, "
             f"on slices ≥ 0.5 {_f(n['median_aee_acc_ge_0.5'])}, Spearman ρ {_f(n['spearman'])}.")]


def prompt_table(res: Mapping[str, Any]) -> list[str]:
    per = res["prompt_shift"]["per_slice"]
    if not per:
        return []
    rows = [[k, _f(p["true_default"]), _f(p["true_alt"]), _f(p["true_shift"]), _f(p["estimate_default"]),
             _f(p["estimate_alt"]), _f(p["estimate_shift"]), _f(p["aee_alt"])] for k, p in per.items()]
    return ["", "### Another prompt set: the same items asked another way (model trained without the benchmark)", "",
            _md_table(["slice @ prompts", "true (default)", "true (other)", "true shift", "estimate (default)",
                       "estimate (other)", "estimate shift", "AEE (other)"], rows)]


def plot_est_vs_true(res: Mapping[str, Any], path: Path) -> None:
    """Estimated vs true on the whole 0-1 range: the default left out by slice and by family, the
    constant and ATC by family."""
    d = res["verdict"]["estimator"]
    fig = _figure(6.4, 6.4)
    ax = fig.add_subplot()
    true = {b: s["accuracy"] for b, s in res["slices"].items()}
    series = [(f"{d}, slice out", res["holdout"]["slice"][d]), (f"{d}, family out", res["holdout"]["family"][d])]
    series += [
        (f"{n}, family out", res["holdout"]["family"][n]) for n in ("atc", "constant") if n in res["holdout"]["family"]
    ]
    for (label, h), color, marker in zip(series, _colors(len(series)), "osx^", strict=False):
        ax.scatter([true[b] for b in true], [h["per_slice"][b]["estimate"] for b in true], color=color, marker=marker,
                   label=label, s=28, alpha=0.85)
    for b, t in true.items():
        ax.annotate(b, (t, res["holdout"]["family"][d]["per_slice"][b]["estimate"]), fontsize=5.5, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true slice accuracy", ylabel="estimated (mean P(correct))",
           title="held-out slices: estimate vs truth")
    ax.legend(fontsize="x-small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def plot_aee_by_band(res: Mapping[str, Any], path: Path) -> None:
    import numpy as np

    names = list(res["holdout"]["family"])
    bands = [(lo, hi) for lo, hi in BANDS if any(lo <= s["accuracy"] < hi for s in res["slices"].values())]
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    for i, (n, color) in enumerate(zip(names, _colors(len(names)), strict=True)):
        per = res["holdout"]["family"][n]["per_slice"]
        vals = [float(np.median([abs(per[b]["error"]) for b, s in res["slices"].items() if lo <= s["accuracy"] < hi]))
                for lo, hi in bands]
        ax.bar(np.arange(len(bands)) + i * width, vals, width, color=color, label=n)
    ax.set_xticks(np.arange(len(bands)) + 0.4 - width / 2, [f"{lo:.1f}–{min(hi, 1):.1f}" for lo, hi in bands])
    ax.axhline(0.05, color="red", lw=1, ls=":", label="AEE 0.05")
    ax.set(xlabel="true slice accuracy", ylabel="median AEE, leave one family out")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)
