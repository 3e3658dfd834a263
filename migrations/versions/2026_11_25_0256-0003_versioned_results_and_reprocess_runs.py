"""versioned results and reprocess runs

Results record the model revision and the output-changing settings (JSONB + hash); at most one current
result per item; reprocess_runs (unique dedupe_key) and reprocess_entries (an item open in one run at most).

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25 02:56:34.203643+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reprocess_runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("target", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("selected", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reprocess_runs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_reprocess_runs_dedupe_key")),
    )
    op.create_table(
        "reprocess_entries",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("item_id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_reprocess_entries_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_reprocess_entries_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reprocess_runs.id"],
            name=op.f("fk_reprocess_entries_run_id_reprocess_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "item_id", name=op.f("pk_reprocess_entries")),
    )
    op.create_index(op.f("ix_reprocess_entries_job_id"), "reprocess_entries", ["job_id"], unique=False)
    op.create_index(
        "uq_reprocess_entries_item_id_open",
        "reprocess_entries",
        ["item_id"],
        unique=True,
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )
    op.add_column("results", sa.Column("model_revision", sa.String(length=255), nullable=True))
    op.add_column(
        "results",
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.add_column(
        "results",
        sa.Column("settings_hash", sa.String(length=64), server_default=sa.text("''"), nullable=False),
    )
    op.create_index(
        "uq_results_item_id_current",
        "results",
        ["item_id"],
        unique=True,
        postgresql_where=sa.text("is_current"),
    )


def downgrade() -> None:
    op.drop_index("uq_results_item_id_current", table_name="results", postgresql_where=sa.text("is_current"))
    op.drop_column("results", "settings_hash")
    op.drop_column("results", "settings")
    op.drop_column("results", "model_revision")
    op.drop_index(
        "uq_reprocess_entries_item_id_open",
        table_name="reprocess_entries",
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )
    op.drop_index(op.f("ix_reprocess_entries_job_id"), table_name="reprocess_entries")
    op.drop_table("reprocess_entries")
    op.drop_table("reprocess_runs")
