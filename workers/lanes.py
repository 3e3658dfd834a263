"""Where an inference batch's units are claimed from and where their outcome goes (``Lane``): the job
lane, which moves the units themselves, or jobs.reprocessing.reprocessor's refresh lane."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from jobs.errors import VlmqError
from jobs.service import JobService
from jobs.work import Held, UnitWork


class Lane(Protocol):
    """Where units are claimed from and their outcome goes. The job lane (below) moves the unit itself;
    jobs.reprocessing.reprocessor's refresh lane claims a reprocessing entry and leaves the unit's state
    alone.

    ``leased``: the claim is the unit's own lease (renewed by a heartbeat) and the unit follows its job's
    state (cancel, expiry). A refresh lane's units stay succeeded: nothing to renew or to stop."""

    leased: bool

    def claim(self, unit_ids: Sequence[uuid.UUID], held: Held | None = None) -> list[UnitWork]:
        """Claim ``unit_ids``; first take back ``held``, the claims of this task's failed run that it
        could not give back (``infer.ClaimsHeld``), so its retry redoes them now."""
        ...

    def complete(self, done: Sequence[tuple[UnitWork, dict[str, object]]]) -> None: ...

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None: ...

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]: ...

    def settle(self, units: Sequence[UnitWork]) -> None: ...


class JobLane:
    """The normal path: units move ready -> running -> succeeded | failed, then their jobs finalize."""

    leased = True

    def __init__(self, service: JobService, in_turn: bool = False, below: int | None = None) -> None:
        """``in_turn``: a claim takes a full batch (``limits.batch_size``, or as many as it is given ids
        if more), whichever units are next in turn (jobs.scheduling.fairness), not those ids;
        ``below``: only those ranked below it (urgent work, workers.inference.gate). A
        word of one page (a source's first, a small job's) then fills its batch with the next pages in
        turn: an engine that runs a batch per call (transformers, fake) would spend a whole round on one
        page. ``taken`` and ``capped`` tell the task what it got."""
        self.service = service
        self.in_turn, self.below = in_turn, below
        self.taken = 0
        self.capped = False

    def claim(self, unit_ids: Sequence[uuid.UUID], held: Held | None = None) -> list[UnitWork]:
        if not self.in_turn:
            units = self.service.claim_units(unit_ids, held)
        else:
            n = max(len(unit_ids), self.service.settings.limits.batch_size)
            claim = self.service.claim_next(n, held, self.below)
            units, self.capped = claim.taken, claim.capped
        self.taken = len(units)
        return units

    def complete(self, done: Sequence[tuple[UnitWork, dict[str, object]]]) -> None:
        self.service.complete_units(done)

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        self.service.fail_items(unit_ids, error)

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        return self.service.give_back(unit_ids, error)

    def settle(self, units: Sequence[UnitWork]) -> None:
        """Settle the sources of these pages (only those: see repository.settle_sources), and the jobs."""
        for job_id in {u.job_id for u in units}:
            self.service.finalize(
                job_id, sorted({u.parent_id for u in units if u.job_id == job_id and u.parent_id})
            )
