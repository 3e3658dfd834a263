"""Start the API and workers as separate processes, the way a user starts them (e2e and GPU tests)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from api.cli.devstack import ManagedProcess, free_port
from api.cli.processes import start_vlmq, wait_healthy


@contextmanager
def running_system(
    env: dict[str, str],
    logs: Path,
    ready_timeout: float = 120,
    metrics_ports: Mapping[str, int] | None = None,
) -> Iterator[tuple[str, dict[str, ManagedProcess]]]:
    """Yields (base URL, processes by name); stops every process on the way out."""
    port = free_port()
    procs = start_vlmq(env, logs, port, metrics_ports=metrics_ports)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, list(procs.values()), ready_timeout)
        yield base, procs
    finally:
        for p in reversed(list(procs.values())):
            p.stop()
