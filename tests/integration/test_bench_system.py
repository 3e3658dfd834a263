"""The GPU benchmark's whole-system run, on a CPU with the fake engine: the same processes (API, prep and
inference workers, embedded Postgres, Redis and moto) and the same read-back of where the time went, so a
change that breaks the benchmark shows in CI, not in a GPU lease."""

from __future__ import annotations

import pytest

from bench.gpu.system import run_system


@pytest.mark.timeout(300)
def test_the_system_benchmark_runs_end_to_end_with_the_fake_engine() -> None:
    run, fair = run_system(
        "unused", [16], per_doc=8, max_tokens=64, side=400, quantization=None, prep_procs=1, engine="fake",
        fair_pages=48, small_every=0.3, video_every=2,
    )  # fmt: skip
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
    (run,) = run_system("unused", [32], per_doc=8, max_tokens=64, side=400, quantization=None,
                        prep_procs=1, engine="fake", gpu_workers=2)  # fmt: skip
    assert (run["status"], run["pages"], run["gpu_workers"], run["tp"]) == ("completed", 32, 2, 1)
    assert run["engine_stats_other_workers"] == [[]]  # the second worker's series (none: fake engine)


def test_data_parallel_workers_get_their_own_gpus() -> None:
    from bench.gpu.system import _gpus

    assert [_gpus(i, 2)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0,1", "2,3"]
    assert [_gpus(i, 1)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "1", "2", "3"]
