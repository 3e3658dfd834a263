"""`vlmq events JOB_ID`: a job's history, one event a line (GET /v1/jobs/{id}/events)."""

from __future__ import annotations

import typer


def events(job_id: str) -> None:
    """Print a job's history, oldest first: each status move (from -> to), submission, error, reopening."""
    from api.cli.client import Client
    from jobs.config import get_settings

    with Client.from_settings(get_settings()) as client:
        for e in client.events(job_id):
            typer.echo(line(e))


def line(e: dict[str, object]) -> str:
    """One event as a line: when, what, whose (job, or item and page), the move, the detail."""
    who = str(e["custom_id"]) + (f" p{e['page']}" if e.get("page") else "") if e.get("custom_id") else "job"
    move = f"{e.get('from_status') or '-'} -> {e['to_status']}" if e.get("to_status") else ""
    return f"{e['at']}  {e['kind']!s:<17} {who:<30} {move} {e.get('detail') or ''}".rstrip()


def register(app: typer.Typer) -> None:
    app.command()(events)
