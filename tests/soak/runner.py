"""The soak's loop: each turn the three users act at the simulated now, a fault may start or end, the
invariants are checked every few turns and memory sampled, then (half a second later) the clock moves
one step. Once the simulated days are over the users stop submitting and the system drains; then the
end checks run, the system is stopped, and nothing of it may be left running."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from pathlib import Path

from tests.soak import finish
from tests.soak.bulk import BulkUser
from tests.soak.clients import Api, Ledger
from tests.soak.clock import SimClock
from tests.soak.config import DAY, PAUSE_S, SoakConfig
from tests.soak.faults import Faults, Outage
from tests.soak.inputs import Corpus
from tests.soak.invariants import Checker
from tests.soak.memory import Memory
from tests.soak.openai_user import OpenAIUser
from tests.soak.report import Report
from tests.soak.rest import RestUser
from tests.soak.system import TENANTS, System, start

log = logging.getLogger(__name__)
START_HOUR = 20  # the run starts at 20:00 UTC, simulated: its first midnight 4 hours in
OPEN = "SELECT count(*) FROM items WHERE status IN ('queued', 'preparing', 'prepared', 'ready', 'running')"
# The work the clock waits for: open items and a reprocessing run's open entries. Counting items only,
# a night's 1,000 refresh entries left the clock at its full step, and in the drain each simulated day
# (24 s of wall time) started another night's run before the last one ended: the drain never ended.
BACKLOG = f"SELECT ({OPEN}) + (SELECT count(*) FROM reprocess_entries WHERE state IN ('pending', 'running'))"


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)  # None: Postgres is down (a fault)


class Soak:
    def __init__(self, system: System, cfg: SoakConfig) -> None:
        self.system, self.cfg = system, cfg
        self.rng = random.Random(cfg.seed)
        self.clock = SimClock(system.db_url)
        self.clock.to_hour(START_HOUR)
        self.clock.largest = 0.0  # that first move is no step of the run
        t0 = self.clock.now()
        assert t0 is not None
        self.t0 = self.now = t0
        self.report = Report(config=cfg.__dict__, clock_simulated=self.clock.simulated)
        self.checker = Checker(system.db_url, cfg.slack_s, self.clock.simulated)
        self.ledger, self.stats = Ledger(), Counter[str]()
        corpus = Corpus(system.stack)
        self.apis = {t: Api(system.base, key, self.stats) for t, key in TENANTS.items()}
        self.users = [
            BulkUser(self.apis["bulk"], corpus, self.ledger, cfg, self.rng),
            RestUser(self.apis["rest"], corpus, self.ledger, cfg, self.rng),
            OpenAIUser(self.apis["openai"], corpus, self.ledger, cfg, self.rng),
        ]
        self.faults, self.outage = Faults(system, cfg, self.rng), Outage(system, cfg)
        self.memory = Memory(system)
        self.turns = self.quarters = 0
        days = range(int(cfg.days) + 1)
        self.deploys = [d * DAY + 0.15 * DAY for d in days]  # before each night's 02:00 run
        self.pauses = [d * DAY + self.rng.uniform(0.3, 0.9) * DAY for d in days]

    @property
    def elapsed(self) -> float:
        return (self.now - self.t0).total_seconds()

    def run(self) -> Report:
        t0 = time.monotonic()
        while self.elapsed < self.cfg.days * DAY:
            self.turn(submitting=True)
        self.report.wall_s["workload"] = round(time.monotonic() - t0, 1)
        self.faults.finish()
        if self.outage.state == "on":
            self.outage.tick(float("inf"))
        t1 = time.monotonic()
        drained = self.drain()
        self.report.wall_s["drain"] = round(time.monotonic() - t1, 1)
        finish.gather(self, drained)
        return self.report

    def turn(self, submitting: bool) -> None:
        started = time.monotonic()
        for user in self.users:
            user.tick(self.now, self.elapsed, submitting)
        outage = self.outage.tick(self.elapsed, may_start=submitting)
        if submitting:
            self.faults.tick(self.elapsed)
            self._deploy(outage)
        self.turns += 1
        self._progress()
        if self.turns % self.cfg.check_every == 0:
            found = self.checker.during()
            self.report.checks_while_running += found is not None
            self.report.add(found)
        if self.turns % 10 == 0:
            self.memory.sample(int(self.elapsed // DAY))
        time.sleep(max(0.0, self.cfg.tick_s - (time.monotonic() - started)))
        self._advance(self._step(outage))

    def _progress(self) -> None:
        """A line every 6 simulated hours, for whoever watches a long run."""
        quarter = int(self.elapsed // (6 * 3600))
        if quarter > self.quarters:
            self.quarters = quarter
            log.info(
                "day %.2f: %d jobs, %s open items, %d faults, %d violations so far",
                self.elapsed / DAY, len(self.ledger.jobs), _count(self.checker.scalar(OPEN)),
                sum(self.faults.done.values()), len(self.report.violations),
            )  # fmt: skip

    def _step(self, outage: bool) -> float:
        if outage:
            return self.cfg.outage_step_s
        if self.pauses and self.pauses[0] <= self.elapsed:
            self.pauses.pop(0)
            return PAUSE_S  # longer than a lease: every lease in flight runs out
        # Time slows as work piles up, so that the system keeps up with what the users send it in
        # simulated time: a job of thousands of pages takes hours, not the days it would take at the
        # full step (and expire).
        backlog = self.checker.scalar(BACKLOG) or 0
        return max(self.cfg.slow_step_s, self.cfg.step_s * min(1.0, self.cfg.backlog / max(backlog, 1)))

    def _advance(self, seconds: float) -> None:
        now = self.clock.advance(seconds)
        if now is not None:  # None: Postgres is down, and so is the clock
            self.now = now

    def _deploy(self, outage: bool) -> None:
        busy = outage or (self.faults.current is not None and self.faults.current.kind == "kill9_gpu")
        if self.deploys and self.deploys[0] <= self.elapsed and not busy:
            self.deploys.pop(0)
            self.system.deploy(f"rev-{int(self.elapsed // DAY) + 1}")

    def drain(self) -> bool:
        """Users stop submitting; the clock goes on in small steps until every job, batch and reprocess
        run has ended, or the drain timeout passes. True when everything ended."""
        started = time.monotonic()
        deadline, shown = started + self.cfg.drain_timeout_s, started
        while time.monotonic() < deadline:
            if self.turns % 8 == 0 and finish.all_ended(self):
                return True
            if time.monotonic() - shown >= 30:  # what is still open, for whoever watches a long drain
                shown = time.monotonic()
                log.info("drain %.0f s: %s", shown - started, finish.unended(self))
            self.turn(submitting=False)
        return finish.all_ended(self)

    def close(self) -> None:
        for api in self.apis.values():
            api.close()
        self.checker.close()
        self.clock.close()


def run(cfg: SoakConfig, root: Path) -> Report:
    """Start a whole system under ``root``, soak it, stop it; the report."""
    t0 = time.monotonic()
    system = start(root, cfg)
    started = time.monotonic() - t0
    soak: Soak | None = None
    try:
        soak = Soak(system, cfg)
        report = soak.run()
    finally:
        if soak is not None:
            soak.close()
        system.stop()
    report.wall_s["start"] = round(started, 1)
    report.leftover_processes = system.leftovers()
    report.wall_s["total"] = round(time.monotonic() - t0, 1)
    return report
