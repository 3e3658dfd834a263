"""The end of a soak: has everything ended, the end checks (Postgres, views, storage, the users'
ledger, one nightly run per simulated 02:00), and the figures of the report."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, timedelta
from typing import TYPE_CHECKING

from tests.soak.clock import midnights
from tests.soak.config import DAY
from tests.soak.invariants import Violation
from tests.soak.storage import Storage
from tests.soak.views import Views

if TYPE_CHECKING:
    from tests.soak.runner import Soak

UNENDED = """SELECT
  (SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled', 'expired'))
  + (SELECT count(*) FROM batches WHERE status NOT IN ('completed', 'failed', 'cancelled', 'expired'))"""
OPEN_RUNS = "SELECT count(*) FROM reprocess_runs WHERE status <> 'completed'"


def all_ended(soak: Soak) -> bool:
    """Every job and batch ended, and every reprocess run. A run's state is settled when its report is
    read (jobs.reprocessing.reprocessor): read them as an operator does, with `vlmq reprocess-runs`."""
    if soak.checker.scalar(UNENDED) != 0:
        return False
    if soak.checker.scalar(OPEN_RUNS):
        subprocess.run([sys.executable, "-m", "api.cli", "reprocess-runs", "--last", "200"],
                       env=soak.system.stack.env, capture_output=True, timeout=120)  # fmt: skip
    return soak.checker.scalar(OPEN_RUNS) == 0


WHAT_IS_OPEN = {
    "jobs": """SELECT j.status || ' (' || count(i.id) FILTER (WHERE i.status NOT IN
                 ('succeeded', 'failed', 'cancelled')) || ' open items)', count(DISTINCT j.id)
               FROM jobs j LEFT JOIN items i ON i.job_id = j.id
               WHERE j.status NOT IN ('completed', 'failed', 'cancelled', 'expired')
               GROUP BY j.id, j.status""",
    "batches": "SELECT status, count(*) FROM batches WHERE status NOT IN "
    "('completed', 'failed', 'cancelled', 'expired') GROUP BY 1",
    "reprocess runs": "SELECT status, count(*) FROM reprocess_runs WHERE status <> 'completed' GROUP BY 1",
}


def unended(soak: Soak) -> str:
    """What keeps a drain from ending: open jobs (with their open items), batches and reprocess runs."""
    try:
        parts = []
        for name, sql in WHAT_IS_OPEN.items():
            rows = soak.checker.rows(sql)
            shown = Counter[str]()
            for what, n in rows:
                shown[str(what)] += int(str(n))
            parts.append(f"{name}: " + (", ".join(f"{n} {w}" for w, n in shown.most_common(6)) or "none"))
        return "; ".join(parts)
    except Exception as e:  # a progress line: Postgres may be down
        return f"unknown ({type(e).__name__})"


def gather(soak: Soak, drained: bool) -> None:
    r, c = soak.report, soak.checker
    r.simulated_days = round(soak.elapsed / DAY, 2)
    r.midnights = midnights(soak.t0, soak.now)
    r.add(c.at_end())
    if not drained:
        r.add([Violation("not_ended_within_the_drain_timeout", 1, [f"{soak.cfg.drain_timeout_s} s"])])
    r.add(Views(soak.system, c).check())
    bad, r.storage = Storage(soak.system, c, soak.cfg.sample_payloads, soak.rng).check()
    r.add(bad)
    r.add(_ledger(soak))
    r.add(_nightly(soak))
    r.problems = soak.ledger.problems
    _figures(soak)


ITEMS = """
SELECT count(*) FILTER (WHERE parent_id IS NULL), count(*) FILTER (WHERE parent_id IS NOT NULL),
       (SELECT count(*) FROM results), (SELECT count(*) FROM results WHERE is_current)
FROM items"""
UNSUCCEEDED = """
SELECT status, coalesce(error_code, '-'), count(*) FROM items WHERE status <> 'succeeded' GROUP BY 1, 2"""
RUNS = "SELECT dedupe_key, selected, status, trigger FROM reprocess_runs ORDER BY created_at"
PAST_WINDOW = "SELECT coalesce(max(extract(epoch FROM completed_at - expires_at)), 0) FROM jobs"
JOBS_AND_BATCHES = "SELECT j.id::text, j.tenant, b.id FROM jobs j LEFT JOIN batches b ON b.job_id = j.id"
LONGEST = "SELECT coalesce(max(extract(epoch FROM completed_at - created_at)), 0) FROM jobs"


def _figures(soak: Soak) -> None:
    r, c = soak.report, soak.checker
    ended = {f"ended_{s}": int(n) for s, n in c.rows("SELECT status, count(*) FROM jobs GROUP BY 1")}
    r.jobs = {k: v for k, v in soak.ledger.stats.items() if k.startswith("jobs_")} | ended
    names = ("sources", "pages", "results", "results_current")
    r.items = {k: int(str(v)) for k, v in zip(names, c.rows(ITEMS)[0], strict=True)}
    r.items["all"] = r.items["sources"] + r.items["pages"]
    r.items |= {f"{s}_{code}": int(str(n)) for s, code, n in c.rows(UNSUCCEEDED)}
    r.faults = dict(soak.faults.done) | ({"gpu_outage_25h": 1} if soak.outage.state == "over" else {})
    r.fault_log = soak.faults.log
    r.reprocess_runs = [{"key": k, "selected": n, "status": s, "trigger": t} for k, n, s, t in c.rows(RUNS)]
    r.bound = {
        "window_s": soak.cfg.expiry_s,
        "slack_s": soak.cfg.slack_s,
        "worst_past_window_s": round(float(str(c.rows(PAST_WINDOW)[0][0]))),
        "longest_job_s": round(float(str(c.rows(LONGEST)[0][0]))),
        "largest_clock_step_s": soak.clock.largest,
    }
    r.client = dict(soak.stats) | {k: v for k, v in soak.ledger.stats.items() if not k.startswith("jobs_")}
    r.recovery = _recovery(soak.system.stack.logs())
    r.memory = soak.memory.report()


def _recovery(logs: str) -> dict[str, int]:
    """What the sweeper did, from the workers' logs."""
    back = [int(n) for n in re.findall(r"sweep: (\d+) expired leases back to waiting", logs)]
    failed = [int(n) for n in re.findall(r"expired leases back to waiting, (\d+) failed", logs)]
    return {
        "leases_recovered": sum(back),
        "leases_failed": sum(failed),
        "broker_resets": logs.count("(broker reset)"),
        "sweeps_logged": logs.count("sweep: "),
    }


def _ledger(soak: Soak) -> list[Violation]:
    """Every job a user was answered with exists and is the tenant's; every job in Postgres is one a
    user was answered with (a submission retried after a fault made no second job)."""
    known = {(r.id, r.tenant) for r in soak.ledger.jobs.values() if r.batch_id is None}
    batches = {r.batch_id for r in soak.ledger.jobs.values() if r.batch_id}
    rows = soak.checker.rows(JOBS_AND_BATCHES)
    in_pg = {(j, t) for j, t, b in rows if b is None}
    out = []
    if missing := known - in_pg:
        out.append(Violation("job_a_user_was_given_is_missing", len(missing), [j for j, _ in missing][:10]))
    if extra := in_pg - known:
        out.append(Violation("job_no_user_was_given", len(extra), [j for j, _ in extra][:10]))
    if lost := batches - {b for _, _, b in rows if b}:
        out.append(Violation("batch_without_its_job", len(lost), sorted(lost)[:10]))
    return out


def _nightly(soak: Soak) -> list[Violation]:
    """One scheduled reprocess run per simulated 02:00 the run crossed (with two hours to fire). The
    task runs on the GPU worker's queue and takes the slot of the time it runs: a night that falls in
    the GPU outage is run when the worker is back, under the next night's slot if that has come (one
    run for both; the rules select the same items). Such a night needs no run of its own."""
    if not soak.clock.simulated:
        return []
    sql = "SELECT dedupe_key FROM reprocess_runs WHERE trigger = 'schedule'"
    keys = {k for (k,) in soak.checker.rows(sql)}
    slot = soak.t0.astimezone(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    out_from = soak.t0 + timedelta(seconds=soak.outage.start)
    out_to = soak.t0 + timedelta(seconds=soak.outage.end)
    missed = []
    while slot < soak.now - timedelta(hours=2):
        covered = out_from <= slot <= out_to or f"schedule:{slot:%Y-%m-%dT%H:%MZ}" in keys
        if slot > soak.t0 and not covered:
            missed.append(f"{slot:%Y-%m-%dT%H:%MZ}")
        slot += timedelta(days=1)
    return [Violation("nightly_reprocess_missed", len(missed), missed)] if missed else []
