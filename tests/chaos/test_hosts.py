"""Workers on other hosts (issue 27): the API, beat and the services in this test's namespace, a prep
and an inference worker on each of two "hosts" (network namespaces of the test's own, tests.chaos.hosts)
that reach the services only at the bridge's address. One host is cut off the network mid-batch; its
pages come back after their leases and the other host finishes them; then the cut host comes back
with its stale batch, which must double nothing. Exactly one result an item (tests.chaos.checks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from api.cli.devstack import wait_until
from tests.chaos import hosts
from tests.chaos.checks import exactly_once, no_secrets_in_logs
from tests.chaos.stack import Stack

WHY_NOT = hosts.available()
pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT)),
]
N = 48


@pytest.fixture
def remote(stack: Stack) -> Iterator[hosts.Remote]:
    """Two worker hosts; this namespace keeps the API and beat, its own workers stopped."""
    for name in ("worker-prep", "worker-gpu"):
        stack.procs.pop(name).stop()
    net = hosts.Hosts(2)
    remote = hosts.Remote(stack, net)
    try:
        yield remote
    finally:
        for name in [n for n in stack.procs if n.endswith(("-h0", "-h1"))]:
            stack.procs.pop(name).stop()
        remote.stop()
        net.remove()


def _running(stack: Stack, job_id: str) -> set[str]:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            q = "SELECT id::text FROM items WHERE job_id = :j AND parent_id IS NOT NULL"
            q += " AND status = 'running'"
            return set(c.scalars(text(q), {"j": uuid.UUID(job_id)}))
    finally:
        engine.dispose()


@pytest.mark.stack_env(VLMQ_MODEL__FAKE_LATENCY_SECONDS="2")
def test_a_host_cut_off_mid_batch_loses_and_doubles_nothing(stack: Stack, remote: hosts.Remote) -> None:
    for h in (0, 1):
        remote.start_worker(h, f"prep-h{h}", "worker", "--queues", "prep", "--concurrency", "1",
                            "--name", f"prep-h{h}")  # fmt: skip
    remote.start_worker(0, "gpu-h0", "worker", "--queues", "gpu", "--name", "gpu-h0")
    t0, job = time.monotonic(), stack.submit(stack.put_images(N))
    wait_until(lambda: bool(_running(stack, job["id"])), "host 0's first batch", 120)
    held = _running(stack, job["id"])
    remote.hosts.cut(0)  # host 0 drops off the network, its batch in its engine
    remote.start_worker(1, "gpu-h1", "worker", "--queues", "gpu", "--name", "gpu-h1")
    # Host 0's pages come back after their leases (5 s) and host 1 takes them: none stays running.
    wait_until(lambda: not (held & _running(stack, job["id"])), "host 0's pages taken over", 120)
    remote.hosts.mend(0)  # back, with a batch whose pages are another host's now
    done, t1 = stack.wait_terminal(job["id"], timeout=240)
    assert done["status"] == "completed", (done, stack.diagnose())
    figures = exactly_once(stack, job["id"], N, "a worker host cut off mid-batch", t1 - t0)
    assert figures.failures == 0 and figures.retried_items >= len(held) >= 1
    logs = stack.logs()
    assert "127.0.0.1" not in remote.env["VLMQ_DB__URL"] + remote.env["VLMQ_REDIS__URL"]
    assert "prep-h1" in logs and "gpu-h1" in logs
    no_secrets_in_logs(stack)
