"""Arize Phoenix, a real OpenTelemetry receiver users run, for the OTel test: ``phoenix serve`` from the
venv ``scripts/setup_phoenix.sh`` makes (``$SENTINEL_PHOENIX_VENV``), on free ports, with a temporary
working directory (its SQLite database), read back through its REST API (``GET /v1/projects/{p}/spans``).
Without that venv :func:`why_not` says so and the fixture skips (fails under CI, which installs it)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from entropy_sentinel.embedded.llama_server import free_port, stop_process, wait_until_ready


def venv() -> Path:
    default = Path.home() / ".cache" / "entropy-sentinel" / "phoenix-venv"
    return Path(os.environ.get("SENTINEL_PHOENIX_VENV") or default)


def why_not() -> str | None:
    if not (venv() / "bin" / "phoenix").exists():
        return f"Arize Phoenix is not installed in {venv()} (bash scripts/setup_phoenix.sh)"
    return None


@dataclass
class PhoenixServer:
    url: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self, timeout_s: float = 120.0) -> PhoenixServer:
        self._dir = tempfile.TemporaryDirectory(prefix="phoenix-")
        port = free_port()
        env = {
            **os.environ,
            "PHOENIX_WORKING_DIR": self._dir.name,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(free_port()),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        self._log = open(Path(self._dir.name) / "phoenix.log", "wb")  # noqa: SIM115  closed in stop()
        self._proc = subprocess.Popen(
            [str(venv() / "bin" / "phoenix"), "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(f"{self.url}/healthz", self._proc, timeout_s, "Phoenix")
        except Exception:
            self.stop()
            raise
        return self

    def log_tail(self, n: int = 4000) -> str:
        return (Path(self._dir.name) / "phoenix.log").read_bytes()[-n:].decode(errors="replace") if self._dir else ""

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix holds for ``project``, through its REST API (all pages)."""
        import urllib.request

        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
            with urllib.request.urlopen(f"{self.url}/v1/projects/{project}/spans?{query}", timeout=10) as resp:
                page = orjson.loads(resp.read())
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, grace_s=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
