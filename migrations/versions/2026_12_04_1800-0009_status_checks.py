"""Postgres enforces the states: CHECK constraints on every status column, and for jobs and items a
trigger that allows exactly the moves of jobs/status.py (its transition tables and the two reopenings)

The moves are written out here, as a migration must be (it cannot follow later code);
tests/integration/test_status_checks.py fails when jobs/status.py and this list differ.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = {  # (table, column) -> the values it may hold
    ("jobs", "status"): ("queued", "running", "completed", "failed", "cancelling", "cancelled", "expired"),
    ("items", "status"): (
        "queued", "preparing", "prepared", "ready", "running", "succeeded", "failed", "cancelled",
    ),
    ("batches", "status"): (
        "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
        "cancelled",
    ),
    ("reprocess_runs", "status"): ("running", "completed"),
    ("reprocess_entries", "state"): ("pending", "running", "changed", "unchanged", "failed"),
}  # fmt: skip
MOVES = {
    "jobs": (
        "queued>running queued>failed queued>cancelling queued>cancelled queued>expired "
        "running>completed running>failed running>cancelling running>cancelled running>expired "
        "cancelling>cancelled cancelling>expired "
        "completed>running failed>running expired>running"  # reopened (retry, reprocessing)
    ),
    "items": (
        "queued>preparing queued>failed queued>cancelled "
        "preparing>prepared preparing>failed preparing>queued preparing>cancelled "
        "prepared>succeeded prepared>failed prepared>cancelled "
        "ready>running ready>failed ready>cancelled "
        "running>succeeded running>failed running>ready running>cancelled "
        "failed>ready failed>queued failed>prepared"  # reopened (retry, reprocessing)
    ),
}


def upgrade() -> None:
    for (table, column), values in STATES.items():
        listed = ", ".join(f"'{v}'" for v in values)
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_{column}_known CHECK ({column} IN ({listed}))"
        )
    op.execute("CREATE TABLE status_moves (entity text NOT NULL, from_status text NOT NULL,"
               " to_status text NOT NULL, PRIMARY KEY (entity, from_status, to_status))")  # fmt: skip
    for entity, moves in MOVES.items():
        rows = ", ".join(f"('{entity}', '{a}', '{b}')" for a, b in (m.split(">") for m in moves.split()))
        op.execute(f"INSERT INTO status_moves VALUES {rows}")
    op.execute(
        """CREATE FUNCTION vlmq_check_move() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM status_moves WHERE entity = TG_TABLE_NAME
                         AND from_status = OLD.status AND to_status = NEW.status) THEN
            RAISE EXCEPTION 'vlmq: % % may not move from % to %',
              TG_TABLE_NAME, OLD.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )
    for table in MOVES:
        op.execute(
            f"CREATE TRIGGER {table}_status_move BEFORE UPDATE OF status ON {table} FOR EACH ROW"
            " WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION vlmq_check_move()"
        )


def downgrade() -> None:
    for table in MOVES:
        op.execute(f"DROP TRIGGER {table}_status_move ON {table}")
    op.execute("DROP FUNCTION vlmq_check_move()")
    op.execute("DROP TABLE status_moves")
    for (table, column), _ in STATES.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT ck_{table}_{column}_known")
