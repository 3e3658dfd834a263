"""Use cases: submit, read, and the worker-side steps claim/complete/fail/finalize.

The service owns transactions; jobs.repository owns SQL. Enqueueing happens after commit: a message
for a row that is not yet visible would be lost work, while a row whose message is lost is found again
by the sweeper.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import metrics, presets
from jobs import repository as repo
from jobs.config import Settings
from jobs.db import session_factory
from jobs.dispatch import CeleryDispatcher, Dispatcher
from jobs.errors import Conflict, InvalidInput, NotFound, VlmqError
from jobs.fingerprint import output_settings
from jobs.models import Item, Job, Result
from jobs.prompt_limits import check_prompt_text
from jobs.schemas import Counts, ErrorInfo, JobCreate, JobOut, Region, ResultLine, Usage
from jobs.status import ItemStatus, JobStatus
from jobs.storage import BlobStore, S3BlobStore, job_output_key, split_s3_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepWork:
    item_id: uuid.UUID
    job_id: uuid.UUID
    uri: str
    longest_side: int
    dpi: int | None = None
    pages: str | None = None  # page ranges, e.g. "1-3,7"
    password: str | None = field(default=None, repr=False)
    granularity: str = "page"  # or "document": the first pages in one unit


@dataclass(frozen=True)
class PreparedUnit:
    """What prep made of a source: one unit of inference."""

    page: int  # 1-based; 0 for a unit of several pages (granularity "document")
    media_key: str  # the page image, or a manifest (.json) listing several (workers.media.manifest)
    text_key: str | None = None  # the PDF text layer of its page(s), if any
    flags: tuple[str, ...] = ()  # what prep did to its media (image_downscaled, ...), kept on the result
    pages: tuple[int, ...] = ()  # the pages of a unit of several

    def row(self) -> dict[str, Any]:
        options: dict[str, Any] = {"flags": list(self.flags)} if self.flags else {}
        if self.pages:
            options["pages"] = list(self.pages)
        kind = "document" if self.pages else "page"
        return {"page": self.page, "media_key": self.media_key, "text_key": self.text_key, "kind": kind,
                "options": options}  # fmt: skip


@dataclass(frozen=True)
class UnitWork:
    id: uuid.UUID
    job_id: uuid.UUID
    custom_id: str
    page: int
    media_key: str
    prompt: str
    prompt_version: str
    max_new_tokens: int
    temperature: float
    task: str = presets.DEFAULT.name
    text_key: str | None = None  # set only when the text_hint option asks for the text in the prompt
    flags: tuple[str, ...] = ()  # from prep
    version: int = 1  # the result version this work writes: one past the item's latest
    settings: Mapping[str, Any] = field(default_factory=dict)  # jobs.fingerprint.output_settings


@dataclass(frozen=True)
class PageMedia:
    custom_id: str
    page: int
    media_key: str
    prompt: str


def request_hash(req: JobCreate) -> str:
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()


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
        self._validate(req)
        digest = request_hash(req)
        if idempotency_key and (prior := self._prior(tenant, idempotency_key, digest)):
            return prior, False
        try:
            job, item_ids = self._insert(tenant, req, idempotency_key, digest)
        except IntegrityError:
            # A concurrent retry with the same key won the insert; answer with its job.
            prior = self._prior(tenant, idempotency_key or "", digest)
            if prior is None:
                raise
            return prior, False
        for item_id in item_ids:
            self.dispatcher.prep(item_id)
        return job, True

    def _validate(self, req: JobCreate) -> None:
        limit = self.settings.limits.max_items_per_job
        if len(req.items) > limit:
            raise InvalidInput(f"a job holds at most {limit} items; this one has {len(req.items)}")
        check_prompt_text(req.prompt, "job prompt")
        for it in req.items:
            check_prompt_text(it.prompt, f"item {it.custom_id}")
            bucket, _ = split_s3_uri(it.uri)
            if bucket != self.store.bucket:
                raise InvalidInput(f"item {it.custom_id}: bucket {bucket!r} is not allowed")

    def _prior(self, tenant: str, key: str, digest: str) -> Job | None:
        with self.sessions() as s:
            job = repo.job_by_idempotency_key(s, tenant, key)
        if job is not None and job.request_hash != digest:
            raise Conflict("this Idempotency-Key was used with a different request body")
        return job

    def _insert(
        self, tenant: str, req: JobCreate, key: str | None, digest: str
    ) -> tuple[Job, list[uuid.UUID]]:
        preset = presets.get(req.options.task)
        # A qa/grounding job with no prompt of its own: every item has one (JobCreate checks), and the
        # job keeps the bare template.
        prompt, version = (
            (preset.prompt, preset.version)
            if preset.needs_prompt and not req.prompt
            else presets.resolve(preset.name, req.prompt)
        )
        with self.sessions() as s, s.begin():
            job = Job(
                id=uuid.uuid4(),
                tenant=tenant,
                status=str(JobStatus.QUEUED),
                prompt=prompt,
                prompt_version=version,
                options=req.options.model_dump(exclude_none=True),
                model_id=self.settings.model_id,
                idempotency_key=key,
                request_hash=digest,
                total_items=len(req.items),
            )
            s.add(job)
            s.flush()
            items = [
                Item(
                    id=uuid.uuid4(),
                    job_id=job.id,
                    custom_id=it.custom_id,
                    kind="source",
                    uri=it.uri,
                    prompt=it.prompt,
                    options=it.options.model_dump(exclude_none=True) if it.options else {},
                    status=str(ItemStatus.QUEUED),
                )
                for it in req.items
            ]
            s.add_all(items)
            repo.add_event(s, job.id, "job.submitted", to_status=str(JobStatus.QUEUED))
        return job, [it.id for it in items]

    def get(self, tenant: str | None, job_id: uuid.UUID) -> JobOut:
        with self.sessions() as s:
            job = repo.get_job(s, job_id, tenant)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            sources, units = repo.counts(s, job_id, True), repo.counts(s, job_id, False)
        return JobOut(
            id=job.id,
            status=job.status,
            request_counts=_counts(sources),
            page_counts=_counts(units),
            model_id=job.model_id,
            prompt_version=job.prompt_version,
            created_at=job.created_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            error=job.error,
        )

    def results(self, tenant: str | None, job_id: uuid.UUID, history: bool = False) -> Iterator[ResultLine]:
        """Current results; with ``history``, every version of every page (oldest first)."""
        self.get(tenant, job_id)  # existence and tenancy
        with self.sessions() as s:
            rows = repo.result_rows(s, job_id, history)
        for src, unit, res in rows:
            yield _result_line(src, unit, res, self.store.bucket)

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
        """Claim a queued source. None: someone else has it, or it is already done (duplicate message)."""
        with self.sessions() as s, s.begin():
            moved = repo.move_items(s, [item_id], ItemStatus.PREPARING, {"attempts": Item.attempts + 1})
            if not moved:
                return None
            item = moved[0]
            job = repo.get_job(s, item.job_id)
            assert job is not None
            repo.move_job(s, job.id, JobStatus.RUNNING, {"started_at": func.now()})
            return _prep_work(item, job.options, self.settings.limits.render_longest_side)

    def finish_prep(
        self, item_id: uuid.UUID, units: Sequence[PreparedUnit | tuple[int, str]]
    ) -> list[list[uuid.UUID]]:
        """Record the source's units (pages, or (page, media_key) pairs) as ready; return them in
        inference batches."""
        made = [u if isinstance(u, PreparedUnit) else PreparedUnit(*u) for u in units]
        with self.sessions() as s, s.begin():
            source = repo.get_item(s, item_id)
            if source is None:
                raise NotFound(f"item {item_id} not found")
            repo.insert_units(s, source, [u.row() for u in made])
            pages = sum(len(u.pages) or 1 for u in made)
            repo.move_items(s, [item_id], ItemStatus.PREPARED, {"page_count": pages})
            ready = repo.unit_ids(s, item_id, ItemStatus.READY)
        size = self.settings.limits.batch_size
        return [ready[i : i + size] for i in range(0, len(ready), size)]

    def fail_items(self, item_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        with self.sessions() as s, s.begin():
            moved = repo.move_items(
                s, item_ids, ItemStatus.FAILED, {"error_code": error.code, "error_message": str(error)[:4000]}
            )
            for it in moved:
                repo.add_event(s, it.job_id, "item.error", item_id=it.id, detail=f"{error.code}: {error}")
        metrics.items_failed(error.code, len(moved))

    def give_back(self, item_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        """After a transient failure: items with attempts left go back to wait (a source to queued, a
        unit to ready) and are returned; the others fail, keeping ``error`` as their last reason."""
        limit = self.settings.limits.max_attempts
        with self.sessions() as s:
            items = [it for i in item_ids if (it := repo.get_item(s, i)) is not None]
        again = [it.id for it in items if it.attempts < limit]
        spent = [it.id for it in items if it.attempts >= limit]
        with self.sessions() as s, s.begin():
            # The state machine picks the way back: running units -> ready, preparing sources -> queued.
            back = repo.move_items(s, again, ItemStatus.READY) + repo.move_items(s, again, ItemStatus.QUEUED)
        if spent:
            self.fail_items(spent, error)
        return [it.id for it in back]

    def claim_units(self, unit_ids: Sequence[uuid.UUID]) -> list[UnitWork]:
        with self.sessions() as s, s.begin():
            units = repo.move_items(s, unit_ids, ItemStatus.RUNNING, {"attempts": Item.attempts + 1})
            return self.unit_work(s, units)

    def unit_work(self, s: Session, units: Sequence[Item]) -> list[UnitWork]:
        """What the engine needs for each claimed unit, with the result version it will write."""
        jobs = {u.job_id: repo.get_job(s, u.job_id) for u in units}
        versions = repo.next_versions(s, [u.id for u in units])
        return [self._unit_work(u, jobs[u.job_id], versions[u.id]) for u in units]

    def _unit_work(self, unit: Item, job: Job | None, version: int) -> UnitWork:
        assert job is not None
        opts, out = job.options, output_settings(self.settings, job.options)
        task = opts.get("task", presets.DEFAULT.name)
        # An item's own prompt goes through the job's task preset; else the job's resolved prompt.
        prompt, prompt_version = (
            presets.resolve(task, unit.prompt) if unit.prompt else (job.prompt, job.prompt_version)
        )
        hint = unit.text_key if opts.get("text_hint") else None
        return UnitWork(
            id=unit.id,
            job_id=unit.job_id,
            custom_id=unit.custom_id,
            page=unit.page if unit.page is not None else 1,
            media_key=unit.media_key or "",
            prompt=prompt,
            prompt_version=prompt_version + (presets.TEXT_HINT_SUFFIX if hint else ""),
            max_new_tokens=out["max_new_tokens"],
            temperature=out["temperature"],
            task=task,
            text_key=hint,
            flags=tuple(unit.options.get("flags", ())),
            version=version,
            settings=out,
        )

    def complete_unit(self, unit: UnitWork, result: dict[str, object]) -> bool:
        """Store the result and mark the unit succeeded, atomically. False if the unit was not running."""
        with self.sessions() as s, s.begin():
            moved = repo.move_items(s, [unit.id], ItemStatus.SUCCEEDED, {"error_code": None})
            if not moved:
                return False
            repo.upsert_result(
                s, {"job_id": unit.job_id, "item_id": unit.id, "version": unit.version, **result}
            )
        metrics.page_stored(result)
        return True

    def finalize(self, job_id: uuid.UUID) -> bool:
        """Settle sources whose pages are all done; complete the job once every source is terminal."""
        with self.sessions() as s, s.begin():
            repo.settle_sources(s, job_id)
            remaining = repo.open_sources(s, job_id)
            job = repo.get_job(s, job_id)
        if job is None or remaining or repo.job_is_terminal(job):
            return False
        out_key, err_key = self.write_outputs(job_id)
        with self.sessions() as s, s.begin():
            values = {"completed_at": func.now(), "output_key": out_key, "error_key": err_key}
            done = repo.move_job(s, job_id, JobStatus.COMPLETED, values)
        if done:
            log.info("job %s completed", job_id)
        return done

    def write_outputs(self, job_id: uuid.UUID) -> tuple[str, str]:
        """output.jsonl (results) and errors.jsonl (failures); deterministic keys, so rewrites are safe."""
        ok: list[str] = []
        bad: list[str] = []
        for line in self.results(None, job_id):
            (ok if line.status == "succeeded" else bad).append(line.model_dump_json())
        out_key, err_key = job_output_key(job_id, "output.jsonl"), job_output_key(job_id, "errors.jsonl")
        self.store.put(out_key, _jsonl(ok), "application/x-ndjson")
        self.store.put(err_key, _jsonl(bad), "application/x-ndjson")
        return out_key, err_key


def _jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + ("\n" if lines else "")).encode()


def _counts(by_status: dict[str, int]) -> Counts:
    failed = by_status.get(ItemStatus.FAILED, 0) + by_status.get(ItemStatus.CANCELLED, 0)
    return Counts(
        total=sum(by_status.values()), completed=by_status.get(ItemStatus.SUCCEEDED, 0), failed=failed
    )


_LINE_STATES = ("succeeded", "failed", "cancelled")


def _prep_work(item: Item, job_options: dict[str, Any], default_side: int) -> PrepWork:
    opts = {**job_options, **item.options}  # the item's own pages/password win over the job's
    return PrepWork(
        item.id,
        item.job_id,
        item.uri or "",
        int(opts.get("longest_side", default_side)),
        dpi=opts.get("dpi"),
        pages=opts.get("pages"),
        password=opts.get("password"),
        granularity=opts.get("granularity", "page"),
    )


def _result_line(src: Item, unit: Item | None, res: Result | None, bucket: str) -> ResultLine:
    owner = unit or src
    status = owner.status if owner.status in _LINE_STATES else "pending"
    line = ResultLine.model_validate(
        {"custom_id": src.custom_id, "page": unit.page if unit and unit.page else None, "status": status}
    )
    if unit is not None:
        line.pages = list(unit.options.get("pages", []))
        line.text_uri = f"s3://{bucket}/{unit.text_key}" if unit.text_key else None
    if owner.error_code:
        line.error = ErrorInfo(code=owner.error_code, message=owner.error_message or "")
    if res is not None:
        line.answer, line.reasoning = res.answer, res.reasoning
        line.boxes, line.regions = _boxes(res.boxes)
        line.finish_reason, line.truncated, line.answer_missing = (
            res.finish_reason,
            res.truncated,
            res.answer_missing,
        )
        line.flags, line.model_id, line.prompt_version = list(res.flags), res.model_id, res.prompt_version
        line.version, line.current, line.model_revision = res.version, res.is_current, res.model_revision
        line.settings, line.settings_hash = dict(res.settings), res.settings_hash or None
        total = res.prompt_tokens + res.completion_tokens
        line.usage = Usage(
            prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens, total_tokens=total
        )
    return line


def _boxes(stored: list[Any]) -> tuple[list[str], list[Region]]:
    """(box texts, regions) from a result's boxes: dicts with regions, or plain strings (older rows)."""
    texts = [b if isinstance(b, str) else b["text"] for b in stored]
    regions = [Region.model_validate(r) for b in stored if isinstance(b, dict) for r in b.get("regions", [])]
    return texts, regions


def build_service(settings: Settings) -> JobService:
    """The service on the configured Postgres, S3 and Redis: what the API and the workers run."""
    return JobService(session_factory(settings), S3BlobStore(settings), CeleryDispatcher(settings), settings)
