"""job_wakes: the sweeper's word for a job's waiting work, one row per (job, kind), so that a pass resends
per job instead of touching every waiting item (jobs.wakes; issue 25: 0.76-1.1 s a pass at 10^6 items,
most of it non-HOT updates of 10,000 item rows through every index of items)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_wakes",
        sa.Column("job_id", sa.UUID(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("woken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "kind", name="pk_job_wakes"),
    )


def downgrade() -> None:
    op.drop_table("job_wakes")
