"""leases, priority and expiry: jobs.priority, jobs.expires_at, the sweeper's indexes on items

Revision ID: 0002
Revises: 0003
Create Date: 2026-11-25 03:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("priority", sa.String(length=8), server_default=sa.text("'normal'"), nullable=False)
    )
    op.add_column("jobs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_items_status_updated_at", "items", ["status", "updated_at"], unique=False)
    op.create_index(
        "ix_items_lease_until",
        "items",
        ["lease_until"],
        unique=False,
        postgresql_where=sa.text("lease_until IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_items_lease_until", table_name="items", postgresql_where=sa.text("lease_until IS NOT NULL")
    )
    op.drop_index("ix_items_status_updated_at", table_name="items")
    op.drop_column("jobs", "expires_at")
    op.drop_column("jobs", "priority")
