"""Chaos tests: real PostgreSQL, Redis, S3 (moto) and vlmq processes, broken on purpose.

Marker ``chaos``. The long ones (a 30 s S3 outage, the 10,000-item load test) are also marked
``chaos_long`` and skipped unless ``VLMQ_CHAOS_ALL=1`` (``make chaos`` sets it); RELIABILITY.md has
every test's figures and command.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli.devstack import start_moto
from tests.chaos.stack import PgServer, Stack


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VLMQ_CHAOS_ALL") == "1":
        return
    skip = pytest.mark.skip(reason="long chaos test: run with VLMQ_CHAOS_ALL=1 (make chaos)")
    for item in items:
        if "chaos_long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def chaos_pg() -> Iterator[PgServer]:
    """PostgreSQL for chaos tests only: the machine's server is never restarted."""
    root = Path(tempfile.mkdtemp(prefix="vlmq-chaos-pg-"))
    pg = PgServer(root)
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def chaos_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, url = start_moto(tmp_path_factory.mktemp("chaos-moto"))
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        proc.stop()


@pytest.fixture
def stack(
    chaos_pg: PgServer, chaos_moto: int, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A fresh system; ``@pytest.mark.stack_env(VLMQ_X="...")`` adds settings for one test."""
    marker = request.node.get_closest_marker("stack_env")
    s = Stack(tmp_path, chaos_pg, chaos_moto, dict(marker.kwargs) if marker else None)
    try:
        s.start_all()
        yield s
    finally:
        s.stop()
