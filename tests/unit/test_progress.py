"""Progress arithmetic and rendering of `vlmq watch`, and the Markdown results, on given statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from api.cli.progress import JobProgress, forecast_text, listing_text, outcomes_text, pace
from api.cli.render import to_markdown

T0 = "2026-01-01T00:00:00Z"


def _job(status: str, pages: dict[str, int], completed_at: str | None = None) -> dict[str, object]:
    docs = {"total": 1, "completed": int(status == "completed"), "failed": 0}
    return {
        "status": status,
        "started_at": T0,
        "completed_at": completed_at,
        "request_counts": docs,
        "page_counts": pages,
    }


def test_pace_rate_and_time_left() -> None:
    now = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    p = pace({"total": 10, "completed": 3, "failed": 2}, _job("running", {}), now)
    assert (p.rate, p.eta_s) == (0.5, 10.0)
    assert (p.rate_text(), p.eta_text()) == ("0.50/s", "0:00:10")
    none_done = pace({"total": 10, "completed": 0, "failed": 0}, _job("running", {}), now)
    assert (none_done.rate_text(), none_done.eta_text()) == ("-/s", "-:--:--")


def test_pace_of_a_finished_job_stops_at_its_end() -> None:
    job = _job("completed", {}, completed_at="2026-01-01T00:00:04Z")
    p = pace({"total": 8, "completed": 7, "failed": 1}, job, datetime(2030, 1, 1, tzinfo=UTC))
    assert (p.rate, p.eta_s) == (2.0, 0.0)


def test_bars_show_done_failed_and_state() -> None:
    console = Console(record=True, width=150, force_terminal=False)
    with JobProgress(console, "job-1") as bars:
        bars.update(_job("running", {"total": 0, "completed": 0, "failed": 0}))
        bars.update(_job("completed", {"total": 4, "completed": 3, "failed": 1}, "2026-01-01T00:00:02Z"))
    text = console.export_text()
    pages = next(line for line in text.splitlines() if "pages" in line)
    assert "4/4" in pages and "1 failed" in pages and "2.00/s" in pages and "completed" in pages


def test_bars_count_cancelled_and_expired_as_done_but_not_as_failed() -> None:
    pages = {"total": 6, "completed": 2, "failed": 1, "cancelled": 2, "expired": 1}
    assert outcomes_text(pages) == "1 failed, 2 cancelled, 1 expired"
    assert outcomes_text({"total": 1, "completed": 1, "failed": 0}) == "0 failed"  # an older server's
    job = _job("cancelled", pages, "2026-01-01T00:00:02Z")
    assert pace(pages, job, datetime(2030, 1, 1, tzinfo=UTC)).rate == 3.0
    console = Console(record=True, width=150, force_terminal=False)
    with JobProgress(console, "job-1") as bars:
        bars.update(job)
    line = next(x for x in console.export_text().splitlines() if "pages" in x)
    assert "6/6" in line and "1 failed, 2 cancelled, 1 expired" in line


NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)


def _forecasting(started_at: str | None, starts_at: str, finishes_at: str) -> dict[str, object]:
    job = _job("running" if started_at else "queued", {"total": 0, "completed": 0, "failed": 0})
    forecast = {"starts_at": starts_at, "finishes_at": finishes_at, "pages_per_second": 0.5}
    return {**job, "started_at": started_at, "forecast": forecast}


def test_forecast_before_the_start_says_when_it_starts_and_ends() -> None:
    job = _forecasting(None, "2026-01-01T00:12:00Z", "2026-01-01T00:24:10Z")
    assert forecast_text(job, NOW) == "starts in ~2 min, done in ~14 min"
    soon = _forecasting(None, "2026-01-01T00:10:20Z", "2026-01-01T03:10:00Z")
    assert forecast_text(soon, NOW) == "starts soon, done in ~3.0 h"


def test_forecast_of_a_running_job_says_when_it_ends() -> None:
    job = _forecasting(T0, T0, "2026-01-01T00:24:00Z")
    assert forecast_text(job, NOW) == "done in ~14 min"
    late = _forecasting(T0, T0, "2026-01-01T00:09:00Z")  # past already: the poll is behind
    assert forecast_text(late, NOW) == "done soon"


def test_no_forecast_shows_nothing() -> None:
    assert forecast_text(_job("completed", {}), NOW) == ""  # an older server: no field
    assert forecast_text({**_job("running", {}), "forecast": None}, NOW) == ""


def test_bars_show_the_forecast_on_the_pages_line() -> None:
    job = _forecasting(T0, T0, (datetime.now(UTC) + timedelta(minutes=14, seconds=10)).isoformat())
    console = Console(record=True, width=200, force_terminal=False)
    with JobProgress(console, "job-1") as bars:
        bars.update(job)
    lines = console.export_text().splitlines()
    assert "done in ~14 min" in next(x for x in lines if "pages" in x)
    assert "done in" not in next(x for x in lines if "documents" in x)


def test_markdown_folds_reasoning_and_shows_errors() -> None:
    rows = [
        {"custom_id": "a.pdf", "page": 1, "status": "succeeded", "answer": "Hi", "reasoning": "Because."},
        {
            "custom_id": "a.pdf",
            "page": 2,
            "status": "failed",
            "error": {"code": "engine_error", "message": "x"},
        },
        {"custom_id": "b.png", "page": None, "status": "pending"},
    ]
    md = to_markdown("J", rows)
    assert md.startswith("# Job J\n\n## a.pdf\n\n### Page 1\n\nHi\n\n<details><summary>Reasoning</summary>")
    assert "### Page 2\n\n> **Error `engine_error`**: x" in md
    assert "## b.png\n\n### Document\n\n_pending_" in md


def test_a_listing_job_shows_its_documents_open_ended_with_what_was_found() -> None:
    listing = {"kind": "prefix", "uri": "s3://c/**", "status": "listing", "discovered": 12000, "skipped": 300}
    job = {**_job("running", {"total": 20, "completed": 5, "failed": 0}), "listing": {**listing, "pages": 12}}
    job["request_counts"] = {"total": 11700, "completed": 5, "failed": 0}
    console = Console(record=True, width=200, force_terminal=False)
    with JobProgress(console, "job-1") as bars:
        bars.update(job)
    docs = next(x for x in console.export_text().splitlines() if "documents" in x)
    assert "listing: 12,000 found, 300 skipped" in docs and "/11700" not in docs  # the total still grows
    assert (
        listing_text({**job, "listing": {**listing, "status": "done", "skipped": 0}}) == "done: 12,000 found"
    )
    assert listing_text(_job("running", {})) == ""
