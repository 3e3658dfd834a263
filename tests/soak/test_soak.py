"""The soak at CI size: a whole system of its own, the three users, faults of every kind, the clock moved
across two simulated midnights and a GPU outage longer than a job's window; every invariant holds, in at
most 3 minutes on 2 shared cores (stack start and end checks included). `make soak` runs the full size.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.soak import config
from tests.soak.faults import KINDS
from tests.soak.runner import run

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
BUDGET_S = 180


def test_ci_soak_holds_every_invariant(tmp_path: Path) -> None:
    t0 = time.monotonic()
    report = run(config.ci(), tmp_path)
    took = time.monotonic() - t0
    print(f"\n{report.text()}")
    report.write(Path(os.environ.get("VLMQ_SOAK_REPORT", tmp_path / "soak-report.json")))
    assert report.violation_count == 0, report.text()
    assert report.clock_simulated and report.midnights >= 2 and len(report.reprocess_runs) >= 2
    assert sum(report.faults.get(k, 0) > 0 for k in KINDS) >= 3, report.faults
    assert report.jobs.get("ended_expired", 0) >= 1  # the outage outlasted a window: those jobs expired
    assert report.storage["items_with_several_versions"] >= 1  # a nightly run made new versions
    assert report.items["all"] >= 900
    assert took < BUDGET_S, f"the CI soak took {took:.0f} s"
