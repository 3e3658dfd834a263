"""Fixtures of the integration tests: a database of its own whose clock a test may move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from jobs.adapters.db import session_factory
from jobs.config import Settings
from jobs.service import JobService, build_service
from tests.conftest import RUN_ID, migrated_database
from tests.fakes import MemoryDispatcher, MemoryStore
from tests.integration import with_section
from workers.context import WorkerContext


@pytest.fixture(scope="module")
def clock_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database for one test module: moving its clock touches no other test."""
    with migrated_database(f"vlmq_test_{RUN_ID}_{request.module.__name__.rsplit('.', 1)[-1]}") as url:
        yield url


@pytest.fixture
def simulated(settings: Settings, clock_db: str) -> Iterator[Settings]:
    """Settings on the module's own database, with the clock simulated; its offset reset afterwards."""
    db = settings.db.model_copy(update={"url": clock_db})
    moved = with_section(settings.model_copy(update={"db": db}), "clock", simulated=True)
    yield moved
    with session_factory(moved)() as s, s.begin():
        s.execute(text("DELETE FROM vlmq_clock"))


@pytest.fixture
def ctx(settings: Settings) -> WorkerContext:
    """A worker's context on the session's services (what a prep or GPU task is handed)."""
    service = build_service(settings)
    return WorkerContext(settings, service, service.store)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real API in process, on the session's services."""
    with TestClient(create_app(settings)) as c:
        yield c


def service_on(settings: Settings) -> JobService:
    """The service on ``settings``' database, with S3 and the broker in memory (no worker runs)."""
    return JobService(
        session_factory(settings), MemoryStore(settings.s3.bucket), MemoryDispatcher(), settings
    )
