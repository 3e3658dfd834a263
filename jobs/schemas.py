"""Pydantic contracts shared by the API, the workers and the CLI."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobs import pagerange
from jobs.prompts import presets
from jobs.status import Outcome

# Any string, as OpenAI takes it ("req 1", unicode, slashes), up to the items column's 255 characters.
# It is kept safe where it is used by encoding it (JSON, HTML escaping, repr in messages and logs, never
# in an S3 key), not by refusing it. Only what Postgres text cannot hold is refused: NUL, and lone
# surrogates (not UTF-8).
CUSTOM_ID_MAX = 255


def check_custom_id(v: str) -> str:
    if not v:
        raise ValueError("custom_id must not be empty")
    if len(v) > CUSTOM_ID_MAX:
        raise ValueError(f"custom_id is {len(v)} characters; at most {CUSTOM_ID_MAX}")
    if "\x00" in v:
        raise ValueError("custom_id must not contain NUL (U+0000)")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("custom_id must be valid Unicode (it holds a lone surrogate)") from e
    return v


Task = Literal["caption", "ocr", "qa", "grounding"]
Granularity = Literal["page", "document"]


class ItemOptions(BaseModel):
    """Per-source options; set on the job they apply to every item that does not set its own."""

    model_config = ConfigDict(extra="forbid")

    pages: str | None = Field(
        default=None, max_length=500, description='1-based page ranges, e.g. "1-3,7" or "5-" (to the end)'
    )
    # Stored with the item (the prep worker needs it); never echoed back. Not shown in reprs/logs.
    password: str | None = Field(default=None, max_length=1024, repr=False, description="PDF password")

    @field_validator("pages")
    @classmethod
    def _page_syntax(cls, v: str | None) -> str | None:
        if v is not None:
            pagerange.parse(v)  # ValueError -> 422 naming the bad part
        return v


class JobOptions(ItemOptions):
    """Per-job generation and rendering options; unset values take the server's settings."""

    max_new_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    longest_side: int | None = Field(default=None, ge=64, le=4096, description="render size in pixels")
    dpi: int | None = Field(default=None, ge=36, le=600, description="render PDFs at this DPI instead")
    task: Task | None = Field(default=None, description="prompt preset (default caption)")
    granularity: Granularity | None = Field(
        default=None, description="page: a result per page (default); document: first pages in one prompt"
    )
    text_hint: bool | None = Field(default=None, description="add the PDF's text layer to the prompt")

    @model_validator(mode="after")
    def _one_size(self) -> JobOptions:
        if self.dpi is not None and self.longest_side is not None:
            raise ValueError("give longest_side or dpi, not both")
        return self


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(description=f"any string of 1-{CUSTOM_ID_MAX} characters, unique in the job")
    uri: str = Field(
        min_length=6,
        max_length=2048,
        description="s3://bucket/key of a PDF, image, office file or video (https:// if the server allows)",
    )
    prompt: str | None = Field(default=None, max_length=20_000)
    options: ItemOptions | None = None

    _custom_id = field_validator("custom_id")(check_custom_id)

    @field_validator("uri")
    @classmethod
    def _s3_form(cls, v: str) -> str:
        # Only the form of an s3:// URI here; which schemes, buckets, prefixes and hosts a tenant may
        # name is the server's policy (jobs.adapters.uris: forbidden_uri, at submission and again at
        # fetch time).
        if v.startswith("s3://") and ("/" not in v[5:] or v.endswith("/")):
            raise ValueError("uri must be s3://bucket/key")
        return v


