"""Live progress for a job: pages done and failed, rate, time left."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from api.cli.client import Client


def follow(client: Client, job_id: str, console: Console, timeout: float | None = None) -> dict[str, Any]:
    """Show a progress bar over the job's pages until the job is terminal; return the final status."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pages  [red]{task.fields[failed]} failed[/]  {task.fields[state]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"job {str(job_id)[:8]}", total=None, failed=0, state="queued")

        def update(job: dict[str, Any]) -> None:
            pages = job["page_counts"]
            done = pages["completed"] + pages["failed"]
            # Until prep has split the documents the page total is unknown: show an open bar.
            bar.update(
                task,
                total=pages["total"] or None,
                completed=done,
                failed=pages["failed"],
                state=job["status"],
            )

        return client.wait(job_id, on_update=update, timeout=timeout)
