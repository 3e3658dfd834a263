"""Run vlmq's own processes (the API and the workers) as a user would, and wait until they are ready.

Used by ``vlmq demo``, the end-to-end and GPU tests, and the GPU benchmark.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from api.cli.devstack import ManagedProcess, wait_until

VLMQ = [sys.executable, "-m", "api.cli"]


def start_vlmq(
    env: dict[str, str],
    logs: Path,
    port: int,
    prep_concurrency: int = 1,
    log_level: str = "warning",
    metrics_ports: Mapping[str, int] | None = None,
    gpu_workers: Sequence[Mapping[str, str]] = ({},),
) -> dict[str, ManagedProcess]:
    """`vlmq api`, a prep worker and inference workers as separate processes, as a user runs them.

    ``metrics_ports`` gives a worker (by name: worker-prep, worker-gpu) its Prometheus exporter port.
    ``gpu_workers``: one inference worker for each, with these variables on top (data parallel: each its
    own ``CUDA_VISIBLE_DEVICES``); the first is named worker-gpu, the next worker-gpu-1, and so on.
    """
    env = {**env, "VLMQ_API__PORT": str(port), "PYTHONUNBUFFERED": "1"}
    level = ["--log-level", log_level]
    specs = {
        "api": [*VLMQ, "api", "--port", str(port), *level],
        "worker-prep": [*VLMQ, "worker", "--queues", "prep", "--concurrency", str(prep_concurrency), *level],
    }
    envs = {"api": env, "worker-prep": env}
    for i, extra in enumerate(gpu_workers):
        name = gpu_worker_name(i)
        celery = ["--name", _celery_name(i)] if i else []  # the first keeps Celery's default name
        specs[name] = [*VLMQ, "worker", "--queues", "gpu", *level, *celery]
        envs[name] = {**env, **extra}
    for name, metrics_port in (metrics_ports or {}).items():
        specs[name] += ["--metrics-port", str(metrics_port)]
    return {n: ManagedProcess(n, cmd, logs / f"{n}.log", env=envs[n]) for n, cmd in specs.items()}


def gpu_worker_name(i: int) -> str:
    return "worker-gpu" if i == 0 else f"worker-gpu-{i}"


def _celery_name(i: int) -> str:
    return "celery" if i == 0 else f"gpu{i}"


def celery_ready_line(i: int) -> str:
    """What the i-th inference worker's log shows once Celery consumes (``NAME@host ready.``)."""
    return f"{_celery_name(i)}@"


def _check_alive(procs: Sequence[ManagedProcess]) -> None:
    for p in procs:
        if not p.alive:
            raise RuntimeError(f"{p.name} exited; its log ({p.log_path}) ends with:\n{p.log_tail(3000)}")


def answers(url: str, procs: Sequence[ManagedProcess], timeout: float = 2) -> bool:
    """Whether ``url`` answers 200 now; raises, with its log, if one of ``procs`` has died (a check for
    wait_until: a server that exited never answers, and waiting on it would hide why)."""
    import httpx

    _check_alive(procs)
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(base_url: str, procs: Sequence[ManagedProcess], timeout: float = 120) -> None:
    """Until /healthz says ok; fails at once, with the log, if one of ``procs`` dies meanwhile."""
    wait_until(lambda: answers(f"{base_url}/healthz", procs), "the vlmq API", timeout)


def wait_for_log(proc: ManagedProcess, needle: str, timeout: float) -> None:
    """Until ``needle`` shows in the process's log (e.g. the inference worker's engine-ready line)."""

    def seen() -> bool:
        _check_alive([proc])
        return needle in proc.log_tail(500_000)

    wait_until(seen, f"{proc.name} printing {needle!r}", timeout)
