"""SQLAlchemy 2.0 tables: jobs, items, results, events, reprocess_runs, reprocess_entries, job_wakes.

Postgres owns all state; Redis messages only carry ids. Statuses are plain strings checked in Python
(jobs.status) so adding a state needs no enum migration.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.clock import sql_now

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def created_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=sql_now(), nullable=False)


def updated_column() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=sql_now(), onupdate=sql_now(), nullable=False
    )


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    prompt_version: Mapped[str] = mapped_column(String(64), nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    model_id: Mapped[str] = mapped_column(String(255), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    total_items: Mapped[int] = mapped_column(Integer, nullable=False)
    # "normal" | "low": which queues (gpu / gpu-low, prep / prep-low) its messages go to.
    priority: Mapped[str] = mapped_column(String(8), nullable=False, server_default=text("'normal'"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # then: expired
    error: Mapped[str | None] = mapped_column(Text)
    output_key: Mapped[str | None] = mapped_column(Text)
    error_key: Mapped[str | None] = mapped_column(Text)
    # A destination of the tenant's own for its dataset (jobs.views.exports): the last full write, or why not.
    dataset_prefix: Mapped[str | None] = mapped_column(Text)
    dataset_written_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dataset_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Item(Base):
    """A source (parent_id NULL: what was submitted) or a unit (one page of a source)."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("parent_id", "page"),
        # A job's items by status, oldest first: counts, and the fair claim's next pages in order.
        Index("ix_items_job_id_status_order", "job_id", "status", "created_at", "page"),
        Index(
            "uq_items_job_id_custom_id_source",
            "job_id",
            "custom_id",
            unique=True,
            postgresql_where=text("parent_id IS NULL"),
        ),
        # The sweeper's two questions: which waiting items were not touched for a while, and which
        # in-flight items' leases ran out (only in-flight items hold one, so that index stays small).
        Index("ix_items_status_updated_at", "status", "updated_at"),
        Index("ix_items_lease_until", "lease_until", postgresql_where=text("lease_until IS NOT NULL")),
        Index("ix_items_retry_at", "retry_at", postgresql_where=text("retry_at IS NOT NULL")),
        # A job's sources in their results order: a results page by keyset (repository.result_rows_from).
        Index(
            "ix_items_source_order",
            "job_id",
            "created_at",
            "custom_id",
            "id",
            postgresql_where=text("parent_id IS NULL"),
        ),
        # A resubmitted source finds what was done before by its URI (jobs.listings.done_before).
        Index("ix_items_uri_source", "uri", postgresql_where=text("parent_id IS NULL")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), index=True
    )
    custom_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # source | page | document
    uri: Mapped[str | None] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer)
    media_key: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text)  # overrides the job's prompt for this item
    # A source: its own options (jobs.schemas.ItemOptions: pages, password), over the job's.
    # A unit: what prep found ({"flags": [...], "pages": [...]} for a unit of several pages).
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    text_key: Mapped[str | None] = mapped_column(Text)  # a unit's PDF text layer in S3, if it has one
    # A listed source's S3 ETag: with its URI, what makes a resubmitted prefix skip it (jobs.listings).
    etag: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    page_count: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Set while a worker holds the item (preparing/running) and renewed by its heartbeat; NULL otherwise.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Given back after a transient failure: not claimed in turn before this (JobService.give_back).
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()


