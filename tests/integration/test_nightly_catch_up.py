"""A night's scheduled reprocess whose message was lost (found by the soak: the task's retry, held by a GPU
worker that was then killed, waits for Redis' visibility timeout, hours) is sent again by the sweeper:
Postgres says the slot has no run. On a database of its own, the clock moved to the hours after 02:00."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text

from jobs import clock
from jobs.config import Settings
from jobs.reprocessing.reprocessor import Reprocessor, schedule_slot, slot_key
from jobs.sweeper import sweep
from tests.fakes import MemoryDispatcher
from tests.integration.conftest import service_on


def _to_after_slot(settings: Settings, after: timedelta) -> None:
    """Move the clock to ``after`` past the schedule's next slot."""
    service = service_on(settings)
    with service.sessions() as s, s.begin():
        now = clock.now(s)
        nxt = schedule_slot(settings.reprocess.schedule, now) + timedelta(days=1)
        clock.advance(s, settings, (nxt + after - now).total_seconds())


def _sent(settings: Settings) -> list[str]:
    """The slots one sweep sent the scheduled reprocess for (its report and its messages agree)."""
    service = service_on(settings)
    report = sweep(service)
    assert isinstance(service.dispatcher, MemoryDispatcher) and not report.skipped
    sent = [slot for task, _, slot in service.dispatcher.sent if task == "reprocess_scheduled"]
    assert report.nightly_resent == bool(sent)
    return sent


def _keys(settings: Settings) -> set[str]:
    with service_on(settings).sessions() as s:
        return set(s.scalars(text("SELECT dedupe_key FROM reprocess_runs")))


def test_a_slot_without_its_run_is_sent_again_and_run_however_late(simulated: Settings) -> None:
    _to_after_slot(simulated, timedelta(hours=1))
    (slot,) = _sent(simulated)
    with service_on(simulated).sessions() as s, s.begin():
        clock.advance(s, simulated, 86400)  # the message waited: the next night has come meanwhile
    Reprocessor(service_on(simulated), MemoryDispatcher()).scheduled(slot=datetime.fromisoformat(slot))
    assert slot_key(datetime.fromisoformat(slot)) in _keys(simulated)  # that night's run, not the next
    nxt = datetime.fromisoformat(slot) + timedelta(days=1)
    assert _sent(simulated) == [nxt.isoformat()]  # the night after has no run either: sent too


def test_not_in_the_minutes_beat_has_nor_past_the_catch_up_window(simulated: Settings) -> None:
    _to_after_slot(simulated, timedelta(minutes=2))  # beat's own message may still be on its way
    assert _sent(simulated) == []
    with service_on(simulated).sessions() as s, s.begin():
        clock.advance(s, simulated, 7 * 3600)  # 7 h 2 min past the slot: the next night takes it
    assert _sent(simulated) == []
    off = simulated.model_copy(update={"reprocess": simulated.reprocess.model_copy(update={"catch_up_s": 0})})
    _to_after_slot(off, timedelta(hours=1))
    assert _sent(off) == []
