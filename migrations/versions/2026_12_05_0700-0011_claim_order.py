"""The fair claim (jobs.scheduling.fairness) takes a job's waiting items oldest first, a PDF's pages in
order: the (job_id, status) index grows created_at and page, so that "the next 8 ready pages of a job
of a million" reads 8 index entries instead of sorting the job's waiting pages

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 07:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_items_job_id_status_order", "items", ["job_id", "status", "created_at", "page"])
    op.drop_index("ix_items_job_id_status", table_name="items")


def downgrade() -> None:
    op.create_index("ix_items_job_id_status", "items", ["job_id", "status"])
    op.drop_index("ix_items_job_id_status_order", table_name="items")
