"""Use cases: submit, read, and the worker-side steps claim/complete/fail/finalize.

The service owns transactions; jobs.repository owns SQL. Enqueueing happens after commit: a message
for a row that is not yet visible would be lost work, while a row whose message is lost is found again
by the sweeper.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import control, leases, listings, submission, transitions
from jobs import repository as repo
from jobs import units as units_
from jobs.adapters import metrics, uris
from jobs.adapters.db import session_factory
from jobs.adapters.dispatch import CeleryDispatcher, Dispatcher
from jobs.adapters.storage import BlobStore, S3BlobStore
from jobs.clock import sql_now
from jobs.config import Settings
from jobs.errors import Expired, NotFound, TransportError, VlmqError
from jobs.models import Item, Job
from jobs.scheduling import estimate, fairness
from jobs.schemas import EventOut, JobCreate, JobOut, ResultLine
from jobs.status import JOB_ACTIVE, ItemStatus, JobStatus, Outcome, outcome
from jobs.views import exports, lines, outputs
from jobs.work import Claim, Held, PageMedia, PreparedUnit, PrepWork, UnitWork, prep_work, unit_work

log = logging.getLogger(__name__)


class JobService:
    def __init__(
        self, sessions: sessionmaker[Session], store: BlobStore, dispatcher: Dispatcher, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings

    # -- producer side -------------------------------------------------------------------------

    def submit(self, tenant: str, req: JobCreate, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store the job and its items in one transaction, then enqueue. Returns (job, created)."""
        submission.validate(self.settings, self.store, tenant, req)
        digest = submission.request_hash(req)
        if idempotency_key and (prior := submission.prior(self.sessions, tenant, idempotency_key, digest)):
            return prior, False
        try:
            job, item_ids = submission.insert(
                self.sessions, self.settings, tenant, req, idempotency_key, digest
            )
        except IntegrityError:
            # A concurrent retry with the same key won the insert; answer with its job.
            prior = submission.prior(self.sessions, tenant, idempotency_key or "", digest)
            if prior is None:
                raise
            return prior, False
        if req.source is not None:
            self.dispatcher.list_source(job.id)
        self.enqueue(job.priority, sources=item_ids)
        return job, True

    def enqueue(
        self, priority: str, sources: Sequence[uuid.UUID] = (), units: Sequence[uuid.UUID] = ()
    ) -> None:
        """Send the messages for committed rows. A failure here loses nothing (the rows say what should
        be moving and the sweeper re-enqueues it), so it is logged, not raised to the producer."""
        size, fan_out = self.settings.limits.batch_size, self.settings.queue.fan_out_size
        many = getattr(self.dispatcher, "prep_many", None)
        try:
            if many is not None and len(sources) > fan_out // 4:
                many(sources, priority, fan_out)
                sources = ()
            for item_id in sources:
                self.dispatcher.prep(item_id, priority)
            for i in range(0, len(units), size):
                self.dispatcher.infer(units[i : i + size], priority)
        except Exception as e:  # any broker failure: the sweeper is the way back
            log.warning("enqueue failed (%s: %s); the sweeper will re-enqueue", type(e).__name__, e)

    def check_owner(self, tenant: str | None, job_id: uuid.UUID) -> None:
        """NotFound unless the job exists and is the tenant's: a primary-key read, for the routes that
        need no counts (``get`` counts every item: 480 ms on a million-item job, bench/scale.py)."""
        with self.sessions() as s:
            if repo.get_job(s, job_id, tenant) is None:
                raise NotFound(f"job {job_id} not found")

    def get(self, tenant: str | None, job_id: uuid.UUID) -> JobOut:
        with self.sessions() as s:
            job = repo.get_job(s, job_id, tenant)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            sources, units = repo.counts(s, job_id, True), repo.counts(s, job_id, False)
            forecast = estimate.forecast(s, job, self.settings, units)
            listing = listings.progress(s, job_id)
        return JobOut(
            id=job.id,
            status=job.status,
            request_counts=sources,
            page_counts=units,
            model_id=job.model_id,
            prompt_version=job.prompt_version,
            created_at=job.created_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            error=job.error,
            priority=job.priority,
            expires_at=job.expires_at,
            forecast=forecast,
            listing=listing,
            dataset=exports.progress(job),
        )

    def results(
        self, tenant: str | None, job_id: uuid.UUID, status: str | None = None, history: bool = False
    ) -> Iterator[ResultLine]:
        """Current results, or those whose outcome is ``status`` (jobs.status.Outcome: "failed" and
        "expired" are what a retry would redo); with ``history``, every version of every page.
        Existence and tenancy are checked now (404); the lines are read as the caller iterates, from a
        server-side cursor, so a job of a million lines streams in bounded memory."""
        self.check_owner(tenant, job_id)
        return self._results(job_id, status, history)

    def _results(self, job_id: uuid.UUID, status: str | None, history: bool) -> Iterator[ResultLine]:
        with self.sessions() as s, s.begin():
            for src, unit, res in repo.stream_result_rows(s, job_id, history=history):
                line = lines.result_line(src, unit, res, self.store.bucket)
                if status is None or line.status == status:
                    yield line

    def events(
        self, tenant: str | None, job_id: uuid.UUID, after: int = 0, limit: int = 1000
    ) -> list[EventOut]:
        """The job's history, oldest first, from event id ``after``."""
        self.check_owner(tenant, job_id)
        with self.sessions() as s:
            rows = repo.events(s, job_id, after, limit)
        return [EventOut.of(e, custom_id, page) for e, custom_id, page in rows]

    def cancel(self, tenant: str | None, job_id: uuid.UUID) -> JobOut:
        """Cooperative cancel: the job becomes ``cancelling``, its waiting items ``cancelled`` at once;
        workers stop the in-flight ones (aborting engine requests), then the job is ``cancelled``.
        Cancelling a finished job changes nothing (its state is returned); idempotent."""
        with self.sessions() as s, s.begin():
            control.cancel(s, tenant, job_id)
        self.finalize(job_id)
        return self.get(tenant, job_id)

    def retry(self, tenant: str | None, job_id: uuid.UUID) -> JobOut:
        """Re-queue the job's failed and expired items (only those) and reopen the job; 409 when there
        are none."""
        with self.sessions() as s, s.begin():
            expiry = self.settings.queue.job_expiry_seconds
            priority, sources, units = control.retry(s, tenant, job_id, expiry)
        self.enqueue(priority, sources=sources, units=units)
        return self.get(tenant, job_id)

    def renew_leases(self, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The heartbeat: extend the in-flight items' leases; {job id: status} of their jobs."""
        with self.sessions() as s, s.begin():
            return leases.renew(s, item_ids, self.settings.queue.lease_seconds)

    def job_statuses(self, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        with self.sessions() as s:
            return leases.job_statuses(s, job_ids)

    def _lease(self) -> dict[str, object]:
        return {
            "attempts": Item.attempts + 1,
            "lease_until": leases.lease_until(self.settings.queue.lease_seconds),
        }

    def page_media(self, job_id: uuid.UUID, limit: int) -> list[PageMedia]:
        """A job's first ``limit`` prepared pages and their prompts (calibration for `vlmq quantize`)."""
        with self.sessions() as s:
            job = repo.get_job(s, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            units = repo.units_with_media(s, job_id, limit)
            prompt = job.prompt
            return [PageMedia(u.custom_id, u.page or 0, u.media_key or "", u.prompt or prompt) for u in units]

    # -- worker side ---------------------------------------------------------------------------

    def begin_prep(self, item_id: uuid.UUID) -> PrepWork | None:
        """Claim this queued source. None: someone else has it, or it is already done."""
        with self.sessions() as s, s.begin():
            return self._begin_prep(s, item_id)

    def begin_next_prep(self) -> Claim[PrepWork]:
        """Claim the source whose turn it is (jobs.scheduling.fairness): what a prep message means."""
        with self.sessions() as s, s.begin():
            turn = fairness.claim(s, fairness.SOURCES, 1, self.settings.fairness)
            work = [w for i in turn.ids if (w := self._begin_prep(s, i)) is not None]
        metrics.waited("prep", turn.waits)
        return Claim(work, turn.capped)

    def _begin_prep(self, s: Session, item_id: uuid.UUID) -> PrepWork | None:
        moved = transitions.move_items(s, [item_id], ItemStatus.PREPARING, self._lease())
        if not moved:
            return None
        item = moved[0]
        job = repo.get_job(s, item.job_id)
        assert job is not None
        transitions.move_job(s, job.id, JobStatus.RUNNING, {"started_at": sql_now()})
        return prep_work(item, job, self.settings.limits.render_longest_side)

    def add_units(
        self, item_id: uuid.UUID, units: Sequence[PreparedUnit | tuple[int, str]], attempt: int = 0
    ) -> list[uuid.UUID] | None:
        """Record a chunk of units of a source still being prepared; their READY ids, to dispatch now.
        None: stop rendering (the job stopped: the source is cancelled; or claim ``attempt`` no longer
        holds the source). See jobs.units."""
        with self.sessions() as s, s.begin():
            return units_.add_units(s, item_id, units, attempt)

    def finish_prep(
        self,
        item_id: uuid.UUID,
        units: Sequence[PreparedUnit | tuple[int, str]],
        page_count: int | None = None,
        dispatched: Sequence[uuid.UUID] = (),
    ) -> list[list[uuid.UUID]]:
        """Record the source's (last) units (pages, or (page, media_key) pairs) and mark it prepared;
        return its READY units not in ``dispatched`` in inference batches. A source whose job is no
        longer active (cancelled, expired meanwhile) is cancelled instead. See jobs.units."""
        with self.sessions() as s, s.begin():
            ready = units_.finish_prep(s, item_id, units, page_count, dispatched)
        size = self.settings.limits.batch_size
        return [ready[i : i + size] for i in range(0, len(ready), size)]

    def list_next(self, job_id: uuid.UUID) -> None:
        """One page of a job submitted as a source (jobs.listings): its sources to prep, the next page
        asked for; once the listing is over, the job is finalized (it may have nothing open left)."""
        step = listings.Lister(self.sessions, getattr(self.store, "client", None), self.settings).next_page(
            job_id
        )
        self.enqueue(step.priority, sources=step.sources)
        if step.again_in is not None:
            self.dispatcher.list_source(job_id, step.again_in)
        else:
            self.finalize(job_id)

    def fail_items(self, item_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        with self.sessions() as s, s.begin():
            moved = transitions.move_items(
                s, item_ids, ItemStatus.FAILED, {"error_code": error.code, "error_message": str(error)[:4000]}
            )
            for it in moved:
                repo.add_event(s, it.job_id, "item.error", item_id=it.id, detail=f"{error.code}: {error}")
        if outcome(ItemStatus.FAILED, error.code) == Outcome.FAILED:  # an expired item did not fail
            metrics.items_failed(error.code, len(moved))

    def give_back(self, item_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        """After a transient failure: items with attempts left go back to wait (a source to queued, a
        unit to ready) and are returned; the others fail, keeping ``error`` as their last reason.
        Transport errors (S3 or the database unreachable) have the larger max_transport_attempts."""
        lim = self.settings.limits
        limit = lim.max_transport_attempts if isinstance(error, TransportError) else lim.max_attempts
        with self.sessions() as s:
            items = [it for i in item_ids if (it := repo.get_item(s, i)) is not None]
        again = [it.id for it in items if it.attempts < limit]
        spent = [it.id for it in items if it.attempts >= limit]
        last = {"error_code": error.code, "error_message": str(error)[:4000],  # shown while it waits
                "retry_at": fairness.retry_at(self.settings.queue.retry_backoff_max_seconds)}  # fmt: skip
        with self.sessions() as s, s.begin():
            # The state machine picks the way back: running units -> ready, preparing sources -> queued.
            back = transitions.move_items(s, again, ItemStatus.READY, last) + transitions.move_items(
                s, again, ItemStatus.QUEUED, last
            )
        if spent:
            self.fail_items(spent, error)
        return [it.id for it in back]

    def claim_units(self, unit_ids: Sequence[uuid.UUID], held: Held | None = None) -> list[UnitWork]:
        """``held``: claims of this task's failed run that it could not give back (transitions.take_back)."""
        with self.sessions() as s, s.begin():
            transitions.take_back(s, held or {}, self.settings.limits.max_transport_attempts)
            units = transitions.move_items(s, unit_ids, ItemStatus.RUNNING, self._lease())
            return self.unit_work(s, units)

    def claim_next(self, n: int, held: Held | None = None, below: int | None = None) -> Claim[UnitWork]:
        """Claim the ``n`` units whose turn it is (jobs.scheduling.fairness), each with its turn's engine
        priority: what an inference message means. ``held``: as for claim_units; ``below``: only units
        whose rank is below it (urgent work, workers.inference.gate)."""
        with self.sessions() as s, s.begin():
            transitions.take_back(s, held or {}, self.settings.limits.max_transport_attempts)
            turn = fairness.claim(s, fairness.UNITS, n, self.settings.fairness, below)
            units = transitions.move_items(s, turn.ids, ItemStatus.RUNNING, self._lease())
            work = [replace(w, rank=turn.ranks[w.id]) for w in self.unit_work(s, units)]
        metrics.waited("gpu", turn.waits)
        return Claim(sorted(work, key=lambda w: w.rank), turn.capped)

    def unit_work(self, s: Session, units: Sequence[Item]) -> list[UnitWork]:
        """What the engine needs for each claimed unit, with the result version it will write."""
        jobs = {j: repo.get_job(s, j) for j in {u.job_id for u in units}}
        versions = repo.next_versions(s, [u.id for u in units])
        return [unit_work(u, jobs[u.job_id], versions[u.id], self.settings) for u in units]

    def complete_units(self, done: Sequence[tuple[UnitWork, dict[str, object]]]) -> list[uuid.UUID]:
        """Store the results and mark their units succeeded, all in one transaction (a batch's pages:
        one commit instead of one each). Only units still running move; their ids are returned."""
        with self.sessions() as s, s.begin():
            moved = {it.id for it in transitions.move_items(s, [u.id for u, _ in done], ItemStatus.SUCCEEDED,
                                                      {"error_code": None})}  # fmt: skip
            stored = [(u, r) for u, r in done if u.id in moved]
            repo.upsert_results(
                s, [{"job_id": u.job_id, "item_id": u.id, "version": u.version, **r} for u, r in stored]
            )
        for _, result in stored:
            metrics.page_stored(result)
        return [u.id for u, _ in stored]

    def finalize(self, job_id: uuid.UUID, sources: Sequence[uuid.UUID] | None = None) -> bool:
        """Settle sources whose pages are all done (``sources``: only these); once every item is
        terminal, the job is completed (cancelled, when it was cancelling). Output files are written
        first, for either end."""
        with self.sessions() as s, s.begin():
            # One finalizer of a job at a time. Without it, two workers that each settle the last
            # source of their own batch at the same moment each count the other's source as still
            # open (not yet committed), and neither completes the job (seen on the GPU: 32 batches
            # ending together left a finished job running; only the sweeper would have ended it).
            repo.lock_job_finalize(s, job_id)
            transitions.settle_sources(s, job_id, sources)
            if repo.any_open(s, job_id):
                return False
            job = repo.get_job(s, job_id)
        if job is None or repo.job_is_terminal(job):
            return False
        if job.status == JobStatus.CANCELLING:
            return self.close_job(job_id, JobStatus.CANCELLED, when_done=True)
        with self.sessions() as s:
            error = listings.failed_empty(s, job_id)  # its source could not be listed: nothing ran
        end = JobStatus.FAILED if error else JobStatus.COMPLETED
        return self.close_job(job_id, end, when_done=True, error=error)

    def close_job(
        self, job_id: uuid.UUID, end: JobStatus, when_done: bool = False, error: str | None = None
    ) -> bool:
        """Write the output files, then end the job, in one transaction under the job's finalizer lock
        (write_outputs says why). ``when_done``: only if none of its items is open under that lock (a
        retry may have reopened some since finalize counted them)."""
        with self.sessions() as s, s.begin():
            repo.lock_job_finalize(s, job_id)
            if when_done and repo.any_open(s, job_id):
                return False
            out_key, err_key = self.write_outputs(s, job_id)
            values = {"completed_at": sql_now(), "output_key": out_key, "error_key": err_key}
            if error:
                values["error"] = error
            done = transitions.move_job(s, job_id, end, values)
        if done:
            log.info("job %s %s", job_id, end)
        return done

    def stop_items(self, item_ids: Sequence[uuid.UUID], job_id: uuid.UUID) -> bool:
        """If the job stopped (cancelling, expired), its given items are cancelled (or failed
        ``expired``) and True is returned: their results, if any, are to be thrown away."""
        status = self.job_statuses({job_id}).get(job_id)
        if status in JOB_ACTIVE:
            return False
        if status == JobStatus.EXPIRED:
            self.fail_items(item_ids, Expired("the job expired before this item finished"))
        else:
            with self.sessions() as s, s.begin():
                transitions.move_items(s, item_ids, ItemStatus.CANCELLED)
        return True

    def write_outputs(self, s: Session, job_id: uuid.UUID) -> tuple[str, str]:
        """The job's output files: output.jsonl, errors.jsonl and the dataset (jobs.views.outputs).

        Only under the job's finalizer lock, taken here in ``s`` (again, when the caller holds it) and
        kept until ``s`` commits, and read in ``s`` after it: writers go one at a time, each with every
        result committed before it. A result stored without the lock (a nightly refresh of a reopened
        job) is followed by a settle that takes it, so whoever writes last has read it. Without this, a
        close that read the results, then a refresh stored and settled (seeing the job still running),
        then the close ended the job: files one version behind forever (found by the CI soak)."""
        repo.lock_job_finalize(s, job_id)
        return outputs.write(s, self.store, job_id, uris.UriPolicy.from_settings(self.settings))


def build_service(settings: Settings) -> JobService:
    """The service on the configured Postgres, S3 and Redis: what the API and the workers run."""
    return JobService(session_factory(settings), S3BlobStore(settings), CeleryDispatcher(settings), settings)
