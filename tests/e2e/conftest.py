"""End-to-end: the API and Celery workers as separate processes, started the way a user starts them.

One system serves every e2e test (starting it costs about 10 s) and stops after the last of them:
package scope, since its workers would otherwise take the messages of the integration tests that run
after. Every test makes its own jobs and asserts only on those. Both workers run their Prometheus
exporter, each on a port of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli.devstack import free_port
from tests.fixtures.models import PAGE_SIDE
from tests.system import running_system as start_system


@pytest.fixture(scope="session")
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
        "VLMQ_LIMITS__MAX_PDF_PAGES": "20",  # test_documents' too_many_pages.pdf has 30
        "VLMQ_MODEL__READY_FILE": str(tmp_path_factory.mktemp("worker") / "engine-ready.json"),
        # test_sources: `vlmq submit --dataset-to` writes a job's dataset under exports/ too
        "VLMQ_INPUTS__WRITE_GRANTS": json.dumps({"*": [f"s3://{service_env['VLMQ_S3__BUCKET']}/exports/"]}),
    }


@pytest.fixture(scope="session")
def metrics_ports() -> dict[str, int]:
    """The workers' exporter ports, by process name."""
    return {"worker-prep": free_port(), "worker-gpu": free_port()}


@pytest.fixture(scope="package")
def running_system(
    e2e_env: dict[str, str], metrics_ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    with start_system(e2e_env, logs, metrics_ports=metrics_ports) as (base, _):
        yield base
