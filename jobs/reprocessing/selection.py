"""Which items a reprocessing run takes: the rules, the target, and the one query that applies them.

Rules (each can be turned off):
- failed: a failed page (re-run its inference), or a failed source that was never prepared (re-run prep;
  it may have pages, made before a later page failed);
- outdated: a succeeded page whose current result was made by another model id or model revision than
  the target's, or by an older version of the preset prompt its job uses (items with their own prompt
  text never go out of date: the text is the user's).
Filters: job ids, tenant, submission time range, custom ids. Only items of completed jobs are taken
(a running job's items are still on their way), and never an item already open in another run.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, and_, case, exists, false, func, literal, null, or_, select
from sqlalchemy.orm import aliased

from jobs.config import Settings
from jobs.models import Item, Job, Result
from jobs.prompts import presets
from jobs.reprocessing.models import ReprocessEntry
from jobs.status import ENTRY_OPEN, ItemStatus, JobStatus

OPEN_STATES = ENTRY_OPEN


class Rules(BaseModel):
    """What to select. Stored on the run, and part of a CLI run's default dedupe key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failed: bool = True
    outdated: bool = True
    job_ids: tuple[uuid.UUID, ...] = ()
    tenant: str | None = None
    since: datetime | None = None  # jobs submitted at or after
    until: datetime | None = None  # jobs submitted before
    custom_ids: tuple[str, ...] = ()
    limit: int = Field(default=10_000, ge=1)


@dataclass(frozen=True)
class Target:
    """What results should be made with now: the workers' model and the presets' current versions."""

    model_id: str
    model_revision: str | None
    preset_versions: tuple[tuple[str, str], ...]  # (name, current version)

    @classmethod
    def from_settings(cls, settings: Settings) -> Target:
        versions = tuple(sorted((p.name, p.version) for p in presets.PRESETS.values()))
        return cls(settings.model_id, settings.model.revision, versions)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _expected_prompt_version(target: Target) -> ColumnElement[Any]:
    """The job's prompt version, or the current version of the preset it names.

    Preset versions are "<name>-<suffix>" (caption-v1): a job at caption-v1 expects caption-v2 once the
    preset moved on. A custom prompt's version (custom-<hash>) never matches a preset name.
    """
    whens = [
        (Job.prompt_version.startswith(f"{name}-", autoescape=True), v) for name, v in target.preset_versions
    ]
    if not whens:
        return Job.prompt_version.expression
    return case(*whens, else_=Job.prompt_version)


def _filters(rules: Rules, item: Any) -> list[ColumnElement[bool]]:
    open_entry = exists().where(ReprocessEntry.item_id == item.id, ReprocessEntry.state.in_(OPEN_STATES))
    conds = [Job.status == str(JobStatus.COMPLETED), ~open_entry]
    if rules.job_ids:
        conds.append(Job.id.in_(rules.job_ids))
    if rules.tenant is not None:
        conds.append(Job.tenant == rules.tenant)
    if rules.since is not None:
        conds.append(Job.created_at >= rules.since)
    if rules.until is not None:
        conds.append(Job.created_at < rules.until)
    if rules.custom_ids:
        conds.append(item.custom_id.in_(rules.custom_ids))
    return conds


def _columns(item: Any, mode: Any, reason: Any, from_version: Any) -> list[ColumnElement[Any]]:
    return [
        item.id.label("item_id"),
        item.job_id.label("job_id"),
        mode.label("mode"),
        reason.label("reason"),
        from_version.label("from_version"),
        Job.created_at.label("submitted"),
    ]


def _failed(rules: Rules) -> Select[Any]:
    item = aliased(Item)
    page_failed = and_(item.parent_id.is_not(None), item.status == str(ItemStatus.FAILED))
    never_expanded = and_(  # prepared sources have a page count (jobs.units.finish_prep)
        item.parent_id.is_(None), item.status == str(ItemStatus.FAILED), item.page_count.is_(None)
    )
    return (
        select(*_columns(item, literal("retry"), literal("failed"), null()))
        .join(Job, Job.id == item.job_id)
        .where(or_(page_failed, never_expanded) if rules.failed else false(), *_filters(rules, item))
    )


def _outdated(rules: Rules, target: Target) -> Select[Any]:
    unit = aliased(Item)
    model_moved = or_(
        Result.model_id != target.model_id,
        func.coalesce(Result.model_revision, "") != (target.model_revision or ""),
    )
    prompt_moved = and_(unit.prompt.is_(None), Result.prompt_version != _expected_prompt_version(target))
    reason = case((model_moved, "model"), else_="prompt")
    return (
        select(*_columns(unit, literal("refresh"), reason, Result.version))
        .join(Result, and_(Result.item_id == unit.id, Result.is_current))
        .join(Job, Job.id == unit.job_id)
        .where(
            unit.parent_id.is_not(None),
            unit.status == str(ItemStatus.SUCCEEDED),
            or_(model_moved, prompt_moved) if rules.outdated else false(),
            *_filters(rules, unit),
        )
    )


def candidates(rules: Rules, target: Target) -> Select[Any]:
    """(item_id, job_id, mode, reason, from_version) for every item the rules take, oldest jobs first,
    at most ``rules.limit``."""
    both = _failed(rules).union_all(_outdated(rules, target)).subquery()
    c = both.c
    return (
        select(c.item_id, c.job_id, c.mode, c.reason, c.from_version)
        .order_by(c.submitted, c.job_id, c.item_id)
        .limit(rules.limit)
    )
