"""The embedded servers a newcomer gets: each really starts, answers, and stops."""

from __future__ import annotations

import socket
from pathlib import Path

import boto3
import psycopg
import pytest
import redis

from api.cli.devstack import DevStack, start_moto, start_postgres, start_redis
from jobs.config import Settings

pytestmark = pytest.mark.slow


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_redis(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() and client.set("k", "v") and client.get("k") == b"v"
    finally:
        client.close()
        proc.stop()
    assert not _port_open(int(url.rsplit(":", 1)[1].split("/")[0]))


def test_moto_s3_server(tmp_path: Path) -> None:
    proc, url = start_moto(tmp_path)
    try:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        s3.create_bucket(Bucket="vlmq-devstack")
        s3.put_object(Bucket="vlmq-devstack", Key="k", Body=b"data")
        assert s3.get_object(Bucket="vlmq-devstack", Key="k")["Body"].read() == b"data"
    finally:
        proc.stop()
    assert not proc.alive


def test_embedded_postgres_keeps_its_data(tmp_path: Path) -> None:
    pg, url = start_postgres(tmp_path)
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (7)")
    finally:
        pg.stop()
    pg, url = start_postgres(tmp_path)  # the same data directory, started again
    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("SELECT x FROM t").fetchone()
        assert row is not None and row[0] == 7
    finally:
        pg.stop()


def test_configured_servers_are_not_started(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        db={"url": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"},
        redis={"url": "redis://127.0.0.1:6379/0"},
        s3={"endpoint_url": "http://127.0.0.1:9"},
    )
    with DevStack(settings, tmp_path) as stack:
        assert stack.start() == {}
    assert not (tmp_path / "dev.env").exists()
