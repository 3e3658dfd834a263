"""A source's pages on their way to the GPU while the rest are rendered: every ``size`` pages stored are
recorded (``JobService.add_units``, one short transaction) and their READY units dispatched at once.

The first chunk is smaller (``first``, ``VLMQ_LIMITS__FIRST_CHUNK_PAGES``, 1 by default): a job's first
pages then reach the engine one page's rendering after prep takes the file, not ``size`` pages' (an
8-page chunk took 1.0 s to render under a full prep pool on the H100, with the GPU idle meanwhile).

Within one prep a unit is dispatched once; ``dispatched`` lets finish_prep leave those out. A retry of
the source (a transient error, a lost lease) sends the READY units of each chunk again, since the
message sent the first time may be what was lost; a duplicate is harmless (claim_units moves a unit
from ready to running once), and running or succeeded units are never sent again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from jobs.service import JobService
from jobs.work import PreparedUnit, PrepWork


class Stopped(Exception):
    """Stop rendering: the source's job was cancelled or expired (the source is cancelled), or the
    source is no longer this worker's (its lease ran out; another worker may have it now)."""


@dataclass
class Chunks:
    service: JobService
    work: PrepWork
    size: int
    first: int | None = None  # pages of the first chunk (None: ``size``)
    pages: int = 0  # pages rendered and stored by this prep
    dispatched: list[uuid.UUID] = field(default_factory=list)
    pending: list[PreparedUnit] = field(default_factory=list)

    @property
    def first_pages(self) -> int:
        """Pages in the first chunk."""
        return self.size if self.first is None else self.first

    def add(self, unit: PreparedUnit) -> None:
        self.pending.append(unit)
        self.pages += 1
        recorded = self.pages - len(self.pending)  # 0: this is the first chunk
        if len(self.pending) >= (self.size if recorded else self.first_pages):
            self.flush()

    def flush(self) -> None:
        """Record the pending units and dispatch those READY; Stopped if the source should stop."""
        if not self.pending:
            return
        ready = self.service.add_units(self.work.item_id, self.pending, self.work.attempt)
        if ready is None:
            raise Stopped(f"item {self.work.item_id}")
        self.pending = []
        if ready:
            self.service.dispatcher.infer(ready, self.work.priority)
            self.dispatched += ready

    def take_pending(self) -> list[PreparedUnit]:
        """The last, partial chunk: finish_prep records it with the source."""
        last, self.pending = self.pending, []
        return last
