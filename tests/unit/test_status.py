from jobs.status import (
    ITEM_TERMINAL,
    ITEM_TRANSITIONS,
    JOB_TERMINAL,
    JOB_TRANSITIONS,
    ItemStatus,
    JobStatus,
    item_sources_for,
    job_sources_for,
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
