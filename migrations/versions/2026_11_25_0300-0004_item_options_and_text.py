"""item options (pages, password; a unit's flags and pages) and the text-layer key

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-25 03:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "items",
        sa.Column(
            "options", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
    )
    op.add_column("items", sa.Column("text_key", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "text_key")
    op.drop_column("items", "options")
