"""Command line: ``entropy-sentinel serve`` (more subcommands join as they are built)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from entropy_sentinel import __version__
from entropy_sentinel.config import ConfigError, SentinelConfig, load_config

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
    return overrides


def serve(cfg: SentinelConfig) -> int:
    from entropy_sentinel.gateway.app import create_app
    from entropy_sentinel.upstream import LocalLlamaServer

    scorer = None
    if cfg.estimator.path:
        from entropy_sentinel.estimator.scorer import ArtifactScorer

        scorer = ArtifactScorer.load(cfg.estimator.path)
        log.info("estimator loaded from %s (%s)", cfg.estimator.path, scorer.metadata.get("estimator"))
    local = None
    upstream_url = cfg.upstream.url
    if upstream_url == "local":
        local = LocalLlamaServer(cfg.local)
        log.info("starting the embedded upstream (llama-server + Gemma 3 270M)")
        upstream_url = local.start()
    try:
        app = create_app(cfg, upstream_url, scorer=scorer)
        log.info("proxying http://%s:%d/v1 -> %s/v1", cfg.server.host, cfg.server.port, upstream_url)
        web.run_app(
            app,
            host=cfg.server.host,
            port=cfg.server.port,
            handler_cancellation=True,  # a client that disconnects cancels its upstream request
            access_log=None,  # our own request log line carries no prompt, query string or key
            print=None,
        )
    finally:
        if local is not None:
            local.stop()
    return 0


def prepare(cfg: SentinelConfig) -> int:
    """Build/cache the embedded upstream's binary and model now, not at the first ``serve``."""
    from entropy_sentinel.upstream import ensure_model, ensure_server_binary

    print(f"llama-server: {ensure_server_binary(cfg.local)}")
    print(f"model: {ensure_model(cfg.local)}")
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
    p.add_argument("--estimator", help="estimator artifact (skops) from `entropy-sentinel train`: adds P(correct)")
    p = sub.add_parser("prepare", help="build and cache the embedded upstream (llama-server + Gemma) ahead of time")
    p.add_argument("--config", help="YAML config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, _serve_overrides(args) if args.command == "serve" else None)
    except (ConfigError, OSError) as exc:
        print(f"entropy-sentinel: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.logging.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.command == "serve":
        return serve(cfg)
    if args.command == "prepare":
        return prepare(cfg)
    return 2  # pragma: no cover - argparse rejects unknown commands
