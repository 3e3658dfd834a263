"""Submitting a job: its checks (limits, prompts, every URI for the tenant, a source's and a dataset
destination's grants), the idempotency key's earlier job, and the one transaction that stores the job and
its items. jobs.service.JobService.submit runs them in that order and enqueues after the commit."""

from __future__ import annotations

import hashlib
import uuid

from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session, sessionmaker

from jobs import control, leases, listings
from jobs import repository as repo
from jobs.adapters import uris
from jobs.adapters.storage import BlobStore
from jobs.config import Settings
from jobs.errors import Conflict, InvalidInput
from jobs.models import Job
from jobs.prompts import presets
from jobs.prompts.limits import check_prompt_text
from jobs.schemas import JobCreate
from jobs.status import ItemStatus, JobStatus


def request_hash(req: JobCreate) -> str:
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()


def validate(settings: Settings, store: BlobStore, tenant: str, req: JobCreate) -> None:
    limit = settings.limits.max_items_per_job
    if len(req.items) > limit:
        raise InvalidInput(f"a job holds at most {limit} items; this one has {len(req.items)}")
    check_prompt_text(req.prompt, "job prompt")
    policy = uris.UriPolicy.from_settings(settings)
    if req.source is not None:
        listings.check(getattr(store, "client", None), policy, tenant, req.source)
    if req.dataset is not None:
        policy.check_write(req.dataset.prefix, tenant)
    for it in req.items:
        check_prompt_text(it.prompt, f"item {it.custom_id!r}")
        policy.check(it.uri, tenant, it.custom_id)


def prior(sessions: sessionmaker[Session], tenant: str, key: str, digest: str) -> Job | None:
    with sessions() as s:
        job = repo.job_by_idempotency_key(s, tenant, key)
    if job is not None and job.request_hash != digest:
        raise Conflict("this Idempotency-Key was used with a different request body")
    return job


def insert(
    sessions: sessionmaker[Session],
    settings: Settings,
    tenant: str,
    req: JobCreate,
    key: str | None,
    digest: str,
) -> tuple[Job, list[uuid.UUID]]:
    preset = presets.get(req.options.task)
    # A qa/grounding job with no prompt of its own: every item has one (JobCreate checks), and the
    # job keeps the bare template.
    prompt, version = (
        (preset.prompt, preset.version)
        if preset.needs_prompt and not req.prompt
        else presets.resolve(preset.name, req.prompt)
    )
    with sessions() as s, s.begin():
        control.check_tenant(s, settings, tenant, len(req.items))
        job = Job(
            id=uuid.uuid4(),
            tenant=tenant,
            priority=req.priority,
            expires_at=leases.lease_until(settings.queue.job_expiry_seconds),
            status=str(JobStatus.QUEUED),
            prompt=prompt,
            prompt_version=version,
            options=req.options.model_dump(exclude_none=True),
            model_id=settings.model_id,
            idempotency_key=key,
            request_hash=digest,
            total_items=len(req.items),
            dataset_prefix=req.dataset.prefix if req.dataset else None,
        )
        s.add(job)
        s.flush()
        if req.source is not None:
            listings.start(s, job.id, req.source)
        ids = [uuid.uuid4() for _ in req.items]
        sources = [
            (
                item_id,
                job.id,
                it.custom_id,
                "source",
                it.uri,
                it.prompt,
                str(ItemStatus.QUEUED),
                Jsonb(it.options.model_dump(exclude_none=True) if it.options else {}),
            )
            for item_id, it in zip(ids, req.items, strict=True)
        ]
        repo.copy_sources(s, sources)  # COPY: a 10,000-item job is stored in a fraction of a second
        repo.add_event(s, job.id, "job.submitted", to_status=str(JobStatus.QUEUED))
        s.flush()
        s.refresh(job, ["priority", "expires_at"])
    return job, ids
