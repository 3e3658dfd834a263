"""/v1/jobs: submit (JSON or multipart upload), read status, stream results, cancel, retry."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.deps import ServiceDep, SettingsDep, TenantDep
from jobs.adapters.storage import file_sha256, upload_key
from jobs.config import Settings
from jobs.errors import InvalidInput, SourceTooLarge
from jobs.schemas import JobCreate, JobOut
from jobs.service import JobService
from jobs.status import Outcome
from jobs.views import datasets

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]

_SUBMIT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "prompt": {"type": "string"},
                        "options": {"type": "string", "description": "JobOptions as JSON"},
                        "dataset": {
                            "type": "string",
                            "description": "s3:// prefix: the dataset also goes there",
                        },
                    },
                }
            },
        },
    }
}


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_SUBMIT_DOC)
async def create_job(
    request: Request,
    response: Response,
    service: ServiceDep,
    settings: SettingsDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """202 with the new job; 200 with the earlier job when the Idempotency-Key was seen before."""
    # The body's size is capped while it streams, for every route alike (api.limits).
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        req = await _from_upload(request, service, settings, tenant)
    else:
        req = _parse(JobCreate, await request.body())
    job, created = await run_in_threadpool(service.submit, tenant, req, idempotency_key)
    response.status_code = 202 if created else 200
    return await run_in_threadpool(service.get, tenant, job.id)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: uuid.UUID, service: ServiceDep, tenant: TenantDep) -> JobOut:
    return await run_in_threadpool(service.get, tenant, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
async def cancel_job(job_id: uuid.UUID, service: ServiceDep, tenant: TenantDep) -> JobOut:
    """Cancel: the job is ``cancelling`` until its in-flight items stop, then ``cancelled``; waiting
    items are cancelled at once. A finished job is returned unchanged."""
    return await run_in_threadpool(service.cancel, tenant, job_id)


@router.post("/{job_id}/retry", response_model=JobOut)
async def retry_job(job_id: uuid.UUID, service: ServiceDep, tenant: TenantDep) -> JobOut:
    """Re-queue the failed and expired items (only those) and reopen the job; 409 when there are none
    or it was cancelled."""
    return await run_in_threadpool(service.retry, tenant, job_id)


@router.get("/{job_id}/results", response_class=StreamingResponse)
async def get_results(
    job_id: uuid.UUID,
    service: ServiceDep,
    tenant: TenantDep,
    status: Annotated[
        Outcome | None, Query(description="only lines with this outcome (the job's counts count the same)")
    ] = None,
    history: bool = False,
) -> StreamingResponse:
    """JSONL: one line per page result, and one per item or page without one, with its error: failed,
    cancelled, expired (``?status=failed`` and ``?status=expired``: what a retry would re-queue).
    ``history=true``: one line per result version (``version``, ``current``), oldest first per page."""
    lines = await run_in_threadpool(service.results, tenant, job_id, status, history)  # 404 now

    def body() -> Iterator[bytes]:  # read while it is sent (Starlette runs it in its thread pool)
        for line in lines:
            yield (line.model_dump_json() + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson")


@router.get("/{job_id}/dataset")
async def get_dataset(job_id: uuid.UUID, service: ServiceDep, tenant: TenantDep) -> Response:
    """The manifest of the job's results as a dataset (written when the job ends): its columns and its
    shards, each as Parquet and as JSONL.gz, named relative to the manifest: fetch them from
    ``/v1/jobs/{id}/dataset/{name}``. docs/datasets.md shows pandas, duckdb and ``datasets`` reading it."""
    return await _dataset_file(service, tenant, job_id, "manifest.json")


@router.get("/{job_id}/dataset/{name}")
async def get_dataset_file(job_id: uuid.UUID, name: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """One shard of the job's dataset (``part-00000.parquet``, ``part-00000.jsonl.gz``, ...)."""
    return await _dataset_file(service, tenant, job_id, name)


async def _dataset_file(service: JobService, tenant: str, job_id: uuid.UUID, name: str) -> Response:
    def read() -> tuple[bytes, str]:
        service.check_owner(tenant, job_id)
        return datasets.read(service.store, job_id, name)

    data, kind = await run_in_threadpool(read)
    return Response(data, media_type=kind)


