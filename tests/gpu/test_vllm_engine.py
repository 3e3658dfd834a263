"""The vLLM engine on the GPU with the tiny taught model: same answers as the CPU engine, many batches in
flight at once, the thinking budget, the reasoning split."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.config import Settings
from jobs.prompts.presets import DEFAULT
from jobs.prompts.reasoning import split_output
from tests.fixtures.models import TARGETS, taught_pages
from workers.inference.budget import BUDGET_FLAG, FORCED_CLOSE
from workers.inference.engine import GenerationRequest


@pytest.fixture(scope="module")
def engine(taught_model_dir: Path) -> Iterator[object]:
    from workers.inference.vllm_engine import VllmEngine

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        model={
            "engine": "vllm",
            "path": str(taught_model_dir),
            "model_id": "tiny-taught",
            "dtype": "bfloat16",
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.3,
            "thinking_budget": None,
            "log_stats_seconds": 0.5,
        },
    )
    eng = VllmEngine(settings)
    print(f"vLLM tiny engine load: {eng.load_seconds:.1f} s")
    yield eng
    eng.shutdown()


def _reqs(n: int, max_new: int = 64) -> list[GenerationRequest]:
    pages = taught_pages()
    return [GenerationRequest(f"r{i}", DEFAULT.prompt, [pages[i % 3]], max_new) for i in range(n)]


def test_taught_pages_answer_exactly_as_on_cpu(engine) -> None:  # type: ignore[no-untyped-def]
    outs = engine.generate(_reqs(3))
    assert [o.text for o in outs[:2]] == TARGETS
    assert all(o.finish_reason == "stop" for o in outs[:2])
    assert outs[0].prompt_tokens > 200  # image tokens expanded by vLLM's GLM-4.1V processor
    parsed = split_output(outs[1].text)
    assert (parsed.reasoning, parsed.answer, parsed.boxes) == ("A bill.", "Total 42", ["42"])


def test_the_engine_takes_the_offline_schedulers_defaults(engine) -> None:  # type: ignore[no-untyped-def]
    """As LLM.generate (the raw baseline) does: vLLM's engine API alone would allow 2,048 tokens a step."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    tokens = engine._llm.vllm_config.scheduler_config.max_num_batched_tokens
    offline, _ = EngineArgs.get_batch_defaults(world_size=1)
    assert tokens == offline[UsageContext.LLM_CLASS] >= 8192


def test_engine_statistics_give_each_requests_timing(engine, caplog) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.vllm_engine import TIMING

    with caplog.at_level(logging.INFO, logger="workers.inference.vllm_engine"):
        t0 = time.time()
        outs = engine.generate(_reqs(2))
    lines = [r.getMessage() for r in caplog.records]
    timings = [json.loads(line.split(TIMING, 1)[1]) for line in lines if TIMING in line]
    assert sorted(t["id"].split("-")[0] for t in timings) == ["r0", "r1"]
    for t, out in zip(sorted(timings, key=lambda t: t["id"]), outs, strict=True):
        assert t0 <= t["arrival"] <= time.time()
        assert 0 <= t["scheduled_s"] <= t["first_token_s"] <= t["last_token_s"] < 60
        # The engine core's clock on the wall clock (one monotonic clock for the host's processes).
        assert t["arrival"] - 0.05 <= t["queued_at"] <= t["first_token_at"] <= t["done_at"] <= t["delivered"]
        assert t["done_at"] - t["queued_at"] == pytest.approx(t["last_token_s"], abs=0.01)
        assert (t["prompt_tokens"], t["output_tokens"]) == (out.prompt_tokens, out.completion_tokens)