class Result(Base):
    """One model output for one unit. Reprocessing adds a version; ``is_current`` marks the live one
    (at most one per item: a partial unique index), and older versions stay as history.

    What made it: ``model_id``, ``model_revision``, ``engine``, ``prompt_version``, and ``settings``, the
    engine and render settings that change outputs (jobs.fingerprint), with their ``settings_hash``.
    """

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("item_id", "version"),
        Index("uq_results_item_id_current", "item_id", unique=True, postgresql_where=text("is_current")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    is_current: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    reasoning: Mapped[str] = mapped_column(Text, nullable=False)
    answer: Mapped[str] = mapped_column(Text, nullable=False)
    raw_text: Mapped[str] = mapped_column(Text, nullable=False)
    # One entry per <|begin_of_box|> of the answer: {"text", "regions": [{"normalized", "box"}]}
    # (rows written before regions existed hold plain strings).
    boxes: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'"))
    flags: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'"))
    finish_reason: Mapped[str] = mapped_column(String(16), nullable=False)
    truncated: Mapped[bool] = mapped_column(Boolean, nullable=False)
    answer_missing: Mapped[bool] = mapped_column(Boolean, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    model_id: Mapped[str] = mapped_column(String(255), nullable=False)
    engine: Mapped[str] = mapped_column(String(32), nullable=False)
    prompt_version: Mapped[str] = mapped_column(String(64), nullable=False)
    model_revision: Mapped[str | None] = mapped_column(String(255))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    settings_hash: Mapped[str] = mapped_column(String(64), nullable=False, server_default=text("''"))
    payload_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()


class Event(Base):
    """Append-only history of a job: every status move with from and to (written by Postgres' move check,
    migration 0010), its submission, errors and reopenings (jobs.repository.add_event). Read by
    GET /v1/jobs/{id}/events; deleted after ``queue.event_retention_days`` by the sweeper."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    item_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()


# Counting the items still moving (the /metrics gauge) reads this small partial index, never the table.
OPEN_ITEM_STATES = ("queued", "preparing", "prepared", "ready", "running")
Index(
    "ix_items_open_status",
    Item.status,
    postgresql_where=Item.status.in_(OPEN_ITEM_STATES),
)
# Whether a job has an open item at all (jobs.repository.any_open, at every finalize) and how many (a
# listing's pause): a probe of this index, where a count over the job's items read all of them.
Index("ix_items_open_job", Item.job_id, postgresql_where=Item.status.in_(OPEN_ITEM_STATES))


class ItemTally(Base):
    """How many of a job's sources (or units) a statement moved into (n > 0) or out of (n < 0) a status
    and error code: written by triggers on items (migration 0014), summed and rolled up by jobs.tallies."""

    __tablename__ = "item_tallies"
    __table_args__ = (Index("ix_item_tallies_job_id", "job_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    source: Mapped[bool] = mapped_column(Boolean, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error_code: Mapped[str | None] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Wake(Base):
    """The sweeper's last word for a job's waiting work of one kind (jobs.wakes): when it was sent, and
    how many items' worth of it is still owed (a pass sends ``queue.sweep_batch`` at most)."""

    __tablename__ = "job_wakes"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # jobs.scheduling.fairness.Kind.name
    woken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    owed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))


class Listing(Base):
    """The listing of a job submitted as a source instead of a list of items (jobs.listings): an S3
    prefix with a glob (``kind`` prefix) or a manifest object of URIs (``kind`` manifest). ``cursor``
    is where the next page starts (the last key listed; a manifest's byte offset and CSV header);
    ``pages`` counts the pages stored and is the compare-and-set version of the cursor, so a page
    listed twice (a redelivered message) is stored once."""

    __tablename__ = "listings"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    incremental: Mapped[bool] = mapped_column(Boolean, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=text("'listing'"))
    cursor: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    discovered: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class File(Base):
    """An OpenAI-style file: a batch input uploaded by a tenant, or a batch's output or error file.

    The bytes live in S3 under ``key``; ``id`` is the public ``file-...`` identifier.
    """

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_created_at", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_column()
    # Deleted by its tenant: gone from reads and S3; the row stays while a batch names it as its input.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Batch(Base):
    """An OpenAI-style batch: one input file run as one vlmq job (``job_id``, NULL when no line was
    valid). ``status`` follows the job (see jobs.openai.batches); ``rejected_key`` holds the lines refused
    before submission, which go to the error file."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_tenant_created_at", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    input_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(64), nullable=False)
    completion_window: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)  # validation errors (batch failed)
    total: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    rejected: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    rejected_key: Mapped[str | None] = mapped_column(Text)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClockOffset(Base):
    """The simulated clock's offset (jobs.clock; migration 0008 makes vlmq_now() read it). No row in
    production: then vlmq_now() is now()."""

    __tablename__ = "vlmq_clock"

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    offset_seconds: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))


class StatusMove(Base):
    """A move a job or item status may make (migration 0009 fills it from jobs/status.py's tables; a
    trigger refuses any other). Read by Postgres only."""

    __tablename__ = "status_moves"

    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    from_status: Mapped[str] = mapped_column(Text, primary_key=True)
    to_status: Mapped[str] = mapped_column(Text, primary_key=True)
