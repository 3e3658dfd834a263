"""What a worker is handed: a source to prepare (PrepWork), what prep made of it (PreparedUnit), a unit
to infer (UnitWork). Plain values, built by jobs.service from the rows in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from jobs.config import Settings
from jobs.fingerprint import output_settings
from jobs.models import Item, Job
from jobs.prompts import presets


@dataclass(frozen=True)
class PrepWork:
    item_id: uuid.UUID
    job_id: uuid.UUID
    uri: str
    longest_side: int
    priority: str = "normal"
    tenant: str = ""  # whose job: the URI is checked again for this tenant when it is read
    dpi: int | None = None
    pages: str | None = None  # page ranges, e.g. "1-3,7"
    password: str | None = field(default=None, repr=False)
    granularity: str = "page"  # or "document": the first pages in one unit
    attempt: int = 0  # the source's attempts once claimed: which claim this work is (0: unknown)


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


# A task's claims on units: {unit id: the attempts its claim set}. A claim adds one attempt, so a unit
# still running at that count is still under that claim (transitions.take_back).
Held = Mapping[uuid.UUID, int]


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
    parent_id: uuid.UUID | None = None
    task: str = presets.DEFAULT.name
    text_key: str | None = None  # set only when the text_hint option asks for the text in the prompt
    flags: tuple[str, ...] = ()  # from prep
    version: int = 1  # the result version this work writes: one past the item's latest
    settings: Mapping[str, Any] = field(default_factory=dict)  # jobs.fingerprint.output_settings
    attempt: int = 0  # the attempts its claim set: which claim this work is (transitions.take_back)
    rank: int = 0  # the engine priority its turn gave it (jobs.scheduling.fairness; lower: sooner)


T = TypeVar("T")


@dataclass(frozen=True)
class Claim(Generic[T]):
    """What a claim in turn took, and whether waiting work was held back: by a tenant cap, or not yet
    due again after a failure (items.retry_at). The task then hands its word on, to look again after
    ``fairness.recheck_seconds``, since nothing else would send word of that work."""

    taken: list[T]
    capped: bool = False


def prep_work(item: Item, job: Job, default_side: int) -> PrepWork:
    opts = {**job.options, **item.options}  # the item's own pages/password win over the job's
    return PrepWork(
        item.id,
        item.job_id,
        item.uri or "",
        int(opts.get("longest_side", default_side)),
        job.priority,
        job.tenant,
        dpi=opts.get("dpi"),
        pages=opts.get("pages"),
        password=opts.get("password"),
        granularity=opts.get("granularity", "page"),
        attempt=item.attempts,
    )


@dataclass(frozen=True)
class PageMedia:
    """A prepared page of a finished job, for calibration (``vlmq quantize --calibration JOB``)."""

    custom_id: str
    page: int
    media_key: str
    prompt: str


def unit_work(unit: Item, job: Job | None, version: int, settings: Settings) -> UnitWork:
    """What the engine needs for a claimed unit: its media, its resolved prompt, the settings that make
    its output, and the result version it writes."""
    assert job is not None
    opts, out = job.options, output_settings(settings, job.options)
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
        parent_id=unit.parent_id,
        task=task,
        text_key=hint,
        flags=tuple(unit.options.get("flags", ())),
        version=version,
        settings=out,
        attempt=unit.attempts,
    )
