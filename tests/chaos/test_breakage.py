"""Break things mid-job on purpose; after each, every item has exactly one result or one failure, no
duplicates, nothing stuck, the job terminal (tests.chaos.checks). 200 items per job."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from api.cli.devstack import wait_until
from tests.chaos.checks import Figures, exactly_once, no_secrets_in_logs
from tests.chaos.stack import Stack

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
N = 200


def _count(stack: Stack, job_id: str, status: str) -> int:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            q = "SELECT count(*) FROM items WHERE job_id = :j AND parent_id IS NOT NULL AND status = :s"
            return int(c.scalar(text(q), {"j": uuid.UUID(job_id), "s": status}) or 0)
    finally:
        engine.dispose()


def _mid_job(stack: Stack, job_id: str, running: bool = False) -> None:
    """Until a fifth of the pages are done (and, if asked, a batch is in the engine right now)."""

    def there() -> bool:
        return _count(stack, job_id, "succeeded") >= N // 5 and (
            not running or _count(stack, job_id, "running") > 0
        )

    wait_until(there, "the job to be under way", 120)
    assert _count(stack, job_id, "succeeded") < N, "the job finished before the breakage: make it slower"


def _run(stack: Stack, name: str, breakage: Callable[[Stack, str], None]) -> Figures:
    uris = stack.put_images(N)
    t0 = time.monotonic()
    job = stack.submit(uris)
    breakage(stack, job["id"])
    done, t1 = stack.wait_terminal(job["id"])
    assert done["status"] == "completed", done
    figures = exactly_once(stack, job["id"], N, name, t1 - t0)
    no_secrets_in_logs(stack)
    return figures


def _prep_children(stack: Stack) -> list[int]:
    pid = stack.procs["worker-prep"].pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _writers(stack: Stack) -> list[int]:
    """The GPU worker's result writer processes, from its start line (workers.writers)."""
    found = re.findall(
        r"(\d+) result writer processes \(([\d, ]+)\)", stack.procs["worker-gpu"].log_tail(20000)
    )
    assert found, "the GPU worker started no result writers"
    return [int(p) for p in found[-1][1].split(", ")]


def _running(stack: Stack, job_id: str) -> set[str]:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            q = "SELECT id::text FROM items WHERE job_id = :j AND parent_id IS NOT NULL AND status='running'"
            return set(c.scalars(text(q), {"j": uuid.UUID(job_id)}))
    finally:
        engine.dispose()


def _kill_mid_batch(stack: Stack, job_id: str) -> set[str]:
    """SIGKILL the inference worker while a batch is in its engine; the pages it held. A kill that lands
    just after the batch finished does not count: then a fresh worker is started and killed again."""
    for _ in range(10):
        wait_until(lambda: bool(_running(stack, job_id)), "a batch in flight", 120)
        stack.kill9("worker-gpu")
        held = _running(stack, job_id)  # running now, with its worker dead: killed mid-batch
        stack.start_gpu_worker()  # what a supervisor does
        if held:
            return held
    raise AssertionError("never caught a batch in flight")


def test_kill_9_workers_mid_batch(stack: Stack) -> None:
    held: set[str] = set()

    def kill(stack: Stack, job_id: str) -> None:
        _mid_job(stack, job_id)
        held.update(_kill_mid_batch(stack, job_id))
        for child in _prep_children(stack)[:1]:  # and one prep process, mid-task or between tasks
            os.kill(child, signal.SIGKILL)
        os.kill(_writers(stack)[0], signal.SIGKILL)  # and a result writer of the new GPU worker

    figures = _run(stack, "kill -9 workers mid-batch", kill)
    assert figures.failures == 0
    assert figures.retried_items >= len(held) >= 1  # the killed batch was taken over after its lease ran out


def test_redis_flushall_mid_job(stack: Stack) -> None:
    def flush(stack: Stack, job_id: str) -> None:
        _mid_job(stack, job_id)
        client = stack.redis()
        try:
            assert client.dbsize() > 0
            client.flushall()  # every queued message and the unacked ones are gone
        finally:
            client.close()

    figures = _run(stack, "Redis FLUSHALL mid-job", flush)
    assert figures.failures == 0
    assert "broker reset" in stack.logs()  # the sweeper noticed and re-enqueued the waiting items


def test_postgres_restart_mid_job(stack: Stack) -> None:
    def restart(stack: Stack, job_id: str) -> None:
        _mid_job(stack, job_id)
        stack.pg.stop()  # fast shutdown: every connection of every process is cut
        time.sleep(3)
        stack.pg.start()

    figures = _run(stack, "Postgres restart mid-job", restart)
    assert figures.failures == 0


@pytest.mark.chaos_long
def test_s3_down_for_30_seconds(stack: Stack) -> None:
    def outage(stack: Stack, job_id: str) -> None:
        _mid_job(stack, job_id)
        stack.s3.down()  # connections refused, open ones cut
        time.sleep(30)
        stack.s3.up()

    figures = _run(stack, "S3 down for 30 s", outage)
    assert figures.failures == 0  # transport errors back off and retry: a 30 s outage fails nothing
    assert "storage_unavailable" in stack.logs() or figures.retried_items >= 1
