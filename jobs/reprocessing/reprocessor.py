"""Reprocessing runs: select items by rule (jobs.reprocessing.selection), enqueue them in the low lane
once, report.

Two ways an item is reprocessed:
- retry (a failed item): reopened into the normal pipeline, so prep, inference and the job's finalizer
  run as for new work, at low priority; the job is running again until its reopened items settle.
- refresh (a succeeded page with an out-of-date result): recomputed beside its current result. The page
  and its job keep their state; the new version and the move of the "current" mark are one transaction,
  so readers see the old answer or the new one, never none. Old versions stay, as history.

Never twice: a run is created under a Postgres advisory lock, with a unique dedupe key (the schedule's
slot, or the command's rules and day), and an item can be open in one run only (a partial unique
index), so two schedulers, a double trigger or a rerun enqueue nothing a second time.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from croniter import croniter
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from jobs import clock, transitions
from jobs import repository as repo
from jobs.errors import NotFound, VlmqError
from jobs.models import Item
from jobs.prompts import presets
from jobs.reprocessing import runs
from jobs.reprocessing.models import ReprocessRun
from jobs.reprocessing.selection import Rules, Target, candidates
from jobs.scheduling import fairness
from jobs.service import JobService
from jobs.status import JobStatus
from jobs.work import Held, UnitWork

log = logging.getLogger(__name__)

# A worker's clock may run a little behind beat's: a message sent at 02:00:00 and run at 01:59:59.5
# must still count as the 02:00 slot, not the day before's.
CLOCK_SKEW = timedelta(seconds=60)
SAMPLE_SIZE = 20


class ReprocessDispatcher(Protocol):
    def prep(self, item_id: uuid.UUID) -> None: ...

    def infer(self, unit_ids: Sequence[uuid.UUID]) -> None: ...

    def refresh(self, run_id: uuid.UUID, unit_ids: Sequence[uuid.UUID]) -> None: ...


class RunReport(BaseModel):
    """A run's counts and progress. A dry run has no id and lists a sample of what it would take."""

    id: uuid.UUID | None = None
    dedupe_key: str | None = None
    trigger: str
    status: str  # dry_run | running | completed
    rules: dict[str, Any]
    target: dict[str, Any]
    selected: int
    by_reason: dict[str, int] = Field(default_factory=dict)  # failed | model | prompt
    pending: int = 0
    changed: int = 0  # a new answer (for a failed item: any answer)
    unchanged: int = 0  # recomputed, same answer
    failed: int = 0
    progress: float = 0.0  # share of selected items done
    created_at: datetime | None = None
    completed_at: datetime | None = None
    sample: list[dict[str, Any]] = Field(default_factory=list)


def schedule_slot(schedule: str, now: datetime) -> datetime:
    """The schedule's latest fire time at ``now``: the same for every scheduler firing for it."""
    prev: datetime = croniter(schedule, now + CLOCK_SKEW).get_prev(datetime)
    return prev


def recent_slots(schedule: str, now: datetime, within_s: float, most: int = 7) -> list[datetime]:
    """The schedule's fire times in the ``within_s`` seconds before ``now``, newest first (``most``)."""
    it, found = croniter(schedule, now + CLOCK_SKEW), list[datetime]()
    while len(found) < most:
        slot: datetime = it.get_prev(datetime)
        if (now - slot).total_seconds() >= within_s:
            break
        found.append(slot)
    return found


def slot_key(slot: datetime) -> str:
    """A scheduled run's dedupe key: every scheduler firing for ``slot`` computes the same."""
    return f"schedule:{slot:%Y-%m-%dT%H:%MZ}"


def cli_key(rules: Rules, now: datetime) -> str:
    """A command's default dedupe key: the same rules on the same day (UTC) are one run."""
    digest = hashlib.sha256(rules.model_dump_json().encode()).hexdigest()[:16]
    return f"cli:{now.astimezone(UTC):%Y-%m-%d}:{digest}"


