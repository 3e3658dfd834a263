"""The turn itself (jobs.scheduling.fairness.plan), without a database: who gets each of a claim's
places, with what engine rank, and where a cap stops a tenant."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from jobs.config import FairnessSettings
from jobs.scheduling.fairness import RANK_CLASS, Share, plan, size_class

T0 = datetime(2026, 12, 5, tzinfo=UTC)


def _share(tenant: str, in_flight: int, waiting: int, priority: str = "normal", age: int = 0) -> Share:
    return Share(uuid.uuid4(), tenant, priority, T0 - timedelta(minutes=age), 1, in_flight, waiting)


def _taken(jobs: list[Share], n: int, rules: FairnessSettings | None = None, cap: int = 0) -> Counter[str]:
    turn, _ = plan(jobs, n, rules or FairnessSettings(), cap)
    return Counter(j.tenant for j, _ in turn)


def test_a_tenant_with_nothing_in_flight_goes_first_and_then_they_alternate() -> None:
    bulk, small = _share("a", 500, 8, age=60), _share("b", 0, 1)
    turn, capped = plan([bulk, small], 8, FairnessSettings(), 0)
    assert turn[0][0] is small and [j for j, _ in turn[1:]] == [bulk] * 7 and not capped
    assert turn[0][1] < turn[1][1]  # ranks: the small job's page is served first inside the engine


def test_weights_share_what_is_in_flight() -> None:
    rules = FairnessSettings(tenant_weights={"a": 3})
    assert _taken([_share("a", 0, 100), _share("b", 0, 100)], 40, rules) == {"a": 30, "b": 10}


def test_a_tenants_own_small_job_passes_its_bulk_job() -> None:
    bulk, small = _share("a", 300, 8, age=60), _share("a", 0, 2)
    turn, _ = plan([bulk, small], 3, FairnessSettings(), 0)
    assert [j for j, _ in turn] == [small, small, bulk]


def test_the_low_class_goes_after_the_normal_one_and_ranks_behind_it() -> None:
    low, normal = _share("b", 0, 5, priority="low", age=60), _share("a", 900, 3)
    turn, _ = plan([low, normal], 5, FairnessSettings(), 0)
    assert [j.priority for j, _ in turn] == ["normal"] * 3 + ["low"] * 2
    assert min(r for j, r in turn if j is low) >= RANK_CLASS > max(r for j, r in turn if j is normal)


def test_a_cap_stops_a_tenant_and_says_so() -> None:
    turn, capped = plan([_share("a", 8, 50), _share("b", 0, 1)], 8, FairnessSettings(), 10)
    assert Counter(j.tenant for j, _ in turn) == {"a": 2, "b": 1} and capped
    turn, capped = plan([_share("a", 10, 50)], 8, FairnessSettings(), 10)
    assert turn == [] and capped


def test_size_classes() -> None:
    assert [size_class(n) for n in (1, 10, 11, 1000, 1001)] == ["small"] * 2 + ["medium"] * 2 + ["large"]
