"""All SQL of reprocessing runs (jobs.reprocessing.reprocessor): the run lock, entries, which failed items
to reopen, and the refresh entries' compare-and-set moves (pending -> running -> changed | unchanged |
failed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs import transitions
from jobs.clock import sql_now
from jobs.models import Item, Job, Result
from jobs.reprocessing.models import ReprocessEntry, ReprocessRun
from jobs.reprocessing.selection import OPEN_STATES, Target

# pg_advisory_xact_lock key: every run is selected and inserted under it, one at a time.
RUN_LOCK = 0x766C6D71_72657072  # "vlmqrepr"

E = ReprocessEntry


def lock(s: Session) -> None:
    """Serialise run creation across processes and hosts; released at commit or rollback."""
    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RUN_LOCK})


def run_by_key(s: Session, key: str) -> ReprocessRun | None:
    return s.scalar(select(ReprocessRun).where(ReprocessRun.dedupe_key == key))


def insert_entries(s: Session, run_id: uuid.UUID, candidates: Select[Any]) -> int:
    """INSERT ... SELECT the candidates as pending entries; an item open in another run is skipped."""
    c = candidates.subquery()
    source = select(
        literal(run_id, E.run_id.type), c.c.item_id, c.c.job_id, c.c.mode, c.c.reason, c.c.from_version,
        literal("pending"),
    )  # fmt: skip
    cols = ["run_id", "item_id", "job_id", "mode", "reason", "from_version", "state"]
    stmt = pg_insert(E).from_select(cols, source).on_conflict_do_nothing().returning(E.item_id)
    return len(s.scalars(stmt).all())


def reopen_retries(s: Session, run_id: uuid.UUID, expiry_seconds: float) -> None:
    """Put the run's failed items back into the normal pipeline, the way a user's retry does
    (transitions.reopen_failed): prep, inference and the job's finalizer run for them again; their jobs run
    again, each with a full expiry window."""
    retry = select(E.item_id).where(E.run_id == run_id, E.mode == "retry")
    transitions.reopen_failed(s, Item.id.in_(retry), expiry_seconds, f"run {run_id}")


def upgrade_prompts(s: Session, run_id: uuid.UUID, target: Target, prompts: dict[str, str]) -> None:
    """Jobs of the run on an older version of a preset move to its current text and version, so the
    recomputed results use it. Their old results keep the version they were made with."""
    jobs = select(E.job_id).where(E.run_id == run_id)
    for name, version in target.preset_versions:
        moved = s.execute(
            update(Job)
            .where(
                Job.id.in_(jobs),
                Job.prompt_version.startswith(f"{name}-", autoescape=True),
                Job.prompt_version != version,
            )
            .values(prompt=prompts[name], prompt_version=version, updated_at=sql_now())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        for job_id in moved.scalars():
            repo.add_event(s, job_id, "job.prompt_upgraded", detail=f"{version} (run {run_id})")


def work(s: Session, run_id: uuid.UUID) -> list[tuple[uuid.UUID, str, bool]]:
    """(item_id, mode, is_source) of the run's open entries, in page order: what to send."""
    q = (
        select(E.item_id, E.mode, Item.parent_id.is_(None))
        .join(Item, Item.id == E.item_id)
        .where(E.run_id == run_id, E.state.in_(OPEN_STATES))
        .order_by(E.job_id, Item.parent_id, Item.page)
    )
    return [(i, m, bool(src)) for i, m, src in s.execute(q)]


def current_answer(s: Session, item_id: uuid.UUID) -> str | None:
    return s.scalar(select(Result.answer).where(Result.item_id == item_id, Result.is_current))


def attempts(s: Session, run_id: uuid.UUID, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    q = select(E.item_id, E.attempts).where(E.run_id == run_id, E.item_id.in_(item_ids))
    return {i: int(n) for i, n in s.execute(q)}


def open_refreshes(s: Session, run_id: uuid.UUID, job_id: uuid.UUID) -> int:
    """The run's refreshes of this job not yet done (its retries are the job finalizer's business)."""
    q = select(func.count()).where(
        E.run_id == run_id, E.job_id == job_id, E.mode == "refresh", E.state.in_(OPEN_STATES)
    )
    return int(s.scalar(q) or 0)


def counts(s: Session, run_id: uuid.UUID) -> tuple[dict[str, int], dict[str, int]]:
    """Entries by state, and by reason."""
    by_state = s.execute(select(E.state, func.count()).where(E.run_id == run_id).group_by(E.state))
    by_reason = s.execute(select(E.reason, func.count()).where(E.run_id == run_id).group_by(E.reason))
    return {k: int(n) for k, n in by_state}, {k: int(n) for k, n in by_reason}


def open_runs(s: Session) -> list[uuid.UUID]:
    return list(s.scalars(select(ReprocessRun.id).where(ReprocessRun.status == "running")))


def recent_runs(s: Session, limit: int) -> list[ReprocessRun]:
    return list(s.scalars(select(ReprocessRun).order_by(ReprocessRun.created_at.desc()).limit(limit)))
