"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary data directory, a free port.

:class:`PostgresServer` runs ``initdb`` then ``postgres`` itself (no cluster of the system's, no
service manager). PostgreSQL refuses to run as root, so under root both run as the ``postgres``
user the Debian package creates, on a data directory owned by it. Clients log in with a password
(``scram-sha-256``), so a URL in the tests carries a real secret for the "never logged" checks.
Each test gets a database of its own (:meth:`PostgresServer.database`).

``scripts/system_deps.sh`` installs the ``postgresql`` package; without it :func:`binaries` is
``None`` and the fixture using this module skips, saying why.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entropy_sentinel.embedded.llama_server import free_port

USER = "sentinel"
#: the test server's password: a URL's secret that no log line or describe() may show
PASSWORD = "pg-Secret-7f3a9c"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/N/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


#: the server the session fixture started (``postgres_server`` in tests/conftest.py), for code that
#: cannot take fixtures (the store contract's backend table)
_running: list[PostgresServer] = []


def running() -> PostgresServer:
    """The session's server; the ``postgres_server`` fixture must have started it."""
    if not _running:
        raise RuntimeError("no PostgreSQL server: request the postgres_server fixture first")
    return _running[-1]


def why_not() -> str | None:
    """Why no server can be started here (None when it can)."""
    if binaries() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/system_deps.sh does it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _die_with_parent() -> None:
    """In the child (after it dropped root): a fast shutdown when the test process dies, even by SIGKILL."""
    with_libc = ctypes.CDLL("libc.so.6", use_errno=True)
    with_libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


@dataclass
class PostgresServer:
    bin: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sentinel-pg-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _databases: set[str] = field(default_factory=set)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        owner: dict[str, Any] = {}  # Popen arguments that drop root for the postgres user
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            for path in (self.root, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, timeout=120, cwd=self.root, **owner,
        )
        pwfile.unlink()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, preexec_fn=_die_with_parent,
                **owner,
            )
        self._wait_ready(timeout_s)
        _running.append(self)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start-up:\n{self.log_path.read_text()[-4000:]}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """The URL of database ``name`` (made safe), created empty on first use."""
        import psycopg

        safe = re.sub(r"[^a-z0-9_]", "_", name.lower())[-60:]
        if safe not in self._databases:
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{safe}"')
                conn.execute(f'CREATE DATABASE "{safe}"')
            self._databases.add(safe)
        return self.url(safe)

    def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: clients disconnected, no checkpoint wait
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