class Reprocessor:
    def __init__(self, jobs: JobService, dispatcher: ReprocessDispatcher) -> None:
        self.jobs = jobs
        self.sessions = jobs.sessions
        self.settings = jobs.settings
        self.dispatcher = dispatcher

    def target(self) -> Target:
        return Target.from_settings(self.settings)

    # -- starting runs -----------------------------------------------------------------------------

    def preview(self, rules: Rules, target: Target | None = None) -> RunReport:
        """Dry run: what ``start`` would select now. Writes nothing, sends nothing."""
        target = target or self.target()
        with self.sessions() as s:
            rows = s.execute(candidates(rules, target)).all()
            items = {
                it.id: it
                for it in s.scalars(select(Item).where(Item.id.in_([r[0] for r in rows[:SAMPLE_SIZE]])))
            }
        by_reason: dict[str, int] = {}
        for r in rows:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
        sample = [_sample(items[r.item_id], r.reason, r.from_version) for r in rows[:SAMPLE_SIZE]]
        return RunReport(
            trigger="dry_run", status="dry_run", rules=rules.model_dump(mode="json"), target=target.as_dict(),
            selected=len(rows), by_reason=by_reason, pending=len(rows), sample=sample,
        )  # fmt: skip

    def start(
        self, rules: Rules, key: str, trigger: str, target: Target | None = None
    ) -> tuple[RunReport, bool]:
        """Create the run for ``key`` and send its work, or return the run already made for it."""
        target = target or self.target()
        try:
            run_id, created = self._create(rules, target, key, trigger)
        except IntegrityError:  # the key was taken outside the lock (a run made by hand): it is that run
            with self.sessions() as s:
                prior = runs.run_by_key(s, key)
            if prior is None:
                raise
            run_id, created = prior.id, False
        if created:
            self._send(run_id)
        return self.report(run_id), created

    def _create(self, rules: Rules, target: Target, key: str, trigger: str) -> tuple[uuid.UUID, bool]:
        with self.sessions() as s, s.begin():
            runs.lock(s)
            prior = runs.run_by_key(s, key)
            if prior is not None:
                return prior.id, False
            run = ReprocessRun(
                id=uuid.uuid4(), dedupe_key=key, trigger=trigger, rules=rules.model_dump(mode="json"),
                target=target.as_dict(), selected=0, status="running",
            )  # fmt: skip
            s.add(run)
            s.flush()
            run.selected = runs.insert_entries(s, run.id, candidates(rules, target))
            texts = {p.name: p.prompt for p in presets.PRESETS.values()}
            runs.upgrade_prompts(s, run.id, target, texts)
            runs.reopen_retries(s, run.id, self.settings.queue.job_expiry_seconds)
        log.info("reprocess run %s (%s): %d items selected", run.id, key, run.selected)
        return run.id, True

    def _send(self, run_id: uuid.UUID) -> None:
        """After commit: a message for a row not yet visible would find nothing to claim."""
        with self.sessions() as s:
            work = runs.work(s, run_id)
        size = self.settings.limits.batch_size
        pages = {mode: [i for i, m, src in work if m == mode and not src] for mode in ("retry", "refresh")}
        for item_id in (i for i, m, src in work if src):
            self.dispatcher.prep(item_id)
        for batch in _batches(pages["retry"], size):
            self.dispatcher.infer(batch)
        for batch in _batches(pages["refresh"], size):
            self.dispatcher.refresh(run_id, batch)

    def scheduled(self, now: datetime | None = None, slot: datetime | None = None) -> RunReport | None:
        """What Celery beat's entry runs: settle open runs, resend lost refreshes, then start the run
        for the schedule's current slot, or for ``slot`` (the sweeper's catch-up of a lost message,
        which may run after the next slot has come); a no-op when another scheduler already did."""
        cfg = self.settings.reprocess
        if not cfg.schedule:
            return None
        if now is None:
            with self.sessions() as s:
                now = clock.now(s)  # the stack's clock: a soak's simulated midnight is a real slot
        for run_id in self._open_runs():
            self.report(run_id)  # settles it
        self.resume(now - timedelta(seconds=cfg.lease_s))
        rules = Rules(failed=cfg.failed, outdated=cfg.outdated, limit=cfg.max_items)
        slot = slot or schedule_slot(cfg.schedule, now.astimezone(UTC))
        report, created = self.start(rules, slot_key(slot), "schedule")
        if not created:
            log.info("reprocess slot %s already has run %s; nothing sent", slot, report.id)
        return report

    def resume(self, cutoff: datetime) -> int:
        with self.sessions() as s, s.begin():
            stale = transitions.stale_refreshes(s, cutoff)
        by_run: dict[uuid.UUID, list[uuid.UUID]] = {}
        for run_id, item_id in stale:
            by_run.setdefault(run_id, []).append(item_id)
        for run_id, items in by_run.items():
            for batch in _batches(items, self.settings.limits.batch_size):
                self.dispatcher.refresh(run_id, batch)
        return len(stale)

    def _open_runs(self) -> list[uuid.UUID]:
        with self.sessions() as s:
            return runs.open_runs(s)

    # -- reading -----------------------------------------------------------------------------------

    def report(self, run_id: uuid.UUID) -> RunReport:
        """The run's counts now; closes the retry entries whose items settled, and the run when done."""
        with self.sessions() as s, s.begin():
            run = s.get(ReprocessRun, run_id)
            if run is None:
                raise NotFound(f"reprocess run {run_id} not found")
            transitions.settle_retries(s, run_id)
            report = _report(run, *runs.counts(s, run_id))
            if (
                run.status == "running"
                and report.pending == 0
                and transitions.complete_run(s, run_id, report.model_dump(mode="json"))
            ):
                s.refresh(run)
                report = _report(run, *runs.counts(s, run_id))
        return report

    def recent(self, limit: int = 10) -> list[RunReport]:
        with self.sessions() as s:
            ids = [r.id for r in runs.recent_runs(s, limit)]
        return [self.report(i) for i in ids]

    def lane(self, run_id: uuid.UUID) -> RefreshLane:
        return RefreshLane(self, run_id)


