"""Reprocessing's tables: a run (what it selected, by which rules) and its entries, an item each. Beside
jobs.models, whose Base they share (migrations/env.py imports both for Alembic's metadata)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jobs.models import Base, created_column, updated_column, uuid_pk


class ReprocessRun(Base):
    """One reprocessing run (jobs.reprocessing.reprocessor): what it selected, by which rules, and when it
    finished.

    ``dedupe_key`` is unique: a second scheduler firing for the same slot, or a rerun of the same
    command, finds the run already there instead of starting another.
    """

    __tablename__ = "reprocess_runs"

    id: Mapped[uuid.UUID] = uuid_pk()
    dedupe_key: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # schedule | cli
    rules: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    target: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)  # model and prompts to reach
    selected: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running | completed
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # final counts, once completed
    created_at: Mapped[datetime] = created_column()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReprocessEntry(Base):
    """One item of a run. ``mode`` retry: a failed item reopened into the normal pipeline; refresh: a
    succeeded page recomputed beside its current result. An item is open in at most one run at a time
    (partial unique index), so overlapping runs never enqueue it twice.
    """

    __tablename__ = "reprocess_entries"
    __table_args__ = (
        Index(
            "uq_reprocess_entries_item_id_open",
            "item_id",
            unique=True,
            postgresql_where=text("state IN ('pending', 'running')"),
        ),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reprocess_runs.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    mode: Mapped[str] = mapped_column(String(16), nullable=False)  # retry | refresh
    reason: Mapped[str] = mapped_column(String(16), nullable=False)  # failed | model | prompt
    # pending -> running -> changed | unchanged | failed  (retry entries: pending -> changed | failed)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