@router.get("/{job_id}/events")
async def get_events(
    job_id: uuid.UUID,
    service: ServiceDep,
    tenant: TenantDep,
    after: Annotated[int, Query(ge=0, description="the last event id already read")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """The job's history, oldest first: every status move of the job and its items (from, to), its
    submission, errors and reopenings. Page with ``after`` = the last ``id`` read (``next``)."""
    data = await run_in_threadpool(service.events, tenant, job_id, after, limit)
    return {
        "data": [e.model_dump(mode="json") for e in data],
        "next": data[-1].id if len(data) == limit else None,
    }


def _parse(model: type[JobCreate], raw: bytes | dict[str, Any]) -> JobCreate:
    try:
        if isinstance(raw, bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False)) from e


async def _from_upload(request: Request, service: JobService, settings: Settings, tenant: str) -> JobCreate:
    """Store each uploaded file in S3 first (content-addressed), then submit them as s3:// items."""
    limit = settings.limits.max_upload_bytes
    async with request.form(max_files=1000, max_fields=10) as form:
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidInput("multipart upload needs at least one 'file' part")
        items = await _store_uploads(files, service, tenant, limit, settings.s3.put_concurrency)
        options, prompt, dataset = form.get("options"), form.get("prompt"), form.get("dataset")
    try:
        opts = json.loads(options) if isinstance(options, str) and options else {}
    except json.JSONDecodeError as e:
        raise InvalidInput(f"'options' is not valid JSON: {e}") from e
    body = {"items": items, "prompt": prompt if isinstance(prompt, str) else None, "options": opts}
    if isinstance(dataset, str) and dataset:  # the JSON body's {"dataset": {"prefix": ...}}
        body["dataset"] = {"prefix": dataset}
    return _parse(JobCreate, body)


async def _store_uploads(
    files: list[UploadFile], service: JobService, tenant: str, limit: int, concurrency: int
) -> list[dict[str, str]]:
    """The files stored in S3 ``concurrency`` at once (``VLMQ_S3__PUT_CONCURRENCY``), as items in upload
    order. Each PUT is a round trip: 32 PDFs one after another took 0.15-0.26 s against moto on the
    development machine, and S3 across a network takes tens of milliseconds a PUT. At most
    ``concurrency`` files are read into memory at once. The first error (a file over the limit, S3
    down) is raised as itself; the other uploads are stopped (content-addressed: any stored is harmless)."""
    seen: set[str] = set()
    names = [_custom_id(f.filename or "upload", seen) for f in files]
    uris = [""] * len(files)
    limiter = anyio.CapacityLimiter(concurrency)

    async def store(i: int, f: UploadFile) -> None:
        async with limiter:
            uris[i] = await _store_upload(f, service, tenant, limit)

    try:
        async with anyio.create_task_group() as tg:
            for i, f in enumerate(files):
                tg.start_soon(store, i, f)
    except BaseExceptionGroup as group:  # the task group's wrapping, off: the error handlers see the error
        raise _first(group) from None
    return [{"custom_id": n, "uri": u} for n, u in zip(names, uris, strict=True)]


def _first(group: BaseExceptionGroup) -> BaseException:
    e = group.exceptions[0]
    return _first(e) if isinstance(e, BaseExceptionGroup) else e


async def _store_upload(f: UploadFile, service: JobService, tenant: str, limit: int) -> str:
    """Hashed and stored from Starlette's spooled file in 1 MiB reads: never whole in memory."""
    if (f.size or 0) > limit:
        raise SourceTooLarge(f"{f.filename}: {f.size} bytes; the limit is {limit}")
    digest = await run_in_threadpool(file_sha256, f.file)
    key = upload_key(tenant, digest, f.filename or "upload")
    ctype = f.content_type or "application/octet-stream"
    await run_in_threadpool(service.store.put_file, key, f.file, ctype)
    return f"s3://{service.store.bucket}/{key}"


def _custom_id(filename: str, seen: set[str]) -> str:
    """A file's name as its custom_id (any characters but controls), unique within the upload
    (report.pdf, report.pdf-2)."""
    base = re.sub(r"[\x00-\x1f\x7f]", "", filename.replace("\\", "/").rsplit("/", 1)[-1])
    base = base.encode("utf-8", "replace").decode("utf-8")[:240].strip() or "upload"
    name, n = base, 1
    while name in seen:
        n += 1
        name = f"{base}-{n}"
    seen.add(name)
    return name
