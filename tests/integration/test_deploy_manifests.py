"""deploy/k8s, offline: each overlay rendered by `kubectl kustomize`, every object valid against the
Kubernetes 1.32 schemas (kubernetes-validate, strict: unknown fields refused) or, for KEDA's ScaledObject,
the schema vendored in tests/fixtures; then the properties the deployment relies on (docs/deploy.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from api.cli import app
from jobs.adapters.dispatch import worker_queues
from jobs.config import Settings

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "gpu")
K8S_VERSION = "1.32"  # the kubectl CI installs; kubernetes-validate bundles 1.25-1.37
KEDA_SCHEMA = ROOT / "tests" / "fixtures" / "keda-scaledobject-v1alpha1.schema.json"
Obj = dict[str, Any]

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed (Debian package kubectl; .ci/run)"
)


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return tuple(o for o in yaml.safe_load_all(out.stdout) if o)


def _one(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _deployments(objs: tuple[Obj, ...]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}


def _containers(obj: Obj) -> list[Obj]:
    return list(obj["spec"]["template"]["spec"]["containers"])


@pytest.fixture(params=OVERLAYS)
def objs(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return render(request.param)


def test_every_object_is_valid(objs: tuple[Obj, ...]) -> None:
    keda = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    for obj in objs:
        if obj["apiVersion"].startswith("keda.sh/"):
            keda.validate(obj)
        else:  # SchemaNotFoundError for a kind Kubernetes does not have
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validators_refuse_what_is_wrong() -> None:
    """The checks above can fail: a typo'd field, a number where KEDA wants a string."""
    api = dict(_one(render("dev"), "Deployment", "vlmq-api"))
    api["spec"] = {**api["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, K8S_VERSION, strict=True)
    so = json.loads(json.dumps(_one(render("dev"), "ScaledObject", "vlmq-worker-gpu")))
    so["spec"]["triggers"][0]["metadata"]["listLength"] = 32
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, json.loads(KEDA_SCHEMA.read_text()))


def test_exactly_one_beat(objs: tuple[Obj, ...]) -> None:
    beats = [d for d in _deployments(objs).values() if _containers(d)[0].get("args", [None])[0] == "beat"]
    assert [b["metadata"]["name"] for b in beats] == ["vlmq-beat"]
    beat = beats[0]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}  # never two during a rollout
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objs if o["kind"] == "ScaledObject"}
    assert "vlmq-beat" not in scaled


def _cli_has(words: list[str]) -> bool:
    """Whether ``vlmq WORDS...`` names a command of the real CLI (options after the command skipped)."""
    group: Any = typer.main.get_command(app)
    for word in words:
        if word.startswith("-"):
            break
        sub = group.commands.get(word) if hasattr(group, "commands") else None
        if sub is None:
            return False
        group = sub
    return True


def test_every_container_has_probes_that_exist(objs: tuple[Obj, ...]) -> None:
    for name, d in _deployments(objs).items():
        for c in _containers(d):
            for kind in ("livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                assert probe, f"{name}/{c['name']} has no {kind}"
                if "exec" in probe:
                    cmd = probe["exec"]["command"]
                    assert cmd[:2] == ["vlmq", "probe"] and _cli_has(cmd[1:]), cmd
                    flag = "--live" if kind == "livenessProbe" else "--ready"
                    assert flag in cmd, f"{name}: {kind} runs {cmd}"
                else:
                    path = probe["httpGet"]["path"]
                    assert path == ("/livez" if kind == "livenessProbe" else "/healthz"), path


def test_the_api_serves_the_probed_paths() -> None:
    from api.routes import health  # the app includes its router; tests/integration/test_probe.py calls it

    assert {"/livez", "/healthz"} <= {getattr(r, "path", None) for r in health.router.routes}


def test_workers_outlast_their_drain(objs: tuple[Obj, ...]) -> None:
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    default = Settings().queue.drain_grace_seconds
    grace = float(config["data"].get("VLMQ_QUEUE__DRAIN_GRACE_SECONDS", default))
    assert grace == 25
    for name in ("vlmq-worker-prep", "vlmq-worker-gpu"):
        period = _deployments(objs)[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace + 10 <= period <= grace + 30, (name, period)


def test_the_migration_job_runs_the_real_command(objs: tuple[Obj, ...]) -> None:
    job = _one(objs, "Job", "vlmq-migrate")
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["db", "upgrade"] and _cli_has(c["args"])


def _queues(deployment: Obj) -> set[str]:
    args = _containers(deployment)[0]["args"]
    return set(worker_queues(args[args.index("--queues") + 1].split(",")))


def _scaled(objs: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    for so in (o for o in objs if o["kind"] == "ScaledObject"):
        target = _deployments(objs).get(so["spec"]["scaleTargetRef"]["name"])
        assert target is not None, f"{so['metadata']['name']} targets no Deployment of this overlay"
        yield so, target


def test_workers_scale_to_zero_on_every_queue_they_read(objs: tuple[Obj, ...]) -> None:
    targets = set()
    for so, target in _scaled(objs):
        targets.add(target["metadata"]["name"])
        assert so["spec"]["minReplicaCount"] == 0
        lists = {t["metadata"]["listName"] for t in so["spec"]["triggers"] if t["type"] == "redis"}
        assert lists == _queues(target), so["metadata"]["name"]  # the Celery queue names, every one
    assert targets == {"vlmq-worker-prep", "vlmq-worker-gpu"}


def test_gpu_workers_get_one_gpu_each() -> None:
    worker = _deployments(render("gpu"))["vlmq-worker-gpu"]
    [c] = _containers(worker)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VLMQ_MODEL__ENGINE"] == "vllm" and env["VLMQ_MODEL__TENSOR_PARALLEL_SIZE"] == "1"
    spec = worker["spec"]["template"]["spec"]
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_dev_runs_on_cpus_only() -> None:
    objs = render("dev")
    assert "nvidia.com/gpu" not in json.dumps(objs)
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    assert config["data"]["VLMQ_MODEL__ENGINE"] == "fake"


def test_every_reference_to_config_resolves_in_dev() -> None:
    """dev brings its own Secret; the gpu overlay expects the operator's vlmq-secrets."""
    objs = render("dev")
    names = {o["metadata"]["name"] for o in objs if o["kind"] in ("ConfigMap", "Secret")}
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                for ref in c.get("envFrom", []):
                    assert next(iter(ref.values()))["name"] in names, ref
