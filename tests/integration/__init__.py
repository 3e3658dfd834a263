import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from api.app import create_app
from api.cli.devstack import free_port
from jobs.config import Settings
from jobs.service import JobService


def service_of(client: TestClient) -> JobService:
    """The service behind the in-process API (conftest's ``client``)."""
    service: JobService = client.app.state.service  # type: ignore[attr-defined]
    return service


def with_limits(settings: Settings, **limits: int) -> Settings:
    """``settings`` with some of its ``limits`` (``VLMQ_LIMITS__*``) changed, for an app built in a test."""
    return settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})


def with_section(settings: Settings, section: str, **values: object) -> Settings:
    """``settings`` with some values of one section (``inputs``, ``api``, ...) changed."""
    changed = getattr(settings, section).model_copy(update=values)
    return settings.model_copy(update={section: changed})


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[int]:
    """The real API on a free port (uvicorn in a thread, as ``vlmq api`` serves it); yields the port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def age_job(service: JobService, job_id: uuid.UUID, days: int = 2) -> None:
    """As if the job was submitted ``days`` ago: its expiry window (one day by default) is over. Expiry is
    compared with Postgres' now(), so the job's times move, not the clock."""
    with service.sessions() as s, s.begin():
        s.execute(
            text(
                "UPDATE jobs SET created_at = created_at - make_interval(days => :d),"
                " expires_at = expires_at - make_interval(days => :d) WHERE id = :j"
            ),
            {"d": days, "j": job_id},
        )


def db_now(service: JobService) -> datetime:
    """Postgres' now(): the clock expiry windows are measured by."""
    with service.sessions() as s:
        now = s.scalar(select(func.now()))
    assert now is not None
    return now
