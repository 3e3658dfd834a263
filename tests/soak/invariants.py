"""The invariants read from Postgres: checked while the soak runs (one snapshot, every few turns) and at
its end. Each is a query for the rows that break it; a broken invariant is a violation, with examples.

While it runs, the snapshot is a REPEATABLE READ transaction, so a check sees each commit whole: a
unit's status and its result, a job's state and its items, are written in one transaction each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

TERMINAL = "('completed', 'failed', 'cancelled', 'expired')"
ITEM_TERMINAL = "('succeeded', 'failed', 'cancelled')"

# Each: the rows (as text) that break the invariant. ":slack" is the bound's allowance in seconds.
ALWAYS = {
    # every item has exactly one current result or one error
    "succeeded_unit_without_one_current_result": """
        SELECT u.id::text FROM items u WHERE u.parent_id IS NOT NULL AND u.status = 'succeeded'
          AND (SELECT count(*) FROM results r WHERE r.item_id = u.id AND r.is_current) <> 1""",
    "result_of_an_unsucceeded_unit": """
        SELECT DISTINCT r.item_id::text FROM results r JOIN items u ON u.id = r.item_id
        WHERE u.status <> 'succeeded' OR u.parent_id IS NULL OR r.job_id <> u.job_id""",
    "failed_item_without_error": "SELECT id::text FROM items WHERE status = 'failed' AND error_code IS NULL",
    "two_units_for_one_page": """
        SELECT parent_id::text || ' p' || page FROM items WHERE parent_id IS NOT NULL
        GROUP BY parent_id, page HAVING count(*) > 1""",
    # result versions pile up as 1..n, the current one the latest; none is ever lost
    "result_versions_not_1_to_n_with_the_latest_current": """
        SELECT item_id::text FROM results GROUP BY item_id
        HAVING min(version) <> 1 OR max(version) <> count(*)
            OR max(version) <> max(version) FILTER (WHERE is_current)""",
    # nothing is expired except past its own window
    "job_expired_before_its_window": """
        SELECT id::text FROM jobs WHERE status = 'expired' AND completed_at < expires_at""",
    "item_expired_before_its_window": """
        SELECT i.id::text FROM items i JOIN jobs j ON j.id = i.job_id
        WHERE i.error_code = 'expired' AND i.updated_at < j.expires_at""",
    # a finished job has nothing left moving
    "ended_job_with_open_items": f"""
        SELECT j.id::text FROM jobs j WHERE j.status IN {TERMINAL} AND EXISTS (
          SELECT 1 FROM items i WHERE i.job_id = j.id AND i.status NOT IN {ITEM_TERMINAL})""",
    # every job reaches a terminal state within the bound: its window plus the slack
    "job_past_its_window_plus_the_bound": f"""
        SELECT id::text FROM jobs WHERE expires_at + make_interval(secs => :slack) <
          CASE WHEN status IN {TERMINAL} THEN completed_at ELSE NOW_SQL END""",
    "two_runs_for_one_reprocess_slot": """
        SELECT dedupe_key FROM reprocess_runs GROUP BY dedupe_key HAVING count(*) > 1""",
}

AT_END = {
    "job_not_terminal": f"SELECT id::text || ' ' || status FROM jobs WHERE status NOT IN {TERMINAL}",
    "item_not_terminal": f"""
        SELECT id::text || ' ' || status FROM items WHERE status NOT IN {ITEM_TERMINAL}""",
    "source_succeeded_without_all_its_pages": """
        SELECT s.id::text FROM items s WHERE s.parent_id IS NULL AND s.status = 'succeeded' AND (
          s.page_count IS NULL
          OR (SELECT count(*) FROM items u WHERE u.parent_id = s.id AND u.status = 'succeeded')
             <> s.page_count
          OR EXISTS (SELECT 1 FROM items u WHERE u.parent_id = s.id AND u.status <> 'succeeded'))""",
    "prepared_source_with_missing_pages": """
        SELECT s.id::text FROM items s WHERE s.parent_id IS NULL AND s.page_count IS NOT NULL
          AND (SELECT count(*) FROM items u WHERE u.parent_id = s.id) <> s.page_count""",
    "reprocess_run_not_completed": "SELECT id::text FROM reprocess_runs WHERE status <> 'completed'",
    "batch_not_final": """
        SELECT id FROM batches WHERE status NOT IN ('completed', 'failed', 'cancelled', 'expired')""",
}


@dataclass
class Violation:
    check: str
    count: int
    examples: list[str] = field(default_factory=list)
    phase: str = "end"

    def line(self) -> str:
        return f"{self.check} ({self.phase}): {self.count}, e.g. {', '.join(self.examples[:5])}"


class Checker:
    def __init__(self, db_url: str, slack_s: float, simulated: bool) -> None:
        self.engine: Engine = create_engine(db_url, poolclass=NullPool)
        self.slack_s = slack_s
        self.now_sql = "vlmq_now()" if simulated else "now()"
        self.runs = 0

    def during(self) -> list[Violation] | None:
        """The ALWAYS invariants on one snapshot; None when Postgres is down (a fault)."""
        try:
            found = self._run(ALWAYS, "during")
        except SQLAlchemyError:
            return None
        self.runs += 1
        return found

    def at_end(self) -> list[Violation]:
        return self._run({**ALWAYS, **AT_END}, "end")

    def _run(self, checks: dict[str, str], phase: str) -> list[Violation]:
        out = []
        with self.engine.connect() as c:
            c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            for name, sql in checks.items():
                rows = c.execute(text(sql.replace("NOW_SQL", self.now_sql)), {"slack": self.slack_s})
                bad = [str(r[0]) for r in rows]
                if bad:
                    out.append(Violation(name, len(bad), bad[:10], phase))
            c.rollback()
        return out

    def scalar(self, sql: str) -> int | None:
        try:
            with self.engine.connect() as c:
                return int(c.scalar(text(sql.replace("NOW_SQL", self.now_sql))) or 0)
        except SQLAlchemyError:
            return None

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(text(sql.replace("NOW_SQL", self.now_sql)))]

    def close(self) -> None:
        self.engine.dispose()
