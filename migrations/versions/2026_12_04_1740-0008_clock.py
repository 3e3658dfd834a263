"""The clock seam: vlmq_now(), Postgres' now() plus a simulated offset (none in production)

Every "now" of the schema (created_at/updated_at defaults) and of the SQL in jobs/ (leases, expiry, the
sweeper, reprocessing) is vlmq_now(). With no row in vlmq_clock it is exactly now(); a soak
(VLMQ_CLOCK__SIMULATED) moves the whole stack forward by writing the offset (jobs/clock.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:40:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAMPED = {  # table -> its columns defaulting to now()
    "jobs": ("created_at", "updated_at"),
    "items": ("created_at", "updated_at"),
    "results": ("created_at",),
    "events": ("created_at",),
    "files": ("created_at",),
    "batches": ("created_at", "updated_at"),
    "reprocess_runs": ("created_at",),
    "reprocess_entries": ("created_at", "updated_at"),
}


def upgrade() -> None:
    op.execute(
        "CREATE TABLE vlmq_clock (id boolean PRIMARY KEY DEFAULT true CHECK (id),"
        " offset_seconds double precision NOT NULL DEFAULT 0)"
    )
    # STABLE: one value per statement, as now() is per transaction; the offset row is read once.
    op.execute(
        "CREATE FUNCTION vlmq_now() RETURNS timestamptz LANGUAGE sql STABLE AS $$"
        " SELECT now() + make_interval(secs => coalesce((SELECT offset_seconds FROM vlmq_clock), 0)) $$"
    )
    _defaults("vlmq_now()")


def downgrade() -> None:
    _defaults("now()")
    op.execute("DROP FUNCTION vlmq_now()")
    op.execute("DROP TABLE vlmq_clock")


def _defaults(expression: str) -> None:
    for table, columns in STAMPED.items():
        for column in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {expression}")
