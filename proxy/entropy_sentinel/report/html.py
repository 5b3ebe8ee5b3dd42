"""The self-contained HTML page of ``entropy-sentinel report`` (plots: :mod:`.report_plots`).

The page embeds the PNGs as data URIs, carries its CSS inline and a Content-Security-Policy that allows
no script and no request: opened from disk it reaches nothing. Every string that comes from traffic
(slice keys, request ids, prompts, completions) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from typing import Any

from entropy_sentinel.report.plots import (
    BLUE,
    GREEN,
    GREY,
    MAX_PLOT_SLICES,
    ORANGE,
    SERIES_COLORS,
    TIMESERIES_SLICES,
    plot_reliability,
    plot_slices,
    plot_timeseries,
    render_plots,
    slice_name,
)

__all__ = [
    "BLUE",
    "CSS",
    "GREEN",
    "GREY",
    "MAX_PLOT_SLICES",
    "MAX_TEXT",
    "ORANGE",
    "SERIES_COLORS",
    "TIMESERIES_SLICES",
    "plot_reliability",
    "plot_slices",
    "plot_timeseries",
    "render_html",
    "render_plots",
    "slice_name",
]

MAX_TEXT = 1500  # characters of a prompt / completion shown on the page (the CSV has all of it)

CSS = """
:root { --ink:#1b1f24; --mute:#5b6470; --line:#d9dde3; --bg:#f6f7f9; --bad:#c0392b; --blue:#1f77b4;
        --orange:#ff7f0e; --green:#2ca02c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:var(--bg); }
main { max-width:1200px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:22px; margin:0 0 4px; } h2 { font-size:18px; margin:32px 0 10px; }
h3 { font-size:15px; margin:22px 0 6px; }
.sub { color:var(--mute); margin:0 0 16px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:12px 0; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:150px; }
.card b { display:block; font-size:20px; } .card span { color:var(--mute); font-size:12px; }
.note { background:#fff8e1; border:1px solid #f1d27a; border-radius:6px; padding:8px 12px; margin:8px 0; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); text-align:right; vertical-align:top; }
th { background:#eef0f3; font-weight:600; font-size:12px; position:sticky; top:0; }
td.slice, th.slice, td.text, td.rid { text-align:left; }
td.slice { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:13px; min-width:200px; }
td.slice .tag { white-space:nowrap; }
table.acquire { width:auto; min-width:45%; } table.acquire.texts { width:100%; }
td.rid { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12px; }
td { white-space:nowrap; } td.slice, td.text { white-space:normal; }
.iv { color:var(--mute); font-size:12px; }
.bar { position:relative; width:160px; height:14px; background:#eef0f3; border-radius:3px; }
.bar .span { position:absolute; top:3px; height:8px; background:rgba(31,119,180,.35); border-radius:2px; }
.bar .pt { position:absolute; top:0; width:2px; height:14px; background:var(--blue); }
.bar .obs { position:absolute; top:3px; width:8px; height:8px; margin-left:-4px; background:var(--orange);
            transform:rotate(45deg); }
figure { margin:16px 0; background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figcaption { color:var(--mute); font-size:12px; margin-top:6px; }
pre { margin:0; white-space:pre-wrap; word-break:break-word; font-size:12px; max-height:12em; overflow:auto;
      font-family:ui-monospace,"DejaVu Sans Mono",monospace; }
.method { color:var(--mute); font-size:13px; } .method li { margin:4px 0; }
"""


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _iv(iv: dict[str, Any] | None) -> str:
    return "—" if iv is None or iv.get("lower") is None else f"[{iv['lower']:.3f}, {iv['upper']:.3f}]"


def _time(ts: float | None) -> str:
    return "—" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _bar(s: dict[str, Any]) -> str:
    h = s["headline"]
    if h is None:
        return ""
    lo, hi, est = (100 * h[k] for k in ("lower", "upper", "estimate"))
    parts = [f'<div class="span" style="left:{lo:.1f}%;width:{max(hi - lo, 0.5):.1f}%"></div>',
             f'<div class="pt" style="left:{est:.1f}%"></div>']
    if s["labels"]["n"] > 0 and s["labels"]["estimate"] is not None:
        parts.append(f'<div class="obs" style="left:{100 * s["labels"]["estimate"]:.1f}%" title="observed"></div>')
    return f'<div class="bar">{"".join(parts)}</div>'


def _slice_cell(key: str) -> str:
    """The slice key, one unbreakable chip per ``k=v`` pair (the cell's text is the key itself)."""
    if not key:
        return "(untagged)"
    pairs = key.split(",")
    return ",".join(f'<span class="tag">{_e(p)}</span>' for p in pairs)


def _with_iv(iv: dict[str, Any] | None) -> str:
    if iv is None or iv.get("estimate") is None:
        return "—"
    return f'{iv["estimate"]:.3f} <span class="iv">{_iv(iv)}</span>'


def _slice_table(data: dict[str, Any]) -> str:
    level = round(100 * data["level"])
    head = (
        "<tr><th>#</th><th class='slice'>slice</th><th>requests</th><th>scored</th>"
        f"<th>estimate [{level}% interval]</th><th>0 – 1</th><th>last 1 h</th><th>last 24 h</th>"
        "<th>labels</th><th>observed</th><th>recalibrated</th></tr>"
    )
    rows = []
    for s in data["slices"]:
        w1, w24 = s["windows"]["1h"], s["windows"]["24h"]
        rows.append(
            f'<tr class="slice-row" data-rank="{s["rank"]}">'
            f'<td>{s["rank"]}</td><td class="slice">{_slice_cell(s["slice"])}</td>'
            f'<td>{s["requests"]}</td><td>{s["n"]}</td>'
            f'<td class="est">{_with_iv(s["estimate"])}</td>'
            f"<td>{_bar(s)}</td><td>{_f(w1['estimate'])}</td><td>{_f(w24['estimate'])}</td>"
            f'<td>{s["labels"]["n"]}</td><td>{_with_iv(s["labels"])}</td><td>{_with_iv(s["recalibrated"])}</td></tr>'
        )
    return f'<table id="slices"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _clip_text(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return _e(text)
    return _e(text[:MAX_TEXT]) + f"\n<i>… {len(text) - MAX_TEXT} more characters in acquire_next.csv</i>"


def _acquire(data: dict[str, Any]) -> str:
    if not data["acquire_next"]:
        return "<p class='sub'>No slice has an estimate yet: nothing to rank.</p>"
    out = [
        ("<p class='sub'>The slices whose accuracy could be lowest (smallest upper bound first), and in each "
        "the unlabelled responses the estimator is least sure of. Labelling these (feedback API) tightens "
        "the slice's interval where it matters; collecting more data like them improves the model where it "
        "is weakest. Also in <code>acquire_next.csv</code>.</p>")
    ]
    for entry in data["acquire_next"]:
        h = entry["headline"]
        out.append(
            f'<h3 class="acquire-slice">{entry["rank"]}. {_e(slice_name(entry["slice"]))} — '
            f'{_e(h["source"].replace("_", "-"))} {_f(h["estimate"])} {_iv(h)}</h3>'
        )
        reqs = entry["requests"]
        if not reqs:
            why = ("Every scored response here is labelled already." if entry.get("scored") else
                   "No scored responses here (no estimator was loaded): label more of this slice's traffic.")
            out.append(f"<p class='sub'>{why}</p>")
            continue
        text_cols = [c for c in ("prompt", "completion") if any(c in r for r in reqs)]
        head = "<tr><th>P(correct)</th><th class='slice'>request id</th><th>time</th>" + "".join(
            f"<th class='slice'>{c}</th>" for c in text_cols) + "</tr>"
        rows = []
        for r in reqs:
            cells = "".join(f'<td class="text"><pre>{_clip_text(r[c]) if c in r else ""}</pre></td>' for c in text_cols)
            rows.append(f'<tr><td>{_f(r["p_correct"])}</td><td class="rid">{_e(r["request_id"])}</td>'
                        f'<td>{_time(r["ts"])}</td>{cells}</tr>')
        texts = " texts" if text_cols else ""
        out.append(f'<table class="acquire{texts}"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')
    if not any("prompt" in r or "completion" in r for e in data["acquire_next"] for r in e["requests"]):
        out.append("<p class='sub'>Prompt capture is off: only request ids are listed (enable capture in the "
                   "proxy's store settings to see the texts here).</p>")
    return "".join(out)


def _img(pngs: dict[str, bytes], name: str, alt: str, caption: str) -> str:
    if name not in pngs:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(pngs[name]).decode("ascii")
    return f'<figure id="fig-{name}"><img src="{uri}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'


def render_html(data: dict[str, Any], pngs: dict[str, bytes]) -> str:
    t = data["totals"]
    level = round(100 * data["level"])
    notes = []
    if t["requests"] == 0:
        notes.append("No records in this range: nothing to report yet.")
    elif t["scored"] == 0:
        notes.append("No response carries a P(correct): the proxy ran without an estimator "
                     "(<code>serve --estimator F</code>), so only request counts and labels are shown.")
    if t["requests"] and t["labelled"] == 0:
        notes.append("No labels yet: estimates are label-free; send feedback (<code>POST /sentinel/v1/feedback"
                     "</code>) to see observed and recalibrated accuracy.")
    overall = t["estimate"]
    cards = [
        (f"{t['requests']}", "requests"), (f"{t['scored']}", "scored"), (f"{t['labelled']}", "labelled"),
        (f"{t['slices']}", "slices"),
        (_f(overall and overall["estimate"]), f"overall estimate {_iv(overall)}"),
        (_f(t["observed"] and t["observed"]["estimate"]), f"observed accuracy {_iv(t['observed'])}"),
    ]
    rng = data["range"]
    source = f"source {_e(data.get('source'))} · " if data.get("source") else ""
    figs = "".join([
        _img(pngs, "slices", "slice estimates ranked worst first",
             f"Label-free estimate (blue, {level}% interval), observed accuracy of labelled responses (orange), "
             "recalibrated estimate (green) per slice, worst first."),
        _img(pngs, "timeseries", "estimate over time",
             "Label-free estimate per time bucket for all traffic and the worst-ranked slices; shaded: interval."),
        _img(pngs, "reliability", "reliability diagram",
             "Predicted P(correct) against the observed accuracy of the labelled responses, in 10 bins."),
    ])
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
    tau = f"{data['tau']:.3f}" + (" × 2√(Â(1−Â))" if data.get("tau_shape") == "binomial" else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Entropy Sentinel report</title><style>{CSS}</style></head>
<body><main>
<h1>Entropy Sentinel — slice accuracy report</h1>
<p class="sub">{source}records {_time(rng['first_ts'])} → {_time(rng['last_ts'])} · windows as of {_time(data['as_of'])}
 · {level}% intervals · transfer error τ = {tau} · recalibration from {data['min_labels']} labels</p>
{"".join(f'<p class="note">{n}</p>' for n in notes)}
<div class="cards">{"".join(f"<div class='card'><b>{v}</b><span>{_e(k)}</span></div>" for v, k in cards)}</div>
<h2>Slices, worst first</h2>
{_slice_table(data) if data["slices"] else "<p class='sub'>No slices.</p>"}
<h2>Plots</h2>
{figs or "<p class='sub'>No scored responses: nothing to plot.</p>"}
<h2 id="acquire">Where to acquire data next</h2>
{_acquire(data)}
<h2>How to read this</h2>
<ul class="method">
<li><b>estimate</b>: mean predicted P(correct) of the slice's scored responses (label-free). Its interval adds
 sampling noise to τ, the estimator's error on benchmarks it never saw, so it does not shrink below ±τ·z with
 more traffic.</li>
<li><b>observed</b>: accuracy of the labelled responses, Wilson interval.</li>
<li><b>recalibrated</b>: once a slice has {data['min_labels']} labels, all scores plus the labelled residuals
 (prediction-powered inference): the slice's own bias, measured. Ranking uses it when present, else the
 label-free estimate, else the observed accuracy.</li>
<li><b>last 1 h / 24 h</b>: label-free estimate over that window before the last recorded event.</li>
</ul>
</main></body></html>
"""
