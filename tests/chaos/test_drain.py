"""SIGTERM, as Kubernetes or a preemptible host sends it (issue 27, workers.drain): the worker takes no
more work, lets its batches finish for ``queue.drain_grace_seconds``, hands back at once what is still
running, and exits 0. Then every item has exactly one result, nothing doubled (tests.chaos.checks)."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from api.cli.devstack import wait_until
from tests.chaos.checks import exactly_once
from tests.chaos.stack import Stack

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
N = 24  # three batches of 8


def _units(stack: Stack, job_id: str) -> dict[str, tuple[str, int, str | None]]:
    """{page id: (status, attempts, error code)} of the job's pages."""
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            q = "SELECT id::text, status, attempts, error_code FROM items"
            q += " WHERE job_id = :j AND parent_id IS NOT NULL"
            return {i: (st, int(a), code) for i, st, a, code in c.execute(text(q), {"j": uuid.UUID(job_id)})}
    finally:
        engine.dispose()


def _running(stack: Stack, job_id: str) -> set[str]:
    return {i for i, (st, _, _) in _units(stack, job_id).items() if st == "running"}


def _sigterm_mid_batch(stack: Stack, job_id: str) -> tuple[set[str], float, int]:
    """SIGTERM the GPU worker once a batch is in its engine: (the batch's pages, seconds until the worker
    exited, its exit code)."""
    wait_until(lambda: bool(_running(stack, job_id)), "a batch in flight", 120)
    proc = stack.procs["worker-gpu"]
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    batch = _running(stack, job_id)
    code = proc.proc.wait(60)
    return batch, time.monotonic() - t0, code


def _ends_exactly_once(stack: Stack, job_id: str, test: str, t0: float) -> None:
    """Once a new worker took over: the job completed, every item with exactly one result, none failed."""
    done, t1 = stack.wait_terminal(job_id, timeout=180)
    assert done["status"] == "completed", done
    assert exactly_once(stack, job_id, N, test, t1 - t0).failures == 0


@pytest.mark.stack_env(VLMQ_MODEL__FAKE_LATENCY_SECONDS="8", VLMQ_QUEUE__DRAIN_GRACE_SECONDS="1",
                       VLMQ_QUEUE__LEASE_SECONDS="120")  # fmt: skip
def test_sigterm_hands_a_long_batch_back_at_once_and_exits_0(stack: Stack) -> None:
    """An 8 s batch against a 1 s grace: its pages are ready again within the grace period (not after
    their 120 s lease), the attempt given back and no error on them, and the worker exits 0."""
    t0, job = time.monotonic(), stack.submit(stack.put_images(N))
    batch, took, code = _sigterm_mid_batch(stack, job["id"])
    assert code == 0, stack.diagnose()
    assert took < 8, f"the worker waited out its batch ({took:.1f} s)"
    units = _units(stack, job["id"])
    # Handed back, not left to the lease: ready again, the attempt given back, no error on them.
    assert batch and all(units[i] == ("ready", 0, None) for i in batch), (batch, units)
    assert "drain:" in stack.procs["worker-gpu"].log_tail(20000) and "handed back" in stack.diagnose()
    stack.start_gpu_worker()
    _ends_exactly_once(stack, job["id"], "SIGTERM, long batch", t0)


@pytest.mark.stack_env(VLMQ_MODEL__FAKE_LATENCY_SECONDS="3", VLMQ_QUEUE__DRAIN_GRACE_SECONDS="20")
def test_sigterm_lets_a_batch_that_fits_the_grace_period_finish(stack: Stack) -> None:
    """A 3 s batch against a 20 s grace: the batch is stored, nothing is handed back, exit 0 well
    before the grace period ends; the next worker takes only the rest."""
    t0, job = time.monotonic(), stack.submit(stack.put_images(N))
    batch, took, code = _sigterm_mid_batch(stack, job["id"])
    assert code == 0, stack.diagnose()
    assert took < 15, f"{took:.1f} s"
    units = _units(stack, job["id"])
    assert batch and all(units[i] == ("succeeded", 1, None) for i in batch), (batch, units)
    assert not _running(stack, job["id"])
    assert "handed back" not in stack.procs["worker-gpu"].log_tail(20000)
    stack.start_gpu_worker()
    _ends_exactly_once(stack, job["id"], "SIGTERM, batch within grace", t0)


def test_sigterm_to_a_prep_worker_loses_nothing(stack: Stack) -> None:
    """The prep worker's warm shutdown: its pool finishes the task in hand and it exits 0."""
    t0, job = time.monotonic(), stack.submit(stack.put_images(N))
    proc = stack.procs["worker-prep"]
    wait_until(lambda: bool(_units(stack, job["id"])), "prep under way", 120)  # its first pages made
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(60) == 0, stack.diagnose()
    stack.start_prep()
    _ends_exactly_once(stack, job["id"], "SIGTERM, prep", t0)
