"""The GPU benchmark's whole-system run, on a CPU with the fake engine: the same processes (API, prep and
inference workers, embedded Postgres, Redis and moto) and the same read-back of where the time went, so a
change that breaks the benchmark shows in CI, not in a GPU lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gpu.system import run_system


@pytest.mark.timeout(300)
def test_the_system_benchmark_runs_end_to_end_with_the_fake_engine() -> None:
    first, run, fair, again = run_system(
        "unused", [16], per_doc=8, max_tokens=64, side=400, quantization=None, prep_procs=1, engine="fake",
        fair_pages=48, small_every=0.3, video_every=2, restart=True,
    )  # fmt: skip
    # The GPU worker's start, first and after a restart (issue 27's warm start), with its phases.
    assert (first["what"], first["kind"], again["what"], again["kind"]) == (
        "worker_start", "first", "worker_start", "restart")  # fmt: skip
    for start in (first, again):
        phases = start["worker"]
        named = {"total_s", "process_and_imports", "engine", "database_and_s3", "result_writers"}
        assert set(phases) >= named
        assert 0 < phases["process_and_imports"] < phases["total_s"] <= start["ready_s"] + 0.5
        assert start["vllm"] == {}  # the fake engine logs no vLLM phases: none made up
    assert run["engine_kind"] == "fake"
    assert (run["status"], run["pages"], run["failed"]) == ("completed", 16, 0)
    # Then the fair-scheduling run: 1-page jobs of another tenant, idle and beside a bulk job.
    assert (fair["what"], fair["status"], fair["pages"]) == ("system_fair", "completed", 48)
    assert fair["idle"]["n"] == 3 and fair["small"]["n"] == len(fair["small_s"]) >= 1
    assert 0 < fair["idle"]["p50"] <= fair["idle"]["max"] and 0 < fair["small"]["p50"] <= fair["small"]["max"]
    # The mixed run: every second small job is a 3 s video, timed apart (idle and beside the bulk job).
    assert fair["idle_video"]["n"] == 2 and fair["idle_video"]["p50"] > 0
    assert fair["video"]["n"] == len(fair["video_s"]) >= 1 and fair["video"]["p50"] > 0
    assert run["wall_s"] > 0 and run["output_tokens"] > 0
    t = run["timeline"]
    assert 0 <= t["source_preparing_first_s"] <= t["unit_running_first_s"] <= t["unit_succeeded_last_s"]
    assert t["unit_succeeded_last_s"] <= t["job_completed_s"] <= run["wall_s"] + 0.5
    assert run["busy_cores"], "the CPU sampler took no reading"
    # The fake engine keeps no vLLM statistics: the engine's own account is empty, not made up.
    assert (run["engine"], run["engine_stats"]) == ({}, [])


@pytest.mark.timeout(300)
def test_the_system_benchmark_starts_one_worker_per_gpu_group_for_data_parallel() -> None:
    """``--gpu-workers 2 --tp 1``: two inference workers (named apart, each on its own GPU), one job."""
    _, run = run_system("unused", [32], per_doc=8, max_tokens=64, side=400, quantization=None,
                        prep_procs=1, engine="fake", gpu_workers=2)  # fmt: skip
    assert (run["status"], run["pages"], run["gpu_workers"], run["tp"]) == ("completed", 32, 2, 1)
    assert run["engine_stats_other_workers"] == [[]]  # the second worker's series (none: fake engine)


def test_data_parallel_workers_get_their_own_gpus() -> None:
    from bench.gpu.system import _gpus

    assert [_gpus(i, 2)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0,1", "2,3"]
    assert [_gpus(i, 1)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "1", "2", "3"]


@pytest.mark.timeout(300)
def test_the_serve_benchmark_runs_the_system_through_an_openai_server(tmp_path: Path) -> None:
    """``run serve`` (issue 26) on a CPU: the scripted OpenAI server (tests/fixtures) stands in for
    `vllm serve`; the inference worker runs the "openai" engine against it, timed as on the GPU."""
    import sys

    from bench.gpu.serve import run_serve

    def scripted(port: int) -> list[str]:
        return [sys.executable, "-m", "tests.fixtures.openai_server", "--port", str(port)]

    lines: list[dict[str, object]] = []
    start, run = run_serve("unused", [16], per_doc=8, max_tokens=64, side=400, quantization=None,
                           in_flight=16, emit=lines.append, command=scripted, prep_procs=1,
                           logs_to=tmp_path)  # fmt: skip
    assert lines == [start, run]  # each line emitted as it ended
    assert (run["engine_kind"], run["status"], run["pages"], run["failed"]) == ("openai", "completed", 16, 0)
    assert start["what"] == "worker_start" and start["worker"]["engine"] > 0
    assert 0 < run["server_start_s"] < 60 and run["output_tokens"] > 0
    # Every process's log comes back beside the lines (a lease's poll copies that folder).
    kept = {p.name for p in tmp_path.iterdir()}
    assert {"vllm-serve.log", "openai-worker-gpu.log", "openai-api.log"} <= kept, kept
