"""End-to-end: the API and Celery workers as separate processes, started the way a user starts them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.cli.devstack import ManagedProcess, free_port
from tests.fixtures.models import PAGE_SIDE

VLMQ = [sys.executable, "-m", "api.cli"]


def _wait_healthy(base: str, procs: list[ManagedProcess], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive:
                pytest.fail(f"{p.name} exited early; log:\n{p.log_tail()}")
        try:
            r = httpx.get(f"{base}/healthz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.5)
    pytest.fail(f"API not healthy after {timeout} s: {last}")


@pytest.fixture(scope="module")
def e2e_env(service_env: dict[str, str], taught_model_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        **service_env,
        "VLMQ_MODEL__PATH": str(taught_model_dir),
        "VLMQ_MODEL__MODEL_ID": "tiny-glm4v-taught",
        "VLMQ_MODEL__MAX_NEW_TOKENS": "64",
        "VLMQ_LIMITS__RENDER_LONGEST_SIDE": str(PAGE_SIDE),
        "VLMQ_LIMITS__BATCH_SIZE": "2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def running_system(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vlmq api`, a prep worker and a gpu worker; yields the API's base URL."""
    logs = tmp_path_factory.mktemp("e2e-logs")
    port = free_port()
    env = {**e2e_env, "VLMQ_API__PORT": str(port)}
    specs = {
        "api": [*VLMQ, "api", "--port", str(port), "--log-level", "warning"],
        "worker-prep": [*VLMQ, "worker", "--queues", "prep", "--concurrency", "1"],
        "worker-gpu": [*VLMQ, "worker", "--queues", "gpu"],
    }
    procs = [ManagedProcess(name, cmd, logs / f"{name}.log", env=env) for name, cmd in specs.items()]
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", procs)
        yield f"http://127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            p.stop()
