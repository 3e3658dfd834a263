"""The property every chaos test ends with: each item has exactly one result or one failure, nothing is
duplicated, nothing is stuck, the job is terminal. Counted from Postgres and the results API both."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.chaos.stack import AUTH, SECRETS, Stack


@dataclass
class Figures:
    test: str
    items: int
    results: int
    failures: int
    duplicates: int
    stuck: int
    seconds: float
    retried_items: int  # items that took more than one attempt: the breakage did hit them

    def record(self) -> None:
        line = json.dumps(asdict(self))
        print(f"\nCHAOS FIGURES {line}")
        if path := os.environ.get("VLMQ_CHAOS_FIGURES"):
            with Path(path).open("a") as f:
                f.write(line + "\n")


_COUNTS = """
SELECT
  (SELECT count(*) FROM items WHERE job_id = :j AND parent_id IS NULL) AS sources,
  (SELECT count(*) FROM items WHERE job_id = :j AND parent_id IS NOT NULL
     AND status = 'succeeded') AS ok_units,
  (SELECT count(*) FROM items WHERE job_id = :j
     AND status NOT IN ('succeeded', 'failed', 'cancelled')) AS stuck,
  (SELECT count(*) FROM results WHERE job_id = :j) AS results,
  (SELECT count(*) FROM (SELECT item_id FROM results WHERE job_id = :j
     GROUP BY item_id, version HAVING count(*) > 1) d) AS dup_results,
  (SELECT count(*) FROM (SELECT parent_id, page FROM items WHERE job_id = :j AND parent_id IS NOT NULL
     GROUP BY parent_id, page HAVING count(*) > 1) d) AS dup_units,
  (SELECT count(*) FROM results r JOIN items u ON u.id = r.item_id
     WHERE r.job_id = :j AND u.status <> 'succeeded') AS orphan_results,
  (SELECT count(*) FROM items WHERE job_id = :j AND attempts > 1) AS retried
"""


def exactly_once(stack: Stack, job_id: str, n: int, test: str, seconds: float) -> Figures:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            row = c.execute(text(_COUNTS), {"j": uuid.UUID(job_id)}).one()._asdict()
    finally:
        engine.dispose()
    lines = result_lines(stack, job_id)
    per_item: dict[str, int] = {}
    for line in lines:
        per_item[line["custom_id"]] = per_item.get(line["custom_id"], 0) + 1
    figures = Figures(
        test=test,
        items=n,
        results=row["results"],
        failures=sum(1 for x in lines if x["status"] == "failed"),
        duplicates=row["dup_results"] + row["dup_units"] + sum(c - 1 for c in per_item.values()),
        stuck=row["stuck"],
        seconds=round(seconds, 1),
        retried_items=row["retried"],
    )
    figures.record()
    assert row["sources"] == n and len(per_item) == n, row
    assert figures.duplicates == 0 and figures.stuck == 0 and row["orphan_results"] == 0, row
    assert row["results"] == row["ok_units"], row  # one result per succeeded page, none for the others
    assert all(x["status"] in ("succeeded", "failed") for x in lines)
    assert figures.results + figures.failures == n, figures  # one image = one page here
    return figures


def result_lines(stack: Stack, job_id: str) -> list[dict[str, object]]:
    r = httpx.get(f"{stack.base}/v1/jobs/{job_id}/results", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    # split("\n"), not splitlines(): a message may hold U+2028 or \x85, which JSON leaves unescaped.
    return [json.loads(x) for x in r.text.split("\n") if x.strip()]


def no_secrets_in_logs(stack: Stack) -> None:
    logs = stack.logs()
    assert "database postgresql+psycopg://postgres:***@" in logs  # the URL was logged, masked
    leaked = [s for s in SECRETS if s in logs]
    assert not leaked, f"secrets in the logs: {leaked}"
