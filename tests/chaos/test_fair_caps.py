"""Tenant caps through a whole system (jobs.scheduling.fairness): two tenants' jobs under a cap of 4
pages in inference and 1 source in prep per tenant, the GPU worker killed mid-batch. A claim the cap
held back hands its word of work on (a Celery retry with a countdown, through Redis) instead of dropping
it, so every page still ends exactly once, and the cap held while they ran."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from api.cli.devstack import wait_until
from tests.chaos.checks import result_lines
from tests.chaos.stack import OTHER_KEY, PgServer, Stack
from tests.fixtures.make_fixtures import text_pdf

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
CAP = 4
ENV = {
    "VLMQ_FAIRNESS__MAX_UNITS_IN_FLIGHT_PER_TENANT": str(CAP),
    "VLMQ_FAIRNESS__MAX_SOURCES_PREPARING_PER_TENANT": "1",
    "VLMQ_FAIRNESS__RECHECK_SECONDS": "0.5",
    "VLMQ_MODEL__FAKE_LATENCY_SECONDS": "0.3",
    # No sweeper re-send of waiting work within the test: only a handed-on word can bring it back.
    "VLMQ_QUEUE__REQUEUE_AFTER_SECONDS": "3600",
}


@pytest.fixture(scope="module")
def stack(chaos_pg: PgServer, chaos_moto: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("caps"), chaos_pg, chaos_moto, ENV)
    try:
        s.start_all(prep_workers=1)
        yield s
    finally:
        s.stop()


class PeakInFlight:
    """The most pages (and sources) one tenant had in flight at once, read from Postgres every 50 ms."""

    SQL = """SELECT j.tenant, count(*) FILTER (WHERE i.status = 'running'),
                    count(*) FILTER (WHERE i.status = 'preparing')
             FROM items i JOIN jobs j ON j.id = i.job_id GROUP BY j.tenant"""

    def __init__(self, db_url: str) -> None:
        self.engine = create_engine(db_url)
        self.units: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakInFlight:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self.engine.connect() as c:
                for tenant, units, sources in c.execute(text(self.SQL)):
                    self.units[tenant] = max(self.units.get(tenant, 0), units)
                    self.sources[tenant] = max(self.sources.get(tenant, 0), sources)


def _submit_other(stack: Stack, uri: str) -> str:
    body = {"items": [{"custom_id": "b-0", "uri": uri}]}
    r = httpx.post(f"{stack.base}/v1/jobs", json=body, headers={"Authorization": f"Bearer {OTHER_KEY}"},
                   timeout=60)  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _running(stack: Stack) -> bool:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as c:
            return bool(c.scalar(text("SELECT count(*) FROM items WHERE status = 'running'")))
    finally:
        engine.dispose()


def test_caps_hold_and_every_page_ends_once_through_a_worker_kill(stack: Stack) -> None:
    pdfs = [stack.put(f"caps/a-{i}.pdf", text_pdf(12, f"a{i}")) for i in range(3)]
    with PeakInFlight(stack.db_url) as peak:
        a = stack.submit(pdfs)["id"]  # tenant-a: three 12-page PDFs
        b = _submit_other(stack, stack.put("caps/b.pdf", text_pdf(6, "b")))
        wait_until(lambda: _running(stack), "pages in inference", 120)
        stack.kill9("worker-gpu")  # its claimed pages come back after their lease
        stack.start_gpu_worker()
        job_a, _ = stack.wait_terminal(a, 180)
        wait_until(lambda: _completed(stack, b), "tenant-b's job", 60)
    assert job_a["status"] == "completed" and job_a["page_counts"]["completed"] == 36, job_a
    lines = result_lines(stack, a)
    assert sorted((x["custom_id"], x["page"]) for x in lines) == sorted(
        (f"item-{i:05d}", p) for i in range(3) for p in range(1, 13)
    )  # every page once
    assert peak.units["tenant-a"] <= CAP and peak.units.get("tenant-b", 0) <= CAP, peak.units
    assert peak.sources["tenant-a"] <= 1, peak.sources
    assert peak.units["tenant-a"] == CAP  # the cap was reached, so it was what held tenant-a back


def _completed(stack: Stack, job_id: str) -> bool:
    headers = {"Authorization": f"Bearer {OTHER_KEY}"}
    return (
        httpx.get(f"{stack.base}/v1/jobs/{job_id}", headers=headers, timeout=30).json()["status"]
        == "completed"
    )
