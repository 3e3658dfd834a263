"""One place writes a status: every UPDATE that sets a job's, an item's or a batch's status is in
jobs/transitions.py (inserts set the first state where the row is made; reprocessing entries and runs keep
their own small state machine in jobs/reprocessing/runs.py)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITER = re.compile(r"\.values\((?:[^()]|\([^()]*\))*\bstatus\s*=", re.S)
ALLOWED = {"jobs/transitions.py", "jobs/reprocessing/runs.py"}


def test_only_transitions_sets_a_status() -> None:
    writers = sorted(
        str(p.relative_to(ROOT))
        for pkg in ("jobs", "api", "workers")
        for p in (ROOT / pkg).rglob("*.py")
        if WRITER.search(p.read_text())
    )
    assert writers and set(writers) <= ALLOWED, writers
    assert "jobs/transitions.py" in writers
