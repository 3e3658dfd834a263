"""Job and item states, the transitions allowed between them, and the terminal sets.

An item is either a *source* (what a producer submitted: a PDF, an image) or a *unit* (one page, the
thing the model sees). Prep expands a source into units; inference turns units into results.

Source:  queued -> preparing -> prepared -> succeeded | failed       (failed also straight from preparing)
         (a preparing source already has units: prep records and sends its pages in batches as it
         renders them, see workers.prep; a job is done only when its units are terminal too)
Unit:    ready -> running -> succeeded | failed                       (running -> ready: retry / lease lost)
Job:     queued -> running -> completed | failed
         queued | running -> cancelling -> cancelled                  (cooperative: in-flight items finish
                                                                        or are cancelled by their worker)
         queued | running | cancelling -> expired                     (past expires_at: open items fail)

Any non-terminal item or job may be cancelled, and an item may fail (a waiting item fails when its job
expires or its lease is lost once too often). Two deliberate steps reopen failed items, outside these
tables on purpose so that no ordinary compare-and-set, and no worker path, can revive a failed item:
``POST /v1/jobs/{id}/retry`` (a job's failed items) and reprocessing (the failed items a run selected).
Both take the one reopen path, jobs.transitions.reopen_failed: a failed unit -> ready, a failed source that
was never prepared -> queued, the failed source of a reopened unit -> prepared, a finished job of
reopened items -> running, and each such job a full expiry window from now. Succeeded items are never
reopened: a recomputed result is a new version beside the current one.

Every transition is one compare-and-set UPDATE in jobs.transitions (the one module that writes a job's,
an item's or a batch's status) whose WHERE clause is built from
``ITEM_TRANSITIONS`` / ``JOB_TRANSITIONS``, so two workers racing on one row cannot both win. Postgres
enforces the same (migration 0009): a CHECK on every status column, and for jobs and items a trigger that
refuses any move not in these tables or the reopenings (``allowed_moves``); a test keeps the two equal.

An item's *outcome* (``Outcome``, ``outcome``) is what every view of a job counts and filters by: the
API's ``request_counts`` / ``page_counts`` and ``?status=``, result lines, output.jsonl / errors.jsonl,
the results page, ``vlmq watch``, and the OpenAI batch's ``request_counts`` (jobs.openai.format maps it
onto OpenAI's three numbers). Expired is not a state of its own: an expired item is stored ``failed``
with the code ``expired`` (so a retry reopens it with the other failures), but it did not fail.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"  # every item terminal; some may have failed (see request_counts)
    FAILED = "failed"  # the job itself could not run (e.g. every source unreadable is still COMPLETED)
    CANCELLING = "cancelling"  # cancel asked; items still in flight are being stopped
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not finished within its expiry window; open items failed with code "expired"


class ItemStatus(StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    PREPARED = "prepared"  # source expanded into units
    READY = "ready"  # unit waiting for inference
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})
# A job in one of these may get work: its waiting items are enqueued, its expired leases recovered.
JOB_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
ITEM_WAITING = frozenset({ItemStatus.QUEUED, ItemStatus.READY})  # a message should be on its way
ITEM_IN_FLIGHT = frozenset({ItemStatus.PREPARING, ItemStatus.RUNNING})  # a worker holds a lease
ITEM_TERMINAL = frozenset({ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED})

ITEM_TRANSITIONS: dict[ItemStatus, frozenset[ItemStatus]] = {
    ItemStatus.QUEUED: frozenset({ItemStatus.PREPARING, ItemStatus.FAILED, ItemStatus.CANCELLED}),
    ItemStatus.PREPARING: frozenset(
        {ItemStatus.PREPARED, ItemStatus.FAILED, ItemStatus.QUEUED, ItemStatus.CANCELLED}
    ),
    ItemStatus.PREPARED: frozenset({ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED}),
    ItemStatus.READY: frozenset({ItemStatus.RUNNING, ItemStatus.FAILED, ItemStatus.CANCELLED}),
    ItemStatus.RUNNING: frozenset(
        {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.READY, ItemStatus.CANCELLED}
    ),
    ItemStatus.SUCCEEDED: frozenset(),
    ItemStatus.FAILED: frozenset(),
    ItemStatus.CANCELLED: frozenset(),
}

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLING, JobStatus.CANCELLED, JobStatus.EXPIRED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLING, JobStatus.CANCELLED, JobStatus.EXPIRED}
    ),
    JobStatus.CANCELLING: frozenset({JobStatus.CANCELLED, JobStatus.EXPIRED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
}


def names(states: frozenset[Any]) -> list[str]:
    """The states' stored values, for an ``IN (...)``."""
    return [str(x) for x in states]


