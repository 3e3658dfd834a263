"""Reprocessing on real Postgres, Redis and S3: the nightly run selects failed and out-of-date items
only, a double trigger enqueues nothing twice, and recomputed results add versions while the old ones
stay readable (API, database and S3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from jobs.adapters.db import session_factory
from jobs.adapters.dispatch import (
    GPU_LOW_QUEUE,
    GPU_QUEUE,
    INFER_TASK,
    PREP_LOW_QUEUE,
    PREP_QUEUE,
    PREP_TASK,
    REFRESH_TASK,
)
from jobs.config import Settings, get_settings
from jobs.models import Result
from jobs.prompts.presets import DEFAULT
from jobs.reprocessing.models import ReprocessEntry, ReprocessRun
from jobs.reprocessing.reprocessor import Reprocessor
from jobs.reprocessing.selection import Rules
from jobs.service import JobService
from jobs.sweeper import sweep
from tests.conftest import migrated_database
from tests.fixtures.models import PAGE_SIDE
from tests.integration import age_job, db_now
from tests.integration import reprocess_fixtures as fx
from workers.context import get_context, get_reprocessor
from workers.context import reset as context_reset

NIGHT = datetime(2026, 11, 25, 2, 0, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def reprocess_db() -> Iterator[str]:
    """A database of this module's own: a run selects across every job, so it must not see other
    tests' jobs. One for the module (emptied before each test), so the process's cached engines stay
    few: an engine dropped from that cache would close none of its connections."""
    with migrated_database(f"vlmq_rp_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def env(
    service_env: dict[str, str], redis_prefix: str, reprocess_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """This module's database, emptied, and Redis queues, emptied; the workers' model is "model-new"."""
    values = {
        **service_env,
        "VLMQ_DB__URL": reprocess_db,
        "VLMQ_REDIS__KEY_PREFIX": f"{redis_prefix}reprocess:",
        "VLMQ_MODEL__MODEL_ID": "model-new",
        "VLMQ_MODEL__MAX_NEW_TOKENS": "64",
        "VLMQ_LIMITS__RENDER_LONGEST_SIDE": str(PAGE_SIDE),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    context_reset()
    with session_factory(get_settings()).begin() as s:
        s.execute(text("TRUNCATE reprocess_runs, jobs CASCADE"))
    _clear_queues(get_settings())
    try:
        yield values
    finally:
        get_settings.cache_clear()
        context_reset()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return get_settings()


@pytest.fixture
def rp(env: dict[str, str]) -> Reprocessor:
    return get_reprocessor()


@pytest.fixture
def service(env: dict[str, str]) -> JobService:
    return get_context().service


def _clear_queues(settings: Settings) -> None:
    """Empties the queues: what a run sends is what is there after this."""
    for queue in (PREP_QUEUE, GPU_QUEUE, PREP_LOW_QUEUE, GPU_LOW_QUEUE):
        fx.drain(settings, queue)


def _entries(service: JobService) -> set[tuple[uuid.UUID, str, str]]:
    with service.sessions() as s:
        return {(e.item_id, e.mode, e.reason) for e in s.scalars(select(ReprocessEntry))}


def _sent_ids(messages: list[tuple[str, list[object], dict[str, object]]]) -> list[str]:
    """Every item id the messages carry (a refresh message is [run_id, ids], infer [ids], prep id)."""
    ids: list[str] = []
    for task, args, _ in messages:
        batch = args[-1] if task != PREP_TASK else [args[0]]
        assert isinstance(batch, list)
        ids += [str(x) for x in batch]
    return ids


def test_nightly_run_selects_failed_and_out_of_date_items_only(
    rp: Reprocessor, service: JobService, settings: Settings
) -> None:
    current, _ = fx.pages_job(service, [("model-new", "Quarterly report"), ("model-new", "Total 42")])
    mixed, (old_model, up_to_date, failed) = fx.pages_job(
        service, [("model-old", "stale"), ("model-new", "Total 42"), None]
    )
    unreadable = fx.failed_source_job(service)
    older_prompt, (old_prompt,) = fx.pages_job(service, [("model-new", "caption")], custom_id="old-prompt")
    fx.make_prompt_older(service, older_prompt)
    fx.pages_job(service, [("model-new", "own")], custom_id="own-prompt", prompt="Read the title.")
    in_flight = fx.running_job_with_a_failed_page(service)
    unreadable_src = fx.source(service, unreadable).id
    _clear_queues(settings)

    dry = rp.preview(Rules())
    assert (dry.status, dry.selected) == ("dry_run", 4)
    assert dry.by_reason == {"model": 1, "prompt": 1, "failed": 2}
    assert {x["item_id"] for x in dry.sample} == {
        str(i) for i in (old_model, failed, unreadable_src, old_prompt)
    }
    assert _entries(service) == set() and fx.drain(settings, GPU_LOW_QUEUE) == []  # a dry run changes nothing

    report = rp.scheduled(NIGHT)
    assert report is not None and report.dedupe_key == "schedule:2026-11-25T02:00Z"
    assert (report.trigger, report.status, report.selected, report.pending) == ("schedule", "running", 4, 4)
    assert _entries(service) == {
        (old_model, "refresh", "model"),
        (old_prompt, "refresh", "prompt"),
        (failed, "retry", "failed"),
        (unreadable_src, "retry", "failed"),
    }
    # Sent once each, to the low lane only; a re-prepped source keeps its pages in the low lane too.
    gpu_low, prep_low = fx.drain(settings, GPU_LOW_QUEUE), fx.drain(settings, PREP_LOW_QUEUE)
    assert sorted(_sent_ids(gpu_low)) == sorted(str(i) for i in (old_model, old_prompt, failed))
    assert {t for t, _, _ in gpu_low} == {REFRESH_TASK, INFER_TASK}
    assert prep_low == [(PREP_TASK, [str(unreadable_src)], {"lane": "low"})]
    assert fx.drain(settings, GPU_QUEUE) == [] and fx.drain(settings, PREP_QUEUE) == []

    # Failed items are reopened (their jobs run again); refreshed pages and their jobs keep their state.
    assert fx.item_row(service, failed).status == "ready" and fx.item_row(service, failed).attempts == 0
    assert fx.item_row(service, failed).error_code is None
    assert fx.item_row(service, unreadable_src).status == "queued"
    assert (
        fx.job_row(service, mixed).status == "running" and fx.job_row(service, unreadable).status == "running"
    )
    assert fx.item_row(service, old_model).status == "succeeded"
    assert fx.item_row(service, up_to_date).status == "succeeded"
    assert fx.job_row(service, current).status == "completed"
    assert fx.job_row(service, in_flight).status == "running"
    job = fx.job_row(service, older_prompt)
    assert (job.status, job.prompt_version, job.prompt) == ("completed", DEFAULT.version, DEFAULT.prompt)


def test_a_double_trigger_enqueues_nothing_twice(
    rp: Reprocessor, service: JobService, settings: Settings
) -> None:
    fx.pages_job(service, [("model-old", "a"), ("model-old", "b"), None, ("model-new", "d")])
    fx.failed_source_job(service)
    _clear_queues(settings)
    barrier = threading.Barrier(4)
    reports: list[object] = []

    def fire() -> None:
        barrier.wait()
        reports.append(rp.scheduled(NIGHT))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = {getattr(r, "id", None) for r in reports}
    assert len(reports) == 4 and len(ids) == 1 and None not in ids
    sent = _sent_ids(fx.drain(settings, GPU_LOW_QUEUE) + fx.drain(settings, PREP_LOW_QUEUE))
    assert len(sent) == len(set(sent)) == 4  # two outdated pages, a failed page, a failed source

    # The same slot fired again later (a restarted beat, a manual rerun): the same run, nothing sent.
    again = rp.scheduled(NIGHT + timedelta(minutes=20))
    assert again is not None and again.id in ids
    # Another run while the first is open takes none of its items.
    other, created = rp.start(Rules(), "cli:other", "cli")
    assert created and other.selected == 0 and other.status == "completed"
    assert fx.drain(settings, GPU_LOW_QUEUE) == [] and fx.drain(settings, PREP_LOW_QUEUE) == []
    with service.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ReprocessEntry)) == 4
        assert s.scalar(select(func.count()).select_from(ReprocessRun)) == 2


def test_a_job_reopened_by_a_run_gets_a_fresh_expiry_window(
    rp: Reprocessor, service: JobService, settings: Settings
) -> None:
    """A nightly run looks at jobs past their expiry window (a day old): the job it reopens must get a
    full window from now, or the next sweep ends it ``expired`` and fails the reopened page again."""
    job_id, (_, failed) = fx.pages_job(service, [("model-new", "a"), None])
    age_job(service, job_id)
    report, created = rp.start(Rules(job_ids=(job_id,)), "cli:old-job", "cli")
    assert created and report.selected == 1

    assert sweep(service).expired_jobs == 0
    job, page = fx.job_row(service, job_id), fx.item_row(service, failed)
    assert (job.status, page.status, page.error_code) == ("running", "ready", None)
    window = timedelta(seconds=settings.queue.job_expiry_seconds)
    assert job.expires_at is not None and job.expires_at > db_now(service) + window - timedelta(minutes=1)


def test_two_beat_tasks_in_two_processes_make_one_run(
    env: dict[str, str], service: JobService, settings: Settings, tmp_path: Path
) -> None:
    """Celery beat's task itself, run by two worker processes at once (two beats fired the slot)."""
    fx.pages_job(service, [("model-old", "a"), None])
    _clear_queues(settings)
    code = "from workers.tasks import reprocess_scheduled; reprocess_scheduled.apply(throw=True)"
    run_env = {**os.environ, **env, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=run_env, cwd=tmp_path) for _ in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    with service.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ReprocessRun)) == 1
        assert s.scalar(select(func.count()).select_from(ReprocessEntry)) == 2
    assert len(_sent_ids(fx.drain(settings, GPU_LOW_QUEUE))) == 2


