"""Command line: ``entropy-sentinel serve | collect | calibrate | select | check | train | evaluate | study |
report | prepare``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entropy_sentinel import __version__
from entropy_sentinel.config import ConfigError, SentinelConfig, load_config
from entropy_sentinel.optional import MissingExtra, require_for_command

if TYPE_CHECKING:
    from entropy_sentinel.estimator.catalog import EstimatorCatalog

log = logging.getLogger("entropy_sentinel")


def _serve_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    if args.upstream is not None:
        overrides.setdefault("upstream", {})["url"] = args.upstream
    if args.host is not None:
        overrides.setdefault("server", {})["host"] = args.host
    if args.port is not None:
        overrides.setdefault("server", {})["port"] = args.port
    if args.estimator is not None:
        overrides.setdefault("estimator", {})["path"] = args.estimator
    if args.store is not None:
        overrides.setdefault("store", {})["path"] = args.store
    return overrides


def load_estimators(
    cfg: SentinelConfig, config_path: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> EstimatorCatalog:
    """The estimator map of ``cfg``, loaded; a reload re-reads the estimator section of ``config_path``
    with the same env and ``overrides`` (the flags win again). Raises EstimatorLoadError."""
    from entropy_sentinel.config import DEFAULT_ESTIMATOR_MODELS, estimator_map, load_estimator_config
    from entropy_sentinel.estimator.catalog import EstimatorCatalog

    if cfg.estimator.path.strip() and cfg.estimator.models != DEFAULT_ESTIMATOR_MODELS:
        log.warning("estimator.path (or --estimator) is set: it scores every model; estimator.models is ignored")

    def source() -> list[tuple[str, str]]:
        return estimator_map(load_estimator_config(config_path, overrides))

    catalog = EstimatorCatalog.load(estimator_map(cfg.estimator), source=source)
    for entry in catalog.describe():
        log.info("estimator for %s: %s (%s, fitted on %s, sha256 %s)", entry["glob"], entry["artifact"],
                 entry["estimator"], entry["model"], (entry["sha256"] or "-")[:12])
    if not len(catalog):
        log.info("no estimator configured: features only, no P(correct)")
    return catalog


def serve(
    cfg: SentinelConfig, config_path: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> int:
    from entropy_sentinel.embedded import LocalLlamaServer
    from entropy_sentinel.gateway.app import create_app
    from entropy_sentinel.gateway.server import run as run_server
    from entropy_sentinel.types import EstimatorLoadError

    try:
        estimators = load_estimators(cfg, config_path, overrides)
    except EstimatorLoadError as exc:
        print(f"entropy-sentinel: {exc}", file=sys.stderr)
        return 2
    local = None
    upstream_url = cfg.upstream.url
    if upstream_url == "local":
        local = LocalLlamaServer(cfg.local, cfg.upstream.max_connections)
        log.info("starting the embedded upstream (llama-server + Gemma 3 270M)")
        upstream_url = local.start()
    try:
        app = create_app(cfg, upstream_url, scorer=estimators)
        log.info("proxying http://%s:%d/v1 -> %s/v1", cfg.server.host, cfg.server.port, upstream_url)
        run_server(app, cfg.server)  # web.run_app's loop, with the connection cap (server.max_connections)
    finally:
        if local is not None:
            local.stop()
    return 0


def prepare(cfg: SentinelConfig) -> int:
    """Build/cache the embedded upstream's binary and model now, not at the first ``serve``."""
    from entropy_sentinel.embedded import ensure_model, ensure_server_binary

    print(f"llama-server: {ensure_server_binary(cfg.local)}")
    print(f"model: {ensure_model(cfg.local)}")
    return 0


