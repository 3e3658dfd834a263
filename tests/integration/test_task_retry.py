"""A retried inference task takes back the units its failed run still held. Postgres goes away after the
claim (while the engine runs) and stays away while the batch is stored and given back, then returns
before the Celery retry: the retry must infer those units at once, not report success having done
nothing and leave them ``running`` until their lease runs out and the sweeper hands them on (120 s +
up to 30 s). Real Postgres (an outage of this module's own database: new connections refused, open ones
cut), S3, the real prep, inference and task code with Celery's retry (run eagerly); the engine a fake."""

from __future__ import annotations

import gc
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest
from celery.signals import task_retry
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from jobs.adapters.db import session_factory
from jobs.config import get_settings
from jobs.models import Item, Job, Result
from jobs.reprocessing.selection import Rules
from jobs.service import JobService
from jobs.status import ItemStatus
from jobs.sweeper import sweep
from tests.conftest import migrated_database, pg_admin
from tests.fakes import FakeEngine
from tests.integration import reprocess_fixtures as fx
from tests.integration.prepared import page_units, prepared_pdf
from workers.context import get_context, get_reprocessor
from workers.context import reset as context_reset
from workers.inference.engine import GenerationRequest

PAGES = 4


class Outage:
    """One database refusing connections, its open ones cut: what a worker sees of a Postgres outage."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.begun = self.ended = 0

    def begin(self) -> None:
        self.begun += 1
        self._admin(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS false')
        self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid()",
            self.dbname,
        )

    def end(self) -> None:
        self.ended += 1
        self._admin(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS true')

    def _admin(self, sql: str, *params: object) -> None:
        with psycopg.connect(pg_admin(), autocommit=True) as conn:
            conn.execute(sql.encode(), params or None)


@pytest.fixture(scope="module")
def outage_db() -> Iterator[tuple[str, str]]:
    """(name, url) of a database of this module's own: the outage must not cut other tests' pools."""
    name = f"vlmq_outage_{uuid.uuid4().hex[:10]}"
    with migrated_database(name) as url:
        yield name, url


@pytest.fixture
def outage(
    service_env: dict[str, str], outage_db: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Outage]:
    """Worker settings on the module's database (results stored by the task thread), and its outage,
    always ended."""
    name, url = outage_db
    for k, v in {**service_env, "VLMQ_DB__URL": url, "VLMQ_MODEL__RESULT_WRITERS": "0"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    context_reset()
    down = Outage(name)
    try:
        yield down
    finally:
        down.end()  # whatever the test did
        _drop_cut_connections()
        get_settings.cache_clear()
        context_reset()


def _drop_cut_connections() -> None:
    """The outage cut pooled connections; psycopg warns (ResourceWarning, an error here) whenever the
    garbage collector gets to one, in whichever later test that happens. Dropped here, where it is
    expected: the pool disposed, the cut connections collected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        bind = session_factory(get_settings()).kw["bind"]
        bind.dispose()
        gc.collect()


