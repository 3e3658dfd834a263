"""A job's dataset written again at a destination of the tenant's own (``"dataset": {"prefix": ...}``),
beside the job's own copy (jobs.views.outputs): the same shards and manifest.json, named relative to the
prefix, so a rewrite overwrites the same objects and deletes the shards an earlier, larger dataset left
there (jobs.views.datasets.DatasetWriter).

The destination is checked again as it is written, for the job's tenant (UriPolicy.check_write): a grant
taken back since submission takes effect. Nothing that goes wrong there (a refusal, a missing or denied
bucket, S3 unreachable) holds up the job's own copy, its output files or its end: this copy stops, and
the job says why (``dataset_error``, event ``dataset.failed``). A full write sets ``dataset_written_at``
and clears the error (event ``dataset.written``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs.adapters.buckets import BucketStore
from jobs.adapters.storage import BlobStore
from jobs.adapters.uris import UriPolicy
from jobs.clock import sql_now
from jobs.errors import StorageUnavailable, VlmqError
from jobs.models import Job
from jobs.schemas import DatasetOut, ResultLine
from jobs.views.datasets import DatasetWriter, ShardStore

log = logging.getLogger(__name__)


class Export:
    """A second dataset writer, fed the same lines as the job's own; its first failure stops it and is
    kept as ``error``. ``uri`` None: the job has no destination, and this does nothing."""

    def __init__(
        self, uri: str | None, writer: DatasetWriter | None = None, error: str | None = None
    ) -> None:
        self.uri, self.writer, self.error = uri, writer, error

    def add(self, line: ResultLine, source_uri: str | None) -> None:
        self._guarded(lambda w: w.add(line, source_uri))

    def finish(self) -> None:
        self._guarded(lambda w: w.finish())

    def _guarded(self, step: Callable[[DatasetWriter], Any]) -> None:
        if self.writer is None or self.error is not None:
            return
        try:
            step(self.writer)
        except Exception as e:  # whatever the tenant's bucket does, the job's own copy goes on
            log.warning("dataset destination %s: %s", self.uri, e, exc_info=True)
            self.error = _reason(e)


def start(store: BlobStore, policy: UriPolicy, job: Job | None) -> Export:
    """The export of ``job``'s dataset, checked now for its tenant; one that will not write (refused)
    carries its reason from the start."""
    if job is None or job.dataset_prefix is None:
        return Export(None)
    try:
        uri = policy.check_write(job.dataset_prefix, job.tenant)
        bucket, _, key = uri[5:].partition("/")
        return Export(uri, DatasetWriter(_store_for(store, bucket), key))
    except VlmqError as e:
        return Export(job.dataset_prefix, error=_reason(e))


def _store_for(store: BlobStore, bucket: str) -> ShardStore:
    """The server's store for its own bucket (a granted prefix there); another bucket through its client."""
    if bucket == store.bucket:
        return store
    client = getattr(store, "client", None)
    if client is None:
        raise StorageUnavailable(f"this store cannot reach bucket {bucket!r}")
    return BucketStore(client, bucket)


def record(s: Session, job_id: uuid.UUID, export: Export) -> None:
    """The export's end on the job and in its history, in the finalizer's transaction."""
    if export.uri is None:
        return
    values: dict[str, Any] = {"dataset_error": export.error}
    if export.error is None:
        values["dataset_written_at"] = sql_now()
    s.execute(update(Job).where(Job.id == job_id).values(**values))
    kind = "dataset.failed" if export.error else "dataset.written"
    repo.add_event(s, job_id, kind, detail=f"{export.uri}: {export.error}" if export.error else export.uri)


def progress(job: Job) -> DatasetOut | None:
    """What GET /v1/jobs/{id} shows of the job's destination (None: it has none)."""
    if job.dataset_prefix is None:
        return None
    return DatasetOut(prefix=job.dataset_prefix, written_at=job.dataset_written_at, error=job.dataset_error)


def _reason(e: Exception) -> str:
    code = e.code if isinstance(e, VlmqError) else type(e).__name__
    return f"{code}: {e}"[:4000]