def collect_cmd(args: argparse.Namespace) -> int:
    import asyncio

    from entropy_sentinel.traces.collect import CollectError, collect, parse_slice, summarize

    out = Path(args.out)
    try:
        stats = asyncio.run(
            collect(
                args.proxy, args.benchmark, out, parse_slice(args.slice), args.limit,
                args.concurrency, args.style, args.model, prompts=args.prompts,
            )
        )
    except CollectError as exc:
        print(f"entropy-sentinel collect: {exc}", file=sys.stderr)
        return 2
    print(
        f"{stats.benchmark}: {stats.written} written, {stats.skipped_done} already done, "
        f"{stats.unscored} unscored, {stats.failed} failed -> {out}",
        file=sys.stderr,
    )
    print(summarize(out, stats.benchmark, stats.prompts).line(f"{stats.benchmark} ({stats.prompts})"), file=sys.stderr)
    return 1 if stats.failed and not stats.written else 0


def train_cmd(args: argparse.Namespace) -> int:
    import json

    from entropy_sentinel.evaluation.training import study_record, train

    extra = None
    if args.study:
        try:
            extra = {"study": study_record(args.study, args.traces, args.method)}
        except ValueError as exc:
            print(f"entropy-sentinel train: {exc}", file=sys.stderr)
            return 2
    metadata = train(args.traces, args.out, method=args.method, variant=args.variant, extra_metadata=extra)
    validation = metadata["validation"]
    print(json.dumps({"artifact": args.out, "estimator": metadata["estimator"], "validation": validation}, indent=1))
    return 0


def _file_stem(model: str) -> str:
    """A model name as part of a file name: characters other than letters, digits, ``.-_`` become ``_``."""
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in model)


