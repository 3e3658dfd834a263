"""What a soak run does: its size (simulated days, items, faults) and the time scale of its system.

Two sizes: ``ci()`` (the pytest test: at most 3 minutes on 2 cores, two simulated midnights, every kind
of fault) and ``full()`` (`make soak`: 7 simulated days, 50,000 items, 20+ faults). Every other knob
follows from these; RELIABILITY.md, *Soak*, says why each value is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

HOUR = 3600.0
DAY = 24 * HOUR

# The stack's time scale. The clock moves one step per loop turn (half a second of wall time), so a
# simulated hour passes in a few wall seconds. Leases are set in simulated time: long enough that a
# healthy worker's heartbeat (every wall second, two turns) renews its lease well before a run of normal
# steps ends it, even with the cores busy; short enough that a killed worker's items move again after a
# few turns. Once a simulated day the clock jumps by more than a lease (a stalled cluster): every
# in-flight lease runs out at once, which must lose and double nothing.
LEASE_S = 4 * HOUR
PAUSE_S = 5 * HOUR
# A waiting item is re-sent after this long untouched. Production's 30 min would be a few wall seconds
# here: every item of a backlog re-sent every few seconds, a flood no real system sees.
REQUEUE_AFTER_S = 6 * HOUR


@dataclass(frozen=True)
class SoakConfig:
    days: float  # simulated days the workload runs (then it drains)
    items: int  # items (sources + pages) the three users submit in all, about
    faults: int  # faults injected at random moments, at least (every kind at least once)
    seed: int = 22
    tick_s: float = 0.5  # wall seconds per loop turn
    step_s: float = 30 * 60  # simulated seconds per turn while the system keeps up
    slow_step_s: float = 2 * 60  # the least step: the clock slows as open items pile up past ``backlog``
    backlog: int = 150  # open items up to which the step is whole; n times more: 1/n of it
    outage_day: float = 2.3  # the GPU worker is down for OUTAGE_S from this simulated day
    expiry_s: float = DAY  # a job's window (the product's default)
    outage_s: float = 25 * HOUR  # longer than a job's window: the jobs waiting for it expire
    outage_step_s: float = 2 * HOUR
    prep_workers: int = 2
    bulk_jobs_per_day: int = 2
    bulk_pages: tuple[int, int] = (4, 9)  # pages per bulk PDF, uniform
    batches_per_day: int = 4
    reprocess_max_items: int = 1000  # per nightly run
    drain_timeout_s: float = 600  # wall seconds for every job to end once the workload stopped
    # The fake engine: output lengths as GLM-4.1V-Thinking writes them (reasoning and answer, 300 to 900
    # tokens a page), time about 1/300 of a real GPU's, so that 50,000 items fit in an hour on 2 cores.
    fake_latency_s: float = 0.02  # seconds per inference batch
    fake_tokens: int = 600  # mean output tokens a page
    fake_token_s: float = 0.00003  # seconds per token of a batch's longest output
    check_every: int = 40  # loop turns between two runs of the invariants while it runs
    sample_payloads: int = 400  # result payloads read back from S3 at the end (besides histories)

    def scaled(self, **changes: object) -> SoakConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def max_jump_s(self) -> float:
        """The longest single clock move of the run: what a job may overshoot its window by, at most
        (plus the sweeps of ``BOUND_STEPS`` normal steps)."""
        return max(PAUSE_S, self.outage_step_s, self.step_s)

    @property
    def slack_s(self) -> float:
        """How far past its window a job may end, at most: the bound (RELIABILITY.md, *Soak*)."""
        return self.max_jump_s + BOUND_STEPS * self.step_s


# The bound: a job ends by its expires_at plus the longest single jump plus this many normal steps. The
# sweeper ends a job one sweep after its window closes; sweeps come every 2 s of wall time (4 turns),
# and a killed beat or prep worker takes a few seconds more to be back.
BOUND_STEPS = 16


def ci() -> SoakConfig:
    """The CI size: at most 3 minutes on 2 shared cores, stack start and final checks included. Jobs get
    a 12-hour window (a setting like any other) so that the outage that outlasts it costs 13 simulated
    hours, not 25: the run crosses two midnights in 1.5 simulated days, each night's run its own.
    The drain may take 90 s: it took 35-47 s on 2 shared cores (a nightly run of 120 pages to finish
    on the low queue), and a CI run once needed 46.5 s against the 45 s it had then."""
    return SoakConfig(
        days=1.5, items=1200, faults=7, step_s=20 * 60, slow_step_s=4 * 60, backlog=80,
        expiry_s=12 * HOUR, outage_day=0.35, outage_s=13 * HOUR, outage_step_s=2 * HOUR,
        bulk_jobs_per_day=2, bulk_pages=(3, 7), batches_per_day=3, reprocess_max_items=120,
        drain_timeout_s=90, check_every=30, sample_payloads=100,
    )  # fmt: skip


def full() -> SoakConfig:
    """`make soak`: 7 simulated days, at least 50,000 items, 24 faults. The users draw their page counts
    at random, so they submit about ``items``; at 50,000 the run of 2026-12-05 made 49,306."""
    return SoakConfig(days=7, items=52_000, faults=24)


def stack_env(cfg: SoakConfig, metrics_token: str, keys: str) -> dict[str, str]:
    """Settings of every process of the soak's system (over tests.chaos.stack.FAST)."""
    return {
        "VLMQ_CLOCK__SIMULATED": "true",
        "VLMQ_API__KEYS": keys,
        "VLMQ_API__METRICS_TOKEN": metrics_token,
        "VLMQ_QUEUE__LEASE_SECONDS": str(LEASE_S),
        "VLMQ_QUEUE__HEARTBEAT_SECONDS": "1",
        "VLMQ_QUEUE__REQUEUE_AFTER_SECONDS": str(REQUEUE_AFTER_S),
        "VLMQ_QUEUE__SWEEP_INTERVAL_SECONDS": "2",
        "VLMQ_QUEUE__JOB_EXPIRY_SECONDS": str(cfg.expiry_s),
        "VLMQ_MODEL__FAKE_LATENCY_SECONDS": str(cfg.fake_latency_s),
        "VLMQ_MODEL__FAKE_OUTPUT_TOKENS": str(cfg.fake_tokens),
        "VLMQ_MODEL__FAKE_TOKEN_SECONDS": str(cfg.fake_token_s),
        "VLMQ_MODEL__MAX_NEW_TOKENS": "2048",
        "VLMQ_MODEL__RESULT_WRITERS": "1",
        "VLMQ_MODEL__REVISION": "rev-0",
        "VLMQ_REPROCESS__MAX_ITEMS": str(cfg.reprocess_max_items),
        # A night's run caught up for 3 days: the simulated clock crosses a day in about 40 s, and a lost
        # message (Redis flushed, the GPU worker killed) can take that long to notice.
        "VLMQ_REPROCESS__CATCH_UP_S": str(3 * 86400),
        "VLMQ_LIMITS__MAX_ACTIVE_JOBS_PER_TENANT": "400",
    }
