"""One place writes a status: every UPDATE that sets the status of a job, an item, an OpenAI batch, a
reprocessing run or one of its entries is in jobs/transitions.py (inserts set the first state where the
row is made)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITER = re.compile(r"\.values\((?:[^()]|\([^()]*\))*\b(?:status|state)\s*=", re.S)
ALLOWED = {"jobs/transitions.py"}


def test_only_transitions_sets_a_status() -> None:
    writers = sorted(
        str(p.relative_to(ROOT))
        for pkg in ("jobs", "api", "workers")
        for p in (ROOT / pkg).rglob("*.py")
        if WRITER.search(p.read_text())
    )
    assert writers and set(writers) <= ALLOWED, writers
    assert "jobs/transitions.py" in writers