def calibrate_cmd(args: argparse.Namespace) -> int:
    import asyncio

    from entropy_sentinel.evaluation.calibrate import CalibrateError, calibrate, summary_lines
    from entropy_sentinel.traces.collect import CollectError

    out = Path(args.out or f"calibrated-{_file_stem(args.model)}.skops")
    try:
        result = asyncio.run(
            calibrate(
                args.proxy, args.model, out, args.traces, args.budget,
                args.benchmarks.split(",") if args.benchmarks else None, args.method,
                args.admin_token or os.environ.get("SENTINEL_ADMIN_TOKEN"), not args.no_load, args.concurrency,
                args.style, note=lambda line: print(f"entropy-sentinel calibrate: {line}", file=sys.stderr),
            )
        )
    except (CalibrateError, CollectError, ValueError) as exc:
        print(f"entropy-sentinel calibrate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0 if result.loaded or args.no_load else 1


def select_cmd(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from entropy_sentinel.evaluation.choose import ChooseError, choose

    out = Path(args.out or f"selected-{_file_stem(args.model)}.skops")
    try:
        choice = asyncio.run(
            choose(
                args.proxy, args.model, args.traces, out, args.estimators.split(",") if args.estimators else None,
                args.variant, args.admin_token or os.environ.get("SENTINEL_ADMIN_TOKEN"), args.switch,
                args.min_labels, args.min_share, args.resamples,
                note=lambda line: print(f"entropy-sentinel select: {line}", file=sys.stderr),
            )
        )
    except (ChooseError, ValueError) as exc:
        print(f"entropy-sentinel select: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(choice.comparison.to_json(), indent=1))
    print("\n".join(choice.comparison.table()))
    if choice.note:
        print(choice.note)
    return 1 if args.switch and choice.artifact is not None and not choice.loaded else 0


def check_cmd(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
    from entropy_sentinel.evaluation.check import (
        check_artifacts,
        compare_lines,
        compare_results,
        plot_check,
        plot_compare,
        summary_lines,
    )

    path = resolve_artifact(args.estimator)
    if path is None:
        print("entropy-sentinel check: --estimator names no artifact", file=sys.stderr)
        return 2
    scorers: dict[str | None, Any] = {}  # None: the artifact checked; the others only compared with it
    try:  # every artifact loaded, and the traces read once, before anything is written
        scorers[None] = ArtifactScorer.load(path)
        for spec in args.compare:
            name, _, artifact = spec.partition("=")
            try:
                scorers[name] = ArtifactScorer.load(artifact)
            except (ValueError, KeyError, OSError) as exc:
                raise ValueError(f"--compare {spec}: {exc}") from exc
        results = check_artifacts(args.traces, scorers, args.level)
    except (ValueError, KeyError, OSError) as exc:
        print(f"entropy-sentinel check: {exc}", file=sys.stderr)
        return 2
    result = results.pop(None)
    result["artifact_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    result["traces_sha256"] = {Path(t).name: hashlib.sha256(Path(t).read_bytes()).hexdigest() for t in args.traces}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(result, indent=1))
    text = "\n".join(summary_lines(result))
    (out / "check.md").write_text(text + "\n")
    plot_check(result, out / "check.png")
    print(text)
    print(f"wrote {out / 'check.json'}, {out / 'check.md'}, {out / 'check.png'}")
    if args.compare:
        checked = {"default": result, **results}
        comparison = compare_results(checked)
        (out / "compare.json").write_text(json.dumps(comparison, indent=1))
        table = "\n".join(compare_lines(comparison))
        (out / "compare.md").write_text(table + "\n")
        plot_compare(comparison, checked, out / "compare.png")
        print(table)
        print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from entropy_sentinel.estimator.registry import estimator_names
    from entropy_sentinel.evaluation.protocol import group_by_benchmark, read_traces, run_protocol
    from entropy_sentinel.evaluation.report_eval import write_evaluation

    grouped = group_by_benchmark(t for t in read_traces(args.traces) if t.get("label") is not None)
    ks = tuple(int(k) for k in args.ks.split(","))
    estimators = args.estimators.split(",") if args.estimators else list(estimator_names())
    result = run_protocol(
        grouped, estimators, ks=ks, max_combinations=args.max_combinations,
        variant=args.variant, n_jobs=args.jobs,
    )
    written = write_evaluation(result.rows, result.summary, Path(args.out), result.reliability)
    print((Path(args.out) / "summary.md").read_text() if (Path(args.out) / "summary.md").exists() else "")
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def study_cmd(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from entropy_sentinel.evaluation.protocol import group_by_benchmark, read_traces
    from entropy_sentinel.evaluation.study import StudyConfig, run_study
    from entropy_sentinel.evaluation.study_report import write_study

    grouped = group_by_benchmark(t for t in read_traces(args.traces) if t.get("label") is not None)
    truncation = json.loads(Path(args.truncation).read_text()) if args.truncation else None
    cap = args.max_combinations or None
    cfg = StudyConfig(max_combinations=cap, ablation_max_combinations=args.ablation_max_combinations or None)
    result = run_study(grouped, cfg, truncation, n_jobs=args.jobs)
    result.results["traces_sha256"] = hashlib.sha256(Path(args.traces).read_bytes()).hexdigest()
    document = Path(args.document) if args.document else None
    written = write_study(result.results, result.rows, result.reliability, Path(args.out), document)
    print(json.dumps(result.results["verdict"], indent=1))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    from entropy_sentinel.report.command import (
        ReportError,
        build_report,
        parse_since,
        proxy_settings,
        records_from_db,
        records_from_proxy,
        tau_from_artifact,
    )

    try:
        since = parse_since(args.since)
        records = records_from_proxy(args.proxy, args.token, since) if args.proxy else records_from_db(args.db, since)
        settings = proxy_settings(args.proxy, args.token) if args.proxy else {}
        tau = args.tau if args.tau is not None else (
            tau_from_artifact(args.estimator) if args.estimator else settings.get("tau", 0.0)
        )
        level = args.level if args.level is not None else settings.get("level", 0.9)
        files = build_report(
            records, args.out, level=level, tau=tau, min_labels=args.min_labels,
            top_requests=args.top_requests, source=args.proxy or args.db,
        )
    except ReportError as exc:
        print(f"entropy-sentinel report: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entropy-sentinel",
        description="OpenAI-compatible proxy that estimates P(correct) from decoding entropy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", help="YAML config file (default: built-in defaults, see configs/sentinel.yaml)")
    p.add_argument("--upstream", help="upstream base URL, or 'local' for the embedded llama-server (default)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port (default 8080)")
    p.add_argument("--estimator", help="one estimator artifact (skops, from `entropy-sentinel train`) for every model, "
                   "instead of estimator.models; builtin = the shipped one; none = no scoring")
    p.add_argument("--store", metavar="PATH", help="SQLite request store, replayed into the slice counters at start "
                   "(default: one file per port, ~/.local/share/entropy-sentinel/sentinel-<port>.db; '' disables)")
    p = sub.add_parser("collect", help="send a benchmark through a running proxy, grade, write labelled traces")
    p.add_argument("--proxy", required=True, help="proxy base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--benchmark", required=True, help="benchmark name (gsm8k, svamp, math_l1, ...) or a JSONL file")
    p.add_argument("--slice", action="append", default=[], metavar="K=V",
                   help="slice tag sent to the proxy (X-Sentinel-Slice, with benchmark=<name>) and added to every "
                   "trace; at most 3, keys and values [A-Za-z0-9_.:-]{1,64}")
    p.add_argument("--limit", type=int, help="items to send (a fixed, seeded subsample)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--style", choices=("completion", "chat"), default="completion",
                   help="few-shot completion prompts (base models) or chat prompts (instruction models)")
    p.add_argument("--model", help="model name to request (default: the upstream's first)")
    p.add_argument("--prompts", help="another prompts YAML (default: the packaged prompts.yaml); each trace records "
                   "its prompt set as <file stem>:v<version>")
    p.add_argument("--out", required=True, help="traces JSONL (appended; items already there are skipped)")

    p = sub.add_parser("train", help="fit the P(correct) estimator on labelled traces, write a skops artifact")
    p.add_argument("--traces", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--method", default=None, help="estimator (default: the shipped winner)")
    p.add_argument("--variant", default="topk", help="entropy variant: topk, renormalized, tail_lumped, tail_uniform")
    p.add_argument("--study", help="results.json of `entropy-sentinel study` on these traces: its verdict goes into "
                   "the artifact (refused unless this method is the study's winner)")

    p = sub.add_parser("calibrate", help="collect, train, validate and load an estimator for your model, in one go")
    p.add_argument("--proxy", required=True, help="running proxy base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--model", required=True, help="the model to calibrate (as the upstream names it)")
    p.add_argument("--budget", type=int, default=1000, help="items to send, split over the benchmark mix")
    p.add_argument("--benchmarks", help="comma-separated benchmarks (default: a mix spanning difficulty and families)")
    p.add_argument("--out", help="artifact (default: calibrated-<model>.skops)")
    p.add_argument("--traces", help="traces JSONL, continued on a rerun (default: next to --out)")
    p.add_argument("--admin-token", help="the proxy's admin token (default: $SENTINEL_ADMIN_TOKEN)")
    p.add_argument("--method", default=None, help="estimator (default: the shipped winner)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--style", choices=("completion", "chat"), default="completion")
    p.add_argument("--no-load", action="store_true", help="write the artifact only; do not reload the proxy")

    p = sub.add_parser("select", help="which estimator would have been best on your model's feedback labels; "
                       "--switch serves it")
    p.add_argument("--proxy", required=True, help="running proxy base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--model", required=True, help="the model (as responses name it; a glob is allowed)")
    p.add_argument("--traces", nargs="+", required=True,
                   help="labelled traces every candidate is fitted on (calibrate's, or the study's)")
    p.add_argument("--estimators", help="comma-separated registered estimators (default: all of them)")
    p.add_argument("--variant", default="topk", help="the proxy's signal.entropy_variant (the stored features')")
    p.add_argument("--out", help="artifact written on --switch (default: selected-<model>.skops)")
    p.add_argument("--admin-token", help="the proxy's admin token (default: $SENTINEL_ADMIN_TOKEN)")
    p.add_argument("--min-labels", type=int, default=20, help="labels a slice needs to count in the choice")
    p.add_argument("--min-share", type=float, default=0.8,
                   help="share of resamples the winner must win for a switch to be recommended")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--json", help="also write the comparison as JSON here")
    p.add_argument("--switch", action="store_true", help="train the recommended estimator into --out and load it")

    p = sub.add_parser("check", help="a fixed estimator on labelled traces it never saw: per-slice error, "
                       "interval coverage, ranking, against the constant baseline; table, JSON, plot")
    p.add_argument("--traces", nargs="+", required=True, help="labelled traces (each benchmark is a slice)")
    p.add_argument("--estimator", default="builtin", help="artifact to check (default: the shipped one)")
    p.add_argument("--out", required=True, help="output directory (check.json, check.md, check.png)")
    p.add_argument("--level", type=float, default=0.9)
    p.add_argument("--compare", action="append", default=[], metavar="NAME=ARTIFACT",
                   help="also check this artifact and compare (median AEE with a slice bootstrap); repeatable")

    p = sub.add_parser("evaluate", help="the paper's protocol: every estimator on every training composition")
    p.add_argument("--traces", nargs="+", required=True)
    p.add_argument("--out", required=True, help="output directory (CSV, markdown, PNG)")
    p.add_argument("--estimators", help="comma-separated registered estimators (default: all of them)")
    p.add_argument("--ks", default="1,2,3,4")
    p.add_argument("--max-combinations", type=int, default=30, help="cap on training compositions per k")
    p.add_argument("--variant", default="topk")
    p.add_argument("--jobs", type=int, default=2)

    p = sub.add_parser("study", help="the full accuracy study behind docs/results.md: tables, JSON, plots")
    p.add_argument("--traces", required=True, help="the labelled traces (data/traces/gemma-3-270m.jsonl.gz)")
    p.add_argument("--truncation", help="near-full logprob measurement from scripts/measure_truncation.py")
    p.add_argument("--out", required=True, help="output directory (results.json, rows.csv.gz, PNG)")
    p.add_argument("--document", help="markdown file whose study block gets the tables (docs/results.md)")
    p.add_argument("--max-combinations", type=int, default=60, help="cap on training compositions per k (0: all)")
    p.add_argument("--ablation-max-combinations", type=int, default=20,
                   help="the same cap for the entropy-variant and feature-set ablations (0: all)")
    p.add_argument("--jobs", type=int, default=2)

    p = sub.add_parser("report", help="slice estimates with intervals, time series, reliability: HTML/PNG + JSON")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--proxy", help="running proxy base URL")
    source.add_argument("--db", help="the proxy's store: its SQLite file, or the postgresql://user@host/db URL "
                        "replicas share (every replica's records; the password from PGPASSWORD or ~/.pgpass keeps "
                        "it off the command line; never printed)")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--token", default=os.environ.get("SENTINEL_ADMIN_TOKEN"), help="admin token (env SENTINEL_ADMIN_TOKEN)"
    )
    p.add_argument("--since", help="unix seconds, ISO time, or an age (24h, 7d)")
    p.add_argument("--tau", type=float, help="estimator transfer error for the intervals (default: the proxy's)")
    p.add_argument("--estimator", help="artifact whose validation gives tau")
    p.add_argument("--level", type=float)
    p.add_argument("--min-labels", type=int, default=30)
    p.add_argument("--top-requests", type=int, default=20)

    p = sub.add_parser("prepare", help="build and cache the embedded upstream (llama-server + Gemma) ahead of time")
    p.add_argument("--config", help="YAML config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("collect", "calibrate", "select", "check", "train", "evaluate", "study", "report"):
        logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        for noisy in ("httpx", "httpx2", "openai"):  # one line per request would drown the progress bar
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if args.command in ("train", "calibrate") and args.method is None:
            from entropy_sentinel.evaluation.training import DEFAULT_METHOD

            args.method = DEFAULT_METHOD
        commands = {"collect": collect_cmd, "calibrate": calibrate_cmd, "select": select_cmd, "check": check_cmd,
                    "train": train_cmd, "evaluate": evaluate_cmd, "study": study_cmd, "report": report_cmd}
        try:
            require_for_command(args.command)
        except MissingExtra as exc:
            print(f"entropy-sentinel: {exc}", file=sys.stderr)
            return 2
        return commands[args.command](args)
    overrides = _serve_overrides(args) if args.command == "serve" else None
    try:
        cfg = load_config(args.config, overrides)
    except (ConfigError, OSError) as exc:
        print(f"entropy-sentinel: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.logging.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.command == "serve":
        return serve(cfg, args.config, overrides)  # SIGHUP re-reads args.config's estimator section
    if args.command == "prepare":
        return prepare(cfg)
    return 2  # pragma: no cover - argparse rejects unknown commands
