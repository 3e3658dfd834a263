"""The soak's report: what ran (jobs, items, simulated days, faults by kind), what broke (violations:
must be 0), how long it took, and each process's peak memory per simulated day. Printed, and written
as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.soak.invariants import Violation


@dataclass
class Report:
    config: dict[str, Any]
    clock_simulated: bool = False
    simulated_days: float = 0.0
    midnights: int = 0
    jobs: dict[str, int] = field(default_factory=dict)  # by user, and by final status
    items: dict[str, int] = field(default_factory=dict)  # sources, pages, results, versions
    faults: dict[str, int] = field(default_factory=dict)
    fault_log: list[str] = field(default_factory=list)
    reprocess_runs: list[dict[str, Any]] = field(default_factory=list)
    bound: dict[str, float] = field(default_factory=dict)  # seconds: the stated bound, the worst seen
    client: dict[str, int] = field(default_factory=dict)  # HTTP answers the users got, resubmits ...
    storage: dict[str, int] = field(default_factory=dict)
    recovery: dict[str, int] = field(default_factory=dict)  # leases recovered, broker resets, ...
    checks_while_running: int = 0
    violations: list[Violation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the users saw that was wrong
    leftover_processes: list[str] = field(default_factory=list)
    memory: dict[str, dict[str, object]] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)

    @property
    def violation_count(self) -> int:
        return sum(v.count for v in self.violations) + len(self.problems) + len(self.leftover_processes)

    def add(self, found: list[Violation] | None) -> None:
        """Violations found while running are kept once per check (the first time, with examples)."""
        seen = {(v.check, v.phase) for v in self.violations}
        self.violations += [v for v in found or [] if (v.check, v.phase) not in seen]

    def write(self, path: Path) -> None:
        data = asdict(self)
        data["violation_count"] = self.violation_count
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")

    def text(self) -> str:
        lines = [
            f"soak: {self.simulated_days:.2f} simulated days ({self.midnights} midnights; clock "
            f"{'simulated' if self.clock_simulated else 'STOOD STILL: no jobs.clock in this checkout'})",
            f"jobs: {_kv(self.jobs)}",
            f"items: {_kv(self.items)}",
            f"faults: {sum(self.faults.values())} ({_kv(self.faults)})",
            f"nightly reprocess runs: {len(self.reprocess_runs)} "
            + "; ".join(f"{r['key']}: {r['selected']} selected, {r['status']}" for r in self.reprocess_runs),
            f"bound: {_kv(self.bound)}",
            f"recovery: {_kv(self.recovery)}",
            f"clients: {_kv(self.client)}",
            f"storage: {_kv(self.storage)}",
            f"checks while running: {self.checks_while_running}",
            f"wall: {_kv(self.wall_s)}",
            "peak memory (MB, PSS with children) per simulated day:",
            *(_memory_line(name, m) for name, m in self.memory.items()),
            f"VIOLATIONS: {self.violation_count}",
            *(f"  {v.line()}" for v in self.violations),
            *(f"  user saw: {p}" for p in self.problems[:20]),
            *(f"  still running after the end: {p}" for p in self.leftover_processes),
        ]
        return "\n".join(lines)


def _memory_line(name: str, m: dict[str, Any]) -> str:
    grew = "  GREW" if m["grew"] else ""
    return f"  {name}: peak {m['peak_mb']}, by day {m['by_day_mb']}, CPU {m['cpu_s']} s{grew}"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())