def _engine(outage: Outage, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The worker process's engine: its first batch takes Postgres down as it answers."""

    def answer(r: GenerationRequest) -> str:
        if not outage.begun:
            outage.begin()
        return f"<think>t</think><answer>{r.request_id}</answer>"

    engine = FakeEngine(answer)
    monkeypatch.setattr("workers.inference.factory._engine", engine)
    return engine


def _postgres_back(outage: Outage) -> Callable[..., None]:
    """A task_retry receiver: the outage ends while the task waits for its retry (the backoff)."""

    def back(**_: object) -> None:
        outage.end()

    return back


def _results(service: JobService, job_id: uuid.UUID) -> dict[uuid.UUID, int]:
    with service.sessions() as s:
        q = select(Result.item_id, func.count()).where(Result.job_id == job_id).group_by(Result.item_id)
        return {i: int(n) for i, n in s.execute(q)}


def test_a_retry_takes_back_the_units_its_failed_run_held(
    outage: Outage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tasks import infer_units

    ctx = get_context()
    with TestClient(create_app(ctx.settings)) as client:
        job_id = prepared_pdf(client, ctx, "held", PAGES)
    units = [u.id for u in page_units(ctx, job_id)]
    engine = _engine(outage, monkeypatch)
    back = _postgres_back(outage)
    task_retry.connect(back, sender=infer_units, weak=False)
    started = time.monotonic()
    try:
        outcome = infer_units.apply(args=[[str(u) for u in units]])
    finally:
        task_retry.disconnect(back, sender=infer_units)

    assert outcome.state == "SUCCESS", outcome.result
    assert (outage.begun, outage.ended) == (1, 1)  # down while the batch was stored, back for the retry
    rows = page_units(ctx, job_id)
    assert [(u.status, u.attempts, u.lease_until) for u in rows] == [(ItemStatus.SUCCEEDED, 2, None)] * PAGES
    assert sorted(r.request_id for r in engine.requests) == sorted(str(u) for u in units * 2)  # twice
    assert time.monotonic() - started < ctx.settings.queue.lease_seconds  # not left to the sweeper
    assert _results(ctx.service, job_id) == {u: 1 for u in units}  # one result each
    with ctx.service.sessions() as s:
        assert s.scalar(select(Job.status).where(Job.id == job_id)) == "completed"


def test_a_refresh_retry_takes_back_the_entries_its_failed_run_held(
    outage: Outage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a reprocessing run's refresh (the claim is the run's entry, not the page)."""
    from workers.tasks import refresh_units

    rp = get_reprocessor()
    job_id, pages = fx.pages_job(rp.jobs, [("model-old", "a"), ("model-old", "b")], custom_id="refresh")
    report, _ = rp.start(Rules(job_ids=(job_id,), failed=False), f"cli:held-{job_id}", "cli")
    assert report.id is not None and report.selected == 2
    engine = _engine(outage, monkeypatch)
    back = _postgres_back(outage)
    task_retry.connect(back, sender=refresh_units, weak=False)
    try:
        outcome = refresh_units.apply(args=[str(report.id), [str(p) for p in pages]])
    finally:
        task_retry.disconnect(back, sender=refresh_units)

    assert outcome.state == "SUCCESS", outcome.result
    assert (outage.begun, outage.ended) == (1, 1)
    final = rp.report(report.id)
    assert (final.status, final.changed, final.pending) == ("completed", 2, 0)
    assert sorted(r.request_id for r in engine.requests) == sorted(str(p) for p in pages * 2)
    with rp.sessions() as s:
        q = select(Result.item_id, Result.version, Result.is_current).where(Result.job_id == job_id)
        versions = {(i, v, current) for i, v, current in s.execute(q)}
    assert versions == {(p, v, v == 2) for p in pages for v in (1, 2)}  # one new version each


def test_a_held_claim_takes_back_only_units_still_under_it(outage: Outage) -> None:
    """The claim is the attempts it set: a unit another worker claimed since (its lease ran out, the
    sweeper put it back) has moved on and is left alone, and a duplicate retry takes nothing back."""
    ctx = get_context()
    service = ctx.service
    with TestClient(create_app(ctx.settings)) as client:
        job_id = prepared_pdf(client, ctx, "taken-over", 2)
    mine, theirs = [u.id for u in page_units(ctx, job_id)]
    held = {u.id: u.attempt for u in service.claim_units([mine, theirs])}
    with service.sessions() as s, s.begin():  # its lease ran out (no heartbeat renewed it)
        s.execute(update(Item).where(Item.id == theirs).values(lease_until=func.now() - timedelta(seconds=1)))
    assert sweep(service).leases_recovered == 1
    (other,) = service.claim_units([theirs])  # another worker
    assert other.attempt == held[theirs] + 1

    again = service.claim_units([mine, theirs], held)
    assert [u.id for u in again] == [mine] and again[0].attempt == held[mine] + 1
    assert service.claim_units([mine, theirs], held) == []  # the same retry delivered twice
    assert {u.id: (u.status, u.attempts) for u in page_units(ctx, job_id)} == {
        mine: (ItemStatus.RUNNING, 2),
        theirs: (ItemStatus.RUNNING, 2),
    }


def test_the_nightly_reprocess_waits_out_a_postgres_outage(outage: Outage) -> None:
    """Found by the soak: Postgres restarting at 02:00 failed the scheduled task for good, and that
    night had no reprocessing run. It retries with backoff, and the night's run is made once."""
    from jobs.reprocessing.models import ReprocessRun
    from workers.tasks import reprocess_scheduled

    get_context()  # the pools exist before the outage, as in a running worker
    outage.begin()
    back = _postgres_back(outage)
    task_retry.connect(back, sender=reprocess_scheduled, weak=False)
    try:
        outcome = reprocess_scheduled.apply()
    finally:
        task_retry.disconnect(back, sender=reprocess_scheduled)
    assert outcome.state == "SUCCESS", outcome.result
    assert (outage.begun, outage.ended) == (1, 1)
    with get_context().service.sessions() as s:
        keys = list(s.scalars(select(ReprocessRun.dedupe_key).where(ReprocessRun.trigger == "schedule")))
    assert len(keys) == 1 and keys[0].startswith("schedule:")
