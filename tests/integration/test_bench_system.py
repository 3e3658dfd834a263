"""The GPU benchmark's whole-system run, on a CPU with the fake engine: the same processes (API, prep and
inference workers, embedded Postgres, Redis and moto) and the same read-back of where the time went, so a
change that breaks the benchmark shows in CI, not in a GPU lease."""

from __future__ import annotations

import pytest

from bench.gpu.system import run_system


@pytest.mark.timeout(300)
def test_the_system_benchmark_runs_end_to_end_with_the_fake_engine() -> None:
    (run,) = run_system("unused", [16], per_doc=8, max_tokens=64, side=400, quantization=None,
                        prep_procs=1, engine="fake")  # fmt: skip
    assert (run["status"], run["pages"], run["failed"]) == ("completed", 16, 0)
    assert run["wall_s"] > 0 and run["output_tokens"] > 0
    t = run["timeline"]
    assert 0 <= t["source_preparing_first_s"] <= t["unit_running_first_s"] <= t["unit_succeeded_last_s"]
    assert t["unit_succeeded_last_s"] <= t["job_completed_s"] <= run["wall_s"] + 0.5
    assert run["busy_cores"], "the CPU sampler took no reading"
    # The fake engine keeps no vLLM statistics: the engine's own account is empty, not made up.
    assert (run["engine"], run["engine_stats"]) == ({}, [])