class SourceIn(BaseModel):
    """A job's items named by where they are instead of listed: an S3 prefix with a glob, or a manifest
    object (JSONL lines ``{"uri", "custom_id"?, "prompt"?, "options"?}``, or CSV with a header naming
    ``uri`` and optionally ``custom_id``, ``prompt``). Listed a page at a time while the job runs."""

    model_config = ConfigDict(extra="forbid")

    prefix: str | None = Field(
        default=None,
        max_length=1024,
        description="s3://bucket/prefix/**/*.pdf: * within a path segment, ** across segments",
    )
    manifest: str | None = Field(
        default=None, max_length=2048, description="s3://bucket/key.jsonl or .csv: one item a line"
    )
    incremental: bool = Field(
        default=True,
        description="skip objects this tenant already has a succeeded result for, with the same prompt, "
        "options and model (a prefix's object also with the same ETag)",
    )

    @model_validator(mode="after")
    def _one_of(self) -> SourceIn:
        if (self.prefix is None) == (self.manifest is None):
            raise ValueError("a source is a prefix or a manifest: give exactly one")
        return self

    @property
    def kind(self) -> Literal["prefix", "manifest"]:
        return "prefix" if self.prefix is not None else "manifest"

    @property
    def uri(self) -> str:
        return self.prefix if self.prefix is not None else str(self.manifest)


class DatasetIn(BaseModel):
    """Where the job's dataset also goes, besides the job's own prefix (which always has it)."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(
        min_length=6,
        max_length=1024,
        description="s3://bucket/prefix/ the tenant may write to (settings inputs.write_grants): the "
        "shards and manifest.json go under it, overwritten when the job writes its dataset again",
    )


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(default_factory=list, description="the items; or give a source instead")
    source: SourceIn | None = Field(default=None, description="list the items from S3 as the job runs")
    prompt: str | None = Field(default=None, max_length=20_000)
    options: JobOptions = Field(default_factory=JobOptions)
    # "low" work waits in its own queues (gpu-low, prep-low) behind every "normal" job.
    priority: Literal["normal", "low"] = "normal"
    dataset: DatasetIn | None = Field(default=None, description="also write the dataset to this prefix")

    @field_validator("items")
    @classmethod
    def _unique_custom_ids(cls, items: list[ItemIn]) -> list[ItemIn]:
        counts = Counter(i.custom_id for i in items)
        dupes = sorted(c for c, n in counts.items() if n > 1)
        if dupes:
            raise ValueError(f"custom_id must be unique within a job; repeated: {', '.join(dupes[:10])}")
        return items

    @model_validator(mode="after")
    def _items_or_source(self) -> JobCreate:
        if bool(self.items) == (self.source is not None):
            raise ValueError("a job has items or a source (an S3 prefix or a manifest): give exactly one")
        return self

    @model_validator(mode="after")
    def _prompt_for_task(self) -> JobCreate:
        """qa and grounding put the user's prompt into their template: every item must have one."""
        preset = presets.get(self.options.task)
        if preset.needs_prompt and not (self.prompt or "").strip():
            if self.source is not None and self.source.prefix is not None:
                raise ValueError(f"task {preset.name!r} needs a prompt: a prefix's objects take the job's")
            missing = [it.custom_id for it in self.items if not (it.prompt or "").strip()]
            if missing:
                raise ValueError(
                    f"task {preset.name!r} needs a prompt (the question or what to find) on the job or "
                    f"on every item; none for: {', '.join(missing[:10])}"
                )
        return self


class EventOut(BaseModel):
    """One event of a job's history: a status move (``from_status`` -> ``to_status``) of the job or of an
    item (``custom_id``, ``page``), or what happened to it (``kind``: job.submitted, item.error,
    items.reopened, result.versioned, ...; ``detail``)."""

    id: int
    at: datetime
    kind: str
    custom_id: str | None = None
    page: int | None = None
    from_status: str | None = None
    to_status: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, e: Any, custom_id: str | None, page: int | None) -> EventOut:
        """From an ``events`` row (jobs.models.Event) and its item's custom_id and page."""
        return cls(id=e.id, at=e.created_at, kind=e.kind, custom_id=custom_id, page=page,
                   from_status=e.from_status, to_status=e.to_status, detail=e.detail)  # fmt: skip


