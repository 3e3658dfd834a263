"""listings: jobs submitted as a source (an S3 prefix with a glob, or a manifest object) instead of a
list, listed a page at a time (jobs.listings); items.etag and a partial index on a source's URI, by
which a resubmitted prefix skips what is done (issue 25); a partial index of each job's open items, so
that asking whether a job has any left does not read all of a million-item job's rows

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 21:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('queued', 'preparing', 'prepared', 'ready', 'running')"  # models.OPEN_ITEM_STATES


def upgrade() -> None:
    op.create_table(
        "listings",
        sa.Column("job_id", sa.UUID(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), server_default=sa.text("'listing'"), nullable=False),
        sa.Column("cursor", postgresql.JSONB(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("pages", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("discovered", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("vlmq_now()"), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("vlmq_now()"), nullable=False
        ),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_listings"),
        sa.CheckConstraint(
            "status IN ('listing', 'done', 'stopped', 'failed')", name="ck_listings_status_known"
        ),
        sa.CheckConstraint("kind IN ('prefix', 'manifest')", name="ck_listings_kind_known"),
    )
    op.add_column("items", sa.Column("etag", sa.String(255), nullable=True))
    op.create_index("ix_items_uri_source", "items", ["uri"], postgresql_where=sa.text("parent_id IS NULL"))
    op.create_index("ix_items_open_job", "items", ["job_id"], postgresql_where=sa.text(OPEN))


def downgrade() -> None:
    op.drop_index("ix_items_open_job", table_name="items", postgresql_where=sa.text(OPEN))
    op.drop_index("ix_items_uri_source", table_name="items", postgresql_where=sa.text("parent_id IS NULL"))
    op.drop_column("items", "etag")
    op.drop_table("listings")
