"""items.retry_at: a waiting item given back after a transient failure is not claimed in turn before this
(the claim order takes the oldest waiting item first, so without it every worker's next claim would
take the same failed page again at once, spending its attempts in seconds of an S3 outage)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 08:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("items", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_items_retry_at", "items", ["retry_at"], postgresql_where=sa.text("retry_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_items_retry_at", table_name="items", postgresql_where=sa.text("retry_at IS NOT NULL"))
    op.drop_column("items", "retry_at")