class Counts(BaseModel):
    """Items by outcome (jobs.status.outcome); the ones not counted under an outcome are pending."""

    total: int = Field(default=0, description="every item")
    completed: int = Field(default=0, description="succeeded: a result")
    failed: int = Field(default=0, description="failed with an error; not the cancelled or expired ones")
    cancelled: int = Field(default=0, description="not finished when the job was cancelled")
    expired: int = Field(default=0, description="not finished when the job passed its expiry time")

    @classmethod
    def tally(cls, by_outcome: Mapping[Outcome, int]) -> Counts:
        return cls(
            total=sum(by_outcome.values()),
            completed=by_outcome.get(Outcome.SUCCEEDED, 0),
            failed=by_outcome.get(Outcome.FAILED, 0),
            cancelled=by_outcome.get(Outcome.CANCELLED, 0),
            expired=by_outcome.get(Outcome.EXPIRED, 0),
        )

    @property
    def finished(self) -> int:
        """Items with an outcome, whichever: what a progress bar shows as done."""
        return self.completed + self.failed + self.cancelled + self.expired


class ForecastOut(BaseModel):
    """When the job should start and finish at its share of the fleet's recent pace
    (jobs.scheduling.estimate): an estimate that moves as other jobs come and go."""

    starts_at: datetime | None = Field(description="when it started, or when its first page should run")
    finishes_at: datetime | None = Field(description="when its last page should end")
    pages_per_second: float = Field(description="its share of the fleet's pace once its turn comes")


class ListingOut(BaseModel):
    """Where the listing of a job submitted as a source stands: ``discovered`` objects (or manifest
    lines) so far, ``skipped`` of them as done before (incremental), the rest the job's items."""

    kind: Literal["prefix", "manifest"]
    uri: str
    status: str = Field(description="listing, done, stopped (job cancelled or expired), failed (see error)")
    discovered: int
    skipped: int
    pages: int
    error: str | None = None


class DatasetOut(BaseModel):
    """The copy of the job's dataset at its destination (``dataset.prefix`` at submission)."""

    prefix: str
    written_at: datetime | None = Field(description="when a copy was last written there in full")
    error: str | None = Field(
        default=None, description="why the last write there failed (the job's own dataset is intact)"
    )


class JobOut(BaseModel):
    id: uuid.UUID
    status: str
    request_counts: Counts
    page_counts: Counts
    model_id: str
    prompt_version: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None = None
    priority: str = "normal"
    expires_at: datetime | None = None
    forecast: ForecastOut | None = None  # None: finished, or no page ended lately to estimate from
    listing: ListingOut | None = None  # a job submitted as a source: its listing's progress
    dataset: DatasetOut | None = None  # a job with a dataset destination: its copy there


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Region(BaseModel):
    """One box the model drew (grounding). ``normalized`` is what it wrote: corners in 0-1000 of the
    image's width and height. ``box`` is the same in pixels of the page image (the rendered page the
    model saw), or None when the unit held several images and the box's image is unknown."""

    normalized: list[float]
    box: list[int] | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


class ResultLine(BaseModel):
    """One line of a job's results JSONL: a page's result, or an item's/page's error."""

    custom_id: str
    page: int | None
    status: Outcome = Field(description="the item's outcome: succeeded, failed, cancelled, expired, pending")
    answer: str | None = None
    reasoning: str | None = None
    boxes: list[str] = Field(default_factory=list)  # the text of each <|begin_of_box|> in the answer
    regions: list[Region] = Field(default_factory=list)  # boxes parsed to coordinates
    pages: list[int] = Field(default_factory=list)  # granularity "document": the pages in the prompt
    text_uri: str | None = None  # s3:// URI of the PDF text layer (empty: no text); None: images, videos
    finish_reason: str | None = None
    truncated: bool | None = None
    answer_missing: bool | None = None
    flags: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    model_id: str | None = None
    prompt_version: str | None = None
    # Which result this is: reprocessing adds versions; history=true lists the older ones too.
    version: int | None = None
    current: bool | None = None
    model_revision: str | None = None
    settings: dict[str, Any] | None = None  # the engine/render settings that made it (jobs.fingerprint)
    settings_hash: str | None = None
    error: ErrorInfo | None = Field(
        default=None,
        description="why there is no answer: on every failed, cancelled or expired line (and on a "
        "pending one, its last transient error while it waits to be tried again)",
    )
