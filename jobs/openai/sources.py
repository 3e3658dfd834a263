"""A batch of one source (issue 25): an input file whose one request line carries ``body.vlmq.source``
(an S3 prefix with a glob, or a manifest: the object POST /v1/jobs takes as ``source``) in place of an
image. The batch runs as one job submitted as that source (jobs.listings): each object listed is a
request whose ``custom_id`` is its key (or its manifest line's), its answer an output-file line; the
line's text parts are every request's prompt, its max_tokens and temperature the job's.

The source is checked as POST /v1/jobs checks it (jobs.submission.validate: the tenant may read it, and
it can be read now) before the batch is stored, so a refused source answers 422 naming the problem and
leaves no batch behind; the job's submission checks it again, and each listed key is checked while
listing, as for any source job. The batch's counts and files come from its job like any batch's."""

from __future__ import annotations

from pydantic import ValidationError

from jobs.errors import InvalidInput
from jobs.openai import format as ob
from jobs.schemas import JobCreate, JobOptions


def job_request(parsed: ob.ParsedFile) -> JobCreate | None:
    """The job of a file whose line names a source; None for a file of listed requests, or a broken one
    (which fails the batch as any broken file does)."""
    r = next((r for r in parsed.requests if r.source is not None), None)
    if r is None or parsed.fatal:
        return None
    options = {"max_new_tokens": r.max_tokens, "temperature": r.temperature}
    try:
        return JobCreate(source=r.source, prompt=r.prompt, options=JobOptions.model_validate(options))
    except ValidationError as e:
        raise InvalidInput(f"line {r.line} ({r.custom_id!r}): {e.errors()[0]['msg']}") from e
