"""item_tallies, and an index of each job's sources in results order (a results page by keyset:
repository.result_rows_from), both for jobs of millions of items (issue 25).

item_tallies: each job's items counted by Postgres as they change. Three statement-level triggers on
items, with transition tables, append one row per (job, source or unit, status, error code) whose count
a statement changed; jobs.tallies reads the sums and rolls each job's rows up into a few.
A job's counts read those rows, not its million items (311 ms at 10^6 items before: bench/scale.py).

The counts are written in the transaction that changes the items, so a reader sees both or neither:
every view still counts with one query (jobs.repository.outcome_counts) and they cannot disagree.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 02:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = "job_id, parent_id IS NULL, status, error_code"
# One function for the three events (a trigger with transition tables takes one event). An UPDATE that
# moves no item between groups (a lease renewed, a heartbeat) nets to zero and writes nothing. A DELETE
# of a job's items as its job goes (ON DELETE CASCADE) writes nothing: the job's tallies go with it.
FUNCTION = f"""
CREATE FUNCTION vlmq_tally_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO item_tallies (job_id, source, status, error_code, n)
    SELECT {KEYS}, count(*) FROM new_items GROUP BY 1, 2, 3, 4;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO item_tallies (job_id, source, status, error_code, n)
    SELECT {KEYS}, -count(*) FROM old_items o
    WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.id = o.job_id) GROUP BY 1, 2, 3, 4;
  ELSE
    INSERT INTO item_tallies (job_id, source, status, error_code, n)
    SELECT job_id, source, status, error_code, sum(d) FROM (
      SELECT {KEYS}, -1 FROM old_items
      UNION ALL SELECT {KEYS}, 1 FROM new_items
    ) AS moved (job_id, source, status, error_code, d)
    GROUP BY 1, 2, 3, 4 HAVING sum(d) <> 0;
  END IF;
  RETURN NULL;
END $$;
"""
TRIGGERS = {
    "INSERT": "REFERENCING NEW TABLE AS new_items",
    "UPDATE": "REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items",
    "DELETE": "REFERENCING OLD TABLE AS old_items",
}


SOURCES = sa.text("parent_id IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_items_source_order",
        "items",
        ["job_id", "created_at", "custom_id", "id"],
        postgresql_where=SOURCES,
    )
    op.create_table(
        "item_tallies",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("job_id", sa.UUID(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_item_tallies"),
    )
    op.create_index("ix_item_tallies_job_id", "item_tallies", ["job_id"])
    op.execute(FUNCTION)
    for event, referencing in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER tally_items_{event.lower()} AFTER {event} ON items {referencing}"
            " FOR EACH STATEMENT EXECUTE FUNCTION vlmq_tally_items()"
        )
    # What is there already, counted once: the triggers' lock on items (taken above, held to the end of
    # this transaction) keeps writers out until this count and the triggers start together.
    op.execute(
        f"INSERT INTO item_tallies (job_id, source, status, error_code, n)"
        f" SELECT {KEYS}, count(*) FROM items GROUP BY 1, 2, 3, 4"
    )


def downgrade() -> None:
    for event in TRIGGERS:
        op.execute(f"DROP TRIGGER tally_items_{event.lower()} ON items")
    op.execute("DROP FUNCTION vlmq_tally_items()")
    op.drop_table("item_tallies")
    op.drop_index("ix_items_source_order", table_name="items", postgresql_where=SOURCES)
