"""The sweeper: run by Celery beat every ``queue.sweep_interval_seconds`` (task ``vlmq.sweep``). It makes
Postgres' idea of what should be moving true again, whatever Redis or a worker lost:

1. jobs past their expiry end ``expired`` (their open items fail with code ``expired``);
2. cancelling jobs: items that became waiting since are cancelled; the job ends once nothing is in flight;
3. in-flight items whose lease ran out (worker killed, cut off from Postgres, stuck) go back to waiting
   with the error ``lease_expired``, or fail with it once their attempts are spent;
4. word of waiting work is sent again, per job and kind (jobs.wakes), not per item: a message only says
   that work waits, the claim picks which. All of it right after Redis lost its data (a FLUSHALL, a
   restart without persistence); else a job's work of a kind that waits with none of it in flight, its
   next item waiting for ``queue.requeue_after_seconds``, and not woken within as long. No item row is
   written: ``job_wakes`` remembers the wake;
5. listings of jobs submitted as a source (jobs.listings) not touched for ``queue.requeue_after_seconds``
   are sent again (their message was lost); those of jobs that ended are stopped;
6. active jobs with nothing waiting or in flight are finalized (a worker died between its last result
   and the finalize);
7. the counts of jobs whose items moved much since (jobs.tallies) are rolled up into a row a group.

Every step is a compare-and-set, and a duplicate message is a no-op, so a sweep racing workers (or
another sweep) cannot double anything; a session advisory lock still keeps to one sweep at a time.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from jobs import clock, control, leases, listings, tallies, transitions, wakes
from jobs import repository as repo
from jobs.errors import LeaseExpired
from jobs.reprocessing import runs
from jobs.reprocessing.reprocessor import recent_slots, slot_key
from jobs.service import JobService
from jobs.status import JOB_ACTIVE, ItemStatus, JobStatus

log = logging.getLogger(__name__)


CATCH_UP_AFTER_S = 300  # beat's own message is given this long to start the slot's run


@dataclass
class SweepReport:
    skipped: bool = False  # another sweep held the lock
    expired_jobs: int = 0
    leases_recovered: int = 0
    leases_failed: int = 0
    broker_reset: bool = False
    requeued: int = 0  # waiting items whose word was sent again (jobs.wakes)
    events_deleted: int = 0  # past queue.event_retention_days
    nightly_resent: bool = False  # the schedule's slot had no run: its message was sent again
    finalized: list[uuid.UUID] = field(default_factory=list)
    listings_resent: int = 0
    tallies_rolled_up: int = 0  # jobs whose count rows were summed into a row a group

    @property
    def changed(self) -> bool:
        moved = self.expired_jobs or self.leases_recovered or self.leases_failed or self.requeued
        return bool(moved or self.listings_resent)


def sweep(service: JobService) -> SweepReport:
    with service.sessions() as lock:
        if not lock.scalar(select(func.pg_try_advisory_lock(leases.SWEEP_LOCK))):
            return SweepReport(skipped=True)
        try:
            return _sweep(service)
        finally:
            lock.scalar(select(func.pg_advisory_unlock(leases.SWEEP_LOCK)))


def _expire(service: JobService, job_id: uuid.UUID) -> bool:
    with service.sessions() as s, s.begin():
        expiring = control.expire(s, job_id)
    return expiring and service.close_job(job_id, JobStatus.EXPIRED)


def _catch_up_nightly(service: JobService) -> bool:
    """The schedule's slots of the last ``reprocess.catch_up_s`` that have no run (their message was
    lost: with a killed worker, a flushed Redis), each sent again with its slot, which the task makes
    however late it runs; a duplicate is harmless (one run a slot). Postgres says which slots should
    have run, as it says which items should be moving."""
    cfg = service.settings.reprocess
    send = getattr(service.dispatcher, "reprocess_scheduled", None)
    if not cfg.schedule or not cfg.catch_up_s or send is None:
        return False
    with service.sessions() as s:
        now = clock.now(s)
        due = [
            t
            for t in recent_slots(cfg.schedule, now, cfg.catch_up_s)
            if (now - t).total_seconds() > CATCH_UP_AFTER_S
        ]
        lost = [t for t in due if runs.run_by_key(s, slot_key(t)) is None]
    for slot in lost:
        log.warning("sweep: no reprocess run for the slot %s yet; sending it again", slot)
        send(slot)
    return bool(lost)


def _forget_old_events(service: JobService) -> int:
    """At most ``sweep_batch`` events past their retention a sweep: a backlog goes over a few sweeps."""
    q = service.settings.queue
    if not q.event_retention_days:
        return 0
    with service.sessions() as s, s.begin():
        return repo.delete_old_events(s, q.event_retention_days, q.sweep_batch)


def _roll_up_tallies(service: JobService) -> int:
    """At most ``sweep_batch`` jobs' count rows rolled up a sweep, each job in its own transaction."""
    with service.sessions() as s:
        crowded = tallies.crowded(s, service.settings.queue.sweep_batch)
    for job_id in crowded:
        with service.sessions() as s, s.begin():
            tallies.roll_up(s, [job_id])
    return len(crowded)


