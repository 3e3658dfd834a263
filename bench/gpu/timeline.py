"""Where a system run's time went, read back from Postgres' event log after the run.

Every item transition is an event row written in the transition's own transaction, so the spans below
(relative to the moment the benchmark sent the upload) are the system's own account: how long prep took,
how spread out the units' arrival at the GPU worker was, and the tail after the last result.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, text

_QUERY = text(
    """
    SELECT (i.parent_id IS NULL) AS source, e.to_status, min(e.created_at) AS first, max(e.created_at) AS last
    FROM events e JOIN items i ON i.id = e.item_id
    WHERE e.job_id = :job AND e.kind = 'item.status'
    GROUP BY 1, 2
    """
)


def timeline(db_url: str, job_id: str, t0_epoch: float) -> dict[str, Any]:
    """{span name: seconds after t0}, for the first and last source/unit reaching each status."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(_QUERY, {"job": uuid.UUID(job_id)}).all()
            done = c.execute(
                text("SELECT completed_at FROM jobs WHERE id = :job"), {"job": uuid.UUID(job_id)}
            ).scalar()
    finally:
        engine.dispose()

    def rel(t: datetime | None) -> float | None:
        return None if t is None else round(t.timestamp() - t0_epoch, 2)

    out: dict[str, Any] = {}
    for source, status, first, last in rows:
        who = "source" if source else "unit"
        out[f"{who}_{status}_first_s"] = rel(first)
        out[f"{who}_{status}_last_s"] = rel(last)
    out["job_completed_s"] = rel(done)
    return dict(sorted(out.items(), key=lambda kv: (kv[1] is None, kv[1] or 0)))
