"""The clock seam (jobs.clock) on a database of its own, so moving its clock touches no other test: off,
it is Postgres' now() exactly; on, the whole stack is older at once: expiry, leases, defaults,
reprocessing slots and Celery beat's time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from jobs import clock
from jobs.config import Settings
from jobs.models import Item, Job
from jobs.schemas import JobCreate
from jobs.status import ItemStatus, JobStatus
from jobs.sweeper import sweep
from tests.fakes import MemoryDispatcher
from tests.integration import with_section
from tests.integration.conftest import service_on as _service


def test_off_it_is_postgres_now_exactly(simulated: Settings) -> None:
    """No offset row, as in production: vlmq_now() and now() are one value in a transaction."""
    service = _service(simulated)
    with service.sessions() as s:
        assert s.execute(text("SELECT vlmq_now() = now()")).scalar() is True
        assert clock.offset(s) == 0.0


def test_only_a_simulated_clock_moves(simulated: Settings) -> None:
    real = with_section(simulated, "clock", simulated=False)
    with _service(real).sessions() as s, pytest.raises(RuntimeError, match="SIMULATED"):
        clock.advance(s, real, 60)
    with _service(simulated).sessions() as s, s.begin(), pytest.raises(ValueError):
        clock.advance(s, simulated, -1)


def test_a_day_later_the_whole_stack_is_a_day_older(simulated: Settings) -> None:
    """A job submitted now, the clock moved 25 h: the sweeper expires it (its 24 h window is over), and
    what is made from then on is stamped with the simulated time."""
    service = _service(simulated)
    job, _ = service.submit("tenant-a", JobCreate.model_validate({"items": [_item(simulated)]}))
    with service.sessions() as s, s.begin():
        before = clock.now(s)
        after = clock.advance(s, simulated, 25 * 3600)
    assert timedelta(hours=25) <= after - before < timedelta(hours=25, minutes=1)
    report = sweep(service)
    assert report.expired_jobs == 1, report
    with service.sessions() as s:
        assert s.scalar(select(Job.status).where(Job.id == job.id)) == str(JobStatus.EXPIRED)
        item = s.scalars(select(Item).where(Item.job_id == job.id)).one()
        assert item.status == str(ItemStatus.FAILED) and item.error_code == "expired"
    later, _ = service.submit("tenant-a", JobCreate.model_validate({"items": [_item(simulated)]}))
    with service.sessions() as s:
        created = s.scalar(select(Job.created_at).where(Job.id == later.id))
    assert created is not None and created - datetime.now(UTC) > timedelta(hours=24)


def test_the_reprocess_slot_is_the_simulated_nights(simulated: Settings) -> None:
    from jobs.reprocessing.reprocessor import Reprocessor

    service = _service(simulated)
    with service.sessions() as s, s.begin():
        # Three days on, at noon: far from the 02:00 slot boundary, which the reprocessor's own reading
        # of the clock, a moment after this one, would otherwise cross when the test runs at 01:59 UTC.
        start = clock.now(s)
        noon = (start + timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)
        now = clock.advance(s, simulated, (noon - start).total_seconds())
    report = Reprocessor(service, MemoryDispatcher()).scheduled()
    assert report is not None
    slot = (now - timedelta(hours=2)).date() if now.hour < 2 else now.date()
    with service.sessions() as s:
        key = s.scalar(text("SELECT dedupe_key FROM reprocess_runs WHERE id = :i"), {"i": report.id})
    assert key == f"schedule:{slot:%Y-%m-%d}T02:00Z", key


def test_celery_beat_reads_the_same_clock(simulated: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.celery_app import VlmqCelery, _simulated_clock

    service = _service(simulated)
    with service.sessions() as s, s.begin():
        clock.advance(s, simulated, 7 * 86400)
    app = VlmqCelery("clock-test", set_as_current=False)
    app.conf.timezone = "UTC"
    assert abs((app.now() - datetime.now(UTC)).total_seconds()) < 5  # no clock: real time
    app.stack_clock = _simulated_clock(simulated)
    assert (
        timedelta(days=7) - timedelta(seconds=5)
        < app.now() - datetime.now(UTC)
        < timedelta(days=7, seconds=5)
    )


def _item(settings: Settings) -> dict[str, str]:
    return {"custom_id": uuid.uuid4().hex, "uri": f"s3://{settings.s3.bucket}/uploads/tenant-a/x/doc.pdf"}
