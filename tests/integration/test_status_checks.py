"""Postgres enforces the states (migration 0009): every status column holds only known values, and a job
or item moves only as jobs/status.py allows (its tables and the two reopenings); the database's list and
status.py's cannot drift apart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs.adapters.db import session_factory
from jobs.config import Settings
from jobs.status import (
    ITEM_REOPEN,
    ITEM_TRANSITIONS,
    JOB_REOPEN,
    JOB_TRANSITIONS,
    ItemStatus,
    JobStatus,
    allowed_moves,
)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    with session_factory(settings)() as s:
        yield s
        s.rollback()


def _moves(s: Session, entity: str) -> set[tuple[str, str]]:
    rows = s.execute(text("SELECT from_status, to_status FROM status_moves WHERE entity = :e"), {"e": entity})
    return {(a, b) for a, b in rows}


def test_the_database_allows_exactly_status_pys_moves(session: Session) -> None:
    assert _moves(session, "items") == allowed_moves(ITEM_TRANSITIONS, ITEM_REOPEN)
    assert _moves(session, "jobs") == allowed_moves(JOB_TRANSITIONS, JOB_REOPEN)


def test_every_status_value_is_one_status_py_knows(session: Session) -> None:
    query = "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conname LIKE 'ck_%_known'"
    checks = {name: definition for name, definition in session.execute(text(query))}
    for name, enum in (("ck_items_status_known", ItemStatus), ("ck_jobs_status_known", JobStatus)):
        assert {v.value for v in enum} == set(_quoted(checks[name])), name


def _quoted(definition: str) -> list[str]:
    """The quoted values of a CHECK (... IN ('a', 'b')) definition, as Postgres prints it back."""
    return definition.split("'")[1::2]


def _job(s: Session, status: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    s.execute(
        text(
            "INSERT INTO jobs (id, tenant, status, prompt, prompt_version, model_id, request_hash,"
            " total_items)"
            " VALUES (:i, 't', :s, 'p', 'v', 'm', 'h', 0)"
        ),
        {"i": job_id, "s": status},
    )
    return job_id


@pytest.mark.parametrize(
    ("start", "to"), [("completed", "queued"), ("cancelled", "running"), ("queued", "completed")]
)
def test_a_move_status_py_does_not_allow_is_refused(session: Session, start: str, to: str) -> None:
    job_id = _job(session, start)
    with pytest.raises(IntegrityError, match=f"may not move from {start} to {to}"):
        session.execute(text("UPDATE jobs SET status = :t WHERE id = :i"), {"t": to, "i": job_id})


def test_allowed_moves_and_updates_that_keep_the_status_pass(session: Session) -> None:
    job_id = _job(session, "queued")
    for to in ("running", "running", "completed", "running"):  # the last: a reopening
        session.execute(
            text("UPDATE jobs SET status = :t, updated_at = now() WHERE id = :i"), {"t": to, "i": job_id}
        )


def test_an_unknown_status_is_refused(session: Session) -> None:
    with pytest.raises(IntegrityError, match="ck_jobs_status_known"):
        _job(session, "paused")
