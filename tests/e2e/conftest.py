"""End-to-end: the API and Celery workers as separate processes, started the way a user starts them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.models import PAGE_SIDE
from tests.system import running_system as start_system


@pytest.fixture(scope="module")
def e2e_env(
    service_env: dict[str, str], taught_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return {
        **os.environ,
        **service_env,
        "VLMQ_MODEL__PATH": str(taught_model_dir),
        "VLMQ_MODEL__MODEL_ID": "tiny-glm4v-taught",
        "VLMQ_MODEL__MAX_NEW_TOKENS": "64",
        "VLMQ_LIMITS__RENDER_LONGEST_SIDE": str(PAGE_SIDE),
        "VLMQ_LIMITS__BATCH_SIZE": "2",
        "VLMQ_MODEL__READY_FILE": str(tmp_path_factory.mktemp("worker") / "engine-ready.json"),
    }


@pytest.fixture(scope="module")
def running_system(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_system(e2e_env, tmp_path_factory.mktemp("e2e-logs")) as (base, _):
        yield base
