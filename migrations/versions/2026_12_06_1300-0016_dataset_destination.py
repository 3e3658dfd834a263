"""jobs.dataset_prefix, dataset_written_at, dataset_error: a job's dataset written to a destination of
the tenant's own besides the job's own prefix (issue 25; jobs.views.exports): where, when it was last
written there in full, and why the last write there failed (the job's own copy is never held up by it).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 13:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dataset_prefix", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("dataset_written_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("dataset_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "dataset_error")
    op.drop_column("jobs", "dataset_written_at")
    op.drop_column("jobs", "dataset_prefix")
