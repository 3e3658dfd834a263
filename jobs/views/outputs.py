"""A job's output files, written when it ends (and again when a reopened job ends again): output.jsonl
(the succeeded lines), errors.jsonl (the others: failed, cancelled, expired, each with its error), and
every line as a dataset of Parquet and JSONL.gz shards with a manifest (jobs.views.datasets), and the
same dataset again at the job's destination if it names one (jobs.views.exports). Keys are
deterministic, so a rewrite replaces.

One pass over the job's result lines (jobs.repository.stream_result_rows, a server-side cursor), the
two JSONL files spooled to disk past 8 MiB and streamed to S3, the dataset a shard at a time: a job of
a million pages is written in bounded memory. The caller holds the job's finalizer lock
(JobService.write_outputs says why)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs.adapters.storage import BlobStore, job_output_key, spool
from jobs.adapters.uris import UriPolicy
from jobs.status import Outcome
from jobs.views import datasets, exports, lines

JSONL = "application/x-ndjson"


def write(s: Session, store: BlobStore, job_id: uuid.UUID, policy: UriPolicy) -> tuple[str, str]:
    """(output.jsonl key, errors.jsonl key), both written, and the dataset beside them (and at the job's
    destination: ``policy`` rules whether it may still be written there)."""
    dataset = datasets.DatasetWriter(store, datasets.dataset_prefix(job_id))
    export = exports.start(store, policy, repo.get_job(s, job_id))
    with spool() as ok, spool() as bad:
        for src, unit, res in repo.stream_result_rows(s, job_id):
            line = lines.result_line(src, unit, res, store.bucket)
            (ok if line.status == Outcome.SUCCEEDED else bad).write(line.model_dump_json().encode() + b"\n")
            dataset.add(line, src.uri)
            export.add(line, src.uri)
        dataset.finish()
        export.finish()
        keys = job_output_key(job_id, "output.jsonl"), job_output_key(job_id, "errors.jsonl")
        for f, key in zip((ok, bad), keys, strict=True):
            f.seek(0)
            store.put_file(key, f, JSONL)
    exports.record(s, job_id, export)
    return keys