def _sweep(service: JobService) -> SweepReport:
    report = SweepReport()
    with service.sessions() as s:
        expired, cancelling = leases.jobs_past_expiry(s), leases.jobs_in(s, JobStatus.CANCELLING)
    report.expired_jobs = sum(_safely(_expire, service, j) for j in expired)
    touched = set(_recover_leases(service, report))
    for job_id in cancelling:
        with service.sessions() as s, s.begin():
            control.settle_cancelling(s, job_id)
        service.finalize(job_id)
    _requeue(service, report)
    report.listings_resent = _resend_listings(service)
    with service.sessions() as s:
        touched |= set(leases.idle_active_jobs(s))
    report.finalized = [j for j in touched if _safely(JobService.finalize, service, j)]
    report.events_deleted = _forget_old_events(service)
    report.tallies_rolled_up = _roll_up_tallies(service)
    report.nightly_resent = _catch_up_nightly(service)
    if report.changed or report.finalized:
        log.info("sweep: %s", report)
    return report


def _safely(step: Callable[[JobService, uuid.UUID], bool], service: JobService, job_id: uuid.UUID) -> bool:
    """One job's step; a failure (S3 down while writing the output files) is the next sweep's work."""
    try:
        return step(service, job_id)
    except Exception as e:
        log.warning("sweep: %s of job %s failed (%s: %s)", step.__name__, job_id, type(e).__name__, e)
        return False


def _recover_leases(service: JobService, report: SweepReport) -> set[uuid.UUID]:
    limit = service.settings.limits.max_attempts
    err = LeaseExpired("the worker holding this item stopped renewing its lease (killed, lost or stuck)")
    last = {"error_code": err.code, "error_message": err.message}
    with service.sessions() as s, s.begin():
        items = leases.expired_leases(s, service.settings.queue.sweep_batch)
        states = leases.job_statuses(s, {it.job_id for it in items})
        live = [it for it in items if states.get(it.job_id) in JOB_ACTIVE]
        again = [it.id for it in live if it.attempts < limit]
        spent = [it.id for it in live if it.attempts >= limit]
        stopped = [it.id for it in items if states.get(it.job_id) not in JOB_ACTIVE]
        back = transitions.move_items(s, again, ItemStatus.READY, last) + transitions.move_items(
            s, again, ItemStatus.QUEUED, last
        )
        failed = transitions.move_items(s, spent, ItemStatus.FAILED, last)
        transitions.move_items(s, stopped, ItemStatus.CANCELLED)
    report.leases_recovered, report.leases_failed = len(back), len(failed)
    if back or failed:
        log.warning(
            "sweep: %d expired leases back to waiting, %d failed (%s)", len(back), len(failed), err.code
        )
    # Recovered items became waiting just now, so a wake would wait requeue_after_seconds: send them now.
    with service.sessions() as s:
        priorities = leases.job_priorities(s, {it.job_id for it in back})
    resend(service, [(it.id, it.status, priorities[it.job_id]) for it in back])
    return {it.job_id for it in items}


def _requeue(service: JobService, report: SweepReport) -> None:
    reset = _broker_reset(service)
    report.broker_reset = reset
    q = service.settings.queue
    with service.sessions() as s, s.begin():
        rows = wakes.wake(s, None if reset else q.requeue_after_seconds, q.sweep_batch)
    report.requeued += len(rows)
    resend(service, rows)
    if rows:
        why = " (broker reset)" if reset else ""
        log.warning("sweep: word of %d waiting items sent again%s", len(rows), why)


def _resend_listings(service: JobService) -> int:
    with service.sessions() as s, s.begin():
        transitions.stop_listings_of_ended_jobs(s)
        lost = listings.stale(s, service.settings.queue.requeue_after_seconds)
    for job_id in lost:
        service.dispatcher.list_source(job_id)
    if lost:
        log.warning("sweep: %d listings sent again", len(lost))
    return len(lost)


def resend(service: JobService, rows: list[tuple[uuid.UUID, str, str]]) -> None:
    """(item id, status, job priority) rows: sources to prep, units to inference in batches."""
    groups: dict[tuple[str, str], list[uuid.UUID]] = defaultdict(list)
    for item_id, status, priority in rows:
        groups[(priority, status)].append(item_id)
    for (priority, status), ids in groups.items():
        if status == ItemStatus.QUEUED:
            service.enqueue(priority, sources=ids)
        else:
            service.enqueue(priority, units=ids)


def _broker_reset(service: JobService) -> bool:
    check = getattr(service.dispatcher, "broker_was_reset", None)
    if check is None:
        return False
    try:
        return bool(check())
    except Exception as e:  # Redis down: nothing can be enqueued anyway; the next sweep tries again
        log.warning("sweep: broker check failed (%s: %s)", type(e).__name__, e)
        return False
