"""Shared fixtures: real services for integration and end-to-end tests.

- Postgres: a fresh database per test session on the server at VLMQ_TEST_PG_ADMIN_URL
  (default: the local server, user postgres), migrated to head and dropped at the end.
- Redis: the server at VLMQ_TEST_REDIS_URL (default local), every key under a per-session prefix
  that is deleted at the end; nothing else on the server is touched.
- S3: moto's S3 server, started by the session on a free port.
Tests never assume an empty server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from jobs.config import Settings, get_settings

PG_ADMIN = os.environ.get("VLMQ_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("VLMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


def _sqlalchemy_url(libpq_url: str, dbname: str) -> str:
    base = libpq_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def create_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _sqlalchemy_url(PG_ADMIN, name)


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    from migrations import upgrade

    name = f"vlmq_test_{RUN_ID}"
    url = create_database(name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"vlmq-test-{RUN_ID}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from api.cli.devstack import start_moto

    proc, url = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def service_env(
    pg_url: str, redis_prefix: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment variables that point a vlmq process at this session's services."""
    state = tmp_path_factory.mktemp("state")
    return {
        "VLMQ_DB__URL": pg_url,
        "VLMQ_REDIS__URL": REDIS_URL,
        "VLMQ_REDIS__KEY_PREFIX": redis_prefix,
        "VLMQ_S3__ENDPOINT_URL": s3_endpoint,
        "VLMQ_S3__BUCKET": f"vlmq-test-{RUN_ID}",
        "VLMQ_S3__ACCESS_KEY_ID": "testing",
        "VLMQ_S3__SECRET_ACCESS_KEY": "testing",
        "VLMQ_STATE_DIR": str(state),
        "VLMQ_API__KEYS": "test-key:tenant-a,other-key:tenant-b",
    }


@pytest.fixture
def settings(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for k, v in service_env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh random-weight model, built by this session."""
    from workers.inference.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-glm4v")


@pytest.fixture(scope="session")
def taught_model_dir() -> Path:
    """The tiny model taught to answer pages 1-2 of tests.fixtures.models.taught_pdf() (cached)."""
    from tests.fixtures.models import taught_model

    return taught_model()