def test_refresh_work_is_low_class_in_the_engine(
    rp: Reprocessor, service: JobService, settings: Settings
) -> None:
    """Refresh entries are claimed by id, outside the turn (jobs.scheduling.fairness): their engine
    priority is the low class's, behind every normal claim's, not 0 (the front of vLLM's queue)."""
    from jobs.scheduling import fairness

    fx.pages_job(service, [("model-old", "a"), ("model-old", "b")])
    _clear_queues(settings)
    report, created = rp.start(Rules(), "cli:rank", "cli")
    assert created and report.id is not None
    ids = [uuid.UUID(i) for task, args, _ in fx.drain(settings, GPU_LOW_QUEUE) if task == REFRESH_TASK
           for i in args[1]]  # fmt: skip
    work = rp.lane(report.id).claim(ids)
    assert len(work) == 2 and {w.rank for w in work} == {fairness.LOW_RANK}
    assert fairness.LOW_RANK >= fairness.RANK_CLASS  # behind any normal turn


def test_a_refresh_stored_while_its_reopened_job_closes_reaches_the_output_files(
    rp: Reprocessor, service: JobService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the CI soak: a night's run retried a job's failed page (the job reopened) and refreshed
    its other page. The finalizer read the results for output.jsonl; then the refresh stored its new
    version and settled, saw the job still running and left the files to the finalizer; the finalizer
    ended the job with files one version behind, for good. Files are written under the job's finalizer
    lock (JobService.write_outputs), so that settle waits for the close and rewrites them."""
    job_id, (stale, failed) = fx.pages_job(service, [("model-old", "stale"), None])
    _clear_queues(settings)
    report, created = rp.start(Rules(), "cli:race", "cli")
    assert created and report.selected == 2 and report.id is not None
    assert fx.job_row(service, job_id).status == "running"  # reopened for its failed page
    lane = rp.lane(report.id)
    (refresh,) = lane.claim([stale])
    (retried,) = service.claim_units([failed])
    service.complete_units([(retried, fx.result(answer="retried", model_id="model-new"))])

    def refreshed() -> None:  # a GPU worker's refresh batch, in another thread
        lane.complete([(refresh, fx.result(answer="fresh", model_id="model-new"))])
        lane.settle([refresh])

    other = threading.Thread(target=refreshed)
    put_file = service.store.put_file

    def refresh_meanwhile(key: str, f: IO[bytes], content_type: str = "application/octet-stream") -> str:
        if key.endswith("output.jsonl") and other.ident is None:  # the close read its results
            other.start()
            _until_done_or_waiting_on_a_lock(service, other)
        return put_file(key, f, content_type)

    monkeypatch.setattr(service.store, "put_file", refresh_meanwhile)
    assert service.finalize(job_id)
    other.join(30)
    assert not other.is_alive()
    output = [json.loads(x) for x in service.store.get(f"jobs/{job_id}/output.jsonl").decode().splitlines()]
    assert [(x["page"], x["version"], x["answer"]) for x in output] == [(1, 2, "fresh"), (2, 1, "retried")]


def _until_done_or_waiting_on_a_lock(service: JobService, thread: threading.Thread) -> None:
    waits = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    with service.sessions() as s:
        for _ in range(200):
            waiting = s.scalar(waits)
            if not thread.is_alive() or waiting:
                return
            thread.join(0.05)
    raise AssertionError("the refresh neither finished nor waited for the finalizer lock")


@pytest.mark.slow
def test_reprocessing_adds_versions_and_keeps_history(
    rp: Reprocessor, service: JobService, settings: Settings, taught_model_dir: Path
) -> None:
    """The taught model answers pages 1-2 of the sample: page 1's stale answer changes, page 2's is
    the same, the failed page 3 gets one; the unreadable source fails again, alone."""
    from workers import infer, prep
    from workers.inference.transformers_engine import TransformersEngine

    job_id, units = fx.pages_job(service, [("model-old", "stale"), ("model-old", "Total 42"), None])
    broken = fx.failed_source_job(service)
    _clear_queues(settings)
    report, created = rp.start(Rules(), "cli:history", "cli")
    assert created and report.selected == 4 and report.id is not None

    engine = TransformersEngine(str(taught_model_dir), "model-new")
    for task, args, _ in fx.drain(settings, GPU_LOW_QUEUE):  # what the GPU worker would run
        if task == REFRESH_TASK:
            run_id, ids = args
            infer.run(
                get_context("low"), engine, rp.lane(uuid.UUID(str(run_id))), [uuid.UUID(i) for i in ids]
            )
        else:
            infer.infer(get_context("low"), engine, [uuid.UUID(i) for i in args[0]])
    for _, args, kwargs in fx.drain(settings, PREP_LOW_QUEUE):
        prep.prepare(get_context(kwargs["lane"]), uuid.UUID(args[0]))

    final = rp.report(report.id)
    assert (final.status, final.pending, final.progress) == ("completed", 0, 1.0)
    assert (final.changed, final.unchanged, final.failed) == (2, 1, 1)
    assert (
        fx.job_row(service, job_id).status == "completed"
        and fx.job_row(service, broken).status == "completed"
    )
    _check_history(settings, job_id, units)
    _check_storage(service, job_id, units)
    assert rp.preview(Rules(failed=False)).selected == 0  # up to date now: the next night takes nothing


def _check_history(settings: Settings, job_id: uuid.UUID, units: list[uuid.UUID]) -> None:
    from api.app import create_app

    with TestClient(create_app(settings)) as client:
        base = f"/v1/jobs/{job_id}/results"
        auth = {"Authorization": "Bearer test-key"}
        now = [json.loads(x) for x in client.get(base, headers=auth).text.splitlines()]
        old = [
            json.loads(x)
            for x in client.get(base, params={"history": "true"}, headers=auth).text.splitlines()
        ]
    assert [(x["page"], x["status"], x["version"], x["current"]) for x in now] == [
        (1, "succeeded", 2, True), (2, "succeeded", 2, True), (3, "succeeded", 1, True)
    ]  # fmt: skip
    assert [x["answer"] for x in now[:2]] == ["Quarterly report", "Total 42"]
    assert all(x["model_id"] == "model-new" and x["settings"]["max_new_tokens"] == 64 for x in now)
    assert all(len(x["settings_hash"]) == 16 for x in now)
    assert [(x["page"], x["version"], x["current"], x["model_id"], x["answer"]) for x in old[:4]] == [
        (1, 1, False, "model-old", "stale"), (1, 2, True, "model-new", "Quarterly report"),
        (2, 1, False, "model-old", "Total 42"), (2, 2, True, "model-new", "Total 42"),
    ]  # fmt: skip
    assert len(old) == 5


def _check_storage(service: JobService, job_id: uuid.UUID, units: list[uuid.UUID]) -> None:
    v1 = json.loads(service.store.get(f"results/{job_id}/{units[0]}/v1.json"))
    v2 = json.loads(service.store.get(f"results/{job_id}/{units[0]}/v2.json"))
    assert (v1["answer"], v2["answer"], v2["version"]) == ("stale", "Quarterly report", 2)
    output = service.store.get(f"jobs/{job_id}/output.jsonl").decode()
    assert "Quarterly report" in output and '"stale"' not in output  # rewritten with the current versions
    with service.sessions() as s:
        current = s.execute(
            select(Result.item_id, func.count()).where(Result.is_current).group_by(Result.item_id)
        ).all()
    assert all(n == 1 for _, n in current) and len(current) == 3


def test_a_worker_takes_the_low_lane_only_when_its_normal_queue_is_empty(settings: Settings) -> None:
    """The Redis transport pops the queues in the worker's order (normal first), not round robin."""
    from kombu import Consumer, Message

    from workers.celery_app import make_app

    app = make_app()
    for i in range(3):
        app.send_task("test.low", args=[i], queue=GPU_LOW_QUEUE)
    for i in range(2):
        app.send_task("test.normal", args=[i], queue=GPU_QUEUE)
    got: list[str] = []

    def take(_body: object, message: Message) -> None:
        got.append(message.headers["task"])
        message.ack()

    queues = [app.amqp.queues[GPU_QUEUE], app.amqp.queues[GPU_LOW_QUEUE]]
    with app.connection_for_read() as conn, Consumer(conn, queues=queues, callbacks=[take], prefetch_count=1):
        while len(got) < 5:
            conn.drain_events(timeout=10)
    assert got == ["test.normal"] * 2 + ["test.low"] * 3


def test_the_command_dry_runs_then_starts_once(service: JobService, settings: Settings) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    fx.pages_job(service, [("model-old", "a"), None])
    _clear_queues(settings)
    runner = CliRunner()

    def vlmq(*args: str) -> dict[str, object]:
        out = runner.invoke(app, list(args))
        assert out.exit_code == 0, out.output
        report: dict[str, object] = json.loads(out.stdout)
        return report

    dry = vlmq("reprocess", "--dry-run")
    assert (dry["status"], dry["selected"], dry["by_reason"]) == ("dry_run", 2, {"model": 1, "failed": 1})
    first = vlmq("reprocess", "--no-failed", "--tenant", "tenant-a")
    assert (first["status"], first["selected"], first["by_reason"]) == ("running", 1, {"model": 1})
    assert vlmq("reprocess", "--no-failed", "--tenant", "tenant-a")["id"] == first["id"]  # a rerun
    assert vlmq("reprocess", "--no-failed", "--tenant", "tenant-b")["selected"] == 0
    assert vlmq("reprocess-runs", str(first["id"]))["pending"] == 1
    assert len(_sent_ids(fx.drain(settings, GPU_LOW_QUEUE))) == 1
