"""docker-compose.yml: Docker does not run here, so the file is checked as data (the structure
`docker compose config` relies on)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_every_service_is_there() -> None:
    services = set(_compose()["services"])
    assert services == {
        "postgres",
        "redis",
        "minio",
        "migrate",
        "api",
        "worker-cpu",
        "worker-gpu",
        "beat",
        "flower",
    }


def test_gpu_worker_reserves_a_gpu_and_runs_vllm() -> None:
    gpu = _compose()["services"]["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert gpu["environment"]["VLMQ_MODEL__ENGINE"] == "vllm"
    assert gpu["command"] == ["worker", "--queues", "gpu"]


def test_every_variable_has_a_default() -> None:
    text = COMPOSE.read_text()
    bare = [m for m in re.findall(r"\$\{([^}]*)\}", text) if ":-" not in m]
    assert bare == []


def test_dependencies_point_at_services_with_the_conditions_they_need() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"


def test_images_build_from_files_that_exist() -> None:
    for svc in _compose()["services"].values():
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
