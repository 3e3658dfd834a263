"""Streaming prep through a whole system (real PostgreSQL, Redis, moto's S3 behind a switchable proxy,
the API, prep and inference workers and beat as processes; the fake engine): multi-page PDFs with
``batch_size`` 2, so each PDF's pages reach the GPU worker two at a time while the rest are rendered.

Whatever happens mid-stream, each page ends with exactly one unit and at most one current result
(RELIABILITY.md, *Streaming prep*): a plain run, a cancel, S3 going down, a page that cannot be
rendered, and the prep process killed. One system serves the module's tests; each makes its own PDF.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from api.cli.devstack import wait_until
from jobs.config import MediaSettings
from tests.chaos.checks import result_lines
from tests.chaos.stack import AUTH, PgServer, Stack
from tests.fixtures.make_fixtures import text_pdf

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SLOW_SIDE = 2500  # ~50 ms a page here: a 40-page PDF renders for seconds, time enough to break things
NONE = {"total": 0, "completed": 0, "failed": 0, "cancelled": 0, "expired": 0}  # a job's counts, all zero
ENV = {"VLMQ_LIMITS__BATCH_SIZE": "2", "VLMQ_MODEL__FAKE_LATENCY_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def stack(chaos_pg: PgServer, chaos_moto: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("streaming"), chaos_pg, chaos_moto, ENV)
    try:
        s.start_all()
        yield s
    finally:
        s.stop()


def _rows(stack: Stack, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            return [r._asdict() for r in c.execute(text(sql), params)]
    finally:
        engine.dispose()


def _submit(stack: Stack, pdf: bytes, side: int = 64) -> tuple[str, str]:
    """(job id, the source's item id) of a one-PDF job rendered at ``side`` pixels."""
    uri = stack.put(f"in/{hashlib.sha256(pdf).hexdigest()[:12]}.pdf", pdf)
    job_id = stack.submit([uri], options={"longest_side": side})["id"]
    (src,) = _rows(stack, "SELECT id FROM items WHERE job_id = :j AND parent_id IS NULL", j=uuid.UUID(job_id))
    return job_id, str(src["id"])


def _units(stack: Stack, source: str) -> list[dict[str, Any]]:
    q = """SELECT u.page, u.status, count(r.id) AS results, count(r.id) FILTER (WHERE r.is_current) AS current
           FROM items u LEFT JOIN results r ON r.item_id = u.id
           WHERE u.parent_id = :s GROUP BY u.id ORDER BY u.page"""
    return _rows(stack, q, s=uuid.UUID(source))


def _source(stack: Stack, source: str) -> dict[str, Any]:
    q = "SELECT status, attempts, page_count, error_code, error_message FROM items WHERE id = :s"
    (row,) = _rows(stack, q, s=uuid.UUID(source))
    return row


def _mid_stream(stack: Stack, source: str, units: int = 2) -> None:
    """Until ``units`` pages are recorded while the source is still being rendered."""
    wait_until(lambda: len(_units(stack, source)) >= units, "the first pages recorded", 120)
    assert _source(stack, source)["status"] == "preparing", "prep finished first: make the PDF longer"


def _one_result_per_page(stack: Stack, source: str, pages: int) -> None:
    units = _units(stack, source)
    assert [u["page"] for u in units] == list(range(1, pages + 1))  # one unit per page: none twice
    assert all((u["status"], u["results"], u["current"]) == ("succeeded", 1, 1) for u in units), units


def test_every_page_gets_one_unit_and_one_result_and_the_first_are_inferred_while_prep_renders(
    stack: Stack,
) -> None:
    job_id, source = _submit(stack, text_pdf(30, "plain"), SLOW_SIDE)
    job, _ = stack.wait_terminal(job_id)
    assert job["status"] == "completed" and job["page_counts"] == {**NONE, "total": 30, "completed": 30}
    _one_result_per_page(stack, source, 30)
    assert _source(stack, source)["status"] == "succeeded" and _source(stack, source)["page_count"] == 30
    lines = result_lines(stack, job_id)
    assert [x["page"] for x in lines] == list(range(1, 31)) and {x["status"] for x in lines} == {"succeeded"}
    # Streaming, seen in the event log: page 1 was claimed by the GPU worker before the source was prepared.
    q = """SELECT (SELECT min(e.created_at) FROM events e JOIN items u ON u.id = e.item_id
                   WHERE u.parent_id = :s AND u.page = 1 AND e.to_status = 'running') AS first_running,
                  (SELECT min(created_at) FROM events
                   WHERE item_id = :s AND to_status = 'prepared') AS prepared"""
    (when,) = _rows(stack, q, s=uuid.UUID(source))
    assert when["first_running"] < when["prepared"], when


def test_a_cancel_mid_stream_stops_the_rendering(stack: Stack) -> None:
    pdf = text_pdf(60, "cancelled")
    job_id, source = _submit(stack, pdf, SLOW_SIDE)
    _mid_stream(stack, source)
    r = httpx.post(f"{stack.base}/v1/jobs/{job_id}/cancel", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    made = len(_units(stack, source))
    job, _ = stack.wait_terminal(job_id)
    assert job["status"] == "cancelled"
    assert len(_units(stack, source)) == made < 60  # no unit was added after the cancel
    assert _source(stack, source)["status"] == "cancelled"
    assert {u["status"] for u in _units(stack, source)} <= {"succeeded", "cancelled"}
    # Rendering stopped at the next chunk: past the recorded pages, at most one chunk's pages and the
    # uploads already under way when it stopped (VLMQ_MEDIA__UPLOAD_PAGES_AHEAD) were stored.
    stored = stack.keys(f"media/{hashlib.sha256(pdf).hexdigest()}/{SLOW_SIDE}px/")
    assert made <= len(stored) <= made + 2 + MediaSettings().upload_pages_ahead, (made, len(stored))


def test_s3_down_mid_stream_then_the_retry_adds_no_unit_or_result_twice(stack: Stack) -> None:
    job_id, source = _submit(stack, text_pdf(40, "outage"), SLOW_SIDE)
    _mid_stream(stack, source)
    stack.s3.down()  # the next page's PUT fails (after boto's own retries): the source is given back
    time.sleep(6)
    stack.s3.up()
    job, _ = stack.wait_terminal(job_id)
    assert job["status"] == "completed", job
    assert _source(stack, source)["attempts"] >= 2  # the outage did hit the prep, which rendered again
    _one_result_per_page(stack, source, 40)
    assert len(result_lines(stack, job_id)) == 40


def test_a_page_that_cannot_be_rendered_keeps_the_pages_before_it_and_fails_the_source(stack: Stack) -> None:
    # missing_pages.pdf: its page tree claims 8 pages and holds 6; page 7 cannot be rendered.
    job_id, source = _submit(stack, (FIXTURES / "missing_pages.pdf").read_bytes())
    job, _ = stack.wait_terminal(job_id)
    assert job["status"] == "completed"
    assert job["request_counts"] == {**NONE, "total": 1, "failed": 1}
    assert job["page_counts"] == {**NONE, "total": 6, "completed": 6}
    _one_result_per_page(stack, source, 6)
    src = _source(stack, source)
    assert (src["status"], src["error_code"], src["page_count"]) == ("failed", "corrupt_media", None)
    assert src["error_message"].startswith("page 7 cannot be rendered")
    lines = result_lines(stack, job_id)  # six page lines, then the source's own error line
    assert [(x["page"], x["status"]) for x in lines] == [
        *((p, "succeeded") for p in range(1, 7)),
        (None, "failed"),
    ]
    error = lines[-1]["error"]
    assert isinstance(error, dict) and error["code"] == "corrupt_media", error
    # The job was completed only after those pages: its output files hold all of them.
    out = _output(stack, job_id)
    assert len(out["output.jsonl"]) == 6 and out["errors.jsonl"][0]["error"]["code"] == "corrupt_media"


def test_a_prep_process_killed_mid_stream_is_prepped_again_with_one_unit_per_page(stack: Stack) -> None:
    job_id, source = _submit(stack, text_pdf(40, "killed"), SLOW_SIDE)
    _mid_stream(stack, source)
    pid = stack.procs["worker-prep"].pid
    for child in (int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()):
        os.kill(child, signal.SIGKILL)  # the pool processes: the one rendering dies mid-stream
    job, _ = stack.wait_terminal(job_id)  # the sweeper hands the source on once its lease runs out
    assert job["status"] == "completed", job
    assert _source(stack, source)["attempts"] >= 2
    _one_result_per_page(stack, source, 40)
    assert len(result_lines(stack, job_id)) == 40


def _output(stack: Stack, job_id: str) -> dict[str, list[dict[str, Any]]]:
    names = ("output.jsonl", "errors.jsonl")
    return {n: [json.loads(x) for x in stack.read(f"jobs/{job_id}/{n}").splitlines()] for n in names}
