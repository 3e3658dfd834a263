"""Shared fixtures: real services for integration and end-to-end tests.

- Postgres: a fresh database per test session on the server at VLMQ_TEST_PG_ADMIN_URL
  (default: the local server, user postgres), migrated to head and dropped at the end.
- Redis: the server at VLMQ_TEST_REDIS_URL (default local), every key under a per-session prefix
  that is deleted at the end; nothing else on the server is touched.
- Where neither variable is set and no local server answers, the session starts embedded ones
  (the same servers ``vlmq dev up`` uses), so the suite runs on a bare machine too.
- S3: moto's S3 server, started by the session on a free port.
Tests never assume an empty server.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from jobs.config import Settings, get_settings

RUN_ID = uuid.uuid4().hex[:10]
METRICS_TOKEN = "test-metrics-token"
_started: list[Any] = []  # embedded servers this session started, stopped at exit


def _pg_answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _embedded_pg() -> tuple[Any, str]:
    from api.cli.devstack import start_postgres

    pg, _ = start_postgres(Path(tempfile.mkdtemp(prefix="vlmq-test-pg-")))
    return pg, str(pg.admin_url)


def _embedded_redis() -> tuple[Any, str]:
    from api.cli.devstack import start_redis

    return start_redis(Path(tempfile.mkdtemp(prefix="vlmq-test-redis-")))


def _server(
    env_var: str, local: str, answers: Callable[[str], bool], start: Callable[[], tuple[Any, str]]
) -> str:
    """``env_var`` if set ("embedded" forces an embedded server), else the local server, else embedded."""
    url = os.environ.get(env_var, "")
    if url and url != "embedded":
        return url
    if not url and answers(local):
        return local
    handle, started = start()
    _started.append(handle)
    return started


@functools.cache
def pg_admin() -> str:
    """The Postgres admin URL, found (or an embedded server started) on first use: unit tests, which
    use no service, start none."""
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    return _server("VLMQ_TEST_PG_ADMIN_URL", local, _pg_answers, _embedded_pg)


@functools.cache
def redis_url() -> str:
    return _server("VLMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", _redis_answers, _embedded_redis)


atexit.register(lambda: [s.stop() for s in reversed(_started)])


def _sqlalchemy_url(libpq_url: str, dbname: str) -> str:
    base, _, query = libpq_url.partition("?")
    base = base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}" + (f"?{query}" if query else "")


def create_database(name: str) -> str:
    with psycopg.connect(pg_admin(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _sqlalchemy_url(pg_admin(), name)


def drop_database(name: str) -> None:
    with psycopg.connect(pg_admin(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_database(name: str) -> Iterator[str]:
    """A new database at the schema's head, dropped on the way out."""
    from migrations import upgrade

    url = create_database(name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with migrated_database(f"vlmq_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"vlmq-test-{RUN_ID}:"
    yield prefix
    client = redis.Redis.from_url(redis_url())
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
    bucket = f"vlmq-test-{RUN_ID}"
    return {
        "VLMQ_DB__URL": pg_url,
        "VLMQ_REDIS__URL": redis_url(),
        "VLMQ_REDIS__KEY_PREFIX": redis_prefix,
        "VLMQ_S3__ENDPOINT_URL": s3_endpoint,
        "VLMQ_S3__BUCKET": bucket,
        "VLMQ_S3__ACCESS_KEY_ID": "testing",
        "VLMQ_S3__SECRET_ACCESS_KEY": "testing",
        "VLMQ_STATE_DIR": str(state),
        "VLMQ_API__KEYS": "test-key:tenant-a,other-key:tenant-b",
        "VLMQ_API__METRICS_TOKEN": METRICS_TOKEN,
        # Tests put their inputs anywhere in the bucket but the server's own prefixes; the security
        # tests attack the rule with these grants in force (tests/security).
        "VLMQ_INPUTS__GRANTS": json.dumps({"*": [f"s3://{bucket}/"]}),
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
