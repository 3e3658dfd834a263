"""The embedded servers a newcomer gets: each really starts, answers, stops and frees its port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest
import redis

from api.cli.devstack import (
    DB_KEY,
    REDIS_KEY,
    S3_KEY,
    DevStack,
    DevStackRunning,
    ManagedProcess,
    check,
    free_port,
    read_dev_env,
    start_moto,
    start_postgres,
    start_redis,
    wait_for_port,
)
from jobs.config import Settings

SYSTEM_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _no_configured_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings() would read these from the environment; each test says itself what is configured.
    for key in (DB_KEY, REDIS_KEY, S3_KEY, "VLMQ_S3__ACCESS_KEY_ID", "VLMQ_S3__SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)


def _settings(**sections: dict[str, str]) -> Settings:
    return Settings(_env_file=None, **sections)  # type: ignore[call-arg, arg-type]


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's PID 1 may never reap the grandchildren we orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _s3_roundtrip(endpoint: str, access_key: str = "x", secret: str = "x") -> bytes:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=access_key, aws_secret_access_key=secret)  # fmt: skip
    try:
        s3.create_bucket(Bucket="vlmq-devstack")
        s3.put_object(Bucket="vlmq-devstack", Key="k", Body=b"data")
        return bytes(s3.get_object(Bucket="vlmq-devstack", Key="k")["Body"].read())
    finally:
        s3.close()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- helpers -------------------------------------------------------------------------------------


def test_wait_for_port_names_the_service_on_timeout() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match=rf"embedded Redis \(expected on 127\.0\.0\.1:{port}\)"):
        wait_for_port("127.0.0.1", port, timeout=0.3, service="embedded Redis")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        wait_for_port("127.0.0.1", port, timeout=5, service="a listener")


def test_managed_process_stops_its_whole_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    script = f"echo started; sleep 60 & echo $! > {child_pid}; wait"
    with ManagedProcess("sh", ["sh", "-c", script], tmp_path / "logs" / "sh.log") as proc:
        deadline = time.monotonic() + 10
        while not child_pid.exists() or not child_pid.read_text().strip():
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)
        assert proc.alive
    assert not proc.alive
    # The grandchild got the signal with the group; under load it may take a moment to go.
    grandchild, deadline = int(child_pid.read_text()), time.monotonic() + 10
    while _running(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived its group's stop"
        time.sleep(0.05)
    assert proc.log_tail().startswith("started")


def test_check_names_each_url_and_hides_passwords() -> None:
    db, rd, s3 = free_port(), free_port(), free_port()
    env = {
        DB_KEY: f"postgresql+psycopg://vlmq:hunter2@127.0.0.1:{db}/vlmq",
        REDIS_KEY: f"redis://127.0.0.1:{rd}/0",
        S3_KEY: f"http://127.0.0.1:{s3}",
        "VLMQ_S3__ACCESS_KEY_ID": "x",
        "VLMQ_S3__SECRET_ACCESS_KEY": "x",
    }
    problems = check(env)
    assert len(problems) == 3, problems
    assert f"PostgreSQL at postgresql+psycopg://vlmq:***@127.0.0.1:{db}/vlmq" in problems[0]
    assert f"Redis at redis://127.0.0.1:{rd}/0" in problems[1]
    assert f"S3 at http://127.0.0.1:{s3}" in problems[2]
    assert "hunter2" not in " ".join(problems)


def test_check_reports_servers_not_configured() -> None:
    problems = check({S3_KEY: f"http://127.0.0.1:{free_port()}"})
    assert DB_KEY in problems[0] and REDIS_KEY in problems[1]


# --- each server ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_redis(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() and client.set("k", "v") and client.get("k") == b"v"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.close()
        proc.stop()
    assert not proc.alive and not _listening(_port(url))
    assert (tmp_path / "logs" / "redis.log").exists()


@pytest.mark.slow
def test_moto_s3_server(tmp_path: Path) -> None:
    proc, url = start_moto(tmp_path)
    try:
        assert _s3_roundtrip(url) == b"data"
    finally:
        proc.stop()
    assert not proc.alive and not _listening(_port(url))


def _server_facts(url: str) -> tuple[str, str, str]:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('listen_addresses'),"
            " current_setting('unix_socket_directories')"
        ).fetchone()
    assert row is not None
    return row


@pytest.mark.slow
def test_embedded_postgres_keeps_its_data(tmp_path: Path) -> None:
    pg, url = start_postgres(tmp_path)
    try:
        assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:") and url.endswith("/vlmq")
        assert _server_facts(url) == ("vlmq", "127.0.0.1", "")  # TCP on loopback only, no Unix socket
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as an unprivileged account
            assert Path(f"/proc/{pg.pid}").stat().st_uid != 0
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (7)")
        with pytest.raises(RuntimeError, match="already running"):
            start_postgres(tmp_path)  # the same data directory, still in use
    finally:
        pg.stop()
    assert not pg.alive and not _listening(_port(url))

    pg, url = start_postgres(tmp_path)  # started again: no initdb, same data
    try:
        with psycopg.connect(_libpq(url)) as conn:
            assert conn.execute("SELECT x FROM t").fetchone() == (7,)
    finally:
        pg.stop()
    assert not _listening(_port(url))


# --- the stack -----------------------------------------------------------------------------------


def test_configured_servers_are_not_started(tmp_path: Path) -> None:
    settings = _settings(
        db={"url": SYSTEM_PG},
        redis={"url": "redis://127.0.0.1:6379/0"},
        s3={"endpoint_url": "http://127.0.0.1:9"},
    )
    with DevStack(settings, tmp_path) as stack:
        assert stack.start() == {}
    assert not (tmp_path / "dev.env").exists() and not (tmp_path / "pg").exists()


def _system_pg_answers() -> bool:
    try:
        psycopg.connect(_libpq(SYSTEM_PG), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _system_pg_answers(), reason="no PostgreSQL on 127.0.0.1:5432")
def test_stack_uses_the_configured_postgres(tmp_path: Path) -> None:
    with DevStack(_settings(db={"url": SYSTEM_PG}), tmp_path) as stack:
        env = stack.start()
        assert DB_KEY not in env and not (tmp_path / "pg").exists()
        assert set(env) == {REDIS_KEY, S3_KEY, "VLMQ_S3__ACCESS_KEY_ID", "VLMQ_S3__SECRET_ACCESS_KEY"}
        recorded, owner = read_dev_env(tmp_path / "dev.env")
        assert recorded == env and owner == os.getpid()
        assert stack.check() == []
        ports = [_port(env[REDIS_KEY]), _port(env[S3_KEY])]
    assert not (tmp_path / "dev.env").exists()
    assert not any(_listening(p) for p in ports)


@pytest.mark.slow
def test_stack_starts_everything_on_a_bare_machine(tmp_path: Path) -> None:
    with DevStack(_settings(), tmp_path) as stack:
        env = stack.start()
        assert {DB_KEY, REDIS_KEY, S3_KEY} <= set(env)
        assert stack.check() == []
        assert _s3_roundtrip(env[S3_KEY], env["VLMQ_S3__ACCESS_KEY_ID"], env["VLMQ_S3__SECRET_ACCESS_KEY"])
        ports = [_port(env[k]) for k in (DB_KEY, REDIS_KEY, S3_KEY)]
    assert not (tmp_path / "dev.env").exists()
    assert not any(_listening(p) for p in ports)


@pytest.mark.slow
def test_stale_dev_env_is_replaced(tmp_path: Path) -> None:
    """Settings read the dev.env of a stack that was killed: its URLs are dead, so they start anew."""
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    (tmp_path / "dev.env").write_text(
        f"# written by the vlmq dev stack of pid {_dead_pid()}\n{REDIS_KEY}={dead_url}\n"
    )
    settings = _settings(
        db={"url": SYSTEM_PG}, redis={"url": dead_url}, s3={"endpoint_url": "http://127.0.0.1:9"}
    )
    with DevStack(settings, tmp_path) as stack:
        env = stack.start()
        assert set(env) == {REDIS_KEY} and env[REDIS_KEY] != dead_url
        assert read_dev_env(tmp_path / "dev.env") == (env, os.getpid())
    assert not (tmp_path / "dev.env").exists()


def test_a_live_stacks_dev_env_is_left_alone(tmp_path: Path) -> None:
    text = f"# written by the vlmq dev stack of pid {os.getppid()}\n{REDIS_KEY}=redis://127.0.0.1:1/0\n"
    (tmp_path / "dev.env").write_text(text)
    with DevStack(_settings(), tmp_path) as stack, pytest.raises(DevStackRunning) as info:
        stack.start()
    assert info.value.env == {REDIS_KEY: "redis://127.0.0.1:1/0"} and info.value.pid == os.getppid()
    assert (tmp_path / "dev.env").read_text() == text
