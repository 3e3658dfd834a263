"""`vlmq reprocess` and `vlmq reprocess-runs`: operator commands that talk to Postgres and Redis
directly (like `vlmq db upgrade`), not through a tenant's API key: a run may span tenants."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from jobs.config import get_settings

if TYPE_CHECKING:
    from jobs.reprocessing.reprocessor import Reprocessor, RunReport

console = Console(stderr=True)  # progress and notes; the report alone goes to stdout


def _reprocessor() -> Reprocessor:
    # Imported here: the other vlmq commands start without the database layer.
    from jobs.adapters.dispatch import CeleryDispatcher
    from jobs.reprocessing.reprocessor import Reprocessor
    from jobs.service import build_service

    settings = get_settings()
    return Reprocessor(build_service(settings), CeleryDispatcher(settings, low=True))


def _print(report: RunReport) -> None:
    # Plain JSON on stdout (no wrapping, no colours): scripts and cron mails read it.
    sys.stdout.write(report.model_dump_json(indent=2) + "\n")


def reprocess(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be selected; change nothing")
    ] = False,
    failed: Annotated[bool, typer.Option(help="Retry failed pages and sources")] = True,
    outdated: Annotated[
        bool, typer.Option(help="Recompute results made by another model, revision or prompt version")
    ] = True,
    job: Annotated[list[uuid.UUID] | None, typer.Option(help="Only this job (repeatable)")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's jobs")] = None,
    since: Annotated[datetime | None, typer.Option(help="Jobs submitted at or after (UTC)")] = None,
    until: Annotated[datetime | None, typer.Option(help="Jobs submitted before (UTC)")] = None,
    custom_id: Annotated[
        list[str] | None, typer.Option(help="Only items with this custom_id (repeatable)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many items (default: settings)")] = None,
    key: Annotated[
        str | None, typer.Option(help="Dedupe key (default: the rules and today's date: a rerun is a no-op)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run until every selected item is done")] = False,
) -> None:
    """Select items by rule and enqueue them at low priority, once; print the run's report."""
    from jobs.reprocessing.reprocessor import cli_key
    from jobs.reprocessing.selection import Rules

    rules = Rules(
        failed=failed, outdated=outdated, job_ids=tuple(job or ()), tenant=tenant,
        since=_utc(since), until=_utc(until), custom_ids=tuple(custom_id or ()),
        limit=limit or get_settings().reprocess.max_items,
    )  # fmt: skip
    rp = _reprocessor()
    if dry_run:
        _print(rp.preview(rules))
        return
    report, created = rp.start(rules, key or cli_key(rules, datetime.now(UTC)), "cli")
    if not created:
        console.print(f"[yellow]run {report.id} already exists for this key; nothing enqueued[/]")
    while wait and report.status != "completed" and report.id is not None:
        time.sleep(2)
        report = rp.report(report.id)
        console.print(
            f"{report.progress:.0%} of {report.selected}: {report.pending} pending", highlight=False
        )
    _print(report)


def reprocess_runs(
    run_id: Annotated[uuid.UUID | None, typer.Argument(help="One run (default: the latest runs)")] = None,
    last: Annotated[int, typer.Option(help="How many recent runs")] = 5,
) -> None:
    """Print reprocessing runs' reports: selected, changed, unchanged, failed, pending."""
    rp = _reprocessor()
    for report in [rp.report(run_id)] if run_id else rp.recent(last):
        _print(report)


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def register(app: typer.Typer) -> None:
    app.command()(reprocess)
    app.command("reprocess-runs")(reprocess_runs)
