"""OpenAI files can be deleted: files.deleted_at (the row stays while a batch names it as its input)

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-04 17:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("files", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "deleted_at")
