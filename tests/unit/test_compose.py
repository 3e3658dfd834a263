"""docker-compose.yml: Docker does not run here, so the file is checked as data (the structure
`docker compose config` relies on), and by a real Compose implementation's `config`: Debian's
docker-compose 1.29 (installed by .ci/run), which reads the file without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.cli import prep_processes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ONE_SHOT = {"minio-bucket", "migrate"}
USES_S3 = {"api", "worker-cpu", "worker-gpu"}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def test_every_service_is_there() -> None:
    assert set(_services()) == {
        "postgres",
        "redis",
        "minio",
        "minio-bucket",
        "migrate",
        "api",
        "worker-cpu",
        "worker-gpu",
        "worker-gpu-1",
        "worker-gpu-tp2",
        "beat",
        "flower",
    }


def test_images_and_commands() -> None:
    s = _services()
    assert (s["postgres"]["image"], s["redis"]["image"]) == ("postgres:16", "redis:7")
    assert s["flower"]["image"].startswith("mher/flower")
    assert s["migrate"]["command"] == ["db", "upgrade"]
    assert s["api"]["command"][0] == "api" and s["beat"]["command"] == ["beat"]
    assert s["worker-cpu"]["command"][:3] == ["worker", "--queues", "prep"]


def test_gpu_worker_reserves_a_gpu_and_runs_vllm() -> None:
    gpu = _services()["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["device_ids"] == ["${VLMQ_GPU:-0}"]
    env = gpu["environment"]
    assert env["VLMQ_MODEL__ENGINE"] == "vllm" and env["VLMQ_MODEL__PATH"]
    assert "awq" in env["VLMQ_MODEL__QUANTIZATION"] and "1" in str(env["VLMQ_MODEL__TENSOR_PARALLEL_SIZE"])
    assert gpu["command"] == ["worker", "--queues", "gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in gpu["volumes"]}
    assert {env["VLMQ_MODEL__COMPILE_CACHE_DIR"], env["VLMQ_MODEL__PATH"]} <= mounts


def test_the_prep_worker_uses_every_core_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    command = _services()["worker-cpu"]["command"]
    assert command[command.index("--concurrency") + 1] == "${VLMQ_PREP_CONCURRENCY:-0}"
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert (prep_processes(0), prep_processes(3)) == (12, 3)  # 0, the default: one per core


def _gpus(svc: dict[str, Any]) -> list[str]:
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    ids: list[str] = device["device_ids"]
    return ids


def test_data_parallel_and_tensor_parallel_workers_take_their_own_gpus() -> None:
    s = _services()
    # One engine per GPU (data parallel): the optional second worker names another GPU, same settings.
    assert _gpus(s["worker-gpu-1"]) == ["1"] and s["worker-gpu-1"]["profiles"] == ["dp2"]
    assert s["worker-gpu-1"]["environment"] == s["worker-gpu"]["environment"]
    # One engine over two GPUs: as many GPUs as tensor-parallel ranks.
    tp2 = s["worker-gpu-tp2"]
    assert tp2["profiles"] == ["tp2"] and _gpus(tp2) == ["0", "1"]
    assert tp2["environment"]["VLMQ_MODEL__TENSOR_PARALLEL_SIZE"] == "2"
    assert tp2["environment"]["NCCL_NVLS_ENABLE"] == "0"
    assert tp2["command"] == s["worker-gpu"]["command"]


def test_every_process_reaches_the_same_services() -> None:
    s = _services()
    for name in ("migrate", "api", "worker-cpu", "worker-gpu", "beat"):
        env = s[name]["environment"]
        assert env["VLMQ_DB__URL"].startswith("postgresql+psycopg://"), name
        assert env["VLMQ_REDIS__URL"].startswith("redis://redis:6379"), name
        assert env["VLMQ_S3__ENDPOINT_URL"] == "http://minio:9000", name
        assert env["VLMQ_S3__BUCKET"] and env["VLMQ_S3__ACCESS_KEY_ID"], name


def test_every_variable_has_a_default() -> None:
    text = re.sub(r"^\s*#.*$", "", COMPOSE.read_text(), flags=re.MULTILINE).replace("$$", "")
    bare = [m for m in re.findall(r"\$\{([^}]*)\}", text) if ":-" not in m]
    assert bare == []
    assert re.findall(r"\$[A-Za-z_]", text) == []  # $VAR without braces cannot have a default


def test_dependencies_point_at_services_with_the_conditions_they_need() -> None:
    services = _services()
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"
            if cond["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{name} waits for {dep} to exit, which it never does"


def test_s3_users_wait_for_the_bucket_and_the_schema() -> None:
    services = _services()
    for name in USES_S3:
        deps = services[name]["depends_on"]
        assert deps["minio-bucket"]["condition"] == "service_completed_successfully", name
        assert deps["migrate"]["condition"] == "service_completed_successfully", name


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart() -> None:
    for name, svc in _services().items():
        if name in ONE_SHOT:
            assert svc["restart"] == "no", name
        elif name != "beat":  # beat serves nothing to probe
            assert svc["healthcheck"]["test"], name


def test_images_build_from_files_that_exist() -> None:
    for svc in _services().values():
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("profiles", [[], ["dp2", "tp2"]])
def test_docker_compose_accepts_the_file(profiles: list[str]) -> None:
    """Compose 1.29 refuses options of Compose v2 only (it refused `create_host_path` before): the file
    keeps to what both read. CI installs it; elsewhere the test skips without it."""
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed: .ci/run installs it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    args = [tool, "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    args += [x for p in profiles for x in ("--profile", p)]
    out = subprocess.run([*args, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
