"""`vlmq dev up` as a user runs it: stopped by SIGTERM or SIGHUP (a closed terminal, a service manager)
it stops PostgreSQL, Redis and the S3 server; killed with SIGKILL, its servers go with it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

from api.cli.devstack import DB_KEY, REDIS_KEY, S3_KEY, read_dev_env
from api.cli.servers import port_open

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
READY = "Services up and migrated."
GONE_WITHIN_S = 20  # every server stopped (PostgreSQL's fast shutdown included) well within this


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first, then ppid), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's PID 1 may never reap the processes orphaned to it)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``: its servers, and PostgreSQL's own children."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


class DevUp(NamedTuple):
    proc: subprocess.Popen[bytes]
    children: set[int]  # every process below it
    ports: list[int]  # PostgreSQL's, Redis', moto's
    state: Path


@contextlib.contextmanager
def dev_up(tmp_path: Path) -> Iterator[DevUp]:
    """`vlmq dev up` with nothing configured, once ready: the process, its descendants, server ports.
    Whatever the test leaves running is killed on the way out."""
    # The state (PostgreSQL's data) outside pytest's /tmp/pytest-of-USER, which every pytest session
    # starting meanwhile sets back to 0700, out of reach of PostgreSQL's unprivileged account.
    state = Path(tempfile.mkdtemp(prefix="vlmq-test-dev-up-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    env |= {"VLMQ_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = tmp_path / "dev-up.log"
    with open(log, "wb") as out:  # cwd tmp_path: no .env of the checkout is read
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "dev", "up"], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    children: set[int] = set()
    try:
        _wait(lambda: READY in log.read_text() or proc.poll() is not None, 90, log)
        assert proc.poll() is None, log.read_text()
        recorded, _ = read_dev_env(state / "dev.env")
        ports = [urlsplit(recorded[k]).port or 0 for k in (DB_KEY, REDIS_KEY, S3_KEY)]
        children = descendants(proc.pid)
        assert len(children) >= 4, children  # the postmaster's own processes, Redis, moto
        yield DevUp(proc, children, ports, state)
    finally:
        for pid in [proc.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def _wait(check: object, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s; log:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def _all_gone(children: set[int], ports: list[int], log: Path) -> None:
    _wait(lambda: not any(_running(p) for p in children), GONE_WITHIN_S, log)
    assert not any(port_open("127.0.0.1", p) for p in ports), ports


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_every_server(tmp_path: Path, sig: signal.Signals) -> None:
    with dev_up(tmp_path) as up:
        t0 = time.monotonic()
        up.proc.send_signal(sig)
        assert up.proc.wait(GONE_WITHIN_S) == 0, (tmp_path / "dev-up.log").read_text()
        _all_gone(up.children, up.ports, tmp_path / "dev-up.log")
        print(f"{sig.name}: {len(up.children)} processes gone in {time.monotonic() - t0:.1f} s")
        assert not (up.state / "dev.env").exists()
        assert f"servers stopped ({sig.name})" in (tmp_path / "dev-up.log").read_text()


def test_servers_die_with_a_killed_dev_up(tmp_path: Path) -> None:
    with dev_up(tmp_path) as up:
        t0 = time.monotonic()
        up.proc.kill()
        up.proc.wait()
        _all_gone(up.children, up.ports, tmp_path / "dev-up.log")
        print(f"SIGKILL: {len(up.children)} processes gone in {time.monotonic() - t0:.1f} s")
