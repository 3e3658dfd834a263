"""Use cases of the OpenAI-compatible API: files (upload, read) and batches (create, read, list, cancel).

A batch is one vlmq job. Its states follow the job's:

    validating -> in_progress -> finalizing -> completed | failed | expired | cancelled
                  in_progress -> cancelling -> finalizing -> cancelled
    validating -> failed                        (the input file is broken: ``errors``)

Validation runs in the create call (the file is read, every line checked, inline images stored in S3,
the job submitted), so ``validating`` is seen only by a concurrent reader. A file of one line naming a
source (jobs.openai.sources) has that source checked before the batch is stored: refused, no batch.
Finalizing happens on the first read after the job has ended: one reader wins the compare-and-set,
writes the output and error files (deterministic ids and keys, so a takeover after a crash rewrites the
same ones), and completes. The files stream from the job's results, as the job's own output files do
(jobs.views.outputs): a source batch of 10^6 requests is finalized in bounded memory.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import IO, Any

from pydantic import ValidationError

from jobs import submission, transitions
from jobs.adapters.storage import sha256_hex, spool, upload_key
from jobs.adapters.uris import UriPolicy
from jobs.clock import sql_now
from jobs.errors import (
    Conflict,
    ForbiddenUri,
    InvalidInput,
    NotFound,
    PermanentError,
    PromptMediaLimit,
    VlmqError,
)
from jobs.models import Batch, File
from jobs.openai import format as ob
from jobs.openai import repository as brepo
from jobs.openai import sources
from jobs.prompts.limits import check_prompt_text
from jobs.schemas import ItemIn, JobCreate, JobOptions, JobOut
from jobs.service import JobService
from jobs.status import JobStatus

log = logging.getLogger(__name__)
INPUT_PURPOSE = "batch"
OUTPUT_PURPOSE = "batch_output"
FINALIZE_TAKEOVER = timedelta(minutes=5)  # a finalizing batch untouched this long lost its process
_FINAL_FOR_JOB: dict[str, str] = {
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.EXPIRED: "expired",  # past its expiry (queue.job_expiry_seconds): unfinished items failed
}  # a CANCELLING job is not final: its batch stays "cancelling" until the job is CANCELLED
_EXTS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def _ts(dt: datetime | None) -> int | None:
    return int(dt.timestamp()) if dt else None


class BatchService:
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.sessions, self.store, self.settings = jobs.sessions, jobs.store, jobs.settings

    # -- files ---------------------------------------------------------------------------------------

    def upload(self, tenant: str, filename: str, purpose: str, f: IO[bytes], size: int) -> dict[str, Any]:
        """Store an input file streamed from ``f`` (S3 multipart: never whole in memory)."""
        if purpose != INPUT_PURPOSE:
            raise InvalidInput(f"purpose must be {INPUT_PURPOSE!r}: this server runs batch files only")
        file_id = f"file-{secrets.token_hex(12)}"
        self.store.put_file(_file_key(tenant, file_id), f, "application/jsonl")
        return self._record_file(tenant, file_id, filename, purpose, size)

    def _save_output(self, tenant: str, file_id: str, filename: str, f: IO[bytes]) -> str:
        """Store an output file written into ``f`` (its size is where the writing stopped), streamed."""
        size = f.tell()
        f.seek(0)
        self.store.put_file(_file_key(tenant, file_id), f, "application/jsonl")
        self._record_file(tenant, file_id, filename, OUTPUT_PURPOSE, size)
        return file_id

    def _record_file(
        self, tenant: str, file_id: str, filename: str, purpose: str, size: int
    ) -> dict[str, Any]:
        values = {"id": file_id, "tenant": tenant, "purpose": purpose, "filename": filename[:255]}
        with self.sessions() as s, s.begin():
            brepo.insert_file(s, {**values, "bytes": size, "key": _file_key(tenant, file_id)})
        return self.file(tenant, file_id)

    def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        with self.sessions() as s:
            rows = brepo.list_files(s, tenant, purpose, after, limit + 1, newest_first)
        return [_file_object(f) for f in rows[:limit]], len(rows) > limit

    def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        """Gone from every read at once; its bytes after the commit (an S3 error then leaves an object
        no one can name, never a listed file without content)."""
        with self.sessions() as s, s.begin():
            key = brepo.delete_file(s, tenant, file_id)
        if key is None:
            raise NotFound(f"file {file_id} not found")
        try:
            self.store.delete(key)
        except VlmqError:
            log.warning("file %s: its object %s was not deleted from S3", file_id, key, exc_info=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def _file_row(self, tenant: str, file_id: str) -> File:
        with self.sessions() as s:
            row = brepo.get_file(s, tenant, file_id)
        if row is None:
            raise NotFound(f"file {file_id} not found")
        return row

    def file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return _file_object(self._file_row(tenant, file_id))

    def file_content(self, tenant: str, file_id: str) -> bytes:
        return self.store.get(self._file_row(tenant, file_id).key)

    # -- batches -------------------------------------------------------------------------------------

    def create(
        self, tenant: str, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        if endpoint != ob.ENDPOINT:
            raise InvalidInput(f"endpoint must be {ob.ENDPOINT}; vlmq runs chat completions only")
        if window != ob.COMPLETION_WINDOW:
            raise InvalidInput(f"completion_window must be {ob.COMPLETION_WINDOW!r}")
        f = self._file_row(tenant, input_file_id)
        if f.purpose != INPUT_PURPOSE:
            raise InvalidInput(f"file {input_file_id} has purpose {f.purpose!r}, not {INPUT_PURPOSE!r}")
        parsed = self._parse(self.store.get(f.key))
        source = sources.job_request(parsed)
        if source is not None:  # POST /v1/jobs' checks: refused, 422 now, and no batch (jobs.openai.sources)
            submission.validate(self.jobs.settings, self.jobs.store, tenant, source)
        batch_id = f"batch_{secrets.token_hex(12)}"
        with self.sessions() as s, s.begin():
            s.add(
                Batch(
                    id=batch_id,
                    tenant=tenant,
                    input_file_id=f.id,
                    endpoint=endpoint,
                    completion_window=window,
                    status="validating",
                    meta=metadata,
                    expires_at=sql_now() + timedelta(hours=24),
                )
            )
        try:
            self._validate_and_submit(tenant, batch_id, parsed, source)
        except Exception as e:
            # Never leave a batch validating: it fails with the reason; a transient cause is raised too.
            err = e if isinstance(e, VlmqError) else VlmqError(f"{type(e).__name__}: {e}")
            values = {"errors": [ob.LineError(err.code, str(err)).batch_error()], "failed_at": sql_now()}
            self._move(batch_id, ("validating",), "failed", values)
            if not isinstance(e, PermanentError):
                raise
        return self.get(tenant, batch_id)

    def _parse(self, data: bytes) -> ob.ParsedFile:
        limits = self.settings.limits
        return ob.parse_file(
            data, max_image_bytes=limits.max_upload_bytes, max_requests=limits.max_items_per_job
        )

    def _validate_and_submit(
        self, tenant: str, batch_id: str, parsed: ob.ParsedFile, source: JobCreate | None
    ) -> None:
        if parsed.fatal:
            errs = [e.batch_error() for e in parsed.fatal]
            self._move(batch_id, ("validating",), "failed", {"errors": errs, "failed_at": sql_now()})
            return
        job_id, rejected = self._run(tenant, batch_id, parsed, source)
        rejected_key = None
        if rejected:
            rejected_key = f"batches/{batch_id}/rejected.jsonl"
            self.store.put(rejected_key, ob.jsonl(self._rejected_lines(batch_id, rejected)))
        total = len(parsed.requests) + len(parsed.rejected)
        values = {"job_id": job_id, "total": total, "rejected": len(rejected), "rejected_key": rejected_key}
        self._move(batch_id, ("validating",), "in_progress", {**values, "in_progress_at": sql_now()})

    def _run(
        self, tenant: str, batch_id: str, parsed: ob.ParsedFile, source: JobCreate | None
    ) -> tuple[uuid.UUID | None, list[ob.LineError]]:
        """Submit the batch's job, of its one source or of its listed requests; the lines refused."""
        if source is not None:
            return self.jobs.submit(tenant, source, f"openai:{batch_id}")[0].id, []
        items, rejected = self._items(tenant, parsed)
        return (self._submit(tenant, batch_id, items, parsed) if items else None), rejected

    def _items(self, tenant: str, parsed: ob.ParsedFile) -> tuple[list[ItemIn], list[ob.LineError]]:
        """One item per valid request; a request that cannot run (its image not allowed or not usable,
        a parameter the batch cannot honour) goes to the error file alone, and the others run."""
        items: list[ItemIn] = []
        rejected = list(parsed.rejected)
        temperature = next((r.temperature for r in parsed.requests if r.temperature is not None), None)
        policy = UriPolicy.from_settings(self.settings)
        for r in parsed.requests:
            try:
                if r.temperature is not None and r.temperature != temperature:
                    raise InvalidInput(
                        f"temperature {r.temperature} differs from the batch's {temperature}: "
                        "a batch runs as one job with one temperature"
                    )
                if r.image_uri is not None:
                    policy.check(r.image_uri, tenant)
                check_prompt_text(r.prompt, "the prompt")
                items.append(ItemIn(custom_id=r.custom_id, uri=self._image_uri(tenant, r), prompt=r.prompt))
            except (ForbiddenUri, PromptMediaLimit) as e:
                param = "image_url" if isinstance(e, ForbiddenUri) else "messages"
                rejected.append(ob.LineError(e.code, str(e), r.line, param, r.custom_id))
            except (InvalidInput, ValidationError) as e:
                message = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
                rejected.append(ob.LineError("invalid_request", message, r.line, None, r.custom_id))
        return items, rejected

    def _image_uri(self, tenant: str, r: ob.ParsedRequest) -> str:
        if r.image_data is None:
            return r.image_uri or ""
        name = f"image.{_EXTS.get(r.image_type or '', 'bin')}"  # the custom_id never goes into a key
        key = upload_key(tenant, sha256_hex(r.image_data), name)
        self.store.put(key, r.image_data, r.image_type or "application/octet-stream")
        return f"s3://{self.store.bucket}/{key}"

    def _submit(self, tenant: str, batch_id: str, items: list[ItemIn], parsed: ob.ParsedFile) -> uuid.UUID:
        wanted = [r.max_tokens for r in parsed.requests if r.max_tokens]
        temps = [r.temperature for r in parsed.requests if r.temperature is not None]
        # One job, one token limit: the largest any line asked for (a line asking less may get more).
        options = JobOptions(
            max_new_tokens=max(wanted) if wanted else None, temperature=temps[0] if temps else None
        )
        job, _ = self.jobs.submit(tenant, JobCreate(items=items, options=options), f"openai:{batch_id}")
        return job.id

    @staticmethod
    def _rejected_lines(batch_id: str, rejected: Iterable[ob.LineError]) -> list[dict[str, Any]]:
        return [ob.error_line(batch_id, e.custom_id or "", e.code, e.message, e.param) for e in rejected]

    def _move(self, batch_id: str, sources: tuple[str, ...], target: str, values: dict[str, Any]) -> bool:
        with self.sessions() as s, s.begin():
            return transitions.move_batch(s, batch_id, sources, target, values)

    def _row(self, tenant: str | None, batch_id: str) -> Batch:
        with self.sessions() as s:
            b = brepo.get_batch(s, tenant, batch_id)
        if b is None:
            raise NotFound(f"batch {batch_id} not found")
        return b

    def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        b = self._row(tenant, batch_id)
        job = self._refresh(b)
        return self._render(self._row(tenant, batch_id), job)

    def list(self, tenant: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        with self.sessions() as s:
            rows = brepo.list_batches(s, tenant, after, limit + 1)
        page = [self.get(tenant, b.id) for b in rows[:limit]]
        return page, len(rows) > limit

    def cancel(self, tenant: str, batch_id: str) -> dict[str, Any]:
        """Idempotent: a batch already cancelling or cancelled is returned as it is."""
        self._refresh(self._row(tenant, batch_id))  # a job that has just ended finalizes first
        b = self._row(tenant, batch_id)
        if b.status in ("cancelling", "cancelled"):
            return self.get(tenant, batch_id)
        if b.status != "in_progress":
            raise Conflict(f"batch {batch_id} is {b.status}; only a batch in progress can be cancelled")
        moved = self._move(batch_id, ("in_progress",), "cancelling", {"cancelling_at": sql_now()})
        if moved and b.job_id is not None:
            # The job may have ended meanwhile (a PermanentError): the read below finalizes it as cancelled.
            with contextlib.suppress(PermanentError):
                self.jobs.cancel(tenant, b.job_id)
        return self.get(tenant, batch_id)

    # -- state from the job, and finalizing ----------------------------------------------------------

    def _refresh(self, b: Batch) -> JobOut | None:
        """Follow the job; the first reader after its end finalizes. Returns the job (None: no job)."""
        job = self.jobs.get(None, b.job_id) if b.job_id else None
        if b.status not in ("in_progress", "cancelling", "finalizing"):
            return job
        done = job is None or job.status in _FINAL_FOR_JOB
        if not done:
            return job
        if self._move(b.id, ("in_progress", "cancelling"), "finalizing", {"finalizing_at": sql_now()}):
            self._finalize(b, job)
        else:
            with self.sessions() as s, s.begin():
                takeover = brepo.stale_finalizing(s, b.id, FINALIZE_TAKEOVER)
            if takeover:
                self._finalize(b, job)
        return job

    def _finalize(self, b: Batch, job: JobOut | None) -> None:
        final = _FINAL_FOR_JOB.get(job.status, "completed") if job else "completed"
        if b.cancelling_at is not None or b.status == "cancelling":
            final = "cancelled"
        out_id, err_id = self._write_files(b, "batch_expired" if final == "expired" else "batch_cancelled")
        values = {"output_file_id": out_id, "error_file_id": err_id, f"{final}_at": sql_now()}
        if final == "failed" and job is not None:
            values["errors"] = [ob.LineError("job_failed", job.error or "the job failed").batch_error()]
        self._move(b.id, ("finalizing",), final, values)

    def _write_files(self, b: Batch, not_run: str) -> tuple[str, str]:
        """The output and error files' ids, both written (ids and keys from the batch's id: a takeover
        rewrites the same). Streamed: the job's results from a server-side cursor, one request's lines
        in memory at a time, the files spooled to disk past SPOOL_BYTES; a source batch has 10^6 lines."""
        results = self.jobs.results(None, b.job_id) if b.job_id else iter(())
        with spool() as ok, spool() as bad:
            if b.rejected_key:  # the lines refused at creation come first (at most the input file's lines)
                bad.write(self.store.get(b.rejected_key))
            for good, line in ob.request_lines(b.id, results, _ts(b.created_at) or 0, not_run):
                (ok if good else bad).write(ob.jsonl_line(line))
            out = self._save_output(b.tenant, _derived_id(b.id, "output"), f"{b.id}_output.jsonl", ok)
            err = self._save_output(b.tenant, _derived_id(b.id, "errors"), f"{b.id}_error.jsonl", bad)
        return out, err

    def _render(self, b: Batch, job: JobOut | None) -> dict[str, Any]:
        lines = None if job is not None and job.listing is not None else b.total  # a source: the job's items
        counts = ob.request_counts(lines, job.request_counts if job else None, b.rejected)
        errors = {"object": "list", "data": b.errors} if b.errors else None
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": job.model_id if job else None,
            "errors": errors,
            "input_file_id": b.input_file_id,
            "completion_window": b.completion_window,
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "request_counts": counts,
            "metadata": b.meta,
            **{f"{k}_at": _ts(getattr(b, f"{k}_at")) for k in _STAMPS},
        }


_STAMPS = (
    "created",
    "in_progress",
    "expires",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


def _file_key(tenant: str, file_id: str) -> str:
    return f"files/{tenant}/{file_id}"


def _file_object(f: File) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": _ts(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def _derived_id(batch_id: str, kind: str) -> str:
    """The output and error files' ids follow from the batch's, so a rewrite lands on the same rows."""
    return f"file-{ob.request_id(batch_id, kind)}"
