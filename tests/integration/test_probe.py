"""`vlmq probe` against the real services: readiness fails for the dependency that is down (a wrong
port), the API's /livez and /healthz answer the probe, and a real worker process keeps its liveness
file fresh while it runs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.cli.devstack import free_port
from api.cli.probe import ProbeFailed, broker_answers, database_answers, run_checks
from api.cli.servers import ManagedProcess, wait_until
from jobs.config import Settings, get_settings
from tests.conftest import pg_admin, redis_url
from tests.integration import serving, with_section


def _services() -> Settings:
    """Only Postgres and Redis: readiness touches nothing else."""
    db = pg_admin().replace("postgresql://", "postgresql+psycopg://", 1)
    s = Settings()
    return with_section(with_section(s, "db", url=db), "redis", url=redis_url())


def _port_of_nothing(url: str) -> str:
    """``url`` on 127.0.0.1, at a port where nothing listens."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    moved = f"{netloc[0]}{netloc[1]}127.0.0.1:{free_port()}"
    return urlunsplit(parts._replace(netloc=moved))


def test_ready_when_postgres_and_redis_answer() -> None:
    assert run_checks(_services(), [database_answers, broker_answers]) == "postgres ok; redis ok"


def test_not_ready_when_the_database_is_down() -> None:
    s = _services()
    down = with_section(s, "db", url=_port_of_nothing(s.db.url or ""))
    with pytest.raises(ProbeFailed, match=r"^postgres at 127\.0\.0\.1:\d+: .*refused"):
        run_checks(down, [database_answers, broker_answers])


def test_not_ready_when_the_broker_is_down() -> None:
    s = _services()
    down = with_section(s, "redis", url=_port_of_nothing(s.redis.url or ""))
    with pytest.raises(ProbeFailed, match=r"^redis at 127\.0\.0\.1: .*refused"):
        run_checks(down, [database_answers, broker_answers])


@pytest.fixture
def probe_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    s = _services()
    monkeypatch.setenv("VLMQ_DB__URL", s.db.url or "")
    monkeypatch.setenv("VLMQ_REDIS__URL", s.redis.url or "")
    ready = tmp_path / "engine-ready.json"
    monkeypatch.setenv("VLMQ_MODEL__READY_FILE", str(ready))
    get_settings.cache_clear()
    yield ready
    get_settings.cache_clear()


def test_worker_readiness_command(probe_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = CliRunner().invoke(app, ["probe", "worker", "--ready"])
    assert r.exit_code == 1 and "engine not loaded" in r.output, r.output  # first: the engine
    probe_env.write_text(f'{{"engine": "fake", "model_id": "m", "pid": {os.getpid()}}}')
    r = CliRunner().invoke(app, ["probe", "worker", "--ready"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "ok: engine fake (m) loaded; postgres ok; redis ok"
    monkeypatch.setenv("VLMQ_DB__URL", _port_of_nothing(get_settings().db.url or ""))
    get_settings.cache_clear()
    r = CliRunner().invoke(app, ["probe", "worker", "--ready"])
    assert r.exit_code == 1 and r.output.startswith("vlmq probe: postgres at 127.0.0.1:"), r.output
    assert len(r.output.strip().splitlines()) == 1


def test_api_probes(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(settings) as port:
        monkeypatch.setenv("VLMQ_API__PORT", str(port))
        get_settings.cache_clear()
        for flag in ("--live", "--ready"):
            r = CliRunner().invoke(app, ["probe", "api", flag])
            assert r.exit_code == 0, r.output
        assert "/livez: 200" in CliRunner().invoke(app, ["probe", "api", "--live"]).output
    r = CliRunner().invoke(app, ["probe", "api", "--live"])  # the server is gone
    assert r.exit_code == 1 and "/livez" in r.output, r.output


def test_a_running_worker_keeps_its_liveness_file_fresh(
    service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real wiring: `vlmq worker` adds the Pulse bootstep to Celery's consumer. Its only queue is one
    of its own, so it takes no message of another test."""
    alive = tmp_path / "alive"
    env = {**os.environ, **service_env, "VLMQ_PROBE__LIVE_FILE": str(alive)}
    env |= {"VLMQ_PROBE__LIVE_INTERVAL_SECONDS": "0.5", "VLMQ_REDIS__KEY_PREFIX": f"probe-{free_port()}:"}
    cmd = [sys.executable, "-m", "api.cli", "worker", "--queues", "prep", "--concurrency", "1"]
    with ManagedProcess("worker", cmd, tmp_path / "worker.log", env=env) as worker:
        wait_until(lambda: alive.exists() or not worker.alive, "the liveness file", 90)
        assert worker.alive, worker.log_tail()
        first = alive.stat().st_mtime
        wait_until(lambda: alive.stat().st_mtime > first, "a second touch", 10)
        for k in ("VLMQ_PROBE__LIVE_FILE", "VLMQ_DB__URL", "VLMQ_REDIS__URL"):
            monkeypatch.setenv(k, env[k])
        get_settings.cache_clear()
        r = CliRunner().invoke(app, ["probe", "worker", "--live"])
        assert r.exit_code == 0, r.output
    stopped = alive.stat().st_mtime
    time.sleep(1.5)  # a stopped worker touches nothing more
    assert alive.stat().st_mtime == stopped
    get_settings.cache_clear()