def test_many_batches_in_flight_from_threads(engine) -> None:  # type: ignore[no-untyped-def]
    results: dict[int, list[str]] = {}

    def batch(k: int) -> None:
        results[k] = [o.text for o in engine.generate(_reqs(8))]

    threads = [threading.Thread(target=batch, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    for texts in results.values():
        assert texts[0] == TARGETS[0] and texts[1] == TARGETS[1] and len(texts) == 8


def test_thinking_budget_closes_reasoning_and_gets_an_answer(engine) -> None:  # type: ignore[no-untyped-def]
    engine.thinking_budget = 5
    try:
        (out,) = engine.generate(_reqs(1, max_new=40))
    finally:
        engine.thinking_budget = None
    assert BUDGET_FLAG in out.flags
    assert FORCED_CLOSE in out.text and out.text.startswith(TARGETS[0][:3])
    assert out.completion_tokens <= 40
    parsed = split_output(out.text)
    assert not parsed.truncated  # the reasoning was closed for it


def test_abort_stops_a_running_request(engine) -> None:  # type: ignore[no-untyped-def]
    """A cancelled job's requests stop decoding at once (the worker's heartbeat calls abort)."""
    import time

    engine.ignore_eos = True  # never stops by itself: only the abort ends it early
    result: dict[str, list[object]] = {}
    try:
        worker = threading.Thread(target=lambda: result.update(out=engine.generate(_reqs(1, max_new=3500))))
        worker.start()
        time.sleep(0.3)
        engine.abort(["r0"])
        worker.join(120)
    finally:
        engine.ignore_eos = False
    (out,) = result["out"]
    assert out.completion_tokens < 3500  # type: ignore[attr-defined]


def test_the_backlog_bounds_the_engine_and_drops_a_cancelled_waiting_request(engine) -> None:  # type: ignore[no-untyped-def]
    """With room for one request, a batch of three runs one after another, exactly as with room for
    all; a cancelled job's request still waiting for its place is never sent to the engine."""
    from workers.inference.backlog import Backlog

    roomy, engine._backlog = engine._backlog, Backlog(1)
    engine.ignore_eos = True
    result: dict[str, list[object]] = {}
    try:
        worker = threading.Thread(target=lambda: result.update(out=engine.generate(_reqs(3, max_new=1500))))
        worker.start()
        time.sleep(0.3)
        assert (engine._backlog.inside, engine._backlog.waiting) == (1, 2)
        engine.abort(["r2"])  # waiting: dropped when its turn comes
        worker.join(120)
    finally:
        engine._backlog, engine.ignore_eos = roomy, False
    first, second, dropped = result["out"]
    assert first.completion_tokens == second.completion_tokens == 1500  # type: ignore[attr-defined]
    assert (dropped.text, dropped.completion_tokens) == ("", 0)  # type: ignore[attr-defined]


def test_urgent_work_preempts_the_running_request_furthest_behind(engine) -> None:  # type: ignore[no-untyped-def]
    """Urgent work (a small job's page) finding the engine's slots taken (here: 2 slots, 3 requests
    decoding) takes the slot of the running request furthest behind in the turn; that request runs
    again from the start and still gives its whole output. Checks the vLLM front-end state the choice
    reads (AsyncLLM.output_processor) against this vLLM."""
    pages = taught_pages()
    engine.ignore_eos = True
    slots, engine._slots = engine._slots, 2
    result: dict[str, list[object]] = {}
    try:
        bulk = [
            GenerationRequest(f"b{i}", DEFAULT.prompt, [pages[i % 3]], 1200, priority=5000 + i)
            for i in range(3)
        ]
        worker = threading.Thread(target=lambda: result.update(out=engine.generate(bulk)))
        worker.start()
        time.sleep(0.5)  # all three decoding
        before = engine.preemptions
        (urgent,) = engine.generate([GenerationRequest("u", DEFAULT.prompt, [pages[0]], 40, priority=0)])
        preempted = engine.preemptions - before
        worker.join(180)
    finally:
        engine._slots, engine.ignore_eos = slots, False
    assert preempted == 1 and urgent.completion_tokens == 40
    assert [o.completion_tokens for o in result["out"]] == [1200] * 3  # type: ignore[attr-defined]