class RefreshLane:
    """workers.infer's lane for a run's refresh entries: claims the entry, not the page; stores the new
    version and moves the current mark in the same transaction as the entry's outcome."""

    leased = False  # the page stays succeeded: the run's entry is the claim, with its own attempts

    def __init__(self, rp: Reprocessor, run_id: uuid.UUID) -> None:
        self.rp, self.run_id, self.sessions = rp, run_id, rp.sessions

    def claim(self, unit_ids: Sequence[uuid.UUID], held: Held | None = None) -> list[UnitWork]:
        """The entry is the claim, its attempts the claim's count (``held``: runs.take_back)."""
        with self.sessions() as s, s.begin():
            transitions.take_back_entries(s, self.run_id, held or {}, self.rp.settings.limits.max_attempts)
            items = transitions.claim_entries(s, self.run_id, unit_ids)
            tried = runs.attempts(s, self.run_id, [i.id for i in items])
            # Low class in the engine too: a night's refresh never runs ahead of normal work's turn.
            work = self.rp.jobs.unit_work(s, items)
            return [replace(u, attempt=tried[u.id], rank=fairness.LOW_RANK) for u in work]

    def complete(self, done: Sequence[tuple[UnitWork, dict[str, object]]]) -> None:
        with self.sessions() as s, s.begin():
            for unit, result in done:
                before = runs.current_answer(s, unit.id)
                outcome = "unchanged" if before == result["answer"] else "changed"
                if transitions.move_entries(
                    s, self.run_id, [unit.id], "running", outcome, to_version=unit.version
                ):
                    repo.upsert_result(
                        s, {"job_id": unit.job_id, "item_id": unit.id, "version": unit.version, **result}
                    )
                    detail = f"v{unit.version} {outcome} (run {self.run_id})"
                    repo.add_event(s, unit.job_id, "result.versioned", item_id=unit.id, detail=detail)

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        with self.sessions() as s, s.begin():
            transitions.move_entries(s, self.run_id, unit_ids, "running", "failed", **_error(error))

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        """Entries with attempts left go back to pending (returned); the others fail with ``error``."""
        limit = self.rp.settings.limits.max_attempts
        with self.sessions() as s, s.begin():
            tried = runs.attempts(s, self.run_id, unit_ids)
            again = [i for i in unit_ids if tried.get(i, limit) < limit]
            back = transitions.move_entries(s, self.run_id, again, "running", "pending")
            spent = [i for i in unit_ids if i not in set(back)]
            transitions.move_entries(s, self.run_id, spent, "running", "failed", **_error(error))
        return back

    def settle(self, units: Sequence[UnitWork]) -> None:
        """A completed job whose refreshes in this run are all done gets its output files rewritten once
        (a reopened job's finalizer does it itself); then the run may be complete."""
        for job_id in {u.job_id for u in units}:
            with self.sessions() as s, s.begin():
                repo.lock_job_finalize(s, job_id)  # after a close that read before this run's results
                job = repo.get_job(s, job_id)
                done = job is not None and job.status == str(JobStatus.COMPLETED)
                if done and runs.open_refreshes(s, self.run_id, job_id) == 0:
                    self.rp.jobs.write_outputs(s, job_id)
        self.rp.report(self.run_id)


def _error(error: VlmqError) -> dict[str, str]:
    return {"error_code": error.code, "error_message": str(error)[:4000]}


def _batches(ids: list[uuid.UUID], size: int) -> list[list[uuid.UUID]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _sample(item: Item, reason: str, from_version: int | None) -> dict[str, Any]:
    return {
        "job_id": str(item.job_id), "item_id": str(item.id), "custom_id": item.custom_id,
        "page": item.page, "reason": reason, "from_version": from_version,
    }  # fmt: skip


def _report(run: ReprocessRun, by_state: dict[str, int], by_reason: dict[str, int]) -> RunReport:
    pending = by_state.get("pending", 0) + by_state.get("running", 0)
    done = run.selected - pending
    return RunReport(
        id=run.id, dedupe_key=run.dedupe_key, trigger=run.trigger, status=run.status, rules=run.rules,
        target=run.target, selected=run.selected, by_reason=by_reason, pending=pending,
        changed=by_state.get("changed", 0), unchanged=by_state.get("unchanged", 0),
        failed=by_state.get("failed", 0), progress=round(done / run.selected, 4) if run.selected else 1.0,
        created_at=run.created_at, completed_at=run.completed_at,
    )  # fmt: skip
