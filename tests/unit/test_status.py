from pathlib import Path

from jobs.models import OPEN_ITEM_STATES
from jobs.schemas import Counts
from jobs.status import (
    EXPIRED_CODE,
    ITEM_TERMINAL,
    ITEM_TRANSITIONS,
    JOB_TERMINAL,
    JOB_TRANSITIONS,
    ItemStatus,
    JobStatus,
    Outcome,
    item_sources_for,
    job_sources_for,
    outcome,
)


def test_terminal_states_have_no_way_out() -> None:
    assert all(not ITEM_TRANSITIONS[s] for s in ITEM_TERMINAL)
    assert all(not JOB_TRANSITIONS[s] for s in JOB_TERMINAL)


def test_every_state_has_a_transition_table_row() -> None:
    assert set(ITEM_TRANSITIONS) == set(ItemStatus)
    assert set(JOB_TRANSITIONS) == set(JobStatus)


def test_every_non_terminal_state_can_be_cancelled() -> None:
    assert item_sources_for(ItemStatus.CANCELLED) == set(ItemStatus) - ITEM_TERMINAL
    assert job_sources_for(JobStatus.CANCELLED) == set(JobStatus) - JOB_TERMINAL


def test_compare_and_set_sources() -> None:
    assert item_sources_for(ItemStatus.RUNNING) == {ItemStatus.READY}
    assert item_sources_for(ItemStatus.SUCCEEDED) == {ItemStatus.RUNNING, ItemStatus.PREPARED}
    # the retry paths: a unit goes back to ready, a source back to queued
    assert item_sources_for(ItemStatus.READY) == {ItemStatus.RUNNING}
    assert item_sources_for(ItemStatus.QUEUED) == {ItemStatus.PREPARING}
    assert job_sources_for(JobStatus.COMPLETED) == {JobStatus.RUNNING}


def test_an_items_outcome_comes_from_its_status_and_an_expiry_is_not_a_failure() -> None:
    assert outcome("succeeded", None) == Outcome.SUCCEEDED
    assert outcome("failed", "corrupt_media") == Outcome.FAILED
    assert outcome("failed", EXPIRED_CODE) == Outcome.EXPIRED
    assert outcome("cancelled", "storage_unavailable") == Outcome.CANCELLED  # a code kept from a retry
    assert {outcome(s, "engine_error") for s in set(ItemStatus) - ITEM_TERMINAL} == {Outcome.PENDING}
    every = {outcome(s, c) for s in ItemStatus for c in (None, EXPIRED_CODE)}
    assert every == set(Outcome)


def test_counts_name_each_outcome_once() -> None:
    by_outcome = {Outcome.SUCCEEDED: 3, Outcome.FAILED: 1, Outcome.CANCELLED: 2, Outcome.PENDING: 4}
    counts = Counts.tally({**by_outcome, Outcome.EXPIRED: 5})
    assert counts.model_dump() == {"total": 15, "completed": 3, "failed": 1, "cancelled": 2, "expired": 5}
    assert counts.finished == 11  # the pending ones are the rest


def test_the_open_states_are_every_state_but_the_terminal_ones() -> None:
    """models.OPEN_ITEM_STATES (two partial indexes, jobs.repository.any_open) spelled out, as the
    migration that indexes them must: all three agree with jobs/status.py."""
    assert set(OPEN_ITEM_STATES) == {s.value for s in ItemStatus} - {s.value for s in ITEM_TERMINAL}
    migration = next(
        (Path(__file__).parents[2] / "migrations/versions").glob("*-0013_listings.py")
    ).read_text()
    assert all(f"'{s}'" in migration.split("OPEN = ", 1)[1].split("\n", 1)[0] for s in OPEN_ITEM_STATES)