def item_sources_for(target: ItemStatus) -> frozenset[ItemStatus]:
    """The states an item may move to ``target`` from: the WHERE clause of a compare-and-set."""
    return frozenset(s for s, targets in ITEM_TRANSITIONS.items() if target in targets)


def job_sources_for(target: JobStatus) -> frozenset[JobStatus]:
    return frozenset(s for s, targets in JOB_TRANSITIONS.items() if target in targets)


# The two deliberate reopenings (see the module docstring), outside the tables above so that no ordinary
# compare-and-set can take them; Postgres allows exactly the tables' moves and these (migration 0009).
ITEM_REOPEN = {ItemStatus.FAILED: frozenset({ItemStatus.READY, ItemStatus.QUEUED, ItemStatus.PREPARED})}
JOB_REOPEN = {
    s: frozenset({JobStatus.RUNNING}) for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED)
}


def allowed_moves(
    table: dict[Any, frozenset[Any]], reopen: dict[Any, frozenset[Any]]
) -> frozenset[tuple[str, str]]:
    """Every (from, to) a row may take: what the database enforces."""
    pairs = {(str(a), str(b)) for a, targets in table.items() for b in targets}
    return frozenset(pairs | {(str(a), str(b)) for a, targets in reopen.items() for b in targets})


# A reprocessing run's entries (jobs.reprocessing): a refresh is claimed (running), then changed,
# unchanged or failed, or given back to pending; a retry entry closes with its item (changed or failed).
ENTRY_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "changed", "failed"}),
    "running": frozenset({"pending", "changed", "unchanged", "failed"}),
    "changed": frozenset(),
    "unchanged": frozenset(),
    "failed": frozenset(),
}

ENTRY_OPEN = ("pending", "running")

# A job submitted as a source (an S3 prefix with a glob, a manifest object: jobs.listings) is listed a
# page at a time: ``listing`` until the source is exhausted (``done``), its job stopped (``stopped``:
# cancelled, expired) or the source could not be read for good (``failed``: its error says why).
LISTING_TRANSITIONS: dict[str, frozenset[str]] = {
    "listing": frozenset({"done", "stopped", "failed"}),
    "done": frozenset(),
    "stopped": frozenset(),
    "failed": frozenset(),
}  # an item in an open entry is in a run now (one run at a time)

EXPIRED_CODE = "expired"  # the error code of an item its job's expiry stopped (jobs.errors.Expired)


class Outcome(StrEnum):
    """How an item ended, or ``pending`` while it has not."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # it ran (or was read) and did not give a result: its error says why
    CANCELLED = "cancelled"  # its job was cancelled before it finished
    EXPIRED = "expired"  # its job passed its expiry time before it finished
    PENDING = "pending"


def outcome(status: str, error_code: str | None) -> Outcome:
    """The one definition of an item's outcome, from its stored status and error code."""
    if status == ItemStatus.FAILED:
        return Outcome.EXPIRED if error_code == EXPIRED_CODE else Outcome.FAILED
    if status in (ItemStatus.SUCCEEDED, ItemStatus.CANCELLED):
        return Outcome(status)
    return Outcome.PENDING
