"""Live progress for a job (``vlmq submit --wait``, ``vlmq watch``): documents and pages done and how
many failed, were cancelled or expired (the API's counts, jobs.status.Outcome), the rate and the time
left, as rich progress bars fed by the job's status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from api.cli.client import TERMINAL, Client
from jobs.schemas import Counts


@dataclass(frozen=True)
class Pace:
    rate: float | None  # done per second since the job started; None before anything is done
    eta_s: float | None  # seconds left at that rate; None when unknown

    def rate_text(self) -> str:
        return "-/s" if self.rate is None else f"{self.rate:.2f}/s"

    def eta_text(self) -> str:
        if self.eta_s is None:
            return "-:--:--"
        s = round(self.eta_s)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def pace(counts: dict[str, int], job: dict[str, Any], now: datetime | None = None) -> Pace:
    """Rate over the job's running time (up to its end, when it has ended) and the time left at it."""
    started = _time(job.get("started_at"))
    end = _time(job.get("completed_at")) or now or datetime.now(UTC)
    c = Counts.model_validate(counts)
    if started is None or c.finished == 0:
        return Pace(None, None)
    elapsed = max((end - started).total_seconds(), 1e-3)
    rate = c.finished / elapsed
    left = max(c.total - c.finished, 0)
    return Pace(rate, 0.0 if job["status"] in TERMINAL else left / rate)


def forecast_text(job: dict[str, Any], now: datetime) -> str:
    """The server's forecast in words: "starts in ~2 min, done in ~14 min" before the job started,
    "done in ~14 min" after; empty when it has none (finished, or no recent pace to estimate from)."""
    f = job.get("forecast") or {}
    starts, finishes = _time(f.get("starts_at")), _time(f.get("finishes_at"))
    done = f"done {_within(finishes - now)}" if finishes is not None else ""
    if job.get("started_at") is None and starts is not None:
        return ", ".join(x for x in (f"starts {_within(starts - now)}", done) if x)
    return done


def _within(left: timedelta) -> str:
    """Time left in words: whole minutes (a forecast is no more exact), hours past 90 minutes, and
    "soon" under a minute, a time already past included (a forecast is only as fresh as its poll)."""
    minutes = round(left.total_seconds() / 60)
    if minutes < 1:
        return "soon"
    return f"in ~{minutes} min" if minutes <= 90 else f"in ~{minutes / 60:.1f} h"


def outcomes_text(counts: dict[str, int]) -> str:
    """The failed count, and the cancelled and expired ones when there are any: "2 failed, 1 cancelled"."""
    c = Counts.model_validate(counts)  # a server without cancelled/expired counts: zero
    others = [f"{n} {name}" for name, n in (("cancelled", c.cancelled), ("expired", c.expired)) if n]
    return ", ".join([f"{c.failed} failed", *others])


def listing_text(job: dict[str, Any]) -> str:
    """A job submitted as a source: how far its listing is ("listing: 12,000 found, 300 skipped")."""
    li = job.get("listing")
    if not li:
        return ""
    skipped = f", {li['skipped']:,} skipped" if li["skipped"] else ""
    error = f" ({li['error']})" if li.get("error") else ""
    return f"{li['status']}: {li['discovered']:,} found{skipped}{error}"


class JobProgress:
    """Two bars: the submitted documents (request_counts) and their pages (page_counts)."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:>9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[outcomes]}[/]"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[state]}"),
            TextColumn("{task.fields[forecast]}"),
            console=console,
            transient=False,
        )
        fields: dict[str, Any] = {
            "outcomes": "0 failed",
            "rate": "-/s",
            "eta": "-:--:--",
            "state": "queued",
            "forecast": "",
        }
        self.console, self.job_id = console, job_id
        self.docs: TaskID = self.progress.add_task("documents", total=None, **fields)
        self.pages: TaskID = self.progress.add_task("pages", total=None, **fields)

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, job: dict[str, Any]) -> None:
        self.progress.update(self.pages, forecast=forecast_text(job, datetime.now(UTC)))
        listing = job.get("listing") or {}
        growing = listing.get("status") == "listing"  # the documents' total is not known yet either
        for task, counts in ((self.docs, job["request_counts"]), (self.pages, job["page_counts"])):
            p = pace(counts, job)
            # Until prep has split the documents the page total is unknown: an open bar.
            self.progress.update(
                task,
                total=(counts["total"] or None) if not growing else None,
                completed=Counts.model_validate(counts).finished,
                outcomes=outcomes_text(counts),
                rate=p.rate_text(),
                eta=p.eta_text(),
                state=job["status"]
                if task == self.pages
                else " ".join(x for x in (job["status"], listing_text(job)) if x),
            )


def follow(
    client: Client, job_id: str, console: Console, timeout: float | None = None, poll: float = 0.5
) -> dict[str, Any]:
    """Show the bars until the job is terminal; return its final status."""
    with JobProgress(console, job_id) as bars:
        return client.wait(job_id, on_update=bars.update, poll=poll, timeout=timeout)
