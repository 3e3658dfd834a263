"""``vlmq probe``: liveness and readiness checks for Kubernetes exec probes (deploy/k8s, docs/deploy.md).

Each command exits 0 with ``ok: ...`` on stdout, or 1 with ``vlmq probe: ...`` on stderr: one line
that says what failed, which Kubernetes keeps in the pod's events.

- live: the process turns (its liveness file is recent, workers.liveness). Touches no dependency, so a
  database outage does not restart every worker (and make GPU workers load their engine again).
- ready: it can work now: Postgres and the Redis broker answer within ``probe.timeout_seconds``, and a
  GPU worker's engine has loaded (its ``model.ready_file``, written by ``vlmq worker``, names a live
  process).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from jobs.config import Settings, get_settings


class ProbeFailed(Exception):
    """A probe's one-line reason."""


Check = Callable[[Settings], str]  # returns what was seen when all is well, raises ProbeFailed otherwise


def live_file_fresh(settings: Settings, max_age: float | None = None, now: float | None = None) -> str:
    path = settings.probe.live_file
    if not path:
        raise ProbeFailed("no liveness file configured (VLMQ_PROBE__LIVE_FILE)")
    limit = settings.probe.live_max_age_seconds if max_age is None else max_age
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except FileNotFoundError:
        raise ProbeFailed(f"liveness file {path} missing: not started yet, or not turning") from None
    if age > limit:
        raise ProbeFailed(f"liveness file {path} is {age:.0f} s old (limit {limit:.0f} s): stuck")
    return f"alive ({age:.0f} s ago)"


def beat_alive(settings: Settings, now: float | None = None) -> str:
    """Beat touches the file when it sends the sweep: allow three sweep intervals between touches."""
    limit = max(settings.probe.live_max_age_seconds, 3 * settings.queue.sweep_interval_seconds)
    return live_file_fresh(settings, limit, now)


def engine_loaded(settings: Settings) -> str:
    """The worker's ready file exists and names a running process (not one left by an earlier run)."""
    path = settings.model.ready_file
    if not path:
        return "no engine ready file configured"
    try:
        facts = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ProbeFailed(f"engine not loaded: ready file {path} missing") from None
    except ValueError as e:
        raise ProbeFailed(f"ready file {path} unreadable: {e}") from None
    pid = int(facts.get("pid", 0))
    if pid <= 0 or not _running(pid):
        raise ProbeFailed(f"ready file {path} names pid {pid}, which is not running: a stale file")
    return f"engine {facts.get('engine')} ({facts.get('model_id')}) loaded"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def database_answers(settings: Settings) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    from jobs.adapters.db import database_url

    url = make_url(database_url(settings)).set(drivername="postgresql")
    timeout = max(1, round(settings.probe.timeout_seconds))  # libpq takes whole seconds
    dsn = url.render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        raise ProbeFailed(f"postgres at {url.host}:{url.port or 5432}: {_first_line(e)}") from None
    return "postgres ok"


def broker_answers(settings: Settings) -> str:
    import redis

    from jobs.adapters.dispatch import broker_url

    t = settings.probe.timeout_seconds
    client = redis.Redis.from_url(broker_url(settings), socket_timeout=t, socket_connect_timeout=t)
    try:
        client.ping()
    except redis.RedisError as e:
        host = client.connection_pool.connection_kwargs.get("host")
        raise ProbeFailed(f"redis at {host}: {_first_line(e)}") from None
    finally:
        client.close()
    return "redis ok"


def http_ok(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # our own port, from settings
            return f"{url}: {r.status}"
    except urllib.error.HTTPError as e:
        raise ProbeFailed(f"{url}: {e.code} {_first_line(e.read().decode(errors='replace'))}") from None
    except OSError as e:
        raise ProbeFailed(f"{url}: {_first_line(e)}") from None


def _first_line(e: object) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def run_checks(settings: Settings, checks: list[Check]) -> str:
    """Every check in turn; the first failure stops (its reason is the probe's line)."""
    return "; ".join(check(settings) for check in checks)


def _exit_with(checks: list[Check]) -> None:
    try:
        line = run_checks(get_settings(), checks)
    except ProbeFailed as e:
        typer.echo(f"vlmq probe: {e}", err=True)
        raise typer.Exit(1) from None
    except RuntimeError as e:  # a setting missing (no database or broker URL)
        typer.echo(f"vlmq probe: {_first_line(e)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {line}")


Live = Annotated[bool, typer.Option("--live", help="Liveness: the process still turns (no dependency)")]
Ready = Annotated[bool, typer.Option("--ready", help="Readiness: dependencies answer, engine loaded")]


def _which(live: bool, ready: bool) -> None:
    if live == ready:
        raise typer.BadParameter("give exactly one of --live and --ready")


def register(app: typer.Typer) -> None:
    probe = typer.Typer(no_args_is_help=True, help="Liveness and readiness probes (Kubernetes exec probes).")
    app.add_typer(probe, name="probe")

    @probe.command("worker")
    def worker(live: Live = False, ready: Ready = False) -> None:
        """A worker: --live its liveness file is recent; --ready its engine (if any) loaded, Postgres and
        Redis answer."""
        _which(live, ready)
        _exit_with([live_file_fresh] if live else [engine_loaded, database_answers, broker_answers])

    @probe.command("beat")
    def beat(live: Live = False, ready: Ready = False) -> None:
        """Beat: --live it sent a message lately; --ready Postgres and Redis answer."""
        _which(live, ready)
        _exit_with([beat_alive] if live else [database_answers, broker_answers])

    @probe.command("api")
    def api(live: Live = False, ready: Ready = False) -> None:
        """The API on this host (VLMQ_API__PORT): --live GET /livez; --ready GET /healthz."""
        _which(live, ready)
        path = "/livez" if live else "/healthz"

        def check(s: Settings) -> str:
            return http_ok(f"http://127.0.0.1:{s.api.port}{path}", s.probe.timeout_seconds + 2)

        _exit_with([check])
