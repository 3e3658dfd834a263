"""Every job and item move is recorded by the move check itself: an events row with from and to, written
by Postgres in the same statement, so no path can move a row unrecorded (the Python side recorded only
the target, and not every path); events.created_at is indexed for the retention sweep

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:20:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = """
  IF NOT EXISTS (SELECT 1 FROM status_moves WHERE entity = TG_TABLE_NAME
                 AND from_status = OLD.status AND to_status = NEW.status) THEN
    RAISE EXCEPTION 'vlmq: % % may not move from % to %',
      TG_TABLE_NAME, OLD.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
  END IF;"""
RECORD = """
  IF TG_TABLE_NAME = 'items' THEN
    INSERT INTO events (job_id, item_id, kind, from_status, to_status, created_at)
    VALUES (NEW.job_id, NEW.id, 'item.status', OLD.status, NEW.status, vlmq_now());
  ELSE
    INSERT INTO events (job_id, kind, from_status, to_status, created_at)
    VALUES (NEW.id, 'job.status', OLD.status, NEW.status, vlmq_now());
  END IF;"""


def _function(body: str) -> None:
    op.execute(
        "CREATE OR REPLACE FUNCTION vlmq_check_move() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN {body} RETURN NEW; END $$"
    )


def upgrade() -> None:
    _function(CHECK + RECORD)
    op.create_index("ix_events_created_at", "events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_events_created_at", "events")
    _function(CHECK)
